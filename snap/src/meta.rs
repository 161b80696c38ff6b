//! The meta file (an encoded `SnapshotMeta`), its validation, and the file-level checks every
//! other part relies on: md5 of a file, verification against a meta, durable atomic writes.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kv::Cf;
use prost::Message;
use proto::raft_serverpb::{SnapshotCfFile, SnapshotMeta};

use crate::error::{io_err, Error, Result};
use crate::key::{SnapKey, SnapKind};
use crate::name::{cf_file_name, meta_file_name, INGEST_SUFFIX, TMP_SUFFIX};

/// md5 of zero bytes: the checksum recorded for an empty CF, which has no file.
pub(crate) const EMPTY_MD5: [u8; 16] = [
    0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e,
];

/// One CF entry of a validated meta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CfEntry {
    pub cf: Cf,
    pub size: u64,
    pub checksum: [u8; 16],
}

/// Checks that `meta` names each CF at most once, only known CFs, with 16-byte checksums, and
/// returns its entries in meta order (the order files travel in a transfer).
pub(crate) fn validate(key: SnapKey, meta: &SnapshotMeta) -> Result<Vec<CfEntry>> {
    let invalid = |reason: String| Error::InvalidMeta { key, reason };
    let mut out: Vec<CfEntry> = Vec::with_capacity(meta.cf_files.len());
    for f in &meta.cf_files {
        let cf = Cf::from_name(&f.cf)
            .ok()
            .filter(|_| !f.cf.is_empty())
            .ok_or_else(|| invalid(format!("unknown column family {:?}", f.cf)))?;
        if out.iter().any(|e| e.cf == cf) {
            return Err(invalid(format!("column family {:?} listed twice", f.cf)));
        }
        let checksum: [u8; 16] = f.checksum.as_slice().try_into().map_err(|_| {
            invalid(format!(
                "cf {:?}: checksum has {} bytes, not 16",
                f.cf,
                f.checksum.len()
            ))
        })?;
        out.push(CfEntry {
            cf,
            size: f.size,
            checksum,
        });
    }
    Ok(out)
}

/// Builds the meta entry of one CF file.
pub(crate) fn cf_file(cf: Cf, size: u64, checksum: [u8; 16]) -> SnapshotCfFile {
    SnapshotCfFile {
        cf: cf.name().to_string(),
        size,
        checksum: checksum.to_vec(),
    }
}

/// Total size of the CF files `meta` lists.
pub fn meta_total_size(meta: &SnapshotMeta) -> u64 {
    // Sizes come from the network: a forged meta must not overflow the sum.
    meta.cf_files
        .iter()
        .fold(0u64, |total, f| total.saturating_add(f.size))
}

/// Lowercase hex of a digest, for error messages and logs.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Path of `key`'s CF file in `dir`.
pub(crate) fn cf_path(dir: &Path, kind: SnapKind, key: SnapKey, cf: Cf) -> PathBuf {
    dir.join(cf_file_name(kind, key, cf))
}

/// Path of `key`'s meta file in `dir`.
pub(crate) fn meta_path(dir: &Path, kind: SnapKind, key: SnapKey) -> PathBuf {
    dir.join(meta_file_name(kind, key))
}

/// `path` with `.tmp` appended.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

/// `path` with `.ingest` appended: the link RocksDB consumes during apply.
pub(crate) fn ingest_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(INGEST_SUFFIX);
    PathBuf::from(s)
}

/// Removes `path`; a file that is already gone is not an error.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Size and md5 of the file at `path`, read in one streaming pass.
pub fn file_md5(path: &Path) -> Result<(u64, [u8; 16])> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mut ctx = md5::Context::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        ctx.consume(&buf[..n]);
        size += n as u64;
    }
    Ok((size, ctx.finalize().0))
}

/// Fsyncs a directory so the renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Renames `from` to `to` after fsyncing `from`; the caller fsyncs the directory once after a
/// group of renames.
pub(crate) fn sync_and_rename(from: &Path, to: &Path) -> Result<()> {
    File::open(from)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", from))?;
    fs::rename(from, to).map_err(io_err("rename", from))
}

/// Writes `meta` as `key`'s meta file: `.tmp` first, fsync, rename, fsync the directory. The
/// rename is the commit point of the whole snapshot.
pub(crate) fn write_meta(
    dir: &Path,
    kind: SnapKind,
    key: SnapKey,
    meta: &SnapshotMeta,
) -> Result<()> {
    let path = meta_path(dir, kind, key);
    let tmp = tmp_path(&path);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(&meta.encode_to_vec())
        .and_then(|_| f.sync_all())
        .map_err(io_err("write", &tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    sync_dir(dir)
}

/// Reads and validates `key`'s meta file; [`Error::NotFound`] if there is none.
pub(crate) fn read_meta(dir: &Path, kind: SnapKind, key: SnapKey) -> Result<SnapshotMeta> {
    let path = meta_path(dir, kind, key);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound { key, kind })
        }
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let meta = SnapshotMeta::decode(bytes.as_slice()).map_err(|e| Error::InvalidMeta {
        key,
        reason: format!("{}: {e}", path.display()),
    })?;
    validate(key, &meta)?;
    Ok(meta)
}

/// Checks every CF file `meta` lists: present (unless empty), of the recorded size, with the
/// recorded md5. The size is checked first so a truncated file is reported as such, cheaply.
pub(crate) fn verify(dir: &Path, kind: SnapKind, key: SnapKey, meta: &SnapshotMeta) -> Result<()> {
    for e in validate(key, meta)? {
        let cf = e.cf.name().to_string();
        if e.size == 0 {
            if e.checksum != EMPTY_MD5 {
                return Err(Error::Checksum {
                    key,
                    cf,
                    expected: hex(&e.checksum),
                    actual: hex(&EMPTY_MD5),
                });
            }
            continue;
        }
        let path = cf_path(dir, kind, key, e.cf);
        let on_disk = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Missing { key, cf, path })
            }
            Err(err) => return Err(io_err("stat", &path)(err)),
        };
        if on_disk != e.size {
            return Err(Error::Size {
                key,
                cf,
                expected: e.size,
                actual: on_disk,
            });
        }
        let (size, sum) = file_md5(&path)?;
        if size != e.size {
            // The file changed between stat and read: report what was read.
            return Err(Error::Size {
                key,
                cf,
                expected: e.size,
                actual: size,
            });
        }
        if sum != e.checksum {
            return Err(Error::Checksum {
                key,
                cf,
                expected: hex(&e.checksum),
                actual: hex(&sum),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_md5_is_md5_of_nothing_2c() {
        assert_eq!(md5::compute(b"").0, EMPTY_MD5);
    }

    #[test]
    fn validate_rejects_bad_metas_2c() {
        let key = SnapKey::new(1, 1, 1);
        let good = cf_file(Cf::Default, 3, [0; 16]);
        let cases = [
            vec![good.clone(), good.clone()],
            vec![SnapshotCfFile {
                cf: "nope".into(),
                ..good.clone()
            }],
            vec![SnapshotCfFile {
                checksum: vec![1, 2, 3],
                ..good.clone()
            }],
        ];
        for cf_files in cases {
            let err = validate(key, &SnapshotMeta { cf_files }).unwrap_err();
            assert!(matches!(err, Error::InvalidMeta { .. }), "{err}");
        }
        let ok = validate(
            key,
            &SnapshotMeta {
                cf_files: vec![good],
            },
        )
        .unwrap();
        assert_eq!(ok[0].cf, Cf::Default);
    }
}
