//! `RawNode` and `Ready`: the contract between the raft core and the application
//! — what each `Ready` carries, when messages may be sent, synchronous and
//! asynchronous persistence, restarts.

use raft::eraftpb::{Entry, MessageType, Snapshot};
use raft::{Config, Error, MemStorage, RawNode, StateRole, Storage};

use crate::network::msg;
use crate::node::{conf_state, config, entry, hard_state};

fn single_node() -> (RawNode<MemStorage>, MemStorage) {
    let s = MemStorage::new_with_conf_state(conf_state(&[1], &[]));
    (RawNode::new(&config(1), s.clone()).unwrap(), s)
}

/// Persists a Ready the simple way and advances.
fn persist_and_advance(n: &mut RawNode<MemStorage>, s: &MemStorage) -> Vec<Entry> {
    let mut committed = Vec::new();
    while n.has_ready() {
        let rd = n.ready();
        s.append(&rd.entries).unwrap();
        if let Some(hs) = &rd.hard_state {
            s.set_hardstate(hs.clone());
        }
        committed.extend(rd.committed_entries.iter().cloned());
        n.advance(rd);
    }
    committed
}

#[test]
fn rawnode_invalid_config_2ac() {
    let s = MemStorage::new_with_conf_state(conf_state(&[1], &[]));
    let cfg = Config {
        election_tick: 1,
        heartbeat_tick: 1,
        ..config(1)
    };
    assert!(matches!(
        RawNode::new(&cfg, s.clone()),
        Err(Error::ConfigInvalid(_))
    ));
    assert!(matches!(
        RawNode::new(&config(0), s),
        Err(Error::ConfigInvalid(_))
    ));
}

#[test]
fn rawnode_step_rejects_local_and_unknown_2ac() {
    let (mut n, _) = single_node();
    for t in [
        MessageType::MsgHup,
        MessageType::MsgBeat,
        MessageType::MsgUnreachable,
        MessageType::MsgSnapStatus,
        MessageType::MsgCheckQuorum,
    ] {
        assert_eq!(n.step(msg(2, 1, t)), Err(Error::StepLocalMsg), "{t:?}");
    }
    let mut resp = msg(9, 1, MessageType::MsgAppendResponse);
    resp.term = 1;
    assert_eq!(n.step(resp), Err(Error::StepPeerNotFound));
    // A request from an unknown peer is fine (it may be a newer member).
    let mut app = msg(9, 1, MessageType::MsgHeartbeat);
    app.term = 1;
    assert!(n.step(app).is_ok());
}

/// The first Readys of a bootstrapped single node: election, the no-op, commit.
#[test]
fn rawnode_start_2ac() {
    let (mut n, s) = single_node();
    assert!(!n.has_ready());
    n.campaign().unwrap();
    let rd = n.ready();
    assert_eq!(rd.soft_state.unwrap().raft_state, StateRole::Leader);
    assert_eq!(rd.hard_state, Some(hard_state(1, 0, 1)));
    assert_eq!(rd.entries.len(), 1, "the leader's no-op");
    assert!(
        rd.committed_entries.is_empty(),
        "not committed before it is durable"
    );
    assert!(rd.must_sync);
    assert!(rd.messages.is_empty() && rd.persisted_messages.is_empty());
    s.append(&rd.entries).unwrap();
    s.set_hardstate(rd.hard_state.clone().unwrap());
    n.advance(rd);
    // Durable now: the node counts itself and commits.
    let rd = n.ready();
    assert_eq!(rd.hard_state, Some(hard_state(1, 1, 1)));
    assert!(!rd.must_sync, "a commit-only change needs no sync");
    assert_eq!(rd.committed_entries.len(), 1);
    n.advance(rd);
    n.propose(vec![], b"foo".to_vec()).unwrap();
    let committed = persist_and_advance(&mut n, &s);
    assert_eq!(&committed[0].data[..], b"foo");
    assert!(!n.has_ready());
    assert_eq!(n.status().applied, 2);
}

/// Calling `ready` twice hands out each entry once.
#[test]
fn rawnode_ready_twice_2ac() {
    let (mut n, _s) = single_node();
    n.campaign().unwrap();
    let a = n.ready();
    n.propose(vec![], b"x".to_vec()).unwrap();
    let b = n.ready();
    assert_eq!(a.entries.len(), 1);
    assert_eq!(b.entries.len(), 1);
    assert_ne!(a.entries[0].index, b.entries[0].index);
    assert!(b.number() > a.number());
    assert!(!n.has_ready());
}

/// A follower's acknowledgements and votes wait for persistence; a leader's
/// appends go at once.
#[test]
fn rawnode_persisted_messages_2ac() {
    let s = MemStorage::new_with_conf_state(conf_state(&[1, 2, 3], &[]));
    let mut n = RawNode::new(&config(1), s.clone()).unwrap();
    n.campaign().unwrap();
    let rd = n.ready();
    assert!(rd.messages.is_empty());
    assert_eq!(
        rd.persisted_messages.len(),
        2,
        "vote requests need the durable vote"
    );
    n.advance(rd);
    let mut v = msg(2, 1, MessageType::MsgRequestVoteResponse);
    v.term = 1;
    n.step(v).unwrap();
    let rd = n.ready();
    let apps = rd
        .messages
        .iter()
        .filter(|m| m.get_msg_type() == MessageType::MsgAppend);
    assert_eq!(
        apps.count(),
        2,
        "a leader's appends may precede its own write"
    );
    assert!(rd.persisted_messages.is_empty());
    n.advance(rd);

    let f = MemStorage::new_with_conf_state(conf_state(&[1, 2, 3], &[]));
    let mut fnode = RawNode::new(&config(2), f).unwrap();
    let mut app = msg(1, 2, MessageType::MsgAppend);
    app.term = 1;
    app.set_entries(vec![entry(1, 1)].into());
    fnode.step(app).unwrap();
    let rd = fnode.ready();
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages.len(), 1);
    assert_eq!(
        rd.persisted_messages[0].get_msg_type(),
        MessageType::MsgAppendResponse
    );
}

/// Asynchronous persistence: a leader hands out Readys without waiting, and
/// commits only once its own write is reported with `on_persist_ready`.
#[test]
fn rawnode_async_persistence_2ac() {
    let s = MemStorage::new_with_conf_state(conf_state(&[1, 2], &[]));
    let mut n = RawNode::new(&config(1), s.clone()).unwrap();
    n.campaign().unwrap();
    let rd = n.ready();
    s.set_hardstate(rd.hard_state.clone().unwrap());
    n.advance(rd);
    let mut v = msg(2, 1, MessageType::MsgRequestVoteResponse);
    v.term = 1;
    n.step(v).unwrap();
    let rd1 = n.ready();
    let noop = rd1.entries.clone();
    let number = rd1.number();
    n.advance_append_async(rd1);
    n.propose(vec![], b"a".to_vec()).unwrap();
    let rd2 = n.ready();
    assert_eq!(rd2.entries.len(), 1, "only the new entry");
    let rd2_entries = rd2.entries.clone();
    let number2 = rd2.number();
    n.advance_append_async(rd2);
    // The follower acknowledges everything, but the leader's own log is not
    // durable: no quorum yet.
    let mut ack = msg(2, 1, MessageType::MsgAppendResponse);
    ack.term = 1;
    ack.index = 2;
    n.step(ack).unwrap();
    assert_eq!(n.raft().raft_log().committed(), 0);
    s.append(&noop).unwrap();
    n.on_persist_ready(number);
    assert_eq!(n.raft().raft_log().committed(), 1);
    s.append(&rd2_entries).unwrap();
    n.on_persist_ready(number2);
    assert_eq!(n.raft().raft_log().committed(), 2);
    let rd = n.ready();
    assert_eq!(rd.committed_entries.len(), 2);
    let last = rd.committed_entries.last().unwrap().index;
    n.advance_append(rd);
    assert_eq!(n.status().applied, 0);
    n.advance_apply_to(last);
    assert_eq!(n.status().applied, 2);
}

/// A restarted node hands out its committed but unapplied entries, and nothing
/// to persist.
#[test]
fn rawnode_restart_2ac() {
    let s = MemStorage::new_with_conf_state(conf_state(&[1, 2], &[]));
    s.append(&[entry(1, 1), entry(2, 1)]).unwrap();
    s.set_hardstate(hard_state(1, 1, 0));
    let mut n = RawNode::new(&config(1), s.clone()).unwrap();
    let rd = n.ready();
    assert!(rd.hard_state.is_none());
    assert!(rd.entries.is_empty());
    assert_eq!(rd.committed_entries, vec![entry(1, 1)]);
    n.advance(rd);
    assert!(!n.has_ready());
    // With `applied` set, entries already applied are not handed out again.
    let cfg = Config {
        applied: 1,
        ..config(1)
    };
    let n = RawNode::new(&cfg, s).unwrap();
    assert!(!n.has_ready());
    assert_eq!(n.status().applied, 1);
    assert_eq!(n.raft().term(), 1);
}

/// A node restarting from a snapshot starts after it.
#[test]
fn rawnode_restart_from_snapshot_2ac() {
    let s = MemStorage::new();
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 2;
    snap.mut_metadata().term = 1;
    snap.mut_metadata().set_conf_state(conf_state(&[1, 2], &[]));
    s.apply_snapshot(snap).unwrap();
    s.append(&[entry(3, 1)]).unwrap();
    s.set_hardstate(hard_state(1, 3, 0));
    let mut n = RawNode::new(&config(1), s.clone()).unwrap();
    let rd = n.ready();
    assert_eq!(rd.committed_entries, vec![entry(3, 1)]);
    n.advance(rd);
    assert_eq!(n.raft().raft_log().first_index(), 3);
    assert_eq!(s.first_index().unwrap(), 3);
}

/// `status` reports the progress of every member only on the leader.
#[test]
fn rawnode_status_2ac() {
    let (mut n, s) = single_node();
    assert!(n.status().progress.is_none());
    n.campaign().unwrap();
    persist_and_advance(&mut n, &s);
    let st = n.status();
    assert_eq!(st.soft_state.raft_state, StateRole::Leader);
    let prs = st.progress.unwrap();
    assert_eq!(prs.len(), 1);
    assert_eq!(prs[&1].matched(), 1);
    assert_eq!(st.hard_state, hard_state(1, 1, 1));
}

/// A leader elected with entries it cannot commit yet reports nothing
/// committed; the soft state reports role changes once.
#[test]
fn rawnode_soft_state_changes_once_2ac() {
    let (mut n, s) = single_node();
    n.campaign().unwrap();
    let rd = n.ready();
    assert!(rd.soft_state.is_some());
    s.append(&rd.entries).unwrap();
    n.advance(rd);
    let rd = n.ready();
    assert!(rd.soft_state.is_none());
    n.advance(rd);
}
