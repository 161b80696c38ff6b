//! The transaction client's [`TxnTransport`] and the audit's [`Records`] over the in-process
//! stores: a request goes straight to the `TxnApi` of the store believed to lead (else to the
//! running stores in turn, following `NotLeader` hints), and is tried again after region errors
//! and errors of stopped stores until its deadline, as a gRPC client's region cache and retries
//! would. The stores' calls block (a write waits for its raft proposal), so each runs on
//! tokio's blocking pool.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv::{Cf, Storage as _, StorageReader};
use proto::errorpb;
use proto::kvrpcpb::{
    BatchRollbackRequest, BatchRollbackResponse, CheckTxnStatusRequest, CheckTxnStatusResponse,
    CommitRequest, CommitResponse, Context, GetRequest, GetResponse, PrewriteRequest,
    PrewriteResponse, ResolveLockRequest, ResolveLockResponse, ScanRequest, ScanResponse,
};
use proto::kvrpcpb::{GcRequest, GcResponse};
use proto::metapb;
use tessera_client::cluster::ClusterError;
use tessera_client::txn::{TransportFuture, TxnError, TxnTransport};
use workload::bank::{Records, RecordsFuture};

use crate::stores::{lock, Api, Stores};

/// Longest pause between two attempts of one request.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// Responses that may carry a region error.
pub trait RegionError {
    /// The region error, if the request was refused by its region.
    fn region_error(&self) -> Option<&errorpb::Error>;
}

/// Implements [`RegionError`] for each response, and each [`TxnTransport`] method of
/// [`StoreTransport`] as a [`StoreTransport::call`] of the `TxnApi` method of the same name.
macro_rules! store_transport {
    ($($op:ident: $req:ty => $resp:ty;)*) => {
        $(impl RegionError for $resp {
            fn region_error(&self) -> Option<&errorpb::Error> {
                self.region_error.as_ref()
            }
        })*

        impl TxnTransport for StoreTransport {
            $(fn $op<'a>(&'a self, key: &'a [u8], req: $req) -> TransportFuture<'a, $resp> {
                Box::pin(self.call(stringify!($op), key, req, |api, r| api.$op(r)))
            })*

            fn scan<'a>(
                &'a self,
                located: &'a [u8],
                req: ScanRequest,
            ) -> TransportFuture<'a, (ScanResponse, metapb::Region)> {
                Box::pin(async move {
                    let resp = self.call("scan", located, req, |api, r| api.scan(r)).await?;
                    // The suite's cluster has one region, which serves every key.
                    Ok((resp, metapb::Region::default()))
                })
            }

            fn gc<'a>(
                &'a self,
                located: &'a [u8],
                req: GcRequest,
            ) -> TransportFuture<'a, (GcResponse, metapb::Region)> {
                Box::pin(async move {
                    let resp = self.call("gc", located, req, |api, r| api.gc(r)).await?;
                    Ok((resp, metapb::Region::default()))
                })
            }
        }
    };
}

store_transport! {
    get: GetRequest => GetResponse;
    prewrite: PrewriteRequest => PrewriteResponse;
    commit: CommitRequest => CommitResponse;
    check_txn_status: CheckTxnStatusRequest => CheckTxnStatusResponse;
    batch_rollback: BatchRollbackRequest => BatchRollbackResponse;
    resolve_lock: ResolveLockRequest => ResolveLockResponse;
}

impl RegionError for ScanResponse {
    fn region_error(&self) -> Option<&errorpb::Error> {
        self.region_error.as_ref()
    }
}

impl RegionError for GcResponse {
    fn region_error(&self) -> Option<&errorpb::Error> {
        self.region_error.as_ref()
    }
}

/// Routes the requests of every client that shares it: one idea of where the leader is, like a
/// client's region cache (the suite's cluster has one region).
pub struct StoreTransport {
    stores: Arc<Stores>,
    /// Deadline of one request, retries included.
    timeout: Duration,
    leader: Mutex<Option<u64>>,
    attempt: AtomicUsize,
    retries: AtomicU64,
}

impl StoreTransport {
    /// A transport to `stores` that knows no leader yet.
    pub fn new(stores: Arc<Stores>, timeout: Duration) -> StoreTransport {
        StoreTransport {
            stores,
            timeout,
            leader: Mutex::new(None),
            attempt: AtomicUsize::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// Attempts that failed (region errors, stopped stores) and were tried again.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The store to try next and its API: the believed leader, else the running stores in
    /// turn.
    fn target(&self) -> Option<(u64, Api)> {
        let running = self.stores.running();
        let believed = *lock(&self.leader);
        let id = match believed {
            Some(s) if running.contains(&s) => s,
            _ => {
                let n = self.attempt.fetch_add(1, Ordering::Relaxed) + 1;
                *running.get(n % running.len().max(1))?
            }
        };
        Some((id, self.stores.api(id)?))
    }

    /// Runs `f` on the leader's API until it answers without a region error or the deadline
    /// passes. Every request of a transaction client is safe to send twice.
    async fn call<Req, Resp>(
        &self,
        op: &'static str,
        key: &[u8],
        req: Req,
        f: fn(&Api, &Req) -> kv::txn::Result<Resp>,
    ) -> Result<Resp, TxnError>
    where
        Req: Send + Sync + 'static,
        Resp: RegionError + Send + 'static,
    {
        let req = Arc::new(req);
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut backoff = Duration::from_millis(2);
        let mut attempts = 0;
        let mut last = String::from("no store running");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(TxnError::Cluster(ClusterError::GaveUp {
                    op,
                    key: String::from_utf8_lossy(key).into_owned(),
                    attempts,
                    elapsed: started.elapsed(),
                    tried: last,
                }));
            }
            if let Some((target, api)) = self.target() {
                attempts += 1;
                let r = req.clone();
                let answer = blocking(move || f(&api, &r)).await;
                match answer {
                    Ok(resp) => match resp.region_error() {
                        None => {
                            *lock(&self.leader) = Some(target);
                            return Ok(resp);
                        }
                        Some(e) => {
                            last = format!("store {target}: {}", e.message);
                            let hint = e.not_leader.as_ref().and_then(|nl| nl.leader);
                            match hint.map(|p| p.store_id) {
                                Some(h) if h != target => {
                                    *lock(&self.leader) = Some(h);
                                    backoff = Duration::from_millis(2);
                                }
                                _ => *lock(&self.leader) = None,
                            }
                        }
                    },
                    Err(
                        e @ (kv::txn::Error::InvalidArgument(_)
                        | kv::txn::Error::Storage(kv::Error::Corrupt { .. })),
                    ) => panic!("store {target} refused a {op} of the bank test: {e}"),
                    Err(e) => {
                        last = format!("store {target}: {e}");
                        *lock(&self.leader) = None;
                    }
                }
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(now))).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// A consistent snapshot of the region, read on its leader.
    ///
    /// # Errors
    /// What the last store tried said, if none served one by `deadline`.
    pub fn snapshot(&self, deadline: Instant) -> Result<Box<dyn StorageReader>, String> {
        let mut last = String::from("no store running");
        while Instant::now() < deadline {
            if let Some((target, api)) = self.target() {
                match api.storage().reader(&Context::default()) {
                    Ok(r) => {
                        *lock(&self.leader) = Some(target);
                        return Ok(r);
                    }
                    Err(e) => {
                        last = format!("store {target}: {e}");
                        *lock(&self.leader) = None;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(last)
    }
}

/// Runs `f` on tokio's blocking pool; a panic in it goes on in the caller.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("a store call did not finish: {e}"),
        },
    }
}

/// The audit's raw reads, each from a fresh snapshot on the leader `.0` finds.
pub struct StoreRecords(pub Arc<StoreTransport>);

impl Records for StoreRecords {
    fn scan<'a>(
        &'a self,
        cf: &'static str,
        start: &'a [u8],
        end: &'a [u8],
        limit: u32,
    ) -> RecordsFuture<'a> {
        let (me, start, end) = (self.0.clone(), start.to_vec(), end.to_vec());
        Box::pin(blocking(move || {
            let cf = Cf::ALL
                .into_iter()
                .find(|c| c.name() == cf)
                .ok_or_else(|| format!("no column family {cf:?}"))?;
            let reader = me.snapshot(Instant::now() + me.timeout)?;
            let mut it = reader.iter_cf(cf).map_err(|e| e.to_string())?;
            it.seek(&start);
            let mut out = Vec::new();
            while out.len() < limit as usize && it.valid().map_err(|e| e.to_string())? {
                if !end.is_empty() && it.key() >= end.as_slice() {
                    break;
                }
                out.push((it.key().to_vec(), it.value().to_vec()));
                it.next();
            }
            Ok(out)
        }))
    }
}
