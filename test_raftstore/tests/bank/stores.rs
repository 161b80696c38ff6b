//! The bank suite's cluster: the in-process stores with the transactional API of each running
//! one (as one `KvService` per server would hold), and wall-clock timestamps. The transaction
//! client reaches them through `transport`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use codec::ts::compose_ts;
use kv::TxnApi;
use raftstore::{Config, RaftStorage};
use tessera_client::{TimestampOracle, TxnClient};
use test_raftstore::Cluster;

use crate::transport::StoreTransport;

/// The transactional API of one running store.
pub type Api = TxnApi<RaftStorage>;

/// How long the transport retries one request (region errors, stopped stores) before giving up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Locks `m`, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Timestamps whose physical part is the wall clock, strictly increasing.
///
/// Lock TTLs are judged on the physical milliseconds of timestamps, and the mock scheduler's
/// `tso()` is a bare counter (physical part 0), under which no lock would ever expire and an
/// abandoned transaction would block its keys forever. This mirrors the real scheduler's TSO.
#[derive(Default)]
pub struct Tso(Mutex<u64>);

impl Tso {
    /// A fresh timestamp.
    pub fn next(&self) -> u64 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_millis() as u64;
        let mut last = lock(&self.0);
        *last = (*last + 1).max(compose_ts(now_ms, 0));
        *last
    }
}

impl TimestampOracle for Tso {
    fn timestamp(&self) -> Result<u64, String> {
        Ok(self.next())
    }
}

/// The cluster plus the transactional API of each running store. Only the chaos thread and the
/// test's own setup and teardown stop and start stores, through [`Stores::stop`] and
/// [`Stores::restart`], so the table always matches the running stores.
pub struct Stores {
    cluster: Cluster,
    apis: Mutex<BTreeMap<u64, Api>>,
    /// The timestamp oracle every client shares.
    pub tso: Arc<Tso>,
}

impl Stores {
    /// Starts a cluster of `count` stores with the test raftstore configuration.
    pub fn start(count: usize) -> Stores {
        let mut cluster = Cluster::new(count, Config::test());
        cluster.start();
        let stores = Stores {
            cluster,
            apis: Mutex::new(BTreeMap::new()),
            tso: Arc::default(),
        };
        for id in stores.cluster.store_ids() {
            stores.install_api(id);
        }
        stores
    }

    fn install_api(&self, id: u64) {
        let storage = self
            .cluster
            .raft_storage(id)
            .unwrap_or_else(|| panic!("store {id} is not running"));
        // One latch table per store incarnation, shared by every client, as one server has.
        lock(&self.apis).insert(id, TxnApi::new(Arc::new(storage)));
    }

    /// The cluster underneath.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The running stores, in id order.
    pub fn running(&self) -> Vec<u64> {
        lock(&self.apis).keys().copied().collect()
    }

    /// The API of store `id`, if it runs.
    pub fn api(&self, id: u64) -> Option<Api> {
        lock(&self.apis).get(&id).cloned()
    }

    /// Crashes store `id`: everything it did not persist is lost.
    pub fn stop(&self, id: u64) {
        lock(&self.apis).remove(&id);
        self.cluster.stop_node(id);
    }

    /// Starts store `id` again from its disk.
    pub fn restart(&self, id: u64) {
        self.cluster.run_node(id);
        self.install_api(id);
    }
}

/// A transaction client of `stores` whose locks live `ttl`, and its transport (which counts
/// the attempts it retried).
pub fn txn_client(stores: &Arc<Stores>, ttl: Duration) -> (TxnClient, Arc<StoreTransport>) {
    let transport = Arc::new(StoreTransport::new(stores.clone(), REQUEST_TIMEOUT));
    let client = TxnClient::new(transport.clone(), stores.tso.clone()).with_lock_ttl(ttl);
    (client, transport)
}
