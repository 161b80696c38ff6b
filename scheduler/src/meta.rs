//! Persistence of the scheduler's state: a RocksDB instance under the data directory (or a map
//! in memory for an in-process scheduler), written through on every change.
//!
//! The whole state is read once when the scheduler opens and is served from memory afterwards,
//! so this layer only needs "load everything" and atomic batched writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use prost::Message;

use crate::error::{Error, Result};

/// Key of the cluster id (u64, big endian).
pub(crate) const CLUSTER_ID_KEY: &[u8] = b"cluster/id";
/// Key of the cluster config (`metapb::Cluster`); present once the cluster is bootstrapped.
pub(crate) const CLUSTER_CONFIG_KEY: &[u8] = b"cluster/config";
/// Key of the id allocator's high-water mark (u64, big endian).
pub(crate) const ALLOC_ID_KEY: &[u8] = b"alloc/id";
/// Key of the TSO's high-water mark in physical milliseconds (u64, big endian).
pub(crate) const TSO_KEY: &[u8] = b"tso/physical";
/// The schedule settings an administrator set at run time (`ScheduleConfig`).
pub(crate) const SCHEDULE_CONFIG_KEY: &[u8] = b"schedule/config";
/// The MVCC GC safe point (u64, big endian).
pub(crate) const GC_SAFE_POINT_KEY: &[u8] = b"gc/safe_point";
/// Prefix of store records (`metapb::Store`), followed by the store id in big endian.
pub(crate) const STORE_PREFIX: &[u8] = b"store/";
/// Prefix of region records (`metapb::Region`), followed by the region id in big endian.
pub(crate) const REGION_PREFIX: &[u8] = b"region/";

/// The key of a store record.
pub(crate) fn store_key(id: u64) -> Vec<u8> {
    [STORE_PREFIX, &id.to_be_bytes()].concat()
}

/// The key of a region record.
pub(crate) fn region_key(id: u64) -> Vec<u8> {
    [REGION_PREFIX, &id.to_be_bytes()].concat()
}

/// Locks a mutex even if a thread panicked while holding it: the protected state is only ever
/// changed after its persistence succeeded, so it is consistent at every unlock point.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Everything persisted, as loaded at open time.
pub(crate) type Snapshot = BTreeMap<Vec<u8>, Vec<u8>>;

/// A batch of changes written atomically.
#[derive(Default)]
pub(crate) struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub(crate) fn put_u64(&mut self, key: &[u8], value: u64) {
        self.ops
            .push((key.to_vec(), Some(value.to_be_bytes().to_vec())));
    }

    pub(crate) fn put_msg<M: Message>(&mut self, key: &[u8], msg: &M) {
        self.ops.push((key.to_vec(), Some(msg.encode_to_vec())));
    }

    pub(crate) fn delete(&mut self, key: &[u8]) {
        self.ops.push((key.to_vec(), None));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Where the state lives.
pub(crate) enum MetaStore {
    /// Nothing survives the process; for in-process schedulers (tests, mocks).
    Memory(Mutex<Snapshot>),
    /// A RocksDB instance. The write batch owns the engine handle, which keeps the DB open for
    /// as long as the store lives; reads only happen at open time, through a snapshot.
    Rocks(Mutex<kv::WriteBatch>),
}

impl MetaStore {
    /// A store in memory, empty.
    pub(crate) fn memory() -> (MetaStore, Snapshot) {
        (
            MetaStore::Memory(Mutex::new(Snapshot::new())),
            Snapshot::new(),
        )
    }

    /// Opens (creating if needed) the RocksDB under `dir` and loads everything in it.
    pub(crate) fn open(dir: &Path) -> Result<(MetaStore, Snapshot)> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Storage(kv::Error::Unavailable(format!(
                "cannot create data dir {}: {e}",
                dir.display()
            )))
        })?;
        let db = kv::engine::open_engine(dir, &[kv::Cf::Default])?;
        let snapshot = kv::EngineSnapshot::new(&db);
        let mut loaded = Snapshot::new();
        // Every key starts with an ASCII prefix, so 0xff bounds them all.
        let mut it = snapshot.iter_cf(kv::Cf::Default, Vec::new(), vec![0xff])?;
        it.seek_to_first();
        while it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                loaded.insert(k.to_vec(), v.to_vec());
            }
            it.next();
        }
        it.status().map_err(kv::Error::from)?;
        drop(it);
        drop(snapshot);
        Ok((
            MetaStore::Rocks(Mutex::new(kv::WriteBatch::new(&db))),
            loaded,
        ))
    }

    /// Writes `batch` atomically; with `sync` it is on disk before this returns.
    pub(crate) fn write(&self, batch: Batch, sync: bool) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        match self {
            MetaStore::Memory(map) => {
                let mut map = lock(map);
                for (k, v) in batch.ops {
                    match v {
                        Some(v) => map.insert(k, v),
                        None => map.remove(&k),
                    };
                }
                Ok(())
            }
            MetaStore::Rocks(wb) => {
                let mut wb = lock(wb);
                for (k, v) in &batch.ops {
                    match v {
                        Some(v) => wb.put(k, v),
                        None => wb.delete(k),
                    }
                }
                // `kv::WriteBatch::write` empties the batch before writing, so a failed write
                // does not leak into the next batch.
                Ok(wb.write(sync)?)
            }
        }
    }
}

/// Reads a big-endian u64 record.
pub(crate) fn get_u64(snapshot: &Snapshot, key: &[u8]) -> Result<Option<u64>> {
    match snapshot.get(key) {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| {
                Error::Storage(kv::Error::Corrupt {
                    what: "u64 record",
                    reason: format!("{} bytes at {:?}", v.len(), String::from_utf8_lossy(key)),
                })
            })?;
            Ok(Some(u64::from_be_bytes(bytes)))
        }
    }
}

/// Decodes a protobuf record.
pub(crate) fn decode<M: Message + Default>(key: &[u8], value: &[u8]) -> Result<M> {
    M::decode(value).map_err(|e| {
        Error::Storage(kv::Error::Corrupt {
            what: std::any::type_name::<M>(),
            reason: format!("{e} at {:?}", String::from_utf8_lossy(key)),
        })
    })
}

/// Every record under `prefix`, decoded.
pub(crate) fn scan_prefix<M: Message + Default>(
    snapshot: &Snapshot,
    prefix: &[u8],
) -> Result<Vec<M>> {
    snapshot
        .range(prefix.to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| decode(k, v))
        .collect()
}
