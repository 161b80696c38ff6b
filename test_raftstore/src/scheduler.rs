//! [`MockSchedulerClient`]: the scheduler in process — ids, bootstrap, stores, region lookup by
//! key and id, split ids, and recorded heartbeats. Like the real scheduler, a region heartbeat
//! replaces every region it overlaps that has an older version (the halves of a split report in
//! any order), and one older than a region it overlaps is refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use proto::metapb;
use proto::schedulerpb::{AskSplitResponse, RegionHeartbeatRequest, StoreStats};
use scheduler_client::{Error, HeartbeatHandler, Result, SchedulerClient};

#[derive(Default)]
struct State {
    bootstrapped: bool,
    stores: HashMap<u64, metapb::Store>,
    regions: BTreeMap<u64, (metapb::Region, Option<metapb::Peer>)>,
    store_heartbeats: HashMap<u64, u64>,
    region_heartbeats: HashMap<u64, u64>,
    sizes: HashMap<u64, u64>,
}

/// An in-process scheduler client for the test cluster.
pub struct MockSchedulerClient {
    cluster_id: u64,
    next_id: AtomicU64,
    tso: AtomicU64,
    state: Mutex<State>,
}

impl MockSchedulerClient {
    /// A scheduler for cluster `cluster_id` that has seen nothing yet.
    pub fn new(cluster_id: u64) -> MockSchedulerClient {
        MockSchedulerClient {
            cluster_id,
            next_id: AtomicU64::new(1),
            tso: AtomicU64::new(1),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of store heartbeats received from `store_id`.
    pub fn store_heartbeats(&self, store_id: u64) -> u64 {
        self.state()
            .store_heartbeats
            .get(&store_id)
            .copied()
            .unwrap_or(0)
    }

    /// Number of region heartbeats received for `region_id`.
    pub fn region_heartbeats(&self, region_id: u64) -> u64 {
        self.state()
            .region_heartbeats
            .get(&region_id)
            .copied()
            .unwrap_or(0)
    }

    /// Every region known, in key order.
    pub fn regions(&self) -> Vec<metapb::Region> {
        let mut v: Vec<metapb::Region> = self
            .state()
            .regions
            .values()
            .map(|(r, _)| r.clone())
            .collect();
        v.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        v
    }

    /// The approximate size last reported for `region_id`.
    pub fn approximate_size(&self, region_id: u64) -> Option<u64> {
        self.state().sizes.get(&region_id).copied()
    }

    /// The leader of `region_id` as last reported.
    pub fn reported_leader(&self, region_id: u64) -> Option<metapb::Peer> {
        self.state().regions.get(&region_id).and_then(|(_, l)| *l)
    }
}

/// Whether two regions' key ranges intersect (an empty end key is unbounded).
fn overlaps(a: &metapb::Region, b: &metapb::Region) -> bool {
    let before = |end: &[u8], start: &[u8]| !end.is_empty() && end <= start;
    !before(&a.end_key, &b.start_key) && !before(&b.end_key, &a.start_key)
}

fn epoch_of(r: &metapb::Region) -> (u64, u64) {
    let e = r.region_epoch.unwrap_or_default();
    (e.version, e.conf_ver)
}

impl SchedulerClient for MockSchedulerClient {
    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    fn bootstrap(&self, store: metapb::Store, region: metapb::Region) -> Result<()> {
        let mut st = self.state();
        if st.bootstrapped {
            return Err(Error::AlreadyBootstrapped);
        }
        st.bootstrapped = true;
        st.stores.insert(store.id, store);
        st.regions.insert(region.id, (region, None));
        Ok(())
    }

    fn is_bootstrapped(&self) -> Result<bool> {
        Ok(self.state().bootstrapped)
    }

    fn alloc_id(&self) -> Result<u64> {
        Ok(self.next_id.fetch_add(1, Ordering::SeqCst))
    }

    fn put_store(&self, store: metapb::Store) -> Result<()> {
        self.state().stores.insert(store.id, store);
        Ok(())
    }

    fn get_store(&self, store_id: u64) -> Result<metapb::Store> {
        self.state()
            .stores
            .get(&store_id)
            .cloned()
            .ok_or_else(|| Error::Rpc(format!("store {store_id} not found")))
    }

    fn get_region(&self, key: &[u8]) -> Result<(metapb::Region, Option<metapb::Peer>)> {
        self.state()
            .regions
            .values()
            .find(|(r, _)| raftstore::region_contains(r, key))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no region for key {key:?}")))
    }

    fn get_region_by_id(&self, region_id: u64) -> Result<(metapb::Region, Option<metapb::Peer>)> {
        self.state()
            .regions
            .get(&region_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("region {region_id}")))
    }

    fn ask_split(&self, region: metapb::Region) -> Result<AskSplitResponse> {
        let new_region_id = self.alloc_id()?;
        let new_peer_ids = region
            .peers
            .iter()
            .map(|_| self.alloc_id())
            .collect::<Result<Vec<_>>>()?;
        Ok(AskSplitResponse {
            header: None,
            new_region_id,
            new_peer_ids,
        })
    }

    fn store_heartbeat(&self, stats: StoreStats) -> Result<()> {
        *self
            .state()
            .store_heartbeats
            .entry(stats.store_id)
            .or_default() += 1;
        Ok(())
    }

    fn region_heartbeat(&self, req: RegionHeartbeatRequest) -> Result<()> {
        let Some(region) = req.region else {
            return Err(Error::InvalidArgument("heartbeat without region".into()));
        };
        let mut st = self.state();
        *st.region_heartbeats.entry(region.id).or_default() += 1;
        let stale = st
            .regions
            .get(&region.id)
            .is_some_and(|(r, _)| epoch_of(r) > epoch_of(&region));
        let overlapping: Vec<(u64, u64)> = st
            .regions
            .values()
            .filter(|(r, _)| r.id != region.id && overlaps(r, &region))
            .map(|(r, _)| (r.id, epoch_of(r).0))
            .collect();
        let version = epoch_of(&region).0;
        if stale || overlapping.iter().any(|&(_, v)| v > version) {
            return Err(Error::StaleRegion(format!("region {}", region.id)));
        }
        for (id, _) in overlapping {
            st.regions.remove(&id);
        }
        st.sizes.insert(region.id, req.approximate_size);
        st.regions.insert(region.id, (region, req.leader));
        Ok(())
    }

    fn handle_region_heartbeat_response(&self, _store_id: u64, _handler: HeartbeatHandler) {
        // No operators yet: nothing will ever be sent back.
    }

    fn tso(&self) -> Result<u64> {
        Ok(self.tso.fetch_add(1, Ordering::SeqCst))
    }
}
