//! [`StoreMeta`]: which regions live on this store, by id and by range. The store mailbox's
//! handler is in `store_handler.rs`.

use std::collections::{BTreeMap, HashMap};

use kv::keys;
use proto::metapb;

/// The regions with a peer on this store, shared with readers such as `RaftStorage`.
#[derive(Default, Debug)]
pub struct StoreMeta {
    regions: HashMap<u64, metapb::Region>,
    /// Initialised regions by their data end key, to find the region of a key.
    ranges: BTreeMap<Vec<u8>, u64>,
}

impl StoreMeta {
    /// Records `region` (replacing an older version of it).
    pub(crate) fn insert(&mut self, region: metapb::Region) {
        self.remove(region.id);
        if !region.peers.is_empty() {
            self.ranges
                .insert(keys::data_end_key(&region.end_key), region.id);
        }
        self.regions.insert(region.id, region);
    }

    /// Forgets region `region_id` (its peer here was destroyed).
    pub(crate) fn remove(&mut self, region_id: u64) {
        if let Some(old) = self.regions.remove(&region_id) {
            let end = keys::data_end_key(&old.end_key);
            // Only this region's own entry: another region may own that end key by now.
            if self.ranges.get(&end) == Some(&region_id) {
                self.ranges.remove(&end);
            }
        }
    }

    /// The region with id `id`.
    pub fn region(&self, id: u64) -> Option<&metapb::Region> {
        self.regions.get(&id)
    }

    /// The initialised region containing user key `key`.
    pub fn region_for_key(&self, key: &[u8]) -> Option<&metapb::Region> {
        let dk = keys::data_key(key);
        let (_, id) = self
            .ranges
            .range((
                std::ops::Bound::Excluded(dk.clone()),
                std::ops::Bound::Unbounded,
            ))
            .next()?;
        let r = self.regions.get(id)?;
        (keys::data_key(&r.start_key) <= dk).then_some(r)
    }

    /// The regions with a peer here.
    pub fn regions(&self) -> impl Iterator<Item = &metapb::Region> {
        self.regions.values()
    }

    /// Number of regions with a peer here.
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// Whether an initialised region other than `region_id` overlaps `[start, end)`.
    pub(crate) fn overlaps(&self, region_id: u64, start: &[u8], end: &[u8]) -> bool {
        let start = keys::data_key(start);
        let end = keys::data_end_key(end);
        self.ranges
            .range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
            .any(|(_, id)| {
                *id != region_id
                    && self
                        .regions
                        .get(id)
                        .is_some_and(|r| keys::data_key(&r.start_key) < end)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            peers: vec![metapb::Peer::default()],
            ..Default::default()
        }
    }

    #[test]
    fn store_meta_finds_regions_by_key_2b() {
        let mut m = StoreMeta::default();
        m.insert(region(1, b"", b"m"));
        m.insert(region(2, b"m", b""));
        assert_eq!(m.region_for_key(b"a").unwrap().id, 1);
        assert_eq!(m.region_for_key(b"m").unwrap().id, 2);
        assert_eq!(m.region_for_key(b"zzz").unwrap().id, 2);
        assert!(m.overlaps(3, b"k", b"n"));
        assert!(!m.overlaps(1, b"a", b"b"));
        let mut gap = StoreMeta::default();
        gap.insert(region(1, b"c", b"f"));
        assert!(gap.region_for_key(b"a").is_none());
        assert!(gap.region_for_key(b"f").is_none());
        assert!(!gap.overlaps(3, b"f", b"g"));
    }
}
