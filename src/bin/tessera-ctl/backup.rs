//! `tessera-ctl backup --to DIR [--ts TS]`: a consistent copy of the cluster's transactional
//! data as of one timestamp (`--raw`: of its raw key space), and `tessera-ctl restore --from
//! DIR` (in `restore`).
//!
//! The backup reads the whole key space at `TS` (a fresh timestamp unless given) region by
//! region, through each region's leader, as any read at `TS` does: locks of transactions that
//! may have committed at or below it are resolved first, so the copy is exactly what a reader
//! at `TS` sees, whatever commits while it runs. Each stretch of keys one region served goes to
//! one SST file; the manifest (see `manifest`) is written last.
//!
//! Raw data has no timestamps: `--raw` reads the raw key space (column family `default`) page by
//! page, each page at one point of its region, keeping each key's expiry. Raw and
//! transactional data kept in one key range cannot be told apart there (transactional values
//! live in `default` too), so keep them in separate ranges, as with TiKV.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rocksdb::{Options, SstFileWriter};
use scheduler_client::{RpcClient, SchedulerClient};
use tessera_client::cluster::{ClusterClient, ClusterConfig};
use tessera_client::txn::{TxnClient, TxnScan};

use crate::manifest::{file_md5, hex, write_synced, Manifest, Segment, FORMAT, MANIFEST};

/// Exit code when a backup is refused: corrupt, partial, foreign, or not a backup.
pub const EXIT_BAD_BACKUP: u8 = 9;
/// Exit code when the cluster to restore into already holds data.
pub const EXIT_NOT_EMPTY: u8 = 10;

#[derive(clap::Subcommand, Debug)]
pub enum BackupCmd {
    /// Copy the cluster's (--scheduler) transactional data as of one timestamp to DIR: SST
    /// files per region and a checksummed manifest
    Backup {
        /// Directory to write (created; it must not exist or be empty)
        #[arg(long)]
        to: PathBuf,
        /// Timestamp to read at [default: a fresh one from the scheduler]
        #[arg(long, conflicts_with = "raw")]
        ts: Option<u64>,
        /// Copy the raw key space (column family default, with each key's expiry) instead.
        /// Raw data has no timestamps: each page of keys is read at one point of its region,
        /// and a raw write made while the backup runs may or may not be in it
        #[arg(long)]
        raw: bool,
    },
    /// Load a backup into a new, empty cluster (--scheduler); every file is checked before
    /// anything is written. Exit 9 when the backup is corrupt, partial or foreign, 10 when the
    /// cluster holds data
    Restore {
        /// The backup's directory
        #[arg(long)]
        from: PathBuf,
        /// Check the backup and the cluster, write nothing
        #[arg(long)]
        dry_run: bool,
        /// Transactions written at once
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
}

/// The clients a backup, a restore or a GC needs, to the cluster of `scheduler` (over TLS when
/// the command line asks for it): the scheduler's, a routing one, a transactional one.
pub async fn connect(
    scheduler: &str,
) -> Result<(Arc<RpcClient>, ClusterClient, TxnClient), String> {
    let sched = scheduler.to_string();
    let rpc = tokio::task::spawn_blocking(move || crate::admin::scheduler_client(&sched))
        .await
        .map_err(|e| e.to_string())??;
    let rpc = Arc::new(rpc);
    let dynamic: Arc<dyn SchedulerClient> = rpc.clone();
    let config = ClusterConfig {
        tls: crate::tls(),
        ..ClusterConfig::default()
    };
    let cluster = ClusterClient::new(dynamic.clone(), config);
    let txn = TxnClient::routed(cluster.clone(), dynamic);
    Ok((rpc, cluster, txn))
}

/// Runs `cmd` against the cluster of `scheduler`; the exit code.
pub async fn run(cmd: BackupCmd, scheduler: &str, json: bool) -> u8 {
    let outcome = match cmd {
        BackupCmd::Backup { to, ts, raw } => backup(scheduler, &to, ts, raw, json).await,
        BackupCmd::Restore {
            from,
            dry_run,
            concurrency,
        } => crate::restore::restore(scheduler, &from, dry_run, concurrency.max(1), json).await,
    };
    match outcome {
        Ok(()) => 0,
        Err((code, e)) => {
            eprintln!("error: {e}");
            code
        }
    }
}

/// A failure and its exit code.
pub type Failed = (u8, String);

/// Exit 4: the cluster could not be reached or read.
pub fn unreachable(e: impl std::fmt::Display) -> Failed {
    (4, e.to_string())
}

/// Checks that `dir` can take a backup: absent (then created) or empty.
fn prepare_dir(dir: &Path) -> Result<(), Failed> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err((
                    2,
                    format!(
                        "{} is not empty: a backup goes to a new directory, so that no file \
                         of another one mixes with it",
                        dir.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir)
            .map_err(|e| (2, format!("creating {}: {e}", dir.display()))),
        Err(e) => Err((2, format!("{}: {e}", dir.display()))),
    }
}

/// The segment being written: its range start, region, and SST writer once it has a key.
struct Open<'o> {
    start: Vec<u8>,
    region_id: u64,
    writer: Option<(String, SstFileWriter<'o>)>,
    keys: u64,
}

/// Writes the segments of a backup into a directory.
struct Writer<'o> {
    dir: PathBuf,
    prefix: String,
    opts: &'o Options,
    segments: Vec<Segment>,
    open: Option<Open<'o>>,
    kv_bytes: u64,
}

impl Writer<'_> {
    /// Adds the pairs `region_id` served, from user key `from` on.
    fn add(
        &mut self,
        from: &[u8],
        region_id: u64,
        pairs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), String> {
        if self.open.as_ref().is_some_and(|o| o.region_id != region_id) {
            self.close(from)?;
        }
        let open = self.open.get_or_insert_with(|| Open {
            start: from.to_vec(),
            region_id,
            writer: None,
            keys: 0,
        });
        for (k, v) in pairs {
            if open.writer.is_none() {
                let name = format!(
                    "{}-{}-r{region_id}.sst",
                    self.prefix,
                    self.segments.len() + 1
                );
                let w = SstFileWriter::create(self.opts);
                w.open(self.dir.join(&name))
                    .map_err(|e| format!("creating {name}: {e}"))?;
                open.writer = Some((name, w));
            }
            let (name, w) = open.writer.as_mut().expect("just opened");
            w.put(k, v).map_err(|e| format!("writing {name}: {e}"))?;
            open.keys += 1;
            self.kv_bytes += (k.len() + v.len()) as u64;
        }
        Ok(())
    }

    /// Ends the open segment at user key `end` (empty: unbounded).
    fn close(&mut self, end: &[u8]) -> Result<(), String> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let (file, size, md5) = match open.writer {
            None => (String::new(), 0, String::new()),
            Some((name, mut w)) => {
                w.finish().map_err(|e| format!("finishing {name}: {e}"))?;
                drop(w);
                let path = self.dir.join(&name);
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| format!("syncing {name}: {e}"))?;
                let (size, md5) = file_md5(&path).map_err(|e| e.to_string())?;
                (name, size, md5)
            }
        };
        self.segments.push(Segment {
            start: hex(&open.start),
            end: hex(end),
            region_id: open.region_id,
            file,
            keys: open.keys,
            size,
            md5,
        });
        Ok(())
    }
}

/// Pairs a backup reads at once.
const PAGE: u32 = 1024;

/// Copies the raw key space into `w`: each value as its expiry (8 bytes) and the value.
async fn copy_raw(cluster: &ClusterClient, w: &mut Writer<'_>) -> Result<(), Failed> {
    let mut pages = cluster.raw_pages("default", b"", b"", PAGE);
    let mut from = Vec::new();
    while let Some(page) = pages.next_page().await.map_err(unreachable)? {
        let pairs: Vec<_> = page
            .pairs
            .into_iter()
            .zip(page.expiry_ms)
            .map(|((k, v), at)| (k, [&at.to_be_bytes()[..], &v].concat()))
            .collect();
        w.add(&from, page.region.id, &pairs).map_err(|e| (2, e))?;
        from = pages.cursor().to_vec();
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn backup(
    scheduler: &str,
    dir: &Path,
    ts: Option<u64>,
    raw: bool,
    json: bool,
) -> Result<(), Failed> {
    prepare_dir(dir)?;
    let (rpc, cluster, txn) = connect(scheduler).await.map_err(unreachable)?;
    let now = txn.timestamp().await.map_err(unreachable)?;
    let ts = match ts {
        Some(ts) if ts > now => {
            return Err((
                2,
                format!("--ts {ts} is ahead of the cluster's clock ({now}): later commits could still land below it"),
            ))
        }
        Some(ts) => ts,
        None => now,
    };
    let started = std::time::Instant::now();
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let mut w = Writer {
        dir: dir.to_path_buf(),
        prefix: format!("{}-{ts}", rpc.cluster_id()),
        opts: &opts,
        segments: Vec::new(),
        open: None,
        kv_bytes: 0,
    };
    if raw {
        copy_raw(&cluster, &mut w).await?;
    } else {
        let mut scan: TxnScan = txn.scan_pages(b"", b"", ts, PAGE);
        let mut from = Vec::new();
        while let Some(page) = scan.next_page().await.map_err(unreachable)? {
            w.add(&from, page.region.id, &page.pairs)
                .map_err(|e| (2, e))?;
            from = scan.cursor().to_vec();
        }
    }
    w.close(b"").map_err(|e| (2, e))?;
    let manifest = Manifest {
        format: FORMAT,
        kind: if raw { "raw" } else { "txn" }.to_string(),
        cluster_id: rpc.cluster_id(),
        ts,
        created_unix_ms: now_ms(),
        tool_version: server::VERSION.to_string(),
        keys: w.segments.iter().map(|s| s.keys).sum(),
        kv_bytes: w.kv_bytes,
        segments: w.segments,
    };
    snap::sync_dir(dir).map_err(|e| (2, e.to_string()))?;
    write_synced(&dir.join(MANIFEST), &manifest.encode()).map_err(|e| (2, e))?;
    let files = manifest.segments.iter().filter(|s| s.keys > 0).count();
    let size: u64 = manifest.segments.iter().map(|s| s.size).sum();
    if json {
        println!(
            "{}",
            serde_json::json!({"cluster_id": manifest.cluster_id, "ts": ts, "keys": manifest.keys,
                "files": files, "bytes": size, "dir": dir.display().to_string()})
        );
    } else {
        println!(
            "backup of cluster {} at ts {ts}: {} keys ({} bytes of keys and values) in {files} \
             SST {}, {size} bytes, {:.1} s, in {}",
            manifest.cluster_id,
            manifest.keys,
            manifest.kv_bytes,
            if files == 1 { "file" } else { "files" },
            started.elapsed().as_secs_f64(),
            dir.display()
        );
    }
    Ok(())
}
