//! Region-aware routing over a real cluster: three raft stores on loopback gRPC with an
//! in-process scheduler (`LocalCluster`). The `ClusterClient` finds each key's region leader
//! from any first guess, follows a failover, and scans across regions; `tessera-ctl
//! --scheduler` and the HTTP gateway of a follower store route the same way.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::local_cluster::{LocalCluster, LocalClusterConfig};
use proto::metapb;
use proto::schedulerpb::{AskSplitResponse, RegionHeartbeatRequest, StoreStats};
use scheduler_client::{HeartbeatHandler, Result as SchedResult, SchedulerClient};
use server::config::{Config, EngineKind};
use tessera_client::cluster::{ClusterClient, ClusterConfig, ClusterError};
use tokio::sync::watch;

use crate::util::{ctl, http, start, start_scheduler, test_config};

async fn start_cluster(dir: &std::path::Path, split_keys: &[&str]) -> LocalCluster {
    let mut config = LocalClusterConfig::new(3);
    config.split_keys = split_keys.iter().map(|k| k.as_bytes().to_vec()).collect();
    LocalCluster::start(dir, config)
        .await
        .expect("cluster starts")
}

async fn client_of(cluster: &LocalCluster) -> ClusterClient {
    ClusterClient::connect(
        &cluster.scheduler_addr().to_string(),
        ClusterConfig::default(),
    )
    .await
    .expect("scheduler reachable")
}

/// A scheduler that names the peer on `store_id` as every region's leader: a client starting
/// from it must follow the stores' `NotLeader` hints to the real leader.
struct WrongLeader {
    inner: Arc<dyn SchedulerClient>,
    store_id: u64,
}

impl SchedulerClient for WrongLeader {
    fn cluster_id(&self) -> u64 {
        self.inner.cluster_id()
    }
    fn bootstrap(&self, store: metapb::Store, region: metapb::Region) -> SchedResult<()> {
        self.inner.bootstrap(store, region)
    }
    fn is_bootstrapped(&self) -> SchedResult<bool> {
        self.inner.is_bootstrapped()
    }
    fn alloc_id(&self) -> SchedResult<u64> {
        self.inner.alloc_id()
    }
    fn put_store(&self, store: metapb::Store) -> SchedResult<()> {
        self.inner.put_store(store)
    }
    fn get_store(&self, store_id: u64) -> SchedResult<metapb::Store> {
        self.inner.get_store(store_id)
    }
    fn get_region(&self, key: &[u8]) -> SchedResult<(metapb::Region, Option<metapb::Peer>)> {
        let (region, _) = self.inner.get_region(key)?;
        let claimed = region
            .peers
            .iter()
            .find(|p| p.store_id == self.store_id)
            .copied();
        Ok((region, claimed))
    }
    fn get_region_by_id(&self, id: u64) -> SchedResult<(metapb::Region, Option<metapb::Peer>)> {
        self.inner.get_region_by_id(id)
    }
    fn ask_split(&self, region: metapb::Region) -> SchedResult<AskSplitResponse> {
        self.inner.ask_split(region)
    }
    fn store_heartbeat(&self, stats: StoreStats) -> SchedResult<()> {
        self.inner.store_heartbeat(stats)
    }
    fn region_heartbeat(&self, req: RegionHeartbeatRequest) -> SchedResult<()> {
        self.inner.region_heartbeat(req)
    }
    fn handle_region_heartbeat_response(&self, store_id: u64, handler: HeartbeatHandler) {
        self.inner
            .handle_region_heartbeat_response(store_id, handler)
    }
    fn tso(&self) -> SchedResult<u64> {
        self.inner.tso()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_client_reaches_the_leader_from_any_store_2b() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), &[]).await;
    let ids: Vec<u64> = cluster.stores().iter().map(|s| s.id).collect();
    let clients: Vec<ClusterClient> = ids
        .iter()
        .map(|&store_id| {
            let wrong = WrongLeader {
                inner: cluster.scheduler_client(),
                store_id,
            };
            ClusterClient::new(Arc::new(wrong), ClusterConfig::default())
        })
        .collect();
    for (i, c) in clients.iter().enumerate() {
        let key = format!("entry-{i}");
        c.put("default", key.as_bytes(), b"v").await.unwrap();
        assert_eq!(
            c.get("default", key.as_bytes()).await.unwrap(),
            Some(b"v".to_vec())
        );
    }
    // Each client sees what the others wrote, and deletes are routed the same way.
    for c in &clients {
        let pairs = c.scan("default", b"entry-", 10).await.unwrap();
        assert_eq!(pairs.len(), 3, "{pairs:?}");
    }
    clients[2].delete("default", b"entry-0").await.unwrap();
    assert_eq!(clients[0].get("default", b"entry-0").await.unwrap(), None);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_client_gives_up_saying_what_it_tried_2b() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(dir.path(), &[]).await;
    let config = ClusterConfig {
        timeout: Duration::from_secs(1),
        ..ClusterConfig::default()
    };
    let client = ClusterClient::new(cluster.scheduler_client(), config);
    client.put("default", b"k", b"v").await.unwrap();
    let ids: Vec<u64> = cluster.stores().iter().map(|s| s.id).collect();
    for id in ids {
        cluster.stop_store(id).await;
    }
    let began = Instant::now();
    let err = client.get("default", b"k").await.unwrap_err().to_string();
    assert!(began.elapsed() < Duration::from_secs(3), "{err}");
    assert!(err.contains("get \"k\": gave up after"), "{err}");
    assert!(err.contains("store "), "{err}");
    // A write never left the client (its batch streams broke with the stores, and no store
    // takes a new one): it is retried, and reported as not applied rather than unknown.
    let err = client.put("default", b"k", b"w").await.unwrap_err();
    assert!(matches!(err, ClusterError::GaveUp { .. }), "{err}");
    cluster.shutdown().await.unwrap();
}

/// Writes `w00000`, `w00001`, ... one after another until `stop`; returns the acknowledged
/// keys. Failed writes (the deadline passed during the failover) are not acknowledged.
async fn write_until(
    client: ClusterClient,
    acked: Arc<Mutex<Vec<String>>>,
    mut stop: watch::Receiver<bool>,
) {
    for i in 0.. {
        if *stop.borrow_and_update() {
            return;
        }
        let key = format!("w{i:05}");
        if client
            .put("default", key.as_bytes(), key.as_bytes())
            .await
            .is_ok()
        {
            acked.lock().unwrap().push(key);
        }
    }
}

async fn wait_acked(acked: &Mutex<Vec<String>>, at_least: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = acked.lock().unwrap().len();
        if n >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: only {n} of {at_least} writes acknowledged in 30s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_client_follows_the_new_leader_after_the_leader_stops_2b() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(dir.path(), &[]).await;
    let client = client_of(&cluster).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (stop, stop_rx) = watch::channel(false);
    let writer = tokio::spawn(write_until(client.clone(), acked.clone(), stop_rx));
    wait_acked(&acked, 20, "before the failover").await;

    let leader = cluster
        .leader_store(b"w")
        .expect("the scheduler knows a leader");
    cluster.stop_store(leader).await;
    let before = acked.lock().unwrap().len();
    wait_acked(&acked, before + 20, "after the leader stopped").await;
    let _ = stop.send(true);
    writer.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    for key in &acked {
        assert_eq!(
            client.get("default", key.as_bytes()).await.unwrap(),
            Some(key.clone().into_bytes()),
            "acknowledged write {key} lost"
        );
    }
    let pairs = client.scan("default", b"w", 100_000).await.unwrap();
    assert!(
        pairs.len() >= acked.len(),
        "{} < {}",
        pairs.len(),
        acked.len()
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_spans_regions_in_key_order_2b() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), &["g", "p"]).await;
    let sched = cluster.scheduler_client();
    let region_of = |k: &[u8]| sched.get_region(k).unwrap().0.id;
    assert_ne!(region_of(b"a"), region_of(b"h"));
    assert_ne!(region_of(b"h"), region_of(b"z"));

    let client = client_of(&cluster).await;
    let letters: Vec<String> = ('a'..='z').map(|c| format!("{c}0")).collect();
    // Written in reverse so that order comes from the scan, not from the writes.
    for k in letters.iter().rev() {
        client
            .put("default", k.as_bytes(), k.to_uppercase().as_bytes())
            .await
            .unwrap();
    }
    let keys = |pairs: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<String> {
        pairs
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect()
    };
    let all = client.scan("default", b"", 1000).await.unwrap();
    assert_eq!(all[6].1, b"G0".to_vec());
    assert_eq!(keys(all), letters);
    // From inside the first region across both boundaries, stopping at the limit.
    let middle = client.scan("default", b"e", 14).await.unwrap();
    assert_eq!(keys(middle), letters[4..18].to_vec());
    // A limit that ends exactly at a region boundary.
    let first = client.scan("default", b"", 6).await.unwrap();
    assert_eq!(keys(first), letters[..6].to_vec());
    assert!(client.scan("default", b"zz", 10).await.unwrap().is_empty());
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_with_scheduler_routes_through_the_cluster_2b() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), &["m"]).await;
    let sched = cluster.scheduler_addr().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nobody = format!("127.0.0.1:{port}");
    let out = tokio::task::spawn_blocking(move || {
        let at = |args: &[&str]| {
            let mut all = vec!["--scheduler", sched.as_str()];
            all.extend_from_slice(args);
            ctl(&all)
        };
        vec![
            at(&["put", "apple", "red"]),
            at(&["put", "zebra", "striped"]),
            at(&["get", "zebra"]),
            at(&["scan", "--start", "a", "--limit", "10"]),
            at(&["delete", "apple"]),
            at(&["get", "apple"]),
            at(&["--cf", "bogus", "get", "k"]),
            at(&["--addr", "127.0.0.1:1", "get", "k"]),
            ctl(&["--scheduler", &nobody, "get", "k"]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(out[0], (0, "OK\n".into(), String::new()));
    assert_eq!(out[1].0, 0, "{:?}", out[1]);
    assert_eq!(out[2], (0, "striped\n".into(), String::new()));
    assert_eq!(
        out[3],
        (0, "apple\tred\nzebra\tstriped\n".into(), String::new())
    );
    assert_eq!(out[4].0, 0, "{:?}", out[4]);
    assert_eq!(out[5].0, 1, "{:?}", out[5]);
    assert!(out[5].2.contains("key not found"), "{:?}", out[5]);
    assert_eq!(out[6].0, 3, "{:?}", out[6]);
    assert!(out[6].2.contains("unknown column family"), "{:?}", out[6]);
    assert_eq!(out[7].0, 2, "{:?}", out[7]);
    assert_eq!(out[8].0, 4, "{:?}", out[8]);
    assert!(
        out[8].2.contains("cannot reach the scheduler"),
        "{:?}",
        out[8]
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_gateway_serves_reads_and_writes_2b() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), &[]).await;
    let leader = cluster.leader_store(b"").expect("a leader");
    let followers: Vec<_> = cluster.stores().iter().filter(|s| s.id != leader).collect();
    let (f1, f2) = (followers[0].status_addr, followers[1].status_addr);

    assert_eq!(http(f1, "PUT", "/kv/hello", b"world").await.0, 204);
    assert_eq!(
        http(f1, "GET", "/kv/hello", b"").await,
        (200, b"world".to_vec())
    );
    assert_eq!(
        http(f2, "GET", "/kv/hello", b"").await,
        (200, b"world".to_vec())
    );
    assert_eq!(http(f2, "PUT", "/kv/l?cf=lock", b"x").await.0, 204);
    assert_eq!(
        http(f1, "GET", "/kv/l?cf=lock", b"").await,
        (200, b"x".to_vec())
    );
    assert_eq!(http(f2, "DELETE", "/kv/hello", b"").await.0, 204);
    assert_eq!(http(f1, "GET", "/kv/hello", b"").await.0, 404);
    assert_eq!(http(f1, "GET", "/kv/k?cf=bogus", b"").await.0, 400);
    // What the gateways wrote is what the leader serves.
    let client = client_of(&cluster).await;
    assert_eq!(client.get("lock", b"l").await.unwrap(), Some(b"x".to_vec()));
    cluster.shutdown().await.unwrap();
}

/// The gateway of the store that leads a key's region serves the key itself, without the
/// cluster client: with the scheduler down (no cluster client can connect), one gateway, the
/// leader's, still reads and writes the region, while the followers' gateways, which must route
/// through the scheduler, cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_gateway_serves_its_regions_without_the_scheduler_2b() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(dir.path(), &[]).await;
    let gateways: Vec<_> = cluster.stores().iter().map(|s| s.status_addr).collect();
    cluster.stop_scheduler().await.unwrap();

    // The scheduler's last word on the leader may be stale: ask every gateway.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (serving, refusing) = loop {
        let mut answers = Vec::new();
        for &gw in &gateways {
            answers.push((gw, http(gw, "PUT", "/kv/fast", b"path").await));
        }
        let (ok, refused): (Vec<_>, Vec<_>) = answers.into_iter().partition(|a| a.1 .0 == 204);
        if ok.len() == 1 && refused.iter().all(|a| a.1 .0 == 503) {
            break (ok[0].0, refused);
        }
        assert!(
            Instant::now() < deadline,
            "no single serving gateway: {ok:?} {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        String::from_utf8_lossy(&refusing[0].1 .1).contains("cannot reach the scheduler"),
        "{refusing:?}"
    );
    assert_eq!(
        http(serving, "GET", "/kv/fast", b"").await,
        (200, b"path".to_vec())
    );
    assert_eq!(http(serving, "DELETE", "/kv/fast", b"").await.0, 204);
    assert_eq!(http(serving, "GET", "/kv/fast", b"").await.0, 404);
    assert_eq!(http(serving, "GET", "/kv/k?cf=bogus", b"").await.0, 400);
    assert_eq!(http(refusing[0].0, "GET", "/kv/fast", b"").await.0, 503);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gateway_forwards_from_a_store_without_the_region_2b() {
    let dir = tempfile::tempdir().unwrap();
    let sched = start_scheduler(&dir.path().join("sched")).await;
    let raft = |name: &str| Config {
        engine: EngineKind::Raft,
        scheduler_addr: sched.addr.to_string(),
        ..test_config(&dir.path().join(name))
    };
    // The first store bootstraps the cluster and holds its only region; the second joins with
    // no peer (no conf change yet), so its gateway can only forward.
    let first = start(&raft("first")).await;
    let second = start(&raft("second")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let (status, body) = http(second.status_addr, "PUT", "/kv/k", b"via-second").await;
        if status == 204 || Instant::now() >= deadline {
            break (status, String::from_utf8_lossy(&body).to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.0, 204, "{status:?}");
    assert_eq!(
        http(first.status_addr, "GET", "/kv/k", b"").await,
        (200, b"via-second".to_vec())
    );
    assert_eq!(
        http(second.status_addr, "GET", "/kv/k", b"").await,
        (200, b"via-second".to_vec())
    );
    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();
    sched.shutdown().await.unwrap();
}

/// The blocking client, from a plain thread: writes, reads, swaps and scans across a split
/// cluster, through the same routing as the async client.
#[test]
fn blocking_cluster_client_serves_a_plain_thread_2b() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cluster = runtime.block_on(start_cluster(dir.path(), &["m"]));
    let scheduler = cluster.scheduler_addr().to_string();

    let client =
        tessera_client::blocking::ClusterClient::connect(&scheduler, ClusterConfig::default())
            .expect("scheduler reachable");
    for key in ["a", "z"] {
        client.put("default", key.as_bytes(), b"1").unwrap();
    }
    assert_eq!(client.get("default", b"z").unwrap(), Some(b"1".to_vec()));
    let swapped = client
        .compare_and_swap("default", b"a", Some(b"1"), b"2")
        .unwrap();
    assert!(swapped.succeed, "{swapped:?}");
    client.delete("default", b"z").unwrap();
    let pairs = client.scan("default", b"", 10).unwrap();
    assert_eq!(pairs, vec![(b"a".to_vec(), b"2".to_vec())]);
    // With a TTL, on one key and on a batch over both regions.
    client.put_with_ttl("default", b"t", b"1", 1).unwrap();
    let batch = [
        (b"b".to_vec(), b"1".to_vec()),
        (b"y".to_vec(), b"1".to_vec()),
    ];
    client.batch_put_with_ttl("default", &batch, 1).unwrap();
    assert_eq!(client.scan("default", b"", 10).unwrap().len(), 4);
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    assert_eq!(client.scan("default", b"", 10).unwrap(), pairs);
    drop(client);

    runtime.block_on(cluster.shutdown()).unwrap();
}

/// Batches and range scans over three regions: a batch is split by region (each share one
/// write), a scan crosses regions in key order or from the top down, with an end, a limit and
/// keys only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_range_scans_span_regions_2b() {
    use tessera_client::ScanRange;

    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), &["g", "p"]).await;
    let client = client_of(&cluster).await;
    let letters = |from: u8, to: u8| -> Vec<Vec<u8>> { (from..=to).map(|c| vec![c]).collect() };
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = letters(b'a', b'z')
        .into_iter()
        .rev()
        .map(|k| (k.clone(), [b"v-", &k[..]].concat()))
        .collect();
    client.batch_put("default", &pairs).await.unwrap();

    let got = client
        .batch_get(
            "default",
            &[b"z".to_vec(), b"a".to_vec(), b"h".to_vec(), b"0".to_vec()],
        )
        .await
        .unwrap();
    let expect = |ks: &[&[u8]]| -> Vec<(Vec<u8>, Vec<u8>)> {
        ks.iter()
            .map(|k| (k.to_vec(), [b"v-", *k].concat()))
            .collect()
    };
    assert_eq!(got, expect(&[b"a", b"h", b"z"]));

    let keys = |r: &ScanRange| {
        let client = &client;
        let r = r.clone();
        async move {
            let pairs = client.scan_range("default", &r).await.unwrap();
            String::from_utf8(pairs.into_iter().flat_map(|(k, _)| k).collect()).unwrap()
        }
    };
    assert_eq!(
        keys(&ScanRange::new(b"e", b"r", 100)).await,
        "efghijklmnopq"
    );
    assert_eq!(keys(&ScanRange::new(b"e", b"r", 5)).await, "efghi");
    assert_eq!(
        keys(&ScanRange::new(b"e", b"r", 100).reversed()).await,
        "qponmlkjihgfe"
    );
    assert_eq!(
        keys(&ScanRange::new(b"", b"", 12).reversed()).await,
        "zyxwvutsrqpo"
    );
    assert_eq!(keys(&ScanRange::new(b"", b"p", 3).reversed()).await, "onm");
    assert_eq!(
        keys(&ScanRange::new(b"", b"g\0", 3).reversed()).await,
        "gfe"
    );
    let only = client
        .scan_range("default", &ScanRange::new(b"f", b"i", 10).keys_only())
        .await
        .unwrap();
    assert_eq!(
        only,
        vec![
            (b"f".to_vec(), vec![]),
            (b"g".to_vec(), vec![]),
            (b"h".to_vec(), vec![])
        ]
    );

    // Any store's HTTP gateway serves a range across regions.
    let (code, body) = http(
        cluster.stores()[0].status_addr,
        "GET",
        "/kv?start=e&end=i&reverse=true&keys_only=true",
        b"",
    )
    .await;
    assert_eq!(
        (code, String::from_utf8(body).unwrap()),
        (
            200,
            r#"{"kvs":[{"key":"h"},{"key":"g"},{"key":"f"},{"key":"e"}],"truncated":false}"#.into()
        )
    );

    // The HTTP gateway's batches go region by region too.
    let gw = cluster.stores()[1].status_addr;
    let body =
        br#"{"kvs":[{"key":"a","value":"A"},{"key":"h","value":"H"},{"key":"z","value":"Z"}]}"#;
    assert_eq!(http(gw, "POST", "/batch/put", body).await.0, 204);
    let (code, got) = http(gw, "POST", "/batch/get", br#"{"keys":["z","h","a"]}"#).await;
    assert_eq!(
        (code, String::from_utf8(got).unwrap()),
        (
            200,
            r#"{"kvs":[{"key":"a","value":"A"},{"key":"h","value":"H"},{"key":"z","value":"Z"}],"truncated":false}"#.into()
        )
    );
    client.batch_put("default", &pairs).await.unwrap();

    // A delete of a range across regions, one write per region; the keys around it stay.
    client.delete_range("default", b"e", b"r").await.unwrap();
    assert_eq!(keys(&ScanRange::new(b"", b"", 100)).await, "abcdrstuvwxyz");
    // A store refuses a range that crosses its region's end: it could reach the next region.
    let leader = cluster.leader_store(b"f").expect("a leader");
    let addr = cluster
        .stores()
        .iter()
        .find(|s| s.id == leader)
        .unwrap()
        .addr;
    let mut one = tessera_client::RawClient::connect(&addr.to_string())
        .await
        .unwrap();
    let e = one.delete_range("default", b"f", b"h").await.unwrap_err();
    assert!(e.to_string().contains("not in region"), "{e}");
    client.batch_put("default", &pairs).await.unwrap();

    client
        .batch_delete("default", &letters(b'c', b'x'))
        .await
        .unwrap();
    assert_eq!(keys(&ScanRange::new(b"", b"", 100)).await, "abyz");
    assert_eq!(
        keys(&ScanRange::new(b"", b"", 100).reversed()).await,
        "zyba"
    );
    cluster.shutdown().await.unwrap();
}

/// A leader stopped gracefully finishes the writes it has taken before its raft traffic stops:
/// its peer port closes only once its client ports have drained, so those writes still commit
/// and none of them ends with an unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_finishes_the_writes_it_took_2b() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(dir.path(), &[]).await;
    let client = client_of(&cluster).await;
    let (stop, stop_rx) = watch::channel(false);
    let unknown = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, unknown, mut stop_rx) = (client.clone(), unknown.clone(), stop_rx.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if *stop_rx.borrow_and_update() {
                        return;
                    }
                    let key = format!("s{w}-{i:05}");
                    match client.put("default", key.as_bytes(), b"v").await {
                        Err(e) if e.is_undetermined() => {
                            unknown.lock().unwrap().push(e.to_string())
                        }
                        _ => {}
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader = cluster.leader_store(b"s").expect("a leader");
    cluster.stop_store(leader).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(true);
    for w in writers {
        w.await.unwrap();
    }
    let unknown = unknown.lock().unwrap().clone();
    assert!(
        unknown.is_empty(),
        "writes left undetermined by a graceful stop: {unknown:?}"
    );
    cluster.shutdown().await.unwrap();
}
