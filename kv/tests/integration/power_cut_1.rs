//! `TESSERA_TEST_LOSE_UNSYNCED=1` makes a killed process lose what a power cut loses. A child
//! process (this test binary run again) writes to an engine in that mode and aborts, as kill -9
//! does (no destructor, no flush); the parent reopens the engine and finds exactly the writes a
//! power cut would have kept: every synced write, every write before it, whole batches, and
//! none of the unsynced writes after the last synced one.

use std::path::Path;

use kv::engine::{get_cf, open_engine, Cf, WriteBatch};
use kv::fault::LOSE_UNSYNCED_ENV;

use crate::child;

/// One batch of two column families: key `n` in default and in write.
fn batch(db: &std::sync::Arc<rocksdb::DB>, n: u32, sync: bool) {
    let mut wb = WriteBatch::new(db);
    let key = format!("k{n:03}");
    wb.put_cf(Cf::Default, key.as_bytes(), b"v").unwrap();
    wb.put_cf(Cf::Write, key.as_bytes(), b"w").unwrap();
    wb.write(sync).unwrap();
}

/// The child's writes: 0..10 unsynced, 10 synced, 11..20 unsynced, then an abort.
fn write_then_abort(dir: &Path) -> ! {
    let db = open_engine(dir, &Cf::ALL).unwrap();
    for n in 0..10 {
        batch(&db, n, false);
    }
    batch(&db, 10, true);
    for n in 11..20 {
        batch(&db, n, false);
    }
    std::process::abort();
}

fn present(db: &std::sync::Arc<rocksdb::DB>, n: u32) -> (bool, bool) {
    let key = format!("k{n:03}");
    (
        get_cf(db, Cf::Default, key.as_bytes()).unwrap().is_some(),
        get_cf(db, Cf::Write, key.as_bytes()).unwrap().is_some(),
    )
}

#[test]
fn kill_loses_exactly_the_unsynced_tail_1() {
    if let Some(dir) = child::dir() {
        write_then_abort(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |lose: bool| {
        let engine = dir.path().join(if lose { "lossy" } else { "normal" });
        child::run_until_abort(
            "power_cut_1::kill_loses_exactly_the_unsynced_tail_1",
            &engine,
            &[(LOSE_UNSYNCED_ENV, lose.then_some("1"))],
        );
        open_engine(&engine, &Cf::ALL).unwrap()
    };
    // Without the switch a kill loses nothing (the page cache survives a process).
    let db = run(false);
    for n in 0..20 {
        assert_eq!(present(&db, n), (true, true), "normal mode, batch {n}");
    }
    // With it, the synced batch and all before it survive, the tail after it is gone.
    let db = run(true);
    for n in 0..=10 {
        assert_eq!(present(&db, n), (true, true), "lossy mode, batch {n}");
    }
    for n in 11..20 {
        assert_eq!(present(&db, n), (false, false), "lossy mode, batch {n}");
    }
}
