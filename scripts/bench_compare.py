#!/usr/bin/env python3
"""Tessera and etcd side by side on loopback (`make bench-compare`).

First measures what bounds a 1-client put here (fdatasync of a small append, alone and three
at once; a loopback round trip to another process) and prints the target they give. Then runs
the same workload against each system of SYSTEMS, one system at a time, each on a fresh cluster
of three members on this machine, and prints one markdown table of throughput and latency (with
the ratios of each Tessera flavour to etcd), whether each Tessera cluster's 1-client put p50 is
within the target, then the CPU time and peak memory of every process. The load generator is `tessera-bench` (`--mode etcd` or `--mode cluster`): it
writes every key once (the "load" phase), then, for each client count, runs a put phase and a
get phase of BENCH_SECS seconds each.

Systems:
  etcd        3 etcd members (client ports 23791..23793, peer ports 23801..23803), default fsync
              and snapshot settings; the bench drives the leader's endpoint only (no forwarding).
  tessera     a tessera-scheduler (127.0.0.1:24379) and 3 `tessera-server --engine raft` stores
              (grpc 24160.., peer 24170.., http 24180..), started like scripts/run-cluster.sh.
  tessera-N   a fresh Tessera cluster whose keyspace the bench first splits into N regions.
  tessera-unary, tessera-unary-N
              the same, the client sending one unary call per request (`--no-batch`) instead of
              its BatchCommands streams: the before and after of client batching, in one run.

Environment (defaults in brackets):
  SYSTEMS           [etcd,tessera,tessera-32]  which systems, in this order
  BENCH_SECS        [10]       seconds of each measured phase
  BENCH_CLIENTS     [1,16,64]  concurrent clients, one put and one get phase for each
  BENCH_KEYS        [100000]   distinct keys
  BENCH_VALUE_SIZE  [256]      value size in bytes
  BENCH_CONNS       [3]        connections the bench spreads its clients over
  BENCH_KEEP        [0]        1 keeps the data and logs of the run (kept anyway if a system fails)
  CARGO_TARGET_DIR  [~/.cache/tessera-target]  binaries come from its release/ directory
  TESSERA_BIN_DIR   [$CARGO_TARGET_DIR/release]  where the Tessera binaries come from (e.g. a
                    copy of an earlier build, to measure a change before and after)
  TESSERA_BENCH     [$TESSERA_BIN_DIR/tessera-bench]  another load generator binary
  BENCH_TESSERA_CONFIG [unset]  a config file every Tessera store starts with (--config), to
                    measure a setting against the defaults with the same build

Data and logs go to $CARGO_TARGET_DIR/bench-compare/run-<timestamp>/<system>/, the raw results
to $CARGO_TARGET_DIR/bench-compare/results-<timestamp>.json. Exits non-zero if a system failed
(the others still run).
"""

import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/tessera-target")
BIN_DIR = os.environ.get("TESSERA_BIN_DIR") or os.path.join(TARGET, "release")
BENCH = os.environ.get("TESSERA_BENCH") or os.path.join(BIN_DIR, "tessera-bench")

HOST = "127.0.0.1"
ETCD_CLIENT_PORTS = [23791, 23792, 23793]
ETCD_PEER_PORTS = [23801, 23802, 23803]
SCHEDULER_PORT = 24379
GRPC_PORT, PEER_PORT, HTTP_PORT = 24160, 24170, 24180
STORES = 3
ETCD_QUOTA = 8 << 30
ETCD_SNAPSHOT_COUNT = 100000  # etcd 3.4's default
STOP_TIMEOUT = 20
PROBE_KEY = "bench-compare-probe"  # read, never written: tells the leader from a follower
PHASES = ["load", "put", "get"]

LIVE = []  # every child still to be stopped: Proc objects


class Failure(Exception):
    """A system could not be set up or benchmarked; the run goes on with the next one."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP."""


def env_int(name, default):
    value = os.environ.get(name) or str(default)
    if not value.isdigit() or int(value) <= 0:
        sys.exit(f"bench-compare: {name}={value!r} is not a positive integer")
    return int(value)


def load_config():
    clients = os.environ.get("BENCH_CLIENTS") or "1,16,64"
    if not re.fullmatch(r"[1-9]\d*(,[1-9]\d*)*", clients):
        sys.exit(f"bench-compare: BENCH_CLIENTS={clients!r} is not a list like 1,16,64")
    systems = [s for s in (os.environ.get("SYSTEMS") or "etcd,tessera,tessera-32").split(",") if s]
    for s in systems:
        if not re.fullmatch(r"etcd|tessera(-unary)?(-[1-9]\d*)?", s):
            sys.exit(f"bench-compare: unknown system {s!r} in SYSTEMS "
                     "(etcd, tessera, tessera-N, tessera-unary, tessera-unary-N)")
    return {
        "systems": systems,
        "secs": env_int("BENCH_SECS", 10),
        "clients": [int(c) for c in clients.split(",")],
        "keys": env_int("BENCH_KEYS", 100000),
        "value_size": env_int("BENCH_VALUE_SIZE", 256),
        "conns": env_int("BENCH_CONNS", 3),
        "keep": os.environ.get("BENCH_KEEP", "0") not in ("", "0"),
        "tessera_config": tessera_config(),
    }


def tessera_config():
    """BENCH_TESSERA_CONFIG: a config file every Tessera store is started with (`--config`), to
    measure a setting against the defaults; None when unset."""
    path = os.environ.get("BENCH_TESSERA_CONFIG") or None
    if path is not None and not os.path.isfile(path):
        sys.exit(f"bench-compare: BENCH_TESSERA_CONFIG={path!r} is not a file")
    return os.path.abspath(path) if path else None


def run(argv, timeout=10, env=None):
    """Runs a short command; returns (exit code, stdout + stderr), code None when it failed to run."""
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, env=env)
        return p.returncode, p.stdout + p.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]).rstrip()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# Processes


class Proc:
    """A child in its own process group, stdout in LOG_DIR/NAME.out, stderr in LOG_DIR/NAME.log."""

    def __init__(self, name, argv, log_dir, env=None):
        self.name = name
        self.out = os.path.join(log_dir, name + ".out")
        self.log = os.path.join(log_dir, name + ".log")
        with open(self.out, "wb") as out, open(self.log, "ab") as err:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          env=env, start_new_session=True)
        self.pid = self.popen.pid
        self.stats = {}
        LIVE.append(self)

    def alive(self):
        return self.popen.poll() is None

    def died(self):
        """A Failure naming this child's exit status and its last log lines."""
        return Failure(f"{self.name} exited with status {self.popen.returncode} "
                       f"(log: {self.log})\n{tail(self.log)}")

    def sample(self):
        """CPU seconds and peak RSS so far, from /proc (a server, just before it is stopped)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
            self.stats["cpu_s"] = round(ticks / os.sysconf("SC_CLK_TCK"), 2)
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.stats["peak_rss_kib"] = int(line.split()[1])
        except (OSError, IndexError, ValueError):
            pass

    def signal(self, sig):
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop(procs):
    """Samples, then stops the children (SIGTERM, SIGKILL after STOP_TIMEOUT); returns warnings."""
    warnings = []
    procs = [p for p in procs if p in LIVE]
    running = [p for p in procs if p.alive()]  # the others' exit was reported already
    for p in running:
        p.sample()
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for p in procs:
        try:
            p.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            warnings.append(f"{p.name} still ran {STOP_TIMEOUT}s after SIGTERM; killed")
            p.signal(signal.SIGKILL)
            p.popen.wait()
        p.stats["exit"] = p.popen.returncode
        if p in running and p.popen.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
            warnings.append(f"{p.name} exited with status {p.popen.returncode} when stopped "
                            f"(log: {p.log})")
        LIVE.remove(p)
    return warnings


def check_ports_free(ports):
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError as e:
                raise Failure(f"{HOST}:{port} is not free ({e.strerror}); is an earlier run still up?")


def wait_until(what, timeout, procs, ready):
    """Polls ready() until it returns true; fails when a child exits or after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            if not p.alive():
                raise p.died()
        if ready():
            return
        if time.monotonic() > deadline:
            raise Failure(f"{what} not ready after {timeout}s")
        time.sleep(0.3)


# ---------------------------------------------------------------------------------------------
# etcd


def etcd_env(ctl):
    """The environment without ETCD_* (etcd rejects a flag also given by its variable)."""
    prefix = "ETCDCTL_" if ctl else "ETCD_"
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
    if ctl:
        env["ETCDCTL_API"] = "3"
    elif platform.machine() == "aarch64":
        env["ETCD_UNSUPPORTED_ARCH"] = "arm64"  # etcd 3.4 refuses to start on arm64 without it
    return env


def start_etcd(work, log_dir):
    """Starts the members; returns (processes, the leader's client endpoint)."""
    etcd, etcdctl = shutil.which("etcd"), shutil.which("etcdctl")
    if not etcd or not etcdctl:
        raise Failure("etcd or etcdctl not on PATH; run `bash scripts/setup.sh bench`")
    check_ports_free(ETCD_CLIENT_PORTS + ETCD_PEER_PORTS)
    cluster = ",".join(f"etcd-{i + 1}=http://{HOST}:{p}" for i, p in enumerate(ETCD_PEER_PORTS))
    procs = []
    for i, (client, peer) in enumerate(zip(ETCD_CLIENT_PORTS, ETCD_PEER_PORTS)):
        name = f"etcd-{i + 1}"
        procs.append(Proc(name, [
            etcd, "--name", name, "--data-dir", os.path.join(work, name),
            "--listen-client-urls", f"http://{HOST}:{client}",
            "--advertise-client-urls", f"http://{HOST}:{client}",
            "--listen-peer-urls", f"http://{HOST}:{peer}",
            "--initial-advertise-peer-urls", f"http://{HOST}:{peer}",
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", "bench-compare",
            "--quota-backend-bytes", str(ETCD_QUOTA), "--snapshot-count", str(ETCD_SNAPSHOT_COUNT),
            "--logger", "zap", "--log-outputs", "stderr",
        ], log_dir, env=etcd_env(ctl=False)))
    endpoints = ",".join(f"{HOST}:{p}" for p in ETCD_CLIENT_PORTS)
    ctl = [etcdctl, "--endpoints", endpoints, "--dial-timeout", "2s", "--command-timeout", "5s"]
    env = etcd_env(ctl=True)
    wait_until("etcd (endpoint health)", 30, procs,
               lambda: run(ctl + ["endpoint", "health"], env=env)[0] == 0)

    leader = []

    def find_leader():
        code, out = run(ctl + ["endpoint", "status", "-w", "json"], env=env)
        try:
            for e in json.loads(out) if code == 0 else []:
                if e["Status"]["leader"] == e["Status"]["header"]["member_id"]:
                    leader.append(e["Endpoint"])
                    return True
        except (ValueError, KeyError, TypeError):
            pass
        return False

    wait_until("etcd (a leader)", 30, procs, find_leader)
    return procs, leader[0].removeprefix("http://")


# ---------------------------------------------------------------------------------------------
# Tessera


def wait_line(proc, prefix, timeout=30):
    """Waits for the line `PREFIX ADDR` a Tessera process prints once listening; returns ADDR."""
    found = []

    def ready():
        with open(proc.out, errors="replace") as f:
            found.extend(line.split()[1] for line in f if line.startswith(prefix + " "))
        return bool(found)

    wait_until(f"{proc.name} ('{prefix} ADDR' line)", timeout, [proc], ready)
    return found[0]


def start_tessera(work, log_dir, store_config=None):
    """Starts a scheduler and the stores like scripts/run-cluster.sh (each store with the config
    file `store_config` when given); returns (processes, the scheduler's address) once a leader
    serves and every store holds a peer."""
    server, sched, ctl = (os.path.join(BIN_DIR, b) for b in
                          ("tessera-server", "tessera-scheduler", "tessera-ctl"))
    for b in (server, sched, ctl):
        if not os.access(b, os.X_OK):
            raise Failure(f"{b} not found; run `cargo build --release --bins`")
    check_ports_free([SCHEDULER_PORT] + [p + n for p in (GRPC_PORT, PEER_PORT, HTTP_PORT)
                                         for n in range(STORES)])
    procs = [Proc("scheduler", [sched, "--addr", f"{HOST}:{SCHEDULER_PORT}",
                                "--status-addr", f"{HOST}:0",
                                "--data-dir", os.path.join(work, "scheduler")], log_dir)]
    scheduler = wait_line(procs[0], "scheduler")
    token = os.path.join(work, "cluster-token")
    with open(os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(os.urandom(32).hex())
    grpc = []
    # One store at a time, so that the first, and only it, bootstraps the cluster.
    for n in range(STORES):
        name = f"store{n + 1}"
        argv = [server, "--engine", "raft", "--scheduler", scheduler,
                "--addr", f"{HOST}:{GRPC_PORT + n}", "--peer-addr", f"{HOST}:{PEER_PORT + n}",
                "--status-addr", f"{HOST}:{HTTP_PORT + n}", "--cluster-token-file", token,
                "--data-dir", os.path.join(work, name)]
        if store_config:
            argv += ["--config", store_config]
        procs.append(Proc(name, argv, log_dir))
        wait_line(procs[-1], "http")
        grpc.append(wait_line(procs[-1], "grpc"))

    def role(addr):
        code, out = run([ctl, "--addr", addr, "get", PROBE_KEY])
        if code in (0, 1):
            return "leader"
        return "follower" if "not leader" in out else "none"

    def ready():
        roles = [role(a) for a in grpc]
        if roles.count("leader") != 1 or roles.count("follower") != STORES - 1:
            return False
        return run([ctl, "--scheduler", scheduler, "get", PROBE_KEY])[0] in (0, 1)

    wait_until("tessera (a leader and a peer on every store)", 60, procs, ready)
    return procs, scheduler


# ---------------------------------------------------------------------------------------------
# The bench


def take_line(system, line, res):
    """Echoes a line of the bench's stdout (a JSON result as a summary) and keeps the results."""
    try:
        r = json.loads(line) if line.startswith("{") else None
    except ValueError:
        r = None
    if isinstance(r, dict) and "phase" in r:
        res["phases"].append(r)
        print(f"    {system} {r['phase']} clients={r.get('clients')}: "
              f"{r.get('ops_per_sec', 0):,.0f} ops/s, p50 {r.get('p50_ms')} ms, "
              f"p99 {r.get('p99_ms')} ms, errors {r.get('errors')}")
    elif isinstance(r, dict) and "regions" in r:
        res["regions"] = r
        print(f"    {system}: {r['regions']} regions, leaders per store {r.get('leaders_per_store')}")
    else:
        print(f"    | {line}")


def run_bench(system, argv, log_dir, servers, timeout, res):
    """Runs the bench while the servers run, collecting its results and rusage into res."""
    proc = Proc("bench", argv, log_dir)
    deadline = time.monotonic() + timeout
    offset, buf, status = 0, b"", None
    while status is None:
        pid, wstatus, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            status = proc.popen.returncode = os.waitstatus_to_exitcode(wstatus)
            res["procs"]["bench"] = {"cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
                                     "peak_rss_kib": ru.ru_maxrss, "exit": status}
        with open(proc.out, "rb") as f:
            f.seek(offset)
            buf += f.read()
            offset = f.tell()
        *lines, buf = buf.split(b"\n")
        if status is not None:
            lines.append(buf)
        for line in lines:
            if line.strip():
                take_line(system, line.decode(errors="replace").strip(), res)
        if status is not None:
            break
        dead = [s for s in servers if not s.alive()]
        if dead or time.monotonic() > deadline:
            stop([proc])
            res["procs"]["bench"] = {"exit": proc.popen.returncode}
            raise dead[0].died() if dead else Failure(f"the bench ran longer than {timeout}s; killed")
        time.sleep(0.5)
    LIVE.remove(proc)
    if status != 0:
        raise Failure(f"tessera-bench exited with status {status} (log: {proc.log})\n{tail(proc.log)}")


def run_system(system, config, run_dir):
    """Sets up a fresh cluster, benchmarks it and stops it; returns its results."""
    work = os.path.join(run_dir, system)
    log_dir = os.path.join(work, "logs")
    os.makedirs(log_dir)
    res = {"system": system, "ok": False, "error": None, "warnings": [], "phases": [],
           "regions": None, "procs": {}, "logs": log_dir}
    common = ["--clients", ",".join(map(str, config["clients"])),
              "--phase-secs", str(config["secs"]), "--keys", str(config["keys"]),
              "--value-size", str(config["value_size"]), "--conns", str(config["conns"]),
              "--preload", "--json"]
    servers = []
    t0 = time.monotonic()
    print(f"\n== {system}: starting a fresh cluster (logs in {log_dir})")
    try:
        if system == "etcd":
            servers, leader = start_etcd(work, log_dir)
            argv = [BENCH, "--mode", "etcd", "--endpoints", leader] + common
            print(f"   ready in {time.monotonic() - t0:.1f}s; leader at {leader}")
        else:
            servers, scheduler = start_tessera(work, log_dir, config["tessera_config"])
            argv = [BENCH, "--mode", "cluster", "--scheduler", scheduler] + common
            if system.startswith("tessera-unary"):
                argv += ["--no-batch"]
            regions = re.search(r"-([1-9]\d*)$", system)
            if regions:
                argv += ["--regions", regions.group(1)]
            print(f"   ready in {time.monotonic() - t0:.1f}s; scheduler at {scheduler}")
        res["bench_argv"] = argv
        print("   " + " ".join(argv))
        timeout = 2 * len(config["clients"]) * config["secs"] + 900
        run_bench(system, argv, log_dir, servers, timeout, res)
        res["ok"] = True
    except Failure as e:
        res["error"] = str(e)
        print(f"!! {system} failed: {e}", file=sys.stderr)
    finally:
        # Everything still running is this system's (also what a failed start left behind):
        # stores before the scheduler, as scripts/run-cluster.sh stops them.
        procs = list(LIVE)
        res["warnings"] = (stop([p for p in procs if p.name != "scheduler"]) +
                           stop([p for p in procs if p.name == "scheduler"]))
        bench = res["procs"].pop("bench", None)
        res["procs"].update((p.name, p.stats) for p in procs if p.name != "bench")
        if bench:
            res["procs"]["bench"] = bench
    for w in res["warnings"]:
        print(f"!! {system}: {w}", file=sys.stderr)
    return res


# ---------------------------------------------------------------------------------------------
# Report


# A 1-client put waits for one synced log write and two loopback round trips (client to
# leader, leader to follower, and back), plus the work of the stores: the target is one fsync,
# two round trips and this much.
PUT_TARGET_OVERHEAD_MS = 0.3
# What a store syncs for a 1-client put: one entry and the raft state.
SYNC_BYTES = 350


def fdatasync_p50_ms(path, n):
    """The median time of appending SYNC_BYTES to a file in `path`'s directory and fdatasync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    times = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            os.write(fd, b"x" * SYNC_BYTES)
            os.fdatasync(fd)
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return times[len(times) // 2]


def disk_and_loopback(work_dir):
    """The disk's and the loopback's costs that bound a 1-client put: fdatasync of a small
    append alone and three at once (each store syncs every put, on one disk here), and a
    loopback TCP round trip to another process (measured from Python: an upper bound)."""
    alone = fdatasync_p50_ms(os.path.join(work_dir, "sync-probe"), 2000)
    pids = []
    for i in range(3):
        pid = os.fork()
        if pid == 0:
            try:
                v = fdatasync_p50_ms(os.path.join(work_dir, f"sync-probe-{i}"), 1000)
                with open(os.path.join(work_dir, f"sync-probe-{i}.ms"), "w") as f:
                    f.write(repr(v))
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    three = []
    for i in range(3):
        path = os.path.join(work_dir, f"sync-probe-{i}.ms")
        with open(path) as f:
            three.append(float(f.read()))
        os.unlink(path)

    # The echo side is another process, as a store is: each round trip wakes it.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    pid = os.fork()
    if pid == 0:
        try:
            peer, _ = server.accept()
            peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := peer.recv(64):
                peer.sendall(data)
        finally:
            os._exit(0)
    client = socket.create_connection(server.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    try:
        for _ in range(5000):
            start = time.perf_counter()
            client.sendall(b"p" * 64)
            got = 0
            while got < 64:
                got += len(client.recv(64 - got))
            rtts.append((time.perf_counter() - start) * 1e3)
    finally:
        client.close()
        server.close()
        os.waitpid(pid, 0)
    rtts.sort()
    rtt = rtts[len(rtts) // 2]
    return {
        "fdatasync_ms": round(alone, 3),
        "fdatasync_three_at_once_ms": round(max(three), 3),
        "loopback_rtt_ms": round(rtt, 3),
        "put_1_target_ms": [round(alone + 2 * rtt + PUT_TARGET_OVERHEAD_MS, 2),
                            round(max(three) + 2 * rtt + PUT_TARGET_OVERHEAD_MS, 2)],
    }


def machine_state(work_dir):
    def first(path, key):
        try:
            with open(path) as f:
                return next((l.split(":", 1)[1].strip() for l in f if l.startswith(key)), "?")
        except OSError:
            return "?"

    def mem_gib(key):
        v = first("/proc/meminfo", key).split()
        return round(int(v[0]) / (1 << 20), 1) if v and v[0].isdigit() else None

    code, etcd = run(["etcd", "--version"], env=etcd_env(ctl=False))
    code_rev, rev = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    # --no-optional-locks: no index refresh, so no clash with a git command running alongside.
    code_dirty, dirty = run(["git", "--no-optional-locks", "-C", ROOT, "status", "--porcelain",
                             "--untracked-files=no"])
    others = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() in ("etcd", "tessera-server", "tessera-schedul"):
                    others.append(pid)
        except OSError:
            pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": first("/proc/cpuinfo", "model name"),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "mem_total_gib": mem_gib("MemTotal"),
        "mem_available_gib": mem_gib("MemAvailable"),
        "kernel": f"{platform.system()} {platform.release()}",
        "etcd": etcd.splitlines()[0].replace("etcd Version: ", "") if code == 0 else "not found",
        "tessera": (rev.strip() if code_rev == 0 else "?") +
                   ("-dirty" if code_dirty == 0 and dirty.strip() else ""),
        "foreign_pids": others,
        **disk_and_loopback(work_dir),
    }


def print_header(m, config):
    print(f"## bench-compare, {m['date']}\n")
    print(f"- machine: {m['nproc']} CPUs ({m['cpu']}), load average {m['loadavg']} at start, "
          f"memory {m['mem_total_gib']} GiB total / {m['mem_available_gib']} GiB available, "
          f"{m['kernel']}")
    print(f"- etcd {m['etcd']}, tessera {m['tessera']}")
    lo, hi = m["put_1_target_ms"]
    print(f"- disk: fdatasync of a {SYNC_BYTES}-byte append {m['fdatasync_ms']} ms alone, "
          f"{m['fdatasync_three_at_once_ms']} ms three at once; loopback round trip "
          f"{m['loopback_rtt_ms']} ms; so a 1-client put's target (one fsync, two round trips "
          f"and {PUT_TARGET_OVERHEAD_MS} ms) is {lo}-{hi} ms")
    print(f"- workload: {config['keys']} keys of {config['value_size']}-byte values, preloaded; "
          f"clients {','.join(map(str, config['clients']))}; {config['secs']} s per put/get "
          f"phase; {config['conns']} connections; all on loopback, one system at a time")
    if config["tessera_config"]:
        print(f"- Tessera stores started with --config {config['tessera_config']}")
    if m["foreign_pids"]:
        print(f"- warning: other etcd/tessera processes are running (pids "
              f"{', '.join(m['foreign_pids'])}); they share the CPUs")


def markdown(header, rows, left=1):
    """A markdown table; the first `left` columns left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" if i >= left else ":" + "-" * (w + 1)
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in rows])


def ms(v):
    return "—" if v is None else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def results_table(results):
    names = [r["system"] for r in results]
    table = {(p["phase"], p["clients"], r["system"]): p for r in results for p in r["phases"]}
    keys = sorted({(ph, c) for ph, c, _ in table},
                  key=lambda k: (PHASES.index(k[0]) if k[0] in PHASES else 9, k[1]))
    base = "etcd" if "etcd" in names else None
    others = [n for n in names if n != base] if base else []
    header = ["phase", "clients"]
    for n in names:
        header += [f"{n} ops/s", f"{n} p50/p99/p999 ms"]
    header += [f"{n}/etcd" for n in others]
    rows = []
    for ph, c in keys:
        row = [ph, c]
        for n in names:
            p = table.get((ph, c, n))
            if p is None:
                row += ["—", "—"]
                continue
            ops = f"{p.get('ops_per_sec', 0):,.0f}"
            if p.get("errors"):
                ops += f" ({p['errors']} err)"
            row += [ops, " / ".join(ms(p.get(k)) for k in ("p50_ms", "p99_ms", "p999_ms"))]
        b = table.get((ph, c, base))
        for n in others:
            p = table.get((ph, c, n))
            ok = p and b and b.get("ops_per_sec")
            row.append(f"{p['ops_per_sec'] / b['ops_per_sec']:.2f}x" if ok else "—")
        rows.append(row)
    return markdown(header, rows, left=1)


def resources_table(results):
    rows = []
    for r in results:
        for name, s in r["procs"].items():
            rss = s.get("peak_rss_kib")
            cpu = s.get("cpu_s")
            rows.append([r["system"], name, "—" if cpu is None else f"{cpu:.1f}",
                         "—" if rss is None else f"{rss / 1024:.0f}"])
    return markdown(["system", "process", "CPU s", "peak RSS MiB"], rows, left=2)


def put_1_verdicts(results, machine):
    """For each Tessera system, its 1-client put p50 against the machine's target."""
    lo, hi = machine["put_1_target_ms"]
    out = []
    for r in results:
        p50 = next((p.get("p50_ms") for p in r["phases"]
                    if p["phase"] == "put" and p["clients"] == 1), None)
        if r["system"].startswith("tessera") and p50 is not None:
            verdict = "within" if p50 <= hi else "above"
            out.append(f"{r['system']}: 1-client put p50 {p50} ms, {verdict} the target "
                       f"{lo}-{hi} ms")
    return out


def report(results, machine):
    """The tables, with a line for each failed system and each system's regions."""
    out = []
    if any(r["phases"] for r in results):
        out.append(f"\n## Results\n\n{results_table(results)}\n")
        out.extend(put_1_verdicts(results, machine))
    for r in results:
        if not r["ok"]:
            out.append(f"{r['system']}: FAILED ({r['error'].splitlines()[0]})")
        if r["regions"]:
            per = ", ".join(f"store{k} {v}" for k, v in
                            sorted(r["regions"].get("leaders_per_store", {}).items()))
            out.append(f"{r['system']}: {r['regions'].get('regions')} regions, leaders: {per}")
    if any(r["procs"] for r in results):
        out.append(f"\n## CPU and memory (each process, whole run including the preload)\n\n"
                   f"{resources_table(results)}\n")
    return "\n".join(out)


def main():
    config = load_config()
    sys.stdout.reconfigure(line_buffering=True)
    if not os.access(BENCH, os.X_OK):
        sys.exit(f"bench-compare: {BENCH} not found; build it with `cargo build --release --bins`")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(TARGET, "bench-compare")
    run_dir = os.path.join(base, f"run-{stamp}")
    os.makedirs(run_dir)

    def on_signal(signum, _frame):
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    machine = machine_state(run_dir)
    print_header(machine, config)
    results = []
    interrupted = False
    try:
        for system in config["systems"]:
            results.append(run_system(system, config, run_dir))
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        print("\nbench-compare: interrupted; stopping every process...", file=sys.stderr)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stop(list(LIVE))

    failed = [r["system"] for r in results if not r["ok"]]
    if results:
        print(report(results, machine))
        path = os.path.join(base, f"results-{stamp}.json")
        with open(path, "w") as f:
            json.dump({"machine": machine, "config": config, "results": results}, f, indent=2)
        print(f"Raw results: {path}")
    if failed or config["keep"]:
        print(f"Data and logs kept in {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
