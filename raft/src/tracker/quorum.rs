//! Quorum arithmetic: majority configurations (§5.2, §5.3) and joint ones, in
//! which every decision needs a majority of both halves (§6 of the paper,
//! thesis §4.3).

use std::collections::BTreeSet;

/// The outcome of an election tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// Neither a quorum of grants nor of rejections yet.
    Pending,
    /// A quorum rejected.
    Lost,
    /// A quorum granted.
    Won,
}

/// The voters of a simple configuration.
pub(crate) type MajorityConfig = BTreeSet<u64>;

/// The index acknowledged by a majority of `voters`, given each voter's
/// acknowledged index (`None` counts as 0). An empty configuration returns
/// `u64::MAX` so it never constrains a joint one.
pub(crate) fn majority_committed_index(
    voters: &MajorityConfig,
    acked: impl Fn(u64) -> Option<u64>,
) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    let mut idx: Vec<u64> = voters.iter().map(|&id| acked(id).unwrap_or(0)).collect();
    idx.sort_unstable_by(|a, b| b.cmp(a));
    idx[voters.len() / 2]
}

/// The result of a vote among `voters`; `votes(id)` is `Some(granted)` for the
/// voters that answered. An empty configuration wins.
pub(crate) fn majority_vote_result(
    voters: &MajorityConfig,
    votes: impl Fn(u64) -> Option<bool>,
) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut yes, mut missing) = (0, 0);
    for &id in voters {
        match votes(id) {
            Some(true) => yes += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let q = voters.len() / 2 + 1;
    if yes >= q {
        VoteResult::Won
    } else if yes + missing >= q {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// A configuration of incoming and (while joint) outgoing voters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JointConfig {
    pub(crate) incoming: MajorityConfig,
    pub(crate) outgoing: MajorityConfig,
}

impl JointConfig {
    pub(crate) fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Every voter of either half.
    pub(crate) fn ids(&self) -> BTreeSet<u64> {
        self.incoming.union(&self.outgoing).copied().collect()
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.incoming.contains(&id) || self.outgoing.contains(&id)
    }

    /// The index committed in both halves.
    pub(crate) fn committed_index(&self, acked: impl Fn(u64) -> Option<u64> + Copy) -> u64 {
        majority_committed_index(&self.incoming, acked)
            .min(majority_committed_index(&self.outgoing, acked))
    }

    /// Won only if both halves won; lost if either lost.
    pub(crate) fn vote_result(&self, votes: impl Fn(u64) -> Option<bool> + Copy) -> VoteResult {
        let i = majority_vote_result(&self.incoming, votes);
        let o = majority_vote_result(&self.outgoing, votes);
        match (i, o) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cfg(ids: &[u64]) -> MajorityConfig {
        ids.iter().copied().collect()
    }

    #[test]
    fn majority_committed_index_2ab() {
        let acked: BTreeMap<u64, u64> = [(1, 5), (2, 3), (3, 9), (4, 1)].into_iter().collect();
        let f = |id| acked.get(&id).copied();
        assert_eq!(majority_committed_index(&cfg(&[]), f), u64::MAX);
        assert_eq!(majority_committed_index(&cfg(&[1]), f), 5);
        assert_eq!(majority_committed_index(&cfg(&[1, 2]), f), 3);
        assert_eq!(majority_committed_index(&cfg(&[1, 2, 3]), f), 5);
        assert_eq!(majority_committed_index(&cfg(&[1, 2, 3, 4]), f), 3);
        assert_eq!(majority_committed_index(&cfg(&[1, 2, 3, 4, 5]), f), 3);
        assert_eq!(majority_committed_index(&cfg(&[5, 6, 1]), f), 0);
    }

    #[test]
    fn majority_vote_result_2aa() {
        let votes: BTreeMap<u64, bool> = [(1, true), (2, false), (3, true)].into_iter().collect();
        let f = |id| votes.get(&id).copied();
        assert_eq!(majority_vote_result(&cfg(&[]), f), VoteResult::Won);
        assert_eq!(majority_vote_result(&cfg(&[1, 2, 3]), f), VoteResult::Won);
        assert_eq!(
            majority_vote_result(&cfg(&[1, 2, 4]), f),
            VoteResult::Pending
        );
        assert_eq!(
            majority_vote_result(&cfg(&[2, 4, 5]), f),
            VoteResult::Pending
        );
        assert_eq!(
            majority_vote_result(&cfg(&[1, 2, 4, 5]), f),
            VoteResult::Pending
        );
        assert_eq!(majority_vote_result(&cfg(&[2, 1]), f), VoteResult::Lost);
        assert_eq!(majority_vote_result(&cfg(&[2]), f), VoteResult::Lost);
    }

    #[test]
    fn joint_config_needs_both_halves_3a() {
        let acked: BTreeMap<u64, u64> = [(1, 9), (2, 8), (3, 2), (4, 1)].into_iter().collect();
        let f = |id| acked.get(&id).copied();
        let j = JointConfig {
            incoming: cfg(&[1, 2, 3]),
            outgoing: cfg(&[3, 4, 5]),
        };
        assert!(j.is_joint());
        assert_eq!(j.committed_index(f), 1);
        let j = JointConfig {
            incoming: cfg(&[1, 2, 3]),
            outgoing: cfg(&[]),
        };
        assert_eq!(j.committed_index(f), 8);

        let votes: BTreeMap<u64, bool> = [(1, true), (2, true), (4, false), (5, false)]
            .into_iter()
            .collect();
        let v = |id| votes.get(&id).copied();
        let j = JointConfig {
            incoming: cfg(&[1, 2, 3]),
            outgoing: cfg(&[3, 4, 5]),
        };
        assert_eq!(j.vote_result(v), VoteResult::Lost);
        let j = JointConfig {
            incoming: cfg(&[1, 2, 3]),
            outgoing: cfg(&[1, 3, 4]),
        };
        assert_eq!(j.vote_result(v), VoteResult::Pending);
        let j = JointConfig {
            incoming: cfg(&[1, 2, 3]),
            outgoing: cfg(&[1, 2, 4]),
        };
        assert_eq!(j.vote_result(v), VoteResult::Won);
    }
}
