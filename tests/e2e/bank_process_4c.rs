//! Stage 4C on real processes: the bank workload (`workload::bank`) on `tessera-scheduler` and
//! three `tessera-server --engine raft` stores, through the routed `TxnClient`, while stores
//! are killed with SIGKILL and restarted.
//!
//! ```text
//!   open 8 accounts ─► 4 transfer clients + a snapshot auditor ─► transfers
//!     ─► kill -9 a follower ─► transfers ─► restart it (snapshot catch-up) ─► transfers
//!     ─► kill -9 the leader ─► transfers (new leader) ─► restart it ─► transfers
//!     ─► stop ─► settle ─► audit the MVCC records against the history
//! ```
//!
//! Every 8th transfer of a client walks away after its prewrite or after committing its
//! primary, so other clients must roll back or finish it. The auditor asserts that every
//! snapshot adds up; the audit (see `workload::bank`) that no lock is left, every transfer is
//! committed on both accounts or neither, as its client or its primary says, no update is lost,
//! and every read saw exactly the state of its timestamp. Set `TESSERA_SEED` to replay the
//! clients' choices (the faults' timing depends on the machine).

use std::sync::Arc;
use std::time::Duration;

use scheduler_client::{RpcClient, SchedulerClient};
use tessera_client::cluster::ClusterClient;
use tessera_client::txn::TxnClient;
use tokio::task::block_in_place;
use workload::bank::{Bank, BankConfig};

use crate::procs::{small_regions_config, Cluster, STORES, WAIT};
use crate::util::ctl;

/// Lock TTL: short, so that the locks of abandoned transfers expire within the run.
const TTL: Duration = Duration::from_millis(1_000);
/// Transfers acknowledged before each fault and after each recovery.
const BETWEEN: u64 = 15;

/// The scheduler's client, a routing client with a 20 s deadline per request, and a
/// transaction client over both with the test's lock TTL.
async fn clients(cluster: &Cluster) -> (Arc<RpcClient>, ClusterClient, TxnClient) {
    let (rpc, routed) = cluster.routed_clients().await;
    let scheduler: Arc<dyn SchedulerClient> = rpc.clone();
    let client = TxnClient::routed(routed.clone(), scheduler).with_lock_ttl(TTL);
    (rpc, routed, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_on_store_processes_under_kill_9_4c() {
    let seed = std::env::var("TESSERA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("bank seed {seed} (TESSERA_SEED replays the clients' choices)");
    let mut cluster = block_in_place(Cluster::start);
    cluster.wait_replicas(STORES).await;
    cluster.note("region has 3 voters");

    let (_, routed, client) = clients(&cluster).await;
    let bank = Bank::open(
        client,
        routed,
        BankConfig {
            accounts: 8,
            clients: 4,
            prefix: Some("bank/".to_string()),
            abandon_every: 8,
            seed,
            ..BankConfig::default()
        },
    )
    .await
    .expect("open the accounts");
    let work = bank.start();
    let wait = |what: &'static str| {
        let work = &work;
        async move {
            if let Err(e) = work.wait_committed(BETWEEN, WAIT).await {
                panic!("seed {seed}: {what}: {e}");
            }
        }
    };
    wait("all stores up").await;

    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % STORES;
    block_in_place(|| cluster.kill(follower));
    cluster.note(&format!(
        "killed follower {}",
        cluster.stores[follower].name
    ));
    wait("one follower down").await;
    block_in_place(|| cluster.run_store(follower));
    cluster.wait_in_touch(follower).await;
    cluster.note(&format!("restarted {}", cluster.stores[follower].name));
    wait("follower back").await;

    let leader = cluster.wait_leader().await;
    block_in_place(|| cluster.kill(leader));
    cluster.note(&format!("killed leader {}", cluster.stores[leader].name));
    wait("leader killed").await;
    block_in_place(|| cluster.run_store(leader));
    cluster.wait_in_touch(leader).await;
    cluster.note(&format!("restarted {}", cluster.stores[leader].name));
    wait("old leader back").await;

    let history = work.stop().await.expect("stop the workload");
    cluster.note(&format!("{} transfers; settling", history.transfers.len()));
    let report = bank.audit(history).await.expect("settle and audit");
    cluster.note("audited");
    eprintln!("{report}");
    assert!(report.ok(), "seed {seed}: {report}");
    assert!(
        report.committed >= 5 * BETWEEN as usize,
        "seed {seed}: {report}"
    );
    assert!(
        report.abandoned.after_prewrite > 0 && report.abandoned.after_primary > 0,
        "seed {seed}: no transfer abandoned at one of the stages: {report}"
    );
    // The secondaries of transfers abandoned after their primary's commit were finished by
    // others: readers, other transfers, or the final read.
    assert!(report.resolved.0 > 0, "seed {seed}: {report}");
    assert!(report.snapshots > 0, "seed {seed}: {report}");

    // `tessera-ctl txn` through the cluster reads the final balance of the first account.
    let key = String::from_utf8(bank.keys()[0].clone()).unwrap();
    let sched = cluster.scheduler.clone();
    let out = block_in_place(|| ctl(&["--scheduler", &sched, "txn", "get", &key]));
    assert_eq!(
        out,
        (0, format!("{}\n", report.final_balances[0]), String::new())
    );

    block_in_place(|| cluster.stop_all());
}

/// The start keys of the regions the scheduler knows.
fn region_starts(rpc: &RpcClient) -> Vec<String> {
    rpc.scan_regions(b"", b"", 0)
        .unwrap_or_default()
        .iter()
        .map(|(r, _)| String::from_utf8_lossy(&r.start_key).into_owned())
        .collect()
}

/// The bank on a key space split between its accounts, so that transfers span regions and
/// locks are resolved across them. Transactional data lives under memcomparable-encoded keys
/// (locks under the encoded key, versions under it plus a timestamp), so the filler that makes
/// the regions split is written under encoded keys that sort between the accounts', and the
/// split keys fall between accounts, never between a key's lock and its versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_across_split_regions_4c() {
    let mut cluster = block_in_place(|| Cluster::start_with(&small_regions_config(), STORES));
    cluster.wait_replicas(STORES).await;
    let (rpc, routed, client) = clients(&cluster).await;
    // 48 KiB of filler after each account's key: the key space splits between accounts.
    for i in 0..8 {
        for j in 0..48 {
            let key =
                kv::mvcc::key::encode_bytes(format!("bank/acct-{i:03}/fill-{j:03}").as_bytes());
            let put = routed.put("default", &key, &[b'.'; 1024]).await;
            put.expect("write the filler");
        }
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let r = rpc.clone();
        let starts = tokio::task::spawn_blocking(move || region_starts(&r))
            .await
            .unwrap();
        if starts.len() >= 4 {
            cluster.note(&format!("regions start at {starts:?}"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than 4 regions within {WAIT:?}: {starts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let config = BankConfig {
        prefix: Some("bank/".to_string()),
        abandon_every: 8,
        ..BankConfig::default()
    };
    let bank = Bank::open(client, routed, config)
        .await
        .expect("open the accounts");
    let work = bank.start();
    work.wait_committed(4 * BETWEEN, WAIT)
        .await
        .expect("transfers across regions");
    let history = work.stop().await.expect("stop the workload");
    let report = bank.audit(history).await.expect("settle and audit");
    eprintln!("{report}");
    assert!(report.ok(), "{report}");
    assert!(
        report.abandoned.after_prewrite > 0 && report.abandoned.after_primary > 0,
        "{report}"
    );
    block_in_place(|| cluster.stop_all());
}
