//! A small raw-API client over gRPC, used by `tessera-ctl`, `tessera-bench` and the tests.
//!
//! It sends each request once. A compare-and-swap whose answer is lost, or that the server
//! stopped waiting for, fails with [`ClientError::Undetermined`]: the swap may have happened,
//! and sending it again would compare against its own result.

use std::error::Error as _;

use proto::kvrpcpb::{
    Context, KvPair, RawBatchDeleteRequest, RawBatchGetRequest, RawBatchPutRequest, RawCasRequest,
    RawCasResponse, RawDeleteRangeRequest, RawDeleteRequest, RawGetRequest, RawPutRequest,
    RawScanRequest,
};
use proto::tinykvpb::tiny_kv_client::TinyKvClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub use codec::range::{prefix_end, ScanRange};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why, with the causes (a refused connection, a certificate the CA did not sign, ...).
        reason: String,
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
    /// The store's storage did not answer in time, or is stopping: a put or delete may still
    /// apply (sending it again is harmless), a read may be retried.
    #[error("{0}")]
    Unavailable(String),
    /// A compare-and-swap was sent and no definite answer came back (the connection failed
    /// after sending, or the server stopped waiting for its storage): it may have happened or
    /// not. Read the key to learn its state; do not take the swap as refused.
    #[error("the outcome is unknown: {0}")]
    Undetermined(String),
}

impl ClientError {
    /// Whether the request may have taken effect although it failed: only a compare-and-swap
    /// reports this. (A put or delete that fails with an `Rpc` error or
    /// [`ClientError::Unavailable`] may have taken effect too; sending those again is harmless.)
    pub fn is_undetermined(&self) -> bool {
        matches!(self, ClientError::Undetermined(_))
    }
}

/// How a compare-and-swap went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasResult {
    /// The key held what was expected, and now holds the new value.
    pub succeed: bool,
    /// What the key held when compared; `None` when it was absent.
    pub previous: Option<Vec<u8>>,
}

/// The request for a compare-and-swap of `key` in `cf` from `expect` (`None`: absent) to
/// `value`.
pub(crate) fn cas_request(
    context: Option<Context>,
    cf: &str,
    key: &[u8],
    expect: Option<&[u8]>,
    value: &[u8],
) -> RawCasRequest {
    RawCasRequest {
        context,
        key: key.to_vec(),
        value: value.to_vec(),
        previous_not_exist: expect.is_none(),
        previous_value: expect.map(<[u8]>::to_vec).unwrap_or_default(),
        cf: cf.to_string(),
        ttl: 0,
    }
}

/// The outcome a successful compare-and-swap response reports.
pub(crate) fn cas_result(resp: &RawCasResponse) -> CasResult {
    CasResult {
        succeed: resp.succeed,
        previous: (!resp.previous_not_exist).then(|| resp.previous_value.clone()),
    }
}

/// The source of a failure of a request the client dropped before sending it (its batch
/// stream could not open, or had ended).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NotSent(pub String);

/// Whether a failed RPC never reached the server: the connection could not be made, or the
/// client never put the request on its stream, so no byte of it was sent.
pub(crate) fn never_sent(status: &Status) -> bool {
    let mut cause = status.source();
    while let Some(e) = cause {
        if e.is::<tonic::ConnectError>() || e.is::<NotSent>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Whether the handler of a failed RPC may have run: the connection failed once the request
/// may have been sent, the call was cut short, or the handler's task failed. The other codes
/// come from refusals before the handler (unknown method, bad credentials, message too large).
pub(crate) fn may_have_run(status: &Status) -> bool {
    let ambiguous = matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
    );
    ambiguous && !never_sent(status)
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
        if re.storage_unavailable.is_some() {
            return Err(ClientError::Unavailable(re.message));
        }
        return Err(ClientError::Region(format!("{re:?}")));
    }
    if !error.is_empty() {
        return Err(ClientError::Server(error));
    }
    Ok(())
}

/// `e` and its causes, `: `-separated.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(&format!(": {c_text}"));
        }
        cause = c.source();
    }
    text
}

impl RawClient {
    /// Connects to the server at `addr` (`host:port`, or a full `http://` URL).
    pub async fn connect(addr: &str) -> Result<RawClient, ClientError> {
        RawClient::connect_with(addr, None).await
    }

    /// Connects to the server at `addr` (`host:port`) over TLS when `tls` is given (the
    /// server's certificate checked against its CA), or plain TCP.
    pub async fn connect_with(
        addr: &str,
        tls: Option<&security::Tls>,
    ) -> Result<RawClient, ClientError> {
        let host_port = addr
            .strip_prefix("http://")
            .or_else(|| addr.strip_prefix("https://"))
            .unwrap_or(addr);
        let endpoint = security::endpoint(host_port, tls).map_err(|e| ClientError::Connect {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        let channel = endpoint.connect().await.map_err(|e| ClientError::Connect {
            addr: addr.to_string(),
            reason: with_causes(&e),
        })?;
        let inner = TinyKvClient::new(channel);
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
        self.put_with_ttl(cf, key, value, 0).await
    }

    /// Puts `value` at `key` in `cf`, to live `ttl` seconds (0: for ever); once it has
    /// expired the key reads as absent.
    pub async fn put_with_ttl(
        &mut self,
        cf: &str,
        key: &[u8],
        value: &[u8],
        ttl: u64,
    ) -> Result<(), ClientError> {
        let resp = self
            .inner
            .raw_put(RawPutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                cf: cf.to_string(),
                ttl,
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

    /// Writes `value` at `key` in `cf` if the key holds `expect` (`None`: if it is absent);
    /// says whether it did and what the key held.
    ///
    /// # Errors
    /// [`ClientError::Undetermined`] when the swap may have happened without an answer saying
    /// so; the other errors mean it did not happen.
    pub async fn compare_and_swap(
        &mut self,
        cf: &str,
        key: &[u8],
        expect: Option<&[u8]>,
        value: &[u8],
    ) -> Result<CasResult, ClientError> {
        let req = cas_request(None, cf, key, expect, value);
        let resp = match self.inner.raw_compare_and_swap(req).await {
            Ok(resp) => resp.into_inner(),
            Err(status) if may_have_run(&status) => {
                return Err(ClientError::Undetermined(status.message().to_string()))
            }
            Err(status) => return Err(status.into()),
        };
        let result = cas_result(&resp);
        match resp.region_error {
            Some(re) if !re.proves_not_applied() => Err(ClientError::Undetermined(re.message)),
            re => check(re, resp.error).map(|()| result),
        }
    }

    /// Up to `limit` pairs of `cf` from `start`, in the server's first page (see
    /// [`RawClient::scan_range`] for every page).
    pub async fn scan(&mut self, cf: &str, start: &[u8], limit: u32) -> Result<Pairs, ClientError> {
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

    /// The pairs of `range` in `cf` (up to its limit), asking page after page while the server
    /// cuts its pages at its own bounds.
    pub async fn scan_range(&mut self, cf: &str, range: &ScanRange) -> Result<Pairs, ClientError> {
        let mut out = Vec::new();
        let mut rest = range.clone();
        while (out.len() as u32) < range.limit {
            rest.limit = range.limit - out.len() as u32;
            let resp = self
                .inner
                .raw_scan(rest.request(cf, None))
                .await?
                .into_inner();
            check(resp.region_error, resp.error)?;
            let truncated = resp.truncated;
            let pairs: Pairs = resp.kvs.into_iter().map(|p| (p.key, p.value)).collect();
            let last = pairs.last().map(|(k, _)| k.clone());
            out.extend(pairs);
            match last {
                Some(last) if truncated => rest.resume_past(last),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The present values of `keys` in `cf`, read at one point; absent keys are left out.
    pub async fn batch_get(&mut self, cf: &str, keys: &[Vec<u8>]) -> Result<Pairs, ClientError> {
        let resp = self
            .inner
            .raw_batch_get(RawBatchGetRequest {
                context: None,
                keys: keys.to_vec(),
                cf: cf.to_string(),
            })
            .await?
            .into_inner();
        check(resp.region_error, resp.error)?;
        Ok(resp.pairs.into_iter().map(|p| (p.key, p.value)).collect())
    }

    /// Puts every pair in `cf` in one write: all apply or none.
    pub async fn batch_put(
        &mut self,
        cf: &str,
        pairs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), ClientError> {
        self.batch_put_with_ttl(cf, pairs, 0).await
    }

    /// [`RawClient::batch_put`], every key to live `ttl` seconds (0: for ever).
    pub async fn batch_put_with_ttl(
        &mut self,
        cf: &str,
        pairs: &[(Vec<u8>, Vec<u8>)],
        ttl: u64,
    ) -> Result<(), ClientError> {
        let resp = self
            .inner
            .raw_batch_put(RawBatchPutRequest {
                context: None,
                pairs: pairs.iter().map(|(k, v)| kv_pair(k, v)).collect(),
                cf: cf.to_string(),
                ttl,
            })
            .await?
            .into_inner();
        check(resp.region_error, resp.error)
    }

    /// Deletes every key of `keys` from `cf` in one write (a missing key is no error).
    pub async fn batch_delete(&mut self, cf: &str, keys: &[Vec<u8>]) -> Result<(), ClientError> {
        let resp = self
            .inner
            .raw_batch_delete(RawBatchDeleteRequest {
                context: None,
                keys: keys.to_vec(),
                cf: cf.to_string(),
            })
            .await?
            .into_inner();
        check(resp.region_error, resp.error)
    }
}

impl RawClient {
    /// Deletes every key of `[start, end)` in `cf` (an empty `end`: to the last key) in one
    /// write.
    pub async fn delete_range(
        &mut self,
        cf: &str,
        start: &[u8],
        end: &[u8],
    ) -> Result<(), ClientError> {
        let resp = self
            .inner
            .raw_delete_range(RawDeleteRangeRequest {
                context: None,
                start_key: start.to_vec(),
                end_key: end.to_vec(),
                cf: cf.to_string(),
            })
            .await?
            .into_inner();
        check(resp.region_error, resp.error)
    }
}

/// Key-value pairs, in the order the call defines (key order for scans).
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

pub(crate) fn kv_pair(key: &[u8], value: &[u8]) -> KvPair {
    KvPair {
        key: key.to_vec(),
        value: value.to_vec(),
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_connection_never_made_proves_a_request_was_not_sent_1() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        let mut c = TinyKvClient::new(endpoint.connect_lazy());
        let refused = c.raw_get(RawGetRequest::default()).await.unwrap_err();
        assert!(never_sent(&refused), "{refused:?}");
        assert!(!may_have_run(&refused), "{refused:?}");
        // The same code without a refused connection behind it may come after the request.
        assert!(may_have_run(&Status::unavailable("connection reset")));
        assert!(may_have_run(&Status::internal("request task failed")));
        assert!(!may_have_run(&Status::unimplemented("not on this port")));
    }
}
