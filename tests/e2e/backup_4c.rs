//! `tessera-ctl backup` and `restore` on real processes.
//!
//! ```text
//!   load 2,000 keys in transactions (regions split at 64 KiB) ─► writers overwrite, add and
//!     delete keys ─► backup at TS while they write ─► stop the writers ─► the source's value of
//!     every key at TS, read key by key ─► stop the source
//!   ─► a new cluster ─► restore ─► every key equals its value at TS, and nothing else is there
//!   ─► refused: a restore into the now non-empty cluster (10); a backup with one byte of a file
//!      flipped, a file missing, a file of another backup, no manifest, a flipped manifest (9)
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use scheduler_client::{RpcClient, SchedulerClient};
use tessera_client::cluster::ClusterClient;
use tessera_client::txn::TxnClient;
use tokio::task::block_in_place;

use crate::procs::{small_regions_config, Cluster, STORES};
use crate::util::ctl;

const KEYS: usize = 2_000;
/// Writers also add keys above the loaded ones.
const SPACE: usize = 2_500;

fn key(i: usize) -> Vec<u8> {
    format!("bk/{i:05}").into_bytes()
}

/// The scheduler's client and a transaction client of `cluster`.
async fn clients(cluster: &Cluster) -> (Arc<RpcClient>, TxnClient) {
    let (rpc, routed) = cluster.routed_clients().await;
    let scheduler: Arc<dyn SchedulerClient> = rpc.clone();
    (rpc, TxnClient::routed(routed, scheduler))
}

/// Loads keys `0..KEYS` with 200-byte values, 50 keys a transaction, 8 at once.
async fn load(txn: &TxnClient) {
    let mut tasks = tokio::task::JoinSet::new();
    for part in 0..8 {
        let txn = txn.clone();
        tasks.spawn(async move {
            for chunk in (part * KEYS / 8..(part + 1) * KEYS / 8)
                .collect::<Vec<_>>()
                .chunks(50)
            {
                let mut t = txn.begin().await.expect("begin");
                for &i in chunk {
                    t.put(&key(i), format!("{i:0>200}").as_bytes());
                }
                t.commit().await.expect("load");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// Writers that overwrite, add and delete keys until `stop`; their commit timestamps go to
/// `commits`.
fn spawn_writers(
    txn: &TxnClient,
    stop: &Arc<AtomicBool>,
    commits: &Arc<std::sync::Mutex<Vec<u64>>>,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..3u64 {
        let (txn, stop, commits) = (txn.clone(), stop.clone(), commits.clone());
        tasks.spawn(async move {
            let mut n = w;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut t = txn.begin().await.expect("begin");
                for j in 0..4u64 {
                    let i = ((n * 7919 + j * 104_729 + w * 31) % SPACE as u64) as usize;
                    if (n + j) % 5 == 0 {
                        t.delete(&key(i));
                    } else {
                        t.put(&key(i), format!("w{w}-{n}").as_bytes());
                    }
                }
                // A conflict with another writer is an abort, not a failure of the test.
                if let Ok(ts) = t.commit().await {
                    commits.lock().unwrap().push(ts);
                }
            }
        });
    }
    tasks
}

/// Every key of the key space at `ts`, read key by key.
async fn values_at(txn: &TxnClient, ts: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut tasks = tokio::task::JoinSet::new();
    for part in 0..4 {
        let txn = txn.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in (part..SPACE).step_by(4) {
                if let Some(v) = txn.get_at(&key(i), ts).await.expect("get at ts") {
                    out.push((key(i), v));
                }
            }
            out
        });
    }
    let mut all = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    all
}

/// A copy of the flat directory `from` at `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The manifest of the backup in `dir`, as JSON.
fn manifest(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("backupmeta")).unwrap();
    let (_, body) = text.split_once('\n').unwrap();
    serde_json::from_str(body).unwrap()
}

/// The SST files a manifest names, in order.
fn files(m: &serde_json::Value) -> Vec<String> {
    m["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            s["file"]
                .as_str()
                .filter(|f| !f.is_empty())
                .map(String::from)
        })
        .collect()
}

/// Waits (30 s at most) until the scheduler knows at least `n` regions: splits run in the
/// background, a little after the writes that call for them.
async fn wait_regions(rpc: &RpcClient, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let regions = block_in_place(|| rpc.scan_regions(b"", b"", 0)).expect("scan regions");
        if regions.len() >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} regions after 30 s",
            regions.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn run_ctl(args: &[&str]) -> (i32, String, String) {
    block_in_place(|| ctl(args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_writes_restores_exactly_the_state_at_its_timestamp_4c() {
    let work = tempfile::tempdir().unwrap();
    let (full, second) = (work.path().join("full"), work.path().join("second"));
    let mut source = block_in_place(|| Cluster::start_with(&small_regions_config(), STORES));
    source.wait_replicas(STORES).await;
    let (rpc, txn) = clients(&source).await;
    load(&txn).await;
    wait_regions(&rpc, 2).await;
    source.note("loaded");

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = spawn_writers(&txn, &stop, &commits);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sched = source.scheduler.clone();
    let (code, out, err) = run_ctl(&[
        "--scheduler",
        &sched,
        "-w",
        "json",
        "backup",
        "--to",
        full.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "backup: {out} {err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ts = summary["ts"].as_u64().unwrap();
    // A second backup, later, to take a foreign file from.
    let (code, _, err) = run_ctl(&[
        "--scheduler",
        &sched,
        "backup",
        "--to",
        second.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "second backup: {err}");
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = writers.join_next().await {
        r.unwrap();
    }
    let commits = commits.lock().unwrap().clone();
    let (before, after) = (
        commits.iter().filter(|c| **c < ts).count(),
        commits.iter().filter(|c| **c > ts).count(),
    );
    assert!(
        before > 0 && after > 0,
        "writes on both sides of {ts}: {before} before, {after} after"
    );

    let expect = values_at(&txn, ts).await;
    let m = manifest(&full);
    assert_eq!(m["ts"].as_u64(), Some(ts));
    assert_eq!(m["cluster_id"].as_u64(), Some(rpc.cluster_id()));
    assert_eq!(m["keys"].as_u64(), Some(expect.len() as u64));
    let regions: std::collections::BTreeSet<u64> = m["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["keys"].as_u64() > Some(0))
        .map(|s| s["region_id"].as_u64().unwrap())
        .collect();
    assert!(
        regions.len() >= 2,
        "one file per region, several regions: {m}"
    );
    let (code, _, err) = run_ctl(&[
        "--scheduler",
        &sched,
        "backup",
        "--to",
        full.to_str().unwrap(),
    ]);
    assert_eq!(
        code, 2,
        "a backup into a non-empty directory is refused: {err}"
    );
    let (code, _, err) = run_ctl(&[
        "--scheduler",
        &sched,
        "backup",
        "--ts",
        &(u64::MAX / 2).to_string(),
        "--to",
        work.path().join("future").to_str().unwrap(),
    ]);
    assert!(
        code == 2 && err.contains("ahead of the cluster"),
        "{code} {err}"
    );
    block_in_place(|| source.stop_all());

    // A new cluster, restored from the backup.
    let target = block_in_place(Cluster::start);
    target.wait_replicas(STORES).await;
    let tsched = target.scheduler.clone();
    let (code, out, err) = run_ctl(&[
        "--scheduler",
        &tsched,
        "restore",
        "--from",
        full.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "restore: {out} {err}");
    eprintln!("{}", out.trim());
    let (_, ttxn) = clients(&target).await;
    let now = ttxn.timestamp().await.unwrap();
    let restored: BTreeMap<_, _> = ttxn
        .scan(b"", b"", usize::MAX, now)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(restored.len(), expect.len(), "keys restored");
    assert!(
        restored == expect,
        "the restored cluster holds exactly the state at {ts}"
    );

    // Refusals.
    let (code, _, err) = run_ctl(&[
        "--scheduler",
        &tsched,
        "restore",
        "--from",
        full.to_str().unwrap(),
    ]);
    assert!(code == 10 && err.contains("holds data"), "{code} {err}");
    let names = files(&m);
    let refused = |name: &str, damage: &dyn Fn(&Path), says: &str| {
        let dir = work.path().join(name);
        copy_dir(&full, &dir);
        damage(&dir);
        let (code, _, err) = run_ctl(&[
            "--scheduler",
            &tsched,
            "restore",
            "--dry-run",
            "--from",
            dir.to_str().unwrap(),
        ]);
        assert!(
            code == 9 && err.contains(says),
            "{name}: exit {code}, {err}"
        );
    };
    refused(
        "flipped",
        &|d| {
            let path = d.join(&names[0]);
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
        },
        "corrupt",
    );
    refused(
        "partial",
        &|d| std::fs::remove_file(d.join(&names[1])).unwrap(),
        "missing",
    );
    // A file of the second backup under the name of one of the first whose bytes differ.
    let md5_of = |p: &Path| format!("{:x}", md5::compute(std::fs::read(p).unwrap()));
    let ours = md5_of(&full.join(&names[0]));
    let theirs = files(&manifest(&second))
        .into_iter()
        .find(|f| md5_of(&second.join(f)) != ours)
        .expect("the second backup has a file unlike the first's");
    refused(
        "foreign",
        &|d| {
            std::fs::copy(second.join(&theirs), d.join(&names[0])).unwrap();
        },
        "another backup",
    );
    refused(
        "unfinished",
        &|d| std::fs::remove_file(d.join("backupmeta")).unwrap(),
        "did not finish",
    );
    refused(
        "manifest",
        &|d| {
            let path = d.join("backupmeta");
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, text.replacen("\"keys\"", "\"keyz\"", 1)).unwrap();
        },
        "corrupt",
    );
}

/// Every raw pair of `client` with its expiry (0: never).
async fn raw_state(client: &ClusterClient) -> BTreeMap<Vec<u8>, (Vec<u8>, u64)> {
    let mut pages = client.raw_pages("default", b"", b"", 300);
    let mut all = BTreeMap::new();
    while let Some(page) = pages.next_page().await.expect("raw page") {
        for ((k, v), at) in page.pairs.into_iter().zip(page.expiry_ms) {
            all.insert(k, (v, at));
        }
    }
    all
}

/// `backup --raw`: the raw key space of several regions, keys with a time to live among them,
/// comes back with the same values, and each such key expires when it would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_backup_restores_values_and_expiries_4c() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("raw");
    let source = block_in_place(|| Cluster::start_with(&small_regions_config(), STORES));
    source.wait_replicas(STORES).await;
    let (rpc, client) = source.routed_clients().await;
    let pairs: Vec<_> = (0..1_500)
        .map(|i| (key(i), format!("{i:0>200}").into_bytes()))
        .collect();
    for (n, chunk) in pairs.chunks(100).enumerate() {
        let ttl = if n % 3 == 0 { 3_600 } else { 0 };
        client
            .batch_put_with_ttl("default", chunk, ttl)
            .await
            .expect("load");
    }
    wait_regions(&rpc, 2).await;
    let expect = raw_state(&client).await;
    assert_eq!(expect.len(), pairs.len());
    assert!(expect.values().any(|(_, at)| *at > 0) && expect.values().any(|(_, at)| *at == 0));
    let (code, out, err) = run_ctl(&[
        "--scheduler",
        &source.scheduler,
        "backup",
        "--raw",
        "--to",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "raw backup: {out} {err}");
    let m = manifest(&dir);
    assert_eq!(m["kind"], "raw");
    assert_eq!(m["keys"].as_u64(), Some(pairs.len() as u64));
    assert!(files(&m).len() >= 2, "several regions: {m}");

    let target = block_in_place(Cluster::start);
    target.wait_replicas(STORES).await;
    let (code, out, err) = run_ctl(&[
        "--scheduler",
        &target.scheduler,
        "restore",
        "--from",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "raw restore: {out} {err}");
    let restored = raw_state(&target.routed_clients().await.1).await;
    assert_eq!(restored.len(), expect.len());
    for (k, (v, at)) in &expect {
        let (rv, rat) = &restored[k];
        assert_eq!(rv, v, "value of {k:?}");
        // A time to live is whole seconds, counted from when the store applies the write: the
        // restored key expires at most a second and the write's own time after.
        let kept = if *at == 0 {
            *rat == 0
        } else {
            *rat >= *at && *rat <= at + 2_000
        };
        assert!(kept, "expiry of {k:?}: {at} restored as {rat}");
    }
}
