//! The bank workload: accounts, the transfer transactions the clients run (some abandoned
//! half-way, as by a crashed client), and the snapshot readers that check the total.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::client::{Client, Commit, Prewrite, Stores, Timeout};

/// Number of accounts.
pub const ACCOUNTS: usize = 8;
/// Every account's balance at the start.
pub const INITIAL: u64 = 1_000;
/// Largest amount one transfer moves.
const MAX_AMOUNT: u64 = 50;
/// Lock TTL of the transfers, in milliseconds: short, so that the locks of abandoned
/// transactions (and of slow ones caught in a partition) expire and get resolved by others.
pub const TTL_MS: u64 = 200;
/// How long one transfer or one snapshot read may take before giving up.
const OP_DEADLINE: Duration = Duration::from_secs(3);
/// Chance a client walks away right after prewriting (its locks must be rolled back by others).
const ABANDON_AFTER_PREWRITE: f64 = 0.04;
/// Chance a client crashes as it sends the primary's commit: it never learns the answer, and
/// the end of the test must find out from the primary.
const ABANDON_DURING_COMMIT: f64 = 0.03;
/// Chance a client walks away after committing the primary (others must commit the secondary).
const ABANDON_AFTER_PRIMARY: f64 = 0.03;

/// The key of account `i`.
pub fn account(i: usize) -> Vec<u8> {
    format!("acct-{i:02}").into_bytes()
}

/// The key prefix every account shares.
pub const PREFIX: &[u8] = b"acct-";

/// Parses a stored balance.
pub fn balance(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a balance: {:?}", String::from_utf8_lossy(v)))
}

/// What the client that ran a transfer knows of its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The primary's commit was acknowledged at this timestamp.
    Committed(u64),
    /// It can never commit: a conflict, or a rollback the client saw.
    Aborted,
    /// No answer (timeouts), or the client walked away after prewriting.
    Unknown,
}

/// One transfer transaction, recorded before its prewrite.
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
    /// The account holding the primary lock.
    pub primary: usize,
    /// What its client knows.
    pub outcome: Outcome,
    /// Whether its client walked away before finishing.
    pub abandoned: bool,
}

impl Transfer {
    /// The change this transfer makes to account `i` if it commits.
    pub fn effect_on(&self, i: usize) -> i64 {
        if i == self.from {
            -(self.amount as i64)
        } else if i == self.to {
            self.amount as i64
        } else {
            0
        }
    }

    /// The account holding the secondary lock.
    pub fn secondary(&self) -> usize {
        if self.primary == self.from {
            self.to
        } else {
            self.from
        }
    }
}

/// Counters of what the clients and readers did, for the report and the liveness check.
#[derive(Default)]
pub struct Stats {
    /// Transfers whose reads failed in time (nothing was written).
    pub read_timeouts: AtomicU64,
    /// Transfers skipped because the debited account was empty.
    pub empty: AtomicU64,
    /// Snapshot reads that balanced.
    pub snapshots: AtomicU64,
    /// Snapshot reads that ran out of time.
    pub snapshot_timeouts: AtomicU64,
    /// Commits of a primary answered "lock not found" after a successful prewrite.
    pub lock_not_found: AtomicU64,
    /// Prewrites that met a newer commit.
    pub conflicts: AtomicU64,
    /// Commits of a primary refused because a resolver had rolled the transaction back.
    pub rolled_back_under_us: AtomicU64,
    /// Locks of other transactions committed by resolvers (clients and readers).
    pub resolved_commits: AtomicU64,
    /// Locks of other transactions rolled back by resolvers.
    pub resolved_rollbacks: AtomicU64,
    /// Requests retried after a region error, a timeout or a stopped store.
    pub retries: AtomicU64,
}

impl Stats {
    fn add_resolved(&self, client: &Client<'_>) {
        let add = |c: &AtomicU64, n| c.fetch_add(n, Ordering::Relaxed);
        add(&self.resolved_commits, client.resolved_commits);
        add(&self.resolved_rollbacks, client.resolved_rollbacks);
        add(&self.retries, client.retries);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Writes every account's initial balance in one committed transaction; returns its start ts.
pub fn must_open_accounts(stores: &Stores) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = Client::new(stores);
    let start_ts = stores.tso.next();
    let writes: Vec<(Vec<u8>, Vec<u8>)> = (0..ACCOUNTS)
        .map(|i| (account(i), INITIAL.to_string().into_bytes()))
        .collect();
    let keys: Vec<Vec<u8>> = writes.iter().map(|(k, _)| k.clone()).collect();
    // A long TTL: nothing else runs yet, and this transaction must not be rolled back.
    let pw = client
        .prewrite(start_ts, &keys[0], &writes, 60_000, deadline)
        .expect("prewriting the accounts");
    assert_eq!(pw, Prewrite::Locked, "opening the accounts");
    let commit_ts = stores.tso.next();
    for part in [&keys[..1], &keys[1..]] {
        let c = client
            .commit(start_ts, commit_ts, part, deadline)
            .expect("committing the accounts");
        assert_eq!(c, Commit::Committed, "opening the accounts");
    }
    start_ts
}

/// Runs transfers until `done`; returns every transfer that got as far as a prewrite.
pub fn run_client(stores: &Stores, done: &AtomicBool, stats: &Stats, seed: u64) -> Vec<Transfer> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut client = Client::new(stores);
    let mut log = Vec::new();
    while !done.load(Ordering::SeqCst) {
        let from = rng.gen_range(0..ACCOUNTS);
        let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
        if let Some(t) = transfer(&mut client, stores, stats, &mut rng, from, to) {
            log.push(t);
        }
    }
    stats.add_resolved(&client);
    log
}

/// One transfer from `from` to `to`; `None` if nothing was written.
fn transfer(
    client: &mut Client<'_>,
    stores: &Stores,
    stats: &Stats,
    rng: &mut StdRng,
    from: usize,
    to: usize,
) -> Option<Transfer> {
    let deadline = Instant::now() + OP_DEADLINE;
    let start_ts = stores.tso.next();
    let read = |client: &mut Client<'_>, i: usize| -> Result<u64, Timeout> {
        let v = client.get(&account(i), start_ts, deadline)?;
        Ok(balance(&v.unwrap_or_else(|| {
            panic!("account {i} is missing at {start_ts}")
        })))
    };
    let (Ok(a), Ok(b)) = (read(client, from), read(client, to)) else {
        bump(&stats.read_timeouts);
        return None;
    };
    if a == 0 {
        bump(&stats.empty);
        return None;
    }
    let amount = rng.gen_range(1..=a.min(MAX_AMOUNT));
    let primary = if rng.gen_bool(0.5) { from } else { to };
    let mut t = Transfer {
        start_ts,
        from,
        to,
        amount,
        primary,
        outcome: Outcome::Unknown,
        abandoned: false,
    };
    let (pk, sk) = (account(primary), account(t.secondary()));
    let new_value = |i: usize| {
        let old = if i == from { a } else { b };
        let new = old as i64 + t.effect_on(i);
        new.to_string().into_bytes()
    };
    let writes = [
        (pk.clone(), new_value(primary)),
        (sk.clone(), new_value(t.secondary())),
    ];
    match client.prewrite(start_ts, &pk, &writes, TTL_MS, deadline) {
        Ok(Prewrite::Locked) => {}
        // The request is all or nothing, and a retry of ours that landed earlier would have
        // made this one succeed: nothing of this transaction is locked.
        Ok(Prewrite::Conflict) => {
            bump(&stats.conflicts);
            t.outcome = Outcome::Aborted;
            return Some(t);
        }
        Err(Timeout(_)) => {
            // Locks may or may not be there: roll them back to know.
            let keys = [pk, sk];
            let rb_deadline = Instant::now() + Duration::from_secs(1);
            match client.rollback(start_ts, &keys, rb_deadline) {
                Ok(true) => t.outcome = Outcome::Aborted,
                Ok(false) => panic!("transfer {start_ts} committed without a commit: {t:?}"),
                Err(Timeout(_)) => {}
            }
            return Some(t);
        }
    }
    if rng.gen_bool(ABANDON_AFTER_PREWRITE) {
        t.abandoned = true;
        return Some(t);
    }
    let commit_ts = stores.tso.next();
    let commit = client.commit(start_ts, commit_ts, std::slice::from_ref(&pk), deadline);
    if rng.gen_bool(ABANDON_DURING_COMMIT) {
        t.abandoned = true;
        return Some(t);
    }
    match commit {
        Ok(Commit::Committed) => t.outcome = Outcome::Committed(commit_ts),
        // Someone found our primary lock expired and rolled it back first.
        Ok(Commit::RolledBack(_)) => {
            bump(&stats.rolled_back_under_us);
            t.outcome = Outcome::Aborted;
            return Some(t);
        }
        Ok(Commit::LockNotFound(msg)) => {
            bump(&stats.lock_not_found);
            eprintln!("bank: transfer {start_ts}: primary lock vanished after prewrite: {msg}");
            return Some(t);
        }
        Err(Timeout(_)) => return Some(t),
    }
    if rng.gen_bool(ABANDON_AFTER_PRIMARY) {
        t.abandoned = true;
        return Some(t);
    }
    // The transaction is committed; the secondary is only a matter of cleaning up, which a
    // resolver does if this fails.
    match client.commit(start_ts, commit_ts, std::slice::from_ref(&sk), deadline) {
        Ok(Commit::Committed) | Err(Timeout(_)) => {}
        Ok(other) => panic!(
            "transfer {start_ts}: primary committed at {commit_ts} but the secondary answered \
             {other:?}: {t:?}"
        ),
    }
    Some(t)
}

/// Reads every account in one snapshot at a fresh timestamp until `done`; each read that
/// completes must add up to the initial total.
pub fn run_reader(stores: &Stores, done: &AtomicBool, stats: &Stats) {
    let mut client = Client::new(stores);
    while !done.load(Ordering::SeqCst) {
        let ts = stores.tso.next();
        let deadline = Instant::now() + OP_DEADLINE;
        match client.scan(PREFIX, ACCOUNTS as u32 + 1, ts, deadline) {
            Ok(pairs) => {
                check_total(&pairs, ts);
                bump(&stats.snapshots);
            }
            Err(Timeout(_)) => bump(&stats.snapshot_timeouts),
        }
        // Readers pace themselves: they check, they are not the load.
        std::thread::sleep(Duration::from_millis(10));
    }
    stats.add_resolved(&client);
}

/// Panics unless `pairs` are exactly the accounts and their balances add up to the total.
pub fn check_total(pairs: &[(Vec<u8>, Vec<u8>)], ts: u64) -> Vec<u64> {
    let keys: Vec<Vec<u8>> = pairs.iter().map(|(k, _)| k.clone()).collect();
    let expected: Vec<Vec<u8>> = (0..ACCOUNTS).map(account).collect();
    assert_eq!(keys, expected, "snapshot at {ts}: wrong set of accounts");
    let balances: Vec<u64> = pairs.iter().map(|(_, v)| balance(v)).collect();
    let total: u64 = balances.iter().sum();
    assert_eq!(
        total,
        INITIAL * ACCOUNTS as u64,
        "snapshot at {ts}: balances {balances:?} do not add up"
    );
    balances
}
