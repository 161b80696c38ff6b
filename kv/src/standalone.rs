//! `StandaloneStorage`: one durable RocksDB, no replication.
//!
//! A compare-and-swap reads, decides and writes; RocksDB has no such operation, so every write
//! latches the keys it touches (the transaction layer's [`Latches`], per user key whatever the
//! column family: coarser than needed, never wrong) and a swap holds its key's latch from its
//! read to its write. Writes of different keys still run side by side and share the WAL's
//! group commit. A delete of a range cannot latch every key in it: it takes `ranges` for
//! writing, which every other write and swap holds for reading, so it runs alone.

use std::path::Path;
use std::sync::{Arc, RwLock};

use proto::kvrpcpb::Context;
use rocksdb::DB;

use crate::cas::{Cas, CasOutcome};
use crate::engine::{get_cf, open_engine, Cf, EngineSnapshot, WriteBatch};
use crate::error::Result;
use crate::keys;
use crate::storage::{EngineReader, Modify, Storage, StorageReader};
use crate::txn::Latches;

/// A single-node storage over one RocksDB instance with CFs default, lock and write.
pub struct StandaloneStorage {
    db: Arc<DB>,
    sync: bool,
    latches: Latches,
    ranges: RwLock<()>,
}

impl StandaloneStorage {
    /// Opens (or creates) the storage at `path`. With `sync`, every write fsyncs the WAL before it
    /// is acknowledged, so an acknowledged write survives a machine crash, not only a process crash.
    pub fn open(path: &Path, sync: bool) -> Result<StandaloneStorage> {
        Ok(StandaloneStorage {
            db: open_engine(path, &Cf::ALL)?,
            sync,
            latches: Latches::new(),
            ranges: RwLock::new(()),
        })
    }

    /// Flushes the WAL and memtables to disk; called on shutdown.
    pub fn flush(&self) -> Result<()> {
        self.db.flush_wal(true)?;
        self.db.flush()?;
        Ok(())
    }
}

impl Storage for StandaloneStorage {
    fn write(&self, _ctx: &Context, batch: Vec<Modify>) -> Result<()> {
        let ranged = batch
            .iter()
            .any(|m| matches!(m, Modify::DeleteRange { .. }));
        // A poisoned lock guards nothing: the unit it protects holds no data.
        let (_shared, _alone) = if ranged {
            (
                None,
                Some(self.ranges.write().unwrap_or_else(|e| e.into_inner())),
            )
        } else {
            (
                Some(self.ranges.read().unwrap_or_else(|e| e.into_inner())),
                None,
            )
        };
        let _latched = self.latches.acquire(batch.iter().map(Modify::key));
        let mut wb = WriteBatch::new(&self.db);
        for m in batch {
            match m {
                Modify::Put { cf, key, value } => wb.put_cf(cf, &keys::data_key(&key), &value)?,
                Modify::Delete { cf, key } => wb.delete_cf(cf, &keys::data_key(&key))?,
                Modify::DeleteRange { cf, start, end } => {
                    wb.delete_range_cf(cf, &keys::data_key(&start), &keys::data_end_key(&end))?
                }
            }
        }
        wb.write(self.sync)
    }

    fn compare_and_swap(&self, _ctx: &Context, cas: Cas) -> Result<CasOutcome> {
        let _shared = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let _latched = self.latches.acquire([cas.key.as_slice()]);
        let data_key = keys::data_key(&cas.key);
        let outcome = cas.decide(get_cf(&self.db, cas.cf, &data_key)?);
        if outcome.succeed {
            let mut wb = WriteBatch::new(&self.db);
            wb.put_cf(cas.cf, &data_key, &cas.value)?;
            wb.write(self.sync)?;
        }
        Ok(outcome)
    }

    fn reader(&self, _ctx: &Context) -> Result<Box<dyn StorageReader>> {
        let snap = EngineSnapshot::new(&self.db);
        Ok(Box::new(EngineReader::new(snap, b"", b"")))
    }
}
