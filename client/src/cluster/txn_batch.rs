//! The two phases of a commit, a request per region: the prewrite of many keys and the commit
//! of many keys, split into region shares the way batches are (see `multi`): each attempt sends
//! the keys (sorted, located by their memcomparable encoding) that lie in the region it goes
//! to, so a split between attempts only shrinks the share. Both requests are safe to send twice
//! for one transaction.

use std::future::Future;

use proto::kvrpcpb::{
    CommitRequest, CommitResponse, Context, Mutation, PrewriteRequest, PrewriteResponse,
};
use proto::{errorpb, metapb};
use tonic::Status;

use super::multi::share_of;
use super::retry::{ClusterError, Reply, Retry};
use super::{ClusterClient, StoreConn};

/// `items` (a raw key and what goes with it) keyed by the encoding of their keys, sorted.
fn located<T>(items: impl IntoIterator<Item = (Vec<u8>, T)>) -> Vec<(Vec<u8>, T)> {
    let mut v: Vec<_> = items
        .into_iter()
        .map(|(k, t)| (codec::key::encode_bytes(&k), t))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A response's region error taken out, or the response with the share it answers.
fn reply<I, R>(share: Vec<I>, region_error: Option<errorpb::Error>, r: R) -> Reply<(Vec<I>, R)> {
    match region_error {
        Some(e) => Reply::RegionError(Box::new(e)),
        None => Reply::Ok((share, r)),
    }
}

impl ClusterClient {
    /// `KvPrewrite` of `req.mutations` a region at a time, in key order: each share's
    /// mutations and its response (no region errors). Stops after the first response with key
    /// errors (nothing of that share was written), so a transaction takes its locks in key
    /// order and never holds a later key while it waits for an earlier one; the mutations of
    /// no returned share were not sent.
    ///
    /// # Errors
    /// What the client gave up with.
    pub(crate) async fn prewrite_shares(
        &self,
        req: PrewriteRequest,
    ) -> Result<Vec<(Vec<Mutation>, PrewriteResponse)>, ClusterError> {
        let pending = located(req.mutations.iter().map(|m| (m.key.clone(), m.clone())));
        let send = |share: Vec<Mutation>, s: StoreConn, ctx| {
            let mut c = s.client;
            let req = PrewriteRequest {
                context: Some(ctx),
                mutations: share.clone(),
                ..req.clone()
            };
            async move {
                let mut r = c.kv_prewrite(req).await?.into_inner();
                Ok(reply(share, r.region_error.take(), r))
            }
        };
        self.by_share("prewrite", pending, send, |r| !r.errors.is_empty())
            .await
    }

    /// `KvCommit` of `req.keys` a region at a time: each share's keys and its response (no
    /// region errors), every share sent.
    ///
    /// # Errors
    /// What the client gave up with; the shares before it were committed.
    pub(crate) async fn commit_shares(
        &self,
        req: CommitRequest,
    ) -> Result<Vec<(Vec<Vec<u8>>, CommitResponse)>, ClusterError> {
        let pending = located(req.keys.iter().map(|k| (k.clone(), k.clone())));
        let send = |share: Vec<Vec<u8>>, s: StoreConn, ctx| {
            let mut c = s.client;
            let req = CommitRequest {
                context: Some(ctx),
                keys: share.clone(),
                ..req.clone()
            };
            async move {
                let mut r = c.kv_commit(req).await?.into_inner();
                Ok(reply(share, r.region_error.take(), r))
            }
        };
        self.by_share("commit", pending, send, |_| false).await
    }

    /// Sends `pending` (sorted by located key) a region's share at a time with `send`, until
    /// every item is sent or an answer makes `stop` true; each share and its answer.
    async fn by_share<I, R, F, Fut>(
        &self,
        op: &'static str,
        mut pending: Vec<(Vec<u8>, I)>,
        mut send: F,
        stop: impl Fn(&R) -> bool,
    ) -> Result<Vec<(Vec<I>, R)>, ClusterError>
    where
        I: Clone,
        F: FnMut(Vec<I>, StoreConn, Context) -> Fut,
        Fut: Future<Output = Result<Reply<(Vec<I>, R)>, Status>>,
    {
        let mut out = Vec::new();
        let Some((first, _)) = pending.first() else {
            return Ok(out);
        };
        let mut retry = Retry::new(op, first, &self.inner.config);
        while let Some((first, _)) = pending.first() {
            let first = first.clone();
            let mut f = |region: &metapb::Region, s: StoreConn, ctx| {
                let share = pending[..share_of(&pending, region)]
                    .iter()
                    .map(|(_, i)| i.clone())
                    .collect();
                send(share, s, ctx)
            };
            let ((share, r), _) = self.call_in_region(&mut retry, &first, &mut f).await?;
            pending.drain(..share.len());
            let stopped = stop(&r);
            out.push((share, r));
            if stopped {
                break;
            }
        }
        Ok(out)
    }
}
