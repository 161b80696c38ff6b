#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test Tessera. Idempotent, and quick when
# everything is already there.
#   - libclang (Debian's libclang-dev): RocksDB's Rust bindings are generated with bindgen.
#   - cargo-nextest: the test runner behind `make test` and the stage targets.
# protoc is not needed: the build uses a vendored one.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/detect.sh"

if ! have_libclang; then
    if command -v apt-get >/dev/null; then
        echo "setup: installing libclang-dev (needed to build RocksDB's bindings)"
        sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libclang-dev >/dev/null
        if ! have_libclang; then
            echo "setup: libclang-dev installed, but no libclang.so that bindgen loads was found" >&2
            exit 1
        fi
    else
        echo "setup: libclang not found; install your distribution's libclang development package" >&2
        exit 1
    fi
fi

if ! have_nextest; then
    echo "setup: installing cargo-nextest"
    cargo install cargo-nextest --locked --quiet
fi
