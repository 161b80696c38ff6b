//! [`ProgressTracker`]: the membership configuration (voters, learners, the joint
//! state) with each member's [`Progress`], the election tally, and the quorum
//! questions the leader asks of them.

mod inflights;
mod progress;
mod quorum;

use std::collections::{BTreeMap, BTreeSet};

use raft_proto::eraftpb::ConfState;

pub use self::inflights::Inflights;
pub use self::progress::{Progress, ProgressState};
pub(crate) use self::quorum::JointConfig;
pub use self::quorum::VoteResult;

/// The membership of a raft group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Configuration {
    pub(crate) voters: JointConfig,
    /// Learners: replicated to, never voting (thesis §4.2.1).
    pub(crate) learners: BTreeSet<u64>,
    /// Outgoing voters that become learners when the joint state is left.
    pub(crate) learners_next: BTreeSet<u64>,
    /// Leave the joint state automatically once it is committed.
    pub(crate) auto_leave: bool,
}

impl Configuration {
    /// The configuration as the wire type.
    pub(crate) fn to_conf_state(&self) -> ConfState {
        let mut cs = ConfState::default();
        cs.voters = self.voters.incoming.iter().copied().collect();
        cs.voters_outgoing = self.voters.outgoing.iter().copied().collect();
        cs.learners = self.learners.iter().copied().collect();
        cs.learners_next = self.learners_next.iter().copied().collect();
        cs.auto_leave = self.auto_leave;
        cs
    }
}

/// Map of member id to replication progress.
pub(crate) type ProgressMap = BTreeMap<u64, Progress>;

/// Tracks the configuration and the progress of every member.
#[derive(Debug, Clone)]
pub struct ProgressTracker {
    pub(crate) conf: Configuration,
    pub(crate) progress: ProgressMap,
    votes: BTreeMap<u64, bool>,
    pub(crate) max_inflight: usize,
}

impl ProgressTracker {
    pub(crate) fn new(max_inflight: usize) -> ProgressTracker {
        ProgressTracker {
            conf: Configuration::default(),
            progress: ProgressMap::new(),
            votes: BTreeMap::new(),
            max_inflight,
        }
    }

    /// The progress of member `id`.
    pub fn get(&self, id: u64) -> Option<&Progress> {
        self.progress.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Progress> {
        self.progress.get_mut(&id)
    }

    /// All members and their progress, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Progress)> {
        self.progress.iter().map(|(&id, p)| (id, p))
    }

    /// The current configuration as the wire type.
    pub fn conf_state(&self) -> ConfState {
        self.conf.to_conf_state()
    }

    /// Whether the configuration is joint.
    pub fn is_joint(&self) -> bool {
        self.conf.voters.is_joint()
    }

    /// Whether `id` is a voter (in either half).
    pub fn is_voter(&self, id: u64) -> bool {
        self.conf.voters.contains(id)
    }

    /// Whether there is exactly one voter and no joint state.
    pub(crate) fn is_singleton(&self) -> bool {
        self.conf.voters.incoming.len() == 1 && !self.conf.voters.is_joint()
    }

    /// The largest index acknowledged by a quorum of voters (§5.3).
    pub(crate) fn maximal_committed_index(&self) -> u64 {
        let prs = &self.progress;
        self.conf
            .voters
            .committed_index(|id| prs.get(&id).map(|p| p.matched))
    }

    pub(crate) fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records `id`'s vote; only the first vote of a peer counts.
    pub(crate) fn record_vote(&mut self, id: u64, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    /// `(granted, rejected, result)` of the current election among voters.
    pub(crate) fn tally_votes(&self) -> (usize, usize, VoteResult) {
        let (mut granted, mut rejected) = (0, 0);
        for (id, &v) in &self.votes {
            if !self.conf.voters.contains(*id) {
                continue;
            }
            if v {
                granted += 1;
            } else {
                rejected += 1;
            }
        }
        let votes = &self.votes;
        let result = self.conf.voters.vote_result(|id| votes.get(&id).copied());
        (granted, rejected, result)
    }

    /// Whether the voters in `acks` form a quorum.
    pub(crate) fn has_quorum(&self, acks: &BTreeSet<u64>) -> bool {
        self.conf
            .voters
            .vote_result(|id| acks.contains(&id).then_some(true))
            == VoteResult::Won
    }

    /// Whether a quorum was active since the last check, counting `self_id`; resets
    /// every other member's activity flag for the next window (thesis §6.2).
    pub(crate) fn quorum_recently_active(&mut self, self_id: u64) -> bool {
        let mut active = BTreeSet::new();
        for (&id, pr) in &mut self.progress {
            if id == self_id {
                pr.recent_active = true;
                active.insert(id);
            } else if pr.recent_active {
                if !pr.is_learner {
                    active.insert(id);
                }
                pr.recent_active = false;
            }
        }
        self.has_quorum(&active)
    }
}
