//! When a leader tells its followers about a commit. A plain write's commit index waits for the
//! next append or heartbeat (raft's `skip_bcast_commit`): the leader sends no extra append, and
//! the followers no extra answer, for every write. A split's commit goes out at once, since the
//! followers create the new region's peers when they apply it.
//!
//! The transport's filters see each message when the raft worker sends it, and a leader sends the
//! appends a commit triggers before it applies the committed entry and answers its proposer; so
//! once a write or split has been answered, every append its commit caused has been seen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::eraftpb::{self, MessageType};
use proto::raft_serverpb::RaftMessage;
use protobuf::Message as _;
use raftstore::Config;
use test_raftstore::{Cluster, Filter, FilterAction};

const WAIT: Duration = Duration::from_secs(20);

/// An append a leader sent: to which store, the commit index it carried, and the index of its
/// last entry (0 when it carried none).
#[derive(Debug, Clone, Copy)]
struct Append {
    region_id: u64,
    to_store: u64,
    commit: u64,
    last_entry: u64,
}

/// Records every append and drops heartbeat answers: a leader answers a heartbeat answer from
/// a follower that lags with an append, which carries the commit index like any other.
#[derive(Default)]
struct Appends(Mutex<Vec<Append>>);

impl Appends {
    fn taken(&self) -> Vec<Append> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Filter for Appends {
    fn before(&self, msg: &RaftMessage) -> FilterAction {
        if let Ok(m) = eraftpb::Message::parse_from_bytes(&msg.message) {
            if m.get_msg_type() == MessageType::MsgHeartbeatResponse {
                return FilterAction::Drop;
            }
            if m.get_msg_type() == MessageType::MsgAppend {
                self.0.lock().unwrap().push(Append {
                    region_id: msg.region_id,
                    to_store: msg.to_peer.as_ref().map_or(0, |p| p.store_id),
                    commit: m.commit,
                    last_entry: m.get_entries().last().map_or(0, |e| e.index),
                });
            }
        }
        FilterAction::Pass
    }
}

/// The index of the last entry the appends of `region_id` carried.
fn last_sent(appends: &[Append], region_id: u64) -> u64 {
    appends
        .iter()
        .filter(|a| a.region_id == region_id)
        .map(|a| a.last_entry)
        .max()
        .expect("the leader sent appends")
}

#[test]
fn a_write_commit_waits_but_a_split_commit_goes_out_at_once_3b() {
    let mut cluster = Cluster::new(3, Config::test());
    cluster.start();
    let region = cluster.get_region(b"");
    let leader = cluster.wait_leader(region.id, WAIT);
    cluster.must_put(b"a", b"1");
    let followers: Vec<u64> = cluster
        .store_ids()
        .into_iter()
        .filter(|s| *s != leader.store_id)
        .collect();
    let appends = Arc::new(Appends::default());
    cluster.add_filter(appends.clone());

    // A plain write: its entry goes out, its commit does not follow in an append of its own.
    cluster.must_put(b"b", b"2");
    let seen = appends.taken();
    let put_index = last_sent(&seen, region.id);
    assert!(
        !seen
            .iter()
            .any(|a| a.region_id == region.id && a.commit >= put_index),
        "a write's commit index was broadcast: {seen:?}"
    );

    // A split: every follower gets an append with its commit index before it is answered.
    cluster.must_split(region.id, b"m");
    let seen = appends.taken();
    let split_index = last_sent(&seen, region.id);
    for store in followers {
        assert!(
            seen.iter().any(|a| a.region_id == region.id
                && a.to_store == store
                && a.commit >= split_index),
            "store {store} was not sent the split's commit index {split_index}: {seen:?}"
        );
    }
    cluster.clear_filters();
    assert_eq!(cluster.must_get(b"b").as_deref(), Some(&b"2"[..]));
}
