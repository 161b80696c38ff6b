//! Forged raft messages sent straight to one store of a running 3-store cluster: each is one a
//! correct peer never sends, and each used to kill the receiving (or the forwarded-to) store's
//! raft worker while its process, gRPC port and `/health` stayed up. A store must refuse such
//! a message and keep serving; [`must_keep_serving`] checks that it does.
//!
//! ```text
//!   scheduler + 3 stores ─► 20 acknowledged writes ─► forged message(s) to one store
//!     ─► must_keep_serving(attacked): every store up, the cluster writes and reads with the
//!        attacked store in every quorum
//! ```

use proto::eraftpb::MessageType;

use crate::forge::{entry, forge_raft, raft_msg, FUTURE_TERM};
use crate::hostile::{send_raft, send_raft_batch};
use crate::procs::{Cluster, STORES};
use crate::survive::{cluster_with_writes, must_keep_serving};

/// Writes acknowledged before the attack: fewer than the store's log-GC count limit, so the
/// log still holds the region's first entries when the forged messages arrive.
const BEFORE: usize = 20;

/// Sends `msgs` to store `target` and notes how it answered (a store may refuse the stream or
/// take it and drop the messages: either is fine, the check that follows is what counts).
async fn attack(
    cluster: &Cluster,
    target: usize,
    what: &str,
    msgs: Vec<proto::raft_serverpb::RaftMessage>,
) {
    let answer = send_raft(&cluster.stores[target], msgs).await;
    cluster.note(&format!(
        "sent {what} to {}: {answer:?}",
        cluster.stores[target].name
    ));
}

/// A `MsgPropose` without entries, to a follower: it forwards proposals to its leader, so an
/// unchecked one reaches the leader's raft, which requires entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_empty_propose_leaves_every_store_serving_2b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(BEFORE).await;
    let target = topo.follower();
    let other = (target + 1) % STORES;
    let m = raft_msg(MessageType::MsgPropose);
    let msg = forge_raft(&topo.region, &topo.peers[other], &topo.peers[target], m);
    attack(&cluster, target, "an empty MsgPropose", vec![msg]).await;
    must_keep_serving(&mut cluster, target, topo.leader, &mut acked).await;
}

/// A `MsgReadIndex` without entries (the read's context travels in the first entry), to the
/// leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_read_index_without_entries_leaves_every_store_serving_2b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(BEFORE).await;
    let target = topo.leader;
    let from = topo.follower();
    let m = raft_msg(MessageType::MsgReadIndex);
    let msg = forge_raft(&topo.region, &topo.peers[from], &topo.peers[target], m);
    attack(
        &cluster,
        target,
        "a MsgReadIndex without entries",
        vec![msg],
    )
    .await;
    must_keep_serving(&mut cluster, target, topo.leader, &mut acked).await;
}

/// A `MsgAppend` from a "leader" of a later term whose previous index lies past the end of the
/// follower's log (term 0 there, which an index beyond the log also reports), carrying an entry
/// at index 6 — already committed with another term — instead of the entry after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_append_conflicting_with_committed_leaves_every_store_serving_2b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(BEFORE).await;
    let target = topo.follower();
    let mut m = raft_msg(MessageType::MsgAppend);
    m.set_term(FUTURE_TERM);
    m.set_index(1 << 20);
    m.set_log_term(0);
    m.mut_entries().push(entry(6, FUTURE_TERM));
    let msg = forge_raft(
        &topo.region,
        &topo.peers[topo.leader],
        &topo.peers[target],
        m,
    );
    attack(
        &cluster,
        target,
        "a MsgAppend past the log end conflicting with committed entries",
        vec![msg],
    )
    .await;
    must_keep_serving(&mut cluster, target, topo.leader, &mut acked).await;
}

/// A `MsgAppend` at term 0 (the term raft reserves for a node's own local messages, so no term
/// check stops it) past the end of the log, committing up to 2^40.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_append_with_term_zero_leaves_every_store_serving_2b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(BEFORE).await;
    let target = topo.follower();
    let mut m = raft_msg(MessageType::MsgAppend);
    m.set_term(0);
    m.set_index(1 << 40);
    m.set_log_term(0);
    m.set_commit(1 << 40);
    let msg = forge_raft(
        &topo.region,
        &topo.peers[topo.leader],
        &topo.peers[target],
        m,
    );
    attack(
        &cluster,
        target,
        "a MsgAppend at term 0 committing 2^40",
        vec![msg],
    )
    .await;
    must_keep_serving(&mut cluster, target, topo.leader, &mut acked).await;
}

/// `MsgRequestVote`s at term 0 with a log "ahead" of everyone's, to the leader, one from each
/// peer id of the region: whichever it voted for (itself) would be granted a vote whose
/// response carries term 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_vote_with_term_zero_leaves_every_store_serving_2b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(BEFORE).await;
    let target = topo.leader;
    let msgs = topo
        .peers
        .iter()
        .map(|from| {
            let mut m = raft_msg(MessageType::MsgRequestVote);
            m.set_term(0);
            m.set_index(1 << 40);
            m.set_log_term(1 << 40);
            forge_raft(&topo.region, from, &topo.peers[target], m)
        })
        .collect();
    attack(&cluster, target, "MsgRequestVotes at term 0", msgs).await;
    must_keep_serving(&mut cluster, target, topo.leader, &mut acked).await;
}

/// Forged messages of the tests above in one `BatchRaft` message, as stores send raft traffic
/// to each other, between two honest heartbeats: each forged one is refused on its own and the
/// stream, and the store, go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_messages_in_one_batch_leave_every_store_serving_2b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(BEFORE).await;
    let target = topo.follower();
    let other = (target + 1) % STORES;
    let (leader, to) = (&topo.peers[topo.leader], &topo.peers[target]);
    let mut heartbeat = raft_msg(MessageType::MsgHeartbeat);
    heartbeat.set_term(1);
    let propose = raft_msg(MessageType::MsgPropose);
    let mut append = raft_msg(MessageType::MsgAppend);
    append.set_term(0);
    append.set_index(1 << 40);
    append.set_commit(1 << 40);
    let msgs = vec![
        forge_raft(&topo.region, leader, to, heartbeat.clone()),
        forge_raft(&topo.region, &topo.peers[other], to, propose),
        forge_raft(&topo.region, leader, to, append),
        forge_raft(&topo.region, leader, to, heartbeat),
    ];
    let answer = send_raft_batch(&cluster.stores[target], msgs).await;
    assert!(
        answer.is_ok(),
        "the stream is taken, the forged messages dropped: {answer:?}"
    );
    must_keep_serving(&mut cluster, target, topo.leader, &mut acked).await;
}

/// The control: a heartbeat from an earlier term, which a correct store ignores (it answers
/// with its own term at most). The same check as above must pass, so a failure of the tests
/// above is the attack's doing, not the check's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_heartbeat_leaves_every_store_serving_2b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(BEFORE).await;
    let target = topo.follower();
    let mut m = raft_msg(MessageType::MsgHeartbeat);
    m.set_term(1);
    let msg = forge_raft(
        &topo.region,
        &topo.peers[topo.leader],
        &topo.peers[target],
        m,
    );
    attack(&cluster, target, "a heartbeat at term 1", vec![msg]).await;
    must_keep_serving(&mut cluster, target, topo.leader, &mut acked).await;
}
