//! The tonic `TinyKv` service, generic over [`Storage`].
//!
//! Storage calls block (a replicated write waits for its commit), so every handler runs its
//! storage work on tokio's blocking pool and never stalls the async workers. The transactional
//! handlers delegate to [`TxnApi`]; per-key and region errors travel in the responses, other
//! failures become gRPC statuses.

use proto::kvrpcpb::*;
use proto::raft_serverpb::{Done, RaftMessage, SnapshotChunk};
use proto::tinykvpb::tiny_kv_server::TinyKv;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::raw::RawApi;
use crate::storage::Storage;
use crate::txn::TxnApi;

/// The `TinyKv` gRPC service.
pub struct KvService<S> {
    raw: RawApi<S>,
    txn: TxnApi<S>,
}

impl<S: Storage> KvService<S> {
    /// A service answering with `raw`, and with transactions over the same storage.
    pub fn new(raw: RawApi<S>) -> KvService<S> {
        let txn = TxnApi::new(raw.storage().clone());
        KvService { raw, txn }
    }

    /// A service answering with `raw` and `txn`; `txn` must run over the same storage, and be
    /// the only transactional API writing to it (the latches live in it).
    pub fn with_txn(raw: RawApi<S>, txn: TxnApi<S>) -> KvService<S> {
        KvService { raw, txn }
    }
}

/// Splits an outcome into the `(region_error, error)` pair of a raw response.
fn split_error(e: Error) -> (Option<proto::errorpb::Error>, String) {
    match e {
        Error::Region(re) => (Some(*re), String::new()),
        other => (None, other.to_string()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("request task failed: {e}")))
}

fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not served by this server"))
}

#[tonic::async_trait]
impl<S: Storage> TinyKv for KvService<S> {
    async fn raw_get(
        &self,
        req: Request<RawGetRequest>,
    ) -> Result<Response<RawGetResponse>, Status> {
        let req = req.into_inner();
        let raw = self.raw.clone();
        let ctx = req.context.unwrap_or_default();
        let out = blocking(move || raw.get(&ctx, &req.cf, &req.key)).await?;
        let mut resp = RawGetResponse::default();
        match out {
            Ok(Some(v)) => resp.value = v,
            Ok(None) => resp.not_found = true,
            Err(e) => (resp.region_error, resp.error) = split_error(e),
        }
        Ok(Response::new(resp))
    }

    async fn raw_put(
        &self,
        req: Request<RawPutRequest>,
    ) -> Result<Response<RawPutResponse>, Status> {
        let req = req.into_inner();
        let raw = self.raw.clone();
        let ctx = req.context.unwrap_or_default();
        let out = blocking(move || raw.put(&ctx, &req.cf, req.key, req.value)).await?;
        let mut resp = RawPutResponse::default();
        if let Err(e) = out {
            (resp.region_error, resp.error) = split_error(e);
        }
        Ok(Response::new(resp))
    }

    async fn raw_delete(
        &self,
        req: Request<RawDeleteRequest>,
    ) -> Result<Response<RawDeleteResponse>, Status> {
        let req = req.into_inner();
        let raw = self.raw.clone();
        let ctx = req.context.unwrap_or_default();
        let out = blocking(move || raw.delete(&ctx, &req.cf, req.key)).await?;
        let mut resp = RawDeleteResponse::default();
        if let Err(e) = out {
            (resp.region_error, resp.error) = split_error(e);
        }
        Ok(Response::new(resp))
    }

    async fn raw_scan(
        &self,
        req: Request<RawScanRequest>,
    ) -> Result<Response<RawScanResponse>, Status> {
        let req = req.into_inner();
        let raw = self.raw.clone();
        let ctx = req.context.unwrap_or_default();
        let limit = req.limit as usize;
        let out = blocking(move || raw.scan(&ctx, &req.cf, &req.start_key, limit)).await?;
        let mut resp = RawScanResponse::default();
        match out {
            Ok(pairs) => {
                resp.kvs = pairs
                    .into_iter()
                    .map(|(key, value)| KvPair {
                        key,
                        value,
                        error: None,
                    })
                    .collect()
            }
            Err(e) => (resp.region_error, resp.error) = split_error(e),
        }
        Ok(Response::new(resp))
    }

    async fn kv_get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let (req, txn) = (req.into_inner(), self.txn.clone());
        Ok(Response::new(blocking(move || txn.get(&req)).await??))
    }

    async fn kv_scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let (req, txn) = (req.into_inner(), self.txn.clone());
        Ok(Response::new(blocking(move || txn.scan(&req)).await??))
    }

    async fn kv_prewrite(
        &self,
        req: Request<PrewriteRequest>,
    ) -> Result<Response<PrewriteResponse>, Status> {
        let (req, txn) = (req.into_inner(), self.txn.clone());
        Ok(Response::new(blocking(move || txn.prewrite(&req)).await??))
    }

    async fn kv_commit(
        &self,
        req: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let (req, txn) = (req.into_inner(), self.txn.clone());
        Ok(Response::new(blocking(move || txn.commit(&req)).await??))
    }

    async fn kv_check_txn_status(
        &self,
        req: Request<CheckTxnStatusRequest>,
    ) -> Result<Response<CheckTxnStatusResponse>, Status> {
        let (req, txn) = (req.into_inner(), self.txn.clone());
        Ok(Response::new(
            blocking(move || txn.check_txn_status(&req)).await??,
        ))
    }

    async fn kv_batch_rollback(
        &self,
        req: Request<BatchRollbackRequest>,
    ) -> Result<Response<BatchRollbackResponse>, Status> {
        let (req, txn) = (req.into_inner(), self.txn.clone());
        Ok(Response::new(
            blocking(move || txn.batch_rollback(&req)).await??,
        ))
    }

    async fn kv_resolve_lock(
        &self,
        req: Request<ResolveLockRequest>,
    ) -> Result<Response<ResolveLockResponse>, Status> {
        let (req, txn) = (req.into_inner(), self.txn.clone());
        Ok(Response::new(
            blocking(move || txn.resolve_lock(&req)).await??,
        ))
    }

    async fn raft(&self, _: Request<Streaming<RaftMessage>>) -> Result<Response<Done>, Status> {
        Err(unsupported("raft messages (standalone engine)"))
    }

    async fn snapshot(
        &self,
        _: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        Err(unsupported("snapshots (standalone engine)"))
    }
}
