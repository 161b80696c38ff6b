//! Starting nodes through the scheduler client, and the store creating peers for regions it
//! hears of.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::{Cf, Engines, Modify, Storage as _};
use proto::eraftpb::{self, MessageType};
use proto::kvrpcpb::Context;
use proto::metapb;
use proto::raft_serverpb::RaftMessage;
use protobuf::Message as _;
use raftstore::{Config, Node};
use scheduler_client::SchedulerClient as _;
use test_raftstore::{MockSchedulerClient, MockTransport};

const WAIT: Duration = Duration::from_secs(10);

fn start(dir: &std::path::Path, sched: &Arc<MockSchedulerClient>, t: &MockTransport) -> Node {
    let engines = Engines::open(dir).unwrap();
    let snap_mgr = snap::SnapManager::open(dir.join("snap"), Default::default()).unwrap();
    let node = Node::start(
        Config::test(),
        engines,
        snap_mgr.clone(),
        Arc::new(t.clone()),
        sched.clone(),
        raftstore::StoreAddresses {
            client: "127.0.0.1:0".to_string(),
            peer: "127.0.0.1:0".to_string(),
            status: String::new(),
        },
    )
    .unwrap();
    t.register(node.store_id(), node.raftstore().router().clone(), snap_mgr);
    node
}

fn write_until_ok(node: &Node, key: &[u8], value: &[u8]) {
    let storage = node.raftstore().storage();
    let deadline = Instant::now() + WAIT;
    let put = || Modify::Put {
        cf: Cf::Default,
        key: key.to_vec(),
        value: value.to_vec(),
    };
    // The single peer elects itself after an election timeout; until then writes are refused.
    while let Err(e) = storage.write(&Context::default(), vec![put()]) {
        assert!(Instant::now() < deadline, "no write accepted: {e}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn first_node_bootstraps_the_cluster_and_serves_2b() {
    let dir = tempfile::tempdir().unwrap();
    let sched = Arc::new(MockSchedulerClient::new(1));
    let t = MockTransport::new();
    let mut node = start(dir.path(), &sched, &t);
    assert!(sched.is_bootstrapped().unwrap());
    let (region, _) = sched.get_region(b"any").unwrap();
    assert_eq!(region.peers.len(), 1);
    assert_eq!(region.peers[0].store_id, node.store_id());
    assert_eq!(
        region.region_epoch,
        Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1
        })
    );
    write_until_ok(&node, b"k", b"v");
    let reader = node
        .raftstore()
        .storage()
        .reader(&Context::default())
        .unwrap();
    assert_eq!(
        reader.get_cf(Cf::Default, b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let store_id = node.store_id();
    // The reader's snapshot keeps the engine open; a restart needs it closed.
    drop(reader);
    node.stop();
    drop(node);

    // Restarting keeps the identity and the data; it does not bootstrap again.
    let mut node = start(dir.path(), &sched, &t);
    assert_eq!(node.store_id(), store_id);
    write_until_ok(&node, b"k2", b"v2");
    let reader = node
        .raftstore()
        .storage()
        .reader(&Context::default())
        .unwrap();
    assert_eq!(
        reader.get_cf(Cf::Default, b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    node.stop();

    // A second store joins an already bootstrapped cluster with no region of its own.
    let dir2 = tempfile::tempdir().unwrap();
    let mut other = start(dir2.path(), &sched, &t);
    assert_ne!(other.store_id(), store_id);
    let meta = other
        .raftstore()
        .store_meta()
        .read()
        .unwrap()
        .region_count();
    assert_eq!(meta, 0);
    assert_eq!(
        sched.get_store(other.store_id()).unwrap().id,
        other.store_id()
    );
    other.stop();
}

#[test]
fn interrupted_bootstrap_resumes_from_the_prepared_region_2b() {
    let dir = tempfile::tempdir().unwrap();
    let sched = Arc::new(MockSchedulerClient::new(1));
    {
        // A crash right after preparing: ident and prepared region on disk, scheduler unaware.
        let engines = Engines::open(dir.path()).unwrap();
        let store_id = sched.alloc_id().unwrap();
        raftstore::bootstrap::bootstrap_store(&engines, 1, store_id).unwrap();
        let region = raftstore::bootstrap::new_first_region(store_id, 77, 78);
        raftstore::bootstrap::prepare_bootstrap_cluster(&engines, &region).unwrap();
    }
    let t = MockTransport::new();
    let mut node = start(dir.path(), &sched, &t);
    let (region, _) = sched.get_region(b"").unwrap();
    assert_eq!(
        region.id, 77,
        "the prepared region was bootstrapped, not a new one"
    );
    write_until_ok(&node, b"k", b"v");
    node.stop();
}

fn raft_message(region_id: u64, from: (u64, u64), to: (u64, u64), ty: MessageType) -> RaftMessage {
    let mut m = eraftpb::Message::default();
    m.set_msg_type(ty);
    m.from = from.0;
    m.to = to.0;
    m.term = 6;
    RaftMessage {
        region_id,
        from_peer: Some(metapb::Peer {
            id: from.0,
            store_id: from.1,
            role: 0,
        }),
        to_peer: Some(metapb::Peer {
            id: to.0,
            store_id: to.1,
            role: 0,
        }),
        message: m.write_to_bytes().unwrap(),
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 2,
            version: 1,
        }),
        start_key: b"zzz".to_vec(),
        end_key: vec![],
        is_tombstone: false,
    }
}

#[test]
fn store_creates_peers_only_for_messages_that_may_create_them_2b() {
    let sched = Arc::new(MockSchedulerClient::new(1));
    let t = MockTransport::new();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut first = start(d1.path(), &sched, &t);
    // A store that joined the cluster and hosts nothing yet.
    let mut fresh = start(d2.path(), &sched, &t);
    let store = fresh.store_id();
    let router = fresh.raftstore().router().clone();
    let send = |region_id, to_store, ty| {
        router
            .send_raft_message(raft_message(region_id, (900, 99), (901, to_store), ty))
            .unwrap()
    };
    // A response, and a message addressed to another store, cannot create a peer.
    send(500, store, MessageType::MsgAppendResponse);
    send(502, store + 100, MessageType::MsgHeartbeat);
    // A leader's heartbeat for a region new to this store does.
    send(501, store, MessageType::MsgHeartbeat);
    let deadline = Instant::now() + WAIT;
    while !router.has_region(501) {
        assert!(Instant::now() < deadline, "no peer created for region 501");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The store mailbox is handled in order, so the earlier messages were judged already.
    assert!(!router.has_region(500), "a response created a peer");
    assert!(
        !router.has_region(502),
        "a message for another store created a peer"
    );
    let meta = fresh.raftstore().store_meta().read().unwrap();
    let created = meta.region(501).expect("recorded in the store meta");
    assert!(
        created.peers.is_empty(),
        "a created peer knows nothing until a snapshot"
    );
    drop(meta);
    // The first store's region covers every key: a new region overlapping it is refused there.
    // A write answered afterwards proves the store mailbox was handled (notifications are FIFO
    // and the store mailbox goes first in a batch).
    let first_router = first.raftstore().router().clone();
    first_router
        .send_raft_message(raft_message(
            503,
            (902, 99),
            (903, first.store_id()),
            MessageType::MsgHeartbeat,
        ))
        .unwrap();
    write_until_ok(&first, b"probe", b"1");
    assert!(
        !first_router.has_region(503),
        "an overlapping region created a peer"
    );
    fresh.stop();
    first.stop();
}
