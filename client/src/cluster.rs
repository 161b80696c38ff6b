//! [`ClusterClient`]: a raw-API client of a whole cluster, given only the scheduler's address.
//!
//! ```text
//! key ─► region cache ─miss─► scheduler.get_region(key) ─► (region, leader)
//!            │
//!            ▼  the leader's peer (else another voter not yet failed in this request)
//!        store cache ─miss─► scheduler.get_store(id) ─► address ─► gRPC channel
//!            │
//!            ▼
//!        TinyKv call with Context { region_id, region_epoch, peer }
//!        (raw get/put/delete: on the store's BatchCommands stream, see `batch`)
//!            │
//!   NotLeader { leader }   ─► cache the hint and go there; no hint: try the next peer
//!   EpochNotMatch          ─► cache the current regions it carries (or ask the scheduler)
//!   KeyNotInRegion,
//!   RegionNotFound         ─► forget the region, ask the scheduler again
//!   transport error        ─► avoid that store for this request, try another peer
//! ```
//!
//! Every request retries under one deadline (a scan: one deadline for all its regions), with
//! capped exponential backoff between attempts that learned nothing new; giving up reports the
//! attempts and what each of the last ones ran into. A scan that reaches the end of a region
//! goes on in the next one until it has `limit` pairs or the key space ends.
//!
//! A write (put, delete, compare-and-swap) is the exception: it is sent again only when the
//! failure proves that the attempt was not applied (a connection that could not be made;
//! `NotLeader`, `EpochNotMatch`, `KeyNotInRegion`, `RegionNotFound`, `ServerIsBusy`,
//! `StaleCommand`, `StoreNotMatch`, `DiskFull`). After a timeout, a connection lost once the
//! request may have been sent, a store answering that its storage did not answer in time, or a
//! region error that proves nothing, it ends with [`ClusterError::Undetermined`] (see `retry`):
//! sent again, a put could apply a second time after another client's write (`tessera-chaos`
//! found such histories), and a swap would compare against its own write.

mod batch;
mod cache;
mod multi;
mod pages;
mod raw;
mod retry;
mod txn_batch;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::kvrpcpb::Context;
use proto::tinykvpb::tiny_kv_client::TinyKvClient;
use proto::{errorpb, metapb};
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};
use tonic::transport::Channel;
use tonic::Status;

use crate::raw::may_have_run;
use cache::{CachedRegion, RegionCache};
pub use pages::{RawPage, RawPages};
use retry::{is_transport_failure, Failure, Retry};
pub use retry::{ClusterError, Reply};

/// The most pairs one scan request asks a server for (a server answers at most its
/// `max_scan_limit`, 10 000 by default).
pub const SCAN_BATCH: u32 = 1_000;

/// Timeouts and backoff of a [`ClusterClient`].
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Deadline of one request, retries included (of a whole scan, all regions included).
    pub timeout: Duration,
    /// Bound of one RPC to a store.
    pub rpc_timeout: Duration,
    /// Bound of one connection attempt to a store.
    pub connect_timeout: Duration,
    /// First wait between retries; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// How long [`ClusterClient::connect`] tries to reach the scheduler.
    pub scheduler_timeout: Duration,
    /// Send raw gets, puts and deletes over one `BatchCommands` stream per store, many per
    /// message (else one unary call each). On by default.
    pub batch: bool,
    /// TLS to the scheduler and the stores (their certificates checked against the CA), or
    /// plain TCP.
    pub tls: Option<security::Tls>,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
            scheduler_timeout: Duration::from_secs(5),
            batch: true,
            tls: None,
        }
    }
}

/// A connected store.
#[derive(Clone)]
struct StoreConn {
    addr: String,
    client: TinyKvClient<Channel>,
    /// Its `BatchCommands` stream, when the client batches.
    batch: Option<batch::BatchConn>,
}

struct Inner {
    scheduler: Arc<dyn SchedulerClient>,
    config: ClusterConfig,
    // Never held across an await.
    regions: Mutex<RegionCache>,
    stores: Mutex<HashMap<u64, StoreConn>>,
}

/// A client of a whole cluster: routes each request to the leader of its key's region. Cheap to
/// clone; clones share the caches and connections.
#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The peer to send to: the cached leader unless it failed this request, else the first voter
/// that has not. Once every voter has failed, they all get another chance.
fn pick_peer(entry: &CachedRegion, avoid: &mut HashSet<u64>) -> Option<metapb::Peer> {
    let voters: Vec<metapb::Peer> = entry
        .region
        .peers
        .iter()
        .filter(|p| p.role != metapb::PeerRole::Learner as i32)
        .copied()
        .collect();
    if voters.iter().all(|p| avoid.contains(&p.store_id)) {
        avoid.clear();
    }
    entry
        .leader
        .filter(|l| !avoid.contains(&l.store_id))
        .or_else(|| {
            voters
                .iter()
                .find(|p| !avoid.contains(&p.store_id))
                .copied()
        })
}

impl ClusterClient {
    /// A client of the cluster the scheduler at `scheduler_addr` runs.
    ///
    /// # Errors
    /// [`ClusterError::Scheduler`] when the scheduler cannot be reached within
    /// `config.scheduler_timeout`.
    pub async fn connect(
        scheduler_addr: &str,
        config: ClusterConfig,
    ) -> Result<ClusterClient, ClusterError> {
        let addr = scheduler_addr.to_string();
        let rpc = RpcClientConfig {
            startup_timeout: config.scheduler_timeout,
            request_timeout: config.rpc_timeout,
            tls: config.tls.clone(),
            ..RpcClientConfig::default()
        };
        let failed = |reason: String| ClusterError::Scheduler {
            addr: scheduler_addr.to_string(),
            reason,
        };
        let client = tokio::task::spawn_blocking(move || RpcClient::connect(&addr, rpc))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
        Ok(ClusterClient::new(Arc::new(client), config))
    }

    /// A client that learns the cluster through `scheduler` (e.g. an in-process one).
    pub fn new(scheduler: Arc<dyn SchedulerClient>, config: ClusterConfig) -> ClusterClient {
        ClusterClient {
            inner: Arc::new(Inner {
                scheduler,
                config,
                regions: Mutex::new(RegionCache::default()),
                stores: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Runs a blocking scheduler request off the async workers.
    async fn ask_scheduler<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&dyn SchedulerClient) -> scheduler_client::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let scheduler = self.inner.scheduler.clone();
        match tokio::task::spawn_blocking(move || f(scheduler.as_ref())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("scheduler {what}: {e}")),
            Err(e) => Err(format!("scheduler {what}: task failed: {e}")),
        }
    }

    /// The region holding `key` and the peer to send to.
    async fn locate(
        &self,
        key: &[u8],
        avoid: &mut HashSet<u64>,
    ) -> Result<(metapb::Region, metapb::Peer), String> {
        let cached = lock(&self.inner.regions).find(key).cloned();
        let entry = match cached {
            Some(e) => e,
            None => {
                let k = key.to_vec();
                let (region, leader) = self
                    .ask_scheduler("get_region", move |s| s.get_region(&k))
                    .await?;
                lock(&self.inner.regions).insert(region.clone(), leader);
                CachedRegion { region, leader }
            }
        };
        let peer = pick_peer(&entry, avoid)
            .ok_or_else(|| format!("region {} has no voter", entry.region.id))?;
        Ok((entry.region, peer))
    }

    async fn store(&self, store_id: u64) -> Result<StoreConn, String> {
        if let Some(s) = lock(&self.inner.stores).get(&store_id) {
            return Ok(s.clone());
        }
        let store = self
            .ask_scheduler("get_store", move |s| s.get_store(store_id))
            .await?;
        let endpoint = security::endpoint(&store.address, self.inner.config.tls.as_ref())
            .map_err(|e| format!("store {store_id}: {e}"))?
            .connect_timeout(self.inner.config.connect_timeout)
            .tcp_nodelay(true);
        // Lazy: the channel connects on first use and reconnects by itself.
        let client = TinyKvClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let conn = StoreConn {
            addr: store.address,
            batch: self
                .inner
                .config
                .batch
                .then(|| batch::BatchConn::open(client.clone())),
            client,
        };
        lock(&self.inner.stores).insert(store_id, conn.clone());
        Ok(conn)
    }

    /// Acts on a region error from `peer` of `region`; says how to go on.
    fn on_region_error(
        &self,
        e: errorpb::Error,
        region: &metapb::Region,
        peer: metapb::Peer,
        avoid: &mut HashSet<u64>,
    ) -> Failure {
        let at = format!("store {} region {}", peer.store_id, region.id);
        let mut regions = lock(&self.inner.regions);
        if let Some(nl) = e.not_leader {
            return match nl.leader {
                Some(l) if l.store_id != peer.store_id && !avoid.contains(&l.store_id) => {
                    if !regions.set_leader(region.id, l) {
                        // A leader we do not know as a member: the membership changed.
                        regions.invalidate(region.id);
                    }
                    Failure::now(format!("{at}: not leader, leader on store {}", l.store_id))
                }
                _ => {
                    avoid.insert(peer.store_id);
                    Failure::backoff(format!("{at}: not leader, no live leader known"))
                }
            };
        }
        if let Some(df) = e.disk_full {
            // Not a routing problem, and not over in a retry's time: say so at once.
            return Failure::Fatal(ClusterError::DiskFull {
                store_ids: df.store_ids,
                message: e.message,
            });
        }
        if let Some(en) = e.epoch_not_match {
            regions.invalidate(region.id);
            let learned = !en.current_regions.is_empty();
            for r in en.current_regions {
                // The store that answered most likely leads the new regions too.
                let leader = r
                    .peers
                    .iter()
                    .find(|p| p.store_id == peer.store_id)
                    .copied();
                regions.insert(r, leader);
            }
            let note = format!("{at}: epoch not match");
            return if learned {
                Failure::now(note)
            } else {
                Failure::backoff(note)
            };
        }
        if e.store_not_match.is_some() {
            lock(&self.inner.stores).remove(&peer.store_id);
        }
        if e.region_not_found.is_some() || e.store_not_match.is_some() {
            avoid.insert(peer.store_id);
        }
        if e.server_is_busy.is_none() && e.stale_command.is_none() {
            // KeyNotInRegion, RegionNotFound, StoreNotMatch and anything unknown: our picture
            // of the region is wrong; ask the scheduler again.
            regions.invalidate(region.id);
        }
        Failure::backoff(format!("{at}: {}", e.message))
    }

    /// One attempt: locate, send, interpret. `f` learns the region it is sent to.
    async fn attempt<T, F, Fut>(
        &self,
        retry: &mut Retry,
        key: &[u8],
        f: &mut F,
    ) -> Result<(T, metapb::Region), Failure>
    where
        F: FnMut(&metapb::Region, StoreConn, Context) -> Fut,
        Fut: Future<Output = Result<Reply<T>, Status>>,
    {
        let (region, peer) = self
            .locate(key, &mut retry.avoid)
            .await
            .map_err(Failure::backoff)?;
        let store = match self.store(peer.store_id).await {
            Ok(s) => s,
            Err(note) => {
                retry.avoid.insert(peer.store_id);
                return Err(Failure::backoff(note));
            }
        };
        let ctx = Context {
            region_id: region.id,
            region_epoch: region.region_epoch,
            peer: Some(peer),
            term: 0,
        };
        let at = format!("store {} ({})", peer.store_id, store.addr);
        let budget = self.inner.config.rpc_timeout.min(retry.remaining());
        let reply = match tokio::time::timeout(budget, f(&region, store, ctx)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(status)) if retry.once && may_have_run(&status) => {
                retry.avoid.insert(peer.store_id);
                lock(&self.inner.stores).remove(&peer.store_id);
                lock(&self.inner.regions).invalidate(region.id);
                return Err(retry.undetermined(format!("{at}: {}", status.message())));
            }
            Ok(Err(status)) if is_transport_failure(&status) => {
                retry.avoid.insert(peer.store_id);
                // The store may have moved: look its address up again next time.
                lock(&self.inner.stores).remove(&peer.store_id);
                return Err(Failure::backoff(format!("{at}: {}", status.message())));
            }
            Ok(Err(status)) => {
                return Err(Failure::Fatal(ClusterError::Server(format!(
                    "{at}: {status}"
                ))))
            }
            Err(_) => {
                retry.avoid.insert(peer.store_id);
                let note = format!("{at}: no answer in {budget:?}");
                if retry.once {
                    // The next request asks the scheduler where the leader is.
                    lock(&self.inner.regions).invalidate(region.id);
                    return Err(retry.undetermined(note));
                }
                return Err(Failure::backoff(note));
            }
        };
        match reply {
            Reply::Ok(t) => Ok((t, region)),
            Reply::Unavailable(e) => {
                if retry.once {
                    lock(&self.inner.regions).invalidate(region.id);
                    return Err(retry.undetermined(format!("{at}: {e}")));
                }
                Err(Failure::backoff(format!("{at}: {e}")))
            }
            Reply::Error(e) => Err(Failure::Fatal(ClusterError::Server(e))),
            Reply::RegionError(e) => {
                let unknown = retry.once && !e.proves_not_applied();
                let message = e.message.clone();
                // Learn from it either way: the next request goes where it says.
                let failure = self.on_region_error(*e, &region, peer, &mut retry.avoid);
                if unknown {
                    return Err(retry.undetermined(format!("{at}: {message}")));
                }
                Err(failure)
            }
        }
    }

    /// Sends `f` to the leader of `key`'s region until it is served or `retry` runs out;
    /// returns the answer and the region that served it.
    async fn call_routed<T, F, Fut>(
        &self,
        retry: &mut Retry,
        key: &[u8],
        f: &mut F,
    ) -> Result<(T, metapb::Region), ClusterError>
    where
        F: FnMut(StoreConn, Context) -> Fut,
        Fut: Future<Output = Result<Reply<T>, Status>>,
    {
        let mut f = |_: &metapb::Region, s: StoreConn, ctx: Context| f(s, ctx);
        self.call_in_region(retry, key, &mut f).await
    }

    /// As [`ClusterClient::call_routed`], with `f` told the region each attempt goes to (a
    /// batch sends that region's share of its keys).
    async fn call_in_region<T, F, Fut>(
        &self,
        retry: &mut Retry,
        key: &[u8],
        f: &mut F,
    ) -> Result<(T, metapb::Region), ClusterError>
    where
        F: FnMut(&metapb::Region, StoreConn, Context) -> Fut,
        Fut: Future<Output = Result<Reply<T>, Status>>,
    {
        loop {
            retry.attempts += 1;
            match self.attempt(retry, key, f).await {
                Ok(done) => return Ok(done),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry { note, backoff }) => retry.after_failure(note, backoff).await?,
            }
        }
    }

    /// Sends a request about `key` to its region's leader, with the region's [`Context`],
    /// retrying on region and transport errors until the configured deadline. `f` builds and
    /// sends one attempt; transactions use this for their own requests.
    ///
    /// # Errors
    /// [`ClusterError::Server`] when a store rejects the request, [`ClusterError::GaveUp`]
    /// when the deadline passes.
    pub async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        key: &[u8],
        mut f: F,
    ) -> Result<T, ClusterError>
    where
        F: FnMut(TinyKvClient<Channel>, Context) -> Fut,
        Fut: Future<Output = Result<Reply<T>, Status>>,
    {
        let mut retry = Retry::new(op, key, &self.inner.config);
        let mut f = |s: StoreConn, ctx| f(s.client, ctx);
        Ok(self.call_routed(&mut retry, key, &mut f).await?.0)
    }

    /// As [`ClusterClient::call`], also returning the region that served the request (a scan
    /// across regions goes on where it ends).
    pub(crate) async fn call_in<T, F, Fut>(
        &self,
        op: &'static str,
        key: &[u8],
        mut f: F,
    ) -> Result<(T, metapb::Region), ClusterError>
    where
        F: FnMut(TinyKvClient<Channel>, Context) -> Fut,
        Fut: Future<Output = Result<Reply<T>, Status>>,
    {
        let mut retry = Retry::new(op, key, &self.inner.config);
        let mut f = |s: StoreConn, ctx| f(s.client, ctx);
        self.call_routed(&mut retry, key, &mut f).await
    }

    /// As [`ClusterClient::call`], for a request that must not apply twice (a raw write): sent
    /// again only after failures that prove it was not applied (see the module documentation).
    ///
    /// # Errors
    /// As [`ClusterClient::call`], and [`ClusterError::Undetermined`] when an attempt may have
    /// applied without an answer saying so; any other error means no attempt applied.
    pub async fn call_once<T, F, Fut>(
        &self,
        op: &'static str,
        key: &[u8],
        mut f: F,
    ) -> Result<T, ClusterError>
    where
        F: FnMut(TinyKvClient<Channel>, Context) -> Fut,
        Fut: Future<Output = Result<Reply<T>, Status>>,
    {
        let mut retry = Retry::once(op, key, &self.inner.config);
        let mut f = |s: StoreConn, ctx| f(s.client, ctx);
        Ok(self.call_routed(&mut retry, key, &mut f).await?.0)
    }

    /// The scheduler client this client routes with.
    pub fn scheduler(&self) -> Arc<dyn SchedulerClient> {
        self.inner.scheduler.clone()
    }
}
