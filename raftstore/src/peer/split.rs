//! Region split: the leader's split-check tick, asking the scheduler for ids, proposing
//! `Split`, and applying it on every peer.
//!
//! ```text
//! tick (leader, enough written)  -> split-check worker measures the region
//! PeerMsg::SplitRegion           -> still leader, same version, key inside -> AskSplit task
//! scheduler worker               -> new region id + one peer id per peer -> Split admin command
//! propose                        -> a normal log entry
//! apply (every peer)             -> epoch and key checked again; in ONE synced kv batch with the
//!                                   apply state: left = [start, key), right = [key, end), both at
//!                                   version + 1, right's RegionLocalState and initial apply state
//!                                -> the right region's peer on this store is created and
//!                                   registered; on the old leader's store it campaigns at once
//! ```
//! The data does not move: both regions share the store's kv engine. The right region's raft log
//! starts empty at index 5 like a bootstrapped region; its raft state is derived from its apply
//! state when the peer loads. A peer of the right region that already exists here (created by a
//! message, uninitialised) is replaced; one that was initialised or destroyed meanwhile wins.

use kv::{keys, WriteBatch};
use proto::metapb::{self, RegionEpoch};
use proto::raft_cmdpb::{AdminCmdType, AdminResponse, RaftCmdRequest, SplitRequest, SplitResponse};
use proto::raft_serverpb::{PeerState, RegionLocalState};

use super::apply::ApplyEffects;
use super::conf_change::admin_response;
use super::{Peer, PeerFsm, PeerMsgHandler};
use crate::error::{Error, Result};
use crate::msg::{Callback, CmdResponse};
use crate::peer_storage::initial_apply_state;
use crate::scheduler_worker::SchedulerTask;
use crate::split_check::SplitCheckTask;
use crate::util;

/// The two halves of `region` split by `req`: the left keeps the id, the right is new.
fn split_regions(
    region: &metapb::Region,
    req: &SplitRequest,
) -> Result<(metapb::Region, metapb::Region)> {
    util::check_split_key(&req.split_key, region)?;
    if req.new_peer_ids.len() != region.peers.len() || req.new_region_id == 0 {
        return Err(Error::Other(format!(
            "region {}: split needs a new region id and {} peer ids, got {} and {:?}",
            region.id,
            region.peers.len(),
            req.new_region_id,
            req.new_peer_ids
        )));
    }
    let epoch = region.region_epoch.unwrap_or_default();
    let epoch = RegionEpoch {
        version: epoch.version + 1,
        conf_ver: epoch.conf_ver,
    };
    let mut left = region.clone();
    left.end_key = req.split_key.clone();
    left.region_epoch = Some(epoch);
    let right = metapb::Region {
        id: req.new_region_id,
        start_key: req.split_key.clone(),
        end_key: region.end_key.clone(),
        region_epoch: Some(epoch),
        peers: region
            .peers
            .iter()
            .zip(&req.new_peer_ids)
            .map(|(p, id)| metapb::Peer { id: *id, ..*p })
            .collect(),
    };
    Ok((left, right))
}

impl PeerMsgHandler<'_> {
    /// On the leader, every `split_region_check_tick_interval`: measure the region when enough
    /// was written since the last check (or its size is unknown or over the maximum).
    pub(super) fn split_check_tick(&mut self) {
        if !self.peer.is_leader() {
            self.peer.ticks.split_check = 0;
            return;
        }
        let cfg = self.ctx.cfg.clone();
        self.peer.ticks.split_check += 1;
        if self.peer.ticks.split_check < cfg.ticks(cfg.split_region_check_tick_interval) {
            return;
        }
        self.peer.ticks.split_check = 0;
        let worth_it = match self.peer.size.approximate_size {
            None => true,
            Some(size) => {
                size > cfg.region_max_size || self.peer.size.diff_hint >= cfg.region_split_size / 8
            }
        };
        if !worth_it || self.peer.snapshots.applying.is_some() {
            return;
        }
        let task = SplitCheckTask {
            region: self.peer.region(),
            max_size: cfg.region_max_size,
            split_size: cfg.region_split_size,
        };
        if self.ctx.split_checker.schedule(task).is_ok() {
            self.peer.size.diff_hint = 0;
        }
    }

    /// Asks the scheduler for the ids of a split at `split_key`, if this peer still leads the
    /// region at `epoch`'s version; the scheduler worker then sends the `Split` command.
    pub(super) fn on_split_region(&mut self, epoch: RegionEpoch, split_key: Vec<u8>, cb: Callback) {
        let term = self.peer.term();
        let region = self.peer.region();
        if !self.peer.is_leader() {
            let leader = self.peer.leader();
            return cb.invoke_with_error(
                Error::NotLeader {
                    region_id: region.id,
                    leader,
                },
                term,
            );
        }
        let current = region.region_epoch.unwrap_or_default();
        if current.version != epoch.version {
            let err = Error::EpochNotMatch {
                message: format!(
                    "region {} split asked at version {}, now {}",
                    region.id, epoch.version, current.version
                ),
                regions: vec![region],
            };
            return cb.invoke_with_error(err, term);
        }
        if let Err(e) = util::check_split_key(&split_key, &region) {
            return cb.invoke_with_error(e, term);
        }
        let Some(scheduler) = &self.ctx.scheduler else {
            let err = Error::Other(format!(
                "region {}: cannot split without a scheduler to allocate ids",
                region.id
            ));
            return cb.invoke_with_error(err, term);
        };
        let task = SchedulerTask::AskSplit {
            region,
            split_key,
            leader: self.peer.meta,
            callback: cb,
            router: self.ctx.router.clone(),
        };
        if let Err(SchedulerTask::AskSplit { callback, .. }) = scheduler.schedule(task) {
            callback.invoke_with_error(Error::Other("the scheduler worker stopped".into()), term);
        }
    }

    /// Proposes a `Split` command after checking it against the region.
    pub(super) fn propose_split(&mut self, req: &RaftCmdRequest, cb: Callback) {
        let split = req
            .admin_request
            .as_ref()
            .and_then(|a| a.split.clone())
            .unwrap_or_default();
        if let Err(e) = split_regions(&self.peer.region(), &split) {
            return cb.invoke_with_error(e, self.peer.term());
        }
        if self.propose_write(req, cb) {
            // The new region needs its peers on the followers, which create them when they
            // apply the split: they learn its commit at once, not at the next heartbeat.
            let index = self.peer.raft_group.raft().raft_log().last_index();
            self.peer.bcast_commit_until = Some(index);
            self.peer.raft_group.set_skip_bcast_commit(false);
        }
    }

    /// Applies a committed `Split`: writes both regions' states into `wb`, has the batch synced,
    /// and leaves the right region in `effects` when its peer on this store is to be created
    /// once the batch is written.
    pub(super) fn exec_split(
        &mut self,
        req: &RaftCmdRequest,
        wb: &mut WriteBatch,
        effects: &mut ApplyEffects,
    ) -> CmdResponse {
        let term = self.peer.term();
        let region = self.peer.region();
        let split = req
            .admin_request
            .as_ref()
            .and_then(|a| a.split.clone())
            .unwrap_or_default();
        let (left, right) = match util::check_region_epoch(req, &region)
            .and_then(|()| split_regions(&region, &split))
        {
            Ok(halves) => halves,
            Err(e) => return CmdResponse::from_error(e, term),
        };
        wb.put_msg(
            &keys::region_state_key(left.id),
            &RegionLocalState {
                state: PeerState::Normal as i32,
                region: Some(left.clone()),
            },
        );
        let kv = &self.ctx.engines.kv;
        let existing: Option<RegionLocalState> =
            match kv::engine::get_msg(kv, &keys::region_state_key(right.id)) {
                Ok(s) => s,
                Err(e) => panic!(
                    "region {}: reading the state of split region {} failed: {e}",
                    region.id, right.id
                ),
            };
        // Already initialised here by its own leader's snapshot, or its peer here was removed
        // since: either way the newer state wins.
        let create = existing.is_none();
        if create {
            wb.put_msg(
                &keys::region_state_key(right.id),
                &RegionLocalState {
                    state: PeerState::Normal as i32,
                    region: Some(right.clone()),
                },
            );
            wb.put_msg(&keys::apply_state_key(right.id), &initial_apply_state());
        }
        tracing::info!(region_id = region.id, new_region_id = right.id,
            split_key = ?String::from_utf8_lossy(&split.split_key),
            version = left.region_epoch.unwrap_or_default().version, create, "split applied");
        self.peer.raft_group.store().set_region(left.clone());
        {
            let mut meta = self
                .ctx
                .store_meta
                .write()
                .unwrap_or_else(|e| e.into_inner());
            meta.insert(left.clone());
            if create {
                meta.insert(right.clone());
            }
        }
        self.peer.size.approximate_size = None;
        self.peer.size.approximate_keys = None;
        self.peer.size.diff_hint = 0;
        effects.sync = true;
        self.ctx.metrics.on_split();
        if create {
            effects.new_regions.push(right.clone());
        }
        if self.peer.is_leader() {
            // The scheduler hears of the shrunk region at once, not at the next heartbeat.
            self.schedule_region_heartbeat();
        }
        let resp = AdminResponse {
            cmd_type: AdminCmdType::Split as i32,
            split: Some(SplitResponse {
                regions: vec![left, right],
            }),
            ..Default::default()
        };
        admin_response(term, resp)
    }

    /// Creates this store's peer of `region`, born from a split whose batch is written; it
    /// joins the raft worker at the end of the current round.
    pub(super) fn create_split_peer(&mut self, region: metapb::Region) {
        let Some(meta) = region
            .peers
            .iter()
            .find(|p| p.store_id == self.ctx.store_id)
            .copied()
        else {
            return;
        };
        let snap = self.ctx.snap_context();
        // The peer it replaces, created by a message, may have a vote still being written: the
        // new peer must load it.
        self.ctx.wait_raft_writes();
        let mut peer = match Peer::new(
            &self.ctx.cfg,
            self.ctx.engines.clone(),
            snap,
            region.clone(),
            meta,
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(region_id = region.id, error = %e, "cannot create a split peer");
                return;
            }
        };
        if self.peer.is_leader() {
            // Its siblings on the other stores start as soon as they apply the split; no need
            // to wait out an election timeout.
            if let Err(e) = peer.raft_group.campaign() {
                tracing::debug!(region_id = region.id, error = %e, "split peer cannot campaign");
            }
        }
        // Replaces the mailbox of an uninitialised peer created by a message, if any.
        let mailbox = self.ctx.router.register(region.id);
        self.ctx.new_peers.push(PeerFsm { peer, mailbox });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_regions_bumps_versions_and_maps_peers_3b() {
        let region = metapb::Region {
            id: 1,
            start_key: b"a".to_vec(),
            end_key: b"z".to_vec(),
            region_epoch: Some(RegionEpoch {
                version: 3,
                conf_ver: 7,
            }),
            peers: vec![
                metapb::Peer {
                    id: 10,
                    store_id: 1,
                    role: 0,
                },
                metapb::Peer {
                    id: 11,
                    store_id: 2,
                    role: 1,
                },
            ],
        };
        let req = SplitRequest {
            split_key: b"m".to_vec(),
            new_region_id: 5,
            new_peer_ids: vec![20, 21],
        };
        let (left, right) = split_regions(&region, &req).unwrap();
        assert_eq!(
            (left.start_key.as_slice(), left.end_key.as_slice()),
            (&b"a"[..], &b"m"[..])
        );
        assert_eq!(
            (right.start_key.as_slice(), right.end_key.as_slice()),
            (&b"m"[..], &b"z"[..])
        );
        let epoch = RegionEpoch {
            version: 4,
            conf_ver: 7,
        };
        assert_eq!(
            (left.region_epoch, right.region_epoch),
            (Some(epoch), Some(epoch))
        );
        assert_eq!(right.id, 5);
        let peers: Vec<_> = right
            .peers
            .iter()
            .map(|p| (p.id, p.store_id, p.role))
            .collect();
        assert_eq!(peers, vec![(20, 1, 0), (21, 2, 1)]);

        for bad in [&b"a"[..], b"z", b"0", b""] {
            let req = SplitRequest {
                split_key: bad.to_vec(),
                ..req.clone()
            };
            assert!(split_regions(&region, &req).is_err(), "split at {bad:?}");
        }
        let short = SplitRequest {
            new_peer_ids: vec![20],
            ..req
        };
        assert!(split_regions(&region, &short).is_err());
    }
}
