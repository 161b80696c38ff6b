//! Scheduler tasks: region and store heartbeats and split id requests, queued by the raft worker
//! and sent by a background [`crate::Worker`] so a slow scheduler never stalls raft.

use std::sync::Arc;

use proto::metapb;
use proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, RaftCmdRequest, RaftRequestHeader, SplitRequest,
};
use proto::schedulerpb::{RegionHeartbeatRequest, StoreStats};
use scheduler_client::SchedulerClient;

use crate::error::Error;
use crate::msg::{Callback, PeerMsg};
use crate::router::Router;
use crate::worker::Runnable;

/// Work for the scheduler worker.
#[derive(Debug)]
pub enum SchedulerTask {
    /// The leader of `region` reports it.
    RegionHeartbeat {
        /// The region as its leader knows it.
        region: metapb::Region,
        /// The leader (this store's peer).
        leader: metapb::Peer,
        /// Peers the leader has to send a snapshot to before they can follow its log.
        pending_peers: Vec<metapb::Peer>,
        /// Approximate bytes of the region's data (0 before the first split check).
        approximate_size: u64,
        /// Approximate number of keys.
        approximate_keys: u64,
    },
    /// The leader of `region` wants to split it at `split_key`: ask the scheduler for the new
    /// ids, then send the `Split` admin command to the region through `router`.
    AskSplit {
        /// The region as the leader knows it.
        region: metapb::Region,
        /// The first key of the new region.
        split_key: Vec<u8>,
        /// The leader (this store's peer).
        leader: metapb::Peer,
        /// Gets the split's answer.
        callback: Callback,
        /// Where the split command goes.
        router: Router,
    },
    /// A message claimed that `peer` was removed from region `region_id` in a membership newer
    /// than `conf_ver`: ask the scheduler, and tell the peer through `router` whether it
    /// agrees ([`PeerMsg::StalePeerChecked`]).
    CheckStalePeer {
        /// The region.
        region_id: u64,
        /// This store's peer of it.
        peer: metapb::Peer,
        /// The membership the peer knows.
        conf_ver: u64,
        /// Where the answer goes.
        router: Router,
    },
    /// The store reports its statistics.
    StoreHeartbeat {
        /// The statistics.
        stats: StoreStats,
    },
}

/// Sends [`SchedulerTask`]s through a scheduler client, on a [`crate::Worker`] thread.
pub struct SchedulerRunner {
    store_id: u64,
    client: Arc<dyn SchedulerClient>,
    /// The engines, whose oldest lock each store heartbeat reports.
    kv: Option<kv::Engines>,
}

impl SchedulerRunner {
    /// A runner for store `store_id`.
    pub fn new(store_id: u64, client: Arc<dyn SchedulerClient>) -> SchedulerRunner {
        SchedulerRunner {
            store_id,
            client,
            kv: None,
        }
    }

    /// Reports the oldest lock of `kv` with each store heartbeat.
    pub fn with_kv(mut self, kv: kv::Engines) -> SchedulerRunner {
        self.kv = Some(kv);
        self
    }
}

/// The smallest start_ts of the locks in the kv engine's lock CF: 0 when there is none, 1 when they
/// cannot be read (so an automatic GC safe point stays where it is).
pub fn oldest_lock_ts(engines: &kv::Engines) -> u64 {
    let read = || -> Result<u64, String> {
        let snap = kv::EngineSnapshot::new(&engines.kv);
        let mut it = snap
            .iter_cf(
                kv::Cf::Lock,
                kv::keys::DATA_MIN_KEY.to_vec(),
                kv::keys::DATA_MAX_KEY.to_vec(),
            )
            .map_err(|e| e.to_string())?;
        it.seek_to_first();
        let mut oldest = 0;
        while let Some(v) = it.value() {
            let lock = codec::record::Lock::from_bytes(v).map_err(|e| e.to_string())?;
            if oldest == 0 || lock.start_ts < oldest {
                oldest = lock.start_ts;
            }
            it.next();
        }
        it.status().map_err(|e| e.to_string())?;
        Ok(oldest)
    };
    read().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the locks for the GC safe point");
        1
    })
}

impl Runnable for SchedulerRunner {
    type Task = SchedulerTask;

    fn run(&mut self, task: SchedulerTask) {
        let store_id = self.store_id;
        match task {
            SchedulerTask::RegionHeartbeat {
                region,
                leader,
                pending_peers,
                approximate_size,
                approximate_keys,
            } => {
                let region_id = region.id;
                let req = RegionHeartbeatRequest {
                    region: Some(region),
                    leader: Some(leader),
                    pending_peers,
                    approximate_size,
                    approximate_keys,
                    ..Default::default()
                };
                if let Err(e) = self.client.region_heartbeat(req) {
                    // The next heartbeat carries the same information; nothing to retry.
                    tracing::debug!(store_id, region_id, error = %e, "region heartbeat failed");
                }
            }
            SchedulerTask::AskSplit {
                region,
                split_key,
                leader,
                callback,
                router,
            } => {
                let region_id = region.id;
                let ids = match self.client.ask_split(region.clone()) {
                    Ok(ids) => ids,
                    Err(e) => {
                        tracing::info!(store_id, region_id, error = %e, "ask split failed");
                        let err = Error::Scheduler(format!("ask split: {e}"));
                        return callback.invoke_with_error(err, 0);
                    }
                };
                let req = RaftCmdRequest {
                    header: Some(RaftRequestHeader {
                        region_id,
                        peer: Some(leader),
                        region_epoch: region.region_epoch,
                        term: 0,
                    }),
                    requests: Vec::new(),
                    admin_request: Some(AdminRequest {
                        cmd_type: AdminCmdType::Split as i32,
                        split: Some(SplitRequest {
                            split_key,
                            new_region_id: ids.new_region_id,
                            new_peer_ids: ids.new_peer_ids,
                        }),
                        ..Default::default()
                    }),
                };
                let _ = router.send_command(req, callback);
            }
            SchedulerTask::CheckStalePeer {
                region_id,
                peer,
                conf_ver,
                router,
            } => {
                // The scheduler learns each membership from the region's leader: a newer one
                // without this peer is a removal the region committed.
                let removed = match self.client.get_region_by_id(region_id) {
                    Ok((region, _)) => {
                        let theirs = region.region_epoch.unwrap_or_default().conf_ver;
                        theirs > conf_ver && !region.peers.iter().any(|p| p.id == peer.id)
                    }
                    Err(e) => {
                        tracing::info!(store_id, region_id, error = %e,
                            "cannot ask the scheduler whether a peer was removed");
                        false
                    }
                };
                let answer = PeerMsg::StalePeerChecked {
                    peer_id: peer.id,
                    conf_ver,
                    removed,
                };
                // A peer destroyed meanwhile has no mailbox: nothing to tell.
                let _ = router.send(region_id, answer);
            }
            SchedulerTask::StoreHeartbeat { mut stats } => {
                if let Some(kv) = &self.kv {
                    stats.oldest_lock_ts = oldest_lock_ts(kv);
                }
                if let Err(e) = self.client.store_heartbeat(stats) {
                    tracing::debug!(store_id, error = %e, "store heartbeat failed");
                }
            }
        }
    }
}
