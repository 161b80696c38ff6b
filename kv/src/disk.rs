//! Free space, and the reserve a store keeps for itself.
//!
//! [`available_space`] is the space an unprivileged writer may still use on the filesystem
//! holding a path. [`DiskReserve`] keeps a store's reserve `R` (config `reserve_space`):
//!
//! ```text
//!   S = available + placeholder held        (the placeholder is the store's own, so it counts)
//!   S <= R + R/16   -> Full:   new writes refused; the placeholder is deleted, giving raft,
//!                              compaction and log GC room to work in
//!   S >  R + R/8    -> Normal: writes accepted; the placeholder (R/2) is made again
//!   in between      -> the state does not change (no flapping at the threshold)
//! ```
//!
//! The store also limits what it writes between two checks to half of `S - R` (see the
//! raftstore's disk monitor), so writes slow down as `S` nears `R`; the sixteenth above `R`
//! makes sure they end in Full rather than creeping ever closer to `R` in smaller steps.
//!
//! The placeholder (`space_placeholder_file`, allocated for real with `posix_fallocate`, not
//! sparse) makes sure another process filling the disk cannot take the store's last R/2: it is
//! the store's to give back to itself. Because the state follows `S`, deleting or recreating the
//! placeholder never flips it, and while Normal with the placeholder in place at least R/2 is
//! still really free, so writes are refused before the disk is out of space.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Name of the placeholder file in the directory a [`DiskReserve`] watches.
pub const PLACEHOLDER_FILE: &str = "space_placeholder_file";

/// Bytes an unprivileged writer may still use on the filesystem holding `path`.
///
/// # Errors
/// The `statvfs` call failed (no such path, ...).
pub fn available_space(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` points to writable memory of
    // the right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    let (blocks, size) = (st.f_bavail as u64, st.f_frsize as u64);
    Ok(blocks.saturating_mul(size))
}

/// Allocates `len` bytes to `file` for real (no sparse file: the blocks are taken now).
fn allocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let len =
        libc::off_t::try_from(len).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: the descriptor is open for writing for the duration of the call.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Whether a store may take new writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskState {
    /// Free space above the reserve.
    Normal,
    /// Free space at or below the reserve: new writes are refused.
    Full,
}

/// What one [`DiskReserve::check`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskStatus {
    /// The state after the check.
    pub state: DiskState,
    /// Free space, not counting the placeholder.
    pub available: u64,
    /// Bytes the placeholder holds.
    pub placeholder: u64,
}

/// Keeps a store's free-space reserve in directory `dir` (see the module documentation).
#[derive(Debug)]
pub struct DiskReserve {
    dir: PathBuf,
    reserve: u64,
    state: DiskState,
}

impl DiskReserve {
    /// A reserve of `reserve` bytes for the filesystem holding `dir` (0 turns the check off:
    /// always Normal, no placeholder). Checks once before returning.
    ///
    /// # Errors
    /// `dir` cannot be examined.
    pub fn new(dir: &Path, reserve: u64) -> io::Result<DiskReserve> {
        let mut r = DiskReserve {
            dir: dir.to_path_buf(),
            reserve,
            state: DiskState::Normal,
        };
        if reserve == 0 {
            // A placeholder from a run with a reserve is the store's space: give it back.
            let _ = std::fs::remove_file(r.placeholder_path());
        } else {
            r.check()?;
        }
        Ok(r)
    }

    fn placeholder_path(&self) -> PathBuf {
        self.dir.join(PLACEHOLDER_FILE)
    }

    /// The size of the placeholder this reserve keeps.
    fn placeholder_size(&self) -> u64 {
        self.reserve / 2
    }

    /// The current state, as of the last check.
    pub fn state(&self) -> DiskState {
        self.state
    }

    /// The reserve in bytes (0: no reserve).
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// The state as of the last check, with the free space and placeholder now; changes
    /// nothing.
    ///
    /// # Errors
    /// The free space cannot be read.
    pub fn status(&self) -> io::Result<DiskStatus> {
        let placeholder = std::fs::metadata(self.placeholder_path()).map_or(0, |m| m.len());
        Ok(DiskStatus {
            state: self.state,
            available: available_space(&self.dir)?,
            placeholder,
        })
    }

    /// Looks at the free space, moves between Normal and Full, and deletes or recreates the
    /// placeholder accordingly.
    ///
    /// # Errors
    /// The free space cannot be read.
    pub fn check(&mut self) -> io::Result<DiskStatus> {
        let path = self.placeholder_path();
        if self.reserve == 0 {
            let available = available_space(&self.dir)?;
            return Ok(DiskStatus {
                state: DiskState::Normal,
                available,
                placeholder: 0,
            });
        }
        let held = std::fs::metadata(&path).map_or(0, |m| m.len());
        let available = available_space(&self.dir)?;
        let total = available.saturating_add(held);
        if total <= self.reserve + self.reserve / 16 {
            if self.state == DiskState::Normal {
                tracing::error!(dir = %self.dir.display(), available, reserve = self.reserve,
                    "disk almost full: refusing new writes until space returns");
            }
            self.state = DiskState::Full;
        } else if total > self.reserve + self.reserve / 8 {
            if self.state == DiskState::Full {
                tracing::warn!(dir = %self.dir.display(), available, reserve = self.reserve,
                    "free space is back above the reserve: taking writes again");
            }
            self.state = DiskState::Normal;
        }
        let mut placeholder = held;
        match self.state {
            DiskState::Full if held > 0 => {
                std::fs::remove_file(&path)?;
                placeholder = 0;
            }
            DiskState::Normal if held < self.placeholder_size() => {
                match self.make_placeholder(&path) {
                    Ok(()) => placeholder = self.placeholder_size(),
                    Err(e) => {
                        let _ = std::fs::remove_file(&path);
                        placeholder = 0;
                        tracing::warn!(path = %path.display(), error = %e,
                            "cannot allocate the space placeholder");
                    }
                }
            }
            _ => {}
        }
        Ok(DiskStatus {
            state: self.state,
            available: available_space(&self.dir)?,
            placeholder,
        })
    }

    fn make_placeholder(&self, path: &Path) -> io::Result<()> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        allocate(&f, self.placeholder_size())?;
        f.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_space_reads_the_filesystem_1() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available_space(dir.path()).unwrap() > 0);
        assert!(available_space(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_reserve_keeps_its_placeholder_while_normal_1() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = DiskReserve::new(dir.path(), 1 << 20).unwrap();
        // A test machine has more than 1 MiB free.
        assert_eq!(r.state(), DiskState::Normal);
        let st = r.check().unwrap();
        assert_eq!(st.placeholder, 512 * 1024);
        let meta = std::fs::metadata(dir.path().join(PLACEHOLDER_FILE)).unwrap();
        assert_eq!(meta.len(), 512 * 1024);
        // Allocated for real, not sparse.
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 >= 512 * 1024,
            "{} blocks",
            meta.blocks()
        );
        // No reserve: the placeholder is given back.
        let r0 = DiskReserve::new(dir.path(), 0).unwrap();
        assert_eq!(r0.state(), DiskState::Normal);
        assert!(!dir.path().join(PLACEHOLDER_FILE).exists());
    }

    #[test]
    fn a_reserve_larger_than_the_disk_is_full_and_holds_nothing_1() {
        let dir = tempfile::tempdir().unwrap();
        let huge = available_space(dir.path())
            .unwrap()
            .saturating_mul(4)
            .max(1 << 40);
        let mut r = DiskReserve::new(dir.path(), huge).unwrap();
        assert_eq!(r.state(), DiskState::Full);
        let st = r.check().unwrap();
        assert_eq!(st.placeholder, 0);
        assert!(!dir.path().join(PLACEHOLDER_FILE).exists());
    }
}
