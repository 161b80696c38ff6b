//! ReadIndex (thesis §6.4): Safe mode on the leader and forwarded from a
//! follower, requests waiting for the leader's first commit, LeaseBased mode,
//! and reads never served by a leader without a quorum.

use raft::eraftpb::MessageType;
use raft::{Error, ReadOnlyOption, StateRole};

use crate::network::Network;

fn read_index(net: &mut Network, id: u64, ctx: &[u8]) -> raft::Result<()> {
    net.with_node(id, |r| r.read_index(ctx.to_vec()))
}

#[test]
fn read_index_on_leader_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.propose(1, b"x").unwrap();
    read_index(&mut net, 1, b"ctx1").unwrap();
    let rs = &net.node(1).read_states;
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].request_ctx, b"ctx1");
    assert_eq!(rs[0].index, net.committed(1));
    // Confirmed by a heartbeat round carrying the context.
    assert!(net
        .delivered
        .iter()
        .any(|m| m.get_msg_type() == MessageType::MsgHeartbeat && &m.context[..] == b"ctx1"));
}

#[test]
fn read_index_forwarded_from_follower_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.propose(1, b"x").unwrap();
    read_index(&mut net, 2, b"from 2").unwrap();
    let rs = &net.node(2).read_states;
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].request_ctx, b"from 2");
    assert_eq!(rs[0].index, net.committed(1));
    assert!(net.node(1).read_states.is_empty());
}

#[test]
fn read_index_without_leader_is_dropped_3a() {
    let mut net = Network::new(3);
    assert_eq!(read_index(&mut net, 2, b"x"), Err(Error::ProposalDropped));
}

/// A leader that has not committed an entry of its term yet holds requests
/// until it has.
#[test]
fn read_index_waits_for_commit_in_term_3a() {
    let mut net = Network::new(3);
    net.ignore(MessageType::MsgAppend);
    net.campaign(1);
    assert_eq!(net.state(1), StateRole::Leader);
    read_index(&mut net, 1, b"early").unwrap();
    assert!(net.node(1).read_states.is_empty());
    net.recover();
    net.tick(1);
    let rs = &net.node(1).read_states;
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].index, net.committed(1));
    assert_eq!(net.term(1), 1);
}

/// Safe mode: an isolated leader never answers, as it cannot confirm it leads.
#[test]
fn read_index_isolated_leader_never_answers_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(1);
    read_index(&mut net, 1, b"stale?").unwrap();
    for _ in 0..5 {
        net.tick(1);
    }
    assert!(net.node(1).read_states.is_empty());
}

/// Several pending requests are all answered by one confirming round, in order.
#[test]
fn read_index_batch_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.ignore(MessageType::MsgHeartbeatResponse);
    for ctx in [b"a", b"b", b"c"] {
        read_index(&mut net, 1, ctx).unwrap();
    }
    assert!(net.node(1).read_states.is_empty());
    net.recover();
    net.tick(1);
    let ctxs: Vec<Vec<u8>> = net
        .node(1)
        .read_states
        .iter()
        .map(|r| r.request_ctx.clone())
        .collect();
    assert_eq!(ctxs, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
}

/// LeaseBased: answered at once, without a heartbeat round.
#[test]
fn read_index_lease_based_3a() {
    let mut net = Network::new_with(3, |c| {
        c.check_quorum = true;
        c.read_only_option = ReadOnlyOption::LeaseBased;
    });
    net.campaign(1);
    net.propose(1, b"x").unwrap();
    net.ignore(MessageType::MsgHeartbeat);
    read_index(&mut net, 1, b"lease").unwrap();
    let rs = &net.node(1).read_states;
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].index, net.committed(1));
}

/// Lease safety: a leader cut off steps down (CheckQuorum) and stops serving,
/// and the new leader's read index covers every write the old one committed.
#[test]
fn lease_read_safety_3a() {
    let mut net = Network::new_with(3, |c| {
        c.check_quorum = true;
        c.read_only_option = ReadOnlyOption::LeaseBased;
    });
    net.campaign(1);
    net.propose(1, b"w1").unwrap();
    let w1 = net.committed(1);
    net.isolate(1);
    for _ in 0..40 {
        net.tick_all();
    }
    assert_ne!(
        net.state(1),
        StateRole::Leader,
        "deposed leader kept its lease"
    );
    assert_eq!(read_index(&mut net, 1, b"old"), Err(Error::ProposalDropped));
    let leader = net.leaders()[0];
    assert_ne!(leader, 1);
    net.propose(leader, b"w2").unwrap();
    read_index(&mut net, leader, b"new").unwrap();
    let rs = net.node(leader).read_states.last().unwrap().clone();
    assert!(rs.index > w1);
    assert_eq!(rs.index, net.committed(leader));
}
