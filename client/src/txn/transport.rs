//! The seams of a [`TxnClient`](super::TxnClient): [`TxnTransport`], which delivers one
//! transactional request to whoever serves its key, and [`TimestampOracle`], which hands out
//! its timestamps.
//!
//! The client keeps the protocol (two-phase commit, lock resolution, lock waits); a transport
//! only routes. Over gRPC that is one server, or the leader of each key's region found through
//! a [`ClusterClient`](crate::ClusterClient) (see `rpc`); a test cluster can route to its
//! in-process stores the same way, so that one client runs against both.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use proto::kvrpcpb::{
    BatchRollbackRequest, BatchRollbackResponse, CheckTxnStatusRequest, CheckTxnStatusResponse,
    CommitRequest, CommitResponse, GcRequest, GcResponse, GetRequest, GetResponse, Mutation,
    PrewriteRequest, PrewriteResponse, ResolveLockRequest, ResolveLockResponse, ScanRequest,
    ScanResponse,
};
use proto::metapb;
use scheduler_client::SchedulerClient;

use super::TxnError;

/// What a [`TxnTransport`] method returns: the response, once delivered.
pub type TransportFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TxnError>> + Send + 'a>>;

/// Delivers transactional requests to the server that serves their key.
///
/// Each method sends its request, which concerns `key` (for `resolve_lock`: the key of the lock
/// met, whose region is to be resolved), to the server in charge of that key, filling in the
/// request's routing context, and returns the response with no region error: region errors
/// (a new leader, a split, a stopped store) are the transport's to retry. Key errors in the
/// response are the client's. Every request a client sends is safe to deliver twice.
///
/// # Errors
/// Whatever stopped the transport from getting an answer in time. After such an error a write
/// may or may not have taken effect.
pub trait TxnTransport: Send + Sync {
    /// `KvGet`.
    fn get<'a>(&'a self, key: &'a [u8], req: GetRequest) -> TransportFuture<'a, GetResponse>;

    /// `KvPrewrite`.
    fn prewrite<'a>(
        &'a self,
        key: &'a [u8],
        req: PrewriteRequest,
    ) -> TransportFuture<'a, PrewriteResponse>;

    /// `KvCommit`.
    fn commit<'a>(
        &'a self,
        key: &'a [u8],
        req: CommitRequest,
    ) -> TransportFuture<'a, CommitResponse>;

    /// `KvCheckTxnStatus`, sent for the transaction's primary key.
    fn check_txn_status<'a>(
        &'a self,
        key: &'a [u8],
        req: CheckTxnStatusRequest,
    ) -> TransportFuture<'a, CheckTxnStatusResponse>;

    /// `KvBatchRollback`.
    fn batch_rollback<'a>(
        &'a self,
        key: &'a [u8],
        req: BatchRollbackRequest,
    ) -> TransportFuture<'a, BatchRollbackResponse>;

    /// `KvPrewrite` of `req.mutations` (sorted by key, each key once), in key order, in as few
    /// requests as the transport can (one per region): the mutations of each request sent and
    /// its response. Stops after the first response with key errors (nothing of that request
    /// was written), so that a transaction never holds a later key while it waits for an
    /// earlier one; mutations in no returned request were not sent. The default sends one key
    /// a request.
    fn prewrite_shares<'a>(
        &'a self,
        req: PrewriteRequest,
    ) -> TransportFuture<'a, Vec<(Vec<Mutation>, PrewriteResponse)>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for m in &req.mutations {
                let one = PrewriteRequest {
                    mutations: vec![m.clone()],
                    ..req.clone()
                };
                let resp = self.prewrite(&m.key, one).await?;
                let refused = !resp.errors.is_empty();
                out.push((vec![m.clone()], resp));
                if refused {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// `KvCommit` of `req.keys` (sorted, each once) in as few requests as the transport can:
    /// the keys of each request and its response, every key sent. The default sends one key a
    /// request.
    fn commit_shares<'a>(
        &'a self,
        req: CommitRequest,
    ) -> TransportFuture<'a, Vec<(Vec<Vec<u8>>, CommitResponse)>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for k in &req.keys {
                let one = CommitRequest {
                    keys: vec![k.clone()],
                    ..req.clone()
                };
                out.push((vec![k.clone()], self.commit(k, one).await?));
            }
            Ok(out)
        })
    }

    /// `KvGc` of the region holding `located` (an encoded key, as for [`TxnTransport::scan`]):
    /// the response and the region that served it.
    fn gc<'a>(
        &'a self,
        located: &'a [u8],
        req: GcRequest,
    ) -> TransportFuture<'a, (GcResponse, metapb::Region)>;

    /// `KvScan` from `req.start_key` in the region holding `located`, a memcomparable-encoded
    /// key (`codec::key`: transactional data lives under encoded keys, and regions split
    /// between them). Returns the response and the region that served it, whose answer ends
    /// at its end key: a scan across regions goes on from there. A transport whose one server
    /// serves every key answers with an unbounded region.
    fn scan<'a>(
        &'a self,
        located: &'a [u8],
        req: ScanRequest,
    ) -> TransportFuture<'a, (ScanResponse, metapb::Region)>;

    /// `KvResolveLock` in the region of `key`.
    fn resolve_lock<'a>(
        &'a self,
        key: &'a [u8],
        req: ResolveLockRequest,
    ) -> TransportFuture<'a, ResolveLockResponse>;
}

/// A source of timestamps, each larger than every one it gave before.
///
/// Lock TTLs are judged on a timestamp's physical milliseconds (`codec::ts`), so an oracle
/// whose timestamps do not follow the clock makes every lock live forever.
pub trait TimestampOracle: Send + Sync {
    /// A fresh timestamp. May block (the client calls it off its async workers).
    ///
    /// # Errors
    /// Why no timestamp could be had.
    fn timestamp(&self) -> Result<u64, String>;
}

/// The scheduler's TSO as a [`TimestampOracle`].
pub(super) struct SchedulerTso(pub(super) Arc<dyn SchedulerClient>);

impl TimestampOracle for SchedulerTso {
    fn timestamp(&self) -> Result<u64, String> {
        self.0.tso().map_err(|e| e.to_string())
    }
}
