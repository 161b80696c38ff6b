//! A store whose raft log was corrupted on disk (a flipped byte in the middle of the raft
//! engine's write-ahead log) refuses to start: it exits non-zero saying so, rather than
//! starting with the synced entries after the flipped byte silently dropped (a replica that
//! forgets entries it acknowledged can undo a commit). The other stores keep serving.

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::block_in_place;

use crate::procs::{Cluster, STORES};
use crate::survive::Acked;

/// The largest `.log` file of a RocksDB directory: the live write-ahead log.
fn wal_of(dir: &std::path::Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a write-ahead log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_raft_log_stops_the_store_at_start_2b() {
    let mut cluster = block_in_place(Cluster::start);
    cluster.wait_replicas(STORES).await;
    let mut acked = Acked::connect(&cluster).await;
    acked
        .must_write(&cluster, 100, "before the corruption")
        .await;
    let leader = cluster.wait_leader().await;
    let victim = (leader + 1) % STORES;
    let name = cluster.stores[victim].name.clone();
    block_in_place(|| cluster.kill(victim));

    let wal = wal_of(&cluster.stores[victim].raft_engine_dir());
    let mut bytes = std::fs::read(&wal).unwrap();
    assert!(
        bytes.len() > 4096,
        "{}: {} bytes",
        wal.display(),
        bytes.len()
    );
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&wal, bytes).unwrap();
    cluster.note(&format!("flipped byte {at} of {}", wal.display()));

    // It either exits before it listens, or (had it listened first) within the bound.
    let log_now = |c: &Cluster| c.stores[victim].log_text();
    let why = match block_in_place(|| cluster.try_run_store(victim)) {
        Err(e) => e,
        Ok(()) => {
            let status =
                block_in_place(|| cluster.stores[victim].wait_exit(Duration::from_secs(30)));
            let status = status.unwrap_or_else(|| {
                panic!(
                    "{name} started on a corrupt raft log; its log:\n{}",
                    log_now(&cluster)
                )
            });
            assert!(!status.success(), "{name} exited with {status}");
            status.to_string()
        }
    };
    let log = log_now(&cluster);
    assert!(
        log.contains("orruption") || why.contains("orruption"),
        "{name} stopped ({why}) without naming the corruption; its log:\n{log}"
    );
    let first = why.lines().next().unwrap_or_default();
    cluster.note(&format!("{name} refused to start ({first})"));
    acked
        .must_write(&cluster, 10, &format!("with {name} refusing to start"))
        .await;
    acked
        .must_read_all(&cluster, "without the corrupt store")
        .await;
}
