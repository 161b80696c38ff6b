//! Messages from the network are hostile until checked: `RawNode::step`
//! refuses a malformed one with an error (`InvalidMessage`, `StepLocalMsg`,
//! `StepPeerNotFound`) and leaves the node exactly as it was. Each case below
//! used to panic the library or change its state.

use raft::eraftpb::{ConfState, Entry, Message, MessageType, Snapshot};
use raft::{Error, StateRole};

use crate::network::{msg, Network};
use crate::node::{conf_state, entry, hard_state, Node};

/// Everything an `Err` from `step` must leave untouched.
#[derive(Debug, PartialEq)]
struct Observed {
    term: u64,
    vote: u64,
    state: StateRole,
    leader: u64,
    committed: u64,
    last: u64,
    has_ready: bool,
}

fn observe(n: &Node) -> Observed {
    let r = n.raw.raft();
    Observed {
        term: r.term(),
        vote: r.vote(),
        state: r.state(),
        leader: r.leader_id(),
        committed: r.raft_log().committed(),
        last: r.raft_log().last_index(),
        has_ready: n.raw.has_ready(),
    }
}

/// Steps `m` into `n`, expecting it refused as invalid and nothing changed.
fn assert_invalid(n: &mut Node, m: Message) {
    let before = observe(n);
    let desc = format!("{m:?}");
    match n.step(m) {
        Err(Error::InvalidMessage { reason, .. }) => assert!(!reason.is_empty()),
        other => panic!("{desc}: expected InvalidMessage, got {other:?}"),
    }
    assert_eq!(observe(n), before, "{desc} changed the node");
}

/// A three-node cluster led by 1 in term 1, with `n` proposals committed.
fn cluster(proposals: u8) -> Network {
    let mut net = Network::new(3);
    net.campaign(1);
    for i in 0..proposals {
        net.propose(1, &[i]).unwrap();
    }
    net
}

fn with_entries(mut m: Message, ents: Vec<Entry>) -> Message {
    m.set_entries(ents.into());
    m
}

fn append(from: u64, to: u64, term: u64, index: u64, log_term: u64, ents: Vec<Entry>) -> Message {
    let mut m = msg(from, to, MessageType::MsgAppend);
    m.term = term;
    m.index = index;
    m.log_term = log_term;
    with_entries(m, ents)
}

/// A `MsgPropose` without entries, forwarded by a follower, killed the leader.
#[test]
fn empty_propose_refused_2ac() {
    let mut net = cluster(1);
    let m = msg(2, 1, MessageType::MsgPropose);
    assert_invalid(net.node_mut(1), m);
    assert_eq!(net.state(1), StateRole::Leader);
    // Locally too: proposing nothing is refused, not a panic.
    let r = net.node_mut(1).raw.propose_entries(vec![]);
    assert!(matches!(r, Err(Error::InvalidMessage { .. })), "{r:?}");
}

/// A `MsgReadIndex` without entries indexed out of bounds.
#[test]
fn empty_read_index_refused_2ac() {
    let mut net = cluster(1);
    assert_invalid(net.node_mut(1), msg(2, 1, MessageType::MsgReadIndex));
    let mut resp = msg(1, 2, MessageType::MsgReadIndexResp);
    resp.term = 1;
    assert_invalid(net.node_mut(2), resp);
}

/// A `MsgAppend` past the end of the log whose entries conflict with
/// committed ones hit an assertion.
#[test]
fn append_past_log_conflicting_with_committed_refused_2ac() {
    let mut net = cluster(2);
    let committed = net.committed(2);
    assert!(committed >= 2);
    // Not contiguous: prev index 10 (past the log, "matching" with term 0),
    // then an entry at committed index 2 of another term.
    let m = append(1, 2, 2, 10, 0, vec![entry(2, 2)]);
    assert_invalid(net.node_mut(2), m);
    // Contiguous, but rewriting committed entry 2 with another term.
    let m = append(1, 2, 2, 1, 1, vec![entry(2, 2), entry(3, 2)]);
    assert_invalid(net.node_mut(2), m);
    // A prev entry of term 0 past the log "matched" anything.
    let m = append(1, 2, 1, 10, 0, vec![entry(11, 1)]);
    assert_invalid(net.node_mut(2), m);
}

/// A `MsgAppend` of term 0 skipped every term check (taken for a local
/// message) and its commit index of 2^40 hit an assertion.
#[test]
fn append_with_term_zero_refused_2ac() {
    let mut net = cluster(1);
    // Prev index 10 is past the log: term 0 "matched" it, and the commit
    // index was taken up to it.
    let mut m = append(1, 2, 0, 10, 0, vec![]);
    m.commit = 1 << 40;
    assert_invalid(net.node_mut(2), m.clone());
    // Even on a candidate, which used to become follower of term 0.
    net.isolate(3);
    net.campaign(3);
    assert_eq!(net.state(3), StateRole::Candidate);
    m.to = 3;
    assert_invalid(net.node_mut(3), m);
}

/// A `MsgRequestVote` of term 0 hit the outbox's term assertion.
#[test]
fn vote_with_term_zero_refused_2ac() {
    let mut net = cluster(1);
    for t in [MessageType::MsgRequestVote, MessageType::MsgRequestPreVote] {
        let mut m = msg(3, 2, t);
        m.index = 100;
        m.log_term = 5;
        assert_invalid(net.node_mut(2), m);
    }
    // A node that has not voted would grant it, stamped with term 0.
    let mut fresh = Node::with_peers(2, &[1, 2, 3], &[]);
    let mut m = msg(3, 2, MessageType::MsgRequestVote);
    m.index = 100;
    m.log_term = 5;
    assert_invalid(&mut fresh, m);
    // Every other type from a peer needs a term, except forwarded requests.
    for t in [
        MessageType::MsgAppendResponse,
        MessageType::MsgRequestVoteResponse,
        MessageType::MsgSnapshot,
        MessageType::MsgHeartbeat,
        MessageType::MsgHeartbeatResponse,
        MessageType::MsgTransferLeader,
        MessageType::MsgTimeoutNow,
        MessageType::MsgReadIndexResp,
        MessageType::MsgRequestPreVoteResponse,
    ] {
        assert_invalid(net.node_mut(1), msg(2, 1, t));
    }
    // And forwarded requests travel without one.
    let mut p = with_entries(msg(2, 1, MessageType::MsgPropose), vec![Entry::default()]);
    p.term = 1;
    assert_invalid(net.node_mut(1), p);
}

/// Senders and recipients must be real and distinct.
#[test]
fn bad_addresses_refused_2ac() {
    let mut net = cluster(1);
    let mut hb = msg(0, 2, MessageType::MsgHeartbeat);
    hb.term = 1;
    assert_invalid(net.node_mut(2), hb.clone());
    hb.from = 1;
    hb.to = 3;
    assert_invalid(net.node_mut(2), hb.clone());
    hb.from = 2;
    hb.to = 2;
    assert_invalid(net.node_mut(2), hb);
}

/// Entries of an append must follow its prev entry one by one, with terms
/// non-decreasing, at least the prev term and at most the message's term.
#[test]
fn malformed_append_entries_refused_2ac() {
    let mut net = cluster(1);
    let last = net.node(2).raw.raft().raft_log().last_index();
    let cases = [
        append(1, 2, 1, last, 1, vec![entry(last + 2, 1)]),
        append(
            1,
            2,
            1,
            last,
            1,
            vec![entry(last + 1, 1), entry(last + 3, 1)],
        ),
        append(
            1,
            2,
            2,
            last,
            1,
            vec![entry(last + 1, 2), entry(last + 2, 1)],
        ),
        append(1, 2, 1, last, 1, vec![entry(last + 1, 2)]),
        append(1, 2, 1, last, 1, vec![entry(last + 1, 0)]),
        append(1, 2, 2, last, 2, vec![entry(last + 1, 1)]),
        append(1, 2, 1, last, 3, vec![]),
        append(1, 2, 1, 0, 1, vec![]),
        append(1, 2, 1, u64::MAX, 1, vec![entry(0, 1)]),
    ];
    for m in cases {
        assert_invalid(net.node_mut(2), m);
    }
    // Terms and indexes beyond any real log (where + 1 would overflow).
    let far = [
        append(1, 2, u64::MAX, last, 1, vec![]),
        append(1, 2, 1, u64::MAX, 1, vec![]),
        append(1, 2, 1, (1 << 62) + 1, 1, vec![]),
    ];
    for m in far {
        assert_invalid(net.node_mut(2), m);
    }
    let mut vote = msg(3, 2, MessageType::MsgRequestVote);
    vote.term = u64::MAX;
    assert_invalid(net.node_mut(2), vote);
}

fn snapshot_msg(index: u64, term: u64, cs: ConfState) -> Message {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().set_conf_state(cs);
    let mut m = msg(1, 2, MessageType::MsgSnapshot);
    m.term = 2;
    m.set_snapshot(s);
    m
}

/// Snapshot metadata that cannot be right.
#[test]
fn malformed_snapshot_refused_2c() {
    let mut net = cluster(1);
    let voters = conf_state(&[1, 2, 3], &[]);
    let mut overlapping = conf_state(&[1, 2, 3], &[2]);
    overlapping.auto_leave = true;
    let cases = [
        snapshot_msg(0, 0, voters.clone()),
        snapshot_msg(0, 1, voters.clone()),
        snapshot_msg(20, 0, voters.clone()),
        snapshot_msg(20, 3, voters.clone()),
        snapshot_msg(20, 2, conf_state(&[], &[])),
        snapshot_msg(20, 2, conf_state(&[], &[2])),
        snapshot_msg(20, 2, overlapping),
        snapshot_msg(u64::MAX, 2, voters.clone()),
        // Index 1 is committed with term 1 here.
        snapshot_msg(1, 2, voters),
    ];
    for m in cases {
        assert_invalid(net.node_mut(2), m);
    }
}

/// A response from a node not in the configuration, and responses that
/// acknowledge or reject entries the leader never had.
#[test]
fn impossible_responses_refused_2ac() {
    let mut net = cluster(1);
    let mut resp = msg(9, 1, MessageType::MsgAppendResponse);
    resp.term = 1;
    assert_eq!(net.node_mut(1).step(resp), Err(Error::StepPeerNotFound));
    let last = net.node(1).raw.raft().raft_log().last_index();
    let mut ack = msg(2, 1, MessageType::MsgAppendResponse);
    ack.term = 1;
    ack.index = last + 5;
    assert_invalid(net.node_mut(1), ack);
    let mut rej = msg(2, 1, MessageType::MsgAppendResponse);
    rej.term = 1;
    rej.reject = true;
    rej.index = last;
    rej.reject_hint = last + 1;
    assert_invalid(net.node_mut(1), rej.clone());
    rej.reject_hint = 0;
    rej.log_term = 2;
    assert_invalid(net.node_mut(1), rej);
}

/// A vote request whose last log term is after its own term, or whose last
/// index and term disagree about an empty log.
#[test]
fn malformed_vote_request_refused_2aa() {
    let mut net = cluster(1);
    for (index, log_term) in [(5, 3), (0, 1), (5, 0)] {
        let mut m = msg(3, 2, MessageType::MsgRequestVote);
        m.term = 2;
        m.index = index;
        m.log_term = log_term;
        assert_invalid(net.node_mut(2), m);
    }
}

/// What survives validation does not panic deeper: a heartbeat's commit
/// index beyond the log is clamped to the log.
#[test]
fn heartbeat_commit_beyond_log_clamped_2ac() {
    let mut n = Node::with_log(2, &[1, 2], &[entry(1, 1), entry(2, 1)], hard_state(1, 1, 0));
    let mut hb = msg(1, 2, MessageType::MsgHeartbeat);
    hb.term = 1;
    hb.commit = 1 << 40;
    n.step(hb).unwrap();
    assert_eq!(n.raw.raft().raft_log().committed(), 2);
    n.handle_ready();
}

/// A follower forwards only its own requests: one a peer forwarded to it
/// (taking it for the leader) is dropped, so two nodes that each believe the
/// other leads — a forged heartbeat can cause it — cannot bounce a request
/// between them forever (the fuzz test found that livelock).
#[test]
fn forwarded_request_not_forwarded_again_2ac() {
    let mut net = cluster(1);
    let prop = with_entries(msg(3, 2, MessageType::MsgPropose), vec![Entry::default()]);
    let read = with_entries(msg(3, 2, MessageType::MsgReadIndex), vec![Entry::default()]);
    for m in [prop, read] {
        assert_eq!(net.node_mut(2).step(m), Err(Error::ProposalDropped));
        assert!(net.node_mut(2).handle_ready().is_empty());
    }
    let mut transfer = msg(3, 2, MessageType::MsgTransferLeader);
    transfer.term = 1;
    net.node_mut(2).step(transfer).unwrap();
    assert!(net.node_mut(2).handle_ready().is_empty());
    // Its own requests still go to the leader.
    net.propose(2, b"own").unwrap();
    assert_eq!(net.committed(2), net.committed(1));
    assert_eq!(&net.node(1).applied.last().unwrap().data[..], b"own");
}
