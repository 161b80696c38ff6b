//! Applying committed entries: each command's writes go into one kv-engine batch together with the
//! new `RaftApplyState`, so a crash never applies an entry twice or half; proposals are answered
//! only after that batch is written, matched by (term, index).
//!
//! A compare-and-swap is decided here, in log order, against the engine: a command that reads
//! (a `Get`, a `Cas`) first writes out the batch so far, so it sees every earlier entry. A
//! refused swap writes nothing but advances the applied index like any entry.

use std::time::Instant;

use kv::{keys, Cf, EngineSnapshot, WriteBatch};
use prost::Message as _;
use proto::eraftpb::{Entry, EntryType};
use proto::raft_cmdpb::{
    CasRequest, CasResponse, DeleteExpiredRequest, DeleteExpiredResponse, DeleteRangeResponse,
    GetResponse, RaftCmdRequest, RaftCmdResponse, RaftResponseHeader, Response, SnapResponse,
};
use proto::raft_serverpb::RaftApplyState;

use super::PeerMsgHandler;
use crate::cmd::{write_one, Cmd};
use crate::error::{Error, Result};
use crate::msg::{Callback, CmdResponse};
use crate::region_worker::RaftLogGcTask;
use crate::util;

/// What applying a batch of entries did beyond writing data.
#[derive(Default)]
pub(super) struct ApplyEffects {
    /// The batch must be synced (the raft log is about to lose entries it covers, or a split
    /// creates a region).
    pub(super) sync: bool,
    /// The log was compacted up to this index.
    pub(super) compacted_to: Option<u64>,
    /// Regions split off whose peers on this store are to be created once the batch is written.
    pub(super) new_regions: Vec<proto::metapb::Region>,
}

impl PeerMsgHandler<'_> {
    /// Applies `entries` (consecutive, starting right after the applied index).
    pub(super) fn apply_committed(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let start = Instant::now();
        let engines = self.peer.raft_group.store().engines().clone();
        let mut apply_state = self.peer.raft_group.store().apply_state();
        let mut wb = WriteBatch::new(&engines.kv);
        let mut answers: Vec<(Callback, CmdResponse)> = Vec::new();
        let mut effects = ApplyEffects::default();
        for e in entries {
            if e.index != apply_state.applied_index + 1 {
                panic!(
                    "region {} peer {}: applying entry {} (term {}) after applied index {}",
                    self.peer.region_id,
                    self.peer.meta.id,
                    e.index,
                    e.term,
                    apply_state.applied_index
                );
            }
            let resp = match e.get_entry_type() {
                EntryType::EntryNormal if !e.data.is_empty() => {
                    self.peer.size.diff_hint += e.data.len() as u64;
                    Some(self.exec_normal(&e, &mut wb, &mut apply_state, &mut effects))
                }
                EntryType::EntryNormal => None,
                EntryType::EntryConfChange => Some(self.exec_conf_change(&e, &mut wb)),
                EntryType::EntryConfChangeV2 => {
                    // Only joint consensus uses these, and this store never enters it.
                    tracing::warn!(
                        region_id = self.peer.region_id,
                        index = e.index,
                        "ignoring a v2 conf change entry"
                    );
                    None
                }
            };
            apply_state.applied_index = e.index;
            self.peer.applied_term = e.term;
            match (self.take_proposal(e.index, e.term), resp) {
                (Some(cb), Some(resp)) => answers.push((cb, resp)),
                (Some(cb), None) => cb.invoke_with_error(Error::StaleCommand, e.term),
                _ => {}
            }
            if self.peer.removed() {
                // Removed from the region: nothing after this entry is this peer's to apply.
                break;
            }
        }
        self.write_apply_state(&mut wb, &apply_state, effects.sync);
        self.ctx.metrics.on_apply(start.elapsed());
        self.after_apply(apply_state.applied_index);
        if let Some(index) = effects.compacted_to {
            self.peer.raft_group.store().compact_cache_to(index);
            let task = RaftLogGcTask {
                region_id: self.peer.region_id,
                end_index: index + 1,
            };
            // A stopped worker leaves the entries for the next compaction to delete.
            let _ = self.ctx.raftlog_gc.schedule(task);
        }
        for region in std::mem::take(&mut effects.new_regions) {
            self.create_split_peer(region);
        }
        for (cb, resp) in answers {
            cb.invoke(resp);
        }
        if self.peer.removed() {
            self.destroy();
        }
    }

    /// What follows any apply up to `applied`: a split proposed at or below it is applied, so
    /// the commit index goes back to riding on the next append.
    pub(super) fn after_apply(&mut self, applied: u64) {
        if self.peer.bcast_commit_until.is_some_and(|i| i <= applied) {
            self.peer.bcast_commit_until = None;
            self.peer.raft_group.set_skip_bcast_commit(true);
        }
    }

    /// Writes `wb` with `apply_state`. Not synced unless `sync`: the raft log is, and replaying
    /// it after a crash rewrites the same values; only a log compaction, which removes that
    /// log, needs the applied state durable first.
    fn write_apply_state(&mut self, wb: &mut WriteBatch, apply_state: &RaftApplyState, sync: bool) {
        wb.put_msg(&keys::apply_state_key(self.peer.region_id), apply_state);
        if let Err(e) = wb.write(sync) {
            panic!(
                "region {} peer {}: kv engine write at applied index {} failed: {e}",
                self.peer.region_id, self.peer.meta.id, apply_state.applied_index
            );
        }
        self.peer.raft_group.store().set_apply_state(*apply_state);
    }

    /// Answers every pending proposal at or below `index` with [`Error::Undetermined`]: this
    /// peer will not apply their entries itself (a snapshot covers them, or the peer is going),
    /// so it cannot tell whether they committed.
    pub(super) fn abandon_proposals_up_to(&mut self, index: u64, reason: &'static str) {
        let term = self.peer.term();
        let region_id = self.peer.region_id;
        while self
            .peer
            .proposals
            .front()
            .is_some_and(|p| p.index <= index)
        {
            let p = self.peer.proposals.pop_front().expect("checked front");
            p.callback
                .invoke_with_error(Error::Undetermined { region_id, reason }, term);
        }
    }

    /// Pops the proposal of entry (term, index), answering overwritten proposals before it.
    pub(super) fn take_proposal(&mut self, index: u64, term: u64) -> Option<Callback> {
        while let Some(p) = self.peer.proposals.front() {
            // A proposal of this term or later further on may still commit. One of an older
            // term never will: a log's terms never decrease, so no entry of an older term can
            // follow this term-`term` entry in the committed log.
            if p.index > index && p.term >= term {
                return None;
            }
            let p = self.peer.proposals.pop_front().expect("checked front");
            if p.index == index && p.term == term {
                return Some(p.callback);
            }
            // Another leader's entry took (or will take) its index: it never commits.
            p.callback.invoke_with_error(Error::StaleCommand, term);
        }
        None
    }

    /// Times the commit of this leader's proposals among `entries` (consecutive, committed).
    pub(super) fn time_commits(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first().map(|e| e.index) else {
            return;
        };
        for p in self.peer.proposals.iter_mut() {
            let Some(e) = p
                .index
                .checked_sub(first)
                .and_then(|i| entries.get(i as usize))
            else {
                if p.index >= first {
                    break;
                }
                continue;
            };
            if !p.commit_seen && e.term == p.term {
                p.commit_seen = true;
                self.ctx.metrics.on_commit(p.proposed_at.elapsed());
            }
        }
    }

    fn exec_normal(
        &mut self,
        e: &Entry,
        wb: &mut WriteBatch,
        apply_state: &mut RaftApplyState,
        effects: &mut ApplyEffects,
    ) -> CmdResponse {
        let req = match RaftCmdRequest::decode(e.data.as_ref()) {
            Ok(r) => r,
            Err(err) => panic!(
                "region {} peer {}: undecodable command at index {} term {}: {err}",
                self.peer.region_id, self.peer.meta.id, e.index, e.term
            ),
        };
        if let Some(admin) = &req.admin_request {
            return self.exec_admin(&req, admin, wb, apply_state, effects);
        }
        let region = self.peer.region();
        if let Err(err) = util::check_request(&req, &region) {
            return CmdResponse::from_error(err, self.peer.term());
        }
        // Decode every request before writing any, so a bad one cannot half-apply a command.
        let cmds = match req
            .requests
            .iter()
            .map(Cmd::decode)
            .collect::<Result<Vec<_>>>()
        {
            Ok(cmds) => cmds,
            Err(err) => return CmdResponse::from_error(err, self.peer.term()),
        };
        if cmds.iter().any(|c| c.reads()) {
            // A read inside a write command (a Get, the comparison of a Cas) reads the engine,
            // which must hold the writes of earlier entries of this batch first. They go out
            // with the applied index before this entry, so a crash right after replays from
            // here and decides the same way.
            apply_state.applied_index = e.index - 1;
            self.write_apply_state(wb, apply_state, effects.sync);
        }
        match self.exec_requests(&req, cmds, wb, e.index) {
            Ok(resp) => resp,
            Err(err) => CmdResponse::from_error(err, self.peer.term()),
        }
    }

    /// Executes the requests of `req`, decoded as `cmds`.
    fn exec_requests(
        &self,
        req: &RaftCmdRequest,
        cmds: Vec<Cmd<'_>>,
        wb: &mut WriteBatch,
        index: u64,
    ) -> Result<CmdResponse> {
        let kv = &self.peer.raft_group.store().engines().kv;
        let mut responses = Vec::with_capacity(cmds.len());
        let mut snapshot = None;
        for (r, cmd) in req.requests.iter().zip(cmds) {
            let mut resp = Response {
                cmd_type: r.cmd_type,
                ..Default::default()
            };
            match cmd {
                Cmd::Put { .. } | Cmd::Delete { .. } => {
                    resp = write_one(cmd, r.cmd_type, wb)?.expect("a put or a delete");
                }
                Cmd::DeleteRange { cf, start, end } => {
                    // Checked against the region at proposal and above; cut to the region's
                    // range all the same, so no command can reach another region's data.
                    let region = self.peer.region();
                    let start = keys::data_key(start.max(region.start_key.as_slice()));
                    let end = match (end.is_empty(), region.end_key.is_empty()) {
                        (_, true) => keys::data_end_key(end),
                        (true, false) => keys::data_key(&region.end_key),
                        (false, false) => keys::data_key(end.min(region.end_key.as_slice())),
                    };
                    if start < end {
                        wb.delete_range_cf(cf, &start, &end)?;
                    }
                    resp.delete_range = Some(DeleteRangeResponse {});
                }
                Cmd::Get { cf, key } => {
                    let v = kv::engine::get_cf(kv, cf, &keys::data_key(key))?;
                    resp.get = Some(GetResponse {
                        value: v.unwrap_or_default(),
                    });
                }
                Cmd::Cas { cf, req: c } => {
                    resp.cas = Some(self.exec_cas(cf, c.clone(), wb, index)?);
                }
                Cmd::DeleteExpired { cf, req: d } => {
                    resp.delete_expired = Some(self.exec_delete_expired(cf, d, wb, index)?);
                }
                Cmd::Snap => {
                    snapshot = Some(EngineSnapshot::new(kv));
                    resp.snap = Some(SnapResponse {
                        region: Some(self.peer.region()),
                    });
                }
            }
            responses.push(resp);
        }
        Ok(CmdResponse {
            response: RaftCmdResponse {
                header: Some(RaftResponseHeader {
                    current_term: self.peer.term(),
                    ..Default::default()
                }),
                responses,
                admin_response: None,
            },
            snapshot,
        })
    }

    /// What `data_key` of `cf` holds now, read to decide a command at `index` (`what`) against
    /// it. A failed read cannot be answered as a refusal (another replica reading fine would
    /// decide otherwise): the store stops, as it does when an apply write fails.
    fn read_to_decide(&self, cf: Cf, data_key: &[u8], index: u64, what: &str) -> Option<Vec<u8>> {
        let kv = &self.peer.raft_group.store().engines().kv;
        kv::engine::get_cf(kv, cf, data_key).unwrap_or_else(|e| {
            panic!(
                "region {} peer {}: reading {:?} for {what} at index {index} failed: {e}",
                self.peer.region_id,
                self.peer.meta.id,
                String::from_utf8_lossy(keys::origin_key(data_key))
            )
        })
    }

    /// Deletes each key of `req` whose value's time to live ended by the request's clock, as the
    /// engine holds it now (every earlier entry's writes included, as for a compare-and-swap):
    /// a key written again since the proposal, or holding a value without a TTL, stays. Keys
    /// outside the region are skipped. A failed read stops the store, as in `exec_cas`.
    fn exec_delete_expired(
        &self,
        cf: Cf,
        req: &DeleteExpiredRequest,
        wb: &mut WriteBatch,
        index: u64,
    ) -> Result<DeleteExpiredResponse> {
        let region = self.peer.region();
        let mut deleted = 0;
        for key in &req.keys {
            if util::check_key_in_region(key, &region).is_err() {
                continue;
            }
            let data_key = keys::data_key(key);
            let stored = self.read_to_decide(cf, &data_key, index, "the expiry check");
            let expired = stored
                .as_deref()
                .is_some_and(|s| codec::raw_value::live(s, req.now_ms).is_none());
            if expired {
                wb.delete_cf(cf, &data_key)?;
                deleted += 1;
            }
        }
        Ok(DeleteExpiredResponse { deleted })
    }

    /// Decides a compare-and-swap against the engine, which holds every earlier entry's writes
    /// (`exec_normal` wrote the batch out first), and queues its write when it succeeds. Every
    /// replica decides the same way: same log, same state. A failed read cannot be answered as
    /// a refusal (another replica reading fine would swap): the store stops, as it does when
    /// an apply write fails.
    fn exec_cas(
        &self,
        cf: Cf,
        req: CasRequest,
        wb: &mut WriteBatch,
        index: u64,
    ) -> Result<CasResponse> {
        let data_key = keys::data_key(&req.key);
        let current = self.read_to_decide(cf, &data_key, index, "the compare-and-swap");
        let cas = kv::Cas {
            cf,
            key: req.key,
            expect: (!req.previous_not_exist).then_some(req.previous_value),
            value: req.value,
            now_ms: req.now_ms,
        };
        let outcome = cas.decide(current);
        if outcome.succeed {
            wb.put_cf(cf, &data_key, &cas.value)?;
        }
        Ok(CasResponse {
            succeed: outcome.succeed,
            previous_not_exist: outcome.previous.is_none(),
            previous_value: outcome.previous.unwrap_or_default(),
        })
    }
}

/// Whether the apply thread may apply `e` (see `apply_worker`): `Some(None)` for an empty
/// entry, `Some(command)` for a command of plain writes (puts and deletes into known column
/// families, the commands a round's write batch joins), `None` for anything the raft worker
/// applies itself.
pub(crate) fn async_command(e: &Entry) -> Option<Option<RaftCmdRequest>> {
    if e.get_entry_type() != EntryType::EntryNormal {
        return None;
    }
    if e.data.is_empty() {
        return Some(None);
    }
    let req = RaftCmdRequest::decode(e.data.as_ref()).ok()?;
    super::write_batch::PendingWrites::batchable(&req).then_some(Some(req))
}
