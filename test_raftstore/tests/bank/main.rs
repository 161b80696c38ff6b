//! Stage 4C: Percolator transactions on the replicated raftstore keep a bank's books straight
//! under crashes and partitions.
//!
//! Clients move money between accounts in two-phase-commit transactions (some walk away after
//! the prewrite or after the primary's commit, as crashed clients do), readers check that every
//! snapshot adds up, and a chaos thread partitions and crash-restarts stores. At the end every
//! lock is resolved, each transfer whose client never learned its fate is decided by its
//! primary, and an audit of the MVCC records checks that exactly the committed transfers took
//! effect (see `audit`).

mod audit;
mod bank;
mod client;
mod races;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::eraftpb::MessageType;
use raftstore::Config;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use test_raftstore::{DropFilter, Filter, MessageTypeFilter, PartitionFilter};

use bank::{account, Outcome, Stats, ACCOUNTS, PREFIX};
use client::{Client, Status, Stores};

const STORES: usize = 5;
const CLIENTS: usize = 4;
const READERS: usize = 1;
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
    let began = Instant::now();

    let stores = Stores::start(STORES);
    let region_id = stores.cluster().get_region(b"").id;
    stores.cluster().wait_leader(region_id, SETTLE);
    let open_ts = bank::must_open_accounts(&stores);

    let done = AtomicBool::new(false);
    let stats = Stats::default();
    let client_seeds: Vec<u64> = (0..CLIENTS).map(|_| rng.gen()).collect();
    let chaos_seed = rng.gen();
    let (transfers, faults) = std::thread::scope(|s| {
        let (stores, done, stats) = (&stores, &done, &stats);
        let clients: Vec<_> = client_seeds
            .into_iter()
            .map(|seed| s.spawn(move || bank::run_client(stores, done, stats, seed)))
            .collect();
        let readers: Vec<_> = (0..READERS)
            .map(|_| s.spawn(move || bank::run_reader(stores, done, stats)))
            .collect();
        let chaos = s.spawn(move || run_chaos(stores, region_id, done, chaos_seed));
        // The length of the experiment, not a wait for a condition.
        std::thread::sleep(WORKLOAD);
        done.store(true, Ordering::SeqCst);
        let faults = chaos.join().expect("the chaos thread panicked");
        for r in readers {
            r.join().expect("a reader panicked");
        }
        let transfers: Vec<_> = clients
            .into_iter()
            .flat_map(|c| c.join().expect("a client panicked"))
            .collect();
        (transfers, faults)
    });
    eprintln!("bank: faults: {}", faults.join(", "));

    // Heal everything (the chaos thread already did; this is the test's own guarantee).
    stores.cluster().clear_filters();
    let running = stores.running();
    for id in stores.cluster().store_ids() {
        if !running.contains(&id) {
            stores.restart(id);
        }
    }
    let deadline = Instant::now() + SETTLE;
    let mut client = Client::new(&stores);
    // A read of everything at a fresh timestamp resolves every lock left behind: all
    // transactions started before it.
    let final_ts = stores.tso.next();
    let pairs = client
        .scan(PREFIX, ACCOUNTS as u32 + 1, final_ts, deadline)
        .unwrap_or_else(|e| panic!("seed {seed}: final read failed: {e}"));
    let balances = bank::check_total(&pairs, final_ts);
    let decided = decide_unknown(&mut client, &transfers, deadline, seed);
    let reader = client
        .snapshot(deadline)
        .unwrap_or_else(|e| panic!("seed {seed}: no snapshot for the audit: {e}"));
    let (summary, finals) = audit::audit(reader.as_ref(), open_ts, &transfers, &decided);
    assert_eq!(
        finals, balances,
        "seed {seed}: the audit's balances differ from a transactional read"
    );

    let count = |o: fn(&Outcome) -> bool| transfers.iter().filter(|t| o(&t.outcome)).count();
    let n = |c| Stats::get(c);
    eprintln!(
        "bank: {} transfers in {:?}: {} committed ({} without their client knowing), {} aborted",
        transfers.len(),
        began.elapsed(),
        summary.committed,
        summary.committed_unacknowledged,
        summary.aborted,
    );
    eprintln!(
        "bank: client view: {} committed, {} aborted ({} conflicts, {} rolled back by a \
         resolver), {} unknown, {} abandoned; {} primary locks vanished",
        count(|o| matches!(o, Outcome::Committed(_))),
        count(|o| *o == Outcome::Aborted),
        n(&stats.conflicts),
        n(&stats.rolled_back_under_us),
        count(|o| *o == Outcome::Unknown),
        transfers.iter().filter(|t| t.abandoned).count(),
        n(&stats.lock_not_found),
    );
    eprintln!(
        "bank: {} retried requests; resolve_lock calls: {} commits, {} rollbacks; {} snapshots balanced, {} timed \
         out; {} transfers could not read, {} found the account empty; final {balances:?}",
        n(&stats.retries),
        n(&stats.resolved_commits),
        n(&stats.resolved_rollbacks),
        n(&stats.snapshots),
        n(&stats.snapshot_timeouts),
        n(&stats.read_timeouts),
        n(&stats.empty),
    );
    assert!(
        summary.committed >= MIN_COMMITTED,
        "seed {seed}: only {} transfers committed; the test proved little",
        summary.committed
    );
    assert!(
        n(&stats.snapshots) > 0,
        "seed {seed}: no snapshot read completed"
    );
}

/// Asks the primary of every transfer whose client does not know its fate how it ended; the
/// expired ones are rolled back now.
fn decide_unknown(
    client: &mut Client<'_>,
    transfers: &[bank::Transfer],
    deadline: Instant,
    seed: u64,
) -> HashMap<u64, Outcome> {
    let mut decided = HashMap::new();
    for t in transfers.iter().filter(|t| t.outcome == Outcome::Unknown) {
        let status = client
            .check_status(&account(t.primary), t.start_ts, deadline)
            .unwrap_or_else(|e| panic!("seed {seed}: status of {t:?}: {e}"));
        let outcome = match status {
            Status::Committed(ts) => Outcome::Committed(ts),
            Status::RolledBack => Outcome::Aborted,
            // Every lock was resolved by the final read.
            Status::Alive(ttl) => panic!("seed {seed}: {t:?} is still locked (ttl {ttl})"),
        };
        decided.insert(t.start_ts, outcome);
    }
    decided
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
