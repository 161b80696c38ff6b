//! `tessera-bench`: raw put/get throughput and latency.
//!
//! - `local`: the standalone storage in this process, no network (the engine's ceiling).
//! - `grpc`: a server over gRPC with N concurrent clients (started in-process on loopback
//!   unless `--addr` names a running one).
//! - `cluster`: a raft cluster through `ClusterClient` (each request to its region's leader):
//!   the cluster run by the scheduler at `--scheduler`, or, without it, an in-process cluster of
//!   `--stores` raft stores and a scheduler on loopback gRPC. `--regions N` first splits the
//!   key space into N regions and waits for their leaders to spread over the stores.
//! - `etcd`: the same load against etcd's v3 API at `--endpoints` (puts, linearizable gets),
//!   for `make bench-compare`.
//!
//! - `bank`: the bank workload of the transaction tests (`workload::bank`) on a raft cluster:
//!   `--accounts` accounts, `--clients` transfer clients and a snapshot auditor for `--secs`
//!   seconds, then an audit of the store's records; prints the invariant verdict and exits
//!   with 3 if an invariant broke (1 if the run could not be completed).
//!
//! The network modes run the closed-loop load of `load.rs`: an optional `--preload` of every
//! key, then a put phase and a get phase of `--ops` operations (or `--phase-secs` seconds) for
//! each client count of `--clients` (e.g. `--clients 1,16,64`), over `--conns` connections;
//! they print throughput and p50/p99/p999 latency per phase (and JSON lines with `--json`).
//! `local` runs the engine alone, a put then a get phase of `--ops` operations.

mod bank;
mod etcd;
mod load;
mod regions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use harness::local_cluster::{LocalCluster, LocalClusterConfig};
use kv::{RawApi, RawLimits, StandaloneStorage};
use proto::kvrpcpb::Context;
use server::config::Config;
use tessera_client::cluster::{ClusterClient, ClusterConfig};

use load::{Target, Workload};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Local,
    Grpc,
    Cluster,
    Etcd,
    Bank,
}

/// Raw put/get throughput and latency of a Tessera server or cluster (or of etcd, to compare),
/// or bank-transfer transactions with an invariant audit (`--mode bank`).
#[derive(Parser, Debug)]
#[command(version = server::VERSION, about)]
pub struct Args {
    #[arg(long, value_enum, default_value = "grpc")]
    mode: Mode,
    /// A running server to benchmark (grpc mode); without it one is started in-process
    #[arg(long)]
    addr: Option<String>,
    /// The scheduler of a running cluster (cluster and bank modes); without it one is started
    /// in-process
    #[arg(long)]
    scheduler: Option<String>,
    /// etcd client endpoints, `host:port`, comma-separated (etcd mode); connections go to them
    /// in turn
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Stores of the in-process cluster (cluster mode)
    #[arg(long, default_value_t = 3)]
    stores: usize,
    /// Split the key space into this many regions first, and wait for their leaders to spread
    /// (cluster mode)
    #[arg(long, default_value_t = 1)]
    regions: usize,
    /// Operations of each kind (put, then get) per client count, unless `--phase-secs`
    #[arg(long, default_value_t = 20_000)]
    ops: usize,
    /// Run each put and get phase for this many seconds instead of `--ops` operations
    #[arg(long)]
    phase_secs: Option<f64>,
    /// Keys in the key space the network modes draw from
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Write every key once before the measured phases (network modes); gets then must find
    /// every key
    #[arg(long)]
    preload: bool,
    /// Connections the clients share (network modes): one per client by default in grpc mode;
    /// in cluster mode a connection slot is one connection to each store
    #[arg(long)]
    conns: Option<usize>,
    /// Also print each phase as a JSON object on a line of its own
    #[arg(long)]
    json: bool,
    /// Cluster mode: one unary call per request instead of the client's `BatchCommands`
    /// streams (the default batches the requests queued for a store into one message)
    #[arg(long)]
    no_batch: bool,
    /// Concurrent clients (threads in local mode), comma-separated for several runs
    /// [default: 8; cluster and etcd modes: 1,16,64; bank mode: 4 transfer clients, one run]
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Value size in bytes
    #[arg(long, default_value_t = 256)]
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

impl Args {
    fn workload(&self) -> anyhow::Result<Workload> {
        anyhow::ensure!(self.keys > 0, "--keys must be positive");
        let phase = match self.phase_secs {
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(s) => anyhow::bail!("--phase-secs must be positive, not {s}"),
            None => None,
        };
        Ok(Workload {
            keys: self.keys,
            value_size: self.value_size,
            phase,
            ops: self.ops,
            preload: self.preload,
            json: self.json,
        })
    }
}

/// Put then get `args.ops` keys with `clients` threads on a standalone storage in `dir`;
/// prints the throughput of each phase.
fn bench_local(args: &Args, clients: usize, dir: &Path) -> anyhow::Result<()> {
    let storage = Arc::new(StandaloneStorage::open(dir, args.sync)?);
    let raw = RawApi::new(storage, RawLimits::default());
    let value = vec![b'v'; args.value_size];
    for phase in ["put", "get"] {
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..clients {
                let (raw, value) = (raw.clone(), value.clone());
                s.spawn(move || {
                    let ctx = Context::default();
                    for i in (t..args.ops).step_by(clients) {
                        let k = load::key(i as u64);
                        if phase == "put" {
                            raw.put(&ctx, "", k, value.clone()).expect("put");
                        } else {
                            raw.get(&ctx, "", &k).expect("get").expect("present");
                        }
                    }
                });
            }
        });
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{phase} {clients:>4} threads: {:>9.0} ops/s",
            args.ops as f64 / secs
        );
    }
    Ok(())
}

/// The cluster of `args.scheduler`, or an in-process one, under the load of `load.rs`.
async fn bench_cluster(args: &Args, clients: &[usize], dir: &Path) -> anyhow::Result<()> {
    let workload = args.workload()?;
    let mut local = None;
    let addr = match &args.scheduler {
        Some(addr) => addr.clone(),
        None => {
            let config = LocalClusterConfig {
                raftstore: raftstore::Config::default(),
                ..LocalClusterConfig::new(args.stores)
            };
            let cluster = LocalCluster::start(dir, config).await?;
            println!(
                "in-process cluster: {} raft stores and a scheduler on loopback gRPC",
                args.stores
            );
            let addr = cluster.scheduler_addr().to_string();
            local = Some(cluster);
            addr
        }
    };
    let result = async {
        let config = ClusterConfig {
            batch: !args.no_batch,
            ..ClusterConfig::default()
        };
        let first = ClusterClient::connect(&addr, config.clone()).await?;
        if args.regions > 1 {
            regions::presplit(&first, args.keys, args.regions, args.json).await?;
        }
        // Each slot has its own connection to every store.
        let mut slots = vec![first.clone()];
        for _ in 1..args.conns.unwrap_or(1) {
            slots.push(ClusterClient::new(first.scheduler(), config.clone()));
        }
        load::run(&Target::Cluster(slots), &workload, clients).await
    }
    .await;
    if let Some(cluster) = local {
        cluster.shutdown().await?;
    }
    result
}

/// A server at `args.addr`, or an in-process one, under the load of `load.rs`.
async fn bench_grpc(args: &Args, clients: &[usize], dir: &Path) -> anyhow::Result<()> {
    let workload = args.workload()?;
    let conns = args
        .conns
        .unwrap_or(clients.iter().copied().max().unwrap_or(1));
    if let Some(addr) = &args.addr {
        let target = load::server_target(addr, conns).await?;
        return load::run(&target, &workload, clients).await;
    }
    let mut config = Config::loopback(dir);
    config.storage.sync_write = args.sync;
    let server = server::start(&config).await?;
    let result = async {
        let target = load::server_target(&server.addr.to_string(), conns).await?;
        load::run(&target, &workload, clients).await
    }
    .await;
    server.shutdown().await?;
    result
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
        ([], Mode::Cluster | Mode::Etcd) => vec![1, 16, 64],
        ([], Mode::Bank) => vec![4],
        ([], _) => vec![8],
        (list, _) => list.to_vec(),
    };
    anyhow::ensure!(!clients.contains(&0), "--clients must be positive");
    anyhow::ensure!(args.conns != Some(0), "--conns must be positive");
    if !matches!(args.mode, Mode::Bank) {
        let length = match args.phase_secs {
            Some(s) => format!("{s} s per phase"),
            None => format!("{} ops per phase", args.ops),
        };
        println!(
            "mode {:?}, {length}, clients {clients:?}, {}-byte values over {} keys, sync {}",
            args.mode, args.value_size, args.keys, args.sync
        );
    }
    match args.mode {
        Mode::Local => {
            for (run, &n) in clients.iter().enumerate() {
                bench_local(&args, n, &dir.join(format!("run-{run}")))?;
            }
            Ok(())
        }
        Mode::Grpc => bench_grpc(&args, &clients, &dir).await,
        Mode::Cluster => bench_cluster(&args, &clients, &dir).await,
        Mode::Etcd => {
            anyhow::ensure!(!args.endpoints.is_empty(), "etcd mode needs --endpoints");
            let conns = args.conns.unwrap_or(args.endpoints.len());
            let target = load::etcd_target(&args.endpoints, conns).await?;
            load::run(&target, &args.workload()?, &clients).await
        }
        Mode::Bank => {
            let [clients] = clients[..] else {
                anyhow::bail!("bank mode takes one client count, not {clients:?}");
            };
            bank::bench_bank(&args, clients, &dir).await
        }
    }
}
