//! [`Cluster`]: a test cluster of stores over a [`Simulator`]. It bootstraps every store with the
//! same first region (one peer per store), starts, stops and restarts stores (a stopped store
//! keeps only what its engines hold on disk), and acts as a client that retries on region errors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kv::{Cf, EngineReader, Engines, StorageReader as _, WriteBatch};
use proto::metapb;
use proto::raft_cmdpb::{
    CmdType, DeleteRequest, GetRequest, PutRequest, RaftCmdRequest, RaftRequestHeader, Request,
    SnapRequest,
};
use raftstore::{CmdResponse, Config};
use scheduler_client::SchedulerClient as _;
use tempfile::TempDir;

use crate::filter::Filter;
use crate::node::{NodeSimulator, Simulator};
use crate::scheduler::MockSchedulerClient;

/// How long `must_*` helpers keep retrying.
const MUST_TIMEOUT: Duration = Duration::from_secs(10);

/// An in-process cluster of `count` stores.
pub struct Cluster {
    cfg: Config,
    count: usize,
    root: TempDir,
    dirs: HashMap<u64, PathBuf>,
    store_ids: Vec<u64>,
    sim: RwLock<Box<dyn Simulator>>,
    scheduler: Arc<MockSchedulerClient>,
    /// Engines of running stores, for direct inspection.
    engines: Mutex<HashMap<u64, Engines>>,
    leaders: LeaderCache,
}

/// Which peer leads each region, as one client believes. Clients with their own caches go
/// stale independently, as real clients do: one may still talk to a deposed leader while
/// another already found the new one.
#[derive(Default)]
pub struct LeaderCache(Mutex<HashMap<u64, metapb::Peer>>);

impl LeaderCache {
    fn get(&self, region_id: u64) -> Option<metapb::Peer> {
        self.lock().get(&region_id).cloned()
    }

    fn set(&self, region_id: u64, peer: metapb::Peer) {
        self.lock().insert(region_id, peer);
    }

    fn forget(&self, region_id: u64) {
        self.lock().remove(&region_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, metapb::Peer>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a client request ended without an answer.
#[derive(Debug, Clone)]
pub struct RequestError(pub String);

impl Cluster {
    /// A cluster of `count` stores with configuration `cfg`, not started.
    pub fn new(count: usize, cfg: Config) -> Cluster {
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
        }
    }

    /// The mock scheduler.
    pub fn scheduler(&self) -> &Arc<MockSchedulerClient> {
        &self.scheduler
    }

    /// The ids of every store, running or not.
    pub fn store_ids(&self) -> Vec<u64> {
        self.store_ids.clone()
    }

    /// Bootstraps every store with one region spanning all keys and a peer on each store, then
    /// starts them all.
    pub fn start(&mut self) {
        let ids: Vec<u64> = (0..self.count)
            .map(|_| self.scheduler.alloc_id().expect("mock ids"))
            .collect();
        let region_id = self.scheduler.alloc_id().expect("mock ids");
        let mut region = raftstore::bootstrap::new_first_region(ids[0], region_id, 0);
        region.peers = ids
            .iter()
            .map(|&s| metapb::Peer {
                id: self.scheduler.alloc_id().expect("mock ids"),
                store_id: s,
                role: metapb::PeerRole::Voter as i32,
            })
            .collect();
        for &id in &ids {
            let dir = self.root.path().join(format!("store-{id}"));
            let engines = Engines::open(&dir).expect("opening engines");
            raftstore::bootstrap::bootstrap_store(&engines, self.scheduler.cluster_id(), id)
                .expect("bootstrapping a store");
            let mut wb = WriteBatch::new(&engines.kv);
            raftstore::bootstrap::write_initial_region(&engines, &region, &mut wb)
                .expect("writing the first region");
            wb.write(true).expect("writing the first region");
            drop(engines);
            self.dirs.insert(id, dir);
        }
        let store = |id: u64| metapb::Store {
            id,
            address: format!("store-{id}"),
            state: metapb::StoreState::Up as i32,
        };
        self.scheduler
            .bootstrap(store(ids[0]), region)
            .expect("bootstrapping the mock scheduler");
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
            match Engines::open(dir) {
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
        self.leaders.lock().retain(|_, p| p.store_id != id);
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

    fn read_sim(&self) -> std::sync::RwLockReadGuard<'_, Box<dyn Simulator>> {
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

    /// The region containing `key`, as the scheduler knows it.
    pub fn get_region(&self, key: &[u8]) -> metapb::Region {
        self.scheduler
            .get_region(key)
            .unwrap_or_else(|e| panic!("no region for key {key:?}: {e}"))
            .0
    }

    /// The peer of `region` on `store_id`.
    fn peer_on(region: &metapb::Region, store_id: u64) -> Option<metapb::Peer> {
        region
            .peers
            .iter()
            .find(|p| p.store_id == store_id)
            .cloned()
    }

    /// Sends `requests` for `key`'s region to its leader, following `NotLeader` hints and
    /// trying other stores on timeouts and other region errors, until `timeout` passes.
    ///
    /// # Errors
    /// The last failure seen when time runs out: the outcome of a write is then unknown.
    pub fn request(
        &self,
        key: &[u8],
        requests: Vec<Request>,
        timeout: Duration,
    ) -> Result<CmdResponse, RequestError> {
        self.request_with(&self.leaders, key, requests, timeout)
    }

    /// As [`Cluster::request`], with the caller's own leader cache.
    ///
    /// # Errors
    /// As [`Cluster::request`].
    pub fn request_with(
        &self,
        leaders: &LeaderCache,
        key: &[u8],
        requests: Vec<Request>,
        timeout: Duration,
    ) -> Result<CmdResponse, RequestError> {
        let deadline = Instant::now() + timeout;
        let mut attempt = 0usize;
        let mut last_err = String::from("no attempt made");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(RequestError(format!(
                    "no answer for key {:?} in {timeout:?} after {attempt} attempts; last: {last_err}",
                    String::from_utf8_lossy(key)
                )));
            }
            let region = self.get_region(key);
            let cached = leaders.get(region.id);
            let running = self.read_sim().running_stores();
            let target = match cached {
                Some(p) if running.contains(&p.store_id) => p,
                _ => {
                    let store = running
                        .get(attempt % running.len().max(1))
                        .copied()
                        .unwrap_or(0);
                    Self::peer_on(&region, store).unwrap_or_default()
                }
            };
            attempt += 1;
            let req = RaftCmdRequest {
                header: Some(RaftRequestHeader {
                    region_id: region.id,
                    peer: Some(target),
                    region_epoch: region.region_epoch,
                    term: 0,
                }),
                requests: requests.clone(),
                admin_request: None,
            };
            let per_try = self.cfg.command_timeout.min(deadline - now);
            let res = self
                .read_sim()
                .call_command_on_node(target.store_id, req, per_try);
            let forget = || leaders.forget(region.id);
            match res {
                Ok(resp) => match resp.response.header.as_ref().and_then(|h| h.error.clone()) {
                    None => {
                        leaders.set(region.id, target);
                        return Ok(resp);
                    }
                    Some(e) => {
                        last_err = e.message.clone();
                        match e.not_leader.and_then(|nl| nl.leader) {
                            Some(l) if l.id != target.id => leaders.set(region.id, l),
                            _ => {
                                forget();
                                // No leader known anywhere yet (an election is running): back
                                // off briefly instead of spinning on the stores.
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                },
                Err(e) => {
                    last_err = e.to_string();
                    forget();
                    if matches!(e, raftstore::Error::Transport(_)) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
    }

    /// Puts `value` at `key` (default CF) with a deadline.
    ///
    /// # Errors
    /// As [`Cluster::request`].
    pub fn try_put(&self, key: &[u8], value: &[u8], timeout: Duration) -> Result<(), RequestError> {
        self.try_put_with(&self.leaders, key, value, timeout)
    }

    /// As [`Cluster::try_put`], with the caller's own leader cache.
    ///
    /// # Errors
    /// As [`Cluster::request`].
    pub fn try_put_with(
        &self,
        leaders: &LeaderCache,
        key: &[u8],
        value: &[u8],
        timeout: Duration,
    ) -> Result<(), RequestError> {
        self.request_with(leaders, key, vec![put_req(key, value)], timeout)
            .map(|_| ())
    }

    /// Reads `key` (default CF) with a deadline; `None` when absent.
    ///
    /// # Errors
    /// As [`Cluster::request`].
    pub fn try_get(&self, key: &[u8], timeout: Duration) -> Result<Option<Vec<u8>>, RequestError> {
        self.try_get_with(&self.leaders, key, timeout)
    }

    /// As [`Cluster::try_get`], with the caller's own leader cache.
    ///
    /// # Errors
    /// As [`Cluster::request`].
    pub fn try_get_with(
        &self,
        leaders: &LeaderCache,
        key: &[u8],
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        let resp = self.request_with(leaders, key, vec![get_req(key)], timeout)?;
        let value = resp
            .response
            .responses
            .first()
            .and_then(|r| r.get.as_ref())
            .map(|g| g.value.clone())
            .unwrap_or_default();
        Ok((!value.is_empty()).then_some(value))
    }

    /// Puts, panicking when it cannot be done in time.
    pub fn must_put(&self, key: &[u8], value: &[u8]) {
        self.try_put(key, value, MUST_TIMEOUT)
            .unwrap_or_else(|e| panic!("must_put {:?}: {}", String::from_utf8_lossy(key), e.0));
    }

    /// Reads, panicking when it cannot be done in time.
    pub fn must_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.try_get(key, MUST_TIMEOUT)
            .unwrap_or_else(|e| panic!("must_get {:?}: {}", String::from_utf8_lossy(key), e.0))
    }

    /// Deletes, panicking when it cannot be done in time.
    pub fn must_delete(&self, key: &[u8]) {
        let req = Request {
            cmd_type: CmdType::Delete as i32,
            delete: Some(DeleteRequest {
                cf: String::new(),
                key: key.to_vec(),
            }),
            ..Default::default()
        };
        self.request(key, vec![req], MUST_TIMEOUT)
            .unwrap_or_else(|e| panic!("must_delete {:?}: {}", String::from_utf8_lossy(key), e.0));
    }

    /// All pairs with keys in `[start, end)` (empty `end`: to the end of `start`'s region),
    /// read from one consistent snapshot of the leader.
    pub fn must_scan(&self, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let req = Request {
            cmd_type: CmdType::Snap as i32,
            snap: Some(SnapRequest {}),
            ..Default::default()
        };
        let resp = self
            .request(start, vec![req], MUST_TIMEOUT)
            .unwrap_or_else(|e| panic!("must_scan: {}", e.0));
        let region = resp.response.responses[0]
            .snap
            .as_ref()
            .and_then(|s| s.region.clone())
            .expect("snap response carries the region");
        let snap = resp.snapshot.expect("snap response carries a snapshot");
        let reader = EngineReader::new(snap, &region.start_key, &region.end_key);
        let mut it = reader.iter_cf(Cf::Default).expect("iterating a snapshot");
        it.seek(start);
        let mut out = Vec::new();
        while it.valid().expect("iterating a snapshot") {
            if !end.is_empty() && it.key() >= end {
                break;
            }
            out.push((it.key().to_vec(), it.value().to_vec()));
            it.next();
        }
        out
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
                panic!(
                    "store {store_id}: key {:?} is {:?} after {timeout:?}, expected {:?}",
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

/// A `Put` of `value` at `key` in the default CF.
pub fn put_req(key: &[u8], value: &[u8]) -> Request {
    Request {
        cmd_type: CmdType::Put as i32,
        put: Some(PutRequest {
            cf: String::new(),
            key: key.to_vec(),
            value: value.to_vec(),
        }),
        ..Default::default()
    }
}

/// A `Get` of `key` in the default CF.
pub fn get_req(key: &[u8]) -> Request {
    Request {
        cmd_type: CmdType::Get as i32,
        get: Some(GetRequest {
            cf: String::new(),
            key: key.to_vec(),
        }),
        ..Default::default()
    }
}
