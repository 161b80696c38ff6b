//! [`Raft`]: the consensus state machine of one node. It owns the log, the
//! membership tracker and the outbox; it never performs I/O.
//!
//! The implementation is split by feature: `step` (message dispatch), `election`
//! (§5.2, PreVote), `replication` (§5.3), `snapshot` (§7), `conf_change`
//! (thesis §4), `transfer` (thesis §3.10) and `read_index` (thesis §6.4). Only the
//! `become_*` functions here change the node's role.

mod conf_change;
mod election;
mod read_index;
mod replication;
mod snapshot;
mod step;
mod transfer;
mod validate;

use raft_proto::eraftpb::{HardState, Message, MessageType};

use crate::confchange;
use crate::config::{Config, ReadOnlyOption};
use crate::errors::Result;
use crate::raft_log::RaftLog;
use crate::read_only::{ReadOnly, ReadState};
use crate::storage::Storage;
use crate::tracker::{Progress, ProgressTracker};
use crate::util::{needs_persistence, SplitMix64, INVALID_ID};

/// The role of a node (§5.1, plus the PreVote phase of thesis §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateRole {
    /// Passive: answers leaders and candidates.
    #[default]
    Follower,
    /// Asking for votes in a new term.
    Candidate,
    /// Asking whether it could win an election, without changing the term.
    PreCandidate,
    /// Handles proposals and replicates the log.
    Leader,
}

/// State that is not persisted: who leads, and this node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SoftState {
    /// The known leader, or [`crate::INVALID_ID`].
    pub leader_id: u64,
    /// This node's role.
    pub raft_state: StateRole,
}

/// The raft state machine of one node.
pub struct Raft<S: Storage> {
    id: u64,
    term: u64,
    vote: u64,
    pub(crate) raft_log: RaftLog<S>,
    pub(crate) prs: ProgressTracker,
    state: StateRole,
    /// Whether this node is a learner (never campaigns nor votes in a quorum).
    is_learner: bool,
    leader_id: u64,
    /// The target of an ongoing leadership transfer.
    lead_transferee: Option<u64>,
    /// Index of the latest conf change entry in the log; a new one may be proposed
    /// only once it is applied (thesis §4.1).
    pending_conf_index: u64,
    /// Bytes of entry payloads appended but not yet committed (leader only).
    uncommitted_size: u64,
    read_only: ReadOnly,
    pub(crate) read_states: Vec<ReadState>,
    /// ReadIndex requests received before this leader committed an entry of its
    /// term; answered once it has (thesis §6.4 step 1).
    pending_read_index_messages: Vec<Message>,
    /// Messages that may be sent at once.
    pub(crate) msgs: Vec<Message>,
    /// Messages that may be sent only once the log and hard state are durable.
    pub(crate) msgs_after_append: Vec<Message>,
    /// How far a message may still raise the term (see [`step::TERM_BUDGET`]).
    term_budget: u64,
    election_elapsed: usize,
    heartbeat_elapsed: usize,
    election_timeout: usize,
    heartbeat_timeout: usize,
    randomized_election_timeout: usize,
    check_quorum: bool,
    pre_vote: bool,
    pub(crate) skip_bcast_commit: bool,
    read_only_option: ReadOnlyOption,
    max_msg_size: u64,
    max_uncommitted_size: u64,
    rng: SplitMix64,
}

impl<S: Storage> Raft<S> {
    /// Creates a node from `config`, restoring term, vote, commit index and
    /// membership from `store`.
    ///
    /// # Errors
    /// An invalid config, or a storage error.
    pub fn new(config: &Config, store: S) -> Result<Raft<S>> {
        config.validate()?;
        let rs = store.initial_state()?;
        let raft_log = RaftLog::new(store, config.id);
        let prs = confchange::restore(
            config.max_inflight_msgs,
            &rs.conf_state,
            raft_log.last_index(),
        )?;
        let seed = if config.seed == 0 {
            config.id.wrapping_mul(0x2545_F491_4F6C_DD1D)
        } else {
            config.seed
        };
        let mut r = Raft {
            id: config.id,
            term: 0,
            vote: INVALID_ID,
            raft_log,
            prs,
            state: StateRole::Follower,
            is_learner: false,
            leader_id: INVALID_ID,
            lead_transferee: None,
            pending_conf_index: 0,
            uncommitted_size: 0,
            read_only: ReadOnly::default(),
            read_states: Vec::new(),
            pending_read_index_messages: Vec::new(),
            msgs: Vec::new(),
            msgs_after_append: Vec::new(),
            term_budget: step::TERM_BUDGET,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            election_timeout: config.election_tick,
            heartbeat_timeout: config.heartbeat_tick,
            randomized_election_timeout: config.election_tick,
            check_quorum: config.check_quorum,
            pre_vote: config.pre_vote,
            skip_bcast_commit: config.skip_bcast_commit,
            read_only_option: config.read_only_option,
            max_msg_size: config.max_size_per_msg,
            max_uncommitted_size: config.max_uncommitted_size,
            rng: SplitMix64::new(seed),
        };
        r.is_learner = r.prs.get(r.id).is_some_and(Progress::is_learner);
        let hs = rs.hard_state;
        if hs != HardState::default() {
            r.load_state(&hs);
        }
        if config.applied > 0 {
            r.raft_log.applied_to(config.applied);
        }
        r.become_follower(r.term, INVALID_ID);
        Ok(r)
    }

    fn load_state(&mut self, hs: &HardState) {
        let (committed, last) = (self.raft_log.committed, self.raft_log.last_index());
        assert!(
            hs.commit >= committed && hs.commit <= last,
            "[{}] hard state commit {} is out of range [{}, {}]",
            self.id,
            hs.commit,
            committed,
            last
        );
        self.raft_log.committed = hs.commit;
        self.term = hs.term;
        self.vote = hs.vote;
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Whom this node voted for in the current term.
    pub fn vote(&self) -> u64 {
        self.vote
    }

    /// The current role.
    pub fn state(&self) -> StateRole {
        self.state
    }

    /// The known leader of the current term.
    pub fn leader_id(&self) -> u64 {
        self.leader_id
    }

    /// The target of an ongoing leadership transfer.
    pub fn lead_transferee(&self) -> Option<u64> {
        self.lead_transferee
    }

    /// Whether this node is a learner.
    pub fn is_learner(&self) -> bool {
        self.is_learner
    }

    /// Whether a commit index that advances alone waits for the next append or heartbeat to
    /// reach the followers (see [`crate::Config::skip_bcast_commit`]).
    pub fn skip_bcast_commit(&self) -> bool {
        self.skip_bcast_commit
    }

    /// The log.
    pub fn raft_log(&self) -> &RaftLog<S> {
        &self.raft_log
    }

    /// The membership and replication progress.
    pub fn prs(&self) -> &ProgressTracker {
        &self.prs
    }

    /// The current randomized election timeout, in ticks.
    pub fn randomized_election_timeout(&self) -> usize {
        self.randomized_election_timeout
    }

    /// Overrides the randomized election timeout (tests pin it to force an order).
    pub fn set_randomized_election_timeout(&mut self, t: usize) {
        assert!(
            t >= self.election_timeout && t < 2 * self.election_timeout,
            "[{}] election timeout {} out of [{}, {})",
            self.id,
            t,
            self.election_timeout,
            2 * self.election_timeout
        );
        self.randomized_election_timeout = t;
    }

    /// The soft state.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            leader_id: self.leader_id,
            raft_state: self.state,
        }
    }

    /// The hard state to persist.
    pub fn hard_state(&self) -> HardState {
        let mut hs = HardState::default();
        hs.term = self.term;
        hs.vote = self.vote;
        hs.commit = self.raft_log.committed;
        hs
    }

    /// Whether this node may become leader: it is a voter of its configuration.
    /// A node without a configuration (an empty joiner) never is, so it never
    /// campaigns nor counts itself towards a quorum.
    pub fn promotable(&self) -> bool {
        self.prs.get(self.id).is_some() && !self.is_learner
    }

    /// Whether this node knows a configuration: it was bootstrapped with one,
    /// or installed a snapshot carrying one. A node created empty to join a
    /// group has none until its first snapshot.
    pub fn has_configuration(&self) -> bool {
        !self.prs.conf.voters.incoming.is_empty() || self.prs.conf.voters.is_joint()
    }

    /// Puts `m` in the outbox, stamping sender and term. Messages that promise
    /// something about durable state wait for persistence.
    pub(crate) fn send(&mut self, mut m: Message) {
        // Forwarded requests keep their origin (a transfer names its transferee
        // in `from`).
        if m.from == INVALID_ID {
            m.from = self.id;
        }
        match m.get_msg_type() {
            MessageType::MsgRequestVote
            | MessageType::MsgRequestPreVote
            | MessageType::MsgRequestVoteResponse
            | MessageType::MsgRequestPreVoteResponse => {
                // Vote messages carry the term they are about, which for PreVote
                // is not the node's own term.
                assert!(
                    m.term != 0,
                    "[{}] term should be set when sending {:?}",
                    self.id,
                    m.get_msg_type()
                );
            }
            // Forwarded requests travel as local messages of the leader.
            MessageType::MsgPropose | MessageType::MsgReadIndex => {}
            _ => m.term = self.term,
        }
        if needs_persistence(m.get_msg_type()) {
            self.msgs_after_append.push(m);
        } else {
            self.msgs.push(m);
        }
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.term_budget = (self.term_budget + step::TERM_STEP_PER_TICK).min(step::TERM_BUDGET);
        match self.state {
            StateRole::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.past_election_timeout() {
            self.election_elapsed = 0;
            let _ = self.step(new_message(INVALID_ID, MessageType::MsgHup));
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout {
            self.election_elapsed = 0;
            if self.check_quorum {
                let _ = self.step(new_message(INVALID_ID, MessageType::MsgCheckQuorum));
            }
            // A transfer that did not finish within an election timeout is
            // abandoned so proposals flow again (thesis §3.10).
            if self.state == StateRole::Leader && self.lead_transferee.is_some() {
                self.abort_leader_transfer();
            }
            // A non-voting leader retries its hand-over.
            self.maybe_hand_over_leadership();
        }
        if self.state != StateRole::Leader {
            return;
        }
        if self.heartbeat_elapsed >= self.heartbeat_timeout {
            self.heartbeat_elapsed = 0;
            let _ = self.step(new_message(INVALID_ID, MessageType::MsgBeat));
        }
    }

    /// Whether the randomized election timeout elapsed (§5.2).
    pub(crate) fn past_election_timeout(&self) -> bool {
        self.election_elapsed >= self.randomized_election_timeout
    }

    fn reset_randomized_election_timeout(&mut self) {
        let (lo, hi) = (self.election_timeout, 2 * self.election_timeout);
        self.randomized_election_timeout = self.rng.gen_range(lo, hi);
    }

    /// Resets the per-term state, moving to `term` (clearing the vote if it
    /// changed).
    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = INVALID_ID;
        }
        self.leader_id = INVALID_ID;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.abort_leader_transfer();
        self.prs.reset_votes();
        let (last, persisted, id) = (self.raft_log.last_index(), self.raft_log.persisted, self.id);
        let max_inflight = self.prs.max_inflight;
        for (&pid, pr) in self.prs.progress.iter_mut() {
            let learner = pr.is_learner;
            *pr = Progress::new(last + 1, max_inflight);
            pr.is_learner = learner;
            if pid == id {
                pr.matched = persisted;
            }
        }
        self.pending_conf_index = 0;
        self.uncommitted_size = 0;
        self.read_only = ReadOnly::default();
        self.pending_read_index_messages.clear();
    }

    /// Becomes a follower of `leader_id` in `term`.
    pub(crate) fn become_follower(&mut self, term: u64, leader_id: u64) {
        self.reset(term);
        self.leader_id = leader_id;
        self.state = StateRole::Follower;
    }

    /// Starts a pre-election: asks for votes for `term + 1` without moving there,
    /// so a node that cannot win does not disrupt the cluster (thesis §9.6).
    pub(crate) fn become_pre_candidate(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Leader,
            "[{}] invalid transition [leader -> pre-candidate] in term {}",
            self.id,
            self.term
        );
        // The term and vote stay: a pre-election changes no durable state.
        self.prs.reset_votes();
        self.leader_id = INVALID_ID;
        self.state = StateRole::PreCandidate;
    }

    /// Starts an election in the next term, voting for itself (§5.2).
    pub(crate) fn become_candidate(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Leader,
            "[{}] invalid transition [leader -> candidate] in term {}",
            self.id,
            self.term
        );
        self.reset(self.term + 1);
        self.vote = self.id;
        self.state = StateRole::Candidate;
    }

    /// Becomes leader of the current term and appends the no-op entry that lets it
    /// commit entries of earlier terms (§5.4.2, thesis §6.4).
    pub(crate) fn become_leader(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Follower,
            "[{}] invalid transition [follower -> leader] in term {}",
            self.id,
            self.term
        );
        self.reset(self.term);
        self.leader_id = self.id;
        self.state = StateRole::Leader;
        let id = self.id;
        if let Some(pr) = self.prs.get_mut(id) {
            pr.become_replicate();
            pr.recent_active = true;
        }
        // Conf changes already in the log must be applied before a new one may be
        // proposed; conservatively treat everything up to the last index as such.
        self.pending_conf_index = self.raft_log.last_index();
        let noop = raft_proto::eraftpb::Entry::default();
        assert!(
            self.append_entries(vec![noop]),
            "[{}] empty entry was dropped in term {}",
            self.id,
            self.term
        );
        // The no-op carries no payload, so it does not count towards the
        // uncommitted size limit.
        self.uncommitted_size = 0;
    }
}

/// A message of type `ty` to `to`.
pub(crate) fn new_message(to: u64, ty: MessageType) -> Message {
    let mut m = Message::default();
    m.to = to;
    m.set_msg_type(ty);
    m
}
