//! `validate`: the one check of a message from the network before it may touch
//! the node. Everything [`crate::RawNode::step`] hands in is hostile until
//! this says otherwise; a message it refuses leaves the node unchanged.
//!
//! It checks what the library can know by itself: the type may come from a
//! peer, sender and recipient are real, the term is set (only forwarded
//! requests travel without one), the payload is well-formed (entries of an
//! append follow their prev entry one by one, with sensible terms; snapshot
//! metadata is possible), and, for messages of a term at least ours, nothing
//! contradicts what this node knows to be committed or to have sent. The
//! handlers behind it still clamp what a message cannot prove (a commit index
//! beyond the entries a message carries, or beyond the log).

use std::collections::BTreeSet;

use raft_proto::eraftpb::{ConfState, Message, MessageType};

use super::{Raft, StateRole};
use crate::confchange;
use crate::errors::{Error, Result};
use crate::storage::Storage;
use crate::util::{is_local_msg, is_response_msg, INVALID_ID};

/// The largest term or log index a message may carry. No honest group gets
/// near it (2^62 entries at a billion a second take over a century); a forged
/// one would bring the node to where `term + 1` or `index + 1` overflow.
const LIMIT: u64 = 1 << 62;

/// A refusal of `m` for `reason`.
fn invalid(m: &Message, reason: &'static str) -> Result<()> {
    Err(Error::InvalidMessage {
        msg_type: m.get_msg_type(),
        from: m.from,
        reason,
    })
}

/// Checks the entries of an append: they follow the prev entry `(index,
/// log_term)` one index at a time, with terms that never decrease, start at
/// the prev entry's term or later and never pass the message's term.
fn check_append_entries(m: &Message) -> Result<()> {
    let mut prev_term = m.log_term;
    for (i, e) in m.get_entries().iter().enumerate() {
        let want = m.index.checked_add(i as u64 + 1);
        if want != Some(e.index) {
            return invalid(m, "entries do not follow the prev index one by one");
        }
        if e.term == 0 {
            return invalid(m, "entry of term 0");
        }
        if e.term < prev_term {
            return invalid(m, "entry terms decrease");
        }
        if e.term > m.term {
            return invalid(m, "entry of a term after the message's");
        }
        prev_term = e.term;
    }
    Ok(())
}

/// Whether two configurations have the same members in the same roles
/// (order and repetition aside).
fn same_conf_state(a: &ConfState, b: &ConfState) -> bool {
    let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
    set(&a.voters) == set(&b.voters)
        && set(&a.learners) == set(&b.learners)
        && set(&a.voters_outgoing) == set(&b.voters_outgoing)
        && set(&a.learners_next) == set(&b.learners_next)
        && a.auto_leave == b.auto_leave
}

/// Checks a log position `(index, term)` as a message describes one: index 0
/// has term 0, and only it does (every entry and snapshot has a term).
fn check_position(m: &Message, index: u64, term: u64) -> Result<()> {
    if (index == 0) != (term == 0) {
        return invalid(m, "log position with index 0 xor term 0");
    }
    if term > m.term {
        return invalid(m, "log term after the message's term");
    }
    Ok(())
}

impl<S: Storage> Raft<S> {
    /// Checks a message from the network before [`Raft::step`] may act on it.
    ///
    /// # Errors
    /// [`Error::StepLocalMsg`] for a type only this node generates,
    /// [`Error::StepPeerNotFound`] for a response from a non-member, and
    /// [`Error::InvalidMessage`] for anything else that cannot be right.
    pub(crate) fn validate(&self, m: &Message) -> Result<()> {
        let ty = m.get_msg_type();
        if is_local_msg(ty) {
            return Err(Error::StepLocalMsg);
        }
        if m.from == INVALID_ID {
            return invalid(m, "no sender");
        }
        if m.to != self.id {
            return invalid(m, "addressed to another node");
        }
        // A forwarded transfer names its transferee as sender, which may be
        // the leader itself (and is then ignored); nothing else comes from us.
        if m.from == self.id && ty != MessageType::MsgTransferLeader {
            return invalid(m, "sent by this node");
        }
        // Term 0 is how the core tells its own messages from a peer's, which
        // skip every term check: only forwarded requests, which are about no
        // term, may carry it.
        let forwarded = matches!(ty, MessageType::MsgPropose | MessageType::MsgReadIndex);
        if forwarded && m.term != 0 {
            return invalid(m, "forwarded request with a term");
        }
        if !forwarded && m.term == 0 {
            return invalid(m, "no term");
        }
        if m.term > LIMIT || m.index > LIMIT {
            return invalid(m, "term or index beyond any real log");
        }
        if is_response_msg(ty) && self.prs.get(m.from).is_none() {
            return Err(Error::StepPeerNotFound);
        }
        match ty {
            MessageType::MsgPropose if m.get_entries().is_empty() => {
                invalid(m, "proposal without entries")
            }
            // The request's context travels as its only entry.
            MessageType::MsgReadIndex if m.get_entries().is_empty() => {
                invalid(m, "read request without context")
            }
            MessageType::MsgReadIndexResp if m.get_entries().len() != 1 => {
                invalid(m, "read response without exactly one context")
            }
            MessageType::MsgAppend => self.validate_append(m),
            MessageType::MsgAppendResponse => self.validate_append_response(m),
            MessageType::MsgSnapshot => self.validate_snapshot(m),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
                check_position(m, m.index, m.log_term)
            }
            _ => Ok(()),
        }
    }

    /// An append: well-formed, and, from a leader of a term at least ours,
    /// agreeing with every entry this node knows committed (Leader
    /// Completeness, §5.4: such a leader holds them all). A stale append from
    /// an earlier term may disagree; it is ignored anyway.
    fn validate_append(&self, m: &Message) -> Result<()> {
        check_position(m, m.index, m.log_term)?;
        check_append_entries(m)?;
        if m.term < self.term {
            return Ok(());
        }
        let log = &self.raft_log;
        let committed = log.committed;
        let first_known = log.first_index() - 1;
        let ents = m.get_entries();
        let term_at = |i: u64| -> u64 {
            if i == m.index {
                m.log_term
            } else {
                ents[(i - m.index - 1) as usize].term
            }
        };
        // No overflow: every entry's index was checked to be m.index + k.
        let last_in_msg = m.index + ents.len() as u64;
        let lo = m.index.max(first_known);
        let hi = last_in_msg.min(committed);
        for i in lo..=hi {
            if log.term(i).is_ok_and(|t| t != term_at(i)) {
                return invalid(m, "append contradicts committed entries");
            }
        }
        Ok(())
    }

    /// An append response, as the leader of its term would act on it: it
    /// acknowledges or rejects only what this leader could have sent.
    fn validate_append_response(&self, m: &Message) -> Result<()> {
        if m.term != self.term || self.state != StateRole::Leader {
            return Ok(());
        }
        if m.index > self.raft_log.last_index() {
            return invalid(m, "answers an index after the leader's log");
        }
        if m.reject {
            if m.reject_hint > m.index {
                return invalid(m, "reject hint after the rejected index");
            }
            if m.log_term > m.term {
                return invalid(m, "reject hint of a term after the message's");
            }
        }
        Ok(())
    }

    /// A snapshot: possible metadata (an index and term, a consistent
    /// configuration with voters) and, from a leader of a term at least ours,
    /// no contradiction of an entry this node knows committed.
    fn validate_snapshot(&self, m: &Message) -> Result<()> {
        let meta = m.get_snapshot().get_metadata();
        if meta.index == 0 {
            return invalid(m, "snapshot at index 0");
        }
        if meta.index > LIMIT {
            return invalid(m, "snapshot beyond any real log");
        }
        if meta.term == 0 {
            return invalid(m, "snapshot of term 0");
        }
        if meta.term > m.term {
            return invalid(m, "snapshot of a term after the message's");
        }
        let cs = meta.get_conf_state();
        if cs.voters.is_empty() {
            return invalid(m, "snapshot without voters");
        }
        // Restoring it must succeed and give back exactly what it says (a
        // voter that is also a learner would be restored as one or the other).
        let restored = confchange::restore(self.prs.max_inflight, cs, meta.index);
        if !restored.is_ok_and(|t| same_conf_state(&t.conf_state(), cs)) {
            return invalid(m, "snapshot with an inconsistent configuration");
        }
        if m.term >= self.term
            && meta.index <= self.raft_log.committed
            && self
                .raft_log
                .term(meta.index)
                .is_ok_and(|t| t != 0 && t != meta.term)
        {
            return invalid(m, "snapshot contradicts committed entries");
        }
        Ok(())
    }
}
