//! [`Peer`]: the state of one region's peer on this store — its raft node, its pending proposals
//! and reads — and [`PeerMsgHandler`], the short-lived handler the raft worker builds per batch.
//!
//! The peer's features live in one file each:
//! - `context`: [`PollContext`], what the handlers of a raft worker batch share, and [`PeerFsm`];
//! - `handler`: dispatching [`crate::PeerMsg`]s, raft messages from other stores, ticks;
//! - `propose`: checking and proposing commands, starting ReadIndex reads;
//! - `write_batch`: a round's plain writes proposed as one log entry;
//! - `ready`: collecting a `Ready` into the group-commit batch, then sending, reading, advancing;
//! - `apply`: applying committed entries to the kv engine and answering proposals;
//! - `async_apply`: handing runs of plain writes to the apply thread (`apply_worker`);
//! - `snapshot`: snapshots in and out, and raft log GC;
//! - `conf_change`: leader transfer, membership changes, destroying a removed peer;
//! - `split`: split checks, asking for ids, proposing and applying `Split`.

mod admin;
mod apply;
mod async_apply;
mod compact_log;
mod conf_change;
mod context;
mod handler;
mod lease;
mod propose;
mod read;
mod ready;
mod snapshot;
mod split;
mod ttl;
mod write_batch;

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use kv::Engines;
use proto::eraftpb;
use proto::metapb;
use proto::raft_cmdpb::RaftCmdRequest;
use proto::raft_serverpb::RaftMessage;
use protobuf::Message as _;
use raft::{RawNode, StateRole};
use snap::SnapKey;

use crate::config::Config;
use crate::error::Result;
use crate::msg::Callback;
use crate::peer_storage::{PeerStorage, SnapContext};
use crate::transport::SnapshotReport;
use lease::Lease;

pub(crate) use context::{PeerFsm, PollContext};
pub(crate) use handler::PeerMsgHandler;
pub use read::UNSAFE_LOCAL_READS_ENV;

/// A proposed command waiting for its entry to be applied.
struct Proposal {
    index: u64,
    term: u64,
    callback: Callback,
    proposed_at: Instant,
    /// Its commit was timed (see `metrics`).
    commit_seen: bool,
}

impl Proposal {
    fn new(index: u64, term: u64, callback: Callback) -> Proposal {
        Proposal {
            index,
            term,
            callback,
            proposed_at: Instant::now(),
            commit_seen: false,
        }
    }
}

/// A read waiting for its ReadIndex answer, then for the peer to apply up to that index.
struct PendingRead {
    ctx: Vec<u8>,
    /// When its ReadIndex started (set once started).
    started: Option<Instant>,
    read_index: Option<u64>,
    request: Box<RaftCmdRequest>,
    callback: Callback,
}

/// Where a peer is in its life. A peer serves while `Live`; once its own removal is applied it
/// is `Removed` for the rest of that apply batch (nothing after the removal entry is its to
/// apply), and `Destroyed` once its data is gone and the raft worker is to drop it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    Live,
    Removed,
    Destroyed,
}

/// The next [`Peer::serial`].
static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One region's peer on this store.
pub(crate) struct Peer {
    region_id: u64,
    meta: metapb::Peer,
    raft_group: RawNode<PeerStorage>,
    /// Proposals in index order.
    proposals: VecDeque<Proposal>,
    lease: Lease,
    /// The end and region epoch of the lease this peer last published for reads on other
    /// threads.
    published_lease: Option<(Instant, metapb::RegionEpoch)>,
    /// The term of the last entry applied (0 before the first apply since the start).
    applied_term: u64,
    /// Ticks left during which vote requests are refused: a peer loaded at the store's start
    /// may have acknowledged a leader whose lease still runs (see `lease.rs`).
    vote_guard_ticks: usize,
    /// This round's plain writes, proposed together as one entry (see `write_batch`).
    pending_writes: write_batch::PendingWrites,
    /// Peers heard from that are not (yet) in the region's peer list: where replies go.
    extra_peers: Vec<metapb::Peer>,
    /// The highest compact index this peer proposed as leader.
    last_compact_proposed: u64,
    /// Live, removed (destroyed once the apply batch is written), or destroyed.
    lifecycle: Lifecycle,
    /// A split was proposed at this index: until it is applied, a commit index that advances is
    /// sent to the followers at once (raft holds it back otherwise; see `Config::raft_config`).
    bcast_commit_until: Option<u64>,
    /// When this peer last asked the scheduler whether it was removed.
    stale_check_at: Option<Instant>,
    /// Unique in the process: tells this peer from a later one of the same region (a split's
    /// peer replacing one created by a message), for readies that finish after the swap.
    pub(crate) serial: u64,
    /// Readies of this peer handed to the log writer and not finished yet.
    pub(crate) readies_in_flight: usize,
    /// Committed entries waiting for the apply thread, and its task in flight.
    apply_queue: async_apply::ApplyQueue,
    /// Reads waiting for their ReadIndex or for the peer to apply up to it.
    reads: Reads,
    /// Snapshots this peer applies or sends.
    snapshots: Snapshots,
    /// Ticks since each periodic task of the peer last ran.
    ticks: Ticks,
    /// What the split checks found, and what was written since.
    size: SizeEstimate,
}

/// A peer's reads on their way through ReadIndex.
#[derive(Default)]
struct Reads {
    /// In arrival order; read indexes are answered in order too.
    pending: VecDeque<PendingRead>,
    /// Reads of `pending` that wait for this round's shared ReadIndex to start.
    queued: usize,
    /// The context of the next ReadIndex.
    next_ctx: u64,
}

/// The snapshots a peer applies (as a follower) and sends (as a leader).
#[derive(Default)]
struct Snapshots {
    /// The received snapshot the region worker is applying; raft readies wait for it.
    applying: Option<SnapKey>,
    /// The last apply of `applying` failed; it is retried on the next tick.
    apply_failed: bool,
    /// Followers this leader is sending a snapshot to, since when (to retry a lost one).
    sent: HashMap<u64, Instant>,
}

/// Ticks since each periodic task of a peer last ran.
#[derive(Default)]
struct Ticks {
    /// The leader's region heartbeat.
    heartbeat: u64,
    /// The raft log GC check.
    log_gc: u64,
    /// The leader's split check.
    split_check: u64,
    /// The leader's TTL check.
    ttl_check: u64,
}

/// A region's size as the split checks know it.
#[derive(Default)]
struct SizeEstimate {
    /// Bytes of commands applied since the last split check.
    diff_hint: u64,
    /// The region's size and key count from the last split check (unknown after a split).
    approximate_size: Option<u64>,
    approximate_keys: Option<u64>,
}

impl Peer {
    /// Creates the peer `peer` of `region` from what the engines hold; `snap` lets it build
    /// snapshots.
    pub(crate) fn new(
        cfg: &Config,
        engines: Engines,
        snap: SnapContext,
        region: metapb::Region,
        peer: metapb::Peer,
    ) -> Result<Peer> {
        let region_id = region.id;
        let mut storage = PeerStorage::new(engines, region, cfg.entry_cache_limit)?;
        storage.set_snap_context(snap);
        let applied = storage.applied_index();
        let raft_cfg = cfg.raft_config(peer.id, applied);
        let raft_group = RawNode::new(&raft_cfg, storage)?;
        Ok(Peer {
            region_id,
            meta: peer,
            raft_group,
            proposals: VecDeque::new(),
            lease: Lease::new(cfg.leader_lease()),
            published_lease: None,
            applied_term: 0,
            vote_guard_ticks: 0,
            pending_writes: Default::default(),
            extra_peers: Vec::new(),
            last_compact_proposed: 0,
            bcast_commit_until: None,
            lifecycle: Lifecycle::Live,
            stale_check_at: None,
            serial: NEXT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            readies_in_flight: 0,
            apply_queue: Default::default(),
            reads: Reads::default(),
            snapshots: Snapshots::default(),
            ticks: Ticks::default(),
            size: SizeEstimate::default(),
        })
    }

    /// Refuses vote requests for one election timeout: for peers loaded at the store's start,
    /// which may have acknowledged, before a restart, a leader whose lease still runs.
    pub(crate) fn guard_votes_after_restart(&mut self, cfg: &Config) {
        self.vote_guard_ticks = cfg.raft_election_timeout_ticks;
    }

    pub(crate) fn region_id(&self) -> u64 {
        self.region_id
    }

    /// Destroyed: its data is gone, and the raft worker drops it.
    pub(crate) fn destroyed(&self) -> bool {
        self.lifecycle == Lifecycle::Destroyed
    }

    /// Its own removal was applied in the apply batch under way.
    pub(crate) fn removed(&self) -> bool {
        self.lifecycle == Lifecycle::Removed
    }

    pub(crate) fn peer_id(&self) -> u64 {
        self.meta.id
    }

    pub(crate) fn region(&self) -> metapb::Region {
        self.raft_group.store().region()
    }

    /// Entries committed and not yet applied.
    pub(crate) fn apply_lag(&self) -> u64 {
        let applied = self.raft_group.store().applied_index();
        let committed = self.raft_group.raft().raft_log().committed();
        committed.saturating_sub(applied)
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.raft_group.raft().state() == StateRole::Leader
    }

    pub(crate) fn term(&self) -> u64 {
        self.raft_group.raft().term()
    }

    /// The leader this peer knows of, as a full peer (for `NotLeader` hints).
    pub(crate) fn leader(&self) -> Option<metapb::Peer> {
        let id = self.raft_group.raft().leader_id();
        self.find_peer(id)
    }

    pub(super) fn find_peer(&self, id: u64) -> Option<metapb::Peer> {
        if id == raft::INVALID_ID {
            return None;
        }
        self.raft_group
            .store()
            .region_peer(id)
            .or_else(|| self.extra_peers.iter().find(|p| p.id == id).cloned())
    }

    /// Wraps raft messages for other stores and hands them to the transport; a peer the
    /// transport cannot reach is reported unreachable so the leader probes it gently.
    fn send_raft_messages(&mut self, ctx: &PollContext, msgs: Vec<eraftpb::Message>) {
        if msgs.is_empty() {
            return;
        }
        let region = self.region();
        for m in msgs {
            let to = m.to;
            let is_snapshot = m.get_msg_type() == eraftpb::MessageType::MsgSnapshot;
            if is_snapshot {
                self.snapshots.sent.insert(to, Instant::now());
            }
            let Some(to_peer) = self.find_peer(to) else {
                tracing::warn!(
                    region_id = self.region_id,
                    peer_id = self.meta.id,
                    to,
                    "dropping a raft message to a peer not in the region"
                );
                continue;
            };
            let bytes = match m.write_to_bytes() {
                Ok(b) => b,
                Err(e) => panic!(
                    "region {} peer {}: encoding a raft message failed: {e}",
                    self.region_id, self.meta.id
                ),
            };
            let msg = RaftMessage {
                region_id: self.region_id,
                from_peer: Some(self.meta),
                to_peer: Some(to_peer),
                message: bytes,
                region_epoch: region.region_epoch,
                is_tombstone: false,
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
            };
            if is_snapshot {
                let report = SnapshotReport::new(
                    ctx.router.clone(),
                    self.region_id,
                    to,
                    ctx.metrics.clone(),
                );
                if let Err(e) = ctx.transport.send_snapshot(msg, &ctx.snap_mgr, report) {
                    tracing::info!(region_id = self.region_id, peer_id = self.meta.id, to,
                        error = %e, "snapshot not sent");
                    self.snapshots.sent.remove(&to);
                    self.raft_group
                        .report_snapshot(to, raft::SnapshotStatus::Failure);
                }
            } else if let Err(e) = ctx.transport.send(msg) {
                tracing::debug!(region_id = self.region_id, peer_id = self.meta.id, to,
                    error = %e, "raft message not delivered");
                self.raft_group.report_unreachable(to);
            }
        }
    }
}

impl Peer {
    /// Whether the raft node has work for the next ready phase. None while a snapshot is being
    /// applied: whatever raft has waits until the data is in place.
    pub(crate) fn has_ready(&self) -> bool {
        !self.destroyed()
            && self.snapshots.applying.is_none()
            // A snapshot replaces what earlier readies would apply: they finish first.
            && !((self.readies_in_flight > 0 || self.apply_queue.busy())
                && self.raft_group.snapshot_pending())
            && self.raft_group.has_ready()
    }
}
