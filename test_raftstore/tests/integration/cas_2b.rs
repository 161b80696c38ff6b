//! Compare-and-swap through raft: decided in apply, in the region's log order, on every
//! replica alike; concurrent increments lose nothing; a swap sees the writes of the entries
//! before it in its own apply batch; under leader changes a client retries only what provably
//! did not apply.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv::{Cas, CasOutcome, Cf, Storage as _};
use proto::eraftpb::MessageType;
use proto::kvrpcpb::Context;
use proto::raft_cmdpb::{RaftCmdRequest, RaftRequestHeader, Request};
use raftstore::{Callback, CmdResponse, Config};
use test_raftstore::{
    cas_req, put_req, CasError, Cluster, Filter, IsolationFilter, LeaderCache, MessageTypeFilter,
};

const WAIT: Duration = Duration::from_secs(10);

fn started(count: usize) -> Cluster {
    let mut c = Cluster::new(count, Config::test());
    c.start();
    c
}

fn outcome(succeed: bool, previous: Option<&str>) -> CasOutcome {
    CasOutcome {
        succeed,
        previous: previous.map(|p| p.as_bytes().to_vec()),
    }
}

#[test]
fn cas_through_raft_2b() {
    let cluster = started(3);
    assert_eq!(cluster.must_cas(b"k", None, b"1"), outcome(true, None));
    assert_eq!(
        cluster.must_cas(b"k", None, b"x"),
        outcome(false, Some("1"))
    );
    assert_eq!(
        cluster.must_cas(b"k", Some(b"1"), b"2"),
        outcome(true, Some("1"))
    );
    assert_eq!(
        cluster.must_cas(b"k", Some(b"1"), b"3"),
        outcome(false, Some("2"))
    );
    assert_eq!(
        cluster.must_cas(b"absent", Some(b""), b"v"),
        outcome(false, None)
    );
    // Every replica decided the same way: the swaps that succeeded, and only those.
    for s in cluster.store_ids() {
        cluster.wait_value_on_store(s, b"k", Some(b"2"), WAIT);
        cluster.wait_value_on_store(s, b"absent", None, WAIT);
    }
    // Replaying the log after a restart decides the same way again.
    cluster.restart_all();
    assert_eq!(cluster.must_get(b"k").as_deref(), Some(&b"2"[..]));
    assert_eq!(
        cluster.must_cas(b"k", Some(b"2"), b"4"),
        outcome(true, Some("2"))
    );

    // A swap must be the only request of its command.
    let region_id = cluster.get_region(b"k").id;
    let leader = cluster.wait_leader(region_id, WAIT);
    let mixed = vec![put_req(b"k", b"5"), cas_req(b"k", Some(b"5"), b"6")];
    let resp = cluster
        .call_on_store(leader.store_id, b"k", mixed, WAIT)
        .expect("the leader answers");
    let err = resp.response.header.and_then(|h| h.error);
    assert!(
        err.as_ref()
            .is_some_and(|e| e.message.contains("only request")),
        "{err:?}"
    );
    assert_eq!(cluster.must_get(b"k").as_deref(), Some(&b"4"[..]));
}

/// `RaftStorage` runs the swap for the raw API: proposed, decided at apply, answered.
#[test]
fn raft_storage_compare_and_swap_2b() {
    let cluster = started(3);
    let region_id = cluster.get_region(b"").id;
    let cas = |expect: Option<&[u8]>, value: &[u8]| Cas {
        cf: Cf::Lock,
        key: b"s".to_vec(),
        expect: expect.map(<[u8]>::to_vec),
        value: value.to_vec(),
        now_ms: codec::raw_value::now_ms(),
    };
    let ctx = Context::default();
    let deadline = Instant::now() + WAIT;
    let (storage, first) = loop {
        let leader = cluster.wait_leader(region_id, WAIT);
        let storage = cluster.raft_storage(leader.store_id).expect("leader runs");
        match storage.compare_and_swap(&ctx, cas(None, b"a")) {
            Ok(out) => break (storage, out),
            // NotLeader proves it was not applied: try the new leader.
            Err(kv::Error::Region(e)) if e.not_leader.is_some() => {
                assert!(Instant::now() < deadline, "leadership never settled: {e:?}");
            }
            Err(e) => panic!("compare-and-swap through RaftStorage failed: {e}"),
        }
    };
    assert_eq!(first, outcome(true, None));
    let refused = storage
        .compare_and_swap(&ctx, cas(Some(b"b"), b"c"))
        .unwrap();
    assert_eq!(refused, outcome(false, Some("a")));
    let reader = storage.reader(&ctx).unwrap();
    assert_eq!(
        reader.get_cf(Cf::Lock, b"s").unwrap().as_deref(),
        Some(&b"a"[..])
    );
    assert_eq!(reader.get_cf(Cf::Default, b"s").unwrap(), None);
}

/// A value whose time to live ended compares as absent to a swap, by the clock the swap was
/// proposed with, not by the applying store's: every replica decides alike and holds the same
/// bytes, though one applies long after the other.
#[test]
fn a_swap_decides_expiry_by_its_proposal_clock_on_every_replica_2b() {
    let cluster = started(3);
    let stored = codec::raw_value::encode(b"old", Some(1_000));
    cluster.must_put(b"t", &stored);
    let cas = |expect: Option<&[u8]>, value: &[u8], now_ms: u64| Cas {
        cf: Cf::Default,
        key: b"t".to_vec(),
        expect: expect.map(<[u8]>::to_vec),
        value: value.to_vec(),
        now_ms,
    };
    let ctx = Context::default();
    let deadline = Instant::now() + WAIT;
    let region_id = cluster.get_region(b"").id;
    let storage = loop {
        let leader = cluster.wait_leader(region_id, WAIT);
        let storage = cluster.raft_storage(leader.store_id).expect("leader runs");
        // Before the expiry the value is there: expecting absence fails.
        match storage.compare_and_swap(&ctx, cas(None, b"never", 999)) {
            Ok(out) => {
                assert_eq!(out, outcome(false, Some("old")));
                break storage;
            }
            Err(kv::Error::Region(e)) if e.not_leader.is_some() => {
                assert!(Instant::now() < deadline, "leadership never settled: {e:?}");
            }
            Err(e) => panic!("compare-and-swap through RaftStorage failed: {e}"),
        }
    };
    // At the expiry it is gone: expecting the old value fails, expecting absence succeeds.
    let late = storage
        .compare_and_swap(&ctx, cas(Some(b"old"), b"never", 1_000))
        .unwrap();
    assert_eq!(late, outcome(false, None));
    let swapped = storage
        .compare_and_swap(&ctx, cas(None, b"new", 1_000))
        .unwrap();
    assert_eq!(swapped, outcome(true, None));
    let deadline = Instant::now() + WAIT;
    for store in cluster.store_ids() {
        let engines = cluster.engines(store).unwrap();
        let key = kv::keys::data_key(b"t");
        while kv::engine::get_cf(&engines.kv, Cf::Default, &key)
            .unwrap()
            .as_deref()
            != Some(b"new")
        {
            assert!(
                Instant::now() < deadline,
                "store {store} never applied the swap"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What the increment clients did.
#[derive(Default)]
struct Tally {
    /// The value each successful swap wrote: all distinct if no two swaps succeeded from the
    /// same previous value.
    written: Mutex<Vec<u64>>,
    undetermined: AtomicU64,
}

fn parse(v: Option<&[u8]>) -> u64 {
    v.map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap())
}

/// One client: `count` successful increments of `key` (read, swap old → old + 1, on refusal
/// go on from the value the refusal saw), or until `stop`.
fn increment(cluster: &Cluster, key: &[u8], count: usize, tally: &Tally, stop: &AtomicBool) {
    let leaders = LeaderCache::default();
    let mut seen = cluster.try_get_with(&leaders, key, WAIT).ok().flatten();
    let mut done = 0;
    while done < count && !stop.load(Ordering::Relaxed) {
        let next = parse(seen.as_deref()) + 1;
        let value = next.to_string();
        match cluster.try_cas_with(&leaders, key, seen.as_deref(), value.as_bytes(), WAIT) {
            Ok(out) if out.succeed => {
                tally.written.lock().unwrap().push(next);
                seen = Some(value.into_bytes());
                done += 1;
            }
            Ok(out) => seen = out.previous,
            Err(CasError::Undetermined(_)) => {
                tally.undetermined.fetch_add(1, Ordering::Relaxed);
                seen = cluster.try_get_with(&leaders, key, WAIT).ok().flatten();
            }
            Err(CasError::NotApplied(_)) => {
                seen = cluster.try_get_with(&leaders, key, WAIT).ok().flatten();
            }
        }
    }
}

/// The counter counts every successful swap, each wrote a value no other did, and a swap
/// whose outcome is unknown counted at most once.
fn check_counter(cluster: &Cluster, key: &[u8], tally: &Tally) -> (u64, u64) {
    let written = tally.written.lock().unwrap().clone();
    let distinct: HashSet<u64> = written.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        written.len(),
        "two swaps succeeded from the same previous value: {written:?}"
    );
    let successes = written.len() as u64;
    let undetermined = tally.undetermined.load(Ordering::Relaxed);
    let counter = parse(cluster.must_get(key).as_deref());
    assert!(
        successes <= counter && counter <= successes + undetermined,
        "counter {counter}: {successes} swaps succeeded, {undetermined} undetermined"
    );
    (counter, successes)
}

#[test]
fn concurrent_cas_increments_count_every_success_2b() {
    const CLIENTS: usize = 4;
    const EACH: usize = 25;
    let cluster = started(3);
    let tally = Tally::default();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| increment(&cluster, b"counter", EACH, &tally, &stop));
        }
    });
    let (counter, successes) = check_counter(&cluster, b"counter", &tally);
    assert_eq!(successes, (CLIENTS * EACH) as u64);
    if tally.undetermined.load(Ordering::Relaxed) == 0 {
        assert_eq!(counter, successes);
    }
    for s in cluster.store_ids() {
        let want = counter.to_string();
        cluster.wait_value_on_store(s, b"counter", Some(want.as_bytes()), WAIT);
    }
}

/// A put and a swap expecting its value commit together (the followers' append responses are
/// held back until both are in the leader's log), so apply runs them in one batch: the swap
/// must compare against the put, which is not in the engine yet when the batch starts.
#[test]
fn cas_sees_a_put_of_its_own_apply_batch_2b() {
    let cluster = started(3);
    cluster.must_put(b"k", b"before");
    let region = cluster.get_region(b"k");
    let leader = cluster.wait_leader(region.id, WAIT);
    let engines = cluster.engines(leader.store_id).expect("the leader runs");
    let last_index = || {
        raftstore::read_raft_state(&engines, region.id)
            .expect("reading the raft state")
            .map_or(0, |s| s.last_index)
    };
    let hold: Arc<dyn Filter> = Arc::new(MessageTypeFilter::new(&[MessageType::MsgAppendResponse]));
    cluster.add_filter(hold.clone());
    let before = last_index();
    let router = cluster.router(leader.store_id).expect("the leader runs");
    let send = |request: Request| {
        let (tx, rx) = crossbeam_channel::bounded::<CmdResponse>(1);
        let req = RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: region.id,
                peer: Some(leader),
                region_epoch: region.region_epoch,
                term: 0,
            }),
            requests: vec![request],
            admin_request: None,
        };
        let _ = router.send_command(req, Callback::new(move |r| drop(tx.send(r))));
        rx
    };
    let put = send(put_req(b"k", b"put"));
    let cas = send(cas_req(b"k", Some(b"put"), b"swapped"));
    let deadline = Instant::now() + WAIT;
    while last_index() < before + 2 {
        assert!(
            Instant::now() < deadline,
            "the leader did not append both commands: last index {} from {before}",
            last_index()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.remove_filter(&hold);
    let answer = |rx: crossbeam_channel::Receiver<CmdResponse>| {
        let resp = rx.recv_timeout(WAIT).expect("answered").response;
        assert!(
            resp.header
                .as_ref()
                .and_then(|h| h.error.as_ref())
                .is_none(),
            "{resp:?}"
        );
        resp.responses
    };
    answer(put);
    let cas = answer(cas)[0].cas.clone().expect("a cas response");
    assert!(
        cas.succeed,
        "the swap did not see the put before it: {cas:?}"
    );
    assert_eq!(cas.previous_value, b"put");
    for s in cluster.store_ids() {
        cluster.wait_value_on_store(s, b"k", Some(b"swapped"), WAIT);
    }
}

/// Increments while the leader moves and is cut off: a swap is sent again only after a
/// failure that proves it did not apply, so the counter still counts every success, and at
/// most once each swap whose outcome the client could not learn.
#[test]
fn cas_increments_across_leader_changes_2b() {
    const CLIENTS: usize = 3;
    let cluster = started(3);
    let region_id = cluster.get_region(b"").id;
    let tally = Tally::default();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| increment(&cluster, b"counter", usize::MAX, &tally, &stop));
        }
        let progress = |at_least: usize| {
            let deadline = Instant::now() + WAIT * 3;
            while tally.written.lock().unwrap().len() < at_least {
                assert!(Instant::now() < deadline, "no progress to {at_least} swaps");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        for round in 0..4 {
            progress(10 * (round + 1));
            let leader = cluster.wait_leader(region_id, WAIT);
            if round % 2 == 0 {
                let other = cluster
                    .store_ids()
                    .into_iter()
                    .find(|&s| s != leader.store_id)
                    .unwrap();
                let region = cluster.get_region(b"");
                let peer = region.peers.iter().find(|p| p.store_id == other).unwrap();
                cluster.must_transfer_leader(region_id, *peer);
            } else {
                cluster.add_filter(Arc::new(IsolationFilter(leader.store_id)));
                cluster.wait_leader_other_than(region_id, leader.store_id, WAIT);
                progress(10 * (round + 1) + 5);
                cluster.clear_filters();
            }
        }
        progress(50);
        stop.store(true, Ordering::Relaxed);
    });
    let (counter, successes) = check_counter(&cluster, b"counter", &tally);
    eprintln!(
        "counter {counter}: {successes} swaps succeeded, {} undetermined",
        tally.undetermined.load(Ordering::Relaxed)
    );
}
