//! Regions and stores as the scheduler knows them: the last heartbeat of each region, a tree
//! keyed by start key that answers "who owns this key", per-store counts derived from it, and
//! each store's metadata, stats and liveness.
//!
//! The counts are kept up to date on every insert and removal rather than recomputed, so a
//! store's numbers are exactly the sum over the regions in the tree at any moment.

use std::collections::{BTreeMap, HashMap};

use proto::metapb::{self, PeerRole, StoreState};
use proto::schedulerpb::{PeerStats, StoreStats};

/// A region with what its last heartbeat said about it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionInfo {
    /// The region's metadata (range, epoch, peers).
    pub region: metapb::Region,
    /// The leader that sent the heartbeat.
    pub leader: Option<metapb::Peer>,
    /// Peers that are behind the leader's log.
    pub pending_peers: Vec<metapb::Peer>,
    /// Peers that did not answer the leader for a while.
    pub down_peers: Vec<PeerStats>,
    /// Approximate data size of the region.
    pub approximate_size: u64,
    /// Approximate number of keys in the region.
    pub approximate_keys: u64,
}

impl RegionInfo {
    /// A region known only from its metadata (bootstrap, or loaded after a restart).
    pub fn from_meta(region: metapb::Region) -> RegionInfo {
        RegionInfo {
            region,
            ..RegionInfo::default()
        }
    }

    /// The region id.
    pub fn id(&self) -> u64 {
        self.region.id
    }

    /// The region's epoch as (conf_ver, version); absent reads as zeros.
    pub fn epoch(&self) -> (u64, u64) {
        self.region
            .region_epoch
            .as_ref()
            .map_or((0, 0), |e| (e.conf_ver, e.version))
    }

    /// The store of the leader, if one is known.
    pub fn leader_store(&self) -> Option<u64> {
        self.leader.as_ref().map(|p| p.store_id)
    }

    /// The region's peer on `store_id`.
    pub fn peer_on(&self, store_id: u64) -> Option<&metapb::Peer> {
        self.region.peers.iter().find(|p| p.store_id == store_id)
    }

    /// The stores holding a peer of the region.
    pub fn store_ids(&self) -> Vec<u64> {
        self.region.peers.iter().map(|p| p.store_id).collect()
    }

    /// Voters, the peers that count towards the replica number.
    pub fn voters(&self) -> impl Iterator<Item = &metapb::Peer> {
        self.region
            .peers
            .iter()
            .filter(|p| p.role != PeerRole::Learner as i32)
    }

    /// Whether the peer on `store_id` is pending.
    pub fn is_pending_on(&self, store_id: u64) -> bool {
        self.pending_peers.iter().any(|p| p.store_id == store_id)
    }

    /// Whether the peer on `store_id` is reported down.
    pub fn is_down_on(&self, store_id: u64) -> bool {
        self.down_peers
            .iter()
            .any(|d| d.peer.as_ref().is_some_and(|p| p.store_id == store_id))
    }

    /// The size balance-region reasons with: never zero, so empty regions still weigh something
    /// and moving one always narrows the gap between two stores.
    pub fn effective_size(&self) -> u64 {
        self.approximate_size.max(1)
    }

    /// Whether `[start, end)` of this region intersects `[start, end)` (empty end = unbounded).
    fn overlaps(&self, start: &[u8], end: &[u8]) -> bool {
        let (s, e) = (&self.region.start_key[..], &self.region.end_key[..]);
        (end.is_empty() || s < end) && (e.is_empty() || start < e)
    }

    /// Whether the region holds `key`.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.region.start_key.as_slice() <= key
            && (self.region.end_key.is_empty() || key < self.region.end_key.as_slice())
    }
}

/// What a store holds, derived from the region tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Regions with a peer on the store.
    pub region_count: u64,
    /// Regions whose leader is on the store.
    pub leader_count: u64,
    /// Sum of the approximate sizes of `region_count`'s regions.
    pub region_size: u64,
    /// Sum of the approximate sizes of `leader_count`'s regions.
    pub leader_size: u64,
    /// Pending peers on the store.
    pub pending_peer_count: u64,
    /// Sum of the regions' effective sizes ([`RegionInfo::effective_size`]): what
    /// balance-region compares stores by, so that regions of unknown size still count.
    pub region_weight: u64,
}

impl StoreCounts {
    /// Adds (`sign > 0`) or takes away one peer of a region of `size`, a leader if `leader`.
    fn apply(&mut self, sign: i64, leader: bool, size: u64, weight: u64) {
        let add = |v: &mut u64, by: u64| {
            *v = if sign > 0 {
                *v + by
            } else {
                v.saturating_sub(by)
            }
        };
        add(&mut self.region_count, 1);
        add(&mut self.region_size, size);
        add(&mut self.region_weight, weight);
        if leader {
            add(&mut self.leader_count, 1);
            add(&mut self.leader_size, size);
        }
    }
}

/// Regions by id and by start key, with per-store counts.
#[derive(Debug, Default)]
pub struct RegionTree {
    by_start: BTreeMap<Vec<u8>, u64>,
    regions: HashMap<u64, RegionInfo>,
    counts: HashMap<u64, StoreCounts>,
}

impl RegionTree {
    /// The region with this id.
    pub fn get(&self, id: u64) -> Option<&RegionInfo> {
        self.regions.get(&id)
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether there is no region.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// The region that owns `key`.
    pub fn search(&self, key: &[u8]) -> Option<&RegionInfo> {
        let (_, id) = self.by_start.range(..=key.to_vec()).next_back()?;
        self.regions.get(id).filter(|r| r.contains(key))
    }

    /// Ids of the regions intersecting `[start, end)`, in key order.
    pub fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<u64> {
        let mut ids = Vec::new();
        // The region starting at or before `start` may reach into the range.
        if let Some((_, id)) = self.by_start.range(..=start.to_vec()).next_back() {
            if self.regions.get(id).is_some_and(|r| r.overlaps(start, end)) {
                ids.push(*id);
            }
        }
        let after = self
            .by_start
            .range(start.to_vec()..)
            .take_while(|(k, _)| end.is_empty() || k.as_slice() < end)
            .map(|(_, id)| *id);
        for id in after {
            if ids.last() != Some(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// Puts `info` in the tree, replacing the region with its id and every region its range
    /// overlaps; returns the replaced regions of other ids.
    pub fn insert(&mut self, info: RegionInfo) -> Vec<RegionInfo> {
        self.remove(info.id());
        let overlapped: Vec<u64> = self.overlapping(&info.region.start_key, &info.region.end_key);
        let removed = overlapped
            .into_iter()
            .filter_map(|id| self.remove(id))
            .collect();
        self.count(&info, 1);
        self.by_start
            .insert(info.region.start_key.clone(), info.id());
        self.regions.insert(info.id(), info);
        removed
    }

    /// Takes a region out of the tree.
    pub fn remove(&mut self, id: u64) -> Option<RegionInfo> {
        let info = self.regions.remove(&id)?;
        if self.by_start.get(&info.region.start_key) == Some(&id) {
            self.by_start.remove(&info.region.start_key);
        }
        self.count(&info, -1);
        Some(info)
    }

    fn count(&mut self, info: &RegionInfo, sign: i64) {
        let leader = info.leader_store();
        for peer in &info.region.peers {
            self.counts.entry(peer.store_id).or_default().apply(
                sign,
                Some(peer.store_id) == leader,
                info.approximate_size,
                info.effective_size(),
            );
        }
        for peer in &info.pending_peers {
            let c = self.counts.entry(peer.store_id).or_default();
            c.pending_peer_count = if sign > 0 {
                c.pending_peer_count + 1
            } else {
                c.pending_peer_count.saturating_sub(1)
            };
        }
    }

    /// What the tree holds on `store_id`.
    pub fn store_counts(&self, store_id: u64) -> StoreCounts {
        self.counts.get(&store_id).copied().unwrap_or_default()
    }

    /// Every region, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &RegionInfo> {
        self.by_start.values().filter_map(|id| self.regions.get(id))
    }

    /// Regions intersecting `[start, end)` in key order, at most `limit` (0 = no limit).
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<&RegionInfo> {
        let ids = self.overlapping(start, end);
        let take = if limit == 0 { ids.len() } else { limit };
        ids.iter()
            .take(take)
            .filter_map(|id| self.regions.get(id))
            .collect()
    }
}

/// A store: what it registered, what it last reported and what it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreInfo {
    /// The store's metadata.
    pub meta: metapb::Store,
    /// The stats of its last heartbeat.
    pub stats: Option<StoreStats>,
    /// When it was last heard of (put, heartbeat, or the scheduler's start), cluster clock ms.
    pub last_seen_ms: u64,
    /// What the region tree holds on it; filled in when handed out.
    pub counts: StoreCounts,
}

impl StoreInfo {
    /// A store first heard of at `now_ms`.
    pub fn new(meta: metapb::Store, now_ms: u64) -> StoreInfo {
        StoreInfo {
            meta,
            stats: None,
            last_seen_ms: now_ms,
            counts: StoreCounts::default(),
        }
    }

    /// The store id.
    pub fn id(&self) -> u64 {
        self.meta.id
    }

    /// The store's state.
    pub fn state(&self) -> StoreState {
        StoreState::try_from(self.meta.state).unwrap_or(StoreState::Up)
    }

    /// Whether the store is gone for good.
    pub fn is_tombstone(&self) -> bool {
        self.state() == StoreState::Tombstone
    }

    /// Whether the store has been silent for longer than `max_down_ms`.
    pub fn is_down(&self, now_ms: u64, max_down_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) > max_down_ms
    }

    /// Whether the store is up and talking: it may receive replicas and leaders, and its
    /// replicas are healthy.
    pub fn is_serving(&self, now_ms: u64, max_down_ms: u64) -> bool {
        self.state() == StoreState::Up && !self.is_down(now_ms, max_down_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &str, end: &str, stores: &[u64]) -> RegionInfo {
        let mut info = RegionInfo::from_meta(metapb::Region {
            id,
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: stores
                .iter()
                .map(|s| metapb::Peer {
                    id: id * 100 + s,
                    store_id: *s,
                    role: PeerRole::Voter as i32,
                })
                .collect(),
        });
        info.leader = info.region.peers.first().cloned();
        info.approximate_size = 10;
        info
    }

    #[test]
    fn search_and_overlap_by_key_3c() {
        let mut tree = RegionTree::default();
        tree.insert(region(1, "", "b", &[1]));
        tree.insert(region(2, "b", "d", &[1]));
        tree.insert(region(3, "d", "", &[1]));
        assert_eq!(tree.search(b"a").map(RegionInfo::id), Some(1));
        assert_eq!(tree.search(b"b").map(RegionInfo::id), Some(2));
        assert_eq!(tree.search(b"zzz").map(RegionInfo::id), Some(3));
        assert_eq!(tree.overlapping(b"a", b"c"), vec![1, 2]);
        assert_eq!(tree.overlapping(b"c", b""), vec![2, 3]);
        assert_eq!(tree.scan(b"", b"", 2).len(), 2);
        let removed = tree.insert(region(4, "a", "e", &[2]));
        let ids: Vec<u64> = removed.iter().map(RegionInfo::id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(tree.search(b"").map(RegionInfo::id), None);
    }

    #[test]
    fn store_counts_follow_inserts_and_removals_3c() {
        let mut tree = RegionTree::default();
        let mut r = region(1, "", "m", &[1, 2]);
        r.pending_peers = vec![r.region.peers[1]];
        tree.insert(r);
        tree.insert(region(2, "m", "", &[2, 3]));
        let s2 = tree.store_counts(2);
        assert_eq!(
            (s2.region_count, s2.leader_count, s2.region_size),
            (2, 1, 20)
        );
        assert_eq!(s2.pending_peer_count, 1);
        tree.remove(1);
        tree.remove(2);
        for store in 1..=3 {
            assert_eq!(tree.store_counts(store), StoreCounts::default());
        }
    }
}
