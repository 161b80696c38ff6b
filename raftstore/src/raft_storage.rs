//! [`RaftStorage`]: `kv::Storage` over the raftstore, so the raw API and transactions run
//! replicated. A write becomes a proposal of the region's local peer; a reader is a ReadIndex
//! `Snap` answered with an engine snapshot limited to the region's range.
//!
//! A write waits for its proposal's outcome however long that takes, and returns only once the
//! batch is applied or can no longer be: the raftstore answers every proposal exactly once
//! (applied; `StaleCommand` when another leader's entry took its place; a region error before
//! proposing or when the entry's epoch or range check fails at apply; `Undetermined`, a region
//! error carrying only its message, when the peer is removed or a snapshot covers the entry
//! before this peer could tell), and a stopping store drops the answer, which ends the wait
//! with `Unavailable` (the entry may still commit elsewhere, but nothing runs on this store's
//! state any more). So a write answered `NotLeader`, `EpochNotMatch`, `KeyNotInRegion`,
//! `RegionNotFound`, `ServerIsBusy`, `StaleCommand`, `StoreNotMatch` or `DiskFull` was not
//! applied and never will be; after any other answer but success its outcome is unknown.
//! The transaction layer keeps a command's latches for as long as the write call lasts, so a
//! deadline here would let the next command on the same keys decide on a snapshot lacking a
//! write that can still commit (TiKV's scheduler likewise releases latches from the write
//! callback, never on a client deadline). Bounding how long a client waits is the service's
//! job. Reads keep `command_timeout`: a failed read leaves nothing undecided.
//!
//! Known gap: a deposed leader answers its proposals only once its log reaches their indexes,
//! so a write proposed just before losing leadership waits for later traffic on the region
//! (`races::deposed_leader_answers_overwritten_proposals_4c` in the bank test, ignored).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use kv::{EngineReader, EngineSnapshot, Modify, StorageReader};
use proto::kvrpcpb::Context;
use proto::metapb;
use proto::raft_cmdpb::{
    CasRequest, CmdType, DeleteRangeRequest, DeleteRequest, PutRequest, RaftCmdRequest,
    RaftRequestHeader, Request, SnapRequest,
};

use crate::error::Error;
use crate::lease_reads::LeaseReads;
use crate::metrics::StoreMetrics;
use crate::msg::{Callback, CmdResponse, PeerMsg, SplitRegion};
use crate::router::Router;
use crate::store::StoreMeta;
use crate::util;

/// A replicated `kv::Storage` backed by the peers of one store; raw gets in a leader's lease
/// are answered on the caller's thread (`lease_reads.rs`).
#[derive(Clone)]
pub struct RaftStorage {
    store_id: u64,
    router: Router,
    store_meta: Arc<RwLock<StoreMeta>>,
    timeout: Duration,
    metrics: Arc<StoreMetrics>,
    /// The kv engine and the published leases, for reads on the caller's thread.
    lease_reads: Option<(kv::Engines, Arc<LeaseReads>)>,
}

impl RaftStorage {
    pub(crate) fn new(
        store_id: u64,
        router: Router,
        store_meta: Arc<RwLock<StoreMeta>>,
        timeout: Duration,
        metrics: Arc<StoreMetrics>,
    ) -> RaftStorage {
        RaftStorage {
            store_id,
            router,
            store_meta,
            timeout,
            metrics,
            lease_reads: None,
        }
    }

    /// Answers raw gets from `engines` when this store's leader of the region publishes a
    /// running lease in `leases` (see `lease_reads.rs`).
    pub(crate) fn with_lease_reads(
        mut self,
        engines: kv::Engines,
        leases: Arc<LeaseReads>,
    ) -> RaftStorage {
        self.lease_reads = Some((engines, leases));
        self
    }

    /// A reader of the region of `ctx` on a snapshot taken now, if its leader here holds a
    /// lease that serves a read of `key`.
    fn lease_reader(&self, ctx: &Context, key: &[u8]) -> Option<EngineReader> {
        let (engines, leases) = self.lease_reads.as_ref()?;
        let lease = leases.get(ctx.region_id)?;
        if !lease.serves(ctx, key, Instant::now()) {
            return None;
        }
        let r = &lease.region;
        let snap = EngineSnapshot::new(&engines.kv);
        Some(EngineReader::for_region(
            snap,
            r.id,
            &r.start_key,
            &r.end_key,
        ))
    }

    /// The region for `ctx` (by id when given, else by `key`) and this store's peer of it.
    fn route(&self, ctx: &Context, key: &[u8]) -> kv::Result<(metapb::Region, metapb::Peer)> {
        let meta = self.store_meta.read().unwrap_or_else(|e| e.into_inner());
        let region = if ctx.region_id != 0 {
            meta.region(ctx.region_id)
        } else {
            meta.region_for_key(key)
        };
        let Some(region) = region.cloned() else {
            let id = ctx.region_id;
            return Err(Error::RegionNotFound(id).into_errorpb().into());
        };
        let Some(peer) = region
            .peers
            .iter()
            .find(|p| p.store_id == self.store_id)
            .cloned()
        else {
            return Err(Error::RegionNotFound(region.id).into_errorpb().into());
        };
        Ok((region, peer))
    }

    fn header(ctx: &Context, region: &metapb::Region, peer: metapb::Peer) -> RaftRequestHeader {
        RaftRequestHeader {
            region_id: region.id,
            peer: Some(peer),
            region_epoch: ctx.region_epoch.or(region.region_epoch),
            term: ctx.term,
        }
    }

    /// Sends `req` to its region's peer here and waits for the answer, at most
    /// `command_timeout`.
    ///
    /// # Errors
    /// `kv::Error::Region` for region errors, `kv::Error::Unavailable` on timeout or when the
    /// store stops (the outcome of a write is then unknown: it may still commit).
    pub fn call(&self, req: RaftCmdRequest) -> kv::Result<CmdResponse> {
        self.send(req, Some(self.timeout))
    }

    /// Sends `req` and waits for its answer, at most `timeout` if given.
    fn send(&self, req: RaftCmdRequest, timeout: Option<Duration>) -> kv::Result<CmdResponse> {
        let region_id = req.header.as_ref().map_or(0, |h| h.region_id);
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.dispatch(req, move |r| {
            let _ = tx.send(r);
        });
        wait_answer(&rx, region_id, timeout)
    }

    /// Sends `req` to its region's peer; `answer` gets the outcome (the router answers it
    /// itself when it cannot deliver).
    fn dispatch(&self, req: RaftCmdRequest, answer: impl FnOnce(CmdResponse) + Send + 'static) {
        if let Err(Error::Busy(_)) = self.router.send_command(req, Callback::new(answer)) {
            self.metrics.on_busy_command();
        }
    }
}

/// The answer, or its region error as `kv::Error::Region`.
fn region_error_to_err(resp: CmdResponse) -> kv::Result<CmdResponse> {
    match resp.response.header.as_ref().and_then(|h| h.error.clone()) {
        Some(err) => Err(err.into()),
        None => Ok(resp),
    }
}

/// Waits for the answer of a command sent to `region_id`, at most `timeout` if given; a region
/// error in the answer becomes `kv::Error::Region`.
fn wait_answer(
    rx: &crossbeam_channel::Receiver<CmdResponse>,
    region_id: u64,
    timeout: Option<Duration>,
) -> kv::Result<CmdResponse> {
    let stopped = || stopped(region_id);
    let resp = match timeout {
        Some(timeout) => rx.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Disconnected => stopped(),
            RecvTimeoutError::Timeout => kv::Error::Unavailable(format!(
                "region {region_id}: no answer within {timeout:?}; the outcome is unknown"
            )),
        })?,
        None => rx.recv().map_err(|_| stopped())?,
    };
    region_error_to_err(resp)
}

impl kv::Storage for RaftStorage {
    /// Proposes `batch` and waits, without a deadline, until it is applied or has definitely
    /// failed (see the module documentation for why there is no deadline).
    fn write(&self, ctx: &Context, batch: Vec<Modify>) -> kv::Result<()> {
        match self.write_request(ctx, batch)? {
            Some(req) => self.send(req, None).map(|_| ()),
            None => Ok(()),
        }
    }

    /// As [`write`](kv::Storage::write), answered through the proposal's callback: no thread waits.
    fn write_async(self: Arc<Self>, ctx: Context, batch: Vec<Modify>) -> kv::StorageFuture<()> {
        let req = match self.write_request(&ctx, batch) {
            Ok(Some(req)) => req,
            Ok(None) => return kv::answered(Ok(())),
            Err(e) => return kv::answered(Err(e)),
        };
        let answer = self.send_async(req);
        Box::pin(async move { answer.await.map(|_| ()) })
    }

    /// A ReadIndex `Snap` of the key's region answered through its callback, then one get
    /// from the snapshot on the caller's thread.
    fn get_async(
        self: Arc<Self>,
        ctx: Context,
        cf: kv::Cf,
        key: Vec<u8>,
    ) -> kv::StorageFuture<Option<Vec<u8>>> {
        if let Some(reader) = self.lease_reader(&ctx, &key) {
            return kv::answered(reader.get_cf(cf, &key));
        }
        let req = match self.snap_request(&ctx, &key) {
            Ok(req) => req,
            Err(e) => return kv::answered(Err(e)),
        };
        let answer = self.send_async(req);
        Box::pin(async move {
            let reader = snap_reader(answer.await?)?;
            reader.get_cf(cf, &key)
        })
    }

    fn compare_and_swap(&self, ctx: &Context, cas: kv::Cas) -> kv::Result<kv::CasOutcome> {
        self.cas(ctx, cas)
    }

    fn reader(&self, ctx: &Context) -> kv::Result<Box<dyn StorageReader>> {
        let req = self.snap_request(ctx, b"")?;
        snap_reader(self.call(req)?)
    }

    fn split_region(
        &self,
        ctx: &Context,
        split_key: Vec<u8>,
    ) -> kv::Result<(metapb::Region, metapb::Region)> {
        self.split(ctx, split_key)
    }
}

impl RaftStorage {
    /// The proposal of `batch` (`None` when it is empty), after routing and range checks.
    fn write_request(
        &self,
        ctx: &Context,
        batch: Vec<Modify>,
    ) -> kv::Result<Option<RaftCmdRequest>> {
        let Some(first) = batch.first() else {
            return Ok(None);
        };
        let (region, peer) = self.route(ctx, first.key())?;
        let mut requests = Vec::with_capacity(batch.len());
        for m in batch {
            let checked = match &m {
                Modify::DeleteRange { start, end, .. } => {
                    util::check_range_in_region(start, end, &region)
                }
                other => util::check_key_in_region(other.key(), &region),
            };
            if let Err(e) = checked {
                return Err(e.into_errorpb().into());
            }
            requests.push(match m {
                Modify::Put { cf, key, value } => Request {
                    cmd_type: CmdType::Put as i32,
                    put: Some(PutRequest {
                        cf: cf.name().to_string(),
                        key,
                        value,
                    }),
                    ..Default::default()
                },
                Modify::Delete { cf, key } => Request {
                    cmd_type: CmdType::Delete as i32,
                    delete: Some(DeleteRequest {
                        cf: cf.name().to_string(),
                        key,
                    }),
                    ..Default::default()
                },
                Modify::DeleteRange { cf, start, end } => Request {
                    cmd_type: CmdType::DeleteRange as i32,
                    delete_range: Some(DeleteRangeRequest {
                        cf: cf.name().to_string(),
                        start_key: start,
                        end_key: end,
                    }),
                    ..Default::default()
                },
            });
        }
        Ok(Some(RaftCmdRequest {
            header: Some(Self::header(ctx, &region, peer)),
            requests,
            admin_request: None,
        }))
    }

    /// A ReadIndex `Snap` request for the region of `ctx` (or of `key`).
    fn snap_request(&self, ctx: &Context, key: &[u8]) -> kv::Result<RaftCmdRequest> {
        let (region, peer) = self.route(ctx, key)?;
        Ok(RaftCmdRequest {
            header: Some(Self::header(ctx, &region, peer)),
            requests: vec![Request {
                cmd_type: CmdType::Snap as i32,
                snap: Some(SnapRequest {}),
                ..Default::default()
            }],
            admin_request: None,
        })
    }

    /// Sends `req`; the future resolves with its answer (a region error as `kv::Error::Region`)
    /// or `Unavailable` when the store stops before answering.
    fn send_async(&self, req: RaftCmdRequest) -> kv::StorageFuture<CmdResponse> {
        let region_id = req.header.as_ref().map_or(0, |h| h.region_id);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.dispatch(req, move |r| {
            let _ = tx.send(r);
        });
        Box::pin(async move { region_error_to_err(rx.await.map_err(|_| stopped(region_id))?) })
    }
}

impl RaftStorage {
    /// Proposes the swap as a command of its own and waits, like [`kv::Storage::write`], until
    /// it is applied or has definitely failed. The comparison happens at apply, in the region's
    /// log order, so it is atomic with respect to every other write of the region.
    fn cas(&self, ctx: &Context, cas: kv::Cas) -> kv::Result<kv::CasOutcome> {
        let (region, peer) = self.route(ctx, &cas.key)?;
        if let Err(e) = util::check_key_in_region(&cas.key, &region) {
            return Err(e.into_errorpb().into());
        }
        let request = Request {
            cmd_type: CmdType::Cas as i32,
            cas: Some(CasRequest {
                cf: cas.cf.name().to_string(),
                key: cas.key,
                value: cas.value,
                previous_not_exist: cas.expect.is_none(),
                previous_value: cas.expect.unwrap_or_default(),
                now_ms: cas.now_ms,
            }),
            ..Default::default()
        };
        let req = RaftCmdRequest {
            header: Some(Self::header(ctx, &region, peer)),
            requests: vec![request],
            admin_request: None,
        };
        let region_id = region.id;
        let resp = self.send(req, None)?;
        let Some(cas) = resp.response.responses.first().and_then(|r| r.cas.as_ref()) else {
            return Err(kv::Error::Unavailable(format!(
                "region {region_id}: compare-and-swap answered without its outcome"
            )));
        };
        Ok(kv::CasOutcome {
            succeed: cas.succeed,
            previous: (!cas.previous_not_exist).then(|| cas.previous_value.clone()),
        })
    }

    /// Asks this store's leader of the region to split it (the scheduler allocates the new
    /// region's ids) and waits, at most `command_timeout`, for the split to be applied here.
    fn split(
        &self,
        ctx: &Context,
        split_key: Vec<u8>,
    ) -> kv::Result<(metapb::Region, metapb::Region)> {
        let (region, _) = self.route(ctx, &split_key)?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let msg = PeerMsg::SplitRegion(Box::new(SplitRegion {
            region_epoch: ctx.region_epoch.or(region.region_epoch).unwrap_or_default(),
            split_key,
            callback: Callback::new(move |r| {
                let _ = tx.send(r);
            }),
        }));
        if let Err((err, PeerMsg::SplitRegion(split))) = self.router.send(region.id, msg) {
            split.callback.invoke_with_error(err, 0);
        }
        let resp = wait_answer(&rx, region.id, Some(self.timeout))?;
        let regions = resp
            .response
            .admin_response
            .and_then(|a| a.split)
            .map(|s| s.regions)
            .unwrap_or_default();
        match <[metapb::Region; 2]>::try_from(regions) {
            Ok([left, right]) => Ok((left, right)),
            Err(regions) => Err(kv::Error::Unavailable(format!(
                "region {}: split answered with {} regions, not two",
                region.id,
                regions.len()
            ))),
        }
    }
}

/// A reader over the snapshot a `Snap` request was answered with, limited to its region.
fn snap_reader(resp: CmdResponse) -> kv::Result<Box<dyn StorageReader>> {
    let region = resp
        .response
        .responses
        .first()
        .and_then(|r| r.snap.as_ref())
        .and_then(|s| s.region.clone());
    let (Some(region), Some(snap)) = (region, resp.snapshot) else {
        return Err(kv::Error::Unavailable(
            "snap response without its region or snapshot".into(),
        ));
    };
    Ok(Box::new(EngineReader::for_region(
        snap,
        region.id,
        &region.start_key,
        &region.end_key,
    )))
}

fn stopped(region_id: u64) -> kv::Error {
    kv::Error::Unavailable(format!(
        "region {region_id}: the store stopped before answering; the outcome is unknown"
    ))
}
