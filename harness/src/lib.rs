//! Tessera's clusters for tests, benchmarks and chaos:
//!
//! - [`local_cluster`]: a scheduler and raft stores in this process, each started by the one
//!   store assembly (`server::start_with`), for `tessera-bench --mode cluster` and the
//!   end-to-end tests;
//! - [`chaos`]: store processes behind proxies under a nemesis (kills, pauses, partitions,
//!   delays, disk faults), with every history checked for linearizability and the bank audited:
//!   what `tessera-chaos` runs.

#![deny(missing_docs)]

pub mod chaos;
pub mod local_cluster;
