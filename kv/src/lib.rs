//! Tessera's storage foundation: engines, storages, MVCC, transactions and the raw API.
//!
//! - [`engine`]: the RocksDB engines ([`Engines`]: `kv` with CFs default/lock/write, and `raft`),
//!   write batches spanning CFs, snapshots.
//! - [`keys`]: the key layout of both engines.
//! - [`fault`]: disk fault injection for tests.
//! - [`disk`]: free space, and the reserve a store keeps ([`disk::DiskReserve`]).
//! - [`Storage`]: the abstraction services run on, with [`StandaloneStorage`] (RocksDB) and
//!   [`MemoryStorage`] (tests); the raftstore crate adds a replicated one. Besides batches, a
//!   storage runs a compare-and-swap ([`Cas`]) atomically with respect to its other writes.
//! - [`mvcc`] and [`txn`]: MVCC records and Percolator transactions ([`TxnApi`]) over any storage.
//! - [`RawApi`]: the raw API over any storage. The gRPC service that serves it and [`TxnApi`]
//!   lives in the `server` crate.

#![deny(missing_docs)]

mod cas;
pub mod disk;
pub mod engine;
mod error;
pub mod fault;
pub mod keys;
mod memory;
pub mod mvcc;
mod raft_engine;
mod raw;
mod standalone;
mod storage;
pub mod txn;

pub use cas::{Cas, CasOutcome};
pub use engine::{Cf, EngineSnapshot, Engines, RaftLogKind, WriteBatch};
pub use error::{Error, Result};
pub use memory::MemoryStorage;
pub use raft_engine::RocksRaftEngine;
pub use raw::{RawApi, RawLimits, ScanPage, ScanRange};
pub use standalone::StandaloneStorage;
pub use storage::{
    answered, DbIterator, EngineReader, Modify, Storage, StorageFuture, StorageReader,
};
pub use txn::TxnApi;
