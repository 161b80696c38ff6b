//! `KvGc` through the command layer over the in-memory storage: what stays, what goes, and what
//! a GC's safe point refuses afterwards.

use kv::mvcc::{Lock, LockKind, WriteKind};
use kv::txn::testkit::{PrewriteRequestExt, TxnFixture};
use kv::Cf;
use proto::kvrpcpb::{GcRequest, GcResponse};

fn gc(f: &TxnFixture, safe_point: u64) -> GcResponse {
    f.api
        .gc(&GcRequest {
            safe_point,
            ..Default::default()
        })
        .unwrap()
}

fn value_at(f: &TxnFixture, key: &[u8], ts: u64) -> Option<Vec<u8>> {
    let r = f.api.get(&f.req.get(key, ts)).unwrap();
    assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
    (!r.not_found).then_some(r.value)
}

#[test]
fn gc_keeps_what_reads_at_the_safe_point_see_and_removes_the_rest_4c() {
    let f = TxnFixture::default();
    // k1: three puts and a rollback; k2: a put then a delete; k3: a put after the safe point.
    f.must_put_committed(b"k1", b"v10", 10, 11);
    f.must_put_write(b"k1", WriteKind::Rollback, 15, 15);
    f.must_put_committed(b"k1", b"v20", 20, 21);
    f.must_put_committed(b"k1", b"v40", 40, 41);
    f.must_put_committed(b"k2", b"v5", 5, 6);
    f.must_put_write(b"k2", WriteKind::Delete, 25, 26);
    f.must_put_committed(b"k3", b"v50", 50, 51);
    let before: Vec<_> = (30..60)
        .map(|ts| [b"k1", b"k2", b"k3"].map(|k| value_at(&f, k, ts)))
        .collect();

    let r = gc(&f, 30);
    assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
    assert_eq!((r.keys, r.versions), (3, 4), "{r:?}");
    let after: Vec<_> = (30..60)
        .map(|ts| [b"k1", b"k2", b"k3"].map(|k| value_at(&f, k, ts)))
        .collect();
    assert_eq!(
        after, before,
        "reads at or above the safe point see the same"
    );
    assert_eq!(f.write_at(b"k1", 11), None);
    assert_eq!(f.write_at(b"k1", 15), None);
    assert!(
        f.write_at(b"k1", 21).is_some(),
        "the put visible at 30 stays"
    );
    assert_eq!(
        f.value_at(b"k1", 10),
        None,
        "a removed put's value goes too"
    );
    assert_eq!(f.value_at(b"k1", 20), Some(b"v20".to_vec()));
    assert_eq!(f.write_at(b"k2", 26), None);
    assert_eq!(f.value_at(b"k2", 5), None);
    assert_eq!(f.dump(Cf::Write).len(), 3, "k1@21, k1@41, k3@51");

    // Below the safe point: reads and prewrites are refused with a clear error.
    let r = f.api.get(&f.req.get(b"k1", 29)).unwrap();
    let abort = r.error.expect("refused").abort;
    assert!(abort.contains("below the GC safe point 30"), "{abort}");
    let r = f.api.scan(&f.req.scan(b"", 10, 12)).unwrap();
    assert!(r.error.expect("refused").abort.contains("safe point"));
    let p = f.req.prewrite(30, b"k9", 100).put(b"k9", b"x");
    let r = f.api.prewrite(&p).unwrap();
    assert!(r.errors[0].abort.contains("safe point"), "{r:?}");
    // A later GC never lowers the safe point.
    gc(&f, 20);
    assert_eq!(f.api.gc_safe_point(), 30);
}

#[test]
fn gc_waits_for_locks_at_or_below_the_safe_point_4c() {
    let f = TxnFixture::default();
    f.must_put_committed(b"a", b"1", 10, 11);
    f.must_put_committed(b"a", b"2", 12, 13);
    let lock = Lock {
        primary: b"a".to_vec(),
        kind: LockKind::Put,
        start_ts: 20,
        ttl: 1000,
    };
    f.must_put_lock(b"b", &lock, b"pending");
    let r = gc(&f, 25);
    let locked = r
        .error
        .expect("a lock below the safe point")
        .locked
        .expect("locked");
    assert_eq!(
        (locked.key.as_slice(), locked.lock_version),
        (&b"b"[..], 20)
    );
    assert!(
        f.write_at(b"a", 11).is_some(),
        "nothing removed while the lock stays"
    );
    // Once the lock is resolved (rolled back), the GC goes through.
    let r = f.api.resolve_lock(&f.req.resolve_lock(20, 0)).unwrap();
    assert!(r.error.is_none(), "{r:?}");
    let r = gc(&f, 25);
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(f.write_at(b"a", 11), None);
    assert_eq!(value_at(&f, b"a", 25), Some(b"2".to_vec()));
    // A lock above the safe point does not stop a GC.
    f.must_put_lock(
        b"c",
        &Lock {
            start_ts: 40,
            ..lock
        },
        b"later",
    );
    assert!(gc(&f, 30).error.is_none());
}

#[test]
fn a_gc_call_stops_at_its_limit_and_the_next_goes_on_from_there_4c() {
    let f = TxnFixture::default();
    for i in 0..50u64 {
        let key = format!("k{i:02}");
        for v in 0..3u64 {
            let ts = 10 + v * 10;
            f.must_put_committed(key.as_bytes(), b"x", ts, ts + 1);
        }
    }
    let (mut calls, mut versions, mut start) = (0, 0, Vec::new());
    loop {
        let r = f
            .api
            .gc(&GcRequest {
                safe_point: 100,
                start_key: start.clone(),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
        calls += 1;
        versions += r.versions;
        assert!(r.versions <= 10, "a call stops at its limit: {r:?}");
        if r.next_key.is_empty() {
            break;
        }
        assert!(r.next_key > start, "each call goes on past the last");
        start = r.next_key;
    }
    assert_eq!(versions, 100, "two old versions of each of 50 keys");
    assert!(calls >= 10, "{calls} calls");
    assert_eq!(f.dump(Cf::Write).len(), 50);
}
