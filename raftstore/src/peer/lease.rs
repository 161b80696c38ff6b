//! The leader lease: reads answered from the leader's applied state, with no ReadIndex round,
//! while no other peer can have become leader.
//!
//! ```text
//! ReadIndex started at t0 ──heartbeats──> a quorum acks          lease until t0 + lease
//!                                          └ each of them refuses votes for an election
//!                                            timeout after hearing from the leader (CheckQuorum)
//! ```
//!
//! Why it holds: any quorum that could elect a new leader shares a peer with the quorum that
//! acknowledged the ReadIndex. That peer heard from this leader after `t0` and, with CheckQuorum,
//! ignores vote requests until its election timer runs out: at least `election_timeout_ticks − 1`
//! ticks after `t0` (its next tick may come at once). The lease is 90% of that
//! ([`crate::Config::leader_lease`]). Three things would break the argument, and each is closed:
//! - A transfer of leadership makes its target campaign at once, ignoring that rule: a transfer
//!   [`suspends`](Lease::suspend) the lease, and only a ReadIndex started after it renews it.
//! - A peer that restarts forgets the leader it heard from: peers loaded at a store's start
//!   refuse vote requests for one election timeout (`Peer::vote_guard_ticks`).
//! - A new leader may not have applied what earlier leaders acknowledged: lease reads wait until
//!   the leader has applied an entry of its own term (everything before it is then applied).

use std::time::{Duration, Instant};

/// A leader's lease (see the module documentation).
#[derive(Debug)]
pub(crate) struct Lease {
    max: Duration,
    /// The term the lease was won in and when it runs out.
    until: Option<(u64, Instant)>,
    /// The last leadership transfer started: a ReadIndex started before it cannot renew.
    suspended_at: Option<Instant>,
}

impl Lease {
    /// A lease of `max` per confirmation; zero turns lease reads off.
    pub(crate) fn new(max: Duration) -> Lease {
        Lease {
            max,
            until: None,
            suspended_at: None,
        }
    }

    /// A ReadIndex started at `started` in `term` was confirmed by a quorum.
    pub(crate) fn renew(&mut self, term: u64, started: Instant) {
        if self.max.is_zero() || self.suspended_at.is_some_and(|s| started <= s) {
            return;
        }
        let until = started + self.max;
        match self.until {
            Some((t, u)) if t == term && u >= until => {}
            _ => self.until = Some((term, until)),
        }
    }

    /// Whether the lease won in `term` still runs at `now`.
    #[cfg(test)]
    fn valid(&self, term: u64, now: Instant) -> bool {
        self.until(term).is_some_and(|u| now < u)
    }

    /// When the lease won in `term` runs out, if there is one.
    pub(crate) fn until(&self, term: u64) -> Option<Instant> {
        self.until.filter(|&(t, _)| t == term).map(|(_, u)| u)
    }

    /// A leadership transfer starts at `now`: no lease until a ReadIndex started later.
    pub(crate) fn suspend(&mut self, now: Instant) {
        self.until = None;
        self.suspended_at = Some(now);
    }

    /// The peer's role changed.
    pub(crate) fn expire(&mut self) {
        self.until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_confirmed_read_index_leases_until_its_start_plus_the_lease_2b() {
        let t0 = Instant::now();
        let mut lease = Lease::new(100 * MS);
        assert!(!lease.valid(3, t0), "no lease before a confirmation");
        lease.renew(3, t0);
        assert!(lease.valid(3, t0 + 99 * MS));
        assert!(!lease.valid(3, t0 + 100 * MS), "runs out at start + lease");
        assert!(!lease.valid(4, t0 + MS), "only in the term it was won in");
        // An older confirmation never shortens it.
        lease.renew(3, t0 + 50 * MS);
        lease.renew(3, t0 + 10 * MS);
        assert!(lease.valid(3, t0 + 149 * MS));
        lease.expire();
        assert!(!lease.valid(3, t0 + MS));
    }

    #[test]
    fn a_transfer_voids_confirmations_started_before_it_2b() {
        let t0 = Instant::now();
        let mut lease = Lease::new(100 * MS);
        lease.renew(3, t0);
        lease.suspend(t0 + 10 * MS);
        assert!(!lease.valid(3, t0 + 11 * MS));
        lease.renew(3, t0 + 5 * MS);
        assert!(
            !lease.valid(3, t0 + 11 * MS),
            "a ReadIndex started before the transfer may predate the target's campaign"
        );
        lease.renew(3, t0 + 20 * MS);
        assert!(lease.valid(3, t0 + 21 * MS));
    }

    #[test]
    fn a_zero_lease_never_serves_2b() {
        let t0 = Instant::now();
        let mut lease = Lease::new(Duration::ZERO);
        lease.renew(3, t0);
        assert!(!lease.valid(3, t0));
    }
}
