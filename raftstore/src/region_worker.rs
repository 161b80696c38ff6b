//! The region worker: snapshot work that must not stall the raft worker.
//!
//! ```text
//! Generate  leader's PeerStorage asks for a snapshot -> build SST files from a kv-engine
//!           snapshot taken at the applied index -> answer through the peer storage's channel
//! Apply     follower persisted RegionLocalState(Applying) + RaftApplyState(snapshot index)
//!           -> delete the region's range, ingest the received files -> PeerMsg::SnapshotApplied
//! tick      GC of snapshot files no peer needs any more
//! ```
//!
//! Apply is idempotent (see `snap::SnapManager::apply`), so a store that crashed mid-apply finds
//! its region in `Applying` on restart and simply schedules the same apply again.
//!
//! The tasks ([`RegionTask`], [`GenResult`]) belong to the peer storage, which owns the
//! generate/apply protocol; this worker runs them.

use std::sync::Arc;
use std::time::Instant;

use kv::{keys, EngineSnapshot, Engines};
use proto::metapb;
use proto::raft_serverpb::{PeerState, RaftApplyState, RegionLocalState};
use snap::{SnapKey, SnapKind, SnapManager};

use crate::metrics::{SnapEvent, StoreMetrics};
use crate::msg::PeerMsg;
use crate::peer_storage::{raft_snapshot, GenResult, RegionTask};
use crate::router::Router;
use crate::worker::Runnable;

/// Runs [`RegionTask`]s.
pub(crate) struct RegionRunner {
    engines: Engines,
    snap_mgr: SnapManager,
    router: Router,
    metrics: Arc<StoreMetrics>,
}

impl RegionRunner {
    pub(crate) fn new(
        engines: Engines,
        snap_mgr: SnapManager,
        router: Router,
        metrics: Arc<StoreMetrics>,
    ) -> RegionRunner {
        RegionRunner {
            engines,
            snap_mgr,
            router,
            metrics,
        }
    }

    fn generate(
        &self,
        key: SnapKey,
        region: &metapb::Region,
        kv_snap: &EngineSnapshot,
    ) -> GenResult {
        let start = Instant::now();
        let built = self.snap_mgr.build(key, kv_snap, region).map_err(|e| {
            self.metrics
                .on_snapshot(SnapEvent::Generate, start.elapsed(), None);
            format!("building snapshot {key}: {e}")
        })?;
        self.metrics
            .on_snapshot(SnapEvent::Generate, start.elapsed(), Some(built.size));
        let snapshot = raft_snapshot(key, region, built.meta.clone());
        tracing::info!(region_id = key.region_id, %key, size = built.size, keys = built.keys,
            "snapshot generated");
        Ok(snapshot)
    }

    /// Whether snapshot `key` of `kind` can go: no peer on this store will use it again.
    fn is_stale(&self, kind: SnapKind, key: SnapKey) -> bool {
        let kv = &self.engines.kv;
        let region_state: Option<RegionLocalState> =
            kv::engine::get_msg(kv, &keys::region_state_key(key.region_id)).unwrap_or(None);
        let apply_state: Option<RaftApplyState> =
            kv::engine::get_msg(kv, &keys::apply_state_key(key.region_id)).unwrap_or(None);
        let applying = region_state
            .as_ref()
            .is_some_and(|s| s.state == PeerState::Applying as i32);
        match (kind, region_state, apply_state) {
            // A region destroyed here (or never created) needs no snapshot it generated.
            (SnapKind::Generated, None, _) | (SnapKind::Generated, _, None) => true,
            (SnapKind::Generated, Some(s), Some(a)) => {
                let truncated = a.truncated_state.map_or(0, |t| t.index);
                s.state == PeerState::Tombstone as i32 || key.index < truncated
            }
            // Being applied, or still needed for a redo after a crash.
            (SnapKind::Received, _, Some(a)) if applying && a.applied_index == key.index => false,
            (SnapKind::Received, _, Some(a)) => a.applied_index >= key.index,
            // The peer it is for does not exist yet: its message may still be on the way.
            (SnapKind::Received, _, None) => false,
        }
    }
}

impl Runnable for RegionRunner {
    type Task = RegionTask;

    fn run(&mut self, task: RegionTask) {
        match task {
            RegionTask::Generate {
                key,
                region,
                kv_snap,
                notify,
            } => {
                let result = self.generate(key, &region, &kv_snap);
                if let Err(e) = &result {
                    tracing::warn!(region_id = key.region_id, %key, error = %e,
                        "snapshot generation failed");
                }
                // The peer may be gone; then nobody needs the answer.
                let _ = notify.send(result);
            }
            RegionTask::Apply { key, region } => {
                let start = Instant::now();
                let applied = self.snap_mgr.apply(key, &self.engines.kv, &region);
                let bytes = applied.as_ref().ok().map(|a| a.size);
                self.metrics
                    .on_snapshot(SnapEvent::Apply, start.elapsed(), bytes);
                let result = applied
                    .map(|_| ())
                    .map_err(|e| format!("applying snapshot {key}: {e}"));
                if let Err(e) = &result {
                    tracing::error!(region_id = key.region_id, %key, error = %e,
                        "snapshot apply failed");
                }
                let msg = PeerMsg::SnapshotApplied {
                    index: key.index,
                    result,
                };
                let _ = self.router.send(key.region_id, msg);
            }
        }
    }

    fn on_tick(&mut self) {
        match self.snap_mgr.gc(|kind, key| self.is_stale(kind, key)) {
            Ok(deleted) if !deleted.is_empty() => {
                tracing::debug!(count = deleted.len(), "stale snapshots removed");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "snapshot gc failed"),
        }
    }
}

/// Work for the raft-log GC worker: delete region `region_id`'s log entries below `end_index`.
pub(crate) struct RaftLogGcTask {
    pub(crate) region_id: u64,
    pub(crate) end_index: u64,
}

/// Deletes truncated raft log entries from the raft engine in the background.
pub(crate) struct RaftLogGcRunner {
    engines: Engines,
}

impl RaftLogGcRunner {
    pub(crate) fn new(engines: Engines) -> RaftLogGcRunner {
        RaftLogGcRunner { engines }
    }
}

impl Runnable for RaftLogGcRunner {
    type Task = RaftLogGcTask;

    fn run(&mut self, task: RaftLogGcTask) {
        // From index 0: whatever an earlier, interrupted GC left behind goes too.
        let res = self
            .engines
            .raft_log
            .compact(task.region_id, task.end_index);
        if let Err(e) = res {
            // Harmless: the entries are below the truncated index and never read again; the
            // next GC of the region covers them.
            tracing::warn!(region_id = task.region_id, error = %e, "raft log gc failed");
        }
    }
}
