//! A test node: a `RawNode` over `MemStorage` plus a toy state machine (the list of
//! applied entries), driven through the full Ready → persist → apply → advance
//! cycle exactly as an application would.

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message, Snapshot,
};
use raft::{Config, MemStorage, RawNode, ReadState, Storage};

/// One applied entry of the toy state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

pub struct Node {
    pub raw: RawNode<MemStorage>,
    pub storage: MemStorage,
    pub config: Config,
    /// Every applied entry, in index order (the toy state machine).
    pub applied: Vec<Applied>,
    pub read_states: Vec<ReadState>,
    /// The configuration as of the last applied conf change or snapshot.
    pub conf_state: ConfState,
}

/// A default test config: election 10 ticks, heartbeat 1 tick.
pub fn config(id: u64) -> Config {
    Config {
        id,
        election_tick: 10,
        heartbeat_tick: 1,
        max_inflight_msgs: 256,
        ..Config::default()
    }
}

pub fn conf_state(voters: &[u64], learners: &[u64]) -> ConfState {
    (voters.to_vec(), learners.to_vec()).into()
}

pub fn entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e
}

pub fn entry_with_data(index: u64, term: u64, data: &[u8]) -> Entry {
    let mut e = entry(index, term);
    e.data = Bytes::copy_from_slice(data);
    e
}

pub fn hard_state(term: u64, commit: u64, vote: u64) -> HardState {
    let mut hs = HardState::default();
    hs.term = term;
    hs.commit = commit;
    hs.vote = vote;
    hs
}

/// Encodes a state machine into snapshot data.
pub fn encode(applied: &[Applied]) -> Bytes {
    let mut out = Vec::new();
    for a in applied {
        out.extend_from_slice(&a.index.to_be_bytes());
        out.extend_from_slice(&a.term.to_be_bytes());
        out.extend_from_slice(&(a.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&a.data);
    }
    out.into()
}

/// Decodes snapshot data made by [`encode`]; stops at anything malformed (the
/// fuzz test delivers snapshots of arbitrary data).
pub fn decode(mut b: &[u8]) -> Vec<Applied> {
    let mut out = Vec::new();
    while b.len() >= 20 {
        let index = u64::from_be_bytes(b[..8].try_into().unwrap());
        let term = u64::from_be_bytes(b[8..16].try_into().unwrap());
        let len = u32::from_be_bytes(b[16..20].try_into().unwrap()) as usize;
        let Some(data) = b.get(20..20 + len) else {
            break;
        };
        out.push(Applied {
            index,
            term,
            data: data.to_vec(),
        });
        b = &b[20 + len..];
    }
    out
}

impl Node {
    pub fn new(config: Config, storage: MemStorage) -> Node {
        let conf_state = storage.initial_state().unwrap().conf_state;
        let raw = RawNode::new(&config, storage.clone()).unwrap();
        Node {
            raw,
            storage,
            config,
            applied: Vec::new(),
            read_states: Vec::new(),
            conf_state,
        }
    }

    /// A node of a fresh cluster with `voters` and `learners`.
    pub fn with_peers(id: u64, voters: &[u64], learners: &[u64]) -> Node {
        Node::new(
            config(id),
            MemStorage::new_with_conf_state(conf_state(voters, learners)),
        )
    }

    /// A node with a pre-built durable log (entries from index 1).
    pub fn with_log(id: u64, voters: &[u64], ents: &[Entry], hs: HardState) -> Node {
        let storage = MemStorage::new_with_conf_state(conf_state(voters, &[]));
        storage.append(ents).unwrap();
        storage.set_hardstate(hs);
        Node::new(config(id), storage)
    }

    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// Crash and restart from the durable state: everything not persisted is lost.
    /// The state machine is durable with its applied index (as the kv engine is).
    pub fn restart(&mut self) {
        let mut cfg = self.config.clone();
        cfg.applied = self.applied_index();
        self.raw = RawNode::new(&cfg, self.storage.clone()).unwrap();
        self.read_states.clear();
    }

    pub fn applied_index(&self) -> u64 {
        self.applied
            .last()
            .map_or(self.snapshot_base(), |a| a.index)
    }

    fn snapshot_base(&self) -> u64 {
        self.storage.last_snapshot().get_metadata().index
    }

    pub fn step(&mut self, m: Message) -> raft::Result<()> {
        self.raw.step(m)
    }

    /// Handles every pending Ready; returns the messages to send.
    pub fn handle_ready(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            out.append(&mut rd.messages);
            if rd.snapshot.get_metadata().index > 0 {
                self.apply_snapshot(rd.snapshot.clone());
            }
            self.storage.append(&rd.entries).unwrap();
            if let Some(hs) = &rd.hard_state {
                self.storage.set_hardstate(hs.clone());
            }
            out.append(&mut rd.persisted_messages);
            self.read_states.append(&mut rd.read_states);
            let committed = std::mem::take(&mut rd.committed_entries);
            self.raw.advance_append(rd);
            for e in committed {
                self.apply_entry(&e);
                self.raw.advance_apply_to(e.index);
            }
        }
        self.maybe_make_requested_snapshot();
        out
    }

    /// Makes the snapshot a leader asked the storage for, at the applied
    /// index (what a real store's snapshot worker does in the background).
    pub fn maybe_make_requested_snapshot(&mut self) {
        if self.storage.snapshot_requested() {
            let data = encode(&self.applied);
            let idx = self.raw.raft().raft_log().applied();
            let _ = self
                .storage
                .create_snapshot(idx, self.conf_state.clone(), data);
        }
    }

    fn apply_snapshot(&mut self, snap: Snapshot) {
        self.storage.apply_snapshot(snap.clone()).unwrap();
        self.applied = decode(&snap.data);
        self.conf_state = snap.get_metadata().get_conf_state().clone();
    }

    fn apply_entry(&mut self, e: &Entry) {
        match e.get_entry_type() {
            EntryType::EntryNormal => {}
            // An undecodable change (only a forged entry has one) is skipped
            // like an invalid one.
            EntryType::EntryConfChange => {
                if let Ok(cc) = ConfChange::parse_from_bytes(&e.data) {
                    self.apply_conf_change(&cc);
                }
            }
            EntryType::EntryConfChangeV2 => {
                if let Ok(cc) = ConfChangeV2::parse_from_bytes(&e.data) {
                    self.apply_conf_change(&cc);
                }
            }
        }
        self.applied.push(Applied {
            index: e.index,
            term: e.term,
            data: e.data.to_vec(),
        });
    }

    fn apply_conf_change(&mut self, cc: &impl raft::ConfChangeI) {
        // An invalid change committed to the log is skipped by every node alike.
        if let Ok(cs) = self.raw.apply_conf_change(cc) {
            self.storage.set_conf_state(cs.clone());
            self.conf_state = cs;
        }
    }

    /// Takes a snapshot at the applied index and compacts the log up to it.
    pub fn snapshot_and_compact(&mut self) {
        let idx = self.applied_index();
        if idx == 0 {
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

    /// The durable log (entries in storage).
    pub fn durable_entries(&self) -> Vec<Entry> {
        let first = self.storage.first_index().unwrap();
        let last = self.storage.last_index().unwrap();
        self.storage.entries(first, last + 1, None).unwrap()
    }
}
