//! Propose → commit throughput of a three-node in-memory Tessera raft cluster:
//! 128-byte entries, proposed one at a time or 64 per proposal (one
//! `propose_entries` call, one append per follower). Each
//! iteration ends when every node applied the batch (no I/O: this measures the
//! raft core and the Ready loop, not storage).

#![allow(clippy::field_reassign_with_default)]

use std::collections::VecDeque;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft::eraftpb::{Entry, Message};
use raft::{Config, MemStorage, RawNode, StateRole, Storage};

struct Peer {
    node: RawNode<MemStorage>,
    storage: MemStorage,
    applied: u64,
}

impl Peer {
    fn on_ready(&mut self, out: &mut VecDeque<Message>) {
        while self.node.has_ready() {
            let mut rd = self.node.ready();
            out.extend(rd.messages.drain(..));
            self.storage.append(&rd.entries).expect("append");
            if let Some(hs) = rd.hard_state.take() {
                self.storage.set_hardstate(hs);
            }
            out.extend(rd.persisted_messages.drain(..));
            if let Some(e) = rd.committed_entries.last() {
                self.applied = e.index;
            }
            self.node.advance(rd);
        }
    }

    /// Keeps the in-memory log short so iterations do not slow down.
    fn maybe_compact(&mut self) {
        let first = self.storage.first_index().expect("first index");
        if self.applied > first + 8192 {
            let cs = self.node.raft().prs().conf_state();
            self.storage
                .create_snapshot(self.applied, cs, Default::default())
                .expect("snapshot");
            self.storage.compact(self.applied).expect("compact");
        }
    }
}

struct Cluster {
    peers: Vec<Peer>,
    leader: usize,
}

impl Cluster {
    fn new() -> Cluster {
        let voters = vec![1, 2, 3];
        let mut peers: Vec<Peer> = voters
            .iter()
            .map(|&id| {
                let storage = MemStorage::new_with_conf_state((voters.clone(), vec![]).into());
                let cfg = Config {
                    id,
                    election_tick: 10,
                    heartbeat_tick: 1,
                    max_inflight_msgs: 256,
                    ..Config::default()
                };
                Peer {
                    node: RawNode::new(&cfg, storage.clone()).expect("config"),
                    storage,
                    applied: 0,
                }
            })
            .collect();
        peers[0].node.campaign().expect("campaign");
        let mut c = Cluster { peers, leader: 0 };
        c.pump(0);
        assert_eq!(c.peers[0].node.raft().state(), StateRole::Leader);
        c
    }

    /// Runs node `from`'s Ready loop and delivers everything to quiescence.
    fn pump(&mut self, from: usize) {
        let mut q = VecDeque::new();
        self.peers[from].on_ready(&mut q);
        while let Some(m) = q.pop_front() {
            let to = (m.to - 1) as usize;
            let _ = self.peers[to].node.step(m);
            self.peers[to].on_ready(&mut q);
        }
    }

    fn propose_batch(&mut self, batch: usize, payload: &[u8]) {
        let target = self.peers[self.leader].node.raft().raft_log().last_index() + batch as u64;
        // One proposal of `batch` entries, as a store batches client writes.
        let entries = (0..batch)
            .map(|_| {
                let mut e = Entry::default();
                e.data = Bytes::copy_from_slice(payload);
                e
            })
            .collect();
        self.peers[self.leader]
            .node
            .propose_entries(entries)
            .expect("propose");
        self.pump(self.leader);
        // Followers learn the final commit index from the leader's next append
        // or heartbeat; commit-broadcast sends it right away.
        for p in &mut self.peers {
            assert!(p.applied >= target, "entry {target} not applied");
            p.maybe_compact();
        }
    }
}

fn bench_propose(c: &mut Criterion) {
    let payload = vec![0x5a; 128];
    let mut group = c.benchmark_group("propose_commit_3_nodes");
    for batch in [1usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            let mut cluster = Cluster::new();
            b.iter(|| cluster.propose_batch(batch, &payload));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_propose);
criterion_main!(benches);
