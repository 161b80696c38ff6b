//! The `Storage` abstraction that the services run on: a batch writer and point-in-time readers.
//!
//! Implementations: [`StandaloneStorage`](crate::StandaloneStorage) (one RocksDB),
//! [`MemoryStorage`](crate::MemoryStorage) (tests), and the raft-replicated storage of the
//! `raftstore` crate. Keys here are user keys; how they are laid out in an engine is the
//! implementation's business.

use proto::kvrpcpb::Context;

use crate::engine::{Cf, EngineSnapshot};
use crate::error::Result;
use crate::keys;

/// One write of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modify {
    /// Put `value` at `key` in `cf`.
    Put {
        /// Column family.
        cf: Cf,
        /// User key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Delete `key` from `cf`.
    Delete {
        /// Column family.
        cf: Cf,
        /// User key.
        key: Vec<u8>,
    },
}

impl Modify {
    /// The user key this write touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Modify::Put { key, .. } | Modify::Delete { key, .. } => key,
        }
    }

    /// The column family this write touches.
    pub fn cf(&self) -> Cf {
        match self {
            Modify::Put { cf, .. } | Modify::Delete { cf, .. } => *cf,
        }
    }
}

/// A key-value store that applies batches atomically and hands out consistent readers.
///
/// Methods block (a replicated implementation waits for the write to commit); async callers run
/// them on a blocking thread.
pub trait Storage: Send + Sync + 'static {
    /// Applies `batch` atomically. `ctx` routes the request (region, epoch, peer) where the
    /// implementation needs it.
    fn write(&self, ctx: &Context, batch: Vec<Modify>) -> Result<()>;

    /// A reader over a consistent snapshot, as of now.
    fn reader(&self, ctx: &Context) -> Result<Box<dyn StorageReader>>;
}

/// A consistent, read-only view of a storage.
pub trait StorageReader: Send {
    /// The value at `key` in `cf`, if any.
    fn get_cf(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// An iterator over `cf` in key order; it starts unpositioned: call [`DbIterator::seek`].
    fn iter_cf(&self, cf: Cf) -> Result<Box<dyn DbIterator + '_>>;
}

/// A cursor over one column family of a [`StorageReader`].
pub trait DbIterator {
    /// Positions the cursor at the first key `>= key`.
    fn seek(&mut self, key: &[u8]);
    /// Whether the cursor is on an entry; an engine failure met while iterating is an error.
    fn valid(&self) -> Result<bool>;
    /// The current user key. Only meaningful while `valid()` is `Ok(true)`.
    fn key(&self) -> &[u8];
    /// The current value. Only meaningful while `valid()` is `Ok(true)`.
    fn value(&self) -> &[u8];
    /// Moves to the next entry.
    fn next(&mut self);
}

/// A [`StorageReader`] over an engine snapshot, limited to the user keys in `[start, end)`
/// (an empty `end` is unbounded). Standalone storage reads every key; a region reads its range.
pub struct EngineReader {
    snap: EngineSnapshot,
    lower: Vec<u8>,
    upper: Vec<u8>,
}

impl EngineReader {
    /// A reader over `snap` for the user keys in `[start, end)`.
    pub fn new(snap: EngineSnapshot, start: &[u8], end: &[u8]) -> EngineReader {
        EngineReader {
            snap,
            lower: keys::data_key(start),
            upper: keys::data_end_key(end),
        }
    }
}

impl StorageReader for EngineReader {
    fn get_cf(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap.get_cf(cf, &keys::data_key(key))
    }

    fn iter_cf(&self, cf: Cf) -> Result<Box<dyn DbIterator + '_>> {
        let raw = self
            .snap
            .iter_cf(cf, self.lower.clone(), self.upper.clone())?;
        Ok(Box::new(EngineIterator { raw }))
    }
}

struct EngineIterator<'a> {
    raw: rocksdb::DBRawIterator<'a>,
}

impl DbIterator for EngineIterator<'_> {
    fn seek(&mut self, key: &[u8]) {
        self.raw.seek(keys::data_key(key));
    }

    fn valid(&self) -> Result<bool> {
        if self.raw.valid() {
            return Ok(true);
        }
        self.raw.status()?;
        Ok(false)
    }

    fn key(&self) -> &[u8] {
        self.raw.key().map(keys::origin_key).unwrap_or_default()
    }

    fn value(&self) -> &[u8] {
        self.raw.value().unwrap_or_default()
    }

    fn next(&mut self) {
        if self.raw.valid() {
            self.raw.next();
        }
    }
}
