//! Id allocation, the timestamp oracle, and the clock of liveness and timeouts.
//!
//! Ids and timestamps both persist a high-water mark ahead of what they
//! hand out, so neither goes back after a restart, and neither writes to disk on every call.
//!
//! ```text
//!   ids:  handed out   1 2 3 ... base | base+1 ... end   <- `end` persisted before use
//!   tso:  physical ms  ... physical   | ... saved_until  <- restart resumes at saved_until
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codec::ts::MAX_LOGICAL;
pub use codec::ts::{compose_ts, split_ts, LOGICAL_BITS};

use crate::error::{Error, Result};

/// Ids reserved per disk write.
pub(crate) const ID_BATCH: u64 = 1000;

/// How far ahead of the current physical time the TSO persists its high-water mark, in ms.
pub(crate) const TSO_SAVE_WINDOW_MS: u64 = 3000;

/// Hands out unique, increasing ids in batches reserved on disk.
#[derive(Debug)]
pub(crate) struct IdAllocator {
    base: u64,
    end: u64,
}

impl IdAllocator {
    /// Resumes after the persisted high-water mark (every id up to it may have been handed out).
    pub(crate) fn new(saved_end: Option<u64>) -> IdAllocator {
        let end = saved_end.unwrap_or(0);
        IdAllocator { base: end, end }
    }

    /// The next id; `persist` is called with a new high-water mark before an id past the old one
    /// is handed out, and a failure there fails the allocation.
    pub(crate) fn alloc(&mut self, persist: impl FnOnce(u64) -> Result<()>) -> Result<u64> {
        if self.base >= self.end {
            let end = self.end + ID_BATCH;
            persist(end)?;
            self.end = end;
        }
        self.base += 1;
        Ok(self.base)
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        // A clock before 1970 is broken; the TSO then leans on its persisted mark alone.
        .unwrap_or(0)
}

/// The timestamp oracle: strictly increasing `physical << 18 | logical` timestamps.
#[derive(Debug)]
pub(crate) struct Tso {
    physical: u64,
    logical: u64,
    saved_until: u64,
}

impl Tso {
    /// Resumes at the persisted high-water mark: every physical time handed out before the
    /// restart is below it.
    pub(crate) fn new(saved_until: Option<u64>) -> Tso {
        let saved = saved_until.unwrap_or(0);
        Tso {
            physical: saved,
            logical: 0,
            saved_until: saved,
        }
    }

    /// Allocates `count` timestamps and returns the last one as (physical, logical); the
    /// `count - 1` before it are also the caller's. `persist` gets a new high-water mark before
    /// any physical time at or past the old one is handed out.
    pub(crate) fn next(
        &mut self,
        count: u32,
        now_ms: u64,
        persist: impl FnOnce(u64) -> Result<()>,
    ) -> Result<(u64, u64)> {
        let count = u64::from(count);
        if count == 0 || count >= MAX_LOGICAL {
            return Err(Error::InvalidArgument(format!(
                "tso count must be in 1..{MAX_LOGICAL}, got {count}"
            )));
        }
        if now_ms > self.physical {
            self.physical = now_ms;
            self.logical = 0;
        }
        if self.logical + count >= MAX_LOGICAL {
            // The logical space of this millisecond is used up: borrow the next one. The wall
            // clock catches up soon, and the persisted mark below still covers it.
            self.physical += 1;
            self.logical = 0;
        }
        if self.physical >= self.saved_until {
            let until = self.physical.max(now_ms) + TSO_SAVE_WINDOW_MS;
            persist(until)?;
            self.saved_until = until;
        }
        self.logical += count;
        Ok((self.physical, self.logical))
    }
}

/// A monotonic millisecond clock for store liveness and operator timeouts that tests can drive
/// by hand. Timestamps (TSO) do not use it: they must follow the wall clock.
/// It is the system's monotonic clock, or a manual one advanced by tests.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: ClockInner,
}

#[derive(Clone, Debug)]
enum ClockInner {
    System(Instant),
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The system's monotonic clock.
    pub fn system() -> Clock {
        Clock {
            inner: ClockInner::System(Instant::now()),
        }
    }

    /// A clock that only moves when [`Clock::advance`] is called; clones share the time.
    pub fn manual() -> Clock {
        Clock {
            inner: ClockInner::Manual(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Milliseconds since the clock was created.
    pub fn now_ms(&self) -> u64 {
        match &self.inner {
            ClockInner::System(start) => start.elapsed().as_millis() as u64,
            ClockInner::Manual(ms) => ms.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward; returns false (and does nothing) on the system clock.
    pub fn advance(&self, by: Duration) -> bool {
        match &self.inner {
            ClockInner::System(_) => false,
            ClockInner::Manual(ms) => {
                ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resume_past_the_persisted_batch_3c() {
        let mut saved = None;
        let mut ids = IdAllocator::new(saved);
        let first: Vec<u64> = (0..5)
            .map(|_| {
                ids.alloc(|end| {
                    saved = Some(end);
                    Ok(())
                })
                .unwrap()
            })
            .collect();
        assert_eq!(first, vec![1, 2, 3, 4, 5]);
        assert_eq!(saved, Some(ID_BATCH));
        let mut restarted = IdAllocator::new(saved);
        let next = restarted
            .alloc(|end| {
                saved = Some(end);
                Ok(())
            })
            .unwrap();
        assert_eq!(next, ID_BATCH + 1);
        assert_eq!(saved, Some(2 * ID_BATCH));
    }

    #[test]
    fn id_persist_failure_hands_out_nothing_3c() {
        let mut ids = IdAllocator::new(None);
        let err = ids.alloc(|_| Err(Error::InvalidArgument("disk full".into())));
        assert!(err.is_err());
        assert_eq!(ids.alloc(|_| Ok(())).unwrap(), 1);
    }

    #[test]
    fn tso_strictly_increases_with_a_frozen_clock_3c() {
        let mut tso = Tso::new(None);
        let mut last = 0;
        for i in 0..(3 * MAX_LOGICAL / 1000) {
            let (p, l) = tso.next(1000, 10_000, |_| Ok(())).unwrap();
            let ts = compose_ts(p, l);
            assert!(ts > last, "round {i}: {ts} after {last}");
            last = ts;
        }
        // The frozen clock forced physical time forward instead of overflowing logical.
        assert!(split_ts(last).0 >= 10_002);
    }

    #[test]
    fn tso_restart_resumes_past_the_saved_window_3c() {
        let mut saved = None;
        let mut tso = Tso::new(None);
        let (p, l) = tso
            .next(1, 5_000, |until| {
                saved = Some(until);
                Ok(())
            })
            .unwrap();
        assert_eq!(saved, Some(5_000 + TSO_SAVE_WINDOW_MS));
        // Within the window nothing is written.
        tso.next(1, 5_001, |_| panic!("no write within the window"))
            .unwrap();
        let before = compose_ts(p, l);
        // After a restart with the wall clock gone backwards, timestamps still go up.
        let mut restarted = Tso::new(saved);
        let (p2, l2) = restarted
            .next(1, 1_000, |until| {
                saved = Some(until);
                Ok(())
            })
            .unwrap();
        assert!(compose_ts(p2, l2) > before);
        assert!(restarted.next(0, 1_000, |_| Ok(())).is_err());
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_3c() {
        let clock = Clock::manual();
        let shared = clock.clone();
        assert_eq!(clock.now_ms(), 0);
        assert!(shared.advance(Duration::from_millis(1500)));
        assert_eq!(clock.now_ms(), 1500);
        assert!(!Clock::system().advance(Duration::from_secs(1)));
    }
}
