//! The raw API of [`ClusterClient`]: get, put, delete, compare-and-swap, scan and split, each
//! routed to its key's region leader by the machinery in the parent module. Gets, puts and
//! deletes travel over the store's `BatchCommands` stream when the client batches.

use proto::kvrpcpb::{RawDeleteRequest, RawGetRequest, RawPutRequest, SplitRegionRequest};
use proto::metapb;

use super::retry::{ClusterError, Reply, Retry};
use super::{ClusterClient, StoreConn};
use crate::raw::{cas_request, cas_result, CasResult, ScanRange};

impl ClusterClient {
    /// The value at `key` in `cf`, or `None`.
    pub async fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ClusterError> {
        let mut retry = Retry::new("get", key, &self.inner.config);
        let mut f = |s: StoreConn, ctx| {
            let req = RawGetRequest {
                context: Some(ctx),
                key: key.to_vec(),
                cf: cf.to_string(),
            };
            async move {
                let r = s.raw_get(req).await?;
                let value = (!r.not_found).then_some(r.value);
                Ok(Reply::raw(r.region_error, r.error, value))
            }
        };
        Ok(self.call_routed(&mut retry, key, &mut f).await?.0)
    }

    /// Puts `value` at `key` in `cf`.
    ///
    /// # Errors
    /// As [`ClusterClient::call_once`].
    pub async fn put(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), ClusterError> {
        self.put_with_ttl(cf, key, value, 0).await
    }

    /// Puts `value` at `key` in `cf`, to live `ttl` seconds (0: for ever); once it has
    /// expired the key reads as absent.
    ///
    /// # Errors
    /// As [`ClusterClient::call_once`].
    pub async fn put_with_ttl(
        &self,
        cf: &str,
        key: &[u8],
        value: &[u8],
        ttl: u64,
    ) -> Result<(), ClusterError> {
        let mut retry = Retry::once("put", key, &self.inner.config);
        let mut f = |s: StoreConn, ctx| {
            let req = RawPutRequest {
                context: Some(ctx),
                key: key.to_vec(),
                value: value.to_vec(),
                cf: cf.to_string(),
                ttl,
            };
            async move {
                let r = s.raw_put(req).await?;
                Ok(Reply::raw(r.region_error, r.error, ()))
            }
        };
        self.call_routed(&mut retry, key, &mut f).await?;
        Ok(())
    }

    /// Deletes `key` from `cf`.
    ///
    /// # Errors
    /// As [`ClusterClient::call_once`].
    pub async fn delete(&self, cf: &str, key: &[u8]) -> Result<(), ClusterError> {
        let mut retry = Retry::once("delete", key, &self.inner.config);
        let mut f = |s: StoreConn, ctx| {
            let req = RawDeleteRequest {
                context: Some(ctx),
                key: key.to_vec(),
                cf: cf.to_string(),
            };
            async move {
                let r = s.raw_delete(req).await?;
                Ok(Reply::raw(r.region_error, r.error, ()))
            }
        };
        self.call_routed(&mut retry, key, &mut f).await?;
        Ok(())
    }

    /// Writes `value` at `key` in `cf` if the key holds `expect` (`None`: if it is absent), in
    /// the key's region's apply order; says whether it did and what the key held. Retried only
    /// after failures that prove it was not applied (see the module documentation).
    ///
    /// # Errors
    /// [`ClusterError::Undetermined`] when an attempt may have applied without an answer
    /// saying so; any other error means no attempt applied.
    pub async fn compare_and_swap(
        &self,
        cf: &str,
        key: &[u8],
        expect: Option<&[u8]>,
        value: &[u8],
    ) -> Result<CasResult, ClusterError> {
        let mut retry = Retry::once("cas", key, &self.inner.config);
        let mut f = |s: StoreConn, ctx| {
            let req = cas_request(Some(ctx), cf, key, expect, value);
            let mut c = s.client;
            async move {
                let r = c.raw_compare_and_swap(req).await?.into_inner();
                let result = cas_result(&r);
                Ok(Reply::raw(r.region_error, r.error, result))
            }
        };
        Ok(self.call_routed(&mut retry, key, &mut f).await?.0)
    }

    /// Splits the region holding `key` so that a region starts at `key`; returns the two
    /// regions the split made, left then right. A retry after a lost answer finds `key`
    /// already starting a region and fails with [`ClusterError::Server`] or
    /// [`ClusterError::GaveUp`]: look the region up before splitting again.
    pub async fn split_region(
        &self,
        key: &[u8],
    ) -> Result<(metapb::Region, metapb::Region), ClusterError> {
        self.call("split", key, |mut c, ctx| {
            let req = SplitRegionRequest {
                context: Some(ctx),
                split_key: key.to_vec(),
            };
            async move {
                let r = c.split_region(req).await?.into_inner();
                let regions = (r.left.unwrap_or_default(), r.right.unwrap_or_default());
                Ok(Reply::raw(r.region_error, r.error, regions))
            }
        })
        .await
    }

    /// Up to `limit` pairs of `cf` from `start` (inclusive) in key order, across regions, in
    /// requests of at most [`SCAN_BATCH`](super::SCAN_BATCH) pairs (see [`ClusterClient::scan_range`]).
    pub async fn scan(
        &self,
        cf: &str,
        start: &[u8],
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ClusterError> {
        self.scan_range(cf, &ScanRange::new(start, b"", limit))
            .await
    }
}
