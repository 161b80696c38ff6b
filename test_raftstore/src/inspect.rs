//! What a stuck test prints before it fails: for a region, the scheduler's view and, on every
//! running store, whether a peer is registered, its durable states (region state, hard state,
//! last/applied/truncated index) and what the peer says when asked to serve a read (leader,
//! `NotLeader` with its hint, or silence). A `wait_*` that runs out of time appends this to its
//! panic so a hang is diagnosed from the failure message alone.

use std::fmt::Write as _;
use std::time::Duration;

use kv::keys;
use proto::metapb;
use proto::raft_cmdpb::{CmdType, RaftCmdRequest, RaftRequestHeader, Request, SnapRequest};
use proto::raft_serverpb::{RaftApplyState, RaftLocalState, RegionLocalState};
use scheduler_client::SchedulerClient as _;

use crate::cluster::Cluster;

/// How long a stuck peer gets to answer the probe read; short, since a report covers many peers.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

fn peers_text(region: &metapb::Region) -> String {
    let peers: Vec<String> = region
        .peers
        .iter()
        .map(|p| {
            let learner = p.role == metapb::PeerRole::Learner as i32;
            format!(
                "{}@s{}{}",
                p.id,
                p.store_id,
                if learner { "(L)" } else { "" }
            )
        })
        .collect();
    let e = region.region_epoch.unwrap_or_default();
    format!(
        "[{:?}, {:?}) v{} c{} peers {}",
        String::from_utf8_lossy(&region.start_key),
        String::from_utf8_lossy(&region.end_key),
        e.version,
        e.conf_ver,
        peers.join(" ")
    )
}

/// Whether two regions' key ranges intersect (an empty end key is unbounded).
fn ranges_overlap(a: &metapb::Region, b: &metapb::Region) -> bool {
    let before = |end: &[u8], start: &[u8]| !end.is_empty() && end <= start;
    !before(&a.end_key, &b.start_key) && !before(&b.end_key, &a.start_key)
}

impl Cluster {
    /// A multi-line account of `region_id` across the cluster: see the module doc.
    pub fn describe_region(&self, region_id: u64) -> String {
        let mut out = String::new();
        match self.scheduler().get_region_by_id(region_id) {
            Ok((r, leader)) => {
                let _ = writeln!(
                    out,
                    "region {region_id}: scheduler sees {} leader {:?}",
                    peers_text(&r),
                    leader.map(|l| l.id)
                );
            }
            Err(e) => {
                let _ = writeln!(out, "region {region_id}: unknown to the scheduler ({e})");
            }
        }
        let range = self
            .scheduler()
            .get_region_by_id(region_id)
            .ok()
            .map(|(r, _)| r);
        for store in self.read_sim().running_stores() {
            let _ = writeln!(
                out,
                "  store {store}: {}",
                self.describe_peer(store, region_id)
            );
            // A peer this store cannot create or initialise is usually kept out by another
            // region here whose range overlaps (a stale peer that missed a split or removal).
            let Some(range) = &range else { continue };
            for (id, state) in self.region_states_on_store(store) {
                let r = state.region.clone().unwrap_or_default();
                if id != region_id && !r.peers.is_empty() && ranges_overlap(&r, range) {
                    let _ = writeln!(
                        out,
                        "    overlapping region {id}: state {} {}",
                        state.state,
                        peers_text(&r)
                    );
                }
            }
        }
        out
    }

    /// The region states store `store_id` holds (Tombstones included), by region id.
    fn region_states_on_store(&self, store_id: u64) -> Vec<(u64, RegionLocalState)> {
        let Some(engines) = self.engines(store_id) else {
            return Vec::new();
        };
        self.region_ids_on_store(store_id)
            .into_iter()
            .filter_map(|id| {
                let state = kv::engine::get_msg(&engines.kv, &keys::region_state_key(id));
                Some((id, state.ok().flatten()?))
            })
            .collect()
    }

    /// [`Cluster::describe_region`] of every region the scheduler knows and of every region a
    /// running store holds a state for that the scheduler does not know.
    pub fn describe_cluster(&self) -> String {
        let mut ids: Vec<u64> = self.regions().iter().map(|r| r.id).collect();
        for store in self.read_sim().running_stores() {
            for id in self.region_ids_on_store(store) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids.iter().map(|id| self.describe_region(*id)).collect()
    }

    /// The ids of the regions store `store_id` has a region state for (Tombstones included).
    fn region_ids_on_store(&self, store_id: u64) -> Vec<u64> {
        let Some(engines) = self.engines(store_id) else {
            return Vec::new();
        };
        let mut it = engines.kv.raw_iterator();
        it.seek(keys::REGION_META_MIN_KEY);
        let mut ids = Vec::new();
        while it.valid() {
            let Some(k) = it.key() else { break };
            if k >= keys::REGION_META_MAX_KEY {
                break;
            }
            if let Some(id) = keys::region_id_of_state_key(k) {
                ids.push(id);
            }
            it.next();
        }
        ids
    }

    /// One line about the peer of `region_id` on running store `store_id`.
    fn describe_peer(&self, store_id: u64, region_id: u64) -> String {
        let Some(engines) = self.engines(store_id) else {
            return "not running".into();
        };
        let registered = self
            .router(store_id)
            .is_some_and(|r| r.has_region(region_id));
        let region_state: Option<RegionLocalState> =
            kv::engine::get_msg(&engines.kv, &keys::region_state_key(region_id))
                .ok()
                .flatten();
        let raft_state: Option<RaftLocalState> = raftstore::read_raft_state(&engines, region_id)
            .ok()
            .flatten();
        let apply_state: Option<RaftApplyState> =
            kv::engine::get_msg(&engines.kv, &keys::apply_state_key(region_id))
                .ok()
                .flatten();
        let mut line = format!("registered {registered}");
        match &region_state {
            Some(s) => {
                let region = s.region.clone().unwrap_or_default();
                let _ = write!(line, "; state {} {}", s.state, peers_text(&region));
            }
            None => line.push_str("; no region state"),
        }
        if let Some(rs) = raft_state {
            let hs = rs.hard_state.unwrap_or_default();
            let _ = write!(
                line,
                "; term {} vote {} commit {} last {} (term {})",
                hs.term, hs.vote, hs.commit, rs.last_index, rs.last_term
            );
        }
        if let Some(a) = apply_state {
            let _ = write!(
                line,
                "; applied {} truncated {}",
                a.applied_index,
                a.truncated_state.unwrap_or_default().index
            );
        }
        if registered {
            let epoch = region_state
                .and_then(|s| s.region)
                .and_then(|r| r.region_epoch);
            let _ = write!(
                line,
                "; probe: {}",
                self.probe_peer(store_id, region_id, epoch)
            );
        }
        line
    }

    /// What the peer says to a `Snap` read: it leads, or who it thinks leads, or nothing.
    fn probe_peer(
        &self,
        store_id: u64,
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
    ) -> String {
        let req = RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id,
                peer: None,
                region_epoch: epoch,
                term: 0,
            }),
            requests: vec![Request {
                cmd_type: CmdType::Snap as i32,
                snap: Some(SnapRequest {}),
                ..Default::default()
            }],
            admin_request: None,
        };
        match self.call_raw(store_id, req, PROBE_TIMEOUT) {
            Ok(resp) => match resp.response.header.and_then(|h| h.error) {
                None => "leads (read served)".into(),
                Some(e) => match e.not_leader {
                    Some(nl) => format!("follower, leader hint {:?}", nl.leader.map(|l| l.id)),
                    None => format!("error: {}", e.message),
                },
            },
            Err(e) => format!("no answer: {e}"),
        }
    }
}
