//! The gRPC [`TxnTransport`]: a [`TxnClient`](super::TxnClient)'s requests go to one server as
//! is, or through a [`ClusterClient`] to the leader of the region of the key they concern, with
//! that region's [`Context`] and its retries.
//!
//! Every request a transaction sends concerns one key (see the module documentation of
//! `txn`), so it always falls in exactly one region, however the regions are split: the
//! `ClusterClient` follows region errors (new leader, new epoch, key no longer in the region)
//! by itself. Every request is safe to send twice for the same transaction: prewrite and
//! commit of a key are idempotent, a rollback or a resolution of a decided transaction too.

use std::future::Future;

use proto::kvrpcpb::*;
use proto::tinykvpb::tiny_kv_client::TinyKvClient;
use proto::{errorpb, metapb};
use tonic::transport::Channel;
use tonic::Status;

use crate::cluster::{ClusterClient, Reply};
use crate::raw::ClientError;

use super::transport::{TransportFuture, TxnTransport};
use super::TxnError;

/// Where requests go.
#[derive(Clone)]
pub(super) enum Route {
    /// One server, which must serve every key (a standalone server).
    One(TinyKvClient<Channel>),
    /// The leader of each key's region.
    Cluster(ClusterClient),
}

/// A transactional request: where its context goes, what answers it, how it is sent.
trait TxnRequest: Clone + Send + Sync + 'static {
    /// Its response.
    type Response: Send + 'static;
    /// The gRPC operation, for error messages.
    const OP: &'static str;
    /// Sets the region context.
    fn set_context(&mut self, ctx: Context);
    /// Takes the region error out of a response.
    fn take_region_error(resp: &mut Self::Response) -> Option<errorpb::Error>;
    /// Sends it over `client`.
    fn send(
        client: TinyKvClient<Channel>,
        req: Self,
    ) -> impl Future<Output = Result<Self::Response, Status>> + Send;
}

/// Implements [`TxnRequest`] for each request type, and each [`TxnTransport`] method of
/// [`Route`] as [`Route::send`] of its request.
macro_rules! txn_request {
    ($($req:ty => $resp:ty, $method:ident, $op:ident;)*) => {
        $(txn_request!(@one $req => $resp, $method);)*

        impl TxnTransport for Route {
            $(fn $op<'a>(&'a self, key: &'a [u8], req: $req) -> TransportFuture<'a, $resp> {
                Box::pin(self.send(key, req))
            })*

            fn scan<'a>(
                &'a self,
                located: &'a [u8],
                req: ScanRequest,
            ) -> TransportFuture<'a, (ScanResponse, metapb::Region)> {
                Box::pin(self.send_located(located, req))
            }

            fn gc<'a>(
                &'a self,
                located: &'a [u8],
                req: GcRequest,
            ) -> TransportFuture<'a, (GcResponse, metapb::Region)> {
                Box::pin(self.send_located(located, req))
            }

            fn prewrite_shares<'a>(
                &'a self,
                req: PrewriteRequest,
            ) -> TransportFuture<'a, Vec<(Vec<Mutation>, PrewriteResponse)>> {
                match self {
                    // One server serves every key: one request.
                    Route::One(_) => Box::pin(async move {
                        let (mutations, key) = (req.mutations.clone(), first_key(&req.mutations));
                        Ok(vec![(mutations, self.send(&key, req).await?)])
                    }),
                    Route::Cluster(c) => Box::pin(async move { Ok(c.prewrite_shares(req).await?) }),
                }
            }

            fn commit_shares<'a>(
                &'a self,
                req: CommitRequest,
            ) -> TransportFuture<'a, Vec<(Vec<Vec<u8>>, CommitResponse)>> {
                match self {
                    Route::One(_) => Box::pin(async move {
                        let (keys, key) = (req.keys.clone(), req.keys.first().cloned());
                        Ok(vec![(keys, self.send(&key.unwrap_or_default(), req).await?)])
                    }),
                    Route::Cluster(c) => Box::pin(async move { Ok(c.commit_shares(req).await?) }),
                }
            }
        }
    };
    (@one $req:ty => $resp:ty, $method:ident) => {
        impl TxnRequest for $req {
            type Response = $resp;
            const OP: &'static str = stringify!($method);
            fn set_context(&mut self, ctx: Context) {
                self.context = Some(ctx);
            }
            fn take_region_error(resp: &mut $resp) -> Option<errorpb::Error> {
                resp.region_error.take()
            }
            async fn send(mut client: TinyKvClient<Channel>, req: Self) -> Result<$resp, Status> {
                Ok(client.$method(req).await?.into_inner())
            }
        }
    };
}

txn_request! {
    GetRequest => GetResponse, kv_get, get;
    PrewriteRequest => PrewriteResponse, kv_prewrite, prewrite;
    CommitRequest => CommitResponse, kv_commit, commit;
    CheckTxnStatusRequest => CheckTxnStatusResponse, kv_check_txn_status, check_txn_status;
    BatchRollbackRequest => BatchRollbackResponse, kv_batch_rollback, batch_rollback;
    ResolveLockRequest => ResolveLockResponse, kv_resolve_lock, resolve_lock;
}
txn_request!(@one ScanRequest => ScanResponse, kv_scan);
txn_request!(@one GcRequest => GcResponse, kv_gc);

/// The key of the first of `mutations` (empty if none).
fn first_key(mutations: &[Mutation]) -> Vec<u8> {
    mutations.first().map(|m| m.key.clone()).unwrap_or_default()
}

impl Route {
    /// Sends `req`, which concerns `key`, and returns the response with no region error.
    ///
    /// # Errors
    /// One server: a region error or a failed RPC, at once. A cluster: whatever
    /// [`ClusterClient::call`] gives up with.
    async fn send<R: TxnRequest>(&self, key: &[u8], req: R) -> Result<R::Response, TxnError> {
        // Transactional data lives under memcomparable-encoded keys (and regions split between
        // them), so that is what locates a key's region.
        let located = codec::key::encode_bytes(key);
        Ok(self.send_located(&located, req).await?.0)
    }

    /// Sends `req` to the region holding the encoded key `located`; returns the response with
    /// no region error and the region that served it (unbounded for one server).
    async fn send_located<R: TxnRequest>(
        &self,
        located: &[u8],
        req: R,
    ) -> Result<(R::Response, metapb::Region), TxnError> {
        match self {
            Route::One(client) => {
                let mut resp = R::send(client.clone(), req)
                    .await
                    .map_err(ClientError::from)?;
                match R::take_region_error(&mut resp) {
                    Some(e) => Err(ClientError::Region(format!("{e:?}")).into()),
                    None => Ok((resp, metapb::Region::default())),
                }
            }
            Route::Cluster(cluster) => {
                let resp = cluster
                    .call_in(R::OP, located, |client, ctx| {
                        let mut req = req.clone();
                        req.set_context(ctx);
                        async move {
                            let mut resp = R::send(client, req).await?;
                            Ok(match R::take_region_error(&mut resp) {
                                Some(e) => Reply::RegionError(Box::new(e)),
                                None => Reply::Ok(resp),
                            })
                        }
                    })
                    .await?;
                Ok(resp)
            }
        }
    }
}
