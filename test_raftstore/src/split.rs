//! Splits on the test cluster: the regions the scheduler knows, waiting for them to tile the key
//! space, and splitting a region at a chosen key through its leader (the same path as the
//! split-check worker's: `PeerMsg::SplitRegion` -> ask the scheduler for ids -> `Split`).

use std::time::{Duration, Instant};

use proto::metapb;
use raftstore::{Callback, PeerMsg, SplitRegion};

use crate::client::RequestError;
use crate::cluster::Cluster;

/// Whether `regions` (in key order) cover every key exactly once.
pub fn regions_tile(regions: &[metapb::Region]) -> bool {
    let Some(first) = regions.first() else {
        return false;
    };
    first.start_key.is_empty()
        && regions.last().is_some_and(|r| r.end_key.is_empty())
        && regions
            .windows(2)
            .all(|w| !w[0].end_key.is_empty() && w[0].end_key == w[1].start_key)
}

impl Cluster {
    /// Every region the scheduler knows, in key order.
    pub fn regions(&self) -> Vec<metapb::Region> {
        self.scheduler().regions()
    }

    /// Waits until the scheduler's regions tile the key space and `ok` holds for them; returns
    /// them, or panics after `timeout` with what it last saw.
    pub fn wait_regions(
        &self,
        timeout: Duration,
        ok: impl Fn(&[metapb::Region]) -> bool,
    ) -> Vec<metapb::Region> {
        let deadline = Instant::now() + timeout;
        loop {
            let regions = self.regions();
            if regions_tile(&regions) && ok(&regions) {
                return regions;
            }
            if Instant::now() >= deadline {
                let ranges: Vec<_> = regions
                    .iter()
                    .map(|r| {
                        (
                            r.id,
                            String::from_utf8_lossy(&r.start_key).into_owned(),
                            String::from_utf8_lossy(&r.end_key).into_owned(),
                        )
                    })
                    .collect();
                panic!("regions not as expected after {timeout:?}: {ranges:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Splits region `region_id` at `key` through its leader, retrying until the scheduler knows
    /// a region starting at `key`, or `timeout` passes.
    ///
    /// # Errors
    /// The last failure when time runs out.
    pub fn try_split(
        &self,
        region_id: u64,
        key: &[u8],
        timeout: Duration,
    ) -> Result<(), RequestError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no leader found");
        while Instant::now() < deadline {
            if self.regions().iter().any(|r| r.start_key == key) {
                return Ok(());
            }
            let region = self.region_by_id(region_id);
            let Some(router) = self
                .leader_of_region(region_id)
                .and_then(|l| self.router(l.store_id))
            else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let (tx, rx) = crossbeam_channel::bounded(1);
            let msg = PeerMsg::SplitRegion(Box::new(SplitRegion {
                region_epoch: region.region_epoch.unwrap_or_default(),
                split_key: key.to_vec(),
                callback: Callback::new(move |r| {
                    let _ = tx.send(r);
                }),
            }));
            if router.send(region_id, msg).is_err() {
                last = "the leader's store has no peer of the region".into();
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(resp) => {
                    if let Some(e) = resp.response.header.and_then(|h| h.error) {
                        last = e.message;
                    }
                }
                Err(e) => last = format!("no answer: {e}"),
            }
            // Retried or not, the scheduler learns of the split from heartbeats.
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(RequestError(format!(
            "split of region {region_id} at {:?} not done in {timeout:?}; last: {last}",
            String::from_utf8_lossy(key)
        )))
    }

    /// Splits region `region_id` at `key`, panicking when it cannot be done in 20 s.
    pub fn must_split(&self, region_id: u64, key: &[u8]) {
        self.try_split(region_id, key, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("must_split: {}", e.0));
    }

    /// As [`Cluster::wait_log_bound`], for every region the scheduler knows.
    pub fn wait_log_bound_all(&self, limit: u64, timeout: Duration) {
        for r in self.regions() {
            self.wait_log_bound(r.id, limit, timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn tiling_needs_contiguous_ranges_from_first_to_last_key_3b() {
        assert!(regions_tile(&[r(b"", b"")]));
        assert!(regions_tile(&[r(b"", b"m"), r(b"m", b"")]));
        assert!(!regions_tile(&[]));
        assert!(!regions_tile(&[r(b"", b"m")]));
        assert!(!regions_tile(&[r(b"", b"k"), r(b"m", b"")]));
        assert!(!regions_tile(&[r(b"a", b"m"), r(b"m", b"")]));
        assert!(!regions_tile(&[r(b"", b""), r(b"", b"")]));
    }
}
