//! [`Inbound`]: the one door raft traffic from other stores comes in by. Every `RaftMessage` is
//! hostile until checked: [`check_raft_message`] refuses what cannot be right whatever the
//! store's state (a message for another store, a peer id of 0, a raft message that does not
//! decode or that names other peers than its envelope, a type that never travels between stores,
//! a snapshot outside the snapshot stream). What needs the peer's state (epochs, the leader it
//! follows, the raft log) is checked by the peer, and the raft library validates the rest.
//!
//! A refused message is dropped and counted by [`DropReason`] in [`StoreMetrics`], with a log
//! line at most once a second per reason; the sender is never told why, and the store goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::eraftpb::{self, MessageType};
use proto::raft_serverpb::RaftMessage;
use protobuf::Message as _;

use crate::error::Error;
use crate::metrics::{DropReason, StoreMetrics};
use crate::router::Router;

/// Which stream a message came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The `Raft` stream: every message type but snapshots.
    Raft,
    /// The `Snapshot` stream: a snapshot message whose files were received and verified.
    Snapshot,
}

/// A refused message: why, and a detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The counted reason.
    pub reason: DropReason,
    /// What exactly was wrong.
    pub detail: String,
}

fn refuse(reason: DropReason, detail: impl Into<String>) -> Refused {
    Refused {
        reason,
        detail: detail.into(),
    }
}

/// Checks what can be checked of `msg` without any peer's state, for store `store_id`, as
/// received on `stream`.
///
/// # Errors
/// [`Refused`] with the reason to count.
pub fn check_raft_message(store_id: u64, msg: &RaftMessage, stream: Stream) -> Result<(), Refused> {
    use DropReason::*;
    if msg.region_id == 0 {
        return Err(refuse(BadEnvelope, "region id 0"));
    }
    let (Some(from), Some(to)) = (msg.from_peer, msg.to_peer) else {
        return Err(refuse(BadEnvelope, "no from or to peer"));
    };
    if to.store_id != store_id {
        return Err(refuse(
            BadEnvelope,
            format!("for store {}, this is store {store_id}", to.store_id),
        ));
    }
    if to.id == 0 || from.id == 0 || from.store_id == 0 || from.id == to.id {
        return Err(refuse(
            BadEnvelope,
            format!("peers from {from:?} to {to:?}"),
        ));
    }
    if from.store_id == store_id {
        return Err(refuse(BadEnvelope, "from a peer on this very store"));
    }
    if msg.is_tombstone {
        return Ok(());
    }
    let m = eraftpb::Message::parse_from_bytes(&msg.message)
        .map_err(|e| refuse(BadRaftMessage, format!("does not decode: {e}")))?;
    if m.from != from.id || m.to != to.id {
        return Err(refuse(
            BadRaftMessage,
            format!(
                "raft message from {} to {} in an envelope from {} to {}",
                m.from, m.to, from.id, to.id
            ),
        ));
    }
    let ty = m.get_msg_type();
    if matches!(
        ty,
        MessageType::MsgHup
            | MessageType::MsgBeat
            | MessageType::MsgUnreachable
            | MessageType::MsgSnapStatus
            | MessageType::MsgCheckQuorum
            // A forwarded proposal would be appended as it is, checked by no one: its
            // entries, committed, are applied by every store.
            | MessageType::MsgPropose
            | MessageType::MsgReadIndex
            | MessageType::MsgReadIndexResp
    ) {
        return Err(refuse(LocalMessageType, format!("{ty:?}")));
    }
    let is_snapshot = ty == MessageType::MsgSnapshot;
    match stream {
        Stream::Raft if is_snapshot => Err(refuse(
            SnapshotMisrouted,
            "a snapshot message outside the snapshot stream",
        )),
        Stream::Snapshot if !is_snapshot => Err(refuse(
            SnapshotMisrouted,
            format!("{ty:?} on the snapshot stream"),
        )),
        _ => Ok(()),
    }
}

/// Counts a dropped message and logs it, at most once a second per reason (with how many were
/// dropped since the last line).
#[derive(Debug)]
pub(crate) struct DropLog {
    /// Per reason: milliseconds since `start` of the last line, and drops since it.
    last: [(AtomicU64, AtomicU64); DropReason::ALL.len()],
    start: Instant,
}

impl Default for DropLog {
    fn default() -> Self {
        DropLog {
            last: Default::default(),
            start: Instant::now(),
        }
    }
}

/// How often each reason may log.
const LOG_EVERY: Duration = Duration::from_secs(1);

impl DropLog {
    /// Records one drop of `reason` for `region_id`: counted in `metrics`, logged if the
    /// reason has not logged within the last second.
    pub(crate) fn record(
        &self,
        metrics: &StoreMetrics,
        region_id: u64,
        reason: DropReason,
        detail: &str,
    ) {
        metrics.on_dropped_message(reason);
        let (last_ms, since) = &self.last[reason.index()];
        let suppressed = since.fetch_add(1, Ordering::Relaxed);
        let now_ms = self.start.elapsed().as_millis() as u64 + LOG_EVERY.as_millis() as u64;
        let prev = last_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(prev) < LOG_EVERY.as_millis() as u64 {
            return;
        }
        if last_ms
            .compare_exchange(prev, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            since.store(0, Ordering::Relaxed);
            tracing::warn!(
                region_id,
                reason = reason.as_str(),
                detail,
                dropped_since_last_line = suppressed,
                "raft message dropped"
            );
        }
    }
}

/// Why [`Inbound::deliver`] did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The message was refused (and counted).
    #[error("refused ({}): {}", .0.reason.as_str(), .0.detail)]
    Refused(Refused),
    /// The store has stopped.
    #[error("store stopped: {0}")]
    Stopped(Error),
}

/// Delivers raft messages received from other stores, after [`check_raft_message`]. Cheap to
/// clone; every transport's receiving side goes through one.
#[derive(Clone, Debug)]
pub struct Inbound {
    store_id: u64,
    router: Router,
    metrics: Arc<StoreMetrics>,
    drops: Arc<DropLog>,
}

impl Inbound {
    pub(crate) fn new(
        store_id: u64,
        router: Router,
        metrics: Arc<StoreMetrics>,
        drops: Arc<DropLog>,
    ) -> Inbound {
        Inbound {
            store_id,
            router,
            metrics,
            drops,
        }
    }

    /// Records a snapshot stream that took `took`: `bytes` received and verified, or `None`
    /// when it failed.
    pub fn on_snapshot_received(&self, took: std::time::Duration, bytes: Option<u64>) {
        self.metrics
            .on_snapshot(crate::metrics::SnapEvent::Receive, took, bytes);
    }

    /// This store's id.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// Checks `msg` as received on `stream` and hands it to its region's peer (or to the store
    /// for a region with no peer here yet). A refused message is counted and logged.
    ///
    /// # Errors
    /// [`DeliverError::Refused`] for a message that fails the checks (nothing else happens to
    /// it), [`DeliverError::Stopped`] once the store has stopped.
    pub fn deliver(&self, msg: RaftMessage, stream: Stream) -> Result<(), DeliverError> {
        if let Err(r) = check_raft_message(self.store_id, &msg, stream) {
            self.refused(msg.region_id, &r);
            return Err(DeliverError::Refused(r));
        }
        match self.router.send_raft_message(msg) {
            Ok(()) => Ok(()),
            Err(Error::Busy(region_id)) => {
                let r = refuse(DropReason::MailboxFull, "mailbox full");
                self.refused(region_id, &r);
                // Raft retransmits: the stream stays open.
                Ok(())
            }
            Err(e) => Err(DeliverError::Stopped(e)),
        }
    }

    /// Counts and logs a message refused before it reached the router (e.g. a snapshot stream
    /// whose files did not check out).
    pub fn refused(&self, region_id: u64, r: &Refused) {
        self.drops
            .record(&self.metrics, region_id, r.reason, &r.detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::metapb;

    fn peer(id: u64, store_id: u64) -> metapb::Peer {
        metapb::Peer {
            id,
            store_id,
            ..Default::default()
        }
    }

    fn message(ty: MessageType, from: u64, to: u64) -> RaftMessage {
        let mut m = eraftpb::Message::default();
        m.set_msg_type(ty);
        m.from = from;
        m.to = to;
        m.term = 5;
        RaftMessage {
            region_id: 1,
            from_peer: Some(peer(from, 1)),
            to_peer: Some(peer(to, 2)),
            message: m.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    fn reason(msg: &RaftMessage, stream: Stream) -> Option<DropReason> {
        check_raft_message(2, msg, stream).err().map(|r| r.reason)
    }

    #[test]
    fn well_formed_messages_pass_2b() {
        let m = message(MessageType::MsgAppend, 11, 12);
        assert_eq!(reason(&m, Stream::Raft), None);
        let s = message(MessageType::MsgSnapshot, 11, 12);
        assert_eq!(reason(&s, Stream::Snapshot), None);
    }

    #[test]
    fn malformed_envelopes_are_refused_2b() {
        use DropReason::*;
        let good = message(MessageType::MsgAppend, 11, 12);
        let mut m = good.clone();
        m.region_id = 0;
        assert_eq!(reason(&m, Stream::Raft), Some(BadEnvelope));
        let mut m = good.clone();
        m.to_peer = Some(peer(12, 3));
        assert_eq!(reason(&m, Stream::Raft), Some(BadEnvelope), "another store");
        let mut m = good.clone();
        m.from_peer = None;
        assert_eq!(reason(&m, Stream::Raft), Some(BadEnvelope));
        let mut m = good.clone();
        m.from_peer = Some(peer(11, 2));
        assert_eq!(
            reason(&m, Stream::Raft),
            Some(BadEnvelope),
            "from this store"
        );
        let mut m = good.clone();
        m.to_peer = Some(peer(0, 2));
        assert_eq!(reason(&m, Stream::Raft), Some(BadEnvelope));
        let mut m = good.clone();
        m.message = vec![0xff; 7];
        assert_eq!(reason(&m, Stream::Raft), Some(BadRaftMessage));
        let mut m = good.clone();
        m.to_peer = Some(peer(13, 2));
        assert_eq!(
            reason(&m, Stream::Raft),
            Some(BadRaftMessage),
            "names other peers"
        );
    }

    #[test]
    fn local_types_and_misrouted_snapshots_are_refused_2b() {
        for ty in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgUnreachable,
            MessageType::MsgSnapStatus,
            MessageType::MsgCheckQuorum,
            MessageType::MsgPropose,
            MessageType::MsgReadIndex,
            MessageType::MsgReadIndexResp,
        ] {
            let m = message(ty, 11, 12);
            assert_eq!(
                reason(&m, Stream::Raft),
                Some(DropReason::LocalMessageType),
                "{ty:?}"
            );
        }
        let s = message(MessageType::MsgSnapshot, 11, 12);
        assert_eq!(
            reason(&s, Stream::Raft),
            Some(DropReason::SnapshotMisrouted)
        );
        let a = message(MessageType::MsgAppend, 11, 12);
        assert_eq!(
            reason(&a, Stream::Snapshot),
            Some(DropReason::SnapshotMisrouted)
        );
    }

    #[test]
    fn drops_are_counted_and_logged_sparingly_2b() {
        let metrics = StoreMetrics::default();
        let log = DropLog::default();
        for _ in 0..5 {
            log.record(&metrics, 1, DropReason::BadEnvelope, "x");
        }
        log.record(&metrics, 1, DropReason::RaftRefused, "y");
        assert_eq!(metrics.dropped_messages(DropReason::BadEnvelope), 5);
        assert_eq!(metrics.dropped_messages(DropReason::RaftRefused), 1);
        assert_eq!(metrics.dropped_messages(DropReason::WrongPeer), 0);
        // One line so far for BadEnvelope: the four after it within the second are pending.
        let (_, since) = &log.last[DropReason::BadEnvelope.index()];
        assert_eq!(since.load(Ordering::Relaxed), 4);
    }
}
