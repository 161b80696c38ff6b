#!/usr/bin/env bash
# Fails when any of the given crates depends, directly or not, on RocksDB: the crates a client
# takes (the shared encodings, later the client library) must build on a machine without
# libclang or a C++ toolchain. Usage: scripts/check_no_rocksdb.sh CRATE...
set -euo pipefail
cargo="${CARGO:-cargo}"
status=0
for crate in "$@"; do
    deps=$("$cargo" tree -p "$crate" -e normal,build --prefix none --offline 2>/dev/null ||
        "$cargo" tree -p "$crate" -e normal,build --prefix none)
    if grep -qE '^(rocksdb|librocksdb-sys) ' <<<"$deps"; then
        echo "check_no_rocksdb: $crate depends on RocksDB:" >&2
        "$cargo" tree -p "$crate" -e normal,build -i librocksdb-sys 2>/dev/null | head -20 >&2 || true
        status=1
    else
        echo "check_no_rocksdb: $crate builds without RocksDB"
    fi
done
exit "$status"
