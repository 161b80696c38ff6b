//! Shared fixtures: a "store" (kv engine + snapshot manager in a temp dir), regions, data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kv::keys::{data_end_key, data_key};
use kv::{Cf, EngineSnapshot, WriteBatch};
use proto::metapb::Region;
use rand::{Rng, SeedableRng};
use rocksdb::DB;
use snap::{BuiltSnapshot, SnapConfig, SnapKey, SnapKind, SnapManager};
use tempfile::TempDir;

/// A kv engine and a snapshot manager side by side, as one store has them.
pub struct Store {
    pub dir: TempDir,
    pub db: Arc<DB>,
    pub mgr: SnapManager,
}

impl Store {
    pub fn new() -> Store {
        Store::with_config(SnapConfig::default())
    }

    pub fn with_config(config: SnapConfig) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let db = kv::engine::open_engine(&dir.path().join("kv"), &Cf::ALL).unwrap();
        let mgr = SnapManager::open(dir.path().join("snap"), config).unwrap();
        Store { dir, db, mgr }
    }

    pub fn snap_dir(&self) -> PathBuf {
        self.dir.path().join("snap")
    }

    /// Reopens the manager over the same directory, as a restart does.
    pub fn restart_manager(&mut self) {
        self.mgr = SnapManager::open(self.snap_dir(), SnapConfig::default()).unwrap();
    }

    /// Closes and reopens the kv engine, as a restart does. RocksDB locks its directory, so the
    /// old handle must be gone first: a scratch engine stands in for the moment between.
    pub fn restart_engine(&mut self) {
        let scratch = kv::engine::open_engine(&self.dir.path().join("scratch"), &Cf::ALL).unwrap();
        let old = std::mem::replace(&mut self.db, scratch);
        assert_eq!(Arc::strong_count(&old), 1, "an engine handle is still held");
        drop(old);
        self.db = kv::engine::open_engine(&self.dir.path().join("kv"), &Cf::ALL).unwrap();
    }

    pub fn put(&self, cf: Cf, key: &[u8], value: &[u8]) {
        let mut wb = WriteBatch::new(&self.db);
        wb.put_cf(cf, &data_key(key), value).unwrap();
        wb.write(false).unwrap();
    }

    /// Every (user key, value) of `cf` in `[start, end)` (empty end: unbounded).
    pub fn dump(&self, cf: Cf, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let snap = EngineSnapshot::new(&self.db);
        let mut it = snap
            .iter_cf(cf, data_key(start), data_end_key(end))
            .unwrap();
        it.seek_to_first();
        let mut out = Vec::new();
        while it.valid() {
            out.push((
                it.key().unwrap()[1..].to_vec(),
                it.value().unwrap().to_vec(),
            ));
            it.next();
        }
        it.status().unwrap();
        out
    }

    /// All CFs' data in `[start, end)`.
    pub fn dump_all(&self, start: &[u8], end: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        Cf::ALL
            .iter()
            .map(|cf| self.dump(*cf, start, end))
            .collect()
    }

    pub fn build(&self, key: SnapKey, region: &Region) -> BuiltSnapshot {
        self.mgr
            .build(key, &EngineSnapshot::new(&self.db), region)
            .unwrap()
    }

    /// Path of a CF file of snapshot `key`.
    pub fn cf_file(&self, kind: SnapKind, key: SnapKey, cf: Cf) -> PathBuf {
        let prefix = match kind {
            SnapKind::Generated => "gen",
            SnapKind::Received => "rev",
        };
        self.snap_dir()
            .join(format!("{prefix}_{key}_{}.sst", cf.name()))
    }

    /// Names of the files in the snapshot directory, sorted.
    pub fn snap_files(&self) -> Vec<String> {
        list(&self.snap_dir())
    }
}

pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn region(id: u64, start: &[u8], end: &[u8]) -> Region {
    Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        ..Default::default()
    }
}

/// A seeded generator; the seed is printed so a failure can be replayed.
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    println!("seed {seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Writes `n` keys `{prefix}{i:06}` with random values of `len` bytes to every CF.
pub fn fill(store: &Store, prefix: &str, n: usize, len: usize, seed: u64) {
    let mut r = rng(seed);
    let mut wb = WriteBatch::new(&store.db);
    for i in 0..n {
        let key = format!("{prefix}{i:06}");
        for cf in Cf::ALL {
            let value: Vec<u8> = (0..len).map(|_| r.gen()).collect();
            wb.put_cf(cf, &data_key(key.as_bytes()), &value).unwrap();
        }
        if wb.data_size() > 4 << 20 {
            wb.write(false).unwrap();
        }
    }
    wb.write(false).unwrap();
}

/// Builds `key` of `region` on `from` and moves it to `to` through the chunked transfer.
pub fn build_and_transfer(
    from: &Store,
    to: &Store,
    key: SnapKey,
    region: &Region,
) -> BuiltSnapshot {
    let built = from.build(key, region);
    let meta = snap::transfer(&from.mgr, &to.mgr, key, 4096).unwrap();
    assert_eq!(meta, built.meta);
    built
}
