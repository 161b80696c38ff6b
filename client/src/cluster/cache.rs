//! The client's picture of the cluster's regions: each cached region by its start key, with the
//! leader last seen for it. Entries come from the scheduler or from the stores' region errors
//! (`EpochNotMatch` carries the current regions, `NotLeader` the leader); a newer entry replaces
//! every cached region it overlaps, so each key has at most one cached owner.

use std::collections::BTreeMap;
use std::ops::Bound;

use proto::metapb;

/// One cached region and the leader last seen for it.
#[derive(Clone, Debug)]
pub(crate) struct CachedRegion {
    pub region: metapb::Region,
    pub leader: Option<metapb::Peer>,
}

/// Regions by start key.
#[derive(Default, Debug)]
pub(crate) struct RegionCache {
    by_start: BTreeMap<Vec<u8>, CachedRegion>,
}

fn contains(region: &metapb::Region, key: &[u8]) -> bool {
    region.start_key.as_slice() <= key && (region.end_key.is_empty() || key < &region.end_key[..])
}

fn version(region: &metapb::Region) -> (u64, u64) {
    region
        .region_epoch
        .as_ref()
        .map_or((0, 0), |e| (e.version, e.conf_ver))
}

impl RegionCache {
    /// The cached region holding `key`.
    pub fn find(&self, key: &[u8]) -> Option<&CachedRegion> {
        let (_, entry) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        contains(&entry.region, key).then_some(entry)
    }

    /// Caches `region`, dropping every cached region it overlaps. A region older than the
    /// cached entry of the same id (a lower epoch) is ignored: answers can arrive out of order.
    pub fn insert(&mut self, region: metapb::Region, leader: Option<metapb::Peer>) {
        let (start, end) = (region.start_key.clone(), region.end_key.clone());
        let mut overlapping = Vec::new();
        // The entry starting before `start` may reach into the new range.
        if let Some((k, e)) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(&start[..])))
            .next_back()
        {
            if e.region.end_key.is_empty() || e.region.end_key > start {
                overlapping.push(k.clone());
            }
        }
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(&end[..])
        };
        overlapping.extend(
            self.by_start
                .range::<[u8], _>((Bound::Included(&start[..]), upper))
                .map(|(k, _)| k.clone()),
        );
        let stale = overlapping.iter().any(|k| {
            let old = &self.by_start[k].region;
            old.id == region.id && version(old) > version(&region)
        });
        if stale {
            return;
        }
        for k in overlapping {
            self.by_start.remove(&k);
        }
        self.by_start.insert(start, CachedRegion { region, leader });
    }

    /// Forgets region `region_id`; the next request for its keys asks the scheduler.
    pub fn invalidate(&mut self, region_id: u64) {
        self.by_start.retain(|_, e| e.region.id != region_id);
    }

    /// Records `leader` as the leader of region `region_id` if it is one of its cached peers;
    /// says whether it was (a stranger means the cached membership is out of date).
    pub fn set_leader(&mut self, region_id: u64, leader: metapb::Peer) -> bool {
        let Some(e) = self
            .by_start
            .values_mut()
            .find(|e| e.region.id == region_id)
        else {
            return false;
        };
        let member = e.region.peers.iter().any(|p| p.id == leader.id);
        if member {
            e.leader = Some(leader);
        }
        member
    }

    /// How many regions are cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_start.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &str, end: &str, version: u64) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version,
            }),
            peers: vec![metapb::Peer {
                id: id * 10,
                store_id: 1,
                role: 0,
            }],
        }
    }

    #[test]
    fn finds_the_region_holding_a_key_2b() {
        let mut c = RegionCache::default();
        c.insert(region(1, "", "m", 1), None);
        c.insert(region(2, "m", "", 1), None);
        assert_eq!(c.find(b"").unwrap().region.id, 1);
        assert_eq!(c.find(b"l\xff").unwrap().region.id, 1);
        assert_eq!(c.find(b"m").unwrap().region.id, 2);
        assert_eq!(c.find(b"zzz").unwrap().region.id, 2);
    }

    #[test]
    fn gaps_are_misses_2b() {
        let mut c = RegionCache::default();
        c.insert(region(2, "f", "m", 1), None);
        assert!(c.find(b"a").is_none());
        assert!(c.find(b"m").is_none());
        assert_eq!(c.find(b"g").unwrap().region.id, 2);
    }

    #[test]
    fn a_split_replaces_the_parent_2b() {
        let mut c = RegionCache::default();
        c.insert(region(1, "", "", 1), None);
        c.insert(region(3, "k", "", 2), None);
        // The parent is gone, so "a" misses until the left half is learned.
        assert!(c.find(b"a").is_none());
        c.insert(region(1, "", "k", 2), None);
        assert_eq!(c.find(b"a").unwrap().region.id, 1);
        assert_eq!(c.find(b"k").unwrap().region.id, 3);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn an_older_epoch_of_a_cached_region_is_ignored_2b() {
        let mut c = RegionCache::default();
        c.insert(region(1, "", "k", 2), None);
        c.insert(region(1, "", "", 1), None);
        assert!(c.find(b"z").is_none());
        assert_eq!(c.find(b"a").unwrap().region.end_key, b"k");
    }

    #[test]
    fn leaders_are_kept_per_region_and_must_be_members_2b() {
        let mut c = RegionCache::default();
        c.insert(region(1, "", "m", 1), None);
        let member = metapb::Peer {
            id: 10,
            store_id: 1,
            role: 0,
        };
        let stranger = metapb::Peer {
            id: 99,
            store_id: 9,
            role: 0,
        };
        assert!(!c.set_leader(1, stranger));
        assert!(c.find(b"a").unwrap().leader.is_none());
        assert!(c.set_leader(1, member));
        assert_eq!(c.find(b"a").unwrap().leader, Some(member));
        c.invalidate(1);
        assert!(c.find(b"a").is_none());
    }
}
