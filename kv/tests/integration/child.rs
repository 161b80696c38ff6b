//! Tests that need a process to die as kill -9 leaves it (no destructor, no flush): the test
//! runs its own binary again, filtered to itself, as a child that works in a directory and
//! aborts; the parent then looks at what the child left on disk.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set in the child: the directory it works in.
const CHILD_DIR: &str = "TESSERA_TEST_CHILD_DIR";

/// In the child, the directory to work in; `None` in the test itself.
pub fn dir() -> Option<PathBuf> {
    std::env::var_os(CHILD_DIR).map(PathBuf::from)
}

/// Runs test `test` (its full path) as a child working in `dir`, with `env` set (`None`:
/// removed), and checks that it died rather than returned.
pub fn run_until_abort(test: &str, dir: &Path, env: &[(&str, Option<&str>)]) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test]).env(CHILD_DIR, dir);
    for (name, value) in env {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    let status = cmd.output().unwrap().status;
    assert!(!status.success(), "the child must die by abort");
}
