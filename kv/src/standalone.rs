//! `StandaloneStorage`: one durable RocksDB, no replication.

use std::path::Path;
use std::sync::Arc;

use proto::kvrpcpb::Context;
use rocksdb::DB;

use crate::engine::{open_engine, Cf, EngineSnapshot, WriteBatch};
use crate::error::Result;
use crate::keys;
use crate::storage::{EngineReader, Modify, Storage, StorageReader};

/// A single-node storage over one RocksDB instance with CFs default, lock and write.
pub struct StandaloneStorage {
    db: Arc<DB>,
    sync: bool,
}

impl StandaloneStorage {
    /// Opens (or creates) the storage at `path`. With `sync`, every write fsyncs the WAL before it
    /// is acknowledged, so an acknowledged write survives a machine crash, not only a process crash.
    pub fn open(path: &Path, sync: bool) -> Result<StandaloneStorage> {
        Ok(StandaloneStorage {
            db: open_engine(path, &Cf::ALL)?,
            sync,
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
        let mut wb = WriteBatch::new(&self.db);
        for m in batch {
            match m {
                Modify::Put { cf, key, value } => wb.put_cf(cf, &keys::data_key(&key), &value)?,
                Modify::Delete { cf, key } => wb.delete_cf(cf, &keys::data_key(&key))?,
            }
        }
        wb.write(self.sync)
    }

    fn reader(&self, _ctx: &Context) -> Result<Box<dyn StorageReader>> {
        let snap = EngineSnapshot::new(&self.db);
        Ok(Box::new(EngineReader::new(snap, b"", b"")))
    }
}
