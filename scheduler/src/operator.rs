//! Operators: what the scheduler wants done to one region, as a list of steps handed to the
//! region's leader one at a time in heartbeat responses.
//!
//! A step is finished when a heartbeat shows its effect (the peer is there, the leader moved),
//! so progress needs no acknowledgement and survives lost responses: the current step is simply
//! sent again on the next heartbeat.

use proto::metapb::{self, PeerRole};
use proto::raft_cmdpb::ConfChangeType;
use proto::schedulerpb::{ChangePeer, RegionHeartbeatResponse, TransferLeader};

use crate::region::RegionInfo;

/// One step of an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpStep {
    /// Add a learner peer `peer_id` on `store_id`.
    AddLearner {
        /// The target store.
        store_id: u64,
        /// The new peer's id.
        peer_id: u64,
    },
    /// Turn the learner `peer_id` on `store_id` into a voter.
    PromoteLearner {
        /// The learner's store.
        store_id: u64,
        /// The learner's id.
        peer_id: u64,
    },
    /// Add a voter `peer_id` on `store_id`.
    AddPeer {
        /// The target store.
        store_id: u64,
        /// The new peer's id.
        peer_id: u64,
    },
    /// Remove the region's peer on `store_id`.
    RemovePeer {
        /// The store losing its peer.
        store_id: u64,
    },
    /// Move leadership from the peer on `from_store` to the peer on `to_store`.
    TransferLeader {
        /// The current leader's store.
        from_store: u64,
        /// The new leader's store.
        to_store: u64,
    },
}

impl OpStep {
    /// Whether `region` shows the step done.
    pub fn is_finished(&self, region: &RegionInfo) -> bool {
        match *self {
            OpStep::AddLearner { store_id, peer_id } => {
                region.peer_on(store_id).is_some_and(|p| p.id == peer_id)
            }
            OpStep::PromoteLearner { store_id, peer_id }
            | OpStep::AddPeer { store_id, peer_id } => region
                .peer_on(store_id)
                .is_some_and(|p| p.id == peer_id && p.role == PeerRole::Voter as i32),
            OpStep::RemovePeer { store_id } => region.peer_on(store_id).is_none(),
            OpStep::TransferLeader { to_store, .. } => region.leader_store() == Some(to_store),
        }
    }

    /// The stores the step changes.
    pub fn stores(&self) -> Vec<u64> {
        match *self {
            OpStep::AddLearner { store_id, .. }
            | OpStep::PromoteLearner { store_id, .. }
            | OpStep::AddPeer { store_id, .. }
            | OpStep::RemovePeer { store_id } => vec![store_id],
            OpStep::TransferLeader {
                from_store,
                to_store,
            } => vec![from_store, to_store],
        }
    }

    /// The heartbeat response asking the leader of `region` to take this step, or `None` when
    /// the region no longer allows it (the peer to remove or to lead is gone).
    pub fn to_response(&self, region: &RegionInfo) -> Option<RegionHeartbeatResponse> {
        let change = |peer: metapb::Peer, change_type: ConfChangeType| ChangePeer {
            peer: Some(peer),
            change_type: change_type as i32,
        };
        let new_peer = |id, store_id, role: PeerRole| metapb::Peer {
            id,
            store_id,
            role: role as i32,
        };
        let mut resp = RegionHeartbeatResponse {
            region_id: region.id(),
            region_epoch: region.region.region_epoch,
            target_peer: region.leader,
            ..Default::default()
        };
        match *self {
            OpStep::AddLearner { store_id, peer_id } => {
                let peer = new_peer(peer_id, store_id, PeerRole::Learner);
                resp.change_peer = Some(change(peer, ConfChangeType::AddLearnerNode));
            }
            OpStep::PromoteLearner { store_id, peer_id }
            | OpStep::AddPeer { store_id, peer_id } => {
                let peer = new_peer(peer_id, store_id, PeerRole::Voter);
                resp.change_peer = Some(change(peer, ConfChangeType::AddNode));
            }
            OpStep::RemovePeer { store_id } => {
                let peer = *region.peer_on(store_id)?;
                resp.change_peer = Some(change(peer, ConfChangeType::RemoveNode));
            }
            OpStep::TransferLeader { to_store, .. } => {
                let peer = *region.peer_on(to_store)?;
                if peer.role == PeerRole::Learner as i32 {
                    return None;
                }
                resp.transfer_leader = Some(TransferLeader { peer: Some(peer) });
            }
        }
        Some(resp)
    }
}

/// Which scheduler made an operator; limits and tests tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Moves a leader only.
    Leader,
    /// Moves a replica between stores to balance them.
    Region,
    /// Repairs the replica count or replaces an unhealthy replica.
    Replica,
    /// Asked for by an administrator (`tessera-ctl transfer-leader`, ...).
    Admin,
}

/// Where an operator stands after a heartbeat of its region.
#[derive(Clone, Debug, PartialEq)]
pub enum OpStatus {
    /// The step to send now.
    Running(RegionHeartbeatResponse),
    /// Every step is done.
    Finished,
    /// It ran past its deadline.
    TimedOut,
    /// The region changed under it (split, merge) or a step became impossible.
    Cancelled(&'static str),
}

/// Steps to apply to one region.
#[derive(Clone, Debug, PartialEq)]
pub struct Operator {
    /// What it does, for logs.
    pub desc: &'static str,
    /// Who made it.
    pub kind: OpKind,
    /// The region it changes.
    pub region_id: u64,
    /// The region's epoch version when it was made; a split or merge makes it stale.
    pub region_version: u64,
    /// The steps, in order.
    pub steps: Vec<OpStep>,
    /// Index of the first unfinished step.
    pub current: usize,
    /// When it was made, on the cluster clock (ms).
    pub created_ms: u64,
    /// How long it may take (ms).
    pub timeout_ms: u64,
}

impl Operator {
    /// An operator for `region` starting now.
    pub fn new(
        desc: &'static str,
        kind: OpKind,
        region: &RegionInfo,
        steps: Vec<OpStep>,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Operator {
        Operator {
            desc,
            kind,
            region_id: region.id(),
            region_version: region.epoch().1,
            steps,
            current: 0,
            created_ms: now_ms,
            timeout_ms,
        }
    }

    /// Every store the operator changes.
    pub fn stores(&self) -> Vec<u64> {
        let mut stores: Vec<u64> = self.steps.iter().flat_map(OpStep::stores).collect();
        stores.sort_unstable();
        stores.dedup();
        stores
    }

    /// Whether it ran past its deadline at `now_ms`.
    pub fn is_timed_out(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.created_ms) > self.timeout_ms
    }

    /// Advances past the steps `region` shows done and says what comes next.
    pub fn check(&mut self, region: &RegionInfo, now_ms: u64) -> OpStatus {
        if region.epoch().1 != self.region_version {
            return OpStatus::Cancelled("region split or merged");
        }
        while self.current < self.steps.len() && self.steps[self.current].is_finished(region) {
            self.current += 1;
        }
        if self.current == self.steps.len() {
            return OpStatus::Finished;
        }
        if self.is_timed_out(now_ms) {
            return OpStatus::TimedOut;
        }
        match self.steps[self.current].to_response(region) {
            Some(resp) => OpStatus::Running(resp),
            None => OpStatus::Cancelled("step no longer possible"),
        }
    }
}

/// Steps moving the region's replica from `from` to a new peer `peer_id` on `to`: add it
/// (as a learner first if `use_learner`), hand leadership over if `from` leads, then remove the
/// old peer. The region never has fewer replicas than it started with.
pub fn move_peer_steps(
    region: &RegionInfo,
    from: u64,
    to: u64,
    peer_id: u64,
    use_learner: bool,
) -> Vec<OpStep> {
    let mut steps = add_peer_steps(to, peer_id, use_learner);
    if region.leader_store() == Some(from) {
        steps.push(OpStep::TransferLeader {
            from_store: from,
            to_store: to,
        });
    }
    steps.push(OpStep::RemovePeer { store_id: from });
    steps
}

/// Steps adding a voter `peer_id` on `store_id`.
pub fn add_peer_steps(store_id: u64, peer_id: u64, use_learner: bool) -> Vec<OpStep> {
    if use_learner {
        vec![
            OpStep::AddLearner { store_id, peer_id },
            OpStep::PromoteLearner { store_id, peer_id },
        ]
    } else {
        vec![OpStep::AddPeer { store_id, peer_id }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(peers: &[(u64, u64, PeerRole)], leader_store: u64, version: u64) -> RegionInfo {
        let peers: Vec<metapb::Peer> = peers
            .iter()
            .map(|(id, store_id, role)| metapb::Peer {
                id: *id,
                store_id: *store_id,
                role: *role as i32,
            })
            .collect();
        RegionInfo {
            leader: peers.iter().find(|p| p.store_id == leader_store).cloned(),
            region: metapb::Region {
                id: 7,
                region_epoch: Some(metapb::RegionEpoch {
                    conf_ver: 1,
                    version,
                }),
                peers,
                ..Default::default()
            },
            ..RegionInfo::default()
        }
    }

    #[test]
    fn move_peer_steps_follow_the_region_3c() {
        use PeerRole::{Learner, Voter};
        let start = info(&[(1, 1, Voter), (2, 2, Voter)], 1, 1);
        let steps = move_peer_steps(&start, 1, 3, 9, true);
        assert_eq!(steps.len(), 4, "{steps:?}");
        let mut op = Operator::new("test", OpKind::Region, &start, steps, 0, 100);
        assert_eq!(op.stores(), vec![1, 3]);

        let OpStatus::Running(resp) = op.check(&start, 1) else {
            panic!("add learner expected")
        };
        let change = resp.change_peer.expect("change peer");
        assert_eq!(change.change_type, ConfChangeType::AddLearnerNode as i32);
        assert_eq!(resp.target_peer.map(|p| p.store_id), Some(1));

        let learner = info(&[(1, 1, Voter), (2, 2, Voter), (9, 3, Learner)], 1, 1);
        let OpStatus::Running(resp) = op.check(&learner, 2) else {
            panic!("promote expected")
        };
        assert_eq!(
            resp.change_peer.map(|c| c.change_type),
            Some(ConfChangeType::AddNode as i32)
        );

        let voter = info(&[(1, 1, Voter), (2, 2, Voter), (9, 3, Voter)], 1, 1);
        let OpStatus::Running(resp) = op.check(&voter, 3) else {
            panic!("transfer expected")
        };
        assert_eq!(
            resp.transfer_leader.and_then(|t| t.peer).map(|p| p.id),
            Some(9)
        );

        let moved = info(&[(1, 1, Voter), (2, 2, Voter), (9, 3, Voter)], 3, 1);
        let OpStatus::Running(resp) = op.check(&moved, 4) else {
            panic!("remove expected")
        };
        assert_eq!(resp.change_peer.and_then(|c| c.peer).map(|p| p.id), Some(1));

        let done = info(&[(2, 2, Voter), (9, 3, Voter)], 3, 1);
        assert_eq!(op.check(&done, 5), OpStatus::Finished);
    }

    #[test]
    fn operator_times_out_or_goes_stale_3c() {
        let start = info(&[(1, 1, PeerRole::Voter)], 1, 1);
        let steps = add_peer_steps(2, 5, false);
        let mut op = Operator::new("test", OpKind::Replica, &start, steps.clone(), 1000, 100);
        assert!(matches!(op.check(&start, 1100), OpStatus::Running(_)));
        assert_eq!(op.check(&start, 1101), OpStatus::TimedOut);
        let mut op = Operator::new("test", OpKind::Replica, &start, steps, 0, 100);
        let split = info(&[(1, 1, PeerRole::Voter)], 1, 2);
        assert!(matches!(op.check(&split, 1), OpStatus::Cancelled(_)));
    }
}
