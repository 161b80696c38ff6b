# Tessera — build, run and test.
#
#   make run        start a local 3-store raft cluster and a scheduler in the foreground
#                   (installs what is missing, builds; scripts/run-cluster.sh; Ctrl-C stops it)
#   make run-standalone  start a single standalone server instead
#   make test       everything CI runs
#   make projectN   one graded stage (project1, project2a|2b|2c, project3a|3b|3c, project4a|4b|4c)
#   make chaos      checked chaos on real processes: SEEDS seeds × SECS seconds (default 5 × 60)
#   make fmt / lint / bench / soak-raft / soak-3b
#   make bench-compare  etcd and Tessera side by side on loopback, one table (BENCH_* knobs)
#   make fuzz       fuzz a running 3-store cluster on every port for 10 minutes
#                   (TESSERA_FUZZ_SECS, TESSERA_FUZZ_SEED)

# Build outside the checkout so clones share one build of RocksDB; override to build elsewhere.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tessera-target
CARGO ?= cargo
NEXTEST = $(CARGO) nextest run --workspace --no-fail-fast
DATA_DIR ?= $(CURDIR)/tessera-data
ADDR ?= 127.0.0.1:20160
STATUS_ADDR ?= 127.0.0.1:20180

.PHONY: setup build run run-standalone test test-unit test-doc fmt fmt-check lint bench bench-compare soak-raft soak-3b fuzz chaos \
	project1 project2a project2b project2c project3a project3b project3c project4a project4b project4c

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --bins

# Data in $(DATA_DIR)/{scheduler,store1,store2,store3}, logs in $(DATA_DIR)/logs.
run: build
	@DATA_DIR="$(DATA_DIR)" bash scripts/run-cluster.sh

# Data in $(DATA_DIR)/standalone.
run-standalone: build
	@echo "Starting tessera-server (data in $(DATA_DIR)). Try, from another shell:"
	@echo "  curl -XPUT $(STATUS_ADDR)/kv/hello -d world"
	@echo "  curl $(STATUS_ADDR)/kv/hello"
	@echo "  $(CARGO_TARGET_DIR)/debug/tessera-ctl --addr $(ADDR) get hello"
	@echo "Stop with Ctrl-C."
	$(CARGO_TARGET_DIR)/debug/tessera-server --addr $(ADDR) --status-addr $(STATUS_ADDR) --data-dir $(DATA_DIR)

# Doc tests first, then the raftstore suites with the raft log written on a log-writer thread
# (raftstore.async_log_writes), again with plain writes applied on an apply thread
# (raftstore.async_apply) and with raft logs in the file engine (raftstore.raft_engine = "file"),
# all three off by default, so the run closes on nextest's summary of every test in the default
# configuration.
test: setup
	$(CARGO) test --workspace --doc
	TESSERA_TEST_ASYNC_LOG_WRITES=1 $(CARGO) nextest run -p test_raftstore --no-fail-fast
	TESSERA_TEST_ASYNC_APPLY=1 $(CARGO) nextest run -p test_raftstore --no-fail-fast
	TESSERA_TEST_RAFT_ENGINE=file $(CARGO) nextest run -p test_raftstore --no-fail-fast
	TESSERA_TEST_ENGINE=memory $(CARGO) nextest run -p tessera --test e2e -E 'test(/_1$$/)' --no-fail-fast
	$(NEXTEST)

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

# The crates a client takes (the shared encodings, the client library, the workloads) and the
# raft-log engines must not depend on RocksDB (scripts/check_no_rocksdb.sh, which fails on a
# crate that does). The modules of raftstore, scheduler and snap must not import each other in a
# cycle (scripts/check_import_cycles.py, which prints the cycles and fails).
lint: setup fmt-check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet
	CARGO="$(CARGO)" bash scripts/check_no_rocksdb.sh codec raftlog tessera-client workload
	python3 scripts/check_import_cycles.py raftstore/src scheduler/src snap/src

bench: setup
	$(CARGO) run --release --bin tessera-bench -- --mode local --clients 1
	$(CARGO) run --release --bin tessera-bench -- --mode grpc --clients 8

# etcd (Debian's etcd-server and etcd-client, installed when missing) and release Tessera clusters
# side by side, one system at a time, on loopback: one markdown table of throughput and latency,
# one of CPU time and peak memory (scripts/bench_compare.py). Knobs, from the environment or the
# command line: SYSTEMS (etcd,tessera,tessera-32), BENCH_SECS (10), BENCH_CLIENTS (1,16,64),
# BENCH_KEYS (100000), BENCH_VALUE_SIZE (256), BENCH_CONNS (3), BENCH_KEEP=1 keeps data and logs,
# BENCH_TESSERA_CONFIG=FILE starts every store with --config FILE (to measure a setting).
bench-compare:
	@bash scripts/setup.sh bench
	$(CARGO) build --release --bins
	python3 scripts/bench_compare.py

# The stage targets select tests by the stage suffix that ends their names.
project1: setup
	$(NEXTEST) -E 'test(/_1$$/)'
project2a: setup
	$(NEXTEST) -E 'test(/_2a[abc]$$/)'
project2b: setup
	$(NEXTEST) -E 'test(/_2b$$/)'
project2c: setup
	$(NEXTEST) -E 'test(/_2c$$/)'
project3a: setup
	$(NEXTEST) -E 'test(/_3a$$/)'
project3b: setup
	$(NEXTEST) -E 'test(/_3b$$/)'
project3c: setup
	$(NEXTEST) -E 'test(/_3c$$/)'
project4a: setup
	$(NEXTEST) -E 'test(/_4a$$/)'
project4b: setup
	$(NEXTEST) -E 'test(/_4b$$/)'
project4c: setup
	$(NEXTEST) -E 'test(/_4c$$/)'

# The raft property test over many more seeds than `make test` runs.
soak-raft: setup
	RAFT_PROPTEST_SEEDS=$${RAFT_PROPTEST_SEEDS:-20000} $(CARGO) nextest run --profile soak-raft -p raft --release -E 'test(random_safety_2c)'

# The generic scenarios (clients under faults, histories checked for linearizability): the 3B
# split and conf change ones, and the 2B/2C ones, each run SOAK_RUNS times (nextest stress runs;
# a hung run is killed by the slow-timeout of .config/nextest.toml).
SOAK_RUNS ?= 10
SOAK_FILTER = binary(integration) & (test(/^split_3b::split_(recover|unreliable|conf_change)/) \
	| test(/^conf_change_3b::conf_change_(recover|unreliable|snapshot)/) \
	| test(/^scenarios_2b::/) | test(/^snapshot_2c::snapshot_(recover|unreliable)/))
soak-3b: setup
	$(CARGO) nextest run -p test_raftstore --no-fail-fast --stress-count $(SOAK_RUNS) -E '$(SOAK_FILTER)'

# A running 3-store cluster fed random and near-valid raft messages, snapshot streams, client
# requests and bytes on every port for TESSERA_FUZZ_SECS (default 600) while a client writes:
# no store may panic or exit, no acknowledged write may be lost (tests/e2e/fuzz_store.rs; `make
# test` runs it for 10 s). It prints its seed first and its figures at the end; TESSERA_FUZZ_SEED
# replays a seed's inputs.
fuzz: setup
	TESSERA_FUZZ_SECS=$${TESSERA_FUZZ_SECS:-600} $(CARGO) nextest run --profile fuzz -p tessera --test e2e \
		--no-capture -E 'test(=fuzz_store::fuzz_store_2b)'

# Checked chaos on real processes (tessera-chaos): seeds FIRST_SEED.. (SEEDS of them), SECS seconds
# of clients each, under the nemesis kinds of NEMESIS (comma-separated, or all); CHAOS_ARGS adds
# flags (e.g. --stores 5). Exits non-zero on any violation, lost write, panic or unexpected exit;
# the evidence of a failed seed goes to $(CARGO_TARGET_DIR)/chaos/seed-N/. Replay one seed with
# `tessera-chaos --seed N --secs S` (the failing run prints the whole command line).
SEEDS ?= 5
SECS ?= 60
FIRST_SEED ?= 1
NEMESIS ?= all
CHAOS_ARGS ?=
chaos: setup
	$(CARGO) build --bins
	$(CARGO_TARGET_DIR)/debug/tessera-chaos --first-seed $(FIRST_SEED) --seeds $(SEEDS) --secs $(SECS) \
		--nemesis $(NEMESIS) --out-dir $(CARGO_TARGET_DIR)/chaos $(CHAOS_ARGS)
