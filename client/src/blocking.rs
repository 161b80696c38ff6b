//! A blocking face of [`ClusterClient`](crate::ClusterClient), for programs without an async
//! runtime: each call waits for its answer on the calling thread.
//!
//! The client owns a small tokio runtime (one worker thread) that runs its connections and
//! streams between calls. Do not call it from inside another tokio runtime's async task (a
//! blocking call there stalls that runtime's worker); use the async client there.
//!
//! ```no_run
//! use tessera_client::blocking::ClusterClient;
//! use tessera_client::ClusterConfig;
//!
//! let client = ClusterClient::connect("127.0.0.1:2379", ClusterConfig::default())?;
//! client.put("default", b"k", b"v")?;
//! assert_eq!(client.get("default", b"k")?, Some(b"v".to_vec()));
//! # Ok::<(), tessera_client::ClusterError>(())
//! ```

use std::future::Future;

use tokio::runtime::Runtime;

use crate::cluster::{ClusterConfig, ClusterError};
use crate::raw::{CasResult, Pairs, ScanRange};

/// The routing cluster client, blocking. It owns its runtime, so it is not `Clone`: share it by
/// reference (its methods take `&self`) or in an `Arc`.
pub struct ClusterClient {
    inner: crate::ClusterClient,
    runtime: Runtime,
}

impl ClusterClient {
    /// A client of the cluster the scheduler at `scheduler_addr` runs.
    ///
    /// # Errors
    /// [`ClusterError::Scheduler`] when the scheduler cannot be reached within
    /// `config.scheduler_timeout`, or the client's runtime cannot start.
    pub fn connect(scheduler_addr: &str, config: ClusterConfig) -> Result<Self, ClusterError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tessera-client")
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Scheduler {
                addr: scheduler_addr.to_string(),
                reason: format!("cannot start the client runtime: {e}"),
            })?;
        let inner = runtime.block_on(crate::ClusterClient::connect(scheduler_addr, config))?;
        Ok(ClusterClient { inner, runtime })
    }

    /// The async client underneath (it shares the caches and connections of this one).
    pub fn async_client(&self) -> &crate::ClusterClient {
        &self.inner
    }

    fn wait<T>(&self, f: impl Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }

    /// The value of `key` in `cf`, or `None` when absent. See
    /// [`crate::ClusterClient::get`].
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ClusterError> {
        self.wait(self.inner.get(cf, key))
    }

    /// Writes `value` at `key` in `cf`. See [`crate::ClusterClient::put`].
    pub fn put(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), ClusterError> {
        self.wait(self.inner.put(cf, key, value))
    }

    /// Puts `value` at `key` in `cf` for `ttl` seconds. See
    /// [`crate::ClusterClient::put_with_ttl`].
    pub fn put_with_ttl(
        &self,
        cf: &str,
        key: &[u8],
        value: &[u8],
        ttl: u64,
    ) -> Result<(), ClusterError> {
        self.wait(self.inner.put_with_ttl(cf, key, value, ttl))
    }

    /// Deletes `key` in `cf`. See [`crate::ClusterClient::delete`].
    pub fn delete(&self, cf: &str, key: &[u8]) -> Result<(), ClusterError> {
        self.wait(self.inner.delete(cf, key))
    }

    /// Sets `key` to `value` if it holds `expect` (`None`: absent). See
    /// [`crate::ClusterClient::compare_and_swap`].
    pub fn compare_and_swap(
        &self,
        cf: &str,
        key: &[u8],
        expect: Option<&[u8]>,
        value: &[u8],
    ) -> Result<CasResult, ClusterError> {
        self.wait(self.inner.compare_and_swap(cf, key, expect, value))
    }

    /// Up to `limit` pairs of `cf` from `start` in key order, across regions. See
    /// [`crate::ClusterClient::scan`].
    pub fn scan(&self, cf: &str, start: &[u8], limit: u32) -> Result<Pairs, ClusterError> {
        self.wait(self.inner.scan(cf, start, limit))
    }

    /// The pairs of `range` in `cf`. See [`crate::ClusterClient::scan_range`].
    pub fn scan_range(&self, cf: &str, range: &ScanRange) -> Result<Pairs, ClusterError> {
        self.wait(self.inner.scan_range(cf, range))
    }

    /// The present values of `keys`. See [`crate::ClusterClient::batch_get`].
    pub fn batch_get(&self, cf: &str, keys: &[Vec<u8>]) -> Result<Pairs, ClusterError> {
        self.wait(self.inner.batch_get(cf, keys))
    }

    /// Puts every pair. See [`crate::ClusterClient::batch_put`].
    pub fn batch_put(&self, cf: &str, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), ClusterError> {
        self.wait(self.inner.batch_put(cf, pairs))
    }

    /// Puts every pair for `ttl` seconds. See [`crate::ClusterClient::batch_put_with_ttl`].
    pub fn batch_put_with_ttl(
        &self,
        cf: &str,
        pairs: &[(Vec<u8>, Vec<u8>)],
        ttl: u64,
    ) -> Result<(), ClusterError> {
        self.wait(self.inner.batch_put_with_ttl(cf, pairs, ttl))
    }

    /// Deletes every key of `keys`. See [`crate::ClusterClient::batch_delete`].
    pub fn batch_delete(&self, cf: &str, keys: &[Vec<u8>]) -> Result<(), ClusterError> {
        self.wait(self.inner.batch_delete(cf, keys))
    }

    /// Deletes every key of `[start, end)`. See [`crate::ClusterClient::delete_range`].
    pub fn delete_range(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<(), ClusterError> {
        self.wait(self.inner.delete_range(cf, start, end))
    }
}
