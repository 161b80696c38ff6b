//! The split-check worker: measures a region's data and, when it has grown past
//! `region_max_size`, finds the key to split it at.
//!
//! ```text
//! leader's split-check tick (enough written since the last check)
//!   -> SplitCheckTask { region }            on this worker, off the raft worker
//!   -> walk the region's keys in every CF, merged in key order, summing key + value sizes
//!        split key = first key where the running size reaches region_split_size
//!        stop early once past region_max_size (the size is then "at least" that)
//!   -> PeerMsg::RegionSize { size, keys }   always (for region heartbeats)
//!   -> PeerMsg::SplitRegion { epoch, key }  when the region is over region_max_size
//! ```
//!
//! A transaction's versions of one user key must stay in one region (reads seek from the newest
//! version down), so a split key taken from a version key (`encoded user key + timestamp`) is cut
//! back to the encoded user key: every version of that key goes to the right-hand region.

use kv::{keys, Cf, EngineSnapshot, Engines};
use proto::metapb;

use crate::msg::{PeerMsg, SplitRegion};
use crate::router::Router;
use crate::worker::Runnable;

/// Measure `region` and split it if it is too big.
#[derive(Debug)]
pub(crate) struct SplitCheckTask {
    pub(crate) region: metapb::Region,
    pub(crate) max_size: u64,
    pub(crate) split_size: u64,
}

/// What a walk over a region found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RegionSize {
    /// Bytes of keys and values seen (a lower bound when the walk stopped early).
    pub(crate) size: u64,
    /// Keys seen across the column families.
    pub(crate) keys: u64,
    /// Where to split, when the region is over the maximum size.
    pub(crate) split_key: Option<Vec<u8>>,
}

/// Runs [`SplitCheckTask`]s over the kv engine.
pub(crate) struct SplitCheckRunner {
    engines: Engines,
    router: Router,
}

impl SplitCheckRunner {
    pub(crate) fn new(engines: Engines, router: Router) -> SplitCheckRunner {
        SplitCheckRunner { engines, router }
    }
}

impl Runnable for SplitCheckRunner {
    type Task = SplitCheckTask;

    fn run(&mut self, task: SplitCheckTask) {
        let region = &task.region;
        let snap = EngineSnapshot::new(&self.engines.kv);
        let found = match measure(&snap, region, task.max_size, task.split_size) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(region_id = region.id, error = %e, "split check failed");
                return;
            }
        };
        let msg = PeerMsg::RegionSize {
            size: found.size,
            keys: found.keys,
        };
        if self.router.send(region.id, msg).is_err() {
            return;
        }
        if let Some(split_key) = found.split_key {
            tracing::info!(region_id = region.id, size = found.size,
                split_key = ?String::from_utf8_lossy(&split_key), "region over its size; splitting");
            let msg = PeerMsg::SplitRegion(Box::new(SplitRegion {
                region_epoch: region.region_epoch.unwrap_or_default(),
                split_key,
                callback: crate::Callback::none(),
            }));
            let _ = self.router.send(region.id, msg);
        }
    }
}

/// The user key to split at, given the first key past the split size: a version key is cut back
/// to its user key. `None` when that leaves no valid split point inside the region.
fn split_point(key: &[u8], region: &metapb::Region) -> Option<Vec<u8>> {
    let key = match kv::mvcc::key::decode_bytes(key) {
        Ok((_, rest)) if rest.len() == 8 => &key[..key.len() - 8],
        _ => key,
    };
    crate::util::check_split_key(key, region)
        .is_ok()
        .then(|| key.to_vec())
}

/// Walks `region`'s keys in all CFs of `snap` in key order (a merge of one iterator per CF).
pub(crate) fn measure(
    snap: &EngineSnapshot,
    region: &metapb::Region,
    max_size: u64,
    split_size: u64,
) -> kv::Result<RegionSize> {
    let (lower, upper) = (
        keys::data_key(&region.start_key),
        keys::data_end_key(&region.end_key),
    );
    let mut iters = Vec::with_capacity(Cf::ALL.len());
    for cf in Cf::ALL {
        let mut it = snap.iter_cf(cf, lower.clone(), upper.clone())?;
        it.seek(&lower);
        iters.push(it);
    }
    let mut out = RegionSize::default();
    let mut candidate: Option<Vec<u8>> = None;
    loop {
        // The iterator at the smallest key; CFs are few, so a scan beats a heap.
        let mut next: Option<usize> = None;
        for (i, it) in iters.iter().enumerate() {
            let Some(k) = it.key() else { continue };
            if next.is_none_or(|j| iters[j].key().is_some_and(|kj| k < kj)) {
                next = Some(i);
            }
        }
        let Some(i) = next else { break };
        let it = &mut iters[i];
        let (k, v) = (it.key().unwrap_or_default(), it.value().unwrap_or_default());
        out.size += (k.len() + v.len()) as u64;
        out.keys += 1;
        if candidate.is_none() && out.size >= split_size {
            candidate = split_point(keys::origin_key(k), region);
        }
        it.next();
        if out.size > max_size && candidate.is_some() {
            out.split_key = candidate;
            return Ok(out);
        }
    }
    for it in &iters {
        it.status().map_err(kv::Error::from)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv::WriteBatch;

    fn region(start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn split_key_at_split_size_keeps_versions_together_3b() {
        let dir = tempfile::tempdir().unwrap();
        let engines = Engines::open(dir.path()).unwrap();
        let mut wb = WriteBatch::new(&engines.kv);
        // Raw keys k00..k19, 10-byte values: 14 bytes each with the data prefix.
        for i in 0..20 {
            let k = keys::data_key(format!("k{i:02}").as_bytes());
            wb.put_cf(Cf::Default, &k, &[b'v'; 10]).unwrap();
        }
        // Three versions of one transactional key, in the write CF.
        let user = kv::mvcc::key::encode_bytes(b"t");
        for ts in [7, 8, 9] {
            let k = kv::mvcc::key::encode_key(b"t", ts);
            wb.put_cf(Cf::Write, &keys::data_key(&k), &[b'w'; 40])
                .unwrap();
        }
        wb.write(false).unwrap();
        let snap = EngineSnapshot::new(&engines.kv);

        let all = region(b"", b"");
        let small = measure(&snap, &all, 10_000, 5_000).unwrap();
        assert_eq!(small.keys, 23);
        assert!(small.split_key.is_none());

        // Past 100 bytes at k07 (8 x 14 = 112); over 150 at k10.
        let big = measure(&snap, &all, 150, 100).unwrap();
        assert_eq!(big.split_key.as_deref(), Some(&b"k07"[..]));

        // Only the versions of "t": the split size is reached inside them, and the key is cut
        // back to the encoded user key, which is the region's start: no split point.
        let t_only = region(&user, b"");
        let t = measure(&snap, &t_only, 50, 40).unwrap();
        assert_eq!(t.keys, 3);
        assert!(t.split_key.is_none());
        // With 140 bytes of "k" keys before it, the split size is reached inside the versions
        // of "t", and the split lands on its user key.
        let both = region(b"k10", b"");
        let r = measure(&snap, &both, 150, 141).unwrap();
        assert_eq!(r.split_key.as_deref(), Some(user.as_slice()));
    }
}
