//! The file naming scheme of a manager's directory: the names of a snapshot's files, and their
//! parsing back into a [`SnapKey`] and [`SnapKind`] (with `SnapKey`'s `FromStr`).
//!
//! ```text
//! gen_<region>_<term>_<index>_<cf>.sst   one per non-empty CF of a snapshot this store generated
//! rev_<region>_<term>_<index>_<cf>.sst   the same, received from another store
//! gen_<region>_<term>_<index>.meta       the encoded SnapshotMeta; written last, so its presence
//!                                        means every CF file is complete
//! <any of the above>.tmp                 still being written; renamed atomically when complete
//! <cf file>.ingest                       a hard link handed to RocksDB for ingestion
//! ```
//! Everything but complete `.sst`/`.meta` pairs is a leftover that start-up removes.

use std::str::FromStr;

use kv::Cf;

use crate::error::Error;
use crate::key::{SnapKey, SnapKind};

impl FromStr for SnapKey {
    type Err = Error;

    /// Parses the `region_term_index` form written by `Display`.
    fn from_str(s: &str) -> Result<SnapKey, Error> {
        let bad = || Error::BadName(s.to_string());
        let mut parts = s.split('_');
        let mut next = || -> Result<u64, Error> {
            parts
                .next()
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or_else(bad)
        };
        let key = SnapKey::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(key)
    }
}

pub(crate) const TMP_SUFFIX: &str = ".tmp";
pub(crate) const INGEST_SUFFIX: &str = ".ingest";

/// File name of `key`'s CF file.
pub(crate) fn cf_file_name(kind: SnapKind, key: SnapKey, cf: Cf) -> String {
    format!("{}_{}_{}.sst", kind.prefix(), key, cf.name())
}

/// File name of `key`'s meta file.
pub(crate) fn meta_file_name(kind: SnapKind, key: SnapKey) -> String {
    format!("{}_{}.meta", kind.prefix(), key)
}

/// What a file in the snapshot directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ParsedName {
    pub kind: SnapKind,
    pub key: SnapKey,
    /// `None` for the meta file.
    pub cf: Option<Cf>,
    /// The name ends with `.tmp` or `.ingest`: never part of a complete snapshot.
    pub transient: bool,
}

/// Parses a file name of the snapshot directory; `None` for names this crate never writes.
pub(crate) fn parse_file_name(name: &str) -> Option<ParsedName> {
    let (base, transient) = if let Some(b) = name.strip_suffix(TMP_SUFFIX) {
        (b, true)
    } else if let Some(b) = name.strip_suffix(INGEST_SUFFIX) {
        (b, true)
    } else {
        (name, false)
    };
    let (stem, is_meta) = if let Some(s) = base.strip_suffix(".meta") {
        (s, true)
    } else {
        (base.strip_suffix(".sst")?, false)
    };
    let (prefix, rest) = stem.split_once('_')?;
    let kind = SnapKind::from_prefix(prefix)?;
    if is_meta {
        let key = rest.parse().ok()?;
        return Some(ParsedName {
            kind,
            key,
            cf: None,
            transient,
        });
    }
    let (key, cf) = rest.rsplit_once('_')?;
    Some(ParsedName {
        kind,
        key: key.parse().ok()?,
        cf: Some(Cf::from_name(cf).ok().filter(|_| !cf.is_empty())?),
        transient,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_display_round_trips_2c() {
        let k = SnapKey::new(1, 5, 10);
        assert_eq!(k.to_string(), "1_5_10");
        assert_eq!("1_5_10".parse::<SnapKey>().unwrap(), k);
        for bad in ["", "1_5", "1_5_10_2", "a_5_10", "1__10", "-1_5_10"] {
            assert!(bad.parse::<SnapKey>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn file_names_parse_back_2c() {
        let k = SnapKey::new(7, 3, 42);
        for kind in [SnapKind::Generated, SnapKind::Received] {
            for cf in Cf::ALL {
                let name = cf_file_name(kind, k, cf);
                let p = parse_file_name(&name).unwrap();
                assert_eq!(
                    (p.kind, p.key, p.cf, p.transient),
                    (kind, k, Some(cf), false)
                );
                let p = parse_file_name(&format!("{name}{TMP_SUFFIX}")).unwrap();
                assert!(p.transient);
                let p = parse_file_name(&format!("{name}{INGEST_SUFFIX}")).unwrap();
                assert!(p.transient);
            }
            let p = parse_file_name(&meta_file_name(kind, k)).unwrap();
            assert_eq!((p.kind, p.key, p.cf), (kind, k, None));
        }
        assert_eq!(
            cf_file_name(SnapKind::Received, k, Cf::Write),
            "rev_7_3_42_write.sst"
        );
        assert_eq!(meta_file_name(SnapKind::Generated, k), "gen_7_3_42.meta");
        for junk in [
            "LOCK",
            "gen_1_2.meta",
            "xyz_1_2_3.meta",
            "gen_1_2_3_.sst",
            "gen_1_2_3_foo.sst",
        ] {
            assert_eq!(parse_file_name(junk), None, "{junk}");
        }
    }
}
