//! The manager: registry transitions, concurrency limits, size accounting, GC and start-up
//! clean-up.

use std::sync::{Arc, Barrier};

use kv::Cf;
use snap::{Error, SnapConfig, SnapKey, SnapKind, SnapState};

use crate::common::{fill, region, Store};

const GEN: SnapKind = SnapKind::Generated;
const REV: SnapKind = SnapKind::Received;

fn assert_invalid(res: snap::Result<snap::SnapGuard>, from: Option<SnapState>, to: SnapState) {
    match res {
        Err(Error::InvalidTransition { from: f, to: t, .. }) => {
            assert_eq!((f, t), (from, Some(to)))
        }
        Err(e) => panic!("expected an invalid transition, got {e}"),
        Ok(g) => panic!("transition to {to:?} accepted (guard in {:?})", g.state()),
    }
}

#[test]
fn registry_accepts_valid_and_refuses_invalid_transitions_2c() {
    let store = Store::new();
    fill(&store, "m", 10, 10, 51);
    let key = SnapKey::new(1, 1, 10);
    let m = &store.mgr;

    // Nothing on disk yet: cannot send or apply; wrong kinds are refused.
    assert_invalid(
        m.begin(GEN, key, SnapState::Sending),
        None,
        SnapState::Sending,
    );
    assert_invalid(
        m.begin(REV, key, SnapState::Applying),
        None,
        SnapState::Applying,
    );
    assert_invalid(
        m.begin(GEN, key, SnapState::Receiving),
        None,
        SnapState::Receiving,
    );
    assert_invalid(
        m.begin(REV, key, SnapState::Generating),
        None,
        SnapState::Generating,
    );

    let generating = m.begin(GEN, key, SnapState::Generating).unwrap();
    assert_eq!(m.state(GEN, key), Some(SnapState::Generating));
    for to in [SnapState::Generating, SnapState::Sending] {
        assert_invalid(m.begin(GEN, key, to), Some(SnapState::Generating), to);
    }
    // A build of a key already being generated is refused, not run twice.
    assert!(matches!(
        m.build(
            key,
            &kv::EngineSnapshot::new(&store.db),
            &region(1, b"", b"")
        ),
        Err(Error::InvalidTransition { .. })
    ));
    assert!(matches!(
        m.delete(GEN, key),
        Err(Error::InUse {
            state: SnapState::Generating,
            ..
        })
    ));
    drop(generating);
    assert_eq!(m.state(GEN, key), None);

    store.build(key, &region(1, b"", b""));
    let s1 = m.send(key, 64).unwrap();
    let s2 = m.begin(GEN, key, SnapState::Sending).unwrap();
    assert_eq!(m.state(GEN, key), Some(SnapState::Sending));
    assert_invalid(
        m.begin(GEN, key, SnapState::Generating),
        Some(SnapState::Sending),
        SnapState::Generating,
    );
    assert!(matches!(
        m.delete(GEN, key),
        Err(Error::InUse {
            state: SnapState::Sending,
            ..
        })
    ));
    assert!(
        m.gc(|_, _| true).unwrap().is_empty(),
        "gc must skip a snapshot being sent"
    );
    drop(s1);
    assert_eq!(
        m.state(GEN, key),
        Some(SnapState::Sending),
        "one sender left"
    );
    drop(s2);
    assert_eq!(m.state(GEN, key), None);

    // Received side: receiving, then applying, never both at once.
    let meta = m.meta(GEN, key).unwrap();
    let receiver = m.receive(key, &meta).unwrap();
    assert_invalid(
        m.begin(REV, key, SnapState::Applying),
        Some(SnapState::Receiving),
        SnapState::Applying,
    );
    assert!(matches!(
        m.receive(key, &meta),
        Err(Error::InvalidTransition { .. })
    ));
    drop(receiver);
    snap::transfer(m, m, key, 1 << 20).unwrap();
    let applying = m.begin(REV, key, SnapState::Applying).unwrap();
    assert_invalid(
        m.begin(REV, key, SnapState::Receiving),
        Some(SnapState::Applying),
        SnapState::Receiving,
    );
    drop(applying);
    assert!(m.delete(GEN, key).unwrap());
    assert!(m.delete(REV, key).unwrap());
    assert!(
        !m.delete(REV, key).unwrap(),
        "deleting twice finds nothing the second time"
    );
    assert!(store.snap_files().is_empty());
}

#[test]
fn concurrent_sends_and_receives_are_bounded_2c() {
    let store = Store::with_config(SnapConfig {
        max_concurrent_sends: 2,
        max_concurrent_recvs: 3,
        ..SnapConfig::default()
    });
    fill(&store, "c", 10, 10, 52);
    let keys: Vec<SnapKey> = (1..=3).map(|i| SnapKey::new(i, 1, 5)).collect();
    for k in &keys {
        store.build(*k, &region(k.region_id, b"", b""));
    }
    let a = store.mgr.send(keys[0], 64).unwrap();
    let _b = store.mgr.send(keys[1], 64).unwrap();
    match store.mgr.send(keys[2], 64) {
        Err(Error::Busy { what, limit }) => assert_eq!((what, limit), ("send", 2)),
        Err(e) => panic!("expected busy, got {e}"),
        Ok(_) => panic!("a third send was accepted"),
    }
    drop(a);
    store.mgr.send(keys[2], 64).unwrap();

    // Eight threads race for three receive slots; exactly three win while all hold on.
    let meta = store.mgr.meta(GEN, keys[0]).unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8u64)
        .map(|i| {
            let (mgr, meta, barrier) = (store.mgr.clone(), meta.clone(), barrier.clone());
            std::thread::spawn(move || {
                let res = mgr.receive(SnapKey::new(100 + i, 1, 1), &meta);
                let outcome = match &res {
                    Ok(_) => Ok(()),
                    Err(Error::Busy {
                        what: "receive",
                        limit: 3,
                    }) => Err(()),
                    Err(e) => panic!("unexpected error {e}"),
                };
                barrier.wait();
                outcome
            })
        })
        .collect();
    let won = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(Result::is_ok)
        .count();
    assert_eq!(won, 3);
    // Every loser and winner has dropped its receiver: the slots are free again.
    let _held: Vec<_> = (0..3)
        .map(|i| {
            store
                .mgr
                .receive(SnapKey::new(200 + i, 1, 1), &meta)
                .unwrap()
        })
        .collect();
    assert!(matches!(
        store.mgr.receive(SnapKey::new(300, 1, 1), &meta),
        Err(Error::Busy { .. })
    ));
}

#[test]
fn total_size_follows_builds_receives_deletes_and_restarts_2c() {
    let mut store = Store::new();
    fill(&store, "s", 100, 100, 53);
    let (k1, k2) = (SnapKey::new(1, 1, 1), SnapKey::new(2, 1, 1));
    let b1 = store.build(k1, &region(1, b"", b"s000050"));
    let b2 = store.build(k2, &region(2, b"s000050", b""));
    assert_eq!(store.mgr.total_size(), b1.size + b2.size);
    // Rebuilding the same key replaces it rather than counting it twice.
    let b1 = store.build(k1, &region(1, b"", b"s000050"));
    assert_eq!(store.mgr.total_size(), b1.size + b2.size);
    snap::transfer(&store.mgr, &store.mgr, k1, 1000).unwrap();
    assert_eq!(store.mgr.total_size(), 2 * b1.size + b2.size);
    assert_eq!(store.mgr.snapshot_count(), 3);
    store.mgr.delete(GEN, k1).unwrap();
    assert_eq!(store.mgr.total_size(), b1.size + b2.size);
    store.restart_manager();
    assert_eq!(store.mgr.total_size(), b1.size + b2.size);
    assert!(store.mgr.exists(GEN, k2) && store.mgr.exists(REV, k1) && !store.mgr.exists(GEN, k1));
}

#[test]
fn gc_deletes_stale_snapshots_only_2c() {
    let store = Store::new();
    fill(&store, "g", 20, 10, 54);
    let r = region(1, b"", b"");
    let keys = [
        SnapKey::new(1, 1, 5),
        SnapKey::new(1, 2, 10),
        SnapKey::new(1, 2, 15),
        SnapKey::new(2, 1, 7),
    ];
    for k in keys {
        store.build(k, &r);
    }
    snap::transfer(&store.mgr, &store.mgr, keys[0], 1 << 20).unwrap();
    // Region 1 has applied index 15: its older snapshots are stale, but one is being sent.
    let sending = store.mgr.send(keys[1], 1 << 20).unwrap();
    let stale = |_: SnapKind, k: SnapKey| k.region_id == 1 && k.index < 15;
    let mut deleted = store.mgr.gc(stale).unwrap();
    deleted.sort();
    assert_eq!(deleted, vec![(GEN, keys[0]), (REV, keys[0])]);
    drop(sending);
    assert_eq!(store.mgr.gc(stale).unwrap(), vec![(GEN, keys[1])]);
    for k in &keys[2..] {
        assert!(store.mgr.exists(GEN, *k));
    }
    let files = store.snap_files();
    assert!(
        files
            .iter()
            .all(|f| f.contains("1_2_15") || f.contains("2_1_7")),
        "{files:?}"
    );
    assert!(store.mgr.gc(stale).unwrap().is_empty());
    // The predicate may consult the manager (it runs outside the registry lock).
    let mgr = store.mgr.clone();
    let deleted = store
        .mgr
        .gc(|kind, k| mgr.exists(kind, k) && k.region_id == 2)
        .unwrap();
    assert_eq!(deleted, vec![(GEN, keys[3])]);
}

#[test]
fn restart_and_gc_remove_crash_leftovers_2c() {
    let mut store = Store::new();
    fill(&store, "l", 50, 50, 55);
    let r = region(1, b"", b"");
    let keep = SnapKey::new(1, 1, 9);
    store.build(keep, &r);
    let dir = store.snap_dir();
    let real_sst = store.cf_file(GEN, keep, Cf::Default);
    // An interrupted build: a finished CF file, a half-written one, no meta.
    let orphan = SnapKey::new(2, 1, 3);
    std::fs::copy(&real_sst, store.cf_file(GEN, orphan, Cf::Default)).unwrap();
    std::fs::write(dir.join(format!("gen_{orphan}_lock.sst.tmp")), b"partial").unwrap();
    // An interrupted receive with its meta being written, and an interrupted apply's link.
    let half = SnapKey::new(3, 1, 4);
    std::fs::write(dir.join(format!("rev_{half}_write.sst.tmp")), b"partial").unwrap();
    std::fs::write(dir.join(format!("rev_{half}.meta.tmp")), b"partial").unwrap();
    std::fs::hard_link(
        &real_sst,
        dir.join(format!("gen_{keep}_default.sst.ingest")),
    )
    .unwrap();
    // A meta whose file was lost.
    let lost = SnapKey::new(4, 1, 1);
    snap::transfer(&store.mgr, &store.mgr, keep, 1 << 20).unwrap();
    std::fs::rename(
        dir.join(format!("rev_{keep}.meta")),
        dir.join(format!("rev_{lost}.meta")),
    )
    .unwrap();
    for cf in Cf::ALL {
        let _ = std::fs::remove_file(store.cf_file(REV, keep, cf));
    }
    // Not ours: left alone.
    std::fs::write(dir.join("README.operator"), b"notes").unwrap();

    store.restart_manager();
    let mut expected: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("gen_{keep}")) || n == "README.operator")
        .collect();
    expected.sort();
    assert_eq!(store.snap_files(), expected);
    assert!(expected
        .iter()
        .all(|n| !n.ends_with(".tmp") && !n.ends_with(".ingest")));
    assert_eq!(store.mgr.snapshot_count(), 1);
    let meta = store.mgr.meta(GEN, keep).unwrap();
    store.mgr.verify(GEN, keep, &meta).unwrap();

    // Without a restart, GC also sweeps idle debris (here: an orphan CF file).
    std::fs::copy(&real_sst, store.cf_file(GEN, orphan, Cf::Default)).unwrap();
    assert_eq!(store.mgr.gc(|_, _| false).unwrap(), vec![(GEN, orphan)]);
    assert_eq!(store.snap_files(), expected);
}

#[test]
fn oversized_or_unfitting_snapshots_are_refused_before_a_byte_is_written_2c() {
    use proto::raft_serverpb::{SnapshotCfFile, SnapshotMeta};
    let announce = |size: u64| SnapshotMeta {
        cf_files: vec![SnapshotCfFile {
            cf: "default".into(),
            size,
            checksum: vec![0; 16],
        }],
    };
    let store = Store::with_config(SnapConfig {
        max_snapshot_size: 1 << 20,
        ..SnapConfig::default()
    });
    let key = SnapKey::new(9, 5, 100);
    // 1 TiB announced: refused outright, nothing on disk, nothing registered.
    let err = store.mgr.receive(key, &announce(1 << 40)).err().unwrap();
    assert!(
        matches!(err, Error::TooLarge { size, .. } if size == 1 << 40),
        "{err}"
    );
    // Sizes that overflow when added up are refused too, not wrapped around.
    let mut twice = announce(u64::MAX);
    twice.cf_files.push(SnapshotCfFile {
        cf: "write".into(),
        size: 2,
        checksum: vec![0; 16],
    });
    assert!(matches!(
        store.mgr.receive(key, &twice),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(std::fs::read_dir(store.snap_dir()).unwrap().count(), 0);
    assert_eq!(store.mgr.state(SnapKind::Received, key), None);
    // Within the size limit, but the disk must keep more free than it has.
    let store = Store::with_config(SnapConfig {
        keep_free: u64::MAX / 2,
        ..SnapConfig::default()
    });
    let err = store.mgr.receive(key, &announce(1024)).err().unwrap();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    // A snapshot that fits is taken.
    let store = Store::with_config(SnapConfig::default());
    assert!(store.mgr.receive(key, &announce(1024)).is_ok());
}
