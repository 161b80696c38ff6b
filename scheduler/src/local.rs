//! [`LocalClient`]: a [`SchedulerClient`] that calls a [`Cluster`] in the same process, for test
//! clusters and tools that want the real scheduling logic without gRPC.
//!
//! It behaves like `RpcClient` where it matters to a store: errors map to the same variants, and
//! region heartbeat responses reach the handler on a thread of their own, never on the thread
//! that sent the heartbeat, so a store may hold its locks while reporting.

use std::sync::{Arc, RwLock};

use proto::metapb;
use proto::schedulerpb::{
    AskSplitResponse, RegionHeartbeatRequest, RegionHeartbeatResponse, StoreStats,
};
use scheduler_client::{
    Error as ClientError, HeartbeatHandler, Result as ClientResult, SchedulerClient,
};

use crate::cluster::Cluster;
use crate::error::Error;

type Slot = Arc<RwLock<Option<Arc<HeartbeatHandler>>>>;

/// A scheduler client over an in-process [`Cluster`]. Clones share the cluster but not the
/// heartbeat handler: make one per store.
pub struct LocalClient {
    cluster: Arc<Cluster>,
    responses: crossbeam_channel::Sender<RegionHeartbeatResponse>,
    handler: Slot,
}

impl std::fmt::Debug for LocalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalClient")
            .field("cluster_id", &self.cluster.cluster_id())
            .finish_non_exhaustive()
    }
}

impl LocalClient {
    /// A client of `cluster`, with its own response thread (ending when the client is dropped).
    pub fn new(cluster: Arc<Cluster>) -> LocalClient {
        let (tx, rx) = crossbeam_channel::unbounded::<RegionHeartbeatResponse>();
        let handler: Slot = Arc::new(RwLock::new(None));
        let slot = handler.clone();
        let spawned = std::thread::Builder::new()
            .name("local-scheduler-hb".into())
            .spawn(move || {
                for resp in rx {
                    let current = slot.read().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Some(handle) = current {
                        handle(resp);
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the thread responses are dropped: the region's next heartbeat gets the
            // same step again, so scheduling slows down but stays correct.
            tracing::error!(error = %e, "cannot start the heartbeat response thread");
        }
        LocalClient {
            cluster,
            responses: tx,
            handler,
        }
    }

    /// The cluster behind the client.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }
}

/// The client-side error for a core error, as `RpcClient` would report it.
pub fn to_client_error(e: Error) -> ClientError {
    match e {
        Error::NotBootstrapped => ClientError::NotBootstrapped,
        Error::AlreadyBootstrapped => ClientError::AlreadyBootstrapped,
        Error::StoreTombstone(_) => ClientError::StoreTombstone(e.to_string()),
        Error::RegionNotFound(_) => ClientError::NotFound(e.to_string()),
        Error::StaleRegion { .. } => ClientError::StaleRegion(e.to_string()),
        Error::InvalidArgument(_) | Error::ClusterIdMismatch { .. } => {
            ClientError::InvalidArgument(e.to_string())
        }
        Error::StoreNotFound(_) | Error::Storage(_) | Error::Config(_) | Error::Server(_) => {
            ClientError::Rpc(e.to_string())
        }
    }
}

impl SchedulerClient for LocalClient {
    fn cluster_id(&self) -> u64 {
        self.cluster.cluster_id()
    }

    fn bootstrap(&self, store: metapb::Store, region: metapb::Region) -> ClientResult<()> {
        self.cluster
            .bootstrap(store, region)
            .map_err(to_client_error)
    }

    fn is_bootstrapped(&self) -> ClientResult<bool> {
        Ok(self.cluster.is_bootstrapped())
    }

    fn alloc_id(&self) -> ClientResult<u64> {
        self.cluster.alloc_id().map_err(to_client_error)
    }

    fn put_store(&self, store: metapb::Store) -> ClientResult<()> {
        self.cluster.put_store(store).map_err(to_client_error)
    }

    fn get_store(&self, store_id: u64) -> ClientResult<metapb::Store> {
        self.cluster
            .get_store(store_id)
            .map(|s| s.meta)
            .map_err(to_client_error)
    }

    fn get_region(&self, key: &[u8]) -> ClientResult<(metapb::Region, Option<metapb::Peer>)> {
        self.cluster
            .get_region(key)
            .map(|r| (r.region, r.leader))
            .map_err(to_client_error)
    }

    fn get_region_by_id(
        &self,
        region_id: u64,
    ) -> ClientResult<(metapb::Region, Option<metapb::Peer>)> {
        self.cluster
            .get_region_by_id(region_id)
            .map(|r| (r.region, r.leader))
            .map_err(to_client_error)
    }

    fn ask_split(&self, region: metapb::Region) -> ClientResult<AskSplitResponse> {
        let (new_region_id, new_peer_ids) =
            self.cluster.ask_split(&region).map_err(to_client_error)?;
        Ok(AskSplitResponse {
            header: None,
            new_region_id,
            new_peer_ids,
        })
    }

    fn store_heartbeat(&self, stats: StoreStats) -> ClientResult<()> {
        self.cluster.store_heartbeat(stats).map_err(to_client_error)
    }

    fn region_heartbeat(&self, req: RegionHeartbeatRequest) -> ClientResult<()> {
        // Like the gRPC stream: a rejected heartbeat gets no answer and no error.
        match self.cluster.region_heartbeat(&req) {
            Ok(Some(resp)) => {
                let _ = self.responses.send(resp);
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "region heartbeat rejected"),
        }
        Ok(())
    }

    fn handle_region_heartbeat_response(&self, _store_id: u64, handler: HeartbeatHandler) {
        *self.handler.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(handler));
    }

    fn tso(&self) -> ClientResult<u64> {
        self.cluster.tso_one().map_err(to_client_error)
    }

    fn gc_safe_point(&self) -> ClientResult<u64> {
        Ok(self.cluster.gc_safe_point())
    }
}
