//! Compare-and-swap end to end: `tessera-ctl cas` against a standalone server and through a
//! cluster (output and exit codes), increments through `ClusterClient` across a leader
//! failover, and the client's rule for sending a swap again, against a store scripted to fail
//! in each way.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::local_cluster::{LocalCluster, LocalClusterConfig};
use kv::StorageReader;
use kv::{Cas, CasOutcome, MemoryStorage, Modify, RawApi, RawLimits, Storage};
use proto::kvrpcpb::Context;
use proto::{errorpb, metapb};
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient as _};
use server::KvService;
use tessera_client::cluster::{ClusterClient, ClusterConfig, ClusterError};
use tessera_client::raw::{ClientError, RawClient};

use crate::util::{ctl, start, start_scheduler, test_config};

type Out = (i32, String, String);

fn out(code: i32, stdout: &str) -> Out {
    (code, stdout.to_string(), String::new())
}

/// The cas cases every target must answer alike; returns them with what ctl said.
fn cas_cases(target: &[&str]) -> Vec<(Vec<&'static str>, Out)> {
    let cases: Vec<Vec<&'static str>> = vec![
        vec!["cas", "k", "v1", "--expect-absent"],
        vec!["cas", "k", "v2", "--expect-absent"],
        vec!["cas", "k", "v2", "--expect", "v1"],
        vec!["cas", "k", "v3", "--expect", "v1"],
        vec!["get", "k"],
        vec!["cas", "k", "v3"],
        vec!["cas", "k", "v3", "--expect", "v2", "--expect-absent"],
        vec!["--cf", "bogus", "cas", "k", "v", "--expect-absent"],
        vec!["--cf", "lock", "cas", "k", "", "--expect-absent"],
        vec!["--cf", "lock", "cas", "k", "l", "--expect", ""],
    ];
    cases
        .into_iter()
        .map(|args| {
            let mut all = target.to_vec();
            all.extend_from_slice(&args);
            let said = ctl(&all);
            (args, said)
        })
        .collect()
}

fn check_cas_cases(said: &[(Vec<&'static str>, Out)]) {
    let want = [
        Some(out(0, "swapped\nprevious absent\n")),
        Some(out(6, "not swapped\nprevious: v1\n")),
        Some(out(0, "swapped\nprevious: v1\n")),
        Some(out(6, "not swapped\nprevious: v2\n")),
        Some(out(0, "v2\n")),
        None,
        None,
        None,
        Some(out(0, "swapped\nprevious absent\n")),
        // The empty value is a value: expecting it matches.
        Some(out(0, "swapped\nprevious: \n")),
    ];
    for ((args, got), want) in said.iter().zip(want) {
        if let Some(want) = want {
            assert_eq!(got, &want, "{args:?}");
        }
    }
    // Bad usage: neither or both expectations.
    assert_eq!(said[5].1 .0, 2, "{:?}", said[5]);
    assert_eq!(said[6].1 .0, 2, "{:?}", said[6]);
    assert_eq!(said[7].1 .0, 3, "{:?}", said[7]);
    assert!(
        said[7].1 .2.contains("unknown column family"),
        "{:?}",
        said[7]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_cas_swaps_and_says_so_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    let addr = server.addr.to_string();
    let said = {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || cas_cases(&["--addr", &addr]))
            .await
            .unwrap()
    };
    check_cas_cases(&said);

    let mut c = RawClient::connect(&addr).await.unwrap();
    let r = c
        .compare_and_swap("", b"k", Some(b"v2"), b"v3")
        .await
        .unwrap();
    assert!(r.succeed, "{r:?}");
    assert_eq!(r.previous.as_deref(), Some(&b"v2"[..]));
    let e = c
        .compare_and_swap("", b"k", None, &vec![0; 9 * 1024 * 1024])
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Server(ref m) if m.contains("exceeds")),
        "{e}"
    );
    assert!(!e.is_undetermined());
    server.shutdown().await.unwrap();

    let (code, _, err) = tokio::task::spawn_blocking(move || {
        ctl(&["--addr", &addr, "cas", "k", "v", "--expect-absent"])
    })
    .await
    .unwrap();
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

async fn start_cluster(dir: &std::path::Path) -> LocalCluster {
    LocalCluster::start(dir, LocalClusterConfig::new(3))
        .await
        .expect("cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_cas_through_the_cluster_2b() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path()).await;
    let sched = cluster.scheduler_addr().to_string();
    let said = tokio::task::spawn_blocking(move || cas_cases(&["--scheduler", &sched]))
        .await
        .unwrap();
    check_cas_cases(&said);
    cluster.shutdown().await.unwrap();
}

/// Clients increment a counter with read + CAS while the leader's store stops: every swap that
/// succeeded wrote a value no other did, and the counter counts them, plus at most the swaps
/// whose outcome the client could not learn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_increments_survive_a_leader_failover_2b() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(dir.path()).await;
    let client = ClusterClient::connect(
        &cluster.scheduler_addr().to_string(),
        ClusterConfig::default(),
    )
    .await
    .unwrap();
    let written = Arc::new(Mutex::new(Vec::new()));
    let undetermined = Arc::new(Mutex::new(0u64));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (client, written, undetermined) =
            (client.clone(), written.clone(), undetermined.clone());
        let stop = stop_rx.clone();
        clients.push(tokio::spawn(async move {
            let mut seen = client.get("", b"counter").await.ok().flatten();
            while !*stop.borrow() {
                let n = seen.as_deref().map_or(0, parse) + 1;
                let value = n.to_string();
                match client
                    .compare_and_swap("", b"counter", seen.as_deref(), value.as_bytes())
                    .await
                {
                    Ok(r) if r.succeed => {
                        written.lock().unwrap().push(n);
                        seen = Some(value.into_bytes());
                    }
                    Ok(r) => seen = r.previous,
                    Err(e) => {
                        if e.is_undetermined() {
                            *undetermined.lock().unwrap() += 1;
                        }
                        seen = client.get("", b"counter").await.ok().flatten();
                    }
                }
            }
        }));
    }
    let progress = |at_least: usize| {
        let written = written.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while written.lock().unwrap().len() < at_least {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "only {} swaps of {at_least} in 30 s",
                    written.lock().unwrap().len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    progress(20).await;
    let leader = cluster.leader_store(b"counter").expect("a leader");
    cluster.stop_store(leader).await;
    let before = written.lock().unwrap().len();
    progress(before + 20).await;
    stop.send(true).unwrap();
    for c in clients {
        c.await.unwrap();
    }

    let written = written.lock().unwrap().clone();
    let distinct: HashSet<u64> = written.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        written.len(),
        "two swaps from one value: {written:?}"
    );
    let counter = client
        .get("", b"counter")
        .await
        .unwrap()
        .map_or(0, |v| parse(&v));
    let (successes, unknown) = (written.len() as u64, *undetermined.lock().unwrap());
    eprintln!("counter {counter}: {successes} swaps succeeded, {unknown} undetermined");
    assert!(
        successes <= counter && counter <= successes + unknown,
        "counter {counter}: {successes} swaps succeeded, {unknown} undetermined"
    );
    cluster.shutdown().await.unwrap();
}

fn parse(v: &[u8]) -> u64 {
    std::str::from_utf8(v).unwrap().parse().unwrap()
}

/// How the scripted store answers its next compare-and-swap.
enum Step {
    /// Runs it.
    Serve,
    /// Answers with this region error, without running it.
    Refuse(Box<errorpb::Error>),
    /// Runs it, then answers too late (the service answers "unavailable" after its timeout).
    ServeAndStall,
}

/// A storage whose swaps follow a script, and count.
struct Scripted {
    inner: MemoryStorage,
    script: Mutex<VecDeque<Step>>,
    calls: Mutex<u64>,
}

impl Scripted {
    /// Runs `op` as the next step of the script says.
    fn step<T>(&self, op: impl FnOnce() -> kv::Result<T>) -> kv::Result<T> {
        *self.calls.lock().unwrap() += 1;
        let step = self.script.lock().unwrap().pop_front();
        match step.unwrap_or(Step::Serve) {
            Step::Serve => op(),
            Step::Refuse(e) => Err(kv::Error::Region(e)),
            Step::ServeAndStall => {
                let out = op();
                std::thread::sleep(Duration::from_millis(500));
                out
            }
        }
    }
}

impl Storage for Scripted {
    fn write(&self, ctx: &Context, batch: Vec<Modify>) -> kv::Result<()> {
        self.step(|| self.inner.write(ctx, batch))
    }

    fn compare_and_swap(&self, ctx: &Context, cas: Cas) -> kv::Result<CasOutcome> {
        self.step(|| self.inner.compare_and_swap(ctx, cas))
    }

    fn reader(&self, ctx: &Context) -> kv::Result<Box<dyn StorageReader>> {
        self.inner.reader(ctx)
    }
}

/// A swap (or a put) is sent again after a region error that proves it did not apply, and
/// never after one that does not, nor after the store stopped waiting for it: those end
/// `Undetermined`, with the store having seen the write exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_client_resends_a_cas_only_when_it_did_not_apply_2b() {
    let storage = Arc::new(Scripted {
        inner: MemoryStorage::new(),
        script: Mutex::new(VecDeque::new()),
        calls: Mutex::new(0),
    });
    let service = KvService::new(RawApi::new(storage.clone(), RawLimits::default()))
        .with_reply_timeout(Duration::from_millis(100));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store_addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(proto::tinykvpb::tiny_kv_server::TinyKvServer::new(service))
            .serve_with_incoming(incoming),
    );
    // A scheduler that knows one region, on this one store.
    let dir = tempfile::tempdir().unwrap();
    let scheduler = start_scheduler(dir.path()).await;
    let sched_addr = scheduler.addr.to_string();
    let addr = sched_addr.clone();
    tokio::task::spawn_blocking(move || {
        let c = RpcClient::connect(&addr, RpcClientConfig::default()).unwrap();
        let store = metapb::Store {
            id: 1,
            address: store_addr.to_string(),
            ..Default::default()
        };
        let region = metapb::Region {
            id: 2,
            peers: vec![metapb::Peer {
                id: 3,
                store_id: 1,
                ..Default::default()
            }],
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            ..Default::default()
        };
        c.bootstrap(store.clone(), region).unwrap();
        c.put_store(store).unwrap();
    })
    .await
    .unwrap();
    let config = ClusterConfig {
        timeout: Duration::from_secs(5),
        ..ClusterConfig::default()
    };
    let client = ClusterClient::connect(&sched_addr, config).await.unwrap();
    let calls = || *storage.calls.lock().unwrap();
    let script = |steps: Vec<Step>| *storage.script.lock().unwrap() = steps.into();
    let busy = errorpb::Error {
        message: "busy".to_string(),
        server_is_busy: Some(errorpb::ServerIsBusy::default()),
        ..Default::default()
    };
    let stale = errorpb::Error {
        message: "stale".to_string(),
        stale_command: Some(errorpb::StaleCommand {}),
        ..Default::default()
    };

    // Refusals that prove nothing applied are retried; the third attempt swaps.
    script(vec![
        Step::Refuse(Box::new(busy)),
        Step::Refuse(Box::new(stale)),
    ]);
    let r = client.compare_and_swap("", b"k", None, b"1").await.unwrap();
    assert!(r.succeed && r.previous.is_none(), "{r:?}");
    assert_eq!(calls(), 3);

    // A region error that proves nothing (a peer removed with the swap pending): not resent.
    let unknown = errorpb::Error {
        message: "region 2: the outcome of the command is unknown".to_string(),
        ..Default::default()
    };
    script(vec![Step::Refuse(Box::new(unknown))]);
    let e = client
        .compare_and_swap("", b"k", Some(b"1"), b"2")
        .await
        .unwrap_err();
    assert!(e.is_undetermined(), "{e}");
    assert_eq!(calls(), 4);

    // The store swapped but did not answer in time: undetermined, and indeed it applied (a
    // resent swap would have been refused and reported the swap as not done).
    script(vec![Step::ServeAndStall]);
    let e = client
        .compare_and_swap("", b"k", Some(b"1"), b"2")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClusterError::Undetermined { reason, .. } if reason.contains("unknown")),
        "{e}"
    );
    assert_eq!(calls(), 5);
    assert_eq!(
        client.get("", b"k").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    // Nor is a put: a second copy could land after another client's write. It ends
    // undetermined, the store having seen it once.
    script(vec![Step::ServeAndStall]);
    let e = client.put("", b"p", b"v").await.unwrap_err();
    assert!(e.is_undetermined(), "{e}");
    assert_eq!(calls(), 6);
    assert_eq!(
        client.get("", b"p").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );

    // One server's client sends nothing twice, and says which failures leave the swap
    // undetermined.
    let mut raw = RawClient::connect(&store_addr.to_string()).await.unwrap();
    script(vec![Step::ServeAndStall]);
    let e = raw
        .compare_and_swap("", b"k", Some(b"2"), b"3")
        .await
        .unwrap_err();
    assert!(e.is_undetermined(), "{e}");
    let busy = errorpb::Error {
        message: "busy".to_string(),
        server_is_busy: Some(errorpb::ServerIsBusy::default()),
        ..Default::default()
    };
    script(vec![Step::Refuse(Box::new(busy))]);
    let e = raw
        .compare_and_swap("", b"k", Some(b"3"), b"4")
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Region(_)), "{e}");
    let r = raw
        .compare_and_swap("", b"k", Some(b"3"), b"4")
        .await
        .unwrap();
    assert!(r.succeed, "{r:?}");
    // A put the store did not answer in time fails with the typed error saying so (its region
    // error's `storage_unavailable`), not with a refusal.
    script(vec![Step::ServeAndStall]);
    let e = raw.put("", b"q", b"v").await.unwrap_err();
    assert!(matches!(e, ClientError::Unavailable(_)), "{e}");

    server.abort();
    scheduler.shutdown().await.unwrap();
}
