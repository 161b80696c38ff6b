//! The gRPC face of the scheduler: the `schedulerpb.Scheduler` service over a [`Cluster`], the
//! background scheduling loop, and a server handle with graceful shutdown.
//!
//! Errors travel in the response header (`ResponseHeader.error`), never as gRPC statuses, so a
//! client can tell "the scheduler said no" from "the scheduler could not be reached".

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use proto::schedulerpb::scheduler_server::{Scheduler, SchedulerServer};
use proto::schedulerpb::*;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::admin::AdminOp;
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::region::RegionInfo;

/// How long shutdown waits for open connections before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
pub use net::GRPC_MAX_CONCURRENT_STREAMS;

type GrpcResult<T> = std::result::Result<Response<T>, Status>;

/// Response messages, which all carry a header.
trait WithHeader: Default {
    fn set_header(&mut self, header: ResponseHeader);
}

macro_rules! with_header {
    ($($t:ty),* $(,)?) => {
        $(impl WithHeader for $t {
            fn set_header(&mut self, header: ResponseHeader) {
                self.header = Some(header);
            }
        })*
    };
}

with_header!(
    GetMembersResponse,
    TsoResponse,
    BootstrapResponse,
    IsBootstrappedResponse,
    AllocIdResponse,
    GetStoreResponse,
    PutStoreResponse,
    GetAllStoresResponse,
    StoreHeartbeatResponse,
    RegionHeartbeatResponse,
    GetRegionResponse,
    ScanRegionsResponse,
    AskSplitResponse,
    GetClusterConfigResponse,
    PutClusterConfigResponse,
    AddOperatorResponse,
    GetScheduleConfigResponse,
    SetScheduleConfigResponse,
    GetGcSafePointResponse,
    UpdateGcSafePointResponse,
);

/// The `Scheduler` gRPC service over a shared [`Cluster`].
#[derive(Clone)]
pub struct SchedulerService {
    cluster: Arc<Cluster>,
    addr: String,
    stop: watch::Receiver<bool>,
}

impl SchedulerService {
    fn header(&self, error: Option<&Error>) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster.cluster_id(),
            error: error.map(Error::to_proto),
        }
    }

    fn reply<R: WithHeader>(&self, result: Result<R>) -> GrpcResult<R> {
        let (mut resp, error) = match result {
            Ok(resp) => (resp, None),
            Err(e) => {
                tracing::debug!(error = %e, "request failed");
                (R::default(), Some(e))
            }
        };
        resp.set_header(self.header(error.as_ref()));
        Ok(Response::new(resp))
    }

    fn check(&self, header: &Option<RequestHeader>) -> Result<()> {
        self.cluster
            .check_cluster_id(header.as_ref().map_or(0, |h| h.cluster_id))
    }
}

fn region_response(info: RegionInfo) -> GetRegionResponse {
    GetRegionResponse {
        header: None,
        region: Some(info.region),
        leader: info.leader,
        pending_peers: info.pending_peers,
    }
}

/// Waits until `stop` turns true (or its sender is gone, which also means stop).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[tonic::async_trait]
impl Scheduler for SchedulerService {
    async fn get_members(&self, req: Request<GetMembersRequest>) -> GrpcResult<GetMembersResponse> {
        let result = self.check(&req.get_ref().header).map(|()| {
            let me = Member {
                name: "tessera-scheduler".to_string(),
                member_id: self.cluster.cluster_id(),
                client_urls: vec![format!("http://{}", self.addr)],
            };
            GetMembersResponse {
                header: None,
                members: vec![me.clone()],
                leader: Some(me),
            }
        });
        self.reply(result)
    }

    type TsoStream =
        Pin<Box<dyn tokio_stream::Stream<Item = std::result::Result<TsoResponse, Status>> + Send>>;

    async fn tso(&self, req: Request<Streaming<TsoRequest>>) -> GrpcResult<Self::TsoStream> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = stopped(this.stop.clone()) => break,
                    msg = inbound.message() => msg,
                };
                let Ok(Some(req)) = msg else { break };
                let result = this.check(&req.header).and_then(|()| {
                    let ts = this.cluster.tso(req.count)?;
                    Ok(TsoResponse {
                        header: None,
                        count: req.count,
                        timestamp: Some(ts),
                    })
                });
                let resp = this.reply(result).map(Response::into_inner);
                if tx.send(resp).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn bootstrap(&self, req: Request<BootstrapRequest>) -> GrpcResult<BootstrapResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|()| {
            let store = req
                .store
                .ok_or_else(|| Error::InvalidArgument("no store".into()))?;
            let region = req
                .region
                .ok_or_else(|| Error::InvalidArgument("no region".into()))?;
            self.cluster.bootstrap(store, region)?;
            Ok(BootstrapResponse::default())
        });
        self.reply(result)
    }

    async fn is_bootstrapped(
        &self,
        req: Request<IsBootstrappedRequest>,
    ) -> GrpcResult<IsBootstrappedResponse> {
        let result = self
            .check(&req.get_ref().header)
            .map(|()| IsBootstrappedResponse {
                header: None,
                bootstrapped: self.cluster.is_bootstrapped(),
            });
        self.reply(result)
    }

    async fn alloc_id(&self, req: Request<AllocIdRequest>) -> GrpcResult<AllocIdResponse> {
        let result = self.check(&req.get_ref().header).and_then(|()| {
            Ok(AllocIdResponse {
                header: None,
                id: self.cluster.alloc_id()?,
            })
        });
        self.reply(result)
    }

    async fn get_store(&self, req: Request<GetStoreRequest>) -> GrpcResult<GetStoreResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|()| {
            let info = self.cluster.get_store(req.store_id)?;
            Ok(GetStoreResponse {
                header: None,
                store: Some(info.meta),
                stats: info.stats,
            })
        });
        self.reply(result)
    }

    async fn put_store(&self, req: Request<PutStoreRequest>) -> GrpcResult<PutStoreResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|()| {
            let store = req
                .store
                .ok_or_else(|| Error::InvalidArgument("no store".into()))?;
            self.cluster.put_store(store)?;
            Ok(PutStoreResponse::default())
        });
        self.reply(result)
    }

    async fn get_all_stores(
        &self,
        req: Request<GetAllStoresRequest>,
    ) -> GrpcResult<GetAllStoresResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|()| {
            let stores = self.cluster.get_all_stores(req.exclude_tombstone_stores)?;
            Ok(GetAllStoresResponse {
                header: None,
                stores: stores.into_iter().map(|s| s.meta).collect(),
            })
        });
        self.reply(result)
    }

    async fn store_heartbeat(
        &self,
        req: Request<StoreHeartbeatRequest>,
    ) -> GrpcResult<StoreHeartbeatResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|()| {
            let stats = req
                .stats
                .ok_or_else(|| Error::InvalidArgument("no stats".into()))?;
            self.cluster.store_heartbeat(stats)?;
            Ok(StoreHeartbeatResponse::default())
        });
        self.reply(result)
    }

    type RegionHeartbeatStream = Pin<
        Box<
            dyn tokio_stream::Stream<Item = std::result::Result<RegionHeartbeatResponse, Status>>
                + Send,
        >,
    >;

    async fn region_heartbeat(
        &self,
        req: Request<Streaming<RegionHeartbeatRequest>>,
    ) -> GrpcResult<Self::RegionHeartbeatStream> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = stopped(this.stop.clone()) => break,
                    msg = inbound.message() => msg,
                };
                let hb = match msg {
                    Ok(Some(hb)) => hb,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "region heartbeat stream broke");
                        break;
                    }
                };
                let result = this
                    .check(&hb.header)
                    .and_then(|()| this.cluster.region_heartbeat(&hb));
                // Only operator steps go back: a rejected heartbeat needs no answer, the
                // region's next one is judged afresh.
                let mut resp = match result {
                    Ok(Some(resp)) => resp,
                    Ok(None) => continue,
                    Err(e) => {
                        let region_id = hb.region.as_ref().map_or(0, |r| r.id);
                        tracing::debug!(region_id, error = %e, "region heartbeat rejected");
                        continue;
                    }
                };
                resp.set_header(this.header(None));
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_region(&self, req: Request<GetRegionRequest>) -> GrpcResult<GetRegionResponse> {
        let req = req.into_inner();
        let result = self
            .check(&req.header)
            .and_then(|()| self.cluster.get_region(&req.region_key))
            .map(region_response);
        self.reply(result)
    }

    async fn get_region_by_id(
        &self,
        req: Request<GetRegionByIdRequest>,
    ) -> GrpcResult<GetRegionResponse> {
        let req = req.into_inner();
        let result = self
            .check(&req.header)
            .and_then(|()| self.cluster.get_region_by_id(req.region_id))
            .map(region_response);
        self.reply(result)
    }

    async fn scan_regions(
        &self,
        req: Request<ScanRegionsRequest>,
    ) -> GrpcResult<ScanRegionsResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|()| {
            let limit = usize::try_from(req.limit.max(0)).unwrap_or(0);
            let infos = self
                .cluster
                .scan_regions(&req.start_key, &req.end_key, limit)?;
            let mut resp = ScanRegionsResponse::default();
            for info in infos {
                resp.leaders.push(info.leader.unwrap_or_default());
                resp.regions.push(info.region);
            }
            Ok(resp)
        });
        self.reply(result)
    }

    async fn ask_split(&self, req: Request<AskSplitRequest>) -> GrpcResult<AskSplitResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|()| {
            let region = req
                .region
                .ok_or_else(|| Error::InvalidArgument("no region".into()))?;
            let (new_region_id, new_peer_ids) = self.cluster.ask_split(&region)?;
            Ok(AskSplitResponse {
                header: None,
                new_region_id,
                new_peer_ids,
            })
        });
        self.reply(result)
    }

    async fn get_cluster_config(
        &self,
        req: Request<GetClusterConfigRequest>,
    ) -> GrpcResult<GetClusterConfigResponse> {
        let result = self.check(&req.get_ref().header).and_then(|()| {
            Ok(GetClusterConfigResponse {
                header: None,
                cluster: Some(self.cluster.cluster_config()?),
            })
        });
        self.reply(result)
    }

    async fn put_cluster_config(
        &self,
        req: Request<PutClusterConfigRequest>,
    ) -> GrpcResult<PutClusterConfigResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|()| {
            let cluster = req
                .cluster
                .ok_or_else(|| Error::InvalidArgument("no cluster".into()))?;
            self.cluster.put_cluster_config(cluster)?;
            Ok(PutClusterConfigResponse::default())
        });
        self.reply(result)
    }

    async fn add_operator(
        &self,
        req: Request<AddOperatorRequest>,
    ) -> GrpcResult<AddOperatorResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|()| {
            let op = match AdminOperator::try_from(req.kind) {
                Ok(AdminOperator::TransferLeader) => AdminOp::TransferLeader(req.store_id),
                Ok(AdminOperator::AddPeer) => AdminOp::AddPeer(req.store_id),
                Ok(AdminOperator::RemovePeer) => AdminOp::RemovePeer(req.store_id),
                Err(_) => {
                    let why = format!("unknown operator kind {}", req.kind);
                    return Err(Error::InvalidArgument(why));
                }
            };
            let op = self.cluster.admin_operator(req.region_id, op)?;
            Ok(AddOperatorResponse {
                header: None,
                description: format!("{} on region {}: {:?}", op.desc, op.region_id, op.steps),
            })
        });
        self.reply(result)
    }

    async fn get_schedule_config(
        &self,
        req: Request<GetScheduleConfigRequest>,
    ) -> GrpcResult<GetScheduleConfigResponse> {
        let result = self
            .check(&req.get_ref().header)
            .map(|()| GetScheduleConfigResponse {
                header: None,
                config: Some(self.cluster.schedule_config()),
            });
        self.reply(result)
    }

    async fn set_schedule_config(
        &self,
        req: Request<SetScheduleConfigRequest>,
    ) -> GrpcResult<SetScheduleConfigResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|()| {
            let config = req
                .config
                .ok_or_else(|| Error::InvalidArgument("no config".into()))?;
            self.cluster.set_schedule_config(config)?;
            Ok(SetScheduleConfigResponse::default())
        });
        self.reply(result)
    }

    async fn get_gc_safe_point(
        &self,
        req: Request<GetGcSafePointRequest>,
    ) -> GrpcResult<GetGcSafePointResponse> {
        let result = self
            .check(&req.get_ref().header)
            .map(|()| GetGcSafePointResponse {
                header: None,
                safe_point: self.cluster.gc_safe_point(),
            });
        self.reply(result)
    }

    async fn update_gc_safe_point(
        &self,
        req: Request<UpdateGcSafePointRequest>,
    ) -> GrpcResult<UpdateGcSafePointResponse> {
        let req = req.into_inner();
        let result = self.check(&req.header).and_then(|()| {
            Ok(UpdateGcSafePointResponse {
                header: None,
                new_safe_point: self.cluster.update_gc_safe_point(req.safe_point)?,
            })
        });
        self.reply(result)
    }
}

/// A scheduler serving gRPC; stop it with [`RunningScheduler::shutdown`].
pub struct RunningScheduler {
    /// The bound address.
    pub addr: SocketAddr,
    stop: Arc<watch::Sender<bool>>,
    task: JoinHandle<Result<()>>,
}

/// Stops a [`RunningScheduler`] from elsewhere (a signal handler).
#[derive(Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    /// Asks the server to stop; [`RunningScheduler::wait`] returns once it has.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl RunningScheduler {
    /// A handle that stops the server.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Stops accepting requests, ends open streams and waits for the server to finish.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Waits until the server stops (after a stop request, or on an error).
    pub async fn wait(self) -> Result<()> {
        self.task
            .await
            .map_err(|e| Error::Server(format!("server task failed: {e}")))?
    }
}

/// Binds `addr` and serves `cluster` over gRPC (TLS when the cluster's config has a
/// `[security]` CA), running the balance schedulers every `schedule_interval_ms` of the
/// cluster's config.
pub async fn start(cluster: Arc<Cluster>, addr: &str) -> Result<RunningScheduler> {
    let tls = cluster
        .config()
        .security
        .load()
        .map_err(|e| Error::Config(format!("[security]: {e}")))?;
    let mut server = net::grpc_server();
    if let Some(t) = &tls {
        let config = t
            .server(cluster.config().security.client_cert_auth)
            .map_err(|e| Error::Config(format!("[security]: {e}")))?;
        server = server
            .tls_config(config)
            .map_err(|e| Error::Config(format!("[security]: {e}")))?;
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Server(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Server(format!("no local address: {e}")))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let service = SchedulerService {
        cluster: cluster.clone(),
        addr: local.to_string(),
        stop: stop_rx.clone(),
    };
    // At most `max_connections` open at once, each with Nagle's algorithm off: small
    // request/response exchanges (TSO, heartbeats) would otherwise wait on it and on delayed
    // ACKs, tens of milliseconds per timestamp.
    let incoming = net::bounded(listener, cluster.config().max_connections);
    let serve = server
        .add_service(SchedulerServer::new(service))
        .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
    let mut grpc = tokio::spawn(serve);
    let ticker = tokio::spawn(schedule_loop(cluster, stop_rx.clone()));
    tracing::info!(addr = %local, "scheduler serving");
    let stop = Arc::new(stop_tx);
    let stop_all = stop.clone();
    let task = tokio::spawn(async move {
        let served = tokio::select! {
            r = &mut grpc => Some(r),
            _ = stopped(stop_rx.clone()) => None,
        };
        let served = match served {
            Some(r) => r,
            // Connections get a grace period to close; a client holding a stream open past it
            // is cut off.
            None => match tokio::time::timeout(SHUTDOWN_GRACE, &mut grpc).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("connections still open after the grace period, closing them");
                    grpc.abort();
                    Ok(Ok(()))
                }
            },
        };
        let _ = stop_all.send(true);
        let _ = ticker.await;
        tracing::info!("scheduler stopped");
        served
            .map_err(|e| Error::Server(format!("gRPC task failed: {e}")))?
            .map_err(|e| Error::Server(format!("gRPC server: {e}")))
    });
    Ok(RunningScheduler {
        addr: local,
        stop,
        task,
    })
}

/// How often the automatic GC safe point moves (each move is a synced write).
const GC_SAFE_POINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

async fn schedule_loop(cluster: Arc<Cluster>, stop: watch::Receiver<bool>) {
    let mut last_gc = std::time::Instant::now();
    let mut tick = tokio::time::interval(cluster.config().schedule_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(stop.clone()) => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = cluster.schedule() {
            tracing::warn!(error = %e, "scheduling round failed");
        }
        if last_gc.elapsed() >= GC_SAFE_POINT_INTERVAL {
            last_gc = std::time::Instant::now();
            if let Err(e) = cluster.advance_gc_safe_point_auto() {
                tracing::warn!(error = %e, "cannot raise the GC safe point");
            }
        }
    }
}
