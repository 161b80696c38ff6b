//! Three raft stores started by the one store assembly ([`server::start_with`], through the
//! local cluster) that talk only over gRPC on loopback: `ServerTransport` carries their raft
//! messages and snapshots to each other's peer ports, where `PeerService` receives them; clients
//! use the client ports. Writes go through the leader; after the leader stops, the other two
//! elect a new one that serves every acknowledged write; a follower that was down catches up by a
//! snapshot streamed to it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::local_cluster::{LocalCluster, LocalClusterConfig, LocalStore};
use tessera_client::raw::{ClientError, RawClient};

/// Starts three stores holding one region, with `cfg`.
async fn start_cluster(dir: &Path, cfg: raftstore::Config) -> LocalCluster {
    let mut config = LocalClusterConfig::new(3);
    config.raftstore = cfg;
    LocalCluster::start(dir, config)
        .await
        .expect("the cluster starts")
}

/// The client addresses of the running stores.
fn addrs(cluster: &LocalCluster) -> Vec<SocketAddr> {
    cluster.stores().iter().map(|s| s.addr).collect()
}

/// Puts `key` through whichever store currently leads, polling until `deadline`; returns the
/// index of the store that accepted it.
async fn put_via_leader(
    stores: &[SocketAddr],
    key: &[u8],
    value: &[u8],
    deadline: Instant,
) -> usize {
    let mut last = String::new();
    while Instant::now() < deadline {
        for (i, addr) in stores.iter().enumerate() {
            let Ok(mut c) = RawClient::connect(&addr.to_string()).await else {
                continue;
            };
            match c.put("default", key, value).await {
                Ok(()) => return i,
                Err(e @ (ClientError::Region(_) | ClientError::Server(_))) => last = e.to_string(),
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no store accepted {key:?} before the deadline; last error: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stores_replicate_over_grpc_2b() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(dir.path(), raftstore::Config::test()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let stores = addrs(&cluster);
    let leader = put_via_leader(&stores, b"k000", b"v000", deadline).await;
    let mut c = RawClient::connect(&stores[leader].to_string())
        .await
        .unwrap();
    for i in 1..50 {
        let (k, v) = (format!("k{i:03}"), format!("v{i:03}"));
        c.put("default", k.as_bytes(), v.as_bytes()).await.unwrap();
    }
    assert_eq!(c.scan("default", b"", 100).await.unwrap().len(), 50);

    // Stop the leader: the two others hold a majority and must serve every write.
    let leader_id = cluster.stores()[leader].id;
    cluster.stop_store(leader_id).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let stores = addrs(&cluster);
    let new_leader = put_via_leader(&stores, b"after", b"failover", deadline).await;
    let mut c = RawClient::connect(&stores[new_leader].to_string())
        .await
        .unwrap();
    let pairs = c.scan("default", b"", 100).await.unwrap();
    assert_eq!(pairs.len(), 51, "{pairs:?}");
    for i in 0..50 {
        let (k, v) = (format!("k{i:03}"), format!("v{i:03}"));
        assert_eq!(
            c.get("default", k.as_bytes()).await.unwrap(),
            Some(v.into_bytes())
        );
    }
    cluster.shutdown().await.unwrap();
}

/// The index up to which `store`'s log of `region_id` is compacted.
fn truncated(store: &LocalStore, region_id: u64) -> u64 {
    let a: Option<proto::raft_serverpb::RaftApplyState> =
        kv::engine::get_msg(&store.engines().kv, &kv::keys::apply_state_key(region_id)).unwrap();
    a.and_then(|a| a.truncated_state).map_or(0, |t| t.index)
}

/// A follower down while the log is compacted catches up through a snapshot streamed over
/// `RaftPeer.Snapshot`, and the received files are gone once it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_catches_up_by_snapshot_over_grpc_2c() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = raftstore::Config::test();
    cfg.raft_log_gc_count_limit = 10;
    let writes: u64 = std::env::var("TESSERA_SNAPSHOT_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut cluster = start_cluster(dir.path(), cfg).await;
    let region_id = cluster
        .scheduler_client()
        .get_region(b"")
        .expect("the scheduler knows the region")
        .0
        .id;
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = put_via_leader(&addrs(&cluster), b"k000000", b"v000000", deadline).await;
    let follower = (leader + 1) % cluster.stores().len();
    let id = cluster.stores()[follower].id;
    cluster.stop_store(id).await;

    let stores = addrs(&cluster);
    let leader = put_via_leader(&stores, b"k000001", b"v000001", deadline).await;
    // 16 writers; `TESSERA_SNAPSHOT_WRITES` raises the count for a soak (e.g. 100000).
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let addr = stores[leader].to_string();
            tokio::spawn(async move {
                let mut c = RawClient::connect(&addr).await.unwrap();
                for i in (2..writes).filter(|i| i % 16 == w) {
                    let (k, v) = (format!("k{i:06}"), format!("v{i:06}"));
                    c.put("default", k.as_bytes(), v.as_bytes()).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    // The entries the follower lacks must be gone from the leader's log before it returns.
    let deadline = Instant::now() + Duration::from_secs(20);
    while truncated(&cluster.stores()[leader], region_id) <= 10 {
        assert!(
            Instant::now() < deadline,
            "the leader's log was never compacted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster
        .restart_store(id)
        .await
        .expect("the store starts again");
    let back = cluster.stores().iter().find(|s| s.id == id).unwrap();
    let snap_dir = dir.path().join(format!("store-{id}/store/snap"));
    let deadline = Instant::now() + Duration::from_secs(20 + writes / 1000);
    loop {
        let have = (0..writes).all(|i| {
            let k = kv::keys::data_key(format!("k{i:06}").as_bytes());
            kv::engine::get_cf(&back.engines().kv, kv::Cf::Default, &k)
                .unwrap()
                .is_some_and(|v| v == format!("v{i:06}").into_bytes())
        });
        let applied_files_gone = std::fs::read_dir(&snap_dir)
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().starts_with("rev_"));
        if have && applied_files_gone && truncated(back, region_id) > 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store {id} did not catch up (all keys: {have}, files gone: {applied_files_gone})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.shutdown().await.unwrap();
}
