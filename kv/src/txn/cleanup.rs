//! The commands that end transactions left behind by their clients: `KvCheckTxnStatus`,
//! `KvBatchRollback` and `KvResolveLock`.
//!
//! A client that meets a lock cannot tell whether the owner is slow or dead. It asks the
//! primary key, whose lock (or write record) is the single source of truth for the transaction:
//! still locked and alive, committed at some timestamp, or rolled back. A lock whose TTL has run
//! out is rolled back on the spot, which settles the question for good: the owner's commit of
//! the primary will then fail. The client then resolves the secondary locks accordingly.

use proto::kvrpcpb::{
    Action, BatchRollbackRequest, BatchRollbackResponse, CheckTxnStatusRequest,
    CheckTxnStatusResponse, ResolveLockRequest, ResolveLockResponse,
};

use crate::engine::Cf;
use crate::mvcc::{decode_lock_key, Lock, MvccTxn, WriteKind};
use crate::storage::Storage;

use super::actions::{commit_key, rollback_key};
use super::error::{Error, Result};
use super::{unique_keys, Settled, TxnApi};

impl<S: Storage> TxnApi<S> {
    /// `KvCheckTxnStatus`: the state of the transaction at `lock_ts`, judged on its primary key
    /// at `current_ts`. Rolls back an expired primary lock, and writes a rollback record when
    /// the primary has neither lock nor write, so that a prewrite arriving later fails.
    pub fn check_txn_status(&self, req: &CheckTxnStatusRequest) -> Result<CheckTxnStatusResponse> {
        let out = Settled::settle(self.try_check_txn_status(req))?;
        if let Some(ke) = out.key_error {
            // The response has no key error field: such an outcome can only fail the RPC.
            return Err(Error::InvalidArgument(format!(
                "cannot check the status of the transaction at {}: {ke:?}",
                req.lock_ts
            )));
        }
        let mut resp = out.value;
        resp.region_error = out.region_error;
        Ok(resp)
    }

    fn try_check_txn_status(&self, req: &CheckTxnStatusRequest) -> Result<CheckTxnStatusResponse> {
        let ctx = req.context.unwrap_or_default();
        let key = req.primary_key.as_slice();
        let guard = self.latches.acquire([key]);
        let mut txn = MvccTxn::new(self.storage.reader(&ctx)?, req.lock_ts);
        let mut resp = CheckTxnStatusResponse::default();
        match txn.get_lock(key)? {
            Some(lock) if lock.start_ts == req.lock_ts => {
                if lock.is_expired(req.current_ts) {
                    rollback_key(&mut txn, key)?;
                    resp.set_action(Action::TtlExpireRollback);
                } else {
                    resp.lock_ttl = lock.ttl;
                }
            }
            _ => match txn.current_write(key)? {
                Some((write, _)) if write.kind == WriteKind::Rollback => {}
                Some((_, commit_ts)) => resp.commit_version = commit_ts,
                None => {
                    rollback_key(&mut txn, key)?;
                    resp.set_action(Action::LockNotExistRollback);
                }
            },
        }
        self.write(&ctx, &guard, txn.into_writes())?;
        Ok(resp)
    }

    /// `KvBatchRollback`: rolls the transaction at `start_version` back on every key. Keys
    /// already rolled back are fine; keys never prewritten get a rollback record; a committed
    /// key fails the whole request with an abort error and nothing is written.
    pub fn batch_rollback(&self, req: &BatchRollbackRequest) -> Result<BatchRollbackResponse> {
        let out = Settled::settle(self.try_batch_rollback(req))?;
        Ok(BatchRollbackResponse {
            region_error: out.region_error,
            error: out.key_error,
        })
    }

    fn try_batch_rollback(&self, req: &BatchRollbackRequest) -> Result<()> {
        let ctx = req.context.unwrap_or_default();
        let keys = unique_keys(&req.keys);
        let guard = self.latches.acquire(keys.iter().map(Vec::as_slice));
        let mut txn = MvccTxn::new(self.storage.reader(&ctx)?, req.start_version);
        for key in &keys {
            rollback_key(&mut txn, key)?;
        }
        self.write(&ctx, &guard, txn.into_writes())
    }

    /// `KvResolveLock`: commits (at `commit_version`) or, when it is 0, rolls back every key
    /// still locked by the transaction at `start_version`.
    pub fn resolve_lock(&self, req: &ResolveLockRequest) -> Result<ResolveLockResponse> {
        let out = Settled::settle(self.try_resolve_lock(req))?;
        Ok(ResolveLockResponse {
            region_error: out.region_error,
            error: out.key_error,
        })
    }

    fn try_resolve_lock(&self, req: &ResolveLockRequest) -> Result<()> {
        let (start_ts, commit_ts) = (req.start_version, req.commit_version);
        if commit_ts != 0 && commit_ts <= start_ts {
            return Err(Error::InvalidArgument(format!(
                "commit_version {commit_ts} is not after start_version {start_ts}"
            )));
        }
        let ctx = req.context.unwrap_or_default();
        let keys = self.locked_keys(&ctx, start_ts)?;
        if keys.is_empty() {
            return Ok(());
        }
        let guard = self.latches.acquire(keys.iter().map(Vec::as_slice));
        // A fresh snapshot, taken under the latches: the locks found above may have been
        // resolved by someone else meanwhile, which commit_key and rollback_key account for.
        let mut txn = MvccTxn::new(self.storage.reader(&ctx)?, start_ts);
        for key in &keys {
            if commit_ts == 0 {
                rollback_key(&mut txn, key)?;
            } else {
                commit_key(&mut txn, key, commit_ts)?;
            }
        }
        self.write(&ctx, &guard, txn.into_writes())
    }

    /// Every key locked by the transaction at `start_ts`, in key order.
    fn locked_keys(&self, ctx: &proto::kvrpcpb::Context, start_ts: u64) -> Result<Vec<Vec<u8>>> {
        let reader = self.storage.reader(ctx)?;
        let mut it = reader.iter_cf(Cf::Lock)?;
        it.seek(b"");
        let mut keys = Vec::new();
        while it.valid()? {
            if Lock::from_bytes(it.value())?.start_ts == start_ts {
                keys.push(decode_lock_key(it.key())?);
            }
            it.next();
        }
        Ok(unique_keys(&keys))
    }
}
