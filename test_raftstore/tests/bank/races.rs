//! Deterministic reproductions of races the bank test can only hit by chance. The transaction
//! client (over the stores' transport) sets the scene; the commands whose timing matters go to
//! a store's `TxnApi` directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use kv::mvcc::key::encode_key;
use kv::mvcc::{Write, WriteKind};
use kv::txn::testkit::RequestBuilder;
use kv::{Cf, Modify, Storage as _};
use proto::eraftpb::MessageType;
use proto::kvrpcpb::{Action, Context};
use raftstore::Config;
use tessera_client::{TxnClient, TxnStatus};
use test_raftstore::{MessageTypeFilter, PartitionFilter};
use tokio::runtime::Runtime;

use crate::stores::{txn_client, Stores};
use crate::transport::StoreTransport;

const WAIT: Duration = Duration::from_secs(10);

/// A runtime for the transaction client.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Receives from `rx`, panicking with `what` if nothing arrives by `WAIT`.
fn must_recv<T>(rx: &Receiver<T>, what: &str) -> T {
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("{what}: nothing within {WAIT:?} ({e})"))
}

/// Asserts that nothing arrives on `rx` for `d`: here a timeout is the expected outcome, not a
/// synchronisation by sleeping.
fn must_stay_silent<T: std::fmt::Debug>(rx: &Receiver<T>, d: Duration, what: &str) {
    match rx.recv_timeout(d) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("{what}: expected nothing for {d:?}, got {other:?}"),
    }
}

/// A write whose raft proposal outlives `command_timeout` keeps its latches until the proposal
/// is decided, so the next command on the key waits for it instead of deciding on a snapshot
/// that lacks it.
///
/// Here: the commit of a transaction's primary is proposed while appends cannot reach the
/// followers (heartbeats can, so the leader keeps leading and serves ReadIndex reads). The lock's
/// TTL has run out, so a resolver's check_txn_status on the same key would roll it back if it
/// read the key before the commit lands. Before the fix the commit was answered `Unavailable`
/// after `command_timeout` and released its latch; the rollback then ran, and when appends
/// flowed again both entries committed: a committed put whose value the rollback deleted, plus
/// a rollback record of the same transaction. Now the commit blocks past `command_timeout`,
/// the check waits for the latch without writing, and once appends flow the commit lands and
/// the check reports it committed.
#[test]
fn timed_out_commit_then_rollback_of_the_same_lock_4c() {
    let stores = Arc::new(Stores::start(3));
    let region_id = stores.cluster().get_region(b"").id;
    stores.cluster().wait_leader(region_id, WAIT);
    let rt = runtime();
    let (client, transport) = txn_client(&stores, Duration::from_millis(100));
    let key = b"k".to_vec();
    let mut txn = rt.block_on(client.begin()).expect("a start timestamp");
    txn.put(&key, b"v");
    // Locked, and left so: this test commits it through the API.
    let start_ts = rt.block_on(txn.prewrite()).expect("prewrite").start_ts();
    let leader = stores.cluster().wait_leader(region_id, WAIT).store_id;
    // A clone shares the store's latch table; its hook reports every batch a command is about
    // to write.
    let (batch_tx, batches) = crossbeam_channel::unbounded::<Vec<Modify>>();
    let api = stores
        .api(leader)
        .expect("the leader runs")
        .with_write_hook(Arc::new(move |_, batch| {
            let _ = batch_tx.send(batch.to_vec());
        }));
    let req = RequestBuilder::default();

    stores
        .cluster()
        .add_filter(Arc::new(MessageTypeFilter::new(&[MessageType::MsgAppend])));
    let commit_ts = stores.tso.next();
    let (commit_tx, commit_done) = crossbeam_channel::bounded(1);
    let commit_req = req.commit(start_ts, commit_ts, std::slice::from_ref(&key));
    let commit_api = api.clone();
    std::thread::spawn(move || {
        let _ = commit_tx.send(commit_api.commit(&commit_req));
    });
    let commit_batch = must_recv(&batches, "the commit's batch");
    assert!(
        !commit_batch.is_empty(),
        "the commit of a locked key writes"
    );

    // The lock's TTL (100 ms) has long run out: checked now, the transaction would be rolled
    // back. The check must wait for the commit's latch.
    let (status_tx, status_done) = crossbeam_channel::bounded(1);
    let status_req = req.check_txn_status(&key, start_ts, stores.tso.next());
    let status_api = api.clone();
    std::thread::spawn(move || {
        let _ = status_tx.send(status_api.check_txn_status(&status_req));
    });
    // Twice the command timeout: the commit used to give up after one.
    let outlive = Config::test().command_timeout * 2;
    let early = match commit_done.recv_timeout(outlive) {
        Err(RecvTimeoutError::Timeout) => None,
        other => Some(other.expect("the commit thread answers")),
    };
    if early.is_none() {
        must_stay_silent(
            &status_done,
            Duration::ZERO,
            "check_txn_status behind the commit",
        );
        must_stay_silent(&batches, Duration::ZERO, "writes behind the commit");
        assert_eq!(api.latches().held_count(), 1, "the commit holds its latch");
    }
    stores.cluster().clear_filters();

    let commit = early.unwrap_or_else(|| must_recv(&commit_done, "the commit once appends flow"));
    let commit =
        commit.unwrap_or_else(|e| panic!("the commit gave up while it could still land: {e}"));
    let status = must_recv(&status_done, "check_txn_status once the commit is done")
        .expect("check_txn_status");
    assert!(commit.error.is_none(), "no key error: {commit:?}");
    if commit.region_error.is_none() && status.region_error.is_none() {
        assert_eq!(
            (status.commit_version, status.lock_ttl, status.action()),
            (commit_ts, 0, Action::NoAction),
            "check_txn_status sees the commit and rolls nothing back: {status:?}"
        );
        let status_batch = must_recv(&batches, "check_txn_status's batch");
        assert!(
            status_batch.is_empty(),
            "check_txn_status of a committed transaction writes nothing: {status_batch:?}"
        );
    } else {
        // The raft worker was starved long enough for an election (2 shared cores): the
        // commands met another leader, which proves nothing about latches but must still
        // leave the transaction decided once.
        eprintln!("leadership moved: commit {commit:?}, check_txn_status {status:?}");
    }
    assert_eq!(api.latches().held_count(), 0, "every latch is released");
    let committed = commit.region_error.is_none();
    let decided = Decided {
        start_ts,
        commit_ts,
        must_commit: committed,
    };
    assert_decided_once(&rt, &client, &transport, &key, decided);
}

/// A transaction of the race, and whether it must have committed.
struct Decided {
    start_ts: u64,
    commit_ts: u64,
    must_commit: bool,
}

/// Asserts that the transaction at `start_ts` on `key` is either committed at `commit_ts` with
/// its value, or rolled back, but not both; and committed if `must_commit`.
fn assert_decided_once(
    rt: &Runtime,
    client: &TxnClient,
    transport: &StoreTransport,
    key: &[u8],
    decided: Decided,
) {
    let Decided {
        start_ts,
        commit_ts,
        must_commit,
    } = decided;
    // The primary decides: rolls back the lock if the commit never landed.
    let status = rt
        .block_on(client.check_status(key, start_ts))
        .expect("the transaction's status");
    // Every command was answered after applying on the leader: a snapshot there has it all.
    let reader = transport
        .snapshot(Instant::now() + WAIT)
        .expect("a snapshot");
    let put = reader
        .get_cf(Cf::Write, &encode_key(key, commit_ts))
        .unwrap()
        .map(|b| Write::from_bytes(&b).unwrap());
    let rollback = reader
        .get_cf(Cf::Write, &encode_key(key, start_ts))
        .unwrap()
        .map(|b| Write::from_bytes(&b).unwrap());
    let value = reader
        .get_cf(Cf::Default, &encode_key(key, start_ts))
        .unwrap();
    let committed = put.is_some_and(|w| w.kind == WriteKind::Put && w.start_ts == start_ts);
    let rolled_back = rollback.is_some_and(|w| w.kind == WriteKind::Rollback);
    assert!(
        committed != rolled_back,
        "the transaction at {start_ts} must be either committed (at {commit_ts}) or rolled \
         back: write@commit_ts {put:?}, write@start_ts {rollback:?}, value {value:?}"
    );
    assert!(
        committed || !must_commit,
        "the acknowledged commit at {commit_ts} is lost: status {status:?}"
    );
    if committed {
        assert_eq!(status, TxnStatus::Committed(commit_ts));
        assert_eq!(value.as_deref(), Some(&b"v"[..]), "the committed value");
        let read = rt
            .block_on(async { client.begin().await?.get(key).await })
            .expect("a transactional read");
        assert_eq!(read.as_deref(), Some(&b"v"[..]));
    } else {
        assert_eq!(status, TxnStatus::RolledBack);
    }
}

/// A write proposed by a leader that then loses its leadership is answered once another
/// leader's entries overwrite it, even if their log never grows as far as its index.
///
/// Here: the leader is cut off right after proposing three writes (indexes i, i+1, i+2 of its
/// term); the others elect a new leader, which appends only its empty entry at i. Once the
/// partition heals, the old leader's log is replaced and its proposal at i is answered
/// `StaleCommand`, but those at i+1 and i+2 wait until the region's log reaches their indexes,
/// which without traffic is never. Since writes wait for their outcome without a deadline,
/// their callers (and a transaction's latches) wait as long.
///
/// `raftstore/src/peer/apply.rs`, `take_proposal`, once answered only proposals at indexes up
/// to the applied one. Applying an entry of term T proves that every pending proposal of a
/// lower term was overwritten (terms never decrease along a log), whatever its index, as TiKV's
/// `find_pending` does; the same rule answers the old proposals that then sit, out of index
/// order, in front of the ones a re-elected leader makes in its new term.
#[test]
fn deposed_leader_answers_overwritten_proposals_4c() {
    let stores = Stores::start(3);
    let region_id = stores.cluster().get_region(b"").id;
    let old = stores.cluster().wait_leader(region_id, WAIT).store_id;
    let storage = stores.cluster().raft_storage(old).expect("the leader runs");
    let others: Vec<u64> = stores
        .cluster()
        .store_ids()
        .into_iter()
        .filter(|&s| s != old)
        .collect();
    stores
        .cluster()
        .add_filter(Arc::new(PartitionFilter::new(&[old], &others)));
    let (tx, answers) = crossbeam_channel::unbounded();
    for key in [&b"a"[..], b"b", b"c"] {
        let (storage, tx) = (storage.clone(), tx.clone());
        std::thread::spawn(move || {
            let put = Modify::Put {
                cf: Cf::Default,
                key: key.to_vec(),
                value: b"x".to_vec(),
            };
            let _ = tx.send((key, storage.write(&Context::default(), vec![put])));
        });
    }
    stores
        .cluster()
        .wait_leader_other_than(region_id, old, WAIT);
    stores.cluster().clear_filters();
    for _ in 0..3 {
        let (key, answer) = must_recv(&answers, "a write proposed by the deposed leader");
        assert!(
            matches!(answer, Err(kv::Error::Region(_))),
            "the write of {key:?} was overwritten, so it fails with a region error: {answer:?}"
        );
    }
}
