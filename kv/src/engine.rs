//! RocksDB engines: opening, column families, write batches that span CFs, protobuf values and
//! point-in-time snapshots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use rocksdb::{ColumnFamilyDescriptor, DBRawIterator, Options, ReadOptions, Snapshot, DB};

use crate::error::{Error, Result};
use crate::fault::{check_disk, lose_unsynced, maybe_slow_sync, unflushed};

/// A column family of the kv engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Values: raw data, and MVCC values.
    Default,
    /// MVCC locks.
    Lock,
    /// MVCC write records.
    Write,
}

impl Cf {
    /// Every column family, in a fixed order.
    pub const ALL: [Cf; 3] = [Cf::Default, Cf::Lock, Cf::Write];

    /// The RocksDB name of the column family.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Default => "default",
            Cf::Lock => "lock",
            Cf::Write => "write",
        }
    }

    /// Parses a column family name; the empty name means `default`.
    pub fn from_name(name: &str) -> Result<Cf> {
        match name {
            "" | "default" => Ok(Cf::Default),
            "lock" => Ok(Cf::Lock),
            "write" => Ok(Cf::Write),
            other => Err(Error::UnknownCf(other.to_string())),
        }
    }
}

/// What an engine holds, which decides how its column families are tuned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EngineKind {
    /// Data that lives long and is read at random: compressed from level 2 down, where most of
    /// it settles; levels 0 and 1 stay plain, since they are rewritten soon.
    Kv,
    /// The raft log: appended, read back while recent, deleted once applied. Never compressed:
    /// most entries are deleted before a compaction reaches them. (Memtables of 128 MiB, four
    /// of them, were measured too: 50–60 MiB more memory per store and no more puts/s, so the
    /// defaults stay.)
    Raft,
}

impl EngineKind {
    fn cf_options(self) -> Options {
        use rocksdb::DBCompressionType::{Lz4, None as Plain};
        let mut opts = Options::default();
        match self {
            EngineKind::Kv => {
                opts.set_compression_per_level(&[Plain, Plain, Lz4, Lz4, Lz4, Lz4, Lz4]);
            }
            EngineKind::Raft => {
                opts.set_compression_type(Plain);
            }
        }
        opts
    }
}

/// Opens (creating if needed) a RocksDB instance with the given column families, tuned for kv
/// data.
pub fn open_engine(path: &Path, cfs: &[Cf]) -> Result<Arc<DB>> {
    open_engine_of(path, cfs, EngineKind::Kv)
}

/// Opens (creating if needed) a RocksDB instance with the given column families, tuned for
/// `kind`.
fn open_engine_of(path: &Path, cfs: &[Cf], kind: EngineKind) -> Result<Arc<DB>> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    // Memtables hold the unsynced writes then: a batch must reach SSTs whole.
    opts.set_atomic_flush(lose_unsynced());
    // A log record torn by a crash can only be the last, never synced: dropped. A bad checksum
    // anywhere before it is corruption, and the engine refuses to open (the default recovery
    // would silently drop every record after it, synced ones included).
    opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
    let descriptors = cfs
        .iter()
        .map(|cf| ColumnFamilyDescriptor::new(cf.name(), kind.cf_options()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, descriptors)?))
}

/// Where a store keeps its raft logs and raft states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RaftLogKind {
    /// The RocksDB raft engine (`dir/raft`), the default: `"rocksdb"`.
    #[default]
    #[serde(rename = "rocksdb")]
    RocksDb,
    /// The log-structured file engine (`raftlog::FileEngine`, `dir/raft-log`): `"file"`.
    File,
    /// The file engine with each segment zero-filled before use (on a background thread), so a
    /// synced append only writes data blocks, not the file's size: `"file-preallocated"`. Same
    /// files as `File`: a data dir may switch between the two.
    FilePreallocated,
}

/// A store's engines: the kv engine (user data and apply state, CFs default/lock/write) and the
/// raft-log engine (raft logs and raft state): the RocksDB raft engine (default CF only) or the
/// file engine (see [`RaftLogKind`]).
#[derive(Clone)]
pub struct Engines {
    /// The kv engine.
    pub kv: Arc<DB>,
    /// Where raft logs and states are written and read.
    pub raft_log: Arc<dyn raftlog::RaftEngine>,
    /// Where the kv engine lives.
    pub kv_path: PathBuf,
    /// Where the RocksDB raft engine lives (`dir/raft`; absent with the file engine).
    pub raft_path: PathBuf,
}

/// Opens the RocksDB raft engine at `path`, tuned for raft logs.
pub(crate) fn open_raft_engine(path: &Path) -> Result<Arc<DB>> {
    open_engine_of(path, &[Cf::Default], EngineKind::Raft)
}

impl Engines {
    /// Opens both engines under `dir` (`dir/kv` and the RocksDB raft engine in `dir/raft`).
    pub fn open(dir: &Path) -> Result<Engines> {
        Engines::open_with(dir, RaftLogKind::RocksDb)
    }

    /// Opens the engines under `dir` with the raft log in the engine `kind`: RocksDB (`dir/raft`),
    /// or files (`dir/raft-log`). A data dir keeps the raft-log engine it was created with: the
    /// other kind is refused with a clear error rather than started on an empty log.
    pub fn open_with(dir: &Path, kind: RaftLogKind) -> Result<Engines> {
        let files = dir.join("raft-log");
        let existing = dir.join("kv").exists();
        match kind {
            RaftLogKind::RocksDb if files.exists() => {
                return Err(Error::Unavailable(format!(
                    "{} keeps its raft log in files ({}); start it with raft_engine = \"file\"",
                    dir.display(),
                    files.display()
                )))
            }
            RaftLogKind::File | RaftLogKind::FilePreallocated if existing && !files.exists() => {
                return Err(Error::Unavailable(format!(
                    "{} keeps its raft log in RocksDB; start it with raft_engine = \"rocksdb\"",
                    dir.display()
                )))
            }
            _ => {}
        }
        let (kv_path, raft_path) = (dir.join("kv"), dir.join("raft"));
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Unavailable(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        // Only the engine in use is opened: a RocksDB raft engine beside the file engine would
        // hold memtables and threads for nothing.
        let raft_log: Arc<dyn raftlog::RaftEngine> = match kind {
            RaftLogKind::RocksDb => Arc::new(crate::RocksRaftEngine::open(&raft_path)?),
            RaftLogKind::File | RaftLogKind::FilePreallocated => {
                let cfg = raftlog::FileConfig {
                    preallocate: kind == RaftLogKind::FilePreallocated,
                    ..Default::default()
                };
                let log = raftlog::FileEngine::open_with(&files, cfg).map_err(|e| {
                    Error::Unavailable(format!(
                        "cannot open the raft log in {}: {e}",
                        files.display()
                    ))
                })?;
                Arc::new(crate::raft_engine::FaultInjected(log))
            }
        };
        Ok(Engines {
            kv: open_engine(&kv_path, &Cf::ALL)?,
            raft_log,
            kv_path,
            raft_path,
        })
    }

    /// Flushes memtables and the WAL of both engines to disk.
    pub fn flush(&self) -> Result<()> {
        check_disk()?;
        self.kv.flush_wal(true)?;
        self.kv.flush()?;
        self.raft_log
            .flush()
            .map_err(|e| Error::Io(format!("flushing the raft log: {e}")))
    }
}

fn cf_handle(db: &DB, cf: Cf) -> Result<&rocksdb::ColumnFamily> {
    db.cf_handle(cf.name())
        .ok_or_else(|| Error::UnknownCf(cf.name().to_string()))
}

/// Reads a value from `cf`.
pub fn get_cf(db: &DB, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
    check_disk()?;
    Ok(db.get_cf(cf_handle(db, cf)?, key)?)
}

/// Reads and decodes a protobuf message stored in the default CF.
pub fn get_msg<M: Message + Default>(db: &DB, key: &[u8]) -> Result<Option<M>> {
    check_disk()?;
    match db.get(key)? {
        None => Ok(None),
        Some(bytes) => decode_msg(&bytes).map(Some),
    }
}

fn decode_msg<M: Message + Default>(bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::Corrupt {
        what: std::any::type_name::<M>(),
        reason: e.to_string(),
    })
}

/// A batch of writes across column families, applied atomically.
pub struct WriteBatch {
    db: Arc<DB>,
    inner: rocksdb::WriteBatch,
}

impl WriteBatch {
    /// An empty batch for `db`.
    pub fn new(db: &Arc<DB>) -> WriteBatch {
        WriteBatch {
            db: db.clone(),
            inner: rocksdb::WriteBatch::default(),
        }
    }

    /// Puts `value` at `key` in `cf`.
    pub fn put_cf(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner.put_cf(cf_handle(&self.db, cf)?, key, value);
        Ok(())
    }

    /// Deletes `key` from `cf`.
    pub fn delete_cf(&mut self, cf: Cf, key: &[u8]) -> Result<()> {
        self.inner.delete_cf(cf_handle(&self.db, cf)?, key);
        Ok(())
    }

    /// Deletes every key in `[from, to)` of `cf`.
    pub fn delete_range_cf(&mut self, cf: Cf, from: &[u8], to: &[u8]) -> Result<()> {
        self.inner
            .delete_range_cf(cf_handle(&self.db, cf)?, from, to);
        Ok(())
    }

    /// Puts an encoded protobuf message at `key` in the default CF.
    pub fn put_msg<M: Message>(&mut self, key: &[u8], msg: &M) {
        self.inner.put(key, msg.encode_to_vec());
    }

    /// Puts raw bytes at `key` in the default CF.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.inner.put(key, value);
    }

    /// Deletes `key` from the default CF.
    pub fn delete(&mut self, key: &[u8]) {
        self.inner.delete(key);
    }

    /// Number of operations in the batch.
    pub fn count(&self) -> usize {
        self.inner.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Size of the batch's encoding in bytes.
    pub fn data_size(&self) -> usize {
        self.inner.size_in_bytes()
    }

    /// Writes the batch atomically; with `sync` the WAL is fsynced before returning. The batch is
    /// left empty for reuse.
    pub fn write(&mut self, sync: bool) -> Result<()> {
        check_disk()?;
        if sync {
            maybe_slow_sync();
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(sync);
        let batch = std::mem::take(&mut self.inner);
        if lose_unsynced() {
            return self.write_losable(batch, opts, sync);
        }
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    /// A write under [`crate::fault::LOSE_UNSYNCED_ENV`]: unsynced, into the memtable only;
    /// synced, after flushing the memtables that hold earlier unsynced writes.
    fn write_losable(
        &self,
        batch: rocksdb::WriteBatch,
        mut opts: rocksdb::WriteOptions,
        sync: bool,
    ) -> Result<()> {
        let id = Arc::as_ptr(&self.db) as usize;
        let mut unflushed = unflushed().lock().unwrap_or_else(|e| e.into_inner());
        if !sync {
            opts.disable_wal(true);
            self.db.write_opt(batch, &opts)?;
            unflushed.insert(id);
            return Ok(());
        }
        if unflushed.remove(&id) {
            let cfs: Vec<_> = Cf::ALL
                .iter()
                .filter_map(|cf| self.db.cf_handle(cf.name()))
                .collect();
            self.db
                .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        }
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }
}

/// A consistent point-in-time view of an engine that owns its engine handle, so it can move to
/// another thread and outlive the code that took it.
pub struct EngineSnapshot {
    // Declared before `db`: fields drop in order, so the snapshot is released before the handle
    // that keeps the DB alive.
    snap: Snapshot<'static>,
    db: Arc<DB>,
}

impl EngineSnapshot {
    /// Takes a snapshot of `db` now.
    pub fn new(db: &Arc<DB>) -> EngineSnapshot {
        let db = db.clone();
        let snap = db.snapshot();
        // SAFETY: the snapshot borrows the DB that `db` keeps alive on the heap; the DB does not
        // move when the Arc moves, and `snap` is dropped before `db` (field order above), so the
        // borrow never outlives the DB.
        let snap = unsafe { std::mem::transmute::<Snapshot<'_>, Snapshot<'static>>(snap) };
        EngineSnapshot { snap, db }
    }

    /// Reads a value from `cf` as of the snapshot.
    pub fn get_cf(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_disk()?;
        Ok(self.snap.get_cf(cf_handle(&self.db, cf)?, key)?)
    }

    /// Reads and decodes a protobuf message from the default CF as of the snapshot.
    pub fn get_msg<M: Message + Default>(&self, key: &[u8]) -> Result<Option<M>> {
        check_disk()?;
        match self.snap.get(key)? {
            None => Ok(None),
            Some(bytes) => decode_msg(&bytes).map(Some),
        }
    }

    /// A raw iterator over `cf` restricted to `[lower, upper)`.
    pub fn iter_cf(&self, cf: Cf, lower: Vec<u8>, upper: Vec<u8>) -> Result<DBRawIterator<'_>> {
        check_disk()?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(lower);
        opts.set_iterate_upper_bound(upper);
        Ok(self
            .snap
            .raw_iterator_cf_opt(cf_handle(&self.db, cf)?, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data dir keeps the raft-log engine it was created with: opened with the other, it is
    /// refused with an error naming the right setting, not started on an empty raft log (which
    /// would look like a store that lost every region's log).
    #[test]
    fn a_data_dir_keeps_its_raft_log_engine_1() {
        for (made, other, hint) in [
            (
                RaftLogKind::RocksDb,
                RaftLogKind::File,
                "raft_engine = \"rocksdb\"",
            ),
            (
                RaftLogKind::File,
                RaftLogKind::RocksDb,
                "raft_engine = \"file\"",
            ),
            (
                RaftLogKind::FilePreallocated,
                RaftLogKind::RocksDb,
                "raft_engine = \"file\"",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let engines = Engines::open_with(dir.path(), made).unwrap();
            let mut batch = raftlog::LogBatch::new();
            batch.put_state(1, b"state".to_vec());
            engines.raft_log.write(&batch, true).unwrap();
            drop(engines);
            let err = match Engines::open_with(dir.path(), other) {
                Ok(_) => panic!("{made:?} dir opened as {other:?}"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(hint), "{err}");
            let engines = Engines::open_with(dir.path(), made).unwrap();
            assert_eq!(engines.raft_log.raft_state(1).unwrap().unwrap(), b"state");
        }
    }

    /// The options RocksDB recorded for the engine in `dir` (its newest OPTIONS file).
    fn recorded_options(dir: &Path) -> String {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("OPTIONS-")
            })
            .collect();
        files.sort();
        std::fs::read_to_string(files.last().expect("an OPTIONS file")).unwrap()
    }

    #[test]
    fn each_engine_is_tuned_for_what_it_holds_1() {
        let dir = tempfile::tempdir().unwrap();
        let engines = Engines::open(dir.path()).unwrap();
        let raft = recorded_options(&engines.raft_path);
        assert!(raft.contains("\n  compression=kNoCompression\n"), "{raft}");
        let kv = recorded_options(&engines.kv_path);
        let per_level = "compression_per_level=kNoCompression:kNoCompression:kLZ4Compression";
        assert_eq!(kv.matches(per_level).count(), Cf::ALL.len(), "{kv}");
    }
}
