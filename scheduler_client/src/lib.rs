//! The client side of Tessera's scheduler: the [`SchedulerClient`] trait raftstore talks
//! through, and [`RpcClient`], its gRPC implementation.
//!
//! The trait is synchronous on purpose: raftstore runs on plain threads. `RpcClient` hides a
//! small tokio runtime of its own, reconnects when the scheduler restarts, and bounds every call
//! with a timeout. A mock implementation lives with the test cluster (`test_raftstore`) and can
//! run the scheduler's core in process.

#![deny(missing_docs)]

mod error;
mod rpc;
mod stream;

use std::sync::Arc;

use proto::metapb;
use proto::schedulerpb::{
    AskSplitResponse, RegionHeartbeatRequest, RegionHeartbeatResponse, StoreStats,
};

pub use error::{Error, Result};
pub use rpc::{RpcClient, RpcClientConfig};

/// Called with every region heartbeat response (an operator step for a region led here).
pub type HeartbeatHandler = Box<dyn Fn(RegionHeartbeatResponse) + Send + Sync>;

/// What a store needs from the scheduler. Blocking; safe to share between threads.
pub trait SchedulerClient: Send + Sync {
    /// The id of the cluster the scheduler serves.
    fn cluster_id(&self) -> u64;
    /// Bootstraps the cluster with its first store and region; `AlreadyBootstrapped` if done.
    fn bootstrap(&self, store: metapb::Store, region: metapb::Region) -> Result<()>;
    /// Whether the cluster is bootstrapped.
    fn is_bootstrapped(&self) -> Result<bool>;
    /// A new id, unique in the cluster forever.
    fn alloc_id(&self) -> Result<u64>;
    /// Registers or updates a store.
    fn put_store(&self, store: metapb::Store) -> Result<()>;
    /// A store's metadata; an unknown store is an `Rpc` error naming it.
    fn get_store(&self, store_id: u64) -> Result<metapb::Store>;
    /// The region owning `key` and its leader, if known.
    fn get_region(&self, key: &[u8]) -> Result<(metapb::Region, Option<metapb::Peer>)>;
    /// The region with this id and its leader, if known; `NotFound` if none.
    fn get_region_by_id(&self, region_id: u64) -> Result<(metapb::Region, Option<metapb::Peer>)>;
    /// Ids for splitting `region`: a new region id and one new peer id per peer.
    fn ask_split(&self, region: metapb::Region) -> Result<AskSplitResponse>;
    /// Reports a store's stats (and that it is alive).
    fn store_heartbeat(&self, stats: StoreStats) -> Result<()>;
    /// Sends a region heartbeat on the stream without waiting for an answer; answers go to the
    /// handler registered with `handle_region_heartbeat_response`.
    fn region_heartbeat(&self, req: RegionHeartbeatRequest) -> Result<()>;
    /// Registers the handler of region heartbeat responses for the store `store_id`, replacing
    /// any earlier one.
    fn handle_region_heartbeat_response(&self, store_id: u64, handler: HeartbeatHandler);
    /// A timestamp, `physical_ms << 18 | logical`, greater than any handed out before.
    fn tso(&self) -> Result<u64>;
    /// The MVCC GC safe point: a store refuses reads below it. The default, for schedulers
    /// that keep none (test doubles), is 0: no safe point.
    fn gc_safe_point(&self) -> Result<u64> {
        Ok(0)
    }
}

impl<T: SchedulerClient + ?Sized> SchedulerClient for Arc<T> {
    fn cluster_id(&self) -> u64 {
        (**self).cluster_id()
    }
    fn bootstrap(&self, store: metapb::Store, region: metapb::Region) -> Result<()> {
        (**self).bootstrap(store, region)
    }
    fn is_bootstrapped(&self) -> Result<bool> {
        (**self).is_bootstrapped()
    }
    fn alloc_id(&self) -> Result<u64> {
        (**self).alloc_id()
    }
    fn put_store(&self, store: metapb::Store) -> Result<()> {
        (**self).put_store(store)
    }
    fn get_store(&self, store_id: u64) -> Result<metapb::Store> {
        (**self).get_store(store_id)
    }
    fn get_region(&self, key: &[u8]) -> Result<(metapb::Region, Option<metapb::Peer>)> {
        (**self).get_region(key)
    }
    fn get_region_by_id(&self, region_id: u64) -> Result<(metapb::Region, Option<metapb::Peer>)> {
        (**self).get_region_by_id(region_id)
    }
    fn ask_split(&self, region: metapb::Region) -> Result<AskSplitResponse> {
        (**self).ask_split(region)
    }
    fn store_heartbeat(&self, stats: StoreStats) -> Result<()> {
        (**self).store_heartbeat(stats)
    }
    fn region_heartbeat(&self, req: RegionHeartbeatRequest) -> Result<()> {
        (**self).region_heartbeat(req)
    }
    fn handle_region_heartbeat_response(&self, store_id: u64, handler: HeartbeatHandler) {
        (**self).handle_region_heartbeat_response(store_id, handler)
    }
    fn tso(&self) -> Result<u64> {
        (**self).tso()
    }
    fn gc_safe_point(&self) -> Result<u64> {
        (**self).gc_safe_point()
    }
}
