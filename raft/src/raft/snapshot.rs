//! Snapshots (§7): sending one to a follower whose needed entries were compacted,
//! installing one received from the leader, and the application's report on a
//! snapshot's delivery.

use raft_proto::eraftpb::{Message, MessageType};

use super::{new_message, Raft};
use crate::confchange;
use crate::errors::{Error, StorageError};
use crate::storage::Storage;
use crate::tracker::{Progress, ProgressState};

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
        if self.restore(m.take_snapshot()) {
            resp.index = self.raft_log.last_index();
        } else {
            // Already covered: acknowledge what this node has committed.
            resp.index = self.raft_log.committed;
        }
        self.send(resp);
    }

    /// Replaces the log and membership with a snapshot. Returns false when the
    /// snapshot is not newer than the commit index, or when the log already holds
    /// its last entry (then only the commit index moves).
    pub(crate) fn restore(&mut self, snap: raft_proto::eraftpb::Snapshot) -> bool {
        let meta = snap.get_metadata();
        let (idx, term) = (meta.index, meta.term);
        if idx <= self.raft_log.committed {
            return false;
        }
        let cs = meta.get_conf_state();
        let in_conf = cs
            .voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .any(|&id| id == self.id);
        if !in_conf {
            // A snapshot of a configuration this node is not part of: a stale
            // message, or a bug upstream. Ignoring it is safe.
            return false;
        }
        if self.raft_log.match_term(idx, term) {
            // The log already holds the entry: a snapshot would only lose entries.
            self.raft_log.commit_to(idx);
            return false;
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
        true
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
