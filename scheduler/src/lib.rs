//! Tessera's scheduler: hands out ids and timestamps, bootstraps the cluster, learns stores and
//! regions from heartbeats, and balances replicas and leaders through operators sent back in
//! region heartbeat responses.
//!
//! The core, [`Cluster`], has no gRPC in it: tests and in-process mocks call it directly
//! (`Cluster::in_memory` for state in memory only), or through [`LocalClient`], a
//! `scheduler_client::SchedulerClient` over it. [`server::start`] puts the `Scheduler` gRPC
//! service in front of it.
//!
//! ```text
//!  region heartbeat --> heartbeat.rs --> region tree (+ store counts) --> coordinator
//!                                                                          |  replica checker
//!  response <-- next operator step <-- operators (per-store limit, timeout) <  balance-leader
//!                                                                          |  balance-region
//! ```

#![deny(missing_docs)]

mod admin;
mod alloc;
mod cluster;
mod config;
mod coordinator;
mod error;
mod heartbeat;
pub mod http;
mod local;
mod meta;
pub mod metrics;
mod operator;
mod region;
mod schedule;
mod schedulers;
pub mod server;

pub use admin::AdminOp;
pub use alloc::{compose_ts, split_ts, Clock, LOGICAL_BITS};
pub use cluster::Cluster;
pub use config::Config;
pub use coordinator::OpCounters;
pub use error::{Error, Result};
pub use local::{to_client_error, LocalClient};
pub use operator::{OpKind, OpStep, Operator};
pub use region::{RegionInfo, RegionTree, StoreCounts, StoreInfo};
