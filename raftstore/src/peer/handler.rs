//! [`PeerMsgHandler`]: handles one batch of [`PeerMsg`]s for one peer — raft messages from other
//! stores, commands, ticks — with the raft worker's [`PollContext`].

use proto::eraftpb;
use proto::raft_serverpb::RaftMessage;
use protobuf::Message as _;

use super::{Peer, PollContext};
use crate::metrics::DropReason;
use crate::msg::PeerMsg;
use crate::scheduler_worker::SchedulerTask;

/// Senders outside the region's peer list a peer remembers at most (peers being added).
const MAX_EXTRA_PEERS: usize = 8;

/// Handles messages for one peer within one raft worker batch.
pub(crate) struct PeerMsgHandler<'a> {
    pub(super) peer: &'a mut Peer,
    pub(super) ctx: &'a mut PollContext,
}

impl<'a> PeerMsgHandler<'a> {
    pub(crate) fn new(peer: &'a mut Peer, ctx: &'a mut PollContext) -> PeerMsgHandler<'a> {
        PeerMsgHandler { peer, ctx }
    }

    /// Handles one message.
    pub(crate) fn handle_msg(&mut self, msg: PeerMsg) {
        match msg {
            PeerMsg::RaftMessage(m) => self.on_raft_message(*m),
            PeerMsg::RaftCommand { request, callback } => self.on_raft_command(request, callback),
            PeerMsg::Tick => self.on_tick(),
            PeerMsg::HeartbeatScheduler => self.schedule_region_heartbeat(),
            PeerMsg::SnapshotStatus { to_peer_id, failed } => {
                self.on_snapshot_status(to_peer_id, failed)
            }
            PeerMsg::SnapshotApplied { index, result } => self.on_snapshot_applied(index, result),
            PeerMsg::RegionSize { size, keys } => {
                self.peer.size.approximate_size = Some(size);
                self.peer.size.approximate_keys = Some(keys);
            }
            PeerMsg::SplitRegion(s) => {
                let s = *s;
                self.on_split_region(s.region_epoch, s.split_key, s.callback)
            }
            PeerMsg::StalePeerChecked {
                peer_id,
                conf_ver,
                removed,
            } => self.on_stale_peer_checked(peer_id, conf_ver, removed),
        }
    }

    fn on_raft_message(&mut self, msg: RaftMessage) {
        let (region_id, peer_id) = (self.peer.region_id, self.peer.meta.id);
        let to_ok = msg
            .to_peer
            .as_ref()
            .is_some_and(|p| p.id == peer_id && p.store_id == self.ctx.store_id);
        if !to_ok {
            if self.claims_stale(&msg) {
                // The region may have moved on to a newer membership with another peer on this
                // store, this one removed without learning it: then it makes way, and the next
                // message creates the new peer. The message itself is dropped either way.
                tracing::info!(region_id, peer_id, to = ?msg.to_peer, epoch = ?msg.region_epoch,
                    "message for a newer peer of the region on this store");
                self.on_removal_claim();
            }
            self.drop_message(
                DropReason::WrongPeer,
                &format!("for peer {:?}, this store's peer is {peer_id}", msg.to_peer),
            );
            return;
        }
        if msg.is_tombstone {
            self.on_tombstone(&msg);
            return;
        }
        if self.maybe_gc_stale_sender(&msg) {
            return;
        }
        let m = match eraftpb::Message::parse_from_bytes(&msg.message) {
            Ok(m) => m,
            Err(e) => {
                self.drop_message(DropReason::BadRaftMessage, &e.to_string());
                return;
            }
        };
        if m.get_msg_type() == eraftpb::MessageType::MsgSnapshot {
            if let Err(why) = self.check_incoming_snapshot(&msg, &m) {
                self.drop_message(DropReason::BadSnapshot, &why);
                self.discard_received_snapshot(&msg);
                return;
            }
        }
        if let Some(from) = msg.from_peer {
            self.maybe_remember_sender(from, &msg);
        }
        let vote = matches!(
            m.get_msg_type(),
            eraftpb::MessageType::MsgRequestVote | eraftpb::MessageType::MsgRequestPreVote
        );
        if vote && self.peer.vote_guard_ticks > 0 {
            // Not a fault: the candidate tries again after its election timeout.
            tracing::debug!(
                region_id,
                peer_id,
                from = m.from,
                "vote refused so soon after a restart"
            );
            return;
        }
        if let Err(e) = self.peer.raft_group.step(m) {
            self.drop_message(DropReason::RaftRefused, &e.to_string());
        }
    }

    /// Whether `msg`, addressed to another peer of this region on this store, claims this peer
    /// stale: it comes from a membership newer than the one this peer knows (a greater
    /// `conf_ver`) in which this store holds a different, newer peer. A region has at most one
    /// peer per store, so that membership would exclude this one. A peer id alone claims
    /// nothing; the claim is checked before it counts ([`Self::on_removal_claim`]).
    fn claims_stale(&self, msg: &RaftMessage) -> bool {
        let Some(to) = msg.to_peer else {
            return false;
        };
        if to.store_id != self.ctx.store_id || to.id <= self.peer.meta.id {
            return false;
        }
        let local = self.peer.region().region_epoch.unwrap_or_default();
        let theirs = msg.region_epoch.unwrap_or_default();
        theirs.conf_ver > local.conf_ver
    }

    /// Remembers a sender the region does not list yet (a peer being added), so replies reach
    /// it. Only for a membership at least as new as ours, and only a few: what arrives here
    /// passed the store's checks but still comes from the network.
    fn maybe_remember_sender(&mut self, from: proto::metapb::Peer, msg: &RaftMessage) {
        if self.peer.find_peer(from.id).is_some() {
            return;
        }
        let local = self.peer.region().region_epoch.unwrap_or_default();
        let theirs = msg.region_epoch.unwrap_or_default();
        if theirs.conf_ver < local.conf_ver {
            return;
        }
        if self.peer.extra_peers.len() >= MAX_EXTRA_PEERS {
            self.peer.extra_peers.remove(0);
        }
        self.peer.extra_peers.push(from);
    }

    /// Counts and (rate-limited) logs a raft message this peer drops.
    pub(super) fn drop_message(&self, reason: DropReason, detail: &str) {
        self.ctx
            .drops
            .record(&self.ctx.metrics, self.peer.region_id, reason, detail);
    }

    fn on_tick(&mut self) {
        self.peer.vote_guard_ticks = self.peer.vote_guard_ticks.saturating_sub(1);
        self.peer.raft_group.tick();
        self.snapshot_tick();
        self.raft_log_gc_tick();
        self.split_check_tick();
        self.ttl_check_tick();
        self.peer.ticks.heartbeat += 1;
        let every = self.ctx.cfg.ticks(self.ctx.cfg.region_heartbeat_interval);
        if self.peer.ticks.heartbeat >= every {
            self.schedule_region_heartbeat();
        }
    }

    /// Followers this leader must send a snapshot to: they have not got past the compacted log.
    pub(crate) fn pending_peers(&self) -> Vec<proto::metapb::Peer> {
        let truncated = self.peer.raft_group.store().truncated_index();
        let raft = self.peer.raft_group.raft();
        self.peer
            .region()
            .peers
            .into_iter()
            .filter(|p| p.id != self.peer.meta.id)
            .filter(|p| {
                raft.prs()
                    .get(p.id)
                    .is_none_or(|pr| pr.matched() < truncated)
            })
            .collect()
    }

    /// Tells the scheduler about the region, when this peer leads it.
    pub(super) fn schedule_region_heartbeat(&mut self) {
        self.peer.ticks.heartbeat = 0;
        if !self.peer.is_leader() {
            return;
        }
        if let Some(s) = &self.ctx.scheduler {
            let task = SchedulerTask::RegionHeartbeat {
                region: self.peer.region(),
                leader: self.peer.meta,
                pending_peers: self.pending_peers(),
                approximate_size: self.peer.size.approximate_size.unwrap_or(0),
                approximate_keys: self.peer.size.approximate_keys.unwrap_or(0),
            };
            if s.schedule(task).is_err() {
                tracing::debug!(region_id = self.peer.region_id, "scheduler worker stopped");
            }
        }
    }
}
