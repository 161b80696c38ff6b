//! A raw scan page by page, each page one region's answer with each pair's expiry: what a
//! backup reads. A short page has exhausted its region, and the scan goes on at the region's
//! end key.

use proto::metapb;

use super::multi::advance;
use super::retry::{ClusterError, Retry};
use super::{ClusterClient, SCAN_BATCH};
use crate::raw::{Pairs, ScanRange};

/// One page of a [`RawPages`] scan.
#[derive(Clone, Debug, Default)]
pub struct RawPage {
    /// The pairs, in key order.
    pub pairs: Pairs,
    /// When each pair expires (Unix milliseconds, 0: never), in the order of `pairs`.
    pub expiry_ms: Vec<u64>,
    /// The region that served the page.
    pub region: metapb::Region,
}

/// A raw scan of one column family over a range, page by page.
pub struct RawPages {
    client: ClusterClient,
    cf: String,
    rest: ScanRange,
    done: bool,
}

impl ClusterClient {
    /// A scan of `cf` over `[start, end)` (an empty `end` is unbounded) in pages of at most
    /// `page` pairs (and [`SCAN_BATCH`]), each from one region, with each pair's expiry. Each
    /// page is read at one point of its region; the pages of a scan are not one snapshot.
    pub fn raw_pages(&self, cf: &str, start: &[u8], end: &[u8], page: u32) -> RawPages {
        let mut rest = ScanRange::new(start, end, page.clamp(1, SCAN_BATCH));
        rest.with_expiry = true;
        RawPages {
            client: self.clone(),
            cf: cf.to_string(),
            rest,
            done: false,
        }
    }
}

impl RawPages {
    /// The key the next page starts from: every key below it has been in a page (or was not
    /// there when its page was read).
    pub fn cursor(&self) -> &[u8] {
        &self.rest.start
    }

    /// The next page, `None` once the range is exhausted. A page may be empty (a region with no
    /// keys in the range).
    ///
    /// # Errors
    /// What the client gave up with.
    pub async fn next_page(&mut self) -> Result<Option<RawPage>, ClusterError> {
        let rest = &mut self.rest;
        if self.done || (!rest.end.is_empty() && rest.end <= rest.start) {
            self.done = true;
            return Ok(None);
        }
        let mut retry = Retry::new("scan", &rest.start, &self.client.inner.config);
        let ((pairs, truncated, expiry_ms), region) = self
            .client
            .scan_page(&self.cf, &mut retry, rest, &rest.start.clone())
            .await?;
        if expiry_ms.len() != pairs.len() {
            return Err(ClusterError::Server(format!(
                "a scan of region {} answered {} pairs and {} expiries: the store is older \
                 than this client",
                region.id,
                pairs.len(),
                expiry_ms.len()
            )));
        }
        self.done = !advance(rest, &pairs, truncated, &region);
        Ok(Some(RawPage {
            pairs,
            expiry_ms,
            region,
        }))
    }
}
