//! Several regions on every store from the start: routing by key, independent leaders, range
//! checks, and group commit of several regions' readies in one raft-engine write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::{Cf, Modify, Storage as _};
use proto::kvrpcpb::Context;
use raftstore::Config;
use test_raftstore::Cluster;

const WAIT: Duration = Duration::from_secs(10);

fn two_regions() -> Cluster {
    let mut c = Cluster::with_split_keys(3, Config::test(), vec![b"m".to_vec()]);
    c.start();
    c
}

#[test]
fn keys_route_to_their_regions_2b() {
    let cluster = two_regions();
    let left = cluster.get_region(b"a");
    let right = cluster.get_region(b"x");
    assert_ne!(left.id, right.id);
    assert_eq!(left.end_key, b"m");
    assert_eq!(right.start_key, b"m");
    for k in [&b"a"[..], b"l", b"m", b"zz"] {
        cluster.must_put(k, k);
    }
    for k in [&b"a"[..], b"l", b"m", b"zz"] {
        assert_eq!(cluster.must_get(k).as_deref(), Some(k));
    }
    // A scan stays inside the region of its start key.
    let left_keys: Vec<Vec<u8>> = cluster
        .must_scan(b"", b"")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left_keys, vec![b"a".to_vec(), b"l".to_vec()]);
    cluster.wait_leader(left.id, WAIT);
    cluster.wait_leader(right.id, WAIT);
}

#[test]
fn a_batch_spanning_regions_is_refused_2b() {
    let cluster = two_regions();
    let left = cluster.get_region(b"a");
    let leader = cluster.wait_leader(left.id, WAIT);
    let storage = cluster.raft_storage(leader.store_id).unwrap();
    let put = |k: &[u8]| Modify::Put {
        cf: Cf::Default,
        key: k.to_vec(),
        value: b"v".to_vec(),
    };
    match storage.write(&Context::default(), vec![put(b"a"), put(b"z")]) {
        Err(kv::Error::Region(e)) => {
            let kn = e.key_not_in_region.expect("KeyNotInRegion");
            assert_eq!(kn.key, b"z");
            assert_eq!(kn.region_id, left.id);
        }
        other => panic!("expected KeyNotInRegion, got {other:?}"),
    }
    // Nothing of the refused batch was written.
    assert_eq!(cluster.must_get(b"a"), None);
}

#[test]
fn readies_of_several_regions_share_one_write_2b() {
    let cluster = Arc::new(two_regions());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [&b"a"[..], b"x"]
        .into_iter()
        .map(|prefix| {
            let (cluster, stop, prefix) = (cluster.clone(), stop.clone(), prefix.to_vec());
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let mut k = prefix.clone();
                    k.extend_from_slice(&i.to_be_bytes());
                    cluster.must_put(&k, b"v");
                    i += 1;
                }
            })
        })
        .collect();
    // Followers of both regions receive appends continually; sooner or later one batch of a
    // store carries both regions' entries.
    let deadline = Instant::now() + WAIT;
    let best = loop {
        let best = cluster
            .store_ids()
            .into_iter()
            .filter_map(|s| cluster.store_metrics(s))
            .map(|m| m.max_readies_per_write())
            .max()
            .unwrap_or(0);
        if best >= 2 || Instant::now() >= deadline {
            break best;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        best >= 2,
        "no raft-engine write ever carried two regions' readies"
    );
    for s in cluster.store_ids() {
        let m = cluster.store_metrics(s).unwrap();
        assert!(m.raft_engine_writes() <= m.persisted_readies());
        assert!(m.raft_engine_syncs() <= m.raft_engine_writes());
    }
}

/// A delete of a range inside a region removes its keys on every replica and nothing outside
/// it; a range that reaches past the region's end is refused before it is proposed.
#[test]
fn a_deleted_range_stays_inside_its_region_2b() {
    let cluster = two_regions();
    for k in [&b"a"[..], b"c", b"l", b"m", b"x"] {
        cluster.must_put(k, k);
    }
    let left = cluster.get_region(b"a");
    let leader = cluster.wait_leader(left.id, WAIT);
    let storage = cluster.raft_storage(leader.store_id).unwrap();
    let range = |start: &[u8], end: &[u8]| Modify::DeleteRange {
        cf: Cf::Default,
        start: start.to_vec(),
        end: end.to_vec(),
    };
    match storage.write(&Context::default(), vec![range(b"b", b"z")]) {
        Err(kv::Error::Region(e)) => {
            let kn = e.key_not_in_region.expect("KeyNotInRegion");
            assert_eq!(kn.region_id, left.id);
        }
        other => panic!("expected KeyNotInRegion, got {other:?}"),
    }
    match storage.write(&Context::default(), vec![range(b"b", b"")]) {
        Err(kv::Error::Region(e)) => assert!(e.key_not_in_region.is_some(), "{e:?}"),
        other => panic!("an unbounded range in a bounded region: {other:?}"),
    }
    storage
        .write(&Context::default(), vec![range(b"b", b"m")])
        .unwrap();
    assert_eq!(cluster.must_get(b"a").as_deref(), Some(&b"a"[..]));
    assert_eq!(cluster.must_get(b"c"), None);
    assert_eq!(cluster.must_get(b"l"), None);
    assert_eq!(cluster.must_get(b"m").as_deref(), Some(&b"m"[..]));
    // Every replica applies it: "c" and "l" leave each store's engine, "m" stays.
    let deadline = Instant::now() + WAIT;
    for store in cluster.store_ids() {
        let engines = cluster.engines(store).unwrap();
        let get = |k: &[u8]| {
            kv::engine::get_cf(&engines.kv, Cf::Default, &kv::keys::data_key(k)).unwrap()
        };
        while get(b"c").is_some() || get(b"l").is_some() {
            assert!(
                Instant::now() < deadline,
                "store {store} never applied the delete"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(get(b"m").as_deref(), Some(&b"m"[..]), "store {store}");
        assert_eq!(get(b"a").as_deref(), Some(&b"a"[..]), "store {store}");
    }
}
