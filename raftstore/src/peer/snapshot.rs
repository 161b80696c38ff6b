//! Snapshots on the peer's side.
//!
//! - Incoming: a `MsgSnapshot` reaches raft only if its files are here, complete and verified
//!   (the transport put them there) and its range overlaps no other region of this store.
//!   Installing it hands the data to the region worker; until `SnapshotApplied` the peer
//!   handles no `Ready`.
//! - Outgoing: the transport's report ends a send; a send nobody reports within
//!   `snapshot_send_timeout` is reported failed so raft sends a new one.
//!
//! Log GC, which makes followers that fell behind need a snapshot, is in `compact_log.rs`.

use std::time::Instant;

use kv::{keys, WriteBatch};
use proto::raft_serverpb::{PeerState, RaftMessage, RegionLocalState};
use proto::{eraftpb, metapb};
use raft::{ProgressState, SnapshotStatus};
use snap::{SnapKey, SnapKind};

use super::PeerMsgHandler;
use crate::peer_storage::RegionTask;

impl PeerMsgHandler<'_> {
    /// Whether an incoming snapshot message `m` (in `msg`) may reach raft. A snapshot replaces
    /// the replica's data, so it is taken only when it is what a leader this peer follows would
    /// send: from the leader raft knows at the current term (a snapshot is never how a new
    /// leader makes itself known: its heartbeats come first, and a dropped snapshot is simply
    /// sent again), for this region and this peer, of a region epoch no older than ours, with
    /// its files here and verified, and overlapping no other region of this store. Raft then
    /// refuses one that is not newer than what it has committed.
    ///
    /// # Errors
    /// Why the snapshot is refused.
    pub(super) fn check_incoming_snapshot(
        &self,
        msg: &RaftMessage,
        m: &eraftpb::Message,
    ) -> Result<(), String> {
        let region_id = self.peer.region_id;
        let (key, data) = snap::snapshot_in_message(msg).map_err(|e| e.to_string())?;
        let raft = self.peer.raft_group.raft();
        if m.term != raft.term() || m.from != raft.leader_id() || m.from == raft::INVALID_ID {
            return Err(format!(
                "snapshot {key} from peer {} at term {}, but this peer follows {} at term {}",
                m.from,
                m.term,
                raft.leader_id(),
                raft.term()
            ));
        }
        let region = data.region.unwrap_or_default();
        if region.id != region_id {
            return Err(format!("snapshot {key} holds region {}", region.id));
        }
        let me = self.peer.meta;
        if !region
            .peers
            .iter()
            .any(|p| p.id == me.id && p.store_id == me.store_id)
        {
            return Err(format!(
                "snapshot {key} of a membership without this peer ({:?})",
                region.peers
            ));
        }
        let local = self.peer.region().region_epoch.unwrap_or_default();
        let theirs = region.region_epoch.unwrap_or_default();
        if theirs.conf_ver < local.conf_ver || theirs.version < local.version {
            return Err(format!(
                "snapshot {key} has epoch {theirs:?}, older than ours {local:?}"
            ));
        }
        if !self.ctx.snap_mgr.exists(SnapKind::Received, key) {
            return Err(format!("snapshot {key} without its files"));
        }
        let meta = self
            .ctx
            .store_meta
            .read()
            .unwrap_or_else(|e| e.into_inner());
        if meta.overlaps(region_id, &region.start_key, &region.end_key) {
            return Err(format!("snapshot {key} overlaps another region here"));
        }
        Ok(())
    }

    /// Deletes the files of a refused incoming snapshot, unless they are the ones this peer is
    /// applying (a refused copy must not pull them from under a retried apply).
    pub(super) fn discard_received_snapshot(&self, msg: &RaftMessage) {
        let Ok((key, _)) = snap::snapshot_in_message(msg) else {
            return;
        };
        if self.peer.snapshots.applying == Some(key) {
            return;
        }
        if let Err(e) = self.ctx.snap_mgr.delete(SnapKind::Received, key) {
            tracing::debug!(region_id = key.region_id, %key, error = %e,
                "refused snapshot not deleted; gc will");
        }
    }

    /// Hands an installed snapshot's data to the region worker.
    pub(super) fn start_applying_snapshot(&mut self, key: SnapKey, region: metapb::Region) {
        self.ctx
            .store_meta
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(region.clone());
        self.peer.snapshots.applying = Some(key);
        self.peer.snapshots.apply_failed = false;
        if self
            .ctx
            .region_worker
            .schedule(RegionTask::Apply { key, region })
            .is_err()
        {
            // Stopping: a restart finds the region in Applying and applies it then.
            tracing::info!(region_id = key.region_id, %key, "region worker stopped");
        }
    }

    /// The region worker finished applying snapshot `index`.
    pub(super) fn on_snapshot_applied(&mut self, index: u64, result: Result<(), String>) {
        let Some(key) = self.peer.snapshots.applying else {
            return;
        };
        if key.index != index {
            return;
        }
        if let Err(e) = result {
            // Retried on the next tick: the data is not in place, so nothing may read it.
            tracing::error!(region_id = key.region_id, %key, error = %e,
                "snapshot apply failed; retrying");
            self.peer.snapshots.apply_failed = true;
            return;
        }
        let region = self.peer.region();
        let mut wb = WriteBatch::new(&self.ctx.engines.kv);
        wb.put_msg(
            &keys::region_state_key(key.region_id),
            &RegionLocalState {
                state: PeerState::Normal as i32,
                region: Some(region),
            },
        );
        if let Err(e) = wb.write(true) {
            panic!(
                "region {}: cannot record the applied snapshot {key}: {e}",
                key.region_id
            );
        }
        self.peer.snapshots.applying = None;
        // Durable as Normal: the files are no longer needed for a redo.
        if let Err(e) = self.ctx.snap_mgr.delete(SnapKind::Received, key) {
            tracing::warn!(region_id = key.region_id, %key, error = %e,
                "cannot delete an applied snapshot; gc will");
        }
        tracing::info!(region_id = key.region_id, peer_id = self.peer.meta.id, %key,
            "snapshot applied");
    }

    /// On restart: the region was left `Applying`; apply its snapshot again.
    pub(crate) fn resume_applying_snapshot(&mut self) {
        let a = self.peer.raft_group.store().apply_state();
        let t = a.truncated_state.unwrap_or_default();
        let key = SnapKey::new(self.peer.region_id, t.term, a.applied_index);
        let region = self.peer.region();
        self.start_applying_snapshot(key, region);
    }

    /// The transport's report on a snapshot sent to `to`.
    pub(super) fn on_snapshot_status(&mut self, to: u64, failed: bool) {
        self.peer.snapshots.sent.remove(&to);
        let status = if failed {
            SnapshotStatus::Failure
        } else {
            SnapshotStatus::Finish
        };
        self.peer.raft_group.report_snapshot(to, status);
    }

    /// Per tick: retries a failed apply, and reports snapshot sends nobody answered.
    pub(super) fn snapshot_tick(&mut self) {
        if self.peer.snapshots.apply_failed {
            if let Some(key) = self.peer.snapshots.applying {
                let region = self.peer.region();
                self.start_applying_snapshot(key, region);
            }
        }
        if self.peer.snapshots.sent.is_empty() {
            return;
        }
        let timeout = self.ctx.cfg.snapshot_send_timeout;
        let now = Instant::now();
        let raft = self.peer.raft_group.raft();
        // Sends that ended (the follower answered, or the peer left) need no report.
        self.peer.snapshots.sent.retain(|id, _| {
            raft.prs()
                .get(*id)
                .is_some_and(|p| p.state() == ProgressState::Snapshot)
        });
        let overdue: Vec<u64> = self
            .peer
            .snapshots
            .sent
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            self.on_snapshot_status(id, true);
        }
    }
}
