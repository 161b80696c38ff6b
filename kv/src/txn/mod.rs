//! Percolator transactions over any [`Storage`]: the commands behind the `Kv*` RPCs.
//!
//! A transaction prewrites every key (a lock in the `lock` CF plus its value in `default`), then
//! commits its primary key and the others (a `write` record replacing each lock). Whoever finds
//! a lock can ask the primary how the transaction ended ([`TxnApi::check_txn_status`]) and
//! finish the job ([`TxnApi::resolve_lock`]). See [`crate::mvcc`] for the record layout.
//!
//! Every writing command follows one shape: latch its keys ([`Latches`]), take a snapshot, read
//! and decide through an [`MvccTxn`](crate::mvcc::MvccTxn), and apply the buffered writes as one
//! batch before releasing the latches. Reads (`get`, `scan`) take no latches: a snapshot is
//! consistent on its own.
//!
//! The latches are released when [`Storage::write`] returns, so this layer relies on a write
//! returning only once its batch's fate is decided: applied, or never to be applied on this
//! storage. A storage that gave up on a deadline while the batch could still land would let
//! the next command on the same keys read a snapshot without it and decide on stale state (a
//! commit that timed out, then a rollback of the same lock: both land). The replicated storage
//! therefore waits for its proposal's outcome; bounding a client's wait is the service's job,
//! and the command keeps its latches after the client has been answered.

mod actions;
mod cleanup;
mod commands;
mod error;
mod gc;
mod latches;
pub mod testkit;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proto::errorpb;
use proto::kvrpcpb::{Context, KeyError};

use crate::mvcc::user_key_of;
use crate::storage::{Modify, Storage};

pub use error::{Error, Result};
pub use latches::{LatchGuard, Latches};

use error::Outcome;

/// Called with the latched keys and the batch, just before a command's batch is written.
pub type WriteHook = dyn Fn(&[Vec<u8>], &[Modify]) + Send + Sync;

/// The transactional API over a storage, shared by the gRPC service and tools.
pub struct TxnApi<S> {
    storage: Arc<S>,
    latches: Arc<Latches>,
    hook: Option<Arc<WriteHook>>,
    /// The GC safe point this storage has been told of: reads below it and prewrites at or
    /// below it are refused (see `gc`).
    safe_point: Arc<AtomicU64>,
}

impl<S> Clone for TxnApi<S> {
    fn clone(&self) -> Self {
        TxnApi {
            storage: self.storage.clone(),
            latches: self.latches.clone(),
            hook: self.hook.clone(),
            safe_point: self.safe_point.clone(),
        }
    }
}

impl<S: Storage> TxnApi<S> {
    /// The transactional API over `storage`, with a latch table of its own.
    ///
    /// Every writer of the storage's transactional data must share one latch table: clone this
    /// value rather than creating a second one over the same storage.
    pub fn new(storage: Arc<S>) -> TxnApi<S> {
        TxnApi {
            storage,
            latches: Arc::new(Latches::new()),
            hook: None,
            safe_point: Arc::default(),
        }
    }

    /// The GC safe point in force (0: none yet).
    pub fn gc_safe_point(&self) -> u64 {
        self.safe_point.load(Ordering::Acquire)
    }

    /// Raises the GC safe point to `safe_point` (never lowers it); returns the one in force.
    pub fn advance_gc_safe_point(&self, safe_point: u64) -> u64 {
        self.safe_point
            .fetch_max(safe_point, Ordering::AcqRel)
            .max(safe_point)
    }

    /// Refuses a read at `ts` below the GC safe point.
    fn check_read_ts(&self, ts: u64) -> Result<()> {
        let safe_point = self.gc_safe_point();
        if ts < safe_point {
            return Err(Error::Compacted { ts, safe_point });
        }
        Ok(())
    }

    /// Installs `hook`, called before every batch a command writes (tests use it to check that
    /// each written key was latched).
    pub fn with_write_hook(mut self, hook: Arc<WriteHook>) -> TxnApi<S> {
        self.hook = Some(hook);
        self
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Arc<S> {
        &self.storage
    }

    /// The latch table.
    pub fn latches(&self) -> &Latches {
        &self.latches
    }

    /// Applies a command's batch; the caller releases `guard` once this returns, that is once
    /// the storage has decided the batch's fate (see the module documentation). Writing a key
    /// without holding its latch would let two commands decide on the same stale state, so it
    /// is a bug, and panics.
    fn write(&self, ctx: &Context, guard: &LatchGuard<'_>, batch: Vec<Modify>) -> Result<()> {
        for m in &batch {
            let key = user_key_of(m)?;
            assert!(
                guard.covers(&key),
                "transaction command writes {key:?} ({:?} CF) without latching it; latched {:?}",
                m.cf(),
                guard.keys()
            );
        }
        if let Some(hook) = &self.hook {
            hook(guard.keys(), &batch);
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.storage.write(ctx, batch)?;
        Ok(())
    }
}

/// A command's outcome split the way responses carry it: a value, or a region error, or a key
/// error (the value is then the default). Other errors fail the RPC.
struct Settled<T> {
    value: T,
    region_error: Option<errorpb::Error>,
    key_error: Option<KeyError>,
}

impl<T: Default> Settled<T> {
    fn settle(r: Result<T>) -> Result<Settled<T>> {
        let (region_error, key_error) = match r {
            Ok(value) => {
                return Ok(Settled {
                    value,
                    region_error: None,
                    key_error: None,
                })
            }
            Err(e) => match e.outcome() {
                Outcome::Region(re) => (Some(re), None),
                Outcome::Key(ke) => (None, Some(ke)),
                Outcome::Fail(e) => return Err(e),
            },
        };
        Ok(Settled {
            value: T::default(),
            region_error,
            key_error,
        })
    }

    fn is_ok(&self) -> bool {
        self.region_error.is_none() && self.key_error.is_none()
    }
}

/// Sorted, de-duplicated keys: a command touches each key once, since its reads do not see its
/// own buffered writes.
fn unique_keys(keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    keys
}
