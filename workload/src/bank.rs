//! The bank workload on a real cluster: accounts moved between by transfer transactions, a
//! snapshot auditor, and an end-of-run audit of what the store holds. Shared by the e2e test of
//! store processes under kill -9 and by `tessera-bench --mode bank` against a running cluster.
//!
//! ```text
//!   open: one transaction writes every account's initial balance
//!   clients (N tasks): read two accounts at start_ts, write both, commit
//!       every k-th transfer walks away after its prewrite, or after committing its primary,
//!       as a crashed client does: others must roll back or finish it
//!   auditor: reads every account at one fresh timestamp; the total must never change
//!   stop ─► settle ─► audit (see `audit`)
//! ```
//!
//! Nothing here panics on a broken invariant: each one found is a violation in the
//! [`Report`], and a cluster that cannot be read to the end is a [`BankError`].

mod audit;
mod workload;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The clients' seeded choices.
use raft::SplitMix64 as Rng;
use tokio::task::JoinHandle;

use tessera_client::cluster::{ClusterClient, ClusterError};
use tessera_client::txn::{TxnClient, TxnError};

/// The knobs of a bank run.
#[derive(Clone, Debug)]
pub struct BankConfig {
    /// Number of accounts (2 to 1,000).
    pub accounts: usize,
    /// Concurrent transfer clients.
    pub clients: usize,
    /// Every account's opening balance.
    pub initial: u64,
    /// Largest amount one transfer moves.
    pub max_amount: u64,
    /// Key prefix of the accounts; `None`: `bank-<ts>/`, new for every run.
    pub prefix: Option<String>,
    /// A client walks away half-way from one transfer in every `abandon_every`, alternately
    /// after its prewrite and after committing its primary: the first transfer from the
    /// `abandon_every`-th on that gets that far (0: never).
    pub abandon_every: u64,
    /// Pause of the auditor between two snapshots.
    pub auditor_pause: Duration,
    /// Seed of the clients' choices (accounts, amounts).
    pub seed: u64,
    /// Bound of the end-of-run phases (waiting out live locks, the final reads).
    pub settle_timeout: Duration,
}

impl Default for BankConfig {
    fn default() -> BankConfig {
        BankConfig {
            accounts: 8,
            clients: 4,
            initial: 1_000,
            max_amount: 50,
            prefix: None,
            abandon_every: 20,
            auditor_pause: Duration::from_millis(20),
            seed: 0,
            settle_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a bank run could not be carried out or checked to the end (not a violation).
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The configuration is unusable.
    #[error("bad bank configuration: {0}")]
    Config(String),
    /// A transaction the run needs failed.
    #[error("{what}: {source}")]
    Txn {
        /// What the run was doing.
        what: String,
        /// Why it failed.
        source: TxnError,
    },
    /// A raw read of the audit failed.
    #[error("{what}: {source}")]
    Cluster {
        /// What the audit was reading.
        what: String,
        /// Why it failed.
        source: ClusterError,
    },
    /// Something did not happen within its deadline.
    #[error("{0}")]
    Timeout(String),
    /// A workload task failed.
    #[error("a bank task failed: {0}")]
    Task(String),
}

/// What the client that ran a transfer knows of its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The commit of its primary was acknowledged at this timestamp.
    Committed(u64),
    /// It did not commit and never will (a failed prewrite, a refused commit, or a client that
    /// walked away before committing).
    Aborted,
    /// The commit of its primary got no answer.
    Unknown,
}

/// Where a client walked away from a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandon {
    /// With every key locked, before the commit: others must roll it back.
    AfterPrewrite,
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
    fn wrote(&self, i: usize) -> u64 {
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

/// Counters of a running workload.
#[derive(Debug, Default)]
struct Counters {
    committed: AtomicU64,
    conflicts: AtomicU64,
    locked: AtomicU64,
    rolled_back: AtomicU64,
    failed: AtomicU64,
    walked_away: AtomicU64,
    unknown: AtomicU64,
    read_failures: AtomicU64,
    empty: AtomicU64,
    snapshots: AtomicU64,
    snapshot_failures: AtomicU64,
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

/// What the workload tasks share.
struct Shared {
    client: TxnClient,
    config: BankConfig,
    keys: Vec<Vec<u8>>,
    stop: AtomicBool,
    counters: Counters,
    violations: Mutex<Vec<String>>,
}

impl Shared {
    fn violation(&self, what: String) {
        tracing::error!("bank invariant violated: {what}");
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }

    /// Counts a transfer that did not commit, by why.
    fn not_committed(&self, e: &TxnError) {
        let c = &self.counters;
        let counter = match e {
            TxnError::Conflict { .. } => &c.conflicts,
            TxnError::Locked { .. } => &c.locked,
            TxnError::Aborted(_) => &c.rolled_back,
            _ => &c.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        self.config.initial * self.keys.len() as u64
    }
}

/// Accounts opened on a cluster, ready for a workload.
pub struct Bank {
    shared: Arc<Shared>,
    cluster: ClusterClient,
    open_ts: u64,
    started: Instant,
}

/// A running workload; [`Workload::stop`] ends it.
pub struct Workload {
    shared: Arc<Shared>,
    clients: Vec<JoinHandle<Vec<Transfer>>>,
    auditor: JoinHandle<Vec<Snapshot>>,
}

/// What a stopped workload did.
pub struct History {
    /// Every transfer that got as far as its prewrite.
    pub transfers: Vec<Transfer>,
    /// Every balanced snapshot.
    pub snapshots: Vec<Snapshot>,
    progress: Progress,
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
    /// Transfers abandoned after their prewrite, and after their primary's commit.
    pub abandoned: (usize, usize),
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
             requests, {} walked away); {} could not read; abandoned: {} after prewrite, {} after \
             the primary's commit",
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
            self.abandoned.0,
            self.abandoned.1,
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

impl Bank {
    /// Opens `config.accounts` accounts at `config.initial` each, in one transaction of
    /// `client`; `cluster` is used for the raw reads of the audit.
    ///
    /// # Errors
    /// A bad configuration, an account that already exists, or a failed transaction.
    pub async fn open(
        client: TxnClient,
        cluster: ClusterClient,
        config: BankConfig,
    ) -> Result<Bank, BankError> {
        if !(2..=1_000).contains(&config.accounts) {
            return Err(BankError::Config(format!(
                "{} accounts; want 2 to 1000",
                config.accounts
            )));
        }
        if config.clients == 0 || config.initial == 0 || config.max_amount == 0 {
            return Err(BankError::Config(
                "clients, initial balance and largest amount must be positive".to_string(),
            ));
        }
        let txn_err = |what: &str| {
            let what = what.to_string();
            move |source| BankError::Txn { what, source }
        };
        let started = Instant::now();
        let mut txn = client
            .begin()
            .await
            .map_err(txn_err("opening the accounts"))?;
        let prefix = config
            .prefix
            .clone()
            .unwrap_or_else(|| format!("bank-{}/", txn.start_ts()));
        // Zero-padded: key order is account order, so a transfer's primary is its smaller one.
        let keys: Vec<Vec<u8>> = (0..config.accounts)
            .map(|i| format!("{prefix}acct-{i:03}").into_bytes())
            .collect();
        for key in &keys {
            let found = txn.get(key).await.map_err(txn_err("reading an account"))?;
            if found.is_some() {
                return Err(BankError::Config(format!(
                    "account {:?} already exists; choose another prefix",
                    String::from_utf8_lossy(key)
                )));
            }
            txn.put(key, config.initial.to_string().as_bytes());
        }
        let open_ts = txn.start_ts();
        txn.commit()
            .await
            .map_err(txn_err("opening the accounts"))?;
        Ok(Bank {
            shared: Arc::new(Shared {
                client,
                config,
                keys,
                stop: AtomicBool::new(false),
                counters: Counters::default(),
                violations: Mutex::new(Vec::new()),
            }),
            cluster,
            open_ts,
            started,
        })
    }

    /// The account keys, in account order.
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.shared.keys
    }

    /// Starts the transfer clients and the auditor.
    pub fn start(&self) -> Workload {
        let clients = (0..self.shared.config.clients)
            .map(|i| tokio::spawn(workload::run_client(self.shared.clone(), i)))
            .collect();
        let auditor = tokio::spawn(workload::run_auditor(self.shared.clone()));
        Workload {
            shared: self.shared.clone(),
            clients,
            auditor,
        }
    }

    /// Settles every transfer whose fate is open, reads the final balances, audits the
    /// store's records against the history, and reports.
    ///
    /// # Errors
    /// When the cluster cannot be read to the end within `settle_timeout`.
    pub async fn audit(&self, history: History) -> Result<Report, BankError> {
        audit::run(self, history).await
    }
}

impl Workload {
    /// Live figures.
    pub fn progress(&self) -> Progress {
        progress(&self.shared.counters)
    }

    /// Waits until `more` transfers past those acknowledged now are acknowledged.
    ///
    /// # Errors
    /// [`BankError::Timeout`] after `timeout`, with the figures seen.
    pub async fn wait_committed(&self, more: u64, timeout: Duration) -> Result<(), BankError> {
        let target = self.progress().committed + more;
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.progress();
            if p.committed >= target {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BankError::Timeout(format!(
                    "{} of {target} transfers committed within {timeout:?}: {p:?}",
                    p.committed
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the clients (each finishes or abandons its transfer) and the auditor.
    pub async fn stop(self) -> Result<History, BankError> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut transfers = Vec::new();
        for c in self.clients {
            transfers.extend(c.await.map_err(|e| BankError::Task(e.to_string()))?);
        }
        let snapshots = self
            .auditor
            .await
            .map_err(|e| BankError::Task(e.to_string()))?;
        Ok(History {
            transfers,
            snapshots,
            progress: progress(&self.shared.counters),
        })
    }
}

fn progress(c: &Counters) -> Progress {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Progress {
        committed: get(&c.committed),
        aborted: get(&c.conflicts)
            + get(&c.locked)
            + get(&c.rolled_back)
            + get(&c.failed)
            + get(&c.walked_away),
        why_not: WhyNot {
            conflicts: get(&c.conflicts),
            locked: get(&c.locked),
            rolled_back: get(&c.rolled_back),
            failed: get(&c.failed),
            walked_away: get(&c.walked_away),
        },
        unknown: get(&c.unknown),
        read_failures: get(&c.read_failures),
        snapshots: get(&c.snapshots),
        snapshot_failures: get(&c.snapshot_failures),
    }
}

/// Parses a stored balance.
fn balance(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}
