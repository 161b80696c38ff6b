//! [`MockTransport`]: in-process delivery of raft messages to the target store's router, through
//! the installed [`Filter`]s. Delayed messages are held by one timer thread.
//!
//! A snapshot message moves its files first, from the sending store's `SnapManager` to the
//! receiving store's, in chunks through the same verifying receiver the gRPC server uses; only
//! a complete, verified transfer lets the message through. Tests can corrupt the next transfers
//! on the wire ([`MockTransport::corrupt_next_snapshots`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use proto::raft_serverpb::RaftMessage;
use raftstore::{Router, SnapshotReport, Transport};
use snap::SnapManager;

use crate::filter::{Filter, FilterAction};

type Routers = Arc<RwLock<HashMap<u64, (Router, SnapManager)>>>;

/// Chunk size of in-process snapshot transfers: small, so every transfer has several chunks.
const SNAPSHOT_CHUNK: usize = 4096;

struct Delayed {
    at: Instant,
    seq: u64,
    msg: RaftMessage,
    /// The message carries a snapshot; its sender learns of the delivery through this.
    snapshot: Option<SnapshotReport>,
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
    seq: Arc<AtomicU64>,
    snapshots: Arc<SnapshotCounters>,
}

/// What happened to snapshot transfers.
#[derive(Default)]
struct SnapshotCounters {
    /// Transfers still to corrupt on the wire.
    to_corrupt: AtomicU64,
    delivered: AtomicU64,
    refused: AtomicU64,
}

fn deliver(routers: &Routers, msg: RaftMessage) -> raftstore::Result<()> {
    let to = msg.to_peer.as_ref().map_or(0, |p| p.store_id);
    let router = routers
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&to)
        .map(|(r, _)| r.clone());
    match router {
        Some(r) => r.send_raft_message(msg),
        None => Err(raftstore::Error::Transport(format!(
            "store {to} is not running"
        ))),
    }
}

/// Delivers `msg`, and when it carries a snapshot (whose files are in place at the receiver),
/// tells the sender how the transfer went, as a store's gRPC transport does at the end of the
/// stream: raft then probes the follower instead of waiting for its answer to the snapshot,
/// which may be lost.
fn deliver_reporting(
    routers: &Routers,
    msg: RaftMessage,
    report: Option<SnapshotReport>,
) -> raftstore::Result<()> {
    let result = deliver(routers, msg);
    if let Some(report) = report {
        report.finish(result.is_err());
    }
    result
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
                        let _ = deliver_reporting(&timer_routers, d.msg, d.snapshot);
                    }
                }
            })
            .expect("spawning the delay thread of the mock transport");
        MockTransport {
            routers,
            filters: Arc::default(),
            delayed: tx,
            seq: Arc::default(),
            snapshots: Arc::default(),
        }
    }

    /// Attaches a running store with its snapshot manager.
    pub fn register(&self, store_id: u64, router: Router, snap_mgr: SnapManager) {
        self.routers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(store_id, (router, snap_mgr));
    }

    /// Flips one byte in the data of each of the next `n` snapshot transfers, as a faulty
    /// network would; the receiver must refuse them.
    pub fn corrupt_next_snapshots(&self, n: u64) {
        self.snapshots.to_corrupt.store(n, Ordering::SeqCst);
    }

    /// Snapshot transfers that reached their store verified, and transfers refused.
    pub fn snapshot_counts(&self) -> (u64, u64) {
        (
            self.snapshots.delivered.load(Ordering::SeqCst),
            self.snapshots.refused.load(Ordering::SeqCst),
        )
    }

    /// What the filters make of `msg`: `None` when it is lost, else the delay before delivery.
    fn filtered(&self, msg: &RaftMessage) -> Option<Duration> {
        let mut delay = Duration::ZERO;
        for f in self
            .filters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            match f.before(msg) {
                FilterAction::Pass => {}
                FilterAction::Drop => return None,
                FilterAction::Delay(d) => delay = delay.max(d),
            }
        }
        Some(delay)
    }

    fn deliver_after(
        &self,
        msg: RaftMessage,
        delay: Duration,
        snapshot: Option<SnapshotReport>,
    ) -> raftstore::Result<()> {
        if delay.is_zero() {
            return deliver_reporting(&self.routers, msg, snapshot);
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let _ = self.delayed.send(Delayed {
            at: Instant::now() + delay,
            seq,
            msg,
            snapshot,
        });
        Ok(())
    }

    /// Copies the files of the snapshot `msg` carries from `from` to the receiving store.
    fn transfer_snapshot(&self, msg: &RaftMessage, from: &SnapManager) -> snap::Result<()> {
        let to_store = msg.to_peer.as_ref().map_or(0, |p| p.store_id);
        let to = self
            .routers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to_store)
            .map(|(_, m)| m.clone())
            .ok_or_else(|| snap::Error::BadMessage {
                region_id: msg.region_id,
                reason: format!("store {to_store} is not running"),
            })?;
        let (key, _) = snap::snapshot_in_message(msg)?;
        let reader = from.send(key, SNAPSHOT_CHUNK)?;
        let mut receiver = to.receive(key, reader.meta())?;
        let corrupt = self
            .snapshots
            .to_corrupt
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        for (i, chunk) in reader.enumerate() {
            let mut chunk = chunk?;
            if corrupt && i == 0 && !chunk.is_empty() {
                let mid = chunk.len() / 2;
                chunk[mid] ^= 0x5a;
            }
            receiver.write(&chunk)?;
        }
        receiver.finish().map(|_| ())
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
    fn send_snapshot(
        &self,
        msg: RaftMessage,
        snap_mgr: &SnapManager,
        report: SnapshotReport,
    ) -> raftstore::Result<()> {
        // The filters decide first: a snapshot lost on the wire is a failed transfer, which the
        // sender learns of (a real stream would break).
        let Some(delay) = self.filtered(&msg) else {
            return Err(raftstore::Error::Transport(
                "snapshot dropped by a filter".into(),
            ));
        };
        if let Err(e) = self.transfer_snapshot(&msg, snap_mgr) {
            self.snapshots.refused.fetch_add(1, Ordering::SeqCst);
            return Err(raftstore::Error::Transport(format!(
                "snapshot transfer failed: {e}"
            )));
        }
        self.snapshots.delivered.fetch_add(1, Ordering::SeqCst);
        self.deliver_after(msg, delay, Some(report))
    }

    fn send(&self, msg: RaftMessage) -> raftstore::Result<()> {
        match self.filtered(&msg) {
            Some(delay) => self.deliver_after(msg, delay, None),
            // Lost on the wire: the sender cannot tell.
            None => Ok(()),
        }
    }
}
