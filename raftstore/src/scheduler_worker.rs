//! Scheduler tasks: region and store heartbeats, queued by the raft worker and sent by a
//! background [`crate::Worker`] so a slow scheduler never stalls raft.

use proto::metapb;
use proto::schedulerpb::StoreStats;

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
