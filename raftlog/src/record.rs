//! The file engine's record format (see `file`): a batch's ops encoded as one payload behind a
//! 20-byte header, and the checks that tell a valid record from a torn or damaged one.
//!
//! ```text
//! magic u32 | payload length u32 | crc32 of payload u32 | segment seq u64 | payload
//! ```

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use crate::{Error, LogOp, Result};

/// First field of every record header (never zero, so zero-filled space is no record).
pub(crate) const MAGIC: u32 = 0x7E55_E4A1;
/// Bytes of a record header.
pub(crate) const HEADER: usize = 20;
pub(crate) const APPEND: u8 = 1;
pub(crate) const PUT_STATE: u8 = 2;
pub(crate) const DELETE_STATE: u8 = 3;
pub(crate) const DELETE_ENTRIES: u8 = 4;

/// A decoded op (region first); entry and state bytes are given by their place in the payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Append(u64, u64, Range<usize>),
    PutState(u64, Range<usize>),
    DeleteState(u64),
    DeleteEntries(u64, u64, u64),
}

fn len32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Other(format!("{n} bytes in a raft log record")))
}

/// Appends one op to `buf`; returns where its data lies in the payload.
fn put(
    buf: &mut Vec<u8>,
    tag: u8,
    region: u64,
    nums: &[u64],
    data: Option<&[u8]>,
) -> Result<Range<usize>> {
    buf.push(tag);
    buf.extend_from_slice(&region.to_le_bytes());
    for n in nums {
        buf.extend_from_slice(&n.to_le_bytes());
    }
    let mut at = buf.len() - HEADER;
    if let Some(data) = data {
        buf.extend_from_slice(&len32(data.len())?.to_le_bytes());
        at = buf.len() - HEADER;
        buf.extend_from_slice(data);
    }
    // Where the data lies in the payload (empty without data).
    Ok(at..buf.len() - HEADER)
}

/// Encodes `ops` as a record, its header left blank (the segment is not known yet), with the
/// ops as [`decode`] would read them back from its payload.
pub(crate) fn encode(ops: &[LogOp]) -> Result<(Vec<u8>, Vec<Op>)> {
    let mut buf = vec![0; HEADER];
    let mut decoded = Vec::with_capacity(ops.len());
    for op in ops {
        let b = &mut buf;
        decoded.push(match op {
            LogOp::Append {
                region_id: r,
                index: i,
                entry: e,
            } => Op::Append(*r, *i, put(b, APPEND, *r, &[*i], Some(e))?),
            LogOp::PutState {
                region_id: r,
                state: s,
            } => Op::PutState(*r, put(b, PUT_STATE, *r, &[], Some(s))?),
            LogOp::DeleteState { region_id: r } => {
                put(b, DELETE_STATE, *r, &[], None)?;
                Op::DeleteState(*r)
            }
            LogOp::DeleteEntries {
                region_id: r,
                from: f,
                to: t,
            } => {
                put(b, DELETE_ENTRIES, *r, &[*f, *t], None)?;
                Op::DeleteEntries(*r, *f, *t)
            }
        });
    }
    len32(buf.len() - HEADER)?;
    Ok((buf, decoded))
}

/// Fills in the header of record `rec` (from [`encode`]) for segment `seq`.
pub(crate) fn seal(rec: &mut [u8], seq: u64) {
    let payload = &rec[HEADER..];
    let (len, crc) = (payload.len() as u32, crc32fast::hash(payload));
    rec[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    rec[4..8].copy_from_slice(&len.to_le_bytes());
    rec[8..12].copy_from_slice(&crc.to_le_bytes());
    rec[12..20].copy_from_slice(&seq.to_le_bytes());
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | u64::from(u32_at(b, at + 4)) << 32
}

/// Decodes a payload; an error names what is wrong with it.
pub(crate) fn decode(p: &[u8]) -> std::result::Result<Vec<Op>, String> {
    let mut at = 0;
    // Where the next `n` bytes start, if the payload holds them.
    let mut take = |n: usize| {
        if p.len() - at < n {
            return Err(format!("op at payload byte {at} runs past the record"));
        }
        at += n;
        Ok(at - n)
    };
    let mut ops = Vec::new();
    while take(0)? < p.len() {
        let (tag, region) = (p[take(1)?], u64_at(p, take(8)?));
        ops.push(match tag {
            APPEND => {
                let (index, len) = (u64_at(p, take(8)?), u32_at(p, take(4)?) as usize);
                let at = take(len)?;
                Op::Append(region, index, at..at + len)
            }
            PUT_STATE => {
                let len = u32_at(p, take(4)?) as usize;
                let at = take(len)?;
                Op::PutState(region, at..at + len)
            }
            DELETE_STATE => Op::DeleteState(region),
            DELETE_ENTRIES => {
                let at = take(16)?;
                Op::DeleteEntries(region, u64_at(p, at), u64_at(p, at + 8))
            }
            t => return Err(format!("unknown op tag {t}")),
        });
    }
    Ok(ops)
}

/// What lies at an offset of a segment: its clean end (`None`), a valid record's payload, or
/// (`Err`) why the bytes there are no valid record.
pub(crate) type Found = std::result::Result<Option<Vec<u8>>, String>;

/// Reads the record at `off` of segment `seq`, `len` bytes long.
pub(crate) fn read_record(file: &File, seq: u64, off: u64, len: u64) -> io::Result<Found> {
    if off == len {
        return Ok(Ok(None));
    }
    if len - off < HEADER as u64 {
        return Ok(Err("short record header".into()));
    }
    let mut h = [0u8; HEADER];
    file.read_exact_at(&mut h, off)?;
    let (magic, plen, crc) = (u32_at(&h, 0), u32_at(&h, 4), u32_at(&h, 8));
    let why = if magic != MAGIC {
        format!("bad magic {magic:#x}")
    } else if u64_at(&h, 12) != seq {
        format!("record of segment {}", u64_at(&h, 12))
    } else if u64::from(plen) > len - off - HEADER as u64 {
        format!("record length {plen} runs past the end")
    } else {
        let mut payload = vec![0u8; plen as usize];
        file.read_exact_at(&mut payload, off + HEADER as u64)?;
        if crc32fast::hash(&payload) == crc {
            return Ok(Ok(Some(payload)));
        }
        "checksum mismatch".into()
    };
    Ok(Err(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine indexes a batch from the ops `encode` returns and, after a restart, from what
    /// `decode` reads back: the two must agree, byte ranges included.
    #[test]
    fn encode_returns_the_ops_decode_reads_back() {
        let mut batch = crate::LogBatch::new();
        batch.append(3, 7, b"seven".to_vec());
        batch.put_state(3, b"state".to_vec());
        batch.delete_entries(3, 1, 5);
        batch.delete_state(9);
        batch.append(9, 1, Vec::new());
        let (rec, ops) = encode(batch.ops()).unwrap();
        let payload = &rec[HEADER..];
        assert_eq!(decode(payload).unwrap(), ops);
        match &ops[0] {
            Op::Append(3, 7, r) => assert_eq!(&payload[r.clone()], b"seven"),
            other => panic!("{other:?}"),
        }
        match &ops[1] {
            Op::PutState(3, r) => assert_eq!(&payload[r.clone()], b"state"),
            other => panic!("{other:?}"),
        }
    }
}
