//! What a bank run records and reports: the [`Transfer`]s and [`Snapshot`]s of its history,
//! the live [`Progress`] of a running workload, and the [`Report`] of the audit.

use std::fmt;
use std::time::Duration;

/// What the client that ran a transfer knows of its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The commit of its primary was acknowledged at this timestamp.
    Committed(u64),
    /// It did not commit and never will (a failed prewrite, a refused commit, or a client that
    /// walked away before committing).
    Aborted,
    /// The commit of its primary got no answer, or its client walked away as it sent it.
    Unknown,
}

/// Where a client walked away from a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandon {
    /// With every key locked, before the commit: others must roll it back.
    AfterPrewrite,
    /// As it sent the commit of its primary, without waiting for the answer: the end of the
    /// run must learn the transfer's fate from its primary.
    DuringCommit,
    /// With the primary committed and the secondary locked: others must commit it.
    AfterPrimary,
}

/// One transfer that got as far as its prewrite.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The transaction's start timestamp, which names it.
    pub start_ts: u64,
    /// The debited account.
    pub from: usize,
    /// The credited account.
    pub to: usize,
    /// The amount moved.
    pub amount: u64,
    /// The balances of `from` and `to` it read at `start_ts`.
    pub read: (u64, u64),
    /// What its client knows.
    pub outcome: Outcome,
    /// Whether, and where, its client walked away.
    pub abandoned: Option<Abandon>,
}

impl Transfer {
    /// The change it makes to account `i` if it commits.
    pub fn effect_on(&self, i: usize) -> i64 {
        if i == self.from {
            -(self.amount as i64)
        } else if i == self.to {
            self.amount as i64
        } else {
            0
        }
    }

    /// The balance it wrote to account `i` (one of its two).
    pub(super) fn wrote(&self, i: usize) -> u64 {
        let before = if i == self.from {
            self.read.0
        } else {
            self.read.1
        };
        (before as i64 + self.effect_on(i)) as u64
    }
}

/// One balanced read of every account by the auditor.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Its timestamp.
    pub ts: u64,
    /// Every account's balance at `ts`.
    pub balances: Vec<u64>,
}

/// Live figures of a running workload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Transfers whose commit was acknowledged.
    pub committed: u64,
    /// Transfers that did not commit.
    pub aborted: u64,
    /// Why they did not.
    pub why_not: WhyNot,
    /// Transfers whose commit got no answer.
    pub unknown: u64,
    /// Transfers that could not read their accounts (nothing written).
    pub read_failures: u64,
    /// Snapshots the auditor read in full.
    pub snapshots: u64,
    /// Snapshots the auditor could not read in full.
    pub snapshot_failures: u64,
}

/// Why transfers did not commit, as their clients saw it.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhyNot {
    /// A newer commit on one of its accounts (first committer wins).
    pub conflicts: u64,
    /// Another transaction's live lock outlasted the wait.
    pub locked: u64,
    /// Its primary was rolled back by someone who found its lock expired.
    pub rolled_back: u64,
    /// A request failed (no leader in time, the scheduler, ...).
    pub failed: u64,
    /// Its client walked away after the prewrite.
    pub walked_away: u64,
}

/// How many transfers their clients walked away from, at each [`Abandon`] stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Abandoned {
    /// After their prewrite.
    pub after_prewrite: usize,
    /// As they sent their primary's commit.
    pub during_commit: usize,
    /// After their primary's commit.
    pub after_primary: usize,
}

impl Abandoned {
    /// Counts one transfer abandoned at `stage`.
    pub(super) fn count(&mut self, stage: Abandon) {
        let n = match stage {
            Abandon::AfterPrewrite => &mut self.after_prewrite,
            Abandon::DuringCommit => &mut self.during_commit,
            Abandon::AfterPrimary => &mut self.after_primary,
        };
        *n += 1;
    }
}

/// The verdict of a run and its figures.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Accounts.
    pub accounts: usize,
    /// Transfers that got as far as a prewrite.
    pub transfers: usize,
    /// Transfers committed on the store.
    pub committed: usize,
    /// Of those, committed although their client never learned it.
    pub committed_unacknowledged: usize,
    /// Transfers not committed.
    pub aborted: usize,
    /// Why, as their clients saw it (those whose client learned nothing are not counted).
    pub why_not: WhyNot,
    /// Transfers abandoned, by stage.
    pub abandoned: Abandoned,
    /// Transfers that could not read their accounts.
    pub read_failures: u64,
    /// Snapshots read in full (each balanced, or a violation says otherwise).
    pub snapshots: u64,
    /// Snapshots that could not be read in full.
    pub snapshot_failures: u64,
    /// Locks of other transactions committed, and rolled back, by the bank's clients.
    pub resolved: (u64, u64),
    /// Times a request waited for a live lock.
    pub lock_waits: u64,
    /// The balances at the end.
    pub final_balances: Vec<u64>,
    /// How long the run took, settling and audit included.
    pub elapsed: Duration,
    /// Every broken invariant found.
    pub violations: Vec<String>,
}

impl Report {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok() { "OK" } else { "VIOLATED" };
        writeln!(
            f,
            "bank verdict: {verdict} ({} violations) after {:.1?}",
            self.violations.len(),
            self.elapsed
        )?;
        writeln!(
            f,
            "  {} transfers: {} committed ({} without their client knowing), {} not committed \
             ({} conflicts, {} locked past the wait, {} rolled back by others, {} failed \
             requests, {} walked away); {} could not read; abandoned: {} after prewrite, {} \
             during the primary's commit, {} after it",
            self.transfers,
            self.committed,
            self.committed_unacknowledged,
            self.aborted,
            self.why_not.conflicts,
            self.why_not.locked,
            self.why_not.rolled_back,
            self.why_not.failed,
            self.why_not.walked_away,
            self.read_failures,
            self.abandoned.after_prewrite,
            self.abandoned.during_commit,
            self.abandoned.after_primary,
        )?;
        writeln!(
            f,
            "  {} snapshots of {} accounts read ({} could not be read in full); locks of \
             others resolved: {} committed, {} rolled back; {} waits on live locks",
            self.snapshots,
            self.accounts,
            self.snapshot_failures,
            self.resolved.0,
            self.resolved.1,
            self.lock_waits
        )?;
        write!(f, "  final balances {:?}", self.final_balances)?;
        for v in &self.violations {
            write!(f, "\n  violation: {v}")?;
        }
        Ok(())
    }
}
