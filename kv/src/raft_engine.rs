//! [`RocksRaftEngine`]: the store's RocksDB raft engine behind `raftlog::RaftEngine`, the default
//! raft-log engine. Entries live at `keys::raft_log_key(region, index)` and the raft state at
//! `keys::raft_state_key(region)`, in the default column family.

use std::sync::Arc;

use raftlog::{LogBatch, LogOp, RaftEngine};
use rocksdb::DB;

use crate::engine::{get_cf, Cf, WriteBatch};
use crate::keys;

/// Ranges of at most this many entries are deleted key by key (a tail overwritten by a new
/// leader); longer ones with one range tombstone (a snapshot, a destroyed peer, log GC).
const POINT_DELETES_MAX: u64 = 64;

/// The RocksDB raft engine.
#[derive(Clone)]
pub struct RocksRaftEngine {
    db: Arc<DB>,
}

impl std::fmt::Debug for RocksRaftEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RocksRaftEngine")
    }
}

impl RocksRaftEngine {
    /// Opens (creating it if missing) the raft engine at `path`.
    ///
    /// # Errors
    /// RocksDB could not open it.
    pub fn open(path: &std::path::Path) -> crate::Result<RocksRaftEngine> {
        Ok(RocksRaftEngine {
            db: crate::engine::open_raft_engine(path)?,
        })
    }

    /// The RocksDB instance underneath (for measurements that write it directly).
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }
}

fn other(e: crate::Error) -> raftlog::Error {
    raftlog::Error::Other(e.to_string())
}

impl RaftEngine for RocksRaftEngine {
    fn write(&self, batch: &LogBatch, sync: bool) -> raftlog::Result<()> {
        let mut wb = WriteBatch::new(&self.db);
        for op in batch.ops() {
            match op {
                LogOp::Append {
                    region_id,
                    index,
                    entry,
                } => wb
                    .put_cf(Cf::Default, &keys::raft_log_key(*region_id, *index), entry)
                    .map_err(other)?,
                LogOp::PutState { region_id, state } => {
                    wb.put(&keys::raft_state_key(*region_id), state)
                }
                LogOp::DeleteState { region_id } => wb.delete(&keys::raft_state_key(*region_id)),
                LogOp::DeleteEntries {
                    region_id,
                    from,
                    to,
                } if to - from <= POINT_DELETES_MAX => {
                    for index in *from..*to {
                        wb.delete_cf(Cf::Default, &keys::raft_log_key(*region_id, index))
                            .map_err(other)?;
                    }
                }
                LogOp::DeleteEntries {
                    region_id,
                    from,
                    to,
                } => wb
                    .delete_range_cf(
                        Cf::Default,
                        &keys::raft_log_key(*region_id, *from),
                        &keys::raft_log_key(*region_id, *to),
                    )
                    .map_err(other)?,
            }
        }
        wb.write(sync).map_err(other)
    }

    fn raft_state(&self, region_id: u64) -> raftlog::Result<Option<Vec<u8>>> {
        get_cf(&self.db, Cf::Default, &keys::raft_state_key(region_id)).map_err(other)
    }

    fn entry(&self, region_id: u64, index: u64) -> raftlog::Result<Option<Vec<u8>>> {
        get_cf(&self.db, Cf::Default, &keys::raft_log_key(region_id, index)).map_err(other)
    }

    fn compact(&self, region_id: u64, to: u64) -> raftlog::Result<()> {
        let mut batch = LogBatch::new();
        // From index 0: whatever an earlier, interrupted compaction left behind goes too.
        batch.delete_entries(region_id, 0, to);
        self.write(&batch, false)
    }

    fn flush(&self) -> raftlog::Result<()> {
        crate::fault::check_disk().map_err(other)?;
        self.db.flush_wal(true).map_err(|e| other(e.into()))?;
        self.db.flush().map_err(|e| other(e.into()))
    }
}

/// Another raft-log engine under the store's disk fault injection (`crate::fault`): every
/// operation fails while the disk is made dead, and synced writes wait while it is made slow,
/// as the RocksDB engines' do. (Losing unsynced writes at a kill is RocksDB's only.)
#[derive(Debug)]
pub(crate) struct FaultInjected<E>(pub(crate) E);

fn checked() -> raftlog::Result<()> {
    crate::fault::check_disk().map_err(other)
}

impl<E: RaftEngine> RaftEngine for FaultInjected<E> {
    fn write(&self, batch: &LogBatch, sync: bool) -> raftlog::Result<()> {
        checked()?;
        if sync {
            crate::fault::maybe_slow_sync();
        }
        self.0.write(batch, sync)
    }

    fn raft_state(&self, region_id: u64) -> raftlog::Result<Option<Vec<u8>>> {
        checked()?;
        self.0.raft_state(region_id)
    }

    fn entry(&self, region_id: u64, index: u64) -> raftlog::Result<Option<Vec<u8>>> {
        checked()?;
        self.0.entry(region_id, index)
    }

    fn compact(&self, region_id: u64, to: u64) -> raftlog::Result<()> {
        checked()?;
        self.0.compact(region_id, to)
    }

    fn flush(&self) -> raftlog::Result<()> {
        checked()?;
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_land_at_the_raft_keys_1() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksRaftEngine::open(dir.path()).unwrap();
        let mut batch = LogBatch::new();
        for index in 1..=200 {
            batch.append(7, index, format!("e{index}").into_bytes());
        }
        batch.put_state(7, b"state".to_vec());
        engine.write(&batch, true).unwrap();
        assert_eq!(engine.entry(7, 150).unwrap().as_deref(), Some(&b"e150"[..]));
        assert_eq!(
            engine.raft_state(7).unwrap().as_deref(),
            Some(&b"state"[..])
        );
        assert_eq!(engine.entry(8, 150).unwrap(), None);

        // A short tail, point deletes; a long range, one tombstone: the same outcome.
        let mut batch = LogBatch::new();
        batch.delete_entries(7, 190, 201);
        batch.delete_state(7);
        engine.write(&batch, false).unwrap();
        engine.compact(7, 100).unwrap();
        assert_eq!(engine.entry(7, 99).unwrap(), None);
        assert_eq!(engine.entry(7, 100).unwrap().as_deref(), Some(&b"e100"[..]));
        assert_eq!(engine.entry(7, 189).unwrap().as_deref(), Some(&b"e189"[..]));
        assert_eq!(engine.entry(7, 190).unwrap(), None);
        assert_eq!(engine.raft_state(7).unwrap(), None);
        engine.flush().unwrap();
    }
}
