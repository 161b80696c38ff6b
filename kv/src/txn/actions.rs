//! Per-key steps shared by several commands: prewrite, commit and roll back one key.

use proto::kvrpcpb::Mutation;

use crate::engine::Cf;
use crate::mvcc::key::encode_key;
use crate::mvcc::{Lock, LockKind, MvccTxn, Write, WriteKind};

use super::error::{Error, Result};

/// The parts of a prewrite request every key shares.
pub(crate) struct PrewriteParams<'a> {
    pub primary: &'a [u8],
    pub ttl: u64,
}

/// Locks `mutation.key` for the transaction and stages its value.
pub(crate) fn prewrite_key(
    txn: &mut MvccTxn,
    mutation: &Mutation,
    kind: LockKind,
    params: &PrewriteParams<'_>,
) -> Result<()> {
    let key = mutation.key.as_slice();
    let start_ts = txn.start_ts();
    if let Some((write, commit_ts)) = txn.most_recent_write(key)? {
        // Someone committed the key after we took our snapshot: writing it now would overwrite
        // a change we never saw (a lost update). This includes our own rollback record, which
        // sits exactly at start_ts and forbids a late prewrite after a rollback.
        if commit_ts >= start_ts {
            if write.start_ts == start_ts && write.kind != WriteKind::Rollback {
                // Our own commit: a duplicated prewrite arriving late has nothing left to do.
                return Ok(());
            }
            return Err(Error::WriteConflict {
                key: key.to_vec(),
                primary: params.primary.to_vec(),
                start_ts,
                conflict_ts: commit_ts,
            });
        }
    }
    if let Some(lock) = txn.get_lock(key)? {
        if lock.start_ts != start_ts {
            return Err(Error::Locked(lock.info(key)));
        }
        // Our own lock: a retried prewrite rewrites the same lock and value.
    }
    let lock = Lock::new(params.primary.to_vec(), kind, start_ts, params.ttl);
    txn.put_lock(key, &lock);
    match kind {
        LockKind::Put => txn.put_value(key, mutation.value.clone()),
        // A retry may turn an earlier put of the same transaction into a delete or a lock.
        LockKind::Delete | LockKind::Lock => txn.delete_value(key),
    }
    Ok(())
}

/// Commits the transaction's lock on `key` at `commit_ts`. Committing an already committed key
/// succeeds, so a retried commit is harmless.
pub(crate) fn commit_key(txn: &mut MvccTxn, key: &[u8], commit_ts: u64) -> Result<()> {
    let start_ts = txn.start_ts();
    match txn.get_lock(key)? {
        Some(lock) if lock.start_ts == start_ts => {
            let write = Write::new(lock.kind.write_kind(), start_ts);
            txn.put_write(key, commit_ts, &write);
            txn.delete_lock(key);
            Ok(())
        }
        // No lock of ours: either we already finished this key, or someone rolled us back.
        _ => match txn.current_write(key)? {
            Some((write, _)) if write.kind == WriteKind::Rollback => Err(Error::RolledBack {
                key: key.to_vec(),
                start_ts,
            }),
            Some(_) => Ok(()),
            None => Err(Error::LockNotFound {
                key: key.to_vec(),
                start_ts,
            }),
        },
    }
}

/// Rolls the transaction back on `key`: removes its lock and value, and leaves a rollback
/// record so that a prewrite arriving late cannot lock the key again. Rolling back twice
/// succeeds; rolling back a committed key is refused.
pub(crate) fn rollback_key(txn: &mut MvccTxn, key: &[u8]) -> Result<()> {
    let start_ts = txn.start_ts();
    match txn.get_lock(key)? {
        Some(lock) if lock.start_ts == start_ts => {
            // Our lock is still there, so this key cannot have been committed.
            txn.delete_lock(key);
            if lock.kind == LockKind::Put {
                txn.delete_value(key);
            }
            put_rollback(txn, key)
        }
        // No lock of ours (none, or another transaction's, which stays): the write records say
        // whether we already ended here.
        _ => match txn.current_write(key)? {
            Some((write, _)) if write.kind == WriteKind::Rollback => Ok(()),
            Some((_, commit_ts)) => Err(Error::Committed {
                key: key.to_vec(),
                start_ts,
                commit_ts,
            }),
            None => put_rollback(txn, key),
        },
    }
}

fn put_rollback(txn: &mut MvccTxn, key: &[u8]) -> Result<()> {
    let start_ts = txn.start_ts();
    // Another transaction may have committed this key at exactly our start_ts. Overwriting its
    // record would lose its write; leaving it is safe, because that commit already makes any
    // later prewrite of ours fail (its commit_ts is not older than our start_ts).
    if txn
        .reader()
        .get_cf(Cf::Write, &encode_key(key, start_ts))?
        .is_some()
    {
        return Ok(());
    }
    txn.put_write(key, start_ts, &Write::new(WriteKind::Rollback, start_ts));
    Ok(())
}
