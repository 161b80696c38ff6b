#!/usr/bin/env bash
# A local Tessera cluster in the foreground (`make run`): one tessera-scheduler and three
# `tessera-server --engine raft` stores on loopback, data and logs under ./tessera-data.
#
# The first store bootstraps the cluster with a one-peer region; the scheduler then adds a peer
# on each other store, which catches up by snapshot. The script waits until the region has a
# leader that serves and a peer on every store, prints the endpoints, and runs until Ctrl-C or
# SIGTERM; then it stops the stores and the scheduler (SIGTERM, SIGKILL after STOP_TIMEOUT).
# A child that dies while the cluster runs is reported; the others keep running, so killing a
# store by hand shows the cluster failing over.
#
# Data survives a stop: run it again to get the same cluster back. To start over, stop it and
# remove $DATA_DIR/{scheduler,store1,store2,store3}.
#
# Environment (defaults in brackets):
#   DATA_DIR        [<repo>/tessera-data]  scheduler/, store1..3/ and logs/ go here
#   BIN_DIR         [$CARGO_TARGET_DIR/debug, CARGO_TARGET_DIR defaulting to ~/.cache/tessera-target]
#   SCHEDULER_ADDR  [127.0.0.1:2379]
#   SCHEDULER_STATUS_ADDR [127.0.0.1:2381]  the scheduler's HTTP port (/metrics, /stores, ...)
#   GRPC_PORT       [20160]  store N serves clients on GRPC_PORT+N-1, the other stores on
#   PEER_PORT       [20170]  PEER_PORT+N-1 and HTTP on HTTP_PORT+N-1
#   HTTP_PORT       [20180]
#   READY_TIMEOUT   [60]     seconds to wait for the cluster to be ready
#   STOP_TIMEOUT    [20]     seconds a child gets to stop after SIGTERM

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}/debug}
DATA_DIR=${DATA_DIR:-$ROOT/tessera-data}
SCHEDULER_ADDR=${SCHEDULER_ADDR:-127.0.0.1:2379}
SCHEDULER_STATUS_ADDR=${SCHEDULER_STATUS_ADDR:-127.0.0.1:2381}
GRPC_PORT=${GRPC_PORT:-20160}
PEER_PORT=${PEER_PORT:-20170}
HTTP_PORT=${HTTP_PORT:-20180}
READY_TIMEOUT=${READY_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-20}
STORES=3
HOST=${SCHEDULER_ADDR%:*}
LOG_DIR=$DATA_DIR/logs
# Read, never written: a get tells the leader (it serves) from a follower (NotLeader).
PROBE_KEY=run-cluster-probe

SERVER=$BIN_DIR/tessera-server
SCHED=$BIN_DIR/tessera-scheduler
CTL=$BIN_DIR/tessera-ctl
for bin in "$SERVER" "$SCHED" "$CTL"; do
    if [[ ! -x $bin ]]; then
        echo "run-cluster: $bin not found; run \`make build\` first (or set BIN_DIR)" >&2
        exit 1
    fi
done

# Children, in start order: pid, name and log of each.
PIDS=()
NAMES=()
LOGS=()
# Set for the children that exited while the cluster ran (already reported).
REPORTED=()
declare -A GRPC PEER HTTP

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
alive() { kill -0 "$1" 2>/dev/null; }

# Stops the children that still run: the stores (SIGTERM, SIGKILL for any still running after
# STOP_TIMEOUT), then the scheduler the same way. Fails if one did not exit cleanly.
stop_all() {
    local failed=0
    trap '' INT TERM
    ((${#PIDS[@]})) || return 0
    stop_some $(seq 1 $((${#PIDS[@]} - 1))) || failed=1
    stop_some 0 || failed=1
    return $failed
}

# stop_some I...: stops the children at these indexes of PIDS.
stop_some() {
    local i pid deadline status failed=0
    for i in "$@"; do
        alive "${PIDS[i]}" && kill -TERM "${PIDS[i]}" 2>/dev/null || true
    done
    deadline=$(($(date +%s) + STOP_TIMEOUT))
    for i in "$@"; do
        pid=${PIDS[i]}
        [[ -n ${REPORTED[i]:-} ]] && continue
        while alive "$pid" && (($(date +%s) < deadline)); do
            sleep 0.1
        done
        if alive "$pid"; then
            echo "run-cluster: ${NAMES[i]} (pid $pid) still running after ${STOP_TIMEOUT}s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        status=0
        wait "$pid" 2>/dev/null || status=$?
        if ((status != 0)); then
            echo "run-cluster: ${NAMES[i]} exited with status $status (log: ${LOGS[i]})" >&2
            failed=1
        fi
    done
    return $failed
}

# Prints the last lines a child logged since this script started it, without a backtrace.
show_log() {
    echo "--- $1, last lines ---" >&2
    awk '/^=== .* run-cluster: starting / { n = 0; skip = 0 }
        /^Stack backtrace:/ { skip = 1 }
        !skip { line[n++ % 15] = $0 }
        END { for (i = (n > 15 ? n - 15 : 0); i < n; i++) print line[i % 15] }' "$1" >&2 || true
}

die() {
    echo "run-cluster: $*" >&2
    stop_all || true
    exit 1
}

on_signal() {
    echo
    echo "Stopping the cluster..."
    if stop_all; then
        echo "Stopped."
        exit 0
    fi
    exit 1
}
trap on_signal INT TERM

# start NAME PREFIX CMD...: starts CMD with stdout in $LOG_DIR/NAME.out and stderr in
# $LOG_DIR/NAME.log, and waits (at most 30 s) for the line starting with PREFIX that it prints
# once listening.
start() {
    local name=$1 prefix=$2 out log pid deadline
    shift 2
    out=$LOG_DIR/$name.out
    log=$LOG_DIR/$name.log
    : >"$out"
    echo "=== $(date -u +%FT%TZ) run-cluster: starting $name: $*" >>"$log"
    "$@" >"$out" 2>>"$log" &
    pid=$!
    PIDS+=("$pid")
    NAMES+=("$name")
    LOGS+=("$log")
    deadline=$(($(date +%s) + 30))
    until grep -q "^$prefix " "$out"; do
        if ! alive "$pid"; then
            REPORTED[${#PIDS[@]} - 1]=1
            show_log "$log"
            die "$name exited during startup (log: $log)"
        fi
        (($(date +%s) < deadline)) || die "$name printed no '$prefix ADDR' line within 30 s (log: $log)"
        sleep 0.1
    done
}

# role ADDR: "leader" when the store at ADDR served a read of the probe key's region, "follower"
# when it holds an initialized peer of that region led elsewhere (a peer that has applied its
# snapshot), else "none". A learner answers like a follower; the scheduler adds voters directly
# unless its use_learner is set.
role() {
    local out code=0
    out=$("$CTL" --addr "$1" get "$PROBE_KEY" 2>&1) || code=$?
    if ((code == 0 || code == 1)); then
        echo leader
    elif [[ $out == *"not leader"* ]]; then
        echo follower
    else
        echo none
    fi
}

mkdir -p "$LOG_DIR"
t0=$(now)
echo "Starting tessera-scheduler and $STORES raft stores (data and logs in $DATA_DIR)..."

start scheduler scheduler "$SCHED" --addr "$SCHEDULER_ADDR" \
    --status-addr "$SCHEDULER_STATUS_ADDR" --data-dir "$DATA_DIR/scheduler"
SCHEDULER_ADDR=$(sed -n 's/^scheduler //p' "$LOG_DIR/scheduler.out")

# The stores share a cluster token: their peer ports take raft only from each other. Made once,
# kept with the data (readable by its owner only).
TOKEN_FILE=$DATA_DIR/cluster-token
if [[ ! -s $TOKEN_FILE ]]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$TOKEN_FILE")
fi

# The first store alone, so that it, and only it, bootstraps a new cluster.
for n in $(seq 1 $STORES); do
    name=store$n
    start "$name" http "$SERVER" --engine raft --scheduler "$SCHEDULER_ADDR" \
        --addr "$HOST:$((GRPC_PORT + n - 1))" --peer-addr "$HOST:$((PEER_PORT + n - 1))" \
        --status-addr "$HOST:$((HTTP_PORT + n - 1))" \
        --cluster-token-file "$TOKEN_FILE" --data-dir "$DATA_DIR/$name"
    GRPC[$name]=$(sed -n 's/^grpc //p' "$LOG_DIR/$name.out")
    PEER[$name]=$(sed -n 's/^peer //p' "$LOG_DIR/$name.out")
    HTTP[$name]=$(sed -n 's/^http //p' "$LOG_DIR/$name.out")
done

# Ready: one store serves as the leader, every other one holds a peer (so the region has
# $STORES replicas), and a request routed through the scheduler is served.
echo "Waiting for a leader and $STORES replicas (at most ${READY_TIMEOUT}s)..."
deadline=$(($(date +%s) + READY_TIMEOUT))
while :; do
    leaders=0 followers=0 leader= roles=
    for n in $(seq 1 $STORES); do
        r=$(role "${GRPC[store$n]}")
        roles+=" store$n=$r"
        case $r in
        leader) leaders=$((leaders + 1)) leader=store$n ;;
        follower) followers=$((followers + 1)) ;;
        esac
    done
    if ((leaders == 1 && followers == STORES - 1)); then
        code=0
        "$CTL" --scheduler "$SCHEDULER_ADDR" get "$PROBE_KEY" >/dev/null 2>&1 || code=$?
        ((code == 0 || code == 1)) && break
        roles+=" (not yet served through the scheduler)"
    fi
    for i in "${!PIDS[@]}"; do
        if ! alive "${PIDS[i]}"; then
            REPORTED[i]=1
            show_log "${LOGS[i]}"
            die "${NAMES[i]} exited (log: ${LOGS[i]})"
        fi
    done
    (($(date +%s) < deadline)) || die "not ready after ${READY_TIMEOUT}s:$roles (logs in $LOG_DIR)"
    sleep 0.2
done

cat <<EOF

Tessera cluster ready in $(elapsed "$t0") s: one region, $STORES replicas, leader on $leader.

  scheduler  $SCHEDULER_ADDR
EOF
for n in $(seq 1 $STORES); do
    printf '  store%d     grpc %s   peer %s   http %s\n' "$n" "${GRPC[store$n]}" \
        "${PEER[store$n]}" "${HTTP[store$n]}"
done
cat <<EOF
  data       $DATA_DIR/{scheduler,store1..$STORES}, cluster token in $TOKEN_FILE
  logs       $LOG_DIR/*.log

Try, from another shell (any store's HTTP gateway forwards to the leader):
  curl -XPUT ${HTTP[store1]}/kv/hello -d world
  curl ${HTTP[store2]}/kv/hello
  $CTL --scheduler $SCHEDULER_ADDR put k1 v1
  $CTL --scheduler $SCHEDULER_ADDR get k1
  $CTL --scheduler $SCHEDULER_ADDR scan --limit 10
  $BIN_DIR/tessera-bench --mode cluster --scheduler $SCHEDULER_ADDR

Stop with Ctrl-C.
EOF

# Foreground until a signal; report children that die meanwhile.
while :; do
    running=0
    for i in "${!PIDS[@]}"; do
        if alive "${PIDS[i]}"; then
            running=$((running + 1))
        elif [[ -z ${REPORTED[i]:-} ]]; then
            status=0
            wait "${PIDS[i]}" 2>/dev/null || status=$?
            echo "run-cluster: ${NAMES[i]} (pid ${PIDS[i]}) exited with status $status (log: ${LOGS[i]})" >&2
            REPORTED[i]=1
        fi
    done
    if ((running == 0)); then
        echo "run-cluster: every process of the cluster has exited" >&2
        exit 1
    fi
    sleep 1 &
    wait $! || true
done
