//! The replica checker, learner-based adds and operator timeouts.

use std::time::Duration;

use proto::metapb::{PeerRole, StoreState};
use proto::raft_cmdpb::ConfChangeType;
use proto::schedulerpb::RegionHeartbeatResponse;
use scheduler::{Config, OpKind, OpStep};

use crate::common::*;

fn added_peer(resp: &RegionHeartbeatResponse) -> (u64, u64, i32) {
    let change = resp.change_peer.as_ref().expect("a change peer step");
    let peer = change.peer.as_ref().expect("a peer");
    (peer.store_id, peer.id, change.change_type)
}

#[test]
fn replica_checker_adds_missing_replicas_3c() {
    let (cluster, _) = cluster(3, 4);
    let mut r = region_on(1, "", "", &[1], 1);
    let mut placed = vec![1];
    for round in 0..2 {
        let resp = must_heartbeat(&cluster, &heartbeat(&r, 1, 10)).expect("add step");
        let (store, peer_id, kind) = added_peer(&resp);
        assert_eq!(kind, ConfChangeType::AddNode as i32, "round {round}");
        assert!(
            !placed.contains(&store),
            "round {round}: second replica on store {store}"
        );
        assert_eq!(cluster.operator(1).map(|o| o.kind), Some(OpKind::Replica));
        placed.push(store);
        r.peers.push(peer(peer_id, store));
        r.region_epoch.as_mut().unwrap().conf_ver += 1;
    }
    // Three replicas: the operator finishes and nothing else is asked.
    assert!(must_heartbeat(&cluster, &heartbeat(&r, 1, 10)).is_none());
    assert_eq!(cluster.operator_counters().finished, 2);
    assert_eq!(
        stores_of(&cluster.get_region_by_id(1).unwrap().region).len(),
        3
    );
}

#[test]
fn replica_checker_removes_extra_follower_first_3c() {
    let (cluster, _) = cluster(3, 4);
    let r = region_on(1, "", "", &[1, 2, 3, 4], 1);
    let resp = must_heartbeat(&cluster, &heartbeat(&r, 1, 10)).expect("remove step");
    let change = resp.change_peer.expect("change peer");
    assert_eq!(change.change_type, ConfChangeType::RemoveNode as i32);
    let victim = change.peer.expect("peer").store_id;
    assert_ne!(
        victim, 1,
        "the leader is not removed while a follower can be"
    );
}

#[test]
fn replica_checker_moves_leader_off_an_extra_leader_3c() {
    let (cluster, clock) = cluster(2, 3);
    // Store 1 leads but is down: it is the replica to drop, after handing leadership over.
    let r = region_on(1, "", "", &[1, 2, 3], 1);
    let_stores_go_down(&cluster, &clock, [2, 3]);
    let resp = must_heartbeat(&cluster, &heartbeat(&r, 1, 10)).expect("transfer step");
    let to = resp
        .transfer_leader
        .and_then(|t| t.peer)
        .expect("transfer")
        .store_id;
    assert!(to == 2 || to == 3);
    let op = cluster.operator(1).expect("operator");
    assert_eq!(op.steps.last(), Some(&OpStep::RemovePeer { store_id: 1 }));
}

#[test]
fn replica_checker_replaces_down_and_offline_replicas_3c() {
    let (cluster, clock) = cluster(3, 5);
    let r = region_on(1, "", "", &[1, 2, 3], 1);
    must_heartbeat(&cluster, &heartbeat(&r, 1, 10));
    let_stores_go_down(&cluster, &clock, [1, 2, 4, 5]);
    let resp = must_heartbeat(&cluster, &heartbeat(&r, 1, 10)).expect("add step");
    let (store, _, _) = added_peer(&resp);
    assert!(store == 4 || store == 5, "replacement on store {store}");
    let op = cluster.operator(1).expect("operator");
    assert_eq!(op.steps.last(), Some(&OpStep::RemovePeer { store_id: 3 }));

    // An offline store's replica is replaced the same way.
    let (cluster, _) = crate::common::cluster(3, 4);
    cluster.set_store_state(2, StoreState::Offline).unwrap();
    let resp = must_heartbeat(&cluster, &heartbeat(&r, 1, 10)).expect("add step");
    assert_eq!(added_peer(&resp).0, 4);
    let op = cluster.operator(1).expect("operator");
    assert_eq!(op.steps.last(), Some(&OpStep::RemovePeer { store_id: 2 }));
}

#[test]
fn replica_checker_adds_learner_then_promotes_3c() {
    let config = Config {
        max_replicas: 2,
        use_learner: true,
        ..Config::default()
    };
    let (cluster, _) = cluster_with(config, 2);
    let mut r = region_on(1, "", "", &[1], 1);
    let resp = must_heartbeat(&cluster, &heartbeat(&r, 1, 10)).expect("learner step");
    let (store, peer_id, kind) = added_peer(&resp);
    assert_eq!((store, kind), (2, ConfChangeType::AddLearnerNode as i32));
    let mut learner = peer(peer_id, 2);
    learner.role = PeerRole::Learner as i32;
    r.peers.push(learner);
    r.region_epoch.as_mut().unwrap().conf_ver += 1;
    let resp = must_heartbeat(&cluster, &heartbeat(&r, 1, 10)).expect("promote step");
    assert_eq!(
        added_peer(&resp),
        (2, peer_id, ConfChangeType::AddNode as i32)
    );
    r.peers[1].role = PeerRole::Voter as i32;
    r.region_epoch.as_mut().unwrap().conf_ver += 1;
    assert!(must_heartbeat(&cluster, &heartbeat(&r, 1, 10)).is_none());
    assert_eq!(cluster.operator_counters().finished, 1);
}

#[test]
fn operator_times_out_3c() {
    let (cluster, clock) = cluster(2, 2);
    let r = region_on(1, "", "", &[1], 1);
    must_heartbeat(&cluster, &heartbeat(&r, 1, 10)).expect("add step");
    assert!(cluster.operator(1).is_some());
    // The store never carries it out; past the timeout the sweep drops it.
    clock.advance(Duration::from_millis(
        cluster.config().operator_timeout_ms + 1,
    ));
    cluster.schedule().unwrap();
    assert!(cluster.operator(1).is_none());
    assert_eq!(cluster.operator_counters().timed_out, 1);
}

#[test]
fn split_cancels_the_operator_of_the_old_epoch_3c() {
    let (cluster, _) = cluster(2, 2);
    let r = region_on(1, "", "", &[1], 1);
    must_heartbeat(&cluster, &heartbeat(&r, 1, 10)).expect("add step");
    let split = region_on(1, "m", "", &[1], 2);
    // The operator of version 1 is cancelled; the checker makes a fresh one for version 2.
    let resp = must_heartbeat(&cluster, &heartbeat(&split, 1, 10)).expect("new add step");
    assert_eq!(resp.region_epoch.map(|e| e.version), Some(2));
    assert_eq!(cluster.operator_counters().cancelled, 1);
    assert_eq!(cluster.operator(1).map(|o| o.region_version), Some(2));
}

#[test]
fn local_client_drives_the_core_in_process_3c() {
    use scheduler_client::{Error as ClientError, SchedulerClient};
    use std::sync::{mpsc, Arc};

    let config = Config {
        max_replicas: 2,
        ..Config::default()
    };
    let cluster =
        Arc::new(scheduler::Cluster::in_memory(&config, scheduler::Clock::manual()).unwrap());
    let client = scheduler::LocalClient::new(cluster.clone());
    assert_eq!(client.cluster_id(), cluster.cluster_id());
    assert_eq!(client.get_region(b"a"), Err(ClientError::NotBootstrapped));
    let first = region_on(1, "", "", &[1], 1);
    client.bootstrap(store(1), first.clone()).unwrap();
    assert_eq!(
        client.bootstrap(store(1), first.clone()),
        Err(ClientError::AlreadyBootstrapped)
    );
    client.put_store(store(2)).unwrap();
    assert!(matches!(
        client.get_region_by_id(9),
        Err(ClientError::NotFound(_))
    ));
    assert!(client.tso().unwrap() < client.tso().unwrap());

    let (tx, rx) = mpsc::channel();
    let sender_thread = std::thread::current().id();
    client.handle_region_heartbeat_response(
        1,
        Box::new(move |resp| {
            let _ = tx.send((std::thread::current().id(), resp));
        }),
    );
    client.region_heartbeat(heartbeat(&first, 1, 1)).unwrap();
    let (thread, resp) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an operator step");
    assert_ne!(
        thread, sender_thread,
        "handler runs off the reporting thread"
    );
    let (store, _, kind) = added_peer(&resp);
    assert_eq!((store, kind), (2, ConfChangeType::AddNode as i32));
    // A stale heartbeat is swallowed like on the gRPC stream.
    let stale = region_on(1, "", "", &[1], 0);
    assert_eq!(client.region_heartbeat(heartbeat(&stale, 1, 1)), Ok(()));
}
