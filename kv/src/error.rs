//! The `kv` crate's error type.

use proto::errorpb;

/// Errors of the storage layer and the services over it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB failed (I/O error, corruption, a full disk).
    #[error("engine: {0}")]
    Engine(#[from] rocksdb::Error),
    /// The disk failed under the engine (see [`crate::fault`]).
    #[error("disk: {0}")]
    Io(String),
    /// A column family name that is not `default`, `lock` or `write`.
    #[error("unknown column family {0:?}")]
    UnknownCf(String),
    /// A stored value could not be decoded.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The request itself is invalid (empty key, value over the limit, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A region error: the client should refresh its routing and retry.
    #[error("region error: {}", .0.message)]
    Region(Box<errorpb::Error>),
    /// The store is stopping or a background task went away.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl From<codec::Error> for Error {
    fn from(e: codec::Error) -> Self {
        match e {
            codec::Error::Corrupt { what, reason } => Error::Corrupt { what, reason },
        }
    }
}

impl From<errorpb::Error> for Error {
    fn from(e: errorpb::Error) -> Self {
        Error::Region(Box::new(e))
    }
}

/// Result of the `kv` crate.
pub type Result<T> = std::result::Result<T, Error>;
