//! Assembles a running `tessera-server`: storage, the gRPC service and the HTTP gateway, with a
//! clean shutdown that flushes the engine.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use kv::{Engines, KvService, RawApi, StandaloneStorage};
use proto::tinykvpb::tiny_kv_server::{TinyKv, TinyKvServer};
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::config::{Config, EngineKind};
use crate::raft_server::{RaftKvService, ServerTransport};

/// Room for the key and the request framing on top of the largest value.
const GRPC_MESSAGE_OVERHEAD: usize = 1024 * 1024;

/// A server started by [`start`]; stop it with [`RunningServer::shutdown`].
pub struct RunningServer {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The bound HTTP gateway address.
    pub status_addr: SocketAddr,
    stop: Arc<watch::Sender<bool>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting requests, lets those in flight finish, flushes and closes the engine.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("server task panicked")?
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
    Raft(Box<raftstore::Node>),
}

impl Backend {
    fn close(self) -> anyhow::Result<()> {
        match self {
            Backend::Standalone(storage) => storage.flush().context("flushing storage"),
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
/// the cluster, for the first store) on first start. `addr` is what other stores dial.
async fn start_raft_node(config: &Config, addr: SocketAddr) -> anyhow::Result<raftstore::Node> {
    let sched_addr = config.scheduler_addr.clone();
    let client = tokio::task::spawn_blocking(move || {
        RpcClient::connect(&sched_addr, RpcClientConfig::default())
    })
    .await?
    .with_context(|| format!("cannot reach the scheduler at {}", config.scheduler_addr))?;
    let client: Arc<dyn SchedulerClient> = Arc::new(client);
    let dir = config.data_dir.join("store");
    let snap_dir = dir.join("snap");
    let snap_mgr = tokio::task::spawn_blocking(move || {
        snap::SnapManager::open(&snap_dir, snap::SnapConfig::default())
            .with_context(|| format!("cannot open snapshots in {}", snap_dir.display()))
    })
    .await??;
    let transport = Arc::new(ServerTransport::new(
        tokio::runtime::Handle::current(),
        client.clone(),
    ));
    let raft_cfg = config.raftstore.to_raftstore();
    let node_transport = transport.clone();
    let node = tokio::task::spawn_blocking(move || -> anyhow::Result<raftstore::Node> {
        let engines = Engines::open(&dir)
            .with_context(|| format!("cannot open engines in {}", dir.display()))?;
        let node = raftstore::Node::start(
            raft_cfg,
            engines,
            snap_mgr,
            node_transport,
            client,
            addr.to_string(),
        )
        .context("cannot start the raftstore")?;
        Ok(node)
    })
    .await??;
    transport.set_router(node.raftstore().router().clone());
    Ok(node)
}

/// Opens the storage, binds both listeners and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    let grpc = TcpListener::bind(&config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let http = TcpListener::bind(&config.status_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.status_addr))?;
    let addr = grpc.local_addr()?;
    let status_addr = http.local_addr()?;
    let (stop, rx) = watch::channel(false);
    let stop = Arc::new(stop);

    let (backend, grpc_task, http_task) = match config.engine {
        EngineKind::Standalone => {
            let storage = open_standalone(config)?;
            let raw = RawApi::new(storage.clone(), config.raw.limits());
            let service = KvService::new(raw.clone());
            let app = crate::http::router(raw, config.raw.max_value_size);
            let (g, h) = serve(config, service, app, grpc, http, &rx);
            (Backend::Standalone(storage), g, h)
        }
        EngineKind::Raft => {
            let node = start_raft_node(config, addr).await?;
            let raw = RawApi::new(Arc::new(node.storage()), config.raw.limits());
            let service = RaftKvService::new(
                KvService::new(raw.clone()),
                node.raftstore().router().clone(),
                node.raftstore().snap_manager().clone(),
                rx.clone(),
            );
            // Any store's gateway serves every key: it forwards to the region leaders.
            let app =
                crate::http::cluster_router(config.scheduler_addr.clone(), config.raw.limits());
            let (g, h) = serve(config, service, app, grpc, http, &rx);
            (Backend::Raft(Box::new(node)), g, h)
        }
    };
    tracing::info!(%addr, %status_addr, engine = ?config.engine,
        data_dir = %config.data_dir.display(), "tessera-server started");

    let stop_all = stop.clone();
    let task = tokio::spawn(async move {
        let grpc_result = grpc_task.await;
        // Whichever way the gRPC server ended, the gateway stops with it.
        let _ = stop_all.send(true);
        let http_result = http_task.await;
        // Both servers have stopped: no request can write any more.
        tokio::task::spawn_blocking(move || backend.close())
            .await
            .context("closing the storage")??;
        tracing::info!("storage closed, server stopped");
        grpc_result
            .context("gRPC server task")?
            .context("gRPC server")?;
        http_result
            .context("HTTP server task")?
            .context("HTTP server")?;
        Ok(())
    });
    Ok(RunningServer {
        addr,
        status_addr,
        stop,
        task,
    })
}

type ServeTask<E> = JoinHandle<Result<(), E>>;

/// Serves `service` (gRPC) and the HTTP gateway `app` until `rx` says stop.
fn serve<T: TinyKv>(
    config: &Config,
    service: T,
    app: axum::Router,
    grpc: TcpListener,
    http: TcpListener,
    rx: &watch::Receiver<bool>,
) -> (
    ServeTask<tonic::transport::Error>,
    ServeTask<std::io::Error>,
) {
    let max_message = config.raw.max_value_size + config.raw.max_key_size + GRPC_MESSAGE_OVERHEAD;
    let service = TinyKvServer::new(service)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(usize::MAX);
    // Small request/response RPCs must not wait on Nagle's algorithm.
    let incoming = TcpIncoming::from(grpc).with_nodelay(Some(true));
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stopped(rx.clone())),
    );
    let http_task = tokio::spawn(
        axum::serve(http, app)
            .with_graceful_shutdown(stopped(rx.clone()))
            .into_future(),
    );
    (grpc_task, http_task)
}
