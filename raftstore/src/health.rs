//! [`StoreHealth`]: what the status endpoints report about a store, kept by the store itself.
//!
//! - Liveness: the raft worker stamps the time at every turn of its loop (it turns at least once
//!   a raft tick), and marks itself gone when its thread ends, however it ends. A worker that
//!   stopped turning — gone, or stuck — makes the store not live.
//! - Disk: whether the store's free space is below its reserve (see `disk`), in which case it
//!   refuses new writes; and the write budget, the bytes the store may still propose before its
//!   disk is checked again, so a burst of writes between two checks cannot eat the reserve.
//!
//! Apply runs in the raft worker, so one stamp covers both. Raft-engine writes run on the log
//! writer's thread; while one is pending, the worker stamps the time it was submitted instead
//! of the time of its turn, so a write that never ends makes the store stuck too.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared health of one store.
#[derive(Debug)]
pub struct StoreHealth {
    start: Instant,
    /// Milliseconds since `start` at the raft worker's last turn.
    last_turn_ms: AtomicU64,
    worker_running: AtomicBool,
    disk_full: AtomicBool,
    /// Free bytes of the disk at the last check (`u64::MAX` before the first).
    disk_available: AtomicU64,
    /// Bytes of writes the store may still propose until the next disk check.
    write_budget: AtomicI64,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            start: Instant::now(),
            last_turn_ms: AtomicU64::new(0),
            worker_running: AtomicBool::new(false),
            disk_full: AtomicBool::new(false),
            disk_available: AtomicU64::new(u64::MAX),
            write_budget: AtomicI64::new(i64::MAX),
        }
    }
}

/// Why a store is not live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotLive {
    /// The raft worker thread has ended (stopped, or died).
    WorkerGone,
    /// The raft worker has not turned its loop for this long.
    WorkerStuck(Duration),
}

impl std::fmt::Display for NotLive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotLive::WorkerGone => f.write_str("the raft worker has stopped"),
            NotLive::WorkerStuck(d) => write!(f, "the raft worker has not run for {d:?}"),
        }
    }
}

impl StoreHealth {
    /// The raft worker turned its loop.
    pub(crate) fn on_worker_turn(&self) {
        self.on_progress_at(Instant::now());
    }

    /// The raft worker turned its loop, but has been waiting since `since` for a raft-engine
    /// write (see `log_writer`): a disk that hangs makes the store stuck though the worker turns.
    pub(crate) fn on_progress_at(&self, since: Instant) {
        let ms = since.saturating_duration_since(self.start).as_millis() as u64;
        self.last_turn_ms.store(ms, Ordering::Relaxed);
    }

    /// The raft worker started (`true`) or its thread is ending (`false`).
    pub(crate) fn set_worker_running(&self, running: bool) {
        if running {
            self.on_worker_turn();
        }
        self.worker_running.store(running, Ordering::Release);
    }

    /// Records whether the disk is below its reserve.
    pub fn set_disk_full(&self, full: bool) {
        self.disk_full.store(full, Ordering::Release);
    }

    /// Records the free bytes of the disk at a check.
    pub fn set_disk_available(&self, bytes: u64) {
        self.disk_available.store(bytes, Ordering::Release);
    }

    /// Free bytes of the disk at the last check; `None` before the first succeeded.
    pub fn disk_available(&self) -> Option<u64> {
        let bytes = self.disk_available.load(Ordering::Acquire);
        (bytes != u64::MAX).then_some(bytes)
    }

    /// Sets the bytes of writes the store may propose until the next disk check.
    pub fn set_write_budget(&self, bytes: u64) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.write_budget.store(bytes, Ordering::Release);
    }

    /// Takes `bytes` from the write budget; `false` (and nothing taken) when it does not hold
    /// them: the write must wait for the next disk check.
    pub(crate) fn take_write_budget(&self, bytes: u64) -> bool {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.write_budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left >= bytes).then(|| left - bytes)
            })
            .is_ok()
    }

    /// Whether the disk is below its reserve (new writes are refused).
    pub fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Acquire)
    }

    /// Whether the raft worker runs and turned its loop within `stuck_after`.
    ///
    /// # Errors
    /// [`NotLive`] saying what is wrong.
    pub fn check_live(&self, stuck_after: Duration) -> Result<(), NotLive> {
        if !self.worker_running.load(Ordering::Acquire) {
            return Err(NotLive::WorkerGone);
        }
        let now = self.start.elapsed().as_millis() as u64;
        let idle =
            Duration::from_millis(now.saturating_sub(self.last_turn_ms.load(Ordering::Relaxed)));
        if idle > stuck_after {
            return Err(NotLive::WorkerStuck(idle));
        }
        Ok(())
    }
}

/// Marks the raft worker gone when dropped: at the end of its thread, by return or by panic.
pub(crate) struct WorkerAlive<'a>(pub(crate) &'a StoreHealth);

impl Drop for WorkerAlive<'_> {
    fn drop(&mut self) {
        self.0.set_worker_running(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_take_the_budget_and_stop_at_its_end_2b() {
        let h = StoreHealth::default();
        assert!(h.take_write_budget(u64::MAX), "no check yet: no limit");
        h.set_write_budget(100);
        assert!(h.take_write_budget(60));
        assert!(!h.take_write_budget(41), "41 bytes over a budget of 40");
        assert!(h.take_write_budget(40), "a refused write takes nothing");
        assert!(!h.take_write_budget(1));
        h.set_write_budget(10);
        assert!(h.take_write_budget(10), "the next check refills it");
    }

    #[test]
    fn liveness_follows_the_worker_2b() {
        let h = StoreHealth::default();
        assert_eq!(
            h.check_live(Duration::from_secs(1)),
            Err(NotLive::WorkerGone)
        );
        {
            h.set_worker_running(true);
            let _alive = WorkerAlive(&h);
            assert_eq!(h.check_live(Duration::from_secs(1)), Ok(()));
        }
        assert_eq!(
            h.check_live(Duration::from_secs(1)),
            Err(NotLive::WorkerGone)
        );
    }

    /// A store started 10 s ago whose worker runs, and when it started.
    fn started_10s_ago() -> (StoreHealth, Instant) {
        let start = Instant::now()
            .checked_sub(Duration::from_secs(10))
            .expect("the monotonic clock has run for more than 10 s");
        let h = StoreHealth {
            start,
            ..StoreHealth::default()
        };
        h.set_worker_running(true);
        (h, start)
    }

    #[test]
    fn a_worker_that_stops_turning_is_stuck_2b() {
        let (h, _) = started_10s_ago();
        assert_eq!(h.check_live(Duration::from_secs(1)), Ok(()));
        h.last_turn_ms.store(0, Ordering::Relaxed);
        assert!(matches!(
            h.check_live(Duration::from_secs(1)),
            Err(NotLive::WorkerStuck(d)) if d >= Duration::from_secs(9)
        ));
    }

    #[test]
    fn a_worker_waiting_on_a_write_is_stuck_from_its_submission_2b() {
        let (h, start) = started_10s_ago();
        // The worker keeps turning, but the write it waits for was submitted 8 s ago.
        h.on_progress_at(start + Duration::from_secs(2));
        assert!(matches!(
            h.check_live(Duration::from_secs(1)),
            Err(NotLive::WorkerStuck(d)) if d >= Duration::from_secs(7)
        ));
        h.on_worker_turn();
        assert_eq!(h.check_live(Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn a_panicking_worker_is_not_live_2b() {
        let h = std::sync::Arc::new(StoreHealth::default());
        let h2 = h.clone();
        let t = std::thread::spawn(move || {
            h2.set_worker_running(true);
            let _alive = WorkerAlive(&h2);
            panic!("worker dies");
        });
        assert!(t.join().is_err());
        assert_eq!(
            h.check_live(Duration::from_secs(60)),
            Err(NotLive::WorkerGone)
        );
    }
}
