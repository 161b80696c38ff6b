//! [`Unstable`]: the tail of the log not yet durable in [`crate::Storage`] — an
//! optional incoming snapshot followed by entries.
//!
//! ```text
//!              offset            offset_in_progress
//!                |                     |
//!   [snapshot?]  [e0] [e1] ... [ek-1]  [ek] ... [en]
//!                \___ handed out in a __/\__ not yet
//!                     Ready, not durable     handed out
//! ```
//!
//! Entries leave the structure when the application reports them durable
//! (`stable_to`), which may be several `Ready`s later with asynchronous writes.

use raft_proto::eraftpb::{Entry, Snapshot};

/// Not-yet-durable entries and snapshot of a node's log.
#[derive(Debug, Default)]
pub(crate) struct Unstable {
    /// A snapshot received from a leader, to be persisted and applied.
    pub(crate) snapshot: Option<Snapshot>,
    /// Whether `snapshot` was handed out in a `Ready`.
    pub(crate) snapshot_in_progress: bool,
    /// Entries from index `offset` on.
    pub(crate) entries: Vec<Entry>,
    /// The index of `entries[0]`.
    pub(crate) offset: u64,
    /// Entries below this index were handed out in a `Ready`.
    pub(crate) offset_in_progress: u64,
    /// The node id, for panic messages.
    id: u64,
}

impl Unstable {
    pub(crate) fn new(offset: u64, id: u64) -> Unstable {
        Unstable {
            offset,
            offset_in_progress: offset,
            id,
            ..Unstable::default()
        }
    }

    /// The first index, known only when a snapshot is pending.
    pub(crate) fn maybe_first_index(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| s.get_metadata().index + 1)
    }

    /// The last index held here, if any entry or snapshot is.
    pub(crate) fn maybe_last_index(&self) -> Option<u64> {
        match self.entries.last() {
            Some(e) => Some(e.index),
            None => self.snapshot.as_ref().map(|s| s.get_metadata().index),
        }
    }

    /// The term of `idx` if it is held here.
    pub(crate) fn maybe_term(&self, idx: u64) -> Option<u64> {
        if idx < self.offset {
            let meta = self.snapshot.as_ref()?.get_metadata();
            return (meta.index == idx).then_some(meta.term);
        }
        let last = self.maybe_last_index()?;
        if idx > last {
            return None;
        }
        Some(self.entries[(idx - self.offset) as usize].term)
    }

    /// Entries not yet handed out.
    pub(crate) fn next_entries(&self) -> &[Entry] {
        let start = (self.offset_in_progress - self.offset) as usize;
        &self.entries[start.min(self.entries.len())..]
    }

    /// The snapshot, if not yet handed out.
    pub(crate) fn next_snapshot(&self) -> Option<&Snapshot> {
        match &self.snapshot {
            Some(s) if !self.snapshot_in_progress => Some(s),
            _ => None,
        }
    }

    /// Marks everything held as handed out.
    pub(crate) fn accept_in_progress(&mut self) {
        if let Some(e) = self.entries.last() {
            self.offset_in_progress = e.index + 1;
        }
        if self.snapshot.is_some() {
            self.snapshot_in_progress = true;
        }
    }

    /// Entries up to `idx` (of term `term`) are durable. Ignored when the entry was
    /// replaced meanwhile (its term differs) or is already gone.
    pub(crate) fn stable_to(&mut self, idx: u64, term: u64) {
        if idx < self.offset || self.maybe_term(idx) != Some(term) {
            return;
        }
        // A snapshot still pending means `idx < offset`, handled above.
        let n = (idx + 1 - self.offset) as usize;
        self.entries.drain(..n);
        self.offset = idx + 1;
        self.offset_in_progress = self.offset_in_progress.max(self.offset);
    }

    /// The snapshot at `idx` is durable.
    pub(crate) fn stable_snap_to(&mut self, idx: u64) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.get_metadata().index == idx)
        {
            self.snapshot = None;
            self.snapshot_in_progress = false;
        }
    }

    /// Replaces everything with an incoming snapshot.
    pub(crate) fn restore(&mut self, snap: Snapshot) {
        self.entries.clear();
        self.offset = snap.get_metadata().index + 1;
        self.offset_in_progress = self.offset;
        self.snapshot = Some(snap);
        self.snapshot_in_progress = false;
    }

    /// Appends `ents`, truncating held entries from `ents[0].index` on.
    pub(crate) fn truncate_and_append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else {
            return;
        };
        let after = first.index;
        if after == self.offset + self.entries.len() as u64 {
            self.entries.extend_from_slice(ents);
        } else if after <= self.offset {
            // Replaces all held entries; the next Ready hands out the new ones.
            self.offset = after;
            self.offset_in_progress = after;
            self.entries = ents.to_vec();
        } else {
            self.entries.truncate((after - self.offset) as usize);
            self.entries.extend_from_slice(ents);
            self.offset_in_progress = self.offset_in_progress.min(after);
        }
    }

    /// Entries in `[lo, hi)`, which must lie within the held entries.
    pub(crate) fn slice(&self, lo: u64, hi: u64) -> &[Entry] {
        let upper = self.offset + self.entries.len() as u64;
        assert!(
            lo <= hi && self.offset <= lo && hi <= upper,
            "[{}] unstable slice [{}, {}) out of bound [{}, {})",
            self.id,
            lo,
            hi,
            self.offset,
            upper
        );
        &self.entries[(lo - self.offset) as usize..(hi - self.offset) as usize]
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e
    }

    fn snap(index: u64, term: u64) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s
    }

    fn unstable(entries: Vec<Entry>, offset: u64, snapshot: Option<Snapshot>) -> Unstable {
        let mut u = Unstable::new(offset, 1);
        u.entries = entries;
        u.snapshot = snapshot;
        u
    }

    #[test]
    fn unstable_maybe_first_index_2ab() {
        assert_eq!(unstable(vec![ent(5, 1)], 5, None).maybe_first_index(), None);
        assert_eq!(unstable(vec![], 0, None).maybe_first_index(), None);
        let u = unstable(vec![ent(5, 1)], 5, Some(snap(4, 1)));
        assert_eq!(u.maybe_first_index(), Some(5));
        assert_eq!(
            unstable(vec![], 5, Some(snap(4, 1))).maybe_first_index(),
            Some(5)
        );
    }

    #[test]
    fn unstable_maybe_last_index_2ab() {
        assert_eq!(
            unstable(vec![ent(5, 1)], 5, None).maybe_last_index(),
            Some(5)
        );
        let u = unstable(vec![ent(5, 1)], 5, Some(snap(4, 1)));
        assert_eq!(u.maybe_last_index(), Some(5));
        assert_eq!(
            unstable(vec![], 5, Some(snap(4, 1))).maybe_last_index(),
            Some(4)
        );
        assert_eq!(unstable(vec![], 0, None).maybe_last_index(), None);
    }

    #[test]
    fn unstable_maybe_term_2ab() {
        let cases = [
            (unstable(vec![ent(5, 1)], 5, None), 5, Some(1)),
            (unstable(vec![ent(5, 1)], 5, None), 6, None),
            (unstable(vec![ent(5, 1)], 5, None), 4, None),
            (unstable(vec![ent(5, 1)], 5, Some(snap(4, 1))), 5, Some(1)),
            (unstable(vec![ent(5, 1)], 5, Some(snap(4, 1))), 4, Some(1)),
            (unstable(vec![ent(5, 1)], 5, Some(snap(4, 1))), 3, None),
            (unstable(vec![], 5, Some(snap(4, 1))), 5, None),
            (unstable(vec![], 5, Some(snap(4, 1))), 4, Some(1)),
            (unstable(vec![], 0, None), 5, None),
        ];
        for (i, (u, idx, want)) in cases.iter().enumerate() {
            assert_eq!(u.maybe_term(*idx), *want, "case {i}");
        }
    }

    #[test]
    fn unstable_restore_2c() {
        let mut u = unstable(vec![ent(5, 1)], 5, Some(snap(4, 1)));
        u.offset_in_progress = 6;
        u.snapshot_in_progress = true;
        u.restore(snap(6, 2));
        assert_eq!(u.offset, 7);
        assert_eq!(u.offset_in_progress, 7);
        assert!(u.entries.is_empty());
        assert!(!u.snapshot_in_progress);
        assert_eq!(u.snapshot.as_ref().unwrap().get_metadata().index, 6);
    }

    #[test]
    fn unstable_stable_to_2ab() {
        // (entries, offset, snapshot, stable index, stable term, want offset, want len)
        let cases: Vec<(Vec<Entry>, u64, Option<Snapshot>, u64, u64, u64, usize)> = vec![
            (vec![], 0, None, 5, 1, 0, 0),
            (vec![ent(5, 1)], 5, None, 5, 1, 6, 0),
            (vec![ent(5, 1), ent(6, 1)], 5, None, 5, 1, 6, 1),
            (vec![ent(6, 2)], 6, None, 6, 1, 6, 1), // term mismatch
            (vec![ent(5, 1)], 5, None, 4, 1, 5, 1), // older index
            (vec![ent(5, 1)], 5, None, 4, 2, 5, 1),
            (vec![ent(5, 1)], 5, Some(snap(4, 1)), 5, 1, 6, 0),
            (vec![ent(5, 1), ent(6, 1)], 5, Some(snap(4, 1)), 5, 1, 6, 1),
            (vec![ent(5, 1)], 5, Some(snap(4, 1)), 4, 1, 5, 1), // snapshot index
        ];
        for (i, (ents, off, s, idx, term, woff, wlen)) in cases.into_iter().enumerate() {
            let mut u = unstable(ents, off, s);
            u.offset_in_progress = off;
            u.stable_to(idx, term);
            assert_eq!(u.offset, woff, "case {i}");
            assert_eq!(u.entries.len(), wlen, "case {i}");
            assert!(u.offset_in_progress >= u.offset, "case {i}");
        }
    }

    #[test]
    fn unstable_truncate_and_append_2ab() {
        // (held entries, offset, in progress, to append, want offset, want terms, want in progress)
        let cases: Vec<(Vec<Entry>, u64, u64, Vec<Entry>, u64, Vec<u64>, u64)> = vec![
            // append to the end
            (
                vec![ent(5, 1)],
                5,
                6,
                vec![ent(6, 1), ent(7, 1)],
                5,
                vec![1, 1, 1],
                6,
            ),
            // replace everything
            (
                vec![ent(5, 1)],
                5,
                6,
                vec![ent(5, 2), ent(6, 2)],
                5,
                vec![2, 2],
                5,
            ),
            (
                vec![ent(5, 1)],
                5,
                6,
                vec![ent(4, 2), ent(5, 2)],
                4,
                vec![2, 2],
                4,
            ),
            // truncate a suffix and append
            (
                vec![ent(5, 1), ent(6, 1), ent(7, 1)],
                5,
                8,
                vec![ent(6, 2)],
                5,
                vec![1, 2],
                6,
            ),
            (
                vec![ent(5, 1), ent(6, 1), ent(7, 1)],
                5,
                6,
                vec![ent(7, 2)],
                5,
                vec![1, 1, 2],
                6,
            ),
        ];
        for (i, (ents, off, inp, app, woff, wterms, winp)) in cases.into_iter().enumerate() {
            let mut u = unstable(ents, off, None);
            u.offset_in_progress = inp;
            u.truncate_and_append(&app);
            assert_eq!(u.offset, woff, "case {i}");
            let terms: Vec<u64> = u.entries.iter().map(|e| e.term).collect();
            assert_eq!(terms, wterms, "case {i}");
            assert_eq!(u.offset_in_progress, winp, "case {i}");
        }
    }

    #[test]
    fn unstable_in_progress_2ac() {
        let mut u = unstable(vec![ent(5, 1), ent(6, 1)], 5, Some(snap(4, 1)));
        assert_eq!(u.next_entries().len(), 2);
        assert!(u.next_snapshot().is_some());
        u.accept_in_progress();
        assert!(u.next_entries().is_empty());
        assert!(u.next_snapshot().is_none());
        u.truncate_and_append(&[ent(7, 1)]);
        assert_eq!(u.next_entries().len(), 1);
        u.stable_snap_to(4);
        assert!(u.snapshot.is_none());
        u.stable_to(6, 1);
        assert_eq!(u.offset, 7);
        assert_eq!(u.next_entries().len(), 1);
    }
}
