//! Chunked transfer of a snapshot between stores.
//!
//! Framing: the stream is the concatenation of the snapshot's non-empty CF files in meta order;
//! file boundaries follow from the sizes in the meta, which travels in the first message (inside
//! the `RaftMessage`'s `RaftSnapshotData`). With `SnapshotChunk`, the first chunk carries the
//! message and no data, every later chunk carries data only:
//!
//! ```text
//! chunk 0: { message: RaftMessage{.. snapshot{data: RaftSnapshotData{meta}}}, data: [] }
//! chunk 1: { data: default.sst[0..n] }   chunk 2: { data: default.sst[n..] } ... write.sst ...
//! ```
//! The receiver checks each file's md5 as soon as its last byte arrives, so corruption is caught
//! early, and only writes the meta (the commit point) once everything matched.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::PathBuf;

use prost::Message as _;
use proto::protobuf::Message as _;
use proto::raft_serverpb::{RaftMessage, RaftSnapshotData, SnapshotChunk, SnapshotMeta};

use crate::error::{io_err, Error, Result};
use crate::key::{SnapKey, SnapKind, SnapState};
use crate::manager::{SnapGuard, SnapManager};
use crate::meta::{
    cf_path, hex, meta_total_size, sync_and_rename, sync_dir, tmp_path, validate, write_meta,
    CfEntry,
};

/// Default chunk size: large enough to amortise per-message overhead, small enough to stay well
/// under gRPC's message limit.
pub const DEFAULT_CHUNK_SIZE: usize = 1 << 20;

/// Reads a generated snapshot as a sequence of chunks of at most `chunk_size` bytes. Holds the
/// snapshot in `Sending` state (so GC keeps it) until dropped. Each file's size and md5 are
/// re-checked as it is read, so a locally damaged file is reported here rather than by the peer.
pub struct ChunkReader {
    guard: SnapGuard,
    meta: SnapshotMeta,
    entries: Vec<CfEntry>,
    next_entry: usize,
    current: Option<(File, u64, md5::Context)>,
    chunk_size: usize,
    failed: bool,
}

impl ChunkReader {
    /// The snapshot being read.
    pub fn key(&self) -> SnapKey {
        self.guard.key()
    }

    /// The meta the receiver needs to verify the stream.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Total number of data bytes the stream carries.
    pub fn total_size(&self) -> u64 {
        meta_total_size(&self.meta)
    }

    /// The stream as `SnapshotChunk`s: `msg` first, then the data.
    pub fn into_snapshot_chunks(
        self,
        msg: RaftMessage,
    ) -> impl Iterator<Item = Result<SnapshotChunk>> + Send {
        let head = SnapshotChunk {
            message: Some(msg),
            data: Vec::new(),
        };
        std::iter::once(Ok(head)).chain(self.map(|r| {
            r.map(|data| SnapshotChunk {
                message: None,
                data,
            })
        }))
    }

    fn read_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let key = self.guard.key();
        let dir = self.guard.dir().to_path_buf();
        loop {
            let Some(entry) = self.entries.get(self.next_entry).cloned() else {
                return Ok(None);
            };
            let path = cf_path(&dir, SnapKind::Generated, key, entry.cf);
            if self.current.is_none() {
                let f = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(Error::Missing {
                            key,
                            cf: entry.cf.name().to_string(),
                            path,
                        })
                    }
                    Err(e) => return Err(io_err("open", &path)(e)),
                };
                self.current = Some((f, 0, md5::Context::new()));
            }
            let Some((file, done, ctx)) = self.current.as_mut() else {
                continue;
            };
            let want = (entry.size - *done).min(self.chunk_size as u64) as usize;
            if want == 0 {
                let sum = std::mem::replace(ctx, md5::Context::new()).finalize().0;
                self.current = None;
                self.next_entry += 1;
                if sum != entry.checksum {
                    return Err(Error::Checksum {
                        key,
                        cf: entry.cf.name().to_string(),
                        expected: hex(&entry.checksum),
                        actual: hex(&sum),
                    });
                }
                continue;
            }
            let mut buf = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                let n = file
                    .read(&mut buf[filled..])
                    .map_err(io_err("read", &path))?;
                if n == 0 {
                    return Err(Error::Size {
                        key,
                        cf: entry.cf.name().to_string(),
                        expected: entry.size,
                        actual: *done + filled as u64,
                    });
                }
                filled += n;
            }
            ctx.consume(&buf);
            *done += want as u64;
            return Ok(Some(buf));
        }
    }
}

impl Iterator for ChunkReader {
    type Item = Result<Vec<u8>>;

    /// The next chunk; after an error the iterator ends.
    fn next(&mut self) -> Option<Result<Vec<u8>>> {
        if self.failed {
            return None;
        }
        match self.read_chunk() {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Writes an incoming snapshot's chunks to `rev_*.sst.tmp` files, checking sizes and checksums.
/// [`SnapReceiver::finish`] makes the snapshot complete; dropping the receiver unfinished (after
/// an error, or a broken stream) removes everything it wrote.
pub struct SnapReceiver {
    guard: SnapGuard,
    meta: SnapshotMeta,
    entries: Vec<CfEntry>,
    next_entry: usize,
    current: Option<(File, u64, md5::Context)>,
    written: Vec<(PathBuf, PathBuf)>,
    failed: bool,
    finished: bool,
}

impl SnapReceiver {
    /// The snapshot being received.
    pub fn key(&self) -> SnapKey {
        self.guard.key()
    }

    /// Appends the next `data` of the stream. An error (checksum, overflow, I/O) is final: the
    /// receiver refuses further data and the caller should drop it and report failure.
    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        if self.failed {
            return Err(Error::Aborted {
                key: self.guard.key(),
            });
        }
        let mut res = Ok(());
        while !data.is_empty() && res.is_ok() {
            res = self.write_some(&mut data);
        }
        if res.is_err() {
            self.failed = true;
        }
        res
    }

    fn overflow(&self) -> Error {
        Error::Overflow {
            key: self.guard.key(),
            expected: meta_total_size(&self.meta),
        }
    }

    fn write_some(&mut self, data: &mut &[u8]) -> Result<()> {
        let key = self.guard.key();
        let Some(entry) = self.entries.get(self.next_entry).cloned() else {
            return Err(self.overflow());
        };
        let path = cf_path(self.guard.dir(), SnapKind::Received, key, entry.cf);
        let tmp = tmp_path(&path);
        if self.current.is_none() {
            let f = File::create(&tmp).map_err(io_err("create", &tmp))?;
            self.written.push((tmp.clone(), path.clone()));
            self.current = Some((f, 0, md5::Context::new()));
        }
        let Some((file, done, ctx)) = self.current.as_mut() else {
            return Ok(());
        };
        let n = ((entry.size - *done) as usize).min(data.len());
        file.write_all(&data[..n]).map_err(io_err("write", &tmp))?;
        ctx.consume(&data[..n]);
        *done += n as u64;
        *data = &data[n..];
        if *done == entry.size {
            file.sync_all().map_err(io_err("sync", &tmp))?;
            let sum = std::mem::replace(ctx, md5::Context::new()).finalize().0;
            self.current = None;
            self.next_entry += 1;
            if sum != entry.checksum {
                return Err(Error::Checksum {
                    key,
                    cf: entry.cf.name().to_string(),
                    expected: hex(&entry.checksum),
                    actual: hex(&sum),
                });
            }
        }
        Ok(())
    }

    /// Ends the stream: every file must be complete and verified. Renames the files and writes
    /// the meta; only then is the snapshot visible to [`SnapManager::apply`]. Returns its meta.
    pub fn finish(mut self) -> Result<SnapshotMeta> {
        let key = self.guard.key();
        if self.failed {
            return Err(Error::Aborted { key });
        }
        if let Some(entry) = self.entries.get(self.next_entry) {
            let actual = self.current.as_ref().map_or(0, |(_, done, _)| *done);
            return Err(Error::Size {
                key,
                cf: entry.cf.name().to_string(),
                expected: entry.size,
                actual,
            });
        }
        let dir = self.guard.dir().to_path_buf();
        for (tmp, path) in &self.written {
            sync_and_rename(tmp, path)?;
        }
        sync_dir(&dir)?;
        write_meta(&dir, SnapKind::Received, key, &self.meta)?;
        self.finished = true;
        self.guard.set_complete(meta_total_size(&self.meta));
        tracing::info!(region_id = key.region_id, %key, size = meta_total_size(&self.meta), "snapshot received");
        Ok(std::mem::take(&mut self.meta))
    }
}

impl Drop for SnapReceiver {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.current = None;
        for (tmp, path) in &self.written {
            // Best effort: start-up and GC remove whatever survives this.
            let _ = fs::remove_file(tmp);
            let _ = fs::remove_file(path);
        }
        tracing::warn!(region_id = self.guard.key().region_id, key = %self.guard.key(), "snapshot receive aborted");
    }
}

impl SnapManager {
    /// Starts sending generated snapshot `key`: registers it as `Sending` ([`Error::Busy`] past
    /// the limit, [`Error::InvalidTransition`] if it is not complete) and returns its chunks.
    pub fn send(&self, key: SnapKey, chunk_size: usize) -> Result<ChunkReader> {
        let guard = self.begin(SnapKind::Generated, key, SnapState::Sending)?;
        let meta = self.meta(SnapKind::Generated, key)?;
        let entries = validate(key, &meta)?
            .into_iter()
            .filter(|e| e.size > 0)
            .collect();
        Ok(ChunkReader {
            guard,
            meta,
            entries,
            next_entry: 0,
            current: None,
            chunk_size: chunk_size.max(1),
            failed: false,
        })
    }

    /// Starts receiving snapshot `key` described by `meta` (from the first chunk's message):
    /// registers it as `Receiving` ([`Error::Busy`] past the limit) and replaces any idle
    /// received snapshot with the same key. A snapshot over `max_snapshot_size`, or one the
    /// disk cannot take while keeping `keep_free` bytes free, is [`Error::TooLarge`] before a
    /// byte is written.
    pub fn receive(&self, key: SnapKey, meta: &SnapshotMeta) -> Result<SnapReceiver> {
        self.check_room(key, meta_total_size(meta))?;
        let entries = validate(key, meta)?
            .into_iter()
            .filter(|e| e.size > 0)
            .collect();
        let guard = self.begin(SnapKind::Received, key, SnapState::Receiving)?;
        guard.clear_complete();
        self.remove_received_files(key)?;
        Ok(SnapReceiver {
            guard,
            meta: meta.clone(),
            entries,
            next_entry: 0,
            current: None,
            written: Vec::new(),
            failed: false,
            finished: false,
        })
    }
}

/// The snapshot a raft message carries: its key (region, and the term and index of the
/// `eraftpb::Snapshot`'s metadata) and its decoded `RaftSnapshotData`, whose meta is what
/// [`SnapManager::receive`] needs. The server calls this on the first chunk of a stream.
pub fn snapshot_in_message(msg: &RaftMessage) -> Result<(SnapKey, RaftSnapshotData)> {
    let bad = |reason: String| Error::BadMessage {
        region_id: msg.region_id,
        reason,
    };
    let raft_msg = proto::eraftpb::Message::parse_from_bytes(&msg.message)
        .map_err(|e| bad(format!("undecodable raft message: {e}")))?;
    if !raft_msg.has_snapshot() {
        return Err(bad("the raft message carries no snapshot".into()));
    }
    let snapshot = raft_msg.get_snapshot();
    let data = RaftSnapshotData::decode(snapshot.get_data())
        .map_err(|e| bad(format!("undecodable snapshot data: {e}")))?;
    if data.meta.is_none() {
        return Err(bad("snapshot data has no meta".into()));
    }
    let md = snapshot.get_metadata();
    let key = SnapKey::new(msg.region_id, md.get_term(), md.get_index());
    Ok((key, data))
}

/// Copies generated snapshot `key` from `from` into `to` as a received snapshot, through the same
/// chunking and verification as the network path. For in-process transports and tests.
pub fn transfer(
    from: &SnapManager,
    to: &SnapManager,
    key: SnapKey,
    chunk_size: usize,
) -> Result<SnapshotMeta> {
    let reader = from.send(key, chunk_size)?;
    let mut receiver = to.receive(key, reader.meta())?;
    for chunk in reader {
        receiver.write(&chunk?)?;
    }
    receiver.finish()
}
