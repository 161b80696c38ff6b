//! The gRPC server end to end with `RpcClient`: bootstrap, ids, timestamps, heartbeats from
//! three concurrent store streams, operators coming back, and a restart of the server on the
//! same data directory and port.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::schedulerpb::{RegionHeartbeatResponse, StoreStats};
use scheduler::server::RunningScheduler;
use scheduler::{Cluster, Config};
use scheduler_client::{Error, RpcClient, RpcClientConfig, SchedulerClient};

use crate::common::*;

struct Server {
    runtime: tokio::runtime::Runtime,
    running: RunningScheduler,
    cluster: Arc<Cluster>,
}

fn start(config: &Config) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = Arc::new(Cluster::open(config).expect("open cluster"));
    let running = runtime
        .block_on(scheduler::server::start(cluster.clone(), &config.addr))
        .expect("start server");
    Server {
        runtime,
        running,
        cluster,
    }
}

impl Server {
    fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    /// Stops the server and drops everything holding the database, so it can be reopened.
    fn stop(self) {
        let Server {
            runtime,
            running,
            cluster,
        } = self;
        runtime
            .block_on(running.shutdown())
            .expect("clean shutdown");
        drop(cluster);
        runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

fn config_in(dir: &std::path::Path) -> Config {
    Config {
        addr: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        schedule_interval_ms: 20,
        ..Config::default()
    }
}

fn connect(addr: SocketAddr) -> RpcClient {
    RpcClient::connect(&addr.to_string(), RpcClientConfig::default()).expect("connect")
}

/// A client whose region heartbeat responses come out of the returned receiver.
fn listening(client: &RpcClient, store_id: u64) -> mpsc::Receiver<RegionHeartbeatResponse> {
    let (tx, rx) = mpsc::channel();
    client.handle_region_heartbeat_response(
        store_id,
        Box::new(move |resp| {
            let _ = tx.send(resp);
        }),
    );
    rx
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn grpc_end_to_end_with_restart_3c() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    let server = start(&config);
    let client = connect(server.addr());
    assert_eq!(client.cluster_id(), server.cluster.cluster_id());
    assert!(!client.is_bootstrapped().unwrap());
    assert_eq!(client.get_region(b"a").unwrap_err(), Error::NotBootstrapped);

    let (store_id, region_id, peer_id) = (
        client.alloc_id().unwrap(),
        client.alloc_id().unwrap(),
        client.alloc_id().unwrap(),
    );
    assert!(store_id < region_id && region_id < peer_id);
    let first = region(region_id, "", "", &[(peer_id, store_id)], 1, 1);
    client.bootstrap(store(store_id), first.clone()).unwrap();
    assert_eq!(
        client.bootstrap(store(store_id), first.clone()),
        Err(Error::AlreadyBootstrapped)
    );
    assert!(client.is_bootstrapped().unwrap());
    let others = [client.alloc_id().unwrap(), client.alloc_id().unwrap()];
    for id in others {
        client.put_store(store(id)).unwrap();
    }
    assert_eq!(client.get_store(others[0]).unwrap(), store(others[0]));
    for id in [store_id, others[0], others[1]] {
        client
            .store_heartbeat(StoreStats {
                store_id: id,
                ..Default::default()
            })
            .unwrap();
    }
    assert_eq!(client.get_region(b"key").unwrap(), (first.clone(), None));
    assert_eq!(client.get_region_by_id(region_id).unwrap().0, first);
    assert!(matches!(
        client.get_region_by_id(424242),
        Err(Error::NotFound(_))
    ));

    let mut last_ts = 0;
    for _ in 0..100 {
        let ts = client.tso().unwrap();
        assert!(ts > last_ts);
        last_ts = ts;
    }
    let split = client.ask_split(first.clone()).unwrap();
    assert_eq!(split.new_peer_ids.len(), 1);
    let mut last_id = split.new_peer_ids[0];
    assert!(split.new_region_id > others[1] && last_id > split.new_region_id);

    // One replica of three: the scheduler answers the heartbeat with an add-peer step.
    let responses = listening(&client, store_id);
    client
        .region_heartbeat(heartbeat(&first, store_id, 1))
        .unwrap();
    let resp = responses
        .recv_timeout(Duration::from_secs(10))
        .expect("an operator step");
    assert_eq!(resp.region_id, region_id);
    let added = resp.change_peer.and_then(|c| c.peer).expect("add peer");
    assert!(others.contains(&added.store_id));
    assert!(added.id > last_id);
    last_id = added.id;

    // Restart on the same data directory and port; the client reconnects by itself.
    let addr = server.addr();
    let impatient = RpcClient::connect(
        &addr.to_string(),
        RpcClientConfig {
            request_timeout: Duration::from_millis(300),
            ..RpcClientConfig::default()
        },
    )
    .expect("connect");
    server.stop();
    // While the scheduler is down, calls fail in bounded time with a retryable error.
    let down = impatient.alloc_id().unwrap_err();
    assert!(down.is_retryable(), "{down}");
    assert!(client
        .region_heartbeat(heartbeat(&first, store_id, 1))
        .is_ok());
    config.addr = addr.to_string();
    let server = start(&config);
    let id = client.alloc_id().unwrap();
    assert!(id > last_id, "id {id} after restart, {last_id} before");
    let ts = client.tso().unwrap();
    assert!(ts > last_ts, "tso {ts} after restart, {last_ts} before");
    assert!(client.is_bootstrapped().unwrap());
    assert_eq!(client.get_region(b"x").unwrap().0, first);
    // The heartbeat stream comes back: keep reporting until an answer arrives.
    let deadline = Instant::now() + Duration::from_secs(15);
    let resp = loop {
        assert!(
            Instant::now() < deadline,
            "no answer over the reopened stream"
        );
        client
            .region_heartbeat(heartbeat(&first, store_id, 1))
            .unwrap();
        if let Ok(resp) = responses.recv_timeout(Duration::from_millis(200)) {
            break resp;
        }
    };
    assert_eq!(resp.region_id, region_id);
    drop(client);
    server.stop();
}

#[test]
fn concurrent_heartbeats_from_three_store_streams_3c() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        max_replicas: 3,
        balance_leader: false,
        balance_region: false,
        ..config_in(dir.path())
    };
    let server = start(&config);
    let cluster = server.cluster.clone();
    cluster
        .bootstrap(store(1), region(1, "", "", &[(101, 1)], 1, 1))
        .unwrap();
    for s in 1..=3 {
        cluster.put_store(store(s)).unwrap();
    }
    heartbeat_stores(&cluster, 1..=3);
    const PER_STORE: u64 = 20;
    const ROUNDS: u64 = 5;
    let addr = server.addr();
    let threads: Vec<_> = (1..=3u64)
        .map(|s| {
            std::thread::spawn(move || {
                let client = connect(addr);
                let responses = listening(&client, s);
                for round in 0..ROUNDS {
                    for i in 0..PER_STORE {
                        let id = 100 * s + i;
                        let (start, end) = (format!("r{id:05}"), format!("r{:05}", id + 1));
                        let r = region_on(id, &start, &end, &[1, 2, 3], 2 + round);
                        client.region_heartbeat(heartbeat(&r, s, id)).unwrap();
                    }
                }
                // Store 2 also leads a region with a single replica: it gets an operator back.
                let mut operator = None;
                if s == 2 {
                    let lonely = region_on(999, "z", "", &[2], 2);
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while operator.is_none() {
                        assert!(Instant::now() < deadline, "no operator for region 999");
                        client.region_heartbeat(heartbeat(&lonely, 2, 1)).unwrap();
                        if let Ok(resp) = responses.recv_timeout(Duration::from_millis(200)) {
                            operator = Some(resp).filter(|r| r.region_id == 999);
                        }
                    }
                }
                // The client goes back to the main thread: dropping it here could cut off
                // heartbeats still queued for the stream.
                (client, operator)
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut operator = None;
    for t in threads {
        let (client, resp) = t.join().expect("store thread");
        clients.push(client);
        operator = operator.or(resp);
    }
    let want_version = 2 + ROUNDS - 1;
    wait_until("all heartbeats processed", Duration::from_secs(20), || {
        (1..=3u64).all(|s| {
            (0..PER_STORE).all(|i| {
                cluster
                    .get_region_by_id(100 * s + i)
                    .is_ok_and(|r| r.epoch().1 == want_version && r.leader_store() == Some(s))
            })
        })
    });
    let resp = operator.expect("store 2 got an operator");
    let added = resp.change_peer.and_then(|c| c.peer).expect("add peer");
    assert_ne!(added.store_id, 2);
    for s in 1..=3 {
        let counts = cluster.get_store(s).unwrap().counts;
        assert_eq!(
            counts.leader_count,
            PER_STORE + u64::from(s == 2),
            "store {s}"
        );
        assert_eq!(
            counts.region_count,
            3 * PER_STORE + u64::from(s == 2),
            "store {s}"
        );
    }
    drop(clients);
    drop(cluster);
    server.stop();
}
