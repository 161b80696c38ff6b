//! [`StoreMetrics`]: one store's metrics, in a Prometheus registry of its own (a process may run
//! several stores), kept apart from the handlers that record them; and [`DropReason`], the
//! reasons dropped raft messages are counted by. The server publishes the registry at
//! `GET /metrics`; tests read the counters (group commit, dropped messages).
//!
//! Names follow Prometheus' conventions: `tessera_` first, `_total` for counters, `_seconds` and
//! `_bytes` for units. Every series a label can take is created at start (at 0), so a scrape
//! always lists it. The README's "Operating Tessera" section lists them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

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

/// The buckets of every duration histogram: 50 µs to 6.6 s, doubling.
pub fn duration_buckets() -> Vec<f64> {
    (0..18).map(|i| 0.000_05 * f64::from(1u32 << i)).collect()
}

/// Registers metrics in one registry, the `?` way: a name or label that is not valid, or taken
/// twice, is an error.
pub struct MetricsBuilder<'a>(pub &'a Registry);

impl MetricsBuilder<'_> {
    fn add<M: Collector + Clone + 'static>(&self, m: M) -> prometheus::Result<M> {
        self.0.register(Box::new(m.clone()))?;
        Ok(m)
    }

    /// A counter.
    pub fn counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        self.add(IntCounter::new(name, help)?)
    }

    /// A counter with `labels`.
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    /// A gauge.
    pub fn gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        self.add(IntGauge::new(name, help)?)
    }

    /// A histogram with `buckets`.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
    ) -> prometheus::Result<Histogram> {
        self.add(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(buckets),
        )?)
    }

    /// A histogram with `buckets` and `labels`.
    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> prometheus::Result<HistogramVec> {
        self.add(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets),
            labels,
        )?)
    }
}

/// What a proposal asks of raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProposalKind {
    /// A log entry of commands (writes, admin commands).
    Entry,
    /// A membership change.
    ConfChange,
    /// A ReadIndex round (one per batch of reads).
    ReadIndex,
    /// A leader transfer.
    TransferLeader,
}

impl ProposalKind {
    const ALL: [ProposalKind; 4] = [
        ProposalKind::Entry,
        ProposalKind::ConfChange,
        ProposalKind::ReadIndex,
        ProposalKind::TransferLeader,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ProposalKind::Entry => "entry",
            ProposalKind::ConfChange => "conf_change",
            ProposalKind::ReadIndex => "read_index",
            ProposalKind::TransferLeader => "transfer_leader",
        }
    }
}

/// A step of a snapshot's way from a leader's store to a follower's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SnapEvent {
    /// Built on this store, for a follower.
    Generate,
    /// Sent to another store (until the receiver verified it).
    Send,
    /// Received from another store and verified.
    Receive,
    /// Put in place of a region's data here.
    Apply,
}

impl SnapEvent {
    const ALL: [SnapEvent; 4] = [
        SnapEvent::Generate,
        SnapEvent::Send,
        SnapEvent::Receive,
        SnapEvent::Apply,
    ];

    fn as_str(self) -> &'static str {
        match self {
            SnapEvent::Generate => "generate",
            SnapEvent::Send => "send",
            SnapEvent::Receive => "receive",
            SnapEvent::Apply => "apply",
        }
    }
}

/// The store's gauges, set by the raft worker about once a second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// Peers (one per region) on the store.
    pub regions: i64,
    /// Of them, leaders.
    pub leaders: i64,
    /// Followers the leaders here must send a snapshot to.
    pub pending_peers: i64,
    /// Committed entries not yet applied, over all peers.
    pub apply_pending_entries: i64,
}

/// One store's metrics.
pub struct StoreMetrics {
    registry: Registry,
    raft_engine_writes: IntCounter,
    raft_engine_syncs: IntCounter,
    persisted_readies: IntCounter,
    max_readies_per_write: AtomicU64,
    write_peers: Histogram,
    write_duration: Histogram,
    sync_duration: Histogram,
    /// Raft messages from other stores dropped, by [`DropReason`].
    dropped_messages: Vec<IntCounter>,
    /// Commands refused because a peer's mailbox was full.
    busy_commands: IntCounter,
    /// Log entries proposed for plain writes, and the write commands they carried.
    write_entries: IntCounter,
    write_commands: IntCounter,
    proposals: Vec<IntCounter>,
    became_leader: IntCounter,
    commit_duration: Histogram,
    apply_duration: Histogram,
    splits: IntCounter,
    conf_changes: IntCounterVec,
    snapshots: IntCounterVec,
    snapshot_duration: HistogramVec,
    snapshot_bytes: IntCounterVec,
    regions: IntGauge,
    leaders: IntGauge,
    pending_peers: IntGauge,
    apply_pending_entries: IntGauge,
    disk_full: IntGauge,
    disk_available: IntGauge,
}

impl std::fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMetrics").finish_non_exhaustive()
    }
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics::new(Registry::new())
    }
}

impl StoreMetrics {
    /// The store's metrics, registered in `registry`.
    ///
    /// # Panics
    /// When `registry` already holds one of them: a store's metrics go in a registry of their
    /// own.
    pub fn new(registry: Registry) -> StoreMetrics {
        match StoreMetrics::build(registry) {
            Ok(m) => m,
            Err(e) => panic!("registering a store's metrics: {e}"),
        }
    }

    fn build(registry: Registry) -> prometheus::Result<StoreMetrics> {
        let b = MetricsBuilder(&registry);
        let dropped = b.counter_vec(
            "tessera_raft_messages_dropped_total",
            "Raft messages from other stores dropped, by reason",
            &["reason"],
        )?;
        let proposals = b.counter_vec(
            "tessera_raft_proposals_total",
            "Proposals appended to the raft log or started (ReadIndex, leader transfer), by kind",
            &["kind"],
        )?;
        let conf_changes = b.counter_vec(
            "tessera_conf_changes_total",
            "Membership changes applied on this store, by kind",
            &["kind"],
        )?;
        for kind in ["add_voter", "add_learner", "remove"] {
            conf_changes.with_label_values(&[kind]);
        }
        let snapshots = b.counter_vec(
            "tessera_snapshots_total",
            "Snapshots generated, sent, received and applied by this store, by event and result",
            &["event", "result"],
        )?;
        let snapshot_duration = b.histogram_vec(
            "tessera_snapshot_duration_seconds",
            "Time to generate, send, receive or apply a snapshot",
            &["event"],
            duration_buckets(),
        )?;
        let snapshot_bytes = b.counter_vec(
            "tessera_snapshot_bytes_total",
            "Bytes of the snapshots generated, received and applied (sends are not sized)",
            &["event"],
        )?;
        for event in SnapEvent::ALL {
            for result in ["ok", "error"] {
                snapshots.with_label_values(&[event.as_str(), result]);
            }
            snapshot_duration.with_label_values(&[event.as_str()]);
            snapshot_bytes.with_label_values(&[event.as_str()]);
        }
        let peer_buckets = (0..9).map(|i| f64::from(1u32 << i)).collect();
        let m = StoreMetrics {
            raft_engine_writes: b.counter(
                "tessera_raft_engine_writes_total",
                "Raft-engine writes (one per round of readies with something to persist)",
            )?,
            raft_engine_syncs: b.counter(
                "tessera_raft_engine_syncs_total",
                "Syncs of the raft engine (one covers every write queued before it)",
            )?,
            persisted_readies: b.counter(
                "tessera_raft_engine_persisted_readies_total",
                "Peers' readies persisted by raft-engine writes",
            )?,
            max_readies_per_write: AtomicU64::new(0),
            write_peers: b.histogram(
                "tessera_raft_engine_write_peers",
                "Peers whose readies one raft-engine write carried (group commit across regions)",
                peer_buckets,
            )?,
            write_duration: b.histogram(
                "tessera_raft_engine_write_duration_seconds",
                "Time of one raft-engine write, with its sync when it makes one",
                duration_buckets(),
            )?,
            sync_duration: b.histogram(
                "tessera_raft_engine_fsync_duration_seconds",
                "Time of the raft-engine writes that sync (the write and its fsync)",
                duration_buckets(),
            )?,
            dropped_messages: DropReason::ALL
                .iter()
                .map(|r| dropped.with_label_values(&[r.as_str()]))
                .collect(),
            busy_commands: b.counter(
                "tessera_busy_commands_total",
                "Commands refused because their peer's mailbox was full",
            )?,
            write_entries: b.counter(
                "tessera_write_entries_total",
                "Log entries proposed for plain writes",
            )?,
            write_commands: b.counter(
                "tessera_write_commands_total",
                "Plain write commands those entries carried",
            )?,
            proposals: ProposalKind::ALL
                .iter()
                .map(|k| proposals.with_label_values(&[k.as_str()]))
                .collect(),
            became_leader: b.counter(
                "tessera_raft_became_leader_total",
                "Times a peer on this store became its region's leader",
            )?,
            commit_duration: b.histogram(
                "tessera_raft_commit_duration_seconds",
                "Time from a leader's proposal to its entry committing",
                duration_buckets(),
            )?,
            apply_duration: b.histogram(
                "tessera_raft_apply_duration_seconds",
                "Time to apply one batch of committed entries (a peer's, or the apply thread's over several peers)",
                duration_buckets(),
            )?,
            splits: b.counter(
                "tessera_region_splits_total",
                "Region splits applied on this store",
            )?,
            conf_changes,
            snapshots,
            snapshot_duration,
            snapshot_bytes,
            regions: b.gauge("tessera_regions", "Regions with a peer on this store")?,
            leaders: b.gauge("tessera_region_leaders", "Regions this store leads")?,
            pending_peers: b.gauge(
                "tessera_pending_peers",
                "Followers of this store's leaders that need a snapshot",
            )?,
            apply_pending_entries: b.gauge(
                "tessera_apply_pending_entries",
                "Committed entries not yet applied, over all peers of the store",
            )?,
            disk_full: b.gauge(
                "tessera_disk_full",
                "1 while the free space is below the reserve (writes refused)",
            )?,
            disk_available: b.gauge(
                "tessera_disk_available_bytes",
                "Free space of the store's disk at the last check",
            )?,
            registry,
        };
        Ok(m)
    }

    /// The registry the metrics are in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one raft-engine write carrying `readies` peers' readies, handed to the log
    /// writer.
    pub(crate) fn on_raft_write(&self, readies: u64) {
        self.raft_engine_writes.inc();
        self.persisted_readies.inc_by(readies);
        self.write_peers.observe(readies as f64);
        self.max_readies_per_write
            .fetch_max(readies, Ordering::Relaxed);
    }

    /// Records a raft-engine write that took `took`, synced or not.
    pub(crate) fn on_raft_persist(&self, took: Duration, synced: bool) {
        self.write_duration.observe(took.as_secs_f64());
        if synced {
            self.raft_engine_syncs.inc();
            self.sync_duration.observe(took.as_secs_f64());
        }
    }

    /// Records a raft message from another store dropped for `reason`.
    pub(crate) fn on_dropped_message(&self, reason: DropReason) {
        self.dropped_messages[reason.index()].inc();
    }

    /// Records a command refused with `ServerIsBusy` (its peer's mailbox was full).
    pub(crate) fn on_busy_command(&self) {
        self.busy_commands.inc();
    }

    /// Records a log entry proposed for `commands` plain write commands.
    pub(crate) fn on_write_entry(&self, commands: u64) {
        self.write_entries.inc();
        self.write_commands.inc_by(commands);
    }

    /// Records a proposal of `kind`.
    pub(crate) fn on_proposal(&self, kind: ProposalKind) {
        let i = ProposalKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_default();
        self.proposals[i].inc();
    }

    /// Records a peer here becoming leader.
    pub(crate) fn on_became_leader(&self) {
        self.became_leader.inc();
    }

    /// Records a proposal committing `took` after it was made.
    pub(crate) fn on_commit(&self, took: Duration) {
        self.commit_duration.observe(took.as_secs_f64());
    }

    /// Records one peer's batch of entries applied in `took`.
    pub(crate) fn on_apply(&self, took: Duration) {
        self.apply_duration.observe(took.as_secs_f64());
    }

    /// Records a split applied.
    pub(crate) fn on_split(&self) {
        self.splits.inc();
    }

    /// Records a membership change applied: `"add_voter"`, `"add_learner"` or `"remove"`.
    pub(crate) fn on_conf_change(&self, kind: &str) {
        self.conf_changes.with_label_values(&[kind]).inc();
    }

    /// Records a snapshot step: how long it took, and its bytes when it succeeded (`None`:
    /// it failed).
    pub(crate) fn on_snapshot(&self, event: SnapEvent, took: Duration, bytes: Option<u64>) {
        let e = event.as_str();
        let result = if bytes.is_some() { "ok" } else { "error" };
        self.snapshots.with_label_values(&[e, result]).inc();
        self.snapshot_duration
            .with_label_values(&[e])
            .observe(took.as_secs_f64());
        if let Some(bytes) = bytes {
            self.snapshot_bytes.with_label_values(&[e]).inc_by(bytes);
        }
    }

    /// Sets the store's peer gauges.
    pub(crate) fn set_peer_counts(&self, c: PeerCounts) {
        self.regions.set(c.regions);
        self.leaders.set(c.leaders);
        self.pending_peers.set(c.pending_peers);
        self.apply_pending_entries.set(c.apply_pending_entries);
    }

    /// The peer gauges as last set.
    pub fn peer_counts(&self) -> PeerCounts {
        PeerCounts {
            regions: self.regions.get(),
            leaders: self.leaders.get(),
            pending_peers: self.pending_peers.get(),
            apply_pending_entries: self.apply_pending_entries.get(),
        }
    }

    /// Sets the disk gauges after a check; `available` is `None` until the free space has been
    /// read once (exported as -1, so that no dashboard or alert takes it for a full disk).
    pub(crate) fn set_disk(&self, full: bool, available: Option<u64>) {
        self.disk_full.set(i64::from(full));
        self.disk_available
            .set(available.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX)));
    }

    /// Log entries proposed for plain writes (puts and deletes) so far.
    pub fn write_entries(&self) -> u64 {
        self.write_entries.get()
    }

    /// Plain write commands those entries carried: above `write_entries` when a round's writes
    /// shared an entry.
    pub fn write_commands(&self) -> u64 {
        self.write_commands.get()
    }

    /// Raft messages from other stores dropped for `reason` so far.
    pub fn dropped_messages(&self, reason: DropReason) -> u64 {
        self.dropped_messages[reason.index()].get()
    }

    /// Commands refused because their peer's mailbox was full, so far.
    pub fn busy_commands(&self) -> u64 {
        self.busy_commands.get()
    }

    /// Raft-engine writes so far.
    pub fn raft_engine_writes(&self) -> u64 {
        self.raft_engine_writes.get()
    }

    /// Syncs of the raft engine: at most one per write, fewer when the log writer's thread
    /// let queued writes share one.
    pub fn raft_engine_syncs(&self) -> u64 {
        self.raft_engine_syncs.get()
    }

    /// Readies (one per peer per batch) persisted by those writes.
    pub fn persisted_readies(&self) -> u64 {
        self.persisted_readies.get()
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
        m.on_raft_persist(Duration::from_millis(1), true);
        m.on_raft_write(3);
        m.on_raft_persist(Duration::from_millis(1), false);
        assert_eq!(m.raft_engine_writes(), 2);
        assert_eq!(m.raft_engine_syncs(), 1);
        assert_eq!(m.persisted_readies(), 4);
        assert_eq!(m.max_readies_per_write(), 3);
        m.on_write_entry(1);
        m.on_write_entry(5);
        assert_eq!((m.write_entries(), m.write_commands()), (2, 6));
    }

    /// Every labelled series exists from the start, and each name is registered once.
    #[test]
    fn every_series_is_listed_before_it_counts_2b() {
        let m = StoreMetrics::default();
        let families = m.registry().gather();
        let count = |name: &str| {
            families
                .iter()
                .find(|f| f.name() == name)
                .map_or(0, |f| f.get_metric().len())
        };
        assert_eq!(
            count("tessera_raft_messages_dropped_total"),
            DropReason::ALL.len()
        );
        assert_eq!(
            count("tessera_raft_proposals_total"),
            ProposalKind::ALL.len()
        );
        assert_eq!(count("tessera_snapshots_total"), 8);
        assert_eq!(count("tessera_conf_changes_total"), 3);
        assert_eq!(count("tessera_regions"), 1);
        // A second store's metrics in the same registry are refused by name.
        let again = StoreMetrics::build(m.registry().clone());
        assert!(again.is_err());
    }

    #[test]
    fn duration_buckets_double_from_50_microseconds_2b() {
        let b = duration_buckets();
        assert_eq!(b.len(), 18);
        assert!((b[0] - 0.000_05).abs() < 1e-12);
        assert!(b.windows(2).all(|w| (w[1] / w[0] - 2.0).abs() < 1e-9));
        assert!(b[17] > 6.0 && b[17] < 7.0);
    }
}
