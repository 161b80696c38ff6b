//! Stage 4B: latches under concurrency, a bank of concurrent transfers through the command
//! layer, and the transactional RPCs end to end over gRPC and RocksDB.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use kv::mvcc::user_key_of;
use kv::txn::testkit::{PrewriteRequestExt, RequestBuilder};
use kv::txn::WriteHook;
use kv::{MemoryStorage, Modify, TxnApi};
use proto::kvrpcpb::{Action, PrewriteRequest};

type Batches = Arc<Mutex<Vec<(Vec<Vec<u8>>, Vec<Modify>)>>>;

/// A command layer that records, for every batch it writes, the keys latched at that moment.
fn recording_api() -> (TxnApi<MemoryStorage>, Batches) {
    let batches: Batches = Arc::default();
    let sink = batches.clone();
    let hook: Arc<WriteHook> = Arc::new(move |latched: &[Vec<u8>], batch: &[Modify]| {
        sink.lock()
            .unwrap()
            .push((latched.to_vec(), batch.to_vec()));
    });
    let api = TxnApi::new(Arc::new(MemoryStorage::new())).with_write_hook(hook);
    (api, batches)
}

fn assert_written_keys_were_latched(batches: &Batches) -> usize {
    let batches = batches.lock().unwrap();
    let mut writes = 0;
    for (latched, batch) in batches.iter() {
        let latched: BTreeSet<_> = latched.iter().collect();
        for m in batch {
            let key = user_key_of(m).unwrap();
            assert!(
                latched.contains(&key),
                "{key:?} written without its latch; latched {latched:?}"
            );
            writes += 1;
        }
    }
    writes
}

#[test]
fn every_written_key_is_latched_4b() {
    let (api, batches) = recording_api();
    let req = RequestBuilder::default();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (api, req) = (api.clone(), req.clone());
            std::thread::spawn(move || {
                for i in 0..25u64 {
                    let start = 1000 * (t + 1) + 10 * i;
                    let (a, b) = (
                        format!("k{}", i % 5).into_bytes(),
                        format!("t{t}-{i}").into_bytes(),
                    );
                    let p = api
                        .prewrite(&req.prewrite(start, &a, 100).put(&a, b"x").put(&b, b"y"))
                        .unwrap();
                    if !p.errors.is_empty() {
                        api.batch_rollback(&req.rollback(start, &[&a, &b])).unwrap();
                        continue;
                    }
                    match i % 4 {
                        0 => assert!(api
                            .commit(&req.commit(start, start + 5, &[&a, &b]))
                            .unwrap()
                            .error
                            .is_none()),
                        1 => assert!(api
                            .batch_rollback(&req.rollback(start, &[&b, &a]))
                            .unwrap()
                            .error
                            .is_none()),
                        2 => {
                            let s = api
                                .check_txn_status(&req.check_txn_status(&a, start, u64::MAX))
                                .unwrap();
                            assert_eq!(s.action(), Action::TtlExpireRollback);
                            api.resolve_lock(&req.resolve_lock(start, 0)).unwrap();
                        }
                        _ => assert!(api
                            .resolve_lock(&req.resolve_lock(start, start + 5))
                            .unwrap()
                            .error
                            .is_none()),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let writes = assert_written_keys_were_latched(&batches);
    assert!(writes >= 4 * 25 * 2, "only {writes} writes recorded");
    assert_eq!(api.latches().held_count(), 0);
}

#[test]
fn concurrent_prewrites_of_one_key_admit_exactly_one_4b() {
    for round in 0..20u64 {
        let (api, batches) = recording_api();
        let n = 6;
        let barrier = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n as u64)
            .map(|t| {
                let (api, barrier) = (api.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let req: PrewriteRequest = RequestBuilder::default()
                        .prewrite(10 + t, b"hot", 100)
                        .put(b"hot", b"v");
                    barrier.wait();
                    api.prewrite(&req).unwrap().errors.is_empty()
                })
            })
            .collect();
        let winners = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|w| *w)
            .count();
        assert_eq!(winners, 1, "round {round}");
        assert_eq!(api.storage().len(kv::Cf::Lock), 1);
        assert_written_keys_were_latched(&batches);
    }
}

/// An account balance at `ts`, or `None` while a lock hides it.
fn read(api: &TxnApi<MemoryStorage>, req: &RequestBuilder, k: &[u8], ts: u64) -> Option<u64> {
    let r = api.get(&req.get(k, ts)).unwrap();
    if r.error.is_some() {
        return None;
    }
    Some(String::from_utf8(r.value).unwrap().parse().unwrap())
}

/// Concurrent transfers between accounts; readers check at fresh timestamps that the total
/// never changes. A transaction that meets a lock rolls itself back and retries, so every lock
/// is eventually released by its owner.
#[test]
fn bank_transfers_keep_the_total_4b() {
    const ACCOUNTS: u64 = 6;
    const INITIAL: u64 = 100;
    let (api, batches) = recording_api();
    let req = RequestBuilder::default();
    let tso = Arc::new(AtomicU64::new(1));
    let next_ts = {
        let tso = tso.clone();
        move || tso.fetch_add(1, Ordering::SeqCst)
    };
    let key = |i: u64| format!("acct{i}").into_bytes();

    let start = next_ts();
    let mut init = req.prewrite(start, &key(0), 100);
    for i in 0..ACCOUNTS {
        init = init.put(&key(i), INITIAL.to_string().as_bytes());
    }
    assert!(api.prewrite(&init).unwrap().errors.is_empty());
    let keys: Vec<Vec<u8>> = (0..ACCOUNTS).map(key).collect();
    let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    assert!(api
        .commit(&req.commit(start, next_ts(), &key_refs))
        .unwrap()
        .error
        .is_none());

    let workers: Vec<_> = (0..4u64)
        .map(|seed| {
            let (api, req, next_ts) = (api.clone(), req.clone(), next_ts.clone());
            std::thread::spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (seed + 1);
                let mut done = 0;
                while done < 30 {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let (from, to) = ((rng >> 33) % ACCOUNTS, (rng >> 45) % ACCOUNTS);
                    if from == to {
                        continue;
                    }
                    let start = next_ts();
                    let (Some(a), Some(b)) = (
                        read(&api, &req, &key(from), start),
                        read(&api, &req, &key(to), start),
                    ) else {
                        std::thread::yield_now();
                        continue;
                    };
                    let amount = (rng >> 20) % 7;
                    let Some(a2) = a.checked_sub(amount) else {
                        continue;
                    };
                    let p = req
                        .prewrite(start, &key(from), 10_000)
                        .put(&key(from), a2.to_string().as_bytes())
                        .put(&key(to), (b + amount).to_string().as_bytes());
                    if !api.prewrite(&p).unwrap().errors.is_empty() {
                        let r = api
                            .batch_rollback(&req.rollback(start, &[&key(from), &key(to)]))
                            .unwrap();
                        assert!(r.error.is_none(), "{r:?}");
                        std::thread::yield_now();
                        continue;
                    }
                    let commit_ts = next_ts();
                    // Primary first: once it is committed the transaction is decided.
                    for k in [key(from), key(to)] {
                        let c = api.commit(&req.commit(start, commit_ts, &[&k])).unwrap();
                        assert!(c.error.is_none() && c.region_error.is_none(), "{c:?}");
                    }
                    done += 1;
                }
            })
        })
        .collect();

    let mut consistent_reads = 0;
    while consistent_reads < 50 {
        let ts = next_ts();
        let r = api.scan(&req.scan(b"acct", 100, ts)).unwrap();
        if r.pairs.iter().any(|p| p.error.is_some()) {
            std::thread::yield_now();
            continue;
        }
        assert_eq!(r.pairs.len() as u64, ACCOUNTS);
        let total: u64 = r
            .pairs
            .iter()
            .map(|p| String::from_utf8_lossy(&p.value).parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, ACCOUNTS * INITIAL, "snapshot at {ts}: {:?}", r.pairs);
        consistent_reads += 1;
    }
    for w in workers {
        w.join().unwrap();
    }
    let final_ts = next_ts();
    let total: u64 = (0..ACCOUNTS)
        .map(|i| read(&api, &req, &key(i), final_ts).expect("no lock left"))
        .sum();
    assert_eq!(total, ACCOUNTS * INITIAL);
    assert_eq!(api.storage().len(kv::Cf::Lock), 0);
    assert_written_keys_were_latched(&batches);
}

/// A storage whose reads or writes fail the way a replicated storage fails on stale routing
/// (a region error) or while shutting down (unavailable).
struct FailingStorage {
    inner: Arc<MemoryStorage>,
    reads: Option<fn() -> kv::Error>,
    writes: Option<fn() -> kv::Error>,
}

fn not_leader() -> kv::Error {
    kv::Error::Region(Box::new(proto::errorpb::Error {
        message: "not leader".to_string(),
        ..Default::default()
    }))
}

fn stopping() -> kv::Error {
    kv::Error::Unavailable("stopping".to_string())
}

impl kv::Storage for FailingStorage {
    fn write(&self, ctx: &proto::kvrpcpb::Context, batch: Vec<Modify>) -> kv::Result<()> {
        match self.writes {
            Some(e) => Err(e()),
            None => self.inner.write(ctx, batch),
        }
    }

    fn compare_and_swap(
        &self,
        ctx: &proto::kvrpcpb::Context,
        cas: kv::Cas,
    ) -> kv::Result<kv::CasOutcome> {
        match self.writes {
            Some(e) => Err(e()),
            None => self.inner.compare_and_swap(ctx, cas),
        }
    }

    fn reader(&self, ctx: &proto::kvrpcpb::Context) -> kv::Result<Box<dyn kv::StorageReader>> {
        match self.reads {
            Some(e) => Err(e()),
            None => self.inner.reader(ctx),
        }
    }
}

fn failing(
    reads: Option<fn() -> kv::Error>,
    writes: Option<fn() -> kv::Error>,
) -> TxnApi<FailingStorage> {
    let inner = Arc::new(MemoryStorage::new());
    // A lock for the cleanup commands to find, so that they reach their writes.
    let seed = TxnApi::new(inner.clone());
    let p = seed
        .prewrite(
            &RequestBuilder::default()
                .prewrite(10, b"k", 1)
                .put(b"k", b"v"),
        )
        .unwrap();
    assert!(p.errors.is_empty());
    TxnApi::new(Arc::new(FailingStorage {
        inner,
        reads,
        writes,
    }))
}

#[test]
fn region_errors_travel_in_responses_4b() {
    let req = RequestBuilder::default();
    for (reads, writes) in [
        (Some(not_leader as fn() -> kv::Error), None),
        (None, Some(not_leader as fn() -> kv::Error)),
    ] {
        let api = failing(reads, writes);
        let failing_reads = reads.is_some();
        let region = |re: Option<proto::errorpb::Error>| re.map(|e| e.message);
        let want = Some("not leader".to_string());
        if failing_reads {
            let g = api.get(&req.get(b"k", 5)).unwrap();
            assert_eq!(
                (region(g.region_error), g.error, g.not_found),
                (want.clone(), None, false)
            );
            let s = api.scan(&req.scan(b"", 10, 5)).unwrap();
            assert_eq!((region(s.region_error), s.pairs.len()), (want.clone(), 0));
        }
        let p = api
            .prewrite(&req.prewrite(20, b"n", 100).put(b"n", b"v"))
            .unwrap();
        assert_eq!((region(p.region_error), p.errors.len()), (want.clone(), 0));
        let c = api.commit(&req.commit(10, 30, &[b"k"])).unwrap();
        assert_eq!((region(c.region_error), c.error), (want.clone(), None));
        let r = api.batch_rollback(&req.rollback(10, &[b"k"])).unwrap();
        assert_eq!((region(r.region_error), r.error), (want.clone(), None));
        let s = api
            .check_txn_status(&req.check_txn_status(b"k", 10, u64::MAX))
            .unwrap();
        assert_eq!(
            (s.action(), region(s.region_error)),
            (Action::NoAction, want.clone())
        );
        let r = api.resolve_lock(&req.resolve_lock(10, 0)).unwrap();
        assert_eq!((region(r.region_error), r.error), (want.clone(), None));
        // Nothing got through, and every latch was released.
        assert_eq!(api.latches().held_count(), 0);
    }
}

#[test]
fn other_storage_failures_fail_the_rpc_4b() {
    let req = RequestBuilder::default();
    let api = failing(Some(stopping), Some(stopping));
    let status = |e: kv::txn::Error| tonic::Status::from(e).code();
    assert_eq!(
        status(api.get(&req.get(b"k", 5)).unwrap_err()),
        tonic::Code::Unavailable
    );
    assert_eq!(
        status(api.scan(&req.scan(b"", 1, 5)).unwrap_err()),
        tonic::Code::Unavailable
    );
    let e = api.commit(&req.commit(10, 30, &[b"k"])).unwrap_err();
    assert!(
        matches!(e, kv::txn::Error::Storage(kv::Error::Unavailable(_))),
        "{e}"
    );
    assert!(api.resolve_lock(&req.resolve_lock(10, 30)).is_err());
    assert_eq!(api.latches().held_count(), 0);
}
