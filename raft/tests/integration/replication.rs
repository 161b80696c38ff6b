//! Replication scenarios: flow control under a full window, message size
//! limits, fast backtracking, proposal forwarding and dropping, the uncommitted
//! size limit, stale/duplicate/reordered appends, and restart from storage.

use raft::eraftpb::{Entry, MessageType};
use raft::{Error, ProgressState, StateRole};

use crate::network::{msg, Network};
use crate::node::{entry, hard_state, Node};
use crate::paper_replication::elect;

fn progress_of(n: &Node, id: u64) -> raft::Progress {
    n.raw.raft().prs().get(id).unwrap().clone()
}

/// A full inflight window pauses replication; an acknowledgement frees slots,
/// and a heartbeat response frees one so a lost ack cannot stall it forever.
#[test]
fn flow_control_full_window_2ab() {
    let mut n = Node::with_peers(1, &[1, 2], &[]);
    n.config.max_inflight_msgs = 3;
    let cfg = n.config.clone();
    n.raw = raft::RawNode::new(&cfg, n.storage.clone()).unwrap();
    elect(&mut n, &[1, 2]);
    n.handle_ready();
    // Move 2 to Replicate.
    let mut ack = msg(2, 1, MessageType::MsgAppendResponse);
    ack.term = 1;
    ack.index = 1;
    n.step(ack).unwrap();
    n.handle_ready();
    assert_eq!(progress_of(&n, 2).state(), ProgressState::Replicate);
    let mut sent = 0;
    for i in 0..10u8 {
        n.raw.propose(vec![], vec![i]).unwrap();
        sent += n
            .handle_ready()
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgAppend)
            .count();
    }
    assert_eq!(sent, 3, "only a window's worth of appends");
    assert!(progress_of(&n, 2).is_paused());
    // A heartbeat response frees one slot: one more append goes out.
    let mut hb = msg(2, 1, MessageType::MsgHeartbeatResponse);
    hb.term = 1;
    n.step(hb).unwrap();
    let out = n.handle_ready();
    assert_eq!(
        out.iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgAppend)
            .count(),
        1
    );
    // Acknowledging everything sent opens the window and streams the rest.
    let last = progress_of(&n, 2).next_idx() - 1;
    let mut ack = msg(2, 1, MessageType::MsgAppendResponse);
    ack.term = 1;
    ack.index = last;
    n.step(ack).unwrap();
    let out = n.handle_ready();
    let ents: usize = out
        .iter()
        .filter(|m| m.get_msg_type() == MessageType::MsgAppend)
        .map(|m| m.get_entries().len())
        .sum();
    assert_eq!(last + ents as u64, n.raw.raft().raft_log().last_index());
}

/// `max_size_per_msg` splits a long catch-up into several appends.
#[test]
fn max_size_per_msg_2ab() {
    let mut net = Network::new_with(3, |c| c.max_size_per_msg = 300);
    net.campaign(1);
    net.isolate(3);
    for _ in 0..20 {
        net.propose(1, &[7u8; 100]).unwrap();
    }
    net.recover();
    net.delivered.clear();
    net.tick(1);
    let apps: Vec<usize> = net
        .delivered
        .iter()
        .filter(|m| m.get_msg_type() == MessageType::MsgAppend && m.to == 3)
        .map(|m| m.get_entries().len())
        .collect();
    assert!(apps.len() >= 7, "catch-up in one message: {apps:?}");
    assert!(apps.iter().all(|&n| n <= 3), "{apps:?}");
    assert_eq!(net.committed(3), net.committed(1));
}

/// The reject hint lets the leader skip a whole diverging term per round trip
/// instead of one entry.
#[test]
fn fast_backtracking_2ab() {
    // The follower holds 50 entries of term 2 the leader never had.
    let mut f: Vec<Entry> = vec![entry(1, 1)];
    f.extend((2..=51).map(|i| entry(i, 2)));
    let lead: Vec<Entry> = (1..=20)
        .map(|i| entry(i, if i == 1 { 1 } else { 3 }))
        .collect();
    let leader = Node::with_log(1, &[1, 2, 3], &lead, hard_state(3, 1, 0));
    let follower = Node::with_log(2, &[1, 2, 3], &f, hard_state(3, 1, 0));
    let third = Node::with_log(3, &[1, 2, 3], &lead, hard_state(3, 1, 0));
    let mut net = Network::from_nodes(vec![leader, follower, third]);
    net.campaign(1);
    assert_eq!(net.state(1), StateRole::Leader);
    let rejects = net
        .delivered
        .iter()
        .filter(|m| m.get_msg_type() == MessageType::MsgAppendResponse && m.reject && m.from == 2)
        .count();
    assert!(rejects <= 2, "{rejects} rejections");
    assert_eq!(net.node(2).durable_entries(), net.node(1).durable_entries());
}

/// A follower forwards proposals to the leader; without a leader they are
/// dropped with an error.
#[test]
fn proposal_forwarding_and_dropping_2ab() {
    let mut net = Network::new(3);
    assert_eq!(net.propose(2, b"no leader"), Err(Error::ProposalDropped));
    net.campaign(1);
    net.propose(2, b"forwarded").unwrap();
    let last = net.node(1).durable_entries().pop().unwrap();
    assert_eq!(&last.data[..], b"forwarded");
    assert_eq!(net.committed(2), last.index);
    // A candidate drops proposals too.
    net.isolate(3);
    net.campaign(3);
    assert_eq!(net.propose(3, b"x"), Err(Error::ProposalDropped));
}

/// `max_uncommitted_size`: a leader refuses proposals while too many bytes are
/// uncommitted, and accepts them again once they commit.
#[test]
fn max_uncommitted_size_2ab() {
    let mut net = Network::new_with(3, |c| c.max_uncommitted_size = 1000);
    net.campaign(1);
    net.isolate(1);
    let mut accepted = 0;
    for _ in 0..20 {
        if net.propose(1, &[1u8; 100]).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 10);
    assert_eq!(net.propose(1, &[1u8; 100]), Err(Error::ProposalDropped));
    // Empty proposals carry no payload and are always accepted.
    net.propose(1, b"").unwrap();
    net.recover();
    net.tick(1);
    assert_eq!(net.committed(2), net.committed(1));
    net.propose(1, &[1u8; 100]).unwrap();
}

/// `skip_bcast_commit`: advancing the commit index alone sends no append; the
/// followers learn it with the next heartbeat.
#[test]
fn skip_bcast_commit_2ab() {
    let mut net = Network::new_with(3, |c| c.skip_bcast_commit = true);
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    let c1 = net.committed(1);
    assert!(net.committed(2) < c1);
    net.tick(1);
    assert_eq!(net.committed(2), c1);
    assert_eq!(net.committed(3), c1);

    // Turned off at run time, the next commit reaches the followers with no heartbeat.
    net.node_mut(1).raw.set_skip_bcast_commit(false);
    assert!(!net.node(1).raw.raft().skip_bcast_commit());
    net.propose(1, b"b").unwrap();
    let c2 = net.committed(1);
    assert!(c2 > c1);
    assert_eq!(net.committed(2), c2);
    assert_eq!(net.committed(3), c2);
    // And back on, it is held back again.
    net.node_mut(1).raw.set_skip_bcast_commit(true);
    net.propose(1, b"c").unwrap();
    assert!(net.committed(2) < net.committed(1));
}

/// Stale, duplicated and reordered appends leave the log intact.
#[test]
fn duplicate_and_reordered_appends_2ab() {
    let mut n = Node::with_peers(2, &[1, 2, 3], &[]);
    let app = |index: u64, log_term: u64, ents: Vec<Entry>, commit: u64| {
        let mut m = msg(1, 2, MessageType::MsgAppend);
        m.term = 1;
        m.index = index;
        m.log_term = log_term;
        m.commit = commit;
        m.set_entries(ents.into());
        m
    };
    let a1 = app(0, 0, vec![entry(1, 1), entry(2, 1)], 0);
    let a2 = app(2, 1, vec![entry(3, 1), entry(4, 1)], 2);
    // Reordered: a2 arrives first and is rejected; then a1, a2 twice, a1 again.
    for m in [a2.clone(), a1.clone(), a2.clone(), a2.clone(), a1.clone()] {
        n.step(m).unwrap();
        n.handle_ready();
    }
    let log: Vec<(u64, u64)> = n
        .durable_entries()
        .iter()
        .map(|e| (e.index, e.term))
        .collect();
    assert_eq!(log, vec![(1, 1), (2, 1), (3, 1), (4, 1)]);
    assert_eq!(n.raw.raft().raft_log().committed(), 2);
    // A stale append below the commit index is answered with the commit index.
    n.step(app(0, 0, vec![entry(1, 1)], 0)).unwrap();
    let out = n.handle_ready();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].index, out[0].reject), (2, false));
}

/// A restarted node recovers term, vote, log and commit index from storage and
/// does not apply twice.
#[test]
fn restart_from_storage_2ab() {
    let mut net = Network::new(3);
    net.campaign(1);
    for i in 0..5u8 {
        net.propose(1, &[i]).unwrap();
    }
    net.tick(1);
    let before = (net.term(2), net.committed(2), net.node(2).durable_entries());
    let applied = net.node(2).applied.len();
    net.node_mut(2).restart();
    let after = (net.term(2), net.committed(2), net.node(2).durable_entries());
    assert_eq!(before, after);
    let msgs = net.node_mut(2).handle_ready();
    assert!(msgs.is_empty());
    assert_eq!(
        net.node(2).applied.len(),
        applied,
        "re-applied after restart"
    );
    net.propose(1, b"after").unwrap();
    assert_eq!(net.committed(2), net.committed(1));
    // The leader restarts too: it comes back as a follower and a new election
    // keeps every committed entry.
    let committed = net.committed(1);
    net.node_mut(1).restart();
    assert_eq!(net.state(1), StateRole::Follower);
    net.campaign(2);
    assert_eq!(net.state(2), StateRole::Leader);
    assert!(net.committed(1) > committed);
}

/// `report_unreachable` moves a replicating follower back to probing.
#[test]
fn report_unreachable_2ab() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    assert_eq!(
        progress_of(net.node(1), 2).state(),
        ProgressState::Replicate
    );
    net.with_node(1, |r| r.report_unreachable(2));
    assert_eq!(progress_of(net.node(1), 2).state(), ProgressState::Probe);
    // A probe sends one append and waits.
    net.isolate(2);
    net.propose(1, b"b").unwrap();
    net.propose(1, b"c").unwrap();
    assert!(progress_of(net.node(1), 2).is_paused());
}

/// A leader cut off from the others keeps accepting proposals it cannot commit;
/// the new leader's log replaces them (§5.4.2, figure 8 flavour).
#[test]
fn uncommitted_entries_of_old_leader_are_replaced_2ab() {
    let mut net = Network::new(5);
    net.campaign(1);
    net.propose(1, b"committed").unwrap();
    let committed = net.committed(1);
    net.isolate(1);
    for _ in 0..3 {
        net.propose(1, b"lost").unwrap();
    }
    assert_eq!(net.committed(1), committed);
    net.campaign(2);
    net.propose(2, b"new").unwrap();
    net.recover();
    net.tick(2);
    assert_eq!(net.state(1), StateRole::Follower);
    let l = net.node(2).durable_entries();
    assert_eq!(net.node(1).durable_entries(), l);
    assert!(l.iter().all(|e| &e.data[..] != b"lost"));
    assert!(l.iter().any(|e| &e.data[..] == b"committed"));
}
