//! [`Progress`]: the leader's view of one follower's log (§5.3: `nextIndex` and
//! `matchIndex`), with the replication state machine that paces appends:
//!
//! ```text
//!            +---- append accepted ----+
//!            v                         |
//!   Probe ------------------------> Replicate
//!     ^  \                             |
//!     |   \-- needs compacted ---+     | rejected / unreachable
//!     |                          v     v
//!     +-- snapshot done/failed -- Snapshot / Probe
//! ```

use super::inflights::Inflights;

/// How the leader currently replicates to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressState {
    /// One append at a time until the follower's match point is found.
    #[default]
    Probe,
    /// Appends are streamed optimistically, bounded by the inflight window.
    Replicate,
    /// A snapshot is on its way; appends wait for it.
    Snapshot,
}

/// The replication progress of one peer, as tracked by the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub(crate) matched: u64,
    pub(crate) next_idx: u64,
    pub(crate) state: ProgressState,
    /// In Probe: an append was sent and the next waits for a response or heartbeat.
    pub(crate) paused: bool,
    /// In Snapshot: the index of the snapshot being sent.
    pub(crate) pending_snapshot: u64,
    /// Whether the peer was heard from in the current election timeout window
    /// (for CheckQuorum, thesis §6.2).
    pub(crate) recent_active: bool,
    pub(crate) ins: Inflights,
    pub(crate) is_learner: bool,
    /// The follower holds no configuration (an empty joiner: it refused the
    /// base of the leader's log), so only a snapshot, which carries one, can
    /// catch it up — even when the leader's log still starts at index 1.
    pub(crate) needs_snapshot: bool,
}

impl Progress {
    /// A progress probing from `next_idx`.
    pub(crate) fn new(next_idx: u64, ins_size: usize) -> Progress {
        Progress {
            matched: 0,
            next_idx,
            state: ProgressState::Probe,
            paused: false,
            pending_snapshot: 0,
            recent_active: false,
            ins: Inflights::new(ins_size),
            is_learner: false,
            needs_snapshot: false,
        }
    }

    /// The highest index known to match the leader's log.
    pub fn matched(&self) -> u64 {
        self.matched
    }

    /// The next index to send.
    pub fn next_idx(&self) -> u64 {
        self.next_idx
    }

    /// The replication state.
    pub fn state(&self) -> ProgressState {
        self.state
    }

    /// The index of the snapshot in flight (Snapshot state).
    pub fn pending_snapshot(&self) -> u64 {
        self.pending_snapshot
    }

    /// Whether the peer was heard from recently.
    pub fn recent_active(&self) -> bool {
        self.recent_active
    }

    /// Whether the peer is a learner (replicated to, never counted in quorums).
    pub fn is_learner(&self) -> bool {
        self.is_learner
    }

    /// The inflight window.
    pub fn inflights(&self) -> &Inflights {
        &self.ins
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.paused = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.ins.reset();
    }

    /// Enters Probe, continuing after the match point (or after the snapshot that
    /// was being sent).
    pub(crate) fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next_idx = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next_idx = self.matched + 1;
        }
    }

    /// Enters Replicate right after the match point.
    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_idx = self.matched + 1;
    }

    /// Enters Snapshot while the snapshot at `snapshot_idx` is sent.
    pub(crate) fn become_snapshot(&mut self, snapshot_idx: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_idx;
    }

    /// The snapshot could not be sent or applied.
    pub(crate) fn snapshot_failure(&mut self) {
        self.pending_snapshot = 0;
    }

    /// The follower acknowledged entries up to `n`. Returns whether the match
    /// point advanced.
    pub(crate) fn maybe_update(&mut self, n: u64) -> bool {
        let updated = self.matched < n;
        if updated {
            self.matched = n;
            // An acknowledged index proves the follower holds a configuration.
            self.needs_snapshot = false;
            self.resume();
        }
        self.next_idx = self.next_idx.max(n + 1);
        updated
    }

    /// Entries up to `n` were sent optimistically.
    pub(crate) fn optimistic_update(&mut self, n: u64) {
        self.next_idx = n + 1;
    }

    /// The follower rejected an append at `rejected`; `match_hint` is the highest
    /// index that may match. Returns false for a stale rejection.
    pub(crate) fn maybe_decr_to(&mut self, rejected: u64, match_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            // A rejection at or below the match point is stale.
            if rejected <= self.matched {
                return false;
            }
            self.next_idx = self.matched + 1;
            return true;
        }
        // In Probe only the last probe's rejection is current, and never one
        // at or below the match point: that is a late answer to an older
        // probe, or a follower contradicting its own acknowledgement (a
        // forged one, or a lost disk). Probing it again would get the same
        // answer at once, forever.
        if self.next_idx == 0 || self.next_idx - 1 != rejected || rejected <= self.matched {
            return false;
        }
        self.next_idx = rejected.min(match_hint + 1).max(self.matched + 1);
        self.resume();
        true
    }

    /// Whether the leader should hold appends to this peer for now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.paused,
            ProgressState::Replicate => self.ins.full(),
            ProgressState::Snapshot => true,
        }
    }

    pub(crate) fn pause(&mut self) {
        self.paused = true;
    }

    pub(crate) fn resume(&mut self) {
        self.paused = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(state: ProgressState, matched: u64, next: u64) -> Progress {
        let mut p = Progress::new(next, 256);
        p.state = state;
        p.matched = matched;
        p
    }

    #[test]
    fn progress_become_probe_2ab() {
        let mut p = progress(ProgressState::Replicate, 1, 5);
        p.become_probe();
        assert_eq!((p.state, p.next_idx), (ProgressState::Probe, 2));
        let mut p = progress(ProgressState::Snapshot, 1, 5);
        p.pending_snapshot = 10;
        p.become_probe();
        assert_eq!((p.state, p.next_idx), (ProgressState::Probe, 11));
        let mut p = progress(ProgressState::Snapshot, 1, 5);
        p.become_probe();
        assert_eq!(p.next_idx, 2);
    }

    #[test]
    fn progress_become_replicate_and_snapshot_2ab() {
        let mut p = progress(ProgressState::Probe, 1, 5);
        p.become_replicate();
        assert_eq!(
            (p.state, p.matched, p.next_idx),
            (ProgressState::Replicate, 1, 2)
        );
        p.become_snapshot(10);
        assert_eq!((p.state, p.pending_snapshot), (ProgressState::Snapshot, 10));
        assert!(p.is_paused());
    }

    #[test]
    fn progress_update_2ab() {
        // (update to, want matched, want next, want updated)
        let (prev_m, prev_n) = (3, 5);
        for (i, (up, wm, wn, wok)) in [
            (prev_m - 1, prev_m, prev_n, false),
            (prev_m, prev_m, prev_n, false),
            (prev_m + 1, prev_m + 1, prev_n, true),
            (prev_m + 2, prev_m + 2, prev_n + 1, true),
        ]
        .into_iter()
        .enumerate()
        {
            let mut p = progress(ProgressState::Probe, prev_m, prev_n);
            assert_eq!(p.maybe_update(up), wok, "case {i}");
            assert_eq!((p.matched, p.next_idx), (wm, wn), "case {i}");
        }
    }

    #[test]
    fn progress_maybe_decr_2ab() {
        // (state, matched, next, rejected, hint, want ok, want next)
        let cases = [
            (ProgressState::Replicate, 5, 10, 5, 5, false, 10),
            (ProgressState::Replicate, 5, 10, 4, 4, false, 10),
            (ProgressState::Replicate, 5, 10, 9, 9, true, 6),
            (ProgressState::Probe, 0, 0, 0, 0, false, 0),
            (ProgressState::Probe, 0, 10, 5, 5, false, 10),
            (ProgressState::Probe, 0, 10, 9, 9, true, 9),
            (ProgressState::Probe, 0, 2, 1, 1, true, 1),
            // Index 0 is rejected only by a node without a configuration, which
            // the leader answers with a snapshot instead.
            (ProgressState::Probe, 0, 1, 0, 0, false, 1),
            (ProgressState::Probe, 0, 10, 9, 2, true, 3),
            (ProgressState::Probe, 0, 10, 9, 0, true, 1),
            // At the match point: stale or contradicting, never probed again.
            (ProgressState::Probe, 5, 6, 5, 0, false, 6),
        ];
        for (i, (st, m, n, rej, hint, wok, wn)) in cases.into_iter().enumerate() {
            let mut p = progress(st, m, n);
            assert_eq!(p.maybe_decr_to(rej, hint), wok, "case {i}");
            assert_eq!(p.next_idx, wn, "case {i}");
        }
    }

    #[test]
    fn progress_is_paused_2ab() {
        let mut p = progress(ProgressState::Probe, 0, 1);
        assert!(!p.is_paused());
        p.pause();
        assert!(p.is_paused());
        assert!(p.maybe_update(1), "an acknowledgement resumes a probe");
        assert!(!p.is_paused());
        let mut p = Progress::new(1, 1);
        p.become_replicate();
        assert!(!p.is_paused());
        p.ins.add(1);
        assert!(p.is_paused(), "a full window pauses replication");
    }
}
