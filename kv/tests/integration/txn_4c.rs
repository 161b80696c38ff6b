//! Stage 4C: `KvBatchRollback`, `KvCheckTxnStatus`, `KvResolveLock` and `KvScan` through the
//! command layer, over the in-memory storage.

use codec::ts::compose_ts;
use kv::mvcc::{Lock, LockKind, Write, WriteKind};
use kv::txn::testkit::{PrewriteRequestExt, TxnFixture};
use kv::Cf;
use proto::kvrpcpb::{Action, BatchRollbackResponse, CheckTxnStatusResponse, KvPair};

fn fixture() -> TxnFixture {
    TxnFixture::default()
}

fn prewrite(f: &TxnFixture, start: u64, muts: &[(&[u8], Option<&[u8]>)], ttl: u64) {
    let mut req = f.req.prewrite(start, muts[0].0, ttl);
    for (k, v) in muts {
        req = match v {
            Some(v) => req.put(k, v),
            None => req.delete(k),
        };
    }
    let r = f.api.prewrite(&req).unwrap();
    assert!(r.errors.is_empty() && r.region_error.is_none(), "{r:?}");
}

fn rollback(f: &TxnFixture, start: u64, keys: &[&[u8]]) -> BatchRollbackResponse {
    f.api.batch_rollback(&f.req.rollback(start, keys)).unwrap()
}

fn rollback_record(start: u64) -> Option<Write> {
    Some(Write::new(WriteKind::Rollback, start))
}

fn get(f: &TxnFixture, key: &[u8], ts: u64) -> Option<Vec<u8>> {
    let r = f.api.get(&f.req.get(key, ts)).unwrap();
    assert!(r.error.is_none(), "{r:?}");
    (!r.not_found).then_some(r.value)
}

// ---- KvBatchRollback ----

#[test]
fn rollback_empty_4c() {
    let f = fixture();
    let r = rollback(&f, 10, &[]);
    assert!(r.error.is_none() && r.region_error.is_none());
    assert!(f.api.storage().is_empty());
}

#[test]
fn rollback_simple_4c() {
    let f = fixture();
    f.must_put_committed(b"k", b"old", 1, 2);
    prewrite(&f, 10, &[(b"k", Some(b"new"))], 100);
    let r = rollback(&f, 10, &[b"k"]);
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(f.lock(b"k"), None);
    assert_eq!(f.value_at(b"k", 10), None);
    assert_eq!(f.write_at(b"k", 10), rollback_record(10));
    assert_eq!(get(&f, b"k", 20).as_deref(), Some(&b"old"[..]));
}

#[test]
fn rollback_duplicate_keys_4c() {
    let f = fixture();
    prewrite(&f, 10, &[(b"a", Some(b"1")), (b"b", None)], 100);
    let r = rollback(&f, 10, &[b"a", b"b", b"a", b"b"]);
    assert!(r.error.is_none(), "{r:?}");
    assert!(f.dump(Cf::Lock).is_empty());
    assert!(f.dump(Cf::Default).is_empty());
    assert_eq!(f.dump(Cf::Write).len(), 2);
    assert_eq!(f.write_at(b"a", 10), rollback_record(10));
    assert_eq!(f.write_at(b"b", 10), rollback_record(10));
}

#[test]
fn rollback_missing_prewrite_4c() {
    let f = fixture();
    let r = rollback(&f, 10, &[b"k"]);
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(f.write_at(b"k", 10), rollback_record(10));
    // The record stops a prewrite that arrives after the rollback.
    let r = f
        .api
        .prewrite(&f.req.prewrite(10, b"k", 100).put(b"k", b"late"))
        .unwrap();
    assert!(r.errors[0].conflict.is_some(), "{r:?}");
    assert_eq!(f.lock(b"k"), None);
}

#[test]
fn rollback_committed_4c() {
    let f = fixture();
    prewrite(&f, 10, &[(b"a", Some(b"1")), (b"b", Some(b"2"))], 100);
    let c = f.api.commit(&f.req.commit(10, 20, &[b"a"])).unwrap();
    assert!(c.error.is_none());
    let r = rollback(&f, 10, &[b"b", b"a"]);
    let e = r.error.expect("committed key refused");
    assert!(!e.abort.is_empty(), "{e:?}");
    // All or nothing: "b" is still locked, and "a" is still committed.
    assert!(f.lock(b"b").is_some());
    assert_eq!(f.write_at(b"b", 10), None);
    assert_eq!(get(&f, b"a", 20).as_deref(), Some(&b"1"[..]));
}

#[test]
fn rollback_duplicate_4c() {
    let f = fixture();
    prewrite(&f, 10, &[(b"k", Some(b"v"))], 100);
    assert!(rollback(&f, 10, &[b"k"]).error.is_none());
    let before = (f.dump(Cf::Write), f.dump(Cf::Lock), f.dump(Cf::Default));
    assert!(rollback(&f, 10, &[b"k"]).error.is_none());
    assert_eq!(
        (f.dump(Cf::Write), f.dump(Cf::Lock), f.dump(Cf::Default)),
        before
    );
}

#[test]
fn rollback_other_txn_4c() {
    let f = fixture();
    prewrite(&f, 15, &[(b"k", Some(b"theirs"))], 100);
    let r = rollback(&f, 10, &[b"k"]);
    assert!(r.error.is_none(), "{r:?}");
    // The other transaction's lock and value stay; ours is marked rolled back.
    assert_eq!(f.lock(b"k").map(|l| l.start_ts), Some(15));
    assert_eq!(f.value_at(b"k", 15).as_deref(), Some(&b"theirs"[..]));
    assert_eq!(f.write_at(b"k", 10), rollback_record(10));
}

#[test]
fn rollback_keeps_a_commit_at_the_same_ts_4c() {
    let f = fixture();
    // Another transaction committed "k" at exactly 10, our start.
    f.must_put_committed(b"k", b"v", 5, 10);
    assert!(rollback(&f, 10, &[b"k"]).error.is_none());
    assert_eq!(f.write_at(b"k", 10), Some(Write::new(WriteKind::Put, 5)));
    assert_eq!(get(&f, b"k", 10).as_deref(), Some(&b"v"[..]));
}

// ---- KvCheckTxnStatus ----

fn check(f: &TxnFixture, primary: &[u8], lock_ts: u64, current: u64) -> CheckTxnStatusResponse {
    let r = f
        .api
        .check_txn_status(&f.req.check_txn_status(primary, lock_ts, current))
        .unwrap();
    assert!(r.region_error.is_none(), "{r:?}");
    r
}

#[test]
fn check_txn_status_ttl_expired_4c() {
    let f = fixture();
    let start = compose_ts(1_000, 3);
    prewrite(&f, start, &[(b"pri", Some(b"v"))], 100);
    let r = check(&f, b"pri", start, compose_ts(1_100, 0));
    assert_eq!(
        (r.action(), r.lock_ttl, r.commit_version),
        (Action::TtlExpireRollback, 0, 0)
    );
    assert_eq!(f.lock(b"pri"), None);
    assert_eq!(f.value_at(b"pri", start), None);
    assert_eq!(f.write_at(b"pri", start), rollback_record(start));
    // The owner can no longer commit.
    let c = f
        .api
        .commit(&f.req.commit(start, start + 1, &[b"pri"]))
        .unwrap();
    assert!(!c.error.expect("rolled back").abort.is_empty());
}

#[test]
fn check_txn_status_ttl_not_expired_4c() {
    let f = fixture();
    let start = compose_ts(1_000, 3);
    prewrite(&f, start, &[(b"pri", Some(b"v"))], 100);
    for now in [compose_ts(1_000, 4), compose_ts(1_099, (1 << 18) - 1)] {
        let r = check(&f, b"pri", start, now);
        assert_eq!(
            (r.action(), r.lock_ttl, r.commit_version),
            (Action::NoAction, 100, 0)
        );
    }
    assert_eq!(f.lock(b"pri").map(|l| l.start_ts), Some(start));
    assert!(f.dump(Cf::Write).is_empty());
}

#[test]
fn check_txn_status_rolled_back_4c() {
    let f = fixture();
    prewrite(&f, 10, &[(b"pri", Some(b"v"))], 100);
    assert!(rollback(&f, 10, &[b"pri"]).error.is_none());
    let before = f.dump(Cf::Write);
    let r = check(&f, b"pri", 10, u64::MAX);
    assert_eq!(
        (r.action(), r.lock_ttl, r.commit_version),
        (Action::NoAction, 0, 0)
    );
    assert_eq!(f.dump(Cf::Write), before);
}

#[test]
fn check_txn_status_committed_4c() {
    let f = fixture();
    prewrite(&f, 10, &[(b"pri", Some(b"v"))], 100);
    assert!(f
        .api
        .commit(&f.req.commit(10, 20, &[b"pri"]))
        .unwrap()
        .error
        .is_none());
    // Even with a newer transaction's lock on the primary, the answer comes from the record.
    prewrite(&f, 30, &[(b"pri", Some(b"w"))], 100);
    let r = check(&f, b"pri", 10, u64::MAX);
    assert_eq!(
        (r.action(), r.lock_ttl, r.commit_version),
        (Action::NoAction, 0, 20)
    );
    assert_eq!(f.lock(b"pri").map(|l| l.start_ts), Some(30));
}

#[test]
fn check_txn_status_no_lock_no_write_4c() {
    let f = fixture();
    f.must_put_committed(b"pri", b"older", 1, 2);
    let r = check(&f, b"pri", 10, 11);
    assert_eq!(
        (r.action(), r.lock_ttl, r.commit_version),
        (Action::LockNotExistRollback, 0, 0)
    );
    assert_eq!(f.write_at(b"pri", 10), rollback_record(10));
    // A prewrite that was only delayed now fails.
    let p = f
        .api
        .prewrite(&f.req.prewrite(10, b"pri", 100).put(b"pri", b"late"))
        .unwrap();
    assert!(p.errors[0].conflict.is_some(), "{p:?}");
    // Asking again finds the rollback.
    assert_eq!(check(&f, b"pri", 10, 11).action(), Action::NoAction);
}

// ---- KvResolveLock ----

fn resolve(f: &TxnFixture, start: u64, commit_ts: u64) {
    let r = f
        .api
        .resolve_lock(&f.req.resolve_lock(start, commit_ts))
        .unwrap();
    assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
}

#[test]
fn resolve_empty_4c() {
    let f = fixture();
    resolve(&f, 10, 20);
    resolve(&f, 10, 0);
    assert!(f.api.storage().is_empty());
}

#[test]
fn resolve_commit_4c() {
    let f = fixture();
    prewrite(
        &f,
        10,
        &[(b"a", Some(b"1")), (b"b", None), (b"c", Some(b"3"))],
        100,
    );
    prewrite(&f, 11, &[(b"other", Some(b"x"))], 100);
    resolve(&f, 10, 20);
    assert_eq!(
        f.dump(Cf::Lock).len(),
        1,
        "only the other transaction's lock stays"
    );
    assert_eq!(f.write_at(b"a", 20), Some(Write::new(WriteKind::Put, 10)));
    assert_eq!(
        f.write_at(b"b", 20),
        Some(Write::new(WriteKind::Delete, 10))
    );
    assert_eq!(get(&f, b"c", 20).as_deref(), Some(&b"3"[..]));
}

#[test]
fn resolve_rollback_4c() {
    let f = fixture();
    prewrite(&f, 10, &[(b"a", Some(b"1")), (b"b", None)], 100);
    prewrite(&f, 11, &[(b"other", Some(b"x"))], 100);
    resolve(&f, 10, 0);
    assert_eq!(f.dump(Cf::Lock).len(), 1);
    assert_eq!(f.value_at(b"a", 10), None);
    assert_eq!(f.write_at(b"a", 10), rollback_record(10));
    assert_eq!(f.write_at(b"b", 10), rollback_record(10));
    assert_eq!(f.value_at(b"other", 11).as_deref(), Some(&b"x"[..]));
}

#[test]
fn resolve_commit_written_4c() {
    let f = fixture();
    prewrite(&f, 10, &[(b"a", Some(b"1")), (b"b", Some(b"2"))], 100);
    assert!(f
        .api
        .commit(&f.req.commit(10, 20, &[b"a"]))
        .unwrap()
        .error
        .is_none());
    // Only "b" is still locked; resolving commits it and leaves "a"'s record alone.
    resolve(&f, 10, 20);
    assert!(f.dump(Cf::Lock).is_empty());
    assert_eq!(f.dump(Cf::Write).len(), 2);
    assert_eq!(get(&f, b"b", 20).as_deref(), Some(&b"2"[..]));
}

#[test]
fn resolve_rollback_written_4c() {
    let f = fixture();
    prewrite(&f, 10, &[(b"a", Some(b"1")), (b"b", Some(b"2"))], 100);
    assert!(rollback(&f, 10, &[b"a"]).error.is_none());
    resolve(&f, 10, 0);
    assert!(f.dump(Cf::Lock).is_empty());
    assert!(f.dump(Cf::Default).is_empty());
    assert_eq!(f.write_at(b"a", 10), rollback_record(10));
    assert_eq!(f.write_at(b"b", 10), rollback_record(10));
}

// ---- KvScan ----

fn scan(f: &TxnFixture, start: &[u8], limit: u32, ts: u64) -> Vec<KvPair> {
    let r = f.api.scan(&f.req.scan(start, limit, ts)).unwrap();
    assert!(r.region_error.is_none(), "{r:?}");
    r.pairs
}

fn pairs(kvs: &[(&[u8], &[u8])]) -> Vec<KvPair> {
    kvs.iter()
        .map(|(k, v)| KvPair {
            error: None,
            key: k.to_vec(),
            value: v.to_vec(),
        })
        .collect()
}

fn seed_scan(f: &TxnFixture) {
    f.must_put_committed(b"a", b"va", 1, 2);
    f.must_put_committed(b"b", b"vb", 1, 2);
    f.must_put_committed(b"b", b"vb2", 5, 6);
    f.must_put_committed(b"c", b"", 1, 2);
    f.must_put_committed(b"d", b"vd", 1, 2);
    f.must_put_committed(b"e", b"ve", 8, 9);
}

#[test]
fn scan_empty_4c() {
    let f = fixture();
    assert!(scan(&f, b"", 10, 100).is_empty());
    seed_scan(&f);
    assert!(scan(&f, b"f", 10, 100).is_empty());
    assert!(scan(&f, b"", 10, 1).is_empty());
}

#[test]
fn scan_limit_zero_4c() {
    let f = fixture();
    seed_scan(&f);
    assert!(scan(&f, b"", 0, 100).is_empty());
}

#[test]
fn scan_all_4c() {
    let f = fixture();
    seed_scan(&f);
    let want = pairs(&[
        (b"a", b"va"),
        (b"b", b"vb2"),
        (b"c", b""),
        (b"d", b"vd"),
        (b"e", b"ve"),
    ]);
    assert_eq!(scan(&f, b"", 100, 100), want);
    let at_5 = pairs(&[(b"a", b"va"), (b"b", b"vb"), (b"c", b""), (b"d", b"vd")]);
    assert_eq!(scan(&f, b"", 100, 5), at_5);
}

#[test]
fn scan_limit_4c() {
    let f = fixture();
    seed_scan(&f);
    assert_eq!(
        scan(&f, b"", 2, 100),
        pairs(&[(b"a", b"va"), (b"b", b"vb2")])
    );
    assert_eq!(
        scan(&f, b"b\x00", 2, 100),
        pairs(&[(b"c", b""), (b"d", b"vd")])
    );
    assert_eq!(
        scan(&f, b"d", 5, 100),
        pairs(&[(b"d", b"vd"), (b"e", b"ve")])
    );
}

#[test]
fn scan_deleted_4c() {
    let f = fixture();
    seed_scan(&f);
    f.must_put_write(b"b", WriteKind::Delete, 10, 11);
    f.must_put_write(b"d", WriteKind::Delete, 10, 11);
    // Deleted keys take no slot of the limit.
    assert_eq!(scan(&f, b"", 2, 100), pairs(&[(b"a", b"va"), (b"c", b"")]));
    assert_eq!(
        scan(&f, b"", 10, 100),
        pairs(&[(b"a", b"va"), (b"c", b""), (b"e", b"ve")])
    );
    assert_eq!(scan(&f, b"", 10, 10).len(), 5);
}

#[test]
fn scan_locked_4c() {
    let f = fixture();
    seed_scan(&f);
    f.must_put_lock(
        b"b",
        &Lock::new(b"b".to_vec(), LockKind::Put, 20, 100),
        b"new",
    );
    f.must_put_lock(
        b"bb",
        &Lock::new(b"b".to_vec(), LockKind::Put, 20, 100),
        b"new",
    );
    let got = scan(&f, b"", 3, 30);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], pairs(&[(b"a", b"va")])[0]);
    for (pair, key) in got[1..].iter().zip([&b"b"[..], b"bb"]) {
        let locked = pair
            .error
            .as_ref()
            .and_then(|e| e.locked.as_ref())
            .expect("locked");
        assert_eq!(
            (
                pair.key.as_slice(),
                locked.key.as_slice(),
                locked.lock_version
            ),
            (key, key, 20)
        );
    }
    // A scan older than the lock is not blocked.
    assert_eq!(
        scan(&f, b"", 3, 19),
        pairs(&[(b"a", b"va"), (b"b", b"vb2"), (b"c", b"")])
    );
}
