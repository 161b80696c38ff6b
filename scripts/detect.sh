#!/usr/bin/env bash
# What setup.sh looks for, as functions over a filesystem root (default /), so a test can run
# them against a fake root. Sourced by setup.sh and by tests/e2e/setup_1.rs.

# have_libclang [ROOT]: succeeds when ROOT holds a libclang that bindgen can load. bindgen (via
# clang-sys) dlopens `libclang.so`, `libclang.so.N`, `libclang-N.so` or `libclang-N.so.M`;
# `libclang-cpp.so.N` (the C++ API library that base images often ship alone) is a different
# library and does not count.
have_libclang() {
    local root=${1:-} dir f
    local dirs=("$root/usr/lib" "$root/usr/local/lib")
    [ -n "${LIBCLANG_PATH:-}" ] && [ -z "$root" ] && dirs=("$LIBCLANG_PATH" "${dirs[@]}")
    for dir in "$root"/usr/lib/llvm-*/lib "$root"/usr/lib/*-linux-gnu "$root"/usr/lib64; do
        [ -d "$dir" ] && dirs+=("$dir")
    done
    for dir in "${dirs[@]}"; do
        for f in "$dir"/libclang.so "$dir"/libclang.so.* "$dir"/libclang-[0-9]*.so "$dir"/libclang-[0-9]*.so.*; do
            [ -e "$f" ] && return 0
        done
    done
    return 1
}

# have_nextest: cargo-nextest answers.
have_nextest() {
    cargo nextest --version >/dev/null 2>&1
}

# have_etcd [ROOT]: succeeds when etcd and etcdctl (the baseline of `make bench-compare`) are
# there: executable in ROOT/usr/bin, or, without ROOT, on PATH.
have_etcd() {
    local root=${1:-} bin path
    for bin in etcd etcdctl; do
        if [ -n "$root" ]; then
            path=$root/usr/bin/$bin
        else
            path=$(type -P "$bin") || return 1
        fi
        # type -P names a non-executable file too when PATH holds no executable one.
        [ -f "$path" ] && [ -x "$path" ] || return 1
    done
    return 0
}
