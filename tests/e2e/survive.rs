//! The one check every hostile raft-message test ends with: the attacked store still serves.
//!
//! A store whose raft worker died keeps its process, its gRPC port and its `/health` answering
//! (a zombie), so none of those alone shows it survived. [`must_keep_serving`] also makes the
//! attacked store part of every quorum — it kills each of the other stores in turn — and
//! requires fresh writes and every earlier acknowledged write to go through then.
//!
//! ```text
//!   attacked A, others B, C (C led at the attack):  all running, /health 200, all in touch
//!     kill -9 B ─► write fresh keys, read every acknowledged key (quorum {A, C}) ─► restart B
//!     kill -9 C ─► write fresh keys, read every acknowledged key (quorum {A, B}) ─► restart C
//! ```

use std::time::Duration;

use tessera_client::cluster::{ClusterClient, ClusterConfig, ClusterError};
use tokio::task::block_in_place;

use crate::forge::Topology;
use crate::procs::{Cluster, STORES};
use crate::util::http;

/// Fresh keys written in each step of the check.
const FRESH: usize = 5;
/// Bound of the wait for every peer to be in touch with a leader after the attack: an election
/// or two.
const IN_TOUCH: Duration = Duration::from_secs(15);

/// A fresh cluster whose region has a voter on every store, `writes` acknowledged writes, and
/// its topology: the starting point of every hostile test.
pub async fn cluster_with_writes(writes: usize) -> (Cluster, Acked, Topology) {
    let cluster = block_in_place(Cluster::start);
    cluster.wait_replicas(STORES).await;
    let mut acked = Acked::connect(&cluster).await;
    acked
        .must_write(&cluster, writes, "before the attack")
        .await;
    let topo = Topology::read(&cluster).await;
    cluster.note(&format!(
        "region {} led by {}, {writes} writes acknowledged",
        topo.region.id, cluster.stores[topo.leader].name
    ));
    (cluster, acked, topo)
}

/// A cluster client with a deadline per request that covers an election and a store restart.
pub async fn patient_client(cluster: &Cluster) -> ClusterClient {
    let config = ClusterConfig {
        timeout: Duration::from_secs(15),
        ..ClusterConfig::default()
    };
    ClusterClient::connect(&cluster.scheduler, config)
        .await
        .expect("scheduler reachable")
}

/// Keys written through the cluster client and acknowledged, with their values.
pub struct Acked {
    client: ClusterClient,
    pairs: Vec<(String, String)>,
}

impl Acked {
    /// A [`patient_client`], and nothing acknowledged yet.
    pub async fn connect(cluster: &Cluster) -> Acked {
        Acked {
            client: patient_client(cluster).await,
            pairs: Vec::new(),
        }
    }

    /// Writes `n` fresh keys; every one must be acknowledged (the client retries to its
    /// deadline). `what` says when, for the failure message.
    pub async fn must_write(&mut self, cluster: &Cluster, n: usize, what: &str) {
        for _ in 0..n {
            let i = self.pairs.len();
            let (key, value) = (format!("acked-{i:05}"), format!("value of {i}"));
            let mut put = self
                .client
                .put("default", key.as_bytes(), value.as_bytes())
                .await;
            // A write whose outcome is unknown is not resent by the client; resending the same
            // value to a key no one else writes is safe, so the test does.
            for _ in 0..3 {
                match &put {
                    Err(e) if e.is_undetermined() => {
                        put = self
                            .client
                            .put("default", key.as_bytes(), value.as_bytes())
                            .await
                    }
                    _ => break,
                }
            }
            if let Err(e) = put {
                panic!(
                    "{what}: writing {key} failed ({} acknowledged before): {e}\n{}",
                    self.pairs.len(),
                    cluster.panics()
                );
            }
            self.pairs.push((key, value));
        }
    }

    /// Writes the next fresh key once (the client retries to its deadline) and records it if
    /// acknowledged: for a writer running beside faults, where a write may fail.
    pub async fn try_write(&mut self) -> Result<(), ClusterError> {
        let i = self.pairs.len();
        let (key, value) = (format!("acked-{i:05}"), format!("value of {i}"));
        self.client
            .put("default", key.as_bytes(), value.as_bytes())
            .await?;
        self.pairs.push((key, value));
        Ok(())
    }

    /// Reads back every acknowledged key: each must hold its value.
    pub async fn must_read_all(&self, cluster: &Cluster, what: &str) {
        for (key, value) in &self.pairs {
            let got = self.client.get("default", key.as_bytes()).await;
            match got {
                Ok(Some(v)) if v == value.as_bytes() => {}
                Ok(other) => panic!(
                    "{what}: acknowledged {key} = {value:?} reads back as {:?} ({} keys \
                     acknowledged)\n{}",
                    other.map(|v| String::from_utf8_lossy(&v).to_string()),
                    self.pairs.len(),
                    cluster.panics()
                ),
                Err(e) => panic!(
                    "{what}: reading acknowledged {key} failed: {e}\n{}",
                    cluster.panics()
                ),
            }
        }
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }
}

/// Store `i` runs and its `/health` answers 200.
pub async fn must_run(cluster: &mut Cluster, i: usize, what: &str) {
    let name = cluster.stores[i].name.clone();
    assert!(
        cluster.stores[i].is_running(),
        "{what}: {name} exited\n{}",
        cluster.panics()
    );
    let health = http(cluster.stores[i].http, "GET", "/health", b"");
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), health)
        .await
        .unwrap_or_else(|_| panic!("{what}: {name}'s /health did not answer within 5 s"));
    assert_eq!(status, 200, "{what}: {name}'s /health");
}

/// Every store runs and its `/health` answers 200.
pub async fn must_all_run(cluster: &mut Cluster, what: &str) {
    for i in 0..cluster.stores.len() {
        must_run(cluster, i, what).await;
    }
}

/// After an attack on store `attacked`, sent while store `leader` led the region: every store
/// still runs and answers `/health`, every store's peer is in touch with a leader, and the
/// cluster keeps taking writes and serving every acknowledged one with `attacked` in every
/// quorum (see the module doc). Ends with all stores running again.
pub async fn must_keep_serving(
    cluster: &mut Cluster,
    attacked: usize,
    leader: usize,
    acked: &mut Acked,
) {
    must_all_run(cluster, "after the attack").await;
    // A store whose raft worker died answers for its region with errors: every peer must be
    // back in touch with a leader (the attack may have forced an election).
    for i in 0..cluster.stores.len() {
        cluster.wait_in_touch_within(i, IN_TOUCH).await;
    }
    // A kill and restart also revives a store whose raft worker died. The store that led at
    // the attack goes last, so a leader disabled by a message forwarded to it is still part of
    // the first quorum tried.
    let mut others: Vec<usize> = (0..cluster.stores.len())
        .filter(|&i| i != attacked)
        .collect();
    others.sort_by_key(|&i| i == leader);
    for other in others {
        let what = format!(
            "with {} killed (quorum through attacked {})",
            cluster.stores[other].name, cluster.stores[attacked].name
        );
        block_in_place(|| cluster.kill(other));
        cluster.note(&format!("killed {}", cluster.stores[other].name));
        acked.must_write(cluster, FRESH, &what).await;
        acked.must_read_all(cluster, &what).await;
        cluster.note(&format!("{what}: {} keys read back", acked.len()));
        block_in_place(|| cluster.run_store(other));
        cluster.wait_in_touch(other).await;
    }
    must_all_run(cluster, "after the check").await;
}

/// Kills every store with SIGKILL and restarts them all: whatever a store did in memory, its
/// disk must still hold every acknowledged write. Every store must run again, a leader be
/// elected and every acknowledged key read back.
pub async fn must_survive_restart_of_all(cluster: &mut Cluster, acked: &Acked) {
    for i in 0..cluster.stores.len() {
        block_in_place(|| cluster.kill(i));
    }
    for i in 0..cluster.stores.len() {
        block_in_place(|| cluster.run_store(i));
    }
    cluster.note("every store killed and restarted");
    must_all_run(cluster, "after restarting every store").await;
    cluster.wait_leader().await;
    acked
        .must_read_all(cluster, "after restarting every store")
        .await;
}
