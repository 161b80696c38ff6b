//! The `Storage` abstraction that the services run on: a batch writer and point-in-time readers.
//!
//! Implementations: [`StandaloneStorage`](crate::StandaloneStorage) (one RocksDB),
//! [`MemoryStorage`](crate::MemoryStorage) (tests), and the raft-replicated storage of the
//! `raftstore` crate. Keys here are user keys; how they are laid out in an engine is the
//! implementation's business.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use proto::errorpb;
use proto::kvrpcpb::Context;
use proto::metapb;

use crate::cas::{Cas, CasOutcome};
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
    /// Delete every key of `[start, end)` from `cf`; an empty `end` is unbounded.
    DeleteRange {
        /// Column family.
        cf: Cf,
        /// First user key deleted.
        start: Vec<u8>,
        /// End of the range (exclusive); empty is unbounded.
        end: Vec<u8>,
    },
}

impl Modify {
    /// The user key this write touches (a range: its first key).
    pub fn key(&self) -> &[u8] {
        match self {
            Modify::Put { key, .. } | Modify::Delete { key, .. } => key,
            Modify::DeleteRange { start, .. } => start,
        }
    }

    /// The column family this write touches.
    pub fn cf(&self) -> Cf {
        match self {
            Modify::Put { cf, .. } | Modify::Delete { cf, .. } | Modify::DeleteRange { cf, .. } => {
                *cf
            }
        }
    }
}

/// The answer of a storage call made without blocking the caller.
pub type StorageFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'static>>;

/// A [`StorageFuture`] already answered with `outcome`.
pub fn answered<T: Send + 'static>(outcome: Result<T>) -> StorageFuture<T> {
    Box::pin(std::future::ready(outcome))
}

/// Runs `f` on tokio's blocking pool.
async fn on_blocking_pool<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::Error::Unavailable(format!("storage task failed: {e}")))?
}

/// A key-value store that applies batches atomically and hands out consistent readers.
///
/// Methods block (a replicated implementation waits for the write to commit); async callers run
/// them on a blocking thread.
pub trait Storage: Send + Sync + 'static {
    /// Applies `batch` atomically. `ctx` routes the request (region, epoch, peer) where the
    /// implementation needs it.
    fn write(&self, ctx: &Context, batch: Vec<Modify>) -> Result<()>;

    /// Compares the value at `cas.key` with `cas.expect` and, when they match, writes
    /// `cas.value` there; returns whether it did and what the key held. Atomic with respect to
    /// every other write of this storage: no write of the key comes between the comparison and
    /// the swap, so two swaps from the same previous value never both succeed.
    ///
    /// Like [`Storage::write`], an [`Error::Unavailable`](crate::Error::Unavailable) means the
    /// outcome is unknown: the swap may still happen.
    fn compare_and_swap(&self, ctx: &Context, cas: Cas) -> Result<CasOutcome>;

    /// A reader over a consistent snapshot, as of now.
    fn reader(&self, ctx: &Context) -> Result<Box<dyn StorageReader>>;

    /// [`Storage::write`] for async callers. The default runs `write` on tokio's blocking pool;
    /// a storage that is answered through a callback (the raftstore's) overrides it so that no
    /// thread waits. Dropping the future leaves the write's outcome unknown, as a timeout does.
    fn write_async(self: Arc<Self>, ctx: Context, batch: Vec<Modify>) -> StorageFuture<()>
    where
        Self: Sized,
    {
        Box::pin(on_blocking_pool(move || self.write(&ctx, batch)))
    }

    /// The value at `key` in `cf`, as of now, for async callers: a [`Storage::reader`] and one
    /// get, on tokio's blocking pool unless the storage overrides it.
    fn get_async(
        self: Arc<Self>,
        ctx: Context,
        cf: Cf,
        key: Vec<u8>,
    ) -> StorageFuture<Option<Vec<u8>>>
    where
        Self: Sized,
    {
        Box::pin(on_blocking_pool(move || {
            self.reader(&ctx)?.get_cf(cf, &key)
        }))
    }

    /// Splits the region of `ctx` at `split_key` (the first key of the right-hand half) and
    /// returns the two regions, left then right. A storage without regions refuses.
    fn split_region(
        &self,
        ctx: &Context,
        split_key: Vec<u8>,
    ) -> Result<(metapb::Region, metapb::Region)> {
        let _ = (ctx, split_key);
        Err(crate::Error::InvalidArgument(
            "this storage has no regions to split".into(),
        ))
    }
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
    /// Positions the cursor at the last key `< key`; an empty `key` means the last key.
    fn seek_before(&mut self, key: &[u8]);
    /// Moves to the previous entry.
    fn prev(&mut self);
}

/// A [`StorageReader`] over an engine snapshot, limited to the user keys in `[start, end)`
/// (an empty `end` is unbounded). Standalone storage reads every key; a region reads its range,
/// and a point read of a key outside it is a `KeyNotInRegion` error (the store's copy of another
/// region's data may be stale), never a silent miss.
pub struct EngineReader {
    snap: EngineSnapshot,
    lower: Vec<u8>,
    upper: Vec<u8>,
    region_id: u64,
}

impl EngineReader {
    /// A reader over `snap` for the user keys in `[start, end)`.
    pub fn new(snap: EngineSnapshot, start: &[u8], end: &[u8]) -> EngineReader {
        EngineReader {
            snap,
            lower: keys::data_key(start),
            upper: keys::data_end_key(end),
            region_id: 0,
        }
    }

    /// A reader of region `region_id`'s keys `[start, end)`, named in its range errors.
    pub fn for_region(
        snap: EngineSnapshot,
        region_id: u64,
        start: &[u8],
        end: &[u8],
    ) -> EngineReader {
        EngineReader {
            region_id,
            ..EngineReader::new(snap, start, end)
        }
    }

    fn check_in_range(&self, key: &[u8], data_key: &[u8]) -> Result<()> {
        if data_key >= self.lower.as_slice() && data_key < self.upper.as_slice() {
            return Ok(());
        }
        let range = |k: &[u8]| keys::origin_key(k).to_vec();
        let end = if self.upper == keys::data_end_key(b"") {
            Vec::new()
        } else {
            range(&self.upper)
        };
        Err(errorpb::Error {
            message: format!(
                "key {:?} is not in region {}",
                String::from_utf8_lossy(key),
                self.region_id
            ),
            key_not_in_region: Some(errorpb::KeyNotInRegion {
                key: key.to_vec(),
                region_id: self.region_id,
                start_key: range(&self.lower),
                end_key: end,
            }),
            ..Default::default()
        }
        .into())
    }
}

impl StorageReader for EngineReader {
    fn get_cf(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let dk = keys::data_key(key);
        self.check_in_range(key, &dk)?;
        self.snap.get_cf(cf, &dk)
    }

    fn iter_cf(&self, cf: Cf) -> Result<Box<dyn DbIterator + '_>> {
        let raw = self
            .snap
            .iter_cf(cf, self.lower.clone(), self.upper.clone())?;
        Ok(Box::new(EngineIterator {
            raw,
            upper: self.upper.clone(),
        }))
    }
}

struct EngineIterator<'a> {
    raw: rocksdb::DBRawIterator<'a>,
    /// The iterator's upper bound (a data key, exclusive).
    upper: Vec<u8>,
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

    fn seek_before(&mut self, key: &[u8]) {
        let target = keys::data_key(key);
        if key.is_empty() || target >= self.upper {
            // The last key under the iterator's upper bound.
            self.raw.seek_to_last();
            return;
        }
        self.raw.seek_for_prev(&target);
        if self.raw.valid() && self.raw.key() == Some(target.as_slice()) {
            self.raw.prev();
        }
    }

    fn prev(&mut self) {
        if self.raw.valid() {
            self.raw.prev();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engines, WriteBatch};

    #[test]
    fn region_reader_refuses_point_reads_outside_its_range_3b() {
        let dir = tempfile::tempdir().unwrap();
        let engines = Engines::open(dir.path()).unwrap();
        let mut wb = WriteBatch::new(&engines.kv);
        for k in [&b"a"[..], b"c", b"x"] {
            wb.put_cf(Cf::Default, &keys::data_key(k), k).unwrap();
        }
        wb.write(false).unwrap();
        let reader = EngineReader::for_region(EngineSnapshot::new(&engines.kv), 7, b"b", b"m");
        assert_eq!(
            reader.get_cf(Cf::Default, b"c").unwrap().as_deref(),
            Some(&b"c"[..])
        );
        for (k, end) in [(&b"a"[..], &b"m"[..]), (b"x", b"m"), (b"m", b"m")] {
            match reader.get_cf(Cf::Default, k) {
                Err(crate::Error::Region(e)) => {
                    let kn = e.key_not_in_region.expect("KeyNotInRegion");
                    assert_eq!((kn.key.as_slice(), kn.region_id), (k, 7));
                    assert_eq!(
                        (kn.start_key.as_slice(), kn.end_key.as_slice()),
                        (&b"b"[..], end)
                    );
                }
                other => panic!("read of {k:?} outside the region: {other:?}"),
            }
        }
        let open_end = EngineReader::for_region(EngineSnapshot::new(&engines.kv), 8, b"b", b"");
        assert!(open_end.get_cf(Cf::Default, b"x").unwrap().is_some());
        match open_end.get_cf(Cf::Default, b"a") {
            Err(crate::Error::Region(e)) => {
                assert!(e
                    .key_not_in_region
                    .expect("KeyNotInRegion")
                    .end_key
                    .is_empty())
            }
            other => panic!("read of \"a\" outside the region: {other:?}"),
        }
    }
}
