//! The raw key-value API: validation and execution over any [`Storage`], shared by the gRPC
//! service and the HTTP gateway.
//!
//! A raw write returns when the storage does: over the raftstore, once the write is applied or
//! definitely failed, however long that takes. `Error::Unavailable` means its outcome is
//! unknown (the store stopped, or the service stopped waiting): it may still apply, later than
//! writes acknowledged since. Puts and deletes take no latches and do not read before writing,
//! so that is harmless to them: a client that must know retries or reads the key back. A
//! compare-and-swap does read: one whose outcome is unknown must not be sent again as if it
//! had not happened (if it had, the second one fails, and the client would report a swap that
//! took place as refused).

use std::sync::Arc;

use proto::kvrpcpb::Context;

use crate::cas::{Cas, CasOutcome};
use crate::engine::Cf;
use crate::error::{Error, Result};
use crate::storage::{answered, DbIterator, Modify, Storage, StorageFuture};

use codec::raw_value;
pub use codec::ScanRange;

/// Limits on raw requests.
#[derive(Clone, Debug)]
pub struct RawLimits {
    /// Largest accepted key, in bytes.
    pub max_key_size: usize,
    /// Largest accepted value, in bytes.
    pub max_value_size: usize,
    /// The most pairs one scan page holds; a larger `limit` is served up to it, and the page
    /// says it was truncated.
    pub max_scan_limit: u32,
    /// The most bytes of keys and values one scan page holds (a page always holds at least one
    /// pair, however large); a page cut there says it was truncated.
    pub max_scan_bytes: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_key_size: 64 * 1024,
            max_value_size: 8 * 1024 * 1024,
            max_scan_limit: 10_000,
            max_scan_bytes: 2 * 1024 * 1024,
        }
    }
}

/// One page of a raw scan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// The pairs, in key order.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The page stopped at the byte bound: more pairs may follow its last key.
    pub truncated: bool,
    /// With [`ScanRange::with_expiry`]: when each pair expires (Unix ms, `raw_value::NEVER`:
    /// never), in the order of `pairs`.
    pub expiry_ms: Vec<u64>,
}

/// Refuses a TTL outside the default column family: the lock and write CFs also hold the
/// transactions' records, whose bytes a TTL check must never take for an expired value.
fn check_ttl_cf(cf: Cf, ttl: u64) -> Result<()> {
    if ttl > 0 && cf != Cf::Default {
        return Err(Error::InvalidArgument(format!(
            "a TTL is only taken in the default column family, not in {}",
            cf.name()
        )));
    }
    Ok(())
}

/// The expiry of a value written now to live `ttl` seconds (0: for ever).
fn expire_at(ttl: u64) -> Option<u64> {
    (ttl > 0).then(|| raw_value::now_ms().saturating_add(ttl.saturating_mul(1000)))
}

/// The value a stored one holds, if it has not expired at `now_ms`.
fn live_value(stored: Option<Vec<u8>>, now_ms: u64) -> Option<Vec<u8>> {
    let mut stored = stored?;
    let (value, expiry) = raw_value::decode(&stored);
    let len = value.len();
    if expiry.is_some_and(|at| at <= now_ms) {
        return None;
    }
    stored.truncate(len);
    Some(stored)
}

/// Moves a scan one key on, in its direction.
fn advance(it: &mut (impl DbIterator + ?Sized), reverse: bool) {
    if reverse {
        it.prev();
    } else {
        it.next();
    }
}

/// The raw API over a storage.
pub struct RawApi<S> {
    storage: Arc<S>,
    limits: RawLimits,
}

impl<S> Clone for RawApi<S> {
    fn clone(&self) -> Self {
        RawApi {
            storage: self.storage.clone(),
            limits: self.limits.clone(),
        }
    }
}

impl<S: Storage> RawApi<S> {
    /// The raw API over `storage` with `limits`.
    pub fn new(storage: Arc<S>, limits: RawLimits) -> RawApi<S> {
        RawApi { storage, limits }
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Arc<S> {
        &self.storage
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidArgument("key must not be empty".to_string()));
        }
        if key.len() > self.limits.max_key_size {
            return Err(Error::InvalidArgument(format!(
                "key of {} bytes exceeds the limit of {} bytes",
                key.len(),
                self.limits.max_key_size
            )));
        }
        Ok(())
    }

    fn check_value(&self, what: &str, value: &[u8]) -> Result<()> {
        if value.len() > self.limits.max_value_size {
            return Err(Error::InvalidArgument(format!(
                "{what} of {} bytes exceeds the limit of {} bytes",
                value.len(),
                self.limits.max_value_size
            )));
        }
        Ok(())
    }

    /// The column family named `cf`, once `key` passed its checks: what every keyed request
    /// checks first.
    fn checked_cf(&self, cf: &str, key: &[u8]) -> Result<Cf> {
        let cf = Cf::from_name(cf)?;
        self.check_key(key)?;
        Ok(cf)
    }

    /// The put of `value` at `key` in `cf`, living `ttl` seconds (0: for ever), checked, with
    /// the value in its stored form (see [`raw_value`]).
    fn checked_put(&self, cf: &str, key: Vec<u8>, value: Vec<u8>, ttl: u64) -> Result<Modify> {
        let cf = self.checked_cf(cf, &key)?;
        self.check_value("value", &value)?;
        check_ttl_cf(cf, ttl)?;
        let value = raw_value::encode_vec(value, expire_at(ttl));
        Ok(Modify::Put { cf, key, value })
    }

    /// The value at `key` in column family `cf`, if any (and not expired).
    pub fn get(&self, ctx: &Context, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let cf = self.checked_cf(cf, key)?;
        let stored = self.storage.reader(ctx)?.get_cf(cf, key)?;
        Ok(live_value(stored, raw_value::now_ms()))
    }

    /// [`RawApi::get`] for async callers (see [`Storage::get_async`]).
    pub fn get_async(
        &self,
        ctx: Context,
        cf: &str,
        key: Vec<u8>,
    ) -> StorageFuture<Option<Vec<u8>>> {
        match self.checked_cf(cf, &key) {
            Ok(cf) => {
                let stored = self.storage.clone().get_async(ctx, cf, key);
                Box::pin(async move { Ok(live_value(stored.await?, raw_value::now_ms())) })
            }
            Err(e) => answered(Err(e)),
        }
    }

    /// [`RawApi::put`] for async callers (see [`Storage::write_async`]).
    pub fn put_async(
        &self,
        ctx: Context,
        cf: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: u64,
    ) -> StorageFuture<()> {
        match self.checked_put(cf, key, value, ttl) {
            Ok(put) => self.storage.clone().write_async(ctx, vec![put]),
            Err(e) => answered(Err(e)),
        }
    }

    /// Puts `value` at `key` in column family `cf`.
    pub fn put(&self, ctx: &Context, cf: &str, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.put_with_ttl(ctx, cf, key, value, 0)
    }

    /// Puts `value` at `key` in column family `cf`, to live `ttl` seconds (0: for ever): once
    /// it has expired, the key reads as absent.
    pub fn put_with_ttl(
        &self,
        ctx: &Context,
        cf: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: u64,
    ) -> Result<()> {
        let put = self.checked_put(cf, key, value, ttl)?;
        self.storage.write(ctx, vec![put])
    }

    /// Writes `value` at `key` in column family `cf` if the key holds `expect` (`None`: if it
    /// is absent), atomically with respect to every other write of the key; returns whether it
    /// did and what the key held. An expected value over the value limit is refused like a new
    /// one (no stored value can be that large, and it would swell the replicated command).
    pub fn compare_and_swap(
        &self,
        ctx: &Context,
        cf: &str,
        key: Vec<u8>,
        expect: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl: u64,
    ) -> Result<CasOutcome> {
        let cf = self.checked_cf(cf, &key)?;
        self.check_value("value", &value)?;
        check_ttl_cf(cf, ttl)?;
        if let Some(expect) = &expect {
            self.check_value("expected value", expect)?;
        }
        let cas = Cas {
            cf,
            key,
            expect,
            value: raw_value::encode_vec(value, expire_at(ttl)),
            now_ms: raw_value::now_ms(),
        };
        self.storage.compare_and_swap(ctx, cas)
    }

    /// Splits the region of `ctx` at `key` (see [`Storage::split_region`]), after the checks
    /// every raw key gets: a split key becomes a region boundary that every store keeps.
    pub fn split_region(
        &self,
        ctx: &Context,
        key: Vec<u8>,
    ) -> Result<(proto::metapb::Region, proto::metapb::Region)> {
        self.check_key(&key)?;
        self.storage.split_region(ctx, key)
    }

    /// Deletes `key` from column family `cf`; deleting a missing key succeeds.
    pub fn delete(&self, ctx: &Context, cf: &str, key: Vec<u8>) -> Result<()> {
        let cf = self.checked_cf(cf, &key)?;
        self.storage.write(ctx, vec![Modify::Delete { cf, key }])
    }

    /// [`RawApi::delete`] for async callers (see [`Storage::write_async`]).
    pub fn delete_async(&self, ctx: Context, cf: &str, key: Vec<u8>) -> StorageFuture<()> {
        match self.checked_cf(cf, &key) {
            Ok(cf) => self
                .storage
                .clone()
                .write_async(ctx, vec![Modify::Delete { cf, key }]),
            Err(e) => answered(Err(e)),
        }
    }

    /// Up to `limit` pairs of column family `cf` from `start` (inclusive) in key order; see
    /// [`RawApi::scan_page`] for the bounds (a truncated page is returned as is).
    pub fn scan(
        &self,
        ctx: &Context,
        cf: &str,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_page(ctx, cf, start, limit).map(|p| p.pairs)
    }

    /// Up to `limit` pairs of column family `cf` from `start` (inclusive) in key order, as one
    /// page within the limits (see [`RawApi::scan_range`]).
    pub fn scan_page(
        &self,
        ctx: &Context,
        cf: &str,
        start: &[u8],
        limit: usize,
    ) -> Result<ScanPage> {
        let range = ScanRange {
            start: start.to_vec(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            ..ScanRange::default()
        };
        self.scan_range(ctx, cf, &range)
    }

    /// The pairs of `range` in column family `cf`, as one page within the limits: at most
    /// `max_scan_limit` pairs and `max_scan_bytes` of keys and values (but at least one pair).
    /// A page cut short by a limit while more pairs follow is marked `truncated`; the caller
    /// goes on past its last key (after it, or below it when reversed). An empty range (an
    /// `end` at or before `start`) has no pairs.
    pub fn scan_range(&self, ctx: &Context, cf: &str, range: &ScanRange) -> Result<ScanPage> {
        let cf = Cf::from_name(cf)?;
        let mut page = ScanPage::default();
        let bounded = !range.end.is_empty();
        if range.limit == 0 || (bounded && range.end <= range.start) {
            return Ok(page);
        }
        let max_pairs = range.limit.min(self.limits.max_scan_limit.max(1)) as usize;
        let reader = self.storage.reader(ctx)?;
        let mut it = reader.iter_cf(cf)?;
        let now = raw_value::now_ms();
        if range.reverse {
            it.seek_before(&range.end);
        } else {
            it.seek(&range.start);
        }
        let mut bytes = 0usize;
        while it.valid()? {
            let key = it.key();
            let past = if range.reverse {
                key < range.start.as_slice()
            } else {
                bounded && key >= range.end.as_slice()
            };
            if past {
                break;
            }
            let (value, expiry) = raw_value::decode(it.value());
            let expiry = expiry.unwrap_or(raw_value::NEVER);
            if expiry <= now {
                // Expired: as if absent.
                advance(&mut *it, range.reverse);
                continue;
            }
            let value = if range.key_only { &[][..] } else { value };
            let size = key.len() + value.len();
            let full = page.pairs.len() >= max_pairs
                || (!page.pairs.is_empty() && bytes + size > self.limits.max_scan_bytes);
            if full {
                // Only the server's bounds make a page short of what was asked while more
                // pairs follow.
                page.truncated = page.pairs.len() < range.limit as usize;
                break;
            }
            bytes += size;
            page.pairs.push((key.to_vec(), value.to_vec()));
            if range.with_expiry {
                page.expiry_ms.push(expiry);
            }
            advance(&mut *it, range.reverse);
        }
        Ok(page)
    }

    /// The present values of `keys` in `cf`, read from one snapshot; absent keys are left out.
    /// At most `max_scan_limit` keys per call.
    pub fn batch_get(
        &self,
        ctx: &Context,
        cf: &str,
        keys: &[Vec<u8>],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let cf = Cf::from_name(cf)?;
        self.check_batch_len(keys.len())?;
        for key in keys {
            self.check_key(key)?;
        }
        let reader = self.storage.reader(ctx)?;
        let now = raw_value::now_ms();
        let mut pairs = Vec::new();
        for key in keys {
            if let Some(value) = live_value(reader.get_cf(cf, key)?, now) {
                pairs.push((key.clone(), value));
            }
        }
        Ok(pairs)
    }

    /// Puts every pair in one write, each living `ttl` seconds (0: for ever): all apply or none
    /// (over the raftstore the keys must lie in one region). At most `max_scan_limit` pairs per
    /// call.
    pub fn batch_put(
        &self,
        ctx: &Context,
        cf: &str,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        ttl: u64,
    ) -> Result<()> {
        // The column family is checked even when no pair comes to check it with.
        Cf::from_name(cf)?;
        self.check_batch_len(pairs.len())?;
        let puts = pairs
            .into_iter()
            .map(|(key, value)| self.checked_put(cf, key, value, ttl))
            .collect::<Result<Vec<_>>>()?;
        if puts.is_empty() {
            return Ok(());
        }
        self.storage.write(ctx, puts)
    }

    /// Deletes every key in one write (a missing key is no error); as [`RawApi::batch_put`].
    pub fn batch_delete(&self, ctx: &Context, cf: &str, keys: Vec<Vec<u8>>) -> Result<()> {
        Cf::from_name(cf)?;
        self.check_batch_len(keys.len())?;
        let deletes = keys
            .into_iter()
            .map(|key| {
                Ok(Modify::Delete {
                    cf: self.checked_cf(cf, &key)?,
                    key,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if deletes.is_empty() {
            return Ok(());
        }
        self.storage.write(ctx, deletes)
    }

    /// Deletes every key of `[start, end)` from `cf` (an empty `end`: to the last key) in one
    /// write; over the raftstore the range must lie in one region. An empty range is a no-op.
    pub fn delete_range(
        &self,
        ctx: &Context,
        cf: &str,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> Result<()> {
        let cf = Cf::from_name(cf)?;
        for (what, key) in [("start", &start), ("end", &end)] {
            if key.len() > self.limits.max_key_size {
                return Err(Error::InvalidArgument(format!(
                    "range {what} of {} bytes exceeds the limit of {} bytes",
                    key.len(),
                    self.limits.max_key_size
                )));
            }
        }
        if !end.is_empty() && end < start {
            return Err(Error::InvalidArgument(
                "the range ends before it starts".to_string(),
            ));
        }
        if !end.is_empty() && end == start {
            return Ok(());
        }
        self.storage
            .write(ctx, vec![Modify::DeleteRange { cf, start, end }])
    }

    fn check_batch_len(&self, len: usize) -> Result<()> {
        let max = self.limits.max_scan_limit.max(1) as usize;
        if len > max {
            return Err(Error::InvalidArgument(format!(
                "a batch of {len} keys exceeds the limit of {max}"
            )));
        }
        Ok(())
    }
}
