//! Tessera's raftstore: the multi-raft store. Every region with a peer on this store is a raft
//! group; one raft worker thread drives all of them with group commit across regions.
//!
//! - [`Node::start`] starts a store: bootstrap through the scheduler client, heartbeats, and the
//!   raftstore.
//! - [`start_raftstore`] runs a store over bootstrapped engines and a [`Transport`], returning a
//!   [`RaftstoreHandle`] with the [`Router`] and a [`RaftStorage`] (`kv::Storage` over raft).
//! - [`bootstrap`] writes the store ident and the first region.
//! - [`PeerStorage`] is a peer's raft log and state over the engines.
//! - [`Worker`] runs background tasks such as scheduler heartbeats ([`SchedulerTask`]).
//!
//! - The region worker builds and applies snapshots (`snap` crate files) and the raft-log GC
//!   worker deletes compacted log entries, both off the raft worker.
//!
//! - Conf change, leader transfer and peer destruction are in the peer's `conf_change` module;
//!   the scheduler's operator steps arrive through region heartbeat responses ([`Node::start`]).
//! - Region split: the split-check worker measures regions and picks split keys, the leader
//!   asks the scheduler for ids and proposes `Split` (the peer's `split` module);
//!   [`PeerMsg::SplitRegion`] splits at a chosen key.

#![deny(missing_docs)]
// eraftpb (rust-protobuf) messages carry private bookkeeping fields, so they are built with
// `default()` and then assigned field by field.
#![allow(clippy::field_reassign_with_default)]

mod apply_worker;
mod cmd;
mod config;
mod disk_monitor;
mod error;
mod health;
mod inbound;
mod lease_reads;
mod log_writer;
mod metrics;
mod msg;
mod node;
mod peer;
mod peer_storage;
mod raft_storage;
mod raft_worker;
mod region_worker;
mod router;
mod scheduler_worker;
mod split_check;
mod store;
mod store_handler;
mod transport;
mod ttl_check;
mod util;
mod worker;

pub mod bootstrap;

pub use config::Config;
pub use error::{Error, Result};
pub use health::{NotLive, StoreHealth};
pub use inbound::{check_raft_message, DeliverError, Inbound, Refused, Stream};
pub use metrics::{duration_buckets, DropReason, MetricsBuilder, PeerCounts, StoreMetrics};
pub use msg::{Callback, CmdResponse, PeerMsg, SplitRegion, StoreMsg};
pub use node::{start_raftstore, store_registry, Node, RaftstoreHandle, StoreAddresses};
pub use peer::UNSAFE_LOCAL_READS_ENV;
pub use peer_storage::{
    conf_state_of, initial_apply_state, initial_raft_state, read_raft_state, PeerStorage,
    RAFT_INIT_LOG_INDEX, RAFT_INIT_LOG_TERM,
};
pub use raft_storage::RaftStorage;
pub use router::Router;
pub use scheduler_worker::{SchedulerRunner, SchedulerTask};
pub use store::StoreMeta;
pub use transport::{SnapshotReport, Transport};
pub use util::region_contains;
pub use worker::{Runnable, Scheduler, Worker};
