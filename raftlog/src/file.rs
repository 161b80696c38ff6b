//! [`FileEngine`]: a log-structured raft-log engine over append-only files.
//!
//! # Files
//! The engine's directory holds segments named `{seq:016}.raftlog`, `seq` counting up from 1.
//! The newest segment is the active one and the only one written; older ones are sealed
//! (truncated to their data) and only read, then deleted oldest first once nothing live remains
//! in them. A `*.raftlog.tmp` file is a segment being zero-filled ahead of use; `open` removes
//! any left over.
//!
//! # Records
//! Each [`LogBatch`] is one record, so a crash keeps a batch whole or drops it whole:
//!
//! ```text
//! magic u32 | payload length u32 | crc32 of payload u32 | segment seq u64 | payload
//! ```
//!
//! All integers are little-endian. The payload is the batch's ops in order, each a tag byte then
//! its fields:
//!
//! ```text
//! 1 Append         region u64, index u64, length u32, entry bytes
//! 2 PutState       region u64, length u32, state bytes
//! 3 DeleteState    region u64
//! 4 DeleteEntries  region u64, from u64, to u64
//! ```
//!
//! # Memory
//! Per region: the raft state's bytes, and per live entry where its bytes lie (segment, offset,
//! length) and their CRC32, checked when the entry is read back. Per segment: its live items.
//!
//! # Recovery
//! `open` replays the segments in order. In the newest one the first invalid record ends the
//! data: it is a write torn by a crash, and what follows is cut off (truncated, or zeroed in a
//! preallocated segment). An invalid record in an older segment is [`Error::Corrupt`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crate::record::{decode, encode, read_record, seal, Op, HEADER};
use crate::{Error, LogBatch, LogOp, RaftEngine, Result};

/// Bytes written or read at a time when zero-filling or checking a segment's tail.
const CHUNK: usize = 1 << 20;

/// Settings of a [`FileEngine`].
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// Size at which the active segment is sealed and the next one started (default 64 MiB).
    pub target_file_size: u64,
    /// Whether a new segment is zero-filled to `target_file_size` before it takes records, so
    /// that syncing a write flushes data blocks only (default `false`).
    pub preallocate: bool,
}

impl Default for FileConfig {
    fn default() -> FileConfig {
        FileConfig {
            target_file_size: 64 << 20,
            preallocate: false,
        }
    }
}

/// Where a live entry's bytes lie.
#[derive(Debug, Clone, Copy)]
struct Loc {
    seq: u64,
    offset: u64,
    len: u32,
    crc: u32,
}

#[derive(Default)]
struct Region {
    /// The raft state and the segment its record is in.
    state: Option<(u64, Vec<u8>)>,
    entries: BTreeMap<u64, Loc>,
}

struct Segment {
    file: Arc<File>,
    /// Live entries and states whose record is in this segment, and their bytes.
    live: u64,
    live_bytes: u64,
    /// Bytes of records in the segment.
    size: u64,
}

impl Segment {
    fn new(file: Arc<File>) -> Segment {
        let (live, live_bytes, size) = (0, 0, 0);
        Segment {
            file,
            live,
            live_bytes,
            size,
        }
    }
}

#[derive(Default)]
struct Index {
    regions: HashMap<u64, Region>,
    segments: BTreeMap<u64, Segment>,
}

fn count(segments: &mut BTreeMap<u64, Segment>, seq: u64, bytes: usize, add: bool) {
    if let Some(s) = segments.get_mut(&seq) {
        if add {
            s.live += 1;
            s.live_bytes += bytes as u64;
        } else {
            s.live = s.live.saturating_sub(1);
            s.live_bytes = s.live_bytes.saturating_sub(bytes as u64);
        }
    }
}

impl Index {
    /// Applies a record's ops; `base` is the payload's offset in segment `seq`.
    fn apply(&mut self, seq: u64, base: u64, payload: &[u8], ops: &[Op]) {
        let segs = &mut self.segments;
        for op in ops {
            let region = match op {
                Op::Append(region, index, at) => {
                    let (offset, len) = (base + at.start as u64, at.len() as u32);
                    let crc = crc32fast::hash(&payload[at.clone()]);
                    count(segs, seq, at.len(), true);
                    let r = self.regions.entry(*region).or_default();
                    let loc = Loc {
                        seq,
                        offset,
                        len,
                        crc,
                    };
                    if let Some(old) = r.entries.insert(*index, loc) {
                        count(segs, old.seq, old.len as usize, false);
                    }
                    region
                }
                Op::PutState(region, at) => {
                    count(segs, seq, at.len(), true);
                    let r = self.regions.entry(*region).or_default();
                    if let Some((s, old)) = r.state.replace((seq, payload[at.clone()].to_vec())) {
                        count(segs, s, old.len(), false);
                    }
                    region
                }
                Op::DeleteState(region) => {
                    let r = self.regions.get_mut(region);
                    if let Some((s, old)) = r.and_then(|r| r.state.take()) {
                        count(segs, s, old.len(), false);
                    }
                    region
                }
                Op::DeleteEntries(region, from, to) => {
                    if let Some(r) = self.regions.get_mut(region) {
                        let mut gone = r.entries.split_off(from);
                        let mut kept = gone.split_off(to);
                        r.entries.append(&mut kept);
                        for loc in gone.values() {
                            count(segs, loc.seq, loc.len as usize, false);
                        }
                    }
                    region
                }
            };
            if let Some(r) = self.regions.get(region) {
                if r.state.is_none() && r.entries.is_empty() {
                    self.regions.remove(region);
                }
            }
        }
    }
}

/// Segment `seq`'s path, or with `tmp` the path it is zero-filled under.
fn seg_path(dir: &Path, seq: u64, tmp: bool) -> PathBuf {
    let ext = if tmp { "raftlog.tmp" } else { "raftlog" };
    dir.join(format!("{seq:016}.{ext}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_write() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    o
}

/// With `fill`, writes zeros over `[from, to)` of `file`; else tells whether all of it is zero.
fn zeros(file: &File, mut from: u64, to: u64, fill: bool) -> io::Result<bool> {
    let mut buf = vec![0u8; CHUNK];
    while from < to {
        let n = (to - from).min(CHUNK as u64) as usize;
        if fill {
            file.write_all_at(&buf[..n], from)?;
        } else {
            file.read_exact_at(&mut buf[..n], from)?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
        from += n as u64;
    }
    Ok(true)
}

/// Creates segment `seq` zero-filled and synced, under its temporary name.
fn prepare(dir: &Path, seq: u64, size: u64) -> io::Result<File> {
    let path = seg_path(dir, seq, true);
    let file = read_write().create(true).truncate(true).open(path)?;
    zeros(&file, 0, size, true)?;
    file.sync_all()?;
    Ok(file)
}

/// A segment being zero-filled in the background, and its seq.
type Pending = Option<(u64, JoinHandle<io::Result<File>>)>;

/// Creates segment `seq` (taking `pending` when it is that one), its name made durable.
fn new_segment(dir: &Path, cfg: &FileConfig, seq: u64, pending: Pending) -> Result<File> {
    let path = seg_path(dir, seq, false);
    let file = if cfg.preallocate {
        let ready = pending
            .filter(|p| p.0 == seq)
            .and_then(|p| p.1.join().ok()?.ok());
        let file = match ready {
            Some(f) => f,
            None => prepare(dir, seq, cfg.target_file_size)?,
        };
        fs::rename(seg_path(dir, seq, true), &path)?;
        file
    } else {
        read_write().create_new(true).open(&path)?
    };
    sync_dir(dir)?;
    Ok(file)
}

/// Replays segment `seq` into `index`; returns where its data ends. In the `last` segment an
/// invalid record is a torn write: what follows is cut off.
fn replay(index: &mut Index, file: &File, seq: u64, last: bool, cfg: &FileConfig) -> Result<u64> {
    let len = file.metadata()?.len();
    let mut off = 0;
    loop {
        let why = match read_record(file, seq, off, len)? {
            Ok(None) => return Ok(off),
            Ok(Some(payload)) => match decode(&payload) {
                Ok(ops) => {
                    index.apply(seq, off + HEADER as u64, &payload, &ops);
                    off += (HEADER + payload.len()) as u64;
                    continue;
                }
                Err(why) => return Err(corrupt(seq, off, why)),
            },
            Err(why) => why,
        };
        if !last {
            return Err(corrupt(seq, off, why));
        }
        let zero = zeros(file, off, len, false)?;
        if !zero {
            tracing::warn!(seq, off, why, "raft log: dropping a torn write");
        }
        if !cfg.preallocate {
            file.set_len(off)?;
            file.sync_all()?;
        } else if !zero {
            zeros(file, off, len, true)?;
            file.sync_data()?;
        }
        return Ok(off);
    }
}

fn corrupt(seq: u64, off: u64, why: impl fmt::Display) -> Error {
    Error::Corrupt(format!("segment {seq:016}.raftlog at offset {off}: {why}"))
}

fn read_loc(file: &File, loc: &Loc) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; loc.len as usize];
    file.read_exact_at(&mut buf, loc.offset)?;
    match crc32fast::hash(&buf) == loc.crc {
        true => Ok(buf),
        false => Err(corrupt(loc.seq, loc.offset, "entry checksum mismatch")),
    }
}

struct Writer {
    seq: u64,
    file: Arc<File>,
    /// Where the next record goes.
    offset: u64,
    /// An earlier write failed: no more writes.
    failed: bool,
    next: Pending,
}

/// A log-structured [`RaftEngine`]: every batch is appended to the active segment file, an
/// in-memory index says where each live entry lies, and old segments are deleted (after their
/// few live items are copied forward) once the data in them is compacted or overwritten.
pub struct FileEngine {
    /// Held while the engine is open: one engine per directory (another process, or an engine of
    /// this one not yet dropped, would append to the same segments).
    _dir_lock: File,
    dir: PathBuf,
    cfg: FileConfig,
    /// Taken first by every write, compaction and flush; the index changes only under it.
    writer: Mutex<Writer>,
    index: Mutex<Index>,
}

/// Takes the exclusive lock of `dir` (`dir/LOCK`), or fails at once if another engine holds it.
fn lock_dir(dir: &Path) -> Result<File> {
    use std::os::unix::io::AsRawFd;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(Error::Io(io::Error::new(
            e.kind(),
            format!(
                "{} is in use by another raft log engine: {e}",
                dir.display()
            ),
        )));
    }
    Ok(file)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for FileEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileEngine({}, {:?})", self.dir.display(), self.cfg)
    }
}

impl FileEngine {
    /// Opens (creating it if missing) the engine in `dir` with the default [`FileConfig`].
    ///
    /// # Errors
    /// An io failure, or [`Error::Corrupt`] when a sealed segment holds an invalid record.
    pub fn open(dir: &Path) -> Result<FileEngine> {
        FileEngine::open_with(dir, FileConfig::default())
    }

    /// Opens (creating it if missing) the engine in `dir`, replaying its segments.
    ///
    /// # Errors
    /// An io failure, or [`Error::Corrupt`] when a sealed segment holds an invalid record.
    pub fn open_with(dir: &Path, cfg: FileConfig) -> Result<FileEngine> {
        fs::create_dir_all(dir)?;
        let dir_lock = lock_dir(dir)?;
        let mut seqs = Vec::new();
        for ent in fs::read_dir(dir)? {
            let name = ent?.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".raftlog.tmp") {
                fs::remove_file(dir.join(&*name))?;
            } else if let Some(stem) = name.strip_suffix(".raftlog") {
                if let (16, Ok(seq)) = (stem.len(), stem.parse::<u64>()) {
                    seqs.push(seq);
                }
            }
        }
        seqs.sort_unstable();
        if let Some(w) = seqs.windows(2).find(|w| w[1] != w[0] + 1) {
            return Err(corrupt(w[0] + 1, 0, "segment missing"));
        }
        let mut index = Index::default();
        let mut offset = 0;
        for (i, &seq) in seqs.iter().enumerate() {
            let file = Arc::new(read_write().open(seg_path(dir, seq, false))?);
            index.segments.insert(seq, Segment::new(file.clone()));
            offset = replay(&mut index, &file, seq, i + 1 == seqs.len(), &cfg)?;
            if let Some(s) = index.segments.get_mut(&seq) {
                s.size = offset;
            }
        }
        let seq = seqs.last().copied().unwrap_or(1);
        if seqs.is_empty() {
            let file = Arc::new(new_segment(dir, &cfg, seq, None)?);
            index.segments.insert(seq, Segment::new(file));
        }
        let file = index.segments[&seq].file.clone();
        let (failed, next) = (false, None);
        let writer = Writer {
            seq,
            file,
            offset,
            failed,
            next,
        };
        let engine = FileEngine {
            _dir_lock: dir_lock,
            dir: dir.to_path_buf(),
            cfg,
            writer: Mutex::new(writer),
            index: Mutex::new(index),
        };
        engine.prepare_next(&mut lock(&engine.writer));
        Ok(engine)
    }

    /// Starts zero-filling the segment after the active one in the background.
    fn prepare_next(&self, w: &mut Writer) {
        if !self.cfg.preallocate || w.next.is_some() {
            return;
        }
        let (dir, seq, size) = (self.dir.clone(), w.seq + 1, self.cfg.target_file_size);
        let thread = std::thread::Builder::new().name("raftlog-prealloc".into());
        w.next = thread
            .spawn(move || prepare(&dir, seq, size))
            .ok()
            .map(|h| (seq, h));
    }

    /// Runs `f` on the writer; a failure stops all later writes.
    fn with_writer(&self, f: impl FnOnce(&mut Writer) -> Result<()>) -> Result<()> {
        let mut w = lock(&self.writer);
        if w.failed {
            return Err(Error::Other("an earlier raft log write failed".into()));
        }
        let res = f(&mut w);
        w.failed = res.is_err();
        res
    }

    /// Appends `ops` as one record to the active segment, then applies them to the index. With
    /// `rotate`, first starts a new segment if the record does not belong in the active one.
    fn append(&self, w: &mut Writer, ops: &[LogOp], sync: bool, rotate: bool) -> Result<()> {
        let (mut rec, decoded) = encode(ops)?;
        let target = self.cfg.target_file_size;
        let full =
            w.offset >= target || self.cfg.preallocate && w.offset + rec.len() as u64 > target;
        if rotate && w.offset > 0 && full {
            self.rotate(w)?;
            self.purge(w)?;
        }
        seal(&mut rec, w.seq);
        w.file.write_all_at(&rec, w.offset)?;
        if sync {
            w.file.sync_data()?;
        }
        let mut index = lock(&self.index);
        index.apply(w.seq, w.offset + HEADER as u64, &rec[HEADER..], &decoded);
        w.offset += rec.len() as u64;
        if let Some(s) = index.segments.get_mut(&w.seq) {
            s.size = w.offset;
        }
        Ok(())
    }

    /// Seals the active segment (synced, truncated to its data) and starts the next one.
    fn rotate(&self, w: &mut Writer) -> Result<()> {
        w.file.sync_data()?;
        if w.file.metadata()?.len() != w.offset {
            w.file.set_len(w.offset)?;
            w.file.sync_all()?;
        }
        let seq = w.seq + 1;
        let file = Arc::new(new_segment(&self.dir, &self.cfg, seq, w.next.take())?);
        lock(&self.index)
            .segments
            .insert(seq, Segment::new(file.clone()));
        (w.seq, w.file, w.offset) = (seq, file, 0);
        self.prepare_next(w);
        Ok(())
    }

    /// Deletes the oldest sealed segments while nothing live is in them, first copying the live
    /// items of one that holds little into the active segment. Every write must be synced.
    fn purge(&self, w: &mut Writer) -> Result<()> {
        let mut rewritten = None;
        loop {
            let (seq, live, live_bytes, size) = match lock(&self.index).segments.iter().next() {
                Some((&seq, s)) => (seq, s.live, s.live_bytes, s.size),
                None => return Ok(()),
            };
            if seq == w.seq {
                return Ok(());
            }
            if live == 0 {
                fs::remove_file(seg_path(&self.dir, seq, false))?;
                sync_dir(&self.dir)?;
                lock(&self.index).segments.remove(&seq);
                continue;
            }
            let small = live_bytes.saturating_mul(4) < size;
            if !small || rewritten == Some(seq) || w.offset >= self.cfg.target_file_size {
                return Ok(());
            }
            self.rewrite(w, seq)?;
            rewritten = Some(seq);
        }
    }

    /// Writes the live states and entries of segment `seq` again, into the active segment.
    fn rewrite(&self, w: &mut Writer, seq: u64) -> Result<()> {
        let (mut ops, mut locs) = (Vec::new(), Vec::new());
        let file = {
            let index = lock(&self.index);
            for (&region_id, r) in &index.regions {
                if let Some((_, state)) = r.state.as_ref().filter(|s| s.0 == seq) {
                    let state = state.clone();
                    ops.push(LogOp::PutState { region_id, state });
                }
                let here = r.entries.iter().filter(|e| e.1.seq == seq);
                locs.extend(here.map(|(&i, &loc)| (region_id, i, loc)));
            }
            match index.segments.get(&seq) {
                Some(s) => s.file.clone(),
                None => return Ok(()),
            }
        };
        for (region_id, index, loc) in locs {
            let entry = read_loc(&file, &loc)?;
            ops.push(LogOp::Append {
                region_id,
                index,
                entry,
            });
        }
        self.append(w, &ops, true, false)
    }
}

impl RaftEngine for FileEngine {
    fn write(&self, batch: &LogBatch, sync: bool) -> Result<()> {
        match (batch.is_empty(), sync) {
            (true, false) => Ok(()),
            (true, true) => self.with_writer(|w| Ok(w.file.sync_data()?)),
            (false, _) => self.with_writer(|w| self.append(w, batch.ops(), sync, true)),
        }
    }

    fn raft_state(&self, region_id: u64) -> Result<Option<Vec<u8>>> {
        let index = lock(&self.index);
        let state = index.regions.get(&region_id).and_then(|r| r.state.as_ref());
        Ok(state.map(|s| s.1.clone()))
    }

    fn entry(&self, region_id: u64, index: u64) -> Result<Option<Vec<u8>>> {
        let (loc, file) = {
            let idx = lock(&self.index);
            let region = idx.regions.get(&region_id);
            let Some(&loc) = region.and_then(|r| r.entries.get(&index)) else {
                return Ok(None);
            };
            match idx.segments.get(&loc.seq) {
                Some(s) => (loc, s.file.clone()),
                None => return Err(corrupt(loc.seq, loc.offset, "segment gone")),
            }
        };
        read_loc(&file, &loc).map(Some)
    }

    fn compact(&self, region_id: u64, to: u64) -> Result<()> {
        self.with_writer(|w| {
            let index = lock(&self.index);
            let first = index
                .regions
                .get(&region_id)
                .and_then(|r| r.entries.keys().next());
            if first.is_none_or(|&f| f >= to) {
                return Ok(());
            }
            drop(index);
            let op = LogOp::DeleteEntries {
                region_id,
                from: 0,
                to,
            };
            self.append(w, &[op], false, true)
        })
    }

    fn flush(&self) -> Result<()> {
        self.with_writer(|w| {
            w.file.sync_data()?;
            self.purge(w)
        })
    }
}

impl Drop for FileEngine {
    fn drop(&mut self) {
        let w = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, h)) = w.next.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
