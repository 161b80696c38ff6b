//! Snapshots (§7): sending one to a follower whose needed entries were compacted,
//! installing one received from the leader, and the application's report on a
//! snapshot's delivery.

use raft_proto::eraftpb::{Message, MessageType};

use super::{new_message, Raft};
use crate::confchange;
use crate::errors::{Error, StorageError};
use crate::storage::{conf_holds, Storage};
use crate::tracker::{Progress, ProgressState};

/// What [`Raft::restore`] did with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restore {
    /// Log, commit index and membership were replaced.
    Installed,
    /// The log already covers it; at most the commit index moved.
    Covered,
    /// Its configuration does not hold this node; nothing changed.
    NotMember,
}

impl<S: Storage> Raft<S> {
    /// Sends the storage's snapshot to `to`; returns whether one was sent.
    pub(crate) fn maybe_send_snapshot(&mut self, to: u64) -> bool {
        let Some(pr) = self.prs.get(to) else {
            return false;
        };
        if !pr.recent_active {
            // Generating and sending a snapshot is expensive; wait until the peer
            // answers at all.
            return false;
        }
        let snap = match self.raft_log.snapshot(0, to) {
            Ok(s) => s,
            Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable)) => return false,
            Err(e) => panic!(
                "[{}] unexpected error getting snapshot for {}: {e}",
                self.id, to
            ),
        };
        let meta = snap.get_metadata();
        if !conf_holds(meta.get_conf_state(), to) {
            // The storage broke its contract (the snapshot predates `to`): the
            // follower would refuse it. Retry later, as for a snapshot being
            // made.
            return false;
        }
        assert!(
            meta.index != 0,
            "[{}] need a non-empty snapshot for {} in term {}",
            self.id,
            to,
            self.term
        );
        let idx = meta.index;
        self.prs
            .get_mut(to)
            .expect("checked above")
            .become_snapshot(idx);
        let mut m = new_message(to, MessageType::MsgSnapshot);
        m.set_snapshot(snap);
        self.send(m);
        true
    }

    /// Follower side of a snapshot: install it unless the log already has it.
    pub(crate) fn handle_snapshot(&mut self, mut m: Message) {
        let mut resp = new_message(m.from, MessageType::MsgAppendResponse);
        let (idx, term) = {
            let meta = m.get_snapshot().get_metadata();
            (meta.index, meta.term)
        };
        match self.restore(m.take_snapshot()) {
            Restore::Installed => resp.index = self.raft_log.last_index(),
            // Already covered: acknowledge what this node has committed.
            Restore::Covered => resp.index = self.raft_log.committed,
            Restore::NotMember => {
                // Refuse it aloud, as an append at the snapshot's index would
                // be: the leader then stops waiting for it and asks its
                // storage for one that holds this node.
                let hint = idx.min(self.raft_log.last_index());
                let (hint_index, hint_term) = self.raft_log.find_conflict_by_term(hint, term);
                resp.index = idx;
                resp.reject = true;
                resp.reject_hint = hint_index;
                resp.log_term = hint_term;
            }
        }
        self.send(resp);
    }

    /// Replaces the log and membership with a snapshot, unless it is not newer
    /// than the commit index or the log already holds its last entry (then
    /// only the commit index moves), or its configuration does not hold this
    /// node.
    pub(crate) fn restore(&mut self, snap: raft_proto::eraftpb::Snapshot) -> Restore {
        let meta = snap.get_metadata();
        let (idx, term) = (meta.index, meta.term);
        if idx <= self.raft_log.committed {
            return Restore::Covered;
        }
        let cs = meta.get_conf_state();
        if !conf_holds(cs, self.id) {
            // A snapshot of a configuration this node is not part of (a stale
            // one, taken before this node was added): installing it would
            // leave this node outside its own group.
            return Restore::NotMember;
        }
        if self.raft_log.match_term(idx, term) {
            // The log already holds the entry: a snapshot would only lose entries.
            self.raft_log.commit_to(idx);
            return Restore::Covered;
        }
        let tracker = match confchange::restore(self.prs.max_inflight, cs, idx) {
            Ok(t) => t,
            Err(e) => panic!(
                "[{}] unable to restore config from snapshot {} term {}: {e}",
                self.id, idx, term
            ),
        };
        self.raft_log.restore(snap);
        self.prs = tracker;
        let (id, last) = (self.id, self.raft_log.last_index());
        let max_inflight = self.prs.max_inflight;
        if let Some(pr) = self.prs.get_mut(id) {
            let learner = pr.is_learner;
            *pr = Progress::new(last + 1, max_inflight);
            pr.is_learner = learner;
            pr.matched = last;
        }
        self.is_learner = self.prs.get(id).is_some_and(Progress::is_learner);
        Restore::Installed
    }

    /// The application's report on a snapshot sent to `m.from` (`reject` means it
    /// failed). Either way probing resumes after a heartbeat: on success the
    /// follower's append response moves it to Replicate sooner.
    pub(crate) fn handle_snapshot_status(&mut self, m: &Message) {
        let Some(pr) = self.prs.get_mut(m.from) else {
            return;
        };
        if pr.state != ProgressState::Snapshot {
            return;
        }
        if m.reject {
            pr.snapshot_failure();
        }
        pr.become_probe();
        pr.pause();
    }
}
