//! Membership changes on the raft node (thesis §4): screening conf change
//! proposals, applying a committed change, and leaving a joint configuration
//! automatically.

use protobuf::Message as _;
use raft_proto::eraftpb::{
    ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType,
};
use raft_proto::ConfChangeI;

use super::{new_message, Raft, StateRole};
use crate::confchange::Changer;
use crate::errors::{Error, Result};
use crate::storage::Storage;
use crate::tracker::Progress;
use crate::util::INVALID_ID;

/// Decodes a conf change entry into its V2 form; `None` if it does not parse.
pub(crate) fn decode_conf_change(e: &Entry) -> Option<ConfChangeV2> {
    match e.get_entry_type() {
        EntryType::EntryConfChange => ConfChange::parse_from_bytes(&e.data)
            .ok()
            .map(ConfChangeI::into_v2),
        EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(&e.data).ok(),
        EntryType::EntryNormal => None,
    }
}

impl<S: Storage> Raft<S> {
    /// Whether a proposed conf change entry must be refused: one change at a time
    /// (the previous must be applied first, thesis §4.1), no new change while
    /// joint except leaving, and leaving only while joint.
    pub(crate) fn refuse_conf_change(&self, e: &Entry) -> bool {
        let Some(cc) = decode_conf_change(e) else {
            return true;
        };
        let already_pending = self.pending_conf_index > self.raft_log.applied;
        let already_joint = self.prs.is_joint();
        let wants_leave = cc.leave_joint();
        already_pending || (already_joint && !wants_leave) || (!already_joint && wants_leave)
    }

    /// Applies a committed conf change and returns the new configuration.
    ///
    /// # Errors
    /// [`crate::Error::ConfChangeInvalid`] when the change does not apply to the
    /// current configuration; nothing changes then.
    pub fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<ConfState> {
        if !self.has_configuration() {
            // Changes are relative to a configuration; applied to none, "add
            // me" would make this node the only voter of a group of its own.
            // An empty node learns its configuration from a snapshot.
            return Err(Error::ConfChangeInvalid(
                "this node has no configuration to change yet".to_string(),
            ));
        }
        let changer = Changer::new(&self.prs, self.raft_log.last_index());
        let (cfg, prs) = if cc.leave_joint() {
            changer.leave_joint()?
        } else if let Some(auto_leave) = cc.enter_joint() {
            changer.enter_joint(auto_leave, cc.get_changes())?
        } else {
            changer.simple(cc.get_changes())?
        };
        self.prs.conf = cfg;
        self.prs.progress = prs;
        Ok(self.post_conf_change())
    }

    fn post_conf_change(&mut self) -> ConfState {
        let cs = self.prs.conf_state();
        let id = self.id;
        let pr = self.prs.get(id);
        self.is_learner = pr.is_some_and(Progress::is_learner);
        if self.state != StateRole::Leader || cs.voters.is_empty() {
            return cs;
        }
        // Fewer voters may mean more is committed now.
        if self.maybe_commit() {
            self.bcast_append();
        } else {
            // Probe new members right away rather than at the next heartbeat.
            let ids: Vec<u64> = self.prs.progress.keys().copied().collect();
            for to in ids.into_iter().filter(|&to| to != id) {
                self.maybe_send_append(to, false);
            }
        }
        if let Some(t) = self.lead_transferee {
            if !self.prs.conf.voters.contains(t) {
                self.abort_leader_transfer();
            }
        }
        self.maybe_hand_over_leadership();
        cs
    }

    /// The application applied up to `index`. A leader in an auto-leave joint
    /// configuration proposes the leaving change once the entering one is applied.
    pub(crate) fn applied_to(&mut self, index: u64) {
        self.raft_log.applied_to(index);
        if self.prs.conf.auto_leave
            && index >= self.pending_conf_index
            && self.state == StateRole::Leader
        {
            let cc = ConfChangeV2::default();
            let mut e = Entry::default();
            e.set_entry_type(EntryType::EntryConfChangeV2);
            e.data = cc
                .write_to_bytes()
                .expect("encoding an empty conf change")
                .into();
            let mut m = new_message(INVALID_ID, MessageType::MsgPropose);
            m.mut_entries().push(e);
            // Refused only while a transfer is in progress; retried on the next
            // apply then.
            let _ = self.step(m as Message);
        }
    }
}
