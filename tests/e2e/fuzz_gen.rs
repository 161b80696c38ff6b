//! What the store fuzzer ([`crate::fuzz_store`]) sends on a store's peer port, drawn from one
//! seeded RNG: well-formed `RaftMessage`s whose every field is random or near-valid (the
//! region's real ids, epoch and range mixed with random ones, every `eraftpb` type, random
//! entries and snapshots, tombstone flags, stray bytes), and snapshot streams (random or
//! near-valid meta, random data, declared sizes beyond any disk, truncated streams, wrong and
//! right checksums).
//!
//! The fuzzer holds the cluster token but does not follow the raft group: it never learns the
//! live term or log. Raft trusts a peer that does (a message from the leader of the current
//! term is believed, whoever sent it), so a fuzzer guessing the live term and log exactly would
//! test raft's assumptions, not the store. Terms and log positions are therefore drawn where
//! no live message of the cluster can be, which still covers every check a store makes:
//!
//! ```text
//!   terms     0 | 1..=5 (before the first election: stale) | 2^32..=2^62, each drawn
//!             once (from the future) | past 2^62 (refused) | any u64
//!   indexes   0..=floor-4 (committed before fuzzing began: at most 4 entries follow it)
//!             | 2^24..2^62 (past any log end) | past 2^62 | any u64
//! ```

use bytes::Bytes;
use proto::eraftpb::{self, ConfState, EntryType, MessageType};
use proto::metapb;
use proto::protobuf::Message as _;
use proto::raft_cmdpb::{
    AdminRequest, CompactLogRequest, PutRequest, RaftCmdRequest, RaftRequestHeader, Request,
};
use proto::raft_serverpb::{
    RaftMessage, RaftSnapshotData, SnapshotCfFile, SnapshotChunk, SnapshotMeta,
};
use proto::Message as _;
use rand::rngs::StdRng;
use rand::Rng;

use crate::forge::EMPTY_MD5;

/// Every raft message type, local ones included (a store must refuse those).
const TYPES: [MessageType; 19] = [
    MessageType::MsgHup,
    MessageType::MsgBeat,
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgUnreachable,
    MessageType::MsgSnapStatus,
    MessageType::MsgCheckQuorum,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

/// The region's initial term: every term up to it is stale once a leader was elected.
const INIT_TERM: u64 = 5;
/// The largest term or index raft takes from the network.
const LIMIT: u64 = 1 << 62;

/// The region under fuzz as the fuzzer knows it, fixed when fuzzing starts.
#[derive(Clone, Debug)]
pub struct Target {
    pub region: metapb::Region,
    /// `peers[i]` is the region's peer on store `i`.
    pub peers: Vec<metapb::Peer>,
    /// An index the region had committed before fuzzing began.
    pub floor: u64,
}

/// The fuzzer's seeded source of values: random, near-valid, or at the edges.
pub struct Dice {
    pub rng: StdRng,
}

impl Dice {
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.rng.gen_range(0..n)
    }

    pub fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }

    /// Bytes of a length that is mostly short, sometimes empty, rarely up to `max`.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = match self.below(8) {
            0 => 0,
            1..=5 => self.rng.gen_range(1..=32.min(max.max(1))),
            6 => self.rng.gen_range(0..=1024.min(max)),
            _ => self.rng.gen_range(0..=max),
        };
        (0..len).map(|_| self.rng.gen()).collect()
    }

    /// A u64 from the edges or anywhere.
    pub fn edge_u64(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => u64::MAX - self.rng.gen_range(0..4),
            4 => 1 << self.rng.gen_range(0..64),
            _ => self.rng.gen(),
        }
    }

    /// A term no live message of the cluster carries (see the module doc).
    pub fn term(&mut self) -> u64 {
        match self.below(10) {
            0 => 0,
            1..=3 => self.rng.gen_range(1..=INIT_TERM),
            4..=6 => self.rng.gen_range(1 << 32..=LIMIT),
            7 => LIMIT + self.rng.gen_range(1..1024),
            8 => u64::MAX,
            _ => loop {
                // Anywhere but near the live terms.
                let t: u64 = self.rng.gen();
                if t >= 1 << 32 {
                    break t;
                }
            },
        }
    }

    /// A log index at most `floor` (committed before fuzzing began) or past any log end.
    pub fn index(&mut self, floor: u64) -> u64 {
        match self.below(8) {
            0 => 0,
            1..=3 => self.rng.gen_range(0..=floor),
            4 => self.rng.gen_range(1 << 24..LIMIT),
            5 => LIMIT + self.rng.gen_range(0..1024),
            6 => u64::MAX,
            _ => self.rng.gen_range(1 << 24..=u64::MAX),
        }
    }
}

/// Builds peer-port inputs for one [`Target`].
pub struct PeerGen<'a> {
    pub dice: &'a mut Dice,
    pub target: &'a Target,
}

impl PeerGen<'_> {
    fn region_id(&mut self) -> u64 {
        match self.dice.below(10) {
            0..=6 => self.target.region.id,
            7 => 0,
            8 => self.dice.rng.gen_range(1..64),
            _ => self.dice.edge_u64(),
        }
    }

    /// A peer: the region's own one on `store` or another store, or one with a random id or
    /// store.
    fn peer(&mut self, store: usize, own: bool) -> Option<metapb::Peer> {
        let n = self.target.peers.len();
        let real = if own {
            self.target.peers[store]
        } else {
            let other = (store + 1 + self.dice.below(n - 1)) % n;
            self.target.peers[other]
        };
        Some(match self.dice.below(12) {
            0..=7 => real,
            8 => metapb::Peer {
                id: self.dice.edge_u64(),
                ..real
            },
            9 => {
                let random = self.dice.rng.gen();
                metapb::Peer {
                    store_id: self.dice.pick(&[0, real.store_id + 1, random]),
                    ..real
                }
            }
            10 => metapb::Peer {
                role: self.dice.rng.gen_range(-1..3),
                ..real
            },
            _ => return None,
        })
    }

    fn epoch(&mut self) -> Option<metapb::RegionEpoch> {
        let real = self.target.region.region_epoch.unwrap_or_default();
        Some(match self.dice.below(8) {
            0..=3 => real,
            4 => metapb::RegionEpoch {
                conf_ver: real.conf_ver.saturating_sub(1),
                ..real
            },
            5 => metapb::RegionEpoch {
                conf_ver: real.conf_ver + self.dice.rng.gen_range(1..3),
                version: real.version + self.dice.rng.gen_range(0..2),
            },
            6 => metapb::RegionEpoch {
                conf_ver: self.dice.edge_u64(),
                version: self.dice.edge_u64(),
            },
            _ => return None,
        })
    }

    /// The region's range, or a random one (possibly inverted).
    fn range(&mut self) -> (Vec<u8>, Vec<u8>) {
        if self.dice.chance(0.8) {
            let r = &self.target.region;
            (r.start_key.clone(), r.end_key.clone())
        } else {
            (self.dice.bytes(16), self.dice.bytes(16))
        }
    }

    /// A region like the real one, or a random one.
    pub fn region(&mut self) -> metapb::Region {
        let mut r = self.target.region.clone();
        if self.dice.chance(0.3) {
            r.id = self.region_id();
        }
        if self.dice.chance(0.2) {
            (r.start_key, r.end_key) = self.range();
        }
        if self.dice.chance(0.3) {
            r.region_epoch = self.epoch();
        }
        if self.dice.chance(0.2) {
            let own = self.dice.chance(0.5);
            let extra = self.peer(0, own);
            r.peers.extend(extra);
            if self.dice.chance(0.5) {
                r.peers.remove(0);
            }
        }
        r
    }

    /// A command as a store proposes them, on a key the acknowledged writes never use, or
    /// random bytes.
    fn command(&mut self) -> Vec<u8> {
        if self.dice.chance(0.5) {
            return self.dice.bytes(256);
        }
        let store = self.dice.below(self.target.peers.len());
        let header = RaftRequestHeader {
            region_id: self.region_id(),
            peer: self.peer(store, true),
            region_epoch: self.epoch(),
            term: self.dice.term(),
        };
        let mut req = RaftCmdRequest {
            header: Some(header),
            ..Default::default()
        };
        if self.dice.chance(0.7) {
            req.requests.push(Request {
                cmd_type: self.dice.rng.gen_range(0..6),
                put: Some(PutRequest {
                    cf: self
                        .dice
                        .pick(&["default", "lock", "write", "x"])
                        .to_string(),
                    key: [b"fuzz-cmd-".as_slice(), &self.dice.bytes(8)].concat(),
                    value: self.dice.bytes(64),
                }),
                ..Default::default()
            });
        } else {
            req.admin_request = Some(AdminRequest {
                cmd_type: self.dice.rng.gen_range(0..6),
                compact_log: Some(CompactLogRequest {
                    compact_index: self.dice.index(self.target.floor),
                    compact_term: self.dice.term(),
                }),
                ..Default::default()
            });
        }
        req.encode_to_vec()
    }

    /// Up to four entries, following `index` (or not), of terms up to `term`.
    fn entries(&mut self, index: u64, term: u64) -> Vec<eraftpb::Entry> {
        let n = self.dice.pick(&[0, 0, 1, 1, 2, 4]);
        // Entries after the floor at a term raft would adopt could overwrite a live log's tail
        // (see the module doc); entries that do not follow their prev entry are refused.
        let adopted = (1 << 32..=LIMIT).contains(&term);
        let follow = !adopted || index.saturating_add(n as u64) <= self.target.floor;
        (0..n)
            .map(|i| {
                let mut e = eraftpb::Entry::default();
                let t = match self.dice.below(4) {
                    0 => 0,
                    1 => term,
                    _ => self.dice.rng.gen_range(0..=term.min(INIT_TERM)),
                };
                e.set_term(t);
                e.set_index(if follow && self.dice.chance(0.8) {
                    index.saturating_add(i as u64 + 1)
                } else {
                    self.dice.index(self.target.floor)
                });
                e.set_entry_type(self.dice.pick(&[
                    EntryType::EntryNormal,
                    EntryType::EntryNormal,
                    EntryType::EntryConfChange,
                    EntryType::EntryConfChangeV2,
                ]));
                e.set_data(Bytes::from(self.command()));
                if self.dice.chance(0.2) {
                    e.set_context(Bytes::from(self.dice.bytes(32)));
                }
                e
            })
            .collect()
    }

    fn conf_state(&mut self) -> ConfState {
        let ids: Vec<u64> = self.target.peers.iter().map(|p| p.id).collect();
        let mut cs = ConfState::default();
        match self.dice.below(4) {
            0 => {}
            1 => cs.set_voters(ids),
            2 => cs.set_voters(vec![self.dice.edge_u64(), ids[0]]),
            _ => {
                cs.set_voters(ids[..1].to_vec());
                cs.set_learners(ids[1..].to_vec());
                cs.set_voters_outgoing(vec![self.dice.edge_u64()]);
            }
        }
        cs
    }

    /// A raft snapshot of the given term and index holding `data` (a `RaftSnapshotData` or
    /// random bytes).
    fn raft_snapshot(&mut self, term: u64, index: u64, data: Vec<u8>) -> eraftpb::Snapshot {
        let mut s = eraftpb::Snapshot::default();
        s.set_data(Bytes::from(data));
        let md = s.mut_metadata();
        md.set_term(term);
        md.set_index(index);
        md.set_conf_state(self.conf_state());
        s
    }

    fn snapshot_data(&mut self, meta: SnapshotMeta) -> Vec<u8> {
        if self.dice.chance(0.1) {
            return self.dice.bytes(64);
        }
        let data = RaftSnapshotData {
            region: Some(self.region()),
            file_size: match self.dice.below(3) {
                0 => meta
                    .cf_files
                    .iter()
                    .map(|f| f.size)
                    .fold(0, u64::wrapping_add),
                1 => 0,
                _ => self.dice.edge_u64(),
            },
            data: Vec::new(),
            meta: self.dice.chance(0.95).then_some(meta),
        };
        data.encode_to_vec()
    }

    /// A well-formed raft message of type `ty` (or a random one) for store `store`, every field
    /// random or near-valid. Half of them are addressed as the region's peers address theirs
    /// (region, peers and raft ids real and consistent, bytes intact), so that they get past
    /// the store's envelope checks to the peer and its raft node.
    pub fn raft_message(&mut self, store: usize, ty: Option<MessageType>) -> RaftMessage {
        let addressed = self.dice.chance(0.5);
        let (to, from) = if addressed {
            let n = self.target.peers.len();
            let other = (store + 1 + self.dice.below(n - 1)) % n;
            (
                Some(self.target.peers[store]),
                Some(self.target.peers[other]),
            )
        } else {
            (self.peer(store, true), self.peer(store, false))
        };
        let ty = ty.unwrap_or_else(|| self.dice.pick(&TYPES));
        let mut m = eraftpb::Message::default();
        m.set_msg_type(ty);
        let ids = |p: Option<metapb::Peer>| p.map_or(0, |p| p.id);
        m.set_from(if addressed || self.dice.chance(0.9) {
            ids(from)
        } else {
            self.dice.edge_u64()
        });
        m.set_to(if addressed || self.dice.chance(0.9) {
            ids(to)
        } else {
            self.dice.edge_u64()
        });
        // Forwarded requests carry no term.
        let forwarded = matches!(ty, MessageType::MsgPropose | MessageType::MsgReadIndex);
        let term = if forwarded && self.dice.chance(0.5) {
            0
        } else {
            self.dice.term()
        };
        m.set_term(term);
        let index = self.dice.index(self.target.floor);
        m.set_index(index);
        m.set_log_term(match self.dice.below(3) {
            0 => self.dice.rng.gen_range(0..=term.min(INIT_TERM)),
            1 => term,
            _ => self.dice.term(),
        });
        m.set_commit(self.dice.index(self.target.floor));
        m.set_commit_term(self.dice.term());
        m.set_reject(self.dice.chance(0.3));
        m.set_reject_hint(self.dice.index(self.target.floor));
        m.set_request_snapshot(self.dice.index(self.target.floor));
        if self.dice.chance(0.7) {
            m.set_entries(self.entries(index, term).into());
        }
        if self.dice.chance(0.2) || ty == MessageType::MsgSnapshot {
            let meta = self.snapshot_meta(&[]);
            let data = self.snapshot_data(meta);
            let (st, si) = (self.dice.term(), self.dice.index(self.target.floor));
            m.set_snapshot(self.raft_snapshot(st, si, data));
        }
        if self.dice.chance(0.2) {
            m.set_context(Bytes::from(self.dice.bytes(64)));
        }
        if self.dice.chance(0.1) {
            m.set_priority(self.dice.rng.gen());
        }
        let mut message = m.write_to_bytes().expect("encode a raft message");
        match self.dice.below(if addressed { 1 } else { 20 }) {
            1 => message = self.dice.bytes(128),
            2 => message.truncate(self.dice.below(message.len() + 1)),
            3 => message.extend(self.dice.bytes(16)),
            _ => {}
        }
        let region_id = if addressed {
            self.target.region.id
        } else {
            self.region_id()
        };
        let (start_key, end_key) = self.range();
        RaftMessage {
            region_id,
            from_peer: from,
            to_peer: to,
            message,
            region_epoch: self.epoch(),
            is_tombstone: self.dice.chance(0.05),
            start_key,
            end_key,
        }
    }

    /// A snapshot meta for files of `data` lengths: right, wrong or absurd sizes and sums,
    /// known or unknown column families.
    fn snapshot_meta(&mut self, data: &[Vec<u8>]) -> SnapshotMeta {
        let cfs = ["default", "lock", "write"];
        let n = if data.is_empty() {
            self.dice.below(4)
        } else {
            data.len()
        };
        let cf_files = (0..n)
            .map(|i| {
                let file = data.get(i).cloned().unwrap_or_default();
                let cf = if self.dice.chance(0.9) {
                    cfs[i % 3].to_string()
                } else {
                    self.dice
                        .pick(&["", "raft", "default", "\u{0}"])
                        .to_string()
                };
                let size = match self.dice.below(10) {
                    0 => self.dice.edge_u64(),
                    1 => 1 << self.dice.rng.gen_range(32..63),
                    2 => (file.len() as u64).saturating_sub(1),
                    _ => file.len() as u64,
                };
                let checksum = match self.dice.below(10) {
                    0 => EMPTY_MD5.to_vec(),
                    1 => self.dice.bytes(20),
                    2 => {
                        let mut sum = md5::compute(&file).0;
                        sum[self.dice.below(16)] ^= 1;
                        sum.to_vec()
                    }
                    _ => md5::compute(&file).0.to_vec(),
                };
                SnapshotCfFile { cf, size, checksum }
            })
            .collect();
        SnapshotMeta { cf_files }
    }

    /// A snapshot stream for store `store`: a head chunk whose message carries a snapshot
    /// (near-valid or not) describing files, then the files' data in random chunks, cut short,
    /// padded, or preceded by nothing at all.
    pub fn snapshot_stream(&mut self, store: usize) -> Vec<SnapshotChunk> {
        let files: Vec<Vec<u8>> = (0..self.dice.pick(&[0, 1, 3, 3]))
            .map(|_| self.dice.bytes(256 * 1024))
            .collect();
        let meta = self.snapshot_meta(&files);
        let ty = (!self.dice.chance(0.05)).then_some(MessageType::MsgSnapshot);
        let mut msg = self.raft_message(store, ty);
        if self.dice.chance(0.8) {
            // Rebuild the raft message around a snapshot of these files.
            if let Ok(mut m) = eraftpb::Message::parse_from_bytes(&msg.message) {
                let data = self.snapshot_data(meta);
                let (st, si) = (m.term, self.dice.index(self.target.floor));
                m.set_snapshot(self.raft_snapshot(st, si, data));
                if self.dice.chance(0.8) {
                    m.clear_entries();
                }
                msg.message = m.write_to_bytes().expect("encode a raft message");
            }
        }
        let mut chunks = Vec::new();
        if self.dice.chance(0.95) {
            let data = if self.dice.chance(0.05) {
                self.dice.bytes(64)
            } else {
                Vec::new()
            };
            chunks.push(SnapshotChunk {
                message: Some(msg),
                data,
            });
        }
        let mut all: Vec<u8> = files.concat();
        match self.dice.below(10) {
            0 => all.truncate(self.dice.below(all.len() + 1)),
            1 => all.extend(self.dice.bytes(4096)),
            _ => {}
        }
        let mut rest = all.as_slice();
        while !rest.is_empty() {
            let n = self.dice.rng.gen_range(1..=rest.len().min(128 * 1024));
            let message = self
                .dice
                .chance(0.02)
                .then(|| self.raft_message(store, None));
            chunks.push(SnapshotChunk {
                message,
                data: rest[..n].to_vec(),
            });
            rest = &rest[n..];
        }
        chunks
    }
}
