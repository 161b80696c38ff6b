//! Raft paper tests for log replication (§5.3) and safety (§5.4): the append
//! consistency check, conflict resolution, commit rules, leader append-only and
//! leader completeness.

use raft::eraftpb::{Entry, Message, MessageType};
use raft::StateRole;

use crate::network::{msg, Network};
use crate::node::{entry, entry_with_data, hard_state, Node};

/// Elects `n` (a node of `voters`) by feeding it granted votes from the others.
pub fn elect(n: &mut Node, voters: &[u64]) {
    n.raw.campaign().unwrap();
    n.handle_ready();
    let (term, me) = (n.raw.raft().term(), n.id());
    for &v in voters.iter().filter(|&&v| v != me) {
        if n.raw.raft().state() == StateRole::Leader {
            break;
        }
        let mut m = msg(v, n.id(), MessageType::MsgRequestVoteResponse);
        m.term = term;
        n.step(m).unwrap();
    }
    assert_eq!(
        n.raw.raft().state(),
        StateRole::Leader,
        "node {} not elected",
        n.id()
    );
}

fn appends(ms: &[Message]) -> Vec<&Message> {
    ms.iter()
        .filter(|m| m.get_msg_type() == MessageType::MsgAppend)
        .collect()
}

fn app_resp(from: u64, to: u64, term: u64, index: u64) -> Message {
    let mut m = msg(from, to, MessageType::MsgAppendResponse);
    m.term = term;
    m.index = index;
    m
}

fn terms(ents: &[Entry]) -> Vec<u64> {
    ents.iter().map(|e| e.term).collect()
}

/// §5.3: "The leader appends the command to its log as a new entry, then issues
/// AppendEntries RPCs in parallel to each of the other servers to replicate the
/// entry."
#[test]
fn leader_start_replication_2ab() {
    let mut n = Node::with_peers(1, &[1, 2, 3], &[]);
    elect(&mut n, &[1, 2, 3]);
    n.handle_ready();
    for f in [2, 3] {
        n.step(app_resp(f, 1, 1, 1)).unwrap();
    }
    n.handle_ready();
    let li = n.raw.raft().raft_log().last_index();
    n.raw.propose(vec![], b"some data".to_vec()).unwrap();
    let ms = n.handle_ready();
    let apps = appends(&ms);
    assert_eq!(apps.len(), 2);
    for m in apps {
        assert_eq!((m.index, m.log_term, m.commit), (li, 1, li));
        assert_eq!(m.get_entries().len(), 1);
        assert_eq!(m.get_entries()[0].index, li + 1);
        assert_eq!(&m.get_entries()[0].data[..], b"some data");
    }
    assert_eq!(n.raw.raft().raft_log().last_index(), li + 1);
}

/// §5.3: "A log entry is committed once the leader that created the entry has
/// replicated it on a majority of the servers." The commit index then travels
/// in the next AppendEntries.
#[test]
fn leader_commit_entry_2ab() {
    let mut net = Network::new(3);
    net.campaign(1);
    let li = net.node(1).raw.raft().raft_log().last_index();
    net.propose(1, b"some data").unwrap();
    assert_eq!(net.committed(1), li + 1);
    for id in [2, 3] {
        assert_eq!(net.committed(id), li + 1, "follower {id} learns the commit");
    }
}

/// §5.3: the leader commits once a majority (counting itself) has the entry,
/// whatever the others answer.
#[test]
fn leader_acknowledge_commit_2ab() {
    // (size, followers that acknowledge, want committed)
    let cases: Vec<(u64, Vec<u64>, bool)> = vec![
        (1, vec![], true),
        (3, vec![], false),
        (3, vec![2], true),
        (3, vec![2, 3], true),
        (5, vec![], false),
        (5, vec![2], false),
        (5, vec![2, 3], true),
        (5, vec![2, 3, 4, 5], true),
    ];
    for (i, (size, acks, want)) in cases.into_iter().enumerate() {
        let ids: Vec<u64> = (1..=size).collect();
        let mut n = Node::with_peers(1, &ids, &[]);
        elect(&mut n, &ids);
        n.handle_ready();
        let li = n.raw.raft().raft_log().last_index();
        n.raw.propose(vec![], b"x".to_vec()).unwrap();
        n.handle_ready();
        for f in acks {
            n.step(app_resp(f, 1, 1, li + 1)).unwrap();
        }
        n.handle_ready();
        assert_eq!(n.raw.raft().raft_log().committed() > li, want, "case {i}");
    }
}

/// §5.3: "When the leader commits an entry it also commits all preceding entries
/// in the leader's log, including entries created by previous leaders."
#[test]
fn leader_commit_preceding_entries_2ab() {
    let cases: Vec<Vec<Entry>> = vec![
        vec![],
        vec![entry(1, 2)],
        vec![entry(1, 1), entry(2, 2)],
        vec![entry(1, 1)],
    ];
    for (i, ents) in cases.into_iter().enumerate() {
        let mut n = Node::with_log(1, &[1, 2, 3], &ents, hard_state(2, 0, 0));
        elect(&mut n, &[1, 2, 3]);
        n.handle_ready();
        n.raw.propose(vec![], b"some data".to_vec()).unwrap();
        n.handle_ready();
        let li = n.raw.raft().raft_log().last_index();
        n.step(app_resp(2, 1, 3, li)).unwrap();
        n.handle_ready();
        assert_eq!(n.raw.raft().raft_log().committed(), li, "case {i}");
        let applied: Vec<u64> = n.applied.iter().map(|a| a.index).collect();
        assert_eq!(applied, (1..=li).collect::<Vec<_>>(), "case {i}");
    }
}

/// §5.3: "Once a follower learns that a log entry is committed, it applies the
/// entry to its local state machine (in log order)."
#[test]
fn follower_commit_entry_2ab() {
    // (entries sent, leader commit)
    let cases: Vec<(Vec<Entry>, u64)> = vec![
        (vec![entry_with_data(1, 1, b"a")], 1),
        (
            vec![entry_with_data(1, 1, b"a"), entry_with_data(2, 1, b"b")],
            2,
        ),
        (
            vec![entry_with_data(1, 1, b"a"), entry_with_data(2, 1, b"b")],
            1,
        ),
        (
            vec![entry_with_data(1, 1, b"a"), entry_with_data(2, 1, b"b")],
            5,
        ),
    ];
    for (i, (ents, commit)) in cases.into_iter().enumerate() {
        let mut n = Node::with_peers(1, &[1, 2, 3], &[]);
        let mut m = msg(2, 1, MessageType::MsgAppend);
        m.term = 1;
        m.commit = commit;
        m.set_entries(ents.clone().into());
        n.step(m).unwrap();
        n.handle_ready();
        let want = commit.min(ents.len() as u64);
        assert_eq!(n.raw.raft().raft_log().committed(), want, "case {i}");
        let applied: Vec<Vec<u8>> = n.applied.iter().map(|a| a.data.clone()).collect();
        let want_data: Vec<Vec<u8>> = ents[..want as usize]
            .iter()
            .map(|e| e.data.to_vec())
            .collect();
        assert_eq!(applied, want_data, "case {i}");
    }
}

/// §5.3: "If the follower does not find an entry in its log with the same index
/// and term, then it refuses the new entries." The rejection carries a hint.
#[test]
fn follower_check_msg_append_2ab() {
    let ents = [entry(1, 1), entry(2, 2)];
    // (prev log term, prev index, want index, want reject, want hint)
    let cases = [
        (0, 0, 1, false, 0),
        (ents[0].term, ents[0].index, 1, false, 0),
        (ents[1].term, ents[1].index, 2, false, 0),
        (ents[0].term, ents[1].index, 2, true, 1),
        (ents[1].term + 1, ents[1].index + 1, 3, true, 2),
    ];
    for (i, (log_term, index, windex, wreject, whint)) in cases.into_iter().enumerate() {
        let mut n = Node::with_log(1, &[1, 2, 3], &ents, hard_state(2, 1, 0));
        let mut m = msg(2, 1, MessageType::MsgAppend);
        // A leader of term 3: its prev entry may be of term 3 (the last case).
        m.term = 3;
        m.log_term = log_term;
        m.index = index;
        n.step(m).unwrap();
        let ms = n.handle_ready();
        let resp: Vec<&Message> = ms
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgAppendResponse)
            .collect();
        assert_eq!(resp.len(), 1, "case {i}");
        let r = resp[0];
        let got = (r.index, r.reject, if r.reject { r.reject_hint } else { 0 });
        assert_eq!(got, (windex, wreject, whint), "case {i}");
    }
}

/// §5.3: "If an existing entry conflicts with a new one (same index but
/// different terms), delete the existing entry and all that follow it; append
/// any new entries not already in the log."
#[test]
fn follower_append_entries_2ab() {
    // (prev index, prev term, new entries, want terms, want unstable-replaced)
    let cases: Vec<(u64, u64, Vec<Entry>, Vec<u64>)> = vec![
        (2, 2, vec![entry(3, 3)], vec![1, 2, 3]),
        (1, 1, vec![entry(2, 3), entry(3, 4)], vec![1, 3, 4]),
        (0, 0, vec![entry(1, 1)], vec![1, 2]),
        (0, 0, vec![entry(1, 3)], vec![3]),
    ];
    for (i, (index, log_term, ents, want)) in cases.into_iter().enumerate() {
        let mut n = Node::with_log(
            1,
            &[1, 2, 3],
            &[entry(1, 1), entry(2, 2)],
            hard_state(2, 0, 0),
        );
        let mut m = msg(2, 1, MessageType::MsgAppend);
        m.term = 4;
        m.index = index;
        m.log_term = log_term;
        m.set_entries(ents.into());
        n.step(m).unwrap();
        n.handle_ready();
        assert_eq!(terms(&n.durable_entries()), want, "case {i}");
    }
}

/// §5.3 (figure 7): whatever the follower's log, the leader makes it identical to
/// its own: missing entries are added, extraneous ones removed.
#[test]
fn leader_sync_follower_log_2ab() {
    let mk = |ts: &[u64]| -> Vec<Entry> {
        ts.iter()
            .enumerate()
            .map(|(i, &t)| entry(i as u64 + 1, t))
            .collect()
    };
    let lead = mk(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]);
    let followers = [
        mk(&[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        mk(&[1, 1, 1, 4]),
        mk(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        mk(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        mk(&[1, 1, 1, 4, 4, 4, 4]),
        mk(&[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    for (i, f) in followers.into_iter().enumerate() {
        let leader = Node::with_log(1, &[1, 2, 3], &lead, hard_state(8, 0, 0));
        let follower = Node::with_log(2, &[1, 2, 3], &f, hard_state(7, 0, 0));
        // Node 3 is absent; its vote is injected so that node 1 wins even when the
        // follower's log is more up-to-date.
        let mut net = Network::from_nodes(vec![leader, follower]);
        net.campaign(1);
        let term = net.term(1);
        let mut vote = msg(3, 1, MessageType::MsgRequestVoteResponse);
        vote.term = term;
        net.send(vec![vote]);
        assert_eq!(net.state(1), StateRole::Leader, "case {i}");
        net.propose(1, b"").unwrap();
        net.tick(1);
        let l = net.node(1).durable_entries();
        let f = net.node(2).durable_entries();
        assert_eq!(terms(&f), terms(&l), "case {i}");
        assert_eq!(f, l, "case {i}");
    }
}

/// §5.2/§5.4.1: a vote request carries the candidate's last log index and term.
#[test]
fn vote_request_2ab() {
    let cases = [(vec![entry(1, 1)], 2), (vec![entry(1, 1), entry(2, 2)], 3)];
    for (i, (ents, term)) in cases.into_iter().enumerate() {
        let mut n = Node::with_peers(1, &[1, 2, 3], &[]);
        let mut m = msg(2, 1, MessageType::MsgAppend);
        m.term = term;
        m.set_entries(ents.clone().into());
        n.step(m).unwrap();
        n.handle_ready();
        n.raw.campaign().unwrap();
        let ms = n.handle_ready();
        let votes: Vec<&Message> = ms
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgRequestVote)
            .collect();
        assert_eq!(votes.len(), 2, "case {i}");
        let last = ents.last().unwrap();
        for v in votes {
            assert_eq!(
                (v.term, v.index, v.log_term),
                (term + 1, last.index, last.term),
                "case {i}"
            );
        }
    }
}

/// §5.4.2: "Raft never commits log entries from previous terms by counting
/// replicas. Only log entries from the leader's current term are committed by
/// counting replicas."
#[test]
fn leader_only_commits_log_from_current_term_2ab() {
    let ents = [entry(1, 1), entry(2, 2)];
    // (index acknowledged by the follower, want committed)
    for (i, (index, want)) in [(1, 0), (2, 0), (3, 3)].into_iter().enumerate() {
        let mut n = Node::with_log(1, &[1, 2], &ents, hard_state(2, 0, 0));
        elect(&mut n, &[1, 2]);
        n.handle_ready();
        assert_eq!(n.raw.raft().term(), 3);
        n.step(app_resp(2, 1, 3, index)).unwrap();
        n.handle_ready();
        assert_eq!(n.raw.raft().raft_log().committed(), want, "case {i}");
    }
}

/// §5.4.1 (leader completeness): a node missing a committed entry cannot become
/// leader; a node holding all committed entries can.
#[test]
fn leader_completeness_2ab() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(3);
    net.propose(1, b"committed").unwrap();
    let committed = net.committed(1);
    net.recover();
    net.isolate(1);
    // 3 lacks the committed entry: 2 refuses it.
    net.campaign(3);
    assert_ne!(net.state(3), StateRole::Leader);
    net.campaign(2);
    assert_eq!(net.state(2), StateRole::Leader);
    let l = net.node(2).durable_entries();
    assert!(l
        .iter()
        .any(|e| e.index == committed && &e.data[..] == b"committed"));
}

/// §5.3 (leader append-only): a leader never overwrites or deletes entries in its
/// own log; it only appends.
#[test]
fn leader_append_only_2ab() {
    let mut net = Network::new(3);
    net.campaign(1);
    let mut seen: Vec<Entry> = Vec::new();
    for i in 0..5u8 {
        net.propose(1, &[i]).unwrap();
        // Conflicting traffic from a stale node must not change the leader's log.
        let mut stale = msg(3, 1, MessageType::MsgAppend);
        stale.term = 1;
        stale.set_entries(vec![entry(2, 1)].into());
        net.send(vec![stale]);
        let log = net.node(1).durable_entries();
        assert_eq!(&log[..seen.len()], &seen[..], "leader log changed");
        seen = log;
    }
    assert_eq!(net.state(1), StateRole::Leader);
}
