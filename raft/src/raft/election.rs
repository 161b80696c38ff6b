//! Leader election (§5.2) with the up-to-date vote restriction (§5.4.1) and the
//! PreVote phase (thesis §9.6).

use raft_proto::eraftpb::{EntryType, Message, MessageType};

use super::{new_message, Raft, StateRole};
use crate::storage::Storage;
use crate::tracker::VoteResult;
use crate::util::{vote_resp_msg_type, CAMPAIGN_TRANSFER, INVALID_ID, NO_LIMIT};

impl<S: Storage> Raft<S> {
    /// Starts a (pre-)election unless this node is leader, not promotable, or has
    /// committed conf changes it has not applied yet (their outcome could make it
    /// ineligible). `transfer` skips PreVote: the leader asked for it.
    pub(crate) fn hup(&mut self, transfer: bool) {
        if self.state == StateRole::Leader {
            return;
        }
        if !self.promotable() {
            return;
        }
        if self.has_unapplied_conf_changes() {
            return;
        }
        if self.term == u64::MAX {
            // No next term to campaign in (validation keeps peers' terms far
            // below; only a hand-written hard state gets here).
            return;
        }
        if self.pre_vote && !transfer {
            self.campaign_pre_election();
        } else {
            self.campaign_election(transfer);
        }
    }

    fn has_unapplied_conf_changes(&self) -> bool {
        let log = &self.raft_log;
        if log.applied >= log.committed {
            return false;
        }
        match log.slice(log.applied + 1, log.committed + 1, NO_LIMIT) {
            Ok(ents) => ents
                .iter()
                .any(|e| e.get_entry_type() != EntryType::EntryNormal),
            // Compacted means a snapshot covers it, which is applied first.
            Err(_) => false,
        }
    }

    fn campaign_pre_election(&mut self) {
        self.become_pre_candidate();
        let term = self.term + 1;
        self.request_votes(MessageType::MsgRequestPreVote, term, false);
    }

    fn campaign_election(&mut self, transfer: bool) {
        self.become_candidate();
        let term = self.term;
        self.request_votes(MessageType::MsgRequestVote, term, transfer);
    }

    /// Votes for itself and asks every other voter (§5.2).
    fn request_votes(&mut self, ty: MessageType, term: u64, transfer: bool) {
        let id = self.id;
        if self.poll(id, ty, true) == VoteResult::Won {
            // A single-voter group wins at once.
            self.on_election_won(ty);
            return;
        }
        let (index, log_term) = (self.raft_log.last_index(), self.raft_log.last_term());
        let voters: Vec<u64> = self.prs.conf.voters.ids().into_iter().collect();
        for to in voters.into_iter().filter(|&v| v != id) {
            let mut m = new_message(to, ty);
            m.term = term;
            m.index = index;
            m.log_term = log_term;
            if transfer {
                m.context = CAMPAIGN_TRANSFER.to_vec().into();
            }
            self.send(m);
        }
    }

    /// Records a vote and returns the election's state.
    fn poll(&mut self, from: u64, _ty: MessageType, granted: bool) -> VoteResult {
        self.prs.record_vote(from, granted);
        self.prs.tally_votes().2
    }

    fn on_election_won(&mut self, ty: MessageType) {
        if ty == MessageType::MsgRequestPreVote {
            self.campaign_election(false);
        } else {
            self.become_leader();
            self.bcast_append();
        }
    }

    pub(crate) fn handle_vote_response(&mut self, m: &Message) {
        let ty = match m.get_msg_type() {
            MessageType::MsgRequestPreVoteResponse => MessageType::MsgRequestPreVote,
            _ => MessageType::MsgRequestVote,
        };
        match self.poll(m.from, ty, !m.reject) {
            VoteResult::Won => self.on_election_won(ty),
            // A quorum rejected: wait for a leader (or the next timeout).
            VoteResult::Lost => self.become_follower(self.term, INVALID_ID),
            VoteResult::Pending => {}
        }
    }

    /// Answers a (pre-)vote request: grant at most one vote per term, and only to a
    /// candidate whose log is at least as up-to-date (§5.2, §5.4.1).
    pub(crate) fn handle_vote_request(&mut self, m: &Message) {
        let is_pre = m.get_msg_type() == MessageType::MsgRequestPreVote;
        let can_vote = self.vote == m.from
            || (self.vote == INVALID_ID && self.leader_id == INVALID_ID)
            // A pre-vote for a future term may be granted even after voting.
            || (is_pre && m.term > self.term);
        let mut resp = new_message(m.from, vote_resp_msg_type(m.get_msg_type()));
        if can_vote && self.raft_log.is_up_to_date(m.index, m.log_term) {
            // The response carries the request's term so a pre-candidate can
            // count it; for a real vote it equals ours.
            resp.term = m.term;
            if !is_pre {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
        } else {
            resp.term = self.term;
            resp.reject = true;
            if resp.term == 0 {
                // Only a log ahead of its own term (a storage written by hand)
                // refuses in term 0; a term-0 answer would read as local.
                return;
            }
        }
        self.send(resp);
    }

    /// CheckQuorum (thesis §6.2): a leader that has not heard from a quorum within
    /// an election timeout steps down, so clients can find the real leader.
    pub(crate) fn handle_check_quorum(&mut self) {
        if !self.prs.quorum_recently_active(self.id) {
            self.become_follower(self.term, INVALID_ID);
        }
    }
}
