//! The stage-3B scenarios for membership: leader transfer to every peer, shrinking a region to
//! one peer and growing it back (a removed peer's data is destroyed; a re-added one catches up
//! by snapshot, also with a new peer id on the same store), removing the leader (also of a
//! two-peer region), and the generic runner with random conf changes under each fault mix.

use std::time::Duration;

use kv::keys;
use proto::metapb;
use proto::raft_serverpb::{PeerState, RegionLocalState};
use test_raftstore::{generic_test, Cluster};

const WAIT: Duration = Duration::from_secs(15);

fn cluster(stores: usize) -> (Cluster, u64) {
    let mut cfg = raftstore::Config::test();
    cfg.raft_log_gc_count_limit = 10;
    let mut cluster = Cluster::new(stores, cfg);
    cluster.start();
    let region_id = cluster.get_region(b"").id;
    cluster.wait_leader(region_id, WAIT);
    (cluster, region_id)
}

fn conf_ver(cluster: &Cluster, region_id: u64) -> u64 {
    cluster
        .region_by_id(region_id)
        .region_epoch
        .unwrap_or_default()
        .conf_ver
}

fn peer_of(cluster: &Cluster, region_id: u64, store: u64) -> metapb::Peer {
    *cluster
        .region_by_id(region_id)
        .peers
        .iter()
        .find(|p| p.store_id == store)
        .unwrap_or_else(|| panic!("store {store} has no peer of region {region_id}"))
}

/// Waits until store `store` has no peer of `region_id` left: Tombstone state, no data.
fn wait_destroyed(cluster: &Cluster, region_id: u64, store: u64, key: &[u8]) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let engines = cluster.engines(store).expect("store runs");
        let state: Option<RegionLocalState> =
            kv::engine::get_msg(&engines.kv, &keys::region_state_key(region_id)).unwrap();
        drop(engines);
        let tombstone = state.is_some_and(|s| s.state == PeerState::Tombstone as i32);
        if tombstone && cluster.get_on_store(store, key).is_none() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "store {store}: region {region_id} not destroyed (tombstone: {tombstone})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn transfer_leader_3b() {
    let (cluster, region_id) = cluster(5);
    let peers = cluster.region_by_id(region_id).peers;
    for (i, p) in peers.iter().enumerate() {
        cluster.must_transfer_leader(region_id, *p);
        let k = format!("k{i}").into_bytes();
        cluster.must_put(&k, b"v");
        assert_eq!(cluster.must_get(&k).as_deref(), Some(&b"v"[..]));
        assert_eq!(
            cluster.leader_of_region(region_id).map(|l| l.id),
            Some(p.id)
        );
    }
}

#[test]
fn basic_conf_change_3b() {
    let (cluster, region_id) = cluster(5);
    let stores = cluster.store_ids();
    cluster.must_transfer_leader(region_id, peer_of(&cluster, region_id, stores[0]));
    cluster.must_put(b"k0", b"v0");
    for s in &stores {
        cluster.wait_value_on_store(*s, b"k0", Some(b"v0"), WAIT);
    }
    // Shrink to one peer; conf_ver grows with every change.
    let mut ver = conf_ver(&cluster, region_id);
    for &s in &stores[1..] {
        cluster.must_remove_peer(region_id, peer_of(&cluster, region_id, s));
        let now = conf_ver(&cluster, region_id);
        assert!(now > ver, "conf_ver did not grow: {ver} -> {now}");
        ver = now;
    }
    assert_eq!(cluster.region_by_id(region_id).peers.len(), 1);
    cluster.must_put(b"k1", b"v1");
    assert_eq!(cluster.must_get(b"k1").as_deref(), Some(&b"v1"[..]));
    for &s in &stores[1..] {
        wait_destroyed(&cluster, region_id, s, b"k0");
        assert_eq!(cluster.get_on_store(s, b"k1"), None);
    }
    // Enough writes that the log is compacted: the re-added peers catch up by snapshot.
    for i in 0..30 {
        cluster.must_put(format!("x{i:02}").as_bytes(), b"y");
    }
    let (snaps_before, _) = cluster.snapshot_counts();
    cluster.must_add_peer(region_id, cluster.new_peer(stores[1]));
    cluster.wait_value_on_store(stores[1], b"k1", Some(b"v1"), WAIT);
    cluster.wait_value_on_store(stores[1], b"x29", Some(b"y"), WAIT);
    assert!(
        cluster.snapshot_counts().0 > snaps_before,
        "no snapshot sent"
    );

    // A learner first, then promoted.
    let learner = cluster.new_peer(stores[2]);
    cluster.must_add_learner(region_id, learner);
    cluster.wait_value_on_store(stores[2], b"k1", Some(b"v1"), WAIT);
    cluster.must_add_peer(region_id, learner);
    cluster.must_put(b"k2", b"v2");
    for s in &stores[..3] {
        cluster.wait_value_on_store(*s, b"k2", Some(b"v2"), WAIT);
    }

    // Remove store 1's peer and add it back under a new id on the same store.
    cluster.must_remove_peer(region_id, peer_of(&cluster, region_id, stores[1]));
    wait_destroyed(&cluster, region_id, stores[1], b"k2");
    cluster.must_add_peer(region_id, cluster.new_peer(stores[1]));
    cluster.must_put(b"k3", b"v3");
    cluster.wait_value_on_store(stores[1], b"k2", Some(b"v2"), WAIT);
    cluster.wait_value_on_store(stores[1], b"k3", Some(b"v3"), WAIT);
    // The stores never re-added kept nothing.
    for &s in &stores[3..] {
        assert_eq!(cluster.get_on_store(s, b"k3"), None);
    }
}

#[test]
fn remove_leader_3b() {
    let (cluster, region_id) = cluster(3);
    cluster.must_put(b"k1", b"v1");
    let leader = cluster.wait_leader(region_id, WAIT);
    cluster.must_remove_peer(region_id, leader);
    wait_destroyed(&cluster, region_id, leader.store_id, b"k1");
    let new_leader = cluster.wait_leader(region_id, WAIT);
    assert_ne!(new_leader.store_id, leader.store_id);
    cluster.must_put(b"k2", b"v2");
    assert_eq!(cluster.region_by_id(region_id).peers.len(), 2);

    // A two-peer region loses its leader: the other peer carries on alone.
    cluster.must_remove_peer(region_id, new_leader);
    wait_destroyed(&cluster, region_id, new_leader.store_id, b"k2");
    assert_eq!(cluster.region_by_id(region_id).peers.len(), 1);
    cluster.must_put(b"k3", b"v3");
    assert_eq!(cluster.must_get(b"k1").as_deref(), Some(&b"v1"[..]));
    assert_eq!(cluster.must_get(b"k3").as_deref(), Some(&b"v3"[..]));
}

#[test]
fn conf_change_recover_3b() {
    generic_test(1, false, true, false, None, true, false);
}

#[test]
fn conf_change_recover_many_clients_3b() {
    generic_test(20, false, true, false, None, true, false);
}

#[test]
fn conf_change_unreliable_3b() {
    generic_test(5, true, false, false, None, true, false);
}

#[test]
fn conf_change_unreliable_recover_3b() {
    generic_test(5, true, true, false, None, true, false);
}

#[test]
fn conf_change_snapshot_unreliable_recover_3b() {
    generic_test(5, true, true, false, Some(100), true, false);
}

#[test]
fn conf_change_snapshot_unreliable_recover_partition_3b() {
    generic_test(5, true, true, true, Some(100), true, false);
}
