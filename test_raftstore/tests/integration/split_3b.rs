//! The stage-3B scenarios for splits: a region split by its own size check while a store is cut
//! off (ranges tile the original, requests for the wrong region are refused, the isolated store
//! catches up), a split at a chosen key that survives restarts, and the generic runner with small
//! regions under each fault mix.

use std::sync::Arc;
use std::time::Duration;

use raftstore::Config;
use test_raftstore::{generic_test, get_req, put_req, Cluster, PartitionFilter};

const WAIT: Duration = Duration::from_secs(20);

fn key(i: usize) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i:03}-{}", "v".repeat(20)).into_bytes()
}

#[test]
fn one_split_3b() {
    let mut cfg = Config::test();
    cfg.region_max_size = 800;
    cfg.region_split_size = 500;
    let mut cluster = Cluster::new(5, cfg);
    cluster.start();
    let region = cluster.get_region(b"");
    let leader = cluster.wait_leader(region.id, WAIT);
    cluster.must_put(b"a", b"first");

    // One follower misses everything from here on, splits included.
    let isolated = cluster
        .store_ids()
        .into_iter()
        .find(|s| *s != leader.store_id)
        .expect("a follower");
    let others: Vec<u64> = cluster
        .store_ids()
        .into_iter()
        .filter(|s| *s != isolated)
        .collect();
    cluster.add_filter(Arc::new(PartitionFilter::new(&[isolated], &others)));
    for i in 0..100 {
        cluster.must_put(&key(i), &value(i));
    }
    let regions = cluster.wait_regions(WAIT, |r| r.len() > 1);
    let versions: Vec<u64> = regions
        .iter()
        .map(|r| r.region_epoch.unwrap_or_default().version)
        .collect();
    assert!(
        versions.iter().all(|v| *v > 1),
        "every region went through a split: {versions:?}"
    );
    cluster.clear_filters();

    // A request for a right-hand key sent to the left region is refused with the range.
    let left = cluster.get_region(b"a");
    let right = cluster.get_region(&key(99));
    assert_ne!(left.id, right.id);
    assert!(left.start_key.is_empty() && right.end_key.is_empty());
    let left_leader = cluster.wait_leader(left.id, WAIT);
    let req = proto::raft_cmdpb::RaftCmdRequest {
        header: Some(proto::raft_cmdpb::RaftRequestHeader {
            region_id: left.id,
            peer: Some(left_leader),
            region_epoch: left.region_epoch,
            term: 0,
        }),
        requests: vec![get_req(&key(99))],
        admin_request: None,
    };
    let resp = cluster
        .call_raw(left_leader.store_id, req, WAIT)
        .expect("the left leader answers");
    let err = resp
        .response
        .header
        .and_then(|h| h.error)
        .expect("an error");
    let kn = err.key_not_in_region.expect("KeyNotInRegion");
    assert_eq!(kn.key, key(99));
    assert_eq!(kn.region_id, left.id);
    assert_eq!(kn.end_key, left.end_key);

    // Every key reads back through its region, and the isolated store catches up on all of
    // them (through the splits it missed, or snapshots of the new regions).
    assert_eq!(cluster.must_get(b"a").as_deref(), Some(&b"first"[..]));
    for i in 0..100 {
        assert_eq!(cluster.must_get(&key(i)), Some(value(i)));
    }
    for i in 0..100 {
        cluster.wait_value_on_store(isolated, &key(i), Some(&value(i)), WAIT);
    }
    let router = cluster.router(isolated).expect("isolated store runs");
    for r in cluster.regions() {
        let deadline = std::time::Instant::now() + WAIT;
        while !router.has_region(r.id) {
            assert!(
                std::time::Instant::now() < deadline,
                "isolated store {isolated} has no peer of region {}",
                r.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn split_at_a_chosen_key_survives_restart_3b() {
    let mut cluster = Cluster::new(3, Config::test());
    cluster.start();
    let region = cluster.get_region(b"");
    cluster.wait_leader(region.id, WAIT);
    for k in [&b"a"[..], b"l", b"m", b"z"] {
        cluster.must_put(k, k);
    }
    cluster.must_split(region.id, b"m");
    let regions = cluster.wait_regions(WAIT, |r| r.len() == 2);
    let (left, right) = (&regions[0], &regions[1]);
    assert_eq!(left.id, region.id, "the left half keeps the region id");
    assert_eq!(left.end_key, b"m");
    assert_eq!(right.start_key, b"m");
    let old = region.region_epoch.unwrap_or_default();
    for r in [left, right] {
        let e = r.region_epoch.unwrap_or_default();
        assert_eq!((e.version, e.conf_ver), (old.version + 1, old.conf_ver));
    }
    let stores = |r: &proto::metapb::Region| {
        let mut s: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
        s.sort();
        s
    };
    assert_eq!(stores(right), stores(&region));
    assert!(right
        .peers
        .iter()
        .all(|p| region.peers.iter().all(|q| q.id != p.id)));

    // A write carrying the old epoch is refused; fresh requests go to the right halves.
    let leader = cluster.wait_leader(left.id, WAIT);
    let stale = proto::raft_cmdpb::RaftCmdRequest {
        header: Some(proto::raft_cmdpb::RaftRequestHeader {
            region_id: left.id,
            peer: Some(leader),
            region_epoch: region.region_epoch,
            term: 0,
        }),
        requests: vec![put_req(b"b", b"b")],
        admin_request: None,
    };
    let resp = cluster.call_raw(leader.store_id, stale, WAIT).unwrap();
    let err = resp
        .response
        .header
        .and_then(|h| h.error)
        .expect("an error");
    assert!(err.epoch_not_match.is_some(), "{err:?}");
    cluster.must_put(b"b", b"b");
    cluster.must_put(b"y", b"y");

    // Both halves come back after every store restarts, with their data.
    cluster.restart_all();
    for k in [&b"a"[..], b"b", b"l", b"m", b"y", b"z"] {
        assert_eq!(cluster.must_get(k).as_deref(), Some(k));
    }
    let after = cluster.wait_regions(WAIT, |r| r.len() == 2);
    assert_eq!(after[1].id, right.id);
    assert_eq!(cluster.must_scan(b"", b"").len(), 3, "left half: a, b, l");
}

#[test]
fn split_recover_1_client_3b() {
    generic_test(1, false, true, false, None, false, true);
}

#[test]
fn split_recover_20_clients_3b() {
    generic_test(20, false, true, false, None, false, true);
}

#[test]
fn split_unreliable_3b() {
    generic_test(5, true, false, false, None, false, true);
}

#[test]
fn split_unreliable_recover_3b() {
    generic_test(5, true, true, false, None, false, true);
}

#[test]
fn split_conf_change_snapshot_unreliable_recover_3b() {
    generic_test(5, true, true, false, Some(100), true, true);
}

#[test]
fn split_conf_change_snapshot_unreliable_recover_partition_3b() {
    generic_test(5, true, true, true, Some(100), true, true);
}

/// A store cut off through a split and then removed from the left half keeps a stale peer of
/// the whole old range. Its right-half peer is still a member of the right region, but the
/// store cannot create it while the stale peer's range overlaps. The stale peer must learn
/// that it was removed and make way, or the right region runs with one member short for ever
/// (and loses its quorum as soon as one more store is down).
#[test]
fn stale_peer_after_split_makes_way_3b() {
    let mut cluster = Cluster::new(3, Config::test());
    cluster.start();
    let region = cluster.get_region(b"");
    let leader = cluster.wait_leader(region.id, WAIT);
    cluster.must_put(b"a", b"1");
    let stale = cluster
        .store_ids()
        .into_iter()
        .find(|s| *s != leader.store_id)
        .expect("a follower");
    cluster.wait_value_on_store(stale, b"a", Some(b"1"), WAIT);
    let others: Vec<u64> = cluster
        .store_ids()
        .into_iter()
        .filter(|s| *s != stale)
        .collect();

    // While `stale` hears nothing: split, then remove its peer from the left half.
    cluster.add_filter(Arc::new(PartitionFilter::new(&[stale], &others)));
    cluster.must_split(region.id, b"m");
    let regions = cluster.wait_regions(WAIT, |r| r.len() == 2);
    let (left, right) = (regions[0].clone(), regions[1].clone());
    let removed = *left
        .peers
        .iter()
        .find(|p| p.store_id == stale)
        .expect("the left half has a peer on the cut-off store");
    cluster.must_remove_peer(left.id, removed);
    assert!(right.peers.iter().any(|p| p.store_id == stale));
    cluster.clear_filters();

    // The right half reaches its peer on `stale`, which holds its data only once the stale
    // peer of the old range is gone (and took the left half's data with it).
    cluster.must_put(b"x", b"2");
    cluster.wait_value_on_store(stale, b"x", Some(b"2"), WAIT);
    cluster.wait_value_on_store(stale, b"a", None, WAIT);

    // With that peer live, the right half keeps its quorum when another store stops.
    let stopped = others[0];
    cluster.stop_node(stopped);
    cluster.must_put(b"y", b"3");
    assert_eq!(cluster.must_get(b"x").as_deref(), Some(&b"2"[..]));
    cluster.wait_value_on_store(stale, b"y", Some(b"3"), WAIT);
}
