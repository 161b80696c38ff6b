//! How a transaction ends badly ([`TxnError`]), how one stands ([`TxnStatus`]), and what a
//! client did to the locks of others ([`TxnStats`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cluster::ClusterError;
use crate::raw::ClientError;

/// Why a transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// Talking to the server failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// No leader of the key's region served the request in time, or a store rejected it.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
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
    /// A lock of a transaction that its primary decided could not be settled that way: one of
    /// its keys went the other way, so the transaction is not atomic. A broken invariant of the
    /// servers, not a condition to retry.
    #[error(
        "the lock on {key:?} of the transaction at {start_ts} cannot be resolved as its primary \
         decided (commit_ts {commit_ts}, 0: rolled back): {reason}"
    )]
    Unresolvable {
        /// The key of the lock met.
        key: String,
        /// The transaction's start timestamp.
        start_ts: u64,
        /// What its primary says: the commit timestamp, or 0 for rolled back.
        commit_ts: u64,
        /// The server's key error.
        reason: String,
    },
    /// The commit of the primary key was sent, and no answer came: the transaction may have
    /// committed or not. Its primary knows ([`TxnClient::check_status`](super::TxnClient::check_status)).
    #[error(
        "transaction {start_ts}: the outcome of its commit at {commit_ts} is unknown: {reason}"
    )]
    Undetermined {
        /// The transaction's start timestamp.
        start_ts: u64,
        /// The commit timestamp it asked for.
        commit_ts: u64,
        /// What went wrong.
        reason: String,
    },
    /// A transaction without writes has nothing to prewrite.
    #[error("the transaction has no writes to prewrite")]
    NoWrites,
}

impl TxnError {
    /// Whether the transaction may have committed although its commit failed with this error.
    pub fn is_undetermined(&self) -> bool {
        matches!(self, TxnError::Undetermined { .. })
    }
}

/// How a transaction stands, as its primary key says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    /// Still locked, and the lock has not expired (its TTL in milliseconds).
    Alive {
        /// The lock's TTL.
        ttl: u64,
    },
    /// Committed at this timestamp.
    Committed(u64),
    /// Rolled back (now, if its lock had expired or was never there).
    RolledBack,
}

/// What a client (and its clones) did to other transactions' locks.
#[derive(Debug, Default)]
pub struct TxnStats {
    pub(super) resolved_commits: AtomicU64,
    pub(super) resolved_rollbacks: AtomicU64,
    pub(super) lock_waits: AtomicU64,
}

impl TxnStats {
    /// Locks of other transactions committed after their primary had committed.
    pub fn resolved_commits(&self) -> u64 {
        self.resolved_commits.load(Ordering::Relaxed)
    }

    /// Locks of other transactions rolled back (their primary rolled back, or expired).
    pub fn resolved_rollbacks(&self) -> u64 {
        self.resolved_rollbacks.load(Ordering::Relaxed)
    }

    /// Times a request met the lock of a live transaction and waited.
    pub fn lock_waits(&self) -> u64 {
        self.lock_waits.load(Ordering::Relaxed)
    }
}
