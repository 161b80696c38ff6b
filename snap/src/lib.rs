//! Tessera's region snapshots: the files, their verification, transfer and the manager.
//!
//! A snapshot of a region at raft (term, index) is one SST file per non-empty column family over
//! the region's data keys, plus a meta file (an encoded `SnapshotMeta`) listing each CF file's size
//! and md5. Files are written as `.tmp` and renamed when complete; the meta is renamed last, so a
//! snapshot with a meta is complete and anything else is debris a restart removes.
//!
//! - [`SnapManager`]: the directory and the registry ([`SnapState`]); [`SnapManager::build`],
//!   [`SnapManager::verify`], [`SnapManager::apply`], [`SnapManager::send`],
//!   [`SnapManager::receive`], [`SnapManager::gc`].
//! - [`ChunkReader`] / [`SnapReceiver`]: the two ends of a chunked transfer; [`transfer`] joins
//!   them in process.
//! - [`SnapKey`], [`SnapKind`]: identity; file naming in `name`.

#![deny(missing_docs)]

mod error;
mod key;
mod manager;
mod meta;
mod name;
mod sst;
mod transfer;

pub use error::{Error, Result};
pub use key::{SnapKey, SnapKind, SnapState};
pub use manager::{SnapConfig, SnapGuard, SnapManager};
pub use meta::{file_md5, meta_total_size, sync_dir};
pub use sst::{ApplyStats, BuiltSnapshot};
pub use transfer::{snapshot_in_message, transfer, ChunkReader, SnapReceiver, DEFAULT_CHUNK_SIZE};
