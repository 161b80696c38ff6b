//! Snapshots in the peer storage.
//!
//! Generation (leader): raft asks [`PeerStorage::request_snapshot`] when a follower needs
//! compacted entries. The first call takes a kv-engine snapshot at the applied index and queues
//! it on the region worker, answering `SnapshotTemporarilyUnavailable`; a later call picks up the
//! built snapshot. A built snapshot is reused while it is not older than the truncated index and
//! its files exist, and one already on disk for the applied index is reused without a rebuild.
//!
//! Installing (follower), crash-safe in this order:
//! ```text
//! 1. kv engine, synced:  RegionLocalState { Applying, region }, RaftApplyState { applied = idx,
//!                        truncated = (idx, term) }
//! 2. raft engine, in the raft worker's batch: old log deleted, RaftLocalState { last = idx }
//! 3. region worker:      delete the region's range, ingest the files  (redone after a crash)
//! 4. kv engine, synced:  RegionLocalState { Normal }; the received files are deleted
//! ```
//! A crash between 1 and 2 leaves a raft state behind the truncated index;
//! [`recover_raft_state`] moves it up to the snapshot on restart.

use crossbeam_channel::{Receiver, TryRecvError};
use kv::{keys, Cf, EngineSnapshot, WriteBatch};
use prost::Message as _;
use proto::eraftpb::Snapshot;
use proto::metapb;
use proto::raft_serverpb::{
    PeerState, RaftApplyState, RaftLocalState, RaftSnapshotData, RaftTruncatedState,
    RegionLocalState, SnapshotMeta,
};
use raft::StorageError;
use snap::{SnapKey, SnapKind, SnapManager};

use super::{conf_state_of, PeerStorage};
use crate::error::{Error, Result};
use crate::region_worker::{GenResult, RegionTask};
use crate::worker::Scheduler;

/// What a peer storage needs to produce snapshots.
#[derive(Clone)]
pub(crate) struct SnapContext {
    pub(crate) mgr: SnapManager,
    pub(crate) worker: Scheduler<RegionTask>,
}

/// The leader's snapshot generation: one in flight at most, and the last one built.
#[derive(Default)]
pub(crate) struct GenState {
    pending: Option<Receiver<GenResult>>,
    last: Option<Snapshot>,
}

/// Repairs a raft state left behind the snapshot recorded in `apply_state` by a crash between
/// writing the kv engine and the raft engine (step 1 and 2 above).
pub(super) fn recover_raft_state(
    region_id: u64,
    mut raft_state: RaftLocalState,
    apply_state: &RaftApplyState,
) -> RaftLocalState {
    let truncated = apply_state.truncated_state.unwrap_or_default();
    if raft_state.last_index >= truncated.index {
        return raft_state;
    }
    tracing::info!(
        region_id,
        last_index = raft_state.last_index,
        snapshot_index = truncated.index,
        "raft log behind an installed snapshot; restarting the log after it"
    );
    raft_state.last_index = truncated.index;
    raft_state.last_term = truncated.term;
    let hs = raft_state.hard_state.get_or_insert_with(Default::default);
    if hs.term < truncated.term {
        hs.term = truncated.term;
        hs.vote = 0;
    }
    hs.commit = hs.commit.max(truncated.index);
    raft_state
}

fn unavailable() -> raft::Result<Snapshot> {
    Err(raft::Error::Store(
        StorageError::SnapshotTemporarilyUnavailable,
    ))
}

impl PeerStorage {
    /// Lets this storage build snapshots with `mgr` on the region worker `worker`.
    pub(crate) fn set_snap_context(&mut self, ctx: SnapContext) {
        self.snap = Some(ctx);
    }

    /// The answer to raft's request for a snapshot to send to peer `to`.
    pub(super) fn request_snapshot(&self, to: u64) -> raft::Result<Snapshot> {
        let Some(ctx) = &self.snap else {
            return unavailable();
        };
        let mut gen = self.gen.borrow_mut();
        if let Some(rx) = &gen.pending {
            match rx.try_recv() {
                Ok(Ok(s)) => {
                    gen.pending = None;
                    gen.last = Some(s);
                }
                // The worker logged why; the next request starts over.
                Ok(Err(_)) | Err(TryRecvError::Disconnected) => gen.pending = None,
                Err(TryRecvError::Empty) => return unavailable(),
            }
        }
        let truncated = self.truncated_index();
        if let Some(s) = gen.last.take() {
            let md = s.get_metadata();
            let cs = md.get_conf_state();
            let key = SnapKey::new(self.region_id, md.term, md.index);
            let has_to = cs.voters.contains(&to) || cs.learners.contains(&to);
            if md.index >= truncated && has_to && ctx.mgr.exists(SnapKind::Generated, key) {
                gen.last = Some(s.clone());
                return Ok(s);
            }
        }
        let region = self.region();
        if !region.peers.iter().any(|p| p.id == to) {
            // The conf change adding `to` is not applied yet; a snapshot must include it.
            return unavailable();
        }
        let applied = self.applied_index();
        let term = raft::Storage::term(self, applied)?;
        let key = SnapKey::new(self.region_id, term, applied);
        if ctx.mgr.exists(SnapKind::Generated, key) {
            // Built earlier at this very index (the data and region have not moved since).
            if let Ok(s) = snapshot_from_files(&ctx.mgr, key, &region) {
                gen.last = Some(s.clone());
                return Ok(s);
            }
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let task = RegionTask::Generate {
            key,
            region,
            kv_snap: EngineSnapshot::new(&self.engines.kv),
            notify: tx,
        };
        if ctx.worker.schedule(task).is_ok() {
            gen.pending = Some(rx);
        }
        unavailable()
    }

    /// Installs the snapshot raft handed out in a `Ready`: persists its states (steps 1 and 2
    /// above; step 2 goes into `raft_wb`) and returns its key and region for the region worker.
    ///
    /// # Errors
    /// An undecodable snapshot, a snapshot of another region, engine failures.
    pub(crate) fn apply_snapshot(
        &self,
        snap: &Snapshot,
        raft_wb: &mut WriteBatch,
    ) -> Result<(SnapKey, metapb::Region)> {
        let region_id = self.region_id;
        let md = snap.get_metadata();
        let (index, term) = (md.index, md.term);
        let data = RaftSnapshotData::decode(snap.get_data())
            .map_err(|e| Error::Other(format!("region {region_id}: bad snapshot data: {e}")))?;
        let region = data.region.filter(|r| r.id == region_id).ok_or_else(|| {
            Error::Other(format!("region {region_id}: snapshot of another region"))
        })?;
        let apply_state = RaftApplyState {
            applied_index: index,
            truncated_state: Some(RaftTruncatedState { index, term }),
        };
        let mut kv_wb = WriteBatch::new(&self.engines.kv);
        kv_wb.put_msg(
            &keys::region_state_key(region_id),
            &RegionLocalState {
                state: PeerState::Applying as i32,
                region: Some(region.clone()),
            },
        );
        kv_wb.put_msg(&keys::apply_state_key(region_id), &apply_state);
        kv_wb.write(true)?;

        let mut st = self.state.borrow_mut();
        raft_wb.delete_range_cf(
            Cf::Default,
            &keys::raft_log_key(region_id, 0),
            &keys::raft_log_key(region_id, st.raft_state.last_index + 1),
        )?;
        st.raft_state.last_index = index;
        st.raft_state.last_term = term;
        st.apply_state = apply_state;
        st.region = region.clone();
        st.cache.clear();
        self.gen.borrow_mut().last = None;
        Ok((SnapKey::new(region_id, term, index), region))
    }
}

/// The raft snapshot for generated snapshot `key` of `region`, from its files' meta.
fn snapshot_from_files(
    mgr: &SnapManager,
    key: SnapKey,
    region: &metapb::Region,
) -> snap::Result<Snapshot> {
    Ok(raft_snapshot(
        key,
        region,
        mgr.meta(SnapKind::Generated, key)?,
    ))
}

/// The raft snapshot of `region` at `key` whose files `meta` describes.
pub(crate) fn raft_snapshot(key: SnapKey, region: &metapb::Region, meta: SnapshotMeta) -> Snapshot {
    let data = RaftSnapshotData {
        region: Some(region.clone()),
        file_size: snap::meta_total_size(&meta),
        data: Vec::new(),
        meta: Some(meta),
    };
    let mut snapshot = Snapshot::default();
    let md = snapshot.mut_metadata();
    md.index = key.index;
    md.term = key.term;
    md.set_conf_state(conf_state_of(region));
    snapshot.data = data.encode_to_vec().into();
    snapshot
}
