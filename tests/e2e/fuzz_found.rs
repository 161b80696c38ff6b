//! What `make fuzz` ([`crate::fuzz_store`]) found, each input replayed alone on a fresh
//! 3-store cluster: it used to take a store down or lose its data; now the store must refuse
//! it and keep serving ([`must_keep_serving`]).

use proto::eraftpb::MessageType;
use proto::kvrpcpb::{Context, RawPutRequest};
use proto::metapb;
use proto::tinykvpb::tiny_kv_client::TinyKvClient;

use crate::forge::{forge_raft, raft_msg};
use crate::hostile::send_raft;
use crate::procs::STORES;
use crate::survive::{cluster_with_writes, must_keep_serving, must_survive_restart_of_all};

/// A raw write whose context names term `u64::MAX`, to the leader. The leader refuses a command
/// of a term older than its own with one term of slack, and computed `term + 1`: an overflow
/// that panicked its raft worker and stopped the store (seed 1, within 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_term_u64_max_leaves_every_store_serving_2b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(5).await;
    let leader = topo.leader;
    let addr = format!("http://{}", cluster.stores[leader].grpc_addr());
    let mut client = TinyKvClient::connect(addr).await.expect("connect");
    let req = RawPutRequest {
        context: Some(Context {
            region_id: topo.region.id,
            region_epoch: topo.region.region_epoch,
            peer: Some(topo.peers[leader]),
            term: u64::MAX,
        }),
        key: b"fuzz-term".to_vec(),
        value: b"v".to_vec(),
        ttl: 0,
        cf: "default".to_string(),
    };
    let answer = client.raw_put(req).await;
    cluster.note(&format!("a raw put at term u64::MAX: {answer:?}"));
    must_keep_serving(&mut cluster, leader, leader, &mut acked).await;
}

/// Two messages to every store claiming its peer was removed from the region: a tombstone from
/// a membership one conf change newer, and a heartbeat for a newer peer of the region on that
/// store, also one conf change newer. Each is only its sender's word; believed, they destroyed
/// the region's peer on every store, and every acknowledged write with it (seed 1, within 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_removal_destroys_no_peer_3b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(20).await;
    let epoch = topo.region.region_epoch.unwrap_or_default();
    let newer = metapb::RegionEpoch {
        conf_ver: epoch.conf_ver + 1,
        ..epoch
    };
    for target in 0..STORES {
        let local = topo.peers[target];
        let from = topo.peers[(target + 1) % STORES];
        // Heartbeats at term 1, below every term the region reached: raft would ignore them.
        let heartbeat = || {
            let mut m = raft_msg(MessageType::MsgHeartbeat);
            m.set_term(1);
            m
        };
        let mut tombstone = forge_raft(&topo.region, &from, &local, heartbeat());
        tombstone.is_tombstone = true;
        tombstone.region_epoch = Some(newer);
        let replacement = metapb::Peer {
            id: local.id + 100,
            ..local
        };
        let mut replaced = forge_raft(&topo.region, &from, &replacement, heartbeat());
        replaced.region_epoch = Some(newer);
        let answer = send_raft(&cluster.stores[target], vec![tombstone, replaced]).await;
        cluster.note(&format!(
            "told {} its peer {} was removed (conf_ver {}): {answer:?}",
            cluster.stores[target].name, local.id, newer.conf_ver
        ));
    }
    must_keep_serving(&mut cluster, 0, topo.leader, &mut acked).await;

    // Whatever a store did in memory, its disk must still hold the region.
    must_survive_restart_of_all(&mut cluster, &acked).await;
}

/// A `MsgPropose` (term 0, as a follower forwards one) to the leader, with one entry of bytes
/// that are no command. Raft appends what a leader is proposed; once committed, every store
/// panicked applying an entry it could not decode, and again after each restart (seed 2, within
/// 20 s). A store proposes only where it leads, so no proposal travels between stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_proposal_leaves_every_store_serving_2b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(5).await;
    let leader = topo.leader;
    let from = topo.follower();
    let mut m = raft_msg(MessageType::MsgPropose);
    let mut e = proto::eraftpb::Entry::default();
    e.set_data(bytes::Bytes::from_static(b"\xff\xff not a command"));
    m.mut_entries().push(e);
    let msg = forge_raft(&topo.region, &topo.peers[from], &topo.peers[leader], m);
    let answer = send_raft(&cluster.stores[leader], vec![msg]).await;
    cluster.note(&format!("a forged proposal to the leader: {answer:?}"));
    must_keep_serving(&mut cluster, leader, leader, &mut acked).await;
}

/// A heartbeat at term 2^62 "from the leader" to a follower. Raft takes terms up to 2^62 from
/// the network (beyond, `term + 1` could overflow); the follower used to adopt it, the leader
/// stepped down on its answer, and every election after was at 2^62 + 1, which every peer
/// refused: the region never had a leader again. Messages now raise a node's term through a
/// budget refilled each tick (`raft/src/raft/step.rs`), so the group stays far below the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_term_at_limit_leaves_region_electable_2b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(5).await;
    let target = topo.follower();
    let mut m = raft_msg(MessageType::MsgHeartbeat);
    m.set_term(1 << 62);
    let from = &topo.peers[topo.leader];
    let msg = forge_raft(&topo.region, from, &topo.peers[target], m);
    let answer = send_raft(&cluster.stores[target], vec![msg]).await;
    cluster.note(&format!("a heartbeat at term 2^62: {answer:?}"));
    must_keep_serving(&mut cluster, target, topo.leader, &mut acked).await;
}
