//! The end of a bank run: settle every transfer, then audit the store's MVCC records (read raw
//! through the bank's [`Records`](super::Records), from each region's leader) against the
//! history the clients and the auditor kept.
//!
//! Settling: every transfer whose client did not see it committed is decided on its primary
//! (`KvCheckTxnStatus`: a live lock is waited out, an expired one rolled back); a rolled-back
//! one also has its secondary rolled back, so that no prewrite still in flight can lock it
//! later. Then one transactional read of every account at a fresh timestamp resolves the locks
//! left (the secondaries of committed transfers whose clients walked away).
//!
//! The audit then checks:
//! - no lock is left in the bank's key range, and no record there is of a key that is no
//!   account;
//! - no two transfers share a start timestamp;
//! - every transfer is committed on both accounts at one timestamp, with the balances it
//!   computed, or on neither; an acknowledged commit is there at its timestamp, a transfer its
//!   client saw fail is not, and one whose fate its client never learned is as its primary said;
//! - each account's versions, oldest first, start with the opening balance, and each next one
//!   is the previous one moved by the transfer that wrote it: a transfer that wrote over a
//!   change it did not read (a lost update) breaks the chain;
//! - every snapshot the auditor read, and every pair of balances a transfer read, is exactly
//!   the state the records give at that timestamp (snapshot isolation's reads);
//! - the final balances are the opening ones plus the committed transfers' effects, and equal
//!   what the final transactional read returned.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use codec::key::{decode_bytes, decode_key, decode_ts, encode_bytes, seek_past_versions};
use codec::{Lock, Write, WriteKind};

use tessera_client::txn::TxnStatus;

use super::records::{encoded_prefix_end, scan_all};
use super::{balance, Bank, BankError, History, Outcome, Report, Shared, Transfer};
/// Violations listed in a report; the rest are counted.
const MAX_LISTED: usize = 40;

/// Runs `f` until it succeeds or `deadline` passes; then the last error says why.
async fn with_retry<T, E: Display, F, Fut>(
    deadline: Instant,
    what: &str,
    mut f: F,
) -> Result<T, BankError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(BankError::Timeout(format!(
                    "{what}: still failing at the deadline: {e}"
                )))
            }
            Err(e) => {
                tracing::debug!("{what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The primary and secondary account of a transfer: the one with the smaller key first.
fn primary_secondary(shared: &Shared, t: &Transfer) -> (usize, usize) {
    if shared.keys[t.from] < shared.keys[t.to] {
        (t.from, t.to)
    } else {
        (t.to, t.from)
    }
}

/// Decides every transfer its client did not see committed: its commit timestamp, or `None`.
async fn settle(
    shared: &Shared,
    transfers: &[Transfer],
    deadline: Instant,
) -> Result<HashMap<u64, Option<u64>>, BankError> {
    let mut decided = HashMap::new();
    for t in transfers {
        if matches!(t.outcome, Outcome::Committed(_)) {
            continue;
        }
        let (p, s) = primary_secondary(shared, t);
        let what = format!("deciding transfer {}", t.start_ts);
        let status = loop {
            let status = with_retry(deadline, &what, || {
                shared.client.check_status(&shared.keys[p], t.start_ts)
            })
            .await?;
            match status {
                TxnStatus::Alive { ttl } => {
                    if Instant::now() >= deadline {
                        return Err(BankError::Timeout(format!(
                            "{what}: its primary is still locked (ttl {ttl} ms)"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                decided => break decided,
            }
        };
        let commit_ts = match status {
            TxnStatus::Committed(ts) => Some(ts),
            _ => {
                // A secondary found committed here stays so; the record check reports it.
                let key = [shared.keys[s].clone()];
                with_retry(deadline, &what, || shared.client.rollback(t.start_ts, &key)).await?;
                None
            }
        };
        decided.insert(t.start_ts, commit_ts);
    }
    Ok(decided)
}

/// Every account's balance at a fresh timestamp, resolving the locks met.
async fn final_read(shared: &Shared, deadline: Instant) -> Result<Vec<Option<u64>>, BankError> {
    with_retry(deadline, "the final read", || async {
        let mut txn = shared.client.begin().await?;
        let mut out = Vec::with_capacity(shared.keys.len());
        for key in &shared.keys {
            out.push(txn.get(key).await?.as_deref().and_then(balance));
        }
        Ok::<_, tessera_client::txn::TxnError>(out)
    })
    .await
}

/// One committed balance of an account.
#[derive(Debug, Clone, Copy)]
struct Version {
    commit_ts: u64,
    start_ts: u64,
    value: u64,
}

/// What the records say of one account.
struct Account {
    /// Committed puts, oldest first.
    puts: Vec<Version>,
    /// The lock left on it, if any.
    lock: Option<String>,
}

impl Account {
    fn put_of(&self, start_ts: u64) -> Option<Version> {
        self.puts.iter().copied().find(|v| v.start_ts == start_ts)
    }

    /// The balance a read at `ts` must see.
    fn value_at(&self, ts: u64) -> Option<u64> {
        self.puts
            .iter()
            .rev()
            .find(|v| v.commit_ts <= ts)
            .map(|v| v.value)
    }
}

/// The records of the bank's key range: each account's lock, write records and values.
/// Malformed records, and records of keys in the range that are no account, are violations.
async fn read_accounts(
    bank: &Bank,
    deadline: Instant,
    violations: &mut Vec<String>,
) -> Result<Vec<Account>, BankError> {
    let shared = &bank.shared;
    let records = bank.records.as_ref();
    let what = "reading the bank's records";
    let index: HashMap<&[u8], usize> = shared
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_slice(), i))
        .collect();
    // Locks and versions are stored under the encoded user key, which keeps key order.
    let start = encode_bytes(&shared.prefix);
    let end = encoded_prefix_end(&shared.prefix);
    let locks = with_retry(deadline, what, || scan_all(records, "lock", &start, &end)).await?;
    let writes = with_retry(deadline, what, || scan_all(records, "write", &start, &end)).await?;

    let mut accounts: Vec<Account> = shared
        .keys
        .iter()
        .map(|_| Account {
            puts: Vec::new(),
            lock: None,
        })
        .collect();
    for (stored, raw) in locks {
        let lock = match Lock::from_bytes(&raw) {
            Ok(l) => format!("{l:?}"),
            Err(e) => format!("unreadable: {e}"),
        };
        match decode_bytes(&stored) {
            Ok((key, _)) => match index.get(key.as_slice()) {
                Some(&i) => accounts[i].lock = Some(lock),
                None => violations.push(format!(
                    "a lock is left on {:?}, which is no account: {lock}",
                    String::from_utf8_lossy(&key)
                )),
            },
            Err(e) => violations.push(format!("a lock under the bad key {stored:?}: {e}")),
        }
    }
    // Each account's write records, newest first as stored.
    let mut versions: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); shared.keys.len()];
    for (stored, raw) in writes {
        match decode_key(&stored) {
            Ok((key, commit_ts)) => match index.get(key.as_slice()) {
                Some(&i) => versions[i].push((commit_ts, raw)),
                None => violations.push(format!(
                    "a write record at {commit_ts} of {:?}, which is no account",
                    String::from_utf8_lossy(&key)
                )),
            },
            Err(e) => violations.push(format!("a write record under the bad key {stored:?}: {e}")),
        }
    }
    for (i, writes) in versions.into_iter().enumerate() {
        let key = encode_bytes(&shared.keys[i]);
        let past = seek_past_versions(&key);
        let stored =
            with_retry(deadline, what, || scan_all(records, "default", &key, &past)).await?;
        let mut values = HashMap::new();
        for (k, v) in stored {
            match decode_ts(&k) {
                Ok(start_ts) => {
                    values.insert(start_ts, v);
                }
                Err(e) => {
                    violations.push(format!("account {i}: a value under the bad key {k:?}: {e}"))
                }
            }
        }
        accounts[i].puts = committed_puts(i, writes, &values, violations);
    }
    Ok(accounts)
}

/// The committed balances of account `i`, oldest first, from its write records (newest
/// first) and its values by start timestamp.
fn committed_puts(
    i: usize,
    writes: Vec<(u64, Vec<u8>)>,
    values: &HashMap<u64, Vec<u8>>,
    violations: &mut Vec<String>,
) -> Vec<Version> {
    let mut puts = Vec::new();
    for (commit_ts, raw) in writes.into_iter().rev() {
        let write = match Write::from_bytes(&raw) {
            Ok(w) => w,
            Err(e) => {
                violations.push(format!("account {i}: record at {commit_ts}: {e}"));
                continue;
            }
        };
        match write.kind {
            WriteKind::Put => {
                let value = values.get(&write.start_ts).and_then(|v| balance(v));
                match value {
                    Some(value) => puts.push(Version {
                        commit_ts,
                        start_ts: write.start_ts,
                        value,
                    }),
                    None => violations.push(format!(
                        "account {i}: the put committed at {commit_ts} has no balance stored"
                    )),
                }
            }
            WriteKind::Rollback => {}
            other => violations.push(format!("account {i}: a {other:?} record at {commit_ts}")),
        }
    }
    puts
}

pub(super) async fn run(bank: &Bank, history: History) -> Result<Report, BankError> {
    let shared = &bank.shared;
    let deadline = Instant::now() + shared.config.settle_timeout;
    let decided = settle(shared, &history.transfers, deadline).await?;
    let finals = final_read(shared, deadline).await?;
    let mut violations =
        std::mem::take(&mut *shared.violations.lock().unwrap_or_else(|e| e.into_inner()));
    let accounts = read_accounts(bank, deadline, &mut violations).await?;

    let opening = Opening {
        start_ts: bank.open_ts,
        initial: shared.config.initial,
    };
    let mut report = check(
        &opening,
        &history,
        &decided,
        &accounts,
        &finals,
        &mut violations,
    );
    let stats = shared.client.stats();
    report.resolved = (stats.resolved_commits(), stats.resolved_rollbacks());
    report.lock_waits = stats.lock_waits();
    report.why_not = history.progress.why_not;
    report.read_failures = history.progress.read_failures;
    report.snapshots = history.progress.snapshots;
    report.snapshot_failures = history.progress.snapshot_failures;
    report.elapsed = bank.started.elapsed();
    if violations.len() > MAX_LISTED {
        let more = violations.len() - MAX_LISTED;
        violations.truncate(MAX_LISTED);
        violations.push(format!("... and {more} more"));
    }
    report.violations = violations;
    Ok(report)
}

/// What the audit needs to know of the opening of the accounts.
struct Opening {
    /// The opening transaction's start timestamp.
    start_ts: u64,
    /// Every account's opening balance.
    initial: u64,
}

/// Checks the records against the history (see the module documentation).
fn check(
    opening: &Opening,
    history: &History,
    decided: &HashMap<u64, Option<u64>>,
    accounts: &[Account],
    finals: &[Option<u64>],
    violations: &mut Vec<String>,
) -> Report {
    let initial = opening.initial;
    let mut report = Report {
        accounts: accounts.len(),
        transfers: history.transfers.len(),
        ..Report::default()
    };
    for (i, a) in accounts.iter().enumerate() {
        if let Some(lock) = &a.lock {
            violations.push(format!(
                "account {i}: a lock is left after settling: {lock}"
            ));
        }
    }

    let by_ts: HashMap<u64, &Transfer> =
        history.transfers.iter().map(|t| (t.start_ts, t)).collect();
    if by_ts.len() != history.transfers.len() {
        violations.push(format!(
            "{} transfers share a start_ts with another",
            history.transfers.len() - by_ts.len()
        ));
    }
    let mut committed: Vec<&Transfer> = Vec::new();
    for t in &history.transfers {
        if let Some(stage) = t.abandoned {
            report.abandoned.count(stage);
        }
        let (on_from, on_to) = (
            accounts[t.from].put_of(t.start_ts),
            accounts[t.to].put_of(t.start_ts),
        );
        let on_store = match (on_from, on_to) {
            (Some(f), Some(d)) => {
                if f.commit_ts != d.commit_ts {
                    violations.push(format!("committed at two timestamps: {t:?}"));
                }
                if (f.value, d.value) != (t.wrote(t.from), t.wrote(t.to)) {
                    violations.push(format!(
                        "stored balances ({}, {}) are not those computed by {t:?}",
                        f.value, d.value
                    ));
                }
                Some(f.commit_ts)
            }
            (None, None) => None,
            _ => {
                violations.push(format!(
                    "committed on one account only ({on_from:?}, {on_to:?}): {t:?}"
                ));
                on_from.or(on_to).map(|v| v.commit_ts)
            }
        };
        let expected = match t.outcome {
            Outcome::Committed(ts) => Some(ts),
            _ => match decided.get(&t.start_ts) {
                Some(d) => *d,
                None => {
                    violations.push(format!("never decided: {t:?}"));
                    on_store
                }
            },
        };
        if on_store != expected {
            violations.push(format!(
                "the records say committed at {on_store:?}, its client and primary {expected:?}: \
                 {t:?}"
            ));
        }
        if t.outcome == Outcome::Aborted && expected.is_some() {
            violations.push(format!(
                "a transfer its client saw fail committed at {expected:?}: {t:?}"
            ));
        }
        let read_then = (
            accounts[t.from].value_at(t.start_ts),
            accounts[t.to].value_at(t.start_ts),
        );
        if read_then != (Some(t.read.0), Some(t.read.1)) {
            violations.push(format!(
                "read {:?} at its start, the records say {read_then:?}: {t:?}",
                t.read
            ));
        }
        match on_store {
            Some(_) => {
                report.committed += 1;
                if !matches!(t.outcome, Outcome::Committed(_)) {
                    report.committed_unacknowledged += 1;
                }
                committed.push(t);
            }
            None => report.aborted += 1,
        }
    }

    for (i, a) in accounts.iter().enumerate() {
        match a.puts.first() {
            Some(v) if v.start_ts == opening.start_ts && v.value == initial => {}
            first => violations.push(format!(
                "account {i}: first version {first:?} is not the opening balance"
            )),
        }
        for w in a.puts.windows(2) {
            let (prev, cur) = (w[0], w[1]);
            match by_ts.get(&cur.start_ts) {
                Some(t) if t.effect_on(i) != 0 => {
                    let expected = prev.value as i64 + t.effect_on(i);
                    if cur.value as i64 != expected {
                        violations.push(format!(
                            "account {i}: lost update: {t:?} wrote {} at {} over {prev:?}, \
                             which it should have moved to {expected}",
                            cur.value, cur.commit_ts
                        ));
                    }
                }
                _ => violations.push(format!(
                    "account {i}: version {cur:?} was written by no transfer of this account"
                )),
            }
        }
        let expected = initial as i64 + committed.iter().map(|t| t.effect_on(i)).sum::<i64>();
        let last = a.puts.last().map(|v| v.value);
        if last.map(|v| v as i64) != Some(expected) {
            violations.push(format!(
                "account {i}: final balance {last:?} is not the opening one plus the committed \
                 transfers ({expected})"
            ));
        }
        if finals[i] != last {
            violations.push(format!(
                "account {i}: the final read gave {:?}, the records {last:?}",
                finals[i]
            ));
        }
        report.final_balances.push(last.unwrap_or(0));
    }
    let total: u64 = report.final_balances.iter().sum();
    let want = initial * accounts.len() as u64;
    if total != want {
        violations.push(format!("final balances add up to {total}, not {want}"));
    }

    for s in &history.snapshots {
        let seen: Vec<Option<u64>> = accounts.iter().map(|a| a.value_at(s.ts)).collect();
        if seen.iter().zip(&s.balances).any(|(r, b)| *r != Some(*b)) {
            violations.push(format!(
                "snapshot at {} read {:?}, the records give {seen:?}",
                s.ts, s.balances
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests;
