//! A millisecond clock for store liveness and operator timeouts that tests can drive by hand.
//!
//! Timestamps (TSO) do not use it: they must follow the wall clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic millisecond clock: the system's, or a manual one advanced by tests.
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
    fn manual_clock_moves_only_when_advanced_3c() {
        let clock = Clock::manual();
        let shared = clock.clone();
        assert_eq!(clock.now_ms(), 0);
        assert!(shared.advance(Duration::from_millis(1500)));
        assert_eq!(clock.now_ms(), 1500);
        assert!(!Clock::system().advance(Duration::from_secs(1)));
    }
}
