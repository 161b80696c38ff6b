//! Membership and leadership: leader transfer, conf change (add/remove voters, add learners,
//! promote learners), and destroying a peer removed from its region.
//!
//! ```text
//! TransferLeader  not a log entry: the leader asks raft to hand over and answers at once
//! ChangePeer      proposed as a conf change entry whose context is the RaftCmdRequest;
//!                 applied: epoch check, raft applies it, region.peers and conf_ver change,
//!                 RegionLocalState goes into the same kv batch as the apply state
//! removed self    RegionLocalState Tombstone in that batch; then the peer's data, raft log
//!                 and states are deleted, pending commands answered, mailbox closed
//! removed unaware a member gets a message from a peer absent from the region and behind its
//!                 conf_ver: it answers with a tombstone message (region epoch = its own); the
//!                 removed peer asks the scheduler and, once it confirms, destroys itself as
//!                 above (a tombstone is only its sender's word)
//! ```
//! A leader never removes itself: asked to, it hands leadership to the most up-to-date voter
//! and answers `NotLeader`, so the request is retried on the new leader. (Removing itself
//! would leave a two-voter region's follower unable to learn that the removal committed.)

use std::time::{Duration, Instant};

use kv::{keys, Cf, WriteBatch};
use prost::Message as _;
use proto::eraftpb::{ConfChange, ConfChangeType, Entry};
use proto::metapb::{self, PeerRole};
use proto::raft_cmdpb::{
    AdminCmdType, AdminResponse, ChangePeerResponse, RaftCmdRequest, RaftCmdResponse,
    RaftResponseHeader, TransferLeaderResponse,
};
use proto::raft_serverpb::{PeerState, RaftMessage, RegionLocalState};
use protobuf::Message as _;
use protobuf::ProtobufEnum as _;
use raft::StateRole;

use super::{Lifecycle, PeerMsgHandler, Proposal};
use crate::error::{Error, Result};
use crate::metrics::ProposalKind;
use crate::msg::{Callback, CmdResponse};
use crate::scheduler_worker::SchedulerTask;
use crate::util;

/// How often a peer told it was removed may ask the scheduler whether it was.
const STALE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The answer to an admin command: `resp` under a header with `term`.
pub(super) fn admin_response(term: u64, resp: AdminResponse) -> CmdResponse {
    CmdResponse {
        response: RaftCmdResponse {
            header: Some(RaftResponseHeader {
                current_term: term,
                ..Default::default()
            }),
            responses: Vec::new(),
            admin_response: Some(resp),
        },
        snapshot: None,
    }
}

/// `region` with the change applied, its `conf_ver` bumped.
fn changed_region(
    region: &metapb::Region,
    change: ConfChangeType,
    peer: metapb::Peer,
) -> Result<metapb::Region> {
    let mut r = region.clone();
    let existing = r.peers.iter().position(|p| p.id == peer.id);
    let on_store = r.peers.iter().any(|p| p.store_id == peer.store_id);
    let bad = |what: &str| Err(Error::Other(format!("region {}: {what}", region.id)));
    match (change, existing) {
        (ConfChangeType::AddNode, Some(i)) if r.peers[i].role == PeerRole::Learner as i32 => {
            r.peers[i].role = PeerRole::Voter as i32;
        }
        (ConfChangeType::AddNode, Some(_)) => return bad("peer is already a voter"),
        (ConfChangeType::AddNode | ConfChangeType::AddLearnerNode, None) if on_store => {
            return bad("the store already has a peer of the region")
        }
        (ConfChangeType::AddNode, None) => r.peers.push(metapb::Peer {
            role: PeerRole::Voter as i32,
            ..peer
        }),
        (ConfChangeType::AddLearnerNode, None) => r.peers.push(metapb::Peer {
            role: PeerRole::Learner as i32,
            ..peer
        }),
        (ConfChangeType::AddLearnerNode, Some(_)) => return bad("peer is already a member"),
        (ConfChangeType::RemoveNode, Some(i)) => {
            r.peers.remove(i);
        }
        (ConfChangeType::RemoveNode, None) => return bad("peer is not a member"),
    }
    let epoch = r.region_epoch.get_or_insert_with(Default::default);
    epoch.conf_ver += 1;
    Ok(r)
}

impl PeerMsgHandler<'_> {
    /// Handles an admin command on the leader (after the common checks).
    pub(super) fn propose_admin(&mut self, req: Box<RaftCmdRequest>, cb: Callback) {
        // Writes that arrived first go into the log first.
        self.propose_pending_writes();
        let term = self.peer.term();
        let admin = req.admin_request.clone().unwrap_or_default();
        match AdminCmdType::try_from(admin.cmd_type) {
            Ok(AdminCmdType::TransferLeader) => {
                let to = admin
                    .transfer_leader
                    .and_then(|t| t.peer)
                    .unwrap_or_default();
                if to.id != self.peer.peer_id() {
                    self.transfer_leader(to.id);
                }
                let resp = AdminResponse {
                    cmd_type: admin.cmd_type,
                    transfer_leader: Some(TransferLeaderResponse {}),
                    ..Default::default()
                };
                cb.invoke(admin_response(term, resp));
            }
            Ok(AdminCmdType::ChangePeer) => self.propose_conf_change(&req, cb),
            Ok(AdminCmdType::Split) => self.propose_split(&req, cb),
            _ => cb.invoke_with_error(
                Error::Other(format!(
                    "region {}: admin command {} cannot be proposed by clients",
                    self.peer.region_id, admin.cmd_type
                )),
                term,
            ),
        }
    }

    fn propose_conf_change(&mut self, req: &RaftCmdRequest, cb: Callback) {
        let term = self.peer.term();
        let cp = req
            .admin_request
            .as_ref()
            .and_then(|a| a.change_peer)
            .unwrap_or_default();
        let peer = cp.peer.unwrap_or_default();
        let Some(change) = ConfChangeType::from_i32(cp.change_type) else {
            let e = Error::Other(format!("unknown conf change type {}", cp.change_type));
            return cb.invoke_with_error(e, term);
        };
        // Refused here rather than at apply, so a bad request costs no log entry.
        if let Err(e) = changed_region(&self.peer.region(), change, peer) {
            return cb.invoke_with_error(e, term);
        }
        if change == ConfChangeType::RemoveNode && peer.id == self.peer.peer_id() {
            let target = self.best_transferee();
            if let Some(t) = &target {
                self.transfer_leader(t.id);
            }
            let err = Error::NotLeader {
                region_id: self.peer.region_id,
                leader: target,
            };
            return cb.invoke_with_error(err, term);
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(change);
        cc.node_id = peer.id;
        cc.context = req.encode_to_vec().into();
        let index = self.peer.raft_group.raft().raft_log().last_index() + 1;
        match self.peer.raft_group.propose_conf_change(vec![], cc) {
            Ok(()) if self.peer.raft_group.raft().raft_log().last_index() == index => {
                self.peer
                    .proposals
                    .push_back(Proposal::new(index, term, cb));
                self.ctx.metrics.on_proposal(ProposalKind::ConfChange);
            }
            Ok(()) => cb.invoke_with_error(Error::StaleCommand, term),
            Err(e) => cb.invoke_with_error(Error::Raft(e), term),
        }
    }

    /// The voter other than this leader that has the most of the log.
    fn best_transferee(&self) -> Option<metapb::Peer> {
        let raft = self.peer.raft_group.raft();
        self.peer
            .region()
            .peers
            .into_iter()
            .filter(|p| p.id != self.peer.peer_id() && p.role == PeerRole::Voter as i32)
            .max_by_key(|p| raft.prs().get(p.id).map_or(0, |pr| pr.matched()))
    }

    /// Applies a committed conf change entry; `wb` gets the new region state. Returns the
    /// answer for its proposal, if the change was refused or applied.
    pub(super) fn exec_conf_change(&mut self, e: &Entry, wb: &mut WriteBatch) -> CmdResponse {
        let term = self.peer.term();
        let region_id = self.peer.region_id;
        let cc = ConfChange::parse_from_bytes(&e.data).unwrap_or_else(|err| {
            panic!(
                "region {region_id}: undecodable conf change at index {}: {err}",
                e.index
            )
        });
        let req = RaftCmdRequest::decode(cc.context.as_ref()).unwrap_or_else(|err| {
            panic!(
                "region {region_id}: undecodable conf change command at {}: {err}",
                e.index
            )
        });
        let region = self.peer.region();
        let peer = req
            .admin_request
            .as_ref()
            .and_then(|a| a.change_peer)
            .and_then(|c| c.peer)
            .unwrap_or_default();
        let new_region = match util::check_region_epoch(&req, &region)
            .and_then(|()| changed_region(&region, cc.get_change_type(), peer))
        {
            Ok(r) => r,
            Err(err) => return CmdResponse::from_error(err, term),
        };
        if let Err(err) = self.peer.raft_group.apply_conf_change(&cc) {
            return CmdResponse::from_error(Error::Raft(err), term);
        }
        let removed_self = !new_region.peers.iter().any(|p| p.id == self.peer.peer_id());
        let state = if removed_self {
            PeerState::Tombstone
        } else {
            PeerState::Normal
        };
        wb.put_msg(
            &keys::region_state_key(region_id),
            &RegionLocalState {
                state: state as i32,
                region: Some(new_region.clone()),
            },
        );
        self.ctx.metrics.on_conf_change(match cc.get_change_type() {
            ConfChangeType::AddNode => "add_voter",
            ConfChangeType::AddLearnerNode => "add_learner",
            ConfChangeType::RemoveNode => "remove",
        });
        tracing::info!(region_id, peer_id = self.peer.meta.id, change = ?cc.get_change_type(),
            target = peer.id, conf_ver = new_region.region_epoch.unwrap_or_default().conf_ver,
            "conf change applied");
        self.peer.raft_group.store().set_region(new_region.clone());
        self.peer.extra_peers.retain(|p| p.id != peer.id);
        self.ctx
            .store_meta
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(new_region.clone());
        if removed_self {
            self.peer.lifecycle = Lifecycle::Removed;
        } else if self.peer.raft_group.raft().state() == StateRole::Leader {
            self.schedule_region_heartbeat();
        }
        let resp = AdminResponse {
            cmd_type: AdminCmdType::ChangePeer as i32,
            change_peer: Some(ChangePeerResponse {
                region: Some(new_region),
            }),
            ..Default::default()
        };
        admin_response(term, resp)
    }

    /// Answers a message from a peer this region removed with a tombstone message, instead of
    /// stepping it; returns whether it did. Such a peer missed its removal (it was cut off when
    /// it committed) and nobody else will tell it: while it lives, its stale range keeps this
    /// store's peers of regions split off since from being created. The sender counts as removed
    /// when it is initialised, absent from the region, and behind its membership: a peer being
    /// added is either in the region or ahead of it.
    pub(super) fn maybe_gc_stale_sender(&mut self, msg: &RaftMessage) -> bool {
        let region = self.peer.region();
        let (Some(from), Some(theirs)) = (msg.from_peer, msg.region_epoch) else {
            return false;
        };
        let ours = region.region_epoch.unwrap_or_default();
        if region.peers.is_empty()
            || region.peers.iter().any(|p| p.id == from.id)
            || theirs.conf_ver >= ours.conf_ver
        {
            return false;
        }
        tracing::info!(
            region_id = region.id,
            peer_id = self.peer.meta.id,
            stale = from.id,
            their_conf_ver = theirs.conf_ver,
            conf_ver = ours.conf_ver,
            "message from a removed peer; telling it to make way"
        );
        let gc = RaftMessage {
            region_id: region.id,
            from_peer: Some(self.peer.meta),
            to_peer: Some(from),
            region_epoch: region.region_epoch,
            is_tombstone: true,
            ..Default::default()
        };
        if let Err(e) = self.ctx.transport.send(gc) {
            tracing::debug!(region_id = region.id, error = %e, "tombstone message not sent");
        }
        true
    }

    /// A tombstone message: a peer of the region whose membership is newer than this peer's
    /// says this peer was removed ([`Self::on_removal_claim`] checks the claim).
    pub(super) fn on_tombstone(&mut self, msg: &RaftMessage) {
        let ours = self.peer.region().region_epoch.unwrap_or_default();
        let theirs = msg.region_epoch.unwrap_or_default();
        if theirs.conf_ver <= ours.conf_ver {
            return;
        }
        tracing::info!(
            region_id = self.peer.region_id,
            peer_id = self.peer.meta.id,
            conf_ver = ours.conf_ver,
            their_conf_ver = theirs.conf_ver,
            "tombstone message: removed from the region while cut off?"
        );
        self.on_removal_claim();
    }

    /// A message says this peer was removed from the region: a tombstone, or a message for a
    /// newer peer of the region on this store. It is only its sender's word, and believing a
    /// forged one would destroy the region's data here (everywhere, for a sender that tells
    /// every store). An uninitialised peer holds no data and makes way at once. An initialised
    /// one asks the scheduler, which learns every membership from the region's leader, at most
    /// once per [`STALE_CHECK_INTERVAL`], and is destroyed only if the scheduler's region is
    /// newer and lacks it ([`Self::on_stale_peer_checked`]). Without a scheduler it stays.
    /// Nothing happens while a snapshot is applied: the region worker owns the data until
    /// then, and a real removal is told again.
    pub(super) fn on_removal_claim(&mut self) {
        if self.peer.snapshots.applying.is_some() || self.peer.removed() {
            return;
        }
        let region = self.peer.region();
        if region.peers.is_empty() {
            tracing::info!(
                region_id = region.id,
                peer_id = self.peer.meta.id,
                "uninitialised peer told it was removed; destroying"
            );
            self.destroy();
            return;
        }
        let Some(scheduler) = &self.ctx.scheduler else {
            return;
        };
        if self
            .peer
            .stale_check_at
            .is_some_and(|t| t.elapsed() < STALE_CHECK_INTERVAL)
        {
            return;
        }
        let task = SchedulerTask::CheckStalePeer {
            region_id: region.id,
            peer: self.peer.meta,
            conf_ver: region.region_epoch.unwrap_or_default().conf_ver,
            router: self.ctx.router.clone(),
        };
        if scheduler.schedule(task).is_ok() {
            self.peer.stale_check_at = Some(Instant::now());
        }
    }

    /// The scheduler's answer to [`Self::on_removal_claim`]: the peer is destroyed if the
    /// scheduler confirms the removal and the peer still knows the membership it asked about.
    pub(super) fn on_stale_peer_checked(&mut self, peer_id: u64, conf_ver: u64, removed: bool) {
        let region = self.peer.region();
        let ours = region.region_epoch.unwrap_or_default().conf_ver;
        if !removed
            || peer_id != self.peer.meta.id
            || conf_ver != ours
            || self.peer.snapshots.applying.is_some()
            || self.peer.removed()
        {
            tracing::info!(
                region_id = region.id,
                peer_id = self.peer.meta.id,
                removed,
                "the scheduler does not confirm this peer's removal; keeping it"
            );
            return;
        }
        tracing::info!(
            region_id = region.id,
            peer_id,
            conf_ver,
            "the scheduler confirms this peer was removed; destroying"
        );
        self.destroy();
    }

    /// Destroys this peer after its removal was applied: answers everything pending, deletes
    /// its data, raft log and states (its Tombstone state stays), closes its mailbox.
    pub(crate) fn destroy(&mut self) {
        let region = self.peer.region();
        let region_id = region.id;
        let term = self.peer.term();
        // No read on another thread may see the data go.
        self.ctx.lease_reads.publish(region_id, None);
        self.peer.published_lease = None;
        // The apply thread must not write the region's data after it is deleted here.
        self.drop_applies();
        // A pending proposal may still commit on the peers that remain (RegionNotFound would
        // tell its client it never happened); a pending read never changed anything.
        self.abandon_proposals_up_to(u64::MAX, "the peer was removed from the region");
        self.peer
            .pending_writes
            .fail_all(|| Error::RegionNotFound(region_id), term);
        for r in std::mem::take(&mut self.peer.reads.pending) {
            r.callback
                .invoke_with_error(Error::RegionNotFound(region_id), term);
        }
        let engines = self.ctx.engines.clone();
        // Its readies still being written would bring back some of the raft state deleted here.
        self.ctx.wait_raft_writes();
        let result = (|| -> Result<()> {
            let mut wb = WriteBatch::new(&engines.kv);
            // Already in the removal's apply batch; written again for a stale peer destroyed
            // because a newer peer of the region was sent here.
            wb.put_msg(
                &keys::region_state_key(region_id),
                &RegionLocalState {
                    state: PeerState::Tombstone as i32,
                    region: Some(region.clone()),
                },
            );
            wb.delete(&keys::apply_state_key(region_id));
            if !region.peers.is_empty() || region.region_epoch.is_some() {
                let (start, end) = (
                    keys::data_key(&region.start_key),
                    keys::data_end_key(&region.end_key),
                );
                for cf in Cf::ALL {
                    wb.delete_range_cf(cf, &start, &end)?;
                }
            }
            wb.write(true)?;
            let mut raft_wb = raftlog::LogBatch::new();
            raft_wb.delete_state(region_id);
            raft_wb.delete_entries(region_id, 0, u64::MAX);
            engines
                .raft_log
                .write(&raft_wb, true)
                .map_err(crate::peer_storage::raft_log_error)?;
            Ok(())
        })();
        if let Err(e) = result {
            // The Tombstone state is durable: a restart will not load the peer, and the
            // leftovers are unreachable data.
            tracing::error!(region_id, error = %e, "cannot delete a destroyed peer's data");
        }
        self.ctx.router.unregister(region_id);
        self.ctx
            .store_meta
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(region_id);
        self.peer.lifecycle = Lifecycle::Destroyed;
        tracing::info!(region_id, peer_id = self.peer.meta.id, "peer destroyed");
    }
}
