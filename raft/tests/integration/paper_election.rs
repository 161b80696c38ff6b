//! Raft paper tests for terms (§5.1) and leader election (§5.2), plus the vote
//! restriction (§5.4.1), driven through `RawNode` one message at a time.

use raft::eraftpb::{Message, MessageType};
use raft::StateRole;

use crate::network::{msg, Network};
use crate::node::{entry, hard_state, Node};

fn msgs_of(ms: &[Message], t: MessageType) -> Vec<&Message> {
    ms.iter().filter(|m| m.get_msg_type() == t).collect()
}

/// Makes node 1 of `{1, 2, 3}` the leader of term 1 and drains its messages.
fn leader_node() -> Node {
    let mut n = Node::with_peers(1, &[1, 2, 3], &[]);
    n.raw.campaign().unwrap();
    n.handle_ready();
    let mut resp = msg(2, 1, MessageType::MsgRequestVoteResponse);
    resp.term = 1;
    n.step(resp).unwrap();
    n.handle_ready();
    assert_eq!(n.raw.raft().state(), StateRole::Leader);
    n
}

/// §5.1: "If one server's current term is smaller than the other's, then it
/// updates its current term to the larger value. If a candidate or leader
/// discovers that its term is out of date, it immediately reverts to follower."
#[test]
fn update_term_from_message_2aa() {
    for role in [StateRole::Follower, StateRole::Candidate, StateRole::Leader] {
        let mut n = match role {
            StateRole::Leader => leader_node(),
            _ => Node::with_peers(1, &[1, 2, 3], &[]),
        };
        if role == StateRole::Candidate {
            n.raw.campaign().unwrap();
        }
        assert_eq!(n.raw.raft().state(), role);
        let mut m = msg(2, 1, MessageType::MsgAppend);
        m.term = 5;
        n.step(m).unwrap();
        assert_eq!(n.raw.raft().term(), 5, "{role:?}");
        assert_eq!(n.raw.raft().state(), StateRole::Follower, "{role:?}");
        assert_eq!(n.raw.raft().leader_id(), 2, "{role:?}");
    }
}

/// §5.1: "If a server receives a request with a stale term number, it rejects
/// the request." Here: it is ignored and changes nothing.
#[test]
fn reject_stale_term_message_2aa() {
    let mut n = Node::with_log(1, &[1, 2, 3], &[], hard_state(2, 0, 0));
    n.handle_ready();
    for t in [
        MessageType::MsgAppend,
        MessageType::MsgRequestVote,
        MessageType::MsgHeartbeat,
    ] {
        let mut m = msg(2, 1, t);
        m.term = 1;
        n.step(m).unwrap();
        assert_eq!(n.raw.raft().term(), 2);
        assert_eq!(n.raw.raft().vote(), 0);
        assert_eq!(n.raw.raft().leader_id(), 0);
        assert!(n.handle_ready().is_empty(), "{t:?} must be ignored");
    }
}

/// §5.2: "When servers start up, they begin as followers."
#[test]
fn start_as_follower_2aa() {
    let n = Node::with_peers(1, &[1, 2, 3], &[]);
    assert_eq!(n.raw.raft().state(), StateRole::Follower);
    assert_eq!(n.raw.raft().term(), 0);
}

/// §5.2: "Leaders send periodic heartbeats to all followers in order to maintain
/// their authority."
#[test]
fn leader_bcast_beat_2aa() {
    let mut n = leader_node();
    n.raw.tick();
    let ms = n.handle_ready();
    let hb = msgs_of(&ms, MessageType::MsgHeartbeat);
    let mut to: Vec<u64> = hb.iter().map(|m| m.to).collect();
    to.sort_unstable();
    assert_eq!(to, vec![2, 3]);
    assert!(hb.iter().all(|m| m.term == 1 && m.from == 1));
}

/// §5.2: "If a follower receives no communication over a period of time called
/// the election timeout, then it ... begins an election": it increments its
/// term, votes for itself and asks every other server for its vote. A candidate
/// whose election times out starts a new one the same way.
#[test]
fn start_election_on_timeout_2aa() {
    for as_candidate in [false, true] {
        let mut n = Node::with_peers(1, &[1, 2, 3], &[]);
        if as_candidate {
            n.raw.campaign().unwrap();
            n.handle_ready();
        }
        let term0 = n.raw.raft().term();
        for _ in 0..2 * n.config.election_tick {
            n.raw.tick();
        }
        assert_eq!(n.raw.raft().term(), term0 + 1);
        assert_eq!(n.raw.raft().state(), StateRole::Candidate);
        assert_eq!(n.raw.raft().vote(), 1);
        let ms = n.handle_ready();
        let votes = msgs_of(&ms, MessageType::MsgRequestVote);
        let mut to: Vec<u64> = votes.iter().map(|m| m.to).collect();
        to.sort_unstable();
        assert_eq!(to, vec![2, 3]);
        assert!(votes.iter().all(|m| m.term == term0 + 1));
    }
}

/// §5.2: a candidate wins with votes from a majority, loses on a majority of
/// rejections, and otherwise keeps waiting.
#[test]
fn leader_election_in_one_round_rpc_2aa() {
    // (cluster size, votes granted by peers 2.., want state)
    let cases: Vec<(u64, Vec<(u64, bool)>, StateRole)> = vec![
        (1, vec![], StateRole::Leader),
        (3, vec![(2, true), (3, true)], StateRole::Leader),
        (3, vec![(2, true)], StateRole::Leader),
        (
            5,
            vec![(2, true), (3, true), (4, true), (5, true)],
            StateRole::Leader,
        ),
        (5, vec![(2, true), (3, true), (4, true)], StateRole::Leader),
        (5, vec![(2, true), (3, true)], StateRole::Leader),
        (3, vec![(2, false), (3, false)], StateRole::Follower),
        (
            5,
            vec![(2, false), (3, false), (4, false), (5, false)],
            StateRole::Follower,
        ),
        (
            5,
            vec![(2, true), (3, false), (4, false), (5, false)],
            StateRole::Follower,
        ),
        (3, vec![], StateRole::Candidate),
        (5, vec![(2, true)], StateRole::Candidate),
        (5, vec![(2, false), (3, false)], StateRole::Candidate),
        (5, vec![], StateRole::Candidate),
    ];
    for (i, (size, votes, want)) in cases.into_iter().enumerate() {
        let ids: Vec<u64> = (1..=size).collect();
        let mut n = Node::with_peers(1, &ids, &[]);
        n.raw.campaign().unwrap();
        n.handle_ready();
        for (from, granted) in votes {
            let mut m = msg(from, 1, MessageType::MsgRequestVoteResponse);
            m.term = 1;
            m.reject = !granted;
            n.step(m).unwrap();
        }
        assert_eq!(n.raw.raft().state(), want, "case {i}");
        assert_eq!(n.raw.raft().term(), 1, "case {i}");
    }
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a
/// first-come-first-served basis."
#[test]
fn follower_vote_2aa() {
    // (already voted for, request from, want reject)
    let cases = [
        (0, 2, false),
        (0, 3, false),
        (2, 2, false),
        (3, 3, false),
        (2, 3, true),
        (3, 2, true),
    ];
    for (i, (vote, from, wreject)) in cases.into_iter().enumerate() {
        let mut n = Node::with_log(1, &[1, 2, 3], &[], hard_state(1, 0, vote));
        let mut m = msg(from, 1, MessageType::MsgRequestVote);
        m.term = 1;
        n.step(m).unwrap();
        let ms = n.handle_ready();
        let resp = msgs_of(&ms, MessageType::MsgRequestVoteResponse);
        assert_eq!(resp.len(), 1, "case {i}");
        assert_eq!(resp[0].reject, wreject, "case {i}");
        assert_eq!(resp[0].to, from, "case {i}");
    }
}

/// §5.2: "While waiting for votes, a candidate may receive an AppendEntries RPC
/// from another server claiming to be leader. If the leader's term is at least
/// as large as the candidate's current term, then the candidate ... returns to
/// follower state."
#[test]
fn candidate_fallback_2aa() {
    for term in [1, 2] {
        let mut n = Node::with_peers(1, &[1, 2, 3], &[]);
        n.raw.campaign().unwrap();
        assert_eq!(n.raw.raft().state(), StateRole::Candidate);
        let mut m = msg(2, 1, MessageType::MsgAppend);
        m.term = term;
        n.step(m).unwrap();
        assert_eq!(n.raw.raft().state(), StateRole::Follower);
        assert_eq!(n.raw.raft().term(), term);
        assert_eq!(n.raw.raft().leader_id(), 2);
    }
}

/// §5.2: "Raft uses randomized election timeouts"; drawn from
/// [election_tick, 2 * election_tick), and not all the same.
#[test]
fn election_timeout_randomized_2aa() {
    let mut seen = std::collections::BTreeSet::new();
    for id in 1..=50 {
        let mut n = Node::with_peers(id, &[id], &[]);
        let mut ticks = 0;
        while n.raw.raft().state() != StateRole::Leader {
            n.raw.tick();
            ticks += 1;
            assert!(
                ticks < 2 * n.config.election_tick,
                "node {id} never timed out"
            );
        }
        assert!(ticks >= n.config.election_tick);
        seen.insert(ticks);
    }
    assert!(seen.len() > 3, "timeouts are not randomized: {seen:?}");
}

/// §5.2: randomized timeouts make it unlikely that several followers time out at
/// once. Over many rounds of a 5-node cluster, conflicts stay rare.
#[test]
fn followers_election_timeout_nonconflict_2aa() {
    let mut conflicts = 0;
    let rounds = 200;
    for round in 0..rounds {
        let mut nodes: Vec<Node> = (1..=5)
            .map(|id| {
                let mut n = Node::with_peers(id, &[1, 2, 3, 4, 5], &[]);
                n.config.seed = round * 10 + id;
                let cfg = n.config.clone();
                n.raw = raft::RawNode::new(&cfg, n.storage.clone()).unwrap();
                n
            })
            .collect();
        let mut timed_out = 0;
        while timed_out == 0 {
            for n in &mut nodes {
                n.raw.tick();
                if n.raw.raft().state() == StateRole::Candidate {
                    timed_out += 1;
                }
            }
        }
        if timed_out > 1 {
            conflicts += 1;
        }
    }
    // Ten distinct timeouts and five nodes: about 37% of rounds see a tie.
    assert!(
        conflicts < rounds * 6 / 10,
        "{conflicts} conflicts in {rounds} rounds"
    );
}

/// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that
/// of the candidate."
#[test]
fn voter_rejects_less_up_to_date_candidate_2aa() {
    let ents = [entry(1, 1), entry(2, 2)];
    // (candidate last index, candidate last term, want reject)
    let cases = [
        (2, 1, true),
        (3, 1, true),
        (1, 2, true),
        (2, 2, false),
        (3, 2, false),
        (1, 3, false),
        (2, 3, false),
    ];
    for (i, (index, log_term, wreject)) in cases.into_iter().enumerate() {
        let mut n = Node::with_log(1, &[1, 2], &ents, hard_state(2, 0, 0));
        let mut m = msg(2, 1, MessageType::MsgRequestVote);
        m.term = 3;
        m.index = index;
        m.log_term = log_term;
        n.step(m).unwrap();
        let ms = n.handle_ready();
        let resp = msgs_of(&ms, MessageType::MsgRequestVoteResponse);
        assert_eq!(resp.len(), 1, "case {i}");
        assert_eq!(resp[0].reject, wreject, "case {i}");
    }
}

/// §5.2: the winner of an election becomes leader of every node in a network
/// where a quorum is reachable; without one, it stays a candidate.
#[test]
fn leader_election_with_black_holes_2aa() {
    // (cluster size, ids present in the network, want state of node 1)
    let cases: Vec<(u64, Vec<u64>, StateRole)> = vec![
        (3, vec![1, 2, 3], StateRole::Leader),
        (3, vec![1, 2], StateRole::Leader),
        (3, vec![1], StateRole::Candidate),
        (4, vec![1, 2], StateRole::Candidate),
        (5, vec![1, 2, 3], StateRole::Leader),
        (5, vec![1, 2], StateRole::Candidate),
    ];
    for (i, (size, present, want)) in cases.into_iter().enumerate() {
        let mut net = Network::new(size);
        for id in 1..=size {
            if !present.contains(&id) {
                net.remove_node(id);
            }
        }
        net.campaign(1);
        assert_eq!(net.state(1), want, "case {i}");
        assert_eq!(net.term(1), 1, "case {i}");
    }
}

/// §5.2: any node can be elected; each election moves the term on and makes the
/// others followers of the winner.
#[test]
fn leader_cycle_2aa() {
    let mut net = Network::new(3);
    for campaigner in [1, 2, 3, 1] {
        net.campaign(campaigner);
        for id in 1..=3 {
            let want = if id == campaigner {
                StateRole::Leader
            } else {
                StateRole::Follower
            };
            assert_eq!(net.state(id), want, "campaigner {campaigner}, node {id}");
            assert_eq!(net.leader_of(id), campaigner);
        }
    }
    assert_eq!(net.term(1), 4);
}

/// §5.2: a vote request of a newer term is answered from any role, and a
/// granted vote makes the voter a follower of that term.
#[test]
fn vote_from_any_state_2aa() {
    for role in [StateRole::Follower, StateRole::Candidate, StateRole::Leader] {
        let mut n = match role {
            StateRole::Leader => leader_node(),
            _ => Node::with_peers(1, &[1, 2, 3], &[]),
        };
        if role == StateRole::Candidate {
            n.raw.campaign().unwrap();
        }
        n.handle_ready();
        let term = n.raw.raft().term() + 1;
        let mut m = msg(2, 1, MessageType::MsgRequestVote);
        m.term = term;
        m.index = 42;
        m.log_term = term;
        n.step(m).unwrap();
        let ms = n.handle_ready();
        let resp = msgs_of(&ms, MessageType::MsgRequestVoteResponse);
        assert_eq!(resp.len(), 1, "{role:?}");
        assert!(!resp[0].reject, "{role:?}");
        assert_eq!(n.raw.raft().state(), StateRole::Follower, "{role:?}");
        assert_eq!(n.raw.raft().term(), term, "{role:?}");
        assert_eq!(n.raw.raft().vote(), 2, "{role:?}");
    }
}
