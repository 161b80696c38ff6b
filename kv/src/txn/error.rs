//! The transaction layer's error type, and how each error reaches a client.
//!
//! Per-key outcomes a client acts on (locked, conflict, retry, abort) become a `KeyError` in the
//! response; a region error becomes the response's `region_error`; anything else (engine
//! failure, corrupt data, an invalid request) fails the RPC with a gRPC status.

use proto::errorpb;
use proto::kvrpcpb::{KeyError, LockInfo, WriteConflict};

/// Errors of transactional commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage underneath failed, or routed the request to the wrong region.
    #[error(transparent)]
    Storage(#[from] crate::Error),
    /// The key is locked by a transaction that may commit before the reader or writer.
    #[error("key {:?} is locked by the transaction at {}", .0.key, .0.lock_version)]
    Locked(LockInfo),
    /// A transaction committed the key at or after this transaction's start.
    #[error("write conflict on {key:?}: started at {start_ts}, committed at {conflict_ts}")]
    WriteConflict {
        /// The key.
        key: Vec<u8>,
        /// The primary key of the transaction being prewritten.
        primary: Vec<u8>,
        /// The start timestamp of the transaction being prewritten.
        start_ts: u64,
        /// The commit timestamp of the newer write.
        conflict_ts: u64,
    },
    /// The transaction's lock on the key is gone (resolved by another client) or was never
    /// there; the client should check the transaction's status and retry.
    #[error("no lock of the transaction at {start_ts} on {key:?}")]
    LockNotFound {
        /// The key.
        key: Vec<u8>,
        /// The transaction's start timestamp.
        start_ts: u64,
    },
    /// The transaction was rolled back on the key; it can no longer commit.
    #[error("the transaction at {start_ts} was rolled back on {key:?}")]
    RolledBack {
        /// The key.
        key: Vec<u8>,
        /// The transaction's start timestamp.
        start_ts: u64,
    },
    /// The transaction has committed the key; it can no longer be rolled back.
    #[error("the transaction at {start_ts} committed {key:?} at {commit_ts}")]
    Committed {
        /// The key.
        key: Vec<u8>,
        /// The transaction's start timestamp.
        start_ts: u64,
        /// Its commit timestamp.
        commit_ts: u64,
    },
    /// The request reads or writes below the GC safe point, where versions may be gone.
    #[error(
        "timestamp {ts} is below the GC safe point {safe_point}: the versions it needs may have \
         been garbage-collected"
    )]
    Compacted {
        /// The request's timestamp.
        ts: u64,
        /// The store's GC safe point.
        safe_point: u64,
    },
    /// The request is malformed.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
}

/// Result of the transaction layer.
pub type Result<T> = std::result::Result<T, Error>;

/// Where an error goes in a response.
pub(crate) enum Outcome {
    /// The response's `region_error`.
    Region(errorpb::Error),
    /// The response's key error.
    Key(KeyError),
    /// The RPC fails.
    Fail(Error),
}

impl From<codec::Error> for Error {
    fn from(e: codec::Error) -> Self {
        Error::Storage(e.into())
    }
}

impl Error {
    /// The key error a client sees for this error, if it is one.
    pub fn key_error(&self) -> Option<KeyError> {
        let mut out = KeyError::default();
        match self {
            Error::Locked(info) => out.locked = Some(info.clone()),
            Error::WriteConflict {
                key,
                primary,
                start_ts,
                conflict_ts,
            } => {
                out.conflict = Some(WriteConflict {
                    start_ts: *start_ts,
                    conflict_ts: *conflict_ts,
                    key: key.clone(),
                    primary: primary.clone(),
                })
            }
            Error::LockNotFound { .. } => out.retryable = self.to_string(),
            Error::RolledBack { .. } | Error::Committed { .. } | Error::Compacted { .. } => {
                out.abort = self.to_string()
            }
            Error::Storage(_) | Error::InvalidArgument(_) => return None,
        }
        Some(out)
    }

    pub(crate) fn outcome(self) -> Outcome {
        if let Some(ke) = self.key_error() {
            return Outcome::Key(ke);
        }
        match self {
            Error::Storage(crate::Error::Region(e)) => Outcome::Region(*e),
            other => Outcome::Fail(other),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        match e {
            Error::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            Error::Storage(crate::Error::InvalidArgument(m)) => tonic::Status::invalid_argument(m),
            Error::Storage(crate::Error::Unavailable(m)) => tonic::Status::unavailable(m),
            other => tonic::Status::internal(other.to_string()),
        }
    }
}
