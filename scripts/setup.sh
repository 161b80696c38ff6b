#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test Tessera. Idempotent, and quick when
# everything is already there.
#   - libclang (Debian's libclang-dev): RocksDB's Rust bindings are generated with bindgen.
#   - cargo-nextest: the test runner behind `make test` and the stage targets.
#   - with the argument `bench` (`make bench-compare`), also etcd and etcdctl (Debian's
#     etcd-server and etcd-client), the baseline of scripts/bench_compare.py. Debian's postinst
#     may start a system etcd (denied in most containers); one that runs is harmless, the
#     benchmark's cluster uses ports of its own.
# protoc is not needed: the build uses a vendored one.
set -euo pipefail

mode=${1:-}
case $mode in
"" | bench) ;;
*)
    echo "usage: setup.sh [bench]" >&2
    exit 2
    ;;
esac

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

if [ "$mode" = bench ] && ! have_etcd; then
    if command -v apt-get >/dev/null; then
        echo "setup: installing etcd-server and etcd-client (the baseline of make bench-compare)"
        sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        # A postinst that fails to start the system service leaves the binaries in place: judge
        # by what is installed, below.
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null ||
            echo "setup: apt-get reported an error installing etcd; checking what was installed" >&2
        if ! have_etcd; then
            echo "setup: etcd and etcdctl still missing after installing etcd-server and etcd-client" >&2
            exit 1
        fi
    else
        echo "setup: etcd not found; install etcd and etcdctl (3.4 or later) and put them on PATH" >&2
        exit 1
    fi
fi
