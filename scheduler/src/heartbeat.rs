//! Region heartbeats and region queries.
//!
//! A heartbeat is accepted only if it is not older than what the scheduler knows: against the
//! same region, a lower version, or an equal version with a lower conf_ver, is stale; against an
//! overlapping region of another id, a lower version is stale (that region came out of a later
//! split or merge). An accepted heartbeat replaces every region it overlaps, so whichever order
//! the halves of a split report in, each key has exactly one owner: the newest one.

use proto::metapb;
use proto::schedulerpb::{RegionHeartbeatRequest, RegionHeartbeatResponse};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::meta::{self, lock, Batch};
use crate::region::RegionInfo;

fn epoch_of(region: &metapb::Region) -> (u64, u64) {
    region
        .region_epoch
        .as_ref()
        .map_or((0, 0), |e| (e.conf_ver, e.version))
}

/// Why `new` is staler than `old` (same region), if it is.
fn stale_against_same(new: (u64, u64), old: (u64, u64)) -> Option<String> {
    let ((new_conf, new_ver), (old_conf, old_ver)) = (new, old);
    if new_ver < old_ver || (new_ver == old_ver && new_conf < old_conf) {
        return Some(format!(
            "epoch (conf_ver {new_conf}, version {new_ver}) older than known \
             (conf_ver {old_conf}, version {old_ver})"
        ));
    }
    None
}

fn validate(req: &RegionHeartbeatRequest) -> Result<RegionInfo> {
    let region = req
        .region
        .clone()
        .ok_or_else(|| Error::InvalidArgument("heartbeat without region".into()))?;
    if region.id == 0 || region.region_epoch.is_none() {
        return Err(Error::InvalidArgument(format!(
            "heartbeat of region {} without id or epoch",
            region.id
        )));
    }
    if !region.end_key.is_empty() && region.start_key >= region.end_key {
        return Err(Error::InvalidArgument(format!(
            "region {} has an empty key range",
            region.id
        )));
    }
    let leader = req
        .leader
        .filter(|l| {
            region
                .peers
                .iter()
                .any(|p| p.id == l.id && p.store_id == l.store_id)
        })
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "heartbeat of region {} without a leader among its peers",
                region.id
            ))
        })?;
    Ok(RegionInfo {
        region,
        leader: Some(leader),
        pending_peers: req.pending_peers.clone(),
        down_peers: req.down_peers.clone(),
        approximate_size: req.approximate_size,
        approximate_keys: req.approximate_keys,
    })
}

impl Cluster {
    /// Processes a region heartbeat: updates the region tree (persisting metadata changes) and
    /// returns the next step of the region's operator, if it has one.
    pub fn region_heartbeat(
        &self,
        req: &RegionHeartbeatRequest,
    ) -> Result<Option<RegionHeartbeatResponse>> {
        let start = std::time::Instant::now();
        let out = self.handle_region_heartbeat(req);
        self.metrics.on_region_heartbeat(start.elapsed());
        out
    }

    fn handle_region_heartbeat(
        &self,
        req: &RegionHeartbeatRequest,
    ) -> Result<Option<RegionHeartbeatResponse>> {
        let info = validate(req)?;
        let region_id = info.id();
        let mut state = lock(&self.state);
        let max_replicas = state.bootstrapped()?.max_peer_count as usize;
        let new_epoch = info.epoch();
        let old = state.regions.get(region_id);
        if let Some(reason) = old.and_then(|o| stale_against_same(new_epoch, o.epoch())) {
            return Err(Error::StaleRegion { region_id, reason });
        }
        let overlapping = state
            .regions
            .overlapping(&info.region.start_key, &info.region.end_key);
        for other in overlapping.iter().filter(|id| **id != region_id) {
            let other_version = state.regions.get(*other).map_or(0, |r| r.epoch().1);
            if new_epoch.1 < other_version {
                return Err(Error::StaleRegion {
                    region_id,
                    reason: format!(
                        "version {} older than overlapping region {other} (version {other_version})",
                        new_epoch.1
                    ),
                });
            }
        }
        let meta_changed = old.is_none_or(|o| o.region != info.region);
        let overlaps_others = overlapping.iter().any(|id| *id != region_id);
        if meta_changed || overlaps_others {
            let mut batch = Batch::default();
            batch.put_msg(&meta::region_key(region_id), &info.region);
            for other in overlapping.iter().filter(|id| **id != region_id) {
                batch.delete(&meta::region_key(*other));
            }
            // Not synced: a lost update is repaired by the region's next heartbeat.
            self.meta.write(batch, false)?;
        }
        if meta_changed {
            tracing::debug!(
                region_id,
                conf_ver = new_epoch.0,
                version = new_epoch.1,
                "region metadata changed"
            );
        }
        for removed in state.regions.insert(info) {
            tracing::debug!(
                region_id = removed.id(),
                by = region_id,
                "region replaced by overlap"
            );
            state.ops.remove(removed.id(), "region replaced");
        }
        let now = self.clock.now_ms();
        let state = &mut *state;
        let Some(info) = state.regions.get(region_id) else {
            return Ok(None);
        };
        if let Some(resp) = state.ops.dispatch(info, now) {
            return Ok(Some(resp));
        }
        // No operator, or it just ended: the replica checker may have work for the region.
        if !state.ops.has(region_id) {
            let config = self.effective_config();
            let ctx = crate::coordinator::Ctx {
                stores: &state.stores,
                regions: &state.regions,
                ops: &state.ops,
                max_replicas,
                now_ms: now,
                config: &config,
            };
            let op = crate::schedulers::check_replicas(&ctx, info, &mut || self.alloc_id())?;
            if let Some(op) = op {
                state.ops.add(op);
            }
        }
        Ok(state.ops.dispatch(info, now))
    }

    /// The region owning `key`, with its leader and pending peers.
    pub fn get_region(&self, key: &[u8]) -> Result<RegionInfo> {
        let state = lock(&self.state);
        state.bootstrapped()?;
        state
            .regions
            .search(key)
            .cloned()
            .ok_or_else(|| Error::RegionNotFound(format!("no region holds key {key:?}")))
    }

    /// The region with this id.
    pub fn get_region_by_id(&self, region_id: u64) -> Result<RegionInfo> {
        let state = lock(&self.state);
        state.bootstrapped()?;
        state
            .regions
            .get(region_id)
            .cloned()
            .ok_or_else(|| Error::RegionNotFound(format!("region {region_id}")))
    }

    /// Regions intersecting `[start, end)` (empty end = to the end) in key order, at most
    /// `limit` of them (0 = all).
    pub fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<RegionInfo>> {
        let state = lock(&self.state);
        state.bootstrapped()?;
        Ok(state
            .regions
            .scan(start, end, limit)
            .into_iter()
            .cloned()
            .collect())
    }

    /// Every region, in key order.
    pub fn regions(&self) -> Vec<RegionInfo> {
        lock(&self.state).regions.iter().cloned().collect()
    }

    /// Ids for splitting `region`: the new region's id and one new peer id per peer. A region
    /// the scheduler knows with a newer epoch is stale; one it does not know yet (a fresh split
    /// that has not reported) is served.
    pub fn ask_split(&self, region: &metapb::Region) -> Result<(u64, Vec<u64>)> {
        if region.id == 0 || region.peers.is_empty() {
            return Err(Error::InvalidArgument(
                "ask split needs a region with an id and peers".into(),
            ));
        }
        {
            let state = lock(&self.state);
            state.bootstrapped()?;
            if let Some(known) = state.regions.get(region.id) {
                if epoch_of(region).1 < known.epoch().1 {
                    return Err(Error::StaleRegion {
                        region_id: region.id,
                        reason: format!(
                            "split asked at version {}, region is at version {}",
                            epoch_of(region).1,
                            known.epoch().1
                        ),
                    });
                }
            }
        }
        let new_region_id = self.alloc_id()?;
        let peer_ids = region
            .peers
            .iter()
            .map(|_| self.alloc_id())
            .collect::<Result<Vec<u64>>>()?;
        Ok((new_region_id, peer_ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_epoch_rules_3c() {
        // (conf_ver, version)
        assert!(stale_against_same((1, 1), (1, 1)).is_none());
        assert!(stale_against_same((1, 2), (1, 1)).is_none());
        assert!(stale_against_same((9, 1), (1, 2)).is_some());
        assert!(stale_against_same((1, 2), (2, 2)).is_some());
        assert!(stale_against_same((2, 3), (3, 2)).is_none());
    }
}
