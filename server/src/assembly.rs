//! Assembles a running `tessera-server`: storage, the client gRPC service, the peer gRPC service
//! (raft engine), the HTTP gateway with its status routes and the gRPC health service, with a
//! clean shutdown that flushes the engine.
//!
//! Fail-stop: a raft store whose raft worker ends without being asked (it died) stops the whole
//! server with an error, so the process exits non-zero instead of answering as a zombie. (The
//! binary also turns any panic into an abort: see `tessera-server`.)

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kv::{Engines, MemoryStorage, RawApi, StandaloneStorage, Storage, TxnApi};
use proto::kvrpcpb;
use proto::tinykvpb::tiny_kv_server::{TinyKv, TinyKvServer};
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, EngineKind};
use crate::kv_service::KvService;
use crate::metrics::RequestMetrics;
use crate::peer_service::{self, ClusterToken, PeerService};
use crate::status::{RaftStatus, ServerInfo, StatusSource, LIVENESS_TIMEOUT};
use crate::transport::{Dial, ServerTransport};

/// Room for the key and the request framing on top of the largest value.
const GRPC_MESSAGE_OVERHEAD: usize = 1024 * 1024;
/// How often the fail-stop watchdog looks at the raft worker.
const WATCHDOG_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// What an in-process caller (the local cluster) may give [`start_with`] beyond the
/// configuration file's settings.
#[derive(Default)]
pub struct StartOptions {
    /// Listeners already bound, instead of binding `addr`, `peer_addr` and `status_addr`.
    pub listeners: Option<Listeners>,
    /// The raftstore's whole configuration, instead of `[raftstore]` over the defaults (for
    /// settings the file does not carry, such as the test timings).
    pub raftstore: Option<raftstore::Config>,
}

/// The three listeners of a store: clients, other stores, HTTP.
pub struct Listeners {
    /// The client gRPC port.
    pub grpc: TcpListener,
    /// The peer gRPC port (raft engine).
    pub peer: TcpListener,
    /// The HTTP gateway.
    pub http: TcpListener,
}

/// A server started by [`start`]; stop it with [`RunningServer::shutdown`].
pub struct RunningServer {
    /// The store's id (raft engine).
    pub store_id: Option<u64>,
    /// The bound client gRPC address.
    pub addr: SocketAddr,
    /// The bound peer gRPC address (raft engine only).
    pub peer_addr: Option<SocketAddr>,
    /// The bound HTTP gateway address.
    pub status_addr: SocketAddr,
    /// The raft store's engines (raft engine only).
    engines: Option<Engines>,
    stop: Arc<watch::Sender<bool>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting requests, lets those in flight finish, flushes and closes the engine.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("server task panicked")?
    }

    /// The raft store's engines (raft engine only), for tests and tools that look at what the
    /// store holds; writing to them behind the store's back breaks it.
    pub fn engines(&self) -> Option<&Engines> {
        self.engines.as_ref()
    }

    /// A handle that stops the server from elsewhere (e.g. a signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Waits until the server stops by itself (it only does on an error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }
}

/// Stops a [`RunningServer`]; see [`RunningServer::stopper`].
#[derive(Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    /// Asks the server to stop; [`RunningServer::wait`] returns once it has.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// What a server runs on, and how it is closed once both listeners have drained.
enum Backend {
    Standalone(Arc<StandaloneStorage>),
    Memory,
    Raft(Box<raftstore::Node>),
}

impl Backend {
    fn close(self) -> anyhow::Result<()> {
        match self {
            Backend::Standalone(storage) => storage.flush().context("flushing storage"),
            Backend::Memory => Ok(()),
            Backend::Raft(mut node) => {
                node.stop();
                Ok(())
            }
        }
    }
}

/// Opens the local storage engine.
fn open_standalone(config: &Config) -> anyhow::Result<Arc<StandaloneStorage>> {
    let path = config.data_dir.join("standalone");
    std::fs::create_dir_all(&path)
        .with_context(|| format!("cannot create data dir {}", path.display()))?;
    Ok(Arc::new(
        StandaloneStorage::open(&path, config.storage.sync_write)
            .with_context(|| format!("cannot open storage in {}", path.display()))?,
    ))
}

/// Connects to the scheduler and starts this store's raftstore, bootstrapping the store (and
/// the cluster, for the first store) on first start. Clients dial `addr`, other stores
/// `peer_addr` (the advertised peer address, if set), presenting `token`. Raft traffic to other
/// stores leaves from `peer_addr`'s IP when it names one, so a store is seen from the one
/// address it takes raft on.
async fn start_raft_node(
    config: &Config,
    raft_cfg: raftstore::Config,
    addr: SocketAddr,
    peer_addr: SocketAddr,
    status_addr: SocketAddr,
    token: ClusterToken,
    tls: Option<security::Tls>,
) -> anyhow::Result<(raftstore::Node, Engines, Arc<dyn SchedulerClient>)> {
    let advertised = if config.advertise_peer_addr.is_empty() {
        peer_addr.to_string()
    } else {
        config.advertise_peer_addr.clone()
    };
    let source_ip = (!peer_addr.ip().is_unspecified()).then_some(peer_addr.ip());
    let sched_addr = config.scheduler_addr.clone();
    let sched_config = RpcClientConfig {
        tls: tls.clone(),
        ..RpcClientConfig::default()
    };
    let client = tokio::task::spawn_blocking(move || RpcClient::connect(&sched_addr, sched_config))
        .await?
        .with_context(|| format!("cannot reach the scheduler at {}", config.scheduler_addr))?;
    let client: Arc<dyn SchedulerClient> = Arc::new(client);
    let dir = config.data_dir.join("store");
    let snap_dir = dir.join("snap");
    let snap_config = snap::SnapConfig {
        // An incoming snapshot must leave the store's reserve free.
        keep_free: config.storage.reserve_space.0,
        ..snap::SnapConfig::default()
    };
    let snap_mgr = tokio::task::spawn_blocking(move || {
        snap::SnapManager::open(&snap_dir, snap_config)
            .with_context(|| format!("cannot open snapshots in {}", snap_dir.display()))
    })
    .await??;
    let transport = Arc::new(ServerTransport::new(
        tokio::runtime::Handle::current(),
        client.clone(),
        token,
        Dial { source_ip, tls },
    ));
    let raft_engine = config.raftstore.raft_engine;
    let sched = client.clone();
    let (node, engines) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let engines = Engines::open_with(&dir, raft_engine)
            .with_context(|| format!("cannot open engines in {}", dir.display()))?;
        let node = raftstore::Node::start(
            raft_cfg,
            engines.clone(),
            snap_mgr,
            transport,
            client,
            raftstore::StoreAddresses {
                client: addr.to_string(),
                peer: advertised,
                status: status_addr.to_string(),
            },
        )
        .context("cannot start the raftstore")?;
        Ok((node, engines))
    })
    .await??;
    Ok((node, engines, sched))
}

/// How often a store asks the scheduler for the GC safe point.
const GC_SAFE_POINT_POLL: Duration = Duration::from_secs(1);

/// The routing contexts of this store's peers, one per region.
type LocalRegions = Arc<dyn Fn() -> Vec<kvrpcpb::Context> + Send + Sync>;

/// Collects, at `safe_point`, the regions of `regions` this store leads (the others answer
/// that they are not the leader, and their leaders' stores collect them). A region held up by
/// a lock at or below the safe point is left for `tessera-ctl gc`, which resolves locks.
fn collect_led_regions<S: Storage>(txn: &TxnApi<S>, regions: &LocalRegions, safe_point: u64) {
    let (mut collected, mut versions) = (0, 0);
    for ctx in regions() {
        let mut start = Vec::new();
        loop {
            let req = kvrpcpb::GcRequest {
                context: Some(ctx),
                safe_point,
                start_key: start,
                limit: 0,
            };
            match txn.gc(&req) {
                Ok(r) if r.region_error.is_none() && r.error.is_none() => {
                    versions += r.versions;
                    if r.next_key.is_empty() {
                        collected += 1;
                        break;
                    }
                    start = r.next_key;
                }
                Ok(r) if r.error.is_some() => {
                    tracing::debug!(region_id = ctx.region_id, error = ?r.error, "GC held up");
                    break;
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(region_id = ctx.region_id, error = %e, "GC failed");
                    break;
                }
            }
        }
    }
    if collected > 0 {
        tracing::info!(
            safe_point,
            regions = collected,
            versions,
            "GC of the regions led here"
        );
    }
}

/// Raises `txn`'s GC safe point to the scheduler's, now (before the store serves: a read below
/// a safe point some replica has already collected at must be refused) and then every
/// [`GC_SAFE_POINT_POLL`] until `stop`; each time it rises, collects the regions led here.
async fn follow_gc_safe_point<S: Storage>(
    sched: Arc<dyn SchedulerClient>,
    txn: TxnApi<S>,
    regions: LocalRegions,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let ask = move |sched: Arc<dyn SchedulerClient>| async move {
        tokio::task::spawn_blocking(move || sched.gc_safe_point()).await
    };
    let first = ask(sched.clone())
        .await?
        .context("cannot read the GC safe point from the scheduler")?;
    txn.advance_gc_safe_point(first);
    Ok(tokio::spawn(async move {
        let mut collected = first;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(GC_SAFE_POINT_POLL) => {}
                _ = stop.changed() => return,
            }
            match ask(sched.clone()).await {
                Ok(Ok(sp)) => _ = txn.advance_gc_safe_point(sp),
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the GC safe point"),
                Err(e) => tracing::debug!(error = %e, "GC safe point task"),
            }
            let sp = txn.gc_safe_point();
            if sp > collected {
                collected = sp;
                let (txn, regions) = (txn.clone(), regions.clone());
                let run = move || collect_led_regions(&txn, &regions, sp);
                if let Err(e) = tokio::task::spawn_blocking(run).await {
                    tracing::warn!(error = %e, "GC task");
                }
            }
        }
    }))
}

/// Opens the storage, binds the listeners and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    start_with(config, StartOptions::default()).await
}

/// [`start`], with what only an in-process caller can give (see [`StartOptions`]).
pub async fn start_with(config: &Config, options: StartOptions) -> anyhow::Result<RunningServer> {
    let (grpc, http, mut peer) = match options.listeners {
        Some(l) => (l.grpc, l.http, Some(l.peer)),
        None => (
            bind(&config.addr).await?,
            bind(&config.status_addr).await?,
            None,
        ),
    };
    let started = Instant::now();
    let addr = grpc.local_addr()?;
    let status_addr = http.local_addr()?;
    let tls = config.security.tls()?;
    let ports = Ports {
        grpc,
        http,
        tls: tls.clone(),
    };
    let info = |engine: &str, peer_addr: Option<SocketAddr>| {
        Arc::new(ServerInfo {
            engine: engine.to_string(),
            addr,
            peer_addr,
            status_addr,
            data_dir: config.data_dir.clone(),
            started,
        })
    };
    let (stop, rx) = watch::channel(false);
    // The peer port stops only once the client ports have drained: the writes still running
    // then need the other stores' answers to commit.
    let (peer_stop, peer_rx) = watch::channel(false);
    let stop = Arc::new(stop);

    let mut peer_task = None;
    let mut peer_addr = None;
    let mut store_id = None;
    let mut engines = None;
    let (backend, status, grpc_task, http_task) = match config.engine {
        EngineKind::Standalone => {
            let storage = open_standalone(config)?;
            let info = info("standalone", None);
            let (status, g, h) = serve_local(config, info, storage.clone(), ports, &rx)?;
            (Backend::Standalone(storage), status, g, h)
        }
        EngineKind::Memory => {
            tracing::warn!("engine memory: nothing is written to disk; every write is lost when the server stops");
            let storage = Arc::new(MemoryStorage::new());
            let info = info("memory", None);
            let (status, g, h) = serve_local(config, info, storage, ports, &rx)?;
            (Backend::Memory, status, g, h)
        }
        EngineKind::Raft => {
            let peer = match peer.take() {
                Some(l) => l,
                None => bind(&config.peer_addr).await?,
            };
            let bound_peer = peer.local_addr()?;
            let token = ClusterToken::new(&config.security.token()?);
            if !token.is_set() {
                tracing::warn!(peer_addr = %bound_peer,
                    "no cluster token: the peer port takes raft traffic from anyone who can \
                     reach it (set security.cluster_token or --cluster-token-file)");
            }
            let raft_cfg = match options.raftstore {
                // The disk reserve is the configuration's, as with `[raftstore]`.
                Some(c) => raftstore::Config {
                    reserve_space: config.storage.reserve_space.0,
                    ..c
                },
                None => config.to_raftstore(),
            };
            let (node, node_engines, sched) = start_raft_node(
                config,
                raft_cfg,
                addr,
                bound_peer,
                status_addr,
                token.clone(),
                tls.clone(),
            )
            .await?;
            engines = Some(node_engines);
            store_id = Some(node.store_id());
            let rs = node.raftstore();
            let peer_service = PeerService::new(
                rs.inbound().clone(),
                rs.snap_manager().clone(),
                token,
                peer_rx.clone(),
            )
            .with_allowed_cn(config.security.cert_allowed_cn.clone());
            let max_peer_message = peer_message_limit(config);
            // The peer port takes only stores: mutual TLS when TLS is on.
            let peer_tls = tls.as_ref().map(|t| t.server(true)).transpose()?;
            peer_task = Some(peer_service::serve(
                peer,
                peer_service,
                max_peer_message,
                config.max_connections,
                peer_tls,
                peer_rx,
            )?);
            peer_addr = Some(bound_peer);
            let raw = RawApi::new(Arc::new(node.storage()), config.raw.limits());
            let txn = TxnApi::new(raw.storage().clone());
            let (meta, me) = (rs.store_meta().clone(), node.store_id());
            let regions: LocalRegions = Arc::new(move || {
                let meta = meta.read().unwrap_or_else(|p| p.into_inner());
                meta.regions()
                    .filter_map(|r| {
                        let peer = r.peers.iter().find(|p| p.store_id == me)?;
                        Some(kvrpcpb::Context {
                            region_id: r.id,
                            region_epoch: r.region_epoch,
                            peer: Some(*peer),
                            term: 0,
                        })
                    })
                    .collect()
            });
            follow_gc_safe_point(sched, txn.clone(), regions, rx.clone()).await?;
            let registry = raftstore::store_registry(node.store_id())?;
            let requests = Arc::new(RequestMetrics::new(&registry)?);
            let gc_txn = txn.clone();
            let status = StatusSource {
                info: info("raft", Some(bound_peer)),
                registry,
                stopping: rx.clone(),
                raft: Some(RaftStatus {
                    store_id: node.store_id(),
                    health: rs.health().clone(),
                    metrics: rs.metrics().clone(),
                    gc_safe_point: Arc::new(move || gc_txn.gc_safe_point()),
                }),
            };
            // Any store's gateway serves every key: a key of a region this store leads itself,
            // the others through their region leaders.
            let app = crate::http::cluster_router(
                config.scheduler_addr.clone(),
                tls.clone(),
                config.raw.limits(),
                Some(raw.clone()),
            )
            .merge(crate::status::routes(status.clone()));
            let service = KvService::with_txn(raw, txn)
                .with_stopping(rx.clone())
                .with_batch_limits(config.raw.batch_limits())
                .with_metrics(requests);
            let (g, h) = serve(config, service, app, ports, &rx, status.clone())?;
            (Backend::Raft(Box::new(node)), status, g, h)
        }
    };
    tracing::info!(%addr, peer_addr = ?peer_addr, %status_addr, engine = ?config.engine,
        data_dir = %config.data_dir.display(), "tessera-server started");

    let stop_all = stop.clone();
    let task = tokio::spawn(async move {
        let mut grpc_task = grpc_task;
        let fault = tokio::select! {
            r = &mut grpc_task => Err(r),
            fault = watchdog(status, rx.clone()) => Ok(fault),
        };
        // Whichever way it ended, every listener stops with it.
        let _ = stop_all.send(true);
        let (grpc_result, fault) = match fault {
            Err(r) => (r, None),
            Ok(f) => (grpc_task.await, f),
        };
        let http_result = http_task.await;
        // No client request runs any more: the raft traffic may stop too.
        let _ = peer_stop.send(true);
        let peer_result = match peer_task {
            Some(t) => Some(t.await),
            None => None,
        };
        // Every server has stopped: no request can write any more.
        tokio::task::spawn_blocking(move || backend.close())
            .await
            .context("closing the storage")??;
        tracing::info!("storage closed, server stopped");
        if let Some(fault) = fault {
            anyhow::bail!("stopped: {fault}");
        }
        grpc_result
            .context("gRPC server task")?
            .context("gRPC server")?;
        if let Some(r) = peer_result {
            r.context("peer gRPC server task")?
                .context("peer gRPC server")?;
        }
        http_result
            .context("HTTP server task")?
            .context("HTTP server")?;
        Ok(())
    });
    Ok(RunningServer {
        store_id,
        addr,
        peer_addr,
        status_addr,
        engines,
        stop,
        task,
    })
}

async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// The largest message the peer port takes: a raft append of entries up to the largest
/// command (a compare-and-swap, with its new and expected values), or a snapshot chunk.
fn peer_message_limit(config: &Config) -> usize {
    let entries = usize::try_from(config.raftstore.to_raftstore().raft_max_size_per_msg)
        .unwrap_or(usize::MAX);
    let value = 2 * config.raw.max_value_size + config.raw.max_key_size;
    entries
        .max(value)
        .max(snap::DEFAULT_CHUNK_SIZE)
        .saturating_add(GRPC_MESSAGE_OVERHEAD)
}

/// Resolves with why the store cannot go on, if it ever cannot: its raft worker ended while the
/// server was not stopping (it died). Never resolves for a standalone server, nor once the
/// server is stopping.
async fn watchdog(status: StatusSource, mut stopping: watch::Receiver<bool>) -> Option<String> {
    let Some(raft) = status.raft else {
        return std::future::pending().await;
    };
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(WATCHDOG_INTERVAL) => false,
            _ = stopping.wait_for(|s| *s) => true,
        };
        if stop {
            return std::future::pending().await;
        }
        if let Err(e @ raftstore::NotLive::WorkerGone) = raft.health.check_live(LIVENESS_TIMEOUT) {
            let stopping_now = *stopping.borrow();
            if !stopping_now {
                tracing::error!(error = %e, "fatal: the store cannot go on; stopping");
                return Some(e.to_string());
            }
        }
    }
}

type ServeTask<E> = JoinHandle<Result<(), E>>;

/// Serves a one-node storage (standalone or in memory): the raw and transactional API over
/// gRPC, and the HTTP gateway on the same storage.
fn serve_local<S: Storage>(
    config: &Config,
    info: Arc<ServerInfo>,
    storage: Arc<S>,
    ports: Ports,
    rx: &watch::Receiver<bool>,
) -> anyhow::Result<(
    StatusSource,
    ServeTask<tonic::transport::Error>,
    ServeTask<std::io::Error>,
)> {
    let raw = RawApi::new(storage, config.raw.limits());
    let registry = prometheus::Registry::new();
    let requests = Arc::new(RequestMetrics::new(&registry)?);
    let status = StatusSource {
        info,
        registry,
        stopping: rx.clone(),
        raft: None,
    };
    let app = crate::http::router(raw.clone(), config.raw.max_value_size)
        .merge(crate::status::routes(status.clone()));
    let service = KvService::new(raw)
        .with_stopping(rx.clone())
        .with_batch_limits(config.raw.batch_limits())
        .with_metrics(requests);
    let (g, h) = serve(config, service, app, ports, rx, status.clone())?;
    Ok((status, g, h))
}

/// The client-facing ports of a store: gRPC (over TLS when set) and HTTP.
struct Ports {
    grpc: TcpListener,
    http: TcpListener,
    tls: Option<security::Tls>,
}

/// Serves `service` (gRPC, with the standard health service) and the HTTP gateway `app` until
/// `rx` says stop.
fn serve<T: TinyKv>(
    config: &Config,
    service: T,
    app: axum::Router,
    ports: Ports,
    rx: &watch::Receiver<bool>,
    status: StatusSource,
) -> anyhow::Result<(
    ServeTask<tonic::transport::Error>,
    ServeTask<std::io::Error>,
)> {
    let Ports { grpc, http, tls } = ports;
    let mut server = net::grpc_server();
    if let Some(t) = &tls {
        let ask_clients = config.security.client_cert_auth;
        server = server.tls_config(t.server(ask_clients)?)?;
    }
    // The largest request is a compare-and-swap: a key, the new value and the expected one; the
    // largest message a client's BatchCommands stream sends, its byte budget plus one request.
    let max_message = 2 * config.raw.max_value_size
        + config.raw.max_key_size
        + GRPC_MESSAGE_OVERHEAD
        + crate::kv_service::BATCH_MAX_BYTES;
    // A response holds at most one value, or one scan page (its byte bound plus the pair that
    // crosses it).
    let max_response = usize::try_from(config.raw.max_scan_bytes.0)
        .unwrap_or(usize::MAX)
        .saturating_add(max_message);
    let service = TinyKvServer::new(service)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_response);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(crate::status::report_grpc_health(
        status,
        reporter,
        rx.clone(),
    ));
    // Nagle's algorithm is off: small request/response RPCs must not wait on it.
    let incoming = net::bounded(grpc, config.max_connections);
    let grpc_task = tokio::spawn(
        server
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stopped(rx.clone())),
    );
    let max = config.max_connections;
    let http_task = match &tls {
        // The gateway and status routes speak HTTPS with the store's certificate.
        Some(t) => tokio::spawn(
            axum::serve(net::TlsListener::new(http, max, t.https_server()?)?, app)
                .with_graceful_shutdown(stopped(rx.clone()))
                .into_future(),
        ),
        None => tokio::spawn(
            axum::serve(net::BoundedListener::new(http, max), app)
                .with_graceful_shutdown(stopped(rx.clone()))
                .into_future(),
        ),
    };
    Ok((grpc_task, http_task))
}
