//! Stage 1: the raw API's validation and semantics.

use std::sync::Arc;

use kv::{Error, MemoryStorage, RawApi, RawLimits};
use proto::kvrpcpb::Context;

fn api(max_value_size: usize) -> RawApi<MemoryStorage> {
    let limits = RawLimits {
        max_value_size,
        ..RawLimits::default()
    };
    RawApi::new(Arc::new(MemoryStorage::new()), limits)
}

#[test]
fn raw_put_get_delete_1() {
    let a = api(1024);
    let ctx = Context::default();
    a.put(&ctx, "", b"k".to_vec(), b"v".to_vec()).unwrap();
    assert_eq!(
        a.get(&ctx, "default", b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(a.get(&ctx, "write", b"k").unwrap(), None);
    a.delete(&ctx, "default", b"k".to_vec()).unwrap();
    assert_eq!(a.get(&ctx, "", b"k").unwrap(), None);
    // Deleting again is not an error.
    a.delete(&ctx, "default", b"k".to_vec()).unwrap();
}

#[test]
fn raw_scan_limit_and_cf_1() {
    let a = api(1024);
    let ctx = Context::default();
    for i in 0..10u8 {
        a.put(&ctx, "lock", vec![b'a' + i], vec![i]).unwrap();
    }
    a.put(&ctx, "default", b"b".to_vec(), b"other cf".to_vec())
        .unwrap();
    let got = a.scan(&ctx, "lock", b"c", 3).unwrap();
    assert_eq!(
        got,
        vec![
            (b"c".to_vec(), vec![2]),
            (b"d".to_vec(), vec![3]),
            (b"e".to_vec(), vec![4])
        ]
    );
    assert_eq!(a.scan(&ctx, "lock", b"", 100).unwrap().len(), 10);
    assert!(a.scan(&ctx, "lock", b"", 0).unwrap().is_empty());
    assert_eq!(a.scan(&ctx, "default", b"", 100).unwrap().len(), 1);
}

#[test]
fn raw_bad_input_is_an_error_1() {
    let a = api(4);
    let ctx = Context::default();
    let e = a.put(&ctx, "", Vec::new(), b"v".to_vec()).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("empty")),
        "{e}"
    );
    let e = a
        .put(&ctx, "nope", b"k".to_vec(), b"v".to_vec())
        .unwrap_err();
    assert!(matches!(e, Error::UnknownCf(ref cf) if cf == "nope"), "{e}");
    let e = a.get(&ctx, "nope", b"k").unwrap_err();
    assert!(matches!(e, Error::UnknownCf(_)), "{e}");
    let e = a.scan(&ctx, "nope", b"", 1).unwrap_err();
    assert!(matches!(e, Error::UnknownCf(_)), "{e}");
    let e = a
        .put(&ctx, "", b"k".to_vec(), b"12345".to_vec())
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("exceeds")),
        "{e}"
    );
    // A value exactly at the limit is accepted; nothing was written by the failed calls.
    a.put(&ctx, "", b"k".to_vec(), b"1234".to_vec()).unwrap();
    assert_eq!(a.scan(&ctx, "", b"", 10).unwrap().len(), 1);
}

#[test]
fn scan_pages_stop_at_the_bounds_and_say_so_1() {
    let storage = std::sync::Arc::new(kv::MemoryStorage::new());
    let limits = RawLimits {
        max_scan_limit: 3,
        max_scan_bytes: 25,
        ..RawLimits::default()
    };
    let a = RawApi::new(storage, limits);
    let ctx = Default::default();
    for i in 0..6u8 {
        a.put(&ctx, "default", vec![b'k', i], vec![i; 8]).unwrap();
    }
    // Byte bound first: asked for everything, two 10-byte pairs fit in 25 bytes.
    let p = a.scan_page(&ctx, "default", b"", usize::MAX).unwrap();
    assert_eq!(
        p.pairs.len(),
        2,
        "two 10-byte pairs fit in 25 bytes, a third does not"
    );
    assert!(p.truncated);
    let p = a
        .scan_page(&ctx, "default", &[b'k', 4], usize::MAX)
        .unwrap();
    assert_eq!(p.pairs.len(), 2);
    assert!(!p.truncated, "the end of the keys is not a truncation");
    // Exactly what was asked is not a truncation either.
    let p = a.scan_page(&ctx, "default", b"", 1).unwrap();
    assert_eq!((p.pairs.len(), p.truncated), (1, false));
    // One pair larger than the byte bound is still served, alone.
    a.put(&ctx, "default", b"a".to_vec(), vec![0; 100]).unwrap();
    let p = a.scan_page(&ctx, "default", b"", 10).unwrap();
    assert_eq!((p.pairs.len(), p.truncated), (1, true));
    // Pair bound with small pairs.
    let small = RawApi::new(
        std::sync::Arc::new(kv::MemoryStorage::new()),
        RawLimits {
            max_scan_limit: 3,
            ..RawLimits::default()
        },
    );
    for i in 0..6u8 {
        small.put(&ctx, "default", vec![b'k', i], vec![i]).unwrap();
    }
    let p = small.scan_page(&ctx, "default", b"", 100).unwrap();
    assert_eq!((p.pairs.len(), p.truncated), (3, true));
}
