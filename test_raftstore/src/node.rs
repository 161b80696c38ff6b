//! The [`Simulator`] seam of the test cluster and [`NodeSimulator`], which runs every store in
//! this process over a shared [`MockTransport`] and the [`MockSchedulerClient`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kv::Engines;
use proto::raft_cmdpb::RaftCmdRequest;
use raftstore::{Callback, CmdResponse, Config, Node};
use snap::{SnapConfig, SnapManager};

use crate::filter::Filter;
use crate::scheduler::MockSchedulerClient;
use crate::transport::MockTransport;

/// Runs the stores of a test cluster.
pub trait Simulator: Send + Sync {
    /// Starts store `store_id` over `engines` (bootstrapped).
    ///
    /// # Errors
    /// When the node cannot start.
    fn run_node(&mut self, store_id: u64, cfg: Config, engines: Engines) -> raftstore::Result<()>;
    /// Stops store `store_id`, dropping everything it held in memory.
    fn stop_node(&mut self, store_id: u64);
    /// The running stores, in id order.
    fn running_stores(&self) -> Vec<u64>;
    /// Sends `req` to store `store_id` and waits up to `timeout` for the answer.
    ///
    /// # Errors
    /// [`raftstore::Error::Timeout`] with no answer in time; delivery errors.
    fn call_command_on_node(
        &self,
        store_id: u64,
        req: RaftCmdRequest,
        timeout: Duration,
    ) -> raftstore::Result<CmdResponse>;
    /// The raft worker counters of a running store.
    fn metrics(&self, store_id: u64) -> Option<Arc<raftstore::StoreMetrics>>;
    /// The router of a running store.
    fn router(&self, store_id: u64) -> Option<raftstore::Router>;
    /// The `kv::Storage` of a running store.
    fn raft_storage(&self, store_id: u64) -> Option<raftstore::RaftStorage>;
    /// Installs a filter on every message between stores.
    fn add_filter(&self, filter: Arc<dyn Filter>);
    /// Removes a filter installed earlier.
    fn remove_filter(&self, filter: &Arc<dyn Filter>);
    /// Removes every filter.
    fn clear_filters(&self);
    /// Corrupts the next `n` snapshot transfers on the wire.
    fn corrupt_next_snapshots(&self, n: u64);
    /// Snapshot transfers delivered verified, and refused.
    fn snapshot_counts(&self) -> (u64, u64);
    /// The snapshot manager of a running store.
    fn snap_manager(&self, store_id: u64) -> Option<SnapManager>;
}

/// Every store in this process.
pub struct NodeSimulator {
    transport: MockTransport,
    scheduler: Arc<MockSchedulerClient>,
    nodes: HashMap<u64, Node>,
}

impl NodeSimulator {
    /// A simulator whose stores talk to `scheduler`.
    pub fn new(scheduler: Arc<MockSchedulerClient>) -> NodeSimulator {
        NodeSimulator {
            transport: MockTransport::new(),
            scheduler,
            nodes: HashMap::new(),
        }
    }
}

impl Simulator for NodeSimulator {
    fn run_node(&mut self, store_id: u64, cfg: Config, engines: Engines) -> raftstore::Result<()> {
        assert!(
            !self.nodes.contains_key(&store_id),
            "store {store_id} is already running"
        );
        // The snapshot directory sits beside the engines, so it survives restarts with them.
        let snap_dir = engines
            .kv_path
            .parent()
            .map_or_else(|| engines.kv_path.join("snap"), |d| d.join("snap"));
        let snap_mgr = SnapManager::open(snap_dir, SnapConfig::default())
            .map_err(|e| raftstore::Error::Other(format!("cannot open snapshots: {e}")))?;
        let node = Node::start(
            cfg,
            engines,
            snap_mgr,
            Arc::new(self.transport.clone()),
            self.scheduler.clone(),
            raftstore::StoreAddresses {
                client: format!("store-{store_id}"),
                peer: format!("store-{store_id}-peer"),
                status: String::new(),
            },
        )?;
        assert_eq!(node.store_id(), store_id, "engines belong to another store");
        self.transport.register(
            store_id,
            node.raftstore().router().clone(),
            node.raftstore().snap_manager().clone(),
        );
        self.nodes.insert(store_id, node);
        Ok(())
    }

    fn stop_node(&mut self, store_id: u64) {
        self.transport.unregister(store_id);
        if let Some(mut node) = self.nodes.remove(&store_id) {
            node.stop();
        }
    }

    fn running_stores(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.nodes.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn call_command_on_node(
        &self,
        store_id: u64,
        req: RaftCmdRequest,
        timeout: Duration,
    ) -> raftstore::Result<CmdResponse> {
        let Some(node) = self.nodes.get(&store_id) else {
            return Err(raftstore::Error::Transport(format!(
                "store {store_id} is not running"
            )));
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let _ = node.raftstore().router().send_command(
            req,
            Callback::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv_timeout(timeout).map_err(|_| {
            raftstore::Error::Timeout(format!("store {store_id} did not answer in {timeout:?}"))
        })
    }

    fn metrics(&self, store_id: u64) -> Option<Arc<raftstore::StoreMetrics>> {
        self.nodes
            .get(&store_id)
            .map(|n| n.raftstore().metrics().clone())
    }

    fn router(&self, store_id: u64) -> Option<raftstore::Router> {
        self.nodes
            .get(&store_id)
            .map(|n| n.raftstore().router().clone())
    }

    fn raft_storage(&self, store_id: u64) -> Option<raftstore::RaftStorage> {
        self.nodes.get(&store_id).map(|n| n.raftstore().storage())
    }

    fn add_filter(&self, filter: Arc<dyn Filter>) {
        self.transport.add_filter(filter);
    }

    fn remove_filter(&self, filter: &Arc<dyn Filter>) {
        self.transport.remove_filter(filter);
    }

    fn clear_filters(&self) {
        self.transport.clear_filters();
    }

    fn corrupt_next_snapshots(&self, n: u64) {
        self.transport.corrupt_next_snapshots(n);
    }

    fn snapshot_counts(&self) -> (u64, u64) {
        self.transport.snapshot_counts()
    }

    fn snap_manager(&self, store_id: u64) -> Option<SnapManager> {
        self.nodes
            .get(&store_id)
            .map(|n| n.raftstore().snap_manager().clone())
    }
}
