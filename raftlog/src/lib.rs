//! The raft-log engine: where a store keeps every region's raft log entries and raft state.
//!
//! The raftstore writes through [`RaftEngine`]: one [`LogBatch`] per raft-worker round (every
//! peer's new entries and states, group commit), read back an entry or a state at a time. The
//! engine sees only bytes: entries and states come encoded, keyed by region and index.
//!
//! Two engines implement it: the store's RocksDB raft engine (`kv::RocksRaftEngine`), the
//! default, and [`FileEngine`], a log-structured engine that appends each batch to a segment
//! file and drops segments once compacted (`raftstore.raft_engine = "file"`).

#![deny(missing_docs)]
mod file;
mod record;
pub use file::{FileConfig, FileEngine};

/// Raft-log engine errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file system refused (a full disk among others).
    #[error("raft log io: {0}")]
    Io(#[from] std::io::Error),
    /// The engine's files hold something it did not write.
    #[error("raft log corrupt: {0}")]
    Corrupt(String),
    /// Another engine's failure (the RocksDB raft engine's).
    #[error("raft engine: {0}")]
    Other(String),
}

/// A result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One change of a [`LogBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOp {
    /// Entry `index` of region `region_id` is `entry` (replacing any entry at that index).
    Append {
        /// The region.
        region_id: u64,
        /// The entry's index.
        index: u64,
        /// The encoded entry.
        entry: Vec<u8>,
    },
    /// Region `region_id`'s raft state is `state`.
    PutState {
        /// The region.
        region_id: u64,
        /// The encoded state.
        state: Vec<u8>,
    },
    /// Region `region_id` has no raft state.
    DeleteState {
        /// The region.
        region_id: u64,
    },
    /// Region `region_id`'s entries with indexes in `[from, to)` are gone.
    DeleteEntries {
        /// The region.
        region_id: u64,
        /// First index removed.
        from: u64,
        /// First index kept after the removed ones.
        to: u64,
    },
}

/// Changes written together, atomically: after a crash either all of a batch is there or none.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogBatch {
    ops: Vec<LogOp>,
    bytes: usize,
}

impl LogBatch {
    /// An empty batch.
    pub fn new() -> LogBatch {
        LogBatch::default()
    }

    /// Sets entry `index` of `region_id` to the encoded `entry`.
    pub fn append(&mut self, region_id: u64, index: u64, entry: Vec<u8>) {
        self.bytes += entry.len() + 24;
        self.ops.push(LogOp::Append {
            region_id,
            index,
            entry,
        });
    }

    /// Sets `region_id`'s raft state to the encoded `state`.
    pub fn put_state(&mut self, region_id: u64, state: Vec<u8>) {
        self.bytes += state.len() + 16;
        self.ops.push(LogOp::PutState { region_id, state });
    }

    /// Removes `region_id`'s raft state.
    pub fn delete_state(&mut self, region_id: u64) {
        self.bytes += 16;
        self.ops.push(LogOp::DeleteState { region_id });
    }

    /// Removes `region_id`'s entries with indexes in `[from, to)`.
    pub fn delete_entries(&mut self, region_id: u64, from: u64, to: u64) {
        if from < to {
            self.bytes += 32;
            self.ops.push(LogOp::DeleteEntries {
                region_id,
                from,
                to,
            });
        }
    }

    /// The changes, in the order they were added (a later one wins).
    pub fn ops(&self) -> &[LogOp] {
        &self.ops
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// About how many bytes the batch carries.
    pub fn size(&self) -> usize {
        self.bytes
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.bytes = 0;
    }
}

/// A store's raft-log engine. Shared by the raft worker (writes, reads), the log writer thread
/// (writes) and the raft-log GC worker (deletes of compacted entries).
pub trait RaftEngine: Send + Sync + std::fmt::Debug {
    /// Writes `batch` atomically; with `sync`, it and every earlier write are durable on return.
    ///
    /// # Errors
    /// The write failed; the batch may or may not be in the engine (the caller stops).
    fn write(&self, batch: &LogBatch, sync: bool) -> Result<()>;

    /// Region `region_id`'s raft state, encoded, if it has one.
    ///
    /// # Errors
    /// A read failure.
    fn raft_state(&self, region_id: u64) -> Result<Option<Vec<u8>>>;

    /// Entry `index` of region `region_id`, encoded, if the engine holds it.
    ///
    /// # Errors
    /// A read failure.
    fn entry(&self, region_id: u64, index: u64) -> Result<Option<Vec<u8>>>;

    /// Forgets region `region_id`'s entries below `to` (compacted: never read again). Not synced:
    /// after a crash they may be back, and are forgotten again by the next call.
    ///
    /// # Errors
    /// A write failure (harmless: the next call covers the same entries).
    fn compact(&self, region_id: u64, to: u64) -> Result<()>;

    /// Makes every write so far durable, and the engine's files as small as it can (for a
    /// store's clean shutdown and for tests).
    ///
    /// # Errors
    /// A write failure.
    fn flush(&self) -> Result<()>;
}
