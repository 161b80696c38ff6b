//! The `Network` harness: a set of in-memory nodes and a message router that
//! delivers to quiescence, with seeded drops, cuts, isolation and ignored message
//! types. A peer missing from the network is a black hole.

use std::collections::{BTreeMap, VecDeque};

use raft::eraftpb::{Message, MessageType};
use raft::{Config, MemStorage, StateRole};

use crate::node::{conf_state, config, Node};

/// The harness's only source of randomness, seeded per test.
pub use raft::SplitMix64 as Rng;

pub struct Network {
    pub peers: BTreeMap<u64, Node>,
    drops: BTreeMap<(u64, u64), f64>,
    ignored: Vec<MessageType>,
    rng: Rng,
    pub seed: u64,
    /// Every message delivered, for tests that inspect traffic.
    pub delivered: Vec<Message>,
}

impl Network {
    /// A cluster of voters `1..=n` with the default test config.
    pub fn new(n: u64) -> Network {
        Network::new_with(n, |_| {})
    }

    /// A cluster of voters `1..=n`, each config adjusted by `f`.
    pub fn new_with(n: u64, f: impl Fn(&mut Config)) -> Network {
        let ids: Vec<u64> = (1..=n).collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut c = config(id);
                f(&mut c);
                Node::new(c, MemStorage::new_with_conf_state(conf_state(&ids, &[])))
            })
            .collect();
        Network::from_nodes(nodes)
    }

    /// A network of the given nodes (ids from their configs).
    pub fn from_nodes(nodes: Vec<Node>) -> Network {
        let seed = 0x07E5_5E7A;
        Network {
            peers: nodes.into_iter().map(|n| (n.id(), n)).collect(),
            drops: BTreeMap::new(),
            ignored: Vec::new(),
            rng: Rng::new(seed),
            seed,
            delivered: Vec::new(),
        }
    }

    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
        self.rng = Rng::new(seed);
    }

    pub fn node(&self, id: u64) -> &Node {
        self.peers
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id} (seed {})", self.seed))
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        let seed = self.seed;
        self.peers
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id} (seed {seed})"))
    }

    pub fn state(&self, id: u64) -> StateRole {
        self.node(id).raw.raft().state()
    }

    pub fn term(&self, id: u64) -> u64 {
        self.node(id).raw.raft().term()
    }

    pub fn committed(&self, id: u64) -> u64 {
        self.node(id).raw.raft().raft_log().committed()
    }

    pub fn leader_of(&self, id: u64) -> u64 {
        self.node(id).raw.raft().leader_id()
    }

    /// Delivers `msgs` and everything they cause, until no message is left.
    pub fn send(&mut self, msgs: Vec<Message>) {
        let mut queue: VecDeque<Message> = msgs.into();
        while let Some(m) = queue.pop_front() {
            if !self.passes(&m) {
                continue;
            }
            let to = m.to;
            let Some(node) = self.peers.get_mut(&to) else {
                continue;
            };
            self.delivered.push(m.clone());
            let _ = node.step(m);
            queue.extend(node.handle_ready());
        }
    }

    /// Whether the filters let `m` through.
    fn passes(&mut self, m: &Message) -> bool {
        if self.ignored.contains(&m.get_msg_type()) {
            return false;
        }
        match self.drops.get(&(m.from, m.to)) {
            Some(&rate) => self.rng.next_f64() >= rate,
            None => true,
        }
    }

    /// Ticks `id` once and delivers what follows.
    pub fn tick(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.raw.tick();
        let msgs = node.handle_ready();
        self.send(msgs);
    }

    /// Ticks `id` `n` times.
    pub fn tick_n(&mut self, id: u64, n: usize) {
        for _ in 0..n {
            self.tick(id);
        }
    }

    /// Ticks every node once (in id order).
    pub fn tick_all(&mut self) {
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        for id in ids {
            self.tick(id);
        }
    }

    /// Makes `id` campaign now.
    pub fn campaign(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.raw.campaign().unwrap();
        let msgs = node.handle_ready();
        self.send(msgs);
    }

    /// Proposes `data` at `id`.
    pub fn propose(&mut self, id: u64, data: &[u8]) -> raft::Result<()> {
        let node = self.node_mut(id);
        let res = node.raw.propose(vec![], data.to_vec());
        let msgs = node.handle_ready();
        self.send(msgs);
        res
    }

    /// Runs `f` on node `id`'s RawNode, then delivers what follows.
    pub fn with_node<T>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut raft::RawNode<MemStorage>) -> T,
    ) -> T {
        let node = self.node_mut(id);
        let out = f(&mut node.raw);
        let msgs = node.handle_ready();
        self.send(msgs);
        out
    }

    /// Drops messages from `from` to `to` with probability `rate`.
    pub fn drop(&mut self, from: u64, to: u64, rate: f64) {
        self.drops.insert((from, to), rate);
    }

    /// Drops all traffic between `a` and `b`.
    pub fn cut(&mut self, a: u64, b: u64) {
        self.drop(a, b, 1.0);
        self.drop(b, a, 1.0);
    }

    /// Cuts `id` off from every other node.
    pub fn isolate(&mut self, id: u64) {
        let ids: Vec<u64> = self.peers.keys().copied().filter(|&p| p != id).collect();
        for p in ids {
            self.cut(id, p);
        }
    }

    /// Drops every message of type `t`.
    pub fn ignore(&mut self, t: MessageType) {
        self.ignored.push(t);
    }

    /// Removes every filter.
    pub fn recover(&mut self) {
        self.drops.clear();
        self.ignored.clear();
    }

    /// Adds a node (e.g. one being added to the configuration).
    pub fn add_node(&mut self, node: Node) {
        self.peers.insert(node.id(), node);
    }

    /// Removes node `id`: it becomes a black hole.
    pub fn remove_node(&mut self, id: u64) -> Option<Node> {
        self.peers.remove(&id)
    }

    /// The ids whose role is leader.
    pub fn leaders(&self) -> Vec<u64> {
        self.peers
            .iter()
            .filter(|(_, n)| n.raw.raft().state() == StateRole::Leader)
            .map(|(&id, _)| id)
            .collect()
    }
}

/// A message of type `ty` from `from` to `to`.
pub fn msg(from: u64, to: u64, ty: MessageType) -> Message {
    let mut m = Message::default();
    m.from = from;
    m.to = to;
    m.set_msg_type(ty);
    m
}
