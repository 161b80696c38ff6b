//! `tessera-chaos`: runs a real Tessera cluster (scheduler and stores, as processes) under a
//! seeded nemesis while clients read and write, then checks the recorded history for
//! linearizability and lost acknowledged writes. One line of figures per seed; exits non-zero
//! if any seed found a violation, a lost write, a store panic, an unexpected exit or a key it
//! could not read back. See the README's "How Tessera is tested".
//!
//! ```text
//! tessera-chaos --seed 7 --secs 60                       # replay seed 7
//! tessera-chaos --seeds 5 --secs 60                      # seeds 1..=5
//! tessera-chaos --seed 1 --nemesis pause,partition       # only these faults
//! tessera-chaos --seed 1 --schedule isolate-leader --unsafe-local-reads   # must fail
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use harness::chaos::{self, ChaosConfig, Schedule, KINDS};

/// Checked chaos on real Tessera processes.
#[derive(Parser, Debug)]
#[command(version = server::VERSION, about)]
struct Args {
    /// Run this one seed
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run seeds FIRST..FIRST+N-1 (FIRST from --first-seed)
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of --seeds
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Seconds of client load per seed
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Stores (3 or 5)
    #[arg(long, default_value_t = 3)]
    stores: usize,
    /// Clients over gRPC
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Clients over the HTTP gateway
    #[arg(long, default_value_t = 2)]
    http_clients: usize,
    /// Bank transfer clients (transactions under the same nemesis, audited at the end; 0: none)
    #[arg(long, default_value_t = 2)]
    bank_clients: usize,
    /// Nemesis kinds, comma-separated: kill, kill-scheduler, pause, partition, delay,
    /// slow-disk, fail-disk; or `all`, or `none`
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// The nemesis plan: `random` (from the seed) or `isolate-leader` (the leader cut off for
    /// 6 s every 9 s)
    #[arg(long, default_value = "random")]
    schedule: String,
    /// Start the stores with the test-only switch that serves reads locally without ReadIndex
    /// (the check must then report a violation)
    #[arg(long)]
    unsafe_local_reads: bool,
    /// Start the stores with the raft log written on a thread of its own
    /// (`raftstore.async_log_writes = true`)
    #[arg(long)]
    async_log_writes: bool,
    /// Start the stores with plain writes applied on a thread of their own
    /// (`raftstore.async_apply = true`)
    #[arg(long)]
    async_apply: bool,
    /// Start the stores with raft logs in the file engine (`raftstore.raft_engine = "file"`)
    #[arg(long)]
    file_raft_engine: bool,
    /// Keys in use at a time
    #[arg(long, default_value_t = 6)]
    keys: usize,
    /// Operations per key before it is retired for a fresh one
    #[arg(long, default_value_t = 120)]
    ops_per_key: usize,
    /// Where a failed seed leaves its evidence (seed-N/) [default: $TMPDIR/tessera-chaos]
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Keep each run's directory (data and logs)
    #[arg(long)]
    keep: bool,
    /// Print every seed's details (reasons for failed and unknown outcomes, the nemesis's log),
    /// also when it passed
    #[arg(long)]
    verbose: bool,
}

fn kinds(spec: &str) -> Result<Vec<String>, String> {
    match spec {
        "all" => Ok(KINDS.iter().map(|k| k.to_string()).collect()),
        "none" | "" => Ok(Vec::new()),
        list => list
            .split(',')
            .map(|k| {
                let k = k.trim();
                if KINDS.contains(&k) {
                    Ok(k.to_string())
                } else {
                    Err(format!(
                        "unknown nemesis kind {k:?}; known: {}",
                        KINDS.join(", ")
                    ))
                }
            })
            .collect(),
    }
}

fn configs(args: &Args) -> Result<Vec<ChaosConfig>, String> {
    if !(3..=5).contains(&args.stores) || args.stores == 4 {
        return Err("--stores must be 3 or 5".to_string());
    }
    if args.clients + args.http_clients == 0 || args.keys == 0 || args.ops_per_key == 0 {
        return Err("need at least one client, one key and one operation per key".to_string());
    }
    let schedule = match args.schedule.as_str() {
        "random" => Schedule::Random,
        "isolate-leader" => Schedule::IsolateLeader,
        other => {
            return Err(format!(
                "unknown schedule {other:?} (random, isolate-leader)"
            ))
        }
    };
    let kinds = kinds(&args.nemesis)?;
    let seeds: Vec<u64> = match (args.seed, args.seeds) {
        (Some(s), _) => vec![s],
        (None, Some(n)) => (args.first_seed..args.first_seed + n).collect(),
        (None, None) => vec![args.first_seed],
    };
    Ok(seeds
        .into_iter()
        .map(|seed| {
            let mut c = ChaosConfig::new(seed);
            c.secs = args.secs;
            c.stores = args.stores;
            c.grpc_clients = args.clients;
            c.http_clients = args.http_clients;
            c.bank_clients = args.bank_clients;
            c.kinds = kinds.clone();
            c.schedule = schedule;
            c.unsafe_local_reads = args.unsafe_local_reads;
            c.async_log_writes = args.async_log_writes;
            c.async_apply = args.async_apply;
            c.file_raft_engine = args.file_raft_engine;
            c.keys = args.keys;
            c.ops_per_key = args.ops_per_key;
            c.keep = args.keep;
            if let Some(d) = &args.out_dir {
                c.out_dir = d.clone();
            }
            c
        })
        .collect())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tessera::init_tracing("warn");
    // A panic or an interrupt must not leave stores running.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        chaos::kill_every_child();
        default(info);
    }));
    tokio::spawn(async {
        if tessera::shutdown_signal().await.is_ok() {
            chaos::kill_every_child();
            eprintln!("tessera-chaos: interrupted; every process it started was killed");
            std::process::exit(130);
        }
    });
    let configs = match configs(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tessera-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failed = Vec::new();
    for config in &configs {
        eprintln!(
            "tessera-chaos: seed {} for {} s ({} stores, nemesis: {})",
            config.seed,
            config.secs,
            config.stores,
            if config.kinds.is_empty() {
                "none".to_string()
            } else {
                config.kinds.join(",")
            }
        );
        match chaos::run_seed(config).await {
            Ok(report) => {
                if report.passed() && !args.verbose {
                    println!("{}", report.summary());
                } else {
                    println!("{}", report.details(config));
                }
                if !report.passed() {
                    failed.push(config.seed);
                }
            }
            Err(e) => {
                println!("seed {}: the run could not go on: {e}\n  FAIL", config.seed);
                failed.push(config.seed);
            }
        }
    }
    if failed.is_empty() {
        println!("tessera-chaos: {} seed(s) passed", configs.len());
        ExitCode::SUCCESS
    } else {
        println!("tessera-chaos: FAILED seeds {failed:?}");
        ExitCode::FAILURE
    }
}
