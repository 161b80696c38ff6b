//! Log replication (§5.3): proposals, appends with per-follower flow control,
//! the consistency check with fast backtracking, heartbeats and the commit rule
//! (§5.4.2: only entries of the leader's term are committed by counting).

use raft_proto::eraftpb::{Entry, EntryType, Message, MessageType};

use super::{new_message, Raft, StateRole};
use crate::errors::{Error, Result};
use crate::storage::Storage;
use crate::tracker::ProgressState;

impl<S: Storage> Raft<S> {
    /// Appends a proposal's entries to the leader's log and replicates them.
    pub(crate) fn handle_propose(&mut self, mut m: Message) -> Result<()> {
        if m.get_entries().is_empty() {
            // Validated away for peers; a local caller proposing nothing.
            return Err(Error::InvalidMessage {
                msg_type: MessageType::MsgPropose,
                from: m.from,
                reason: "proposal without entries",
            });
        }
        if self.prs.get(self.id).is_none() {
            // Removed from the configuration: no longer a leader anyone follows.
            return Err(Error::ProposalDropped);
        }
        if self.lead_transferee.is_some() {
            // Entries proposed now would be lost with the transfer (thesis §3.10).
            return Err(Error::ProposalDropped);
        }
        let last = self.raft_log.last_index();
        let mut ents = m.take_entries().into_vec();
        for (i, e) in ents.iter_mut().enumerate() {
            if e.get_entry_type() == EntryType::EntryNormal {
                continue;
            }
            if self.refuse_conf_change(e) {
                // Keep the slot so the proposer's index accounting is unchanged, but
                // make it a no-op.
                *e = Entry::default();
            } else {
                self.pending_conf_index = last + i as u64 + 1;
            }
        }
        if !self.append_entries(ents) {
            return Err(Error::ProposalDropped);
        }
        self.bcast_append();
        Ok(())
    }

    /// Appends entries at the end of the leader's log, stamping term and index.
    /// Returns false (appending nothing) when the uncommitted size limit is hit.
    pub(crate) fn append_entries(&mut self, mut ents: Vec<Entry>) -> bool {
        let size: u64 = ents.iter().map(|e| e.data.len() as u64).sum();
        // An empty log of uncommitted entries always accepts one proposal, so a
        // single oversized proposal cannot wedge the group.
        if self.uncommitted_size > 0
            && size > 0
            && self.uncommitted_size.saturating_add(size) > self.max_uncommitted_size
        {
            return false;
        }
        self.uncommitted_size = self.uncommitted_size.saturating_add(size);
        let last = self.raft_log.last_index();
        for (i, e) in ents.iter_mut().enumerate() {
            e.term = self.term;
            e.index = last + 1 + i as u64;
        }
        // The leader's own match index advances only once the entries are
        // durable (`on_persist_entries`), so an unpersisted entry never counts
        // towards its own commit quorum.
        self.raft_log.append(&ents);
        true
    }

    /// Entries up to `index` of `term` were persisted; a leader counts itself.
    pub(crate) fn on_persist_entries(&mut self, index: u64, term: u64) {
        if !self.raft_log.maybe_persist(index, term) || self.state != StateRole::Leader {
            return;
        }
        let (id, persisted) = (self.id, self.raft_log.persisted);
        if let Some(pr) = self.prs.get_mut(id) {
            if pr.maybe_update(persisted) && self.maybe_commit() && self.should_bcast_commit() {
                self.bcast_append();
            }
        }
    }

    /// Releases the uncommitted budget of entries handed out as committed.
    pub(crate) fn reduce_uncommitted_size(&mut self, ents: &[Entry]) {
        if self.state != StateRole::Leader {
            return;
        }
        let size: u64 = ents.iter().map(|e| e.data.len() as u64).sum();
        self.uncommitted_size = self.uncommitted_size.saturating_sub(size);
    }

    pub(crate) fn should_bcast_commit(&self) -> bool {
        !self.skip_bcast_commit || self.pending_conf_index > self.raft_log.applied
    }

    /// Commits what a quorum acknowledged, if of the current term (§5.4.2).
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let mci = self.prs.maximal_committed_index();
        if self.raft_log.maybe_commit(mci, self.term) {
            self.release_pending_read_index_messages();
            return true;
        }
        false
    }

    /// Sends appends (or empty probes) to every other member.
    pub(crate) fn bcast_append(&mut self) {
        let me = self.id;
        let ids: Vec<u64> = self.prs.progress.keys().copied().collect();
        for id in ids.into_iter().filter(|&id| id != me) {
            self.maybe_send_append(id, true);
        }
    }

    /// Sends the next append to `to`; returns whether a message was sent.
    pub(crate) fn send_append(&mut self, to: u64) -> bool {
        self.maybe_send_append(to, true)
    }

    /// Sends an append (or a snapshot when the needed entries are compacted) to
    /// `to` unless its progress is paused, or nothing is new and `send_if_empty` is
    /// false. Returns whether a message was sent.
    pub(crate) fn maybe_send_append(&mut self, to: u64, send_if_empty: bool) -> bool {
        let Some(pr) = self.prs.get(to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        if pr.needs_snapshot {
            return self.maybe_send_snapshot(to);
        }
        let next = pr.next_idx;
        let prev_term = self.raft_log.term(next - 1);
        let ents = self.raft_log.entries(next, self.max_msg_size);
        let (prev_term, ents) = match (prev_term, ents) {
            (Ok(t), Ok(e)) => (t, e),
            _ => return self.maybe_send_snapshot(to),
        };
        if ents.is_empty() && !send_if_empty {
            return false;
        }
        let mut m = new_message(to, MessageType::MsgAppend);
        m.index = next - 1;
        m.log_term = prev_term;
        m.commit = self.raft_log.committed;
        if let Some(last) = ents.last().map(|e| e.index) {
            let pr = self.prs.get_mut(to).expect("progress checked above");
            match pr.state {
                ProgressState::Replicate => {
                    pr.optimistic_update(last);
                    pr.ins.add(last);
                }
                ProgressState::Probe => pr.pause(),
                ProgressState::Snapshot => panic!(
                    "[{}] sending append to {} in snapshot state, term {}",
                    self.id, to, self.term
                ),
            }
        }
        m.set_entries(ents.into());
        self.send(m);
        true
    }

    /// Follower side of an append: the consistency check of §5.3 and, on a
    /// mismatch, a hint that lets the leader skip a whole term per round trip.
    pub(crate) fn handle_append_entries(&mut self, m: &Message) {
        if !self.has_configuration() {
            // An empty joiner: the leader's log is only meaningful on top of
            // the configuration it starts from (its storage's, or its
            // snapshot's), which this node does not have. Replaying the conf
            // changes after it ("add me") would leave this node believing it
            // is the only voter. Refuse everything, down to index 0, which a
            // node with a configuration always accepts: a rejection there
            // tells the leader to send a snapshot.
            let mut resp = new_message(m.from, MessageType::MsgAppendResponse);
            resp.index = m.index;
            resp.reject = true;
            self.send(resp);
            return;
        }
        let committed = self.raft_log.committed;
        if m.index < committed {
            // Already committed here: tell the leader where to continue.
            let mut resp = new_message(m.from, MessageType::MsgAppendResponse);
            resp.index = committed;
            self.send(resp);
            return;
        }
        let mut resp = new_message(m.from, MessageType::MsgAppendResponse);
        match self
            .raft_log
            .maybe_append(m.index, m.log_term, m.commit, m.get_entries())
        {
            Some((_, last_new)) => resp.index = last_new,
            None => {
                let hint = m.index.min(self.raft_log.last_index());
                let (hint_index, hint_term) = self.raft_log.find_conflict_by_term(hint, m.log_term);
                resp.index = m.index;
                resp.reject = true;
                resp.reject_hint = hint_index;
                resp.log_term = hint_term;
            }
        }
        self.send(resp);
    }

    /// Leader side of an append response.
    pub(crate) fn handle_append_response(&mut self, m: &Message) {
        let from = m.from;
        let Some(pr) = self.prs.get_mut(from) else {
            return;
        };
        pr.recent_active = true;
        if m.reject && pr.state == ProgressState::Snapshot {
            if m.index == pr.pending_snapshot {
                // The follower refused the snapshot (its configuration does not
                // hold the follower): start over, asking the storage for one
                // that does.
                pr.snapshot_failure();
                pr.become_probe();
                self.send_append(from);
            }
            // Anything else is a stale rejection of an append sent earlier.
            return;
        }
        if m.reject && m.index == 0 {
            // Only a follower without a configuration rejects the base of the
            // log (index 0, term 0): it needs a snapshot.
            pr.needs_snapshot = true;
            pr.resume();
            self.send_append(from);
            return;
        }
        if m.reject {
            // The follower's log has no entry matching (m.index, ...). With its hint
            // (the last index whose term is <= log_term), skip every entry of ours
            // that cannot match either.
            let next_probe = if m.log_term > 0 {
                self.raft_log
                    .find_conflict_by_term(m.reject_hint, m.log_term)
                    .0
            } else {
                m.reject_hint
            };
            let pr = self.prs.get_mut(from).expect("checked above");
            if pr.maybe_decr_to(m.index, next_probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from);
            }
            return;
        }
        let old_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.matched + 1 >= self.raft_log.first_index() => {
                // The follower caught up from the snapshot; the log covers the rest.
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.ins.free_to(m.index),
        }
        if self.maybe_commit() {
            if self.should_bcast_commit() {
                self.bcast_append();
            }
        } else if old_paused {
            // The follower was paused: it may have missed the latest commit index.
            self.send_append(from);
        }
        // Stream as much as the window allows.
        while self.maybe_send_append(from, false) {}
        if Some(from) == self.lead_transferee {
            let matched = self.prs.get(from).map_or(0, |p| p.matched);
            if matched == self.raft_log.last_index() {
                self.send_timeout_now(from);
            }
        }
    }

    /// Sends heartbeats, carrying the newest pending ReadIndex context.
    pub(crate) fn bcast_heartbeat(&mut self) {
        let ctx = self.read_only.last_pending_request_ctx();
        self.bcast_heartbeat_with_ctx(ctx);
    }

    pub(crate) fn bcast_heartbeat_with_ctx(&mut self, ctx: Option<Vec<u8>>) {
        let targets: Vec<(u64, u64)> = self
            .prs
            .iter()
            .filter(|(id, _)| *id != self.id)
            .map(|(id, pr)| (id, pr.matched))
            .collect();
        for (to, matched) in targets {
            let mut m = new_message(to, MessageType::MsgHeartbeat);
            // A follower may not have the leader's committed entries yet; never
            // tell it to commit beyond what it is known to hold.
            m.commit = matched.min(self.raft_log.committed);
            if let Some(c) = &ctx {
                m.context = c.clone().into();
            }
            self.send(m);
        }
    }

    pub(crate) fn handle_heartbeat(&mut self, m: &Message) {
        let to = m.commit.min(self.raft_log.last_index());
        self.raft_log.commit_to(to);
        let mut resp = new_message(m.from, MessageType::MsgHeartbeatResponse);
        resp.context = m.context.clone();
        self.send(resp);
    }

    pub(crate) fn handle_heartbeat_response(&mut self, m: &Message) {
        let last = self.raft_log.last_index();
        let Some(pr) = self.prs.get_mut(m.from) else {
            return;
        };
        pr.recent_active = true;
        pr.resume();
        // The follower is alive: free one slot so a full window cannot stall it.
        if pr.state == ProgressState::Replicate && pr.ins.full() {
            pr.ins.free_first_one();
        }
        if pr.matched < last {
            self.send_append(m.from);
        } else if Some(m.from) == self.lead_transferee {
            // The transferee is caught up but the MsgTimeoutNow may have been
            // lost: repeat it (a duplicate is ignored by term checks).
            self.send_timeout_now(m.from);
        }
        if !m.get_context().is_empty() {
            self.handle_read_index_ack(m);
        }
    }

    /// The transport could not reach `m.from`: stop streaming optimistically.
    pub(crate) fn handle_unreachable(&mut self, m: &Message) {
        if let Some(pr) = self.prs.get_mut(m.from) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }
}
