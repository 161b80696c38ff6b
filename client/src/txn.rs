//! A Percolator transaction client, with timestamps from the scheduler's TSO and client-side
//! lock resolution, over one server ([`TxnClient::connect`]) or a whole cluster
//! ([`TxnClient::routed`]: each request goes to the leader of its key's region), or over any
//! [`TxnTransport`] and [`TimestampOracle`] ([`TxnClient::new`]; see `transport`).
//!
//! A transaction reads at its start timestamp and buffers its writes. Committing it takes two
//! phases, each a request per region (the transport splits the keys by region, attempt by
//! attempt, so that no request spans two regions however they split):
//!
//! ```text
//!   prewrite primary ─► prewrite the secondaries, region by region ─► commit_ts from the TSO
//!     ─► commit primary (the commit point) ─► commit the secondaries, region by region
//!        (others finish them if we die)
//! ```
//!
//! The primary is the smallest key, and keys are prewritten in key order, a region's share at a
//! time, stopping at the first share that meets a lock until it is gone: so two transactions
//! wait for each other's locks in one direction only. A request whose answer is lost is sent
//! again: prewrite and commit of a key are idempotent for one transaction.
//!
//! A read or a prewrite that meets another transaction's lock asks that transaction's primary
//! (`KvCheckTxnStatus`, sent to the primary's region) how it ended: committed, rolled back, or
//! expired and so rolled back now. Once it is decided, `KvResolveLock` settles the transaction's
//! locks in the region of the lock met, and the request is retried; a live lock is waited out
//! until a deadline.
//!
//! What a failed commit means: [`TxnError::Undetermined`] says the primary's commit was sent and
//! no answer came, so the transaction may have committed (ask [`TxnClient::check_status`]);
//! every other error of [`Txn::commit`] means it did not and never will.

mod error;
mod gc;
mod rpc;
mod scan;
mod transport;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::kvrpcpb::*;
use scheduler_client::SchedulerClient;

use crate::cluster::ClusterClient;
pub use error::{TxnError, TxnStats, TxnStatus};
pub use gc::GcStats;
use rpc::Route;
pub use scan::{ScanPage, TxnScan, SCAN_PAGE};
use transport::SchedulerTso;
pub use transport::{TimestampOracle, TransportFuture, TxnTransport};

/// Default lock TTL of the transactions a client writes, in milliseconds.
const LOCK_TTL_MS: u64 = 3_000;
/// How long a read or a prewrite keeps retrying around other transactions' locks.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// First pause before asking again about a lock whose transaction is alive; it doubles while
/// the lock stays, up to `MAX_LOCK_BACKOFF`. Most locks go within a few milliseconds (their
/// transaction commits), so the first pauses are short.
const LOCK_BACKOFF: Duration = Duration::from_millis(5);
/// Longest pause between two looks at a live lock.
const MAX_LOCK_BACKOFF: Duration = Duration::from_millis(100);

/// A client that runs transactions. Cheap to clone; clones share connections and stats.
#[derive(Clone)]
pub struct TxnClient {
    transport: Arc<dyn TxnTransport>,
    tso: Arc<dyn TimestampOracle>,
    lock_ttl_ms: u64,
    stats: Arc<TxnStats>,
}

/// One request's wait for other transactions' locks: a deadline and a growing pause.
struct LockWait {
    deadline: Instant,
    pause: Duration,
}

impl LockWait {
    fn new() -> LockWait {
        LockWait {
            deadline: Instant::now() + LOCK_WAIT,
            pause: LOCK_BACKOFF,
        }
    }
}

/// One transaction: reads at `start_ts`, buffered writes.
pub struct Txn {
    client: TxnClient,
    start_ts: u64,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// A transaction whose keys are all locked: nothing is committed yet. Dropping it leaves the
/// locks to expire and be rolled back by whoever meets them, as a crashed client would.
pub struct Prewritten {
    client: TxnClient,
    start_ts: u64,
    primary: Vec<u8>,
    secondaries: Vec<Vec<u8>>,
}

/// A transaction whose primary is committed: it is committed. Dropping it leaves the locks of
/// the secondaries to be committed by whoever meets them, as a crashed client would.
pub struct Committed {
    client: TxnClient,
    start_ts: u64,
    commit_ts: u64,
    secondaries: Vec<Vec<u8>>,
}

fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

impl TxnClient {
    /// A client of the one server at `addr`, with timestamps from `tso`.
    pub async fn connect(addr: &str, tso: Arc<dyn SchedulerClient>) -> Result<TxnClient, TxnError> {
        TxnClient::connect_with(addr, tso, None).await
    }

    /// [`TxnClient::connect`], over TLS when `tls` is given.
    pub async fn connect_with(
        addr: &str,
        tso: Arc<dyn SchedulerClient>,
        tls: Option<&security::Tls>,
    ) -> Result<TxnClient, TxnError> {
        let raw = crate::raw::RawClient::connect_with(addr, tls).await?;
        let route = Route::One(raw.into_inner());
        Ok(TxnClient::new(Arc::new(route), Arc::new(SchedulerTso(tso))))
    }

    /// A client of the cluster `cluster` reaches: every request goes to the leader of the
    /// region of the key it concerns. Timestamps come from `tso`.
    pub fn routed(cluster: ClusterClient, tso: Arc<dyn SchedulerClient>) -> TxnClient {
        let route = Route::Cluster(cluster);
        TxnClient::new(Arc::new(route), Arc::new(SchedulerTso(tso)))
    }

    /// A client whose requests go through `transport`, with timestamps from `tso`.
    pub fn new(transport: Arc<dyn TxnTransport>, tso: Arc<dyn TimestampOracle>) -> TxnClient {
        TxnClient {
            transport,
            tso,
            lock_ttl_ms: LOCK_TTL_MS,
            stats: Arc::default(),
        }
    }

    /// Sets the TTL of the locks this client's transactions take (3 s unless set), counted
    /// from the start timestamp: past it, whoever meets a lock rolls its transaction back.
    pub fn with_lock_ttl(mut self, ttl: Duration) -> TxnClient {
        self.lock_ttl_ms = ttl.as_millis().max(1) as u64;
        self
    }

    /// What this client and its clones did to other transactions' locks.
    pub fn stats(&self) -> &TxnStats {
        &self.stats
    }

    /// A fresh timestamp from the TSO.
    pub async fn timestamp(&self) -> Result<u64, TxnError> {
        let tso = self.tso.clone();
        tokio::task::spawn_blocking(move || tso.timestamp())
            .await
            .map_err(|e| TxnError::Tso(e.to_string()))?
            .map_err(TxnError::Tso)
    }

    /// Starts a transaction at a fresh timestamp.
    pub async fn begin(&self) -> Result<Txn, TxnError> {
        Ok(Txn {
            client: self.clone(),
            start_ts: self.timestamp().await?,
            writes: BTreeMap::new(),
        })
    }

    /// How the transaction at `start_ts` whose primary key is `primary` stands, judged now: a
    /// lock past its TTL is rolled back, and a primary with neither lock nor commit gets a
    /// rollback record (so the transaction can no longer commit).
    pub async fn check_status(&self, primary: &[u8], start_ts: u64) -> Result<TxnStatus, TxnError> {
        let current_ts = self.timestamp().await?;
        let req = CheckTxnStatusRequest {
            primary_key: primary.to_vec(),
            lock_ts: start_ts,
            current_ts,
            ..Default::default()
        };
        let resp = self.transport.check_txn_status(primary, req).await?;
        Ok(if resp.lock_ttl > 0 {
            TxnStatus::Alive { ttl: resp.lock_ttl }
        } else if resp.commit_version > 0 {
            TxnStatus::Committed(resp.commit_version)
        } else {
            TxnStatus::RolledBack
        })
    }

    /// Rolls the transaction at `start_ts` back on each of `keys` (a key never prewritten gets
    /// a rollback record, so a prewrite arriving late fails). Returns false, at the first such
    /// key, if one is committed: the transaction committed and cannot be rolled back.
    pub async fn rollback(&self, start_ts: u64, keys: &[Vec<u8>]) -> Result<bool, TxnError> {
        for key in keys {
            let req = BatchRollbackRequest {
                start_version: start_ts,
                keys: vec![key.clone()],
                ..Default::default()
            };
            let resp = self.transport.batch_rollback(key, req).await?;
            match resp.error {
                None => {}
                Some(e) if !e.abort.is_empty() => return Ok(false),
                Some(e) => {
                    return Err(TxnError::Aborted(format!(
                        "rolling back {:?} of the transaction at {start_ts}: {e:?}",
                        key_text(key)
                    )))
                }
            }
        }
        Ok(true)
    }

    /// Decides the fate of `lock`'s transaction on its primary and settles the transaction's
    /// locks in the region of `lock.key` accordingly. Returns false while it is still alive.
    async fn resolve(&self, lock: &LockInfo) -> Result<bool, TxnError> {
        let start_ts = lock.lock_version;
        let commit_ts = match self.check_status(&lock.primary_lock, start_ts).await? {
            TxnStatus::Alive { .. } => return Ok(false),
            TxnStatus::Committed(ts) => ts,
            TxnStatus::RolledBack => 0,
        };
        let req = ResolveLockRequest {
            start_version: start_ts,
            commit_version: commit_ts,
            ..Default::default()
        };
        let resp = self.transport.resolve_lock(&lock.key, req).await?;
        if let Some(e) = resp.error {
            return Err(TxnError::Unresolvable {
                key: key_text(&lock.key),
                start_ts,
                commit_ts,
                reason: format!("{e:?}"),
            });
        }
        let counter = if commit_ts == 0 {
            &self.stats.resolved_rollbacks
        } else {
            &self.stats.resolved_commits
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Gets `lock` out of the way: resolves it once its transaction is decided, else waits a
    /// little; past the wait's deadline a still-live lock is an error.
    async fn wait_out(&self, lock: &LockInfo, wait: &mut LockWait) -> Result<(), TxnError> {
        if self.resolve(lock).await? {
            wait.pause = LOCK_BACKOFF;
            return Ok(());
        }
        if Instant::now() >= wait.deadline {
            return Err(TxnError::Locked {
                key: key_text(&lock.key),
                lock_ts: lock.lock_version,
            });
        }
        self.stats.lock_waits.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(wait.pause).await;
        wait.pause = (wait.pause * 2).min(MAX_LOCK_BACKOFF);
        Ok(())
    }

    /// The value of `key` as of `ts`, as a transaction started at `ts` reads it (locks of
    /// transactions that may have committed at or below `ts` are resolved or waited out).
    pub async fn get_at(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>, TxnError> {
        let mut wait = LockWait::new();
        let req = GetRequest {
            key: key.to_vec(),
            version: ts,
            ..Default::default()
        };
        loop {
            let resp = self.transport.get(key, req.clone()).await?;
            match resp.error {
                None => return Ok((!resp.not_found).then_some(resp.value)),
                Some(KeyError {
                    locked: Some(lock), ..
                }) => self.wait_out(&lock, &mut wait).await?,
                Some(other) => return Err(TxnError::Aborted(format!("{other:?}"))),
            }
        }
    }

    /// Commits `key` of the transaction at `start_ts`; `Some` is the key error that refused it
    /// (nothing was written).
    async fn commit_key(
        &self,
        start_ts: u64,
        commit_ts: u64,
        key: &[u8],
    ) -> Result<Option<KeyError>, TxnError> {
        let req = CommitRequest {
            start_version: start_ts,
            keys: vec![key.to_vec()],
            commit_version: commit_ts,
            ..Default::default()
        };
        Ok(self.transport.commit(key, req).await?.error)
    }
}

impl Txn {
    /// This transaction's start timestamp.
    pub fn start_ts(&self) -> u64 {
        self.start_ts
    }

    /// The value of `key` as of the start timestamp (own buffered writes first).
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, TxnError> {
        if let Some(w) = self.writes.get(key) {
            return Ok(w.clone());
        }
        self.client.get_at(key, self.start_ts).await
    }

    /// Buffers a put.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
    }

    /// Buffers a delete.
    pub fn delete(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }

    /// Prewrites and commits the buffered writes; returns the commit timestamp (or the start
    /// timestamp for a read-only transaction). Once the primary is committed the transaction
    /// is, and this succeeds even if a secondary's commit fails (whoever meets its lock
    /// finishes it).
    pub async fn commit(self) -> Result<u64, TxnError> {
        if self.writes.is_empty() {
            return Ok(self.start_ts);
        }
        self.prewrite().await?.commit().await
    }

    /// Locks every buffered write: the primary first, then the secondaries in key order, a
    /// request per region (see [`TxnTransport::prewrite_shares`]). On an error, what it may
    /// have locked is rolled back (best effort) and the transaction will never commit.
    pub async fn prewrite(self) -> Result<Prewritten, TxnError> {
        let Some(primary) = self.writes.keys().next().cloned() else {
            return Err(TxnError::NoWrites);
        };
        let mut wait = LockWait::new();
        let mut mutations: Vec<Mutation> = self
            .writes
            .iter()
            .map(|(key, value)| Mutation {
                op: if value.is_some() { Op::Put } else { Op::Del } as i32,
                key: key.clone(),
                value: value.clone().unwrap_or_default(),
            })
            .collect();
        let secondaries = mutations.split_off(1);
        // How many keys, in key order, were sent: only they may be locked.
        let mut reached = 0;
        let mut outcome = self
            .prewrite_in_order(&primary, mutations, &mut reached, &mut wait)
            .await;
        if outcome.is_ok() {
            outcome = self
                .prewrite_in_order(&primary, secondaries, &mut reached, &mut wait)
                .await;
        }
        let keys: Vec<Vec<u8>> = self.writes.into_keys().collect();
        if let Err(e) = outcome {
            // Nothing is committed and nothing will be: take back what may be locked so that
            // others need not wait for the TTL. What stays is rolled back by whoever meets it
            // once it expires.
            if let Err(re) = self.client.rollback(self.start_ts, &keys[..reached]).await {
                tracing::debug!(
                    start_ts = self.start_ts,
                    "rollback after a failed prewrite: {re}"
                );
            }
            return Err(e);
        }
        Ok(Prewritten {
            client: self.client,
            start_ts: self.start_ts,
            primary,
            secondaries: keys[1..].to_vec(),
        })
    }

    /// Prewrites `pending` (in key order, after the `reached` keys already sent), waiting out
    /// the locks of other transactions it meets; counts the keys sent in `reached`.
    async fn prewrite_in_order(
        &self,
        primary: &[u8],
        mut pending: Vec<Mutation>,
        reached: &mut usize,
        wait: &mut LockWait,
    ) -> Result<(), TxnError> {
        let base = *reached;
        let total = pending.len();
        while !pending.is_empty() {
            let req = PrewriteRequest {
                mutations: pending.clone(),
                primary_lock: primary.to_vec(),
                start_version: self.start_ts,
                lock_ttl: self.client.lock_ttl_ms,
                ..Default::default()
            };
            let shares = self.client.transport.prewrite_shares(req).await?;
            let (mut done, mut lock) = (0, None);
            for (sent, resp) in shares {
                let done_before = total - pending.len() + done;
                *reached = (*reached).max(base + done_before + sent.len());
                if resp.errors.is_empty() {
                    done += sent.len();
                    continue;
                }
                for err in resp.errors {
                    if let Some(c) = err.conflict {
                        return Err(TxnError::Conflict {
                            key: key_text(&c.key),
                            conflict_ts: c.conflict_ts,
                        });
                    }
                    match err.locked {
                        Some(l) => _ = lock.get_or_insert(l),
                        None => return Err(TxnError::Aborted(format!("prewrite: {err:?}"))),
                    }
                }
                break;
            }
            pending.drain(..done);
            match lock {
                Some(l) => self.client.wait_out(&l, wait).await?,
                None if !pending.is_empty() => {
                    return Err(TxnError::Aborted(format!(
                        "prewrite: the transport sent none of {} keys",
                        pending.len()
                    )))
                }
                None => {}
            }
        }
        Ok(())
    }
}

impl Prewritten {
    /// The transaction's start timestamp.
    pub fn start_ts(&self) -> u64 {
        self.start_ts
    }

    /// The primary key.
    pub fn primary(&self) -> &[u8] {
        &self.primary
    }

    /// Takes a commit timestamp and commits the primary: the commit point.
    ///
    /// # Errors
    /// [`TxnError::Undetermined`] when the commit was sent and no answer came; any other error
    /// means the transaction did not commit and never will.
    pub async fn commit_primary(self) -> Result<Committed, TxnError> {
        let commit_ts = match self.client.timestamp().await {
            Ok(ts) => ts,
            Err(e) => {
                self.rollback_quietly().await;
                return Err(e);
            }
        };
        let undetermined = |reason: String| TxnError::Undetermined {
            start_ts: self.start_ts,
            commit_ts,
            reason,
        };
        match self
            .client
            .commit_key(self.start_ts, commit_ts, &self.primary)
            .await
        {
            Ok(None) => Ok(Committed {
                client: self.client,
                start_ts: self.start_ts,
                commit_ts,
                secondaries: self.secondaries,
            }),
            // The primary was rolled back by someone who found its lock expired (abort), or
            // has neither our lock nor our write (retryable): either way it has no commit, and
            // cannot get one (only we commit a primary).
            Ok(Some(e)) => Err(TxnError::Aborted(format!(
                "commit of the primary {:?}: {e:?}",
                key_text(&self.primary)
            ))),
            Err(e) => Err(undetermined(e.to_string())),
        }
    }

    /// Commits the primary, then the secondaries; returns the commit timestamp. A secondary
    /// that fails is left to whoever meets its lock.
    pub async fn commit(self) -> Result<u64, TxnError> {
        let committed = self.commit_primary().await?;
        let (start_ts, commit_ts) = (committed.start_ts, committed.commit_ts);
        if let Err(e) = committed.commit_secondaries().await {
            tracing::warn!(
                start_ts,
                commit_ts,
                "committed, but not every secondary: {e}"
            );
        }
        Ok(commit_ts)
    }

    /// Rolls the transaction back on every key.
    pub async fn rollback(self) -> Result<(), TxnError> {
        let keys: Vec<Vec<u8>> = std::iter::once(self.primary.clone())
            .chain(self.secondaries.iter().cloned())
            .collect();
        if self.client.rollback(self.start_ts, &keys).await? {
            Ok(())
        } else {
            // Only a commit of the primary commits keys, and we never sent one.
            Err(TxnError::Aborted(format!(
                "the transaction at {} has a committed key although its primary was never \
                 committed",
                self.start_ts
            )))
        }
    }

    async fn rollback_quietly(self) {
        let start_ts = self.start_ts;
        if let Err(e) = self.rollback().await {
            tracing::debug!(start_ts, "rollback of an uncommitted transaction: {e}");
        }
    }
}

impl Committed {
    /// The transaction's start timestamp.
    pub fn start_ts(&self) -> u64 {
        self.start_ts
    }

    /// The commit timestamp.
    pub fn commit_ts(&self) -> u64 {
        self.commit_ts
    }

    /// Commits the secondaries, a request per region; returns the commit timestamp.
    ///
    /// # Errors
    /// The first request (a region's share of the secondaries) that could not be committed (the
    /// transaction stays committed; the locks left are resolved by whoever meets them). A
    /// refusal ([`TxnError::Aborted`]) means a secondary was rolled back under a committed
    /// primary: the transaction is no longer atomic.
    pub async fn commit_secondaries(self) -> Result<u64, TxnError> {
        if self.secondaries.is_empty() {
            return Ok(self.commit_ts);
        }
        let req = CommitRequest {
            start_version: self.start_ts,
            keys: self.secondaries.clone(),
            commit_version: self.commit_ts,
            ..Default::default()
        };
        for (keys, resp) in self.client.transport.commit_shares(req).await? {
            if let Some(e) = resp.error {
                return Err(TxnError::Aborted(format!(
                    "commit of the secondaries {:?}..{:?} at {}: {e:?}",
                    keys.first().map(|k| key_text(k)),
                    keys.last().map(|k| key_text(k)),
                    self.commit_ts
                )));
            }
        }
        Ok(self.commit_ts)
    }
}
