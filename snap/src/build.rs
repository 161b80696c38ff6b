//! Building a snapshot's files from a kv-engine snapshot: one SST per non-empty CF over the
//! region's data keys, then the meta file that commits them.

use std::fs;
use std::path::{Path, PathBuf};

use kv::keys::{data_end_key, data_key};
use kv::{Cf, EngineSnapshot};
use proto::metapb::Region;
use proto::raft_serverpb::{RaftSnapshotData, SnapshotMeta};
use rocksdb::{Options, SstFileWriter};

use crate::error::{engine_err, io_err, Result};
use crate::key::{SnapKey, SnapKind};
use crate::meta::{
    cf_file, cf_path, file_md5, sync_and_rename, sync_dir, tmp_path, write_meta, EMPTY_MD5,
};

/// What building a snapshot produced.
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltSnapshot {
    /// The snapshot.
    pub key: SnapKey,
    /// Each CF file's size and md5, in `Cf::ALL` order; what the receiver verifies against.
    pub meta: SnapshotMeta,
    /// Total size of the CF files in bytes.
    pub size: u64,
    /// Key-value pairs written, all CFs together.
    pub keys: u64,
    /// Key and value bytes written before SST encoding and compression.
    pub kv_bytes: u64,
}

impl BuiltSnapshot {
    /// The payload raft carries in `eraftpb::Snapshot.data` for this snapshot of `region`.
    pub fn to_raft_snapshot_data(&self, region: &Region) -> RaftSnapshotData {
        RaftSnapshotData {
            region: Some(region.clone()),
            file_size: self.size,
            data: Vec::new(),
            meta: Some(self.meta.clone()),
        }
    }
}

/// Removes the listed files when dropped unless disarmed, so a failed build leaves no debris.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            // Best effort: a leftover is also removed by the next start-up or GC.
            let _ = fs::remove_file(p);
        }
    }
}

/// Options of the SST writer: LZ4 like the kv engine, so an ingested file needs no rewrite and a
/// snapshot costs about what the region costs on disk.
fn sst_options() -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts
}

/// Writes `cf`'s keys in `[lower, upper)` to `path` (via `.tmp`); returns (keys, kv bytes, file
/// size, md5). An empty range writes no file, because RocksDB refuses to finish an empty SST.
fn build_cf(
    snap: &EngineSnapshot,
    cf: Cf,
    lower: &[u8],
    upper: &[u8],
    path: &Path,
    cleanup: &mut Cleanup,
) -> Result<(u64, u64, u64, [u8; 16])> {
    let tmp = tmp_path(path);
    let opts = sst_options();
    let mut writer = SstFileWriter::create(&opts);
    let mut iter = snap.iter_cf(cf, lower.to_vec(), upper.to_vec())?;
    iter.seek_to_first();
    let (mut keys, mut kv_bytes) = (0u64, 0u64);
    let mut opened = false;
    while iter.valid() {
        let (Some(k), Some(v)) = (iter.key(), iter.value()) else {
            break;
        };
        if !opened {
            cleanup.0.push(tmp.clone());
            writer.open(&tmp).map_err(engine_err("open sst writer"))?;
            opened = true;
        }
        writer.put(k, v).map_err(engine_err("write sst"))?;
        keys += 1;
        kv_bytes += (k.len() + v.len()) as u64;
        iter.next();
    }
    iter.status()
        .map_err(engine_err("iterate engine snapshot"))?;
    if !opened {
        return Ok((0, 0, 0, EMPTY_MD5));
    }
    writer.finish().map_err(engine_err("finish sst"))?;
    drop(writer);
    let (size, sum) = file_md5(&tmp)?;
    cleanup.0.push(path.to_path_buf());
    sync_and_rename(&tmp, path)?;
    Ok((keys, kv_bytes, size, sum))
}

/// Builds `key`'s files in `dir` from `snap` over `region`'s range. Any previous files with the
/// same names are overwritten; on error every file written so far is removed.
pub(crate) fn build_files(
    dir: &Path,
    kind: SnapKind,
    key: SnapKey,
    snap: &EngineSnapshot,
    region: &Region,
) -> Result<BuiltSnapshot> {
    let lower = data_key(&region.start_key);
    let upper = data_end_key(&region.end_key);
    let mut cleanup = Cleanup(Vec::new());
    let mut meta = SnapshotMeta::default();
    let (mut size, mut keys, mut kv_bytes) = (0, 0, 0);
    for cf in Cf::ALL {
        let path = cf_path(dir, kind, key, cf);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
        let (k, b, s, sum) = build_cf(snap, cf, &lower, &upper, &path, &mut cleanup)?;
        meta.cf_files.push(cf_file(cf, s, sum));
        size += s;
        keys += k;
        kv_bytes += b;
    }
    sync_dir(dir)?;
    write_meta(dir, kind, key, &meta)?;
    cleanup.0.clear();
    tracing::info!(region_id = key.region_id, %key, size, keys, "snapshot built");
    Ok(BuiltSnapshot {
        key,
        meta,
        size,
        keys,
        kv_bytes,
    })
}
