//! The raft worker's side of the apply thread (`apply_worker`, `Config::async_apply`): committed
//! entries wait in the peer's queue; runs of plain writes go to the thread as tasks, several in
//! flight (the thread applies them in order), and everything else is applied here once every
//! task in flight is done.

use std::collections::VecDeque;

use proto::eraftpb::Entry;

use super::apply::async_command;
use super::PeerMsgHandler;
use crate::apply_worker::{ApplyEntry, ApplyResult, ApplyTask};

/// A peer's committed entries not yet applied, and its tasks on the apply thread.
#[derive(Default)]
pub(crate) struct ApplyQueue {
    entries: VecDeque<Entry>,
    /// The sequence numbers of the peer's tasks on the apply thread, oldest first.
    in_flight: VecDeque<u64>,
    /// The index of the last entry handed to the apply thread.
    dispatched: u64,
}

impl ApplyQueue {
    /// Whether entries wait or tasks are on the apply thread.
    pub(crate) fn busy(&self) -> bool {
        !self.in_flight.is_empty() || !self.entries.is_empty()
    }
}

impl PeerMsgHandler<'_> {
    /// Applies `entries` (consecutive, after every entry handed over before): here, or on the
    /// apply thread when the store runs one.
    pub(super) fn apply_entries(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        self.time_commits(&entries);
        if self.ctx.applier.is_none() {
            self.apply_committed(entries);
            return;
        }
        self.peer.apply_queue.entries.extend(entries);
        self.dispatch_applies();
    }

    /// Hands the queue's runs of plain writes to the apply thread, and applies here what must
    /// be (see `apply_worker`) once no task is in flight, until nothing waits or the next entry
    /// waits for the tasks in flight.
    fn dispatch_applies(&mut self) {
        while !self.peer.apply_queue.entries.is_empty() && !self.peer.destroyed() {
            let mut task = Vec::new();
            let mut here = Vec::new();
            while let Some(e) = self.peer.apply_queue.entries.pop_front() {
                match async_command(&e) {
                    Some(req) if here.is_empty() => {
                        self.peer.size.diff_hint += e.data.len() as u64;
                        task.push(ApplyEntry {
                            index: e.index,
                            term: e.term,
                            req,
                            callback: self.take_proposal(e.index, e.term),
                        });
                    }
                    None if task.is_empty() => {
                        if !self.peer.apply_queue.in_flight.is_empty() {
                            // Applied here only after every earlier entry.
                            self.peer.apply_queue.entries.push_front(e);
                            return;
                        }
                        here.push(e)
                    }
                    // The other kind: it starts the next step.
                    _ => {
                        self.peer.apply_queue.entries.push_front(e);
                        break;
                    }
                }
            }
            if let Some(last) = task.last() {
                let last = last.index;
                // Only entries applied here change more than the applied index, and they wait
                // for the tasks in flight: the state after those is the state here, moved on.
                let mut apply_state = self.peer.raft_group.store().apply_state();
                if !self.peer.apply_queue.in_flight.is_empty() {
                    apply_state.applied_index = self.peer.apply_queue.dispatched;
                }
                let task = ApplyTask {
                    region_id: self.peer.region_id,
                    serial: self.peer.serial,
                    region: self.peer.region(),
                    term: self.peer.term(),
                    apply_state,
                    entries: task,
                };
                let applier = self
                    .ctx
                    .applier
                    .as_mut()
                    .expect("dispatching to the thread");
                let seq = applier.submit(task);
                self.peer.apply_queue.in_flight.push_back(seq);
                self.peer.apply_queue.dispatched = last;
            } else {
                self.apply_committed(here);
            }
        }
    }

    /// Takes up the result of this peer's task: the applied index and term, then the next
    /// entries, the reads that waited, the lease.
    pub(crate) fn on_applied(&mut self, res: ApplyResult) {
        // Results come in the order the tasks went.
        if self.peer.apply_queue.in_flight.front() != Some(&res.seq) {
            return;
        }
        self.peer.apply_queue.in_flight.pop_front();
        self.peer.applied_term = res.applied_term;
        self.peer
            .raft_group
            .store()
            .set_apply_state(res.apply_state);
        self.after_apply(res.apply_state.applied_index);
        self.dispatch_applies();
        if self.peer.destroyed() {
            return;
        }
        let applied = self.peer.raft_group.store().applied_index();
        self.peer.raft_group.advance_apply_to(applied);
        self.serve_ready_reads();
        self.publish_lease();
    }

    /// Before this peer's data goes (it is destroyed): waits for its tasks on the apply thread
    /// and drops the entries still queued.
    pub(super) fn drop_applies(&mut self) {
        self.peer.apply_queue.entries.clear();
        let last = self.peer.apply_queue.in_flight.back().copied();
        self.peer.apply_queue.in_flight.clear();
        if let (Some(seq), Some(applier)) = (last, &self.ctx.applier) {
            applier.wait(seq);
        }
    }
}
