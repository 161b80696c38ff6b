//! [`SnapManager`]: owns the snapshot directory, the registry of snapshots in use with checked
//! state transitions, size accounting, concurrency limits and garbage collection.
//!
//! ```text
//!            begin(Generating)          begin(Sending) ×n (one per peer)
//!   idle ───────────────────> Generating ──end──> idle ─────────────> Sending ──last end──> idle
//!   idle ──begin(Receiving)─> Receiving ──end──> idle ──begin(Applying)─> Applying ──end──> idle
//! ```
//! Only idle snapshots may be deleted, so GC never pulls files from under a send or an apply.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use kv::{Cf, EngineSnapshot};
use proto::metapb::Region;
use proto::raft_serverpb::SnapshotMeta;
use rocksdb::DB;

use crate::error::{io_err, Error, Result};
use crate::key::{SnapKey, SnapKind, SnapState};
use crate::meta::{
    cf_path, ingest_path, meta_path, meta_total_size, read_meta, remove_if_exists, sync_dir,
    tmp_path, verify,
};
use crate::name::parse_file_name;
use crate::sst::{apply_files, build_files, ApplyStats, BuiltSnapshot};

/// Limits of a [`SnapManager`].
#[derive(Clone, Debug)]
pub struct SnapConfig {
    /// Concurrent outgoing transfers; more is [`Error::Busy`].
    pub max_concurrent_sends: usize,
    /// Concurrent incoming transfers; more is [`Error::Busy`].
    pub max_concurrent_recvs: usize,
    /// Largest snapshot a store receives, in bytes; larger is [`Error::TooLarge`].
    pub max_snapshot_size: u64,
    /// Free space an incoming snapshot must leave on the disk, in bytes: one that would eat
    /// into it is [`Error::TooLarge`] (the store's disk reserve).
    pub keep_free: u64,
}

impl Default for SnapConfig {
    fn default() -> Self {
        SnapConfig {
            max_concurrent_sends: 4,
            max_concurrent_recvs: 4,
            max_snapshot_size: 4 << 30,
            keep_free: 0,
        }
    }
}

type Id = (SnapKind, SnapKey);

#[derive(Default)]
struct Registry {
    /// Snapshots in use, with how many guards hold them (only `Sending` may have more than one).
    in_use: HashMap<Id, (SnapState, usize)>,
    /// Size of every complete snapshot on disk.
    sizes: HashMap<Id, u64>,
    sends: usize,
    recvs: usize,
}

pub(crate) struct Inner {
    dir: PathBuf,
    config: SnapConfig,
    registry: Mutex<Registry>,
}

/// Owns a directory of snapshots. Cheap to clone; clones share the registry.
#[derive(Clone)]
pub struct SnapManager {
    inner: Arc<Inner>,
}

/// A registration of one snapshot in one state; dropping it ends the state (for `Sending`, when
/// the last guard goes). Hold it for as long as the operation runs, on any thread.
pub struct SnapGuard {
    inner: Arc<Inner>,
    kind: SnapKind,
    key: SnapKey,
    state: SnapState,
}

impl SnapGuard {
    /// The snapshot.
    pub fn key(&self) -> SnapKey {
        self.key
    }

    /// Generated or received.
    pub fn kind(&self) -> SnapKind {
        self.kind
    }

    /// The state this guard holds.
    pub fn state(&self) -> SnapState {
        self.state
    }

    /// The directory of the manager this guard belongs to.
    pub(crate) fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Records that the snapshot is now complete on disk with `size` bytes.
    pub(crate) fn set_complete(&self, size: u64) {
        self.inner.lock().sizes.insert((self.kind, self.key), size);
    }

    /// Forgets the snapshot's size after its files were removed.
    pub(crate) fn clear_complete(&self) {
        self.inner.lock().sizes.remove(&(self.kind, self.key));
    }
}

impl Drop for SnapGuard {
    fn drop(&mut self) {
        let mut reg = self.inner.lock();
        let id = (self.kind, self.key);
        match self.state {
            SnapState::Sending => reg.sends -= 1,
            SnapState::Receiving => reg.recvs -= 1,
            _ => {}
        }
        if let Some((_, refs)) = reg.in_use.get_mut(&id) {
            *refs -= 1;
            if *refs == 0 {
                reg.in_use.remove(&id);
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes every file `id` may have (complete, temporary, ingest links). The meta goes first
    /// so a crash midway leaves an orphan start-up recognises, never a meta without its files.
    fn remove_files(&self, id: Id) -> Result<()> {
        let (kind, key) = id;
        let mut paths = vec![meta_path(&self.dir, kind, key)];
        paths.push(tmp_path(&paths[0]));
        for cf in Cf::ALL {
            let p = cf_path(&self.dir, kind, key, cf);
            paths.push(tmp_path(&p));
            paths.push(ingest_path(&p));
            paths.push(p);
        }
        for p in paths {
            remove_if_exists(&p)?;
        }
        Ok(())
    }
}

impl SnapManager {
    /// Whether an incoming snapshot of `size` bytes may be received: within
    /// `max_snapshot_size`, and leaving `keep_free` bytes free on the disk.
    pub(crate) fn check_room(&self, key: SnapKey, size: u64) -> Result<()> {
        let config = &self.inner.config;
        if size > config.max_snapshot_size {
            return Err(Error::TooLarge {
                key,
                size,
                reason: format!("over max_snapshot_size ({})", config.max_snapshot_size),
            });
        }
        let available = kv::disk::available_space(&self.inner.dir)
            .map_err(io_err("statvfs", &self.inner.dir))?;
        if size.saturating_add(config.keep_free) > available {
            return Err(Error::TooLarge {
                key,
                size,
                reason: format!(
                    "{available} bytes free, and {} must stay free",
                    config.keep_free
                ),
            });
        }
        Ok(())
    }

    /// Opens (creating if needed) the snapshot directory `dir` and removes what a crash left
    /// behind: `.tmp` and `.ingest` files, and CF files of snapshots without a complete meta.
    /// Complete snapshots are kept: a peer that crashed while applying one needs it again.
    pub fn open(dir: impl Into<PathBuf>, config: SnapConfig) -> Result<SnapManager> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let mgr = SnapManager {
            inner: Arc::new(Inner {
                dir,
                config,
                registry: Mutex::new(Registry::default()),
            }),
        };
        let mut removed = 0;
        for id in mgr.list_ids()? {
            match mgr.complete_size(id) {
                Some(size) => {
                    mgr.inner.lock().sizes.insert(id, size);
                }
                None => {
                    mgr.inner.remove_files(id)?;
                    removed += 1;
                }
            }
        }
        // Remove the transient files of complete snapshots too (an interrupted apply's link).
        for entry in fs::read_dir(&mgr.inner.dir).map_err(io_err("list", &mgr.inner.dir))? {
            let entry = entry.map_err(io_err("list", &mgr.inner.dir))?;
            let name = entry.file_name();
            if let Some(p) = name.to_str().and_then(parse_file_name) {
                if p.transient {
                    fs::remove_file(entry.path()).map_err(io_err("remove", entry.path()))?;
                    removed += 1;
                }
            }
        }
        sync_dir(&mgr.inner.dir)?;
        tracing::info!(dir = %mgr.inner.dir.display(), removed, "snapshot manager opened");
        Ok(mgr)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Every snapshot with at least one file in the directory, complete or not.
    fn list_ids(&self) -> Result<Vec<Id>> {
        let dir = &self.inner.dir;
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let entry = entry.map_err(io_err("list", dir))?;
            if let Some(p) = entry.file_name().to_str().and_then(parse_file_name) {
                ids.push((p.kind, p.key));
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The size of `id` if its meta is readable and every file it lists has the listed size
    /// (no checksum: that is for verify, which reads everything).
    fn complete_size(&self, (kind, key): Id) -> Option<u64> {
        let meta = read_meta(&self.inner.dir, kind, key).ok()?;
        for f in &meta.cf_files {
            if f.size == 0 {
                continue;
            }
            let cf = Cf::from_name(&f.cf).ok()?;
            let len = fs::metadata(cf_path(&self.inner.dir, kind, key, cf))
                .ok()?
                .len();
            if len != f.size {
                return None;
            }
        }
        Some(meta_total_size(&meta))
    }

    /// Registers `key` in `state`, checking the transition from its current state and the
    /// concurrency limits. The registration lasts until the guard is dropped.
    pub fn begin(&self, kind: SnapKind, key: SnapKey, state: SnapState) -> Result<SnapGuard> {
        let mut reg = self.inner.lock();
        let id = (kind, key);
        let current = reg.in_use.get(&id).map(|(s, _)| *s);
        let kind_ok = match state {
            SnapState::Generating | SnapState::Sending => kind == SnapKind::Generated,
            SnapState::Receiving | SnapState::Applying => kind == SnapKind::Received,
        };
        let from_ok = match (current, state) {
            (None, _) => true,
            // Several peers may fetch the same generated snapshot at once.
            (Some(SnapState::Sending), SnapState::Sending) => true,
            _ => false,
        };
        // Sending and applying read files that must already be complete.
        let needs_files = matches!(state, SnapState::Sending | SnapState::Applying);
        if !kind_ok || !from_ok || (needs_files && !reg.sizes.contains_key(&id)) {
            return Err(Error::InvalidTransition {
                key,
                kind,
                from: current,
                to: Some(state),
            });
        }
        let limit = match state {
            SnapState::Sending => Some(("send", reg.sends, self.inner.config.max_concurrent_sends)),
            SnapState::Receiving => {
                Some(("receive", reg.recvs, self.inner.config.max_concurrent_recvs))
            }
            _ => None,
        };
        if let Some((what, n, limit)) = limit {
            if n >= limit {
                return Err(Error::Busy { what, limit });
            }
        }
        match state {
            SnapState::Sending => reg.sends += 1,
            SnapState::Receiving => reg.recvs += 1,
            _ => {}
        }
        reg.in_use.entry(id).or_insert((state, 0)).1 += 1;
        Ok(SnapGuard {
            inner: self.inner.clone(),
            kind,
            key,
            state,
        })
    }

    /// The state `key` is registered in, `None` when idle.
    pub fn state(&self, kind: SnapKind, key: SnapKey) -> Option<SnapState> {
        self.inner.lock().in_use.get(&(kind, key)).map(|(s, _)| *s)
    }

    /// Whether a complete snapshot `key` of `kind` is on disk.
    pub fn exists(&self, kind: SnapKind, key: SnapKey) -> bool {
        self.inner.lock().sizes.contains_key(&(kind, key))
    }

    /// Total size of the complete snapshots on disk.
    pub fn total_size(&self) -> u64 {
        self.inner.lock().sizes.values().sum()
    }

    /// Number of complete snapshots on disk.
    pub fn snapshot_count(&self) -> usize {
        self.inner.lock().sizes.len()
    }

    /// Reads `key`'s meta from disk; [`Error::NotFound`] when it is not complete.
    pub fn meta(&self, kind: SnapKind, key: SnapKey) -> Result<SnapshotMeta> {
        read_meta(&self.inner.dir, kind, key)
    }

    /// Builds generated snapshot `key` of `region` from `snap` (a kv-engine snapshot taken at
    /// the snapshot's applied index). Replaces an idle snapshot with the same key.
    pub fn build(
        &self,
        key: SnapKey,
        snap: &EngineSnapshot,
        region: &Region,
    ) -> Result<BuiltSnapshot> {
        let guard = self.begin(SnapKind::Generated, key, SnapState::Generating)?;
        // Start from nothing: a failed rebuild must not leave the old meta over new files.
        guard.clear_complete();
        self.inner.remove_files((SnapKind::Generated, key))?;
        let built = build_files(&self.inner.dir, SnapKind::Generated, key, snap, region)?;
        guard.set_complete(built.size);
        Ok(built)
    }

    /// Checks every file of `key` against `meta` (presence, size, md5).
    pub fn verify(&self, kind: SnapKind, key: SnapKey, meta: &SnapshotMeta) -> Result<()> {
        verify(&self.inner.dir, kind, key, meta)
    }

    /// Verifies received snapshot `key` against its meta, then replaces `region`'s data in the
    /// kv engine `db` with it. The caller persists `RegionLocalState` (`Applying` before,
    /// `Normal` after) and `RaftApplyState`; calling this again after a crash redoes the apply.
    pub fn apply(&self, key: SnapKey, db: &Arc<DB>, region: &Region) -> Result<ApplyStats> {
        let _guard = self.begin(SnapKind::Received, key, SnapState::Applying)?;
        let meta = read_meta(&self.inner.dir, SnapKind::Received, key)?;
        apply_files(&self.inner.dir, SnapKind::Received, key, &meta, db, region)
    }

    /// Deletes snapshot `key` of `kind` if it is idle; [`Error::InUse`] otherwise. Returns whether
    /// a complete snapshot was there.
    pub fn delete(&self, kind: SnapKind, key: SnapKey) -> Result<bool> {
        let mut reg = self.inner.lock();
        let id = (kind, key);
        if let Some((state, _)) = reg.in_use.get(&id) {
            return Err(Error::InUse {
                key,
                kind,
                state: *state,
            });
        }
        let existed = reg.sizes.remove(&id).is_some();
        // Held across the removal so no operation can start on half-deleted files.
        self.inner.remove_files(id)?;
        sync_dir(&self.inner.dir)?;
        Ok(existed)
    }

    /// Deletes every idle snapshot for which `is_stale(kind, key)` holds (e.g. its index is
    /// below the region's applied index, or the region is gone), and every idle incomplete one.
    /// Snapshots in use are skipped. Returns what was deleted.
    pub fn gc(
        &self,
        mut is_stale: impl FnMut(SnapKind, SnapKey) -> bool,
    ) -> Result<Vec<(SnapKind, SnapKey)>> {
        let mut deleted = Vec::new();
        // The predicate runs outside the lock, so it may call back into the manager.
        let ids: Vec<(Id, bool)> = self
            .list_ids()?
            .into_iter()
            .map(|id| (id, is_stale(id.0, id.1)))
            .collect();
        for (id, stale) in ids {
            let mut reg = self.inner.lock();
            if reg.in_use.contains_key(&id) {
                continue;
            }
            // Re-checked under the lock: the listing may predate a build that completed since.
            let complete = self.complete_size(id).is_some();
            if complete && !stale {
                continue;
            }
            reg.sizes.remove(&id);
            self.inner.remove_files(id)?;
            deleted.push(id);
        }
        if !deleted.is_empty() {
            sync_dir(&self.inner.dir)?;
            tracing::info!(count = deleted.len(), "snapshot gc");
        }
        Ok(deleted)
    }

    /// Removes every file of received snapshot `key`; the caller holds its registration.
    pub(crate) fn remove_received_files(&self, key: SnapKey) -> Result<()> {
        self.inner.remove_files((SnapKind::Received, key))
    }
}
