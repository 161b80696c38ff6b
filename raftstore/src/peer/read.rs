//! Reads: a read-only command is answered without a log entry, either from the leader's
//! applied state while its lease runs (`lease.rs`; published for reads on other threads,
//! `lease_reads.rs`), or after a ReadIndex shared by the reads queued in one round, once the
//! peer has applied up to the index the ReadIndex confirmed.
//!
//! Test only: a store started with [`UNSAFE_LOCAL_READS_ENV`]` = 1` breaks read safety on purpose,
//! serving every read from its own applied state on any peer, leader or not, without ReadIndex.
//! A deposed or cut-off leader then answers stale reads: the chaos harness uses it to prove that
//! its check catches them. Unset, it costs one `OnceLock` read per read.

use std::sync::OnceLock;
use std::time::Instant;

use kv::{keys, EngineSnapshot};
use proto::raft_cmdpb::{
    CmdType, GetResponse, RaftCmdRequest, RaftCmdResponse, RaftResponseHeader, Response,
    SnapResponse,
};

use super::{PeerMsgHandler, PendingRead};
use crate::cmd::Cmd;
use crate::error::Error;
use crate::lease_reads::LeaseRead;
use crate::metrics::ProposalKind;
use crate::msg::{Callback, CmdResponse};
use crate::util;

/// The environment variable that makes every peer serve reads locally, unsafely (tests only).
pub const UNSAFE_LOCAL_READS_ENV: &str = "TESSERA_TEST_UNSAFE_LOCAL_READS";

pub(super) fn unsafe_local_reads() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(UNSAFE_LOCAL_READS_ENV).is_some_and(|v| v == "1"))
}

impl PeerMsgHandler<'_> {
    /// Whether this leader may answer reads from its applied state now (see `lease.rs`): its
    /// lease runs, no leadership transfer is under way, and it has applied an entry of its own
    /// term, so everything earlier leaders acknowledged is applied here.
    pub(super) fn in_lease(&self) -> bool {
        self.lease_until()
            .is_some_and(|until| Instant::now() < until)
    }

    /// When this peer's lease runs out, if it may use one at all now.
    fn lease_until(&self) -> Option<Instant> {
        let term = self.peer.term();
        let usable = self.peer.is_leader()
            && self.peer.applied_term == term
            && self.peer.raft_group.raft().lead_transferee().is_none()
            && self.peer.snapshots.applying.is_none()
            && !self.peer.removed()
            && !self.peer.destroyed();
        usable.then(|| self.peer.lease.until(term)).flatten()
    }

    /// Publishes this peer's lease for reads on other threads (`lease_reads.rs`), or withdraws
    /// it, when that changed: its end or the region's epoch (which any change of the region's
    /// range or members bumps). Runs every round, so it copies the region only on a change.
    pub(crate) fn publish_lease(&mut self) {
        let until = self.lease_until();
        let published = until.map(|u| (u, self.peer.raft_group.store().region_epoch()));
        if published == self.peer.published_lease {
            return;
        }
        self.peer.published_lease = published;
        let lease = until.map(|until| LeaseRead {
            peer_id: self.peer.peer_id(),
            until,
            region: self.peer.region(),
        });
        self.ctx.lease_reads.publish(self.peer.region_id, lease);
    }

    /// Queues a read for the ReadIndex that [`PeerMsgHandler::issue_queued_reads`] starts once
    /// the round's messages are handled.
    pub(super) fn propose_read(&mut self, req: Box<RaftCmdRequest>, cb: Callback) {
        self.peer.reads.pending.push_back(PendingRead {
            ctx: Vec::new(),
            started: None,
            read_index: None,
            request: req,
            callback: cb,
        });
        self.peer.reads.queued += 1;
    }

    /// Starts one ReadIndex for every read queued this round. Sharing it is safe because it
    /// starts after each of them arrived: the leader's commit index it confirms covers every
    /// write acknowledged before any of those reads came in. (A read must never join a
    /// ReadIndex already under way: writes acknowledged since it started would be missed.)
    pub(crate) fn issue_queued_reads(&mut self) {
        if std::mem::take(&mut self.peer.reads.queued) == 0 {
            return;
        }
        let term = self.peer.term();
        self.peer.reads.next_ctx += 1;
        let mut ctx = term.to_be_bytes().to_vec();
        ctx.extend_from_slice(&self.peer.reads.next_ctx.to_be_bytes());
        let queued = |r: &PendingRead| r.ctx.is_empty() && r.read_index.is_none();
        if let Err(e) = self.peer.raft_group.read_index(ctx.clone()) {
            let (failed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.peer.reads.pending)
                .into_iter()
                .partition(queued);
            self.peer.reads.pending = kept.into();
            for r in failed {
                r.callback.invoke_with_error(Error::Raft(e.clone()), term);
            }
            return;
        }
        self.ctx.metrics.on_proposal(ProposalKind::ReadIndex);
        let now = Instant::now();
        for r in self.peer.reads.pending.iter_mut().filter(|r| queued(r)) {
            r.ctx = ctx.clone();
            r.started = Some(now);
        }
    }

    /// A read answered from whatever this peer has applied, at once (unless a snapshot is being
    /// applied: then with the next `Ready`): a leader's in its lease, any peer's in the unsafe
    /// mode of [`UNSAFE_LOCAL_READS_ENV`].
    pub(super) fn serve_local_read(&mut self, req: Box<RaftCmdRequest>, cb: Callback) {
        self.peer.reads.pending.push_back(PendingRead {
            ctx: Vec::new(),
            started: None,
            read_index: Some(0),
            request: req,
            callback: cb,
        });
        self.serve_ready_reads();
    }

    /// Answers every pending read whose read index is applied.
    pub(super) fn serve_ready_reads(&mut self) {
        if self.peer.snapshots.applying.is_some() {
            // The applied index is the snapshot's, but its data is not in place yet.
            return;
        }
        let applied = self.peer.raft_group.store().applied_index();
        if !self
            .peer
            .reads
            .pending
            .iter()
            .any(|r| r.read_index.is_some_and(|i| i <= applied))
        {
            return;
        }
        let engines = self.peer.raft_group.store().engines().clone();
        let snap = std::sync::Arc::new(EngineSnapshot::new(&engines.kv));
        let region = self.peer.region();
        let term = self.peer.term();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.peer.reads.pending)
            .into_iter()
            .partition(|r| r.read_index.is_some_and(|i| i <= applied));
        self.peer.reads.pending = waiting.into();
        for r in ready {
            // A split or conf change may have applied since the read was accepted.
            if let Err(e) = util::check_request(&r.request, &region) {
                r.callback.invoke_with_error(e, term);
                continue;
            }
            let mut response = RaftCmdResponse {
                header: Some(RaftResponseHeader {
                    current_term: term,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let mut snapshot = None;
            let mut failed = None;
            for req in &r.request.requests {
                // Only read-only commands come here (`is_read_only`): gets and snapshots.
                match Cmd::decode(req) {
                    Ok(Cmd::Get { cf, key }) => {
                        let value = snap.get_cf(cf, &keys::data_key(key));
                        match value {
                            Ok(v) => response.responses.push(Response {
                                cmd_type: CmdType::Get as i32,
                                get: Some(GetResponse {
                                    value: v.unwrap_or_default(),
                                }),
                                ..Default::default()
                            }),
                            Err(e) => failed = Some(Error::Engine(e)),
                        }
                    }
                    _ => {
                        snapshot = Some(EngineSnapshot::new(&engines.kv));
                        response.responses.push(Response {
                            cmd_type: CmdType::Snap as i32,
                            snap: Some(SnapResponse {
                                region: Some(region.clone()),
                            }),
                            ..Default::default()
                        });
                    }
                }
            }
            match failed {
                Some(e) => r.callback.invoke_with_error(e, term),
                None => r.callback.invoke(CmdResponse { response, snapshot }),
            }
        }
    }
}
