//! What an administrator asks of the scheduler by hand: an operator on one region (move its
//! leader, add or remove a peer), and the schedule settings that can change at run time
//! (balance-leader, balance-region, the per-store operator limit), persisted so a restart keeps
//! them.

use proto::schedulerpb::ScheduleConfig;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::meta::{self, lock, Batch};
use crate::operator::{self, OpKind, OpStep, Operator};
use crate::region::RegionInfo;

/// An operator an administrator asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminOp {
    /// Move the region's leader to its voter on this store.
    TransferLeader(u64),
    /// Add a voter on this store.
    AddPeer(u64),
    /// Remove the region's peer on this store (moving the leader away first if it is there).
    RemovePeer(u64),
}

impl Cluster {
    /// Adds the operator `op` on region `region_id` and returns it; the region's leader carries
    /// it out through its heartbeats, as any operator.
    ///
    /// # Errors
    /// `RegionNotFound`, `StoreNotFound`; `InvalidArgument` when the operator cannot apply (no
    /// voter on the target store, a peer already there, the store down, the region without a
    /// known leader, another operator running on the region).
    pub fn admin_operator(&self, region_id: u64, op: AdminOp) -> Result<Operator> {
        let region = self.get_region_by_id(region_id)?;
        let now = self.clock.now_ms();
        let bad = |why: String| Error::InvalidArgument(format!("region {region_id}: {why}"));
        let leader = region
            .leader_store()
            .ok_or_else(|| bad("no known leader yet".into()))?;
        let (desc, steps) = match op {
            AdminOp::TransferLeader(to) => {
                let voter = region.voters().any(|p| p.store_id == to);
                if !voter {
                    return Err(bad(format!("no voter on store {to}")));
                }
                if leader == to {
                    return Err(bad(format!("store {to} already leads it")));
                }
                let step = OpStep::TransferLeader {
                    from_store: leader,
                    to_store: to,
                };
                ("admin-transfer-leader", vec![step])
            }
            AdminOp::AddPeer(store) => {
                self.check_serving(store)?;
                if region.peer_on(store).is_some() {
                    return Err(bad(format!("store {store} already holds a peer")));
                }
                let peer_id = self.alloc_id()?;
                let steps = operator::add_peer_steps(store, peer_id, self.config.use_learner);
                ("admin-add-peer", steps)
            }
            AdminOp::RemovePeer(store) => {
                if region.peer_on(store).is_none() {
                    return Err(bad(format!("no peer on store {store}")));
                }
                let mut steps = Vec::new();
                if leader == store {
                    let to = other_voter(&region, store)
                        .ok_or_else(|| bad("no other voter to lead it".into()))?;
                    steps.push(OpStep::TransferLeader {
                        from_store: store,
                        to_store: to,
                    });
                }
                steps.push(OpStep::RemovePeer { store_id: store });
                ("admin-remove-peer", steps)
            }
        };
        let timeout = self.config.operator_timeout_ms;
        let op = Operator::new(desc, OpKind::Admin, &region, steps, now, timeout);
        if !lock(&self.state).ops.add(op.clone()) {
            return Err(bad(
                "another operator is running on it; retry when it ends".into()
            ));
        }
        Ok(op)
    }

    fn check_serving(&self, store_id: u64) -> Result<()> {
        let store = self.get_store(store_id)?;
        let now = self.clock.now_ms();
        if !store.is_serving(now, self.config.max_store_down_time_ms) {
            return Err(Error::InvalidArgument(format!(
                "store {store_id} is not up (offline, tombstone or silent)"
            )));
        }
        Ok(())
    }

    /// The schedule settings in force.
    pub fn schedule_config(&self) -> ScheduleConfig {
        *lock(&self.schedule)
    }

    /// Replaces the schedule settings, persisted first.
    ///
    /// # Errors
    /// `InvalidArgument` for a store limit of 0; a failed write of the scheduler's data.
    pub fn set_schedule_config(&self, config: ScheduleConfig) -> Result<()> {
        if config.store_limit == 0 {
            return Err(Error::InvalidArgument(
                "store_limit must be at least 1".into(),
            ));
        }
        let mut batch = Batch::default();
        batch.put_msg(meta::SCHEDULE_CONFIG_KEY, &config);
        let mut current = lock(&self.schedule);
        self.meta.write(batch, true)?;
        tracing::info!(?config, "schedule config changed");
        *current = config;
        Ok(())
    }

    /// The MVCC GC safe point (0: none yet).
    pub fn gc_safe_point(&self) -> u64 {
        *lock(&self.gc_safe_point)
    }

    /// Raises the GC safe point to `safe_point`, persisted first; a lower one changes nothing.
    /// Returns the safe point in force.
    ///
    /// # Errors
    /// A failed write of the scheduler's data.
    pub fn update_gc_safe_point(&self, safe_point: u64) -> Result<u64> {
        let (in_force, raised) = self.raise_gc_safe_point(safe_point)?;
        if raised {
            tracing::info!(safe_point, "GC safe point raised");
        }
        Ok(in_force)
    }

    /// Raises the safe point to `safe_point` if that is higher, persisted first: the safe point
    /// in force and whether it moved.
    fn raise_gc_safe_point(&self, safe_point: u64) -> Result<(u64, bool)> {
        let mut current = lock(&self.gc_safe_point);
        if safe_point <= *current {
            return Ok((*current, false));
        }
        let mut batch = Batch::default();
        batch.put_u64(meta::GC_SAFE_POINT_KEY, safe_point);
        self.meta.write(batch, true)?;
        *current = safe_point;
        Ok((safe_point, true))
    }

    /// Raises the GC safe point automatically (`gc_life_time_secs`): to now minus the life
    /// time, but below the oldest lock any serving store reports, and only once every serving
    /// store has reported. Returns the safe point in force. The server calls it once a second.
    ///
    /// # Errors
    /// A failed write of the scheduler's data.
    pub fn advance_gc_safe_point_auto(&self) -> Result<u64> {
        let current = self.gc_safe_point();
        let life_ms = self.config.gc_life_time_secs.saturating_mul(1000);
        if life_ms == 0 {
            return Ok(current);
        }
        // Timestamps follow the wall clock; liveness the cluster clock.
        let now = self.clock.now_ms();
        let wall = crate::alloc::wall_ms();
        let mut target = codec::ts::compose_ts(wall.saturating_sub(life_ms), 0);
        {
            let state = lock(&self.state);
            let mut serving = 0;
            for s in state.stores.values() {
                if !s.is_serving(now, self.config.max_store_down_time_ms) {
                    continue;
                }
                serving += 1;
                // A store that has not reported yet may hold any lock.
                let Some(stats) = &s.stats else {
                    return Ok(current);
                };
                if stats.oldest_lock_ts > 0 {
                    target = target.min(stats.oldest_lock_ts - 1);
                }
            }
            if serving == 0 {
                return Ok(current);
            }
        }
        let (in_force, raised) = self.raise_gc_safe_point(target)?;
        if raised {
            tracing::debug!(safe_point = in_force, "GC safe point raised (automatic)");
        }
        Ok(in_force)
    }

    /// The configuration with the run-time schedule settings applied.
    pub(crate) fn effective_config(&self) -> Config {
        let s = self.schedule_config();
        Config {
            balance_leader: s.balance_leader,
            balance_region: s.balance_region,
            store_limit: usize::try_from(s.store_limit).unwrap_or(usize::MAX),
            ..self.config.clone()
        }
    }
}

/// A voter of `region` on another store than `store`.
fn other_voter(region: &RegionInfo, store: u64) -> Option<u64> {
    region.voters().map(|p| p.store_id).find(|s| *s != store)
}
