//! The chaos harness (`tessera-chaos`): a real cluster of processes under a seeded nemesis,
//! concurrent clients whose every operation is recorded, and a check of the history.
//!
//! ```text
//!  run_seed(config)
//!   ├─ cluster: tessera-scheduler + N × tessera-server --engine raft, store i on 127.0.0.(i+2),
//!   │           its peer port behind a harness proxy (partitions, delays); every store loses
//!   │           its unsynced writes when killed, as in a power cut (`kv::fault`)
//!   ├─ clients: gRPC (ClusterClient) and HTTP gateway reads/puts/deletes/swaps → Recorder;
//!   │           bank transfers (transactions) with a snapshot auditor
//!   ├─ nemesis: kill/pause/partition/delay/slow-disk/fail-disk/kill-scheduler from the seed
//!   ├─ heal everything, read every key (the final reads join the history)
//!   └─ check: linearizability per key (the `checker` crate), lost acknowledged writes, the
//!             bank's audit, store panics and unexpected exits; on failure, the evidence under
//!             the output directory
//! ```
//! Every process is killed and the run's directory removed when the run ends, whether it
//! passed, failed or panicked.

mod cluster;
mod history;
mod nemesis;
mod proxy;
mod report;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use cluster::{kill_every_child, STORE_CONFIG};
pub use history::{Counts, LostWrites, Outcome, Record, Via};
pub use nemesis::{Fault, Step, Who, KINDS};
pub use proxy::{Link, Proxy};
pub use report::SeedReport;

use cluster::Cluster;
use history::Recorder;
use nemesis::Nemesis;
use workload::{ClientCtx, Keys};

use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};

use ::workload::bank::{self, Bank, BankConfig};
use tessera_client::cluster::{ClusterClient, ClusterConfig};
use tessera_client::txn::TxnClient;

/// Which plan the nemesis follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Faults drawn from the seed, of the configured kinds.
    Random,
    /// The leader cut off both ways for 6 s every 9 s (exposes stale reads).
    IsolateLeader,
}

/// One run's settings.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// The seed of the nemesis plan and of the clients' choices.
    pub seed: u64,
    /// How long the clients run.
    pub secs: u64,
    /// Stores (3 or 5).
    pub stores: usize,
    /// Clients over gRPC.
    pub grpc_clients: usize,
    /// Clients over the HTTP gateway.
    pub http_clients: usize,
    /// Bank transfer clients (transactions), audited at the end (0: no bank).
    pub bank_clients: usize,
    /// Nemesis kinds (names from [`KINDS`]).
    pub kinds: Vec<String>,
    /// Which plan.
    pub schedule: Schedule,
    /// Start the stores with the unsafe local-read switch (the check must then fail); the gRPC
    /// clients then read from a random store rather than the leader, to ask the unsafe peers.
    pub unsafe_local_reads: bool,
    /// Start the stores with the raft log written on a thread of its own
    /// (`raftstore.async_log_writes`).
    pub async_log_writes: bool,
    /// Start the stores with plain writes applied on a thread of their own
    /// (`raftstore.async_apply`).
    pub async_apply: bool,
    /// Start the stores with raft logs in the file engine (`raftstore.raft_engine = "file"`).
    pub file_raft_engine: bool,
    /// Keys in use at a time.
    pub keys: usize,
    /// Operations per key before it retires.
    pub ops_per_key: usize,
    /// Where the directory holding the binaries is (`tessera-server`, `tessera-scheduler`).
    pub bin_dir: PathBuf,
    /// Where a failed run leaves its evidence (`seed-N/`).
    pub out_dir: PathBuf,
    /// Keep the run's directory (data and logs) instead of removing it.
    pub keep: bool,
}

impl ChaosConfig {
    /// Defaults for `seed`: 60 s, 3 stores, 4 gRPC and 2 HTTP clients, every nemesis kind,
    /// binaries beside the running executable.
    pub fn new(seed: u64) -> ChaosConfig {
        let bin_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.to_path_buf()))
            .unwrap_or_default();
        ChaosConfig {
            seed,
            secs: 60,
            stores: 3,
            grpc_clients: 4,
            http_clients: 2,
            bank_clients: 2,
            kinds: KINDS.iter().map(|k| k.to_string()).collect(),
            schedule: Schedule::Random,
            unsafe_local_reads: false,
            async_log_writes: false,
            async_apply: false,
            file_raft_engine: false,
            keys: 6,
            ops_per_key: 120,
            bin_dir,
            out_dir: std::env::temp_dir().join("tessera-chaos"),
            keep: false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until a write goes through: the cluster has a leader.
async fn wait_ready(client: &ClusterClient, bound: Duration) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    loop {
        match client.put("default", b"chaos-ready", b"1").await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("no write succeeded within {bound:?}: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Reads every key after healing, retrying until each is read or `bound` passes; the reads
/// are recorded as operations of client `id`. Returns the keys it could not read.
async fn final_reads(
    client: &ClusterClient,
    keys: &[Vec<u8>],
    recorder: &Recorder,
    id: usize,
    bound: Duration,
) -> (BTreeMap<Vec<u8>, Option<Vec<u8>>>, Vec<String>) {
    let deadline = Instant::now() + bound;
    let mut finals = BTreeMap::new();
    let mut unread = Vec::new();
    for key in keys {
        loop {
            let call = recorder.now();
            match client.get("default", key).await {
                Ok(v) => {
                    recorder.push(Record {
                        client: id,
                        via: Via::Final,
                        key: key.clone(),
                        input: checker::Input::Get,
                        call,
                        ret: recorder.now(),
                        outcome: Outcome::Ok(checker::Output::Value(v.clone())),
                    });
                    finals.insert(key.clone(), v);
                    break;
                }
                Err(e) if Instant::now() >= deadline => {
                    unread.push(format!("{}: {e}", String::from_utf8_lossy(key)));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    (finals, unread)
}

/// Opens the bank's accounts (under `s{seed}-bank/`) for `clients` transfer clients.
async fn open_bank(config: &ChaosConfig, scheduler: &str, clients: usize) -> Result<Bank, String> {
    let addr = scheduler.to_string();
    let rpc =
        tokio::task::spawn_blocking(move || RpcClient::connect(&addr, RpcClientConfig::default()))
            .await
            .map_err(|e| format!("bank: {e}"))?
            .map_err(|e| format!("bank: scheduler: {e}"))?;
    let tso: Arc<dyn SchedulerClient> = Arc::new(rpc);
    // Transactions are sent again after unknown outcomes by design (Percolator makes a repeat
    // harmless), so they get the ordinary deadline rather than the register clients' short one.
    let routed = ClusterClient::new(tso.clone(), ClusterConfig::default());
    let client = TxnClient::routed(routed.clone(), tso).with_lock_ttl(Duration::from_secs(3));
    let bank_config = BankConfig {
        clients,
        prefix: Some(format!("s{}-bank/", config.seed)),
        abandon_every: 8,
        seed: config.seed,
        ..BankConfig::default()
    };
    Bank::open(client, routed, bank_config)
        .await
        .map_err(|e| format!("bank: opening the accounts: {e}"))
}

/// Stops the bank's workload and audits it (the cluster is healed by then).
async fn audit_bank(bank: Bank, work: bank::Workload) -> Result<bank::Report, String> {
    let history = work.stop().await.map_err(|e| format!("stopping: {e}"))?;
    bank.audit(history)
        .await
        .map_err(|e| format!("settling and auditing: {e}"))
}

/// Runs one seed: starts the cluster, runs clients and nemesis for `config.secs`, heals, reads
/// back, checks. Everything it started is stopped and its directory removed before it
/// returns.
///
/// # Errors
/// The cluster could not be started or never became writable.
pub async fn run_seed(config: &ChaosConfig) -> Result<SeedReport, String> {
    let dir = tempfile::Builder::new()
        .prefix("tessera-chaos-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    // Every kill -9 of a store is a power cut: its unsynced writes are lost.
    let mut env = vec![
        ("RUST_LOG".to_string(), "info".to_string()),
        (kv::fault::LOSE_UNSYNCED_ENV.to_string(), "1".to_string()),
    ];
    if config.unsafe_local_reads {
        env.push((
            raftstore::UNSAFE_LOCAL_READS_ENV.to_string(),
            "1".to_string(),
        ));
    }
    let mut store_config = STORE_CONFIG.to_string();
    if config.async_log_writes {
        // STORE_CONFIG ends in its [raftstore] table.
        store_config.push_str("async_log_writes = true\n");
    }
    if config.async_apply {
        store_config.push_str("async_apply = true\n");
    }
    if config.file_raft_engine {
        store_config.push_str("raft_engine = \"file\"\n");
    }
    let cluster = Cluster::start(
        &config.bin_dir,
        dir.path(),
        config.stores,
        &env,
        &store_config,
    )
    .await?;
    let cluster = Arc::new(Mutex::new(cluster));
    let result = drive(config, cluster.clone()).await;
    let report = match result {
        Ok(mut report) => {
            if !report.passed() {
                let c = lock(&cluster);
                report.artifacts = report::save(config, &report, &c).ok();
            }
            Ok(report)
        }
        Err(e) => Err(e),
    };
    // Kill every process before the directory goes.
    lock(&cluster).kill_all();
    if config.keep {
        let kept = dir.keep();
        eprintln!("kept the run's directory {}", kept.display());
    }
    report
}

async fn drive(config: &ChaosConfig, cluster: Arc<Mutex<Cluster>>) -> Result<SeedReport, String> {
    let scheduler = lock(&cluster).scheduler.to_string();
    let ready = ClusterClient::connect(&scheduler, workload::client_config())
        .await
        .map_err(|e| e.to_string())?;
    wait_ready(&ready, Duration::from_secs(60)).await?;

    let bank = match config.bank_clients {
        0 => None,
        n => Some(open_bank(config, &scheduler, n).await?),
    };
    let bank_work = bank.as_ref().map(|b| b.start());

    let recorder = Arc::new(Recorder::new());
    let start = Instant::now();
    let until = start + Duration::from_secs(config.secs);
    let keys = Arc::new(Mutex::new(Keys::new(
        &format!("s{}-k", config.seed),
        config.keys,
        config.ops_per_key,
    )));
    let http_addrs = Arc::new(Mutex::new(
        lock(&cluster)
            .stores
            .iter()
            .map(|s| s.http)
            .collect::<Vec<_>>(),
    ));
    let grpc_addrs: Vec<_> = lock(&cluster).stores.iter().map(|s| s.grpc).collect();
    let mut clients = Vec::new();
    for id in 0..config.grpc_clients + config.http_clients {
        let via = if id < config.grpc_clients {
            Via::Grpc
        } else {
            Via::Http
        };
        let client = ClusterClient::connect(&scheduler, workload::client_config())
            .await
            .map_err(|e| e.to_string())?;
        clients.push(tokio::spawn(workload::run_client(ClientCtx {
            id,
            via,
            client,
            http_addrs: http_addrs.clone(),
            direct_reads: config.unsafe_local_reads.then(|| grpc_addrs.clone()),
            keys: keys.clone(),
            recorder: recorder.clone(),
            until,
            rng: workload::client_rng(config.seed, id),
        })));
    }

    let plan = match config.schedule {
        Schedule::Random => nemesis::plan(config.seed, config.secs, config.stores, &config.kinds),
        Schedule::IsolateLeader => nemesis::isolate_leader_plan(config.secs),
    };
    let mut nemesis = Nemesis::new(cluster.clone(), config.seed, start);
    let nemesis_plan = plan.clone();
    let nemesis_task = tokio::task::spawn_blocking(move || {
        nemesis.run(&nemesis_plan, until);
        nemesis.heal_all();
        nemesis
    });

    // Watch for stores that exit by themselves (a finding), restart them, and keep the HTTP
    // clients' addresses current.
    let mut exits = Vec::new();
    while !nemesis_task.is_finished() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut c = lock(&cluster);
        for (i, what) in c.unexpected_exits() {
            tracing::error!("{what}");
            exits.push(what);
            let _ = c.start_store(i);
        }
        *lock(&http_addrs) = c.stores.iter().map(|s| s.http).collect();
    }
    let nemesis = nemesis_task.await.map_err(|e| format!("nemesis: {e}"))?;
    for c in clients {
        c.await.map_err(|e| format!("client: {e}"))?;
    }
    let bank_report = match (bank, bank_work) {
        (Some(bank), Some(work)) => Some(audit_bank(bank, work).await),
        _ => None,
    };

    let used = lock(&keys).used.clone();
    let final_client = ClusterClient::connect(&scheduler, workload::client_config())
        .await
        .map_err(|e| e.to_string())?;
    let final_id = config.grpc_clients + config.http_clients;
    let (finals, unread) = final_reads(
        &final_client,
        &used,
        &recorder,
        final_id,
        Duration::from_secs(90),
    )
    .await;
    {
        let mut c = lock(&cluster);
        for (_, what) in c.unexpected_exits() {
            exits.push(what);
        }
    }
    let records = recorder.records();
    let history = history::to_history(&records);
    let check_history = history.clone();
    let violations = tokio::task::spawn_blocking(move || checker::check_each_key(&check_history))
        .await
        .map_err(|e| format!("checker: {e}"))?;
    let lost = history::lost_writes(&history, &finals);
    let panics = lock(&cluster).panics();
    Ok(SeedReport {
        seed: config.seed,
        secs: config.secs,
        counts: Counts::of(&records),
        faults: nemesis.counts.clone(),
        plan,
        nemesis_log: nemesis.log.clone(),
        violations,
        lost,
        panics,
        unexpected_exits: exits,
        unread,
        keys: used.len(),
        bank: bank_report,
        history,
        artifacts: None,
    })
}
