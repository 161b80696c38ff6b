//! The crate's error types: [`Error`] for everything a caller of the raft core can
//! act on, and [`StorageError`] for the conditions a [`crate::Storage`] reports.
//!
//! Expected conditions (a proposal without a leader, a compacted log) are errors;
//! a broken invariant (a commit index beyond the log) panics instead.

use raft_proto::eraftpb::MessageType;
use thiserror::Error;

/// Conditions a [`crate::Storage`] implementation reports to the raft core.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum StorageError {
    /// The requested index is older than the first index still kept; the entries
    /// were compacted into a snapshot.
    #[error("log compacted: requested index is unavailable due to compaction")]
    Compacted,
    /// The requested index is beyond the last index of the log.
    #[error("log unavailable: requested index is beyond the last index")]
    Unavailable,
    /// The snapshot is being generated and is not ready yet; the leader retries
    /// later (on the next heartbeat response).
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// The snapshot offered is older than the one already held.
    #[error("snapshot out of date")]
    SnapshotOutOfDate,
}

/// Errors returned by [`crate::RawNode`] and the raft core.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The proposal was dropped: there is no known leader, a leadership transfer
    /// is in progress, this node was removed, or the uncommitted log is full.
    /// The caller may retry later.
    #[error("raft: proposal dropped")]
    ProposalDropped,
    /// A message type that only the node itself may generate (`MsgHup`,
    /// `MsgBeat`, ...) was passed to [`crate::RawNode::step`].
    #[error("raft: cannot step raft local message")]
    StepLocalMsg,
    /// A response came from a peer that is not in the current configuration.
    #[error("raft: cannot step as peer not found")]
    StepPeerNotFound,
    /// A message from the network was refused by [`crate::RawNode::step`]: it
    /// cannot be right (no term on a message that needs one, entries out of
    /// order, an append rewriting committed entries, an impossible snapshot,
    /// ...). The node is unchanged. `reason` is a short fixed text a caller
    /// can log or count by.
    #[error("raft: invalid {msg_type:?} from {from}: {reason}")]
    InvalidMessage {
        /// The type of the refused message.
        msg_type: MessageType,
        /// Its claimed sender.
        from: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The [`crate::Config`] is invalid; the string says why.
    #[error("raft: invalid config: {0}")]
    ConfigInvalid(String),
    /// A configuration change could not be applied to the current configuration.
    #[error("raft: invalid conf change: {0}")]
    ConfChangeInvalid(String),
    /// The storage reported an error.
    #[error("raft: storage error: {0}")]
    Store(#[from] StorageError),
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
