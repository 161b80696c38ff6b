//! Disk fault injection, for the tests that kill a store's disk.
//!
//! A process started with [`FAIL_DISK_ENV`] set to a path fails every engine read and write
//! (and flush) with an I/O error while a file exists at that path, as a dead disk would
//! (EIO). A test creates the file to kill the disk of a running store and removes it before
//! restarting the store. Without the variable, which is how every store runs outside tests,
//! nothing is checked but one `OnceLock` read per engine operation.
//!
//! A process started with [`SLOW_SYNC_ENV`] set to a path has a slow disk while a file exists
//! there: every synced write sleeps for the number of milliseconds the file holds (100 when it
//! holds no number) before it syncs, as a disk with a long fsync would. Unset, it costs one
//! `OnceLock` read per synced write.
//!
//! A process started with [`LOSE_UNSYNCED_ENV`]` = 1` loses what a power cut loses when it is
//! killed: every write that was not synced. Unsynced writes skip the WAL and live only in the
//! memtable until a memtable flush (RocksDB's own, or the one before the next synced write of
//! the same engine, which keeps what survives a prefix of the writes in order, as a WAL synced
//! later would). So kill -9 of such a process is a power cut: unsynced writes since the last
//! flush are gone, synced ones and everything before them survive, and a write batch survives
//! whole or not at all (flushes are atomic across column families). Unset, it costs one
//! `OnceLock` read per write.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::error::{Error, Result};

/// The environment variable naming the trigger file (tests only).
pub const FAIL_DISK_ENV: &str = "TESSERA_TEST_FAIL_DISK_WHEN";

/// The environment variable naming the slow-sync trigger file (tests only).
pub const SLOW_SYNC_ENV: &str = "TESSERA_TEST_SLOW_SYNC_WHEN";

/// The environment variable that makes a kill lose unsynced writes (tests only).
pub const LOSE_UNSYNCED_ENV: &str = "TESSERA_TEST_LOSE_UNSYNCED";

/// The delay of a synced write when the slow-sync file holds no number.
const DEFAULT_SLOW_SYNC: Duration = Duration::from_millis(100);

static TRIGGER: OnceLock<Option<PathBuf>> = OnceLock::new();
static SLOW_SYNC: OnceLock<Option<PathBuf>> = OnceLock::new();

/// `Err` while the disk is failed: [`FAIL_DISK_ENV`] names a file that exists.
pub(crate) fn check_disk() -> Result<()> {
    let trigger = TRIGGER.get_or_init(|| std::env::var_os(FAIL_DISK_ENV).map(PathBuf::from));
    match trigger {
        Some(path) if path.exists() => Err(Error::Io(format!(
            "Input/output error (disk fault injected: {} exists)",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Sleeps while the disk is made slow: [`SLOW_SYNC_ENV`] names a file that exists (see the
/// module documentation). Called before every synced write.
pub(crate) fn maybe_slow_sync() {
    let trigger = SLOW_SYNC.get_or_init(|| std::env::var_os(SLOW_SYNC_ENV).map(PathBuf::from));
    let Some(path) = trigger else {
        return;
    };
    // A missing file (the usual case) is a fast disk; one holding no number a 100 ms fsync.
    if let Ok(text) = std::fs::read_to_string(path) {
        let delay = text
            .trim()
            .parse()
            .map_or(DEFAULT_SLOW_SYNC, Duration::from_millis);
        std::thread::sleep(delay);
    }
}

/// Whether unsynced writes are kept out of the WAL ([`LOSE_UNSYNCED_ENV`]).
pub(crate) fn lose_unsynced() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(LOSE_UNSYNCED_ENV).is_some_and(|v| v == "1"))
}

/// The engines (by address) holding unsynced writes in memtables only. The lock is held for a
/// whole write, so "flush, then write synced" is never overtaken by an unsynced write.
pub(crate) fn unflushed() -> &'static Mutex<HashSet<usize>> {
    static UNFLUSHED: OnceLock<Mutex<HashSet<usize>>> = OnceLock::new();
    UNFLUSHED.get_or_init(Mutex::default)
}
