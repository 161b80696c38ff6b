//! The stage-2B scenarios: the generic runner under each fault mix, and one partition step by
//! step.

use std::sync::Arc;
use std::time::Duration;

use test_raftstore::{generic_test, put_req, Cluster, PartitionFilter};

#[test]
fn basic_2b() {
    generic_test(1, false, false, false, None, false, false);
}

#[test]
fn concurrent_2b() {
    generic_test(5, false, false, false, None, false, false);
}

#[test]
fn unreliable_2b() {
    generic_test(5, true, false, false, None, false, false);
}

#[test]
fn many_partitions_one_client_2b() {
    generic_test(1, false, false, true, None, false, false);
}

#[test]
fn many_partitions_many_clients_2b() {
    generic_test(5, false, false, true, None, false, false);
}

#[test]
fn persist_one_client_2b() {
    generic_test(1, false, true, false, None, false, false);
}

#[test]
fn persist_concurrent_2b() {
    generic_test(5, false, true, false, None, false, false);
}

#[test]
fn persist_concurrent_unreliable_2b() {
    generic_test(5, true, true, false, None, false, false);
}

#[test]
fn persist_partition_2b() {
    generic_test(5, false, true, true, None, false, false);
}

#[test]
fn persist_partition_unreliable_2b() {
    generic_test(5, true, true, true, None, false, false);
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn one_partition_2b() {
    let mut cluster = Cluster::new(5, raftstore::Config::test());
    cluster.start();
    let region_id = cluster.get_region(b"").id;
    let leader = cluster.wait_leader(region_id, WAIT);
    cluster.must_put(b"k1", b"v1");
    for s in cluster.store_ids() {
        cluster.wait_value_on_store(s, b"k1", Some(b"v1"), WAIT);
    }

    // The leader keeps a majority: it keeps serving, the minority does not see the write.
    let others: Vec<u64> = cluster
        .store_ids()
        .into_iter()
        .filter(|&s| s != leader.store_id)
        .collect();
    let majority = [leader.store_id, others[0], others[1]];
    let minority = [others[2], others[3]];
    cluster.add_filter(Arc::new(PartitionFilter::new(&majority, &minority)));
    cluster.must_put(b"k1", b"changed");
    assert_eq!(cluster.must_get(b"k1").as_deref(), Some(&b"changed"[..]));
    for s in minority {
        assert_eq!(
            cluster.get_on_store(s, b"k1").as_deref(),
            Some(&b"v1"[..]),
            "store {s} in the minority must not have the write"
        );
    }
    cluster.clear_filters();
    for s in minority {
        cluster.wait_value_on_store(s, b"k1", Some(b"changed"), WAIT);
    }

    // The old leader is cut into a minority: a new leader serves; the old one cannot commit.
    let leader = cluster.wait_leader(region_id, WAIT);
    let others: Vec<u64> = cluster
        .store_ids()
        .into_iter()
        .filter(|&s| s != leader.store_id)
        .collect();
    let minority = [leader.store_id, others[0]];
    let majority = [others[1], others[2], others[3]];
    cluster.add_filter(Arc::new(PartitionFilter::new(&minority, &majority)));
    let new_leader = cluster.wait_leader_other_than(region_id, leader.store_id, WAIT);
    assert!(majority.contains(&new_leader.store_id));
    cluster.must_put(b"k2", b"v2");
    let stale = cluster.call_on_store(
        leader.store_id,
        b"k3",
        vec![put_req(b"k3", b"lost")],
        Duration::from_millis(500),
    );
    let acked = stale.as_ref().is_ok_and(|r| {
        r.response
            .header
            .as_ref()
            .and_then(|h| h.error.as_ref())
            .is_none()
    });
    assert!(!acked, "the old leader in a minority acknowledged a write");
    for s in minority {
        assert_eq!(cluster.get_on_store(s, b"k2"), None, "store {s} is cut off");
        assert_eq!(
            cluster.get_on_store(s, b"k3"),
            None,
            "store {s} committed alone"
        );
    }

    // After healing, the old leader converges on the majority's log.
    cluster.clear_filters();
    for s in minority {
        cluster.wait_value_on_store(s, b"k2", Some(b"v2"), WAIT);
    }
    assert_eq!(cluster.must_get(b"k2").as_deref(), Some(&b"v2"[..]));
    assert_eq!(cluster.must_get(b"k1").as_deref(), Some(&b"changed"[..]));
}
