//! Proposing commands: the checks a command must pass on the leader (store, peer, leadership,
//! term, epoch, key range), writes proposed as log entries (refused with `DiskFull` while the
//! store's disk is below its reserve); a read-only command goes to `read.rs` and never touches
//! the log.

use std::time::Instant;

use prost::Message as _;
use proto::raft_cmdpb::RaftCmdRequest;

use super::read::unsafe_local_reads;
use super::write_batch::PendingWrites;
use super::{PeerMsgHandler, Proposal};
use crate::error::{Error, Result};
use crate::metrics::ProposalKind;
use crate::msg::Callback;
use crate::util;

impl PeerMsgHandler<'_> {
    pub(super) fn on_raft_command(&mut self, req: Box<RaftCmdRequest>, cb: Callback) {
        let term = self.peer.term();
        if let Err(e) = self.pre_propose_check(&req) {
            cb.invoke_with_error(e, term);
            return;
        }
        if req.admin_request.is_some() {
            self.propose_admin(req, cb);
            return;
        }
        if util::is_read_only(&req) {
            if unsafe_local_reads() || self.in_lease() {
                self.serve_local_read(req, cb);
            } else {
                self.propose_read(req, cb);
            }
            return;
        }
        let len = req.encoded_len();
        if self.ctx.health.disk_full() || !self.ctx.health.take_write_budget(len as u64) {
            // Reads and admin commands (log compaction frees space) go on; new data waits.
            cb.invoke_with_error(
                Error::DiskFull {
                    store_id: self.ctx.store_id,
                },
                term,
            );
        } else if PendingWrites::batchable(&req) {
            if !self.peer.pending_writes.fits(&req, len) {
                self.propose_pending_writes();
            }
            self.peer.pending_writes.push(*req, len, cb);
        } else {
            self.propose_write(&req, cb);
        }
    }

    fn pre_propose_check(&self, req: &RaftCmdRequest) -> Result<()> {
        let region = self.peer.region();
        let header = req.header.unwrap_or_default();
        if let Some(p) = &header.peer {
            if p.store_id != self.ctx.store_id {
                return Err(Error::StoreNotMatch {
                    request_store_id: p.store_id,
                    actual_store_id: self.ctx.store_id,
                });
            }
            if p.id != self.peer.peer_id() {
                return Err(Error::Other(format!(
                    "region {}: request for peer {}, this store's peer is {}",
                    region.id,
                    p.id,
                    self.peer.peer_id()
                )));
            }
        }
        // The unsafe switch lets any peer serve reads.
        let may_serve = self.peer.is_leader() || (util::is_read_only(req) && unsafe_local_reads());
        if !may_serve {
            return Err(Error::NotLeader {
                region_id: region.id,
                leader: self.peer.leader(),
            });
        }
        // One term of slack: a client that just learnt of the leader may lag a term behind.
        // The term comes from the client's request: any u64.
        if header.term > 0 && self.peer.term() > header.term.saturating_add(1) {
            return Err(Error::StaleCommand);
        }
        util::check_request(req, &region)
    }

    /// Proposes the plain writes of this round as one entry (see `write_batch`). Runs when the
    /// round collects the peer's `Ready`, and before any other proposal, so the log keeps the
    /// order in which commands arrived.
    pub(crate) fn propose_pending_writes(&mut self) {
        if self.peer.pending_writes.is_empty() {
            return;
        }
        if !self.peer.is_leader() {
            // Deposed since they arrived (a message this round): never proposed.
            let (region_id, leader) = (self.peer.region_id, self.peer.leader());
            let term = self.peer.term();
            self.peer
                .pending_writes
                .fail_all(|| Error::NotLeader { region_id, leader }, term);
            return;
        }
        let commands = self.peer.pending_writes.len() as u64;
        if let Some((req, cb)) = self.peer.pending_writes.take() {
            if self.propose_entry(&req, cb) {
                self.ctx.metrics.on_write_entry(commands);
            }
        }
    }

    /// Proposes `req` as a log entry of its own, after the writes waiting for this round's entry;
    /// returns whether it was appended (else `cb` has its answer).
    pub(super) fn propose_write(&mut self, req: &RaftCmdRequest, cb: Callback) -> bool {
        self.propose_pending_writes();
        self.propose_entry(req, cb)
    }

    /// Proposes `req` as one log entry; returns whether it was appended (else `cb` has its
    /// answer).
    fn propose_entry(&mut self, req: &RaftCmdRequest, cb: Callback) -> bool {
        let raft = self.peer.raft_group.raft();
        let index = raft.raft_log().last_index() + 1;
        let term = raft.term();
        match self.peer.raft_group.propose(vec![], req.encode_to_vec()) {
            Ok(()) => {
                let last = self.peer.raft_group.raft().raft_log().last_index();
                if last != index {
                    // The leader appended something else or nothing: the proposal is not where
                    // we would look for it, so it cannot be answered reliably.
                    cb.invoke_with_error(Error::StaleCommand, term);
                    return false;
                }
                self.peer
                    .proposals
                    .push_back(Proposal::new(index, term, cb));
                self.ctx.metrics.on_proposal(ProposalKind::Entry);
                true
            }
            Err(e) => {
                cb.invoke_with_error(Error::Raft(e), term);
                false
            }
        }
    }

    /// Hands leadership to peer `to`. The lease ends first and is published so, before the
    /// transfer's `TimeoutNow` can leave: the target campaigns at once.
    pub(super) fn transfer_leader(&mut self, to: u64) {
        // The writes that came before the transfer go into the log before it stops taking any.
        self.propose_pending_writes();
        self.peer.lease.suspend(Instant::now());
        self.peer.raft_group.transfer_leader(to);
        self.ctx.metrics.on_proposal(ProposalKind::TransferLeader);
        self.publish_lease();
    }
}
