//! Per-store counters of the raft worker and of its inbound door, kept apart from the handlers
//! that bump them, and [`DropReason`], the reasons dropped messages are counted by. Tests read
//! them (group commit, dropped messages); the server publishes them on its status port.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a raft message from another store was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The envelope is malformed: region 0, a missing or zero peer, or addressed to another
    /// store.
    BadEnvelope,
    /// The raft message does not decode, or names other peers than its envelope.
    BadRaftMessage,
    /// A message type that never travels between stores: one only a node itself generates
    /// (`MsgHup`, `MsgBeat`, ...), or a request a store makes of its own raft node only
    /// (`MsgPropose`, `MsgReadIndex` and its answer: a store proposes and reads only where it
    /// leads, so its raft never forwards one).
    LocalMessageType,
    /// A snapshot outside the snapshot stream, or something else on it.
    SnapshotMisrouted,
    /// A snapshot the peer refused (region, peer or epoch mismatch, not from the leader it
    /// follows, overlapping another region, files missing).
    BadSnapshot,
    /// A message for another peer of the region that does not prove this one stale.
    WrongPeer,
    /// The raft library refused the message (terms or indexes that cannot be right, ...).
    RaftRefused,
    /// The peer's mailbox was full: the raft worker is behind, raft will retransmit.
    MailboxFull,
}

impl DropReason {
    /// Every reason, in metric order.
    pub const ALL: [DropReason; 8] = [
        DropReason::BadEnvelope,
        DropReason::BadRaftMessage,
        DropReason::LocalMessageType,
        DropReason::SnapshotMisrouted,
        DropReason::BadSnapshot,
        DropReason::WrongPeer,
        DropReason::RaftRefused,
        DropReason::MailboxFull,
    ];

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BadEnvelope => "bad_envelope",
            DropReason::BadRaftMessage => "bad_raft_message",
            DropReason::LocalMessageType => "local_message_type",
            DropReason::SnapshotMisrouted => "snapshot_misrouted",
            DropReason::BadSnapshot => "bad_snapshot",
            DropReason::WrongPeer => "wrong_peer",
            DropReason::RaftRefused => "raft_refused",
            DropReason::MailboxFull => "mailbox_full",
        }
    }

    pub(crate) fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
}

/// Counters of one store's raft worker.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    raft_engine_writes: AtomicU64,
    raft_engine_syncs: AtomicU64,
    persisted_readies: AtomicU64,
    max_readies_per_write: AtomicU64,
    /// Raft messages from other stores dropped, by [`DropReason`].
    dropped_messages: [AtomicU64; DropReason::ALL.len()],
    /// Commands refused because a peer's mailbox was full.
    busy_commands: AtomicU64,
    /// Log entries proposed for plain writes, and the write commands they carried.
    write_entries: AtomicU64,
    write_commands: AtomicU64,
}

impl StoreMetrics {
    /// Records one raft-engine write carrying `readies` peers' readies, handed to the log
    /// writer.
    pub(crate) fn on_raft_write(&self, readies: u64) {
        self.raft_engine_writes.fetch_add(1, Ordering::Relaxed);
        self.persisted_readies.fetch_add(readies, Ordering::Relaxed);
        self.max_readies_per_write
            .fetch_max(readies, Ordering::Relaxed);
    }

    /// Records a raft message from another store dropped for `reason`.
    pub(crate) fn on_dropped_message(&self, reason: DropReason) {
        self.dropped_messages[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a command refused with `ServerIsBusy` (its peer's mailbox was full).
    pub(crate) fn on_busy_command(&self) {
        self.busy_commands.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a sync the log writer made (with its thread, one covers every write queued
    /// before it).
    pub(crate) fn on_raft_sync(&self) {
        self.raft_engine_syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a log entry proposed for `commands` plain write commands.
    pub(crate) fn on_write_entry(&self, commands: u64) {
        self.write_entries.fetch_add(1, Ordering::Relaxed);
        self.write_commands.fetch_add(commands, Ordering::Relaxed);
    }

    /// Log entries proposed for plain writes (puts and deletes) so far.
    pub fn write_entries(&self) -> u64 {
        self.write_entries.load(Ordering::Relaxed)
    }

    /// Plain write commands those entries carried: above `write_entries` when a round's writes
    /// shared an entry.
    pub fn write_commands(&self) -> u64 {
        self.write_commands.load(Ordering::Relaxed)
    }

    /// Raft messages from other stores dropped for `reason` so far.
    pub fn dropped_messages(&self, reason: DropReason) -> u64 {
        self.dropped_messages[reason.index()].load(Ordering::Relaxed)
    }

    /// Commands refused because their peer's mailbox was full, so far.
    pub fn busy_commands(&self) -> u64 {
        self.busy_commands.load(Ordering::Relaxed)
    }

    /// Raft-engine writes so far.
    pub fn raft_engine_writes(&self) -> u64 {
        self.raft_engine_writes.load(Ordering::Relaxed)
    }

    /// Syncs of the raft engine: at most one per write, fewer when the log writer's thread
    /// let queued writes share one.
    pub fn raft_engine_syncs(&self) -> u64 {
        self.raft_engine_syncs.load(Ordering::Relaxed)
    }

    /// Readies (one per peer per batch) persisted by those writes.
    pub fn persisted_readies(&self) -> u64 {
        self.persisted_readies.load(Ordering::Relaxed)
    }

    /// The most peers' readies one write carried: above 1 means group commit across regions.
    pub fn max_readies_per_write(&self) -> u64 {
        self.max_readies_per_write.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_accumulate_2b() {
        let m = StoreMetrics::default();
        m.on_raft_write(1);
        m.on_raft_sync();
        m.on_raft_write(3);
        assert_eq!(m.raft_engine_writes(), 2);
        assert_eq!(m.raft_engine_syncs(), 1);
        assert_eq!(m.persisted_readies(), 4);
        assert_eq!(m.max_readies_per_write(), 3);
        m.on_write_entry(1);
        m.on_write_entry(5);
        assert_eq!((m.write_entries(), m.write_commands()), (2, 6));
    }
}
