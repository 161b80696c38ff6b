//! The [`Storage`] seam between the raft core and durable state, and
//! [`MemStorage`], the in-memory reference implementation used by tests, the
//! example and the benchmark.
//!
//! The log a storage holds looks like this:
//!
//! ```text
//!   compacted      dummy    first                       last
//!   ..........   [d]      [first] [first+1] ... [last-1] [last]
//!                 ^ only index and term of the entry before `first` are kept,
//!                   so the entry at `first` can still be checked (§5.3)
//! ```
//!
//! Compaction (thesis §5) drops entries up to the dummy; a snapshot covering the
//! dummy must exist first so a lagging follower can be caught up with it.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use raft_proto::eraftpb::{ConfState, Entry, HardState, Snapshot};

use crate::errors::{Error, Result, StorageError};
use crate::util::limit_size;

/// What a node restarts from: its durable hard state and membership.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaftState {
    /// The durable term, vote and commit index.
    pub hard_state: HardState,
    /// The membership as of the last applied configuration change or snapshot.
    pub conf_state: ConfState,
}

/// Read access to the durable raft log and state (§5.3, thesis §5 on compaction).
///
/// The raft core only reads through this trait; the application writes the
/// entries, hard state and snapshots a [`crate::Ready`] hands out.
pub trait Storage {
    /// The durable hard state and configuration to restart from.
    fn initial_state(&self) -> Result<RaftState>;

    /// Entries in `[low, high)`, their total size limited to `max_size` bytes
    /// (`None` for no limit; at least one entry is returned when any exists).
    ///
    /// # Errors
    /// [`StorageError::Compacted`] if `low` was compacted,
    /// [`StorageError::Unavailable`] if `high` is beyond `last_index() + 1`.
    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>>;

    /// The term of entry `idx`, which must be in `[first_index() - 1, last_index()]`.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] below that range, [`StorageError::Unavailable`]
    /// above it.
    fn term(&self, idx: u64) -> Result<u64>;

    /// The index of the first entry still held (older ones are in the snapshot).
    fn first_index(&self) -> Result<u64>;

    /// The index of the last entry held.
    fn last_index(&self) -> Result<u64>;

    /// A snapshot to send to peer `to`, covering at least `request_index`.
    ///
    /// Its configuration must hold `to`: a peer refuses a snapshot of a
    /// configuration it is not part of (it could not tell who its leader's
    /// voters are). A snapshot taken before `to` was added does not qualify;
    /// make a new one at the current applied index instead.
    ///
    /// # Errors
    /// [`StorageError::SnapshotTemporarilyUnavailable`] when no suitable snapshot is
    /// ready yet (e.g. one is being made); the leader retries later.
    fn snapshot(&self, request_index: u64, to: u64) -> Result<Snapshot>;
}

/// The state behind a [`MemStorage`].
#[derive(Debug, Default)]
struct MemStorageCore {
    hard_state: HardState,
    conf_state: ConfState,
    /// The last snapshot created or applied.
    snapshot: Snapshot,
    /// Index and term of the entry before the first held one (the "dummy").
    dummy: (u64, u64),
    /// Entries after `dummy.0`.
    entries: Vec<Entry>,
    /// Test switch: answer `snapshot()` with `SnapshotTemporarilyUnavailable`.
    snapshot_unavailable: bool,
    /// A leader asked for a snapshot the held one cannot serve; cleared when
    /// the application makes a new one.
    snapshot_requested: bool,
}

impl MemStorageCore {
    fn snap_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first_index(&self) -> u64 {
        self.dummy.0 + 1
    }

    fn last_index(&self) -> u64 {
        self.dummy.0 + self.entries.len() as u64
    }

    /// Whether the held snapshot may be sent to `to` for `request_index`: it is
    /// a real one (index 0 is only the bootstrap configuration) and its
    /// configuration holds `to`.
    fn snapshot_serves(&self, request_index: u64, to: u64) -> bool {
        let meta = self.snapshot.get_metadata();
        meta.index > 0 && meta.index >= request_index && conf_holds(meta.get_conf_state(), to)
    }

    fn term_of(&self, idx: u64) -> u64 {
        if idx == self.dummy.0 {
            self.dummy.1
        } else {
            self.entries[(idx - self.first_index()) as usize].term
        }
    }
}

/// Whether `id` is a member (voter or learner, in either half) of `cs`.
pub(crate) fn conf_holds(cs: &ConfState, id: u64) -> bool {
    cs.voters
        .iter()
        .chain(&cs.learners)
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners_next)
        .any(|&v| v == id)
}

/// An in-memory [`Storage`]. Clones share the same state, so a test can keep a
/// handle to write what a `Ready` hands out while the node reads through another.
///
/// Snapshots: `MemStorage` holds no state machine, so it cannot make a
/// snapshot by itself. When a leader asks for one that the held snapshot
/// cannot serve (none yet, or taken before the requesting peer was added), it
/// answers `SnapshotTemporarilyUnavailable` and raises
/// [`MemStorage::snapshot_requested`]; the application then makes one at its
/// applied index with [`MemStorage::create_snapshot`], as a real store's
/// snapshot worker would, and the leader's next attempt (on the follower's
/// next heartbeat response) sends it.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    core: Arc<RwLock<MemStorageCore>>,
}

impl MemStorage {
    /// An empty storage: no entries, no members. A node started on it waits to be
    /// told its configuration by a snapshot from a leader.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// A storage holding the initial configuration `cs` (e.g. `(vec![1, 2, 3],
    /// vec![]).into()`), as a freshly bootstrapped cluster has.
    pub fn new_with_conf_state(cs: ConfState) -> MemStorage {
        let s = MemStorage::new();
        s.wl().conf_state = cs.clone();
        s.wl().snapshot.mut_metadata().set_conf_state(cs);
        s
    }

    fn rl(&self) -> RwLockReadGuard<'_, MemStorageCore> {
        self.core.read().unwrap_or_else(|e| e.into_inner())
    }

    fn wl(&self) -> RwLockWriteGuard<'_, MemStorageCore> {
        self.core.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The durable hard state.
    pub fn hard_state(&self) -> HardState {
        self.rl().hard_state.clone()
    }

    /// Saves the hard state of a `Ready`.
    pub fn set_hardstate(&self, hs: HardState) {
        self.wl().hard_state = hs;
    }

    /// Records the configuration the application reached by applying a conf change.
    pub fn set_conf_state(&self, cs: ConfState) {
        self.wl().conf_state = cs;
    }

    /// The snapshot last created or applied (index 0 when there is none: a
    /// bootstrapped storage holds only its initial configuration there).
    pub fn last_snapshot(&self) -> Snapshot {
        self.rl().snapshot.clone()
    }

    /// Whether a leader asked for a snapshot the held one cannot serve. The
    /// application answers by making a new one with
    /// [`MemStorage::create_snapshot`] at its applied index, which clears the
    /// request.
    pub fn snapshot_requested(&self) -> bool {
        self.rl().snapshot_requested
    }

    /// Makes `snapshot()` fail with `SnapshotTemporarilyUnavailable` (for tests of
    /// a slow snapshot generator).
    pub fn set_snapshot_unavailable(&self, unavailable: bool) {
        self.wl().snapshot_unavailable = unavailable;
    }

    /// Appends `ents`, replacing any held entries from `ents[0].index` on.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] when the entries start before the held ones.
    ///
    /// # Panics
    /// When the entries would leave a gap after the last index.
    pub fn append(&self, ents: &[Entry]) -> Result<()> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        let mut core = self.wl();
        if first.index < core.first_index() {
            return Err(Error::Store(StorageError::Compacted));
        }
        assert!(
            first.index <= core.last_index() + 1,
            "storage: append at {} leaves a gap after last index {}",
            first.index,
            core.last_index()
        );
        let keep = (first.index - core.first_index()) as usize;
        core.entries.truncate(keep);
        core.entries.extend_from_slice(ents);
        Ok(())
    }

    /// Discards entries before `compact_index` (at most `last_index() + 1`); the
    /// term of `compact_index - 1` stays known. A snapshot covering
    /// `compact_index - 1` must have been created first, so that lagging followers
    /// can still catch up.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] when `compact_index` was already compacted.
    pub fn compact(&self, compact_index: u64) -> Result<()> {
        let mut core = self.wl();
        if compact_index <= core.first_index() {
            return Err(Error::Store(StorageError::Compacted));
        }
        assert!(
            compact_index <= core.last_index() + 1,
            "storage: compact {} beyond last index {}",
            compact_index,
            core.last_index()
        );
        assert!(
            compact_index - 1 <= core.snap_index(),
            "storage: compact {} not covered by snapshot {}",
            compact_index,
            core.snap_index()
        );
        let new_dummy = compact_index - 1;
        let term = core.term_of(new_dummy);
        let drop = (new_dummy - core.dummy.0) as usize;
        core.entries.drain(..drop);
        core.dummy = (new_dummy, term);
        Ok(())
    }

    /// Creates a snapshot of the state at `index` (applied by the application) with
    /// membership `cs` and state machine `data`, and keeps it as the snapshot to
    /// send to lagging followers. Does not compact.
    ///
    /// # Errors
    /// [`StorageError::SnapshotOutOfDate`] when a newer snapshot is held,
    /// [`StorageError::Compacted`] when `index` is no longer in the log.
    pub fn create_snapshot(&self, index: u64, cs: ConfState, data: Bytes) -> Result<Snapshot> {
        let mut core = self.wl();
        if index < core.snap_index() {
            return Err(Error::Store(StorageError::SnapshotOutOfDate));
        }
        if index < core.dummy.0 {
            return Err(Error::Store(StorageError::Compacted));
        }
        assert!(
            index <= core.last_index(),
            "storage: snapshot {} beyond last index {}",
            index,
            core.last_index()
        );
        let term = core.term_of(index);
        let meta = core.snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(cs);
        core.snapshot.data = data;
        // A leader that still needs another asks again on its next attempt.
        core.snapshot_requested = false;
        Ok(core.snapshot.clone())
    }

    /// Replaces the storage's content with `snapshot` (received from a leader).
    ///
    /// # Errors
    /// [`StorageError::SnapshotOutOfDate`] when it is older than the held one.
    pub fn apply_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let mut core = self.wl();
        let meta = snapshot.get_metadata();
        if meta.index < core.snap_index() {
            return Err(Error::Store(StorageError::SnapshotOutOfDate));
        }
        core.hard_state.commit = core.hard_state.commit.max(meta.index);
        core.hard_state.term = core.hard_state.term.max(meta.term);
        core.conf_state = meta.get_conf_state().clone();
        core.dummy = (meta.index, meta.term);
        core.entries.clear();
        core.snapshot = snapshot;
        core.snapshot_requested = false;
        Ok(())
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<RaftState> {
        let core = self.rl();
        Ok(RaftState {
            hard_state: core.hard_state.clone(),
            conf_state: core.conf_state.clone(),
        })
    }

    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        let core = self.rl();
        if low < core.first_index() {
            return Err(Error::Store(StorageError::Compacted));
        }
        if high > core.last_index() + 1 {
            return Err(Error::Store(StorageError::Unavailable));
        }
        let lo = (low - core.first_index()) as usize;
        let hi = (high - core.first_index()) as usize;
        let mut ents = core.entries[lo..hi].to_vec();
        if let Some(max) = max_size {
            limit_size(&mut ents, max);
        }
        Ok(ents)
    }

    fn term(&self, idx: u64) -> Result<u64> {
        let core = self.rl();
        if idx < core.dummy.0 {
            return Err(Error::Store(StorageError::Compacted));
        }
        if idx > core.last_index() {
            return Err(Error::Store(StorageError::Unavailable));
        }
        Ok(core.term_of(idx))
    }

    fn first_index(&self) -> Result<u64> {
        Ok(self.rl().first_index())
    }

    fn last_index(&self) -> Result<u64> {
        Ok(self.rl().last_index())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> Result<Snapshot> {
        let unavailable = Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        if self.rl().snapshot_unavailable {
            return unavailable;
        }
        {
            let core = self.rl();
            if core.snapshot_serves(request_index, to) {
                return Ok(core.snapshot.clone());
            }
        }
        // The held snapshot predates `to` (or there is none): ask the
        // application for a new one at its applied state.
        self.wl().snapshot_requested = true;
        unavailable
    }
}
