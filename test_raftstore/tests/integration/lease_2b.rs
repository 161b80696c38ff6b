//! Reads on the leader's lease: served with no ReadIndex round while the lease runs, and never
//! stale: not from a leader cut off from the rest (its lease runs out before another leader can
//! be elected), nor from one that handed leadership over (a transfer voids its lease).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kv::{Cf, Storage as _};
use proto::eraftpb::{self, MessageType};
use proto::kvrpcpb::Context;
use proto::raft_cmdpb::TransferLeaderRequest;
use proto::raft_cmdpb::{AdminCmdType, AdminRequest, RaftCmdRequest, RaftRequestHeader};
use proto::raft_serverpb::RaftMessage;
use protobuf::Message as _;
use raftstore::Config;
use test_raftstore::{get_req, put_req, Cluster, Filter, FilterAction, IsolationFilter};

const WAIT: Duration = Duration::from_secs(10);

/// 100 ms ticks and an election timeout of 10: a lease of 810 ms, long enough that a stale read
/// would have time to happen if the lease were wrong.
fn config(lease_read: bool) -> Config {
    Config {
        raft_base_tick_interval: Duration::from_millis(100),
        lease_read,
        ..Config::test()
    }
}

/// Counts the heartbeats that carry a ReadIndex context (the quorum round of a read).
#[derive(Default)]
struct ReadIndexRounds(AtomicU64);

impl Filter for ReadIndexRounds {
    fn before(&self, msg: &RaftMessage) -> FilterAction {
        if let Ok(m) = eraftpb::Message::parse_from_bytes(&msg.message) {
            if m.get_msg_type() == MessageType::MsgHeartbeat && !m.get_context().is_empty() {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        FilterAction::Pass
    }
}

/// Drops every message to one store: it still sends, but hears nothing.
struct Deafen(u64);

impl Filter for Deafen {
    fn before(&self, msg: &RaftMessage) -> FilterAction {
        if msg.to_peer.as_ref().is_some_and(|p| p.store_id == self.0) {
            FilterAction::Drop
        } else {
            FilterAction::Pass
        }
    }
}

/// The value a read of `key` straight on `store` returns, if it answers without an error.
fn read_on(cluster: &Cluster, store: u64, key: &[u8]) -> Option<Vec<u8>> {
    let resp = cluster
        .call_on_store(store, key, vec![get_req(key)], Duration::from_millis(500))
        .ok()?;
    if resp
        .response
        .header
        .as_ref()
        .and_then(|h| h.error.as_ref())
        .is_some()
    {
        return None;
    }
    resp.response
        .responses
        .first()
        .and_then(|r| r.get.as_ref())
        .map(|g| g.value.clone())
}

/// A raw get of `key` through `store`'s `RaftStorage::get_async` (the client service's path,
/// answered on this thread while the leader's lease runs); `None` if it fails.
fn storage_get(cluster: &Cluster, store: u64, key: &[u8]) -> Option<Option<Vec<u8>>> {
    let region = cluster.get_region(key);
    let peer = region.peers.iter().find(|p| p.store_id == store).copied();
    let ctx = Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer,
        term: 0,
    };
    let storage = Arc::new(cluster.raft_storage(store)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .ok()?;
    let get = storage.get_async(ctx, Cf::Default, key.to_vec());
    rt.block_on(async { tokio::time::timeout(Duration::from_millis(500), get).await })
        .ok()?
        .ok()
}

#[test]
fn storage_reads_on_the_lease_see_every_acknowledged_write_2b() {
    let mut cluster = Cluster::new(3, config(true));
    cluster.start();
    cluster.must_put(b"k", b"0");
    let leader = cluster.wait_leader(cluster.get_region(b"k").id, WAIT);
    for i in 1..=200u32 {
        let v = i.to_string().into_bytes();
        let put = cluster.call_on_store(leader.store_id, b"k", vec![put_req(b"k", &v)], WAIT);
        let put = put.expect("the leader answers");
        assert!(
            put.response.header.and_then(|h| h.error).is_none(),
            "put {i} acknowledged"
        );
        assert_eq!(
            storage_get(&cluster, leader.store_id, b"k"),
            Some(Some(v)),
            "a read after write {i} was acknowledged"
        );
    }
}

fn reads_need_rounds(lease_read: bool) -> u64 {
    let mut cluster = Cluster::new(3, config(lease_read));
    cluster.start();
    cluster.must_put(b"k", b"v1");
    let leader = cluster.wait_leader(cluster.get_region(b"k").id, WAIT);
    // The first read confirms leadership with a quorum (and starts the lease).
    assert_eq!(
        read_on(&cluster, leader.store_id, b"k").as_deref(),
        Some(&b"v1"[..])
    );
    let rounds = Arc::new(ReadIndexRounds::default());
    cluster.add_filter(rounds.clone());
    for _ in 0..20 {
        assert_eq!(
            read_on(&cluster, leader.store_id, b"k").as_deref(),
            Some(&b"v1"[..])
        );
    }
    rounds.0.load(Ordering::SeqCst)
}

#[test]
fn reads_in_the_lease_take_no_read_index_round_2b() {
    // 20 reads in quick succession: well inside one lease of 810 ms (a slow machine may see
    // it run out once, and renew it with one round).
    let with_lease = reads_need_rounds(true);
    assert!(
        with_lease <= 2 * 2,
        "{with_lease} ReadIndex heartbeats for 20 lease reads"
    );
    let without = reads_need_rounds(false);
    assert!(
        without >= 20 * 2,
        "{without} ReadIndex heartbeats for 20 reads without a lease (one round to 2 peers each)"
    );
}

#[test]
fn a_cut_off_leader_serves_no_stale_read_2b() {
    let mut cluster = Cluster::new(3, config(true));
    cluster.start();
    cluster.must_put(b"k", b"v1");
    let region_id = cluster.get_region(b"k").id;
    let old = cluster.wait_leader(region_id, WAIT);
    assert_eq!(
        read_on(&cluster, old.store_id, b"k").as_deref(),
        Some(&b"v1"[..])
    );
    // Cut off right after a read renewed its lease.
    cluster.add_filter(Arc::new(IsolationFilter(old.store_id)));
    let new = cluster.wait_leader_other_than(region_id, old.store_id, WAIT);
    let put = cluster.call_on_store(new.store_id, b"k", vec![put_req(b"k", b"v2")], WAIT);
    let put = put.expect("the new leader answers the write");
    assert!(
        put.response.header.and_then(|h| h.error).is_none(),
        "the write is acknowledged"
    );
    for _ in 0..10 {
        let got = read_on(&cluster, old.store_id, b"k");
        assert_ne!(
            got.as_deref(),
            Some(&b"v1"[..]),
            "the cut-off old leader read stale"
        );
        let got = storage_get(&cluster, old.store_id, b"k").flatten();
        assert_ne!(
            got.as_deref(),
            Some(&b"v1"[..]),
            "the cut-off leader's storage read stale"
        );
    }
}

#[test]
fn a_leader_that_transferred_serves_no_stale_read_2b() {
    let mut cluster = Cluster::new(3, config(true));
    cluster.start();
    cluster.must_put(b"k", b"v1");
    let region_id = cluster.get_region(b"k").id;
    let old = cluster.wait_leader(region_id, WAIT);
    let region = cluster.get_region(b"k");
    let target = *region
        .peers
        .iter()
        .find(|p| p.store_id != old.store_id)
        .expect("a follower");
    assert_eq!(
        read_on(&cluster, old.store_id, b"k").as_deref(),
        Some(&b"v1"[..])
    );
    // The old leader hears nothing from now on, so it never learns that the target took over;
    // its lease, just renewed, would still run.
    cluster.add_filter(Arc::new(Deafen(old.store_id)));
    let transfer = RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: region.id,
            peer: Some(old),
            region_epoch: region.region_epoch,
            term: 0,
        }),
        requests: Vec::new(),
        admin_request: Some(AdminRequest {
            cmd_type: AdminCmdType::TransferLeader as i32,
            transfer_leader: Some(TransferLeaderRequest { peer: Some(target) }),
            ..Default::default()
        }),
    };
    cluster
        .call_raw(old.store_id, transfer, WAIT)
        .expect("the transfer is accepted");
    let put = loop {
        let put = cluster.call_on_store(target.store_id, b"k", vec![put_req(b"k", b"v2")], WAIT);
        let put = put.expect("the target answers");
        match put.response.header.as_ref().and_then(|h| h.error.as_ref()) {
            Some(e) if e.not_leader.is_some() => std::thread::sleep(Duration::from_millis(10)),
            _ => break put,
        }
    };
    assert!(
        put.response.header.and_then(|h| h.error).is_none(),
        "the target leads and writes"
    );
    let got = read_on(&cluster, old.store_id, b"k");
    assert_ne!(
        got.as_deref(),
        Some(&b"v1"[..]),
        "the old leader read stale after its transfer"
    );
    let got = storage_get(&cluster, old.store_id, b"k").flatten();
    assert_ne!(
        got.as_deref(),
        Some(&b"v1"[..]),
        "the old leader's storage read stale"
    );
}
