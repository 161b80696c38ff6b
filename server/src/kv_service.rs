//! The tonic `TinyKv` service, generic over [`Storage`].
//!
//! Storage calls block (a replicated write waits for its commit), so handlers run their storage
//! work on tokio's blocking pool and never stall the async workers; the hot raw get and put use
//! the storage's async calls instead ([`Storage::get_async`], [`Storage::write_async`]), which
//! the raftstore answers through its callback without a blocking thread; so does the raw delete,
//! and so do the gets, puts and deletes of the `BatchCommands` stream, many per message.
//! The transactional handlers delegate to [`TxnApi`]; per-key and region errors travel in the
//! responses, other failures become gRPC statuses.
//!
//! A replicated write waits for its proposal's outcome without a deadline, and a transactional
//! command keeps its latches meanwhile (see [`kv::txn`]). A handler therefore answers
//! `Unavailable` ("the outcome is unknown") once its reply timeout passes and leaves the work
//! running on its blocking thread, latches held, until the outcome is known. That bounds every
//! RPC, so a graceful shutdown, which drains the RPCs in flight before the storage stops, ends
//! even when a write can never commit (its store lost its quorum).

mod batch;

pub use batch::{
    BatchLimits, ResponseStream as BatchCommandsStream,
    DEFAULT_MAX_IN_FLIGHT_BYTES as BATCH_DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_MAX_STREAMS as BATCH_DEFAULT_MAX_STREAMS, MAX_BYTES as BATCH_MAX_BYTES,
    MAX_IN_FLIGHT as BATCH_MAX_IN_FLIGHT, MAX_REQUESTS_PER_MESSAGE as BATCH_MAX_REQUESTS,
};

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::kvrpcpb::*;
use proto::tinykvpb::tiny_kv_server::TinyKv;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use kv::{Error, RawApi, ScanRange, Storage, StorageFuture, TxnApi};

use crate::metrics::{Outcome, RequestMetrics};

/// How long a handler waits for its storage work by default: the raftstore's default
/// `command_timeout`, so clients see the same bound as when writes gave up after it.
const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The `TinyKv` gRPC service.
pub struct KvService<S> {
    raw: RawApi<S>,
    txn: TxnApi<S>,
    reply_timeout: Duration,
    /// Says `true` when the server stops: open `BatchCommands` streams then end.
    stopping: Option<watch::Receiver<bool>>,
    /// Bounds over all `BatchCommands` streams together.
    batch_limits: BatchLimits,
    metrics: Option<Arc<RequestMetrics>>,
}

impl<S: Storage> KvService<S> {
    /// A service answering with `raw`, and with transactions over the same storage.
    pub fn new(raw: RawApi<S>) -> KvService<S> {
        let txn = TxnApi::new(raw.storage().clone());
        KvService::with_txn(raw, txn)
    }

    /// A service answering with `raw` and `txn`; `txn` must run over the same storage, and be
    /// the only transactional API writing to it (the latches live in it).
    pub fn with_txn(raw: RawApi<S>, txn: TxnApi<S>) -> KvService<S> {
        KvService {
            raw,
            txn,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            stopping: None,
            batch_limits: BatchLimits::default(),
            metrics: None,
        }
    }

    /// Records every request in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<RequestMetrics>) -> KvService<S> {
        self.metrics = Some(metrics);
        self
    }

    /// Runs handler `kind`'s `answer` and records it.
    async fn timed<T: Outcome>(
        &self,
        kind: &'static str,
        answer: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        let start = Instant::now();
        let out = answer.await;
        if let Some(m) = &self.metrics {
            m.observe(kind, out.result(), start.elapsed());
        }
        out
    }

    /// Bounds the `BatchCommands` streams open at once and the bytes of requests running over
    /// all of them (1,024 streams and 256 MiB unless set).
    pub fn with_batch_limits(mut self, limits: BatchLimits) -> KvService<S> {
        self.batch_limits = limits;
        self
    }

    /// Ends every open `BatchCommands` stream (answering what runs on it first) once `stopping`
    /// says `true`, so a graceful shutdown, which waits for open streams, does not wait for the
    /// clients to go away.
    pub fn with_stopping(mut self, stopping: watch::Receiver<bool>) -> KvService<S> {
        self.stopping = Some(stopping);
        self
    }

    /// Answers `Unavailable` to a request whose storage work takes longer than `timeout`
    /// (5 s unless set); the work itself runs on until its outcome is known.
    pub fn with_reply_timeout(mut self, timeout: Duration) -> KvService<S> {
        self.reply_timeout = timeout;
        self
    }

    /// Runs `f` on the blocking pool and waits for it at most the reply timeout. A late `f` is
    /// answered with [`Error::Unavailable`] (the raw API's error, or the transactional one
    /// wrapping it) and left to finish: a write keeps its latches until its outcome is known.
    async fn blocking<T, E>(
        &self,
        f: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<Result<T, E>, Status>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let task = tokio::task::spawn_blocking(f);
        match tokio::time::timeout(self.reply_timeout, task).await {
            Ok(joined) => joined.map_err(|e| Status::internal(format!("request task failed: {e}"))),
            Err(_) => Ok(Err(Error::Unavailable(format!(
                "no answer within {:?}; the outcome is unknown (a write still runs, and holds \
                 its transaction latches until its outcome is known)",
                self.reply_timeout
            ))
            .into())),
        }
    }
}

/// Waits for `answer`, at most `timeout`; past it the request is answered `Unavailable` ("the
/// outcome is unknown") while the storage goes on with it.
async fn in_time<T>(timeout: Duration, answer: StorageFuture<T>) -> Result<T, Error> {
    match tokio::time::timeout(timeout, answer).await {
        Ok(out) => out,
        Err(_) => Err(Error::Unavailable(format!(
            "no answer within {timeout:?}; the outcome is unknown"
        ))),
    }
}

/// The answer to a raw get (the unary call and the batch stream share it).
fn raw_get_answer<S: Storage>(
    raw: &RawApi<S>,
    timeout: Duration,
    req: RawGetRequest,
) -> impl Future<Output = RawGetResponse> + Send + 'static {
    let ctx = req.context.unwrap_or_default();
    let answer = raw.get_async(ctx, &req.cf, req.key);
    async move {
        let mut resp = RawGetResponse::default();
        match in_time(timeout, answer).await {
            Ok(Some(v)) => resp.value = v,
            Ok(None) => resp.not_found = true,
            Err(e) => (resp.region_error, resp.error) = split_error(e),
        }
        resp
    }
}

/// The `(region_error, error)` of a raw write's response: its outcome, waited for at most
/// `timeout`.
async fn write_outcome(
    timeout: Duration,
    answer: StorageFuture<()>,
) -> (Option<proto::errorpb::Error>, String) {
    match in_time(timeout, answer).await {
        Ok(()) => (None, String::new()),
        Err(e) => split_error(e),
    }
}

/// The answer to a raw put.
fn raw_put_answer<S: Storage>(
    raw: &RawApi<S>,
    timeout: Duration,
    req: RawPutRequest,
) -> impl Future<Output = RawPutResponse> + Send + 'static {
    let ctx = req.context.unwrap_or_default();
    let answer = raw.put_async(ctx, &req.cf, req.key, req.value, req.ttl);
    async move {
        let (region_error, error) = write_outcome(timeout, answer).await;
        RawPutResponse {
            region_error,
            error,
        }
    }
}

/// The answer to a raw delete.
fn raw_delete_answer<S: Storage>(
    raw: &RawApi<S>,
    timeout: Duration,
    req: RawDeleteRequest,
) -> impl Future<Output = RawDeleteResponse> + Send + 'static {
    let ctx = req.context.unwrap_or_default();
    let answer = raw.delete_async(ctx, &req.cf, req.key);
    async move {
        let (region_error, error) = write_outcome(timeout, answer).await;
        RawDeleteResponse {
            region_error,
            error,
        }
    }
}

/// Splits an outcome into the `(region_error, error)` pair of a raw response. Storage that did
/// not answer in time is a typed region error (`storage_unavailable`), so a client tells "the
/// outcome is unknown" from a refusal without reading the message.
fn split_error(e: Error) -> (Option<proto::errorpb::Error>, String) {
    match e {
        Error::Region(re) => (Some(*re), String::new()),
        Error::Unavailable(reason) => {
            let region_error = proto::errorpb::Error {
                message: Error::Unavailable(reason.clone()).to_string(),
                storage_unavailable: Some(proto::errorpb::StorageUnavailable { reason }),
                ..Default::default()
            };
            (Some(region_error), String::new())
        }
        other => (None, other.to_string()),
    }
}

fn kv_pair((key, value): (Vec<u8>, Vec<u8>)) -> KvPair {
    KvPair {
        key,
        value,
        error: None,
    }
}

#[tonic::async_trait]
impl<S: Storage> TinyKv for KvService<S> {
    async fn raw_get(
        &self,
        req: Request<RawGetRequest>,
    ) -> Result<Response<RawGetResponse>, Status> {
        self.timed("raw_get", async move {
            let answer = raw_get_answer(&self.raw, self.reply_timeout, req.into_inner());
            Ok(Response::new(answer.await))
        })
        .await
    }

    async fn raw_put(
        &self,
        req: Request<RawPutRequest>,
    ) -> Result<Response<RawPutResponse>, Status> {
        self.timed("raw_put", async move {
            let answer = raw_put_answer(&self.raw, self.reply_timeout, req.into_inner());
            Ok(Response::new(answer.await))
        })
        .await
    }

    async fn raw_delete(
        &self,
        req: Request<RawDeleteRequest>,
    ) -> Result<Response<RawDeleteResponse>, Status> {
        self.timed("raw_delete", async move {
            let answer = raw_delete_answer(&self.raw, self.reply_timeout, req.into_inner());
            Ok(Response::new(answer.await))
        })
        .await
    }

    type BatchCommandsStream = batch::ResponseStream;

    async fn batch_commands(
        &self,
        req: Request<Streaming<BatchCommandsRequest>>,
    ) -> Result<Response<Self::BatchCommandsStream>, Status> {
        let stream = batch::serve(
            self.raw.clone(),
            self.metrics.clone(),
            self.reply_timeout,
            self.stopping.clone(),
            &self.batch_limits,
            req.into_inner(),
        )?;
        Ok(Response::new(stream))
    }

    async fn raw_batch_get(
        &self,
        req: Request<RawBatchGetRequest>,
    ) -> Result<Response<RawBatchGetResponse>, Status> {
        self.timed("raw_batch_get", async move {
            let req = req.into_inner();
            let raw = self.raw.clone();
            let ctx = req.context.unwrap_or_default();
            let out = self
                .blocking(move || raw.batch_get(&ctx, &req.cf, &req.keys))
                .await?;
            let mut resp = RawBatchGetResponse::default();
            match out {
                Ok(pairs) => resp.pairs = pairs.into_iter().map(kv_pair).collect(),
                Err(e) => (resp.region_error, resp.error) = split_error(e),
            }
            Ok(Response::new(resp))
        })
        .await
    }

    async fn raw_batch_put(
        &self,
        req: Request<RawBatchPutRequest>,
    ) -> Result<Response<RawBatchPutResponse>, Status> {
        self.timed("raw_batch_put", async move {
            let req = req.into_inner();
            let raw = self.raw.clone();
            let ctx = req.context.unwrap_or_default();
            let pairs = req.pairs.into_iter().map(|p| (p.key, p.value)).collect();
            let out = self
                .blocking(move || raw.batch_put(&ctx, &req.cf, pairs, req.ttl))
                .await?;
            let (region_error, error) = out.err().map(split_error).unwrap_or_default();
            Ok(Response::new(RawBatchPutResponse {
                region_error,
                error,
            }))
        })
        .await
    }

    async fn raw_batch_delete(
        &self,
        req: Request<RawBatchDeleteRequest>,
    ) -> Result<Response<RawBatchDeleteResponse>, Status> {
        self.timed("raw_batch_delete", async move {
            let req = req.into_inner();
            let raw = self.raw.clone();
            let ctx = req.context.unwrap_or_default();
            let out = self
                .blocking(move || raw.batch_delete(&ctx, &req.cf, req.keys))
                .await?;
            let (region_error, error) = out.err().map(split_error).unwrap_or_default();
            Ok(Response::new(RawBatchDeleteResponse {
                region_error,
                error,
            }))
        })
        .await
    }

    async fn raw_delete_range(
        &self,
        req: Request<RawDeleteRangeRequest>,
    ) -> Result<Response<RawDeleteRangeResponse>, Status> {
        self.timed("raw_delete_range", async move {
            let req = req.into_inner();
            let raw = self.raw.clone();
            let ctx = req.context.unwrap_or_default();
            let out = self
                .blocking(move || raw.delete_range(&ctx, &req.cf, req.start_key, req.end_key))
                .await?;
            let (region_error, error) = out.err().map(split_error).unwrap_or_default();
            Ok(Response::new(RawDeleteRangeResponse {
                region_error,
                error,
            }))
        })
        .await
    }

    async fn raw_scan(
        &self,
        req: Request<RawScanRequest>,
    ) -> Result<Response<RawScanResponse>, Status> {
        self.timed("raw_scan", async move {
            let req = req.into_inner();
            let raw = self.raw.clone();
            let ctx = req.context.unwrap_or_default();
            let range = ScanRange {
                start: req.start_key,
                end: req.end_key,
                limit: req.limit,
                reverse: req.reverse,
                key_only: req.key_only,
                with_expiry: req.with_expiry,
            };
            let out = self
                .blocking(move || raw.scan_range(&ctx, &req.cf, &range))
                .await?;
            let mut resp = RawScanResponse::default();
            match out {
                Ok(page) => {
                    resp.truncated = page.truncated;
                    resp.kvs = page.pairs.into_iter().map(kv_pair).collect();
                    let never = |at: u64| if at == codec::raw_value::NEVER { 0 } else { at };
                    resp.expiry_ms = page.expiry_ms.into_iter().map(never).collect();
                }
                Err(e) => (resp.region_error, resp.error) = split_error(e),
            }
            Ok(Response::new(resp))
        })
        .await
    }

    async fn raw_compare_and_swap(
        &self,
        req: Request<RawCasRequest>,
    ) -> Result<Response<RawCasResponse>, Status> {
        self.timed("raw_compare_and_swap", async move {
            let req = req.into_inner();
            let raw = self.raw.clone();
            let ctx = req.context.unwrap_or_default();
            let expect = (!req.previous_not_exist).then_some(req.previous_value);
            let out = self
                .blocking(move || {
                    raw.compare_and_swap(&ctx, &req.cf, req.key, expect, req.value, req.ttl)
                })
                .await?;
            let mut resp = RawCasResponse::default();
            match out {
                Ok(outcome) => {
                    resp.succeed = outcome.succeed;
                    match outcome.previous {
                        Some(v) => resp.previous_value = v,
                        None => resp.previous_not_exist = true,
                    }
                }
                Err(e) => (resp.region_error, resp.error) = split_error(e),
            }
            Ok(Response::new(resp))
        })
        .await
    }

    async fn split_region(
        &self,
        req: Request<SplitRegionRequest>,
    ) -> Result<Response<SplitRegionResponse>, Status> {
        self.timed("split_region", async move {
            let req = req.into_inner();
            let raw = self.raw.clone();
            let ctx = req.context.unwrap_or_default();
            let out = self
                .blocking(move || raw.split_region(&ctx, req.split_key))
                .await?;
            let mut resp = SplitRegionResponse::default();
            match out {
                Ok((left, right)) => (resp.left, resp.right) = (Some(left), Some(right)),
                Err(e) => (resp.region_error, resp.error) = split_error(e),
            }
            Ok(Response::new(resp))
        })
        .await
    }

    async fn kv_get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.timed("kv_get", async move {
            let (req, txn) = (req.into_inner(), self.txn.clone());
            Ok(Response::new(self.blocking(move || txn.get(&req)).await??))
        })
        .await
    }

    async fn kv_scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.timed("kv_scan", async move {
            let (req, txn) = (req.into_inner(), self.txn.clone());
            Ok(Response::new(self.blocking(move || txn.scan(&req)).await??))
        })
        .await
    }

    async fn kv_prewrite(
        &self,
        req: Request<PrewriteRequest>,
    ) -> Result<Response<PrewriteResponse>, Status> {
        self.timed("kv_prewrite", async move {
            let (req, txn) = (req.into_inner(), self.txn.clone());
            Ok(Response::new(
                self.blocking(move || txn.prewrite(&req)).await??,
            ))
        })
        .await
    }

    async fn kv_commit(
        &self,
        req: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        self.timed("kv_commit", async move {
            let (req, txn) = (req.into_inner(), self.txn.clone());
            Ok(Response::new(
                self.blocking(move || txn.commit(&req)).await??,
            ))
        })
        .await
    }

    async fn kv_check_txn_status(
        &self,
        req: Request<CheckTxnStatusRequest>,
    ) -> Result<Response<CheckTxnStatusResponse>, Status> {
        self.timed("kv_check_txn_status", async move {
            let (req, txn) = (req.into_inner(), self.txn.clone());
            Ok(Response::new(
                self.blocking(move || txn.check_txn_status(&req)).await??,
            ))
        })
        .await
    }

    async fn kv_batch_rollback(
        &self,
        req: Request<BatchRollbackRequest>,
    ) -> Result<Response<BatchRollbackResponse>, Status> {
        self.timed("kv_batch_rollback", async move {
            let (req, txn) = (req.into_inner(), self.txn.clone());
            Ok(Response::new(
                self.blocking(move || txn.batch_rollback(&req)).await??,
            ))
        })
        .await
    }

    async fn kv_resolve_lock(
        &self,
        req: Request<ResolveLockRequest>,
    ) -> Result<Response<ResolveLockResponse>, Status> {
        self.timed("kv_resolve_lock", async move {
            let (req, txn) = (req.into_inner(), self.txn.clone());
            Ok(Response::new(
                self.blocking(move || txn.resolve_lock(&req)).await??,
            ))
        })
        .await
    }

    async fn kv_gc(&self, req: Request<GcRequest>) -> Result<Response<GcResponse>, Status> {
        self.timed("kv_gc", async move {
            let (req, txn) = (req.into_inner(), self.txn.clone());
            Ok(Response::new(self.blocking(move || txn.gc(&req)).await??))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::{Duration, Instant};

    use proto::kvrpcpb::{Context, RawGetRequest, RawPutRequest};
    use tonic::{Code, Request};

    use super::*;
    use kv::txn::testkit::{PrewriteRequestExt as _, RequestBuilder};
    use kv::{Cas, CasOutcome, MemoryStorage, Modify, RawLimits, StorageReader};

    /// A storage whose writes wait for a ticket each, as a raft write waits for its outcome.
    struct GatedStorage {
        inner: MemoryStorage,
        tickets: Mutex<mpsc::Receiver<()>>,
    }

    impl Storage for GatedStorage {
        fn write(&self, ctx: &Context, batch: Vec<Modify>) -> kv::Result<()> {
            let tickets = self.tickets.lock().unwrap();
            tickets
                .recv()
                .map_err(|_| Error::Unavailable("the gate closed".to_string()))?;
            drop(tickets);
            self.inner.write(ctx, batch)
        }

        fn compare_and_swap(&self, ctx: &Context, cas: Cas) -> kv::Result<CasOutcome> {
            let tickets = self.tickets.lock().unwrap();
            tickets
                .recv()
                .map_err(|_| Error::Unavailable("the gate closed".to_string()))?;
            drop(tickets);
            self.inner.compare_and_swap(ctx, cas)
        }

        fn reader(&self, ctx: &Context) -> kv::Result<Box<dyn StorageReader>> {
            self.inner.reader(ctx)
        }
    }

    #[tokio::test]
    async fn late_write_is_answered_unavailable_and_keeps_its_latches_4b() {
        let (open, tickets) = mpsc::channel();
        let storage = Arc::new(GatedStorage {
            inner: MemoryStorage::new(),
            tickets: Mutex::new(tickets),
        });
        let raw = RawApi::new(storage.clone(), RawLimits::default());
        let txn = TxnApi::new(storage);
        let service =
            KvService::with_txn(raw, txn.clone()).with_reply_timeout(Duration::from_millis(50));
        let req = RequestBuilder::default();

        let prewrite = req.prewrite(10, b"k", 3_000).put(b"k", b"v");
        let late = service
            .kv_prewrite(Request::new(prewrite))
            .await
            .expect_err("the prewrite cannot finish in time");
        assert_eq!(late.code(), Code::Unavailable, "{late}");
        // Answered, yet still running: its key stays latched until the write is decided.
        assert_eq!(txn.latches().held_count(), 1);
        let put = RawPutRequest {
            context: None,
            key: b"r".to_vec(),
            value: b"1".to_vec(),
            cf: "default".to_string(),
            ttl: 0,
        };
        let late = service
            .raw_put(Request::new(put))
            .await
            .unwrap()
            .into_inner();
        let unavailable = late
            .region_error
            .as_ref()
            .and_then(|e| e.storage_unavailable.as_ref());
        assert!(unavailable.is_some(), "{late:?}");

        // Both writes land once their outcome is known, and the latch goes with the prewrite.
        open.send(()).unwrap();
        open.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while txn.latches().held_count() > 0 {
            assert!(Instant::now() < deadline, "the prewrite never finished");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let get = service.kv_get(Request::new(req.get(b"k", 20))).await;
        let lock = get.unwrap().into_inner().error.and_then(|e| e.locked);
        assert_eq!(
            lock.map(|l| l.lock_version),
            Some(10),
            "the prewrite landed"
        );
        let get = RawGetRequest {
            context: None,
            key: b"r".to_vec(),
            cf: "default".to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = service.raw_get(Request::new(get.clone())).await.unwrap();
            if got.into_inner().value == b"1" {
                break;
            }
            assert!(Instant::now() < deadline, "the raw put never landed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
