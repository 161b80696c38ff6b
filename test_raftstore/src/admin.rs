//! Admin commands on the test cluster: leader transfer and membership changes, sent to the
//! region's leader and retried (on leader changes, stale epochs, timeouts) until they take
//! effect or the deadline passes.

use std::time::{Duration, Instant};

use proto::eraftpb::ConfChangeType;
use proto::metapb;
use proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, ChangePeerRequest, RaftCmdRequest, RaftRequestHeader,
    TransferLeaderRequest,
};
use protobuf::ProtobufEnum as _;
use scheduler_client::SchedulerClient as _;

use crate::client::RequestError;
use crate::cluster::Cluster;

const ADMIN_WAIT: Duration = Duration::from_secs(20);

impl Cluster {
    /// A new peer (fresh id) for store `store_id`.
    pub fn new_peer(&self, store_id: u64) -> metapb::Peer {
        metapb::Peer {
            id: self.scheduler().alloc_id().expect("mock ids"),
            store_id,
            role: metapb::PeerRole::Voter as i32,
        }
    }

    /// The region as its leader knows it (the scheduler's view until a leader answers).
    pub fn region_by_id(&self, region_id: u64) -> metapb::Region {
        self.scheduler()
            .get_region_by_id(region_id)
            .unwrap_or_else(|e| panic!("region {region_id} unknown: {e}"))
            .0
    }

    /// Sends `admin` to the leader of `region_id` until `done(region)` holds for the region the
    /// leader reports, or `timeout` passes.
    ///
    /// # Errors
    /// The last failure when time runs out.
    pub fn try_admin(
        &self,
        region_id: u64,
        admin: AdminRequest,
        done: impl Fn(&metapb::Region, Option<&metapb::Peer>) -> bool,
        timeout: Duration,
    ) -> Result<(), RequestError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no leader found");
        while Instant::now() < deadline {
            let region = self.region_by_id(region_id);
            let leader = self.leader_of_region(region_id);
            if done(&region, leader.as_ref()) {
                return Ok(());
            }
            let Some(leader) = leader else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let req = RaftCmdRequest {
                header: Some(RaftRequestHeader {
                    region_id,
                    peer: Some(leader),
                    region_epoch: region.region_epoch,
                    term: 0,
                }),
                requests: Vec::new(),
                admin_request: Some(admin.clone()),
            };
            match self.call_raw(leader.store_id, req, Duration::from_secs(1)) {
                Ok(resp) => {
                    if let Some(e) = resp.response.header.and_then(|h| h.error) {
                        last = e.message;
                    }
                }
                Err(e) => last = e.to_string(),
            }
            // The scheduler learns the outcome from the leader's next heartbeat.
            std::thread::sleep(Duration::from_millis(30));
        }
        Err(RequestError(format!(
            "admin command on region {region_id} did not take effect in {timeout:?}: {last}"
        )))
    }

    fn change_peer(change: ConfChangeType, peer: metapb::Peer) -> AdminRequest {
        AdminRequest {
            cmd_type: AdminCmdType::ChangePeer as i32,
            change_peer: Some(ChangePeerRequest {
                change_type: change.value(),
                peer: Some(peer),
            }),
            ..Default::default()
        }
    }

    /// Adds `peer` as a voter (or promotes it from learner), retrying until the region has it.
    ///
    /// # Errors
    /// As [`Cluster::try_admin`].
    pub fn try_add_peer(
        &self,
        region_id: u64,
        peer: metapb::Peer,
        timeout: Duration,
    ) -> Result<(), RequestError> {
        let admin = Self::change_peer(ConfChangeType::AddNode, peer);
        let voter = metapb::PeerRole::Voter as i32;
        let done = |r: &metapb::Region, _: Option<&metapb::Peer>| {
            r.peers.iter().any(|p| p.id == peer.id && p.role == voter)
        };
        self.try_admin(region_id, admin, done, timeout)
    }

    /// Adds `peer` as a learner, retrying until the region has it.
    pub fn must_add_learner(&self, region_id: u64, peer: metapb::Peer) {
        let admin = Self::change_peer(ConfChangeType::AddLearnerNode, peer);
        let done =
            |r: &metapb::Region, _: Option<&metapb::Peer>| r.peers.iter().any(|p| p.id == peer.id);
        self.try_admin(region_id, admin, done, ADMIN_WAIT)
            .unwrap_or_else(|e| panic!("{}", e.0));
    }

    /// Removes `peer`, retrying until the region lacks it.
    ///
    /// # Errors
    /// As [`Cluster::try_admin`].
    pub fn try_remove_peer(
        &self,
        region_id: u64,
        peer: metapb::Peer,
        timeout: Duration,
    ) -> Result<(), RequestError> {
        let admin = Self::change_peer(ConfChangeType::RemoveNode, peer);
        let done =
            |r: &metapb::Region, _: Option<&metapb::Peer>| !r.peers.iter().any(|p| p.id == peer.id);
        self.try_admin(region_id, admin, done, timeout)
    }

    /// [`Cluster::try_add_peer`] that panics on failure.
    pub fn must_add_peer(&self, region_id: u64, peer: metapb::Peer) {
        self.try_add_peer(region_id, peer, ADMIN_WAIT)
            .unwrap_or_else(|e| panic!("{}", e.0));
    }

    /// [`Cluster::try_remove_peer`] that panics on failure.
    pub fn must_remove_peer(&self, region_id: u64, peer: metapb::Peer) {
        self.try_remove_peer(region_id, peer, ADMIN_WAIT)
            .unwrap_or_else(|e| panic!("{}", e.0));
    }

    /// Makes `peer` the leader of `region_id`, retrying until it leads.
    pub fn must_transfer_leader(&self, region_id: u64, peer: metapb::Peer) {
        let admin = AdminRequest {
            cmd_type: AdminCmdType::TransferLeader as i32,
            transfer_leader: Some(TransferLeaderRequest { peer: Some(peer) }),
            ..Default::default()
        };
        let done =
            |_: &metapb::Region, l: Option<&metapb::Peer>| l.is_some_and(|l| l.id == peer.id);
        self.try_admin(region_id, admin, done, ADMIN_WAIT)
            .unwrap_or_else(|e| panic!("{}", e.0));
    }
}
