//! [`RaftLog`]: the node's view of the replicated log — durable entries in
//! [`Storage`] followed by [`Unstable`] ones — with its commit, persist and apply
//! points.
//!
//! ```text
//!   first_index ... applied ... applying ... committed ... last_index
//!   \______ storage (durable) ______/\_______ unstable _______/
//! ```
//!
//! Invariants: `applied <= applying <= committed <= last_index`, and
//! `persisted <= last_index`.

use raft_proto::eraftpb::{Entry, Snapshot};

use crate::errors::{Error, Result, StorageError};
use crate::log_unstable::Unstable;
use crate::storage::{conf_holds, Storage};
use crate::util::{limit_size, NO_LIMIT};

/// The replicated log of one node.
pub struct RaftLog<S: Storage> {
    pub(crate) store: S,
    pub(crate) unstable: Unstable,
    /// The highest index known to be committed by a quorum (§5.3).
    pub(crate) committed: u64,
    /// The highest index known to be durable in storage.
    pub(crate) persisted: u64,
    /// The highest index handed to the application to apply.
    pub(crate) applying: u64,
    /// The highest index the application reported applied.
    pub(crate) applied: u64,
    id: u64,
}

impl<S: Storage> RaftLog<S> {
    /// A log over `store`, with everything in it durable and applied up to its
    /// first index.
    pub(crate) fn new(store: S, id: u64) -> RaftLog<S> {
        let first = store.first_index().expect("storage first_index");
        let last = store.last_index().expect("storage last_index");
        RaftLog {
            store,
            unstable: Unstable::new(last + 1, id),
            committed: first - 1,
            persisted: last,
            applying: first - 1,
            applied: first - 1,
            id,
        }
    }

    /// The storage the log reads from.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The commit index.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The index up to which the log is durable.
    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    /// The index the application reported applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The first index still held (older entries were compacted).
    pub fn first_index(&self) -> u64 {
        match self.unstable.maybe_first_index() {
            Some(i) => i,
            None => self.store.first_index().expect("storage first_index"),
        }
    }

    /// The index of the last entry.
    pub fn last_index(&self) -> u64 {
        match self.unstable.maybe_last_index() {
            Some(i) => i,
            None => self.store.last_index().expect("storage last_index"),
        }
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> u64 {
        self.term(self.last_index())
            .unwrap_or_else(|e| panic!("[{}] unexpected error getting last term: {e}", self.id))
    }

    /// The term of entry `idx`; `Ok(0)` outside `[first_index - 1, last_index]`.
    ///
    /// # Errors
    /// A storage error (e.g. compaction racing with the read).
    pub fn term(&self, idx: u64) -> Result<u64> {
        let dummy = self.first_index() - 1;
        if idx < dummy || idx > self.last_index() {
            return Ok(0);
        }
        if let Some(t) = self.unstable.maybe_term(idx) {
            return Ok(t);
        }
        self.store.term(idx)
    }

    /// Whether entry `idx` exists with term `term` (the entry before the first
    /// held one counts: its term is kept). An index outside the log matches
    /// nothing, whatever `term()` reports for it.
    pub fn match_term(&self, idx: u64, term: u64) -> bool {
        if idx < self.first_index() - 1 || idx > self.last_index() {
            return false;
        }
        self.term(idx).is_ok_and(|t| t == term)
    }

    /// Whether a log ending at `(last_index, term)` is at least as up-to-date as
    /// this one (§5.4.1): a later last term wins, then a longer log.
    pub fn is_up_to_date(&self, last_index: u64, term: u64) -> bool {
        term > self.last_term() || (term == self.last_term() && last_index >= self.last_index())
    }

    /// The index of the first entry of `ents` that conflicts with the log (same
    /// index, different term) or is new; 0 when all are already present.
    pub(crate) fn find_conflict(&self, ents: &[Entry]) -> u64 {
        ents.iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map_or(0, |e| e.index)
    }

    /// The largest index `<= index` whose term is `<= term`, with that term. Used
    /// for fast backtracking of a rejected append (§5.3, "the follower can include
    /// the term of the conflicting entry").
    pub(crate) fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term && i > 0 => i -= 1,
                Ok(t) => return (i, t),
                // Compacted: everything below is committed and thus matches.
                Err(_) => return (i, 0),
            }
        }
    }

    /// Appends the entries of an append request after `(idx, term)` if the log
    /// matches there (the consistency check of §5.3), advancing the commit index to
    /// `min(committed, last new index)`. Returns `(conflict index, last new index)`.
    ///
    /// # Panics
    /// When a conflict would truncate a committed entry (§5.4: impossible).
    pub(crate) fn maybe_append(
        &mut self,
        idx: u64,
        term: u64,
        committed: u64,
        ents: &[Entry],
    ) -> Option<(u64, u64)> {
        if !self.match_term(idx, term) {
            return None;
        }
        let last_new = idx + ents.len() as u64;
        let conflict = self.find_conflict(ents);
        if conflict != 0 {
            assert!(
                conflict > self.committed,
                "[{}] entry {} conflicts with committed entry (committed {})",
                self.id,
                conflict,
                self.committed
            );
            let start = (conflict - (idx + 1)) as usize;
            self.append(&ents[start..]);
        }
        self.commit_to(committed.min(last_new));
        Some((conflict, last_new))
    }

    /// Appends `ents` (truncating any conflicting suffix) and returns the new last
    /// index.
    ///
    /// # Panics
    /// When the entries would overwrite committed ones.
    pub(crate) fn append(&mut self, ents: &[Entry]) -> u64 {
        let Some(first) = ents.first() else {
            return self.last_index();
        };
        let after = first.index - 1;
        assert!(
            after >= self.committed,
            "[{}] append after {} is below committed {}",
            self.id,
            after,
            self.committed
        );
        self.unstable.truncate_and_append(ents);
        // Entries from `after + 1` on were replaced: they are no longer durable.
        self.persisted = self.persisted.min(after);
        self.last_index()
    }

    /// Entries from `idx` on, at most `max_size` bytes (at least one).
    ///
    /// # Errors
    /// [`StorageError::Compacted`] when `idx` was compacted.
    pub fn entries(&self, idx: u64, max_size: u64) -> Result<Vec<Entry>> {
        let last = self.last_index();
        if idx > last {
            return Ok(Vec::new());
        }
        self.slice(idx, last + 1, max_size)
    }

    /// Entries in `[lo, hi)`, at most `max_size` bytes (at least one).
    ///
    /// # Errors
    /// [`StorageError::Compacted`] when `lo` was compacted.
    ///
    /// # Panics
    /// When `hi` is beyond the log.
    pub fn slice(&self, lo: u64, hi: u64, max_size: u64) -> Result<Vec<Entry>> {
        let first = self.first_index();
        if lo < first {
            return Err(Error::Store(StorageError::Compacted));
        }
        assert!(
            lo <= hi && hi <= self.last_index() + 1,
            "[{}] slice [{}, {}) out of bound [{}, {}]",
            self.id,
            lo,
            hi,
            first,
            self.last_index()
        );
        if lo == hi {
            return Ok(Vec::new());
        }
        let mut ents = Vec::new();
        let offset = self.unstable.offset;
        if lo < offset {
            let limit = (max_size != NO_LIMIT).then_some(max_size);
            let stored = self.store.entries(lo, hi.min(offset), limit)?;
            // Storage may return fewer entries than asked because of the size limit.
            if (stored.len() as u64) < hi.min(offset) - lo {
                return Ok(stored);
            }
            ents = stored;
        }
        if hi > offset {
            ents.extend_from_slice(self.unstable.slice(lo.max(offset), hi));
        }
        limit_size(&mut ents, max_size);
        Ok(ents)
    }

    /// Raises the commit index to `to`.
    ///
    /// # Panics
    /// When `to` is beyond the last index (the log is corrupt or truncated).
    pub(crate) fn commit_to(&mut self, to: u64) {
        if self.committed >= to {
            return;
        }
        assert!(
            to <= self.last_index(),
            "[{}] commit {} is out of range [last index {}]; was the log truncated?",
            self.id,
            to,
            self.last_index()
        );
        self.committed = to;
    }

    /// Commits up to `max_index` if that entry is of `term` — a leader commits only
    /// entries of its own term by counting replicas (§5.4.2).
    pub(crate) fn maybe_commit(&mut self, max_index: u64, term: u64) -> bool {
        if max_index > self.committed && self.term(max_index).is_ok_and(|t| t == term) {
            self.commit_to(max_index);
            return true;
        }
        false
    }

    /// The application applied everything up to `idx`.
    ///
    /// # Panics
    /// When `idx` is beyond the commit index or behind the applied index.
    pub(crate) fn applied_to(&mut self, idx: u64) {
        if idx == 0 {
            return;
        }
        assert!(
            idx <= self.committed && idx >= self.applied,
            "[{}] applied {} is out of range [prev applied {}, committed {}]",
            self.id,
            idx,
            self.applied,
            self.committed
        );
        self.applied = idx;
        self.applying = self.applying.max(idx);
    }

    /// Entries up to `idx` of `term` were persisted. Returns whether `persisted`
    /// advanced.
    pub(crate) fn maybe_persist(&mut self, idx: u64, term: u64) -> bool {
        // Only entries that were handed out can be reported durable; entries
        // replaced since then carry another term and are ignored.
        if idx > self.persisted
            && idx < self.unstable.offset_in_progress
            && self.match_term(idx, term)
        {
            self.unstable.stable_to(idx, term);
            self.persisted = idx;
            return true;
        }
        false
    }

    /// The snapshot at `idx` was persisted.
    pub(crate) fn persist_snap(&mut self, idx: u64) {
        if self
            .unstable
            .snapshot
            .as_ref()
            .is_some_and(|s| s.get_metadata().index == idx)
        {
            self.unstable.stable_snap_to(idx);
            self.persisted = self.persisted.max(idx);
            // Persisting a snapshot is applying it: the state machine is replaced.
            self.applying = self.applying.max(idx);
            self.applied = self.applied.max(idx);
        }
    }

    /// Whether a snapshot is pending or being persisted; committed entries wait for
    /// it to be applied first.
    fn has_pending_snapshot(&self) -> bool {
        self.unstable.snapshot.is_some()
    }

    /// The highest committed index that may be handed out for applying: entries
    /// must be durable or handed out for persistence in the same `Ready`.
    fn max_appliable_index(&self) -> u64 {
        self.committed.min(self.unstable.offset_in_progress - 1)
    }

    /// Whether committed entries wait to be handed out for applying.
    pub(crate) fn has_next_committed_entries(&self) -> bool {
        !self.has_pending_snapshot() && self.applying < self.max_appliable_index()
    }

    /// The committed entries to hand out for applying, limited to `max_size`.
    pub(crate) fn next_committed_entries(&self, max_size: u64) -> Vec<Entry> {
        if !self.has_next_committed_entries() {
            return Vec::new();
        }
        let (lo, hi) = (self.applying + 1, self.max_appliable_index() + 1);
        self.slice(lo, hi, max_size).unwrap_or_else(|e| {
            panic!(
                "[{}] unexpected error getting committed entries [{lo}, {hi}): {e}",
                self.id
            )
        })
    }

    /// A snapshot for a follower: the pending incoming one if any, else the
    /// storage's.
    ///
    /// # Errors
    /// The storage's error, e.g. `SnapshotTemporarilyUnavailable`.
    pub(crate) fn snapshot(&self, request_index: u64, to: u64) -> Result<Snapshot> {
        if let Some(s) = &self.unstable.snapshot {
            let meta = s.get_metadata();
            if meta.index >= request_index && conf_holds(meta.get_conf_state(), to) {
                return Ok(s.clone());
            }
        }
        self.store.snapshot(request_index, to)
    }

    /// Replaces the log with a snapshot from the leader (§7).
    pub(crate) fn restore(&mut self, snap: Snapshot) {
        let idx = snap.get_metadata().index;
        assert!(
            idx >= self.committed,
            "[{}] snapshot {} is below committed {}",
            self.id,
            idx,
            self.committed
        );
        self.persisted = self.persisted.min(idx);
        self.committed = idx;
        self.unstable.restore(snap);
    }
}

#[cfg(test)]
#[path = "raft_log_tests.rs"]
mod tests;
