//! Stage 4B: `KvGet`, `KvPrewrite` and `KvCommit` through the command layer, over the in-memory
//! storage.

use kv::mvcc::{Lock, LockKind, Write, WriteKind};
use kv::txn::testkit::{PrewriteRequestExt, TxnFixture};
use kv::Cf;
use proto::kvrpcpb::{CommitResponse, GetResponse, KeyError, PrewriteRequest, PrewriteResponse};

fn fixture() -> TxnFixture {
    TxnFixture::default()
}

fn get(f: &TxnFixture, key: &[u8], ts: u64) -> GetResponse {
    f.api.get(&f.req.get(key, ts)).unwrap()
}

fn must_get(f: &TxnFixture, key: &[u8], ts: u64) -> Option<Vec<u8>> {
    let r = get(f, key, ts);
    assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
    if r.not_found {
        assert!(r.value.is_empty());
        None
    } else {
        Some(r.value)
    }
}

fn prewrite(f: &TxnFixture, req: PrewriteRequest) -> PrewriteResponse {
    f.api.prewrite(&req).unwrap()
}

fn commit(f: &TxnFixture, start: u64, commit_ts: u64, keys: &[&[u8]]) -> CommitResponse {
    f.api.commit(&f.req.commit(start, commit_ts, keys)).unwrap()
}

fn must_ok(r: CommitResponse) {
    assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
}

fn put_lock(start: u64) -> Lock {
    Lock::new(b"pri".to_vec(), LockKind::Put, start, 3000)
}

// ---- KvGet ----

#[test]
fn get_value_4b() {
    let f = fixture();
    f.must_put_committed(b"k", b"v", 10, 20);
    assert_eq!(must_get(&f, b"k", 30).as_deref(), Some(&b"v"[..]));
}

#[test]
fn get_value_at_ts_4b() {
    let f = fixture();
    f.must_put_committed(b"k", b"v1", 10, 20);
    f.must_put_committed(b"k", b"v2", 30, 40);
    assert_eq!(must_get(&f, b"k", 19), None);
    assert_eq!(must_get(&f, b"k", 20).as_deref(), Some(&b"v1"[..]));
    assert_eq!(must_get(&f, b"k", 39).as_deref(), Some(&b"v1"[..]));
    assert_eq!(must_get(&f, b"k", 40).as_deref(), Some(&b"v2"[..]));
}

#[test]
fn get_empty_4b() {
    let f = fixture();
    let r = get(&f, b"k", 100);
    assert!(
        r.not_found && r.value.is_empty() && r.error.is_none(),
        "{r:?}"
    );
    // An empty value is a value, not a missing key.
    f.must_put_committed(b"e", b"", 1, 2);
    let r = get(&f, b"e", 100);
    assert!(!r.not_found && r.value.is_empty(), "{r:?}");
}

#[test]
fn get_none_4b() {
    let f = fixture();
    f.must_put_committed(b"a", b"va", 10, 20);
    f.must_put_committed(b"c", b"vc", 10, 20);
    // Neighbours and prefixes of stored keys are not found.
    for k in [&b"b"[..], b"a\x00", b"", b"cc"] {
        assert_eq!(must_get(&f, k, 100), None, "{k:?}");
    }
}

#[test]
fn get_versions_4b() {
    let f = fixture();
    for i in 0..10u64 {
        f.must_put_committed(b"k", format!("v{i}").as_bytes(), 10 * i + 1, 10 * i + 5);
    }
    for i in 0..10u64 {
        let want = format!("v{i}").into_bytes();
        assert_eq!(must_get(&f, b"k", 10 * i + 5), Some(want.clone()));
        assert_eq!(must_get(&f, b"k", 10 * i + 14), Some(want));
    }
    assert_eq!(must_get(&f, b"k", 4), None);
}

#[test]
fn get_deleted_4b() {
    let f = fixture();
    f.must_put_committed(b"k", b"v", 10, 20);
    f.must_put_write(b"k", WriteKind::Delete, 30, 40);
    assert_eq!(must_get(&f, b"k", 35).as_deref(), Some(&b"v"[..]));
    assert_eq!(must_get(&f, b"k", 40), None);
    f.must_put_committed(b"k", b"again", 50, 60);
    assert_eq!(must_get(&f, b"k", 60).as_deref(), Some(&b"again"[..]));
}

#[test]
fn get_locked_4b() {
    let f = fixture();
    f.must_put_committed(b"k", b"v", 10, 20);
    f.must_put_lock(b"k", &put_lock(30), b"new");
    // A reader after the lock's start must wait for it...
    let r = get(&f, b"k", 35);
    let locked = r.error.and_then(|e| e.locked).expect("locked");
    assert_eq!(
        (
            locked.key,
            locked.primary_lock,
            locked.lock_version,
            locked.lock_ttl
        ),
        (b"k".to_vec(), b"pri".to_vec(), 30, 3000)
    );
    assert!(r.value.is_empty() && !r.not_found);
    // ...one at exactly the lock's start too, since the commit may still be at start...
    assert!(get(&f, b"k", 30).error.is_some());
    // ...but one before it reads the older version.
    assert_eq!(must_get(&f, b"k", 25).as_deref(), Some(&b"v"[..]));
    // A lock-only lock does not hide anything.
    let lock_only = Lock::new(b"pri".to_vec(), LockKind::Lock, 30, 3000);
    f.must_put_lock(b"l", &lock_only, b"");
    assert_eq!(must_get(&f, b"l", 35), None);
}

// ---- KvPrewrite ----

fn no_errors(r: &PrewriteResponse) {
    assert!(r.errors.is_empty() && r.region_error.is_none(), "{r:?}");
}

#[test]
fn prewrite_empty_4b() {
    let f = fixture();
    no_errors(&prewrite(&f, f.req.prewrite(10, b"k", 100)));
    assert!(f.api.storage().is_empty());
}

#[test]
fn prewrite_single_4b() {
    let f = fixture();
    no_errors(&prewrite(&f, f.req.prewrite(10, b"k", 100).put(b"k", b"v")));
    assert_eq!(
        f.lock(b"k"),
        Some(Lock::new(b"k".to_vec(), LockKind::Put, 10, 100))
    );
    assert_eq!(f.value_at(b"k", 10).as_deref(), Some(&b"v"[..]));
    assert!(f.dump(Cf::Write).is_empty());
    // Not visible until committed: readers after start_ts are blocked, readers before see nothing.
    assert!(get(&f, b"k", 11).error.is_some());
    assert_eq!(must_get(&f, b"k", 9), None);
}

#[test]
fn prewrite_locked_4b() {
    let f = fixture();
    f.must_put_lock(b"k", &put_lock(5), b"mine");
    let r = prewrite(
        &f,
        f.req
            .prewrite(10, b"k", 100)
            .put(b"k", b"v")
            .put(b"free", b"x"),
    );
    assert_eq!(r.errors.len(), 1, "{r:?}");
    let locked = r.errors[0].locked.clone().expect("locked");
    assert_eq!((locked.key, locked.lock_version), (b"k".to_vec(), 5));
    // Nothing was written, not even for the free key.
    assert_eq!(f.lock(b"k"), Some(put_lock(5)));
    assert_eq!(f.lock(b"free"), None);
    assert_eq!(f.value_at(b"k", 10), None);
    // A lock from a younger transaction blocks an older one as well.
    let r = prewrite(&f, f.req.prewrite(3, b"k", 100).put(b"k", b"v"));
    assert!(r.errors[0].locked.is_some(), "{r:?}");
}

#[test]
fn prewrite_written_conflict_4b() {
    let f = fixture();
    f.must_put_committed(b"k", b"v", 5, 15);
    for start in [10, 15] {
        let r = prewrite(&f, f.req.prewrite(start, b"pri", 100).put(b"k", b"x"));
        assert_eq!(r.errors.len(), 1);
        let c = r.errors[0].conflict.clone().expect("conflict");
        assert_eq!(
            (c.key, c.start_ts, c.conflict_ts, c.primary),
            (b"k".to_vec(), start, 15, b"pri".to_vec())
        );
        assert_eq!(f.lock(b"k"), None);
    }
    // A rollback record also conflicts: a rolled-back transaction cannot prewrite again.
    f.must_put_write(b"r", WriteKind::Rollback, 20, 20);
    let r = prewrite(&f, f.req.prewrite(20, b"r", 100).put(b"r", b"x"));
    assert!(r.errors[0].conflict.is_some(), "{r:?}");
}

#[test]
fn prewrite_written_no_conflict_4b() {
    let f = fixture();
    f.must_put_committed(b"k", b"v", 5, 15);
    no_errors(&prewrite(&f, f.req.prewrite(16, b"k", 100).put(b"k", b"x")));
    assert_eq!(f.lock(b"k").map(|l| l.start_ts), Some(16));
    assert_eq!(f.value_at(b"k", 16).as_deref(), Some(&b"x"[..]));
    assert_eq!(must_get(&f, b"k", 15).as_deref(), Some(&b"v"[..]));
}

#[test]
fn prewrite_multiple_4b() {
    let f = fixture();
    f.must_put_lock(b"b", &put_lock(5), b"");
    f.must_put_committed(b"d", b"v", 20, 30);
    let req = f
        .req
        .prewrite(25, b"a", 100)
        .put(b"a", b"1")
        .put(b"b", b"2")
        .delete(b"c")
        .put(b"d", b"4");
    let r = prewrite(&f, req);
    // Every failing key is reported, each with its own reason.
    assert_eq!(r.errors.len(), 2, "{r:?}");
    assert!(r
        .errors
        .iter()
        .any(|e| e.locked.as_ref().is_some_and(|l| l.key == b"b")));
    assert!(r
        .errors
        .iter()
        .any(|e| e.conflict.as_ref().is_some_and(|c| c.key == b"d")));
    assert_eq!(f.dump(Cf::Lock).len(), 1);

    let req = f
        .req
        .prewrite(40, b"a", 77)
        .put(b"a", b"1")
        .delete(b"c")
        .lock(b"d")
        .put(b"e", b"");
    no_errors(&prewrite(&f, req));
    let kinds: Vec<_> = [&b"a"[..], b"c", b"d", b"e"]
        .iter()
        .map(|k| f.lock(k).unwrap().kind)
        .collect();
    assert_eq!(
        kinds,
        [
            LockKind::Put,
            LockKind::Delete,
            LockKind::Lock,
            LockKind::Put
        ]
    );
    assert!(f
        .dump(Cf::Lock)
        .iter()
        .all(|(_, _, v)| Lock::from_bytes(v).is_ok()));
    assert_eq!(f.value_at(b"e", 40), Some(Vec::new()));
    assert_eq!(f.value_at(b"c", 40), None);
}

#[test]
fn prewrite_overwrite_4b() {
    let f = fixture();
    no_errors(&prewrite(
        &f,
        f.req.prewrite(10, b"k", 100).put(b"k", b"first"),
    ));
    // A retried prewrite of the same transaction is accepted and rewrites lock and value.
    no_errors(&prewrite(
        &f,
        f.req.prewrite(10, b"k", 200).put(b"k", b"second"),
    ));
    assert_eq!(f.lock(b"k").map(|l| l.ttl), Some(200));
    assert_eq!(f.value_at(b"k", 10).as_deref(), Some(&b"second"[..]));
    no_errors(&prewrite(&f, f.req.prewrite(10, b"k", 200).delete(b"k")));
    assert_eq!(f.lock(b"k").map(|l| l.kind), Some(LockKind::Delete));
    assert_eq!(f.value_at(b"k", 10), None);
    must_ok(commit(&f, 10, 20, &[b"k"]));
    // A duplicate prewrite arriving after the commit changes nothing.
    no_errors(&prewrite(
        &f,
        f.req.prewrite(10, b"k", 200).put(b"k", b"late"),
    ));
    assert_eq!(f.lock(b"k"), None);
    assert_eq!(must_get(&f, b"k", 30), None);
}

#[test]
fn prewrite_rejects_rollback_op_4b() {
    let f = fixture();
    let mut req = f.req.prewrite(10, b"k", 100).put(b"k", b"v");
    req.mutations[0].op = proto::kvrpcpb::Op::Rollback as i32;
    assert!(matches!(
        f.api.prewrite(&req),
        Err(kv::txn::Error::InvalidArgument(_))
    ));
    req.mutations[0].op = 42;
    assert!(f.api.prewrite(&req).is_err());
    assert!(f.api.storage().is_empty());
}

// ---- KvCommit ----

fn key_error(r: CommitResponse) -> KeyError {
    r.error.expect("a key error")
}

#[test]
fn commit_empty_4b() {
    let f = fixture();
    must_ok(commit(&f, 10, 20, &[]));
    assert!(f.api.storage().is_empty());
}

#[test]
fn commit_single_4b() {
    let f = fixture();
    no_errors(&prewrite(&f, f.req.prewrite(10, b"k", 100).put(b"k", b"v")));
    must_ok(commit(&f, 10, 20, &[b"k"]));
    assert_eq!(f.lock(b"k"), None);
    assert_eq!(f.write_at(b"k", 20), Some(Write::new(WriteKind::Put, 10)));
    assert_eq!(must_get(&f, b"k", 20).as_deref(), Some(&b"v"[..]));
    assert_eq!(must_get(&f, b"k", 19), None);
}

#[test]
fn commit_overwrite_4b() {
    let f = fixture();
    f.must_put_committed(b"k", b"old", 1, 5);
    no_errors(&prewrite(
        &f,
        f.req.prewrite(10, b"k", 100).put(b"k", b"new"),
    ));
    must_ok(commit(&f, 10, 20, &[b"k"]));
    assert_eq!(must_get(&f, b"k", 15).as_deref(), Some(&b"old"[..]));
    assert_eq!(must_get(&f, b"k", 25).as_deref(), Some(&b"new"[..]));
    assert_eq!(f.dump(Cf::Write).len(), 2);
}

#[test]
fn commit_multiple_keys_4b() {
    let f = fixture();
    let req = f
        .req
        .prewrite(10, b"a", 100)
        .put(b"a", b"1")
        .delete(b"b")
        .lock(b"c")
        .put(b"d", b"4");
    f.must_put_committed(b"b", b"gone", 1, 2);
    no_errors(&prewrite(&f, req));
    must_ok(commit(&f, 10, 20, &[b"d", b"a", b"b", b"c", b"a"]));
    assert!(f.dump(Cf::Lock).is_empty());
    let kinds: Vec<_> = [&b"a"[..], b"b", b"c", b"d"]
        .iter()
        .map(|k| f.write_at(k, 20).unwrap().kind)
        .collect();
    assert_eq!(
        kinds,
        [
            WriteKind::Put,
            WriteKind::Delete,
            WriteKind::Lock,
            WriteKind::Put
        ]
    );
    assert_eq!(must_get(&f, b"a", 20).as_deref(), Some(&b"1"[..]));
    assert_eq!(must_get(&f, b"b", 20), None);
    assert_eq!(must_get(&f, b"b", 19).as_deref(), Some(&b"gone"[..]));
    assert_eq!(must_get(&f, b"c", 20), None);
    assert_eq!(must_get(&f, b"d", 20).as_deref(), Some(&b"4"[..]));
}

#[test]
fn commit_recommit_4b() {
    let f = fixture();
    no_errors(&prewrite(
        &f,
        f.req
            .prewrite(10, b"a", 100)
            .put(b"a", b"1")
            .put(b"b", b"2"),
    ));
    must_ok(commit(&f, 10, 20, &[b"a"]));
    // Re-committing the primary together with the rest is fine.
    must_ok(commit(&f, 10, 20, &[b"a", b"b"]));
    must_ok(commit(&f, 10, 20, &[b"a", b"b"]));
    assert_eq!(f.dump(Cf::Write).len(), 2);
    assert!(f.dump(Cf::Lock).is_empty());
}

#[test]
fn commit_conflict_rollback_4b() {
    let f = fixture();
    no_errors(&prewrite(&f, f.req.prewrite(10, b"k", 100).put(b"k", b"v")));
    let r = f.api.batch_rollback(&f.req.rollback(10, &[b"k"])).unwrap();
    assert!(r.error.is_none(), "{r:?}");
    let e = key_error(commit(&f, 10, 20, &[b"k"]));
    assert!(!e.abort.is_empty() && e.retryable.is_empty(), "{e:?}");
    assert_eq!(f.write_at(b"k", 20), None);
    assert_eq!(must_get(&f, b"k", 30), None);
}

#[test]
fn commit_conflict_race_4b() {
    let f = fixture();
    // Our lock was resolved away and another transaction locked the key.
    f.must_put_lock(b"k", &put_lock(15), b"theirs");
    let e = key_error(commit(&f, 10, 20, &[b"k"]));
    assert!(!e.retryable.is_empty(), "{e:?}");
    assert_eq!(f.lock(b"k"), Some(put_lock(15)));
    assert!(f.dump(Cf::Write).is_empty());
}

#[test]
fn commit_conflict_repeat_4b() {
    let f = fixture();
    no_errors(&prewrite(&f, f.req.prewrite(10, b"k", 100).put(b"k", b"v")));
    must_ok(commit(&f, 10, 20, &[b"k"]));
    // A newer transaction writes the key; a repeated commit of the old one is still fine and
    // leaves the newer state alone.
    no_errors(&prewrite(&f, f.req.prewrite(30, b"k", 100).put(b"k", b"w")));
    must_ok(commit(&f, 10, 20, &[b"k"]));
    assert_eq!(f.lock(b"k").map(|l| l.start_ts), Some(30));
    assert_eq!(f.dump(Cf::Write).len(), 1);
}

#[test]
fn commit_missing_prewrite_4b() {
    let f = fixture();
    f.must_put_committed(b"k", b"v", 1, 5);
    no_errors(&prewrite(&f, f.req.prewrite(10, b"a", 100).put(b"a", b"1")));
    // "k" was never prewritten by the transaction at 10: the whole commit fails, "a" included.
    let e = key_error(commit(&f, 10, 20, &[b"a", b"k"]));
    assert!(!e.retryable.is_empty(), "{e:?}");
    assert!(f.lock(b"a").is_some());
    assert_eq!(f.dump(Cf::Write).len(), 1);
    assert!(matches!(
        f.api.commit(&f.req.commit(10, 10, &[b"a"])),
        Err(kv::txn::Error::InvalidArgument(_))
    ));
}
