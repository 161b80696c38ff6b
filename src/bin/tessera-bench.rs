//! `tessera-bench`: raw put/get throughput and latency.
//!
//! - `local`: the standalone storage in this process, no network (the engine's ceiling).
//! - `grpc`: a server over gRPC with N concurrent clients (started in-process on loopback
//!   unless `--addr` names a running one).
//! - `cluster`: a raft cluster through `ClusterClient` (each request to its region's leader):
//!   the cluster run by the scheduler at `--scheduler`, or, without it, an in-process cluster of
//!   `--stores` raft stores and a scheduler on loopback gRPC.
//!
//! - `bank`: the bank workload of the transaction tests (`tessera::bank`) on a raft cluster:
//!   `--accounts` accounts, `--clients` transfer clients and a snapshot auditor for `--secs`
//!   seconds, then an audit of the store's records; prints the invariant verdict and exits
//!   with 3 if an invariant broke (1 if the run could not be completed).
//!
//! The raw modes run a put phase then a get phase of `--ops` operations, for each client count
//! of `--clients` (e.g. `--clients 1,16,64`); they print throughput and p50/p99 latency per
//! phase.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use kv::{RawApi, RawLimits, StandaloneStorage};
use proto::kvrpcpb::Context;
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};
use tessera::bank::{Bank, BankConfig};
use tessera::client::RawClient;
use tessera::cluster_client::{ClusterClient, ClusterConfig};
use tessera::config::Config;
use tessera::local_cluster::{LocalCluster, LocalClusterConfig};
use tessera::txn_client::TxnClient;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Local,
    Grpc,
    Cluster,
    Bank,
}

/// Raw put/get throughput and latency of a Tessera server or cluster, or bank-transfer
/// transactions with an invariant audit (`--mode bank`).
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    #[arg(long, value_enum, default_value = "grpc")]
    mode: Mode,
    /// A running server to benchmark (grpc mode); without it one is started in-process
    #[arg(long)]
    addr: Option<String>,
    /// The scheduler of a running cluster (cluster and bank modes); without it one is started
    /// in-process
    #[arg(long)]
    scheduler: Option<String>,
    /// Stores of the in-process cluster (cluster mode)
    #[arg(long, default_value_t = 3)]
    stores: usize,
    /// Operations of each kind (put, then get) per client count
    #[arg(long, default_value_t = 20_000)]
    ops: usize,
    /// Concurrent clients (threads in local mode), comma-separated for several runs
    /// [default: 8; cluster mode: 1,16,64; bank mode: 4 transfer clients, one run]
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Value size in bytes
    #[arg(long, default_value_t = 128)]
    value_size: usize,
    /// Fsync every write (the server default; local and in-process grpc modes); raft stores
    /// always sync their log
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sync: bool,
    /// Data directory for an in-process server, storage or cluster (default: a temporary one)
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Accounts (bank mode)
    #[arg(long, default_value_t = 8)]
    accounts: usize,
    /// How long the transfers run, in seconds (bank mode)
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Lock TTL of the transfers in milliseconds (bank mode)
    #[arg(long, default_value_t = 3_000)]
    ttl_ms: u64,
    /// Every N-th transfer of a client walks away half-way, for others to resolve; 0: none
    /// (bank mode)
    #[arg(long, default_value_t = 20)]
    abandon_every: u64,
    /// Seed of the transfer clients' choices (bank mode) [default: from the clock]
    #[arg(long)]
    seed: Option<u64>,
}

fn key(run: usize, i: usize) -> Vec<u8> {
    format!("bench-{run:03}-{i:010}").into_bytes()
}

/// One phase's figures.
struct Stats {
    ops: usize,
    elapsed: Duration,
    /// Sorted latencies of every operation (empty in local mode, which does not time them).
    latencies: Vec<Duration>,
}

impl Stats {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, q: f64) -> Option<Duration> {
        let last = self.latencies.len().checked_sub(1)?;
        Some(self.latencies[(last as f64 * q).round() as usize])
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".to_string(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
}

fn print_table(rows: &[(usize, Stats, Stats)]) {
    println!(
        "{:>7} | {:>9} {:>8} {:>8} | {:>9} {:>8} {:>8}",
        "clients", "put ops/s", "p50 ms", "p99 ms", "get ops/s", "p50 ms", "p99 ms"
    );
    for (clients, put, get) in rows {
        println!(
            "{clients:>7} | {:>9.0} {:>8} {:>8} | {:>9.0} {:>8} {:>8}",
            put.ops_per_sec(),
            ms(put.percentile(0.5)),
            ms(put.percentile(0.99)),
            get.ops_per_sec(),
            ms(get.percentile(0.5)),
            ms(get.percentile(0.99)),
        );
    }
}

fn bench_local(args: &Args, clients: usize, run: usize, dir: &std::path::Path) -> [Stats; 2] {
    let storage = Arc::new(StandaloneStorage::open(dir, args.sync).expect("open storage"));
    let raw = RawApi::new(storage, RawLimits::default());
    let value = vec![b'v'; args.value_size];
    ["put", "get"].map(|phase| {
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..clients {
                let raw = raw.clone();
                let value = value.clone();
                s.spawn(move || {
                    let ctx = Context::default();
                    for i in (t..args.ops).step_by(clients) {
                        if phase == "put" {
                            raw.put(&ctx, "", key(run, i), value.clone()).expect("put");
                        } else {
                            raw.get(&ctx, "", &key(run, i))
                                .expect("get")
                                .expect("present");
                        }
                    }
                });
            }
        });
        Stats {
            ops: args.ops,
            elapsed: start.elapsed(),
            latencies: Vec::new(),
        }
    })
}

/// What the network modes send to.
#[derive(Clone)]
enum Target {
    Server(String),
    Cluster(ClusterClient),
}

/// One client's connection.
enum Conn {
    Server(RawClient),
    Cluster(ClusterClient),
}

impl Target {
    async fn conn(&self) -> anyhow::Result<Conn> {
        Ok(match self {
            Target::Server(addr) => Conn::Server(RawClient::connect(addr).await?),
            Target::Cluster(c) => Conn::Cluster(c.clone()),
        })
    }
}

impl Conn {
    async fn put(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        match self {
            Conn::Server(c) => c.put("", key, value).await?,
            Conn::Cluster(c) => c.put("", key, value).await?,
        }
        Ok(())
    }

    async fn get(&mut self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(match self {
            Conn::Server(c) => c.get("", key).await?,
            Conn::Cluster(c) => c.get("", key).await?,
        })
    }
}

/// A put phase then a get phase with `clients` concurrent clients, each timing its operations.
async fn bench_net(
    args: &Args,
    target: &Target,
    clients: usize,
    run: usize,
) -> anyhow::Result<[Stats; 2]> {
    let value = Arc::new(vec![b'v'; args.value_size]);
    let mut out = Vec::new();
    for phase in ["put", "get"] {
        let mut conns = Vec::new();
        for _ in 0..clients {
            conns.push(target.conn().await?);
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (t, mut conn) in conns.into_iter().enumerate() {
            let (ops, value) = (args.ops, value.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(ops / clients + 1);
                for i in (t..ops).step_by(clients) {
                    let k = key(run, i);
                    let began = Instant::now();
                    if phase == "put" {
                        conn.put(&k, &value).await?;
                    } else if conn.get(&k).await?.is_none() {
                        anyhow::bail!("key {i} missing after put");
                    }
                    latencies.push(began.elapsed());
                }
                Ok(latencies)
            }));
        }
        let mut latencies = Vec::with_capacity(args.ops);
        for t in tasks {
            latencies.extend(t.await.context("client task")??);
        }
        let elapsed = start.elapsed();
        latencies.sort_unstable();
        out.push(Stats {
            ops: args.ops,
            elapsed,
            latencies,
        });
    }
    let [put, get]: [Stats; 2] = out.try_into().map_err(|_| anyhow::anyhow!("two phases"))?;
    Ok([put, get])
}

async fn run_all(args: &Args, target: &Target, clients: &[usize]) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (run, &n) in clients.iter().enumerate() {
        let [put, get] = bench_net(args, target, n, run).await?;
        rows.push((n, put, get));
    }
    print_table(&rows);
    Ok(())
}

async fn bench_cluster(
    args: &Args,
    clients: &[usize],
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    if let Some(addr) = &args.scheduler {
        let client = ClusterClient::connect(addr, ClusterConfig::default()).await?;
        return run_all(args, &Target::Cluster(client), clients).await;
    }
    let config = LocalClusterConfig {
        raftstore: raftstore::Config::default(),
        ..LocalClusterConfig::new(args.stores)
    };
    let cluster = LocalCluster::start(dir, config).await?;
    println!(
        "in-process cluster: {} raft stores and a scheduler on loopback gRPC",
        args.stores
    );
    let client = ClusterClient::connect(
        &cluster.scheduler_addr().to_string(),
        ClusterConfig::default(),
    )
    .await?;
    let result = run_all(args, &Target::Cluster(client), clients).await;
    cluster.shutdown().await?;
    result
}

/// Exit code of a bank run whose audit found a broken invariant.
const VIOLATED: i32 = 3;

/// The bank workload on the cluster of `args.scheduler`, or on an in-process one.
async fn bench_bank(args: &Args, clients: usize, dir: &std::path::Path) -> anyhow::Result<()> {
    let (addr, local) = match &args.scheduler {
        Some(addr) => (addr.clone(), None),
        None => {
            let config = LocalClusterConfig {
                raftstore: raftstore::Config::default(),
                ..LocalClusterConfig::new(args.stores)
            };
            println!(
                "in-process cluster: {} raft stores and a scheduler on loopback gRPC",
                args.stores
            );
            let cluster = LocalCluster::start(dir, config).await?;
            (cluster.scheduler_addr().to_string(), Some(cluster))
        }
    };
    let to = addr.clone();
    let rpc =
        tokio::task::spawn_blocking(move || RpcClient::connect(&to, RpcClientConfig::default()))
            .await?
            .with_context(|| format!("connecting to the scheduler at {addr}"))?;
    let scheduler: Arc<dyn SchedulerClient> = Arc::new(rpc);
    let cluster = ClusterClient::new(scheduler.clone(), ClusterConfig::default());
    let client = TxnClient::routed(cluster.clone(), scheduler)
        .with_lock_ttl(Duration::from_millis(args.ttl_ms));
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let config = BankConfig {
        accounts: args.accounts,
        clients,
        abandon_every: args.abandon_every,
        seed,
        ..BankConfig::default()
    };
    let bank = Bank::open(client, cluster, config).await?;
    let prefix = String::from_utf8_lossy(&bank.keys()[0]).into_owned();
    println!(
        "bank: {} accounts from {prefix:?}, {clients} transfer clients and an auditor for {} s \
         against the scheduler at {addr}; lock TTL {} ms, seed {seed}",
        args.accounts, args.secs, args.ttl_ms
    );
    let work = bank.start();
    let began = Instant::now();
    let run_for = Duration::from_secs(args.secs);
    while began.elapsed() < run_for {
        // The length of the run, reporting as it goes.
        tokio::time::sleep((run_for - began.elapsed()).min(Duration::from_secs(5))).await;
        let p = work.progress();
        println!(
            "[{:5.1}s] committed {}, not committed {}, unknown {}, could not read {}; \
             snapshots {} ({} incomplete)",
            began.elapsed().as_secs_f64(),
            p.committed,
            p.aborted,
            p.unknown,
            p.read_failures,
            p.snapshots,
            p.snapshot_failures
        );
    }
    let history = work.stop().await?;
    let ran = began.elapsed();
    let acked = history
        .transfers
        .iter()
        .filter(|t| matches!(t.outcome, tessera::bank::Outcome::Committed(_)))
        .count();
    println!(
        "bank: {} transfers in {ran:.1?} ({:.1} acknowledged commits/s); settling and auditing",
        history.transfers.len(),
        acked as f64 / ran.as_secs_f64()
    );
    let report = bank.audit(history).await;
    if let Some(cluster) = local {
        cluster.shutdown().await?;
    }
    let report = report?;
    println!("{report}");
    if !report.ok() {
        std::process::exit(VIOLATED);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let clients = match (&args.clients[..], args.mode) {
        ([], Mode::Cluster) => vec![1, 16, 64],
        ([], Mode::Bank) => vec![4],
        ([], _) => vec![8],
        (list, _) => list.to_vec(),
    };
    anyhow::ensure!(!clients.contains(&0), "--clients must be positive");
    if !matches!(args.mode, Mode::Bank) {
        println!(
            "mode {:?}, {} ops per phase, clients {clients:?}, {}-byte values, sync {}",
            args.mode, args.ops, args.value_size, args.sync
        );
    }
    match args.mode {
        Mode::Local => {
            let mut rows = Vec::new();
            for (run, &n) in clients.iter().enumerate() {
                let [put, get] = bench_local(&args, n, run, &dir.join(format!("run-{run}")));
                rows.push((n, put, get));
            }
            print_table(&rows);
            Ok(())
        }
        Mode::Grpc => match &args.addr {
            Some(addr) => run_all(&args, &Target::Server(addr.clone()), &clients).await,
            None => {
                let mut config = Config::loopback(&dir);
                config.storage.sync_write = args.sync;
                let server = tessera::server::start(&config).await?;
                let target = Target::Server(server.addr.to_string());
                let result = run_all(&args, &target, &clients).await;
                server.shutdown().await?;
                result
            }
        },
        Mode::Cluster => bench_cluster(&args, &clients, &dir).await,
        Mode::Bank => {
            let [clients] = clients[..] else {
                anyhow::bail!("bank mode takes one client count, not {clients:?}");
            };
            bench_bank(&args, clients, &dir).await
        }
    }
}
