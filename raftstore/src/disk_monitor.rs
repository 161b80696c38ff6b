//! The disk monitor: a worker that checks the store's free space against its reserve every
//! `disk_check_interval` and records the outcome in [`StoreHealth`], which the raft worker reads
//! before proposing a write (see `kv::disk` for the reserve and its placeholder file).

use std::sync::Arc;

use kv::disk::{DiskReserve, DiskState};

use crate::health::StoreHealth;
use crate::worker::Runnable;

/// Checks the reserve on each tick; takes no tasks.
pub(crate) struct DiskMonitor {
    reserve: DiskReserve,
    health: Arc<StoreHealth>,
    /// The last check failed (logged once until one succeeds again).
    failing: bool,
}

impl DiskMonitor {
    /// A monitor of `reserve`, publishing to `health`; records the reserve's current state.
    pub(crate) fn new(reserve: DiskReserve, health: Arc<StoreHealth>) -> DiskMonitor {
        health.set_disk_full(reserve.state() == DiskState::Full);
        DiskMonitor {
            reserve,
            health,
            failing: false,
        }
    }
}

impl Runnable for DiskMonitor {
    type Task = ();

    fn run(&mut self, _: ()) {}

    fn on_tick(&mut self) {
        match self.reserve.check() {
            Ok(st) => {
                self.failing = false;
                self.health.set_disk_full(st.state == DiskState::Full);
            }
            Err(e) => {
                // The state stays what it was: a statvfs failure says nothing about the space.
                if !self.failing {
                    tracing::warn!(error = %e, "cannot read the free disk space");
                }
                self.failing = true;
            }
        }
    }
}
