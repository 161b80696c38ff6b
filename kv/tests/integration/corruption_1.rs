//! Flipped bits on disk are found by checksum and never served as data: a flipped byte in an
//! SST makes the reads of its block fail (the store then stops, as on any engine error), and one
//! in the middle of the write-ahead log makes the engine refuse to open, rather than silently
//! dropping the synced writes after it. A log whose last record was torn by a crash (the write
//! was never acknowledged: it had not synced) opens with every record before it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kv::engine::{get_cf, open_engine, Cf, WriteBatch};

use crate::child;

fn key(n: u32) -> Vec<u8> {
    format!("key{n:05}").into_bytes()
}

fn value(n: u32) -> Vec<u8> {
    format!("value of {n} ").repeat(8).into_bytes()
}

fn write(db: &Arc<rocksdb::DB>, range: std::ops::Range<u32>, sync: bool) {
    for n in range {
        let mut wb = WriteBatch::new(db);
        wb.put_cf(Cf::Default, &key(n), &value(n)).unwrap();
        wb.write(sync).unwrap();
    }
}

/// The files of `dir` whose names end with `ext`.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect()
}

/// Flips every bit of the byte at `at` of `path`.
fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn sst_bit_flip_is_detected_not_served_1() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_engine(dir.path(), &Cf::ALL).unwrap();
        write(&db, 0..2000, false);
        db.flush().unwrap();
    }
    let ssts = files(dir.path(), ".sst");
    assert_eq!(ssts.len(), 1, "{ssts:?}");
    // Data blocks come first in an SST; a third of the way in is inside one.
    let len = std::fs::metadata(&ssts[0]).unwrap().len() as usize;
    flip(&ssts[0], len / 3);
    let db = match open_engine(dir.path(), &Cf::ALL) {
        Ok(db) => db,
        Err(e) => {
            assert!(e.to_string().contains("orruption"), "{e}");
            return;
        }
    };
    let mut refused = 0;
    for n in 0..2000 {
        match get_cf(&db, Cf::Default, &key(n)) {
            Ok(v) => assert_eq!(v, Some(value(n)), "key {n} served wrong"),
            Err(e) => {
                assert!(e.to_string().contains("orruption"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "no read noticed the flipped byte");
}

/// In the child (run as `test`): 200 synced writes, then an abort, as kill -9 (they are only
/// in the log). In the parent: runs the child; returns its directory and log file.
fn synced_writes_then_kill(test: &str) -> (tempfile::TempDir, PathBuf) {
    if let Some(dir) = child::dir() {
        let db = open_engine(&dir, &Cf::ALL).unwrap();
        write(&db, 0..200, true);
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    child::run_until_abort(test, dir.path(), &[]);
    let wal = files(dir.path(), ".log")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a write-ahead log");
    (dir, wal)
}

#[test]
fn torn_last_log_record_is_dropped_alone_1() {
    let (dir, wal) =
        synced_writes_then_kill("corruption_1::torn_last_log_record_is_dropped_alone_1");
    let len = std::fs::metadata(&wal).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    f.set_len(len - 10).unwrap();
    let db = open_engine(dir.path(), &Cf::ALL).unwrap();
    for n in 0..199 {
        assert_eq!(
            get_cf(&db, Cf::Default, &key(n)).unwrap(),
            Some(value(n)),
            "key {n}"
        );
    }
    assert_eq!(
        get_cf(&db, Cf::Default, &key(199)).unwrap(),
        None,
        "the torn record"
    );
}

#[test]
fn wal_bit_flip_refuses_to_open_1() {
    let (dir, wal) = synced_writes_then_kill("corruption_1::wal_bit_flip_refuses_to_open_1");
    let len = std::fs::metadata(&wal).unwrap().len() as usize;
    flip(&wal, len / 2);
    match open_engine(dir.path(), &Cf::ALL) {
        Err(e) => assert!(e.to_string().contains("orruption"), "{e}"),
        Ok(db) => {
            let kept = (0..200)
                .filter(|&n| get_cf(&db, Cf::Default, &key(n)).unwrap().is_some())
                .count();
            panic!("opened with a corrupt log, keeping {kept} of 200 synced writes");
        }
    }
}
