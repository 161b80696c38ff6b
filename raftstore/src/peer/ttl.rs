//! The leader's TTL-check tick: every `raw_ttl_check_interval`, the region's expired raw keys
//! are looked for on the TTL-check worker (`crate::ttl_check`), which proposes their deletion.

use super::PeerMsgHandler;
use crate::ttl_check::TtlCheckTask;

impl PeerMsgHandler<'_> {
    /// On the leader, every `raw_ttl_check_interval`: hands the region to the TTL-check worker.
    pub(super) fn ttl_check_tick(&mut self) {
        if !self.peer.is_leader() {
            self.peer.ticks.ttl_check = 0;
            return;
        }
        let cfg = &self.ctx.cfg;
        self.peer.ticks.ttl_check += 1;
        if self.peer.ticks.ttl_check < cfg.ticks(cfg.raw_ttl_check_interval) {
            return;
        }
        self.peer.ticks.ttl_check = 0;
        if self.peer.snapshots.applying.is_some() {
            return;
        }
        let task = TtlCheckTask {
            region: self.peer.region(),
            leader: self.peer.meta,
        };
        // A stopped worker means the store is stopping.
        let _ = self.ctx.ttl_checker.schedule(task);
    }
}
