//! Disk fault injection, for the tests that kill a store's disk.
//!
//! A process started with [`FAIL_DISK_ENV`] set to a path fails every engine read and write
//! (and flush) with an I/O error while a file exists at that path, as a dead disk would
//! (EIO). A test creates the file to kill the disk of a running store and removes it before
//! restarting the store. Without the variable, which is how every store runs outside tests,
//! nothing is checked but one `OnceLock` read per engine operation.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The environment variable naming the trigger file (tests only).
pub const FAIL_DISK_ENV: &str = "TESSERA_TEST_FAIL_DISK_WHEN";

static TRIGGER: OnceLock<Option<PathBuf>> = OnceLock::new();

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
