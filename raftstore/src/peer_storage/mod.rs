//! [`PeerStorage`]: one peer's raft log and states over the two engines, implementing
//! [`raft::Storage`].
//!
//! ```text
//! raft engine   RaftLocalState { hard_state, last_index, last_term }   durable log tail
//!               entries (truncated.index, last_index]                  the log
//! kv engine     RaftApplyState { applied_index, truncated_state }     written with applied data
//!               RegionLocalState { state, region }
//!
//!   truncated   first                       last
//!   [t] ........ [t+1] [t+2] ........ [last]
//!    ^ a freshly bootstrapped region has t = 5 (term 5) and no entries
//! ```
//!
//! A peer created by a message for a region it knows nothing of starts with everything at 0: it
//! can only be initialised by a snapshot. Snapshots (generation on request, installing a received
//! one, and crash recovery around that) are in the `snapshot` submodule.
//!
//! Writes are not done here directly: [`PeerStorage::append`] and friends add to the caller's
//! raft-engine write batch, which the raft worker writes once for all peers (group commit). The
//! in-memory state is updated at the same time; raft only reads entries it knows to be durable.

mod snapshot;

pub(crate) use snapshot::{raft_snapshot, GenResult, RegionTask, SnapContext};

use std::cell::RefCell;
use std::collections::VecDeque;

use kv::{keys, Engines};
use proto::eraftpb::{ConfState, Entry, HardState, Snapshot};
use proto::metapb::{self, PeerRole};
use proto::raft_serverpb::{self, RaftApplyState, RaftLocalState, RaftTruncatedState};
use protobuf::Message as _;
use raft::{RaftState, StorageError};
use raftlog::LogBatch;

use crate::error::{Error, Result};

/// Log index and term a bootstrapped region starts from. Not 0, so a peer created empty by a
/// message (everything 0) can be told apart from a bootstrapped one.
pub const RAFT_INIT_LOG_INDEX: u64 = 5;
/// See [`RAFT_INIT_LOG_INDEX`].
pub const RAFT_INIT_LOG_TERM: u64 = 5;

/// The raft local state of a freshly bootstrapped region.
pub fn initial_raft_state() -> RaftLocalState {
    RaftLocalState {
        hard_state: Some(raft_serverpb::HardState {
            term: RAFT_INIT_LOG_TERM,
            vote: 0,
            commit: RAFT_INIT_LOG_INDEX,
        }),
        last_index: RAFT_INIT_LOG_INDEX,
        last_term: RAFT_INIT_LOG_TERM,
    }
}

/// The apply state of a freshly bootstrapped region.
pub fn initial_apply_state() -> RaftApplyState {
    RaftApplyState {
        applied_index: RAFT_INIT_LOG_INDEX,
        truncated_state: Some(RaftTruncatedState {
            index: RAFT_INIT_LOG_INDEX,
            term: RAFT_INIT_LOG_TERM,
        }),
    }
}

/// The membership recorded in a region's peer list.
pub fn conf_state_of(region: &metapb::Region) -> ConfState {
    let mut cs = ConfState::default();
    for p in &region.peers {
        if p.role == PeerRole::Learner as i32 {
            cs.learners.push(p.id);
        } else {
            cs.voters.push(p.id);
        }
    }
    cs
}

struct State {
    raft_state: RaftLocalState,
    apply_state: RaftApplyState,
    region: metapb::Region,
    /// Recently persisted entries, contiguous and ending at `raft_state.last_index`.
    cache: VecDeque<Entry>,
}

/// One peer's durable raft state, as seen by the raft core.
pub struct PeerStorage {
    engines: Engines,
    region_id: u64,
    cache_limit: usize,
    state: RefCell<State>,
    /// Where snapshots are built; without it (unit tests) no snapshot is ever available.
    snap: Option<snapshot::SnapContext>,
    gen: RefCell<snapshot::GenState>,
}

fn corrupt(what: &str, region_id: u64, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("region {region_id}: corrupt {what}: {e}"))
}

/// Raises the commit index to the applied one when a crash lost the raft engine's later commit
/// index but kept the kv engine's apply state (each engine loses its own unsynced writes): the
/// commit index is written unsynced, only entries must be durable before they count. What was
/// applied was committed, and its entries were synced before. Applied past the log's end is not
/// a lost commit index but a broken store.
fn recover_commit(
    region_id: u64,
    mut raft_state: RaftLocalState,
    apply_state: &RaftApplyState,
) -> Result<RaftLocalState> {
    let applied = apply_state.applied_index;
    let hs = raft_state.hard_state.get_or_insert_with(Default::default);
    if hs.commit >= applied {
        return Ok(raft_state);
    }
    if raft_state.last_index < applied {
        return Err(corrupt(
            "raft state",
            region_id,
            format!(
                "applied index {applied} is past the raft log's last index {}",
                raft_state.last_index
            ),
        ));
    }
    tracing::info!(
        region_id,
        commit = hs.commit,
        applied,
        "commit index behind the applied index after a crash; raising it"
    );
    hs.commit = applied;
    Ok(raft_state)
}

impl PeerStorage {
    /// Loads the storage of `region`'s peer from the engines. A region with no stored raft state
    /// is either freshly created by a message (no peers known: everything 0) or a broken store.
    ///
    /// # Errors
    /// Engine failures and undecodable state.
    pub fn new(
        engines: Engines,
        region: metapb::Region,
        cache_limit: usize,
    ) -> Result<PeerStorage> {
        let region_id = region.id;
        let raft_state = read_raft_state(&engines, region_id)?;
        let apply_state: Option<RaftApplyState> =
            kv::engine::get_msg(&engines.kv, &keys::apply_state_key(region_id))?;
        let initialized = !region.peers.is_empty();
        let (raft_state, apply_state) = match (raft_state, apply_state) {
            (Some(r), Some(a)) => (r, a),
            (None, None) if !initialized => (RaftLocalState::default(), RaftApplyState::default()),
            // Born from a split: an empty log at the initial index, recovered below.
            (None, Some(a))
                if initialized
                    && a.applied_index == a.truncated_state.unwrap_or_default().index =>
            {
                (RaftLocalState::default(), a)
            }
            (r, a) => {
                return Err(Error::Other(format!(
                    "region {region_id}: raft state present: {}, apply state present: {}; \
                     the store's engines disagree",
                    r.is_some(),
                    a.is_some()
                )))
            }
        };
        let raft_state = snapshot::recover_raft_state(region_id, raft_state, &apply_state);
        let raft_state = recover_commit(region_id, raft_state, &apply_state)?;
        Ok(PeerStorage {
            engines,
            region_id,
            cache_limit,
            state: RefCell::new(State {
                raft_state,
                apply_state,
                region,
                cache: VecDeque::new(),
            }),
            snap: None,
            gen: RefCell::default(),
        })
    }

    /// The region as this peer knows it.
    pub fn region(&self) -> metapb::Region {
        self.state.borrow().region.clone()
    }

    /// The region's epoch, without copying the whole region.
    pub(crate) fn region_epoch(&self) -> metapb::RegionEpoch {
        self.state.borrow().region.region_epoch.unwrap_or_default()
    }

    /// The member of the region with peer id `id`, without copying the whole region.
    pub(crate) fn region_peer(&self, id: u64) -> Option<metapb::Peer> {
        self.state
            .borrow()
            .region
            .peers
            .iter()
            .find(|p| p.id == id)
            .cloned()
    }

    /// Whether the peer knows its region's range and members (it was not just created empty).
    pub fn is_initialized(&self) -> bool {
        !self.state.borrow().region.peers.is_empty()
    }

    /// The applied index, as durable in the kv engine (or about to be).
    pub fn applied_index(&self) -> u64 {
        self.state.borrow().apply_state.applied_index
    }

    /// The apply state (a copy).
    pub fn apply_state(&self) -> RaftApplyState {
        self.state.borrow().apply_state
    }

    /// Records a new apply state after its batch was written.
    pub(crate) fn set_apply_state(&self, s: RaftApplyState) {
        self.state.borrow_mut().apply_state = s;
    }

    /// The engines.
    pub(crate) fn engines(&self) -> &Engines {
        &self.engines
    }

    /// The index of the last entry removed from the log (its term is still known).
    pub(crate) fn truncated_index(&self) -> u64 {
        self.truncated().index
    }

    /// Forgets cached entries up to `index` after the log was compacted there.
    pub(crate) fn compact_cache_to(&self, index: u64) {
        let mut st = self.state.borrow_mut();
        while st.cache.front().is_some_and(|e| e.index <= index) {
            st.cache.pop_front();
        }
    }

    /// Replaces the region (after a conf change or split).
    pub(crate) fn set_region(&self, region: metapb::Region) {
        self.state.borrow_mut().region = region;
    }

    fn truncated(&self) -> RaftTruncatedState {
        self.state
            .borrow()
            .apply_state
            .truncated_state
            .unwrap_or_default()
    }

    fn read_entry(&self, index: u64) -> Result<Entry> {
        {
            let st = self.state.borrow();
            if let Some(front) = st.cache.front() {
                if index >= front.index {
                    if let Some(e) = st.cache.get((index - front.index) as usize) {
                        return Ok(e.clone());
                    }
                }
            }
        }
        let bytes = self
            .engines
            .raft_log
            .entry(self.region_id, index)
            .map_err(raft_log_error)?
            .ok_or_else(|| {
                Error::Other(format!(
                    "region {}: raft log entry {index} missing from the raft engine",
                    self.region_id
                ))
            })?;
        let e = Entry::parse_from_bytes(&bytes).map_err(|e| corrupt("entry", self.region_id, e))?;
        if e.index != index {
            return Err(corrupt(
                "entry",
                self.region_id,
                format!("key {index} holds index {}", e.index),
            ));
        }
        Ok(e)
    }

    /// Adds `entries` (which may overwrite a conflicting tail) to `wb` and updates the in-memory
    /// log tail.
    ///
    /// # Errors
    /// Engine batch errors.
    pub(crate) fn append(&self, entries: &[Entry], wb: &mut LogBatch) -> Result<()> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let mut st = self.state.borrow_mut();
        let prev_last = st.raft_state.last_index;
        let truncated_index = st
            .apply_state
            .truncated_state
            .as_ref()
            .map_or(0, |t| t.index);
        if first.index <= truncated_index || first.index > prev_last + 1 {
            panic!(
                "region {}: appending entries [{}, {}] to a log ending at {prev_last} \
                 (truncated at {truncated_index})",
                self.region_id, first.index, last.index
            );
        }
        for e in entries {
            let bytes = e
                .write_to_bytes()
                .map_err(|err| corrupt("entry encoding", self.region_id, err))?;
            wb.append(self.region_id, e.index, bytes);
        }
        // Entries past the new tail were overwritten by a newer leader; they must not survive.
        wb.delete_entries(self.region_id, last.index + 1, prev_last + 1);
        st.raft_state.last_index = last.index;
        st.raft_state.last_term = last.term;

        while st.cache.back().is_some_and(|e| e.index >= first.index) {
            st.cache.pop_back();
        }
        if st.cache.back().is_some_and(|e| e.index + 1 != first.index) {
            st.cache.clear();
        }
        st.cache.extend(entries.iter().cloned());
        while st.cache.len() > self.cache_limit {
            st.cache.pop_front();
        }
        Ok(())
    }

    /// Records `hs` and adds the raft local state to `wb`.
    pub(crate) fn save_raft_state(&self, hs: Option<&HardState>, wb: &mut LogBatch) {
        let mut st = self.state.borrow_mut();
        if let Some(hs) = hs {
            st.raft_state.hard_state = Some(raft_serverpb::HardState {
                term: hs.term,
                vote: hs.vote,
                commit: hs.commit,
            });
        }
        wb.put_state(
            self.region_id,
            prost::Message::encode_to_vec(&st.raft_state),
        );
    }
}

/// Region `region_id`'s raft state from the raft-log engine, if it has one.
///
/// # Errors
/// Engine failures and an undecodable state.
pub fn read_raft_state(engines: &Engines, region_id: u64) -> Result<Option<RaftLocalState>> {
    let Some(bytes) = engines
        .raft_log
        .raft_state(region_id)
        .map_err(raft_log_error)?
    else {
        return Ok(None);
    };
    let state = <RaftLocalState as prost::Message>::decode(bytes.as_slice())
        .map_err(|e| corrupt("raft state", region_id, e))?;
    Ok(Some(state))
}

/// A raft-log engine failure as this crate's error.
pub(crate) fn raft_log_error(e: raftlog::Error) -> Error {
    Error::Other(format!("raft log engine: {e}"))
}

fn raft_err(e: Error) -> raft::Error {
    // The raft core only understands storage errors; anything else here is an engine failure,
    // which raft cannot work around.
    panic!("peer storage failed: {e}")
}

impl raft::Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let st = self.state.borrow();
        let hs = st.raft_state.hard_state.unwrap_or_default();
        let mut hard_state = HardState::default();
        hard_state.term = hs.term;
        hard_state.vote = hs.vote;
        hard_state.commit = hs.commit;
        Ok(RaftState {
            hard_state,
            conf_state: conf_state_of(&st.region),
        })
    }

    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> raft::Result<Vec<Entry>> {
        let truncated = self.truncated();
        let last = self.state.borrow().raft_state.last_index;
        if low <= truncated.index {
            return Err(StorageError::Compacted.into());
        }
        if high > last + 1 {
            return Err(StorageError::Unavailable.into());
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for idx in low..high {
            let e = self.read_entry(idx).map_err(raft_err)?;
            size += u64::from(e.compute_size());
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let truncated = self.truncated();
        if idx == truncated.index {
            return Ok(truncated.term);
        }
        if idx < truncated.index {
            return Err(StorageError::Compacted.into());
        }
        let (last, last_term) = {
            let st = self.state.borrow();
            (st.raft_state.last_index, st.raft_state.last_term)
        };
        if idx > last {
            return Err(StorageError::Unavailable.into());
        }
        if idx == last {
            return Ok(last_term);
        }
        Ok(self.read_entry(idx).map_err(raft_err)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated().index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.state.borrow().raft_state.last_index)
    }

    fn snapshot(&self, _request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.request_snapshot(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn region() -> metapb::Region {
        crate::bootstrap::new_first_region(1, 1, 1)
    }

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = format!("{index}/{term}").into_bytes().into();
        e
    }

    #[test]
    fn bootstrapped_storage_starts_at_five_2b() {
        let dir = tempfile::tempdir().unwrap();
        let engines = Engines::open(dir.path()).unwrap();
        crate::bootstrap::prepare_bootstrap_cluster(&engines, &region()).unwrap();
        let ps = PeerStorage::new(engines, region(), 16).unwrap();
        assert_eq!(ps.first_index().unwrap(), 6);
        assert_eq!(ps.last_index().unwrap(), 5);
        assert_eq!(ps.term(5).unwrap(), 5);
        assert!(ps.term(4).is_err());
        let st = ps.initial_state().unwrap();
        assert_eq!(st.hard_state.commit, 5);
        assert_eq!(st.conf_state.voters, vec![1]);
        assert_eq!(ps.applied_index(), 5);
    }

    #[test]
    fn append_overwrites_tail_and_survives_restart_2b() {
        let dir = tempfile::tempdir().unwrap();
        let engines = Engines::open(dir.path()).unwrap();
        crate::bootstrap::prepare_bootstrap_cluster(&engines, &region()).unwrap();
        {
            // A cache of 2 forces reads of older entries from the engine.
            let ps = PeerStorage::new(engines.clone(), region(), 2).unwrap();
            let mut wb = LogBatch::new();
            ps.append(&[entry(6, 6), entry(7, 6), entry(8, 6)], &mut wb)
                .unwrap();
            engines.raft_log.write(&wb, true).unwrap();
            let mut wb = LogBatch::new();
            ps.append(&[entry(7, 7)], &mut wb).unwrap();
            let mut hs = HardState::default();
            hs.term = 7;
            hs.commit = 6;
            ps.save_raft_state(Some(&hs), &mut wb);
            engines.raft_log.write(&wb, true).unwrap();
            assert_eq!(ps.last_index().unwrap(), 7);
            assert_eq!(ps.term(7).unwrap(), 7);
        }
        let ps = PeerStorage::new(engines.clone(), region(), 2).unwrap();
        assert_eq!(ps.last_index().unwrap(), 7);
        let ents = ps.entries(6, 8, None).unwrap();
        assert_eq!(
            ents.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(6, 6), (7, 7)]
        );
        assert_eq!(ps.initial_state().unwrap().hard_state.term, 7);
        assert!(matches!(
            ps.entries(6, 9, None),
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
        assert!(matches!(
            ps.entries(5, 7, None),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        // The overwritten entry 8 is gone from disk.
        assert!(engines.raft_log.entry(1, 8).unwrap().is_none());
        // A size limit still returns at least one entry.
        assert_eq!(ps.entries(6, 8, Some(1)).unwrap().len(), 1);
    }

    /// A power cut can keep the kv engine's apply state (written unsynced, then flushed) while
    /// losing the raft engine's later commit index (also unsynced: only entries must be synced
    /// before they count): applied 8 with commit 6. Raft refused to start from that ("applied
    /// out of range", found by `tessera-chaos` seed 18). What was applied was committed, and its
    /// entries are synced in the log, so the commit index is raised to the applied one.
    #[test]
    fn applied_beyond_a_lost_commit_index_raises_it_2b() {
        let dir = tempfile::tempdir().unwrap();
        let engines = Engines::open(dir.path()).unwrap();
        crate::bootstrap::prepare_bootstrap_cluster(&engines, &region()).unwrap();
        let applied = |index| {
            let mut wb = kv::WriteBatch::new(&engines.kv);
            let state = RaftApplyState {
                applied_index: index,
                truncated_state: Some(raft_serverpb::RaftTruncatedState { index: 5, term: 5 }),
            };
            wb.put_msg(&keys::apply_state_key(1), &state);
            wb.write(true).unwrap();
        };
        {
            let ps = PeerStorage::new(engines.clone(), region(), 16).unwrap();
            let mut wb = LogBatch::new();
            ps.append(&[entry(6, 6), entry(7, 6), entry(8, 6)], &mut wb)
                .unwrap();
            let mut hs = HardState::default();
            hs.term = 6;
            hs.commit = 6;
            ps.save_raft_state(Some(&hs), &mut wb);
            engines.raft_log.write(&wb, true).unwrap();
        }
        applied(8);
        let ps = PeerStorage::new(engines.clone(), region(), 16).unwrap();
        assert_eq!(ps.initial_state().unwrap().hard_state.commit, 8);
        let mut config = raft::Config::new(1);
        config.applied = 8;
        raft::RawNode::new(&config, ps).expect("raft starts from the recovered state");
        // Applied beyond the log itself is not a lost commit index but a broken store.
        applied(9);
        let e = PeerStorage::new(engines, region(), 16)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("applied"), "{e}");
    }
}
