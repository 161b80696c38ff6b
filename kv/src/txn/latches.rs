//! Latches: commands that write overlapping keys run one after the other.
//!
//! A command reads a snapshot, decides, and writes; two commands on the same key interleaving
//! those steps would both decide on stale state (two prewrites both seeing "no lock"). Each
//! writing command therefore latches every key it may write before taking its snapshot, and
//! releases them once its batch is applied, or definitely never will be (a write whose outcome
//! is unknown keeps its latches until it is known; see [`crate::txn`]).
//!
//! A command takes all its latches at once or waits, never holding some while waiting for
//! others, so latches cannot deadlock. The set of held keys is one mutex-protected set: commands
//! are short and the critical sections are a few hash operations, so sharding it would only pay
//! under far more concurrency than one store serves.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// The latch table of one store.
#[derive(Default)]
pub struct Latches {
    held: Mutex<HashSet<Vec<u8>>>,
    released: Condvar,
}

/// Latches held by one command; dropping it releases them and wakes the waiters.
pub struct LatchGuard<'a> {
    latches: &'a Latches,
    keys: Vec<Vec<u8>>,
}

impl Latches {
    /// An empty latch table.
    pub fn new() -> Latches {
        Latches::default()
    }

    // The set is only changed by whole insertions and removals that cannot panic halfway, so
    // a poisoned mutex still guards a consistent set.
    fn lock(&self) -> MutexGuard<'_, HashSet<Vec<u8>>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn normalize<'k>(keys: impl IntoIterator<Item = &'k [u8]>) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = keys.into_iter().map(<[u8]>::to_vec).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Latches every key of `keys`, waiting until none of them is held by another command.
    pub fn acquire<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> LatchGuard<'_> {
        let keys = Self::normalize(keys);
        let mut held = self.lock();
        while keys.iter().any(|k| held.contains(k)) {
            held = self
                .released
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
        held.extend(keys.iter().cloned());
        LatchGuard {
            latches: self,
            keys,
        }
    }

    /// Latches every key of `keys` if none is held, without waiting.
    pub fn try_acquire<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Option<LatchGuard<'_>> {
        let keys = Self::normalize(keys);
        let mut held = self.lock();
        if keys.iter().any(|k| held.contains(k)) {
            return None;
        }
        held.extend(keys.iter().cloned());
        Some(LatchGuard {
            latches: self,
            keys,
        })
    }

    /// How many keys are latched right now.
    pub fn held_count(&self) -> usize {
        self.lock().len()
    }
}

impl LatchGuard<'_> {
    /// Whether this guard holds the latch of `key`.
    pub fn covers(&self, key: &[u8]) -> bool {
        self.keys
            .binary_search_by(|k| k.as_slice().cmp(key))
            .is_ok()
    }

    /// The latched keys, sorted.
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }
}

impl Drop for LatchGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.latches.lock();
        for k in &self.keys {
            held.remove(k);
        }
        drop(held);
        self.latches.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn keys<'a>(ks: &'a [&'a str]) -> impl Iterator<Item = &'a [u8]> {
        ks.iter().map(|k| k.as_bytes())
    }

    #[test]
    fn disjoint_keys_do_not_wait_4b() {
        let l = Latches::new();
        let a = l.acquire(keys(&["a", "b", "a"]));
        assert_eq!(a.keys(), &[b"a".to_vec(), b"b".to_vec()]);
        assert!(a.covers(b"a") && a.covers(b"b") && !a.covers(b"c"));
        let c = l
            .try_acquire(keys(&["c", "d"]))
            .expect("disjoint keys are free");
        assert_eq!(l.held_count(), 4);
        drop(a);
        drop(c);
        assert_eq!(l.held_count(), 0);
    }

    #[test]
    fn overlapping_keys_wait_for_release_4b() {
        let l = Arc::new(Latches::new());
        let first = l.acquire(keys(&["a", "b"]));
        assert!(l.try_acquire(keys(&["b", "c"])).is_none());
        // A failed try takes nothing: "c" is still free.
        assert!(l.try_acquire(keys(&["c"])).is_some());

        let (tx, rx) = mpsc::channel();
        let waiter = {
            let l = l.clone();
            std::thread::spawn(move || {
                let g = l.acquire(keys(&["c", "b"]));
                tx.send(g.keys().to_vec()).unwrap();
            })
        };
        // The waiter cannot get "b" while `first` holds it; a timeout here is the expected
        // outcome, not a synchronisation by sleeping.
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        drop(first);
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("waiter woke up");
        assert_eq!(got, vec![b"b".to_vec(), b"c".to_vec()]);
        waiter.join().unwrap();
        assert_eq!(l.held_count(), 0);
    }

    #[test]
    fn concurrent_critical_sections_exclude_each_other_4b() {
        let l = Arc::new(Latches::new());
        let inside = Arc::new(Mutex::new(0u32));
        let max_inside = Arc::new(Mutex::new(0u32));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (l, inside, max_inside) = (l.clone(), inside.clone(), max_inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        // Every thread touches "shared", plus a private key.
                        let own = format!("own{i}");
                        let _g = l.acquire([&b"shared"[..], own.as_bytes()]);
                        let now = {
                            let mut n = inside.lock().unwrap();
                            *n += 1;
                            *n
                        };
                        let mut m = max_inside.lock().unwrap();
                        *m = (*m).max(now);
                        drop(m);
                        *inside.lock().unwrap() -= 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*max_inside.lock().unwrap(), 1);
        assert_eq!(l.held_count(), 0);
    }
}
