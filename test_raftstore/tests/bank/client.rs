//! The bank test's transaction client: wall-clock timestamps, one [`TxnApi`] per running store
//! (as one `KvService` per server would hold), routing to the region's leader with retries, and
//! client-side lock resolution (`CheckTxnStatus` on the primary, then `ResolveLock`), the way the
//! root crate's `TxnClient` does it over gRPC.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codec::ts::compose_ts;
use kv::txn::testkit::{PrewriteRequestExt as _, RequestBuilder};
use kv::{Storage as _, StorageReader, TxnApi};
use proto::errorpb;
use proto::kvrpcpb::{
    BatchRollbackResponse, CheckTxnStatusResponse, CommitResponse, Context, GetResponse, KeyError,
    LockInfo, PrewriteResponse, ResolveLockResponse, ScanResponse,
};
use raftstore::{Config, RaftStorage};
use test_raftstore::Cluster;

/// The transactional API of one running store.
pub type Api = TxnApi<RaftStorage>;

/// Longest pause between two attempts of one request.
const MAX_BACKOFF: Duration = Duration::from_millis(100);
/// Pause before asking again about a lock whose transaction is still alive.
const LOCK_BACKOFF: Duration = Duration::from_millis(20);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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

/// The cluster plus the transactional API of each running store. Only the chaos thread and the
/// test's own setup and teardown stop and start stores, through [`Stores::stop`] and
/// [`Stores::restart`], so the table always matches the running stores.
pub struct Stores {
    cluster: Cluster,
    apis: Mutex<BTreeMap<u64, Api>>,
    /// The timestamp oracle every client shares.
    pub tso: Tso,
}

impl Stores {
    /// Starts a cluster of `count` stores with the test raftstore configuration.
    pub fn start(count: usize) -> Stores {
        let mut cluster = Cluster::new(count, Config::test());
        cluster.start();
        let stores = Stores {
            cluster,
            apis: Mutex::new(BTreeMap::new()),
            tso: Tso::default(),
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

/// Key-value pairs, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// No definite answer before the deadline: the outcome of a write is unknown.
#[derive(Debug, Clone)]
pub struct Timeout(pub String);

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer in time; last: {}", self.0)
    }
}

/// Responses that may carry a region error.
pub trait RegionError {
    /// The region error, if the request was refused by its region.
    fn region_error(&self) -> Option<&errorpb::Error>;
}

macro_rules! region_error {
    ($($t:ty),*) => {$(
        impl RegionError for $t {
            fn region_error(&self) -> Option<&errorpb::Error> {
                self.region_error.as_ref()
            }
        }
    )*};
}

region_error!(
    GetResponse,
    ScanResponse,
    PrewriteResponse,
    CommitResponse,
    CheckTxnStatusResponse,
    BatchRollbackResponse,
    ResolveLockResponse
);

/// How a prewrite ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prewrite {
    /// Every key is locked for the transaction.
    Locked,
    /// A newer commit (or our own rollback) stands on a key: the transaction cannot commit.
    Conflict,
}

/// How a commit request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// The keys are committed.
    Committed,
    /// The transaction was rolled back (by a resolver) on a key: it can never commit.
    RolledBack(String),
    /// A key has neither our lock nor our write record.
    LockNotFound(String),
}

/// The decided state of a transaction, from its primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Still locked and alive, with this TTL.
    Alive(u64),
    /// Committed at this timestamp.
    Committed(u64),
    /// Rolled back.
    RolledBack,
}

/// One client: its own idea of where the leader is, like a real client's region cache.
pub struct Client<'a> {
    stores: &'a Stores,
    leader: Option<u64>,
    attempt: usize,
    req: RequestBuilder,
    /// Other transactions' locks this client committed (their primary had committed).
    pub resolved_commits: u64,
    /// Other transactions' locks this client rolled back.
    pub resolved_rollbacks: u64,
    /// Attempts that failed (region errors, timeouts, stopped stores) and were retried.
    pub retries: u64,
}

impl<'a> Client<'a> {
    /// A client of `stores` that knows no leader yet.
    pub fn new(stores: &'a Stores) -> Client<'a> {
        Client {
            stores,
            leader: None,
            attempt: 0,
            req: RequestBuilder::default(),
            resolved_commits: 0,
            resolved_rollbacks: 0,
            retries: 0,
        }
    }

    /// The store to try next: the believed leader, else the running stores in turn.
    fn target(&mut self) -> Option<u64> {
        let running = self.stores.running();
        match self.leader {
            Some(s) if running.contains(&s) => Some(s),
            _ => {
                self.attempt += 1;
                running.get(self.attempt % running.len().max(1)).copied()
            }
        }
    }

    /// Runs `f` on the leader's API until it answers without a region error or `deadline`
    /// passes. Every command this test sends is idempotent for its transaction, so a retry
    /// after an unknown outcome is safe.
    pub fn call<R: RegionError>(
        &mut self,
        deadline: Instant,
        f: impl Fn(&Api, &RequestBuilder) -> kv::txn::Result<R>,
    ) -> Result<R, Timeout> {
        let mut backoff = Duration::from_millis(2);
        let mut last = String::from("no store running");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Timeout(last));
            }
            if let Some((target, api)) = self.target().and_then(|s| Some((s, self.stores.api(s)?)))
            {
                match f(&api, &self.req) {
                    Ok(resp) => match resp.region_error() {
                        None => {
                            self.leader = Some(target);
                            return Ok(resp);
                        }
                        Some(e) => {
                            last = format!("store {target}: {}", e.message);
                            let hint = e.not_leader.as_ref().and_then(|nl| nl.leader);
                            match hint.map(|p| p.store_id) {
                                Some(h) if h != target => {
                                    self.leader = Some(h);
                                    backoff = Duration::from_millis(2);
                                }
                                _ => self.leader = None,
                            }
                        }
                    },
                    Err(
                        e @ (kv::txn::Error::InvalidArgument(_)
                        | kv::txn::Error::Storage(kv::Error::Corrupt { .. })),
                    ) => panic!("store {target} refused a request of the bank test: {e}"),
                    Err(e) => {
                        last = format!("store {target}: {e}");
                        self.leader = None;
                    }
                }
            }
            self.retries += 1;
            std::thread::sleep(backoff.min(deadline.saturating_duration_since(now)));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The state of the transaction at `start_ts`, judged on `primary` now: an expired lock is
    /// rolled back on the spot, a missing one is marked rolled back.
    pub fn check_status(
        &mut self,
        primary: &[u8],
        start_ts: u64,
        deadline: Instant,
    ) -> Result<Status, Timeout> {
        let current_ts = self.stores.tso.next();
        let resp = self.call(deadline, |api, req| {
            api.check_txn_status(&req.check_txn_status(primary, start_ts, current_ts))
        })?;
        Ok(if resp.lock_ttl > 0 {
            Status::Alive(resp.lock_ttl)
        } else if resp.commit_version > 0 {
            Status::Committed(resp.commit_version)
        } else {
            Status::RolledBack
        })
    }

    /// Settles `lock` if its transaction is decided (committed, rolled back, or expired and so
    /// rolled back now) by committing or rolling back its remaining locks; false while the
    /// transaction is alive.
    pub fn resolve(&mut self, lock: &LockInfo, deadline: Instant) -> Result<bool, Timeout> {
        let start_ts = lock.lock_version;
        let commit_ts = match self.check_status(&lock.primary_lock, start_ts, deadline)? {
            Status::Alive(_) => return Ok(false),
            Status::Committed(ts) => ts,
            Status::RolledBack => 0,
        };
        let resp = self.call(deadline, |api, req| {
            api.resolve_lock(&req.resolve_lock(start_ts, commit_ts))
        })?;
        if let Some(e) = resp.error {
            // The primary decided the transaction, yet one of its other keys went the other
            // way: the transaction is no longer atomic.
            panic!(
                "resolving the transaction at {start_ts} (primary {:?}, commit_ts {commit_ts}): \
                 a secondary disagrees with its primary: {e:?}",
                String::from_utf8_lossy(&lock.primary_lock)
            );
        }
        if commit_ts == 0 {
            self.resolved_rollbacks += 1;
        } else {
            self.resolved_commits += 1;
        }
        Ok(true)
    }

    /// Gets `lock` out of the way: resolves it once decided, else pauses briefly.
    fn wait_out(&mut self, lock: &LockInfo, deadline: Instant) -> Result<(), Timeout> {
        if self.resolve(lock, deadline)? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Timeout(format!(
                "key {:?} still locked by the live transaction at {}",
                String::from_utf8_lossy(&lock.key),
                lock.lock_version
            )));
        }
        std::thread::sleep(LOCK_BACKOFF);
        Ok(())
    }

    /// The value of `key` at `ts`, resolving the locks in the way.
    pub fn get(
        &mut self,
        key: &[u8],
        ts: u64,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, Timeout> {
        loop {
            let resp = self.call(deadline, |api, req| api.get(&req.get(key, ts)))?;
            match resp.error {
                None => return Ok((!resp.not_found).then_some(resp.value)),
                Some(KeyError {
                    locked: Some(lock), ..
                }) => self.wait_out(&lock, deadline)?,
                Some(other) => panic!("get {key:?} at {ts}: unexpected key error {other:?}"),
            }
        }
    }

    /// Every visible pair from `start` (up to `limit`) in one snapshot at `ts`, resolving the
    /// locks in the way and scanning again until none is left.
    pub fn scan(
        &mut self,
        start: &[u8],
        limit: u32,
        ts: u64,
        deadline: Instant,
    ) -> Result<Pairs, Timeout> {
        loop {
            let resp = self.call(deadline, |api, req| api.scan(&req.scan(start, limit, ts)))?;
            let locks: Vec<LockInfo> = resp
                .pairs
                .iter()
                .filter_map(|p| p.error.as_ref().and_then(|e| e.locked.clone()))
                .collect();
            if locks.is_empty() {
                return Ok(resp.pairs.into_iter().map(|p| (p.key, p.value)).collect());
            }
            for l in &locks {
                self.wait_out(l, deadline)?;
            }
        }
    }

    /// Prewrites the puts `writes` for the transaction at `start_ts`, primary `primary`, waiting
    /// out (and resolving) other transactions' locks.
    pub fn prewrite(
        &mut self,
        start_ts: u64,
        primary: &[u8],
        writes: &[(Vec<u8>, Vec<u8>)],
        ttl: u64,
        deadline: Instant,
    ) -> Result<Prewrite, Timeout> {
        loop {
            let resp = self.call(deadline, |api, req| {
                let mut r = req.prewrite(start_ts, primary, ttl);
                for (k, v) in writes {
                    r = r.put(k, v);
                }
                api.prewrite(&r)
            })?;
            if resp.errors.is_empty() {
                return Ok(Prewrite::Locked);
            }
            if resp.errors.iter().any(|e| e.conflict.is_some()) {
                return Ok(Prewrite::Conflict);
            }
            for e in &resp.errors {
                match &e.locked {
                    Some(l) => self.wait_out(l, deadline)?,
                    None => panic!("prewrite at {start_ts}: unexpected key error {e:?}"),
                }
            }
        }
    }

    /// Commits `keys` of the transaction at `start_ts` at `commit_ts`.
    pub fn commit(
        &mut self,
        start_ts: u64,
        commit_ts: u64,
        keys: &[Vec<u8>],
        deadline: Instant,
    ) -> Result<Commit, Timeout> {
        let resp = self.call(deadline, |api, req| {
            api.commit(&req.commit(start_ts, commit_ts, keys))
        })?;
        Ok(match resp.error {
            None => Commit::Committed,
            Some(e) if !e.abort.is_empty() => Commit::RolledBack(e.abort),
            Some(e) if !e.retryable.is_empty() => Commit::LockNotFound(e.retryable),
            Some(e) => panic!("commit at {start_ts}: unexpected key error {e:?}"),
        })
    }

    /// Rolls the transaction at `start_ts` back on `keys`; false if one of them is committed.
    pub fn rollback(
        &mut self,
        start_ts: u64,
        keys: &[Vec<u8>],
        deadline: Instant,
    ) -> Result<bool, Timeout> {
        let resp = self.call(deadline, |api, req| {
            api.batch_rollback(&req.rollback(start_ts, keys))
        })?;
        Ok(resp.error.is_none())
    }

    /// A consistent snapshot of the region, read on its leader.
    pub fn snapshot(&mut self, deadline: Instant) -> Result<Box<dyn StorageReader>, Timeout> {
        let mut last = String::from("no store running");
        while Instant::now() < deadline {
            if let Some((target, api)) = self.target().and_then(|s| Some((s, self.stores.api(s)?)))
            {
                match api.storage().reader(&Context::default()) {
                    Ok(r) => {
                        self.leader = Some(target);
                        return Ok(r);
                    }
                    Err(e) => {
                        last = format!("store {target}: {e}");
                        self.leader = None;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(Timeout(last))
    }
}
