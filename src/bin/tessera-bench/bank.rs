//! `--mode bank`: the bank workload of the transaction tests (`workload::bank`) on a raft
//! cluster, then an audit of the store's records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use harness::local_cluster::{LocalCluster, LocalClusterConfig};
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};
use tessera_client::cluster::{ClusterClient, ClusterConfig};
use tessera_client::txn::TxnClient;
use workload::bank::{Bank, BankConfig};

use crate::Args;

/// Exit code of a bank run whose audit found a broken invariant.
const VIOLATED: i32 = 3;

/// The bank workload on the cluster of `args.scheduler`, or on an in-process one.
pub async fn bench_bank(args: &Args, clients: usize, dir: &std::path::Path) -> anyhow::Result<()> {
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
        .filter(|t| matches!(t.outcome, workload::bank::Outcome::Committed(_)))
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
