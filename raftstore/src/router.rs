//! [`Router`]: region id → mailbox of [`PeerMsg`], plus the store's own mailbox.
//!
//! Every mailbox is drained by the raft worker. Senders push into the mailbox and then post a
//! [`Notify`] on the worker's single wake-up channel, so the worker sleeps on one channel yet
//! drains per-region queues in batches.
//!
//! Back-pressure: what arrives from outside the store (raft messages from other stores, client
//! commands) is refused once a mailbox holds `capacity` messages — a raft message is dropped
//! (raft retransmits), a command is answered `ServerIsBusy`. The store's own messages (a
//! snapshot applied, a split to propose, ...) are never refused: losing one would wedge the peer,
//! and their number is bounded by the work the store itself scheduled.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use proto::raft_serverpb::RaftMessage;

use crate::error::{Error, Result};
use crate::msg::{Callback, PeerMsg, StoreMsg};

/// What woke the raft worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notify {
    /// Region `id`'s mailbox has messages.
    Region(u64),
    /// The store mailbox has messages.
    Store,
    /// The log writer finished writing batches (see `log_writer`).
    LogWritten,
    /// The apply thread applied tasks (see `apply_worker`).
    Applied,
    /// Shut down.
    Stop,
}

struct RouterInner {
    mailboxes: RwLock<HashMap<u64, Sender<PeerMsg>>>,
    /// Messages from outside the store a mailbox (and the store's own) may hold.
    capacity: usize,
    store: Sender<StoreMsg>,
    notify: Sender<Notify>,
    /// The raft worker's thread, woken after each notification.
    worker: Arc<OnceLock<Thread>>,
}

/// Routes messages to the peers and the store of one node. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Router")
    }
}

/// The worker's ends of the router's channels.
pub(crate) struct RouterReceivers {
    pub(crate) store: Receiver<StoreMsg>,
    pub(crate) notify: Receiver<Notify>,
    worker: Arc<OnceLock<Thread>>,
}

impl RouterReceivers {
    /// The next notification, waiting at most `timeout`, like a channel's `recv_timeout`.
    ///
    /// Must be called from the one thread that drains the router (the first call registers it).
    /// It sleeps by parking that thread, which senders unpark: a blocking channel receive would
    /// first spin and yield the CPU a few times, and on a busy machine each yield is a context
    /// switch — several for every raft-worker round.
    pub(crate) fn wait(&self, timeout: Duration) -> std::result::Result<Notify, RecvTimeoutError> {
        let me = self.worker.get_or_init(std::thread::current);
        debug_assert_eq!(me.id(), std::thread::current().id());
        let deadline = Instant::now() + timeout;
        loop {
            match self.notify.try_recv() {
                Ok(n) => return Ok(n),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            // A sender that posted after the `try_recv` above has unparked us already: this
            // returns at once. Wake-ups without a notification just go round again.
            std::thread::park_timeout(left);
        }
    }
}

impl Router {
    /// A router whose mailboxes refuse outside messages past `capacity` queued messages.
    pub(crate) fn new(capacity: usize) -> (Router, RouterReceivers) {
        let (store_tx, store_rx) = crossbeam_channel::unbounded();
        let (notify_tx, notify_rx) = crossbeam_channel::unbounded();
        let worker = Arc::new(OnceLock::new());
        let router = Router {
            inner: Arc::new(RouterInner {
                mailboxes: RwLock::new(HashMap::new()),
                capacity: capacity.max(1),
                store: store_tx,
                notify: notify_tx,
                worker: worker.clone(),
            }),
        };
        (
            router,
            RouterReceivers {
                store: store_rx,
                notify: notify_rx,
                worker,
            },
        )
    }

    /// Registers a mailbox for `region_id`, returning its receiving end.
    pub(crate) fn register(&self, region_id: u64) -> Receiver<PeerMsg> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.write_mailboxes().insert(region_id, tx);
        rx
    }

    /// Removes `region_id`'s mailbox; later messages for it go to the store.
    pub(crate) fn unregister(&self, region_id: u64) {
        self.write_mailboxes().remove(&region_id);
    }

    fn write_mailboxes(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Sender<PeerMsg>>> {
        // A poisoned lock means a thread panicked while inserting; the map itself is still whole.
        self.inner
            .mailboxes
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a peer of `region_id` is registered.
    pub fn has_region(&self, region_id: u64) -> bool {
        self.inner
            .mailboxes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&region_id)
    }

    /// Sends `msg` to the peer of `region_id`.
    ///
    /// # Errors
    /// [`Error::RegionNotFound`] with the message handed back when no such peer is registered,
    /// [`Error::Busy`] when the message comes from outside the store and the mailbox is full,
    /// [`Error::Disconnected`] when the worker has stopped.
    pub fn send(&self, region_id: u64, msg: PeerMsg) -> std::result::Result<(), (Error, PeerMsg)> {
        let tx = {
            let boxes = self
                .inner
                .mailboxes
                .read()
                .unwrap_or_else(|e| e.into_inner());
            match boxes.get(&region_id) {
                Some(tx) => tx.clone(),
                None => return Err((Error::RegionNotFound(region_id), msg)),
            }
        };
        if msg.from_outside() && tx.len() >= self.inner.capacity {
            return Err((Error::Busy(region_id), msg));
        }
        if let Err(e) = tx.send(msg) {
            return Err((Error::Disconnected(region_id), e.0));
        }
        self.notify(Notify::Region(region_id))
            .map_err(|_| (Error::Disconnected(region_id), PeerMsg::Tick))
    }

    /// Sends a command to the peer of `region_id`; when it cannot be delivered, the callback is
    /// answered with the error right away, so a command is never lost silently.
    pub fn send_command(
        &self,
        request: proto::raft_cmdpb::RaftCmdRequest,
        callback: Callback,
    ) -> Result<()> {
        let region_id = request.header.as_ref().map_or(0, |h| h.region_id);
        let msg = PeerMsg::RaftCommand {
            request: Box::new(request),
            callback,
        };
        match self.send(region_id, msg) {
            Ok(()) => Ok(()),
            Err((err, PeerMsg::RaftCommand { callback, .. })) => {
                let copy = match &err {
                    Error::RegionNotFound(id) => Error::RegionNotFound(*id),
                    Error::Busy(id) => Error::Busy(*id),
                    _ => Error::Disconnected(region_id),
                };
                callback.invoke_with_error(copy, 0);
                Err(err)
            }
            Err((err, _)) => Err(err),
        }
    }

    /// Delivers a raft message from another store: to the region's peer, or to the store when the
    /// region has no peer here yet (the store may create one).
    ///
    /// # Errors
    /// [`Error::Busy`] when the mailbox is full (the message is dropped),
    /// [`Error::Disconnected`] when the node has stopped.
    pub fn send_raft_message(&self, msg: RaftMessage) -> Result<()> {
        let region_id = msg.region_id;
        match self.send(region_id, PeerMsg::RaftMessage(Box::new(msg))) {
            Ok(()) => Ok(()),
            Err((Error::RegionNotFound(_), PeerMsg::RaftMessage(m))) => {
                self.send_store(StoreMsg::RaftMessage(m))
            }
            Err((e, _)) => Err(e),
        }
    }

    /// Tells the peer of `region_id` how sending a snapshot to `to_peer_id` went. A region
    /// that is gone needs no report.
    pub(crate) fn report_snapshot(&self, region_id: u64, to_peer_id: u64, failed: bool) {
        let _ = self.send(region_id, PeerMsg::SnapshotStatus { to_peer_id, failed });
    }

    /// Sends `msg` to the store mailbox.
    ///
    /// # Errors
    /// [`Error::Busy`] when a raft message finds the store mailbox full,
    /// [`Error::Disconnected`] when the node has stopped.
    pub fn send_store(&self, msg: StoreMsg) -> Result<()> {
        if matches!(msg, StoreMsg::RaftMessage(_)) && self.inner.store.len() >= self.inner.capacity
        {
            return Err(Error::Busy(0));
        }
        self.inner
            .store
            .send(msg)
            .map_err(|_| Error::Disconnected(0))?;
        self.notify(Notify::Store)
            .map_err(|_| Error::Disconnected(0))
    }

    /// Wakes the raft worker to finish the rounds its log writer has written.
    pub(crate) fn notify_log_written(&self) {
        let _ = self.notify(Notify::LogWritten);
    }

    /// Wakes the raft worker to take up what the apply thread applied.
    pub(crate) fn notify_applied(&self) {
        let _ = self.notify(Notify::Applied);
    }

    /// Asks the raft worker to stop after its current batch.
    pub(crate) fn stop(&self) {
        let _ = self.notify(Notify::Stop);
    }

    /// Posts `n` on the worker's wake-up channel and wakes the worker if it sleeps (see
    /// [`RouterReceivers::wait`]). Fails once the worker's end is gone.
    fn notify(&self, n: Notify) -> std::result::Result<(), ()> {
        self.inner.notify.send(n).map_err(|_| ())?;
        if let Some(worker) = self.inner.worker.get() {
            worker.unpark();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_region_messages_reach_the_store_mailbox_2b() {
        let (router, rx) = Router::new(16);
        let mailbox = router.register(7);
        router
            .send_raft_message(RaftMessage {
                region_id: 7,
                ..Default::default()
            })
            .unwrap();
        assert!(matches!(mailbox.try_recv(), Ok(PeerMsg::RaftMessage(_))));
        assert_eq!(rx.notify.try_recv(), Ok(Notify::Region(7)));
        router
            .send_raft_message(RaftMessage {
                region_id: 8,
                ..Default::default()
            })
            .unwrap();
        assert!(matches!(rx.store.try_recv(), Ok(StoreMsg::RaftMessage(m)) if m.region_id == 8));
        assert_eq!(rx.notify.try_recv(), Ok(Notify::Store));
    }

    #[test]
    fn undeliverable_commands_are_answered_2b() {
        let (router, _rx) = Router::new(16);
        let (tx, answered) = crossbeam_channel::bounded(1);
        let mut req = proto::raft_cmdpb::RaftCmdRequest::default();
        req.header = Some(proto::raft_cmdpb::RaftRequestHeader {
            region_id: 9,
            ..Default::default()
        });
        let res = router.send_command(req, Callback::new(move |r| tx.send(r).unwrap()));
        assert!(matches!(res, Err(Error::RegionNotFound(9))));
        let resp = answered.try_recv().unwrap();
        let err = resp.response.header.unwrap().error.unwrap();
        assert_eq!(err.region_not_found.unwrap().region_id, 9);
    }

    #[test]
    fn full_mailboxes_refuse_outside_messages_only_2b() {
        let (router, rx) = Router::new(2);
        let _mailbox = router.register(7);
        let raft = || PeerMsg::RaftMessage(Box::default());
        router.send(7, raft()).unwrap();
        router.send(7, raft()).unwrap();
        assert!(matches!(router.send(7, raft()), Err((Error::Busy(7), _))));
        // The store's own messages still go in: dropping one could wedge the peer.
        let own = PeerMsg::SnapshotApplied {
            index: 5,
            result: Ok(()),
        };
        router.send(7, own).unwrap();
        // A refused command is answered ServerIsBusy.
        let (tx, answered) = crossbeam_channel::bounded(1);
        let mut req = proto::raft_cmdpb::RaftCmdRequest::default();
        req.header = Some(proto::raft_cmdpb::RaftRequestHeader {
            region_id: 7,
            ..Default::default()
        });
        let res = router.send_command(req, Callback::new(move |r| tx.send(r).unwrap()));
        assert!(matches!(res, Err(Error::Busy(7))));
        let err = answered.try_recv().unwrap().response.header.unwrap().error;
        assert!(err.unwrap().server_is_busy.is_some());
        // The store mailbox is bounded the same way for raft messages.
        router
            .send_store(StoreMsg::RaftMessage(Box::default()))
            .unwrap();
        router
            .send_store(StoreMsg::RaftMessage(Box::default()))
            .unwrap();
        assert!(matches!(
            router.send_store(StoreMsg::RaftMessage(Box::default())),
            Err(Error::Busy(0))
        ));
        router.send_store(StoreMsg::HeartbeatTick).unwrap();
        drop(rx);
    }

    #[test]
    fn a_notification_wakes_the_parked_worker_2b() {
        let (router, rx) = Router::new(16);
        let _mailbox = router.register(7);
        // Nothing posted: the wait ends by its timeout (and registers this thread as the worker).
        assert_eq!(
            rx.wait(Duration::from_millis(10)),
            Err(RecvTimeoutError::Timeout)
        );
        let sender = std::thread::spawn(move || {
            // Long enough for the wait below to be parked, not still looking at the channel.
            std::thread::sleep(Duration::from_millis(50));
            router.send(7, PeerMsg::Tick).unwrap();
            router
        });
        // The sender's unpark ends the wait; without it the wait would run out its 60 s and only
        // then find the notification.
        let started = Instant::now();
        assert_eq!(rx.wait(Duration::from_secs(60)), Ok(Notify::Region(7)));
        assert!(started.elapsed() < Duration::from_secs(30));
        drop(sender.join().unwrap());
        assert_eq!(
            rx.wait(Duration::from_secs(60)),
            Err(RecvTimeoutError::Disconnected)
        );
    }
}
