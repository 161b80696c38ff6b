//! A full disk is a state, not a crash: with every store's data directory on a small tmpfs,
//! writes are taken until the stores reach their free-space reserve, then refused with
//! `DiskFull` (gRPC, HTTP 507, `tessera-ctl` exit 5) while reads go on; once the filesystems
//! grow, writes are taken again, and after a restart every acknowledged write is there.
//!
//! ```text
//!   3 stores, each on a 64 MiB tmpfs, reserve 16 MiB
//!   write 64 KiB values ──► ... ──► DiskFull        (no store exits, none panics)
//!     reads: every acknowledged value; HTTP PUT 507; ctl put exit 5; leader's /readyz "disk full"
//!   grow every tmpfs to 256 MiB ──► writes taken again
//!   kill -9 every store, restart ──► every acknowledged value reads back
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tessera_client::cluster::{ClusterClient, ClusterError};
use tokio::task::block_in_place;

use crate::procs::{Cluster, STORES, STORE_CONFIG};
use crate::survive::patient_client;
use crate::tmpfs::Tmpfs;
use crate::util::{ctl, http};

/// Size of each store's filesystem, before and after it grows.
const DISK_MIB: u64 = 64;
const GROWN_MIB: u64 = 256;
/// Size of each value written to fill the disks.
const VALUE: usize = 64 * 1024;
/// Bound of the filling: 64 MiB fill up long before.
const FILL_BOUND: Duration = Duration::from_secs(180);
/// Bound of the wait, after the first refusal, for every store to report its disk full.
const FULL_BOUND: Duration = Duration::from_secs(20);
/// Bound of the wait for writes to be taken again once space returns (the stores check their
/// disks every second).
const RESUME_BOUND: Duration = Duration::from_secs(20);

fn value_of(i: usize) -> Vec<u8> {
    let mut v = format!("value {i} ").into_bytes();
    v.resize(VALUE, b'a' + (i % 26) as u8);
    v
}

/// Whether the leader's `/readyz` says its disk is full (the leader refuses the writes;
/// a follower may stop a little short of its reserve, since it only writes what is taken).
async fn leader_full(cluster: &Cluster) -> bool {
    let leader = cluster.wait_leader().await;
    let (_, body) = http(cluster.stores[leader].http, "GET", "/readyz", b"").await;
    String::from_utf8_lossy(&body).contains("disk full")
}

/// Reads every acknowledged key back: each must hold its value.
async fn must_read_all(client: &ClusterClient, cluster: &Cluster, acked: &[usize], what: &str) {
    for &i in acked {
        let key = format!("fill-{i:05}");
        match client.get("default", key.as_bytes()).await {
            Ok(Some(v)) if v == value_of(i) => {}
            Ok(other) => panic!(
                "{what}: acknowledged {key} reads back as {:?} bytes\n{}",
                other.map(|v| v.len()),
                cluster.panics()
            ),
            Err(e) => panic!(
                "{what}: reading acknowledged {key}: {e}\n{}",
                cluster.panics()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disk_refuses_writes_keeps_reads_and_recovers_2b() {
    // Declared before the cluster: the stores are killed before their filesystems go.
    let mut disks: Vec<Tmpfs> = Vec::new();
    let mut cluster = block_in_place(|| Cluster::start_scheduler(STORE_CONFIG));
    for _ in 0..STORES {
        let disk = Tmpfs::mount(DISK_MIB);
        disk.link_as(&cluster.next_store_dir());
        block_in_place(|| cluster.add_store());
        disks.push(disk);
    }
    cluster.wait_replicas(STORES).await;
    let client = patient_client(&cluster).await;

    // Fill until the cluster refuses, with four writers at once: faster than the disk checks.
    let next = AtomicUsize::new(0);
    let taken = Mutex::new(Vec::new());
    let refusals = Mutex::new(Vec::new());
    let started = Instant::now();
    let writer = || async {
        while refusals.lock().unwrap().is_empty() {
            assert!(
                started.elapsed() < FILL_BOUND,
                "{} writes of {VALUE} bytes taken in {FILL_BOUND:?} and no DiskFull\n{}",
                taken.lock().unwrap().len(),
                cluster.panics()
            );
            let i = next.fetch_add(1, Ordering::Relaxed);
            let key = format!("fill-{i:05}");
            match client.put("default", key.as_bytes(), &value_of(i)).await {
                Ok(()) => taken.lock().unwrap().push(i),
                Err(e @ ClusterError::DiskFull { .. }) => refusals.lock().unwrap().push(e),
                Err(e) => panic!(
                    "writing {key} failed, not with DiskFull: {e}\n{}",
                    cluster.panics()
                ),
            }
        }
    };
    tokio::join!(writer(), writer(), writer(), writer());
    let mut acked = taken.into_inner().unwrap();
    let refusal = refusals.into_inner().unwrap().remove(0);
    let mut next = next.into_inner();
    cluster.note(&format!(
        "{} writes of {VALUE} bytes taken, then: {refusal}",
        acked.len()
    ));
    assert!(
        acked.len() >= 10,
        "refused after only {} writes: {refusal}",
        acked.len()
    );
    // The first refusals may come from the write budget, a little before a disk check finds
    // the store at its reserve: writes go on being refused (or taken) until the leader says
    // its disk is full.
    let refused = Instant::now();
    while !leader_full(&cluster).await {
        assert!(
            refused.elapsed() < FULL_BOUND,
            "{FULL_BOUND:?} after the first DiskFull, the leader does not report a full disk\n{}",
            cluster.panics()
        );
        let i = next;
        next += 1;
        let key = format!("fill-{i:05}");
        match client.put("default", key.as_bytes(), &value_of(i)).await {
            Ok(()) => acked.push(i),
            Err(ClusterError::DiskFull { .. }) => {}
            Err(e) => panic!(
                "writing {key} failed, not with DiskFull: {e}\n{}",
                cluster.panics()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.note(&format!(
        "the leader full {:.1?} after the first refusal, {} writes taken",
        refused.elapsed(),
        acked.len()
    ));

    // Full: no store died, writes are refused everywhere they can be sent, reads are served.
    for i in 0..STORES {
        assert!(
            cluster.stores[i].is_running(),
            "{} exited on a full disk\n{}",
            cluster.stores[i].name,
            cluster.panics()
        );
    }
    assert_eq!(cluster.panics(), "no panic in any store log");
    let again = client.put("default", b"one-more", b"v").await;
    assert!(
        matches!(again, Err(ClusterError::DiskFull { .. })),
        "a write on a full cluster: {again:?}"
    );
    must_read_all(&client, &cluster, &acked, "disks full").await;
    for s in &cluster.stores {
        let (status, body) = http(s.http, "PUT", "/kv/one-more", b"v").await;
        assert_eq!(
            status,
            507,
            "{}'s gateway, PUT on a full cluster: {}",
            s.name,
            String::from_utf8_lossy(&body)
        );
    }
    let sched = cluster.scheduler.clone();
    let (code, _, err) = block_in_place(|| ctl(&["--scheduler", &sched, "put", "one-more", "v"]));
    assert_eq!(code, 5, "tessera-ctl put on a full cluster: {err}");
    let leader = cluster.wait_leader().await;
    let (status, body) = http(cluster.stores[leader].http, "GET", "/readyz", b"").await;
    let body = String::from_utf8_lossy(&body).to_string();
    assert!(
        status == 200 && body.contains("disk full"),
        "/readyz of the full leader: {status} {body}"
    );
    let (_, metrics) = http(cluster.stores[leader].http, "GET", "/metrics", b"").await;
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tessera_disk_full{") && l.ends_with(" 1")),
        "/metrics of the full leader says nothing of it:\n{metrics}"
    );

    // Space returns: writes are taken again.
    for disk in &disks {
        disk.resize(GROWN_MIB);
    }
    let grown = Instant::now();
    loop {
        let i = next;
        next += 1;
        let key = format!("fill-{i:05}");
        match client.put("default", key.as_bytes(), &value_of(i)).await {
            Ok(()) => {
                acked.push(i);
                break;
            }
            Err(e) => assert!(
                grown.elapsed() < RESUME_BOUND,
                "writes still refused {RESUME_BOUND:?} after the disks grew: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.note(&format!(
        "writes taken again {:.1?} after the disks grew",
        grown.elapsed()
    ));
    for _ in 0..5 {
        let i = next;
        next += 1;
        let key = format!("fill-{i:05}");
        client
            .put("default", key.as_bytes(), &value_of(i))
            .await
            .unwrap_or_else(|e| panic!("writing {key} once space returned: {e}"));
        acked.push(i);
    }

    // Every acknowledged write survives a restart of every store.
    for i in 0..STORES {
        block_in_place(|| cluster.kill(i));
    }
    for i in 0..STORES {
        block_in_place(|| cluster.run_store(i));
    }
    cluster.wait_leader().await;
    must_read_all(&client, &cluster, &acked, "after a restart").await;
    cluster.note(&format!("{} acknowledged values read back", acked.len()));
    block_in_place(|| cluster.stop_all());
}
