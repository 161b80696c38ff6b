//! Scans of transactional data at one timestamp, across regions, page by page.
//!
//! A page is one `KvScan` in one region. Transactional keys live memcomparable-encoded, so the
//! scan keeps two cursors: the user key the next page starts from, and the encoded key that
//! locates its region. A page that comes back short has exhausted its region (a region answers
//! from its own range only), and the scan goes on at the region's end key, from the same user
//! key: the next region's reads start at its own start key. A key locked by a transaction that
//! may have committed at or below the timestamp is resolved (or its live transaction waited
//! out, as a read does) and read again, so each page holds exactly what a read at the timestamp
//! sees.

use proto::kvrpcpb::{KeyError, ScanRequest};
use proto::metapb;

use super::{LockWait, TxnClient, TxnError};

/// Pairs a page holds when the caller does not say.
pub const SCAN_PAGE: u32 = 1024;

/// One page of a [`TxnScan`]: pairs in key order, all served by one region.
#[derive(Clone, Debug, Default)]
pub struct ScanPage {
    /// The pairs, in key order.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The region that served them (for a client of one server: an unbounded region, id 0).
    pub region: metapb::Region,
}

/// A scan of the keys of `[start, end)` visible at one timestamp (see the module documentation).
pub struct TxnScan {
    client: TxnClient,
    ts: u64,
    end: Vec<u8>,
    /// The user key the next page starts from.
    cursor: Vec<u8>,
    /// The encoded key whose region serves the next page.
    located: Vec<u8>,
    page: u32,
    done: bool,
    /// The lock the scan is waiting out, if any, and its wait.
    waiting: Option<(Vec<u8>, LockWait)>,
}

impl TxnClient {
    /// A scan of the keys of `[start, end)` (an empty `end` is unbounded) as of `ts`, in pages
    /// of up to `page` pairs.
    pub fn scan_pages(&self, start: &[u8], end: &[u8], ts: u64, page: u32) -> TxnScan {
        TxnScan {
            client: self.clone(),
            ts,
            end: end.to_vec(),
            cursor: start.to_vec(),
            located: codec::key::encode_bytes(start),
            page: page.max(1),
            done: false,
            waiting: None,
        }
    }

    /// Up to `limit` pairs of `[start, end)` as of `ts`, in key order, across regions.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        ts: u64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TxnError> {
        let mut scan = self.scan_pages(start, end, ts, SCAN_PAGE.min(limit as u32));
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(page) = scan.next_page().await? else {
                break;
            };
            out.extend(page.pairs);
        }
        out.truncate(limit);
        Ok(out)
    }
}

impl TxnScan {
    /// The user key the next page starts from: every key of the range below it that is
    /// visible at the timestamp has been in a page.
    pub fn cursor(&self) -> &[u8] {
        &self.cursor
    }

    /// The timestamp the scan reads at.
    pub fn ts(&self) -> u64 {
        self.ts
    }

    /// The next page, `None` once the range is exhausted. A page may be empty (a region with no
    /// keys in the range, or a lock met first); the scan has still moved on.
    ///
    /// # Errors
    /// What the transport gave up with; a lock whose transaction stays alive past the client's
    /// lock wait ([`TxnError::Locked`]); any other key error ([`TxnError::Aborted`]).
    pub async fn next_page(&mut self) -> Result<Option<ScanPage>, TxnError> {
        if self.done || (!self.end.is_empty() && self.cursor >= self.end) {
            self.done = true;
            return Ok(None);
        }
        let req = ScanRequest {
            start_key: self.cursor.clone(),
            limit: self.page,
            version: self.ts,
            ..Default::default()
        };
        let (resp, region) = self.client.transport.scan(&self.located, req).await?;
        if let Some(e) = resp.error {
            // The scan as a whole was refused: its timestamp is below the GC safe point.
            return Err(TxnError::Aborted(if e.abort.is_empty() {
                format!("{e:?}")
            } else {
                e.abort
            }));
        }
        let full = resp.pairs.len() >= self.page as usize;
        let mut pairs = Vec::with_capacity(resp.pairs.len());
        let mut lock = None;
        for p in resp.pairs {
            if !self.end.is_empty() && p.key >= self.end {
                self.done = true;
                break;
            }
            match p.error {
                None => pairs.push((p.key, p.value)),
                Some(KeyError {
                    locked: Some(l), ..
                }) => {
                    lock = Some(l);
                    break;
                }
                Some(other) => return Err(TxnError::Aborted(format!("{other:?}"))),
            }
        }
        if let Some(l) = lock {
            // Read the locked key again once its transaction is settled.
            self.waiting = match self.waiting.take() {
                Some((key, wait)) if key == l.key => Some((key, wait)),
                _ => Some((l.key.clone(), LockWait::new())),
            };
            let (_, wait) = self.waiting.as_mut().expect("just set");
            self.client.wait_out(&l, wait).await?;
            self.move_to(l.key);
        } else if self.done {
            // The range's end was met inside the page.
        } else if let Some((last, _)) = pairs.last().filter(|_| full) {
            let mut next = last.clone();
            next.push(0);
            self.move_to(next);
        } else if region.end_key.is_empty() {
            self.done = true;
        } else {
            // The region is exhausted: go on in the next one. If its start decodes, the user
            // keys below it are behind us.
            if let Ok((start, rest)) = codec::key::decode_bytes(&region.end_key) {
                if rest.is_empty() && start > self.cursor {
                    self.cursor = start;
                }
            }
            self.located = region.end_key.clone();
        }
        Ok(Some(ScanPage { pairs, region }))
    }

    /// Starts the next page at user key `key`.
    fn move_to(&mut self, key: Vec<u8>) {
        if self.waiting.as_ref().is_some_and(|(k, _)| *k != key) {
            self.waiting = None;
        }
        self.located = codec::key::encode_bytes(&key);
        self.cursor = key;
    }
}
