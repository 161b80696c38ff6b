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

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use kv::Engines;
use proto::raft_serverpb::{PeerState, RaftMessage};

use crate::bootstrap;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::peer::Peer;
use crate::raft_storage::RaftStorage;
use crate::raft_worker::{PeerFsm, PollContext, RaftWorker};
use crate::router::Router;
use crate::scheduler_worker::SchedulerTask;
use crate::store::StoreMeta;
use crate::transport::Transport;
use crate::worker::Scheduler;

/// A running raftstore.
pub struct RaftstoreHandle {
    store_id: u64,
    router: Router,
    store_meta: Arc<RwLock<StoreMeta>>,
    storage: RaftStorage,
    thread: Option<JoinHandle<()>>,
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

    /// The regions with a peer on this store.
    pub fn store_meta(&self) -> &Arc<RwLock<StoreMeta>> {
        &self.store_meta
    }

    /// Delivers a raft message received from another store.
    ///
    /// # Errors
    /// [`Error::Disconnected`] once the store has stopped.
    pub fn deliver(&self, msg: RaftMessage) -> Result<()> {
        self.router.send_raft_message(msg)
    }

    /// Stops the raft worker and waits for it. Pending commands get no answer: their callers
    /// time out, as they would if the process died.
    pub fn stop(&mut self) {
        self.router.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
    let (router, receivers) = Router::new();
    let store_meta = Arc::new(RwLock::new(StoreMeta::default()));
    let mut peers = HashMap::new();
    for state in bootstrap::load_region_states(&engines)? {
        let Some(region) = state.region else { continue };
        if state.state != PeerState::Normal as i32 {
            // Tombstones stay destroyed; Applying needs snapshots (next issue).
            continue;
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
        let peer = Peer::new(&cfg, engines.clone(), region.clone(), meta)?;
        let mailbox = router.register(region.id);
        store_meta
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(region.clone());
        peers.insert(region.id, PeerFsm { peer, mailbox });
    }
    tracing::info!(store_id, peers = peers.len(), "starting raftstore");
    let storage = RaftStorage::new(
        store_id,
        router.clone(),
        store_meta.clone(),
        cfg.command_timeout,
    );
    let worker = RaftWorker {
        ctx: PollContext {
            store_id,
            cfg,
            engines,
            transport,
            store_meta: store_meta.clone(),
            scheduler,
            router: router.clone(),
        },
        peers,
        receivers,
    };
    let thread = std::thread::Builder::new()
        .name(format!("raft-{store_id}"))
        .spawn(move || worker.run())
        .map_err(|e| Error::Other(format!("cannot spawn the raft worker: {e}")))?;
    Ok(RaftstoreHandle {
        store_id,
        router,
        store_meta,
        storage,
        thread: Some(thread),
    })
}
