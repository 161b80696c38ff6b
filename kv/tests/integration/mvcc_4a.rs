//! Stage 4A: `MvccTxn` and `Scanner` over the in-memory storage.

use kv::mvcc::{Lock, LockKind, MvccTxn, ScanEntry, Scanner, Write, WriteKind};
use kv::{Cf, Error, MemoryStorage, Modify, Storage};
use proto::kvrpcpb::Context;

fn ctx() -> Context {
    Context::default()
}

fn txn(s: &MemoryStorage, start_ts: u64) -> MvccTxn {
    MvccTxn::new(s.reader(&ctx()).unwrap(), start_ts)
}

fn apply(s: &MemoryStorage, t: MvccTxn) {
    s.write(&ctx(), t.into_writes()).unwrap();
}

/// A committed version: the value at `start_ts`, the write record at `commit_ts`.
fn commit(s: &MemoryStorage, key: &[u8], value: Option<&[u8]>, start_ts: u64, commit_ts: u64) {
    let mut t = txn(s, start_ts);
    let kind = match value {
        Some(v) => {
            t.put_value(key, v.to_vec());
            WriteKind::Put
        }
        None => WriteKind::Delete,
    };
    t.put_write(key, commit_ts, &Write::new(kind, start_ts));
    apply(s, t);
}

fn record(s: &MemoryStorage, key: &[u8], kind: WriteKind, start_ts: u64, commit_ts: u64) {
    let mut t = txn(s, start_ts);
    t.put_write(key, commit_ts, &Write::new(kind, start_ts));
    apply(s, t);
}

fn get(s: &MemoryStorage, key: &[u8], ts: u64) -> Option<Vec<u8>> {
    txn(s, ts).get_value(key).unwrap()
}

#[test]
fn lock_put_get_delete_4a() {
    let s = MemoryStorage::new();
    let lock = Lock::new(b"pri".to_vec(), LockKind::Put, 10, 3000);
    let mut t = txn(&s, 10);
    assert_eq!(t.get_lock(b"k").unwrap(), None);
    t.put_lock(b"k", &lock);
    // Buffered writes are not visible to the transaction's own reads, nor stored yet.
    assert_eq!(t.get_lock(b"k").unwrap(), None);
    assert!(s.is_empty());
    assert_eq!(t.writes().len(), 1);
    assert_eq!(t.writes()[0].cf(), Cf::Lock);
    // Stored under the encoded user key, so a region holds a key's lock with its versions.
    assert_eq!(t.writes()[0].key(), kv::mvcc::key::encode_bytes(b"k"));
    apply(&s, t);

    let mut t = txn(&s, 10);
    assert_eq!(t.get_lock(b"k").unwrap(), Some(lock));
    assert_eq!(t.get_lock(b"k\x00").unwrap(), None);
    t.delete_lock(b"k");
    assert_eq!(
        t.writes(),
        &[Modify::Delete {
            cf: Cf::Lock,
            key: kv::mvcc::key::encode_bytes(b"k")
        }]
    );
    apply(&s, t);
    assert_eq!(txn(&s, 10).get_lock(b"k").unwrap(), None);
    assert!(s.is_empty());
}

#[test]
fn get_value_sees_latest_committed_at_start_ts_4a() {
    let s = MemoryStorage::new();
    commit(&s, b"k", Some(b"v1"), 10, 20);
    commit(&s, b"k", Some(b"v2"), 30, 40);
    commit(&s, b"k", None, 50, 60);
    commit(&s, b"k", Some(b"v4"), 70, 80);
    let expect: &[(u64, Option<&[u8]>)] = &[
        (5, None),
        (19, None),
        (20, Some(b"v1")),
        (39, Some(b"v1")),
        (40, Some(b"v2")),
        (59, Some(b"v2")),
        (60, None),
        (79, None),
        (80, Some(b"v4")),
        (u64::MAX, Some(b"v4")),
    ];
    for (ts, want) in expect {
        assert_eq!(get(&s, b"k", *ts).as_deref(), *want, "at {ts}");
    }
    assert_eq!(get(&s, b"other", u64::MAX), None);
}

#[test]
fn get_value_skips_rollbacks_and_lock_records_4a() {
    let s = MemoryStorage::new();
    commit(&s, b"k", Some(b"old"), 1, 2);
    record(&s, b"k", WriteKind::Rollback, 5, 5);
    record(&s, b"k", WriteKind::Lock, 6, 7);
    assert_eq!(get(&s, b"k", 10).as_deref(), Some(&b"old"[..]));
    // A newer delete still hides the value behind it.
    commit(&s, b"k", None, 8, 9);
    assert_eq!(get(&s, b"k", 10), None);
    assert_eq!(get(&s, b"k", 8).as_deref(), Some(&b"old"[..]));
}

#[test]
fn empty_values_and_empty_keys_4a() {
    let s = MemoryStorage::new();
    commit(&s, b"k", Some(b""), 1, 2);
    assert_eq!(get(&s, b"k", 2), Some(Vec::new()));
    assert_eq!(get(&s, b"k", 1), None);
    commit(&s, b"", Some(b"empty key"), 3, 4);
    assert_eq!(get(&s, b"", 4).as_deref(), Some(&b"empty key"[..]));
    assert_eq!(get(&s, b"k", 4), Some(Vec::new()));
}

#[test]
fn keys_that_are_prefixes_of_each_other_4a() {
    let s = MemoryStorage::new();
    let keys: [&[u8]; 6] = [
        b"a",
        b"a\x00",
        b"a\x00\x00",
        b"ab",
        b"abcdefgh",
        b"abcdefghi",
    ];
    for (i, k) in keys.iter().enumerate() {
        let i = i as u64;
        // Interleave timestamps so that timestamp bytes would decide the order if the encoding
        // let the versions of two keys mix.
        commit(&s, k, Some(format!("old {i}").as_bytes()), 10 + i, 100 - i);
        commit(&s, k, Some(format!("new {i}").as_bytes()), 200 + i, 300 - i);
    }
    for (i, k) in keys.iter().enumerate() {
        let (old, new) = (
            format!("old {i}").into_bytes(),
            format!("new {i}").into_bytes(),
        );
        assert_eq!(get(&s, k, 150), Some(old), "{k:?}");
        assert_eq!(get(&s, k, 400), Some(new), "{k:?}");
        assert_eq!(get(&s, k, 50), None, "{k:?}");
        let t = txn(&s, 10 + i as u64);
        assert_eq!(
            t.current_write(k).unwrap().unwrap().1,
            100 - i as u64,
            "{k:?}"
        );
        assert_eq!(
            t.most_recent_write(k).unwrap().unwrap().1,
            300 - i as u64,
            "{k:?}"
        );
    }
    // A key nobody wrote, between and around the others, sees nothing.
    for k in [&b""[..], b"a\x01", b"abc", b"abcdefgh\x00"] {
        assert_eq!(get(&s, k, u64::MAX), None, "{k:?}");
        assert_eq!(txn(&s, 1).most_recent_write(k).unwrap(), None, "{k:?}");
    }
}

#[test]
fn current_write_finds_the_transactions_record_4a() {
    let s = MemoryStorage::new();
    commit(&s, b"k", Some(b"v1"), 10, 20);
    record(&s, b"k", WriteKind::Rollback, 25, 25);
    commit(&s, b"k", None, 30, 40);
    let at = |start| txn(&s, start).current_write(b"k").unwrap();
    assert_eq!(at(10), Some((Write::new(WriteKind::Put, 10), 20)));
    assert_eq!(at(25), Some((Write::new(WriteKind::Rollback, 25), 25)));
    assert_eq!(at(30), Some((Write::new(WriteKind::Delete, 30), 40)));
    assert_eq!(at(11), None);
    assert_eq!(at(50), None);
    assert_eq!(txn(&s, 10).current_write(b"other").unwrap(), None);
}

#[test]
fn most_recent_write_is_the_newest_of_any_txn_4a() {
    let s = MemoryStorage::new();
    let t = txn(&s, 1);
    assert_eq!(t.most_recent_write(b"k").unwrap(), None);
    commit(&s, b"k", Some(b"v"), 10, 20);
    record(&s, b"k", WriteKind::Rollback, 30, 30);
    // The transaction's own start_ts does not limit it.
    let t = txn(&s, 1);
    assert_eq!(
        t.most_recent_write(b"k").unwrap(),
        Some((Write::new(WriteKind::Rollback, 30), 30))
    );
}

#[test]
fn delete_value_removes_the_staged_value_4a() {
    let s = MemoryStorage::new();
    let mut t = txn(&s, 7);
    t.put_value(b"k", b"v".to_vec());
    apply(&s, t);
    assert_eq!(s.len(Cf::Default), 1);
    let mut t = txn(&s, 7);
    t.delete_value(b"k");
    apply(&s, t);
    assert!(s.is_empty());
}

#[test]
fn corrupt_records_are_errors_not_panics_4a() {
    let s = MemoryStorage::new();
    let raw = |cf, key: Vec<u8>, value: &[u8]| {
        s.write(
            &ctx(),
            vec![Modify::Put {
                cf,
                key,
                value: value.to_vec(),
            }],
        )
        .unwrap()
    };
    // Locks are stored under the encoded user key.
    raw(Cf::Lock, kv::mvcc::key::encode_bytes(b"k"), b"garbage");
    let e = txn(&s, 1).get_lock(b"k").unwrap_err();
    assert!(matches!(e, Error::Corrupt { what: "lock", .. }), "{e}");

    // A put record whose value is missing.
    record(&s, b"p", WriteKind::Put, 1, 2);
    let e = txn(&s, 5).get_value(b"p").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Corrupt {
                what: "mvcc value",
                ..
            }
        ),
        "{e}"
    );

    raw(Cf::Write, kv::mvcc::key::encode_key(b"w", 3), b"?");
    assert!(txn(&s, 5).get_value(b"w").is_err());
    assert!(txn(&s, 5).most_recent_write(b"w").is_err());
}

fn scan(s: &MemoryStorage, start: &[u8], ts: u64) -> Vec<(Vec<u8>, ScanEntry)> {
    let reader = s.reader(&ctx()).unwrap();
    let scanner = Scanner::new(reader.as_ref(), start, ts).unwrap();
    scanner.collect::<kv::Result<Vec<_>>>().unwrap()
}

fn value(v: &[u8]) -> ScanEntry {
    ScanEntry::Value(v.to_vec())
}

#[test]
fn scanner_lists_visible_values_in_key_order_4a() {
    let s = MemoryStorage::new();
    assert!(scan(&s, b"", 100).is_empty());
    commit(&s, b"b", Some(b"b1"), 1, 2);
    commit(&s, b"b", Some(b"b2"), 5, 6);
    commit(&s, b"a", Some(b""), 3, 4);
    commit(&s, b"a\x00", Some(b"a0"), 3, 4);
    commit(&s, b"c", Some(b"c1"), 1, 2);
    commit(&s, b"c", None, 7, 8);
    commit(&s, b"d", Some(b"late"), 20, 30);
    record(&s, b"e", WriteKind::Rollback, 3, 3);
    assert_eq!(
        scan(&s, b"", 10),
        vec![
            (b"a".to_vec(), value(b"")),
            (b"a\x00".to_vec(), value(b"a0")),
            (b"b".to_vec(), value(b"b2")),
        ]
    );
    assert_eq!(
        scan(&s, b"a\x00", 5),
        vec![
            (b"a\x00".to_vec(), value(b"a0")),
            (b"b".to_vec(), value(b"b1")),
            (b"c".to_vec(), value(b"c1")),
        ]
    );
    assert_eq!(scan(&s, b"c", 100), vec![(b"d".to_vec(), value(b"late"))]);
    assert!(scan(&s, b"d\x00", 100).is_empty());
}

#[test]
fn scanner_reports_blocking_locks_4a() {
    let s = MemoryStorage::new();
    commit(&s, b"a", Some(b"a1"), 1, 2);
    commit(&s, b"b", Some(b"b1"), 1, 2);
    let mut t = txn(&s, 10);
    let lock_b = Lock::new(b"b".to_vec(), LockKind::Put, 10, 100);
    let lock_c = Lock::new(b"b".to_vec(), LockKind::Delete, 10, 100);
    t.put_lock(b"b", &lock_b);
    t.put_value(b"b", b"b2".to_vec());
    // A key with a lock and no committed version at all.
    t.put_lock(b"c", &lock_c);
    // Lock-only locks and locks newer than the reader do not block it.
    t.put_lock(b"a", &Lock::new(b"b".to_vec(), LockKind::Lock, 10, 100));
    apply(&s, t);
    let mut t = txn(&s, 50);
    t.put_lock(b"d", &Lock::new(b"d".to_vec(), LockKind::Put, 50, 100));
    t.put_value(b"d", b"d".to_vec());
    apply(&s, t);

    assert_eq!(
        scan(&s, b"", 20),
        vec![
            (b"a".to_vec(), value(b"a1")),
            (b"b".to_vec(), ScanEntry::Locked(lock_b)),
            (b"c".to_vec(), ScanEntry::Locked(lock_c)),
        ]
    );
    // Before the locks' start, nothing blocks.
    assert_eq!(
        scan(&s, b"", 9),
        vec![(b"a".to_vec(), value(b"a1")), (b"b".to_vec(), value(b"b1"))]
    );
}
