//! A forged raft message naming a newer peer of a region on the receiving store. A store that
//! sees a message for a peer of its own with a larger id than its local peer may conclude the
//! local peer was removed and replaced; acting on that without checking the message's region
//! epoch against its own lets anyone who can send one message per store destroy a region and
//! its data everywhere. Here the message says nothing else new (same epoch, same range), so no
//! store may destroy its peer.
//!
//! ```text
//!   3 stores ─► 20 acknowledged writes ─► to every store: to_peer = (its store, local id + 1)
//!     ─► must_keep_serving ─► kill -9 and restart every store ─► every acknowledged key reads back
//! ```

use proto::eraftpb::MessageType;
use proto::metapb;

use crate::forge::{forge_raft, raft_msg};
use crate::hostile::send_raft;
use crate::procs::STORES;
use crate::survive::{cluster_with_writes, must_keep_serving, must_survive_restart_of_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_larger_peer_id_destroys_no_peer_3b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(20).await;

    for target in 0..STORES {
        let local = &topo.peers[target];
        let newer = metapb::Peer {
            id: local.id + 1,
            ..*local
        };
        // A heartbeat from another member at term 1, below every term the region reached:
        // were it stepped, raft would ignore it. Only the peer id it is addressed to is new.
        let from = &topo.peers[(target + 1) % STORES];
        let mut m = raft_msg(MessageType::MsgHeartbeat);
        m.set_term(1);
        let msg = forge_raft(&topo.region, from, &newer, m);
        let answer = send_raft(&cluster.stores[target], vec![msg]).await;
        cluster.note(&format!(
            "sent {} a message for peer {} (local {}): {answer:?}",
            cluster.stores[target].name, newer.id, local.id
        ));
    }
    must_keep_serving(&mut cluster, 0, topo.leader, &mut acked).await;

    // Whatever a store did in memory, its disk must still hold the region.
    must_survive_restart_of_all(&mut cluster, &acked).await;
    acked
        .must_write(&cluster, 5, "after restarting every store")
        .await;
}
