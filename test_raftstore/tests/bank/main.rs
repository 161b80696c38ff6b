//! Stage 4C: Percolator transactions on the replicated raftstore keep a bank's books straight
//! under crashes and partitions.
//!
//! The bank of the `workload` crate (the one `tessera-bench`, the chaos harness and the e2e
//! tests run over gRPC) runs here on the in-process cluster, through the same `TxnClient` over
//! a transport that calls the stores' `TxnApi` directly (see `transport`). Clients move money
//! between accounts in two-phase-commit transactions (some walk away after the prewrite, as
//! they send the primary's commit, or after it, as crashed clients do), an auditor checks that
//! every snapshot adds up, and a chaos thread partitions and crash-restarts stores. At the end
//! every transfer whose client never learned its fate is decided by its primary, every lock is
//! resolved, and the audit checks the MVCC records against the history (see
//! `workload::bank`).

mod races;
mod stores;
mod transport;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::eraftpb::MessageType;
use raftstore::Config;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use test_raftstore::{DropFilter, Filter, MessageTypeFilter, PartitionFilter};
use workload::bank::{Abandon, Bank, BankConfig};

use stores::{txn_client, Stores};
use transport::StoreRecords;

const STORES: usize = 5;
const CLIENTS: usize = 4;
const ACCOUNTS: usize = 8;
/// Lock TTL of the transfers: short, so that the locks of abandoned transactions (and of slow
/// ones caught in a partition) expire and get resolved by others.
const TTL: Duration = Duration::from_millis(200);
/// One transfer in this many is walked away from, at each stage in turn.
const ABANDON_EVERY: u64 = 10;
/// How long the clients and the chaos run.
const WORKLOAD: Duration = Duration::from_secs(10);
/// Fewer committed transfers than this and the test proved nothing.
const MIN_COMMITTED: usize = 30;
/// Deadline of the end-of-test phases (healing, resolving, auditing).
const SETTLE: Duration = Duration::from_secs(20);

#[test]
fn bank_transfers_under_chaos_4c() {
    let seed = std::env::var("TESSERA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen::<u64>());
    eprintln!("bank seed {seed} (set TESSERA_SEED to replay the fault schedule)");
    let mut rng = StdRng::seed_from_u64(seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let stores = Arc::new(Stores::start(STORES));
    let region_id = stores.cluster().get_region(b"").id;
    stores.cluster().wait_leader(region_id, SETTLE);
    let (client, transport) = txn_client(&stores, TTL);
    let config = BankConfig {
        accounts: ACCOUNTS,
        clients: CLIENTS,
        // The whole key space: the audit's range holds the bank's keys and nothing else.
        prefix: Some(String::new()),
        abandon_every: ABANDON_EVERY,
        abandon_stages: vec![
            Abandon::AfterPrewrite,
            Abandon::DuringCommit,
            Abandon::AfterPrimary,
        ],
        auditor_pause: Duration::from_millis(10),
        seed: rng.gen(),
        settle_timeout: SETTLE,
        ..BankConfig::default()
    };
    let bank = runtime
        .block_on(Bank::open(client, StoreRecords(transport.clone()), config))
        .unwrap_or_else(|e| panic!("seed {seed}: opening the accounts: {e}"));

    let done = AtomicBool::new(false);
    let chaos_seed = rng.gen();
    let (history, faults) = std::thread::scope(|s| {
        let (chaos_stores, done) = (&stores, &done);
        let chaos = s.spawn(move || run_chaos(chaos_stores, region_id, done, chaos_seed));
        let history = runtime.block_on(async {
            let work = bank.start();
            // The length of the experiment, not a wait for a condition.
            tokio::time::sleep(WORKLOAD).await;
            done.store(true, Ordering::SeqCst);
            work.stop().await
        });
        let faults = chaos.join().expect("the chaos thread panicked");
        (history, faults)
    });
    let history = history.unwrap_or_else(|e| panic!("seed {seed}: stopping the workload: {e}"));
    eprintln!("bank: faults: {}", faults.join(", "));

    // Heal everything (the chaos thread already did; this is the test's own guarantee).
    stores.cluster().clear_filters();
    let running = stores.running();
    for id in stores.cluster().store_ids() {
        if !running.contains(&id) {
            stores.restart(id);
        }
    }
    let report = runtime
        .block_on(bank.audit(history))
        .unwrap_or_else(|e| panic!("seed {seed}: settling and auditing: {e}"));
    eprintln!("{report}");
    eprintln!("bank: {} retried requests", transport.retries());
    assert!(report.ok(), "seed {seed}: {report}");
    assert!(
        report.committed >= MIN_COMMITTED,
        "seed {seed}: only {} transfers committed; the test proved little",
        report.committed
    );
    assert!(
        report.snapshots > 0,
        "seed {seed}: no snapshot read completed"
    );
}

/// Sleeps for `d`, or less if the workload ends first.
fn pause(done: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !done.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(10)));
    }
}

/// Injects one fault after another until `done`, healing in between; returns what it did.
///
/// Faults: a minority partitioned from the majority, a minority crashed and restarted, every
/// store crashed and restarted, a lossy network, or stalled replication (appends dropped for
/// longer than `command_timeout` while heartbeats keep the leader leading, so writes wait on
/// proposals whose outcome is unknown). Half the time the minority includes the leader the
/// scheduler last heard of, so that leadership moves. The seed fixes the schedule (kinds,
/// sizes, durations); which store leads at each step depends on timing.
fn run_chaos(stores: &Stores, region_id: u64, done: &AtomicBool, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let ids = stores.cluster().store_ids();
    let max_minority = (ids.len() - 1) / 2;
    let mut log = Vec::new();
    while !done.load(Ordering::SeqCst) {
        let kind = rng.gen_range(0..12);
        let size = rng.gen_range(1..=max_minority);
        let with_leader = rng.gen_bool(0.5);
        let lasts = Duration::from_millis(rng.gen_range(200..800));
        let heal = Duration::from_millis(rng.gen_range(100..400));
        let drop_seed = rng.gen();
        let mut pool = ids.clone();
        pool.shuffle(&mut rng);
        let leader = stores
            .cluster()
            .scheduler()
            .reported_leader(region_id)
            .map(|p| p.store_id);
        if let (true, Some(l)) = (with_leader, leader) {
            pool.retain(|&s| s != l);
            pool.insert(0, l);
        }
        let (minority, majority) = pool.split_at(size);
        match kind {
            0..=3 => {
                log.push(format!("partition {minority:?}|{majority:?} {lasts:?}"));
                let f: Arc<dyn Filter> = Arc::new(PartitionFilter::new(minority, majority));
                stores.cluster().add_filter(f.clone());
                pause(done, lasts);
                stores.cluster().remove_filter(&f);
            }
            4..=6 => {
                log.push(format!("crash {minority:?} {lasts:?}"));
                for &id in minority {
                    stores.stop(id);
                }
                pause(done, lasts);
                for &id in minority {
                    stores.restart(id);
                }
            }
            7 => {
                log.push("crash all".to_string());
                for &id in &ids {
                    stores.stop(id);
                }
                for &id in &ids {
                    stores.restart(id);
                }
            }
            8..=9 => {
                log.push(format!("lossy {lasts:?}"));
                let f: Arc<dyn Filter> = Arc::new(DropFilter::new(0.2, drop_seed));
                stores.cluster().add_filter(f.clone());
                pause(done, lasts);
                stores.cluster().remove_filter(&f);
            }
            _ => {
                let stall = Config::test().command_timeout + lasts;
                log.push(format!("appends stalled {stall:?}"));
                let f: Arc<dyn Filter> =
                    Arc::new(MessageTypeFilter::new(&[MessageType::MsgAppend]));
                stores.cluster().add_filter(f.clone());
                pause(done, stall);
                stores.cluster().remove_filter(&f);
            }
        }
        pause(done, heal);
    }
    log
}
