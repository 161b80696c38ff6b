//! Terms are finite: a message may carry at most term 2^62 (beyond it `term +
//! 1` could overflow), so a group whose term reached that limit could never
//! elect again. One forged message at the limit must not bring it there; a
//! node raises its term by at most a bounded step per message, while an honest
//! node behind by more than that step still catches up.

use raft::eraftpb::MessageType;
use raft::{Config, StateRole};

use crate::network::{msg, Network};
use crate::node::{entry, hard_state, Node};

/// The largest term a message may carry.
const LIMIT: u64 = 1 << 62;

/// Rounds of ticks (10 to an election timeout) a group gets to recover.
const ROUNDS: usize = 300;

/// Ticks every node until one leads and every node follows it, then commits a
/// proposal everywhere. Returns the leader's term.
fn must_elect_and_commit(net: &mut Network, what: &str) -> u64 {
    for round in 0..ROUNDS {
        net.tick_all();
        let leaders = net.leaders();
        if let [leader] = leaders[..] {
            let ids: Vec<u64> = net.peers.keys().copied().collect();
            if ids.iter().all(|&id| net.leader_of(id) == leader) {
                net.propose(leader, what.as_bytes()).unwrap();
                let c = net.committed(leader);
                for id in ids {
                    assert_eq!(net.committed(id), c, "{what}: node {id} behind");
                }
                let last = net.node(leader).applied.last().unwrap();
                assert_eq!(&last.data[..], what.as_bytes());
                println!("{what}: elected after {round} rounds");
                return net.term(leader);
            }
        }
    }
    let terms: Vec<u64> = net.peers.keys().map(|&id| net.term(id)).collect();
    panic!("{what}: no leader after {ROUNDS} rounds; terms {terms:?}");
}

fn configs() -> [(&'static str, fn(&mut Config)); 3] {
    [
        ("plain", |_| {}),
        ("pre-vote", |c| c.pre_vote = true),
        ("pre-vote + check-quorum", |c| {
            c.pre_vote = true;
            c.check_quorum = true;
        }),
    ]
}

/// A heartbeat forged in the leader's name at the largest term a message may
/// carry used to move the follower, then the leader, to that term, where no
/// vote could be sent again: the group stayed leaderless for good.
#[test]
fn forged_term_at_limit_leaves_group_electable_2aa() {
    for (name, f) in configs() {
        let mut net = Network::new_with(3, f);
        net.campaign(1);
        net.propose(1, b"before").unwrap();
        let mut hb = msg(1, 2, MessageType::MsgHeartbeat);
        hb.term = LIMIT;
        net.send(vec![hb]);
        assert!(net.term(2) < LIMIT / 2, "{name}: adopted {}", net.term(2));
        let term = must_elect_and_commit(&mut net, name);
        assert!(term < LIMIT / 2, "{name}: leader at term {term}");
    }
}

/// Every kind of message that raises the receiver's term is bounded alike,
/// whoever it seems to come from: a thousand of them, at once or one per
/// round of ticks, leave the group far from the limit, electing again soon
/// after they stop.
#[test]
fn repeated_forged_terms_stay_far_from_limit_2aa() {
    for ticks_between in [0, 1] {
        forge_repeatedly(ticks_between);
    }
}

fn forge_repeatedly(ticks_between: usize) {
    let kinds = [
        MessageType::MsgAppend,
        MessageType::MsgHeartbeat,
        MessageType::MsgRequestVote,
        MessageType::MsgAppendResponse,
        MessageType::MsgHeartbeatResponse,
        MessageType::MsgRequestVoteResponse,
    ];
    for (name, f) in configs() {
        let mut net = Network::new_with(3, f);
        net.campaign(1);
        for i in 0..1000u64 {
            let ty = kinds[(i % kinds.len() as u64) as usize];
            let (from, to) = [(1, 2), (2, 1), (3, 1), (2, 3)][(i % 4) as usize];
            let mut m = msg(from, to, ty);
            m.term = LIMIT;
            if ty == MessageType::MsgAppend {
                m.index = net.node(to).raw.raft().raft_log().last_index();
                m.log_term = net.node(to).raw.raft().raft_log().last_term();
            }
            net.send(vec![m]);
            for _ in 0..ticks_between {
                net.tick_all();
            }
        }
        let highest = net.peers.keys().map(|&id| net.term(id)).max().unwrap();
        assert!(
            highest < 1 << 40,
            "{name}: term {highest} after 1000 forged messages"
        );
        let term = must_elect_and_commit(&mut net, name);
        assert!(term < 1 << 40, "{name}: leader at term {term}");
    }
}

/// An honest node far behind in term — more than one step — still joins the
/// leader: it climbs a step per message until it reaches the leader's term.
#[test]
fn node_far_behind_in_term_catches_up_2aa() {
    let far = 5_000_000;
    let ids = [1, 2, 3];
    let ahead = |id| Node::with_log(id, &ids, &[entry(1, far)], hard_state(far, 1, 1));
    let behind = Node::with_log(3, &ids, &[], hard_state(1, 0, 0));
    let mut net = Network::from_nodes(vec![ahead(1), ahead(2), behind]);
    net.campaign(1);
    assert_eq!(net.state(1), StateRole::Leader);
    let term = must_elect_and_commit(&mut net, "far behind");
    assert!(term > far);
    assert_eq!(net.term(3), term);
}
