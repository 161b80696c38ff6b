//! A Percolator transaction client over one server's `TinyKv` service, with timestamps from the
//! scheduler's TSO and client-side lock resolution.
//!
//! A transaction buffers its writes; `commit` prewrites them all (the first key is the primary),
//! takes a commit timestamp and commits the primary, then the secondaries. A read that meets
//! another transaction's lock asks the primary for that transaction's status and, once it is
//! decided (committed, rolled back, or expired and so rolled back now), resolves the lock and
//! retries; a live lock is waited out until the deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::kvrpcpb::*;
use proto::tinykvpb::tiny_kv_client::TinyKvClient;
use scheduler_client::SchedulerClient;
use tonic::transport::Channel;

use crate::client::ClientError;

/// Lock TTL of the transactions this client writes, in milliseconds.
const LOCK_TTL_MS: u64 = 3_000;
/// How long a read or a prewrite keeps retrying around other transactions' locks.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Why a transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// Talking to the server failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The scheduler (timestamps) failed.
    #[error("timestamp: {0}")]
    Tso(String),
    /// Another transaction committed one of our keys after we started: retry from the start.
    #[error("write conflict on key {key:?} (committed at {conflict_ts})")]
    Conflict {
        /// The key.
        key: String,
        /// When the other transaction committed.
        conflict_ts: u64,
    },
    /// A lock of another live transaction was still held at the deadline.
    #[error("key {key:?} is locked by transaction {lock_ts}")]
    Locked {
        /// The key.
        key: String,
        /// The start timestamp of the lock's transaction.
        lock_ts: u64,
    },
    /// The server refused the transaction (e.g. it was rolled back by another client).
    #[error("transaction aborted: {0}")]
    Aborted(String),
}

/// A connection that runs transactions.
#[derive(Clone)]
pub struct TxnClient {
    kv: TinyKvClient<Channel>,
    tso: Arc<dyn SchedulerClient>,
}

/// One transaction: reads at `start_ts`, buffered writes.
pub struct Txn {
    client: TxnClient,
    start_ts: u64,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn region_error(e: Option<proto::errorpb::Error>) -> Result<(), TxnError> {
    match e {
        Some(re) => Err(ClientError::Region(format!("{re:?}")).into()),
        None => Ok(()),
    }
}

impl TxnClient {
    /// A client of the server at `addr`, with timestamps from `tso`.
    pub async fn connect(addr: &str, tso: Arc<dyn SchedulerClient>) -> Result<TxnClient, TxnError> {
        let raw = crate::client::RawClient::connect(addr).await?;
        Ok(TxnClient {
            kv: raw.into_inner(),
            tso,
        })
    }

    async fn timestamp(&self) -> Result<u64, TxnError> {
        let tso = self.tso.clone();
        tokio::task::spawn_blocking(move || tso.tso())
            .await
            .map_err(|e| TxnError::Tso(e.to_string()))?
            .map_err(|e| TxnError::Tso(e.to_string()))
    }

    /// Starts a transaction at a fresh timestamp.
    pub async fn begin(&self) -> Result<Txn, TxnError> {
        Ok(Txn {
            client: self.clone(),
            start_ts: self.timestamp().await?,
            writes: BTreeMap::new(),
        })
    }

    /// Decides the fate of `lock` (committing or rolling back its transaction where the primary
    /// says so). Returns false while its transaction is still alive.
    async fn resolve(&mut self, lock: &LockInfo) -> Result<bool, TxnError> {
        let current_ts = self.timestamp().await?;
        let status = self
            .kv
            .kv_check_txn_status(CheckTxnStatusRequest {
                primary_key: lock.primary_lock.clone(),
                lock_ts: lock.lock_version,
                current_ts,
                ..Default::default()
            })
            .await
            .map_err(ClientError::from)?
            .into_inner();
        if let Some(re) = status.region_error {
            return Err(ClientError::Region(format!("{re:?}")).into());
        }
        if status.lock_ttl > 0 {
            return Ok(false);
        }
        let resp = self
            .kv
            .kv_resolve_lock(ResolveLockRequest {
                start_version: lock.lock_version,
                commit_version: status.commit_version,
                ..Default::default()
            })
            .await
            .map_err(ClientError::from)?
            .into_inner();
        region_error(resp.region_error)?;
        if let Some(e) = resp.error {
            return Err(TxnError::Aborted(format!("resolving a lock: {e:?}")));
        }
        Ok(true)
    }
}

impl TxnClient {
    /// Gets `lock` out of the way: resolves it once its transaction is decided, else waits a
    /// little; past `deadline` a still-live lock is an error.
    async fn wait_out(&mut self, lock: &LockInfo, deadline: Instant) -> Result<(), TxnError> {
        if self.resolve(lock).await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TxnError::Locked {
                key: key_text(&lock.key),
                lock_ts: lock.lock_version,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(())
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
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            let resp = self
                .client
                .kv
                .kv_get(GetRequest {
                    key: key.to_vec(),
                    version: self.start_ts,
                    ..Default::default()
                })
                .await
                .map_err(ClientError::from)?
                .into_inner();
            region_error(resp.region_error)?;
            match resp.error {
                None => return Ok((!resp.not_found).then_some(resp.value)),
                Some(KeyError {
                    locked: Some(lock), ..
                }) => self.client.wait_out(&lock, deadline).await?,
                Some(other) => return Err(TxnError::Aborted(format!("{other:?}"))),
            }
        }
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
    /// timestamp for a read-only transaction).
    pub async fn commit(mut self) -> Result<u64, TxnError> {
        // `writes` is ordered: its first key is the primary, the rest are the secondaries.
        let mut keys = self.writes.keys().cloned();
        let Some(primary) = keys.next() else {
            return Ok(self.start_ts);
        };
        let secondaries: Vec<Vec<u8>> = keys.collect();
        let mutations: Vec<Mutation> = self
            .writes
            .iter()
            .map(|(k, v)| Mutation {
                op: if v.is_some() { Op::Put } else { Op::Del } as i32,
                key: k.clone(),
                value: v.clone().unwrap_or_default(),
            })
            .collect();
        self.prewrite(mutations, &primary).await?;
        let commit_ts = self.client.timestamp().await?;
        // The primary's commit is the transaction's commit point; the secondaries follow.
        self.commit_keys(vec![primary], commit_ts).await?;
        if !secondaries.is_empty() {
            self.commit_keys(secondaries, commit_ts).await?;
        }
        Ok(commit_ts)
    }

    async fn prewrite(&mut self, mutations: Vec<Mutation>, primary: &[u8]) -> Result<(), TxnError> {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            let resp = self
                .client
                .kv
                .kv_prewrite(PrewriteRequest {
                    mutations: mutations.clone(),
                    primary_lock: primary.to_vec(),
                    start_version: self.start_ts,
                    lock_ttl: LOCK_TTL_MS,
                    ..Default::default()
                })
                .await
                .map_err(ClientError::from)?
                .into_inner();
            region_error(resp.region_error)?;
            let Some(err) = resp.errors.into_iter().next() else {
                return Ok(());
            };
            if let Some(c) = err.conflict {
                return Err(TxnError::Conflict {
                    key: key_text(&c.key),
                    conflict_ts: c.conflict_ts,
                });
            }
            let Some(lock) = err.locked else {
                return Err(TxnError::Aborted(format!("{err:?}")));
            };
            self.client.wait_out(&lock, deadline).await?;
        }
    }

    async fn commit_keys(&mut self, keys: Vec<Vec<u8>>, commit_ts: u64) -> Result<(), TxnError> {
        let resp = self
            .client
            .kv
            .kv_commit(CommitRequest {
                start_version: self.start_ts,
                keys,
                commit_version: commit_ts,
                ..Default::default()
            })
            .await
            .map_err(ClientError::from)?
            .into_inner();
        region_error(resp.region_error)?;
        match resp.error {
            None => Ok(()),
            Some(e) => Err(TxnError::Aborted(format!("commit: {e:?}"))),
        }
    }
}
