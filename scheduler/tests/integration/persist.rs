//! State that must survive a restart of the scheduler: ids, timestamps, bootstrap, stores,
//! regions and the cluster config, in RocksDB under the data directory.

use proto::metapb;
use scheduler::{split_ts, Cluster, Config, Error};

use crate::common::*;

fn config_in(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    }
}

#[test]
fn ids_unique_across_restart_3c() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let mut seen = std::collections::HashSet::new();
    let mut last = 0;
    for restart in 0..3 {
        let cluster = Cluster::open(&config).unwrap();
        for _ in 0..1500 {
            let id = cluster.alloc_id().unwrap();
            assert!(id > last, "restart {restart}: id {id} after {last}");
            assert!(seen.insert(id));
            last = id;
        }
    }
}

#[test]
fn tso_monotonic_across_restart_3c() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let mut last = 0;
    let mut cluster_id = None;
    for restart in 0..3 {
        let cluster = Cluster::open(&config).unwrap();
        assert_eq!(
            *cluster_id.get_or_insert(cluster.cluster_id()),
            cluster.cluster_id()
        );
        for _ in 0..1000 {
            let ts = cluster.tso_one().unwrap();
            assert!(
                ts > last,
                "restart {restart}: {ts:?} after {last:?}",
                ts = split_ts(ts),
                last = split_ts(last)
            );
            last = ts;
        }
        let batch = cluster.tso(10).unwrap();
        assert_eq!(batch.logical & 0x3ffff, batch.logical);
        last = scheduler::compose_ts(batch.physical as u64, batch.logical as u64);
    }
}

#[test]
fn bootstrap_twice_is_an_error_3c() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let first_region = region(2, "", "", &[(3, 1)], 1, 1);
    {
        let cluster = Cluster::open(&config).unwrap();
        assert!(!cluster.is_bootstrapped());
        assert!(matches!(
            cluster.get_region(b"a"),
            Err(Error::NotBootstrapped)
        ));
        assert!(matches!(
            cluster.put_store(store(1)),
            Err(Error::NotBootstrapped)
        ));
        cluster.bootstrap(store(1), first_region.clone()).unwrap();
        let again = cluster.bootstrap(store(1), first_region.clone());
        assert!(
            matches!(again, Err(Error::AlreadyBootstrapped)),
            "{again:?}"
        );
    }
    let cluster = Cluster::open(&config).unwrap();
    assert!(cluster.is_bootstrapped());
    let again = cluster.bootstrap(store(5), region(6, "", "", &[(7, 5)], 1, 1));
    assert!(
        matches!(again, Err(Error::AlreadyBootstrapped)),
        "{again:?}"
    );
    assert_eq!(
        cluster.get_region(b"anything").unwrap().region,
        first_region
    );
}

#[test]
fn bootstrap_validates_its_arguments_3c() {
    let cluster = Cluster::in_memory(&Config::default(), scheduler::Clock::manual()).unwrap();
    let no_peer_on_store = cluster.bootstrap(store(1), region(2, "", "", &[(3, 9)], 1, 1));
    assert!(matches!(no_peer_on_store, Err(Error::InvalidArgument(_))));
    assert!(!cluster.is_bootstrapped());
}

#[test]
fn stores_regions_and_config_survive_restart_3c() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let split_left = region(10, "", "m", &[(11, 1), (12, 2)], 2, 2);
    let split_right = region(2, "m", "", &[(3, 1), (13, 2)], 2, 2);
    {
        let cluster = Cluster::open(&config).unwrap();
        cluster
            .bootstrap(store(1), region(2, "", "", &[(3, 1)], 1, 1))
            .unwrap();
        cluster.put_store(store(2)).unwrap();
        cluster
            .put_cluster_config(metapb::Cluster {
                id: 0,
                max_peer_count: 2,
            })
            .unwrap();
        must_heartbeat(&cluster, &heartbeat(&split_right, 1, 10));
        must_heartbeat(&cluster, &heartbeat(&split_left, 2, 10));
    }
    let cluster = Cluster::open(&config).unwrap();
    let stores: Vec<u64> = cluster
        .get_all_stores(false)
        .unwrap()
        .iter()
        .map(|s| s.id())
        .collect();
    assert_eq!(stores, vec![1, 2]);
    assert_eq!(cluster.get_store(2).unwrap().meta, store(2));
    assert_eq!(cluster.cluster_config().unwrap().max_peer_count, 2);
    assert_eq!(cluster.cluster_config().unwrap().id, cluster.cluster_id());
    assert_eq!(cluster.get_region(b"a").unwrap().region, split_left);
    assert_eq!(cluster.get_region(b"z").unwrap().region, split_right);
    assert_eq!(cluster.regions().len(), 2);
    // Counts are rebuilt from the loaded regions; leaders come back with the next heartbeats.
    assert_eq!(cluster.get_store(1).unwrap().counts.region_count, 2);
}

#[test]
fn tombstone_store_cannot_come_back_3c() {
    let (cluster, _) = cluster(3, 2);
    cluster
        .set_store_state(2, metapb::StoreState::Tombstone)
        .unwrap();
    assert!(matches!(
        cluster.put_store(store(2)),
        Err(Error::StoreTombstone(2))
    ));
    assert_eq!(cluster.get_all_stores(true).unwrap().len(), 1);
    let clash = metapb::Store {
        id: 3,
        address: store(1).address,
        state: 0,
        peer_address: String::new(),
        status_address: String::new(),
    };
    assert!(matches!(
        cluster.put_store(clash),
        Err(Error::InvalidArgument(_))
    ));
}
