//! Region heartbeat processing: epochs, overlaps, pending peers, leaders, sizes and the
//! per-store counts derived from them.

use proto::metapb;
use scheduler::{Error, StoreCounts};

use crate::common::*;

fn counts(cluster: &scheduler::Cluster, store_id: u64) -> StoreCounts {
    cluster.get_store(store_id).expect("store").counts
}

#[test]
fn region_heartbeat_unchanged_region_3c() {
    let (cluster, _) = cluster(1, 1);
    let r = region(1, "", "", &[(101, 1)], 1, 1);
    must_heartbeat(&cluster, &heartbeat(&r, 1, 10));
    must_heartbeat(&cluster, &heartbeat(&r, 1, 10));
    let got = cluster.get_region_by_id(1).unwrap();
    assert_eq!(got.region, r);
    assert_eq!(got.leader, Some(peer(101, 1)));
    assert_eq!(cluster.regions().len(), 1);
}

#[test]
fn region_heartbeat_version_rules_3c() {
    let (cluster, _) = cluster(1, 1);
    let at = |conf_ver, version| region(1, "", "", &[(101, 1)], conf_ver, version);
    // Version bump: accepted.
    must_heartbeat(&cluster, &heartbeat(&at(1, 2), 1, 0));
    // Lower version, even with a higher conf_ver: stale.
    let err = cluster
        .region_heartbeat(&heartbeat(&at(5, 1), 1, 0))
        .unwrap_err();
    assert!(
        matches!(err, Error::StaleRegion { region_id: 1, .. }),
        "{err}"
    );
    assert_eq!(cluster.get_region_by_id(1).unwrap().region, at(1, 2));
    // Both bumped: accepted.
    must_heartbeat(&cluster, &heartbeat(&at(2, 3), 1, 0));
    // Same version, lower conf_ver: stale.
    let err = cluster
        .region_heartbeat(&heartbeat(&at(1, 3), 1, 0))
        .unwrap_err();
    assert!(matches!(err, Error::StaleRegion { .. }), "{err}");
    // Conf_ver bump alone: accepted.
    must_heartbeat(&cluster, &heartbeat(&at(3, 3), 1, 0));
    assert_eq!(cluster.get_region_by_id(1).unwrap().region, at(3, 3));
}

#[test]
fn region_heartbeat_rejects_malformed_3c() {
    let (cluster, _) = cluster(1, 1);
    let r = region(1, "", "", &[(101, 1)], 1, 1);
    let mut no_leader = heartbeat(&r, 1, 0);
    no_leader.leader = Some(peer(999, 9));
    assert!(matches!(
        cluster.region_heartbeat(&no_leader),
        Err(Error::InvalidArgument(_))
    ));
    let mut no_epoch = heartbeat(&r, 1, 0);
    no_epoch.region.as_mut().unwrap().region_epoch = None;
    assert!(matches!(
        cluster.region_heartbeat(&no_epoch),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn pending_peers_added_and_removed_3c() {
    let (cluster, _) = cluster(3, 3);
    let r = region_on(1, "", "", &[1, 2, 3], 1);
    let mut hb = heartbeat(&r, 1, 10);
    hb.pending_peers = vec![peer(102, 2), peer(103, 3)];
    must_heartbeat(&cluster, &hb);
    assert_eq!(counts(&cluster, 2).pending_peer_count, 1);
    assert_eq!(counts(&cluster, 3).pending_peer_count, 1);
    assert_eq!(cluster.get_region(b"k").unwrap().pending_peers.len(), 2);
    hb.pending_peers = vec![peer(103, 3)];
    must_heartbeat(&cluster, &hb);
    assert_eq!(counts(&cluster, 2).pending_peer_count, 0);
    hb.pending_peers.clear();
    must_heartbeat(&cluster, &hb);
    for s in 1..=3 {
        assert_eq!(counts(&cluster, s).pending_peer_count, 0, "store {s}");
    }
}

#[test]
fn peers_removed_and_added_back_3c() {
    let (cluster, _) = cluster(1, 3);
    let full = region_on(1, "", "", &[1, 2, 3], 1);
    must_heartbeat(&cluster, &heartbeat(&full, 1, 10));
    assert_eq!(counts(&cluster, 3).region_count, 1);
    let mut shrunk = region_on(1, "", "", &[1, 2], 1);
    shrunk.region_epoch = Some(metapb::RegionEpoch {
        conf_ver: 2,
        version: 1,
    });
    must_heartbeat(&cluster, &heartbeat(&shrunk, 1, 10));
    assert_eq!(counts(&cluster, 3).region_count, 0);
    assert_eq!(counts(&cluster, 2).region_count, 1);
    let mut back = full.clone();
    back.region_epoch = Some(metapb::RegionEpoch {
        conf_ver: 3,
        version: 1,
    });
    must_heartbeat(&cluster, &heartbeat(&back, 1, 10));
    assert_eq!(counts(&cluster, 3).region_count, 1);
    assert_eq!(
        stores_of(&cluster.get_region_by_id(1).unwrap().region),
        vec![1, 2, 3]
    );
}

#[test]
fn leader_change_and_size_change_3c() {
    let (cluster, _) = cluster(3, 3);
    let r = region_on(1, "", "", &[1, 2, 3], 1);
    must_heartbeat(&cluster, &heartbeat(&r, 1, 10));
    assert_eq!(
        (
            counts(&cluster, 1).leader_count,
            counts(&cluster, 1).leader_size
        ),
        (1, 10)
    );
    must_heartbeat(&cluster, &heartbeat(&r, 2, 30));
    assert_eq!(counts(&cluster, 1).leader_count, 0);
    let s2 = counts(&cluster, 2);
    assert_eq!(
        (s2.leader_count, s2.leader_size, s2.region_size),
        (1, 30, 30)
    );
    assert_eq!(counts(&cluster, 3).region_size, 30);
    let info = cluster.get_region_by_id(1).unwrap();
    assert_eq!((info.approximate_size, info.approximate_keys), (30, 30));
    assert_eq!(info.leader, Some(peer(102, 2)));
}

#[test]
fn store_counts_and_queries_consistent_3c() {
    let (cluster, _) = cluster(3, 4);
    // Ten regions over [a, k); region i on stores {i%4+1, (i+1)%4+1, (i+2)%4+1}.
    let mut want = [StoreCounts::default(); 5];
    for i in 0..10u64 {
        let start = ((b'a' + i as u8) as char).to_string();
        let end = ((b'a' + i as u8 + 1) as char).to_string();
        let stores = [i % 4 + 1, (i + 1) % 4 + 1, (i + 2) % 4 + 1];
        let r = region_on(10 + i, &start, &end, &stores, 2);
        must_heartbeat(&cluster, &heartbeat(&r, stores[0], i + 1));
        for s in stores {
            want[s as usize].region_count += 1;
            want[s as usize].region_size += i + 1;
            want[s as usize].region_weight += i + 1;
        }
        want[stores[0] as usize].leader_count += 1;
        want[stores[0] as usize].leader_size += i + 1;
    }
    for s in 1..=4u64 {
        assert_eq!(counts(&cluster, s), want[s as usize], "store {s}");
    }
    let all = cluster.get_all_stores(true).unwrap();
    assert_eq!(all.len(), 4);
    for info in &all {
        assert_eq!(info.counts, want[info.id() as usize]);
    }
    // Region 1 (["", "")) was replaced by the overlapping newer regions, except where none
    // covered: it is gone as a whole, and the keys before "a" have no owner.
    assert!(cluster.get_region_by_id(1).is_err());
    assert!(matches!(
        cluster.get_region(b""),
        Err(Error::RegionNotFound(_))
    ));
    let scanned = cluster.scan_regions(b"c", b"f", 0).unwrap();
    let ids: Vec<u64> = scanned.iter().map(|r| r.id()).collect();
    assert_eq!(ids, vec![12, 13, 14]);
    assert_eq!(cluster.scan_regions(b"", b"", 4).unwrap().len(), 4);
    for info in cluster.regions() {
        assert_eq!(
            cluster.get_region(&info.region.start_key).unwrap().id(),
            info.id()
        );
    }
}

#[test]
fn split_halves_in_either_order_3c() {
    for left_first in [true, false] {
        let (cluster, _) = cluster(1, 1);
        must_heartbeat(
            &cluster,
            &heartbeat(&region(1, "", "", &[(101, 1)], 1, 1), 1, 0),
        );
        // Region 1 splits at "m": the new region 2 takes the left half.
        let left = region(2, "", "m", &[(201, 1)], 1, 2);
        let right = region(1, "m", "", &[(101, 1)], 1, 2);
        let order = if left_first {
            [&left, &right]
        } else {
            [&right, &left]
        };
        for r in order {
            let leader = r.peers[0].store_id;
            must_heartbeat(&cluster, &heartbeat(r, leader, 0));
        }
        assert_eq!(
            cluster.get_region(b"a").unwrap().id(),
            2,
            "left_first={left_first}"
        );
        assert_eq!(cluster.get_region(b"m").unwrap().id(), 1);
        assert_eq!(cluster.get_region(b"z").unwrap().id(), 1);
        assert_eq!(cluster.regions().len(), 2);
        // The old, unsplit region reporting late is stale against either half.
        let old = region(1, "", "", &[(101, 1)], 1, 1);
        assert!(cluster.region_heartbeat(&heartbeat(&old, 1, 0)).is_err());
        assert_eq!(counts(&cluster, 1).region_count, 2);
    }
}

#[test]
fn rounds_of_split_and_merge_overlap_3c() {
    let (cluster, _) = cluster(1, 1);
    let mut next_id = 2;
    let mut version = 1;
    for round in 0..10u8 {
        version += 1;
        // Split [a, z) into four regions...
        let bounds = ["a", "f", "k", "p", "z"];
        let mut ids = Vec::new();
        for w in bounds.windows(2) {
            let r = region(next_id, w[0], w[1], &[(next_id * 10, 1)], 1, version);
            must_heartbeat(&cluster, &heartbeat(&r, 1, 1));
            ids.push(next_id);
            next_id += 1;
        }
        for (i, key) in ["b", "g", "l", "q"].iter().enumerate() {
            assert_eq!(
                cluster.get_region(key.as_bytes()).unwrap().id(),
                ids[i],
                "round {round}"
            );
        }
        // ...then merge them back into one newer region covering all of them.
        version += 1;
        let merged = region(next_id, "a", "z", &[(next_id * 10, 1)], 1, version);
        must_heartbeat(&cluster, &heartbeat(&merged, 1, 1));
        next_id += 1;
        let live: Vec<u64> = cluster
            .regions()
            .iter()
            .filter(|r| r.region.start_key.as_slice() >= b"a".as_slice())
            .map(|r| r.id())
            .collect();
        assert_eq!(
            live,
            vec![next_id - 1],
            "round {round}: old regions evicted"
        );
        // A split half from this round reporting after the merge is stale.
        let late = region(ids[0], "a", "f", &[(ids[0] * 10, 1)], 1, version - 1);
        assert!(cluster.region_heartbeat(&heartbeat(&late, 1, 1)).is_err());
    }
    assert_eq!(
        counts(&cluster, 1).region_count,
        cluster.regions().len() as u64
    );
}
