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
}
