//! Tessera's workloads: what runs against a cluster to load it and to check it.
//!
//! - [`bank`]: accounts moved between by transfer transactions, a snapshot auditor, and an
//!   end-of-run audit of the MVCC records against the history the clients kept. It runs over
//!   any [`TxnClient`](tessera_client::TxnClient) (gRPC to a cluster of processes, or a test
//!   cluster's in-process stores behind a [`TxnTransport`](tessera_client::TxnTransport)), and
//!   reads the records through [`bank::Records`]. Used by `tessera-bench --mode bank`, the
//!   chaos harness, the end-to-end tests and the in-process raftstore suites.
//!
//! Depends on the client library and the shared encodings only, never on RocksDB.

#![deny(missing_docs)]

pub mod bank;
