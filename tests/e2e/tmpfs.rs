//! Small filesystems made by a test: a tmpfs of a chosen size, mounted on a fresh directory
//! and grown on demand, so a store's data directory can run out of space for real.
//!
//! Mounting needs root (the e2e tests run as root in CI); without it the test fails and says
//! so rather than passing without having run.

use std::path::Path;
use std::process::Command;

/// A mounted tmpfs; unmounted (lazily, so a process still using it does not block) on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

fn mount(args: &[&str]) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .output()
        .map_err(|e| format!("run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {args:?}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Tmpfs {
    /// A tmpfs of `mib` MiB on a new directory.
    pub fn mount(mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("mount point");
        let path = dir.path().display().to_string();
        if let Err(e) = mount(&["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs", &path]) {
            panic!("this test makes a small filesystem and must run as root: {e}");
        }
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Makes `link` a symbolic link to the filesystem (a store's data directory on it).
    pub fn link_as(&self, link: &Path) {
        std::os::unix::fs::symlink(self.path(), link).expect("link a data dir to the tmpfs");
    }

    /// Resizes the filesystem to `mib` MiB (space "returns" to whatever runs on it).
    pub fn resize(&self, mib: u64) {
        let path = self.path().display().to_string();
        mount(&["-o", &format!("remount,size={mib}m"), &path]).expect("resize the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-l", &self.path().display().to_string()])
            .status();
    }
}
