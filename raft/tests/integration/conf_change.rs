//! Membership changes (thesis §4): single-step add/remove (including the
//! leader), joint consensus with automatic and explicit leave, one change at a
//! time, and learners (replicated to, never voting, promotable).

use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, EntryType,
    MessageType,
};
use raft::{Error, MemStorage, StateRole};

use crate::network::{msg, Network};
use crate::node::{conf_state, config, Node};

fn cc(ty: ConfChangeType, id: u64) -> ConfChange {
    let mut c = ConfChange::default();
    c.set_change_type(ty);
    c.node_id = id;
    c
}

fn single(ty: ConfChangeType, id: u64) -> ConfChangeSingle {
    let mut c = ConfChangeSingle::default();
    c.set_change_type(ty);
    c.node_id = id;
    c
}

fn v2(changes: Vec<ConfChangeSingle>, t: ConfChangeTransition) -> ConfChangeV2 {
    let mut c = ConfChangeV2::default();
    c.set_changes(changes.into());
    c.set_transition(t);
    c
}

fn propose_cc(net: &mut Network, id: u64, c: impl raft::ConfChangeI) {
    net.with_node(id, |r| r.propose_conf_change(vec![], c))
        .unwrap();
}

/// A node for `id` that starts from the cluster's bootstrap configuration
/// `{1, 2, 3}` (it learns the rest from the log). A node with no configuration
/// at all must join via a snapshot instead (see the snapshot tests).
fn new_member(id: u64) -> Node {
    Node::with_peers(id, &[1, 2, 3], &[])
}

#[test]
fn add_node_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.add_node(new_member(4));
    propose_cc(&mut net, 1, cc(ConfChangeType::AddNode, 4));
    assert_eq!(net.node(1).conf_state, conf_state(&[1, 2, 3, 4], &[]));
    net.tick(1);
    net.propose(1, b"x").unwrap();
    assert_eq!(net.committed(4), net.committed(1));
    assert_eq!(net.node(4).conf_state, conf_state(&[1, 2, 3, 4], &[]));
    // 4 votes now: with 1 and 2 gone, 3 and 4 are not a quorum of 4.
    net.isolate(1);
    net.isolate(2);
    net.campaign(3);
    assert_eq!(net.state(3), StateRole::Candidate);
}

#[test]
fn remove_node_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    propose_cc(&mut net, 1, cc(ConfChangeType::RemoveNode, 3));
    net.tick(1);
    for id in [1, 2] {
        assert_eq!(net.node(id).conf_state, conf_state(&[1, 2], &[]));
    }
    // Two voters left: both are needed, and 3 no longer counts.
    net.remove_node(3);
    net.propose(1, b"x").unwrap();
    assert_eq!(net.committed(2), net.committed(1));
    assert!(net.node(1).raw.raft().prs().get(3).is_none());
}

/// Removing the leader: it steps down once the change is applied, and the rest
/// elect a new leader that keeps every committed entry.
#[test]
fn remove_leader_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    propose_cc(&mut net, 1, cc(ConfChangeType::RemoveNode, 1));
    assert_eq!(net.state(1), StateRole::Follower);
    assert_eq!(
        net.with_node(1, |r| r.propose(vec![], b"x".to_vec())),
        Err(Error::ProposalDropped)
    );
    let committed = net.committed(1);
    for _ in 0..30 {
        net.tick_all();
    }
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1);
    assert!(net.committed(leaders[0]) >= committed);
    assert_eq!(net.node(leaders[0]).conf_state, conf_state(&[2, 3], &[]));
    assert!(!net.node(1).raw.raft().promotable());
}

/// Only one conf change may be pending: a second is turned into an empty entry
/// until the first is applied.
#[test]
fn one_conf_change_at_a_time_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(2);
    net.isolate(3);
    propose_cc(&mut net, 1, cc(ConfChangeType::AddNode, 4));
    propose_cc(&mut net, 1, cc(ConfChangeType::AddNode, 5));
    let log = net.node(1).durable_entries();
    let kinds: Vec<EntryType> = log.iter().map(|e| e.get_entry_type()).collect();
    assert_eq!(
        &kinds[kinds.len() - 2..],
        &[EntryType::EntryConfChange, EntryType::EntryNormal]
    );
    net.recover();
    net.tick(1);
    assert_eq!(net.node(1).conf_state, conf_state(&[1, 2, 3, 4], &[]));
    propose_cc(&mut net, 1, cc(ConfChangeType::AddNode, 5));
    assert_eq!(net.node(1).conf_state, conf_state(&[1, 2, 3, 4, 5], &[]));
}

/// Joint consensus with automatic leave: replacing two voters at once goes
/// through a joint configuration the leader leaves by itself.
#[test]
fn joint_consensus_auto_leave_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.add_node(new_member(4));
    net.add_node(new_member(5));
    let change = v2(
        vec![
            single(ConfChangeType::AddNode, 4),
            single(ConfChangeType::AddNode, 5),
            single(ConfChangeType::RemoveNode, 2),
            single(ConfChangeType::RemoveNode, 3),
        ],
        ConfChangeTransition::Auto,
    );
    propose_cc(&mut net, 1, change);
    net.tick(1);
    net.tick(1);
    for id in [1, 4, 5] {
        assert_eq!(
            net.node(id).conf_state,
            conf_state(&[1, 4, 5], &[]),
            "node {id}"
        );
    }
    net.remove_node(2);
    net.remove_node(3);
    net.propose(1, b"new config").unwrap();
    assert_eq!(net.committed(4), net.committed(1));
}

/// While joint, decisions need both majorities: the old voters alone cannot
/// commit.
#[test]
fn joint_consensus_needs_both_majorities_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.add_node(new_member(4));
    net.add_node(new_member(5));
    let change = v2(
        vec![
            single(ConfChangeType::AddNode, 4),
            single(ConfChangeType::AddNode, 5),
        ],
        ConfChangeTransition::Explicit,
    );
    propose_cc(&mut net, 1, change);
    net.tick(1);
    let cs = net.node(1).conf_state.clone();
    assert_eq!(cs.voters_outgoing, vec![1, 2, 3]);
    assert!(!cs.auto_leave);
    // {1, 2, 3} is a majority of the outgoing half but not of the incoming
    // {1, 2, 3, 4, 5} without 4 and 5... it is (3 of 5): cut 2 instead.
    net.isolate(2);
    net.isolate(3);
    let before = net.committed(1);
    net.propose(1, b"needs both").unwrap();
    assert_eq!(net.committed(1), before, "outgoing half has no majority");
    net.recover();
    net.tick(1);
    assert!(net.committed(1) > before);
    // Explicit transition: leave with an empty ConfChangeV2.
    propose_cc(&mut net, 1, ConfChangeV2::default());
    net.tick(1);
    assert_eq!(net.node(1).conf_state, conf_state(&[1, 2, 3, 4, 5], &[]));
    // A new joint change is refused while joint: check it is also refused to
    // leave when not joint.
    propose_cc(&mut net, 1, ConfChangeV2::default());
    assert_eq!(net.node(1).conf_state, conf_state(&[1, 2, 3, 4, 5], &[]));
}

/// A joint configuration survives a restart and a leader change.
#[test]
fn joint_consensus_survives_restart_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.add_node(new_member(4));
    let change = v2(
        vec![
            single(ConfChangeType::AddNode, 4),
            single(ConfChangeType::RemoveNode, 3),
        ],
        ConfChangeTransition::Explicit,
    );
    propose_cc(&mut net, 1, change);
    net.tick(1);
    net.node_mut(2).restart();
    assert!(net.node(2).raw.raft().prs().is_joint());
    net.campaign(2);
    assert_eq!(net.state(2), StateRole::Leader);
    propose_cc(&mut net, 2, ConfChangeV2::default());
    net.tick(2);
    assert_eq!(net.node(2).conf_state, conf_state(&[1, 2, 4], &[]));
}

/// Learners receive the log but never vote nor campaign; promoted, they do.
#[test]
fn learner_replicates_and_is_promoted_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.add_node(new_member(4));
    propose_cc(&mut net, 1, cc(ConfChangeType::AddLearnerNode, 4));
    net.tick(1);
    net.propose(1, b"x").unwrap();
    assert_eq!(net.committed(4), net.committed(1));
    assert!(net.node(4).raw.raft().is_learner());
    // A learner never campaigns, however long it waits.
    net.isolate(1);
    for _ in 0..50 {
        net.tick(4);
    }
    assert_eq!(net.state(4), StateRole::Follower);
    net.recover();
    // It is not asked to vote either.
    net.delivered.clear();
    net.campaign(2);
    assert!(!net
        .delivered
        .iter()
        .any(|m| m.to == 4 && m.get_msg_type() == MessageType::MsgRequestVote));
    let leader = net.leaders()[0];
    propose_cc(&mut net, leader, cc(ConfChangeType::AddNode, 4));
    net.tick(leader);
    assert!(!net.node(4).raw.raft().is_learner());
    assert!(net.node(4).raw.raft().promotable());
    net.campaign(4);
    assert_eq!(net.state(4), StateRole::Leader);
}

/// A learner does not count towards the commit quorum.
#[test]
fn learner_does_not_count_in_quorum_3a() {
    let s = MemStorage::new_with_conf_state(conf_state(&[1], &[2]));
    let mut n = Node::new(config(1), s);
    n.raw.campaign().unwrap();
    n.handle_ready();
    assert_eq!(n.raw.raft().state(), StateRole::Leader);
    let committed = n.raw.raft().raft_log().committed();
    assert_eq!(committed, 1, "a single voter commits alone");
    let mut isolated = Node::new(
        config(1),
        MemStorage::new_with_conf_state(conf_state(&[1, 2], &[3])),
    );
    isolated.raw.campaign().unwrap();
    isolated.handle_ready();
    let mut ack = msg(3, 1, MessageType::MsgRequestVoteResponse);
    ack.term = 1;
    isolated.step(ack).unwrap();
    assert_eq!(
        isolated.raw.raft().state(),
        StateRole::Candidate,
        "a learner's vote counted"
    );
}

/// Demoting a voter to a learner in a joint change puts it in `learners_next`
/// until the joint state is left.
#[test]
fn demote_voter_through_joint_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    let change = v2(
        vec![single(ConfChangeType::AddLearnerNode, 3)],
        ConfChangeTransition::Explicit,
    );
    propose_cc(&mut net, 1, change);
    net.tick(1);
    let cs = net.node(1).conf_state.clone();
    assert_eq!(cs.learners_next, vec![3]);
    propose_cc(&mut net, 1, ConfChangeV2::default());
    net.tick(1);
    assert_eq!(net.node(1).conf_state, conf_state(&[1, 2], &[3]));
    assert!(net.node(3).raw.raft().is_learner());
}
