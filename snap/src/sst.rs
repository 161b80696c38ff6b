//! Between the kv engine and a snapshot's SST files.
//!
//! Build: one SST per non-empty CF over the region's data keys from a kv-engine snapshot, then
//! the meta file that commits them.
//!
//! Apply: verify, clear the region's range in every CF, ingest the CF files. Idempotent by
//! construction: the range delete removes whatever a previous, interrupted apply ingested, and
//! ingestion goes through a hard link so the snapshot's own files survive it. A crash anywhere in
//! the middle is recovered by calling apply again with the same snapshot.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kv::keys::{data_end_key, data_key};
use kv::{Cf, EngineSnapshot, WriteBatch};
use proto::metapb::Region;
use proto::raft_serverpb::{RaftSnapshotData, SnapshotMeta};
use rocksdb::{IngestExternalFileOptions, Options, SstFileWriter, DB};

use crate::error::{engine_err, io_err, Error, Result};
use crate::key::{SnapKey, SnapKind};
use crate::meta::{
    cf_file, cf_path, file_md5, ingest_path, remove_if_exists, sync_and_rename, sync_dir, tmp_path,
    validate, verify, write_meta, EMPTY_MD5,
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
        remove_if_exists(&path)?;
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

/// What applying a snapshot did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// CF files ingested (empty CFs have none).
    pub files: usize,
    /// Bytes of SST ingested.
    pub size: u64,
}

/// Gives RocksDB a path it may consume: with `move_files` it takes over (and removes) the path it
/// is given, so it gets a hard link, or a copy where links are not possible.
fn ingest_link(src: &Path) -> Result<PathBuf> {
    let link = ingest_path(src);
    remove_if_exists(&link)?;
    if fs::hard_link(src, &link).is_err() {
        fs::copy(src, &link).map_err(io_err("copy", src))?;
    }
    Ok(link)
}

/// Verifies `key`'s files against `meta`, then replaces `region`'s data in `db` with them.
pub(crate) fn apply_files(
    dir: &Path,
    kind: SnapKind,
    key: SnapKey,
    meta: &SnapshotMeta,
    db: &Arc<DB>,
    region: &Region,
) -> Result<ApplyStats> {
    // Never apply bad data: a checksum error here makes the caller fetch a new snapshot.
    verify(dir, kind, key, meta)?;
    let entries = validate(key, meta)?;
    let start = data_key(&region.start_key);
    let end = data_end_key(&region.end_key);

    // One synced batch: after it, the range is empty in every CF, whatever was there before
    // (the peer's stale data, or a previous attempt's ingested files).
    let mut wb = WriteBatch::new(db);
    for cf in Cf::ALL {
        wb.delete_range_cf(cf, &start, &end)?;
    }
    wb.write(true)?;

    let mut opts = IngestExternalFileOptions::default();
    opts.set_move_files(true);
    let mut stats = ApplyStats::default();
    for e in entries.iter().filter(|e| e.size > 0) {
        let handle = db
            .cf_handle(e.cf.name())
            .ok_or_else(|| Error::Kv(kv::Error::UnknownCf(e.cf.name().to_string())))?;
        let link = ingest_link(&cf_path(dir, kind, key, e.cf))?;
        let res = db.ingest_external_file_cf_opts(&handle, &opts, vec![&link]);
        // RocksDB removes the link on success in most versions; make sure of it either way.
        remove_if_exists(&link)?;
        res.map_err(engine_err("ingest sst"))?;
        stats.files += 1;
        stats.size += e.size;
    }
    tracing::info!(region_id = key.region_id, %key, files = stats.files, size = stats.size, "snapshot applied");
    Ok(stats)
}
