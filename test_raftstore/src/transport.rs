//! [`MockTransport`]: in-process delivery of raft messages to the target store's router, through
//! the installed [`Filter`]s. Delayed messages are held by one timer thread.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use proto::raft_serverpb::RaftMessage;
use raftstore::{Router, Transport};

use crate::filter::{Filter, FilterAction};

type Routers = Arc<RwLock<HashMap<u64, Router>>>;

struct Delayed {
    at: Instant,
    seq: u64,
    msg: RaftMessage,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Carries messages between the stores of one test cluster. Cheap to clone.
#[derive(Clone)]
pub struct MockTransport {
    routers: Routers,
    filters: Arc<RwLock<Vec<Arc<dyn Filter>>>>,
    delayed: Sender<Delayed>,
    seq: Arc<std::sync::atomic::AtomicU64>,
}

fn deliver(routers: &Routers, msg: RaftMessage) -> raftstore::Result<()> {
    let to = msg.to_peer.as_ref().map_or(0, |p| p.store_id);
    let router = routers
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&to)
        .cloned();
    match router {
        Some(r) => r.send_raft_message(msg),
        None => Err(raftstore::Error::Transport(format!(
            "store {to} is not running"
        ))),
    }
}

impl Default for MockTransport {
    fn default() -> Self {
        MockTransport::new()
    }
}

impl MockTransport {
    /// A transport with no store attached and no filter.
    pub fn new() -> MockTransport {
        let routers: Routers = Arc::default();
        let (tx, rx) = crossbeam_channel::unbounded::<Delayed>();
        let timer_routers = routers.clone();
        std::thread::Builder::new()
            .name("mock-transport-delay".into())
            .spawn(move || {
                let mut heap: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
                loop {
                    let wait = heap.peek().map_or(Duration::from_secs(3600), |d| {
                        d.0.at.saturating_duration_since(Instant::now())
                    });
                    match rx.recv_timeout(wait) {
                        Ok(d) => heap.push(Reverse(d)),
                        Err(RecvTimeoutError::Timeout) => {}
                        // Every transport clone is gone: the cluster was dropped.
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    while heap.peek().is_some_and(|d| d.0.at <= Instant::now()) {
                        let d = heap.pop().expect("peeked").0;
                        let _ = deliver(&timer_routers, d.msg);
                    }
                }
            })
            .expect("spawning the delay thread of the mock transport");
        MockTransport {
            routers,
            filters: Arc::default(),
            delayed: tx,
            seq: Arc::default(),
        }
    }

    /// Attaches a running store.
    pub fn register(&self, store_id: u64, router: Router) {
        self.routers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(store_id, router);
    }

    /// Detaches a stopped store: messages to it fail.
    pub fn unregister(&self, store_id: u64) {
        self.routers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&store_id);
    }

    /// Installs `filter` on every message from now on.
    pub fn add_filter(&self, filter: Arc<dyn Filter>) {
        self.filters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(filter);
    }

    /// Removes every filter.
    pub fn clear_filters(&self) {
        self.filters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Removes one filter installed earlier (compared by identity).
    pub fn remove_filter(&self, filter: &Arc<dyn Filter>) {
        self.filters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|f| !Arc::ptr_eq(f, filter));
    }
}

impl Transport for MockTransport {
    fn send(&self, msg: RaftMessage) -> raftstore::Result<()> {
        let mut delay = Duration::ZERO;
        for f in self
            .filters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            match f.before(&msg) {
                FilterAction::Pass => {}
                // Lost on the wire: the sender cannot tell.
                FilterAction::Drop => return Ok(()),
                FilterAction::Delay(d) => delay = delay.max(d),
            }
        }
        if delay.is_zero() {
            return deliver(&self.routers, msg);
        }
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.delayed.send(Delayed {
            at: Instant::now() + delay,
            seq,
            msg,
        });
        Ok(())
    }
}
