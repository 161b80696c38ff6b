//! A cluster of real processes, as `make run` starts it: `tessera-scheduler` and three
//! `tessera-server --engine raft` stores on loopback. Writers keep writing through the
//! `ClusterClient` while a follower is killed with SIGKILL and restarted (the leader compacts its
//! log meanwhile, so it comes back through a snapshot), then the leader is killed: every
//! acknowledged write must be read back from the two stores left.
//!
//! ```text
//!   3 replicas ─► writes ─► kill -9 follower ─► writes ─► restart it ─► in touch, writes
//!     ─► kill -9 leader ─► writes resume ─► stop writers ─► every acknowledged write reads back
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_client::cluster::{ClusterClient, ClusterConfig};
use tokio::task::{block_in_place, JoinHandle};

use crate::procs::{Cluster, STORES, WAIT};
use crate::util::http;

/// Concurrent writers, each on its own keys.
const WRITERS: usize = 4;

/// One attempted write.
struct Attempt {
    key: String,
    value: String,
    acked: bool,
}

/// Writers putting fresh keys through the cluster client until stopped.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<Vec<Attempt>>>,
}

impl Writers {
    fn start(client: &ClusterClient) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..WRITERS)
            .map(|w| {
                let (client, stop) = (client.clone(), stop.clone());
                let (acked, failed) = (acked.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut log = Vec::new();
                    for i in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let key = format!("w{w}-{i:06}");
                        let value = format!("value {w}/{i}");
                        let ok = client
                            .put("default", key.as_bytes(), value.as_bytes())
                            .await
                            .is_ok();
                        let counter = if ok { &acked } else { &failed };
                        counter.fetch_add(1, Ordering::SeqCst);
                        log.push(Attempt {
                            key,
                            value,
                            acked: ok,
                        });
                    }
                    log
                })
            })
            .collect();
        Writers {
            stop,
            acked,
            failed,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until `more` writes past the current count are acknowledged.
    async fn wait_more(&self, more: usize, what: &str) {
        let target = self.acked() + more;
        let deadline = Instant::now() + WAIT;
        while self.acked() < target {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {target} writes acknowledged within {WAIT:?}, {} failed",
                self.acked(),
                self.failed.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.expect("writer task"));
        }
        all
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_processes_keep_acknowledged_writes_through_kills_2b() {
    let mut cluster = block_in_place(Cluster::start);
    cluster.note("scheduler and 3 stores started");
    cluster.wait_replicas(STORES).await;
    cluster.note("region has 3 voters");

    let config = ClusterConfig {
        timeout: Duration::from_secs(20),
        ..ClusterConfig::default()
    };
    let client = ClusterClient::connect(&cluster.scheduler, config)
        .await
        .expect("scheduler reachable");
    let writers = Writers::start(&client);
    writers.wait_more(100, "all stores up").await;

    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % STORES;
    block_in_place(|| cluster.kill(follower));
    cluster.note(&format!(
        "killed follower {} ({} acked)",
        cluster.stores[follower].name,
        writers.acked()
    ));
    // Well past raft_log_gc_count_limit: the follower's next entries are compacted away.
    writers.wait_more(300, "one follower down").await;

    block_in_place(|| cluster.run_store(follower));
    cluster.note(&format!(
        "restarted {} ({} acked)",
        cluster.stores[follower].name,
        writers.acked()
    ));
    cluster.wait_in_touch(follower).await;
    writers.wait_more(100, "follower back").await;
    cluster.note("restarted follower in touch with the leader; writes go on");

    let leader = cluster.wait_leader().await;
    block_in_place(|| cluster.kill(leader));
    cluster.note(&format!(
        "killed leader {} ({} acked)",
        cluster.stores[leader].name,
        writers.acked()
    ));
    writers.wait_more(100, "leader killed").await;
    let attempts = writers.finish().await;
    let acked = attempts.iter().filter(|a| a.acked).count();
    cluster.note(&format!(
        "{acked} writes acknowledged, {} not",
        attempts.len() - acked
    ));

    let stored: BTreeMap<Vec<u8>, Vec<u8>> = client
        .scan("default", b"", 1_000_000)
        .await
        .expect("scan the cluster")
        .into_iter()
        .collect();
    for a in &attempts {
        let got = stored.get(a.key.as_bytes()).map(|v| v.as_slice());
        if a.acked {
            assert_eq!(
                got,
                Some(a.value.as_bytes()),
                "acknowledged write of {} lost",
                a.key
            );
        } else {
            // An unacknowledged write may or may not have committed, but nothing else.
            assert!(
                got.is_none() || got == Some(a.value.as_bytes()),
                "{}",
                a.key
            );
        }
    }
    assert!(
        stored.len() <= attempts.len(),
        "{} keys stored, {} written",
        stored.len(),
        attempts.len()
    );

    // The restarted follower's gateway serves (forwarding to the new leader) the last write.
    let last = attempts.iter().rev().find(|a| a.acked).expect("a write");
    let gateway = cluster.stores[follower].http;
    let (status, body) = http(gateway, "GET", &format!("/kv/{}", last.key), b"").await;
    assert_eq!(
        (status, String::from_utf8_lossy(&body).to_string()),
        (200, last.value.clone())
    );
    cluster.note("every acknowledged write read back");

    // The two stores left and the scheduler stop cleanly.
    block_in_place(|| cluster.stop_all());
}
