//! `MvccTxn`: reads MVCC records from one snapshot and buffers the writes of one command.
//!
//! Reads never see the buffered writes: a command reads the state it started from and decides
//! what to write, and the writes are applied as one atomic batch afterwards. Commands that touch
//! a key twice (duplicate keys in a request) must therefore de-duplicate their keys first.

use crate::engine::Cf;
use crate::error::{Error, Result};
use crate::storage::{Modify, StorageReader};

use super::key::{decode_bytes, decode_key, decode_ts, encode_bytes, encode_key, is_version_of};
use codec::record::{Lock, Write, WriteKind};

/// A transaction's view of the MVCC records: a snapshot reader, a start timestamp, and the
/// writes buffered so far.
pub struct MvccTxn {
    reader: Box<dyn StorageReader>,
    start_ts: u64,
    writes: Vec<Modify>,
}

impl MvccTxn {
    /// A transaction at `start_ts` reading from `reader`.
    pub fn new(reader: Box<dyn StorageReader>, start_ts: u64) -> MvccTxn {
        MvccTxn {
            reader,
            start_ts,
            writes: Vec::new(),
        }
    }

    /// The transaction's start timestamp.
    pub fn start_ts(&self) -> u64 {
        self.start_ts
    }

    /// The snapshot the transaction reads from.
    pub fn reader(&self) -> &dyn StorageReader {
        self.reader.as_ref()
    }

    /// The writes buffered so far, in order.
    pub fn writes(&self) -> &[Modify] {
        &self.writes
    }

    /// Takes the buffered writes, to apply them as one batch.
    pub fn into_writes(self) -> Vec<Modify> {
        self.writes
    }

    /// Buffers a lock on `key` (stored under the encoded key, next to its versions).
    pub fn put_lock(&mut self, key: &[u8], lock: &Lock) {
        self.writes.push(Modify::Put {
            cf: Cf::Lock,
            key: encode_bytes(key),
            value: lock.to_bytes(),
        });
    }

    /// Buffers the removal of the lock on `key`.
    pub fn delete_lock(&mut self, key: &[u8]) {
        self.writes.push(Modify::Delete {
            cf: Cf::Lock,
            key: encode_bytes(key),
        });
    }

    /// Buffers `value` as the version of `key` at this transaction's start timestamp.
    pub fn put_value(&mut self, key: &[u8], value: Vec<u8>) {
        self.writes.push(Modify::Put {
            cf: Cf::Default,
            key: encode_key(key, self.start_ts),
            value,
        });
    }

    /// Buffers the removal of this transaction's version of `key` (used on rollback).
    pub fn delete_value(&mut self, key: &[u8]) {
        self.writes.push(Modify::Delete {
            cf: Cf::Default,
            key: encode_key(key, self.start_ts),
        });
    }

    /// Buffers a write record for `key` at `commit_ts`.
    pub fn put_write(&mut self, key: &[u8], commit_ts: u64, write: &Write) {
        self.writes.push(Modify::Put {
            cf: Cf::Write,
            key: encode_key(key, commit_ts),
            value: write.to_bytes(),
        });
    }

    /// The lock on `key`, if any, as of the snapshot.
    pub fn get_lock(&self, key: &[u8]) -> Result<Option<Lock>> {
        get_lock(self.reader.as_ref(), key)
    }

    /// The value of `key` visible at the start timestamp: that of the newest `Put` or `Delete`
    /// committed at or before it. Locks are not checked here; callers decide what a lock means.
    pub fn get_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        get_value(self.reader.as_ref(), key, self.start_ts)
    }

    /// The write record of this transaction on `key` and its commit timestamp, if the
    /// transaction was committed or rolled back there.
    pub fn current_write(&self, key: &[u8]) -> Result<Option<(Write, u64)>> {
        let prefix = encode_bytes(key);
        let mut it = self.reader.iter_cf(Cf::Write)?;
        it.seek(&prefix);
        while it.valid()? && is_version_of(it.key(), &prefix) {
            let commit_ts = decode_ts(it.key())?;
            // Versions come newest first, and a transaction's record is never older than its
            // start (a rollback sits exactly at it): nothing further down can be ours.
            if commit_ts < self.start_ts {
                break;
            }
            let write = Write::from_bytes(it.value())?;
            if write.start_ts == self.start_ts {
                return Ok(Some((write, commit_ts)));
            }
            it.next();
        }
        Ok(None)
    }

    /// The newest write record on `key`, whatever its transaction, and its commit timestamp.
    pub fn most_recent_write(&self, key: &[u8]) -> Result<Option<(Write, u64)>> {
        let prefix = encode_bytes(key);
        let mut it = self.reader.iter_cf(Cf::Write)?;
        it.seek(&prefix);
        if it.valid()? && is_version_of(it.key(), &prefix) {
            let commit_ts = decode_ts(it.key())?;
            return Ok(Some((Write::from_bytes(it.value())?, commit_ts)));
        }
        Ok(None)
    }
}

/// The user key a buffered write belongs to: lock keys are encoded user keys, version keys
/// encoded user keys with a timestamp.
pub fn user_key_of(modify: &Modify) -> Result<Vec<u8>> {
    match modify.cf() {
        Cf::Lock => decode_lock_key(modify.key()),
        Cf::Default | Cf::Write => Ok(decode_key(modify.key()).map(|(key, _)| key)?),
    }
}

/// The user key of a lock CF key.
pub fn decode_lock_key(stored: &[u8]) -> Result<Vec<u8>> {
    let (key, rest) = decode_bytes(stored)?;
    if !rest.is_empty() {
        return Err(Error::Corrupt {
            what: "lock key",
            reason: format!("{} bytes after the encoded key", rest.len()),
        });
    }
    Ok(key)
}

/// The lock on `key` in `reader`, if any.
pub fn get_lock(reader: &dyn StorageReader, key: &[u8]) -> Result<Option<Lock>> {
    reader
        .get_cf(Cf::Lock, &encode_bytes(key))?
        .map(|bytes| Lock::from_bytes(&bytes).map_err(Into::into))
        .transpose()
}

/// The value of `key` visible at `ts` in `reader`, ignoring locks.
pub fn get_value(reader: &dyn StorageReader, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>> {
    let prefix = encode_bytes(key);
    let mut it = reader.iter_cf(Cf::Write)?;
    it.seek(&encode_key(key, ts));
    while it.valid()? && is_version_of(it.key(), &prefix) {
        let write = Write::from_bytes(it.value())?;
        match write.kind {
            WriteKind::Put => return read_default(reader, key, write.start_ts).map(Some),
            WriteKind::Delete => return Ok(None),
            // Neither changed the key's value: look at the version before.
            WriteKind::Rollback | WriteKind::Lock => it.next(),
        }
    }
    Ok(None)
}

/// The value a committed `Put` of the transaction at `start_ts` stored for `key`.
pub(crate) fn read_default(
    reader: &dyn StorageReader,
    key: &[u8],
    start_ts: u64,
) -> Result<Vec<u8>> {
    reader
        .get_cf(Cf::Default, &encode_key(key, start_ts))?
        .ok_or_else(|| Error::Corrupt {
            what: "mvcc value",
            reason: format!("committed put of {key:?} at start_ts {start_ts} has no value"),
        })
}
