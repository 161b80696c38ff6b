//! [`LocalCluster`]: a scheduler and N raft stores in this process, talking gRPC on loopback,
//! for the cluster benchmark and the end-to-end tests.
//!
//! The cluster is bootstrapped statically: every store gets the same regions (one spanning all
//! keys, or one per range between the split keys), each with a peer on every store. The
//! scheduler is told of the first region at bootstrap and learns the others from their leaders'
//! heartbeats; [`LocalCluster::start`] returns once every region has a leader the scheduler
//! knows. Each store is started by the one store assembly, [`server::start_with`], as
//! `tessera-server --engine raft` starts it: the client port, the peer port, the HTTP gateway
//! (routing through a [`tessera_client::cluster::ClusterClient`]) and the scheduler's operators.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kv::{Engines, WriteBatch};
use proto::metapb;
use scheduler::server::RunningScheduler;
use scheduler_client::SchedulerClient;
use tokio::net::TcpListener;

use server::config::{Config, EngineKind, RawConfig};
use server::{Listeners, RunningServer, StartOptions};

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
    pub raw: RawConfig,
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
            raw: RawConfig::default(),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// One running store.
pub struct LocalStore {
    /// Its store id.
    pub id: u64,
    /// Its client gRPC address.
    pub addr: SocketAddr,
    /// Its HTTP gateway's address.
    pub status_addr: SocketAddr,
    /// Its peer port's address.
    pub peer_addr: SocketAddr,
    /// What it was started with, to start it again.
    config: Config,
    server: RunningServer,
}

/// A store that was stopped, and how to start it again at the same addresses.
struct StoppedStore {
    id: u64,
    config: Config,
    addrs: [SocketAddr; 3],
}

/// A scheduler and raft stores in this process.
pub struct LocalCluster {
    scheduler: Arc<scheduler::Cluster>,
    scheduler_addr: SocketAddr,
    /// `None` once [`LocalCluster::stop_scheduler`] stopped it.
    scheduler_server: Option<RunningScheduler>,
    stores: Vec<LocalStore>,
    stopped: Vec<StoppedStore>,
    raftstore: raftstore::Config,
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
            // The layout stays as bootstrapped: the stores would carry out balancing operators,
            // and the benchmark and the tests want regions and leaders where they put them.
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
            let l = Listeners {
                grpc: TcpListener::bind("127.0.0.1:0").await?,
                peer: TcpListener::bind("127.0.0.1:0").await?,
                http: TcpListener::bind("127.0.0.1:0").await?,
            };
            let store = metapb::Store {
                id,
                address: l.grpc.local_addr()?.to_string(),
                state: metapb::StoreState::Up as i32,
                peer_address: l.peer.local_addr()?.to_string(),
                status_address: l.http.local_addr()?.to_string(),
            };
            if id == ids[0] {
                sched.bootstrap(store.clone(), regions[0].clone())?;
            }
            sched.put_store(store)?;
            listeners.push(l);
        }
        let mut this = LocalCluster {
            scheduler: cluster.clone(),
            scheduler_addr: scheduler_server.addr,
            scheduler_server: Some(scheduler_server),
            stores: Vec::new(),
            stopped: Vec::new(),
            raftstore: config.raftstore.clone(),
            regions: regions.len(),
        };
        let scheduler_addr = this.scheduler_addr().to_string();
        for (&id, l) in ids.iter().zip(listeners) {
            let data_dir = dir.join(format!("store-{id}"));
            let store_config = Config {
                engine: EngineKind::Raft,
                scheduler_addr: scheduler_addr.clone(),
                raw: config.raw.clone(),
                ..Config::loopback(&data_dir)
            };
            let (cluster_id, regions_owned) = (sched.cluster_id(), regions.clone());
            let dir_owned = data_dir.clone();
            tokio::task::spawn_blocking(move || {
                bootstrap_store(&dir_owned, cluster_id, id, &regions_owned)
            })
            .await?
            .with_context(|| format!("bootstrapping store {id}"))?;
            this.start_store(id, store_config, l).await?;
        }
        this.wait_ready(config.ready_timeout).await?;
        Ok(this)
    }

    /// The scheduler's gRPC address.
    pub fn scheduler_addr(&self) -> SocketAddr {
        self.scheduler_addr
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

    /// Starts store `id` with `config` on `listeners`, through the one store assembly.
    async fn start_store(
        &mut self,
        id: u64,
        config: Config,
        listeners: Listeners,
    ) -> anyhow::Result<()> {
        let options = StartOptions {
            listeners: Some(listeners),
            raftstore: Some(self.raftstore.clone()),
        };
        let server = server::start_with(&config, options)
            .await
            .with_context(|| format!("starting store {id}"))?;
        let peer_addr = server
            .peer_addr
            .context("a raft store serves a peer port")?;
        self.stores.push(LocalStore {
            id,
            addr: server.addr,
            status_addr: server.status_addr,
            peer_addr,
            config,
            server,
        });
        Ok(())
    }

    /// Stops store `store_id` (its servers, then its raftstore), as a store that goes down; its
    /// data stays for [`LocalCluster::restart_store`].
    ///
    /// # Panics
    /// When no running store has that id.
    pub async fn stop_store(&mut self, store_id: u64) {
        let i = self
            .stores
            .iter()
            .position(|s| s.id == store_id)
            .unwrap_or_else(|| panic!("no running store {store_id}"));
        let store = self.stores.remove(i);
        self.stopped.push(StoppedStore {
            id: store.id,
            config: store.config.clone(),
            addrs: [store.addr, store.peer_addr, store.status_addr],
        });
        store.stop().await;
    }

    /// Starts store `store_id`, stopped by [`LocalCluster::stop_store`], again from its data and
    /// at its addresses (where the scheduler and the other stores know it).
    ///
    /// # Errors
    /// When no stopped store has that id, an address cannot be bound again, or the store does not
    /// start.
    pub async fn restart_store(&mut self, store_id: u64) -> anyhow::Result<()> {
        let i = self
            .stopped
            .iter()
            .position(|s| s.id == store_id)
            .with_context(|| format!("no stopped store {store_id}"))?;
        let StoppedStore { id, config, addrs } = self.stopped.remove(i);
        let listeners = Listeners {
            grpc: TcpListener::bind(addrs[0]).await?,
            peer: TcpListener::bind(addrs[1]).await?,
            http: TcpListener::bind(addrs[2]).await?,
        };
        self.start_store(id, config, listeners).await
    }

    /// Stops the scheduler's server (the stores keep running, and cannot reach it any more).
    ///
    /// # Errors
    /// When it does not stop cleanly.
    pub async fn stop_scheduler(&mut self) -> anyhow::Result<()> {
        match self.scheduler_server.take() {
            Some(s) => Ok(s.shutdown().await?),
            None => Ok(()),
        }
    }

    /// Stops every store, then the scheduler.
    ///
    /// # Errors
    /// When the scheduler does not stop cleanly.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        for s in self.stores {
            s.stop().await;
        }
        if let Some(s) = self.scheduler_server {
            s.shutdown().await?;
        }
        Ok(())
    }
}

impl LocalStore {
    /// Its engines, to look at what it holds (see [`RunningServer::engines`]).
    pub fn engines(&self) -> &Engines {
        self.server
            .engines()
            .expect("a local cluster's stores are raft stores")
    }

    async fn stop(self) {
        if let Err(e) = self.server.shutdown().await {
            tracing::warn!(store_id = self.id, error = %e, "store stopped with an error");
        }
    }
}

/// Bootstraps the engines of store `id` under `data_dir` (where the store assembly opens them)
/// with the cluster's regions, as the static bootstrap has every store hold them from the start.
fn bootstrap_store(
    data_dir: &Path,
    cluster_id: u64,
    id: u64,
    regions: &[metapb::Region],
) -> anyhow::Result<()> {
    let engines = Engines::open(&data_dir.join("store"))?;
    raftstore::bootstrap::bootstrap_store(&engines, cluster_id, id)?;
    let mut wb = WriteBatch::new(&engines.kv);
    for region in regions {
        raftstore::bootstrap::write_initial_region(&engines, region, &mut wb)?;
    }
    wb.write(true)?;
    Ok(())
}
