//! The audit's checks on made-up records: a sound history passes, and each kind of anomaly it
//! exists to catch is reported.

use super::*;
use crate::bank::{Progress, Snapshot};

/// Two accounts opened at 100 each by the transaction started at 10, committed at 11.
const OPENING: Opening = Opening {
    start_ts: 10,
    initial: 100,
};

/// An account whose committed puts are `(commit_ts, start_ts, value)`, oldest first.
fn account(puts: &[(u64, u64, u64)]) -> Account {
    Account {
        puts: puts
            .iter()
            .map(|&(commit_ts, start_ts, value)| Version {
                commit_ts,
                start_ts,
                value,
            })
            .collect(),
        lock: None,
    }
}

/// A transfer of `amount` from account 0 to account 1 that read `read`.
fn transfer(start_ts: u64, amount: u64, read: (u64, u64), outcome: Outcome) -> Transfer {
    Transfer {
        start_ts,
        from: 0,
        to: 1,
        amount,
        read,
        outcome,
        abandoned: None,
    }
}

fn history(transfers: Vec<Transfer>, snapshots: &[(u64, [u64; 2])]) -> History {
    History {
        transfers,
        snapshots: snapshots
            .iter()
            .map(|&(ts, b)| Snapshot {
                ts,
                balances: b.to_vec(),
            })
            .collect(),
        progress: Progress::default(),
    }
}

/// Runs the checks; returns the report and the violations.
fn audit(
    accounts: &[Account],
    history: &History,
    decided: &[(u64, Option<u64>)],
) -> (Report, Vec<String>) {
    let decided: HashMap<u64, Option<u64>> = decided.iter().copied().collect();
    let finals: Vec<Option<u64>> = accounts
        .iter()
        .map(|a| a.puts.last().map(|v| v.value))
        .collect();
    let mut violations = Vec::new();
    let report = check(
        &OPENING,
        history,
        &decided,
        accounts,
        &finals,
        &mut violations,
    );
    (report, violations)
}

fn assert_reported(violations: &[String], what: &str) {
    assert!(
        violations.iter().any(|v| v.contains(what)),
        "no violation mentions {what:?}: {violations:#?}"
    );
}

#[test]
fn sound_history_passes_4c() {
    // T20 moves 30 and commits at 25; T21 read before that commit, wrote, and lost (never
    // committed; its primary was rolled back).
    let accounts = [
        account(&[(11, 10, 100), (25, 20, 70)]),
        account(&[(11, 10, 100), (25, 20, 130)]),
    ];
    let h = history(
        vec![
            transfer(20, 30, (100, 100), Outcome::Committed(25)),
            transfer(21, 5, (100, 100), Outcome::Aborted),
        ],
        &[(22, [100, 100]), (30, [70, 130])],
    );
    let (report, violations) = audit(&accounts, &h, &[(21, None)]);
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!((report.committed, report.aborted), (1, 1));
    assert_eq!(report.final_balances, vec![70, 130]);
}

#[test]
fn lost_update_is_reported_4c() {
    // Both transfers read 100 from account 0, and both committed: the second wrote over the
    // first's change without having read it.
    let accounts = [
        account(&[(11, 10, 100), (25, 20, 70), (27, 21, 90)]),
        account(&[(11, 10, 100), (25, 20, 130), (27, 21, 110)]),
    ];
    let h = history(
        vec![
            transfer(20, 30, (100, 100), Outcome::Committed(25)),
            transfer(21, 10, (100, 100), Outcome::Committed(27)),
        ],
        &[],
    );
    let (_, violations) = audit(&accounts, &h, &[]);
    assert_reported(&violations, "lost update");
    assert_reported(&violations, "final balance");
}

#[test]
fn half_committed_transfer_is_reported_4c() {
    let accounts = [
        account(&[(11, 10, 100), (25, 20, 70)]),
        account(&[(11, 10, 100)]),
    ];
    let h = history(
        vec![transfer(20, 30, (100, 100), Outcome::Committed(25))],
        &[],
    );
    let (_, violations) = audit(&accounts, &h, &[]);
    assert_reported(&violations, "committed on one account only");
}

#[test]
fn acknowledged_commit_missing_is_reported_4c() {
    let accounts = [account(&[(11, 10, 100)]), account(&[(11, 10, 100)])];
    let h = history(
        vec![transfer(20, 30, (100, 100), Outcome::Committed(25))],
        &[],
    );
    let (_, violations) = audit(&accounts, &h, &[]);
    assert_reported(&violations, "the records say committed at None");
}

#[test]
fn failed_transfer_that_committed_is_reported_4c() {
    let accounts = [
        account(&[(11, 10, 100), (25, 20, 70)]),
        account(&[(11, 10, 100), (25, 20, 130)]),
    ];
    let h = history(vec![transfer(20, 30, (100, 100), Outcome::Aborted)], &[]);
    let (_, violations) = audit(&accounts, &h, &[(20, Some(25))]);
    assert_reported(&violations, "its client saw fail committed");
}

#[test]
fn stale_snapshot_and_stale_read_are_reported_4c() {
    let accounts = [
        account(&[(11, 10, 100), (25, 20, 70), (35, 31, 60)]),
        account(&[(11, 10, 100), (25, 20, 130), (35, 31, 140)]),
    ];
    // The snapshot at 30 misses the commit at 25, and so do the reads of the transfer at 32;
    // the transfer at 31 read what it should.
    let h = history(
        vec![
            transfer(20, 30, (100, 100), Outcome::Committed(25)),
            transfer(31, 10, (70, 130), Outcome::Committed(35)),
            transfer(32, 1, (100, 100), Outcome::Aborted),
        ],
        &[(30, [100, 100])],
    );
    let (_, violations) = audit(&accounts, &h, &[(32, None)]);
    assert_reported(&violations, "snapshot at 30");
    assert_reported(&violations, "at its start, the records say");
    assert_eq!(violations.len(), 2, "{violations:#?}");
}

#[test]
fn lock_left_is_reported_4c() {
    let mut accounts = [account(&[(11, 10, 100)]), account(&[(11, 10, 100)])];
    accounts[1].lock = Some("a lock".to_string());
    let (_, violations) = audit(&accounts, &history(Vec::new(), &[]), &[]);
    assert_reported(&violations, "a lock is left");
}

#[test]
fn transfers_sharing_a_start_ts_are_reported_4c() {
    let accounts = [
        account(&[(11, 10, 100), (25, 20, 70)]),
        account(&[(11, 10, 100), (25, 20, 130)]),
    ];
    let h = history(
        vec![
            transfer(20, 30, (100, 100), Outcome::Committed(25)),
            transfer(20, 30, (100, 100), Outcome::Committed(25)),
        ],
        &[],
    );
    let (_, violations) = audit(&accounts, &h, &[]);
    assert_reported(&violations, "share a start_ts");
}
