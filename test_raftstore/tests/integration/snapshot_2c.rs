//! The stage-2C scenarios: raft log GC and snapshots. A store cut off while the log is compacted
//! must catch up through a snapshot, also when the snapshot is corrupted on the wire and when the
//! store crashes in the middle of applying one; the generic runner checks the log bound and
//! linearizability under each fault mix.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::{keys, Cf, WriteBatch};
use proto::eraftpb::{Entry, MessageType};
use proto::raft_serverpb::RaftMessage;
use proto::raft_serverpb::{PeerState, RaftApplyState, RaftTruncatedState, RegionLocalState};
use protobuf::Message as _;
use test_raftstore::{
    generic_test, put_req, Cluster, Filter, FilterAction, IsolationFilter, MessageTypeFilter,
};

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
    three_stores_with(raftstore::Config::test())
}

/// [`three_stores`] with `cfg` otherwise.
fn three_stores_with(mut cfg: raftstore::Config) -> (Cluster, u64, u64) {
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
/// compacted past what `store` has, and heals (other filters stay). Returns the leader's
/// truncated index then.
fn write_while_isolated(cluster: &Cluster, region_id: u64, store: u64, n: usize) -> u64 {
    let filter: Arc<dyn Filter> = Arc::new(IsolationFilter(store));
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
    let truncated = loop {
        let truncated = cluster
            .apply_state(leader.store_id, region_id)
            .and_then(|a| a.truncated_state)
            .unwrap_or_default()
            .index;
        if truncated > cut_off_at {
            break truncated;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leader never compacted past {cut_off_at} (truncated at {truncated})"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    cluster.remove_filter(&filter);
    truncated
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

/// A sender learns that a snapshot went through once it did, as the gRPC transport reports it
/// at the end of the stream. Then a follower whose only answer to the snapshot is lost catches
/// up at the leader's next probe, instead of waiting out `snapshot_send_timeout` (a minute here):
/// in the unreliable generic tests that wait stalled whole regions for rounds.
#[test]
fn a_lost_answer_to_a_snapshot_costs_no_send_timeout_2c() {
    let mut cfg = raftstore::Config::test();
    cfg.snapshot_send_timeout = Duration::from_secs(60);
    let (cluster, region_id, store) = three_stores_with(cfg);
    // The follower's answers that accept something are lost until it has applied the snapshot:
    // the first of them is its answer to the snapshot. (Its refusals pass: they are how the
    // leader learns that it needs one.)
    let lost = Arc::new(LostAcceptance {
        store,
        dropped: AtomicU64::new(0),
    });
    let answers: Arc<dyn Filter> = lost.clone();
    cluster.add_filter(answers.clone());
    let truncated = write_while_isolated(&cluster, region_id, store, 20);
    let deadline = Instant::now() + WAIT;
    while cluster.apply_state(store, region_id).unwrap().applied_index < truncated
        || lost.dropped.load(Ordering::SeqCst) == 0
    {
        assert!(
            Instant::now() < deadline,
            "the follower never applied a snapshot and answered it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.remove_filter(&answers);
    let (delivered, _) = cluster.snapshot_counts();
    assert!(delivered >= 1, "the follower caught up without a snapshot");
    // Appends must reach the follower again well before the send timeout.
    cluster.must_put(b"after", b"snapshot");
    cluster.wait_value_on_store(store, b"after", Some(b"snapshot"), WAIT);
}

/// Drops the append answers from `store` that accept entries or a snapshot, and counts them.
struct LostAcceptance {
    store: u64,
    dropped: AtomicU64,
}

impl Filter for LostAcceptance {
    fn before(&self, msg: &RaftMessage) -> FilterAction {
        let from = msg.from_peer.as_ref().map_or(0, |p| p.store_id);
        match proto::eraftpb::Message::parse_from_bytes(&msg.message) {
            Ok(m)
                if from == self.store
                    && m.get_msg_type() == MessageType::MsgAppendResponse
                    && !m.get_reject() =>
            {
                self.dropped.fetch_add(1, Ordering::SeqCst);
                FilterAction::Drop
            }
            _ => FilterAction::Pass,
        }
    }
}

/// The term of log entry `index` on a store, from its raft engine or truncated state.
fn term_of(engines: &kv::Engines, region_id: u64, index: u64, apply: &RaftApplyState) -> u64 {
    let t = apply.truncated_state.unwrap_or_default();
    if t.index == index {
        return t.term;
    }
    let bytes = engines
        .raft_log
        .entry(region_id, index)
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
    let engines = kv::Engines::open_with(&dir, test_raftstore::raft_log_kind()).unwrap();
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

/// The last index of store `store`'s raft log for `region_id`.
fn last_index(cluster: &Cluster, store: u64, region_id: u64) -> u64 {
    let engines = cluster.engines(store).expect("the store runs");
    raftstore::read_raft_state(&engines, region_id)
        .expect("reading the raft state")
        .map_or(0, |s| s.last_index)
}

/// A leader's proposal reaches the followers, but the leader never learns that it committed:
/// cut off, it is deposed, the new leader commits the entry and compacts its log past it, and
/// the old leader catches up by snapshot. The proposal is inside that snapshot; its proposer
/// must not be told it was not applied (`StaleCommand` would make a client send a
/// compare-and-swap again, to be refused by its own write), only that its outcome is unknown.
#[test]
fn proposal_covered_by_a_snapshot_is_undetermined_2c() {
    let (cluster, region_id, _) = three_stores();
    let cluster = Arc::new(cluster);
    let no_commit: Arc<dyn Filter> =
        Arc::new(MessageTypeFilter::new(&[MessageType::MsgAppendResponse]));
    // Leadership may move before the proposal arrives (a stalled machine misses heartbeats);
    // such a round proves nothing and is run again.
    let mut round = 0;
    let (old, followers, proposed_at, pending) = loop {
        round += 1;
        assert!(round <= 3, "the leader never kept leading long enough");
        let old = cluster.wait_leader(region_id, WAIT);
        let followers: Vec<u64> = cluster
            .store_ids()
            .into_iter()
            .filter(|&s| s != old.store_id)
            .collect();
        cluster.add_filter(no_commit.clone());
        let proposed_at = last_index(&cluster, old.store_id, region_id) + 1;
        let pending = {
            let cluster = cluster.clone();
            std::thread::spawn(move || {
                let put = vec![put_req(b"x", b"in the snapshot")];
                cluster.call_on_store(old.store_id, b"x", put, WAIT * 4)
            })
        };
        let deadline = Instant::now() + WAIT;
        let reached = loop {
            let behind = followers
                .iter()
                .any(|&f| last_index(&cluster, f, region_id) < proposed_at);
            if !behind {
                break true;
            }
            if pending.is_finished() || Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if reached {
            break (old, followers, proposed_at, pending);
        }
        cluster.remove_filter(&no_commit);
        let answer = pending.join().unwrap().map(|r| r.response);
        eprintln!("round {round}: the proposal did not reach the followers: {answer:?}");
    };
    cluster.remove_filter(&no_commit);
    cluster.add_filter(Arc::new(IsolationFilter(old.store_id)));
    cluster.wait_leader_other_than(region_id, old.store_id, WAIT);
    for &f in &followers {
        cluster.wait_value_on_store(f, b"x", Some(b"in the snapshot"), WAIT);
    }
    for i in 0..3 * LIMIT as usize {
        cluster.must_put(&key(i), &value(i));
    }
    let leader = cluster.wait_leader(region_id, WAIT);
    let deadline = Instant::now() + WAIT;
    while cluster
        .apply_state(leader.store_id, region_id)
        .and_then(|a| a.truncated_state)
        .unwrap_or_default()
        .index
        <= proposed_at
    {
        assert!(
            Instant::now() < deadline,
            "the leader never compacted past the entry"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let snapshots_before = cluster.snapshot_counts().0;
    cluster.clear_filters();
    cluster.wait_value_on_store(old.store_id, b"x", Some(b"in the snapshot"), WAIT);
    assert!(
        cluster.snapshot_counts().0 > snapshots_before,
        "no snapshot was sent"
    );
    // Entries after the snapshot: applying them must not pass the proposal off as overwritten.
    cluster.must_put(b"after", b"the snapshot");
    cluster.wait_value_on_store(old.store_id, b"after", Some(b"the snapshot"), WAIT);
    let resp = pending.join().unwrap().expect("the old leader answers");
    let err = resp
        .response
        .header
        .and_then(|h| h.error)
        .expect("an error");
    assert!(!err.proves_not_applied(), "{err:?}");
    assert!(err.message.contains("outcome"), "{err:?}");
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
