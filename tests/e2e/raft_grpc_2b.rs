//! Three raftstores that talk only over gRPC on loopback: `ServerTransport` carries their raft
//! messages to each other's peer ports, where `PeerService` receives them; clients use the
//! client ports. Writes go through the leader; after the leader
//! stops, the other two elect a new one that serves every acknowledged write.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::{Engines, RawApi, RawLimits, WriteBatch};
use proto::metapb;
use proto::tinykvpb::tiny_kv_server::TinyKvServer;
use raftstore::RaftstoreHandle;
use scheduler_client::SchedulerClient;
use server::peer_service::{ClusterToken, PeerService};
use server::transport::ServerTransport;
use server::KvService;
use tessera_client::raw::{ClientError, RawClient};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

struct Store {
    id: u64,
    addr: String,
    peer_addr: String,
    /// The store's engines, shared with its raftstore, for inspection.
    engines: Engines,
    handle: RaftstoreHandle,
    _never: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    peer_server: tokio::task::JoinHandle<()>,
}

/// Starts bootstrapped store `id` from its directory under `dir`, serving clients on
/// `listener` and other stores on `peer_listener`.
fn start_store(
    dir: &Path,
    id: u64,
    cfg: raftstore::Config,
    (listener, peer_listener): (TcpListener, TcpListener),
    sched: &Arc<dyn SchedulerClient>,
) -> Store {
    let engines = Engines::open(&dir.join(format!("store-{id}"))).unwrap();
    let snap_mgr =
        snap::SnapManager::open(dir.join(format!("snap-{id}")), Default::default()).unwrap();
    let transport = Arc::new(ServerTransport::new(
        tokio::runtime::Handle::current(),
        sched.clone(),
        ClusterToken::default(),
        None,
    ));
    let handle =
        raftstore::start_raftstore(cfg, engines.clone(), snap_mgr.clone(), id, transport, None)
            .expect("raftstore starts");
    let raw = RawApi::new(Arc::new(handle.storage()), RawLimits::default());
    // Never set: these stores stop by crashing (see stop_store).
    let (_never, stop) = watch::channel(false);
    let service = KvService::new(raw);
    let peer_service = PeerService::new(
        handle.inbound().clone(),
        snap_mgr,
        ClusterToken::default(),
        stop,
    );
    let peer_addr = peer_listener.local_addr().unwrap().to_string();
    let peer_incoming = TcpIncoming::from(peer_listener).with_nodelay(Some(true));
    let peer_server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TinyKvServer::new(peer_service))
            .serve_with_incoming(peer_incoming)
            .await
            .expect("store peer server");
    });
    let addr = listener.local_addr().unwrap().to_string();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TinyKvServer::new(service))
            .serve_with_incoming(incoming)
            .await
            .expect("store server");
    });
    Store {
        id,
        addr,
        peer_addr,
        engines,
        handle,
        server,
        peer_server,
        _never,
    }
}

/// Bootstraps three stores with one region holding a peer on each, then starts them all.
async fn start_cluster(
    dir: &Path,
    cfg: raftstore::Config,
) -> (Vec<Store>, Arc<dyn SchedulerClient>) {
    let cluster =
        scheduler::Cluster::in_memory(&scheduler::Config::default(), scheduler::Clock::system())
            .expect("in-memory scheduler");
    let sched: Arc<dyn SchedulerClient> = Arc::new(scheduler::LocalClient::new(Arc::new(cluster)));
    let ids: Vec<u64> = (0..3).map(|_| sched.alloc_id().unwrap()).collect();
    let mut region = raftstore::bootstrap::new_first_region(ids[0], sched.alloc_id().unwrap(), 0);
    region.peers = ids
        .iter()
        .map(|&store_id| metapb::Peer {
            id: sched.alloc_id().unwrap(),
            store_id,
            role: metapb::PeerRole::Voter as i32,
        })
        .collect();
    let mut listeners = Vec::new();
    for &id in &ids {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store = metapb::Store {
            id,
            address: listener.local_addr().unwrap().to_string(),
            state: metapb::StoreState::Up as i32,
            peer_address: peer_listener.local_addr().unwrap().to_string(),
        };
        if id == ids[0] {
            sched.bootstrap(store.clone(), region.clone()).unwrap();
        }
        sched.put_store(store).unwrap();
        listeners.push((listener, peer_listener));
    }
    let mut stores = Vec::new();
    for (&id, listener) in ids.iter().zip(listeners) {
        let engines = Engines::open(&dir.join(format!("store-{id}"))).unwrap();
        raftstore::bootstrap::bootstrap_store(&engines, sched.cluster_id(), id).unwrap();
        let mut wb = WriteBatch::new(&engines.kv);
        raftstore::bootstrap::write_initial_region(&engines, &region, &mut wb).unwrap();
        wb.write(true).unwrap();
        drop((wb, engines));
        stores.push(start_store(dir, id, cfg.clone(), listener, &sched));
    }
    (stores, sched)
}

/// Puts `key` through whichever store currently leads, polling until `deadline`; returns the
/// index of the store that accepted it.
async fn put_via_leader(stores: &[Store], key: &[u8], value: &[u8], deadline: Instant) -> usize {
    let mut last = String::new();
    while Instant::now() < deadline {
        for (i, s) in stores.iter().enumerate() {
            let Ok(mut c) = RawClient::connect(&s.addr).await else {
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
    let (mut stores, _sched) = start_cluster(dir.path(), raftstore::Config::test()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = put_via_leader(&stores, b"k000", b"v000", deadline).await;
    let mut c = RawClient::connect(&stores[leader].addr).await.unwrap();
    for i in 1..50 {
        let (k, v) = (format!("k{i:03}"), format!("v{i:03}"));
        c.put("default", k.as_bytes(), v.as_bytes()).await.unwrap();
    }
    assert_eq!(c.scan("default", b"", 100).await.unwrap().len(), 50);

    // Stop the leader: the two others hold a majority and must serve every write.
    stop_store(stores.remove(leader)).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let new_leader = put_via_leader(&stores, b"after", b"failover", deadline).await;
    let mut c = RawClient::connect(&stores[new_leader].addr).await.unwrap();
    let pairs = c.scan("default", b"", 100).await.unwrap();
    assert_eq!(pairs.len(), 51, "{pairs:?}");
    for i in 0..50 {
        let (k, v) = (format!("k{i:03}"), format!("v{i:03}"));
        assert_eq!(
            c.get("default", k.as_bytes()).await.unwrap(),
            Some(v.into_bytes())
        );
    }
    for s in stores {
        stop_store(s).await;
    }
}

/// Stops a store as a crash would: the raftstore halts and the server drops its connections
/// (no graceful drain: other stores keep their raft streams open to it).
async fn stop_store(s: Store) {
    drop(s.engines);
    let mut handle = s.handle;
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .unwrap();
    s.server.abort();
    s.peer_server.abort();
    let _ = s.server.await;
    let _ = s.peer_server.await;
}

/// A follower down while the log is compacted catches up through a snapshot streamed over
/// `TinyKv.Snapshot`, and the received files are gone once it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_catches_up_by_snapshot_over_grpc_2c() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = raftstore::Config::test();
    cfg.raft_log_gc_count_limit = 10;
    let writes: u64 = std::env::var("TESSERA_SNAPSHOT_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let (mut stores, sched) = start_cluster(dir.path(), cfg.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = put_via_leader(&stores, b"k000000", b"v000000", deadline).await;
    let follower = (leader + 1) % stores.len();
    let down = stores.remove(follower);
    let (id, addr, peer_addr) = (down.id, down.addr.clone(), down.peer_addr.clone());
    let region_id = down
        .handle
        .store_meta()
        .read()
        .unwrap()
        .region_for_key(b"")
        .unwrap()
        .id;
    stop_store(down).await;

    let leader = put_via_leader(&stores, b"k000001", b"v000001", deadline).await;
    // 16 writers; `TESSERA_SNAPSHOT_WRITES` raises the count for a soak (e.g. 100000).
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let addr = stores[leader].addr.clone();
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
    let truncated = |s: &Store| -> u64 {
        let a: Option<proto::raft_serverpb::RaftApplyState> =
            kv::engine::get_msg(&s.engines.kv, &kv::keys::apply_state_key(region_id)).unwrap();
        a.and_then(|a| a.truncated_state).map_or(0, |t| t.index)
    };
    // The entries the follower lacks must be gone from the leader's log before it returns.
    let deadline = Instant::now() + Duration::from_secs(20);
    while truncated(&stores[leader]) <= 10 {
        assert!(
            Instant::now() < deadline,
            "the leader's log was never compacted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = TcpListener::bind(&addr).await.unwrap();
    let peer_listener = TcpListener::bind(&peer_addr).await.unwrap();
    let back = start_store(dir.path(), id, cfg, (listener, peer_listener), &sched);
    let deadline = Instant::now() + Duration::from_secs(20 + writes / 1000);
    loop {
        let have = (0..writes).all(|i| {
            let k = kv::keys::data_key(format!("k{i:06}").as_bytes());
            kv::engine::get_cf(&back.engines.kv, kv::Cf::Default, &k)
                .unwrap()
                .is_some_and(|v| v == format!("v{i:06}").into_bytes())
        });
        let applied_files_gone = std::fs::read_dir(dir.path().join(format!("snap-{id}")))
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().starts_with("rev_"));
        if have && applied_files_gone && truncated(&back) > 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store {id} did not catch up (all keys: {have}, files gone: {applied_files_gone})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_store(back).await;
    for s in stores {
        stop_store(s).await;
    }
}
