//! Tessera's protocol: the generated protobuf messages and gRPC services.
//!
//! The `.proto` files under `proto/` follow the kvproto shape. Raft's own messages are raft-proto's
//! `eraftpb` (rust-protobuf codec), re-exported here; they travel inside our messages as `bytes`
//! fields holding the encoded `eraftpb` message, because prost and rust-protobuf types cannot nest.

#![allow(missing_docs)]
#![allow(clippy::all)]

pub use protobuf;
pub use raft_proto::eraftpb;

/// Cluster metadata: stores, regions, peers, epochs.
pub mod metapb {
    tonic::include_proto!("metapb");
}

/// Region errors.
pub mod errorpb {
    tonic::include_proto!("errorpb");
}

/// Store-to-store messages and persisted raft state.
pub mod raft_serverpb {
    tonic::include_proto!("raft_serverpb");
}

/// Commands proposed through raft.
pub mod raft_cmdpb {
    tonic::include_proto!("raft_cmdpb");
}

/// Raw and transactional KV requests.
pub mod kvrpcpb {
    tonic::include_proto!("kvrpcpb");
}

/// The scheduler service.
pub mod schedulerpb {
    tonic::include_proto!("schedulerpb");
}

/// The TinyKv service.
pub mod tinykvpb {
    tonic::include_proto!("tinykvpb");
}

/// The part of etcd's v3 KV service that `tessera-bench` drives to compare the two side by side
/// (client only; Tessera serves none of it).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub use prost::Message;

/// Bounds both ends of the protocol keep to.
pub mod limits {
    /// The most requests one `BatchCommands` message may carry (and one answer message
    /// carries); a server ends a stream whose message carries more.
    pub const BATCH_MAX_REQUESTS: usize = 1024;
    /// The bytes of requests a client puts in one `BatchCommands` message before it sends it
    /// (so a message is at most this plus one request: a server's message limit must allow
    /// that), and the bytes of answers a server collects before it sends them.
    pub const BATCH_MAX_BYTES: usize = 1 << 20;
}

impl errorpb::Error {
    /// Whether this region error proves that the write it answers was not applied and never
    /// will be, so that sending it again cannot apply it twice. Tessera's stores answer these
    /// only before proposing a command, or when its log entry was skipped at apply (a stale
    /// epoch, a key outside the region) or overwritten by another leader's (`StaleCommand`).
    /// Any other region error (one carrying only a message, such as a peer's "the outcome is
    /// unknown") leaves the write's outcome unknown.
    pub fn proves_not_applied(&self) -> bool {
        self.not_leader.is_some()
            || self.epoch_not_match.is_some()
            || self.key_not_in_region.is_some()
            || self.region_not_found.is_some()
            || self.server_is_busy.is_some()
            || self.stale_command.is_some()
            || self.store_not_match.is_some()
            || self.disk_full.is_some()
    }
}
