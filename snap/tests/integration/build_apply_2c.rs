//! Build a snapshot on one store, move it, apply it on another: only the region's range changes.

use kv::Cf;
use snap::{SnapKey, SnapKind};

use crate::common::{build_and_transfer, fill, region, Store};

#[test]
fn round_trip_moves_only_the_region_range_2c() {
    let (src, dst) = (Store::new(), Store::new());
    // Source: keys in three regions [.., b), [b, d), [d, ..).
    for p in ["a", "b", "c", "d"] {
        fill(&src, p, 50, 32, p.as_bytes()[0] as u64);
    }
    // Target: its own keys left and right of the region, plus stale keys inside it.
    fill(&dst, "a", 20, 8, 100);
    fill(&dst, "d", 20, 8, 101);
    fill(&dst, "bz-stale", 10, 8, 102);
    let outside_before = (dst.dump_all(b"", b"b"), dst.dump_all(b"d", b""));

    let r = region(2, b"b", b"d");
    let key = SnapKey::new(2, 6, 42);
    let built = build_and_transfer(&src, &dst, key, &r);
    assert_eq!(built.keys, 100 * 3);
    assert_eq!(built.meta.cf_files.len(), 3);
    assert_eq!(built.size, snap::meta_total_size(&built.meta));
    assert!(built.size > 0);
    let data = built.to_raft_snapshot_data(&r);
    assert_eq!(data.file_size, built.size);
    assert_eq!(data.region.as_ref(), Some(&r));

    let stats = dst.mgr.apply(key, &dst.db, &r).unwrap();
    assert_eq!((stats.files, stats.size), (3, built.size));

    assert_eq!(dst.dump_all(b"b", b"d"), src.dump_all(b"b", b"d"));
    assert!(dst.dump(Cf::Default, b"bz-stale", b"c").is_empty());
    assert_eq!(
        (dst.dump_all(b"", b"b"), dst.dump_all(b"d", b"")),
        outside_before
    );
}

#[test]
fn unbounded_region_takes_every_key_2c() {
    let (src, dst) = (Store::new(), Store::new());
    fill(&src, "k", 100, 16, 1);
    fill(&dst, "old", 10, 16, 2);
    let r = region(1, b"", b"");
    let key = SnapKey::new(1, 1, 7);
    build_and_transfer(&src, &dst, key, &r);
    dst.mgr.apply(key, &dst.db, &r).unwrap();
    assert_eq!(dst.dump_all(b"", b""), src.dump_all(b"", b""));
}

#[test]
fn empty_column_families_have_no_file_2c() {
    let (src, dst) = (Store::new(), Store::new());
    src.put(Cf::Default, b"k1", b"v1");
    src.put(Cf::Default, b"k2", b"v2");
    dst.put(Cf::Lock, b"k3", b"stale lock");
    let r = region(3, b"k", b"l");
    let key = SnapKey::new(3, 2, 9);
    let built = build_and_transfer(&src, &dst, key, &r);
    let sizes: Vec<(String, u64)> = built
        .meta
        .cf_files
        .iter()
        .map(|f| (f.cf.clone(), f.size))
        .collect();
    assert_eq!(
        sizes[1..],
        [("lock".to_string(), 0), ("write".to_string(), 0)]
    );
    assert!(sizes[0].1 > 0);
    assert!(!dst.cf_file(SnapKind::Received, key, Cf::Lock).exists());

    let stats = dst.mgr.apply(key, &dst.db, &r).unwrap();
    assert_eq!(stats.files, 1);
    assert_eq!(dst.dump(Cf::Default, b"k", b"l").len(), 2);
    // The empty lock CF in the snapshot still clears the target's stale lock.
    assert!(dst.dump(Cf::Lock, b"k", b"l").is_empty());

    // A region with no data at all: every CF empty, still a valid snapshot that clears the range.
    let empty = region(4, b"x", b"y");
    let ekey = SnapKey::new(4, 1, 1);
    dst.put(Cf::Write, b"xx", b"stale");
    let built = build_and_transfer(&src, &dst, ekey, &empty);
    assert_eq!((built.size, built.keys), (0, 0));
    assert_eq!(dst.mgr.apply(ekey, &dst.db, &empty).unwrap().files, 0);
    assert!(dst.dump(Cf::Write, b"x", b"y").is_empty());
}

#[test]
fn large_values_survive_2c() {
    let (src, dst) = (Store::new(), Store::new());
    fill(&src, "big", 6, 3 << 20, 7);
    let r = region(5, b"", b"");
    let key = SnapKey::new(5, 3, 30);
    let built = build_and_transfer(&src, &dst, key, &r);
    // Random bytes do not compress: the files hold at least the raw values.
    assert!(built.size >= 6 * 3 * (3 << 20));
    assert_eq!(built.kv_bytes, built.keys * (3 << 20) + built.keys * 10);
    dst.mgr.apply(key, &dst.db, &r).unwrap();
    assert_eq!(dst.dump_all(b"", b""), src.dump_all(b"", b""));
}

#[test]
fn ten_thousand_keys_2c() {
    let (src, dst) = (Store::new(), Store::new());
    fill(&src, "key", 10_000, 100, 11);
    let r = region(6, b"key", b"kez");
    let key = SnapKey::new(6, 4, 10_000);
    let built = build_and_transfer(&src, &dst, key, &r);
    assert_eq!(built.keys, 30_000);
    dst.mgr.apply(key, &dst.db, &r).unwrap();
    let got = dst.dump_all(b"key", b"kez");
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [10_000; 3]);
    assert_eq!(got, src.dump_all(b"key", b"kez"));
}

#[test]
fn apply_redo_after_crash_gives_the_same_result_2c() {
    let (src, mut dst) = (Store::new(), Store::new());
    fill(&src, "r", 500, 64, 21);
    fill(&dst, "s", 30, 8, 22); // outside the region
    let r = region(7, b"r", b"s");
    let key = SnapKey::new(7, 5, 77);
    build_and_transfer(&src, &dst, key, &r);
    let expected = src.dump_all(b"r", b"s");

    dst.mgr.apply(key, &dst.db, &r).unwrap();
    let once = dst.dump_all(b"", b"");
    dst.mgr.apply(key, &dst.db, &r).unwrap();
    assert_eq!(
        dst.dump_all(b"", b""),
        once,
        "applying twice changed the engine"
    );

    // A crash mid-apply: the range holds a mix of old and partly ingested data, a hard link for
    // ingestion is left in the snapshot directory, the process restarts.
    fill(&dst, "r", 100, 8, 23);
    fill(&dst, "r-extra", 20, 8, 24);
    let link = dst.snap_dir().join(format!("rev_{key}_default.sst.ingest"));
    std::fs::hard_link(dst.cf_file(SnapKind::Received, key, Cf::Default), &link).unwrap();
    dst.restart_engine();
    dst.restart_manager();
    assert!(!link.exists(), "restart must remove the ingest link");
    assert!(
        dst.mgr.exists(SnapKind::Received, key),
        "restart must keep the complete snapshot"
    );

    dst.mgr.apply(key, &dst.db, &r).unwrap();
    assert_eq!(dst.dump_all(b"r", b"s"), expected);
    assert_eq!(dst.dump_all(b"", b""), once);
}

#[test]
fn apply_needs_a_complete_received_snapshot_2c() {
    let (src, dst) = (Store::new(), Store::new());
    fill(&src, "n", 10, 10, 61);
    let r = region(8, b"", b"");
    let key = SnapKey::new(8, 1, 3);
    // Nothing received yet: refused, whether or not a generated one of that key exists.
    for store in [&dst, &src] {
        store.build(key, &r);
        match store.mgr.apply(key, &store.db, &r) {
            Err(snap::Error::InvalidTransition { kind, .. }) => {
                assert_eq!(kind, SnapKind::Received)
            }
            other => panic!("apply without a received snapshot: {other:?}"),
        }
    }
    assert!(dst.dump_all(b"", b"").iter().all(Vec::is_empty));
}
