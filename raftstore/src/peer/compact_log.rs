//! Raft log GC on the peer's side: the leader proposes `CompactLog` when the applied log is long
//! enough (see [`compact_target`]); every peer applies it (the truncated state moves up, in the
//! apply batch) and the raft-log GC worker deletes the entries. A follower that needs entries
//! gone from the leader's log catches up by snapshot (`snapshot.rs`).

use prost::Message as _;
use proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, CompactLogRequest, CompactLogResponse, RaftCmdRequest,
    RaftRequestHeader,
};
use proto::raft_serverpb::{RaftApplyState, RaftTruncatedState};

use super::apply::ApplyEffects;
use super::PeerMsgHandler;

/// Where the leader should compact the log to, if anywhere: everything applied once the log
/// holds `limit` applied entries (followers that far behind catch up by snapshot), else what
/// every follower has once that is `threshold` entries.
fn compact_target(
    applied: u64,
    truncated: u64,
    replicated: u64,
    limit: u64,
    threshold: u64,
) -> Option<u64> {
    if applied <= truncated {
        return None;
    }
    if applied - truncated >= limit {
        return Some(applied);
    }
    let replicated = replicated.min(applied);
    (replicated > truncated && replicated - truncated >= threshold).then_some(replicated)
}

impl PeerMsgHandler<'_> {
    /// Per tick on the leader: proposes `CompactLog` when the log is long enough.
    pub(super) fn raft_log_gc_tick(&mut self) {
        let cfg = &self.ctx.cfg;
        let every = cfg.ticks(cfg.raft_log_gc_tick_interval);
        self.peer.ticks.log_gc += 1;
        if self.peer.ticks.log_gc < every || !self.peer.is_leader() {
            return;
        }
        self.peer.ticks.log_gc = 0;
        let ps = self.peer.raft_group.store();
        let (applied, truncated) = (ps.applied_index(), ps.truncated_index());
        let raft = self.peer.raft_group.raft();
        let replicated = raft
            .prs()
            .iter()
            .map(|(_, p)| p.matched())
            .min()
            .unwrap_or(0);
        let Some(index) = compact_target(
            applied,
            truncated,
            replicated,
            cfg.raft_log_gc_count_limit,
            cfg.raft_log_gc_threshold,
        ) else {
            return;
        };
        if index <= self.peer.last_compact_proposed {
            return;
        }
        let Ok(term) = raft::Storage::term(ps, index) else {
            return;
        };
        let region = self.peer.region();
        let req = RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: region.id,
                peer: Some(self.peer.meta),
                region_epoch: region.region_epoch,
                ..Default::default()
            }),
            admin_request: Some(AdminRequest {
                cmd_type: AdminCmdType::CompactLog as i32,
                compact_log: Some(CompactLogRequest {
                    compact_index: index,
                    compact_term: term,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.propose_pending_writes();
        match self.peer.raft_group.propose(vec![], req.encode_to_vec()) {
            Ok(()) => self.peer.last_compact_proposed = index,
            Err(e) => {
                tracing::debug!(region_id = region.id, error = %e, "compact log not proposed")
            }
        }
    }

    /// Applies a `CompactLog`: the truncated state moves up to its index (never down: one an
    /// older leader proposed may come after a newer one), in the synced apply batch; the entries
    /// are deleted once the batch is written.
    pub(super) fn exec_compact_log(
        &self,
        admin: &AdminRequest,
        apply_state: &mut RaftApplyState,
        effects: &mut ApplyEffects,
    ) -> CompactLogResponse {
        let req = admin.compact_log.unwrap_or_default();
        let truncated = apply_state.truncated_state.unwrap_or_default();
        if req.compact_index > truncated.index {
            apply_state.truncated_state = Some(RaftTruncatedState {
                index: req.compact_index,
                term: req.compact_term,
            });
            effects.sync = true;
            effects.compacted_to = Some(req.compact_index);
        }
        CompactLogResponse {}
    }
}

#[cfg(test)]
mod tests {
    use super::compact_target;

    #[test]
    fn compact_target_follows_limits_2c() {
        // Nothing applied past the truncated index.
        assert_eq!(compact_target(5, 5, 5, 10, 4), None);
        // Short log, followers caught up but under the threshold.
        assert_eq!(compact_target(8, 5, 8, 10, 4), None);
        // Threshold reached: compact to what every follower has.
        assert_eq!(compact_target(12, 5, 9, 10, 4), Some(9));
        // Never past the applied index.
        assert_eq!(compact_target(9, 5, 20, 10, 4), Some(9));
        // Count limit reached: a lagging follower does not hold the log back.
        assert_eq!(compact_target(15, 5, 6, 10, 4), Some(15));
    }
}
