//! The disk monitor: a worker that checks the store's free space against its reserve every
//! `disk_check_interval` and records the outcome in [`StoreHealth`], which the raft worker reads
//! before proposing a write (see `kv::disk` for the reserve and its placeholder file).
//!
//! Between two checks the store may propose at most half the free space above the reserve
//! (the write budget): every proposed byte is written at least twice (raft log, then kv engine),
//! so however fast the writes come, one interval can take the store to its reserve but not
//! through it. A write over the budget is refused as `DiskFull` until the next check: only a
//! store close to its reserve, or taking more than that per interval, ever sees one.

use std::sync::Arc;

use kv::disk::{DiskReserve, DiskState, DiskStatus};

use crate::health::StoreHealth;
use crate::metrics::StoreMetrics;
use crate::worker::Runnable;

/// Checks the reserve on each tick; takes no tasks.
pub(crate) struct DiskMonitor {
    reserve: DiskReserve,
    health: Arc<StoreHealth>,
    metrics: Arc<StoreMetrics>,
    /// The last check failed (logged once until one succeeds again).
    failing: bool,
}

impl DiskMonitor {
    /// A monitor of `reserve`, publishing to `health` and `metrics`; records the reserve's
    /// current state.
    pub(crate) fn new(
        reserve: DiskReserve,
        health: Arc<StoreHealth>,
        metrics: Arc<StoreMetrics>,
    ) -> DiskMonitor {
        let full = reserve.state() == DiskState::Full;
        health.set_disk_full(full);
        metrics.set_disk(full, None);
        let mut monitor = DiskMonitor {
            reserve,
            health,
            metrics,
            failing: false,
        };
        monitor.on_tick();
        monitor
    }
}

/// The bytes a store may propose until its next disk check, after a check that saw `st`:
/// unlimited without a reserve, nothing while full, else half the free space above `reserve`.
fn write_budget(st: &DiskStatus, reserve: u64) -> u64 {
    if reserve == 0 {
        return u64::MAX;
    }
    match st.state {
        DiskState::Full => 0,
        DiskState::Normal => {
            let total = st.available.saturating_add(st.placeholder);
            total.saturating_sub(reserve) / 2
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
                let full = st.state == DiskState::Full;
                self.health.set_disk_full(full);
                self.health.set_disk_available(st.available);
                self.metrics.set_disk(full, Some(st.available));
                self.health
                    .set_write_budget(write_budget(&st, self.reserve.reserve()));
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn status(state: DiskState, available: u64, placeholder: u64) -> DiskStatus {
        DiskStatus {
            state,
            available,
            placeholder,
        }
    }

    #[test]
    fn the_budget_is_half_the_room_above_the_reserve_2b() {
        let normal = status(DiskState::Normal, 40 * MIB, 8 * MIB);
        assert_eq!(write_budget(&normal, 16 * MIB), 16 * MIB);
        let tight = status(DiskState::Normal, 10 * MIB, 8 * MIB);
        assert_eq!(write_budget(&tight, 16 * MIB), MIB);
        let edge = status(DiskState::Normal, 9 * MIB, 8 * MIB);
        assert_eq!(write_budget(&edge, 16 * MIB), MIB / 2);
        let full = status(DiskState::Full, 100 * MIB, 0);
        assert_eq!(write_budget(&full, 16 * MIB), 0);
        assert_eq!(write_budget(&full, 0), u64::MAX, "no reserve: no limit");
    }

    /// The exported free space, in bytes.
    fn exported_available(registry: &prometheus::Registry) -> f64 {
        let families = registry.gather();
        let family = families
            .iter()
            .find(|f| f.name() == "tessera_disk_available_bytes")
            .expect("exported");
        family.get_metric()[0].get_gauge().get_value()
    }

    #[test]
    fn free_space_never_read_is_unknown_not_zero_2b() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("data");
        std::fs::create_dir(&gone).unwrap();
        let reserve = DiskReserve::new(&gone, 0).unwrap();
        std::fs::remove_dir(&gone).unwrap();
        let registry = prometheus::Registry::new();
        let metrics = Arc::new(StoreMetrics::new(registry.clone()));
        let health = Arc::new(StoreHealth::default());
        let mut monitor = DiskMonitor::new(reserve, health.clone(), metrics);
        // The first check failed: a dashboard must not read "0 bytes free".
        assert_eq!(exported_available(&registry), -1.0);
        assert_eq!(health.disk_available(), None);
        // Once a check succeeds, the real figure.
        std::fs::create_dir(&gone).unwrap();
        monitor.on_tick();
        assert!(exported_available(&registry) > 0.0);
    }
}
