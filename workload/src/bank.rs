//! The bank workload: accounts moved between by transfer transactions, a snapshot auditor, and
//! an end-of-run audit of what the store holds. It runs over any [`TxnClient`] and reads the
//! store's records through [`Records`], so the same bank runs on store processes (the e2e test
//! under kill -9, `tessera-bench --mode bank`, the chaos harness; over gRPC) and on the
//! in-process raftstore cluster of `test_raftstore`.
//!
//! ```text
//!   open: one transaction writes every account's initial balance
//!   clients (N tasks): read two accounts at start_ts, write both, commit
//!       every k-th transfer walks away after its prewrite, as it sends its primary's commit,
//!       or after committing its primary (the stages `abandon_stages` cycles through), as a
//!       crashed client does: others must roll back or finish it, the audit ask its primary
//!   auditor: reads every account at one fresh timestamp; the total must never change
//!   stop ─► settle ─► audit (see `audit`)
//! ```
//!
//! This file holds the configuration, the opening of the accounts and the running workload;
//! `workload` the tasks, `report` the history and the report, `records` the raw reads of the
//! audit. Nothing here panics on a broken invariant: each one found is a violation in the
//! [`Report`], and a cluster that cannot be read to the end is a [`BankError`].

mod audit;
mod records;
mod report;
mod workload;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The clients' seeded choices.
use raft::SplitMix64 as Rng;
use tokio::task::JoinHandle;

use tessera_client::txn::{TxnClient, TxnError};

pub use records::{Records, RecordsFuture};
pub use report::{Abandon, Abandoned, Outcome, Progress, Report, Snapshot, Transfer, WhyNot};

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
    /// A client walks away half-way from one transfer in every `abandon_every`, at the stages
    /// of `abandon_stages` in turn: the first transfer from the `abandon_every`-th on that
    /// gets that far (0: never).
    pub abandon_every: u64,
    /// Where clients walk away, in turn (after the prewrite, then after the primary's commit,
    /// unless set).
    pub abandon_stages: Vec<Abandon>,
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
            abandon_stages: vec![Abandon::AfterPrewrite, Abandon::AfterPrimary],
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
    /// Something did not happen within its deadline.
    #[error("{0}")]
    Timeout(String),
    /// A workload task failed.
    #[error("a bank task failed: {0}")]
    Task(String),
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

/// What the workload tasks share.
struct Shared {
    client: TxnClient,
    config: BankConfig,
    /// The prefix of every account key: the bank's key range.
    prefix: Vec<u8>,
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

    /// Reports `e` as a violation if it is one: a lock that cannot be resolved as its
    /// primary says shows a transaction that is not atomic.
    fn check_error(&self, e: &TxnError) {
        if let TxnError::Unresolvable { .. } = e {
            self.violation(e.to_string());
        }
    }

    /// Counts a transfer that did not commit, by why.
    fn not_committed(&self, e: &TxnError) {
        self.check_error(e);
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
    records: Box<dyn Records>,
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

impl Bank {
    /// Opens `config.accounts` accounts at `config.initial` each, in one transaction of
    /// `client`; `records` serves the raw reads of the audit (a
    /// [`ClusterClient`](tessera_client::ClusterClient) of the same cluster, say).
    ///
    /// # Errors
    /// A bad configuration, an account that already exists, or a failed transaction.
    pub async fn open(
        client: TxnClient,
        records: impl Records + 'static,
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
        if config.abandon_every > 0 && config.abandon_stages.is_empty() {
            return Err(BankError::Config(
                "clients walk away every so often, at no stage".to_string(),
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
                prefix: prefix.into_bytes(),
                keys,
                stop: AtomicBool::new(false),
                counters: Counters::default(),
                violations: Mutex::new(Vec::new()),
            }),
            records: Box::new(records),
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
