//! [`Cluster`]: a test cluster of stores over a [`Simulator`]. It bootstraps every store with the
//! same first region (one peer per store), starts, stops and restarts stores (a stopped store
//! keeps only what its engines hold on disk), and acts as a client that retries on region errors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kv::{Cf, Engines, WriteBatch};
use proto::metapb;
use proto::raft_cmdpb::{CmdType, RaftCmdRequest, RaftRequestHeader, Request, SnapRequest};
use proto::raft_serverpb::RaftApplyState;
use raftstore::{CmdResponse, Config};
use scheduler_client::SchedulerClient as _;
use tempfile::TempDir;

use crate::client::LeaderCache;
use crate::filter::Filter;
use crate::node::{NodeSimulator, Simulator};
use crate::scheduler::MockSchedulerClient;

/// An in-process cluster of `count` stores.
pub struct Cluster {
    pub(crate) cfg: Config,
    count: usize,
    root: TempDir,
    dirs: HashMap<u64, PathBuf>,
    store_ids: Vec<u64>,
    sim: RwLock<Box<dyn Simulator>>,
    scheduler: Arc<MockSchedulerClient>,
    /// Engines of running stores, for direct inspection.
    engines: Mutex<HashMap<u64, Engines>>,
    pub(crate) leaders: LeaderCache,
    /// Where the bootstrapped regions are cut.
    split_keys: Vec<Vec<u8>>,
}

/// Set (to anything) in the environment, every cluster writes its raft logs on a log-writer
/// thread (`Config::async_log_writes`), whatever its configuration says: `make test` runs the
/// raftstore suites once each way.
pub const ASYNC_LOG_WRITES_ENV: &str = "TESSERA_TEST_ASYNC_LOG_WRITES";

/// Set (to anything) in the environment, every cluster applies plain writes on an apply thread
/// (`Config::async_apply`), whatever its configuration says.
pub const ASYNC_APPLY_ENV: &str = "TESSERA_TEST_ASYNC_APPLY";

/// Set to `file` (or `file-preallocated`) in the environment, every store keeps its raft log in
/// the file engine (`kv::RaftLogKind::File`) instead of RocksDB.
pub const RAFT_ENGINE_ENV: &str = "TESSERA_TEST_RAFT_ENGINE";

/// The raft-log engine the stores of this process's clusters use (see [`RAFT_ENGINE_ENV`]): what
/// a test that opens a stopped store's engines itself must open them with.
pub fn raft_log_kind() -> kv::RaftLogKind {
    match std::env::var(RAFT_ENGINE_ENV).as_deref() {
        Ok("file") => kv::RaftLogKind::File,
        Ok("file-preallocated") => kv::RaftLogKind::FilePreallocated,
        Ok("rocksdb") | Err(_) => kv::RaftLogKind::RocksDb,
        Ok(other) => {
            panic!("{RAFT_ENGINE_ENV}={other:?}: expected file, file-preallocated or rocksdb")
        }
    }
}

impl Cluster {
    /// A cluster of `count` stores with configuration `cfg`, not started.
    pub fn new(count: usize, mut cfg: Config) -> Cluster {
        if std::env::var_os(ASYNC_LOG_WRITES_ENV).is_some() {
            cfg.async_log_writes = true;
        }
        if std::env::var_os(ASYNC_APPLY_ENV).is_some() {
            cfg.async_apply = true;
        }
        let root = tempfile::tempdir().expect("creating the cluster's temp dir");
        let scheduler = Arc::new(MockSchedulerClient::new(1));
        let sim: Box<dyn Simulator> = Box::new(NodeSimulator::new(scheduler.clone()));
        Cluster {
            cfg,
            count,
            root,
            dirs: HashMap::new(),
            store_ids: Vec::new(),
            sim: RwLock::new(sim),
            scheduler,
            engines: Mutex::new(HashMap::new()),
            leaders: LeaderCache::default(),
            split_keys: Vec::new(),
        }
    }

    /// A cluster whose stores are bootstrapped with one region per range between consecutive
    /// `split_keys` (sorted), every region with a peer on every store: multi-raft without splits.
    pub fn with_split_keys(count: usize, cfg: Config, mut split_keys: Vec<Vec<u8>>) -> Cluster {
        split_keys.sort();
        split_keys.dedup();
        let mut c = Cluster::new(count, cfg);
        c.split_keys = split_keys;
        c
    }

    /// The mock scheduler.
    pub fn scheduler(&self) -> &Arc<MockSchedulerClient> {
        &self.scheduler
    }

    /// The ids of every store, running or not.
    pub fn store_ids(&self) -> Vec<u64> {
        self.store_ids.clone()
    }

    /// Bootstraps every store with the cluster's regions (one spanning all keys unless split keys
    /// were given), each with a peer on every store, then starts them all.
    pub fn start(&mut self) {
        let ids: Vec<u64> = (0..self.count)
            .map(|_| self.scheduler.alloc_id().expect("mock ids"))
            .collect();
        let mut bounds = vec![Vec::new()];
        bounds.extend(self.split_keys.iter().cloned());
        bounds.push(Vec::new());
        let regions: Vec<metapb::Region> = bounds
            .windows(2)
            .map(|w| {
                let region_id = self.scheduler.alloc_id().expect("mock ids");
                let mut region = raftstore::bootstrap::new_first_region(ids[0], region_id, 0);
                region.start_key = w[0].clone();
                region.end_key = w[1].clone();
                region.peers = ids
                    .iter()
                    .map(|&s| metapb::Peer {
                        id: self.scheduler.alloc_id().expect("mock ids"),
                        store_id: s,
                        role: metapb::PeerRole::Voter as i32,
                    })
                    .collect();
                region
            })
            .collect();
        for &id in &ids {
            let dir = self.root.path().join(format!("store-{id}"));
            let engines = Engines::open_with(&dir, raft_log_kind()).expect("opening engines");
            raftstore::bootstrap::bootstrap_store(&engines, self.scheduler.cluster_id(), id)
                .expect("bootstrapping a store");
            let mut wb = WriteBatch::new(&engines.kv);
            for region in &regions {
                raftstore::bootstrap::write_initial_region(&engines, region, &mut wb)
                    .expect("writing the first regions");
            }
            wb.write(true).expect("writing the first regions");
            drop(engines);
            self.dirs.insert(id, dir);
        }
        let store = |id: u64| metapb::Store {
            id,
            address: format!("store-{id}"),
            state: metapb::StoreState::Up as i32,
            peer_address: format!("store-{id}-peer"),
            status_address: String::new(),
        };
        self.scheduler
            .bootstrap(store(ids[0]), regions[0].clone())
            .expect("bootstrapping the mock scheduler");
        for region in &regions[1..] {
            // The scheduler learns further regions from heartbeats; tell it up front so
            // clients can route before the first leader reports.
            self.scheduler
                .region_heartbeat(proto::schedulerpb::RegionHeartbeatRequest {
                    region: Some(region.clone()),
                    ..Default::default()
                })
                .expect("registering a region with the mock scheduler");
        }
        self.store_ids = ids.clone();
        for id in ids {
            self.run_node(id);
        }
    }

    /// Starts store `id` again from its engines on disk.
    pub fn run_node(&self, id: u64) {
        let dir = &self.dirs[&id];
        // The engines of a just-stopped store may still be held for an instant by a snapshot a
        // reader dropped late; RocksDB's lock tells us.
        let deadline = Instant::now() + Duration::from_secs(5);
        let engines = loop {
            match Engines::open_with(dir, raft_log_kind()) {
                Ok(e) => break e,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(store_id = id, error = %e, "engines still locked; retrying");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("store {id}: cannot reopen engines: {e}"),
            }
        };
        self.lock_engines().insert(id, engines.clone());
        self.write_sim()
            .run_node(id, self.cfg.clone(), engines)
            .unwrap_or_else(|e| panic!("store {id}: cannot start: {e}"));
    }

    /// Stops store `id`; everything not on disk is lost.
    pub fn stop_node(&self, id: u64) {
        self.write_sim().stop_node(id);
        self.lock_engines().remove(&id);
        self.leaders.retain_stores_other_than(id);
    }

    /// Stops every store, then starts them all again.
    pub fn restart_all(&self) {
        for id in self.store_ids() {
            self.stop_node(id);
        }
        for id in self.store_ids() {
            self.run_node(id);
        }
    }

    fn write_sim(&self) -> std::sync::RwLockWriteGuard<'_, Box<dyn Simulator>> {
        self.sim.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn read_sim(&self) -> std::sync::RwLockReadGuard<'_, Box<dyn Simulator>> {
        self.sim.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_engines(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Engines>> {
        self.engines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs a filter on every message between stores.
    pub fn add_filter(&self, f: Arc<dyn Filter>) {
        self.read_sim().add_filter(f);
    }

    /// Removes a filter.
    pub fn remove_filter(&self, f: &Arc<dyn Filter>) {
        self.read_sim().remove_filter(f);
    }

    /// Removes every filter.
    pub fn clear_filters(&self) {
        self.read_sim().clear_filters();
    }

    /// Corrupts the next `n` snapshot transfers on the wire; receivers must refuse them.
    pub fn corrupt_next_snapshots(&self, n: u64) {
        self.read_sim().corrupt_next_snapshots(n);
    }

    /// Snapshot transfers so far: (delivered verified, refused).
    pub fn snapshot_counts(&self) -> (u64, u64) {
        self.read_sim().snapshot_counts()
    }

    /// The snapshot manager of running store `store_id`.
    pub fn snap_manager(&self, store_id: u64) -> Option<snap::SnapManager> {
        self.read_sim().snap_manager(store_id)
    }

    /// The directory of store `store_id` (its engines, and its snapshots under `snap`).
    pub fn store_dir(&self, store_id: u64) -> PathBuf {
        self.dirs[&store_id].clone()
    }

    /// The engines of running store `store_id`, for inspection.
    pub fn engines(&self, store_id: u64) -> Option<Engines> {
        self.lock_engines().get(&store_id).cloned()
    }

    /// The apply state of `region_id` on running store `store_id`, as its kv engine holds it.
    pub fn apply_state(&self, store_id: u64, region_id: u64) -> Option<RaftApplyState> {
        let engines = self.engines(store_id)?;
        kv::engine::get_msg(&engines.kv, &kv::keys::apply_state_key(region_id))
            .expect("reading a store's apply state")
    }

    /// Waits until every running store keeps at most `2 * limit` applied entries of `region_id`
    /// in its log (`applied - truncated`), or panics after `timeout` with what each holds.
    pub fn wait_log_bound(&self, region_id: u64, limit: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen: Vec<(u64, u64, u64)> = self
                .read_sim()
                .running_stores()
                .into_iter()
                .filter_map(|s| {
                    let a = self.apply_state(s, region_id)?;
                    Some((
                        s,
                        a.applied_index,
                        a.truncated_state.unwrap_or_default().index,
                    ))
                })
                .collect();
            if seen
                .iter()
                .all(|(_, applied, truncated)| applied - truncated <= 2 * limit)
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "region {region_id}: log longer than 2 x {limit} after {timeout:?}; \
                     (store, applied, truncated): {seen:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The region containing `key`, as the scheduler knows it. Right after a split the
    /// scheduler may briefly know no region for a key (one half reported, the other not yet):
    /// this waits up to 10 s for one.
    pub fn get_region(&self, key: &[u8]) -> metapb::Region {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.scheduler.get_region(key) {
                Ok((region, _)) => return region,
                Err(e) if Instant::now() >= deadline => {
                    panic!("no region for key {key:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// The peer of `region` on `store_id`.
    pub(crate) fn peer_on(region: &metapb::Region, store_id: u64) -> Option<metapb::Peer> {
        region
            .peers
            .iter()
            .find(|p| p.store_id == store_id)
            .cloned()
    }

    /// The value of `key` in store `store_id`'s kv engine right now (no raft involved), or
    /// `None` if the store is down or lacks the key.
    pub fn get_on_store(&self, store_id: u64, key: &[u8]) -> Option<Vec<u8>> {
        let engines = self.lock_engines().get(&store_id).cloned()?;
        kv::engine::get_cf(&engines.kv, Cf::Default, &kv::keys::data_key(key))
            .expect("reading a store's kv engine")
    }

    /// Polls until store `store_id` holds `expected` at `key`, or panics after `timeout` with
    /// what it saw.
    pub fn wait_value_on_store(
        &self,
        store_id: u64,
        key: &[u8],
        expected: Option<&[u8]>,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.get_on_store(store_id, key);
            if seen.as_deref() == expected {
                return;
            }
            if Instant::now() >= deadline {
                let region = self
                    .scheduler
                    .get_region(key)
                    .map_or_else(|e| format!("{e}\n"), |(r, _)| self.describe_region(r.id));
                panic!(
                    "store {store_id}: key {:?} is {:?} after {timeout:?}, expected {:?}\n{region}",
                    String::from_utf8_lossy(key),
                    seen.map(|v| String::from_utf8_lossy(&v).into_owned()),
                    expected.map(|v| String::from_utf8_lossy(v).into_owned()),
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `requests` for `key`'s region straight to the peer on `store_id`, once, without
    /// retrying or following hints.
    ///
    /// # Errors
    /// Timeouts and delivery failures; region errors come back inside the response.
    pub fn call_on_store(
        &self,
        store_id: u64,
        key: &[u8],
        requests: Vec<Request>,
        timeout: Duration,
    ) -> raftstore::Result<CmdResponse> {
        let region = self.get_region(key);
        let req = RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: region.id,
                peer: Self::peer_on(&region, store_id),
                region_epoch: region.region_epoch,
                term: 0,
            }),
            requests,
            admin_request: None,
        };
        self.call_raw(store_id, req, timeout)
    }

    /// Sends `req` as is to store `store_id`, once.
    ///
    /// # Errors
    /// Timeouts and delivery failures; region errors come back inside the response.
    pub fn call_raw(
        &self,
        store_id: u64,
        req: RaftCmdRequest,
        timeout: Duration,
    ) -> raftstore::Result<CmdResponse> {
        self.read_sim().call_command_on_node(store_id, req, timeout)
    }

    /// The router of running store `store_id`: deliver raft messages to it as another store
    /// would.
    pub fn router(&self, store_id: u64) -> Option<raftstore::Router> {
        self.read_sim().router(store_id)
    }

    /// The raft worker counters of running store `store_id`.
    pub fn store_metrics(&self, store_id: u64) -> Option<Arc<raftstore::StoreMetrics>> {
        self.read_sim().metrics(store_id)
    }

    /// The `kv::Storage` of running store `store_id`.
    pub fn raft_storage(&self, store_id: u64) -> Option<raftstore::RaftStorage> {
        self.read_sim().raft_storage(store_id)
    }

    /// The current leader of `region_id`, found by asking each running store for a ReadIndex
    /// read; `None` if no store confirms leadership right now.
    pub fn leader_of_region(&self, region_id: u64) -> Option<metapb::Peer> {
        let (region, _) = self.scheduler.get_region_by_id(region_id).ok()?;
        let running = self.read_sim().running_stores();
        for store in running {
            let Some(peer) = Self::peer_on(&region, store) else {
                continue;
            };
            let req = RaftCmdRequest {
                header: Some(RaftRequestHeader {
                    region_id,
                    peer: Some(peer),
                    region_epoch: region.region_epoch,
                    term: 0,
                }),
                requests: vec![Request {
                    cmd_type: CmdType::Snap as i32,
                    snap: Some(SnapRequest {}),
                    ..Default::default()
                }],
                admin_request: None,
            };
            let res = self
                .read_sim()
                .call_command_on_node(store, req, Duration::from_millis(300));
            if let Ok(resp) = res {
                if resp
                    .response
                    .header
                    .as_ref()
                    .and_then(|h| h.error.as_ref())
                    .is_none()
                {
                    return Some(peer);
                }
            }
        }
        None
    }

    /// Polls until `region_id` has a leader, panicking after `timeout`.
    pub fn wait_leader(&self, region_id: u64, timeout: Duration) -> metapb::Peer {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.leader_of_region(region_id) {
                return p;
            }
            if Instant::now() >= deadline {
                panic!(
                    "region {region_id} has no leader after {timeout:?}; running stores: {:?}",
                    self.read_sim().running_stores()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until no store other than `not` leads `region_id`... and one does; returns it.
    pub fn wait_leader_other_than(
        &self,
        region_id: u64,
        not: u64,
        timeout: Duration,
    ) -> metapb::Peer {
        let deadline = Instant::now() + timeout;
        let mut seen = None;
        loop {
            if let Some(p) = self.leader_of_region(region_id) {
                if p.store_id != not {
                    return p;
                }
                seen = Some(p);
            }
            if Instant::now() >= deadline {
                panic!(
                    "region {region_id}: no leader other than store {not} after {timeout:?}; \
                     last leader seen: {seen:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.store_ids() {
            self.write_sim().stop_node(id);
        }
    }
}
