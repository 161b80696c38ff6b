//! `KvGc`: removes the versions of a region that no read at or above a safe point can see
//! (see [`crate::mvcc::gc`] for what goes).
//!
//! The command first raises the storage's safe point, so from then on reads below it and
//! prewrites at or below it are refused: nothing can need what GC removes any more. It then
//! refuses to go on while a lock at or below the safe point remains (its transaction may still
//! commit there; the client resolves the lock and asks again), and removes the versions in
//! batches of [`BATCH`] deletions, each from a fresh snapshot and written through the storage
//! (replicated like any write), until the region is done or the call has removed its limit of
//! versions ([`MAX_VERSIONS_PER_CALL`] at most); the answer's `next_key` says where the next
//! call goes on. It takes no latches: the versions it removes are ones no
//! command may read or write any more, and every command newer than the safe point writes
//! versions GC leaves alone.

use proto::kvrpcpb::{GcRequest, GcResponse};

use crate::engine::Cf;
use crate::mvcc::gc::gc_batch;
use crate::mvcc::{decode_lock_key, Lock};
use crate::storage::{Storage, StorageReader};

use super::error::{Error, Result};
use super::{Settled, TxnApi};

/// Deletions written per batch.
pub const BATCH: usize = 4096;
/// The most versions one call removes when the request sets no lower limit: a call stays well
/// within a client's deadline, and the client goes on from the answer's `next_key`.
pub const MAX_VERSIONS_PER_CALL: u64 = 64 * 1024;

/// The first lock in `reader` taken at or below `safe_point`, as the error a client resolves.
fn lock_at_or_below(reader: &dyn StorageReader, safe_point: u64) -> Result<Option<Error>> {
    let mut it = reader.iter_cf(Cf::Lock)?;
    it.seek(&[]);
    while it.valid()? {
        let lock = Lock::from_bytes(it.value())?;
        if lock.start_ts <= safe_point {
            return Ok(Some(Error::Locked(lock.info(&decode_lock_key(it.key())?))));
        }
        it.next();
    }
    Ok(None)
}

impl<S: Storage> TxnApi<S> {
    /// `KvGc` of the request's region at its safe point.
    pub fn gc(&self, req: &GcRequest) -> Result<GcResponse> {
        let out = Settled::settle(self.try_gc(req))?;
        let (keys, versions, next_key) = out.value;
        Ok(GcResponse {
            region_error: out.region_error,
            error: out.key_error,
            keys,
            versions,
            next_key,
        })
    }

    /// Keys looked at, versions removed, and where to go on (empty: the region is done).
    fn try_gc(&self, req: &GcRequest) -> Result<(u64, u64, Vec<u8>)> {
        if req.safe_point == 0 {
            return Err(Error::InvalidArgument("a GC needs a safe point".into()));
        }
        self.advance_gc_safe_point(req.safe_point);
        let ctx = req.context.unwrap_or_default();
        let limit = match u64::from(req.limit) {
            0 => MAX_VERSIONS_PER_CALL,
            n => n.min(MAX_VERSIONS_PER_CALL),
        };
        let (mut keys, mut versions) = (0, 0);
        let mut start = req.start_key.clone();
        loop {
            let reader = self.storage.reader(&ctx)?;
            if let Some(locked) = lock_at_or_below(reader.as_ref(), req.safe_point)? {
                return Err(locked);
            }
            let room = usize::try_from(limit - versions)
                .unwrap_or(BATCH)
                .min(BATCH);
            let batch = gc_batch(reader.as_ref(), &start, req.safe_point, room)?;
            drop(reader);
            keys += batch.keys;
            versions += batch.versions;
            if !batch.modifies.is_empty() {
                self.storage.write(&ctx, batch.modifies)?;
            }
            match batch.next {
                Some(next) if versions >= limit => return Ok((keys, versions, next)),
                Some(next) => start = next,
                None => return Ok((keys, versions, Vec::new())),
            }
        }
    }
}
