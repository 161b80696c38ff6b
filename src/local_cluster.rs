//! [`LocalCluster`]: a scheduler and N raft stores in this process, talking gRPC on loopback,
//! for the cluster benchmark and the end-to-end tests.
//!
//! The cluster is bootstrapped statically: every store gets the same regions (one spanning all
//! keys, or one per range between the split keys), each with a peer on every store. The
//! scheduler is told of the first region at bootstrap and learns the others from their leaders'
//! heartbeats; [`LocalCluster::start`] returns once every region has a leader the scheduler
//! knows. Each store serves the `TinyKv` service (raw, transactions, raft messages) and an HTTP
//! gateway that routes through a [`tessera_client::cluster::ClusterClient`].

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kv::{Engines, KvService, RawApi, RawLimits, WriteBatch};
use proto::metapb;
use proto::tinykvpb::tiny_kv_server::TinyKvServer;
use raftstore::{RaftstoreHandle, SchedulerRunner, Worker};
use scheduler::server::RunningScheduler;
use scheduler_client::SchedulerClient;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::peer_service::{ClusterToken, PeerService};
use crate::raft_server::ServerTransport;

/// How long a stopping store's servers may take to drain before they are cut off.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What to start.
#[derive(Clone, Debug)]
pub struct LocalClusterConfig {
    /// Number of stores.
    pub stores: usize,
    /// Keys where one region ends and the next begins (empty: one region).
    pub split_keys: Vec<Vec<u8>>,
    /// The stores' configuration.
    pub raftstore: raftstore::Config,
    /// Limits of the raw API.
    pub raw: RawLimits,
    /// How long [`LocalCluster::start`] waits for every region to have a known leader.
    pub ready_timeout: Duration,
}

impl LocalClusterConfig {
    /// `stores` stores, one region, the raftstore's test timings (20 ms ticks).
    pub fn new(stores: usize) -> LocalClusterConfig {
        LocalClusterConfig {
            stores,
            split_keys: Vec::new(),
            raftstore: raftstore::Config::test(),
            raw: RawLimits::default(),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// One running store.
pub struct LocalStore {
    /// The store id.
    pub id: u64,
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// Its HTTP gateway's address.
    pub status_addr: SocketAddr,
    handle: RaftstoreHandle,
    heartbeats: Worker<SchedulerRunner>,
    stop: watch::Sender<bool>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    peer: JoinHandle<Result<(), tonic::transport::Error>>,
    http: JoinHandle<std::io::Result<()>>,
}

/// A running in-process cluster; stop it with [`LocalCluster::shutdown`].
pub struct LocalCluster {
    scheduler: Arc<scheduler::Cluster>,
    scheduler_server: RunningScheduler,
    stores: Vec<LocalStore>,
    regions: usize,
}

/// The regions of a static bootstrap: one per range between `split_keys`, each with a peer on
/// every store in `store_ids`.
fn initial_regions(
    sched: &dyn SchedulerClient,
    store_ids: &[u64],
    split_keys: &[Vec<u8>],
) -> anyhow::Result<Vec<metapb::Region>> {
    let mut bounds = vec![Vec::new()];
    let mut splits = split_keys.to_vec();
    splits.sort();
    splits.dedup();
    bounds.extend(splits.into_iter().filter(|k| !k.is_empty()));
    bounds.push(Vec::new());
    let mut regions = Vec::new();
    for w in bounds.windows(2) {
        let mut region = raftstore::bootstrap::new_first_region(store_ids[0], sched.alloc_id()?, 0);
        region.start_key = w[0].clone();
        region.end_key = w[1].clone();
        region.peers = store_ids
            .iter()
            .map(|&store_id| {
                Ok(metapb::Peer {
                    id: sched.alloc_id()?,
                    store_id,
                    role: metapb::PeerRole::Voter as i32,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        regions.push(region);
    }
    Ok(regions)
}

impl LocalCluster {
    /// Starts a scheduler and `config.stores` stores with data under `dir`, and waits until
    /// every region has a leader the scheduler knows of.
    ///
    /// # Errors
    /// Binding, engine or bootstrap failures; no leaders within `config.ready_timeout`.
    pub async fn start(dir: &Path, config: LocalClusterConfig) -> anyhow::Result<LocalCluster> {
        anyhow::ensure!(config.stores > 0, "a cluster needs at least one store");
        let sched_config = scheduler::Config {
            // Operators are not executed by these stores; keep the scheduler from planning any.
            balance_leader: false,
            balance_region: false,
            max_replicas: config.stores as u32,
            ..scheduler::Config::default()
        };
        let cluster = Arc::new(scheduler::Cluster::in_memory(
            &sched_config,
            scheduler::Clock::system(),
        )?);
        let scheduler_server = scheduler::server::start(cluster.clone(), "127.0.0.1:0").await?;
        let sched = scheduler::LocalClient::new(cluster.clone());
        let ids: Vec<u64> = (0..config.stores)
            .map(|_| sched.alloc_id())
            .collect::<Result<_, _>>()?;
        let regions = initial_regions(&sched, &ids, &config.split_keys)?;
        let mut listeners = Vec::new();
        for &id in &ids {
            let grpc = TcpListener::bind("127.0.0.1:0").await?;
            let peer = TcpListener::bind("127.0.0.1:0").await?;
            let http = TcpListener::bind("127.0.0.1:0").await?;
            let store = metapb::Store {
                id,
                address: grpc.local_addr()?.to_string(),
                state: metapb::StoreState::Up as i32,
                peer_address: peer.local_addr()?.to_string(),
            };
            if id == ids[0] {
                sched.bootstrap(store.clone(), regions[0].clone())?;
            }
            sched.put_store(store)?;
            listeners.push((grpc, peer, http));
        }
        let mut this = LocalCluster {
            scheduler: cluster.clone(),
            scheduler_server,
            stores: Vec::new(),
            regions: regions.len(),
        };
        let scheduler_addr = this.scheduler_addr().to_string();
        for (&id, (grpc, peer, http)) in ids.iter().zip(listeners) {
            let dir = dir.join(format!("store-{id}"));
            let dir = dir.as_path();
            let store = StoreSetup {
                config: &config,
                cluster: &cluster,
                scheduler_addr: &scheduler_addr,
                dir,
                regions: &regions,
            }
            .start(id, grpc, peer, http)
            .await
            .with_context(|| format!("starting store {id}"))?;
            this.stores.push(store);
        }
        this.wait_ready(config.ready_timeout).await?;
        Ok(this)
    }

    /// The scheduler's gRPC address.
    pub fn scheduler_addr(&self) -> SocketAddr {
        self.scheduler_server.addr
    }

    /// An in-process client of the scheduler.
    pub fn scheduler_client(&self) -> Arc<dyn SchedulerClient> {
        Arc::new(scheduler::LocalClient::new(self.scheduler.clone()))
    }

    /// The running stores.
    pub fn stores(&self) -> &[LocalStore] {
        &self.stores
    }

    /// The store that leads the region of `key`, as the scheduler last heard.
    pub fn leader_store(&self, key: &[u8]) -> Option<u64> {
        self.scheduler
            .get_region(key)
            .ok()?
            .leader
            .map(|p| p.store_id)
    }

    /// Waits until the scheduler knows every region of the bootstrap with a leader.
    ///
    /// # Errors
    /// When that does not happen within `timeout`; says what the scheduler knew.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let known = self.scheduler.regions();
            let led = known.iter().filter(|r| r.leader.is_some()).count();
            if known.len() >= self.regions && led == known.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "after {timeout:?} the scheduler knows {} of {} regions, {led} with a leader",
                    known.len(),
                    self.regions
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops store `store_id` (its servers, then its raftstore), as a store that goes down.
    ///
    /// # Panics
    /// When no running store has that id.
    pub async fn stop_store(&mut self, store_id: u64) {
        let i = self
            .stores
            .iter()
            .position(|s| s.id == store_id)
            .unwrap_or_else(|| panic!("no running store {store_id}"));
        self.stores.remove(i).stop().await;
    }

    /// Stops every store, then the scheduler.
    ///
    /// # Errors
    /// When the scheduler does not stop cleanly.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        for s in self.stores {
            s.stop().await;
        }
        self.scheduler_server.shutdown().await?;
        Ok(())
    }
}

impl LocalStore {
    async fn stop(self) {
        let LocalStore {
            mut handle,
            mut heartbeats,
            stop,
            mut grpc,
            mut peer,
            mut http,
            ..
        } = self;
        let _ = stop.send(true);
        // Stopping the raftstore joins its thread; commands still pending time out.
        let _ = tokio::task::spawn_blocking(move || {
            handle.stop();
            heartbeats.stop();
        })
        .await;
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut grpc)
            .await
            .is_err()
        {
            grpc.abort();
        }
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut peer)
            .await
            .is_err()
        {
            peer.abort();
        }
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut http)
            .await
            .is_err()
        {
            http.abort();
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// What every store of a cluster is started with.
struct StoreSetup<'a> {
    config: &'a LocalClusterConfig,
    cluster: &'a Arc<scheduler::Cluster>,
    scheduler_addr: &'a str,
    dir: &'a Path,
    regions: &'a [metapb::Region],
}

impl StoreSetup<'_> {
    /// Bootstraps store `id` over fresh engines with the regions, and starts it serving on
    /// the three listeners (clients, other stores, HTTP).
    async fn start(
        &self,
        id: u64,
        grpc: TcpListener,
        peer: TcpListener,
        http: TcpListener,
    ) -> anyhow::Result<LocalStore> {
        let (config, cluster, dir, regions) = (self.config, self.cluster, self.dir, self.regions);
        let sched: Arc<dyn SchedulerClient> =
            Arc::new(scheduler::LocalClient::new(cluster.clone()));
        let engines = Engines::open(dir)?;
        raftstore::bootstrap::bootstrap_store(&engines, sched.cluster_id(), id)?;
        let mut wb = WriteBatch::new(&engines.kv);
        for region in regions {
            raftstore::bootstrap::write_initial_region(&engines, region, &mut wb)?;
        }
        wb.write(true)?;
        let heartbeats = Worker::start(
            &format!("sched-{id}"),
            SchedulerRunner::new(id, sched.clone()),
            None,
        )?;
        let transport = Arc::new(ServerTransport::new(
            tokio::runtime::Handle::current(),
            sched,
            ClusterToken::default(),
            None,
        ));
        let snap_mgr = snap::SnapManager::open(dir.join("snap"), snap::SnapConfig::default())?;
        let cfg = config.raftstore.clone();
        let scheduler_task = heartbeats.scheduler();
        let (node_transport, node_snaps) = (transport.clone(), snap_mgr.clone());
        let handle = tokio::task::spawn_blocking(move || {
            raftstore::start_raftstore(
                cfg,
                engines,
                node_snaps,
                id,
                node_transport,
                Some(scheduler_task),
            )
        })
        .await??;
        transport.set_router(handle.router().clone());
        let raw = RawApi::new(Arc::new(handle.storage()), config.raw.clone());
        let (stop, rx) = watch::channel(false);
        let service = KvService::new(raw).with_stopping(rx.clone());
        let peer_service = PeerService::new(
            handle.inbound().clone(),
            snap_mgr,
            ClusterToken::default(),
            rx.clone(),
        );
        let peer = crate::peer_service::serve(
            peer,
            peer_service,
            64 << 20,
            crate::config::DEFAULT_MAX_CONNECTIONS,
            rx.clone(),
        );
        let addr = grpc.local_addr()?;
        let status_addr = http.local_addr()?;
        let incoming = crate::incoming::bounded(grpc, crate::config::DEFAULT_MAX_CONNECTIONS);
        let grpc = tokio::spawn(
            crate::server::grpc_server()
                .add_service(TinyKvServer::new(service))
                .serve_with_incoming_shutdown(incoming, stopped(rx.clone())),
        );
        let status = crate::status::StatusSource::Raft {
            store_id: id,
            health: handle.health().clone(),
            metrics: handle.metrics().clone(),
            stopping: rx.clone(),
        };
        let app = crate::http::cluster_router(self.scheduler_addr.to_string(), config.raw.clone())
            .merge(crate::status::routes(status));
        let http = tokio::spawn(
            axum::serve(
                crate::incoming::BoundedListener::new(http, crate::config::DEFAULT_MAX_CONNECTIONS),
                app,
            )
            .with_graceful_shutdown(stopped(rx))
            .into_future(),
        );
        Ok(LocalStore {
            id,
            addr,
            status_addr,
            handle,
            heartbeats,
            stop,
            grpc,
            peer,
            http,
        })
    }
}
