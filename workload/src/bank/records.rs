//! Where the audit reads the store's MVCC records: [`Records`], a raw scan of one column family,
//! implemented here over gRPC by [`ClusterClient`] (each region read on its leader) and by
//! `test_raftstore` over its in-process stores; and the paged reads the audit makes with it.

use std::future::Future;
use std::pin::Pin;

use tessera_client::cluster::ClusterClient;
use tessera_client::ScanRange;

/// What a [`Records`] scan returns: key-value pairs in key order, or why they could not be read.
pub type RecordsFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<(Vec<u8>, Vec<u8>)>, String>> + Send + 'a>>;

/// Raw reads of a cluster's MVCC records (locks, write records, values), for the audit.
pub trait Records: Send + Sync {
    /// Up to `limit` pairs of the column family `cf` (`lock`, `write` or `default`) with keys in
    /// `[start, end)` (`end` empty: to the end of the key space), in key order, as the leaders
    /// of their regions hold them. Keys are the stored ones (memcomparable-encoded user keys,
    /// with a timestamp for versions).
    ///
    /// # Errors
    /// Why they could not be read; the audit tries again until its deadline.
    fn scan<'a>(
        &'a self,
        cf: &'static str,
        start: &'a [u8],
        end: &'a [u8],
        limit: u32,
    ) -> RecordsFuture<'a>;
}

impl Records for ClusterClient {
    fn scan<'a>(
        &'a self,
        cf: &'static str,
        start: &'a [u8],
        end: &'a [u8],
        limit: u32,
    ) -> RecordsFuture<'a> {
        Box::pin(async move {
            self.scan_range(cf, &ScanRange::new(start, end, limit))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Pairs per scan of the audit.
const PAGE: u32 = 1_000;

/// Every pair of `cf` in `[start, end)`, in pages of [`PAGE`].
///
/// # Errors
/// The first page that could not be read.
pub(super) async fn scan_all(
    records: &dyn Records,
    cf: &'static str,
    start: &[u8],
    end: &[u8],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut from = start.to_vec();
    loop {
        let page = records.scan(cf, &from, end, PAGE).await?;
        let full = page.len() >= PAGE as usize;
        out.extend(page);
        match out.last() {
            Some((last, _)) if full => {
                from = last.clone();
                from.push(0);
            }
            _ => return Ok(out),
        }
    }
}

/// The end of the stored keys of the user keys that start with `prefix`: the encoding of the
/// first user key past them (empty: none, the range goes to the end of the key space).
pub(super) fn encoded_prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return codec::key::encode_bytes(&next);
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use codec::key::{encode_bytes, encode_key};

    use super::encoded_prefix_end;

    #[test]
    fn a_prefix_range_holds_every_version_of_its_keys_and_no_other_4c() {
        let end = encoded_prefix_end(b"bank/");
        assert!(encode_bytes(b"bank/") < end);
        assert!(encode_key(b"bank/acct-999", 0) < end);
        assert!(encode_key(b"bank/\xff\xff", 0) < end);
        assert!(encode_bytes(b"bank0") >= end);
        assert!(encode_bytes(b"banl") > end);
        assert_eq!(encoded_prefix_end(b""), Vec::<u8>::new());
        assert_eq!(encoded_prefix_end(b"\xff"), Vec::<u8>::new());
        assert_eq!(encoded_prefix_end(b"a\xff"), encode_bytes(b"b"));
    }
}
