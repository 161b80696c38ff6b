//! Per-key time to live in the raw API, on both local storages: a key put with a TTL reads as
//! itself until it expires, then as absent to get, scan, batch get and compare-and-swap; keys
//! without a TTL, and values shaped like the TTL suffix, read back as written.

use std::sync::Arc;
use std::time::Duration;

use kv::{MemoryStorage, RawApi, RawLimits, ScanRange, StandaloneStorage, Storage};
use proto::kvrpcpb::Context;

fn check_ttl<S: Storage>(a: &RawApi<S>) {
    let ctx = Context::default();
    a.put_with_ttl(&ctx, "default", b"short".to_vec(), b"s".to_vec(), 1)
        .unwrap();
    a.put_with_ttl(&ctx, "default", b"long".to_vec(), b"l".to_vec(), 3600)
        .unwrap();
    a.put(&ctx, "default", b"plain".to_vec(), b"p".to_vec())
        .unwrap();
    // A plain value whose tail looks like an expired TTL suffix.
    let mut forged = b"f".to_vec();
    forged.extend_from_slice(&0u64.to_be_bytes());
    forged.extend_from_slice(&codec::raw_value::TTL_MAGIC);
    a.put(&ctx, "default", b"forged".to_vec(), forged.clone())
        .unwrap();
    a.batch_put(&ctx, "default", vec![(b"batch".to_vec(), b"b".to_vec())], 1)
        .unwrap();

    let keys = |a: &RawApi<S>| -> Vec<String> {
        let page = a
            .scan_range(&ctx, "default", &ScanRange::new(b"", b"", 100))
            .unwrap();
        page.pairs
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    };
    assert_eq!(
        a.get(&ctx, "default", b"short").unwrap(),
        Some(b"s".to_vec())
    );
    assert_eq!(keys(a), ["batch", "forged", "long", "plain", "short"]);

    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(a.get(&ctx, "default", b"short").unwrap(), None);
    assert_eq!(a.get(&ctx, "default", b"batch").unwrap(), None);
    assert_eq!(
        a.get(&ctx, "default", b"long").unwrap(),
        Some(b"l".to_vec())
    );
    assert_eq!(
        a.get(&ctx, "default", b"plain").unwrap(),
        Some(b"p".to_vec())
    );
    assert_eq!(a.get(&ctx, "default", b"forged").unwrap(), Some(forged));
    assert_eq!(keys(a), ["forged", "long", "plain"]);
    let reversed = a
        .scan_range(&ctx, "default", &ScanRange::new(b"", b"", 2).reversed())
        .unwrap();
    let first_two: Vec<_> = reversed.pairs.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(first_two, [&b"plain"[..], &b"long"[..]]);
    let got = a
        .batch_get(&ctx, "default", &[b"short".to_vec(), b"long".to_vec()])
        .unwrap();
    assert_eq!(got, [(b"long".to_vec(), b"l".to_vec())]);
    // An expired key is absent to a swap; the swap may give it a TTL again.
    let out = a
        .compare_and_swap(
            &ctx,
            "default",
            b"short".to_vec(),
            None,
            b"s2".to_vec(),
            3600,
        )
        .unwrap();
    assert!(out.succeed && out.previous.is_none(), "{out:?}");
    assert_eq!(
        a.get(&ctx, "default", b"short").unwrap(),
        Some(b"s2".to_vec())
    );
}

#[test]
fn expired_keys_read_as_absent_on_the_memory_storage_1() {
    check_ttl(&RawApi::new(
        Arc::new(MemoryStorage::new()),
        RawLimits::default(),
    ));
}

#[test]
fn expired_keys_read_as_absent_on_the_rocksdb_storage_1() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StandaloneStorage::open(dir.path(), false).unwrap();
    check_ttl(&RawApi::new(Arc::new(storage), RawLimits::default()));
}
