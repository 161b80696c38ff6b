//! The `snap` crate's error type: one enum whose variants carry what a caller needs to decide
//! between retrying (a corrupt transfer, a busy manager) and giving up (a broken disk).

use std::path::PathBuf;

use crate::key::{SnapKey, SnapKind, SnapState};

/// Errors of snapshot building, verification, transfer, application and management.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done (`"create"`, `"rename"`, `"read"`, ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// RocksDB failed while writing an SST, deleting a range or ingesting.
    #[error("engine: {op}: {source}")]
    Engine {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: rocksdb::Error,
    },
    /// The kv engine layer failed (reading the engine snapshot).
    #[error("kv: {0}")]
    Kv(#[from] kv::Error),
    /// A CF file's md5 differs from the meta: the file is corrupt; fetch the snapshot again.
    #[error("snapshot {key} cf {cf}: checksum mismatch, expected {expected}, got {actual}")]
    Checksum {
        /// The snapshot.
        key: SnapKey,
        /// The column family whose file is corrupt.
        cf: String,
        /// The md5 recorded in the meta, hex.
        expected: String,
        /// The md5 of the bytes on disk or on the wire, hex.
        actual: String,
    },
    /// A CF file's size differs from the meta (truncated or extended): fetch the snapshot again.
    #[error("snapshot {key} cf {cf}: size mismatch, expected {expected} bytes, got {actual}")]
    Size {
        /// The snapshot.
        key: SnapKey,
        /// The column family whose file has the wrong size.
        cf: String,
        /// The size recorded in the meta.
        expected: u64,
        /// The size found.
        actual: u64,
    },
    /// A file the meta lists is not on disk.
    #[error("snapshot {key} cf {cf}: file {} is missing", .path.display())]
    Missing {
        /// The snapshot.
        key: SnapKey,
        /// The column family whose file is missing.
        cf: String,
        /// Where the file should be.
        path: PathBuf,
    },
    /// No complete snapshot (no meta file) with this key and kind.
    #[error("snapshot {kind:?} {key} not found")]
    NotFound {
        /// The snapshot.
        key: SnapKey,
        /// Generated or received.
        kind: SnapKind,
    },
    /// A meta is malformed (unknown or duplicate CF, checksum not 16 bytes, undecodable file).
    #[error("snapshot {key}: invalid meta: {reason}")]
    InvalidMeta {
        /// The snapshot.
        key: SnapKey,
        /// What is wrong.
        reason: String,
    },
    /// A transfer stream carried more bytes than the meta announces.
    #[error("snapshot {key}: stream carries more than the {expected} bytes the meta announces")]
    Overflow {
        /// The snapshot.
        key: SnapKey,
        /// Total size announced by the meta.
        expected: u64,
    },
    /// An incoming snapshot announces more bytes than this store accepts, or than its disk can
    /// take while keeping its reserve free. Refused before any byte is written.
    #[error("snapshot {key}: {size} bytes refused: {reason}")]
    TooLarge {
        /// The snapshot.
        key: SnapKey,
        /// Total size announced by the meta.
        size: u64,
        /// Which limit it passes.
        reason: String,
    },
    /// A receiver is used again after it reported an error; drop it and start over.
    #[error("snapshot {key}: receive already failed")]
    Aborted {
        /// The snapshot.
        key: SnapKey,
    },
    /// The registry refused a state change (e.g. sending a snapshot still being generated).
    #[error("snapshot {kind:?} {key}: cannot go from {from:?} to {to:?}")]
    InvalidTransition {
        /// The snapshot.
        key: SnapKey,
        /// Generated or received.
        kind: SnapKind,
        /// The current state, `None` when idle.
        from: Option<SnapState>,
        /// The requested state, `None` for "done".
        to: Option<SnapState>,
    },
    /// The snapshot is in use (being sent, received, applied) and cannot be deleted now.
    #[error("snapshot {kind:?} {key} is in use ({state:?})")]
    InUse {
        /// The snapshot.
        key: SnapKey,
        /// Generated or received.
        kind: SnapKind,
        /// What it is being used for.
        state: SnapState,
    },
    /// Too many concurrent sends or receives: retry later.
    #[error("too many concurrent snapshot {what}s (limit {limit})")]
    Busy {
        /// `"send"` or `"receive"`.
        what: &'static str,
        /// The configured limit.
        limit: usize,
    },
    /// A raft message that should carry a snapshot does not, or not decodably.
    #[error("region {region_id}: bad snapshot message: {reason}")]
    BadMessage {
        /// The region the message is for.
        region_id: u64,
        /// What is wrong.
        reason: String,
    },
    /// A string is not a snapshot file name or key.
    #[error("cannot parse snapshot name {0:?}")]
    BadName(String),
}

/// Result of the `snap` crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether the error means the snapshot's data is bad (corrupt, truncated, missing), so the
    /// sender should be told the transfer failed and raft should retry with a fresh snapshot.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Checksum { .. }
                | Error::Size { .. }
                | Error::Missing { .. }
                | Error::InvalidMeta { .. }
                | Error::Overflow { .. }
        )
    }
}

/// Wraps an I/O error with the operation and path, for `map_err`.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}

/// Wraps a RocksDB error with the operation, for `map_err`.
pub(crate) fn engine_err(op: &'static str) -> impl FnOnce(rocksdb::Error) -> Error {
    move |source| Error::Engine { op, source }
}
