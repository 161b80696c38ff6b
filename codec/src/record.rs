//! The values of the `lock` and `write` column families, and their compact binary encodings.
//!
//! ```text
//! write value = kind(1) start_ts(8, BE)                              exactly 9 bytes
//! lock value  = kind(1) start_ts(8, BE) ttl(8, BE) primary(rest)     at least 17 bytes
//! ```
//! The kinds are ASCII letters so a hex dump of a CF is readable. Decoding checks lengths and
//! kinds and reports [`Error::Corrupt`] rather than panicking: a stored value is input.

use proto::kvrpcpb::{LockInfo, Op};

use crate::ts::physical_ms;
use crate::{Error, Result};

fn corrupt(what: &'static str, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        what,
        reason: reason.into(),
    }
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(buf)
}

/// What a committed (or rolled back) version did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// A new value, stored in the `default` CF at `key@start_ts`.
    Put,
    /// The key was deleted.
    Delete,
    /// The transaction was rolled back; the record stops the transaction from committing later.
    Rollback,
    /// The key was only locked (a read-write conflict marker); its value did not change.
    Lock,
}

impl WriteKind {
    fn tag(self) -> u8 {
        match self {
            WriteKind::Put => b'P',
            WriteKind::Delete => b'D',
            WriteKind::Rollback => b'R',
            WriteKind::Lock => b'L',
        }
    }

    fn from_tag(tag: u8) -> Result<WriteKind> {
        Ok(match tag {
            b'P' => WriteKind::Put,
            b'D' => WriteKind::Delete,
            b'R' => WriteKind::Rollback,
            b'L' => WriteKind::Lock,
            other => return Err(corrupt("write record", format!("unknown kind {other:#x}"))),
        })
    }
}

/// A record of the `write` CF, stored at `key@commit_ts` (a rollback at `key@start_ts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    /// What the version did.
    pub kind: WriteKind,
    /// The start timestamp of the transaction that wrote it; the value lives at `key@start_ts`.
    pub start_ts: u64,
}

impl Write {
    /// A write record.
    pub fn new(kind: WriteKind, start_ts: u64) -> Write {
        Write { kind, start_ts }
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9);
        out.push(self.kind.tag());
        out.extend_from_slice(&self.start_ts.to_be_bytes());
        out
    }

    /// Parses the stored form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Write> {
        if bytes.len() != 9 {
            return Err(corrupt(
                "write record",
                format!("{} bytes, want 9", bytes.len()),
            ));
        }
        Ok(Write {
            kind: WriteKind::from_tag(bytes[0])?,
            start_ts: read_u64(&bytes[1..]),
        })
    }
}

/// What a prewritten key will become when its transaction commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// A new value, already stored in the `default` CF at `key@start_ts`.
    Put,
    /// A deletion.
    Delete,
    /// No change; the key is locked against concurrent writers only.
    Lock,
}

impl LockKind {
    /// The lock kind of a prewrite mutation; `None` for `Op::Rollback`, which is not a prewrite.
    pub fn from_op(op: Op) -> Option<LockKind> {
        match op {
            Op::Put => Some(LockKind::Put),
            Op::Del => Some(LockKind::Delete),
            Op::Lock => Some(LockKind::Lock),
            Op::Rollback => None,
        }
    }

    /// The write kind a commit of this lock records.
    pub fn write_kind(self) -> WriteKind {
        match self {
            LockKind::Put => WriteKind::Put,
            LockKind::Delete => WriteKind::Delete,
            LockKind::Lock => WriteKind::Lock,
        }
    }

    fn tag(self) -> u8 {
        match self {
            LockKind::Put => b'P',
            LockKind::Delete => b'D',
            LockKind::Lock => b'L',
        }
    }

    fn from_tag(tag: u8) -> Result<LockKind> {
        Ok(match tag {
            b'P' => LockKind::Put,
            b'D' => LockKind::Delete,
            b'L' => LockKind::Lock,
            other => return Err(corrupt("lock", format!("unknown kind {other:#x}"))),
        })
    }
}

/// A record of the `lock` CF, stored at the raw user key: the key is prewritten by a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    /// The transaction's primary key, whose lock decides the fate of the whole transaction.
    pub primary: Vec<u8>,
    /// What the key becomes on commit.
    pub kind: LockKind,
    /// The transaction's start timestamp.
    pub start_ts: u64,
    /// Milliseconds after `start_ts`'s physical time at which the lock may be rolled back.
    pub ttl: u64,
}

const LOCK_HEADER: usize = 1 + 8 + 8;

impl Lock {
    /// A lock.
    pub fn new(primary: Vec<u8>, kind: LockKind, start_ts: u64, ttl: u64) -> Lock {
        Lock {
            primary,
            kind,
            start_ts,
            ttl,
        }
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LOCK_HEADER + self.primary.len());
        out.push(self.kind.tag());
        out.extend_from_slice(&self.start_ts.to_be_bytes());
        out.extend_from_slice(&self.ttl.to_be_bytes());
        out.extend_from_slice(&self.primary);
        out
    }

    /// Parses the stored form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Lock> {
        if bytes.len() < LOCK_HEADER {
            return Err(corrupt(
                "lock",
                format!("{} bytes, want at least {LOCK_HEADER}", bytes.len()),
            ));
        }
        Ok(Lock {
            kind: LockKind::from_tag(bytes[0])?,
            start_ts: read_u64(&bytes[1..9]),
            ttl: read_u64(&bytes[9..17]),
            primary: bytes[LOCK_HEADER..].to_vec(),
        })
    }

    /// Whether the lock stops a reader at `ts`: only a lock that may still commit at or before
    /// `ts` can hide a value the reader should see. A lock taken after `ts` commits after `ts`,
    /// and a `Lock`-kind lock changes no value, so neither blocks.
    pub fn blocks_read_at(&self, ts: u64) -> bool {
        self.start_ts <= ts && self.kind != LockKind::Lock
    }

    /// Whether the lock's TTL has run out at `current_ts`, comparing physical milliseconds.
    pub fn is_expired(&self, current_ts: u64) -> bool {
        let start = physical_ms(self.start_ts);
        physical_ms(current_ts) >= start.saturating_add(self.ttl)
    }

    /// The lock as reported to clients for `key`.
    pub fn info(&self, key: &[u8]) -> LockInfo {
        LockInfo {
            primary_lock: self.primary.clone(),
            lock_version: self.start_ts,
            key: key.to_vec(),
            lock_ttl: self.ttl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::compose_ts;

    #[test]
    fn write_roundtrip_4a() {
        for kind in [
            WriteKind::Put,
            WriteKind::Delete,
            WriteKind::Rollback,
            WriteKind::Lock,
        ] {
            for ts in [0, 1, 99, u64::MAX] {
                let w = Write::new(kind, ts);
                let bytes = w.to_bytes();
                assert_eq!(bytes.len(), 9);
                assert_eq!(Write::from_bytes(&bytes).unwrap(), w);
            }
        }
    }

    #[test]
    fn lock_roundtrip_4a() {
        for kind in [LockKind::Put, LockKind::Delete, LockKind::Lock] {
            for primary in [&b""[..], b"p", b"a much longer primary key \x00\xff"] {
                let l = Lock::new(primary.to_vec(), kind, 77, 3000);
                assert_eq!(Lock::from_bytes(&l.to_bytes()).unwrap(), l);
            }
        }
    }

    #[test]
    fn corrupt_records_are_errors_4a() {
        assert!(Write::from_bytes(b"").is_err());
        assert!(Write::from_bytes(b"P1234567").is_err());
        assert!(Write::from_bytes(b"P123456789").is_err());
        assert!(Write::from_bytes(b"X12345678").is_err());
        assert!(Lock::from_bytes(&b"P1234567812345678"[..16]).is_err());
        assert!(Lock::from_bytes(b"R1234567812345678").is_err());
        assert!(Lock::from_bytes(b"P1234567812345678").is_ok());
    }

    #[test]
    fn lock_visibility_and_expiry_4a() {
        let l = Lock::new(b"p".to_vec(), LockKind::Put, compose_ts(1000, 5), 100);
        assert!(l.blocks_read_at(compose_ts(1000, 5)));
        assert!(l.blocks_read_at(compose_ts(2000, 0)));
        assert!(!l.blocks_read_at(compose_ts(1000, 4)));
        let pessimistic = Lock::new(b"p".to_vec(), LockKind::Lock, 1, 100);
        assert!(!pessimistic.blocks_read_at(10));

        assert!(!l.is_expired(compose_ts(1099, 0)));
        assert!(l.is_expired(compose_ts(1100, 0)));
        assert!(l.is_expired(compose_ts(5000, 0)));
        let forever = Lock::new(b"p".to_vec(), LockKind::Put, compose_ts(1000, 0), u64::MAX);
        assert!(!forever.is_expired(u64::MAX));
        let info = l.info(b"k");
        assert_eq!(
            (
                info.key,
                info.primary_lock,
                info.lock_version,
                info.lock_ttl
            ),
            (b"k".to_vec(), b"p".to_vec(), l.start_ts, 100)
        );
    }
}
