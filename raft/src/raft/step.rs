//! `step`: the single entry point for messages, with the fixed shape — term checks
//! and role-independent messages first, then `step_leader`, `step_candidate` or
//! `step_follower`, each a flat `match` calling a `handle_*` function.

use raft_proto::eraftpb::{Message, MessageType};

use super::{new_message, Raft, StateRole};
use crate::errors::{Error, Result};
use crate::storage::Storage;
use crate::util::{CAMPAIGN_TRANSFER, INVALID_ID};

/// How far messages may raise a node's term per tick, and at most at once:
/// the term climbs through a budget of [`TERM_BUDGET`] refilled by
/// [`TERM_STEP_PER_TICK`] each tick. Only elections raise an honest term, far
/// slower; messages may carry terms up to 2^62, and forged ones would need
/// 2^46 ticks to bring a group there, where no election could be held.
/// After forged terms stop, the honest nodes catch up with each other in
/// about as many ticks as the forging lasted.
pub(crate) const TERM_STEP_PER_TICK: u64 = 1 << 16;
pub(crate) const TERM_BUDGET: u64 = 1 << 20;

impl<S: Storage> Raft<S> {
    /// Processes one message, local (term 0) or from a peer. It trusts its
    /// input: messages from the network go through [`crate::RawNode::step`],
    /// which validates them first.
    ///
    /// # Errors
    /// [`Error::ProposalDropped`] when a proposal cannot be accepted.
    pub fn step(&mut self, m: Message) -> Result<()> {
        if m.term == 0 {
            // Local message.
        } else if m.term > self.term {
            if !self.step_higher_term(&m) {
                return Ok(());
            }
        } else if m.term < self.term {
            self.step_lower_term(&m);
            return Ok(());
        }

        match m.get_msg_type() {
            MessageType::MsgHup => self.hup(false),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
                self.handle_vote_request(&m)
            }
            _ => match self.state {
                StateRole::Leader => return self.step_leader(m),
                StateRole::Candidate | StateRole::PreCandidate => return self.step_candidate(m),
                StateRole::Follower => return self.step_follower(m),
            },
        }
        Ok(())
    }

    /// A message from a later term (§5.1: "if one server's current term is smaller
    /// than the other's, then it updates its current term"). Returns whether the
    /// message should be processed further.
    fn step_higher_term(&mut self, m: &Message) -> bool {
        let t = m.get_msg_type();
        if matches!(
            t,
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        ) {
            let force = m.get_context() == CAMPAIGN_TRANSFER;
            let in_lease = self.check_quorum
                && self.leader_id != INVALID_ID
                && self.election_elapsed < self.election_timeout;
            // A node that heard from a leader within the minimum election timeout
            // ignores votes: the leader is probably alive (thesis §4.2.3).
            if !force && in_lease {
                return false;
            }
        }
        // The leader this node follows once it takes the message's term; `None`
        // when the message does not change the term.
        let leader = match t {
            // A pre-vote does not change the receiver's term.
            MessageType::MsgRequestPreVote => None,
            // A granted pre-vote carries the future term the candidate asked about;
            // a rejected one carries the rejecter's real term.
            MessageType::MsgRequestPreVoteResponse if !m.reject => None,
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot => {
                Some(m.from)
            }
            _ => Some(INVALID_ID),
        };
        let Some(leader) = leader else {
            return true;
        };
        let gap = m.term - self.term;
        if gap > self.term_budget {
            // Climb what the budget allows and drop the message: an honest
            // sender this far ahead repeats itself (heartbeats, retried votes)
            // and is reached a few ticks later.
            let step = std::mem::take(&mut self.term_budget);
            if step > 0 {
                self.become_follower(self.term + step, INVALID_ID);
            }
            return false;
        }
        self.term_budget -= gap;
        self.become_follower(m.term, leader);
        true
    }

    /// A message from an earlier term is ignored, except where answering helps the
    /// sender notice it is stale.
    fn step_lower_term(&mut self, m: &Message) {
        let t = m.get_msg_type();
        if (self.check_quorum || self.pre_vote)
            && matches!(t, MessageType::MsgHeartbeat | MessageType::MsgAppend)
        {
            // A leader cut off long enough to be deposed would otherwise never
            // learn the new term: with CheckQuorum or PreVote nodes ignore its
            // disruptive vote requests, so tell it the term with a response.
            self.send(new_message(m.from, MessageType::MsgAppendResponse));
        } else if t == MessageType::MsgRequestPreVote {
            let mut resp = new_message(m.from, MessageType::MsgRequestPreVoteResponse);
            resp.term = self.term;
            resp.reject = true;
            self.send(resp);
        }
    }

    fn step_leader(&mut self, m: Message) -> Result<()> {
        match m.get_msg_type() {
            MessageType::MsgBeat => self.bcast_heartbeat(),
            MessageType::MsgCheckQuorum => self.handle_check_quorum(),
            MessageType::MsgPropose => return self.handle_propose(m),
            MessageType::MsgReadIndex => self.handle_read_index_leader(m),
            MessageType::MsgAppendResponse => self.handle_append_response(&m),
            MessageType::MsgHeartbeatResponse => self.handle_heartbeat_response(&m),
            MessageType::MsgSnapStatus => self.handle_snapshot_status(&m),
            MessageType::MsgUnreachable => self.handle_unreachable(&m),
            MessageType::MsgTransferLeader => self.handle_transfer_leader(&m),
            _ => {}
        }
        Ok(())
    }

    fn step_candidate(&mut self, m: Message) -> Result<()> {
        match m.get_msg_type() {
            // No leader is known to serve proposals or reads.
            MessageType::MsgPropose | MessageType::MsgReadIndex => {
                return Err(Error::ProposalDropped)
            }
            MessageType::MsgAppend => {
                // A leader of this term exists (§5.2).
                self.become_follower(m.term, m.from);
                self.handle_append_entries(&m);
            }
            MessageType::MsgHeartbeat => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(&m);
            }
            MessageType::MsgSnapshot => {
                self.become_follower(m.term, m.from);
                self.handle_snapshot(m);
            }
            MessageType::MsgRequestPreVoteResponse if self.state == StateRole::PreCandidate => {
                self.handle_vote_response(&m);
            }
            MessageType::MsgRequestVoteResponse if self.state == StateRole::Candidate => {
                self.handle_vote_response(&m);
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether a request to forward to the leader was made here (by the
    /// application) rather than forwarded by a peer that took this node for
    /// the leader. Only the former are forwarded: one hop at most, so two
    /// nodes that each believe the other leads (which honest nodes never do at
    /// the same time, but a forged message can cause) cannot bounce a request
    /// between them forever.
    fn is_own_request(&self, m: &Message) -> bool {
        match m.get_msg_type() {
            // A transfer names its transferee in `from`; the application's
            // carries no term yet.
            MessageType::MsgTransferLeader => m.term == 0,
            _ => m.from == INVALID_ID || m.from == self.id,
        }
    }

    fn step_follower(&mut self, mut m: Message) -> Result<()> {
        match m.get_msg_type() {
            MessageType::MsgPropose => {
                if self.leader_id == INVALID_ID || !self.is_own_request(&m) {
                    return Err(Error::ProposalDropped);
                }
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::MsgAppend => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_append_entries(&m);
            }
            MessageType::MsgHeartbeat => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_heartbeat(&m);
            }
            MessageType::MsgSnapshot => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_snapshot(m);
            }
            MessageType::MsgTransferLeader
                if self.leader_id != INVALID_ID && self.is_own_request(&m) =>
            {
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::MsgTimeoutNow => self.handle_timeout_now(),
            MessageType::MsgReadIndex => {
                if self.leader_id == INVALID_ID || !self.is_own_request(&m) {
                    return Err(Error::ProposalDropped);
                }
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::MsgReadIndexResp => self.handle_read_index_resp(&m),
            _ => {}
        }
        Ok(())
    }
}
