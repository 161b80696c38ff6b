//! The balance round ([`Cluster::schedule`]) and the operator queries and admin entry points of
//! [`Cluster`]: the cluster's side of the coordinator (`coordinator.rs`) and the balance
//! schedulers (`schedulers.rs`).

use crate::cluster::Cluster;
use crate::coordinator::{Ctx, OpCounters};
use crate::error::Result;
use crate::meta::lock;
use crate::operator::Operator;

impl Cluster {
    /// Runs the balance schedulers once: drops timed-out operators, then lets balance-leader and
    /// balance-region each propose at most one operator. Returns the operators created. The
    /// server calls this every `schedule_interval_ms`; tests call it directly.
    pub fn schedule(&self) -> Result<Vec<Operator>> {
        let mut state = lock(&self.state);
        let Some(cluster) = state.cluster.as_ref() else {
            return Ok(Vec::new());
        };
        let max_replicas = cluster.max_peer_count as usize;
        let now = self.clock.now_ms();
        let state = &mut *state;
        state.ops.sweep_timeouts(now);
        let config = self.effective_config();
        let mut created = Vec::new();
        type Scheduler = fn(&Ctx<'_>, &mut dyn FnMut() -> Result<u64>) -> Result<Option<Operator>>;
        let mut schedulers: Vec<Scheduler> = Vec::new();
        if config.balance_leader {
            schedulers.push(crate::schedulers::balance_leader);
        }
        if config.balance_region {
            schedulers.push(crate::schedulers::balance_region);
        }
        for scheduler in schedulers {
            let ctx = Ctx {
                stores: &state.stores,
                regions: &state.regions,
                ops: &state.ops,
                max_replicas,
                now_ms: now,
                config: &config,
            };
            if let Some(op) = scheduler(&ctx, &mut || self.alloc_id())? {
                if state.ops.add(op.clone()) {
                    created.push(op);
                }
            }
        }
        Ok(created)
    }

    /// The operator in flight for a region.
    pub fn operator(&self, region_id: u64) -> Option<Operator> {
        lock(&self.state).ops.get(region_id).cloned()
    }

    /// Adds an operator by hand (an admin's or a test's); false if the region already has one.
    pub fn add_operator(&self, op: Operator) -> bool {
        lock(&self.state).ops.add(op)
    }

    /// How operators ended so far.
    pub fn operator_counters(&self) -> OpCounters {
        lock(&self.state).ops.counters
    }
}
