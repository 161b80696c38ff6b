//! Requests over many keys, split by region: scans of a range (in key order or from the top
//! down) and batch get / put / delete.
//!
//! A batch is sorted and sent region by region: each attempt sends the keys that lie in the
//! region it goes to (so a split between attempts only shrinks the share), at most
//! [`SCAN_BATCH`] of them, and the keys it served leave the batch. Each write share is one
//! write on its region (all of its keys apply, or none) and follows the write rule of
//! [`ClusterClient::call_once`]; a batch whose share fails has applied the shares before it.
//!
//! A reverse scan starts in the region holding the keys just below the range's end. The client
//! asks for the region of a key below the end; a region that ends below the end is not the one
//! (more keys lie between), and the client moves to the next region until one reaches the end.

use std::future::Future;

use proto::kvrpcpb::{
    Context, KvPair, RawBatchDeleteRequest, RawBatchGetRequest, RawBatchPutRequest,
    RawDeleteRangeRequest,
};
use proto::metapb;
use tonic::Status;

use super::retry::{ClusterError, Reply, Retry};
use super::{ClusterClient, StoreConn, SCAN_BATCH};
use crate::raw::{kv_pair, Pairs, ScanRange};

/// Whether `key` lies in `region`'s range.
fn in_region(key: &[u8], region: &metapb::Region) -> bool {
    key >= region.start_key.as_slice()
        && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// How many of `keys` (sorted, the first in `region`) an attempt on `region` sends.
fn share<'k>(keys: impl Iterator<Item = &'k [u8]>, region: &metapb::Region) -> usize {
    keys.take(SCAN_BATCH as usize)
        .take_while(|k| in_region(k, region))
        .count()
}

/// What a batch holds per key: its key, and what goes with it.
pub(super) trait Keyed {
    fn key(&self) -> &[u8];
}

impl Keyed for Vec<u8> {
    fn key(&self) -> &[u8] {
        self
    }
}

impl<T> Keyed for (Vec<u8>, T) {
    fn key(&self) -> &[u8] {
        &self.0
    }
}

/// How many of `items` an attempt on `region` sends.
pub(super) fn share_of<I: Keyed>(items: &[I], region: &metapb::Region) -> usize {
    share(items.iter().map(Keyed::key), region)
}

/// A key below `end` (any key when `end` is empty) to find a region holding keys just below it.
/// Exact when `end` ends in a zero byte; otherwise some keys may lie between it and `end`, and
/// the caller walks on to the region that reaches `end`.
fn key_below(end: &[u8]) -> Vec<u8> {
    match end.split_last() {
        None => vec![0xff; 32],
        Some((0, head)) => head.to_vec(),
        Some((last, head)) => {
            let mut k = head.to_vec();
            k.push(last - 1);
            k.extend_from_slice(&[0xff; 16]);
            k
        }
    }
}

/// Moves `rest` on past a forward page of `pairs` that `region` served (`truncated`: the server
/// cut it at its byte bound); false when the scan is over.
pub(super) fn advance(
    rest: &mut ScanRange,
    pairs: &Pairs,
    truncated: bool,
    region: &metapb::Region,
) -> bool {
    let full = pairs.len() >= rest.limit as usize || truncated;
    match pairs.last() {
        // A full page, or one cut at the server's byte bound: go on after its last key.
        Some((last, _)) if full => rest.resume_past(last.clone()),
        _ if full => return false,
        // A region answers only from its own range: fewer pairs than asked means it is
        // exhausted, and the scan goes on where the next region starts.
        _ if region.end_key.is_empty() => return false,
        _ => rest.start = region.end_key.clone(),
    }
    true
}

fn pairs(kvs: Vec<KvPair>) -> Pairs {
    kvs.into_iter().map(|p| (p.key, p.value)).collect()
}

impl ClusterClient {
    /// The pairs of `range` in `cf` across regions, up to its limit, in requests of at most
    /// [`SCAN_BATCH`] pairs: in key order from `range.start`, or with `range.reverse` from the
    /// last key below `range.end` down.
    pub async fn scan_range(&self, cf: &str, range: &ScanRange) -> Result<Pairs, ClusterError> {
        if range.reverse {
            return self.scan_down(cf, range).await;
        }
        let mut retry = Retry::new("scan", &range.start, &self.inner.config);
        let mut out = Vec::new();
        let mut rest = range.clone();
        while (out.len() as u32) < range.limit {
            if !rest.end.is_empty() && rest.end <= rest.start {
                break;
            }
            rest.limit = (range.limit - out.len() as u32).min(SCAN_BATCH);
            let ((page, truncated, _), region) =
                self.scan_page(cf, &mut retry, &rest, &rest.start).await?;
            let more = advance(&mut rest, &page, truncated, &region);
            out.extend(page);
            if !more {
                break;
            }
        }
        Ok(out)
    }

    /// A reverse scan: region by region from the top of the range down.
    async fn scan_down(&self, cf: &str, range: &ScanRange) -> Result<Pairs, ClusterError> {
        let mut retry = Retry::new("scan", &range.end, &self.inner.config);
        let mut out = Vec::new();
        let mut rest = range.clone();
        let mut probe = key_below(&rest.end);
        while (out.len() as u32) < range.limit {
            if !rest.end.is_empty() && rest.end <= rest.start {
                break;
            }
            rest.limit = (range.limit - out.len() as u32).min(SCAN_BATCH);
            let ((page, truncated, _), region) =
                self.scan_page(cf, &mut retry, &rest, &probe).await?;
            let reaches_end =
                region.end_key.is_empty() || (!rest.end.is_empty() && region.end_key >= rest.end);
            if !reaches_end {
                // Keys between this region's end and the range's end come first.
                probe = region.end_key;
                continue;
            }
            let full = page.len() >= rest.limit as usize || truncated;
            let last = page.last().map(|(k, _)| k.clone());
            out.extend(page);
            match last {
                Some(last) if full => rest.resume_past(last),
                _ if full => break,
                // This region is exhausted below: go on in the one before it.
                _ if region.start_key.is_empty() || region.start_key <= rest.start => break,
                _ => rest.end = region.start_key,
            }
            probe = key_below(&rest.end);
        }
        Ok(out)
    }

    /// One page of `rest` from the region holding `route` (its pairs, whether the server cut
    /// it short, and the pairs' expiries if `rest` asks for them), and that region.
    pub(super) async fn scan_page(
        &self,
        cf: &str,
        retry: &mut Retry,
        rest: &ScanRange,
        route: &[u8],
    ) -> Result<((Pairs, bool, Vec<u64>), metapb::Region), ClusterError> {
        let mut f = |s: StoreConn, ctx| {
            let req = rest.request(cf, Some(ctx));
            let mut c = s.client;
            async move {
                let r = c.raw_scan(req).await?.into_inner();
                Ok(Reply::raw(
                    r.region_error,
                    r.error,
                    (pairs(r.kvs), r.truncated, r.expiry_ms),
                ))
            }
        };
        self.call_routed(retry, route, &mut f).await
    }

    /// Sends `items` (sorted by key, each key once) region by region: each attempt `send`s the
    /// items that lie in the region it goes to, and those it served leave the batch; the
    /// answers of the regions, in key order. A read shares one deadline over the batch; a
    /// write (`once`) gets one per region share and follows the rule of
    /// [`ClusterClient::call_once`].
    async fn by_region<I, T, F, Fut>(
        &self,
        op: &'static str,
        once: bool,
        mut pending: Vec<I>,
        mut send: F,
    ) -> Result<Vec<T>, ClusterError>
    where
        I: Keyed,
        F: FnMut(&[I], StoreConn, Context) -> Fut,
        Fut: Future<Output = Result<Reply<T>, Status>>,
    {
        let mut out = Vec::new();
        let mut shared = match pending.first() {
            Some(first) if !once => Some(Retry::new(op, first.key(), &self.inner.config)),
            _ => None,
        };
        while let Some(first) = pending.first() {
            let first = first.key().to_vec();
            let mut own;
            let retry = match &mut shared {
                Some(r) => r,
                None => {
                    own = Retry::once(op, &first, &self.inner.config);
                    &mut own
                }
            };
            let mut f = |region: &metapb::Region, s: StoreConn, ctx: Context| {
                send(&pending[..share_of(&pending, region)], s, ctx)
            };
            let (answer, region) = self.call_in_region(retry, &first, &mut f).await?;
            out.push(answer);
            pending.drain(..share_of(&pending, &region));
        }
        Ok(out)
    }

    /// The present values of `keys` in `cf`, in key order (absent keys are left out), read
    /// region by region: each region's share at one point, not the whole batch.
    pub async fn batch_get(&self, cf: &str, keys: &[Vec<u8>]) -> Result<Pairs, ClusterError> {
        let send = |keys: &[Vec<u8>], s: StoreConn, ctx| {
            let req = RawBatchGetRequest {
                context: Some(ctx),
                keys: keys.to_vec(),
                cf: cf.to_string(),
            };
            let mut c = s.client;
            async move {
                let r = c.raw_batch_get(req).await?.into_inner();
                Ok(Reply::raw(r.region_error, r.error, pairs(r.pairs)))
            }
        };
        let answers = self
            .by_region("batch_get", false, sorted(keys), send)
            .await?;
        let mut out: Pairs = answers.into_iter().flatten().collect();
        out.sort();
        Ok(out)
    }

    /// Puts every pair in `cf`, one write per region (see the module documentation).
    ///
    /// # Errors
    /// As [`ClusterClient::call_once`], for the first region share that failed; the shares of
    /// smaller keys have applied.
    pub async fn batch_put(
        &self,
        cf: &str,
        pairs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), ClusterError> {
        self.batch_put_with_ttl(cf, pairs, 0).await
    }

    /// [`ClusterClient::batch_put`], every key to live `ttl` seconds (0: for ever).
    ///
    /// # Errors
    /// As [`ClusterClient::batch_put`].
    pub async fn batch_put_with_ttl(
        &self,
        cf: &str,
        pairs: &[(Vec<u8>, Vec<u8>)],
        ttl: u64,
    ) -> Result<(), ClusterError> {
        let mut pending: Vec<(Vec<u8>, Vec<u8>)> = pairs.to_vec();
        pending.sort_by(|a, b| a.0.cmp(&b.0));
        // The last value of a key given twice wins, as it would in sequence.
        pending.reverse();
        pending.dedup_by(|later, earlier| later.0 == earlier.0);
        pending.reverse();
        let send = |pairs: &[(Vec<u8>, Vec<u8>)], s: StoreConn, ctx| {
            let req = RawBatchPutRequest {
                context: Some(ctx),
                pairs: pairs.iter().map(|(k, v)| kv_pair(k, v)).collect(),
                cf: cf.to_string(),
                ttl,
            };
            let mut c = s.client;
            async move {
                let r = c.raw_batch_put(req).await?.into_inner();
                Ok(Reply::raw(r.region_error, r.error, ()))
            }
        };
        self.by_region("batch_put", true, pending, send).await?;
        Ok(())
    }

    /// Deletes every key of `keys` from `cf` (a missing key is no error), one write per region;
    /// errors as [`ClusterClient::batch_put`].
    pub async fn batch_delete(&self, cf: &str, keys: &[Vec<u8>]) -> Result<(), ClusterError> {
        let send = |keys: &[Vec<u8>], s: StoreConn, ctx| {
            let req = RawBatchDeleteRequest {
                context: Some(ctx),
                keys: keys.to_vec(),
                cf: cf.to_string(),
            };
            let mut c = s.client;
            async move {
                let r = c.raw_batch_delete(req).await?.into_inner();
                Ok(Reply::raw(r.region_error, r.error, ()))
            }
        };
        self.by_region("batch_delete", true, sorted(keys), send)
            .await?;
        Ok(())
    }
}

impl ClusterClient {
    /// Deletes every key of `[start, end)` in `cf` (an empty `end`: to the last key), one write
    /// per region the range crosses, from the first region up; errors as
    /// [`ClusterClient::batch_put`] (the regions below the failed one are done).
    pub async fn delete_range(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
    ) -> Result<(), ClusterError> {
        let mut from = start.to_vec();
        loop {
            if !end.is_empty() && end <= from.as_slice() {
                return Ok(());
            }
            let mut retry = Retry::once("delete_range", &from, &self.inner.config);
            let mut f = |region: &metapb::Region, s: StoreConn, ctx| {
                // This region's part of the range: up to its end or the range's, the lower.
                let upto = if region.end_key.is_empty()
                    || (!end.is_empty() && end <= region.end_key.as_slice())
                {
                    end.to_vec()
                } else {
                    region.end_key.clone()
                };
                let req = RawDeleteRangeRequest {
                    context: Some(ctx),
                    start_key: from.clone(),
                    end_key: upto,
                    cf: cf.to_string(),
                };
                let mut c = s.client;
                async move {
                    let r = c.raw_delete_range(req).await?.into_inner();
                    Ok(Reply::raw(r.region_error, r.error, ()))
                }
            };
            let ((), region) = self.call_in_region(&mut retry, &from, &mut f).await?;
            if region.end_key.is_empty() {
                return Ok(());
            }
            from = region.end_key;
        }
    }
}

/// `keys` sorted, each once.
fn sorted(keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_key_below_the_end_sorts_below_it_2b() {
        for end in [&b"b"[..], b"b\0", b"\0", b"\x01", b"ab\xff", b"\xff\xff"] {
            let k = key_below(end);
            assert!(k.as_slice() < end, "{k:?} !< {end:?}");
        }
        // A trailing zero byte has an exact predecessor: nothing lies between.
        assert_eq!(key_below(b"ab\0"), b"ab".to_vec());
        assert!(key_below(b"").as_slice() > &b"\xff\xfe"[..]);
    }

    #[test]
    fn a_share_is_the_keys_of_the_region_up_to_the_batch_bound_2b() {
        let keys: Vec<Vec<u8>> = [&b"a"[..], b"c", b"m", b"x"]
            .iter()
            .map(|k| k.to_vec())
            .collect();
        assert_eq!(share_of(&keys, &region(b"", b"m")), 2);
        assert_eq!(share_of(&keys, &region(b"", b"")), 4);
        assert_eq!(share_of(&keys[2..], &region(b"m", b"")), 2);
        let many: Vec<Vec<u8>> = (0..3000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        assert_eq!(share_of(&many, &region(b"", b"")), SCAN_BATCH as usize);
    }
}
