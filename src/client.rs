//! A small raw-API client over gRPC, used by `tessera-ctl`, `tessera-bench` and the tests.

use proto::kvrpcpb::{RawDeleteRequest, RawGetRequest, RawPutRequest, RawScanRequest};
use proto::tinykvpb::tiny_kv_client::TinyKvClient;
use tonic::transport::Channel;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The RPC itself failed (transport, or a gRPC status).
    #[error("rpc failed: {}", .0.message())]
    Rpc(#[from] tonic::Status),
    /// The server rejected the request (bad input, engine error).
    #[error("server error: {0}")]
    Server(String),
    /// A region error (routing is stale; refresh and retry).
    #[error("region error: {0}")]
    Region(String),
    /// The store's disk is below its free-space reserve: writes are refused until space
    /// returns.
    #[error("disk full: {0}")]
    DiskFull(String),
}

/// A raw key-value client of one server.
#[derive(Clone)]
pub struct RawClient {
    inner: TinyKvClient<Channel>,
}

fn check(region_error: Option<proto::errorpb::Error>, error: String) -> Result<(), ClientError> {
    if let Some(re) = region_error {
        if re.disk_full.is_some() {
            return Err(ClientError::DiskFull(re.message));
        }
        return Err(ClientError::Region(format!("{re:?}")));
    }
    if !error.is_empty() {
        return Err(ClientError::Server(error));
    }
    Ok(())
}

impl RawClient {
    /// Connects to the server at `addr` (`host:port`, or a full `http://` URL).
    pub async fn connect(addr: &str) -> Result<RawClient, ClientError> {
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let inner = TinyKvClient::connect(url)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        Ok(RawClient {
            inner: inner
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        })
    }

    /// The underlying gRPC client, for calls this wrapper does not cover.
    pub fn into_inner(self) -> TinyKvClient<Channel> {
        self.inner
    }

    /// The value at `key` in `cf`, or `None`.
    pub async fn get(&mut self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let resp = self
            .inner
            .raw_get(RawGetRequest {
                key: key.to_vec(),
                cf: cf.to_string(),
                ..Default::default()
            })
            .await?
            .into_inner();
        check(resp.region_error, resp.error)?;
        Ok((!resp.not_found).then_some(resp.value))
    }

    /// Puts `value` at `key` in `cf`.
    pub async fn put(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        let resp = self
            .inner
            .raw_put(RawPutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                cf: cf.to_string(),
                ..Default::default()
            })
            .await?
            .into_inner();
        check(resp.region_error, resp.error)
    }

    /// Deletes `key` from `cf`.
    pub async fn delete(&mut self, cf: &str, key: &[u8]) -> Result<(), ClientError> {
        let resp = self
            .inner
            .raw_delete(RawDeleteRequest {
                key: key.to_vec(),
                cf: cf.to_string(),
                ..Default::default()
            })
            .await?
            .into_inner();
        check(resp.region_error, resp.error)
    }

    /// Up to `limit` pairs of `cf` from `start`.
    pub async fn scan(
        &mut self,
        cf: &str,
        start: &[u8],
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ClientError> {
        let resp = self
            .inner
            .raw_scan(RawScanRequest {
                start_key: start.to_vec(),
                limit,
                cf: cf.to_string(),
                ..Default::default()
            })
            .await?
            .into_inner();
        check(resp.region_error, resp.error)?;
        Ok(resp.kvs.into_iter().map(|p| (p.key, p.value)).collect())
    }
}
