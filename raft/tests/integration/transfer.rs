//! Leadership transfer (thesis §3.10): to an up-to-date or a lagging follower,
//! proposals dropped meanwhile, abort after an election timeout, and the cases
//! that are ignored.

use raft::{Error, StateRole};

use crate::network::Network;

fn transfer(net: &mut Network, leader: u64, to: u64) {
    net.with_node(leader, |r| r.transfer_leader(to));
}

#[test]
fn transfer_to_up_to_date_follower_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.propose(1, b"x").unwrap();
    transfer(&mut net, 1, 2);
    assert_eq!(net.state(2), StateRole::Leader);
    assert_eq!(net.state(1), StateRole::Follower);
    assert_eq!(net.term(2), 2);
    net.propose(2, b"y").unwrap();
    assert_eq!(net.committed(1), net.committed(2));
}

#[test]
fn transfer_to_lagging_follower_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(3);
    for i in 0..5u8 {
        net.propose(1, &[i]).unwrap();
    }
    net.recover();
    transfer(&mut net, 1, 3);
    // The leader first brings 3's log up to date, then sends MsgTimeoutNow.
    assert_eq!(net.state(3), StateRole::Leader);
    assert_eq!(
        net.node(3).durable_entries()[..6],
        net.node(1).durable_entries()[..6]
    );
}

/// Works with CheckQuorum: the transferee's vote request bypasses the lease.
#[test]
fn transfer_with_check_quorum_3a() {
    let mut net = Network::new_with(3, |c| c.check_quorum = true);
    net.campaign(1);
    transfer(&mut net, 1, 2);
    assert_eq!(net.state(2), StateRole::Leader);
}

#[test]
fn transfer_drops_proposals_and_aborts_after_timeout_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(3);
    net.propose(1, b"x").unwrap();
    transfer(&mut net, 1, 3);
    assert_eq!(net.node(1).raw.status().lead_transferee, Some(3));
    assert_eq!(net.propose(1, b"y"), Err(Error::ProposalDropped));
    for _ in 0..10 {
        net.tick(1);
    }
    assert_eq!(net.node(1).raw.status().lead_transferee, None);
    assert_eq!(net.state(1), StateRole::Leader);
    net.propose(1, b"y").unwrap();
}

/// Transfer requests to self, to an unknown node, or repeated, change nothing;
/// a request to another node replaces the pending one.
#[test]
fn transfer_ignored_cases_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    transfer(&mut net, 1, 1);
    assert_eq!(net.node(1).raw.status().lead_transferee, None);
    transfer(&mut net, 1, 9);
    assert_eq!(net.node(1).raw.status().lead_transferee, None);
    net.isolate(3);
    net.isolate(2);
    transfer(&mut net, 1, 3);
    transfer(&mut net, 1, 3);
    assert_eq!(net.node(1).raw.status().lead_transferee, Some(3));
    transfer(&mut net, 1, 2);
    assert_eq!(net.node(1).raw.status().lead_transferee, Some(2));
    net.recover();
    // The pending transfer completes on the next round of responses.
    net.tick(1);
    assert_eq!(net.state(2), StateRole::Leader);
}

/// A transfer asked on a follower is forwarded to the leader.
#[test]
fn transfer_forwarded_from_follower_3a() {
    let mut net = Network::new(3);
    net.campaign(1);
    transfer(&mut net, 3, 2);
    assert_eq!(net.state(2), StateRole::Leader);
}

/// A learner cannot be made leader.
#[test]
fn transfer_to_learner_ignored_3a() {
    use crate::node::{conf_state, config, Node};
    use raft::MemStorage;
    let nodes = (1..=3)
        .map(|id| {
            Node::new(
                config(id),
                MemStorage::new_with_conf_state(conf_state(&[1, 2], &[3])),
            )
        })
        .collect();
    let mut net = Network::from_nodes(nodes);
    net.campaign(1);
    transfer(&mut net, 1, 3);
    assert_eq!(net.node(1).raw.status().lead_transferee, None);
    assert_eq!(net.state(1), StateRole::Leader);
}
