//! [`Transport`]: how a store sends raft messages to other stores. The in-process test cluster
//! and the gRPC server each provide one.

use proto::raft_serverpb::RaftMessage;

use crate::error::Result;

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
    /// A transfer that fails after this returns is reported with `Router::report_snapshot`.
    ///
    /// # Errors
    /// [`crate::Error::Transport`] when the transfer cannot start or fails in place; the sender
    /// reports the snapshot failed to raft, which retries.
    fn send_snapshot(&self, msg: RaftMessage, snap_mgr: &snap::SnapManager) -> Result<()>;
}
