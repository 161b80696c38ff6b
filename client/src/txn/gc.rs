//! A GC of the whole cluster at a safe point: `KvGc` region by region, each lock at or below
//! the safe point that a region reports resolved (or its live transaction waited out) first.
//!
//! The caller raises the scheduler's safe point, and sees every store learn it, before it
//! calls this: a store must refuse reads below the safe point before any replica collects.

use proto::kvrpcpb::{GcRequest, KeyError};

use super::{LockWait, TxnClient, TxnError};

/// What a GC did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Regions collected.
    pub regions: u64,
    /// Keys looked at.
    pub keys: u64,
    /// Versions removed.
    pub versions: u64,
    /// Times a lock at or below the safe point held a region up (resolved, or waited on).
    pub locks: u64,
}

impl TxnClient {
    /// Collects every region at `safe_point` (see the module documentation).
    ///
    /// # Errors
    /// What the transport gave up with; a lock whose transaction stays alive past the lock
    /// wait ([`TxnError::Locked`]); a region that refused ([`TxnError::Aborted`]).
    pub async fn gc(&self, safe_point: u64) -> Result<GcStats, TxnError> {
        let mut stats = GcStats::default();
        // The encoded key whose region is collected next, and the user key to go on from there
        // (a call removes a bounded number of versions and says where to go on).
        let (mut located, mut start) = (Vec::new(), Vec::new());
        let mut wait = LockWait::new();
        loop {
            let req = GcRequest {
                safe_point,
                start_key: start.clone(),
                ..Default::default()
            };
            let (resp, region) = self.transport.gc(&located, req).await?;
            match resp.error {
                None => {
                    stats.keys += resp.keys;
                    stats.versions += resp.versions;
                    wait = LockWait::new();
                    if !resp.next_key.is_empty() {
                        located = codec::key::encode_bytes(&resp.next_key);
                        start = resp.next_key;
                        continue;
                    }
                    stats.regions += 1;
                    if region.end_key.is_empty() {
                        return Ok(stats);
                    }
                    located = region.end_key;
                    start = Vec::new();
                }
                Some(KeyError {
                    locked: Some(lock), ..
                }) => {
                    self.wait_out(&lock, &mut wait).await?;
                    stats.locks += 1;
                }
                Some(other) => {
                    return Err(TxnError::Aborted(format!(
                        "GC of region {} at {safe_point}: {other:?}",
                        region.id
                    )))
                }
            }
        }
    }
}
