//! The in-process test cluster for Tessera's raftstore and the stage-2B suites' machinery.
//!
//! - [`Cluster`] over a [`Simulator`] ([`NodeSimulator`] with [`MockTransport`]): start, stop and
//!   restart stores, `must_put/get/delete/scan`, `leader_of_region`, `wait_*` helpers.
//! - [`Filter`]s: partition, isolation, seeded drop, delay, message-type and region filters.
//! - [`MockSchedulerClient`]: the scheduler in process.
//! - [`checker`]: the linearizability checker for per-key register histories (the `checker`
//!   crate, shared with the chaos harness on real processes).
//! - [`generic_test`]: rounds of client load under faults, checked for linearizability.

#![deny(missing_docs)]

mod admin;
mod client;
mod cluster;
mod filter;
mod generic;
mod inspect;
mod node;
mod scheduler;
mod split;
mod transport;

/// The linearizability checker (the `checker` crate), where the suites have always found it.
pub use checker;

pub use client::{cas_req, get_req, put_req, CasError, LeaderCache, RequestError};
pub use cluster::{raft_log_kind, Cluster, ASYNC_APPLY_ENV, ASYNC_LOG_WRITES_ENV, RAFT_ENGINE_ENV};
pub use filter::{
    DelayFilter, DropFilter, Filter, FilterAction, IsolationFilter, MessageTypeFilter,
    PartitionFilter, RegionFilter,
};
pub use generic::generic_test;
pub use node::{NodeSimulator, Simulator};
pub use scheduler::MockSchedulerClient;
pub use split::regions_tile;
pub use transport::MockTransport;
