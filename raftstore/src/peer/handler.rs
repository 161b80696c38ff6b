//! [`PeerMsgHandler`]: handles one batch of [`PeerMsg`]s for one peer — raft messages from other
//! stores, commands, ticks — with the raft worker's [`PollContext`].

use proto::eraftpb;
use proto::raft_serverpb::RaftMessage;
use protobuf::Message as _;

use super::Peer;
use crate::msg::PeerMsg;
use crate::raft_worker::PollContext;
use crate::scheduler_worker::SchedulerTask;

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
                self.peer.approximate_size = Some(size);
                self.peer.approximate_keys = Some(keys);
            }
            PeerMsg::SplitRegion(s) => {
                let s = *s;
                self.on_split_region(s.region_epoch, s.split_key, s.callback)
            }
        }
    }

    fn on_raft_message(&mut self, msg: RaftMessage) {
        let (region_id, peer_id) = (self.peer.region_id, self.peer.meta.id);
        let to_ok = msg
            .to_peer
            .as_ref()
            .is_some_and(|p| p.id == peer_id && p.store_id == self.ctx.store_id);
        if !to_ok {
            let newer = msg
                .to_peer
                .as_ref()
                .is_some_and(|p| p.store_id == self.ctx.store_id && p.id > peer_id);
            if newer && self.peer.applying_snapshot.is_none() {
                // The region has a newer peer on this store: this one was removed without
                // learning it. Make way; the next message creates the new peer.
                tracing::info!(region_id, peer_id, to = ?msg.to_peer, "stale peer; destroying");
                self.destroy();
                return;
            }
            tracing::warn!(region_id, peer_id, to = ?msg.to_peer, "raft message for another peer; dropped");
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
                tracing::warn!(region_id, peer_id, error = %e, "undecodable raft message; dropped");
                return;
            }
        };
        if m.get_msg_type() == eraftpb::MessageType::MsgSnapshot
            && !self.check_incoming_snapshot(&msg)
        {
            return;
        }
        if let Some(from) = msg.from_peer {
            // Replies must reach a sender the region does not list yet (a peer being added).
            if self.peer.find_peer(from.id).is_none() {
                self.peer.extra_peers.push(from);
            }
        }
        if let Err(e) = self.peer.raft_group.step(m) {
            tracing::debug!(region_id, peer_id, error = %e, "raft refused a message");
        }
    }

    fn on_tick(&mut self) {
        self.peer.raft_group.tick();
        self.snapshot_tick();
        self.raft_log_gc_tick();
        self.split_check_tick();
        self.peer.ticks_since_heartbeat += 1;
        let every = self.ctx.cfg.ticks(self.ctx.cfg.region_heartbeat_interval);
        if self.peer.ticks_since_heartbeat >= every {
            self.schedule_region_heartbeat();
        }
    }

    /// Followers this leader must send a snapshot to: they have not got past the compacted log.
    fn pending_peers(&self) -> Vec<proto::metapb::Peer> {
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
        self.peer.ticks_since_heartbeat = 0;
        if !self.peer.is_leader() {
            return;
        }
        if let Some(s) = &self.ctx.scheduler {
            let task = SchedulerTask::RegionHeartbeat {
                region: self.peer.region(),
                leader: self.peer.meta,
                pending_peers: self.pending_peers(),
                approximate_size: self.peer.approximate_size.unwrap_or(0),
                approximate_keys: self.peer.approximate_keys.unwrap_or(0),
            };
            if s.schedule(task).is_err() {
                tracing::debug!(region_id = self.peer.region_id, "scheduler worker stopped");
            }
        }
    }
}
