//! Starting and stopping a store: load every peer recorded in the engines, register their
//! mailboxes, and run the raft worker thread.
//!
//! [`start_raftstore`] is the seam both the in-process test cluster and the server binary use:
//! give it engines of a bootstrapped store, a [`Transport`] and (optionally) the scheduler
//! worker's queue; it returns a [`RaftstoreHandle`] with the [`Router`] (deliver incoming raft
//! messages with [`RaftstoreHandle::deliver`]) and a [`RaftStorage`] for the kv service.
//!
//! [`Node::start`] adds what a real store needs around it: bootstrap through the scheduler
//! client (store ident, first region), registering the store, and the heartbeat worker.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use kv::Engines;
use proto::metapb;
use proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, ChangePeerRequest, RaftCmdRequest, RaftRequestHeader,
    TransferLeaderRequest,
};
use proto::raft_serverpb::{PeerState, RaftMessage};
use proto::schedulerpb::RegionHeartbeatResponse;
use scheduler_client::SchedulerClient;
use snap::SnapManager;

use crate::apply_worker::Applier;
use crate::bootstrap;
use crate::config::Config;
use crate::disk_monitor::DiskMonitor;
use crate::error::{Error, Result};
use crate::health::StoreHealth;
use crate::inbound::{DeliverError, DropLog, Inbound, Stream};
use crate::lease_reads::LeaseReads;
use crate::log_writer::LogWriter;
use crate::metrics::StoreMetrics;
use crate::msg::Callback;
use crate::peer::{Peer, PeerFsm, PollContext};
use crate::peer_storage::SnapContext;
use crate::raft_storage::RaftStorage;
use crate::raft_worker::RaftWorker;
use crate::region_worker::{RaftLogGcRunner, RegionRunner};
use crate::router::Router;
use crate::scheduler_worker::{SchedulerRunner, SchedulerTask};
use crate::split_check::SplitCheckRunner;
use crate::store::StoreMeta;
use crate::transport::Transport;
use crate::ttl_check::TtlCheckRunner;
use crate::worker::{Scheduler, Worker};

/// A running raftstore.
pub struct RaftstoreHandle {
    store_id: u64,
    router: Router,
    store_meta: Arc<RwLock<StoreMeta>>,
    storage: RaftStorage,
    metrics: Arc<StoreMetrics>,
    health: Arc<StoreHealth>,
    inbound: Inbound,
    snap_mgr: SnapManager,
    thread: Option<JoinHandle<()>>,
    region_worker: Worker<RegionRunner>,
    raftlog_gc: Worker<RaftLogGcRunner>,
    split_checker: Worker<SplitCheckRunner>,
    ttl_checker: Worker<TtlCheckRunner>,
    disk_monitor: Worker<DiskMonitor>,
}

impl RaftstoreHandle {
    /// This store's id.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// The router of this store's peers.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The replicated `kv::Storage` of this store.
    pub fn storage(&self) -> RaftStorage {
        self.storage.clone()
    }

    /// The raft worker's counters.
    pub fn metrics(&self) -> &Arc<StoreMetrics> {
        &self.metrics
    }

    /// The store's health: raft worker liveness, disk state.
    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// The door for raft messages from other stores: checks, then delivers.
    pub fn inbound(&self) -> &Inbound {
        &self.inbound
    }

    /// The snapshot manager of this store.
    pub fn snap_manager(&self) -> &SnapManager {
        &self.snap_mgr
    }

    /// The regions with a peer on this store.
    pub fn store_meta(&self) -> &Arc<RwLock<StoreMeta>> {
        &self.store_meta
    }

    /// Delivers a raft message received from another store on its raft stream, after the
    /// checks of [`Inbound::deliver`].
    ///
    /// # Errors
    /// See [`Inbound::deliver`].
    pub fn deliver(&self, msg: RaftMessage) -> std::result::Result<(), DeliverError> {
        self.inbound.deliver(msg, Stream::Raft)
    }

    /// Stops the raft worker and waits for it. Pending commands get no answer: their callers
    /// time out, as they would if the process died.
    pub fn stop(&mut self) {
        self.router.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.region_worker.stop();
        self.raftlog_gc.stop();
        self.split_checker.stop();
        self.ttl_checker.stop_discarding();
        self.disk_monitor.stop();
    }
}

impl Drop for RaftstoreHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the raftstore of store `store_id` over `engines`.
///
/// # Errors
/// An invalid config, a store ident naming another store, engine failures while loading peers.
pub fn start_raftstore(
    cfg: Config,
    engines: Engines,
    snap_mgr: SnapManager,
    store_id: u64,
    transport: Arc<dyn Transport>,
    scheduler: Option<Scheduler<SchedulerTask>>,
) -> Result<RaftstoreHandle> {
    cfg.validate()?;
    match bootstrap::load_store_ident(&engines)? {
        Some(ident) if ident.store_id == store_id => {}
        Some(ident) => {
            return Err(Error::StoreNotMatch {
                request_store_id: store_id,
                actual_store_id: ident.store_id,
            })
        }
        None => {
            return Err(Error::Other(format!(
                "engines at {} are not bootstrapped; bootstrap store {store_id} first",
                engines.kv_path.display()
            )))
        }
    }
    let cfg = Arc::new(cfg);
    let (router, receivers) = Router::new(cfg.mailbox_capacity);
    let store_meta = Arc::new(RwLock::new(StoreMeta::default()));
    let spawn_err = |e: std::io::Error| Error::Other(format!("cannot spawn a worker: {e}"));
    let metrics = Arc::new(StoreMetrics::new(store_registry(store_id)?));
    let region_worker = Worker::start(
        &format!("region-{store_id}"),
        RegionRunner::new(
            engines.clone(),
            snap_mgr.clone(),
            router.clone(),
            metrics.clone(),
        ),
        Some(cfg.snap_gc_interval),
    )
    .map_err(spawn_err)?;
    let raftlog_gc = Worker::start(
        &format!("raftlog-gc-{store_id}"),
        RaftLogGcRunner::new(engines.clone()),
        None,
    )
    .map_err(spawn_err)?;
    let split_checker = Worker::start(
        &format!("split-check-{store_id}"),
        SplitCheckRunner::new(engines.clone(), router.clone()),
        None,
    )
    .map_err(spawn_err)?;
    let ttl_checker = Worker::start(
        &format!("ttl-check-{store_id}"),
        TtlCheckRunner::new(engines.clone(), router.clone()),
        None,
    )
    .map_err(spawn_err)?;
    let health = Arc::new(StoreHealth::default());
    let store_dir = engines
        .kv_path
        .parent()
        .unwrap_or(&engines.kv_path)
        .to_path_buf();
    let reserve = kv::disk::DiskReserve::new(&store_dir, cfg.reserve_space).map_err(|e| {
        Error::Other(format!(
            "cannot check the free space of {}: {e}",
            store_dir.display()
        ))
    })?;
    let disk_monitor = Worker::start(
        &format!("disk-{store_id}"),
        DiskMonitor::new(reserve, health.clone(), metrics.clone()),
        Some(cfg.disk_check_interval),
    )
    .map_err(spawn_err)?;
    let snap_ctx = SnapContext {
        mgr: snap_mgr.clone(),
        worker: region_worker.scheduler(),
    };
    let mut peers = HashMap::new();
    let mut applying = Vec::new();
    for state in bootstrap::load_region_states(&engines)? {
        let Some(region) = state.region else { continue };
        if state.state == PeerState::Tombstone as i32 {
            continue;
        }
        if state.state == PeerState::Applying as i32 {
            // A crash interrupted a snapshot apply: redo it before the peer serves.
            applying.push(region.id);
        }
        let Some(meta) = region
            .peers
            .iter()
            .find(|p| p.store_id == store_id)
            .cloned()
        else {
            tracing::warn!(
                region_id = region.id,
                store_id,
                "region state without a local peer"
            );
            continue;
        };
        let mut peer = Peer::new(
            &cfg,
            engines.clone(),
            snap_ctx.clone(),
            region.clone(),
            meta,
        )?;
        peer.guard_votes_after_restart(&cfg);
        let mailbox = router.register(region.id);
        store_meta
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(region.clone());
        peers.insert(region.id, PeerFsm { peer, mailbox });
    }
    tracing::info!(store_id, peers = peers.len(), "starting raftstore");
    let lease_reads = Arc::new(LeaseReads::default());
    let storage = RaftStorage::new(
        store_id,
        router.clone(),
        store_meta.clone(),
        cfg.command_timeout,
        metrics.clone(),
    )
    .with_lease_reads(engines.clone(), lease_reads.clone());
    let drops = Arc::new(DropLog::default());
    let inbound = Inbound::new(store_id, router.clone(), metrics.clone(), drops.clone());
    let log_writer = if cfg.async_log_writes {
        let wake = router.clone();
        LogWriter::spawn(store_id, metrics.clone(), move || wake.notify_log_written())
            .map_err(|e| Error::Other(format!("cannot spawn the raft log writer: {e}")))?
    } else {
        LogWriter::inline(metrics.clone())
    };
    let applier = if cfg.async_apply {
        let wake = router.clone();
        let applier = Applier::spawn(store_id, engines.clone(), metrics.clone(), move || {
            wake.notify_applied()
        })
        .map_err(|e| Error::Other(format!("cannot spawn the apply thread: {e}")))?;
        Some(applier)
    } else {
        None
    };
    let mut worker = RaftWorker {
        ctx: PollContext {
            store_id,
            cfg,
            engines,
            snap_mgr: snap_mgr.clone(),
            region_worker: region_worker.scheduler(),
            raftlog_gc: raftlog_gc.scheduler(),
            split_checker: split_checker.scheduler(),
            ttl_checker: ttl_checker.scheduler(),
            transport,
            store_meta: store_meta.clone(),
            scheduler,
            router: router.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            drops,
            lease_reads,
            new_peers: Vec::new(),
            log_writer,
            applier,
        },
        peers,
        receivers,
        in_flight: VecDeque::new(),
    };
    for region_id in applying {
        worker.resume_applying_snapshot(region_id);
    }
    // Live from now: the thread marks itself gone when it ends, however it ends.
    health.set_worker_running(true);
    let thread = std::thread::Builder::new()
        .name(format!("raft-{store_id}"))
        .spawn(move || worker.run())
        .map_err(|e| Error::Other(format!("cannot spawn the raft worker: {e}")))?;
    Ok(RaftstoreHandle {
        store_id,
        router,
        store_meta,
        storage,
        metrics,
        health,
        inbound,
        snap_mgr,
        thread: Some(thread),
        region_worker,
        raftlog_gc,
        split_checker,
        ttl_checker,
        disk_monitor,
    })
}

/// A store node: the raftstore plus its scheduler heartbeat worker.
pub struct Node {
    raftstore: RaftstoreHandle,
    scheduler_worker: Worker<SchedulerRunner>,
}

/// Where a store is reached, as it registers with the scheduler.
#[derive(Clone, Debug, Default)]
pub struct StoreAddresses {
    /// Where clients call (gRPC).
    pub client: String,
    /// Where other stores send raft messages and snapshots.
    pub peer: String,
    /// The HTTP status port (`/status`, `/metrics`); empty when the store has none.
    pub status: String,
}

impl Node {
    /// Starts a store over `engines`: bootstraps the store (and the cluster, when this is the
    /// first store) through `client` if the engines are new, registers the store with its
    /// `addresses`, starts heartbeats and the raftstore.
    ///
    /// # Errors
    /// Scheduler and engine failures, an invalid config.
    pub fn start(
        cfg: Config,
        engines: Engines,
        snap_mgr: SnapManager,
        transport: Arc<dyn Transport>,
        client: Arc<dyn SchedulerClient>,
        addresses: StoreAddresses,
    ) -> Result<Node> {
        let sched_err = |e: scheduler_client::Error| Error::Scheduler(e.to_string());
        let store_id = match bootstrap::load_store_ident(&engines)? {
            Some(ident) => ident.store_id,
            None => {
                let id = client.alloc_id().map_err(sched_err)?;
                bootstrap::bootstrap_store(&engines, client.cluster_id(), id)?;
                id
            }
        };
        let store = metapb::Store {
            id: store_id,
            address: addresses.client,
            state: metapb::StoreState::Up as i32,
            peer_address: addresses.peer,
            status_address: addresses.status,
        };
        maybe_bootstrap_cluster(&engines, &store, client.as_ref())?;
        client.put_store(store).map_err(sched_err)?;
        let scheduler_worker = Worker::start(
            &format!("sched-{store_id}"),
            SchedulerRunner::new(store_id, client.clone()).with_kv(engines.clone()),
            None,
        )
        .map_err(|e| Error::Other(format!("cannot spawn the scheduler worker: {e}")))?;
        let raftstore = start_raftstore(
            cfg,
            engines,
            snap_mgr,
            store_id,
            transport,
            Some(scheduler_worker.scheduler()),
        )?;
        // Operator steps for regions this store leads arrive with heartbeat responses.
        let router = raftstore.router().clone();
        client.handle_region_heartbeat_response(
            store_id,
            Box::new(move |resp| {
                if let Some(req) = operator_command(&resp) {
                    let _ = router.send_command(req, Callback::none());
                }
            }),
        );
        Ok(Node {
            raftstore,
            scheduler_worker,
        })
    }

    /// The raftstore.
    pub fn raftstore(&self) -> &RaftstoreHandle {
        &self.raftstore
    }

    /// This store's id.
    pub fn store_id(&self) -> u64 {
        self.raftstore.store_id()
    }

    /// The replicated `kv::Storage` of this store, for the kv service.
    pub fn storage(&self) -> RaftStorage {
        self.raftstore.storage()
    }

    /// Delivers a raft message received from another store on its raft stream.
    ///
    /// # Errors
    /// See [`Inbound::deliver`].
    pub fn deliver(&self, msg: RaftMessage) -> std::result::Result<(), DeliverError> {
        self.raftstore.deliver(msg)
    }

    /// Stops the raftstore, then the heartbeat worker.
    pub fn stop(&mut self) {
        self.raftstore.stop();
        // Heartbeats and split asks queued for a scheduler that is down would each wait out
        // their request timeout; they are only worth sending to a live store, so they go.
        self.scheduler_worker.stop_discarding();
    }
}

/// The admin command carrying out the operator step of a region heartbeat response, if any.
/// Its epoch is the one the scheduler decided on, so a step for a region that changed since
/// is refused.
fn operator_command(resp: &RegionHeartbeatResponse) -> Option<RaftCmdRequest> {
    let admin = if let Some(cp) = &resp.change_peer {
        AdminRequest {
            cmd_type: AdminCmdType::ChangePeer as i32,
            change_peer: Some(ChangePeerRequest {
                change_type: cp.change_type,
                peer: cp.peer,
            }),
            ..Default::default()
        }
    } else if let Some(tl) = &resp.transfer_leader {
        AdminRequest {
            cmd_type: AdminCmdType::TransferLeader as i32,
            transfer_leader: Some(TransferLeaderRequest { peer: tl.peer }),
            ..Default::default()
        }
    } else {
        return None;
    };
    Some(RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: resp.region_id,
            peer: resp.target_peer,
            region_epoch: resp.region_epoch,
            ..Default::default()
        }),
        admin_request: Some(admin),
        ..Default::default()
    })
}

/// Bootstraps the cluster with this store's first region when the scheduler has none, resuming
/// a bootstrap a crash interrupted.
fn maybe_bootstrap_cluster(
    engines: &Engines,
    store: &metapb::Store,
    client: &dyn SchedulerClient,
) -> Result<()> {
    let store_id = store.id;
    let sched_err = |e: scheduler_client::Error| Error::Scheduler(e.to_string());
    let prepared = bootstrap::load_prepared_region(engines)?;
    if client.is_bootstrapped().map_err(sched_err)? {
        if let Some(region) = prepared {
            // Either our bootstrap went through before a crash, or another store won.
            match client.get_region_by_id(region.id) {
                Ok(_) => bootstrap::clear_prepare_bootstrap_key(engines)?,
                Err(_) => bootstrap::clear_prepare_bootstrap(engines, region.id)?,
            }
        }
        return Ok(());
    }
    let region = match prepared {
        Some(r) => r,
        None => {
            if !bootstrap::load_region_states(engines)?.is_empty() {
                return Err(Error::Other(format!(
                    "store {store_id} holds regions but the scheduler is not bootstrapped; \
                     is it the right scheduler?"
                )));
            }
            let region_id = client.alloc_id().map_err(sched_err)?;
            let peer_id = client.alloc_id().map_err(sched_err)?;
            let region = bootstrap::new_first_region(store_id, region_id, peer_id);
            bootstrap::prepare_bootstrap_cluster(engines, &region)?;
            region
        }
    };
    match client.bootstrap(store.clone(), region.clone()) {
        Ok(()) => bootstrap::clear_prepare_bootstrap_key(engines),
        Err(scheduler_client::Error::AlreadyBootstrapped) => {
            bootstrap::clear_prepare_bootstrap(engines, region.id)
        }
        Err(e) => Err(sched_err(e)),
    }
}

/// A registry for store `store_id`'s metrics: every series it holds is labelled with the
/// store's id.
///
/// # Errors
/// None in practice: the label's name is fixed and valid.
pub fn store_registry(store_id: u64) -> Result<prometheus::Registry> {
    let labels = [("store_id".to_string(), store_id.to_string())];
    prometheus::Registry::new_custom(None, Some(labels.into_iter().collect()))
        .map_err(|e| Error::Other(format!("cannot make the metrics registry: {e}")))
}
