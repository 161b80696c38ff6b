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

pub use prost::Message;
