//! `Scanner`: the user keys and their values visible at one timestamp, in key order.
//!
//! It walks the `write` CF (version keys, grouped by user key, newest first) and the `lock` CF
//! (raw user keys) side by side. A key locked by a transaction that may commit at or before the
//! scan's timestamp is reported as locked, whether or not it has committed versions: its value
//! is unknown until the lock is resolved. Deleted keys and keys with no version at the timestamp
//! are skipped.

use std::cmp::Ordering;

use crate::engine::Cf;
use crate::error::Result;
use crate::storage::{DbIterator, StorageReader};

use super::key::{append_ts, decode_bytes, encode_bytes, is_version_of, seek_past_versions};
use super::txn::{decode_lock_key, read_default};
use codec::record::{Lock, Write, WriteKind};

/// One key the scanner met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEntry {
    /// The key's value at the scan's timestamp.
    Value(Vec<u8>),
    /// The key is locked by a transaction that may commit at or before the scan's timestamp.
    Locked(Lock),
}

/// Iterates the visible user keys at `ts` from a start key, in order.
pub struct Scanner<'r> {
    reader: &'r dyn StorageReader,
    writes: Box<dyn DbIterator + 'r>,
    locks: Box<dyn DbIterator + 'r>,
    ts: u64,
}

impl<'r> Scanner<'r> {
    /// A scanner over `reader` at `ts`, starting at user key `start` (inclusive).
    pub fn new(reader: &'r dyn StorageReader, start: &[u8], ts: u64) -> Result<Scanner<'r>> {
        let mut writes = reader.iter_cf(Cf::Write)?;
        writes.seek(&encode_bytes(start));
        let mut locks = reader.iter_cf(Cf::Lock)?;
        locks.seek(&encode_bytes(start));
        Ok(Scanner {
            reader,
            writes,
            locks,
            ts,
        })
    }

    /// The next visible key and what the scanner found there; `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<(Vec<u8>, ScanEntry)>> {
        loop {
            let write_key = if self.writes.valid()? {
                Some(decode_bytes(self.writes.key())?.0)
            } else {
                None
            };
            let lock_key = if self.locks.valid()? {
                Some(decode_lock_key(self.locks.key())?)
            } else {
                None
            };
            let (key, has_lock, has_writes) = match (write_key, lock_key) {
                (None, None) => return Ok(None),
                (Some(w), None) => (w, false, true),
                (None, Some(l)) => (l, true, false),
                (Some(w), Some(l)) => match w.cmp(&l) {
                    Ordering::Less => (w, false, true),
                    Ordering::Greater => (l, true, false),
                    Ordering::Equal => (w, true, true),
                },
            };
            if has_lock {
                let lock = Lock::from_bytes(self.locks.value())?;
                self.locks.next();
                if lock.blocks_read_at(self.ts) {
                    if has_writes {
                        self.skip_versions(&encode_bytes(&key));
                    }
                    return Ok(Some((key, ScanEntry::Locked(lock))));
                }
            }
            if has_writes {
                if let Some(value) = self.visible_value(&key)? {
                    return Ok(Some((key, ScanEntry::Value(value))));
                }
            }
        }
    }

    /// The value of `key` at the scan's timestamp; leaves the write cursor past all of `key`'s
    /// versions.
    fn visible_value(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let prefix = encode_bytes(key);
        let mut seek = prefix.clone();
        append_ts(&mut seek, self.ts);
        self.writes.seek(&seek);
        let mut found = None;
        while self.writes.valid()? && is_version_of(self.writes.key(), &prefix) {
            let write = Write::from_bytes(self.writes.value())?;
            match write.kind {
                WriteKind::Put => {
                    found = Some(read_default(self.reader, key, write.start_ts)?);
                    break;
                }
                WriteKind::Delete => break,
                WriteKind::Rollback | WriteKind::Lock => self.writes.next(),
            }
        }
        self.skip_versions(&prefix);
        Ok(found)
    }

    fn skip_versions(&mut self, prefix: &[u8]) {
        self.writes.seek(&seek_past_versions(prefix));
    }
}

impl Iterator for Scanner<'_> {
    type Item = Result<(Vec<u8>, ScanEntry)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}
