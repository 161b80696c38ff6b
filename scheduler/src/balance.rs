//! The balance schedulers.
//!
//! balance-leader moves one leader from the store leading the most regions to a follower's
//! store leading the fewest, when that narrows the gap without reversing it.
//!
//! balance-region moves one replica from the fullest store (by region weight) to the emptiest
//! one that does not hold the region yet, when the gap is at least twice the region's weight, so
//! the move never makes the target fuller than the source. Regions with pending peers are left
//! alone, except that a region whose pending peer sits on the source is picked first: moving it
//! relieves the source of a replica that is behind anyway. Regions with down peers, with an
//! operator, or with the wrong replica count (the replica checker's business) are skipped.

use crate::coordinator::Ctx;
use crate::error::Result;
use crate::operator::{self, OpKind, OpStep, Operator};
use crate::region::RegionInfo;

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
    let leaders = |id: &u64| ctx.regions.store_counts(*id).leader_count;
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
    let weight = |id: u64| ctx.regions.store_counts(id).region_weight;
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
