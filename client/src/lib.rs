//! Tessera's client library: what an application takes to talk to a Tessera cluster. It depends
//! on the protocol (`proto`), the shared encodings (`codec`), the scheduler client and tonic, and
//! never on RocksDB (`make lint` checks it), so it builds anywhere Rust does.
//!
//! - [`RawClient`] ([`raw`]): raw get / put / delete / compare-and-swap / scan against one server
//!   (a standalone server, or one store when the caller routes by itself).
//! - [`ClusterClient`] ([`cluster`]): the raw API over a whole cluster, given the scheduler's
//!   address: it finds each key's region and leader, follows splits, leader changes and moves,
//!   and retries what is safe to retry under one deadline.
//! - [`TxnClient`] ([`txn`]): Percolator transactions (snapshot reads at a start timestamp, two
//!   phase commit, lock resolution), over one server or routed through a [`ClusterClient`], or
//!   over any [`TxnTransport`] (a test cluster's in-process stores).
//! - [`blocking`]: the cluster client for callers without an async runtime.
//!
//! Errors are typed: a request that may have taken effect although it failed says so
//! (`is_undetermined`), and a store whose storage did not answer in time is reported through its
//! typed region error, never recognised by the text of a message.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tessera_client::{ClusterClient, ClusterConfig};
//!
//! let client = ClusterClient::connect("127.0.0.1:2379", ClusterConfig::default()).await?;
//! client.put("default", b"greeting", b"hello").await?;
//! assert_eq!(client.get("default", b"greeting").await?, Some(b"hello".to_vec()));
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod blocking;
pub mod cluster;
pub mod raw;
pub mod txn;

pub use cluster::{ClusterClient, ClusterConfig, ClusterError, Reply};
pub use raw::{CasResult, ClientError, Pairs, RawClient, ScanRange};
pub use txn::{TimestampOracle, Txn, TxnClient, TxnError, TxnStatus, TxnTransport};
