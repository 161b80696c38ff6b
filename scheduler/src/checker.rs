//! The replica checker: keeps every region at the configured number of healthy voters.
//!
//! In order: a leftover learner is promoted (or removed when not needed); a missing replica is
//! added on the emptiest suitable store; an extra one is removed (the unhealthiest first, the
//! leader only after handing leadership over); a replica on a down, offline or tombstone store is
//! replaced by a new one elsewhere before the old one goes.

use proto::metapb::PeerRole;

use crate::coordinator::Ctx;
use crate::error::Result;
use crate::operator::{self, OpKind, OpStep, Operator};
use crate::region::RegionInfo;

/// Whether the region's peer on `store_id` can no longer be counted on.
fn is_bad(ctx: &Ctx<'_>, region: &RegionInfo, store_id: u64) -> bool {
    let down_for_long = region.down_peers.iter().any(|d| {
        d.peer.as_ref().is_some_and(|p| p.store_id == store_id)
            && d.down_seconds.saturating_mul(1000) >= ctx.config.max_store_down_time_ms
    });
    !ctx.is_serving(store_id) || down_for_long
}

/// An operator fixing the replicas of `region`, if they need fixing and the cluster can.
pub(crate) fn check_replicas(
    ctx: &Ctx<'_>,
    region: &RegionInfo,
    alloc: &mut dyn FnMut() -> Result<u64>,
) -> Result<Option<Operator>> {
    if ctx.ops.has(region.id()) {
        return Ok(None);
    }
    let Some(leader_store) = region.leader_store() else {
        return Ok(None);
    };
    let new_op = |desc, steps| {
        Operator::new(
            desc,
            OpKind::Replica,
            region,
            steps,
            ctx.now_ms,
            ctx.config.operator_timeout_ms,
        )
    };
    let voters: Vec<u64> = region.voters().map(|p| p.store_id).collect();

    if let Some(learner) = region
        .region
        .peers
        .iter()
        .find(|p| p.role == PeerRole::Learner as i32)
    {
        // A learner outside any operator is what a timed-out add left behind.
        let step = if voters.len() < ctx.max_replicas && !is_bad(ctx, region, learner.store_id) {
            OpStep::PromoteLearner {
                store_id: learner.store_id,
                peer_id: learner.id,
            }
        } else {
            OpStep::RemovePeer {
                store_id: learner.store_id,
            }
        };
        return Ok(Some(new_op("fix-learner", vec![step])));
    }

    if voters.len() < ctx.max_replicas {
        let Some(target) = ctx.targets_for(region).first().copied() else {
            return Ok(None);
        };
        let steps = operator::add_peer_steps(target, alloc()?, ctx.config.use_learner);
        return Ok(Some(new_op("add-replica", steps)));
    }

    if voters.len() > ctx.max_replicas {
        // The worst replica goes: unhealthy, then pending, then a follower on the fullest store.
        let Some(worst) = voters.iter().copied().max_by_key(|s| {
            (
                is_bad(ctx, region, *s),
                region.is_pending_on(*s),
                // Removing the leader costs a transfer first: any equal follower goes before.
                *s != leader_store,
                ctx.regions.store_counts(*s).region_weight,
                std::cmp::Reverse(*s),
            )
        }) else {
            return Ok(None);
        };
        let mut steps = Vec::new();
        if worst == leader_store {
            let Some(heir) = voters
                .iter()
                .copied()
                .find(|s| *s != worst && !is_bad(ctx, region, *s) && !region.is_pending_on(*s))
            else {
                return Ok(None);
            };
            steps.push(OpStep::TransferLeader {
                from_store: worst,
                to_store: heir,
            });
        }
        steps.push(OpStep::RemovePeer { store_id: worst });
        return Ok(Some(new_op("remove-extra-replica", steps)));
    }

    let Some(bad) = voters.iter().copied().find(|s| is_bad(ctx, region, *s)) else {
        return Ok(None);
    };
    let Some(target) = ctx.targets_for(region).first().copied() else {
        return Ok(None);
    };
    let steps = operator::move_peer_steps(region, bad, target, alloc()?, ctx.config.use_learner);
    Ok(Some(new_op("replace-bad-replica", steps)))
}
