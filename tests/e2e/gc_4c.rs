//! `tessera-ctl gc --safe-point TS` on real processes.
//!
//! ```text
//!   a key rewritten 200 times, another written once, an abandoned lock below the safe point
//!     ─► gc ─► one version of each key left, the lock resolved and its rollback collected;
//!        reads at the safe point see the same, reads below it are refused
//!     ─► every store enforces the safe point; a store killed and restarted too (it reads it
//!        from the scheduler before it serves)
//! ```

use std::time::Duration;

use tessera_client::cluster::ClusterClient;
use tessera_client::txn::TxnClient;
use tokio::task::block_in_place;

use crate::procs::{Cluster, STORES, STORE_CONFIG};
use crate::util::{ctl, http};

/// Entries of column family `cf`, all keys.
async fn entries(client: &ClusterClient, cf: &str) -> usize {
    client.scan(cf, b"", 100_000).await.expect("raw scan").len()
}

/// The safe point store `i` says it enforces.
async fn enforced(cluster: &Cluster, i: usize) -> u64 {
    let (code, body) = http(cluster.stores[i].http, "GET", "/status", b"").await;
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    doc["gc_safe_point"]
        .as_u64()
        .expect("gc_safe_point in /status")
}

/// `tessera-ctl gc` at `safe_point`, JSON out.
fn gc(sched: &str, safe_point: u64) -> (i32, String, String) {
    let sp = safe_point.to_string();
    block_in_place(|| {
        ctl(&[
            "--scheduler",
            sched,
            "-w",
            "json",
            "gc",
            "--safe-point",
            &sp,
        ])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_what_reads_at_the_safe_point_see_and_refuses_older_reads_4c() {
    let mut cluster = block_in_place(Cluster::start);
    cluster.wait_replicas(STORES).await;
    let (rpc, routed) = cluster.routed_clients().await;
    let txn = TxnClient::routed(routed.clone(), rpc);
    let short = txn.clone().with_lock_ttl(Duration::from_millis(300));

    let mut mid = 0;
    for n in 0..200 {
        let mut t = txn.begin().await.unwrap();
        t.put(b"hot", format!("v{n}").as_bytes());
        let ts = t.commit().await.unwrap();
        if n == 100 {
            mid = ts;
        }
    }
    let mut t = txn.begin().await.unwrap();
    t.put(b"cold", b"once");
    t.commit().await.unwrap();
    let mut t = short.begin().await.unwrap();
    t.put(b"stale", b"never");
    drop(t.prewrite().await.unwrap());
    assert_eq!(entries(&routed, "write").await, 201);
    assert_eq!(entries(&routed, "lock").await, 1);

    let safe_point = txn.timestamp().await.unwrap();
    let sched = cluster.scheduler.clone();
    let (code, out, err) = gc(&sched, safe_point);
    assert_eq!(code, 0, "gc: {out} {err}");
    let stats: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(stats["safe_point"].as_u64(), Some(safe_point));
    assert!(stats["locks"].as_u64() >= Some(1), "{stats}");
    // hot@199 and cold stay; 199 older versions of hot and the stale lock's rollback go (the
    // stores collect the regions they lead as soon as they learn the safe point, so `gc`
    // itself may find some already gone).
    assert!(stats["versions"].as_u64() <= Some(200), "{stats}");
    assert_eq!(entries(&routed, "write").await, 2);
    assert_eq!(entries(&routed, "lock").await, 0);
    assert_eq!(
        entries(&routed, "default").await,
        2,
        "one value per kept version"
    );

    assert_eq!(
        txn.get_at(b"hot", safe_point).await.unwrap(),
        Some(b"v199".to_vec())
    );
    assert_eq!(
        txn.get_at(b"cold", safe_point).await.unwrap(),
        Some(b"once".to_vec())
    );
    assert_eq!(txn.get_at(b"stale", safe_point).await.unwrap(), None);
    let old = txn.get_at(b"hot", mid).await.unwrap_err().to_string();
    assert!(old.contains("below the GC safe point"), "{old}");
    let old = txn.scan(b"", b"", 10, mid).await.unwrap_err().to_string();
    assert!(old.contains("below the GC safe point"), "{old}");
    for i in 0..STORES {
        assert!(enforced(&cluster, i).await >= safe_point, "store {i}");
    }

    // A restarted store enforces the safe point before it serves.
    block_in_place(|| cluster.kill(0));
    block_in_place(|| cluster.run_store(0));
    assert!(enforced(&cluster, 0).await >= safe_point);

    // A future safe point, or one below the one in force, changes nothing.
    let future = (safe_point << 1).to_string();
    let (code, _, err) =
        block_in_place(|| ctl(&["--scheduler", &sched, "gc", "--safe-point", &future]));
    assert!(
        code == 2 && err.contains("not a past timestamp"),
        "{code} {err}"
    );
    let (code, out, _) = gc(&sched, mid);
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        stats["safe_point"].as_u64(),
        Some(safe_point),
        "never lowered"
    );
    // --life-time 0: the safe point is now.
    let (code, out, err) = block_in_place(|| {
        ctl(&[
            "--scheduler",
            &sched,
            "-w",
            "json",
            "gc",
            "--life-time",
            "0",
        ])
    });
    assert_eq!(code, 0, "{err}");
    let stats: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(stats["safe_point"].as_u64() > Some(safe_point), "{stats}");
}

/// Polls `f` every 100 ms until it holds, for at most 30 s.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `gc_life_time_secs = 1`: the scheduler raises the safe point by itself, never past a live
/// lock, and the stores collect the regions they lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automatic_safe_point_stops_below_the_oldest_lock_4c() {
    let mut cluster =
        block_in_place(|| Cluster::start_scheduler_with(STORE_CONFIG, "gc_life_time_secs = 1\n"));
    for _ in 0..STORES {
        block_in_place(|| cluster.add_store());
    }
    cluster.wait_replicas(STORES).await;
    let (rpc, routed) = cluster.routed_clients().await;
    let txn = TxnClient::routed(routed.clone(), rpc);
    for n in 0..30 {
        let mut t = txn.begin().await.unwrap();
        t.put(b"hot", format!("v{n}").as_bytes());
        t.commit().await.unwrap();
    }
    let live = txn.clone().with_lock_ttl(Duration::from_secs(120));
    let mut t = live.begin().await.unwrap();
    t.put(b"held", b"pending");
    let held = t.prewrite().await.unwrap();
    let lock_ts = held.start_ts();

    // The stores collect "hot" down to one version; the safe point stays below the lock.
    eventually("old versions collected", async || {
        entries(&routed, "write").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..STORES {
        let sp = enforced(&cluster, i).await;
        assert!(
            sp > 0 && sp < lock_ts,
            "store {i}: safe point {sp}, lock at {lock_ts}"
        );
    }
    assert_eq!(
        txn.get_at(b"hot", lock_ts).await.unwrap(),
        Some(b"v29".to_vec())
    );

    // Once the lock goes, the safe point passes it.
    held.rollback().await.unwrap();
    eventually("the safe point passes the old lock", async || {
        enforced(&cluster, 0).await > lock_ts
    })
    .await;
}
