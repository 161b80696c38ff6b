//! [`ScanRange`]: what a raw scan reads, as the client asks for it, the gRPC request carries it
//! and the store reads it: one type for all three.

use proto::kvrpcpb::{Context, RawScanRequest};

/// The first key after every key starting with `prefix`: the prefix without its trailing 0xff
/// bytes, its last byte incremented; empty (unbounded) when there is no such key.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    end
}

/// What a scan reads: the keys of `[start, end)` (an empty `end`: to the last key), at most
/// `limit` pairs, in key order or from the top of the range down (`reverse`), with values or
/// keys only (`key_only`: every value comes back empty).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanRange {
    /// First key of the range (inclusive).
    pub start: Vec<u8>,
    /// End of the range (exclusive); empty is unbounded.
    pub end: Vec<u8>,
    /// The most pairs wanted.
    pub limit: u32,
    /// Largest keys first.
    pub reverse: bool,
    /// Keys only.
    pub key_only: bool,
    /// Also each pair's expiry (a backup's scan).
    pub with_expiry: bool,
}

impl ScanRange {
    /// Up to `limit` pairs of `[start, end)` in key order, with their values.
    pub fn new(start: &[u8], end: &[u8], limit: u32) -> ScanRange {
        ScanRange {
            start: start.to_vec(),
            end: end.to_vec(),
            limit,
            ..ScanRange::default()
        }
    }

    /// Up to `limit` pairs of the keys starting with `prefix`, in key order.
    pub fn prefix(prefix: &[u8], limit: u32) -> ScanRange {
        ScanRange::new(prefix, &prefix_end(prefix), limit)
    }

    /// The same range, largest keys first.
    pub fn reversed(mut self) -> ScanRange {
        self.reverse = true;
        self
    }

    /// The same range, keys only.
    pub fn keys_only(mut self) -> ScanRange {
        self.key_only = true;
        self
    }

    /// The request for this range (its pairs within the region of `context`).
    pub fn request(&self, cf: &str, context: Option<Context>) -> RawScanRequest {
        RawScanRequest {
            context,
            start_key: self.start.clone(),
            limit: self.limit,
            cf: cf.to_string(),
            end_key: self.end.clone(),
            key_only: self.key_only,
            reverse: self.reverse,
            with_expiry: self.with_expiry,
        }
    }

    /// Narrows the range to what lies past `last`, the last key a page returned: after it in
    /// key order, below it when reversed.
    pub fn resume_past(&mut self, last: Vec<u8>) {
        if self.reverse {
            self.end = last;
        } else {
            let mut next = last;
            next.push(0);
            self.start = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_after_its_last_key_1() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"");
        assert_eq!(prefix_end(b""), b"");
        let r = ScanRange::prefix(b"k/", 10);
        assert_eq!(
            (r.start.as_slice(), r.end.as_slice()),
            (&b"k/"[..], &b"k0"[..])
        );
    }
}
