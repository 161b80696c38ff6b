//! Lease reads on the caller's thread: each leader whose lease runs publishes it here, and
//! [`crate::RaftStorage`] answers a read of its region from a kv engine snapshot taken at once,
//! without waking the raft worker.
//!
//! It is safe to read the engine from another thread: the raft worker writes an entry's effects
//! to the kv engine before it answers the write, so any write acknowledged before a read starts
//! is in the snapshot. The lease itself is the peer's (see `peer/lease.rs`); the raft worker
//! publishes it only while the peer may use it (leader, applied an entry of its term, no
//! transfer under way, no snapshot being applied) and withdraws it before the events that end
//! that: a role change, a transfer (before its `TimeoutNow` leaves), a snapshot, the peer's
//! removal. A reader that looked just before a withdrawal still reads within the lease, which
//! is what makes such a read safe.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Instant;

use proto::kvrpcpb::Context;
use proto::metapb;

/// A leader's published lease.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LeaseRead {
    /// The leader's peer id.
    pub(crate) peer_id: u64,
    /// When the lease runs out.
    pub(crate) until: Instant,
    /// The region as the leader knows it (range and epoch).
    pub(crate) region: metapb::Region,
}

impl LeaseRead {
    /// Whether a read of `key` routed by `ctx` may be answered from this lease at `now`: the
    /// lease runs, the request names this peer (or none), its epoch (if given) is the region's,
    /// and the key lies in the region.
    pub(crate) fn serves(&self, ctx: &Context, key: &[u8], now: Instant) -> bool {
        if now >= self.until {
            return false;
        }
        if ctx.peer.is_some_and(|p| p.id != self.peer_id) {
            return false;
        }
        if let (Some(theirs), Some(ours)) = (ctx.region_epoch, self.region.region_epoch) {
            if theirs != ours {
                return false;
            }
        }
        crate::util::region_contains(&self.region, key)
    }
}

/// The leases of every region this store leads.
#[derive(Default, Debug)]
pub(crate) struct LeaseReads {
    regions: RwLock<HashMap<u64, LeaseRead>>,
}

impl LeaseReads {
    /// Publishes (or, with `None`, withdraws) the lease of `region_id`.
    pub(crate) fn publish(&self, region_id: u64, lease: Option<LeaseRead>) {
        let mut regions = self.regions.write().unwrap_or_else(|e| e.into_inner());
        match lease {
            Some(l) => regions.insert(region_id, l),
            None => regions.remove(&region_id),
        };
    }

    /// The lease of `region_id`, if published.
    pub(crate) fn get(&self, region_id: u64) -> Option<LeaseRead> {
        let regions = self.regions.read().unwrap_or_else(|e| e.into_inner());
        regions.get(&region_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lease(until: Instant) -> LeaseRead {
        LeaseRead {
            peer_id: 7,
            until,
            region: metapb::Region {
                id: 1,
                start_key: b"b".to_vec(),
                end_key: b"m".to_vec(),
                region_epoch: Some(metapb::RegionEpoch {
                    conf_ver: 2,
                    version: 3,
                }),
                peers: Vec::new(),
            },
        }
    }

    #[test]
    fn a_lease_serves_its_region_its_epoch_and_its_time_only_2b() {
        let now = Instant::now();
        let l = lease(now + Duration::from_millis(100));
        let ctx = |peer: u64, version: u64| Context {
            region_id: 1,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 2,
                version,
            }),
            peer: Some(metapb::Peer {
                id: peer,
                store_id: 1,
                role: 0,
            }),
            term: 0,
        };
        assert!(l.serves(&ctx(7, 3), b"c", now));
        assert!(
            !l.serves(&ctx(7, 3), b"c", now + Duration::from_millis(100)),
            "ran out"
        );
        assert!(!l.serves(&ctx(8, 3), b"c", now), "another peer");
        assert!(!l.serves(&ctx(7, 4), b"c", now), "another epoch");
        assert!(!l.serves(&ctx(7, 3), b"m", now), "outside the region");
        assert!(!l.serves(&ctx(7, 3), b"a", now), "outside the region");
    }

    #[test]
    fn withdrawn_leases_are_gone_2b() {
        let reads = LeaseReads::default();
        let l = lease(Instant::now());
        reads.publish(1, Some(l.clone()));
        assert_eq!(reads.get(1), Some(l));
        reads.publish(1, None);
        assert_eq!(reads.get(1), None);
    }
}
