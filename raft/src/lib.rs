//! Tessera's raft consensus library (work in progress).
#![deny(missing_docs)]

mod config;
mod confchange;
mod errors;
mod log_unstable;
mod raft;
mod raft_log;
mod raw_node;
mod read_only;
mod storage;
mod tracker;
mod util;

pub use raft_proto::eraftpb;
pub use raft_proto::ConfChangeI;

pub use crate::config::{Config, ReadOnlyOption};
pub use crate::errors::{Error, Result, StorageError};
pub use crate::raft::{Raft, SoftState, StateRole};
pub use crate::raft_log::RaftLog;
pub use crate::raw_node::{RawNode, Ready, SnapshotStatus, Status};
pub use crate::read_only::ReadState;
pub use crate::storage::{MemStorage, RaftState, Storage};
pub use crate::tracker::{Inflights, Progress, ProgressState, ProgressTracker, VoteResult};
pub use crate::util::{INVALID_ID, NO_LIMIT};
