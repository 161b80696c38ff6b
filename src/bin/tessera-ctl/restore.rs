//! `tessera-ctl restore --from DIR`: loads a backup into a new, empty cluster.
//!
//! Nothing is written until the whole backup has been checked: the manifest's own md5 and
//! tiling, then every file's size and md5 (a corrupt, partial or foreign backup is refused with
//! exit 9), then the cluster, which must hold no data at all (exit 10). The keys are then
//! written in batches of [`BATCH`] keys, `--concurrency` at once, each retried on failure
//! (writing a key's value again is harmless: only the restore writes to the new cluster): a
//! transaction per batch for a `txn` backup; for a `raw` one, a batch put of the keys that never
//! expire and a put with its remaining time to live of each other key. Each
//! file is read through a scratch RocksDB that ingests it; its keys must lie in its segment's
//! range and number what the manifest says.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::{IteratorMode, DB};
use scheduler_client::SchedulerClient as _;
use tessera_client::cluster::ClusterClient;
use tessera_client::txn::TxnClient;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::backup::{connect, unreachable, Failed, EXIT_BAD_BACKUP, EXIT_NOT_EMPTY};
use crate::manifest::{unhex, Manifest, Segment};

/// Keys per restoring transaction.
const BATCH: usize = 64;
/// Attempts per transaction before the restore gives up.
const ATTEMPTS: usize = 5;

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Checks that the cluster holds no data in any column family.
async fn check_empty(cluster: &ClusterClient) -> Result<(), Failed> {
    for cf in ["default", "write", "lock"] {
        let found = cluster.scan(cf, b"", 1).await.map_err(unreachable)?;
        if !found.is_empty() {
            return Err((
                EXIT_NOT_EMPTY,
                format!(
                    "the cluster holds data (its column family {cf} is not empty): a backup is \
                     restored into a new, empty cluster"
                ),
            ));
        }
    }
    Ok(())
}

/// The pairs of `segment`'s file in `dir`, checked against the segment.
fn read_segment(dir: &Path, segment: &Segment) -> Result<Pairs, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let db = DB::open_default(scratch.path()).map_err(|e| format!("scratch database: {e}"))?;
    db.ingest_external_file(vec![dir.join(&segment.file)])
        .map_err(|e| format!("{} does not read as an SST file: {e}", segment.file))?;
    let (start, end) = (unhex(&segment.start)?, unhex(&segment.end)?);
    let mut pairs = Vec::with_capacity(segment.keys as usize);
    for item in db.iterator(IteratorMode::Start) {
        let (k, v) = item.map_err(|e| format!("reading {}: {e}", segment.file))?;
        if *k < *start || (!end.is_empty() && *k >= *end) {
            return Err(format!(
                "{} holds key {:?} outside its segment",
                segment.file,
                String::from_utf8_lossy(&k)
            ));
        }
        pairs.push((k.into_vec(), v.into_vec()));
    }
    if pairs.len() as u64 != segment.keys {
        return Err(format!(
            "{} holds {} keys, the manifest says {}",
            segment.file,
            pairs.len(),
            segment.keys
        ));
    }
    Ok(pairs)
}

/// Where the keys go: transactions, or raw puts.
#[derive(Clone)]
enum Target {
    Txn(TxnClient),
    Raw(ClusterClient),
}

impl Target {
    /// Writes `batch` once: in one transaction, or (raw) as a batch put of the keys that never
    /// expire and a put with its remaining time to live of each other one (a key that has
    /// expired since the backup is left out). Returns how many keys were left out.
    async fn write(&self, batch: &Pairs) -> Result<u64, String> {
        match self {
            Target::Txn(txn) => {
                let mut t = txn.begin().await.map_err(|e| e.to_string())?;
                for (k, v) in batch {
                    t.put(k, v);
                }
                t.commit().await.map(|_| 0).map_err(|e| e.to_string())
            }
            Target::Raw(cluster) => {
                let now = codec::raw_value::now_ms();
                let (mut forever, mut expired) = (Vec::new(), 0);
                for (k, stored) in batch {
                    let (at, v) = split_expiry(stored)?;
                    match at {
                        0 => forever.push((k.clone(), v.to_vec())),
                        at if at <= now => expired += 1,
                        at => {
                            let ttl = (at - now).div_ceil(1000);
                            cluster
                                .put_with_ttl("default", k, v, ttl)
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                    }
                }
                if !forever.is_empty() {
                    cluster
                        .batch_put("default", &forever)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(expired)
            }
        }
    }
}

/// A raw backup's value: its expiry (Unix ms, 0: never) and the value.
fn split_expiry(stored: &[u8]) -> Result<(u64, &[u8]), String> {
    if stored.len() < 8 {
        return Err("a raw backup's value is shorter than its expiry".to_string());
    }
    let (at, v) = stored.split_at(8);
    Ok((u64::from_be_bytes(at.try_into().expect("8 bytes")), v))
}

/// Writes `batch`, trying again after a failure (writing a key's value again is harmless);
/// how many keys were left out for having expired.
async fn write_batch(target: Target, batch: Pairs) -> Result<u64, String> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match target.write(&batch).await {
            Ok(expired) => return Ok(expired),
            Err(e) => last = e,
        }
    }
    let first = batch
        .first()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned());
    Err(format!(
        "writing {} keys from {first:?} failed {ATTEMPTS} times, last: {last}",
        batch.len()
    ))
}

pub async fn restore(
    scheduler: &str,
    dir: &Path,
    dry_run: bool,
    concurrency: usize,
    json: bool,
) -> Result<(), Failed> {
    let bad = |e: String| (EXIT_BAD_BACKUP, format!("{e}; nothing was restored"));
    let manifest = Manifest::read(dir).map_err(bad)?;
    manifest.verify_files(dir).map_err(bad)?;
    let (rpc, cluster, txn) = connect(scheduler).await.map_err(unreachable)?;
    check_empty(&cluster).await?;
    let target = match manifest.kind.as_str() {
        "raw" => Target::Raw(cluster),
        _ => Target::Txn(txn),
    };
    let what = format!(
        "{} backup of cluster {} at ts {}: {} keys",
        manifest.kind, manifest.cluster_id, manifest.ts, manifest.keys
    );
    if dry_run {
        println!("{what}: every file checks out, the cluster is empty (dry run: nothing written)");
        return Ok(());
    }
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let (mut written, mut expired) = (0u64, 0u64);
    let mut failure = None;
    'files: for segment in manifest.segments.iter().filter(|s| s.keys > 0) {
        let (d, s) = (dir.to_path_buf(), segment.clone());
        let pairs = tokio::task::spawn_blocking(move || read_segment(&d, &s))
            .await
            .map_err(unreachable)?
            .map_err(|e| {
                (
                    EXIT_BAD_BACKUP,
                    format!("{e}; the restore stopped part-way"),
                )
            })?;
        for chunk in pairs.chunks(BATCH) {
            let permit = permits.clone().acquire_owned().await.expect("never closed");
            // Reap what has finished, so a failure stops the restore early.
            while let Some(done) = tasks.try_join_next() {
                match done.map_err(|e| e.to_string()).and_then(|r| r) {
                    Ok(n) => expired += n,
                    Err(e) => {
                        failure = Some(e);
                        break 'files;
                    }
                }
            }
            let (target, batch) = (target.clone(), chunk.to_vec());
            written += batch.len() as u64;
            tasks.spawn(async move {
                let _permit = permit;
                write_batch(target, batch).await
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        match done.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(n) => expired += n,
            Err(e) => _ = failure.get_or_insert(e),
        }
    }
    written -= expired;
    if let Some(e) = failure {
        return Err((
            4,
            format!("{e}; the restore stopped part-way: start again into a new, empty cluster"),
        ));
    }
    let secs = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({"cluster_id": rpc.cluster_id(), "source_cluster_id":
                manifest.cluster_id, "ts": manifest.ts, "keys": written, "expired": expired,
                "seconds": secs})
        );
    } else {
        let left_out = match expired {
            0 => String::new(),
            n => format!(" ({n} keys had expired since the backup and were left out)"),
        };
        println!(
            "restored {what} into cluster {} in {secs:.1} s ({:.0} keys/s){left_out}",
            rpc.cluster_id(),
            written as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}
