//! Unit tests of [`RaftLog`]: term lookup across storage and unstable entries,
//! conflict detection, appends, commit rules, slicing and persistence tracking.

#![allow(clippy::type_complexity)]

use raft_proto::eraftpb::{ConfState, Entry, Snapshot};

use super::RaftLog;
use crate::storage::MemStorage;
use crate::util::NO_LIMIT;

fn ent(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e
}

fn ents(terms: &[(u64, u64)]) -> Vec<Entry> {
    terms.iter().map(|&(i, t)| ent(i, t)).collect()
}

fn new_log(stored: &[(u64, u64)]) -> RaftLog<MemStorage> {
    let s = MemStorage::new_with_conf_state(ConfState::from((vec![1], vec![])));
    s.append(&ents(stored)).unwrap();
    RaftLog::new(s, 1)
}

#[test]
fn log_find_conflict_2ab() {
    let prev = [(1, 1), (2, 2), (3, 3)];
    let cases: Vec<(Vec<(u64, u64)>, u64)> = vec![
        (vec![], 0),
        (vec![(1, 1), (2, 2), (3, 3)], 0),
        (vec![(2, 2), (3, 3)], 0),
        (vec![(3, 3)], 0),
        (vec![(1, 1), (2, 2), (3, 3), (4, 4), (5, 4)], 4),
        (vec![(4, 4), (5, 4)], 4),
        (vec![(1, 4), (2, 4)], 1),
        (vec![(2, 1), (3, 4), (4, 4)], 2),
        (vec![(3, 1), (4, 2), (5, 4), (6, 4)], 3),
    ];
    for (i, (es, want)) in cases.into_iter().enumerate() {
        let log = new_log(&prev);
        assert_eq!(log.find_conflict(&ents(&es)), want, "case {i}");
    }
}

#[test]
fn log_is_up_to_date_2ab() {
    let log = new_log(&[(1, 1), (2, 2), (3, 3)]);
    // (last index, last term, want)
    let cases = [
        (2, 4, true),
        (3, 4, true),
        (4, 4, true),
        (2, 2, false),
        (3, 2, false),
        (4, 2, false),
        (2, 3, false),
        (3, 3, true),
        (4, 3, true),
    ];
    for (i, (idx, term, want)) in cases.into_iter().enumerate() {
        assert_eq!(log.is_up_to_date(idx, term), want, "case {i}");
    }
}

#[test]
fn log_append_truncates_conflicts_2ab() {
    // (entries to append, want last index, want terms, want unstable offset)
    let cases: Vec<(Vec<(u64, u64)>, u64, Vec<u64>, u64)> = vec![
        (vec![], 2, vec![1, 2], 3),
        (vec![(3, 2)], 3, vec![1, 2, 2], 3),
        (vec![(1, 2)], 1, vec![2], 1),
        (vec![(2, 3), (3, 3)], 3, vec![1, 3, 3], 2),
    ];
    for (i, (es, wlast, wterms, woff)) in cases.into_iter().enumerate() {
        let mut log = new_log(&[(1, 1), (2, 2)]);
        assert_eq!(log.append(&ents(&es)), wlast, "case {i}");
        let got: Vec<u64> = log
            .slice(1, wlast + 1, NO_LIMIT)
            .unwrap()
            .iter()
            .map(|e| e.term)
            .collect();
        assert_eq!(got, wterms, "case {i}");
        assert_eq!(log.unstable.offset, woff, "case {i}");
        assert!(
            log.persisted < woff,
            "case {i}: persisted covers replaced entries"
        );
    }
}

#[test]
fn log_maybe_append_2ab() {
    let prev = [(1, 1), (2, 2), (3, 3)];
    let (last_index, last_term, commit) = (3, 3, 1);
    // (prev index, prev term, committed, entries, want result, want committed)
    let cases: Vec<(u64, u64, u64, Vec<(u64, u64)>, Option<u64>, u64)> = vec![
        // Mismatched term or missing index: rejected.
        (
            last_index,
            last_term - 1,
            last_index,
            vec![(4, 4)],
            None,
            commit,
        ),
        (
            last_index + 1,
            last_term,
            last_index,
            vec![(5, 4)],
            None,
            commit,
        ),
        // Match with the last entry.
        (
            last_index,
            last_term,
            last_index,
            vec![],
            Some(last_index),
            last_index,
        ),
        (
            last_index,
            last_term,
            last_index + 1,
            vec![],
            Some(last_index),
            last_index,
        ),
        (
            last_index,
            last_term,
            last_index - 1,
            vec![],
            Some(last_index),
            last_index - 1,
        ),
        (last_index, last_term, 0, vec![], Some(last_index), commit),
        (
            last_index,
            last_term,
            last_index,
            vec![(4, 4)],
            Some(4),
            last_index,
        ),
        (
            last_index,
            last_term,
            last_index + 1,
            vec![(4, 4)],
            Some(4),
            4,
        ),
        (
            last_index,
            last_term,
            last_index + 2,
            vec![(4, 4)],
            Some(4),
            4,
        ),
        (
            last_index,
            last_term,
            last_index + 2,
            vec![(4, 4), (5, 4)],
            Some(5),
            5,
        ),
        // Match with an earlier entry; a conflict truncates the suffix.
        (
            last_index - 1,
            last_term - 1,
            last_index,
            vec![(3, 4)],
            Some(3),
            3,
        ),
        (
            last_index - 2,
            last_term - 2,
            last_index,
            vec![(2, 4)],
            Some(2),
            2,
        ),
        (
            last_index - 2,
            last_term - 2,
            last_index,
            vec![(2, 2), (3, 3)],
            Some(3),
            3,
        ),
    ];
    for (i, (idx, term, committed, es, want, wcommit)) in cases.into_iter().enumerate() {
        let mut log = new_log(&prev);
        log.commit_to(commit);
        let got = log
            .maybe_append(idx, term, committed, &ents(&es))
            .map(|(_, last)| last);
        assert_eq!(got, want, "case {i}");
        assert_eq!(log.committed, wcommit, "case {i}");
        if let (Some(last), false) = (got, es.is_empty()) {
            let tail = log
                .slice(last - es.len() as u64 + 1, last + 1, NO_LIMIT)
                .unwrap();
            assert_eq!(tail, ents(&es), "case {i}");
        }
    }
}

#[test]
#[should_panic(expected = "conflicts with committed")]
fn log_maybe_append_conflicting_committed_panics_2ab() {
    let mut log = new_log(&[(1, 1), (2, 2), (3, 3)]);
    log.commit_to(3);
    log.maybe_append(1, 1, 3, &ents(&[(2, 4)]));
}

#[test]
fn log_commit_to_and_maybe_commit_2ab() {
    let mut log = new_log(&[(1, 1), (2, 2), (3, 3)]);
    log.commit_to(2);
    log.commit_to(1);
    assert_eq!(log.committed, 2, "commit never decreases");
    assert!(!log.maybe_commit(3, 2), "§5.4.2: only the leader's term");
    assert!(log.maybe_commit(3, 3));
    assert!(!log.maybe_commit(3, 3));
    assert_eq!(log.committed, 3);
}

#[test]
#[should_panic(expected = "out of range")]
fn log_commit_beyond_last_panics_2ab() {
    let mut log = new_log(&[(1, 1)]);
    log.commit_to(2);
}

#[test]
fn log_term_across_compaction_and_unstable_2ab() {
    let mut log = new_log(&[(1, 1), (2, 2), (3, 3), (4, 4)]);
    log.store
        .create_snapshot(2, ConfState::from((vec![1], vec![])), Default::default())
        .unwrap();
    log.store.compact(3).unwrap();
    log.append(&ents(&[(5, 5), (6, 5)]));
    assert_eq!(log.first_index(), 3);
    assert_eq!(log.term(1).unwrap(), 0, "compacted: out of range");
    assert_eq!(log.term(2).unwrap(), 2, "the dummy entry");
    assert_eq!(log.term(4).unwrap(), 4);
    assert_eq!(log.term(6).unwrap(), 5);
    assert_eq!(log.term(7).unwrap(), 0);
    assert!(log.slice(2, 4, NO_LIMIT).is_err());
    let s: Vec<u64> = log
        .slice(3, 7, NO_LIMIT)
        .unwrap()
        .iter()
        .map(|e| e.index)
        .collect();
    assert_eq!(s, vec![3, 4, 5, 6]);
    assert_eq!(log.entries(7, NO_LIMIT).unwrap(), vec![]);
}

#[test]
fn log_slice_size_limit_across_boundary_2ab() {
    let mut log = new_log(&[(1, 1), (2, 1)]);
    log.append(&ents(&[(3, 1), (4, 1)]));
    let one = crate::util::entry_size(&ent(1, 1));
    assert_eq!(log.slice(1, 5, one).unwrap().len(), 1);
    assert_eq!(log.slice(1, 5, one * 3).unwrap().len(), 3);
    assert_eq!(log.slice(1, 5, NO_LIMIT).unwrap().len(), 4);
    assert_eq!(log.slice(3, 5, 0).unwrap().len(), 1);
}

#[test]
fn log_find_conflict_by_term_2ab() {
    let log = new_log(&[(1, 1), (2, 1), (3, 3), (4, 3), (5, 5)]);
    assert_eq!(log.find_conflict_by_term(5, 4), (4, 3));
    assert_eq!(log.find_conflict_by_term(5, 2), (2, 1));
    assert_eq!(log.find_conflict_by_term(5, 0), (0, 0));
    assert_eq!(
        log.find_conflict_by_term(9, 5),
        (5, 5),
        "clamped to the last index"
    );
}

#[test]
fn log_persist_and_committed_entries_2ac() {
    let mut log = new_log(&[(1, 1)]);
    log.append(&ents(&[(2, 1), (3, 1)]));
    log.commit_to(3);
    // Nothing handed out yet: only the stored entry may be applied.
    assert_eq!(log.next_committed_entries(NO_LIMIT).len(), 1);
    log.unstable.accept_in_progress();
    assert_eq!(log.next_committed_entries(NO_LIMIT).len(), 3);
    assert!(!log.maybe_persist(3, 2), "wrong term");
    assert!(log.maybe_persist(3, 1));
    assert_eq!(log.persisted, 3);
    assert!(log.unstable.entries.is_empty());
    log.applying = 3;
    assert!(!log.has_next_committed_entries());
    log.applied_to(3);
    assert_eq!(log.applied, 3);
}

#[test]
fn log_restore_snapshot_2c() {
    let mut log = new_log(&[(1, 1), (2, 1)]);
    log.commit_to(1);
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 10;
    snap.mut_metadata().term = 3;
    log.restore(snap);
    assert_eq!(
        (log.committed, log.last_index(), log.first_index()),
        (10, 10, 11)
    );
    assert_eq!(log.term(10).unwrap(), 3);
    assert!(log.persisted <= 2);
    assert!(
        !log.has_next_committed_entries(),
        "the snapshot is applied first"
    );
    log.persist_snap(10);
    assert_eq!((log.persisted, log.applied), (10, 10));
}
