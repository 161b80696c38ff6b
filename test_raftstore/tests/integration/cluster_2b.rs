//! Cluster basics: the client API, restarts from disk, region errors, the scheduler heartbeats
//! and `RaftStorage` as a `kv::Storage`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::{Cf, Modify, Storage as _};
use proto::kvrpcpb::Context;
use proto::raft_cmdpb::{RaftCmdRequest, RaftRequestHeader};
use raftstore::Config;
use test_raftstore::{get_req, put_req, Cluster, IsolationFilter, MessageTypeFilter};

const WAIT: Duration = Duration::from_secs(10);

fn started(count: usize) -> Cluster {
    let mut c = Cluster::new(count, Config::test());
    c.start();
    c
}

#[test]
fn put_get_delete_scan_2b() {
    let cluster = started(3);
    for i in 0..10u8 {
        cluster.must_put(&[b'k', b'0' + i], &[b'v', b'0' + i]);
    }
    assert_eq!(cluster.must_get(b"k3").as_deref(), Some(&b"v3"[..]));
    cluster.must_delete(b"k3");
    assert_eq!(cluster.must_get(b"k3"), None);
    let scanned = cluster.must_scan(b"k2", b"k6");
    let keys: Vec<&[u8]> = scanned.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![&b"k2"[..], b"k4", b"k5"]);
    // Every store applies every write.
    for s in cluster.store_ids() {
        cluster.wait_value_on_store(s, b"k9", Some(b"v9"), WAIT);
        cluster.wait_value_on_store(s, b"k3", None, WAIT);
    }
}

#[test]
fn single_store_cluster_serves_2b() {
    let cluster = started(1);
    cluster.must_put(b"a", b"1");
    assert_eq!(cluster.must_get(b"a").as_deref(), Some(&b"1"[..]));
}

#[test]
fn restart_recovers_exactly_from_disk_2b() {
    let cluster = started(3);
    for i in 0..20u32 {
        cluster.must_put(format!("key{i:02}").as_bytes(), format!("v{i}").as_bytes());
    }
    cluster.restart_all();
    for i in 0..20u32 {
        assert_eq!(
            cluster.must_get(format!("key{i:02}").as_bytes()),
            Some(format!("v{i}").into_bytes())
        );
    }
    // And the restarted cluster keeps accepting writes at the next log indexes.
    cluster.must_put(b"after", b"restart");
    for s in cluster.store_ids() {
        cluster.wait_value_on_store(s, b"after", Some(b"restart"), WAIT);
    }
}

#[test]
fn stopped_follower_catches_up_after_restart_2b() {
    let cluster = started(3);
    let region_id = cluster.get_region(b"").id;
    let leader = cluster.wait_leader(region_id, WAIT);
    let follower = cluster
        .store_ids()
        .into_iter()
        .find(|&s| s != leader.store_id)
        .unwrap();
    cluster.stop_node(follower);
    cluster.must_put(b"while", b"down");
    cluster.run_node(follower);
    cluster.wait_value_on_store(follower, b"while", Some(b"down"), WAIT);
}

#[test]
fn followers_answer_not_leader_with_a_hint_2b() {
    let cluster = started(3);
    let region_id = cluster.get_region(b"").id;
    // A follower may not have heard from the leader yet, and leadership may move: poll until a
    // follower names the current leader.
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = cluster.wait_leader(region_id, WAIT);
        let follower = cluster
            .store_ids()
            .into_iter()
            .find(|&s| s != leader.store_id)
            .unwrap();
        let resp = cluster
            .call_on_store(
                follower,
                b"k",
                vec![put_req(b"k", b"v")],
                Duration::from_secs(1),
            )
            .unwrap();
        let hint = resp
            .response
            .header
            .and_then(|h| h.error)
            .and_then(|e| e.not_leader)
            .and_then(|nl| nl.leader);
        if hint.as_ref().map(|l| l.id) == Some(leader.id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no follower named the leader {leader:?}; last hint {hint:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stale_epoch_is_rejected_2b() {
    let cluster = started(1);
    let region = cluster.get_region(b"");
    let leader = cluster.wait_leader(region.id, WAIT);
    let mut epoch = region.region_epoch.unwrap();
    epoch.version += 1;
    let req = RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: region.id,
            peer: Some(leader),
            region_epoch: Some(epoch),
            term: 0,
        }),
        requests: vec![get_req(b"k")],
        admin_request: None,
    };
    let resp = cluster
        .call_raw(leader.store_id, req, Duration::from_secs(2))
        .unwrap();
    let err = resp.response.header.unwrap().error.unwrap();
    let current = err.epoch_not_match.expect("EpochNotMatch").current_regions;
    assert_eq!(current, vec![region]);
}

#[test]
fn heartbeats_reach_the_scheduler_2b() {
    let cluster = started(3);
    let region_id = cluster.get_region(b"").id;
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = cluster.wait_leader(region_id, WAIT);
        let reported = cluster.scheduler().reported_leader(region_id);
        let stores_ok = cluster
            .store_ids()
            .iter()
            .all(|&s| cluster.scheduler().store_heartbeats(s) > 0);
        if reported.as_ref().map(|p| p.id) == Some(leader.id) && stores_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scheduler saw leader {reported:?} (expected {leader:?}), region heartbeats {}",
            cluster.scheduler().region_heartbeats(region_id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn isolated_leader_is_replaced_2b() {
    let cluster = started(3);
    let region_id = cluster.get_region(b"").id;
    let leader = cluster.wait_leader(region_id, WAIT);
    cluster.add_filter(Arc::new(IsolationFilter(leader.store_id)));
    let new_leader = cluster.wait_leader_other_than(region_id, leader.store_id, WAIT);
    assert_ne!(new_leader.store_id, leader.store_id);
    cluster.must_put(b"k", b"v");
    cluster.clear_filters();
    cluster.wait_value_on_store(leader.store_id, b"k", Some(b"v"), WAIT);
}

#[test]
fn lost_heartbeats_still_let_appends_commit_2b() {
    let cluster = started(3);
    cluster.wait_leader(cluster.get_region(b"").id, WAIT);
    // Appends carry the commit index too; dropping heartbeats only slows reads down... until
    // followers time out, which pre-vote plus check-quorum must survive.
    cluster.add_filter(Arc::new(MessageTypeFilter::new(&[
        proto::eraftpb::MessageType::MsgHeartbeat,
    ])));
    cluster.must_put(b"k", b"v");
    cluster.clear_filters();
    assert_eq!(cluster.must_get(b"k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn raft_storage_serves_the_kv_storage_trait_2b() {
    let cluster = started(3);
    let region_id = cluster.get_region(b"").id;
    let ctx = Context::default();
    let batch = || {
        vec![
            Modify::Put {
                cf: Cf::Default,
                key: b"a".to_vec(),
                value: b"1".to_vec(),
            },
            Modify::Put {
                cf: Cf::Lock,
                key: b"a".to_vec(),
                value: b"lock".to_vec(),
            },
        ]
    };
    // Leadership may move between finding the leader and writing (a stalled thread misses
    // heartbeats); a NotLeader answer then sends us to the new one.
    let deadline = Instant::now() + WAIT;
    let leader = loop {
        let leader = cluster.wait_leader(region_id, WAIT);
        let storage = cluster.raft_storage(leader.store_id).expect("leader runs");
        match storage.write(&ctx, batch()) {
            Ok(()) => break leader,
            Err(kv::Error::Region(e)) if e.not_leader.is_some() => {
                assert!(Instant::now() < deadline, "leadership never settled: {e:?}");
            }
            Err(e) => panic!("write through RaftStorage failed: {e}"),
        }
    };
    let storage = cluster.raft_storage(leader.store_id).unwrap();
    let reader = loop {
        match storage.reader(&ctx) {
            Ok(r) => break r,
            Err(kv::Error::Region(e)) if e.not_leader.is_some() => {
                assert!(Instant::now() < deadline, "leadership never settled: {e:?}");
                let l = cluster.wait_leader(region_id, WAIT);
                let s = cluster.raft_storage(l.store_id).unwrap();
                if let Ok(r) = s.reader(&ctx) {
                    break r;
                }
            }
            Err(e) => panic!("reader through RaftStorage failed: {e}"),
        }
    };
    assert_eq!(
        reader.get_cf(Cf::Default, b"a").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        reader.get_cf(Cf::Lock, b"a").unwrap().as_deref(),
        Some(&b"lock"[..])
    );
    // A follower's storage reports NotLeader as a region error with the hint.
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = cluster.wait_leader(region_id, WAIT);
        let follower = cluster
            .store_ids()
            .into_iter()
            .find(|&s| s != leader.store_id)
            .unwrap();
        let fs = cluster.raft_storage(follower).unwrap();
        let delete = vec![Modify::Delete {
            cf: Cf::Default,
            key: b"a".to_vec(),
        }];
        match fs.write(&ctx, delete) {
            Err(kv::Error::Region(e)) => {
                assert!(e.not_leader.is_some(), "{e:?}");
                break;
            }
            // The "follower" had just become leader: legitimate, look again.
            Ok(()) => assert!(Instant::now() < deadline, "no follower ever refused"),
            Err(e) => panic!("expected NotLeader, got {e}"),
        }
    }
}

#[test]
fn overwritten_proposal_is_answered_stale_2b() {
    let cluster = Arc::new(started(3));
    let region_id = cluster.get_region(b"").id;
    cluster.must_put(b"before", b"1");
    // On a stalled machine the isolated leader may step down (check quorum) before the proposal
    // reaches it; that round proves nothing, so it is run again.
    for round in 0..3 {
        let old = cluster.wait_leader(region_id, WAIT);
        cluster.add_filter(Arc::new(IsolationFilter(old.store_id)));
        // The isolated leader appends the proposal to its own log but can never commit it.
        let pending = {
            let cluster = cluster.clone();
            std::thread::spawn(move || {
                cluster.call_on_store(
                    old.store_id,
                    b"k",
                    vec![put_req(
                        b"k",
                        format!("old leader, round {round}").as_bytes(),
                    )],
                    Duration::from_secs(20),
                )
            })
        };
        cluster.wait_leader_other_than(region_id, old.store_id, WAIT);
        let newest = format!("new leader, round {round}");
        cluster.must_put(b"k", newest.as_bytes());
        cluster.clear_filters();
        // The old leader's entry is overwritten by the new leader's log: its proposer must hear
        // StaleCommand once that index is applied, not wait forever or see success.
        let resp = pending.join().unwrap().expect("the old leader answers");
        let err = resp.response.header.unwrap().error.expect("an error");
        cluster.wait_value_on_store(old.store_id, b"k", Some(newest.as_bytes()), WAIT);
        if err.not_leader.is_some() {
            continue;
        }
        assert!(
            err.stale_command.is_some(),
            "expected StaleCommand, got {err:?}"
        );
        return;
    }
    panic!("the isolated leader stepped down before every proposal arrived");
}
