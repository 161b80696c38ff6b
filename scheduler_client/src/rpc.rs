//! `RpcClient`: the gRPC implementation of [`SchedulerClient`].
//!
//! Each call runs on the client's own small tokio runtime and is bounded by
//! `request_timeout`; transport failures (the scheduler down or restarting) are retried with
//! exponential backoff inside that bound. The channel reconnects by itself; the region heartbeat
//! stream is reopened by its pump (see `stream.rs`).

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use proto::metapb;
use proto::schedulerpb::scheduler_client::SchedulerClient as GrpcClient;
use proto::schedulerpb::*;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

use crate::error::{Error, Result};
use crate::stream::{self, HandlerSlot, PumpConfig};
use crate::{HeartbeatHandler, SchedulerClient};

/// Timeouts and backoff of an [`RpcClient`].
#[derive(Clone, Debug)]
pub struct RpcClientConfig {
    /// Bound of one TCP/HTTP2 connection attempt.
    pub connect_timeout: Duration,
    /// Bound of one request, retries included.
    pub request_timeout: Duration,
    /// How long [`RpcClient::connect`] keeps trying to reach the scheduler.
    pub startup_timeout: Duration,
    /// First wait between retries; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// TLS to the scheduler (its certificate checked against the CA), or plain TCP.
    pub tls: Option<security::Tls>,
}

impl Default for RpcClientConfig {
    fn default() -> RpcClientConfig {
        RpcClientConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            tls: None,
        }
    }
}

/// Response messages, which all carry a header that may hold the scheduler's error.
trait HasHeader {
    fn header(&self) -> Option<&ResponseHeader>;
}

macro_rules! has_header {
    ($($t:ty),* $(,)?) => {
        $(impl HasHeader for $t {
            fn header(&self) -> Option<&ResponseHeader> {
                self.header.as_ref()
            }
        })*
    };
}

has_header!(
    GetMembersResponse,
    TsoResponse,
    BootstrapResponse,
    IsBootstrappedResponse,
    AllocIdResponse,
    GetStoreResponse,
    PutStoreResponse,
    StoreHeartbeatResponse,
    GetRegionResponse,
    AskSplitResponse,
    ScanRegionsResponse,
    GetAllStoresResponse,
    AddOperatorResponse,
    GetScheduleConfigResponse,
    SetScheduleConfigResponse,
    GetGcSafePointResponse,
    UpdateGcSafePointResponse,
);

/// A scheduler client over gRPC.
pub struct RpcClient {
    addr: String,
    cfg: RpcClientConfig,
    cluster_id: u64,
    client: GrpcClient<Channel>,
    heartbeats: mpsc::Sender<RegionHeartbeatRequest>,
    handler: HandlerSlot,
    // Dropping the sender stops the pump.
    _stop: watch::Sender<bool>,
    handle: tokio::runtime::Handle,
    // Only `None` while dropping; see `Drop`.
    runtime: Option<Runtime>,
}

impl Drop for RpcClient {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime's context (a client
        // dropped in async code); shutting down in the background never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("addr", &self.addr)
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

/// Whether a failed call may succeed if sent again (nothing reached the scheduler).
fn is_transport_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}

fn header(cluster_id: u64) -> Option<RequestHeader> {
    Some(RequestHeader { cluster_id })
}

impl RpcClient {
    /// Connects to the scheduler at `addr` ("host:port"), retrying until
    /// `cfg.startup_timeout`, and learns the cluster id. Starts the region heartbeat stream.
    pub fn connect(addr: &str, cfg: RpcClientConfig) -> Result<RpcClient> {
        let unavailable = |reason: String| Error::Unavailable {
            addr: addr.to_string(),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("scheduler-client")
            .enable_all()
            .build()
            .map_err(|e| unavailable(format!("cannot start the client runtime: {e}")))?;
        let endpoint = security::endpoint(addr, cfg.tls.as_ref())
            .map_err(|e| Error::InvalidArgument(format!("scheduler: {e}")))?
            .connect_timeout(cfg.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        // The lazy channel spawns its worker on the current runtime, and reconnects by itself.
        let channel = {
            let _guard = runtime.enter();
            endpoint.connect_lazy()
        };
        let client = GrpcClient::new(channel);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (hb_tx, hb_rx) = mpsc::channel(stream::HEARTBEAT_QUEUE);
        let mut this = RpcClient {
            addr: addr.to_string(),
            cfg: cfg.clone(),
            cluster_id: 0,
            client,
            heartbeats: hb_tx,
            handler: Arc::new(RwLock::new(None)),
            _stop: stop_tx,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        };
        let members = this
            .call_with(
                "get_members",
                cfg.startup_timeout,
                move |mut c| async move { c.get_members(GetMembersRequest { header: None }).await },
            )
            .map_err(|e| match e {
                Error::Timeout { .. } => {
                    unavailable(format!("not reachable within {:?}", cfg.startup_timeout))
                }
                other => other,
            })?;
        this.cluster_id = members.header.map_or(0, |h| h.cluster_id);
        tracing::info!(
            addr,
            cluster_id = this.cluster_id,
            "connected to the scheduler"
        );

        let (resp_tx, resp_rx) = crossbeam_channel::unbounded();
        let pump_cfg = PumpConfig {
            cluster_id: this.cluster_id,
            open_timeout: cfg.request_timeout,
            initial_backoff: cfg.initial_backoff,
            max_backoff: cfg.max_backoff,
        };
        this.handle.spawn(stream::heartbeat_pump(
            this.client.clone(),
            pump_cfg,
            hb_rx,
            resp_tx,
            stop_rx,
        ));
        let slot = this.handler.clone();
        std::thread::Builder::new()
            .name("scheduler-hb-resp".into())
            .spawn(move || stream::dispatch_responses(resp_rx, slot))
            .map_err(|e| unavailable(format!("cannot start the response thread: {e}")))?;
        Ok(this)
    }

    /// The scheduler's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Every store the scheduler knows, tombstones included unless `exclude_tombstones`.
    ///
    /// # Errors
    /// The scheduler cannot be reached or refuses.
    pub fn get_all_stores(&self, exclude_tombstones: bool) -> Result<Vec<metapb::Store>> {
        let req = GetAllStoresRequest {
            header: self.header(),
            exclude_tombstone_stores: exclude_tombstones,
        };
        let resp = self.call("get_all_stores", move |mut c| async move {
            c.get_all_stores(req).await
        })?;
        Ok(resp.stores)
    }

    /// Asks for operator `kind` on region `region_id` targeting `store_id`; returns its
    /// description.
    ///
    /// # Errors
    /// The scheduler cannot be reached, or refuses (the error says why).
    pub fn add_operator(
        &self,
        region_id: u64,
        kind: AdminOperator,
        store_id: u64,
    ) -> Result<String> {
        let req = AddOperatorRequest {
            header: self.header(),
            region_id,
            kind: kind as i32,
            store_id,
        };
        let resp = self.call("add_operator", move |mut c| async move {
            c.add_operator(req).await
        })?;
        Ok(resp.description)
    }

    /// The scheduler's schedule settings.
    ///
    /// # Errors
    /// The scheduler cannot be reached or refuses.
    pub fn get_schedule_config(&self) -> Result<ScheduleConfig> {
        let req = GetScheduleConfigRequest {
            header: self.header(),
        };
        let resp = self.call("get_schedule_config", move |mut c| async move {
            c.get_schedule_config(req).await
        })?;
        Ok(resp.config.unwrap_or_default())
    }

    /// Replaces the scheduler's schedule settings.
    ///
    /// # Errors
    /// The scheduler cannot be reached or refuses.
    pub fn set_schedule_config(&self, config: ScheduleConfig) -> Result<()> {
        let req = SetScheduleConfigRequest {
            header: self.header(),
            config: Some(config),
        };
        self.call("set_schedule_config", move |mut c| async move {
            c.set_schedule_config(req).await
        })?;
        Ok(())
    }

    /// Raises the MVCC GC safe point to `safe_point` (a lower one changes nothing); the safe
    /// point in force.
    ///
    /// # Errors
    /// The scheduler cannot be reached or refuses.
    pub fn update_gc_safe_point(&self, safe_point: u64) -> Result<u64> {
        let req = UpdateGcSafePointRequest {
            header: self.header(),
            safe_point,
        };
        let resp = self.call("update_gc_safe_point", move |mut c| async move {
            c.update_gc_safe_point(req).await
        })?;
        Ok(resp.new_safe_point)
    }

    /// The regions intersecting `[start, end)` (an empty `end` = to the last key) in key order,
    /// at most `limit` of them (0 = all), each with its leader if known. One consistent view of
    /// the scheduler's region tree, so it may show a hole: a split's new region is known only
    /// from its first heartbeat.
    pub fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(metapb::Region, Option<metapb::Peer>)>> {
        let req = ScanRegionsRequest {
            header: self.header(),
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            limit: i32::try_from(limit).unwrap_or(i32::MAX),
        };
        let resp = self.call("scan_regions", move |mut c| {
            let req = req.clone();
            async move { c.scan_regions(req).await }
        })?;
        let mut leaders = resp.leaders.into_iter();
        Ok(resp
            .regions
            .into_iter()
            .map(|region| {
                let leader = leaders.next().filter(|l| l.id != 0);
                (region, leader)
            })
            .collect())
    }

    /// Runs `fut` on the client's runtime and waits for it from this (plain) thread. Spawning
    /// rather than `block_on` keeps this usable from any thread, even one inside another runtime.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(Error::Unavailable {
                addr: self.addr.clone(),
                reason: "client runtime shut down".into(),
            })
        })
    }

    /// Sends a request built by `f`, retrying transport failures with backoff until `timeout`,
    /// and turns a header error into an `Err`.
    fn call_with<T, F, Fut>(&self, op: &'static str, timeout: Duration, f: F) -> Result<T>
    where
        T: HasHeader + Send + 'static,
        F: Fn(GrpcClient<Channel>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Response<T>, Status>> + Send + 'static,
    {
        let client = self.client.clone();
        let addr = self.addr.clone();
        let (initial, max) = (self.cfg.initial_backoff, self.cfg.max_backoff);
        self.run(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut backoff = initial;
            loop {
                let attempt = tokio::time::timeout_at(deadline, f(client.clone())).await;
                let status = match attempt {
                    Err(_) => return Err(Error::Timeout { op, after: timeout }),
                    Ok(Ok(resp)) => {
                        let resp = resp.into_inner();
                        return match Error::from_header(resp.header()) {
                            Some(e) => Err(e),
                            None => Ok(resp),
                        };
                    }
                    Ok(Err(status)) => status,
                };
                if !is_transport_failure(&status) {
                    return Err(Error::Rpc(format!("{op}: {status}")));
                }
                if tokio::time::Instant::now() + backoff >= deadline {
                    return Err(Error::Unavailable {
                        addr,
                        reason: format!("{op}: {}", status.message()),
                    });
                }
                tracing::debug!(op, %status, ?backoff, "scheduler unreachable, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max);
            }
        })
    }

    fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: HasHeader + Send + 'static,
        F: Fn(GrpcClient<Channel>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Response<T>, Status>> + Send + 'static,
    {
        self.call_with(op, self.cfg.request_timeout, f)
    }

    fn header(&self) -> Option<RequestHeader> {
        header(self.cluster_id)
    }
}

fn region_and_leader(
    resp: GetRegionResponse,
    what: String,
) -> Result<(metapb::Region, Option<metapb::Peer>)> {
    match resp.region {
        Some(region) => Ok((region, resp.leader.filter(|l| l.id != 0))),
        None => Err(Error::NotFound(what)),
    }
}

impl SchedulerClient for RpcClient {
    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    fn bootstrap(&self, store: metapb::Store, region: metapb::Region) -> Result<()> {
        let req = BootstrapRequest {
            header: self.header(),
            store: Some(store),
            region: Some(region),
        };
        self.call("bootstrap", move |mut c| {
            let req = req.clone();
            async move { c.bootstrap(req).await }
        })
        .map(drop)
    }

    fn is_bootstrapped(&self) -> Result<bool> {
        let header = self.header();
        let resp = self.call("is_bootstrapped", move |mut c| {
            let header = header;
            async move { c.is_bootstrapped(IsBootstrappedRequest { header }).await }
        })?;
        Ok(resp.bootstrapped)
    }

    fn alloc_id(&self) -> Result<u64> {
        let header = self.header();
        let resp = self.call("alloc_id", move |mut c| {
            let header = header;
            async move { c.alloc_id(AllocIdRequest { header }).await }
        })?;
        Ok(resp.id)
    }

    fn put_store(&self, store: metapb::Store) -> Result<()> {
        let req = PutStoreRequest {
            header: self.header(),
            store: Some(store),
        };
        self.call("put_store", move |mut c| {
            let req = req.clone();
            async move { c.put_store(req).await }
        })
        .map(drop)
    }

    fn get_store(&self, store_id: u64) -> Result<metapb::Store> {
        let header = self.header();
        let resp = self.call("get_store", move |mut c| {
            let header = header;
            async move { c.get_store(GetStoreRequest { header, store_id }).await }
        })?;
        resp.store
            .ok_or_else(|| Error::NotFound(format!("store {store_id}")))
    }

    fn get_region(&self, key: &[u8]) -> Result<(metapb::Region, Option<metapb::Peer>)> {
        let req = GetRegionRequest {
            header: self.header(),
            region_key: key.to_vec(),
        };
        let resp = self.call("get_region", move |mut c| {
            let req = req.clone();
            async move { c.get_region(req).await }
        })?;
        region_and_leader(resp, format!("region of key {key:?}"))
    }

    fn get_region_by_id(&self, region_id: u64) -> Result<(metapb::Region, Option<metapb::Peer>)> {
        let header = self.header();
        let resp = self.call("get_region_by_id", move |mut c| {
            let header = header;
            async move {
                c.get_region_by_id(GetRegionByIdRequest { header, region_id })
                    .await
            }
        })?;
        region_and_leader(resp, format!("region {region_id}"))
    }

    fn ask_split(&self, region: metapb::Region) -> Result<AskSplitResponse> {
        let req = AskSplitRequest {
            header: self.header(),
            region: Some(region),
        };
        self.call("ask_split", move |mut c| {
            let req = req.clone();
            async move { c.ask_split(req).await }
        })
    }

    fn store_heartbeat(&self, stats: StoreStats) -> Result<()> {
        let req = StoreHeartbeatRequest {
            header: self.header(),
            stats: Some(stats),
        };
        self.call("store_heartbeat", move |mut c| {
            let req = req;
            async move { c.store_heartbeat(req).await }
        })
        .map(drop)
    }

    fn region_heartbeat(&self, req: RegionHeartbeatRequest) -> Result<()> {
        self.heartbeats.try_send(req).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Unavailable {
                addr: self.addr.clone(),
                reason: "region heartbeat queue full".into(),
            },
            mpsc::error::TrySendError::Closed(_) => Error::Unavailable {
                addr: self.addr.clone(),
                reason: "region heartbeat stream stopped".into(),
            },
        })
    }

    fn handle_region_heartbeat_response(&self, store_id: u64, handler: HeartbeatHandler) {
        tracing::debug!(store_id, "region heartbeat response handler registered");
        *self
            .handler
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(handler));
    }

    fn tso(&self) -> Result<u64> {
        let header = self.header();
        let resp = self.call("tso", move |mut c| {
            let req = TsoRequest { header, count: 1 };
            async move {
                let mut stream = c.tso(tokio_stream::once(req)).await?.into_inner();
                match stream.message().await? {
                    Some(resp) => Ok(Response::new(resp)),
                    None => Err(Status::unavailable("tso stream closed without an answer")),
                }
            }
        })?;
        let ts = resp
            .timestamp
            .ok_or_else(|| Error::Rpc("tso response without a timestamp".into()))?;
        Ok(codec::ts::compose_ts(ts.physical as u64, ts.logical as u64))
    }

    fn gc_safe_point(&self) -> Result<u64> {
        let req = GetGcSafePointRequest {
            header: self.header(),
        };
        let resp = self.call("get_gc_safe_point", move |mut c| async move {
            c.get_gc_safe_point(req).await
        })?;
        Ok(resp.safe_point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_to_nothing_is_unavailable_3c() {
        // A port from a listener that is closed right away: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let cfg = RpcClientConfig {
            startup_timeout: Duration::from_millis(300),
            ..RpcClientConfig::default()
        };
        let err = RpcClient::connect(&format!("127.0.0.1:{port}"), cfg).unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert!(err.is_retryable());
    }

    #[test]
    fn bad_address_is_invalid_argument_3c() {
        let err = RpcClient::connect("not a uri\n", RpcClientConfig::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
}
