//! [`Transport`]: how a store sends raft messages to other stores. The in-process test cluster
//! and the gRPC server each provide one.

use std::sync::Arc;
use std::time::Instant;

use proto::raft_serverpb::RaftMessage;

use crate::error::Result;
use crate::metrics::{SnapEvent, StoreMetrics};
use crate::router::Router;

/// How a transport tells the sending peer that a snapshot transfer it took on has ended: handed
/// to [`Transport::send_snapshot`] with each transfer, so a transport needs no handle on the
/// store it sends for.
pub struct SnapshotReport {
    router: Router,
    region_id: u64,
    to_peer_id: u64,
    metrics: Arc<StoreMetrics>,
    started: Instant,
}

impl SnapshotReport {
    pub(crate) fn new(
        router: Router,
        region_id: u64,
        to_peer_id: u64,
        metrics: Arc<StoreMetrics>,
    ) -> SnapshotReport {
        SnapshotReport {
            router,
            region_id,
            to_peer_id,
            metrics,
            started: Instant::now(),
        }
    }

    /// Tells the sending peer whether the transfer failed (raft then sends a new snapshot) or
    /// reached the receiver verified (raft then probes the follower). A region gone meanwhile
    /// needs no report.
    pub fn finish(self, failed: bool) {
        let sent = (!failed).then_some(0);
        self.metrics
            .on_snapshot(SnapEvent::Send, self.started.elapsed(), sent);
        self.router
            .report_snapshot(self.region_id, self.to_peer_id, failed);
    }
}

/// Sends raft messages to other stores. Delivery is best effort: raft retransmits.
pub trait Transport: Send + Sync + 'static {
    /// Sends `msg` to the store of `msg.to_peer`.
    ///
    /// # Errors
    /// [`crate::Error::Transport`] when the message cannot be delivered; the sender reports the
    /// peer unreachable to raft.
    fn send(&self, msg: RaftMessage) -> Result<()>;

    /// Sends `msg`, whose raft message is a `MsgSnapshot`, together with the files of the
    /// generated snapshot it names (see `snap::snapshot_in_message`) from `snap_mgr`. The receiver
    /// must hold the verified files as a received snapshot before the message reaches its raft.
    /// Once this returns `Ok`, the transfer's end is told through `report`, whatever it is.
    ///
    /// # Errors
    /// [`crate::Error::Transport`] when the transfer cannot start or fails in place; `report`
    /// is then dropped unused, and the sender reports the snapshot failed to raft itself.
    fn send_snapshot(
        &self,
        msg: RaftMessage,
        snap_mgr: &snap::SnapManager,
        report: SnapshotReport,
    ) -> Result<()>;
}
