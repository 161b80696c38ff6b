//! Scheduler tasks: region and store heartbeats, queued by the raft worker and sent by a
//! background [`crate::Worker`] so a slow scheduler never stalls raft.

use std::sync::Arc;

use proto::metapb;
use proto::schedulerpb::{RegionHeartbeatRequest, StoreStats};
use scheduler_client::SchedulerClient;

use crate::worker::Runnable;

/// Work for the scheduler worker.
#[derive(Debug)]
pub enum SchedulerTask {
    /// The leader of `region` reports it.
    RegionHeartbeat {
        /// The region as its leader knows it.
        region: metapb::Region,
        /// The leader (this store's peer).
        leader: metapb::Peer,
    },
    /// The store reports its statistics.
    StoreHeartbeat {
        /// The statistics.
        stats: StoreStats,
    },
}

/// Sends [`SchedulerTask`]s through a scheduler client, on a [`crate::Worker`] thread.
pub struct SchedulerRunner {
    store_id: u64,
    client: Arc<dyn SchedulerClient>,
}

impl SchedulerRunner {
    /// A runner for store `store_id`.
    pub fn new(store_id: u64, client: Arc<dyn SchedulerClient>) -> SchedulerRunner {
        SchedulerRunner { store_id, client }
    }
}

impl Runnable for SchedulerRunner {
    type Task = SchedulerTask;

    fn run(&mut self, task: SchedulerTask) {
        let store_id = self.store_id;
        match task {
            SchedulerTask::RegionHeartbeat { region, leader } => {
                let region_id = region.id;
                let req = RegionHeartbeatRequest {
                    region: Some(region),
                    leader: Some(leader),
                    ..Default::default()
                };
                if let Err(e) = self.client.region_heartbeat(req) {
                    // The next heartbeat carries the same information; nothing to retry.
                    tracing::debug!(store_id, region_id, error = %e, "region heartbeat failed");
                }
            }
            SchedulerTask::StoreHeartbeat { stats } => {
                if let Err(e) = self.client.store_heartbeat(stats) {
                    tracing::debug!(store_id, error = %e, "store heartbeat failed");
                }
            }
        }
    }
}
