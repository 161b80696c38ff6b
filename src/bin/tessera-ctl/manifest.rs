//! The backup format: a directory of SST files (one per stretch of keys a region served) and
//! the manifest that commits them.
//!
//! ```text
//! DIR/backupmeta            tessera-backup 1 md5=<md5 of the JSON below, hex>\n<JSON>
//! DIR/<cluster>-<ts>-<n>-r<region>.sst   the keys of one segment
//! ```
//!
//! In a `txn` backup a file maps each user key to its value at the timestamp; in a `raw` one,
//! to its expiry (8 bytes, big-endian Unix milliseconds, 0: never) followed by its value.
//!
//! The manifest names the source cluster, the timestamp, and the segments in key order; each
//! segment is the range `[start, end)` of user keys one region served (an empty `end`:
//! unbounded), its key count, and its file's size and md5 (a segment without keys has no file).
//! The segments tile the whole key space. The manifest is written last, through a rename, so a
//! backup that did not finish has none; restore checks the manifest's own md5, then every
//! file's size and md5 and the tiling, before it writes anything.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The manifest's file name.
pub const MANIFEST: &str = "backupmeta";
/// The first word of a manifest.
const MAGIC: &str = "tessera-backup";
/// The format this tool writes and reads.
pub const FORMAT: u32 = 1;

/// One segment of keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// First user key of the range (hex).
    pub start: String,
    /// End of the range, exclusive (hex; empty: unbounded).
    pub end: String,
    /// The region that served it.
    pub region_id: u64,
    /// Its file, empty when it has no keys.
    pub file: String,
    /// Keys in it.
    pub keys: u64,
    /// File size in bytes.
    pub size: u64,
    /// md5 of the file (hex).
    pub md5: String,
}

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// What kind of data: `txn` (the values visible at `ts`) or `raw` (the raw key space, `ts`
    /// taken when the backup began).
    pub kind: String,
    /// The cluster the backup was taken from.
    pub cluster_id: u64,
    /// The timestamp the backup reads at.
    pub ts: u64,
    /// When it was taken (Unix milliseconds).
    pub created_unix_ms: u64,
    /// The tool that wrote it (`--version`).
    pub tool_version: String,
    /// Keys in all segments.
    pub keys: u64,
    /// Key and value bytes in all segments.
    pub kv_bytes: u64,
    /// The segments, in key order.
    pub segments: Vec<Segment>,
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lower-case or upper-case hex `s`.
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return Err(format!("{s:?} is not hex"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("{s:?} is not hex")))
        .collect()
}

/// Writes `path` through `path.tmp`, synced, then renamed into place.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))?;
    snap::sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(|e| e.to_string())
}

/// Size and md5 (hex) of the file at `path`, read in one streaming pass.
pub fn file_md5(path: &Path) -> Result<(u64, String), snap::Error> {
    let (size, sum) = snap::file_md5(path)?;
    Ok((size, hex(&sum)))
}

impl Manifest {
    /// The manifest file's bytes: the header line with the body's md5, then the body.
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        let mut out = format!("{MAGIC} {FORMAT} md5={:x}\n", md5::compute(&body)).into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Reads a manifest file's bytes, checking its header and md5.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        let not_one = "not a Tessera backup manifest";
        let nl = bytes.iter().position(|b| *b == b'\n').ok_or(not_one)?;
        let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| not_one)?;
        let body = &bytes[nl + 1..];
        let mut words = header.split(' ');
        if words.next() != Some(MAGIC) {
            return Err(not_one.to_string());
        }
        let format = words.next().and_then(|w| w.parse::<u32>().ok());
        if format != Some(FORMAT) {
            return Err(format!(
                "backup format {} is not the one this tool reads ({FORMAT})",
                words_or(format)
            ));
        }
        let want = words
            .next()
            .and_then(|w| w.strip_prefix("md5="))
            .ok_or(not_one)?;
        let got = format!("{:x}", md5::compute(body));
        if want != got {
            return Err(format!(
                "the manifest is corrupt: its md5 is {got}, its header says {want}"
            ));
        }
        let m: Manifest = serde_json::from_slice(body)
            .map_err(|e| format!("the manifest does not parse: {e}"))?;
        if m.format != FORMAT || !["txn", "raw"].contains(&m.kind.as_str()) {
            return Err(format!(
                "the manifest says format {} kind {:?}; this tool reads format {FORMAT}, kinds \
                 \"txn\" and \"raw\"",
                m.format, m.kind
            ));
        }
        m.check_tiling()?;
        Ok(m)
    }

    /// Checks that the segments cover the whole key space in order, each once, and that the
    /// totals add up.
    fn check_tiling(&self) -> Result<(), String> {
        let mut expect = String::new();
        for (i, s) in self.segments.iter().enumerate() {
            let last = i + 1 == self.segments.len();
            if s.start != expect || (s.end.is_empty() && !last) || (last && !s.end.is_empty()) {
                return Err(format!(
                    "the manifest's segments do not cover the key space: segment {i} is \
                     [{:?}, {:?}) after one ending at {expect:?}",
                    s.start, s.end
                ));
            }
            if s.keys == 0 && !s.file.is_empty() || s.keys > 0 && s.file.is_empty() {
                return Err(format!("segment {i} names a file only if it has keys"));
            }
            unhex(&s.start)?;
            unhex(&s.end)?;
            expect = s.end.clone();
        }
        if self.segments.is_empty() {
            return Err("the manifest lists no segments".to_string());
        }
        let keys: u64 = self.segments.iter().map(|s| s.keys).sum();
        if keys != self.keys {
            return Err(format!(
                "the manifest's segments hold {keys} keys, its total says {}",
                self.keys
            ));
        }
        Ok(())
    }

    /// The manifest of the backup in `dir`.
    pub fn read(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(MANIFEST);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{} has no {MANIFEST}: not a backup, or one that did not finish",
                    dir.display()
                ))
            }
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        Manifest::decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks every segment's file in `dir` against its size and md5.
    pub fn verify_files(&self, dir: &Path) -> Result<(), String> {
        for s in self.segments.iter().filter(|s| !s.file.is_empty()) {
            if s.file.contains('/') || s.file.starts_with('.') {
                return Err(format!(
                    "the manifest names a file outside the backup: {:?}",
                    s.file
                ));
            }
            let path = dir.join(&s.file);
            let (size, sum) = file_md5(&path).map_err(|e| match &e {
                snap::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    format!("{} is missing: the backup is partial", path.display())
                }
                _ => e.to_string(),
            })?;
            if size != s.size || sum != s.md5 {
                return Err(format!(
                    "{} is corrupt or from another backup: {size} bytes with md5 {sum}, the \
                     manifest says {} bytes with md5 {}",
                    path.display(),
                    s.size,
                    s.md5
                ));
            }
        }
        Ok(())
    }
}

fn words_or(format: Option<u32>) -> String {
    format.map_or_else(|| "(unreadable)".to_string(), |f| f.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(start: &str, end: &str, keys: u64) -> Segment {
        Segment {
            start: start.into(),
            end: end.into(),
            region_id: 2,
            file: if keys > 0 {
                format!("f{start}.sst")
            } else {
                String::new()
            },
            keys,
            size: 10,
            md5: "00".into(),
        }
    }

    fn manifest(segments: Vec<Segment>) -> Manifest {
        Manifest {
            format: FORMAT,
            kind: "txn".into(),
            cluster_id: 7,
            ts: 42,
            created_unix_ms: 1,
            tool_version: "t".into(),
            keys: segments.iter().map(|s| s.keys).sum(),
            kv_bytes: 0,
            segments,
        }
    }

    #[test]
    fn a_manifest_reads_back_and_any_changed_byte_is_refused() {
        let m = manifest(vec![segment("", "6b", 3), segment("6b", "", 0)]);
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                Manifest::decode(&bad).is_err(),
                "byte {i} flipped was accepted"
            );
        }
        let err = Manifest::decode(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn segments_that_leave_a_gap_or_overlap_are_refused() {
        for segs in [
            vec![segment("", "6b", 1), segment("6c", "", 1)],
            vec![segment("01", "", 1)],
            vec![segment("", "6b", 1)],
            vec![segment("", "", 1), segment("", "", 1)],
            vec![],
        ] {
            let m = manifest(segs.clone());
            let err = Manifest::decode(&m.encode()).unwrap_err();
            assert!(
                err.contains("segment") || err.contains("no segments"),
                "{segs:?}: {err}"
            );
        }
        let mut m = manifest(vec![segment("", "", 2)]);
        m.keys = 3;
        assert!(Manifest::decode(&m.encode()).unwrap_err().contains("total"));
    }

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        assert_eq!(unhex(&hex(b"\x00\xffab")).unwrap(), b"\x00\xffab");
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }
}
