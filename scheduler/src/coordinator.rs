//! The coordinator: keeps at most one operator per region, hands out their steps on region
//! heartbeats, enforces the per-store limit and timeouts, and gives the schedulers their view
//! of the cluster ([`Ctx`]). The balance round that runs them is `Cluster::schedule`, in
//! `schedule.rs`.

use std::collections::{BTreeMap, HashMap};

use proto::schedulerpb::RegionHeartbeatResponse;

use crate::config::Config;
use crate::metrics::{OpEvent, SchedulerMetrics};
use crate::operator::{OpStatus, OpStep, Operator};
use crate::region::{RegionInfo, RegionTree, StoreInfo};

/// What a scheduler or checker sees of the cluster.
pub(crate) struct Ctx<'a> {
    pub(crate) stores: &'a BTreeMap<u64, StoreInfo>,
    pub(crate) regions: &'a RegionTree,
    pub(crate) ops: &'a OperatorController,
    pub(crate) max_replicas: usize,
    pub(crate) now_ms: u64,
    pub(crate) config: &'a Config,
}

impl Ctx<'_> {
    /// Whether the store exists, is up and talking.
    pub(crate) fn is_serving(&self, store_id: u64) -> bool {
        self.stores
            .get(&store_id)
            .is_some_and(|s| s.is_serving(self.now_ms, self.config.max_store_down_time_ms))
    }

    /// Whether another operator may touch the store.
    pub(crate) fn has_room(&self, store_id: u64) -> bool {
        self.ops.store_load(store_id) < self.config.store_limit
    }

    // Stores learn of an operator only at its region's next heartbeat: rounds of scheduling that
    // went by the reported counts alone would each send another leader or replica the same way,
    // overshoot, and swing back. So the balance schedulers count what is in flight as done.

    /// The store's leader count once the leader transfers in flight are done: a transfer counts
    /// while its region's leader is still on the store it leaves.
    pub(crate) fn expected_leaders(&self, store_id: u64) -> u64 {
        let mut leaders = self.regions.store_counts(store_id).leader_count;
        for op in self.ops.iter() {
            let leader = self
                .regions
                .get(op.region_id)
                .and_then(|r| r.leader_store());
            for step in &op.steps {
                match *step {
                    OpStep::TransferLeader {
                        from_store,
                        to_store,
                    } if leader == Some(from_store) => {
                        if to_store == store_id {
                            leaders += 1;
                        } else if from_store == store_id {
                            leaders = leaders.saturating_sub(1);
                        }
                    }
                    _ => {}
                }
            }
        }
        leaders
    }

    /// The store's region weight once the operators in flight are done: a replica being added
    /// counts already, one being removed no longer.
    pub(crate) fn expected_weight(&self, store_id: u64) -> u64 {
        let mut weight = self.regions.store_counts(store_id).region_weight;
        for op in self.ops.iter() {
            let Some(region) = self.regions.get(op.region_id) else {
                continue;
            };
            let size = region.effective_size();
            let here = region.peer_on(store_id).is_some();
            for step in &op.steps {
                match *step {
                    OpStep::AddPeer { store_id: s, .. }
                    | OpStep::AddLearner { store_id: s, .. }
                        if s == store_id && !here =>
                    {
                        weight += size;
                    }
                    OpStep::RemovePeer { store_id: s } if s == store_id && here => {
                        weight = weight.saturating_sub(size);
                    }
                    _ => {}
                }
            }
        }
        weight
    }

    /// Stores that may take a new replica of `region`: serving, with room, without a peer of it.
    /// Ordered emptiest first (by expected region weight, then id, for determinism).
    pub(crate) fn targets_for(&self, region: &RegionInfo) -> Vec<u64> {
        let mut targets: Vec<u64> = self
            .stores
            .keys()
            .copied()
            .filter(|id| self.is_serving(*id) && self.has_room(*id))
            .filter(|id| region.peer_on(*id).is_none())
            .collect();
        targets.sort_by_key(|id| (self.expected_weight(*id), *id));
        targets
    }
}

/// Outcomes of operators that left the controller, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounters {
    /// Operators created.
    pub created: u64,
    /// Operators whose steps all finished.
    pub finished: u64,
    /// Operators dropped at their deadline.
    pub timed_out: u64,
    /// Operators dropped because their region changed or a step became impossible.
    pub cancelled: u64,
}

/// The operators in flight, at most one per region.
#[derive(Debug, Default)]
pub(crate) struct OperatorController {
    ops: HashMap<u64, Operator>,
    pub(crate) counters: OpCounters,
    pub(crate) metrics: SchedulerMetrics,
}

impl OperatorController {
    pub(crate) fn has(&self, region_id: u64) -> bool {
        self.ops.contains_key(&region_id)
    }

    pub(crate) fn get(&self, region_id: u64) -> Option<&Operator> {
        self.ops.get(&region_id)
    }

    /// The operators in flight.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Operator> {
        self.ops.values()
    }

    /// Operators in flight that touch `store_id`.
    pub(crate) fn store_load(&self, store_id: u64) -> usize {
        self.ops
            .values()
            .filter(|op| op.stores().contains(&store_id))
            .count()
    }

    /// Adds `op` unless its region already has one.
    pub(crate) fn add(&mut self, op: Operator) -> bool {
        if self.ops.contains_key(&op.region_id) {
            return false;
        }
        tracing::info!(region_id = op.region_id, desc = op.desc, steps = ?op.steps, "operator created");
        self.counters.created += 1;
        self.metrics.on_operator(op.kind, OpEvent::Created);
        self.ops.insert(op.region_id, op);
        true
    }

    pub(crate) fn remove(&mut self, region_id: u64, why: &'static str) {
        if let Some(op) = self.ops.remove(&region_id) {
            tracing::info!(region_id, desc = op.desc, why, "operator cancelled");
            self.counters.cancelled += 1;
            self.metrics.on_operator(op.kind, OpEvent::Cancelled);
        }
    }

    /// Updates the region's operator from a heartbeat and returns the step to send.
    pub(crate) fn dispatch(
        &mut self,
        region: &RegionInfo,
        now_ms: u64,
    ) -> Option<RegionHeartbeatResponse> {
        let op = self.ops.get_mut(&region.id())?;
        let status = op.check(region, now_ms);
        let (region_id, desc, kind) = (op.region_id, op.desc, op.kind);
        let event = match status {
            OpStatus::Running(resp) => return Some(resp),
            OpStatus::Finished => {
                tracing::info!(region_id, desc, "operator finished");
                self.counters.finished += 1;
                OpEvent::Finished
            }
            OpStatus::TimedOut => {
                tracing::warn!(region_id, desc, "operator timed out");
                self.counters.timed_out += 1;
                OpEvent::TimedOut
            }
            OpStatus::Cancelled(why) => {
                tracing::info!(region_id, desc, why, "operator cancelled");
                self.counters.cancelled += 1;
                OpEvent::Cancelled
            }
        };
        self.metrics.on_operator(kind, event);
        self.ops.remove(&region_id);
        None
    }

    /// Drops operators past their deadline, even of regions that stopped heartbeating.
    pub(crate) fn sweep_timeouts(&mut self, now_ms: u64) {
        let expired: Vec<u64> = self
            .ops
            .values()
            .filter(|op| op.is_timed_out(now_ms))
            .map(|op| op.region_id)
            .collect();
        for region_id in expired {
            if let Some(op) = self.ops.remove(&region_id) {
                tracing::warn!(region_id, desc = op.desc, "operator timed out");
                self.counters.timed_out += 1;
                self.metrics.on_operator(op.kind, OpEvent::TimedOut);
            }
        }
    }
}
