//! [`PollContext`], what every handler of a raft worker batch shares (the store's engines,
//! config, workers, transport, router, metrics), and [`PeerFsm`], a peer with its mailbox. The
//! raft worker owns both; the peer and store-message handlers borrow the context for a batch.

use std::sync::{Arc, RwLock};

use crossbeam_channel::Receiver;
use kv::Engines;

use super::Peer;
use crate::apply_worker::Applier;
use crate::config::Config;
use crate::health::StoreHealth;
use crate::inbound::DropLog;
use crate::log_writer::LogWriter;
use crate::metrics::StoreMetrics;
use crate::msg::PeerMsg;
use crate::peer_storage::{RegionTask, SnapContext};
use crate::region_worker::RaftLogGcTask;
use crate::router::Router;
use crate::scheduler_worker::SchedulerTask;
use crate::split_check::SplitCheckTask;
use crate::store::StoreMeta;
use crate::transport::Transport;
use crate::ttl_check::TtlCheckTask;
use crate::worker::Scheduler;

/// What every handler of a batch shares: small, typed, owned by the worker.
pub(crate) struct PollContext {
    pub(crate) store_id: u64,
    pub(crate) cfg: Arc<Config>,
    pub(crate) engines: Engines,
    pub(crate) snap_mgr: snap::SnapManager,
    pub(crate) region_worker: Scheduler<RegionTask>,
    pub(crate) raftlog_gc: Scheduler<RaftLogGcTask>,
    pub(crate) split_checker: Scheduler<SplitCheckTask>,
    pub(crate) ttl_checker: Scheduler<TtlCheckTask>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) store_meta: Arc<RwLock<StoreMeta>>,
    pub(crate) scheduler: Option<Scheduler<SchedulerTask>>,
    pub(crate) router: Router,
    pub(crate) metrics: Arc<StoreMetrics>,
    pub(crate) health: Arc<StoreHealth>,
    /// Counts and logs raft messages peers drop.
    pub(crate) drops: Arc<DropLog>,
    /// The leases of the regions this store leads, for reads on the caller's thread.
    pub(crate) lease_reads: Arc<crate::lease_reads::LeaseReads>,
    /// Peers created by splits this round; the worker adopts them at the end of the round.
    pub(crate) new_peers: Vec<PeerFsm>,
    /// Writes the rounds' raft-engine batches.
    pub(crate) log_writer: LogWriter,
    /// The apply thread, when the store runs one (`Config::async_apply`).
    pub(crate) applier: Option<Applier>,
}

impl PollContext {
    /// Waits until every raft-engine batch handed to the log writer is written: for what reads
    /// or writes a peer's raft state beside the writer (creating a peer from the engines,
    /// destroying one), which must not read a state about to change or be overwritten by it.
    pub(crate) fn wait_raft_writes(&self) {
        if let Err(e) = self.log_writer.wait_all() {
            panic!("store {}: raft engine write failed: {e}", self.store_id);
        }
    }

    /// What a new peer needs to build snapshots.
    pub(crate) fn snap_context(&self) -> SnapContext {
        SnapContext {
            mgr: self.snap_mgr.clone(),
            worker: self.region_worker.clone(),
        }
    }
}

/// A peer and its mailbox.
pub(crate) struct PeerFsm {
    pub(crate) peer: Peer,
    pub(crate) mailbox: Receiver<PeerMsg>,
}
