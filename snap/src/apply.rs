//! Applying a verified snapshot to a kv engine: clear the region's range in every CF, then ingest
//! the CF files.
//!
//! Idempotent by construction: the range delete removes whatever a previous, interrupted apply
//! ingested, and ingestion goes through a hard link so the snapshot's own files survive it. A crash
//! anywhere in the middle is recovered by calling apply again with the same snapshot.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kv::keys::{data_end_key, data_key};
use kv::{Cf, WriteBatch};
use proto::metapb::Region;
use proto::raft_serverpb::SnapshotMeta;
use rocksdb::{IngestExternalFileOptions, DB};

use crate::error::{engine_err, io_err, Error, Result};
use crate::key::{SnapKey, SnapKind, INGEST_SUFFIX};
use crate::meta::{cf_path, validate, verify};

/// What applying a snapshot did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// CF files ingested (empty CFs have none).
    pub files: usize,
    /// Bytes of SST ingested.
    pub size: u64,
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Gives RocksDB a path it may consume: with `move_files` it takes over (and removes) the path it
/// is given, so it gets a hard link, or a copy where links are not possible.
fn ingest_link(src: &Path) -> Result<PathBuf> {
    let mut s = src.as_os_str().to_owned();
    s.push(INGEST_SUFFIX);
    let link = PathBuf::from(s);
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
