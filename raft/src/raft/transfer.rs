//! Leadership transfer (thesis §3.10): the leader brings the transferee's log up to
//! date, then tells it to campaign at once with `MsgTimeoutNow`. Proposals are
//! refused meanwhile, and the transfer is abandoned after an election timeout.

use raft_proto::eraftpb::{Message, MessageType};

use super::{new_message, Raft, StateRole};
use crate::storage::Storage;
use crate::util::INVALID_ID;

impl<S: Storage> Raft<S> {
    /// Leader side: `m.from` is the transferee.
    pub(crate) fn handle_transfer_leader(&mut self, m: &Message) {
        let transferee = m.from;
        let Some(pr) = self.prs.get(transferee) else {
            return;
        };
        if pr.is_learner() {
            // A learner cannot win an election.
            return;
        }
        if let Some(current) = self.lead_transferee {
            if current == transferee {
                // Already on its way; a repeated request changes nothing.
                return;
            }
            self.abort_leader_transfer();
        }
        if transferee == self.id {
            return;
        }
        // The transfer must finish within one election timeout.
        self.election_elapsed = 0;
        self.lead_transferee = Some(transferee);
        let matched = self.prs.get(transferee).map_or(0, |p| p.matched());
        if matched == self.raft_log.last_index() {
            self.send_timeout_now(transferee);
        } else {
            self.send_append(transferee);
        }
    }

    pub(crate) fn send_timeout_now(&mut self, to: u64) {
        self.send(new_message(to, MessageType::MsgTimeoutNow));
        if !self.prs.is_voter(self.id) {
            // A leader that was removed or demoted hands over and stops: the
            // transferee holds its whole log, so this node will vote for it.
            self.become_follower(self.term, INVALID_ID);
        }
    }

    /// A leader that is no longer a voter (removed or demoted, outside a joint
    /// configuration) keeps leading only until it has handed leadership to the
    /// most up-to-date voter: stepping down at once could leave the others
    /// without the commit index of the very change that removed it.
    pub(crate) fn maybe_hand_over_leadership(&mut self) {
        if self.state != StateRole::Leader
            || self.prs.is_voter(self.id)
            || self.prs.is_joint()
            || self.lead_transferee.is_some()
        {
            return;
        }
        let best = self
            .prs
            .conf
            .voters
            .incoming
            .iter()
            .filter_map(|&id| self.prs.get(id).map(|p| (p.matched(), id)))
            .max();
        if let Some((_, to)) = best {
            let mut m = new_message(self.id, MessageType::MsgTransferLeader);
            m.from = to;
            self.handle_transfer_leader(&m);
        }
    }

    pub(crate) fn abort_leader_transfer(&mut self) {
        self.lead_transferee = None;
    }

    /// Follower side: campaign now, skipping PreVote and the lease check of the
    /// others, as the leader asked for it.
    pub(crate) fn handle_timeout_now(&mut self) {
        self.hup(true);
    }
}
