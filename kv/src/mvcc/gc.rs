//! MVCC garbage collection: what a GC at a safe point removes.
//!
//! After a GC at safe point `sp`, every read at a timestamp `>= sp` sees what it saw before;
//! reads below `sp` are refused by the caller (they could see a version GC removed). Of each
//! key's versions committed at or before `sp` (newest first):
//!
//! ```text
//!   Rollback / Lock records        removed (they change no value; a transaction that old can
//!                                   no longer prewrite, so a rollback has nothing to stop)
//!   the newest Put                 kept: it is the value every read at >= sp sees below the
//!                                   newer versions
//!   the newest Delete              removed, with everything older: the key reads as absent
//!   everything older than either   removed (and each Put's value in the default CF)
//! ```
//! Versions committed after `sp` are untouched. Locks are not GC's business: the caller makes
//! sure no lock at or below `sp` remains (its transaction may still commit below `sp`).

use crate::engine::Cf;
use crate::error::Result;
use crate::storage::{Modify, StorageReader};

use super::key::{decode_bytes, decode_ts, encode_key, is_version_of};
use codec::record::{Write, WriteKind};

/// What GC removes of one key's versions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyGc {
    /// Commit timestamps of the write records to remove.
    pub writes: Vec<u64>,
    /// Start timestamps of the values (default CF) to remove.
    pub values: Vec<u64>,
}

/// What a GC at `safe_point` removes of `versions`, one key's write records as
/// `(commit_ts, write)`, newest first.
pub fn plan_key(versions: &[(u64, Write)], safe_point: u64) -> KeyGc {
    let mut gc = KeyGc::default();
    let mut settled = false;
    for (commit_ts, write) in versions {
        if *commit_ts > safe_point {
            continue;
        }
        if !settled {
            match write.kind {
                WriteKind::Put => {
                    settled = true;
                    continue;
                }
                WriteKind::Delete => settled = true,
                WriteKind::Rollback | WriteKind::Lock => {}
            }
        } else if write.kind == WriteKind::Put {
            gc.values.push(write.start_ts);
        }
        gc.writes.push(*commit_ts);
    }
    gc
}

/// One step of a region's GC: the removals of the keys it looked at.
#[derive(Debug, Default)]
pub struct GcBatch {
    /// The removals, to be written as one batch.
    pub modifies: Vec<Modify>,
    /// The user key to go on from; `None` when the reader's keys are exhausted.
    pub next: Option<Vec<u8>>,
    /// Keys looked at.
    pub keys: u64,
    /// Versions (write records) removed.
    pub versions: u64,
}

/// Plans the GC at `safe_point` of the keys of `reader` from user key `start` on, until about
/// `max_modifies` removals (a key's removals are never split across batches).
///
/// # Errors
/// A read of the engine failed, or a record does not decode.
pub fn gc_batch(
    reader: &dyn StorageReader,
    start: &[u8],
    safe_point: u64,
    max_modifies: usize,
) -> Result<GcBatch> {
    let mut batch = GcBatch::default();
    let mut it = reader.iter_cf(Cf::Write)?;
    it.seek(&super::key::encode_bytes(start));
    while it.valid()? {
        if batch.modifies.len() >= max_modifies {
            batch.next = Some(decode_bytes(it.key())?.0);
            return Ok(batch);
        }
        let (key, _) = decode_bytes(it.key())?;
        let prefix = super::key::encode_bytes(&key);
        let mut versions = Vec::new();
        while it.valid()? && is_version_of(it.key(), &prefix) {
            versions.push((decode_ts(it.key())?, Write::from_bytes(it.value())?));
            it.next();
        }
        let gc = plan_key(&versions, safe_point);
        batch.keys += 1;
        batch.versions += gc.writes.len() as u64;
        for ts in gc.writes {
            batch.modifies.push(Modify::Delete {
                cf: Cf::Write,
                key: encode_key(&key, ts),
            });
        }
        for ts in gc.values {
            batch.modifies.push(Modify::Delete {
                cf: Cf::Default,
                key: encode_key(&key, ts),
            });
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(kind: WriteKind, start_ts: u64) -> Write {
        Write { kind, start_ts }
    }

    /// The value a read at `ts` sees in `versions` (newest first): the start_ts of the Put that
    /// holds it, or `None` for absent.
    fn visible(versions: &[(u64, Write)], ts: u64) -> Option<u64> {
        for (commit_ts, write) in versions {
            if *commit_ts > ts {
                continue;
            }
            match write.kind {
                WriteKind::Put => return Some(write.start_ts),
                WriteKind::Delete => return None,
                WriteKind::Rollback | WriteKind::Lock => {}
            }
        }
        None
    }

    /// A small deterministic generator, so the property runs without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn reads_at_or_above_the_safe_point_see_the_same_after_gc() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            // A history of up to 8 versions with distinct, increasing timestamps.
            let n = rng.below(9) as usize;
            let mut ts = 0;
            let mut history = Vec::new();
            for _ in 0..n {
                let start = ts + 1 + rng.below(3);
                let commit = start + rng.below(3);
                ts = commit;
                let kind = match rng.below(4) {
                    0 => WriteKind::Put,
                    1 => WriteKind::Delete,
                    2 => WriteKind::Rollback,
                    _ => WriteKind::Lock,
                };
                // A rollback sits at its start timestamp.
                let at = if kind == WriteKind::Rollback {
                    start
                } else {
                    commit
                };
                history.push((at, w(kind, start)));
            }
            history.reverse();
            let sp = rng.below(ts + 2);
            let gc = plan_key(&history, sp);
            let after: Vec<(u64, Write)> = history
                .iter()
                .filter(|(c, _)| !gc.writes.contains(c))
                .copied()
                .collect();
            for read in sp..=ts + 1 {
                assert_eq!(
                    visible(&after, read),
                    visible(&history, read),
                    "history {history:?}, safe point {sp}, read at {read}"
                );
            }
            // Every value GC removes belongs to a removed Put, and no kept Put loses its value.
            for start in &gc.values {
                assert!(history.iter().any(|(c, wr)| wr.start_ts == *start
                    && wr.kind == WriteKind::Put
                    && gc.writes.contains(c)));
            }
            for (c, wr) in &after {
                assert!(
                    wr.kind != WriteKind::Put || !gc.values.contains(&wr.start_ts),
                    "{c}"
                );
            }
            // Nothing newer than the safe point goes; at most one version at or below it
            // stays, and it is a Put.
            assert!(gc.writes.iter().all(|c| *c <= sp));
            let old: Vec<_> = after.iter().filter(|(c, _)| *c <= sp).collect();
            assert!(old.len() <= 1 && old.iter().all(|(_, wr)| wr.kind == WriteKind::Put));
        }
    }

    #[test]
    fn a_delete_at_the_safe_point_takes_everything_older_with_it() {
        let history = vec![
            (9, w(WriteKind::Put, 8)),
            (6, w(WriteKind::Delete, 5)),
            (4, w(WriteKind::Put, 3)),
            (2, w(WriteKind::Rollback, 2)),
        ];
        let gc = plan_key(&history, 7);
        assert_eq!(gc.writes, vec![6, 4, 2]);
        assert_eq!(gc.values, vec![3]);
        let gc = plan_key(&history, 5);
        assert_eq!(gc.writes, vec![2], "the put visible at 5 stays");
        assert!(gc.values.is_empty());
    }
}
