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
//!
//! The region worker's tasks ([`RegionTask`], with a generation's outcome as a [`GenResult`])
//! are defined here, with the protocol they serve; the region worker (`region_worker.rs`) runs
//! them.

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use kv::{keys, EngineSnapshot, WriteBatch};
use prost::Message as _;
use proto::eraftpb::Snapshot;
use proto::metapb;
use proto::raft_serverpb::{
    PeerState, RaftApplyState, RaftLocalState, RaftSnapshotData, RaftTruncatedState,
    RegionLocalState, SnapshotMeta,
};
use raft::StorageError;
use raftlog::LogBatch;
use snap::{SnapKey, SnapKind, SnapManager};

use super::{conf_state_of, PeerStorage};
use crate::error::{Error, Result};
use crate::worker::Scheduler;

/// The outcome of a generation: the raft snapshot to send, or why there is none.
pub(crate) type GenResult = std::result::Result<Snapshot, String>;

/// Work for the region worker.
pub(crate) enum RegionTask {
    /// Build snapshot `key` of `region` from `kv_snap` (taken at `key.index`).
    Generate {
        key: SnapKey,
        region: metapb::Region,
        kv_snap: EngineSnapshot,
        notify: Sender<GenResult>,
    },
    /// Replace `region`'s data with received snapshot `key`.
    Apply {
        key: SnapKey,
        region: metapb::Region,
    },
}

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
        let kv_snap = EngineSnapshot::new(&self.engines.kv);
        // The index the data is at, read from the same engine snapshot: the apply thread may
        // have written entries past the applied index this storage knows of (`apply_worker`).
        let applied =
            match kv_snap.get_msg::<RaftApplyState>(&keys::apply_state_key(self.region_id)) {
                Ok(Some(a)) => a.applied_index.max(self.applied_index()),
                Ok(None) => self.applied_index(),
                Err(e) => {
                    tracing::warn!(region_id = self.region_id, error = %e,
                    "cannot read the applied state for a snapshot");
                    return unavailable();
                }
            };
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
            kv_snap,
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
        raft_wb: &mut LogBatch,
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
        raft_wb.delete_entries(region_id, 0, st.raft_state.last_index + 1);
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

#[cfg(test)]
mod tests {
    use kv::Engines;
    use proto::eraftpb::{Entry, HardState};

    use super::*;
    use crate::worker::{Runnable, Worker};

    /// Hands each snapshot generation request's key to the test.
    struct Keys(crossbeam_channel::Sender<SnapKey>);

    impl Runnable for Keys {
        type Task = RegionTask;
        fn run(&mut self, task: RegionTask) {
            if let RegionTask::Generate { key, .. } = task {
                let _ = self.0.send(key);
            }
        }
    }

    /// With the apply thread (`apply_worker`), the kv engine can hold entries applied past the
    /// index the peer storage knows of: the task's write landed, its result is not taken up yet.
    /// A snapshot built from that engine at the storage's index would carry data of later
    /// entries, which the follower would then apply a second time after it.
    #[test]
    fn a_snapshot_is_at_the_index_its_data_is_at_2c() {
        let dir = tempfile::tempdir().unwrap();
        let engines = Engines::open(&dir.path().join("db")).unwrap();
        let region = crate::bootstrap::new_first_region(1, 1, 1);
        crate::bootstrap::prepare_bootstrap_cluster(&engines, &region).unwrap();
        let mut ps = PeerStorage::new(engines.clone(), region, 16).unwrap();
        let mgr = SnapManager::open(dir.path().join("snap"), Default::default()).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let worker = Worker::start("region-test", Keys(tx), None).unwrap();
        ps.set_snap_context(SnapContext {
            mgr,
            worker: worker.scheduler(),
        });
        // Entries 6..=8 committed; the storage knows of index 5 applied.
        let mut wb = LogBatch::new();
        let entries: Vec<Entry> = (6..=8)
            .map(|index| {
                let mut e = Entry::default();
                e.index = index;
                e.term = 6;
                e
            })
            .collect();
        ps.append(&entries, &mut wb).unwrap();
        let mut hs = HardState::default();
        hs.term = 6;
        hs.commit = 8;
        ps.save_raft_state(Some(&hs), &mut wb);
        engines.raft_log.write(&wb, true).unwrap();
        assert_eq!(ps.applied_index(), 5);
        // The apply thread's write of entries 6..=8, data and apply state in one batch.
        let mut kv_wb = WriteBatch::new(&engines.kv);
        kv_wb.put_msg(
            &keys::apply_state_key(1),
            &RaftApplyState {
                applied_index: 8,
                truncated_state: Some(RaftTruncatedState { index: 5, term: 5 }),
            },
        );
        kv_wb.write(false).unwrap();

        assert!(
            ps.request_snapshot(1).is_err(),
            "built on the region worker"
        );
        let key = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!((key.index, key.term), (8, 6));
    }
}
