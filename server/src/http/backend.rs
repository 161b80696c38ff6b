//! [`Backend`]: what the gateway's handlers serve from. One set of handlers runs over either a
//! local storage ([`Local`], the standalone and in-memory engines) or a raft store's cluster
//! ([`Gateway`]: a key this store's peer leads is served by it, anything else goes through the
//! cluster client). A backend answers with the value or with the error response itself.

use std::future::Future;

use axum::response::Response;
use kv::{RawApi, ScanRange, Storage};
use proto::kvrpcpb::Context;

use super::{cluster_error_response, error_response, run, Gateway};

/// Key-value pairs, in key order.
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A result whose error is the HTTP answer.
type Answer<T> = Result<T, Response>;

/// Where the gateway's requests go.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The most pairs one range answer holds.
    fn max_scan_limit(&self) -> u32;
    /// The value of `key`, if present.
    fn get(&self, cf: String, key: Vec<u8>)
        -> impl Future<Output = Answer<Option<Vec<u8>>>> + Send;
    /// Puts `value` at `key` for `ttl` seconds (0: for ever).
    fn put(
        &self,
        cf: String,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: u64,
    ) -> impl Future<Output = Answer<()>> + Send;
    /// Deletes `key`.
    fn delete(&self, cf: String, key: Vec<u8>) -> impl Future<Output = Answer<()>> + Send;
    /// The present ones of `keys`, in key order.
    fn batch_get(
        &self,
        cf: String,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = Answer<Pairs>> + Send;
    /// Puts every pair for `ttl` seconds.
    fn batch_put(
        &self,
        cf: String,
        pairs: Pairs,
        ttl: u64,
    ) -> impl Future<Output = Answer<()>> + Send;
    /// Deletes every key of `keys`.
    fn batch_delete(
        &self,
        cf: String,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = Answer<()>> + Send;
    /// The pairs of `range`, and whether the answer stopped at a server bound short of the limit.
    fn scan(
        &self,
        cf: String,
        range: ScanRange,
    ) -> impl Future<Output = Answer<(Pairs, bool)>> + Send;
    /// Deletes every key of `[start, end)`.
    fn delete_range(
        &self,
        cf: String,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> impl Future<Output = Answer<()>> + Send;
}

/// A local storage: each call runs on tokio's blocking pool.
pub(crate) struct Local<S>(pub(crate) RawApi<S>);

impl<S: Storage> Backend for Local<S> {
    fn max_scan_limit(&self) -> u32 {
        // The raw API caps a page itself and says when it did.
        u32::MAX
    }

    async fn get(&self, cf: String, key: Vec<u8>) -> Answer<Option<Vec<u8>>> {
        let raw = self.0.clone();
        run(move || raw.get(&Context::default(), &cf, &key)).await
    }

    async fn put(&self, cf: String, key: Vec<u8>, value: Vec<u8>, ttl: u64) -> Answer<()> {
        let raw = self.0.clone();
        run(move || raw.put_with_ttl(&Context::default(), &cf, key, value, ttl)).await
    }

    async fn delete(&self, cf: String, key: Vec<u8>) -> Answer<()> {
        let raw = self.0.clone();
        run(move || raw.delete(&Context::default(), &cf, key)).await
    }

    async fn batch_get(&self, cf: String, keys: Vec<Vec<u8>>) -> Answer<Pairs> {
        let raw = self.0.clone();
        let mut pairs = run(move || raw.batch_get(&Context::default(), &cf, &keys)).await?;
        pairs.sort();
        Ok(pairs)
    }

    async fn batch_put(&self, cf: String, pairs: Pairs, ttl: u64) -> Answer<()> {
        let raw = self.0.clone();
        run(move || raw.batch_put(&Context::default(), &cf, pairs, ttl)).await
    }

    async fn batch_delete(&self, cf: String, keys: Vec<Vec<u8>>) -> Answer<()> {
        let raw = self.0.clone();
        run(move || raw.batch_delete(&Context::default(), &cf, keys)).await
    }

    async fn scan(&self, cf: String, range: ScanRange) -> Answer<(Pairs, bool)> {
        let raw = self.0.clone();
        let page = run(move || raw.scan_range(&Context::default(), &cf, &range)).await?;
        Ok((page.pairs, page.truncated))
    }

    async fn delete_range(&self, cf: String, start: Vec<u8>, end: Vec<u8>) -> Answer<()> {
        let raw = self.0.clone();
        run(move || raw.delete_range(&Context::default(), &cf, start, end)).await
    }
}

impl Backend for Gateway {
    fn max_scan_limit(&self) -> u32 {
        self.limits.max_scan_limit
    }

    async fn get(&self, cf: String, key: Vec<u8>) -> Answer<Option<Vec<u8>>> {
        self.check(&cf, &key).map_err(error_response)?;
        self.serve(
            |raw| raw.get_async(Context::default(), &cf, key.clone()),
            async |client| client.get(&cf, &key).await,
        )
        .await
    }

    async fn put(&self, cf: String, key: Vec<u8>, value: Vec<u8>, ttl: u64) -> Answer<()> {
        self.check(&cf, &key).map_err(error_response)?;
        self.serve(
            |raw| raw.put_async(Context::default(), &cf, key.clone(), value.clone(), ttl),
            async |client| client.put_with_ttl(&cf, &key, &value, ttl).await,
        )
        .await
    }

    async fn delete(&self, cf: String, key: Vec<u8>) -> Answer<()> {
        self.check(&cf, &key).map_err(error_response)?;
        self.serve(
            |raw| raw.delete_async(Context::default(), &cf, key.clone()),
            async |client| client.delete(&cf, &key).await,
        )
        .await
    }

    async fn batch_get(&self, cf: String, keys: Vec<Vec<u8>>) -> Answer<Pairs> {
        let client = self.ready_cf(&cf).await?;
        client
            .batch_get(&cf, &keys)
            .await
            .map_err(cluster_error_response)
    }

    async fn batch_put(&self, cf: String, pairs: Pairs, ttl: u64) -> Answer<()> {
        let client = self.ready_cf(&cf).await?;
        client
            .batch_put_with_ttl(&cf, &pairs, ttl)
            .await
            .map_err(cluster_error_response)
    }

    async fn batch_delete(&self, cf: String, keys: Vec<Vec<u8>>) -> Answer<()> {
        let client = self.ready_cf(&cf).await?;
        client
            .batch_delete(&cf, &keys)
            .await
            .map_err(cluster_error_response)
    }

    async fn scan(&self, cf: String, range: ScanRange) -> Answer<(Pairs, bool)> {
        let client = self.ready_cf(&cf).await?;
        let pairs = client
            .scan_range(&cf, &range)
            .await
            .map_err(cluster_error_response)?;
        // The client goes on past every page: nothing is cut short.
        Ok((pairs, false))
    }

    async fn delete_range(&self, cf: String, start: Vec<u8>, end: Vec<u8>) -> Answer<()> {
        let client = self.ready_cf(&cf).await?;
        client
            .delete_range(&cf, &start, &end)
            .await
            .map_err(cluster_error_response)
    }
}
