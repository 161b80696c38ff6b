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

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};

/// The environment variable naming the trigger file (tests only).
pub const FAIL_DISK_ENV: &str = "TESSERA_TEST_FAIL_DISK_WHEN";

/// The environment variable naming the slow-sync trigger file (tests only).
pub const SLOW_SYNC_ENV: &str = "TESSERA_TEST_SLOW_SYNC_WHEN";

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
