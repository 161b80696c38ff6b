//! Stage 1: scans of a range (bounded, reversed, keys only) and batch get / put / delete, on
//! the in-memory storage and on RocksDB alike.

use std::sync::Arc;

use kv::{Error, MemoryStorage, RawApi, RawLimits, ScanRange, StandaloneStorage, Storage};
use proto::kvrpcpb::Context;

fn keys(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

fn range(start: &str, end: &str, limit: u32) -> ScanRange {
    ScanRange {
        start: start.as_bytes().to_vec(),
        end: end.as_bytes().to_vec(),
        limit,
        ..ScanRange::default()
    }
}

/// Keys "a".."j" with values "va".."vj" in `default`, and "b" in `lock` (another column family
/// never shows).
fn filled<S: Storage>(storage: S, limits: RawLimits) -> RawApi<S> {
    let a = RawApi::new(Arc::new(storage), limits);
    let ctx = Context::default();
    for c in b'a'..=b'j' {
        a.put(&ctx, "default", vec![c], vec![b'v', c]).unwrap();
    }
    a.put(&ctx, "lock", b"b".to_vec(), b"other".to_vec())
        .unwrap();
    a
}

fn scans_of_a_range<S: Storage>(a: &RawApi<S>) {
    let ctx = Context::default();
    let scan = |r: &ScanRange| keys(&a.scan_range(&ctx, "default", r).unwrap().pairs);
    assert_eq!(scan(&range("c", "f", 100)), ["c", "d", "e"]);
    assert_eq!(scan(&range("", "", 3)), ["a", "b", "c"]);
    assert_eq!(scan(&range("h", "", 100)), ["h", "i", "j"]);
    // Reversed: from the last key below the end, down to the start.
    let down = |r: ScanRange| ScanRange { reverse: true, ..r };
    assert_eq!(scan(&down(range("c", "f", 100))), ["e", "d", "c"]);
    assert_eq!(scan(&down(range("", "", 2))), ["j", "i"]);
    assert_eq!(scan(&down(range("", "b", 100))), ["a"]);
    assert_eq!(scan(&down(range("", "a", 100))), Vec::<String>::new());
    assert_eq!(scan(&down(range("i", "zz", 100))), ["j", "i"]);
    assert_eq!(scan(&down(range("c2", "e0", 100))), ["e", "d"]);
    // An empty or inverted range has nothing.
    assert!(scan(&range("f", "c", 100)).is_empty());
    assert!(scan(&range("c", "c", 100)).is_empty());
    // Keys only: empty values.
    let page = a
        .scan_range(
            &ctx,
            "default",
            &ScanRange {
                key_only: true,
                ..range("a", "c", 10)
            },
        )
        .unwrap();
    assert_eq!(
        page.pairs,
        vec![(b"a".to_vec(), Vec::new()), (b"b".to_vec(), Vec::new())]
    );
}

fn batches<S: Storage>(a: &RawApi<S>) {
    let ctx = Context::default();
    let pairs = vec![
        (b"a".to_vec(), b"new-a".to_vec()),
        (b"c".to_vec(), b"new-c".to_vec()),
    ];
    a.batch_put(&ctx, "default", pairs, 0).unwrap();
    let ks =
        |list: &[&str]| -> Vec<Vec<u8>> { list.iter().map(|k| k.as_bytes().to_vec()).collect() };
    let got = a
        .batch_get(&ctx, "default", &ks(&["c", "zz", "a"]))
        .unwrap();
    assert_eq!(
        got,
        vec![
            (b"c".to_vec(), b"new-c".to_vec()),
            (b"a".to_vec(), b"new-a".to_vec())
        ],
        "present keys, in the order asked"
    );
    a.batch_delete(&ctx, "default", ks(&["a", "c", "missing"]))
        .unwrap();
    assert!(a
        .batch_get(&ctx, "default", &ks(&["a", "c"]))
        .unwrap()
        .is_empty());
    assert_eq!(a.get(&ctx, "default", b"b").unwrap(), Some(b"vb".to_vec()));
    // A batch with one bad key writes nothing.
    let e = a
        .batch_put(
            &ctx,
            "default",
            vec![(b"x".to_vec(), b"1".to_vec()), (Vec::new(), b"2".to_vec())],
            0,
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert_eq!(a.get(&ctx, "default", b"x").unwrap(), None);
    let e = a.batch_get(&ctx, "nope", &ks(&["a"])).unwrap_err();
    assert!(matches!(e, Error::UnknownCf(_)), "{e}");
}

fn batch_bound<S: Storage>(a: &RawApi<S>) {
    let ctx = Context::default();
    let too_many: Vec<Vec<u8>> = (0..5u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let e = a.batch_get(&ctx, "default", &too_many).unwrap_err();
    assert!(e.to_string().contains("exceeds the limit of 4"), "{e}");
    let e = a.batch_delete(&ctx, "default", too_many).unwrap_err();
    assert!(e.to_string().contains("exceeds the limit of 4"), "{e}");
}

fn delete_ranges<S: Storage>(a: &RawApi<S>) {
    let ctx = Context::default();
    let all = |a: &RawApi<S>| {
        keys(
            &a.scan_range(&ctx, "default", &range("", "", 100))
                .unwrap()
                .pairs,
        )
    };
    a.delete_range(&ctx, "default", b"c".to_vec(), b"f".to_vec())
        .unwrap();
    assert_eq!(all(a), ["a", "b", "f", "g", "h", "i", "j"]);
    // An empty end: to the last key. Another column family is untouched.
    a.delete_range(&ctx, "default", b"h".to_vec(), Vec::new())
        .unwrap();
    assert_eq!(all(a), ["a", "b", "f", "g"]);
    assert_eq!(a.get(&ctx, "lock", b"b").unwrap(), Some(b"other".to_vec()));
    // An empty range deletes nothing; an inverted one is refused.
    a.delete_range(&ctx, "default", b"g".to_vec(), b"g".to_vec())
        .unwrap();
    assert_eq!(all(a), ["a", "b", "f", "g"]);
    let e = a
        .delete_range(&ctx, "default", b"g".to_vec(), b"a".to_vec())
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    // Keys written after the delete are there.
    a.put(&ctx, "default", b"d".to_vec(), b"again".to_vec())
        .unwrap();
    assert_eq!(all(a), ["a", "b", "d", "f", "g"]);
    a.delete_range(&ctx, "default", Vec::new(), Vec::new())
        .unwrap();
    assert!(all(a).is_empty());
}

#[test]
fn delete_ranges_in_memory_1() {
    delete_ranges(&filled(MemoryStorage::new(), RawLimits::default()));
}

#[test]
fn delete_ranges_on_rocksdb_1() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StandaloneStorage::open(dir.path(), false).unwrap();
    delete_ranges(&filled(storage, RawLimits::default()));
}

fn small() -> RawLimits {
    RawLimits {
        max_scan_limit: 4,
        ..RawLimits::default()
    }
}

#[test]
fn scans_of_a_range_in_memory_1() {
    scans_of_a_range(&filled(MemoryStorage::new(), RawLimits::default()));
}

#[test]
fn scans_of_a_range_on_rocksdb_1() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StandaloneStorage::open(dir.path(), false).unwrap();
    scans_of_a_range(&filled(storage, RawLimits::default()));
}

#[test]
fn batches_in_memory_1() {
    let a = filled(MemoryStorage::new(), RawLimits::default());
    batches(&a);
    batch_bound(&RawApi::new(Arc::new(MemoryStorage::new()), small()));
}

#[test]
fn batches_on_rocksdb_1() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StandaloneStorage::open(dir.path(), false).unwrap();
    batches(&filled(storage, RawLimits::default()));
    let dir = tempfile::tempdir().unwrap();
    let storage = StandaloneStorage::open(dir.path(), false).unwrap();
    batch_bound(&RawApi::new(Arc::new(storage), small()));
}

/// A reverse page cut at the server's bounds says so, and goes on below its last key.
#[test]
fn reverse_pages_stop_at_the_bounds_and_say_so_1() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StandaloneStorage::open(dir.path(), false).unwrap();
    let a = filled(storage, small());
    let ctx = Context::default();
    let r = ScanRange {
        reverse: true,
        ..range("", "", 100)
    };
    let page = a.scan_range(&ctx, "default", &r).unwrap();
    assert_eq!(keys(&page.pairs), ["j", "i", "h", "g"]);
    assert!(page.truncated);
    let next = ScanRange {
        end: b"g".to_vec(),
        ..r
    };
    let page = a.scan_range(&ctx, "default", &next).unwrap();
    assert_eq!(keys(&page.pairs), ["f", "e", "d", "c"]);
}
