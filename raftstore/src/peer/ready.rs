//! Handling a `Ready` in two phases around the round's single write:
//!
//! ```text
//! collect_ready   one entry for the plain writes of this round (`write_batch`),
//!                 one ReadIndex for the reads queued this round, soft state (role changes),
//!                 send `messages` now,
//!                 entries + hard state into the round's shared raft-engine batch
//! -- the log writer writes the batch for every peer (one sync); meanwhile the raft worker
//!    goes on, and may collect this peer's next readies --
//! post_persist    send `persisted_messages`, record read states, apply committed entries,
//!                 advance, serve the reads whose index is now applied
//! ```
//!
//! The committed entries of a `Ready` may include entries of an earlier `Ready` still being
//! written, never later ones; since rounds finish in the order they were written, a peer's
//! readies finish in order and its entries are applied only once durable here.

use raft::{Ready, SoftState, StateRole};
use raftlog::LogBatch;

use super::PeerMsgHandler;
use crate::error::Error;

impl PeerMsgHandler<'_> {
    /// Phase 1: takes the peer's `Ready`, if any, sends what may leave before the write, and adds
    /// the entries and hard state to `raft_wb`.
    pub(crate) fn collect_ready(&mut self, raft_wb: &mut LogBatch) -> Option<Ready> {
        self.propose_pending_writes();
        self.issue_queued_reads();
        // Before this round's messages leave (a transfer's `TimeoutNow` among them).
        self.publish_lease();
        if !self.peer.has_ready() {
            return None;
        }
        let mut rd = self.peer.raft_group.ready();
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(&ss);
        }
        let msgs = std::mem::take(&mut rd.messages);
        self.peer.send_raft_messages(self.ctx, msgs);
        let has_snapshot = rd.snapshot.get_metadata().index > 0;
        if has_snapshot {
            let installed = self
                .peer
                .raft_group
                .store()
                .apply_snapshot(&rd.snapshot, raft_wb);
            match installed {
                Ok((key, region)) => {
                    // A deposed leader's proposals covered by the snapshot may be in it or not.
                    let reason = "a snapshot replaced the log up to its entry";
                    self.abandon_proposals_up_to(key.index, reason);
                    self.start_applying_snapshot(key, region);
                }
                // Checked before raft saw it; only an engine failure gets here.
                Err(e) => panic!(
                    "region {} peer {}: cannot install snapshot: {e}",
                    self.peer.region_id, self.peer.meta.id
                ),
            }
        }
        let ps = self.peer.raft_group.store();
        if let Err(e) = ps.append(&rd.entries, raft_wb) {
            panic!(
                "region {} peer {}: cannot batch raft entries: {e}",
                self.peer.region_id, self.peer.meta.id
            );
        }
        if !rd.entries.is_empty() || rd.hard_state.is_some() || has_snapshot {
            ps.save_raft_state(rd.hard_state.as_ref(), raft_wb);
        }
        self.publish_lease();
        Some(rd)
    }

    /// Phase 2: after the batch is durable (and every batch before it).
    pub(crate) fn post_persist(&mut self, mut rd: Ready) {
        let msgs = std::mem::take(&mut rd.persisted_messages);
        self.peer.send_raft_messages(self.ctx, msgs);
        for rs in std::mem::take(&mut rd.read_states) {
            // Every read of the batch that shared this ReadIndex.
            let (term, leader) = (self.peer.term(), self.peer.is_leader());
            for r in self
                .peer
                .reads
                .pending
                .iter_mut()
                .filter(|r| r.ctx == rs.request_ctx)
            {
                r.read_index = Some(rs.index);
                // A quorum confirmed this leader after the read started.
                if let (Some(started), true) = (r.started, leader) {
                    self.peer.lease.renew(term, started);
                }
            }
        }
        let committed = std::mem::take(&mut rd.committed_entries);
        self.apply_entries(committed);
        if self.peer.destroyed() {
            return;
        }
        // Not `advance`: it would report applied what later readies, still being written,
        // hand out.
        let applied = self.peer.raft_group.store().applied_index();
        self.peer.raft_group.advance_append(rd);
        self.peer.raft_group.advance_apply_to(applied);
        self.serve_ready_reads();
        self.publish_lease();
    }

    fn on_soft_state(&mut self, ss: &SoftState) {
        let (region_id, peer_id) = (self.peer.region_id, self.peer.meta.id);
        tracing::debug!(region_id, peer_id, role = ?ss.raft_state, leader = ss.leader_id,
            term = self.peer.term(), "raft role changed");
        self.peer.lease.expire();
        if ss.raft_state == StateRole::Leader {
            self.ctx.metrics.on_became_leader();
            self.schedule_region_heartbeat();
            return;
        }
        // Raft forgets pending ReadIndex requests when it stops leading; answer them so the
        // clients retry on the new leader instead of timing out.
        let leader = self.peer.leader();
        let term = self.peer.term();
        for r in std::mem::take(&mut self.peer.reads.pending) {
            r.callback
                .invoke_with_error(Error::NotLeader { region_id, leader }, term);
        }
    }
}
