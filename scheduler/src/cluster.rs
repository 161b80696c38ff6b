//! The scheduler core: one cluster's state (bootstrap, ids, timestamps, stores, regions,
//! config, operators), independent of gRPC so that tests and in-process mocks drive it directly.
//!
//! Every change is persisted before it becomes visible in memory, so a failed write leaves the
//! state as it was. Region heartbeats and queries live in `heartbeat.rs`, the balance
//! round and operator queries in `schedule.rs`, operators in flight in `coordinator.rs`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use proto::metapb::{self, StoreState};
use proto::schedulerpb::{ScheduleConfig, StoreStats, Timestamp};

use crate::alloc::{self, Clock, IdAllocator, Tso};
use crate::config::Config;
use crate::coordinator::OperatorController;
use crate::error::{Error, Result};
use crate::meta::{self, lock, Batch, MetaStore, Snapshot};
use crate::metrics::SchedulerMetrics;
use crate::region::{RegionInfo, RegionTree, StoreInfo};

/// The mutable cluster state behind one lock: heartbeats and schedulers read and change
/// regions, stores and operators together.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The cluster config; `Some` once the cluster is bootstrapped.
    pub(crate) cluster: Option<metapb::Cluster>,
    pub(crate) stores: BTreeMap<u64, StoreInfo>,
    pub(crate) regions: RegionTree,
    pub(crate) ops: OperatorController,
}

impl State {
    /// The cluster config, or `NotBootstrapped`.
    pub(crate) fn bootstrapped(&self) -> Result<&metapb::Cluster> {
        self.cluster.as_ref().ok_or(Error::NotBootstrapped)
    }
}

/// One cluster's scheduler state; share it behind an `Arc`.
pub struct Cluster {
    cluster_id: u64,
    pub(crate) config: Config,
    pub(crate) clock: Clock,
    pub(crate) meta: MetaStore,
    ids: Mutex<IdAllocator>,
    tso: Mutex<Tso>,
    pub(crate) state: Mutex<State>,
    pub(crate) metrics: SchedulerMetrics,
    /// The schedule settings in force (see `admin`).
    pub(crate) schedule: Mutex<ScheduleConfig>,
    /// The MVCC GC safe point (see `admin`).
    pub(crate) gc_safe_point: Mutex<u64>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Opens the cluster persisted under `config.data_dir` (creating it if new), on the
    /// system clock.
    pub fn open(config: &Config) -> Result<Cluster> {
        Cluster::open_with_clock(config, Clock::system())
    }

    /// Like [`Cluster::open`], with a given clock for liveness and operator timeouts.
    pub fn open_with_clock(config: &Config, clock: Clock) -> Result<Cluster> {
        let (meta, snapshot) = MetaStore::open(&config.data_dir)?;
        Cluster::load(config, clock, meta, snapshot)
    }

    /// A cluster whose state lives in memory only: for tests and in-process mocks.
    pub fn in_memory(config: &Config, clock: Clock) -> Result<Cluster> {
        let (meta, snapshot) = MetaStore::memory();
        Cluster::load(config, clock, meta, snapshot)
    }

    fn load(config: &Config, clock: Clock, meta: MetaStore, snap: Snapshot) -> Result<Cluster> {
        config.validate()?;
        let now = clock.now_ms();
        let cluster_id = match meta::get_u64(&snap, meta::CLUSTER_ID_KEY)? {
            Some(id) => id,
            None => {
                // Seconds in the high half make ids of clusters made at different times differ
                // even if the random half collides.
                let id = ((alloc::wall_ms() / 1000) << 32) | u64::from(rand::random::<u32>());
                let mut batch = Batch::default();
                batch.put_u64(meta::CLUSTER_ID_KEY, id);
                meta.write(batch, true)?;
                id
            }
        };
        let metrics = SchedulerMetrics::default();
        let mut state = State::default();
        state.ops.metrics = metrics.clone();
        if let Some(v) = snap.get(meta::CLUSTER_CONFIG_KEY) {
            state.cluster = Some(meta::decode(meta::CLUSTER_CONFIG_KEY, v)?);
        }
        for store in meta::scan_prefix::<metapb::Store>(&snap, meta::STORE_PREFIX)? {
            state.stores.insert(store.id, StoreInfo::new(store, now));
        }
        let mut regions = meta::scan_prefix::<metapb::Region>(&snap, meta::REGION_PREFIX)?;
        // Older versions first, so that if two persisted regions overlap the newer one wins.
        regions.sort_by_key(|r| r.region_epoch.as_ref().map_or(0, |e| e.version));
        let mut evicted = Batch::default();
        for region in regions {
            for old in state.regions.insert(RegionInfo::from_meta(region)) {
                evicted.delete(&meta::region_key(old.id()));
            }
        }
        meta.write(evicted, true)?;
        tracing::info!(
            cluster_id,
            bootstrapped = state.cluster.is_some(),
            stores = state.stores.len(),
            regions = state.regions.len(),
            "scheduler state loaded"
        );
        let schedule = match snap.get(meta::SCHEDULE_CONFIG_KEY) {
            Some(v) => meta::decode(meta::SCHEDULE_CONFIG_KEY, v)?,
            None => config.initial_schedule(),
        };
        let gc_safe_point = meta::get_u64(&snap, meta::GC_SAFE_POINT_KEY)?.unwrap_or(0);
        Ok(Cluster {
            schedule: Mutex::new(schedule),
            gc_safe_point: Mutex::new(gc_safe_point),
            cluster_id,
            config: config.clone(),
            clock,
            ids: Mutex::new(IdAllocator::new(meta::get_u64(&snap, meta::ALLOC_ID_KEY)?)),
            tso: Mutex::new(Tso::new(meta::get_u64(&snap, meta::TSO_KEY)?)),
            meta,
            state: Mutex::new(state),
            metrics,
        })
    }

    /// The scheduler's metrics, with the region and store gauges brought up to date.
    pub fn metrics(&self) -> &SchedulerMetrics {
        let now = self.clock.now_ms();
        let max_down = self.config.max_store_down_time_ms;
        let state = lock(&self.state);
        let mut stores = [0; 4];
        for s in state.stores.values() {
            let i = match s.state() {
                StoreState::Tombstone => 3,
                StoreState::Offline => 2,
                StoreState::Up if s.is_down(now, max_down) => 1,
                StoreState::Up => 0,
            };
            stores[i] += 1;
        }
        self.metrics.set_counts(state.regions.len(), stores);
        &self.metrics
    }

    /// This cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The clock of liveness and operator timeouts.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Rejects a request meant for another cluster; 0 means "any cluster" (a client that has
    /// not learned the id yet).
    pub fn check_cluster_id(&self, got: u64) -> Result<()> {
        if got != 0 && got != self.cluster_id {
            return Err(Error::ClusterIdMismatch {
                expected: self.cluster_id,
                got,
            });
        }
        Ok(())
    }

    /// Bootstraps the cluster with its first store and first region; only once.
    pub fn bootstrap(&self, store: metapb::Store, region: metapb::Region) -> Result<()> {
        if store.id == 0 || region.id == 0 {
            return Err(Error::InvalidArgument(
                "bootstrap needs a store and a region with non-zero ids".into(),
            ));
        }
        if !region.peers.iter().any(|p| p.store_id == store.id) {
            return Err(Error::InvalidArgument(format!(
                "bootstrap region {} has no peer on store {}",
                region.id, store.id
            )));
        }
        let mut state = lock(&self.state);
        if state.cluster.is_some() {
            return Err(Error::AlreadyBootstrapped);
        }
        let cluster = metapb::Cluster {
            id: self.cluster_id,
            max_peer_count: self.config.max_replicas,
        };
        let mut batch = Batch::default();
        batch.put_msg(&meta::store_key(store.id), &store);
        batch.put_msg(&meta::region_key(region.id), &region);
        // Written last in the same atomic batch: its presence means "bootstrapped".
        batch.put_msg(meta::CLUSTER_CONFIG_KEY, &cluster);
        self.meta.write(batch, true)?;
        tracing::info!(
            store_id = store.id,
            region_id = region.id,
            "cluster bootstrapped"
        );
        let now = self.clock.now_ms();
        state.stores.insert(store.id, StoreInfo::new(store, now));
        state.regions.insert(RegionInfo::from_meta(region));
        state.cluster = Some(cluster);
        Ok(())
    }

    /// Whether the cluster is bootstrapped.
    pub fn is_bootstrapped(&self) -> bool {
        lock(&self.state).cluster.is_some()
    }

    /// A new unique id (for stores, regions and peers); never reused, also across restarts.
    pub fn alloc_id(&self) -> Result<u64> {
        lock(&self.ids).alloc(|end| {
            let mut batch = Batch::default();
            batch.put_u64(meta::ALLOC_ID_KEY, end);
            self.meta.write(batch, true)
        })
    }

    /// Allocates `count` timestamps; returns the last, whose `logical` the `count - 1` before it
    /// precede.
    pub fn tso(&self, count: u32) -> Result<Timestamp> {
        self.metrics.on_tso(count);
        let (physical, logical) = lock(&self.tso).next(count, alloc::wall_ms(), |until| {
            let mut batch = Batch::default();
            batch.put_u64(meta::TSO_KEY, until);
            self.meta.write(batch, true)
        })?;
        Ok(Timestamp {
            physical: physical as i64,
            logical: logical as i64,
        })
    }

    /// One timestamp as `physical << 18 | logical`.
    pub fn tso_one(&self) -> Result<u64> {
        let ts = self.tso(1)?;
        Ok(alloc::compose_ts(ts.physical as u64, ts.logical as u64))
    }

    /// The cluster config (max replicas).
    pub fn cluster_config(&self) -> Result<metapb::Cluster> {
        lock(&self.state).bootstrapped().cloned()
    }

    /// Replaces the cluster config; the cluster id cannot change.
    pub fn put_cluster_config(&self, mut cluster: metapb::Cluster) -> Result<()> {
        if cluster.max_peer_count == 0 {
            return Err(Error::InvalidArgument(
                "max_peer_count must be at least 1".into(),
            ));
        }
        self.check_cluster_id(cluster.id)?;
        cluster.id = self.cluster_id;
        let mut state = lock(&self.state);
        state.bootstrapped()?;
        let mut batch = Batch::default();
        batch.put_msg(meta::CLUSTER_CONFIG_KEY, &cluster);
        self.meta.write(batch, true)?;
        tracing::info!(
            max_replicas = cluster.max_peer_count,
            "cluster config changed"
        );
        state.cluster = Some(cluster);
        Ok(())
    }

    /// Registers or updates a store. A tombstone store cannot come back, and two stores cannot
    /// share an address.
    pub fn put_store(&self, store: metapb::Store) -> Result<()> {
        if store.id == 0 {
            return Err(Error::InvalidArgument("store id 0".into()));
        }
        let mut state = lock(&self.state);
        state.bootstrapped()?;
        if let Some(old) = state.stores.get(&store.id) {
            if old.is_tombstone() && store.state != StoreState::Tombstone as i32 {
                return Err(Error::StoreTombstone(store.id));
            }
        }
        let clash = state
            .stores
            .values()
            .find(|s| s.id() != store.id && !s.is_tombstone() && s.meta.address == store.address);
        if let (Some(other), false) = (clash, store.address.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "address {} already used by store {}",
                store.address,
                other.id()
            )));
        }
        let mut batch = Batch::default();
        batch.put_msg(&meta::store_key(store.id), &store);
        self.meta.write(batch, true)?;
        let now = self.clock.now_ms();
        match state.stores.get_mut(&store.id) {
            Some(info) => {
                info.meta = store;
                info.last_seen_ms = now;
            }
            None => {
                tracing::info!(store_id = store.id, address = %store.address, "store added");
                state.stores.insert(store.id, StoreInfo::new(store, now));
            }
        }
        Ok(())
    }

    /// Marks a store `Up`, `Offline` (its replicas are to be moved away) or `Tombstone`.
    pub fn set_store_state(&self, store_id: u64, new_state: StoreState) -> Result<()> {
        let mut meta = self.get_store(store_id)?.meta;
        meta.state = new_state as i32;
        self.put_store(meta)
    }

    /// A store with its stats and what it holds.
    pub fn get_store(&self, store_id: u64) -> Result<StoreInfo> {
        let state = lock(&self.state);
        state.bootstrapped()?;
        let mut info = state
            .stores
            .get(&store_id)
            .cloned()
            .ok_or(Error::StoreNotFound(store_id))?;
        info.counts = state.regions.store_counts(store_id);
        Ok(info)
    }

    /// Every store, optionally without tombstones, in id order.
    pub fn get_all_stores(&self, exclude_tombstone: bool) -> Result<Vec<StoreInfo>> {
        let state = lock(&self.state);
        state.bootstrapped()?;
        Ok(state
            .stores
            .values()
            .filter(|s| !(exclude_tombstone && s.is_tombstone()))
            .map(|s| {
                let mut s = s.clone();
                s.counts = state.regions.store_counts(s.id());
                s
            })
            .collect())
    }

    /// Records a store's heartbeat: its stats, and that it is alive.
    pub fn store_heartbeat(&self, stats: StoreStats) -> Result<()> {
        let mut state = lock(&self.state);
        state.bootstrapped()?;
        let now = self.clock.now_ms();
        let store = state
            .stores
            .get_mut(&stats.store_id)
            .ok_or(Error::StoreNotFound(stats.store_id))?;
        if store.is_tombstone() {
            return Err(Error::StoreTombstone(stats.store_id));
        }
        store.last_seen_ms = now;
        store.stats = Some(stats);
        Ok(())
    }
}
