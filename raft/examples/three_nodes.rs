//! An in-memory three-node Tessera raft cluster: the nodes tick, elect a
//! leader, replicate ten proposals and apply them, with messages passed through
//! a simple in-process "network" (a queue).
//!
//! Run with `cargo run -p raft --example three_nodes`.

#![allow(clippy::field_reassign_with_default)]

use std::collections::{BTreeMap, VecDeque};

use raft::eraftpb::{EntryType, Message};
use raft::{Config, MemStorage, RawNode, StateRole};

struct Peer {
    node: RawNode<MemStorage>,
    storage: MemStorage,
    applied: Vec<String>,
}

impl Peer {
    fn new(id: u64, voters: &[u64]) -> Peer {
        let storage = MemStorage::new_with_conf_state((voters.to_vec(), vec![]).into());
        let config = Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            ..Config::default()
        };
        let node = RawNode::new(&config, storage.clone()).expect("valid config");
        Peer {
            node,
            storage,
            applied: Vec::new(),
        }
    }

    /// Runs the Ready loop once to quiescence; returns the messages to send.
    fn on_ready(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while self.node.has_ready() {
            let mut rd = self.node.ready();
            out.append(&mut rd.messages);
            if rd.snapshot.get_metadata().index > 0 {
                self.storage
                    .apply_snapshot(rd.snapshot.clone())
                    .expect("snapshot applies");
            }
            self.storage.append(&rd.entries).expect("append");
            if let Some(hs) = rd.hard_state.take() {
                self.storage.set_hardstate(hs);
            }
            out.append(&mut rd.persisted_messages);
            for e in rd.committed_entries.drain(..) {
                if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                    self.applied
                        .push(String::from_utf8_lossy(&e.data).into_owned());
                }
            }
            self.node.advance(rd);
        }
        out
    }
}

fn deliver(peers: &mut BTreeMap<u64, Peer>, mut queue: VecDeque<Message>) {
    while let Some(m) = queue.pop_front() {
        if let Some(p) = peers.get_mut(&m.to) {
            // Errors here are messages from unknown peers; a real transport
            // would log them.
            let _ = p.node.step(m);
            queue.extend(p.on_ready());
        }
    }
}

fn main() {
    let voters = [1, 2, 3];
    let mut peers: BTreeMap<u64, Peer> = voters
        .iter()
        .map(|&id| (id, Peer::new(id, &voters)))
        .collect();

    // Tick everyone until a leader emerges.
    let mut ticks = 0;
    let leader = loop {
        ticks += 1;
        let mut queue = VecDeque::new();
        for p in peers.values_mut() {
            p.node.tick();
            queue.extend(p.on_ready());
        }
        deliver(&mut peers, queue);
        if let Some((&id, _)) = peers
            .iter()
            .find(|(_, p)| p.node.raft().state() == StateRole::Leader)
        {
            break id;
        }
    };
    println!("node {leader} became leader after {ticks} ticks");

    for i in 0..10 {
        let p = peers.get_mut(&leader).expect("leader exists");
        p.node
            .propose(vec![], format!("put k{i} v{i}").into_bytes())
            .expect("leader accepts proposals");
        let out = p.on_ready();
        deliver(&mut peers, out.into());
    }
    // One heartbeat round tells the followers the final commit index.
    let p = peers.get_mut(&leader).expect("leader exists");
    p.node.tick();
    let out = p.on_ready();
    deliver(&mut peers, out.into());

    for (id, p) in &peers {
        println!(
            "node {id} applied {} commands: {:?}",
            p.applied.len(),
            p.applied
        );
        assert_eq!(p.applied.len(), 10);
    }
}
