//! An administrator's operators and schedule settings (`tessera-ctl transfer-leader`, ...,
//! `scheduler config`), and the GC safe point (`tessera-ctl gc`).

use proto::schedulerpb::ScheduleConfig;
use scheduler::{AdminOp, Cluster, Config, Error, OpKind, OpStep};

use crate::common::*;

/// A cluster of 4 stores whose region 1 has voters on stores 1, 2, 3, led by store 1.
fn three_replicas() -> Cluster {
    let (cluster, _clock) = cluster(3, 4);
    let r = region(1, "", "", &[(101, 1), (102, 2), (103, 3)], 2, 1);
    must_heartbeat(&cluster, &heartbeat(&r, 1, 0));
    cluster
}

fn refused(r: Result<scheduler::Operator, Error>, why: &str) {
    match r {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(why), "{m}"),
        other => panic!("expected a refusal ({why}), got {other:?}"),
    }
}

#[test]
fn admin_operators_are_checked_then_run_like_any_3c() {
    let cluster = three_replicas();
    refused(
        cluster.admin_operator(1, AdminOp::TransferLeader(4)),
        "no voter on store 4",
    );
    refused(
        cluster.admin_operator(1, AdminOp::TransferLeader(1)),
        "already leads it",
    );
    refused(
        cluster.admin_operator(1, AdminOp::AddPeer(2)),
        "already holds a peer",
    );
    refused(
        cluster.admin_operator(1, AdminOp::RemovePeer(4)),
        "no peer on store 4",
    );
    assert!(matches!(
        cluster.admin_operator(9, AdminOp::AddPeer(4)),
        Err(Error::RegionNotFound(_))
    ));
    assert!(matches!(
        cluster.admin_operator(1, AdminOp::AddPeer(7)),
        Err(Error::StoreNotFound(7))
    ));

    // Removing the leader's peer moves the leadership away first.
    let op = cluster.admin_operator(1, AdminOp::RemovePeer(1)).unwrap();
    assert_eq!(op.kind, OpKind::Admin);
    assert!(matches!(
        op.steps.as_slice(),
        [
            OpStep::TransferLeader { from_store: 1, .. },
            OpStep::RemovePeer { store_id: 1 }
        ]
    ));
    // One operator per region at a time.
    refused(
        cluster.admin_operator(1, AdminOp::TransferLeader(2)),
        "another operator",
    );
    // The leader is told the first step at its next heartbeat.
    let r = region(1, "", "", &[(101, 1), (102, 2), (103, 3)], 2, 1);
    let step = must_heartbeat(&cluster, &heartbeat(&r, 1, 0)).expect("a step");
    assert!(step.transfer_leader.is_some(), "{step:?}");
}

#[test]
fn schedule_config_changes_at_run_time_and_survives_a_restart_3c() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    {
        let cluster = Cluster::open(&config).unwrap();
        let initial = cluster.schedule_config();
        assert!(initial.balance_leader && initial.balance_region);
        assert_eq!(initial.store_limit, config.store_limit as u64);
        let zero = ScheduleConfig {
            store_limit: 0,
            ..initial
        };
        assert!(matches!(
            cluster.set_schedule_config(zero),
            Err(Error::InvalidArgument(_))
        ));
        let off = ScheduleConfig {
            balance_leader: false,
            balance_region: false,
            store_limit: 9,
        };
        cluster.set_schedule_config(off).unwrap();
        assert_eq!(cluster.schedule_config(), off);
    }
    let reopened = Cluster::open(&config).unwrap();
    let kept = reopened.schedule_config();
    assert!(!kept.balance_leader && !kept.balance_region);
    assert_eq!(kept.store_limit, 9);
}

#[test]
fn the_gc_safe_point_only_rises_and_survives_a_restart_4c() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    {
        let cluster = Cluster::open(&config).unwrap();
        assert_eq!(cluster.gc_safe_point(), 0);
        assert_eq!(cluster.update_gc_safe_point(100).unwrap(), 100);
        assert_eq!(
            cluster.update_gc_safe_point(40).unwrap(),
            100,
            "never lowered"
        );
        assert_eq!(cluster.update_gc_safe_point(250).unwrap(), 250);
    }
    let reopened = Cluster::open(&config).unwrap();
    assert_eq!(reopened.gc_safe_point(), 250);
}

#[test]
fn the_automatic_gc_safe_point_waits_for_every_store_and_stays_below_locks_4c() {
    let config = Config {
        gc_life_time_secs: 60,
        ..Config::default()
    };
    let (cluster, _clock) = cluster_with(config, 3);
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let life_bound = codec::ts::compose_ts(wall_ms - 60_000, 0);
    // Every store has reported, none holds a lock: now minus the life time.
    let sp = cluster.advance_gc_safe_point_auto().unwrap();
    assert!(
        sp >= life_bound && sp < life_bound + codec::ts::compose_ts(10_000, 0),
        "{sp}"
    );
    // A store reports a lock just above it: however the clock moves, the safe point stays
    // below the lock.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let old_lock = sp + 1;
    let stats = |store_id, oldest_lock_ts| proto::schedulerpb::StoreStats {
        store_id,
        oldest_lock_ts,
        ..Default::default()
    };
    cluster.store_heartbeat(stats(2, old_lock)).unwrap();
    assert_eq!(cluster.advance_gc_safe_point_auto().unwrap(), sp);
    // Once the lock is gone it moves on with the clock.
    cluster.store_heartbeat(stats(2, 0)).unwrap();
    assert!(cluster.advance_gc_safe_point_auto().unwrap() > sp);
}

#[test]
fn no_automatic_gc_safe_point_until_every_store_reported_or_when_off_4c() {
    let (off, _clock) = cluster(3, 3);
    assert_eq!(
        off.advance_gc_safe_point_auto().unwrap(),
        0,
        "off by default"
    );
    let config = Config {
        gc_life_time_secs: 60,
        ..Config::default()
    };
    let clock = scheduler::Clock::manual();
    let cluster = Cluster::in_memory(&config, clock).unwrap();
    cluster
        .bootstrap(store(1), region(1, "", "", &[(101, 1)], 1, 1))
        .unwrap();
    cluster.put_store(store(2)).unwrap();
    // Store 1 and 2 are up but neither has reported its locks.
    assert_eq!(cluster.advance_gc_safe_point_auto().unwrap(), 0);
}
