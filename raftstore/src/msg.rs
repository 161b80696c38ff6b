//! Typed messages of the store: [`PeerMsg`] for a region's peer, [`StoreMsg`] for the store
//! itself, and the [`Callback`] a command answers through.
//!
//! Droppability: a `RaftMessage` may be dropped (raft retransmits); a `RaftCommand` must never be
//! dropped silently — whoever drops one answers its callback with an error.

use std::fmt;

use kv::EngineSnapshot;
use proto::raft_cmdpb::{RaftCmdRequest, RaftCmdResponse};
use proto::raft_serverpb::RaftMessage;

use crate::error::Error;

/// The answer to a command: the response, and for a `Snap` request a consistent engine snapshot
/// taken once the peer had applied up to the read index.
pub struct CmdResponse {
    /// The wire response; a region error is in `response.header.error`.
    pub response: RaftCmdResponse,
    /// The kv engine snapshot answering a `Snap` request.
    pub snapshot: Option<EngineSnapshot>,
}

impl CmdResponse {
    /// A response carrying only `err`.
    pub fn from_error(err: Error, term: u64) -> CmdResponse {
        let mut response = RaftCmdResponse::default();
        let header = response.header.get_or_insert_with(Default::default);
        header.error = Some(err.into_errorpb());
        header.current_term = term;
        CmdResponse {
            response,
            snapshot: None,
        }
    }
}

/// A one-shot continuation for a command. Invoked exactly once by whoever finishes (or drops) it.
pub struct Callback(Box<dyn FnOnce(CmdResponse) + Send>);

impl Callback {
    /// Wraps `f`.
    pub fn new(f: impl FnOnce(CmdResponse) + Send + 'static) -> Callback {
        Callback(Box::new(f))
    }

    /// A callback that ignores the answer.
    pub fn none() -> Callback {
        Callback::new(|_| {})
    }

    /// Answers the command.
    pub fn invoke(self, resp: CmdResponse) {
        (self.0)(resp)
    }

    /// Answers the command with `err`.
    pub fn invoke_with_error(self, err: Error, term: u64) {
        self.invoke(CmdResponse::from_error(err, term))
    }
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Callback")
    }
}

/// A message for the peer of one region.
#[derive(Debug)]
pub enum PeerMsg {
    /// A raft message from another store. May be dropped.
    RaftMessage(Box<RaftMessage>),
    /// A client command to propose or read. Never dropped without answering `callback`.
    RaftCommand {
        /// The command.
        request: Box<RaftCmdRequest>,
        /// Where the answer goes.
        callback: Callback,
    },
    /// The raft logical clock advanced one tick.
    Tick,
    /// Send a region heartbeat to the scheduler now, if leader.
    HeartbeatScheduler,
    /// The transport's report on a snapshot sent to peer `to_peer_id`: `failed` makes raft send
    /// a new one; success lets it resume normal replication without waiting for the answer.
    SnapshotStatus {
        /// The peer the snapshot went to.
        to_peer_id: u64,
        /// Whether the transfer failed.
        failed: bool,
    },
    /// The region worker finished applying the snapshot at `index` to the kv engine.
    SnapshotApplied {
        /// The snapshot's index.
        index: u64,
        /// `Err` with the reason when the apply failed.
        result: std::result::Result<(), String>,
    },
    /// The split-check worker measured the region.
    RegionSize {
        /// Bytes of keys and values (a lower bound for a region over its maximum size).
        size: u64,
        /// Number of keys across the column families.
        keys: u64,
    },
    /// Split the region: see [`SplitRegion`].
    SplitRegion(Box<SplitRegion>),
    /// The scheduler's answer to a claim that peer `peer_id` was removed from the region, asked
    /// while the peer knew the membership `conf_ver`: `removed` when the scheduler's region is
    /// newer and lacks the peer.
    StalePeerChecked {
        /// The peer the claim was about.
        peer_id: u64,
        /// The membership the peer knew when it asked.
        conf_ver: u64,
        /// Whether the scheduler confirms the removal.
        removed: bool,
    },
}

impl PeerMsg {
    /// Whether the message comes from outside the store (another store's raft message, a
    /// client's command): those are refused when the mailbox is full; the store's own never.
    pub fn from_outside(&self) -> bool {
        matches!(self, PeerMsg::RaftMessage(_) | PeerMsg::RaftCommand { .. })
    }
}

/// Split the region at `split_key` if it still has `region_epoch`: the leader asks the scheduler
/// for ids, then proposes the split. `callback` gets the split's answer (the two regions) or why
/// it did not happen.
#[derive(Debug)]
pub struct SplitRegion {
    /// The epoch the split key was chosen under.
    pub region_epoch: proto::metapb::RegionEpoch,
    /// The first key of the new right-hand region.
    pub split_key: Vec<u8>,
    /// Where the answer goes.
    pub callback: Callback,
}

/// A message for the store itself.
#[derive(Debug)]
pub enum StoreMsg {
    /// A raft message for a region that has no peer on this store yet; it may create one.
    RaftMessage(Box<RaftMessage>),
    /// Time to report store statistics to the scheduler.
    HeartbeatTick,
}
