//! `StoreMsgHandler`: the store's own duties, handling the store mailbox in the raft worker —
//! creating a peer when a raft message arrives for a region this store has none of, and store
//! heartbeats.

use std::collections::HashMap;

use kv::keys;
use proto::eraftpb::MessageType;
use proto::metapb;
use proto::raft_serverpb::{PeerState, RaftMessage, RegionLocalState};
use proto::schedulerpb::StoreStats;
use protobuf::Message as _;

use crate::msg::StoreMsg;
use crate::peer::{Peer, PeerFsm, PollContext};
use crate::scheduler_worker::SchedulerTask;

/// Handles store messages in the raft worker.
pub(crate) struct StoreMsgHandler<'a> {
    ctx: &'a mut PollContext,
    peers: &'a mut HashMap<u64, PeerFsm>,
}

impl<'a> StoreMsgHandler<'a> {
    pub(crate) fn new(
        ctx: &'a mut PollContext,
        peers: &'a mut HashMap<u64, PeerFsm>,
    ) -> StoreMsgHandler<'a> {
        StoreMsgHandler { ctx, peers }
    }

    /// Handles `msg`; returns the region of a peer it created, whose mailbox now has work.
    pub(crate) fn handle_msg(&mut self, msg: StoreMsg) -> Option<u64> {
        match msg {
            StoreMsg::RaftMessage(m) => self.on_raft_message(*m),
            StoreMsg::HeartbeatTick => {
                self.schedule_store_heartbeat();
                None
            }
        }
    }

    fn on_raft_message(&mut self, msg: RaftMessage) -> Option<u64> {
        let region_id = msg.region_id;
        if self.peers.contains_key(&region_id) {
            // Created while the message was in flight: hand it over.
            return self
                .ctx
                .router
                .send_raft_message(msg)
                .ok()
                .map(|()| region_id);
        }
        if !self.maybe_create_peer(&msg) {
            // A snapshot nobody here will take: its files must not stay behind.
            if let Ok((key, _)) = snap::snapshot_in_message(&msg) {
                let _ = self.ctx.snap_mgr.delete(snap::SnapKind::Received, key);
            }
            return None;
        }
        let _ = self.ctx.router.send_raft_message(msg);
        Some(region_id)
    }

    /// Creates an uninitialised peer for a region this store does not host, when the message
    /// is one a leader or candidate sends to a new member and nothing on disk forbids it.
    fn maybe_create_peer(&mut self, msg: &RaftMessage) -> bool {
        let region_id = msg.region_id;
        let Some(to) = msg.to_peer else {
            return false;
        };
        if to.store_id != self.ctx.store_id || msg.is_tombstone {
            return false;
        }
        let Ok(m) = proto::eraftpb::Message::parse_from_bytes(&msg.message) else {
            return false;
        };
        let creates = matches!(
            m.get_msg_type(),
            MessageType::MsgRequestVote
                | MessageType::MsgRequestPreVote
                | MessageType::MsgHeartbeat
                | MessageType::MsgAppend
                | MessageType::MsgSnapshot
        );
        if !creates {
            return false;
        }
        let state: Option<RegionLocalState> =
            match kv::engine::get_msg(&self.ctx.engines.kv, &keys::region_state_key(region_id)) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(region_id, error = %e, "cannot read region state");
                    return false;
                }
            };
        if let Some(st) = state {
            if st.state == PeerState::Tombstone as i32 {
                let local = st.region.and_then(|r| r.region_epoch).unwrap_or_default();
                let theirs = msg.region_epoch.unwrap_or_default();
                if theirs.conf_ver <= local.conf_ver {
                    tracing::debug!(region_id, "message for a destroyed peer; dropped");
                    return false;
                }
            }
        }
        {
            let meta = self
                .ctx
                .store_meta
                .read()
                .unwrap_or_else(|e| e.into_inner());
            if meta.overlaps(region_id, &msg.start_key, &msg.end_key) {
                tracing::debug!(
                    region_id,
                    "message range overlaps a local region; not creating"
                );
                return false;
            }
        }
        // Everything else arrives with the snapshot that initialises the peer.
        let region = metapb::Region {
            id: region_id,
            ..Default::default()
        };
        let snap = self.ctx.snap_context();
        // A peer of this region destroyed earlier may have had raft state still being written.
        self.ctx.wait_raft_writes();
        match Peer::new(
            &self.ctx.cfg,
            self.ctx.engines.clone(),
            snap,
            region.clone(),
            to,
        ) {
            Ok(peer) => {
                tracing::info!(
                    region_id,
                    peer_id = peer.peer_id(),
                    "created peer from a message"
                );
                let mailbox = self.ctx.router.register(region_id);
                self.peers.insert(region_id, PeerFsm { peer, mailbox });
                self.ctx
                    .store_meta
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(region);
                true
            }
            Err(e) => {
                tracing::warn!(region_id, error = %e, "cannot create peer");
                false
            }
        }
    }

    fn schedule_store_heartbeat(&mut self) {
        let Some(s) = &self.ctx.scheduler else {
            return;
        };
        let stats = StoreStats {
            store_id: self.ctx.store_id,
            region_count: self.peers.len() as u32,
            ..Default::default()
        };
        let _ = s.schedule(SchedulerTask::StoreHeartbeat { stats });
    }
}
