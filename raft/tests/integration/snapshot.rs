//! Snapshots (§7): catching up a lagging follower whose entries were compacted,
//! the Snapshot progress state and `report_snapshot`, installing and ignoring
//! snapshots, and `MemStorage`'s compaction contract.

use raft::eraftpb::{MessageType, Snapshot};
use raft::{Error, MemStorage, ProgressState, SnapshotStatus, StateRole, Storage, StorageError};

use crate::network::{msg, Network};
use crate::node::{conf_state, entry, Node};

fn snapshot(index: u64, term: u64, voters: &[u64]) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().set_conf_state(conf_state(voters, &[]));
    s
}

fn pr_state(net: &Network, leader: u64, id: u64) -> ProgressState {
    net.node(leader).raw.raft().prs().get(id).unwrap().state()
}

/// Builds a 3-node cluster where node 3 missed entries the leader compacted.
fn lagging_follower() -> Network {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(3);
    for i in 0..10u8 {
        net.propose(1, &[i]).unwrap();
    }
    net.node_mut(1).snapshot_and_compact();
    assert!(net.node(1).storage.first_index().unwrap() > 2);
    net
}

#[test]
fn snapshot_catches_up_lagging_follower_2c() {
    let mut net = lagging_follower();
    net.recover();
    net.tick(1);
    let snaps = net
        .delivered
        .iter()
        .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot && m.to == 3)
        .count();
    assert_eq!(snaps, 1);
    assert_eq!(net.committed(3), net.committed(1));
    assert_eq!(
        net.node(3).applied,
        net.node(1).applied,
        "state machines differ"
    );
    // Replication continues from the log after the snapshot.
    net.with_node(1, |r| r.report_snapshot(3, SnapshotStatus::Finish));
    net.propose(1, b"after").unwrap();
    assert_eq!(net.committed(3), net.committed(1));
    assert_eq!(net.node(3).applied, net.node(1).applied);
    assert_eq!(pr_state(&net, 1, 3), ProgressState::Replicate);
}

#[test]
fn snapshot_state_pauses_appends_until_reported_2c() {
    let mut net = lagging_follower();
    net.recover();
    net.ignore(MessageType::MsgSnapshot);
    net.tick(1);
    assert_eq!(pr_state(&net, 1, 3), ProgressState::Snapshot);
    let pending = net
        .node(1)
        .raw
        .raft()
        .prs()
        .get(3)
        .unwrap()
        .pending_snapshot();
    assert!(pending > 0);
    net.delivered.clear();
    net.propose(1, b"x").unwrap();
    assert!(
        !net.delivered
            .iter()
            .any(|m| m.to == 3 && m.get_msg_type() == MessageType::MsgAppend),
        "appends sent while a snapshot is in flight"
    );
    // A failed snapshot resets the pending index and falls back to probing,
    // paused until the next heartbeat response.
    net.with_node(1, |r| r.report_snapshot(3, SnapshotStatus::Failure));
    assert_eq!(pr_state(&net, 1, 3), ProgressState::Probe);
    assert!(net.node(1).raw.raft().prs().get(3).unwrap().is_paused());
    net.recover();
    net.tick(1);
    assert_eq!(net.committed(3), net.committed(1));
}

#[test]
fn snapshot_temporarily_unavailable_2c() {
    let mut net = lagging_follower();
    net.node(1).storage.set_snapshot_unavailable(true);
    net.recover();
    net.tick(1);
    assert_ne!(pr_state(&net, 1, 3), ProgressState::Snapshot);
    assert!(net.committed(3) < net.committed(1));
    net.node(1).storage.set_snapshot_unavailable(false);
    net.tick(1);
    assert_eq!(net.committed(3), net.committed(1));
}

/// A snapshot not newer than the commit index is ignored; one whose last entry
/// the log already holds only moves the commit index.
#[test]
fn restore_ignores_old_or_known_snapshots_2c() {
    let mut n = Node::with_log(
        1,
        &[1, 2],
        &[entry(1, 1), entry(2, 1), entry(3, 1)],
        crate::node::hard_state(1, 2, 0),
    );
    let mut m = msg(2, 1, MessageType::MsgSnapshot);
    m.term = 1;
    m.set_snapshot(snapshot(2, 1, &[1, 2]));
    n.step(m.clone()).unwrap();
    n.handle_ready();
    assert_eq!(n.raw.raft().raft_log().first_index(), 1);
    m.set_snapshot(snapshot(3, 1, &[1, 2]));
    n.step(m).unwrap();
    n.handle_ready();
    assert_eq!(n.raw.raft().raft_log().committed(), 3);
    assert_eq!(
        n.raw.raft().raft_log().first_index(),
        1,
        "fast-forwarded, not restored"
    );
}

/// A snapshot replacing a diverging log installs log, commit index and
/// membership.
#[test]
fn restore_replaces_log_and_membership_2c() {
    let mut n = Node::with_log(
        1,
        &[1, 2],
        &[entry(1, 1), entry(2, 1)],
        crate::node::hard_state(1, 1, 0),
    );
    let mut m = msg(2, 1, MessageType::MsgSnapshot);
    m.term = 2;
    m.set_snapshot(snapshot(10, 2, &[1, 2, 3]));
    assert!(!n.raw.snapshot_pending());
    n.step(m).unwrap();
    assert!(
        n.raw.snapshot_pending(),
        "the next ready hands out the snapshot"
    );
    let out = n.handle_ready();
    assert!(!n.raw.snapshot_pending(), "handed out");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].index, 10);
    let r = n.raw.raft();
    assert_eq!(r.raft_log().committed(), 10);
    assert_eq!(r.raft_log().last_index(), 10);
    assert_eq!(r.raft_log().applied(), 10);
    assert!(r.prs().is_voter(3));
    assert_eq!(n.storage.first_index().unwrap(), 11);
    assert_eq!(n.conf_state, conf_state(&[1, 2, 3], &[]));
}

/// A snapshot of a configuration without this node is not installed.
#[test]
fn restore_ignores_snapshot_without_self_2c() {
    let mut n = Node::with_peers(1, &[1, 2], &[]);
    let mut m = msg(2, 1, MessageType::MsgSnapshot);
    m.term = 1;
    m.set_snapshot(snapshot(10, 1, &[2, 3]));
    n.step(m).unwrap();
    n.handle_ready();
    assert_eq!(n.raw.raft().raft_log().committed(), 0);
}

/// A node created empty (no configuration) joins through a snapshot.
#[test]
fn empty_node_joins_via_snapshot_2c() {
    let mut net = lagging_follower();
    net.remove_node(3);
    net.add_node(Node::new(crate::node::config(3), MemStorage::new()));
    net.recover();
    net.tick(1);
    assert_eq!(net.committed(3), net.committed(1));
    assert!(net.node(3).raw.raft().prs().is_voter(1));
    assert_eq!(net.state(3), StateRole::Follower);
    // The joined node restarts from its durable state.
    net.node_mut(3).restart();
    assert_eq!(net.committed(3), net.committed(1));
}

#[test]
fn memstorage_term_entries_compact_2c() {
    let s = MemStorage::new_with_conf_state(conf_state(&[1], &[]));
    s.append(&(1..=5).map(|i| entry(i, i)).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(s.term(3).unwrap(), 3);
    assert_eq!(s.term(6), Err(Error::Store(StorageError::Unavailable)));
    assert_eq!(
        s.entries(2, 4, None).unwrap(),
        vec![entry(2, 2), entry(3, 3)]
    );
    s.set_hardstate(crate::node::hard_state(5, 4, 0));
    s.create_snapshot(3, conf_state(&[1], &[]), vec![1, 2].into())
        .unwrap();
    s.compact(4).unwrap();
    assert_eq!(s.first_index().unwrap(), 4);
    assert_eq!(s.term(3).unwrap(), 3, "the dummy entry keeps its term");
    assert_eq!(s.term(2), Err(Error::Store(StorageError::Compacted)));
    assert_eq!(
        s.entries(3, 5, None),
        Err(Error::Store(StorageError::Compacted))
    );
    assert_eq!(s.compact(4), Err(Error::Store(StorageError::Compacted)));
    assert_eq!(s.snapshot(0, 1).unwrap().get_metadata().index, 3);
    assert_eq!(
        s.snapshot(4, 1),
        Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    );
    assert_eq!(
        s.create_snapshot(2, conf_state(&[1], &[]), vec![].into()),
        Err(Error::Store(StorageError::SnapshotOutOfDate))
    );
    // Appending over the tail replaces it.
    s.append(&[entry(5, 9), entry(6, 9)]).unwrap();
    assert_eq!(s.last_index().unwrap(), 6);
    assert_eq!(s.term(5).unwrap(), 9);
    assert_eq!(
        s.append(&[entry(2, 9)]),
        Err(Error::Store(StorageError::Compacted))
    );
    assert_eq!(
        s.apply_snapshot(snapshot(1, 1, &[1])),
        Err(Error::Store(StorageError::SnapshotOutOfDate))
    );
}

#[test]
fn memstorage_entries_size_limit_2c() {
    let s = MemStorage::new();
    let ents: Vec<_> = (1..=5)
        .map(|i| crate::node::entry_with_data(i, 1, &[0u8; 100]))
        .collect();
    s.append(&ents).unwrap();
    assert_eq!(s.entries(1, 6, Some(0)).unwrap().len(), 1);
    assert_eq!(s.entries(1, 6, Some(250)).unwrap().len(), 2);
    assert_eq!(s.entries(1, 6, None).unwrap().len(), 5);
}

/// `MemStorage::snapshot(request_index, to)` serves only a real snapshot whose
/// configuration holds `to`; otherwise it asks the application for a new one
/// and answers `SnapshotTemporarilyUnavailable` meanwhile.
#[test]
fn memstorage_snapshot_holds_requester_2c() {
    let unavailable = Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable));
    let s = MemStorage::new_with_conf_state(conf_state(&[1, 2, 3], &[]));
    s.append(&(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>())
        .unwrap();
    // The bootstrap configuration at index 0 is not a snapshot to send.
    assert_eq!(s.snapshot(0, 2), unavailable);
    assert!(s.snapshot_requested());
    s.create_snapshot(3, conf_state(&[1, 2, 3], &[]), vec![].into())
        .unwrap();
    assert!(!s.snapshot_requested());
    assert_eq!(s.snapshot(0, 2).unwrap().get_metadata().index, 3);
    // Node 4 was added after that snapshot.
    assert_eq!(s.snapshot(0, 4), unavailable);
    assert!(s.snapshot_requested());
    s.create_snapshot(5, conf_state(&[1, 2, 3, 4], &[]), vec![].into())
        .unwrap();
    let snap = s.snapshot(0, 4).unwrap();
    assert_eq!(snap.get_metadata().index, 5);
    assert!(snap.get_metadata().get_conf_state().voters.contains(&4));
    // Learners and outgoing voters are members too.
    s.create_snapshot(5, conf_state(&[1, 2, 3], &[4]), vec![].into())
        .unwrap();
    assert!(s.snapshot(0, 4).is_ok());
    assert_eq!(s.snapshot(0, 9), unavailable);
    assert_eq!(s.last_snapshot().get_metadata().index, 5);
}
