//! The raft worker: one thread that owns every peer of the store and runs the loop
//!
//! ```text
//! loop:
//!   wait for a notification (or the next tick)      Router -> Notify
//!   store messages   -> StoreMsgHandler             may create peers
//!   tick due         -> every peer's PeerMsgHandler::handle_msg(Tick)
//!   drain mailboxes  -> PeerMsgHandler::handle_msg  (a batch across regions)
//!   finish the rounds the log writer has written:  every peer: post_persist
//!                                                   (send, apply, advance, serve reads)
//!   every peer with a Ready: collect_ready into ONE raft-engine WriteBatch
//!   hand it to the log writer (sync when any Ready must sync)  group commit across regions
//! ```
//!
//! The worker does not wait for the write: it goes on stepping, sending and collecting the next
//! rounds while the disk syncs, and the writer syncs the rounds queued meanwhile together (see
//! `log_writer`).
//!
//! The context the worker lends each batch's handlers (`PollContext`) and the peers it owns
//! (`PeerFsm`) are in the peer module (`peer/context.rs`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use raft::Ready;
use raftlog::LogBatch;

use crate::health::WorkerAlive;
use crate::log_writer::RaftBatch;
use crate::metrics::PeerCounts;
use crate::msg::{PeerMsg, StoreMsg};
use crate::peer::{PeerFsm, PeerMsgHandler, PollContext};
use crate::router::{Notify, RouterReceivers};
use crate::store_handler::StoreMsgHandler;

/// How often the raft worker refreshes the store's peer gauges (see `metrics`).
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// A round's readies, waiting for the log writer to write its batch.
pub(crate) struct InFlightRound {
    /// The round is written once the writer has written this sequence number.
    seq: u64,
    /// (region id, peer serial, ready).
    readies: Vec<(u64, u64, Ready)>,
    submitted_at: Instant,
}

/// The raft worker's state.
pub(crate) struct RaftWorker {
    pub(crate) ctx: PollContext,
    pub(crate) peers: HashMap<u64, PeerFsm>,
    pub(crate) receivers: RouterReceivers,
    /// Rounds handed to the log writer, oldest first.
    pub(crate) in_flight: VecDeque<InFlightRound>,
}

impl RaftWorker {
    /// Runs until the router asks it to stop or every sender is gone.
    pub(crate) fn run(mut self) {
        let health = self.ctx.health.clone();
        let _alive = WorkerAlive(&health);
        let tick = self.ctx.cfg.raft_base_tick_interval;
        let store_hb = self.ctx.cfg.store_heartbeat_interval;
        let mut next_tick = Instant::now() + tick;
        let mut next_store_hb = Instant::now();
        let mut next_gauges = Instant::now();
        let mut more_ready = false;
        loop {
            // Waiting on a write (the log's or the apply thread's) is no progress.
            let waiting_since = self
                .in_flight
                .front()
                .map(|r| r.submitted_at)
                .into_iter()
                .chain(
                    self.ctx
                        .applier
                        .as_ref()
                        .and_then(|a| a.oldest_outstanding()),
                )
                .min();
            match waiting_since {
                Some(at) => health.on_progress_at(at),
                None => health.on_worker_turn(),
            }
            let mut active = BTreeSet::new();
            let mut store_pending = false;
            let wait = if more_ready {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            let first = match self.receivers.wait(wait) {
                Ok(n) => Some(n),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let rest = self
                .receivers
                .notify
                .try_iter()
                .take(self.ctx.cfg.max_batch_size);
            for n in first.into_iter().chain(rest) {
                match n {
                    Notify::Region(id) => {
                        active.insert(id);
                    }
                    Notify::Store => store_pending = true,
                    // Taken up below, every round.
                    Notify::LogWritten | Notify::Applied => {}
                    Notify::Stop => return,
                }
            }
            // First, so the answers that waited for the disk leave before new work.
            self.finish_written_rounds();
            self.take_up_applied();
            if store_pending {
                let msgs: Vec<StoreMsg> = self.receivers.store.try_iter().collect();
                let mut h = StoreMsgHandler::new(&mut self.ctx, &mut self.peers);
                for m in msgs {
                    if let Some(created) = h.handle_msg(m) {
                        active.insert(created);
                    }
                }
            }
            let now = Instant::now();
            if now >= next_store_hb {
                StoreMsgHandler::new(&mut self.ctx, &mut self.peers)
                    .handle_msg(StoreMsg::HeartbeatTick);
                next_store_hb = now + store_hb;
            }
            if now >= next_gauges {
                self.refresh_gauges();
                next_gauges = now + GAUGE_INTERVAL;
            }
            if now >= next_tick {
                for fsm in self.peers.values_mut() {
                    PeerMsgHandler::new(&mut fsm.peer, &mut self.ctx).handle_msg(PeerMsg::Tick);
                }
                next_tick = now + tick;
            }
            let batch = self.ctx.cfg.max_batch_size;
            for id in active {
                let Some(fsm) = self.peers.get_mut(&id) else {
                    continue;
                };
                let mut h = PeerMsgHandler::new(&mut fsm.peer, &mut self.ctx);
                for m in fsm.mailbox.try_iter().take(batch) {
                    h.handle_msg(m);
                }
            }
            more_ready = self.handle_readies();
            more_ready |= self.adopt_new_peers();
            self.peers.retain(|_, f| !f.peer.destroyed());
        }
    }

    /// Counts the store's peers, leaders, pending peers and entries waiting to be applied, for
    /// the gauges.
    fn refresh_gauges(&mut self) {
        let mut c = PeerCounts::default();
        for fsm in self.peers.values_mut() {
            c.regions += 1;
            c.apply_pending_entries += fsm.peer.apply_lag() as i64;
            if fsm.peer.is_leader() {
                c.leaders += 1;
                let h = PeerMsgHandler::new(&mut fsm.peer, &mut self.ctx);
                c.pending_peers += h.pending_peers().len() as i64;
            }
        }
        self.ctx.metrics.set_peer_counts(c);
    }

    /// Takes in the peers splits created this round (replacing uninitialised peers of the same
    /// regions) and hands them what already waits in their mailboxes. Returns whether any came.
    fn adopt_new_peers(&mut self) -> bool {
        let new_peers = std::mem::take(&mut self.ctx.new_peers);
        let any = !new_peers.is_empty();
        let batch = self.ctx.cfg.max_batch_size;
        for mut fsm in new_peers {
            let id = fsm.peer.region_id();
            let mut h = PeerMsgHandler::new(&mut fsm.peer, &mut self.ctx);
            for m in fsm.mailbox.try_iter().take(batch) {
                h.handle_msg(m);
            }
            self.peers.insert(id, fsm);
        }
        any
    }

    /// Hands each peer the results of its tasks the apply thread finished.
    fn take_up_applied(&mut self) {
        let Some(applier) = self.ctx.applier.as_mut() else {
            return;
        };
        for res in applier.take_results() {
            // A peer destroyed or replaced since waited for its task; nothing is left to do.
            let Some(fsm) = self
                .peers
                .get_mut(&res.region_id)
                .filter(|f| f.peer.serial == res.serial && !f.peer.destroyed())
            else {
                continue;
            };
            PeerMsgHandler::new(&mut fsm.peer, &mut self.ctx).on_applied(res);
        }
    }

    /// Schedules the redo of the snapshot apply a crash interrupted in `region_id`.
    pub(crate) fn resume_applying_snapshot(&mut self, region_id: u64) {
        if let Some(fsm) = self.peers.get_mut(&region_id) {
            PeerMsgHandler::new(&mut fsm.peer, &mut self.ctx).resume_applying_snapshot();
        }
    }

    /// Collects every peer's `Ready` into one raft-engine batch and hands it to the log writer;
    /// the readies finish once it is written. Returns whether a peer has more work right away.
    fn handle_readies(&mut self) -> bool {
        let mut raft_wb = LogBatch::new();
        let mut readies = Vec::new();
        let mut sync = false;
        for (id, fsm) in self.peers.iter_mut() {
            let mut h = PeerMsgHandler::new(&mut fsm.peer, &mut self.ctx);
            if let Some(rd) = h.collect_ready(&mut raft_wb) {
                sync |= rd.must_sync;
                fsm.peer.readies_in_flight += 1;
                readies.push((*id, fsm.peer.serial, rd));
            }
        }
        if readies.is_empty() {
            return false;
        }
        let seq = if raft_wb.is_empty() {
            // Readies that only carry messages or committed entries add nothing to the batch;
            // they still wait for the rounds before them (their entries may be in those).
            self.ctx.log_writer.submitted()
        } else {
            let persisted = readies
                .iter()
                .filter(|(_, _, rd)| !rd.entries.is_empty() || rd.hard_state.is_some())
                .count() as u64;
            self.ctx.metrics.on_raft_write(persisted);
            let batch = RaftBatch {
                engine: self.ctx.engines.raft_log.clone(),
                batch: raft_wb,
            };
            self.ctx.log_writer.submit(batch, sync)
        };
        self.in_flight.push_back(InFlightRound {
            seq,
            readies,
            submitted_at: Instant::now(),
        });
        // A round with nothing to write, behind nothing, finishes at once.
        self.finish_written_rounds();
        self.peers.values().any(|f| f.peer.has_ready())
    }

    /// Finishes, in order, every round whose batch the log writer has written: sends what had
    /// to wait for the disk, applies, advances.
    fn finish_written_rounds(&mut self) {
        let written = match self.ctx.log_writer.written() {
            Ok(seq) => seq,
            // Raft promised peers these entries and votes; without them it cannot go on.
            Err(e) => panic!(
                "store {}: raft engine write of a round's readies failed: {e}",
                self.ctx.store_id
            ),
        };
        while self.in_flight.front().is_some_and(|r| r.seq <= written) {
            let round = self.in_flight.pop_front().expect("checked front");
            for (id, serial, rd) in round.readies {
                // A peer destroyed or replaced since has nothing left to do with its ready.
                let Some(fsm) = self
                    .peers
                    .get_mut(&id)
                    .filter(|f| f.peer.serial == serial && !f.peer.destroyed())
                else {
                    continue;
                };
                fsm.peer.readies_in_flight -= 1;
                PeerMsgHandler::new(&mut fsm.peer, &mut self.ctx).post_persist(rd);
            }
        }
    }
}
