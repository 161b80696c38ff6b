//! Nodes that join with nothing: an empty joiner (no log, no configuration)
//! added by a conf change must be caught up by a snapshot that carries the
//! configuration, never by replaying a log whose base configuration it does
//! not have; a snapshot must hold the node it is sent to; and an empty member
//! still votes, so adding it cannot cost the group its liveness.

use std::collections::BTreeMap;

use raft::eraftpb::{ConfChange, ConfChangeType, MessageType};
use raft::{MemStorage, ProgressState, StateRole, Storage};

use crate::network::{msg, Network};
use crate::node::{conf_state, config, Node};

fn add(id: u64) -> ConfChange {
    let mut c = ConfChange::default();
    c.set_change_type(ConfChangeType::AddNode);
    c.node_id = id;
    c
}

fn empty_node(id: u64) -> Node {
    Node::new(config(id), MemStorage::new())
}

/// Records the leader of every term seen, and fails on a second one (§5.2
/// Election Safety).
#[derive(Default)]
struct LeaderLog(BTreeMap<u64, u64>);

impl LeaderLog {
    fn check(&mut self, net: &Network) {
        for (&id, n) in &net.peers {
            let r = n.raw.raft();
            if r.state() == StateRole::Leader {
                let prev = *self.0.entry(r.term()).or_insert(id);
                assert_eq!(
                    prev,
                    id,
                    "two leaders in term {}: {prev} and {id}",
                    r.term()
                );
            }
        }
    }
}

/// State Machine Safety: no two nodes applied different entries at one index.
fn assert_same_applied(net: &Network) {
    let mut seen: BTreeMap<u64, (u64, Vec<u8>, u64)> = BTreeMap::new();
    for (&id, n) in &net.peers {
        for a in &n.applied {
            let (t, d, by) = seen.entry(a.index).or_insert((a.term, a.data.clone(), id));
            assert_eq!(
                (&*t, &*d),
                (&a.term, &a.data),
                "nodes {by} and {id} applied different entries at {}",
                a.index
            );
        }
    }
}

/// The split brain: the leader's log still starts at index 1 (nothing
/// compacted), and its initial configuration lives in the storage, not the
/// log. An empty node 4 added to `{1, 2, 3}` must not be caught up by
/// replaying that log — replaying only "add 4" would leave it believing it is
/// the only voter. Cut off from the others it would elect itself and commit
/// alone while `{1, 2, 3}` elect and commit in the same term.
#[test]
fn empty_joiner_cut_off_never_elects_itself_3a() {
    let mut net = Network::new(3);
    let mut leaders = LeaderLog::default();
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    assert_eq!(net.node(1).storage.first_index().unwrap(), 1);
    net.add_node(empty_node(4));
    net.with_node(1, |r| r.propose_conf_change(vec![], add(4)))
        .unwrap();
    net.tick(1);
    leaders.check(&net);
    assert_eq!(net.node(1).conf_state, conf_state(&[1, 2, 3, 4], &[]));
    // 4 holds either nothing or the whole configuration, never a part of it.
    let cs = &net.node(4).conf_state;
    assert!(
        cs.voters.is_empty() || cs.voters == vec![1, 2, 3, 4],
        "joiner knows a partial configuration {cs:?}"
    );
    net.isolate(4);
    for _ in 0..60 {
        net.tick(4);
        leaders.check(&net);
    }
    assert_ne!(net.state(4), StateRole::Leader, "the joiner elected itself");
    let _ = net.propose(4, b"split");
    // The rest move on in a later term without 4.
    net.campaign(2);
    leaders.check(&net);
    assert_eq!(net.state(2), StateRole::Leader);
    net.propose(2, b"b").unwrap();
    leaders.check(&net);
    assert_same_applied(&net);
    // Healed, 4 catches up with the whole configuration (after the
    // elections its higher term may cause).
    net.recover();
    for _ in 0..100 {
        net.tick_all();
        leaders.check(&net);
        let lead = net.leaders();
        if lead.len() == 1 && net.committed(4) == net.committed(lead[0]) {
            break;
        }
    }
    let lead = net.leaders()[0];
    assert_eq!(net.committed(4), net.committed(lead));
    assert_eq!(net.node(4).conf_state, conf_state(&[1, 2, 3, 4], &[]));
    assert_eq!(net.node(4).applied, net.node(lead).applied);
    assert_same_applied(&net);
}

/// An empty joiner refuses appends; the leader, whose log is not compacted,
/// catches it up with a snapshot instead and then replicates normally.
#[test]
fn empty_joiner_caught_up_by_snapshot_from_full_log_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    for i in 0..5u8 {
        net.propose(1, &[i]).unwrap();
    }
    net.add_node(empty_node(4));
    net.with_node(1, |r| r.propose_conf_change(vec![], add(4)))
        .unwrap();
    for _ in 0..3 {
        net.tick(1);
    }
    // 4 accepted nothing before a snapshot gave it the configuration.
    let snap_at = net
        .delivered
        .iter()
        .position(|m| m.to == 4 && m.get_msg_type() == MessageType::MsgSnapshot)
        .expect("a snapshot was sent to 4");
    let first_ack = net.delivered.iter().position(|m| {
        m.from == 4 && m.get_msg_type() == MessageType::MsgAppendResponse && !m.reject
    });
    assert!(
        first_ack.is_some_and(|a| a > snap_at),
        "4 accepted entries before its snapshot"
    );
    assert_eq!(net.committed(4), net.committed(1));
    assert_eq!(net.node(4).conf_state, conf_state(&[1, 2, 3, 4], &[]));
    assert_eq!(net.node(4).applied, net.node(1).applied);
    net.propose(1, b"after").unwrap();
    assert_eq!(net.node(4).applied, net.node(1).applied);
    let pr = net.node(1).raw.raft().prs().get(4).unwrap().clone();
    assert_eq!(pr.state(), ProgressState::Replicate);
}

/// A node added after the leader's last snapshot: the snapshot the leader
/// holds predates the node, so the storage must make one that includes it.
#[test]
fn node_added_after_last_snapshot_catches_up_2c() {
    let mut net = Network::new(3);
    net.campaign(1);
    for i in 0..10u8 {
        net.propose(1, &[i]).unwrap();
    }
    net.node_mut(1).snapshot_and_compact();
    let old = net.node(1).storage.first_index().unwrap();
    assert!(old > 2);
    net.add_node(empty_node(4));
    net.with_node(1, |r| r.propose_conf_change(vec![], add(4)))
        .unwrap();
    net.propose(1, b"x").unwrap();
    for _ in 0..5 {
        net.tick(1);
    }
    assert_eq!(net.committed(4), net.committed(1));
    assert_eq!(net.node(4).conf_state, conf_state(&[1, 2, 3, 4], &[]));
    assert_eq!(net.node(4).applied, net.node(1).applied);
    let pr = net.node(1).raw.raft().prs().get(4).unwrap().clone();
    assert_eq!(pr.state(), ProgressState::Replicate);
    // Every snapshot 4 was sent held it.
    for m in &net.delivered {
        if m.to == 4 && m.get_msg_type() == MessageType::MsgSnapshot {
            let cs = m.get_snapshot().get_metadata().get_conf_state();
            assert!(cs.voters.contains(&4), "snapshot without 4: {cs:?}");
        }
    }
}

/// A follower sent a snapshot whose configuration does not hold it refuses it
/// with a rejection, and the leader leaves the Snapshot state and sends
/// another (here the storage's proper one) instead of waiting forever.
#[test]
fn snapshot_without_receiver_refused_and_resent_2c() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(3);
    for i in 0..10u8 {
        net.propose(1, &[i]).unwrap();
    }
    net.node_mut(1).snapshot_and_compact();
    net.recover();
    net.ignore(MessageType::MsgSnapshot);
    net.tick(1);
    let pr = |net: &Network| net.node(1).raw.raft().prs().get(3).unwrap().clone();
    assert_eq!(pr(&net).state(), ProgressState::Snapshot);
    net.recover();
    // A snapshot of a configuration without 3 (a stale or buggy one).
    let mut snap = net.node(1).storage.snapshot(0, 3).unwrap();
    snap.mut_metadata().set_conf_state(conf_state(&[1, 2], &[]));
    let mut m = msg(1, 3, MessageType::MsgSnapshot);
    m.term = net.term(1);
    m.set_snapshot(snap);
    net.delivered.clear();
    net.send(vec![m]);
    let refusal = net
        .delivered
        .iter()
        .find(|m| m.from == 3 && m.get_msg_type() == MessageType::MsgAppendResponse)
        .expect("3 answered the snapshot");
    assert!(refusal.reject, "the refusal is a rejection");
    // The leader sent its own snapshot at once, which holds 3.
    let snaps: Vec<_> = net
        .delivered
        .iter()
        .filter(|m| m.to == 3 && m.get_msg_type() == MessageType::MsgSnapshot)
        .collect();
    assert_eq!(snaps.len(), 2, "no new snapshot after the refusal");
    assert_eq!(net.node(3).conf_state, conf_state(&[1, 2, 3], &[]));
    assert_eq!(net.committed(3), net.committed(1));
    assert_eq!(net.node(3).applied, net.node(1).applied);
    assert_ne!(pr(&net).state(), ProgressState::Snapshot);
}

/// An empty member votes: with `{1, 2, 3, 4}` where 4 has received nothing
/// yet, losing the leader leaves 2 and 3, which need 4's vote. A node without
/// a configuration granting votes is standard Raft (a vote promises only that
/// the voter's log is no more up to date, which an empty log trivially keeps).
#[test]
fn empty_member_grants_votes_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    net.add_node(empty_node(4));
    net.node(1).storage.set_snapshot_unavailable(true);
    net.with_node(1, |r| r.propose_conf_change(vec![], add(4)))
        .unwrap();
    net.tick(1);
    assert!(
        net.node(4).conf_state.voters.is_empty(),
        "4 got a configuration"
    );
    for id in [2, 3] {
        assert_eq!(net.node(id).conf_state, conf_state(&[1, 2, 3, 4], &[]));
    }
    net.isolate(1);
    net.campaign(2);
    assert_eq!(net.state(2), StateRole::Leader, "4 did not vote for 2");
    assert_eq!(net.node(4).raw.raft().vote(), 2);
    assert_ne!(net.state(4), StateRole::Leader);
    // The new leader catches 4 up.
    net.propose(2, b"b").unwrap();
    for _ in 0..3 {
        net.tick(2);
    }
    assert_eq!(net.committed(4), net.committed(2));
    assert_eq!(net.node(4).conf_state, conf_state(&[1, 2, 3, 4], &[]));
}

/// The empty node's own rules, message by message: it refuses an append of
/// the log from its base (even one committing "add 4"), refuses to apply a
/// conf change to no configuration, never campaigns, and grants votes.
#[test]
fn empty_node_refuses_log_and_never_campaigns_3a() {
    let mut n = empty_node(4);
    let mut cc_entry = crate::node::entry(1, 1);
    cc_entry.set_entry_type(raft::eraftpb::EntryType::EntryConfChange);
    cc_entry.data = protobuf::Message::write_to_bytes(&add(4)).unwrap().into();
    let mut app = msg(1, 4, MessageType::MsgAppend);
    app.term = 1;
    app.commit = 1;
    app.set_entries(vec![cc_entry].into());
    n.step(app).unwrap();
    let out = n.handle_ready();
    assert_eq!(out.len(), 1);
    assert!(out[0].reject && out[0].index == 0, "{:?}", out[0]);
    assert_eq!(n.raw.raft().raft_log().last_index(), 0);
    assert!(n.raw.apply_conf_change(&add(4)).is_err());
    assert!(!n.raw.raft().promotable() && !n.raw.raft().has_configuration());
    for _ in 0..100 {
        n.raw.tick();
        assert!(n.handle_ready().is_empty(), "the empty node campaigned");
    }
    let mut timeout = msg(1, 4, MessageType::MsgTimeoutNow);
    timeout.term = 1;
    n.step(timeout).unwrap();
    assert!(n.handle_ready().is_empty(), "the empty node campaigned");
    let mut vote = msg(2, 4, MessageType::MsgRequestVote);
    vote.term = 2;
    vote.index = 3;
    vote.log_term = 1;
    n.step(vote).unwrap();
    let out = n.handle_ready();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].get_msg_type(), MessageType::MsgRequestVoteResponse);
    assert!(!out[0].reject, "the empty node refused its vote");
}
