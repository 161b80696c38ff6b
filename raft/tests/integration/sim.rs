//! A randomized cluster simulator for the property test: nodes persist
//! asynchronously (`advance_append_async` / `on_persist_ready`), the network
//! drops, duplicates and reorders messages and partitions nodes, and nodes crash
//! and restart from their durable state. All randomness comes from one seed.

use std::collections::BTreeSet;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    Entry, EntryType, HardState, Message, MessageType, Snapshot,
};
use raft::{Config, MemStorage, RawNode, SnapshotStatus, StateRole, Storage};

use crate::network::Rng;
use crate::node::{conf_state, decode, encode, Applied};

/// A Ready handed to the node's "disk", not yet durable.
struct PendingWrite {
    number: u64,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    persisted_messages: Vec<Message>,
    committed: Vec<Entry>,
}

pub struct SimNode {
    pub raw: RawNode<MemStorage>,
    pub storage: MemStorage,
    pub config: Config,
    pub applied: Vec<Applied>,
    pub conf_state: ConfState,
    /// Started with empty storage (no log, no configuration): an empty joiner.
    pub started_empty: bool,
    /// Conf changes this node applied successfully, and how many of them
    /// entered a joint configuration.
    pub changes_applied: u64,
    pub joints_entered: u64,
    pending: Vec<PendingWrite>,
}

impl SimNode {
    /// A node bootstrapped with `voters`, or, with `voters` empty, an empty
    /// joiner that waits to be added and caught up by a snapshot.
    fn new(config: Config, voters: &[u64]) -> SimNode {
        let storage = if voters.is_empty() {
            MemStorage::new()
        } else {
            MemStorage::new_with_conf_state(conf_state(voters, &[]))
        };
        let raw = RawNode::new(&config, storage.clone()).unwrap();
        SimNode {
            raw,
            storage,
            config,
            applied: Vec::new(),
            conf_state: conf_state(voters, &[]),
            started_empty: voters.is_empty(),
            changes_applied: 0,
            joints_entered: 0,
            pending: Vec::new(),
        }
    }

    pub fn applied_index(&self) -> u64 {
        self.applied.last().map_or(0, |a| a.index)
    }

    /// Collects Readys: messages go out now, the rest waits for `persist`.
    fn collect(&mut self, out: &mut Vec<Message>) {
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            out.append(&mut rd.messages);
            let w = PendingWrite {
                number: rd.number(),
                snapshot: std::mem::take(&mut rd.snapshot),
                entries: std::mem::take(&mut rd.entries),
                hard_state: rd.hard_state.take(),
                persisted_messages: std::mem::take(&mut rd.persisted_messages),
                committed: std::mem::take(&mut rd.committed_entries),
            };
            self.raw.advance_append_async(rd);
            self.pending.push(w);
        }
    }

    /// Makes every pending write durable, then applies and reports it.
    fn persist(&mut self, out: &mut Vec<Message>) {
        for w in std::mem::take(&mut self.pending) {
            if w.snapshot.get_metadata().index > 0 {
                self.storage.apply_snapshot(w.snapshot.clone()).unwrap();
                self.applied = decode(&w.snapshot.data);
                self.conf_state = w.snapshot.get_metadata().get_conf_state().clone();
            }
            self.storage.append(&w.entries).unwrap();
            if let Some(hs) = w.hard_state {
                self.storage.set_hardstate(hs);
            }
            out.extend(w.persisted_messages);
            self.raw.on_persist_ready(w.number);
            for e in &w.committed {
                self.apply(e);
            }
            if let Some(e) = w.committed.last() {
                self.raw.advance_apply_to(e.index);
            }
        }
        // Make the snapshot a leader asked for (a real store's snapshot
        // worker does it in the background).
        if self.storage.snapshot_requested() {
            let data = encode(&self.applied);
            let _ =
                self.storage
                    .create_snapshot(self.applied_index(), self.conf_state.clone(), data);
        }
        self.collect(out);
    }

    fn apply(&mut self, e: &Entry) {
        let cc: Option<ConfChangeV2> = match e.get_entry_type() {
            EntryType::EntryNormal => None,
            EntryType::EntryConfChange => Some(raft::ConfChangeI::into_v2(
                ConfChange::parse_from_bytes(&e.data).unwrap(),
            )),
            EntryType::EntryConfChangeV2 => Some(ConfChangeV2::parse_from_bytes(&e.data).unwrap()),
        };
        if let Some(cc) = cc {
            if let Ok(cs) = self.raw.apply_conf_change(&cc) {
                self.changes_applied += 1;
                if !cs.voters_outgoing.is_empty() && self.conf_state.voters_outgoing.is_empty() {
                    self.joints_entered += 1;
                }
                self.storage.set_conf_state(cs.clone());
                self.conf_state = cs;
            }
        }
        self.applied.push(Applied {
            index: e.index,
            term: e.term,
            data: e.data.to_vec(),
        });
    }

    /// Crash: pending writes are lost; restart from storage.
    fn crash_restart(&mut self) {
        self.pending.clear();
        // The state machine is durable with its applied index, but only as far
        // as the log it came from was made durable.
        let mut cfg = self.config.clone();
        cfg.applied = self.applied_index();
        self.raw = RawNode::new(&cfg, self.storage.clone()).unwrap();
    }

    fn snapshot_and_compact(&mut self) {
        let idx = self.applied_index();
        if idx == 0 || self.storage.first_index().unwrap() > idx {
            return;
        }
        let data = encode(&self.applied);
        if self
            .storage
            .create_snapshot(idx, self.conf_state.clone(), data)
            .is_ok()
        {
            let _ = self.storage.compact(idx);
        }
    }
}

pub struct Sim {
    pub nodes: Vec<SimNode>,
    pub inflight: Vec<Message>,
    /// Nodes are in one of two groups when partitioned.
    pub partition: Option<BTreeSet<u64>>,
    pub rng: Rng,
    pub drop_rate: f64,
    pub dup_rate: f64,
    next_value: u64,
}

impl Sim {
    /// `n` initial voters, `total` nodes in all: the others may be added, and
    /// each starts either empty (an empty joiner) or with the bootstrap
    /// configuration.
    pub fn new(seed: u64, n: u64, total: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let pre_vote = rng.below(2) == 0;
        let check_quorum = rng.below(2) == 0;
        let max_inflight = 1 + rng.below(8) as usize;
        let max_size = if rng.below(2) == 0 {
            64
        } else {
            raft::NO_LIMIT
        };
        let election_tick = 3 + rng.below(6) as usize;
        let voters: Vec<u64> = (1..=n).collect();
        let empty: Vec<bool> = (1..=total).map(|id| id > n && rng.below(3) != 0).collect();
        let nodes = (1..=total)
            .map(|id| {
                let cfg = Config {
                    id,
                    election_tick,
                    heartbeat_tick: 1,
                    pre_vote,
                    check_quorum,
                    max_inflight_msgs: max_inflight,
                    max_size_per_msg: max_size,
                    seed: seed.wrapping_mul(31).wrapping_add(id),
                    ..Config::default()
                };
                let boot: &[u64] = if empty[(id - 1) as usize] {
                    &[]
                } else {
                    &voters
                };
                SimNode::new(cfg, boot)
            })
            .collect();
        let drop_rate = [0.0, 0.05, 0.2][rng.below(3) as usize];
        let dup_rate = [0.0, 0.05][rng.below(2) as usize];
        Sim {
            nodes,
            inflight: Vec::new(),
            partition: None,
            rng,
            drop_rate,
            dup_rate,
            next_value: 0,
        }
    }

    pub fn node(&self, id: u64) -> &SimNode {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: u64) -> &mut SimNode {
        &mut self.nodes[(id - 1) as usize]
    }

    fn ids(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64).collect()
    }

    fn random_id(&mut self) -> u64 {
        1 + self.rng.below(self.nodes.len() as u64)
    }

    fn connected(&self, a: u64, b: u64) -> bool {
        match &self.partition {
            Some(side) => side.contains(&a) == side.contains(&b),
            None => true,
        }
    }

    /// Runs `f` on node `id`, then collects its output.
    fn on_node(&mut self, id: u64, f: impl FnOnce(&mut SimNode)) {
        let mut out = Vec::new();
        let node = self.node_mut(id);
        f(node);
        node.collect(&mut out);
        self.inflight.extend(out);
    }

    /// Delivers in-flight message `i` (or drops it).
    fn deliver(&mut self, i: usize) {
        let m = if self.rng.next_f64() < self.dup_rate {
            self.inflight[i].clone()
        } else {
            self.inflight.swap_remove(i)
        };
        let to = m.to;
        let lost = !self.connected(m.from, m.to)
            || self.rng.next_f64() < self.drop_rate
            || to == 0
            || to > self.nodes.len() as u64;
        if m.get_msg_type() == MessageType::MsgSnapshot {
            // The transport tells the sender how the snapshot went.
            let status = if lost {
                SnapshotStatus::Failure
            } else {
                SnapshotStatus::Finish
            };
            let from = m.from;
            self.on_node(from, |n| n.raw.report_snapshot(to, status));
        }
        if lost {
            return;
        }
        self.on_node(to, |n| {
            let _ = n.raw.step(m);
        });
    }

    /// Performs one random action.
    pub fn step(&mut self) {
        let r = self.rng.below(100);
        match r {
            0..=49 if !self.inflight.is_empty() => {
                let i = self.rng.below(self.inflight.len() as u64) as usize;
                self.deliver(i);
            }
            0..=69 => {
                let id = self.random_id();
                self.on_node(id, |n| n.raw.tick());
            }
            70..=84 => {
                let id = self.random_id();
                let mut out = Vec::new();
                self.node_mut(id).persist(&mut out);
                self.inflight.extend(out);
            }
            85..=90 => {
                let id = self.random_id();
                self.next_value += 1;
                let v = self.next_value.to_be_bytes().to_vec();
                self.on_node(id, |n| {
                    let _ = n.raw.propose(vec![], v);
                });
            }
            91..=93 => self.propose_conf_change(),
            94 => {
                let id = self.random_id();
                self.node_mut(id).crash_restart();
            }
            95 => {
                let id = self.random_id();
                self.node_mut(id).snapshot_and_compact();
            }
            96 => {
                let side: BTreeSet<u64> = self
                    .ids()
                    .into_iter()
                    .filter(|_| self.rng.below(2) == 0)
                    .collect();
                self.partition = Some(side);
            }
            97 => self.partition = None,
            98 => {
                let id = self.random_id();
                let to = self.random_id();
                self.on_node(id, |n| n.raw.transfer_leader(to));
            }
            _ => {
                let id = self.random_id();
                let ctx = self.rng.next_u64().to_be_bytes().to_vec();
                self.on_node(id, |n| {
                    let _ = n.raw.read_index(ctx);
                });
            }
        }
    }

    /// Proposes a random membership change at a random node (a follower
    /// forwards it): add or remove a voter, add a learner, promote a learner,
    /// demote a voter, or a joint change of two or three of these (leaving
    /// automatically or explicitly), or leaving a joint configuration. Targets
    /// include empty joiners and removed nodes.
    fn propose_conf_change(&mut self) {
        let id = self.random_id();
        let cs = self.node(id).conf_state.clone();
        let kind = self.rng.below(6);
        if kind == 5 {
            // Leave the joint configuration (refused unless joint).
            self.on_node(id, |n| {
                let _ = n.raw.propose_conf_change(vec![], ConfChangeV2::default());
            });
            return;
        }
        let types = [
            ConfChangeType::AddNode,
            ConfChangeType::AddLearnerNode,
            ConfChangeType::RemoveNode,
        ];
        let count = if kind >= 3 { 2 + self.rng.below(2) } else { 1 };
        let mut changes = Vec::new();
        let mut voters: BTreeSet<u64> = cs.voters.iter().copied().collect();
        for _ in 0..count {
            let mut c = ConfChangeSingle::default();
            let ty = if kind < 3 {
                types[kind as usize]
            } else {
                types[self.rng.below(3) as usize]
            };
            c.set_change_type(ty);
            c.node_id = self.random_id();
            if ty != ConfChangeType::RemoveNode && self.rng.below(3) != 0 {
                // Mostly grow the group with nodes outside it (empty joiners
                // among them), rather than re-adding members.
                let outside: Vec<u64> = self
                    .ids()
                    .into_iter()
                    .filter(|i| !cs.voters.contains(i) && !cs.learners.contains(i))
                    .collect();
                if !outside.is_empty() {
                    c.node_id = outside[self.rng.below(outside.len() as u64) as usize];
                }
            }
            match ty {
                ConfChangeType::AddNode => voters.insert(c.node_id),
                _ => voters.remove(&c.node_id),
            };
            changes.push(c);
        }
        if voters.len() < 3 {
            // Keep at least three voters. Safety does not need it, but liveness
            // does: with configurations applied (not appended), a two-voter
            // group whose leader demotes itself and crashes before handing over
            // leaves the other voter needing the demoted node's vote, which its
            // longer log refuses.
            return;
        }
        if kind < 3 {
            let mut cc = ConfChange::default();
            cc.set_change_type(changes[0].get_change_type());
            cc.node_id = changes[0].node_id;
            self.on_node(id, |n| {
                let _ = n.raw.propose_conf_change(vec![], cc);
            });
            return;
        }
        let mut cc = ConfChangeV2::default();
        cc.set_changes(changes.into());
        cc.set_transition(if kind == 3 {
            ConfChangeTransition::Auto
        } else {
            ConfChangeTransition::Explicit
        });
        self.on_node(id, |n| {
            let _ = n.raw.propose_conf_change(vec![], cc);
        });
    }

    /// Heals the network and runs with reliable delivery until a leader of the
    /// highest term exists (at most `max_rounds` ticks of every node).
    pub fn heal_until_leader(&mut self, max_rounds: usize) {
        for _ in 0..max_rounds {
            self.heal_and_settle(1);
            let max_term = self.nodes.iter().map(|n| n.raw.raft().term()).max();
            if self.leaders().iter().any(|&(_, t)| Some(t) == max_term) {
                return;
            }
        }
    }

    /// Heals the network and runs with reliable delivery.
    pub fn heal_and_settle(&mut self, rounds: usize) {
        self.partition = None;
        self.drop_rate = 0.0;
        self.dup_rate = 0.0;
        for _ in 0..rounds {
            for id in self.ids() {
                self.on_node(id, |n| n.raw.tick());
            }
            self.settle();
        }
    }

    /// Delivers and persists until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            let mut out = Vec::new();
            for n in &mut self.nodes {
                n.persist(&mut out);
            }
            self.inflight.extend(out);
            if self.inflight.is_empty() {
                return;
            }
            while !self.inflight.is_empty() {
                self.deliver(0);
            }
        }
    }

    /// Proposes `data` at every node (followers forward to the leader).
    pub fn propose_everywhere(&mut self, data: &[u8]) {
        for id in self.ids() {
            let d = data.to_vec();
            self.on_node(id, |n| {
                let _ = n.raw.propose(vec![], d);
            });
        }
    }

    pub fn leaders(&self) -> Vec<(u64, u64)> {
        self.nodes
            .iter()
            .filter(|n| n.raw.raft().state() == StateRole::Leader)
            .map(|n| (n.config.id, n.raw.raft().term()))
            .collect()
    }
}
