//! The stage-2C scenarios: raft log GC and snapshots. A store cut off while the log is compacted
//! must catch up through a snapshot, also when the snapshot is corrupted on the wire and when the
//! store crashes in the middle of applying one; the generic runner checks the log bound and
//! linearizability under each fault mix.

use std::sync::Arc;
use std::time::Duration;

use kv::{keys, Cf, WriteBatch};
use proto::eraftpb::Entry;
use proto::raft_serverpb::RaftMessage;
use proto::raft_serverpb::{PeerState, RaftApplyState, RaftTruncatedState, RegionLocalState};
use protobuf::Message as _;
use test_raftstore::{generic_test, put_req, Cluster, Filter, FilterAction, IsolationFilter};

const WAIT: Duration = Duration::from_secs(15);
const LIMIT: u64 = 10;

fn key(i: usize) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("v{i}").into_bytes()
}

/// A started 3-store cluster with log GC at [`LIMIT`], its region, and a follower store.
fn three_stores() -> (Cluster, u64, u64) {
    let mut cfg = raftstore::Config::test();
    cfg.raft_log_gc_count_limit = LIMIT;
    let mut cluster = Cluster::new(3, cfg);
    cluster.start();
    let region_id = cluster.get_region(b"").id;
    let leader = cluster.wait_leader(region_id, WAIT);
    let follower = cluster
        .store_ids()
        .into_iter()
        .find(|&s| s != leader.store_id)
        .expect("a follower");
    (cluster, region_id, follower)
}

/// Cuts `store` off, writes keys 0..n (deleting key 0 at the end) until the leader's log is
/// compacted past what `store` has, and heals.
fn write_while_isolated(cluster: &Cluster, region_id: u64, store: u64, n: usize) {
    let filter = Arc::new(IsolationFilter(store));
    cluster.add_filter(filter.clone());
    for i in 0..n {
        cluster.must_put(&key(i), &value(i));
    }
    cluster.must_delete(&key(0));
    let cut_off_at = cluster
        .apply_state(store, region_id)
        .expect("the isolated store runs")
        .applied_index;
    // The log must lose what the isolated store lacks, or this would test nothing.
    let leader = cluster.wait_leader(region_id, WAIT);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let truncated = cluster
            .apply_state(leader.store_id, region_id)
            .and_then(|a| a.truncated_state)
            .unwrap_or_default()
            .index;
        if truncated > cut_off_at {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leader never compacted past {cut_off_at} (truncated at {truncated})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.clear_filters();
}

/// Store `store` holds exactly keys 1..n with their values, and no key 0.
fn wait_caught_up(cluster: &Cluster, store: u64, n: usize) {
    for i in 1..n {
        cluster.wait_value_on_store(store, &key(i), Some(&value(i)), WAIT);
    }
    cluster.wait_value_on_store(store, &key(0), None, WAIT);
}

#[test]
fn one_snapshot_2c() {
    let (cluster, region_id, store) = three_stores();
    // A bootstrapped region starts truncated at (5, 5).
    let initial = cluster.apply_state(store, region_id).unwrap();
    assert_eq!(
        initial.truncated_state,
        Some(RaftTruncatedState { index: 5, term: 5 })
    );
    write_while_isolated(&cluster, region_id, store, 20);
    wait_caught_up(&cluster, store, 20);
    let (delivered, refused) = cluster.snapshot_counts();
    assert!(delivered >= 1, "the store caught up without a snapshot");
    assert_eq!(refused, 0);
    // Exactly the right keys: nothing besides k001..k019.
    let engines = cluster.engines(store).unwrap();
    let snap = kv::EngineSnapshot::new(&engines.kv);
    let mut it = snap
        .iter_cf(Cf::Default, keys::data_key(b""), keys::data_end_key(b""))
        .unwrap();
    it.seek_to_first();
    let mut found = Vec::new();
    while it.valid() {
        found.push(keys::origin_key(it.key().unwrap()).to_vec());
        it.next();
    }
    drop(it);
    drop((snap, engines));
    assert_eq!(found, (1..20).map(key).collect::<Vec<_>>());

    cluster.stop_node(store);
    cluster.run_node(store);
    wait_caught_up(&cluster, store, 20);
    cluster.must_put(b"after", b"restart");
    cluster.wait_value_on_store(store, b"after", Some(b"restart"), WAIT);
    cluster.wait_log_bound(region_id, LIMIT, WAIT);
}

/// Loses every message sent to one store; what it sends still arrives.
struct Deaf(u64);

impl Filter for Deaf {
    fn before(&self, msg: &RaftMessage) -> FilterAction {
        if msg.to_peer.as_ref().is_some_and(|p| p.store_id == self.0) {
            FilterAction::Drop
        } else {
            FilterAction::Pass
        }
    }
}

/// Found by `tessera-chaos` (a leader cut off one way, then caught up by snapshot): a leader
/// that can send but not hear proposes a write; the others commit it under a new leader and
/// compact past it; the old leader catches up by snapshot. It never applies the entry itself,
/// so it cannot know whether its proposal committed, and must not call it stale (a client would
/// resend it and apply the write a second time, after other writes).
#[test]
fn proposal_overtaken_by_snapshot_is_not_called_stale_2c() {
    let (cluster, region_id, _) = three_stores();
    let old = cluster.wait_leader(region_id, WAIT).store_id;
    cluster.add_filter(Arc::new(Deaf(old)));
    let proposed = std::thread::scope(|s| {
        let answer = s.spawn(|| {
            cluster.call_on_store(
                old,
                b"x",
                vec![put_req(b"x", b"once")],
                Duration::from_secs(60),
            )
        });
        // The others elect a leader of their own, which commits the entry it was sent.
        let other = cluster
            .store_ids()
            .into_iter()
            .find(|&s| s != old)
            .expect("another store");
        cluster.wait_value_on_store(other, b"x", Some(b"once"), WAIT);
        for i in 0..3 * LIMIT as usize {
            cluster.must_put(&key(i), &value(i));
        }
        cluster.must_put(b"x", b"later");
        let new = cluster
            .wait_leader_other_than(region_id, old, WAIT)
            .store_id;
        let deadline = std::time::Instant::now() + WAIT;
        while cluster
            .apply_state(new, region_id)
            .and_then(|a| a.truncated_state)
            .unwrap_or_default()
            .index
            <= cluster.apply_state(old, region_id).unwrap().applied_index + 1
        {
            assert!(std::time::Instant::now() < deadline, "no compaction");
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster.clear_filters();
        // Entries after the snapshot: without the fix, applying them answered "stale".
        cluster.must_put(b"y", b"after");
        answer.join().expect("the caller")
    });
    let resp = proposed.expect("an answer");
    let error = resp
        .response
        .header
        .and_then(|h| h.error)
        .expect("an error");
    assert!(error.stale_command.is_none(), "called stale: {error:?}");
    assert!(error.message.contains("outcome is unknown"), "{error:?}");
    cluster.wait_value_on_store(old, b"x", Some(b"later"), WAIT);
}

#[test]
fn corrupt_snapshot_is_refused_and_retried_2c() {
    let (cluster, region_id, store) = three_stores();
    cluster.corrupt_next_snapshots(1);
    write_while_isolated(&cluster, region_id, store, 20);
    wait_caught_up(&cluster, store, 20);
    let (delivered, refused) = cluster.snapshot_counts();
    assert!(refused >= 1, "the corrupted snapshot was not refused");
    assert!(
        delivered >= 1,
        "no good snapshot followed the corrupted one"
    );
}

/// The term of log entry `index` on a store, from its raft engine or truncated state.
fn term_of(engines: &kv::Engines, region_id: u64, index: u64, apply: &RaftApplyState) -> u64 {
    let t = apply.truncated_state.unwrap_or_default();
    if t.index == index {
        return t.term;
    }
    let bytes = kv::engine::get_cf(
        &engines.raft,
        Cf::Default,
        &keys::raft_log_key(region_id, index),
    )
    .unwrap()
    .expect("the applied entry is in the log");
    Entry::parse_from_bytes(&bytes).unwrap().term
}

/// A crash after the snapshot's states were written and the old data deleted, before the files
/// were ingested: the store finds `Applying` on restart and applies the snapshot again.
#[test]
fn crash_during_snapshot_apply_recovers_2c() {
    let (cluster, region_id, store) = three_stores();
    write_while_isolated(&cluster, region_id, store, 20);
    wait_caught_up(&cluster, store, 20);
    let region = cluster.get_region(b"");
    let engines = cluster.engines(store).unwrap();
    let apply = cluster.apply_state(store, region_id).unwrap();
    let index = apply.applied_index;
    let term = term_of(&engines, region_id, index, &apply);
    drop(engines);
    cluster.stop_node(store);

    // Rebuild the store's disk as the crash would have left it: a received snapshot of its
    // region at the applied index, the states of step 1, and the data half gone.
    let dir = cluster.store_dir(store);
    let engines = kv::Engines::open(&dir).unwrap();
    let snap_key = snap::SnapKey::new(region_id, term, index);
    let tmp = tempfile::tempdir().unwrap();
    let builder = snap::SnapManager::open(tmp.path(), Default::default()).unwrap();
    builder
        .build(snap_key, &kv::EngineSnapshot::new(&engines.kv), &region)
        .unwrap();
    let store_snaps = snap::SnapManager::open(dir.join("snap"), Default::default()).unwrap();
    snap::transfer(&builder, &store_snaps, snap_key, 1024).unwrap();
    drop(store_snaps);
    let mut wb = WriteBatch::new(&engines.kv);
    wb.put_msg(
        &keys::region_state_key(region_id),
        &RegionLocalState {
            state: PeerState::Applying as i32,
            region: Some(region),
        },
    );
    wb.put_msg(
        &keys::apply_state_key(region_id),
        &RaftApplyState {
            applied_index: index,
            truncated_state: Some(RaftTruncatedState { index, term }),
        },
    );
    for i in 1..10 {
        wb.delete_cf(Cf::Default, &keys::data_key(&key(i))).unwrap();
    }
    wb.put_cf(Cf::Default, &keys::data_key(b"debris"), b"x")
        .unwrap();
    wb.write(true).unwrap();
    drop((wb, engines));

    cluster.run_node(store);
    wait_caught_up(&cluster, store, 20);
    cluster.wait_value_on_store(store, b"debris", None, WAIT);
    cluster.must_put(b"after", b"crash");
    cluster.wait_value_on_store(store, b"after", Some(b"crash"), WAIT);
    let state: RegionLocalState = kv::engine::get_msg(
        &cluster.engines(store).unwrap().kv,
        &keys::region_state_key(region_id),
    )
    .unwrap()
    .unwrap();
    assert_eq!(state.state, PeerState::Normal as i32);
}

#[test]
fn snapshot_recover_2c() {
    generic_test(1, false, true, false, Some(100), false, false);
}

#[test]
fn snapshot_recover_many_clients_2c() {
    generic_test(20, false, true, false, Some(100), false, false);
}

#[test]
fn snapshot_unreliable_2c() {
    generic_test(5, true, false, false, Some(100), false, false);
}

#[test]
fn snapshot_unreliable_recover_2c() {
    generic_test(5, true, true, false, Some(100), false, false);
}

#[test]
fn snapshot_unreliable_recover_concurrent_partition_2c() {
    generic_test(5, true, true, true, Some(100), false, false);
}
