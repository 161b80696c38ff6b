//! The schedulers: the replica checker (run on every region heartbeat) and the balance
//! schedulers (run by the balance round, `Cluster::schedule` in `schedule.rs`). Each looks at a
//! [`Ctx`] and proposes at most one [`Operator`]; none of them changes state.
//!
//! The replica checker keeps every region at the configured number of healthy voters. In
//! order: a leftover learner is promoted (or removed when not needed); a missing replica is
//! added on the emptiest suitable store; an extra one is removed (the unhealthiest first, the
//! leader only after handing leadership over); a replica on a down, offline or tombstone store is
//! replaced by a new one elsewhere before the old one goes.
//!
//! balance-leader moves one leader from the store leading the most regions to a follower's
//! store leading the fewest, when that narrows the gap without reversing it. It counts the
//! transfers still in flight as done: the store learns of an operator only at the region's next
//! heartbeat, so rounds of scheduling see the same reported counts many times over, and acting
//! on those alone overshoots and then swings back for ever.
//!
//! balance-region moves one replica from the fullest store (by region weight, counting the
//! moves in flight as done, as balance-leader does) to the emptiest one that does not hold the
//! region yet, when the gap is at least twice the region's weight, so
//! the move never makes the target fuller than the source. Regions with pending peers are left
//! alone, except that a region whose pending peer sits on the source is picked first: moving it
//! relieves the source of a replica that is behind anyway. Regions with down peers, with an
//! operator, or with the wrong replica count (the replica checker's business) are skipped.

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

/// Regions examined per source store, so one run stays cheap on a big cluster.
const MAX_REGION_TRIES: usize = 64;

/// Serving stores with room for another operator.
fn candidate_stores(ctx: &Ctx<'_>) -> Vec<u64> {
    ctx.stores
        .keys()
        .copied()
        .filter(|id| ctx.is_serving(*id) && ctx.has_room(*id))
        .collect()
}

fn is_healthy(region: &RegionInfo) -> bool {
    region.down_peers.is_empty() && region.leader.is_some()
}

/// One leader transfer from the most to the least loaded store, if it helps.
pub(crate) fn balance_leader(
    ctx: &Ctx<'_>,
    _alloc: &mut dyn FnMut() -> Result<u64>,
) -> Result<Option<Operator>> {
    let mut sources = candidate_stores(ctx);
    let leaders = |id: &u64| ctx.expected_leaders(*id);
    sources.sort_by_key(|id| (std::cmp::Reverse(leaders(id)), *id));
    for source in sources {
        let led = ctx
            .regions
            .iter()
            .filter(|r| r.leader_store() == Some(source))
            .filter(|r| is_healthy(r) && !ctx.ops.has(r.id()));
        for region in led.take(MAX_REGION_TRIES) {
            let target = region
                .voters()
                .map(|p| p.store_id)
                .filter(|s| *s != source && ctx.is_serving(*s) && ctx.has_room(*s))
                .filter(|s| !region.is_pending_on(*s))
                .min_by_key(|s| (leaders(s), *s));
            let Some(target) = target else { continue };
            // After the move the source still leads at least as many as the target.
            if leaders(&source) < leaders(&target) + 2 {
                continue;
            }
            let steps = vec![OpStep::TransferLeader {
                from_store: source,
                to_store: target,
            }];
            return Ok(Some(Operator::new(
                "balance-leader",
                OpKind::Leader,
                region,
                steps,
                ctx.now_ms,
                ctx.config.operator_timeout_ms,
            )));
        }
    }
    Ok(None)
}

/// The order balance-region tries a source's regions in: pending peer on the source first, then
/// regions the source follows, then those it leads (moving a leader costs a transfer).
fn source_regions<'a>(ctx: &'a Ctx<'_>, source: u64) -> Vec<&'a RegionInfo> {
    let mut regions: Vec<(u8, &RegionInfo)> = ctx
        .regions
        .iter()
        .filter(|r| r.peer_on(source).is_some())
        .filter(|r| is_healthy(r) && !ctx.ops.has(r.id()))
        .filter(|r| {
            r.voters().count() == ctx.max_replicas && r.voters().count() == r.region.peers.len()
        })
        .filter_map(|r| {
            let pending_here = r.is_pending_on(source);
            if !r.pending_peers.is_empty() && !pending_here {
                return None;
            }
            let rank = if pending_here {
                0
            } else if r.leader_store() != Some(source) {
                1
            } else {
                2
            };
            Some((rank, r))
        })
        .collect();
    // Stable sort: within a rank, key order.
    regions.sort_by_key(|(rank, _)| *rank);
    regions.into_iter().map(|(_, r)| r).collect()
}

/// One replica move from the fullest to the emptiest store, if it helps.
pub(crate) fn balance_region(
    ctx: &Ctx<'_>,
    alloc: &mut dyn FnMut() -> Result<u64>,
) -> Result<Option<Operator>> {
    let weight = |id: u64| ctx.expected_weight(id);
    let mut sources = candidate_stores(ctx);
    sources.sort_by_key(|id| (std::cmp::Reverse(weight(*id)), *id));
    for source in sources {
        for region in source_regions(ctx, source)
            .into_iter()
            .take(MAX_REGION_TRIES)
        {
            let Some(target) = ctx.targets_for(region).first().copied() else {
                continue;
            };
            let gap = weight(source).saturating_sub(weight(target));
            if gap < 2 * region.effective_size() {
                // Targets are emptiest first: no other target helps with this region either.
                continue;
            }
            let steps =
                operator::move_peer_steps(region, source, target, alloc()?, ctx.config.use_learner);
            return Ok(Some(Operator::new(
                "balance-region",
                OpKind::Region,
                region,
                steps,
                ctx.now_ms,
                ctx.config.operator_timeout_ms,
            )));
        }
    }
    Ok(None)
}
