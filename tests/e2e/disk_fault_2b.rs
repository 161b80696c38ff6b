//! A store whose disk dies stops: every engine read and write of the store fails with EIO
//! (the fault-injecting engine of `kv::fault`, switched on by a file the test creates), the
//! process exits non-zero within seconds instead of lingering half-dead, and once the disk is
//! back a restart recovers every acknowledged write, including those acknowledged while it
//! died.
//!
//! ```text
//!   3 stores, each armed with its own trigger file
//!   for the leader, then a follower:
//!     writes go on ─► create the trigger ─► the store exits non-zero within 10 s, "fatal" in its log
//!     remove the trigger, restart it ─► every acknowledged write is served with it in every quorum
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::block_in_place;

use crate::procs::{Cluster, STORES};
use crate::survive::{must_keep_serving, patient_client, Acked};

/// Bound of the time from the disk's death to the process's exit.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// Keys written while a disk dies, by a writer that keeps going: the acknowledged ones.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    async fn start(cluster: &Cluster, round: usize) -> Writer {
        let client = patient_client(cluster).await;
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                let key = format!("during-{round}-{n:05}");
                n += 1;
                if client
                    .put("default", key.as_bytes(), key.as_bytes())
                    .await
                    .is_ok()
                {
                    a.lock().unwrap().push(key);
                }
            }
        });
        Writer { stop, acked, task }
    }

    /// Stops the writer; returns the keys it got acknowledged (each holds its own name).
    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer task");
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_disk_stops_the_store_and_a_restart_recovers_2b() {
    let faults = tempfile::tempdir().unwrap();
    let trigger = |i: usize| -> PathBuf { faults.path().join(format!("fail-disk-store{}", i + 1)) };
    let mut cluster = block_in_place(|| Cluster::start_scheduler(crate::procs::STORE_CONFIG));
    for i in 0..STORES {
        let env = vec![(
            kv::fault::FAIL_DISK_ENV.to_string(),
            trigger(i).display().to_string(),
        )];
        block_in_place(|| cluster.add_store_with_env(env));
    }
    cluster.wait_replicas(STORES).await;
    let mut acked = Acked::connect(&cluster).await;
    acked.must_write(&cluster, 20, "before any fault").await;
    let client = patient_client(&cluster).await;
    let mut during = Vec::new();

    for round in 0..2 {
        let leader = cluster.wait_leader().await;
        // The leader first, then a follower.
        let victim = if round == 0 {
            leader
        } else {
            (leader + 1) % STORES
        };
        let name = cluster.stores[victim].name.clone();
        let writer = Writer::start(&cluster, round).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(trigger(victim), b"").unwrap();
        let died = Instant::now();
        cluster.note(&format!(
            "killed {name}'s disk (leader {})",
            cluster.stores[leader].name
        ));
        let status = block_in_place(|| cluster.stores[victim].wait_exit(EXIT_BOUND));
        let exited = died.elapsed();
        let log = cluster.stores[victim].log_text();
        let status = status.unwrap_or_else(|| {
            panic!("{name} still runs {EXIT_BOUND:?} after its disk died; its log:\n{log}")
        });
        assert!(
            !status.success(),
            "{name} exited with {status} on a dead disk"
        );
        assert!(
            log.contains("fatal") && log.contains("Input/output error"),
            "{name} exited ({status}) without saying why; its log:\n{log}"
        );
        cluster.note(&format!(
            "{name} exited ({status}) {exited:.2?} after its disk died"
        ));
        // The others take writes without it.
        acked
            .must_write(&cluster, 5, &format!("with {name}'s disk dead"))
            .await;
        during.extend(writer.stop().await);

        std::fs::remove_file(trigger(victim)).unwrap();
        block_in_place(|| cluster.run_store(victim));
        cluster.wait_in_touch(victim).await;
        must_keep_serving(&mut cluster, victim, leader, &mut acked).await;
    }

    // Every write acknowledged while the disks died is there too.
    for key in &during {
        let got = client.get("default", key.as_bytes()).await;
        assert!(
            matches!(&got, Ok(Some(v)) if v == key.as_bytes()),
            "{key}, acknowledged while a disk died, reads back as {got:?}"
        );
    }
    cluster.note(&format!(
        "{} + {} acknowledged writes read back",
        acked.len(),
        during.len()
    ));
    block_in_place(|| cluster.stop_all());
}
