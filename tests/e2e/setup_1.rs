//! `scripts/detect.sh`: what `make setup` takes for an installed libclang, run against fake
//! filesystem roots. A base image that ships only `libclang-cpp.so.N` must not count: bindgen
//! cannot load it, and setup would skip installing `libclang-dev`. Likewise for etcd, which
//! `setup.sh bench` installs unless both `etcd` and `etcdctl` are there.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs `FUNCTION ROOT` from the project's detect script; true when it succeeds.
fn detect(function: &str, root: &Path) -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/detect.sh");
    let status = Command::new("bash")
        .arg("-c")
        .arg(r#". "$1" && "$2" "$3""#)
        .arg("detect")
        .arg(script)
        .arg(function)
        .arg(root)
        .status()
        .expect("run bash");
    status.success()
}

/// Runs `have_libclang ROOT`; true when it succeeds.
fn have_libclang(root: &Path) -> bool {
    detect("have_libclang", root)
}

/// Runs `have_etcd ROOT`; true when it succeeds.
fn have_etcd(root: &Path) -> bool {
    detect("have_etcd", root)
}

/// Creates an empty file at `root/rel`.
fn touch(root: &Path, rel: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"").unwrap();
}

/// Creates an empty executable file at `root/rel`.
fn touch_executable(root: &Path, rel: &str) {
    touch(root, rel);
    let path = root.join(rel);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn detect_libclang_ignores_libclang_cpp_1() {
    let root = tempfile::tempdir().unwrap();
    assert!(!have_libclang(root.path()), "an empty root has no libclang");
    // What the base image ships: the C++ API library only.
    touch(root.path(), "usr/lib/llvm-14/lib/libclang-cpp.so.14");
    touch(root.path(), "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14");
    assert!(
        !have_libclang(root.path()),
        "libclang-cpp alone is not a libclang bindgen can load"
    );
}

#[test]
fn detect_libclang_finds_what_bindgen_loads_1() {
    for rel in [
        "usr/lib/llvm-14/lib/libclang.so",
        "usr/lib/llvm-14/lib/libclang.so.1",
        "usr/lib/llvm-16/lib/libclang-16.so",
        "usr/lib/x86_64-linux-gnu/libclang-14.so.1",
        "usr/lib/libclang.so.13",
        "usr/local/lib/libclang-15.so.15",
    ] {
        let root = tempfile::tempdir().unwrap();
        touch(root.path(), "usr/lib/llvm-14/lib/libclang-cpp.so.14");
        touch(root.path(), rel);
        assert!(have_libclang(root.path()), "{rel} is a loadable libclang");
    }
}

#[test]
fn detect_etcd_1() {
    let root = tempfile::tempdir().unwrap();
    assert!(!have_etcd(root.path()), "an empty root has no etcd");
    touch_executable(root.path(), "usr/bin/etcd");
    assert!(
        !have_etcd(root.path()),
        "etcd without etcdctl is not enough"
    );
    touch(root.path(), "usr/bin/etcdctl");
    assert!(
        !have_etcd(root.path()),
        "an etcdctl that is not executable does not count"
    );
    touch_executable(root.path(), "usr/bin/etcdctl");
    assert!(have_etcd(root.path()), "etcd and etcdctl, both executable");
}
