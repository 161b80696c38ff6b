//! [`RawNode`]: the application's handle on a raft node, and [`Ready`], the batch
//! of work the node hands out: state to persist, messages to send, entries to
//! apply.
//!
//! The loop an application runs (see the crate documentation for code):
//!
//! ```text
//!   tick() / step(msg) / propose(..)        inputs
//!   if has_ready() { rd = ready() }         collect work
//!     send rd.messages                      may go before persisting
//!     persist rd.snapshot, rd.entries, rd.hard_state
//!     send rd.persisted_messages            only after persisting
//!     apply rd.committed_entries
//!   advance(rd)                             report done
//! ```
//!
//! With asynchronous writes, `advance_append_async(rd)` hands the batch over and
//! `on_persist_ready(number)` reports it durable later; applying is reported with
//! `advance_apply_to`.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use protobuf::Message as _;
use raft_proto::eraftpb::{
    ConfChangeV2, ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot,
};
use raft_proto::ConfChangeI;

use crate::config::Config;
use crate::errors::Result;
use crate::raft::{new_message, Raft, SoftState, StateRole};
use crate::read_only::ReadState;
use crate::storage::Storage;
use crate::tracker::Progress;
use crate::util::NO_LIMIT;

/// The outcome of sending a snapshot, reported with [`RawNode::report_snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// The follower received and applied it.
    Finish,
    /// Sending or applying it failed; the leader retries.
    Failure,
}

/// A batch of work from the node. Handle it in this order: send `messages`,
/// persist `snapshot`, `entries` and `hard_state` (syncing if `must_sync`), send
/// `persisted_messages`, apply the snapshot and `committed_entries`; then call
/// [`RawNode::advance`].
#[derive(Debug, Default, PartialEq)]
pub struct Ready {
    number: u64,
    /// The leader or role changed. Not persisted.
    pub soft_state: Option<SoftState>,
    /// Term, vote or commit index changed; persist it.
    pub hard_state: Option<HardState>,
    /// Answers to ReadIndex requests.
    pub read_states: Vec<ReadState>,
    /// Entries to append to stable storage (replacing any from the first index on).
    pub entries: Vec<Entry>,
    /// A snapshot from the leader to persist and apply (empty when none).
    pub snapshot: Snapshot,
    /// Committed entries to apply, in order, after persisting this `Ready`.
    pub committed_entries: Vec<Entry>,
    /// Messages that may be sent immediately, even before persisting — a
    /// leader's appends, which let it replicate while its own write runs.
    pub messages: Vec<Message>,
    /// Messages to send only once this `Ready`'s entries and hard state are
    /// durable: votes and append acknowledgements promise durable state.
    pub persisted_messages: Vec<Message>,
    /// Whether the write must be synced (term, vote, entries or snapshot changed).
    pub must_sync: bool,
}

impl Ready {
    /// The sequence number of this `Ready`, for [`RawNode::on_persist_ready`].
    pub fn number(&self) -> u64 {
        self.number
    }
}

/// A summary of a node's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The node id.
    pub id: u64,
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// Leader and role.
    pub soft_state: SoftState,
    /// The applied index.
    pub applied: u64,
    /// Each member's replication progress; only on a leader.
    pub progress: Option<BTreeMap<u64, Progress>>,
    /// The target of an ongoing leadership transfer.
    pub lead_transferee: Option<u64>,
}

/// What a handed-out `Ready` asked to persist.
#[derive(Debug)]
struct ReadyRecord {
    number: u64,
    last_entry: Option<(u64, u64)>,
    snapshot_index: Option<u64>,
}

/// The application's handle on a raft node: thread-unsafe, I/O-free, driven by
/// calls.
pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    prev_ss: SoftState,
    prev_hs: HardState,
    ready_number: u64,
    records: VecDeque<ReadyRecord>,
}

impl<S: Storage> RawNode<S> {
    /// Creates a node from `config` over `store`.
    ///
    /// # Errors
    /// An invalid config or a storage error.
    pub fn new(config: &Config, store: S) -> Result<RawNode<S>> {
        let raft = Raft::new(config, store)?;
        let prev_hs = raft.hard_state();
        let prev_ss = raft.soft_state();
        Ok(RawNode {
            raft,
            prev_ss,
            prev_hs,
            ready_number: 0,
            records: VecDeque::new(),
        })
    }

    /// The raft state machine, read-only (for status pages and tests).
    pub fn raft(&self) -> &Raft<S> {
        &self.raft
    }

    /// Changes [`Config::skip_bcast_commit`] from now on: a host that needs the followers to
    /// learn some commit at once (of an entry they must apply promptly) turns it off meanwhile.
    pub fn set_skip_bcast_commit(&mut self, skip: bool) {
        self.raft.skip_bcast_commit = skip;
    }

    /// The storage.
    pub fn store(&self) -> &S {
        self.raft.raft_log.store()
    }

    /// Pins the randomized election timeout (tests use it to order elections).
    pub fn set_randomized_election_timeout(&mut self, ticks: usize) {
        self.raft.set_randomized_election_timeout(ticks);
    }

    /// Advances the logical clock by one tick (elections and heartbeats).
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Campaigns to become leader now.
    ///
    /// # Errors
    /// Never in practice; kept for symmetry with `step`.
    pub fn campaign(&mut self) -> Result<()> {
        self.raft.step(new_message(0, MessageType::MsgHup))
    }

    /// Proposes `data` (with an opaque `context`) to be appended to the log.
    ///
    /// # Errors
    /// [`Error::ProposalDropped`](crate::Error::ProposalDropped) when there is no leader, a transfer is ongoing,
    /// or the uncommitted log is full.
    pub fn propose(&mut self, context: Vec<u8>, data: Vec<u8>) -> Result<()> {
        let mut e = Entry::default();
        e.data = data.into();
        e.context = context.into();
        self.propose_entries(vec![e])
    }

    /// Proposes several entries at once (they share one append message).
    ///
    /// # Errors
    /// As [`RawNode::propose`].
    pub fn propose_entries(&mut self, entries: Vec<Entry>) -> Result<()> {
        let mut m = new_message(0, MessageType::MsgPropose);
        m.set_entries(entries.into());
        m.from = self.raft.id();
        self.raft.step(m)
    }

    /// Proposes a membership change: a single-step `ConfChange` or a
    /// `ConfChangeV2` (joint consensus unless it is a single change with the
    /// `Auto` transition). A refused change (another one pending, or a joint
    /// configuration to leave first) is appended as an empty entry.
    ///
    /// # Errors
    /// As [`RawNode::propose`].
    pub fn propose_conf_change(&mut self, context: Vec<u8>, cc: impl ConfChangeI) -> Result<()> {
        let (data, ty) = match cc.as_v1() {
            Some(v1) => (v1.write_to_bytes(), EntryType::EntryConfChange),
            None => (cc.as_v2().write_to_bytes(), EntryType::EntryConfChangeV2),
        };
        let mut e = Entry::default();
        e.set_entry_type(ty);
        e.data = Bytes::from(data.expect("encoding a conf change"));
        e.context = context.into();
        self.propose_entries(vec![e])
    }

    /// Applies a committed conf change (call it when applying its entry) and
    /// returns the new configuration, to be saved with the applied state.
    ///
    /// # Errors
    /// [`Error::ConfChangeInvalid`](crate::Error::ConfChangeInvalid) when it does not apply to the configuration.
    pub fn apply_conf_change(&mut self, cc: &impl ConfChangeI) -> Result<ConfState> {
        let v2: std::borrow::Cow<'_, ConfChangeV2> = cc.as_v2();
        self.raft.apply_conf_change(&v2)
    }

    /// Steps a message received from a peer. Every message is checked first
    /// (it is hostile until then): one that cannot be right is refused with an
    /// error and changes nothing. It never panics, whatever the message.
    ///
    /// Only forwarded requests (`MsgPropose`, `MsgReadIndex`) travel without a
    /// term; any other message of term 0 is refused, as are the types only a
    /// node generates for itself (`MsgHup`, `MsgBeat`, `MsgUnreachable`,
    /// `MsgSnapStatus`, `MsgCheckQuorum`: use the matching methods).
    ///
    /// # Errors
    /// [`Error::StepLocalMsg`](crate::Error::StepLocalMsg) for a local message type,
    /// [`Error::StepPeerNotFound`](crate::Error::StepPeerNotFound) for a response from a non-member,
    /// [`Error::InvalidMessage`](crate::Error::InvalidMessage) for any other malformed or impossible message,
    /// or the error of the step itself (e.g. [`Error::ProposalDropped`](crate::Error::ProposalDropped)).
    pub fn step(&mut self, m: Message) -> Result<()> {
        self.raft.validate(&m)?;
        self.raft.step(m)
    }

    /// Requests a linearizable read point; the answer arrives as a
    /// [`ReadState`] with the same `ctx` in a later `Ready` (thesis §6.4).
    ///
    /// # Errors
    /// [`Error::ProposalDropped`](crate::Error::ProposalDropped) when a follower knows no leader to ask.
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<()> {
        let mut m = new_message(0, MessageType::MsgReadIndex);
        let mut e = Entry::default();
        e.data = ctx.into();
        m.mut_entries().push(e);
        self.raft.step(m)
    }

    /// Asks the leader to hand leadership to `transferee`.
    pub fn transfer_leader(&mut self, transferee: u64) {
        let mut m = new_message(0, MessageType::MsgTransferLeader);
        m.from = transferee;
        let _ = self.raft.step(m);
    }

    /// Reports that the transport could not deliver to `id`.
    pub fn report_unreachable(&mut self, id: u64) {
        let mut m = new_message(0, MessageType::MsgUnreachable);
        m.from = id;
        let _ = self.raft.step(m);
    }

    /// Reports the outcome of sending a snapshot to `id`.
    pub fn report_snapshot(&mut self, id: u64, status: SnapshotStatus) {
        let mut m = new_message(0, MessageType::MsgSnapStatus);
        m.from = id;
        m.reject = status == SnapshotStatus::Failure;
        let _ = self.raft.step(m);
    }

    /// The node's status.
    pub fn status(&self) -> Status {
        let r = &self.raft;
        let progress = (r.state() == StateRole::Leader)
            .then(|| r.prs().iter().map(|(id, p)| (id, p.clone())).collect());
        Status {
            id: r.id(),
            hard_state: r.hard_state(),
            soft_state: r.soft_state(),
            applied: r.raft_log().applied(),
            progress,
            lead_transferee: r.lead_transferee(),
        }
    }

    /// Whether the next [`RawNode::ready`] hands out a snapshot received from the leader. An
    /// application with earlier readies still in flight may want them finished first: their
    /// committed entries lie below the snapshot, which replaces them.
    pub fn snapshot_pending(&self) -> bool {
        self.raft.raft_log.unstable.next_snapshot().is_some()
    }

    /// Whether [`RawNode::ready`] would return any work.
    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        let log = &r.raft_log;
        r.soft_state() != self.prev_ss
            || r.hard_state() != self.prev_hs
            || !r.read_states.is_empty()
            || log.unstable.next_snapshot().is_some()
            || !log.unstable.next_entries().is_empty()
            || log.has_next_committed_entries()
            || !r.msgs.is_empty()
            || !r.msgs_after_append.is_empty()
    }

    /// Collects the pending work. Everything returned is considered handed out:
    /// calling `ready` again returns only newer work.
    pub fn ready(&mut self) -> Ready {
        self.ready_number += 1;
        let mut rd = Ready {
            number: self.ready_number,
            ..Ready::default()
        };
        let r = &mut self.raft;
        let ss = r.soft_state();
        if ss != self.prev_ss {
            rd.soft_state = Some(ss);
            self.prev_ss = ss;
        }
        rd.read_states = std::mem::take(&mut r.read_states);
        let log = &mut r.raft_log;
        let mut snapshot_index = None;
        if let Some(s) = log.unstable.next_snapshot() {
            rd.snapshot = s.clone();
            snapshot_index = Some(s.get_metadata().index);
        }
        rd.entries = log.unstable.next_entries().to_vec();
        log.unstable.accept_in_progress();
        rd.committed_entries = log.next_committed_entries(NO_LIMIT);
        if let Some(e) = rd.committed_entries.last() {
            log.applying = e.index;
        }
        r.reduce_uncommitted_size(&rd.committed_entries);
        let hs = r.hard_state();
        if hs != self.prev_hs {
            rd.must_sync = hs.term != self.prev_hs.term || hs.vote != self.prev_hs.vote;
            rd.hard_state = Some(hs.clone());
            self.prev_hs = hs;
        }
        rd.must_sync |= !rd.entries.is_empty() || snapshot_index.is_some();
        rd.messages = std::mem::take(&mut r.msgs);
        rd.persisted_messages = std::mem::take(&mut r.msgs_after_append);
        let last_entry = rd.entries.last().map(|e| (e.index, e.term));
        if last_entry.is_some() || snapshot_index.is_some() {
            self.records.push_back(ReadyRecord {
                number: rd.number,
                last_entry,
                snapshot_index,
            });
        }
        rd
    }

    /// Reports `rd` fully handled: persisted, messages sent, committed entries
    /// applied. New work may be ready afterwards (e.g. a leader's commit).
    pub fn advance(&mut self, rd: Ready) {
        self.advance_append(rd);
        self.advance_apply();
    }

    /// Reports `rd` persisted and its messages sent, but its committed entries
    /// not yet applied; report that later with [`RawNode::advance_apply_to`].
    pub fn advance_append(&mut self, rd: Ready) {
        self.on_persist_ready(rd.number);
    }

    /// Hands `rd` to an asynchronous writer: nothing is durable yet. Report it
    /// with [`RawNode::on_persist_ready`] once written; until then `rd`'s
    /// `persisted_messages` must be held back.
    pub fn advance_append_async(&mut self, rd: Ready) {
        drop(rd);
    }

    /// Every `Ready` up to number `number` is durable.
    pub fn on_persist_ready(&mut self, number: u64) {
        while self.records.front().is_some_and(|r| r.number <= number) {
            let rec = self.records.pop_front().expect("checked front");
            if let Some(idx) = rec.snapshot_index {
                self.raft.raft_log.persist_snap(idx);
            }
            if let Some((index, term)) = rec.last_entry {
                self.raft.on_persist_entries(index, term);
            }
        }
    }

    /// Reports every committed entry handed out so far as applied.
    pub fn advance_apply(&mut self) {
        let applying = self.raft.raft_log.applying;
        self.advance_apply_to(applying);
    }

    /// Reports entries up to `applied` as applied.
    pub fn advance_apply_to(&mut self, applied: u64) {
        if applied > self.raft.raft_log.applied {
            self.raft.applied_to(applied);
        }
    }
}
