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
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use kv::{EngineReader, Modify, StorageReader};
use proto::kvrpcpb::Context;
use proto::metapb;
use proto::raft_cmdpb::{
    CasRequest, CmdType, DeleteRequest, PutRequest, RaftCmdRequest, RaftRequestHeader, Request,
    SnapRequest,
};

use crate::error::Error;
use crate::metrics::StoreMetrics;
use crate::msg::{Callback, CmdResponse};
use crate::router::Router;
use crate::store::StoreMeta;
use crate::util;

/// A replicated `kv::Storage` backed by the peers of one store.
#[derive(Clone)]
pub struct RaftStorage {
    store_id: u64,
    router: Router,
    store_meta: Arc<RwLock<StoreMeta>>,
    timeout: Duration,
    metrics: Arc<StoreMetrics>,
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
        }
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
        // The router answers the callback itself when it cannot deliver.
        let sent = self.router.send_command(
            req,
            Callback::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        if let Err(Error::Busy(_)) = sent {
            self.metrics.on_busy_command();
        }
        let stopped = || {
            kv::Error::Unavailable(format!(
                "region {region_id}: the store stopped before answering; the outcome is unknown"
            ))
        };
        let resp = match timeout {
            Some(timeout) => rx.recv_timeout(timeout).map_err(|e| match e {
                RecvTimeoutError::Disconnected => stopped(),
                RecvTimeoutError::Timeout => kv::Error::Unavailable(format!(
                    "region {region_id}: no answer within {timeout:?}; the outcome is unknown"
                )),
            })?,
            None => rx.recv().map_err(|_| stopped())?,
        };
        if let Some(err) = resp.response.header.as_ref().and_then(|h| h.error.clone()) {
            return Err(err.into());
        }
        Ok(resp)
    }
}

impl kv::Storage for RaftStorage {
    /// Proposes `batch` and waits, without a deadline, until it is applied or has definitely
    /// failed (see the module documentation for why there is no deadline).
    fn write(&self, ctx: &Context, batch: Vec<Modify>) -> kv::Result<()> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let (region, peer) = self.route(ctx, first.key())?;
        let mut requests = Vec::with_capacity(batch.len());
        for m in batch {
            if let Err(e) = util::check_key_in_region(m.key(), &region) {
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
            });
        }
        let req = RaftCmdRequest {
            header: Some(Self::header(ctx, &region, peer)),
            requests,
            admin_request: None,
        };
        self.send(req, None).map(|_| ())
    }

    /// Proposes the swap as a command of its own and waits, like [`kv::Storage::write`], until
    /// it is applied or has definitely failed. The comparison happens at apply, in the region's
    /// log order, so it is atomic with respect to every other write of the region.
    fn compare_and_swap(&self, ctx: &Context, cas: kv::Cas) -> kv::Result<kv::CasOutcome> {
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

    fn reader(&self, ctx: &Context) -> kv::Result<Box<dyn StorageReader>> {
        let (region, peer) = self.route(ctx, b"")?;
        let req = RaftCmdRequest {
            header: Some(Self::header(ctx, &region, peer)),
            requests: vec![Request {
                cmd_type: CmdType::Snap as i32,
                snap: Some(SnapRequest {}),
                ..Default::default()
            }],
            admin_request: None,
        };
        let resp = self.call(req)?;
        let region = resp
            .response
            .responses
            .first()
            .and_then(|r| r.snap.as_ref())
            .and_then(|s| s.region.clone())
            .unwrap_or(region);
        let snap = resp.snapshot.ok_or_else(|| {
            kv::Error::Unavailable(format!(
                "region {}: snap response without a snapshot",
                region.id
            ))
        })?;
        Ok(Box::new(EngineReader::for_region(
            snap,
            region.id,
            &region.start_key,
            &region.end_key,
        )))
    }
}
