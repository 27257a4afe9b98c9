#!/usr/bin/env bash
# Three-member clusters on loopback, driven by the load generator: etcd 3.4 (the anchor of
# issue 12's performance goals) and ringlock's own three members (the functions under
# "ringlock hooks" below).
#
# For each system in SYSTEMS: starts three members on free 127.0.0.1 ports, each with its own
# data directory under target/loadtest/cluster/ and a proper initial cluster, all pinned to
# SERVER_CORES; then, from GEN_CORE:
#   1. load: uncontended and contended locks at CONNS x DEPTHS, the connections spread over
#      the three members (round robin, as a fleet of clients given every member) and again all
#      on the leader (ROUTES);
#   2. failover, TRIALS times: SIGKILL of the leader, and the time from the kill to the first
#      grant by the new leader (`loadtest failover`, trying both survivors every 10 ms); the
#      killed member is restarted on its data and the cluster is whole again before the next.
# Prints markdown tables on stdout (loadtest/cluster_report.py): throughput and latency per
# shape, failover p50/p99/max, and, with both systems, the goals of issue 12.
#
#   loadtest/cluster.sh                                    # both, about 9 minutes, after the build
#   DURATION=2 CONNS="1 16" TRIALS=3 loadtest/cluster.sh   # a quicker, rougher pass
#   SYSTEMS=ringlock WORKLOADS=" " TRIALS=20 loadtest/cluster.sh   # ringlock's failovers alone
#
# etcd is Debian's etcd-server 3.4 (installed if missing, with etcdctl) at its defaults: 100 ms
# heartbeat, 1 s election timeout, an fsync per WAL append. What one lock costs it in Raft
# entries is in loadtest/src/proto/etcd.rs.
#
# Every process the script starts is stopped by its PID when it exits (a member killed by a
# trial is reaped and forgotten), every wait and run is bounded in time, and everything
# listens on and talks to 127.0.0.1 only. Raw results (one JSON report per line) are kept in
# target/loadtest/cluster/, the members' logs next to them.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

SYSTEMS=${SYSTEMS:-"etcd ringlock"}   # etcd, ringlock, or both
DURATION=${DURATION:-5}               # seconds measured per run
WARMUP=${WARMUP:-1}                   # seconds of warm-up per run, not measured
CONNS=${CONNS:-"1 16 64"}             # connection counts
DEPTHS=${DEPTHS:-"1 16"}              # closed-loop depths (etcd: concurrent calls per connection)
WORKLOADS=${WORKLOADS:-"uncontended contended"}
ROUTES=${ROUTES:-"all leader"}        # all: connections round robin over the members; leader: all on it
TRIALS=${TRIALS:-10}                  # failover trials per system
SERVER_CORES=${SERVER_CORES:-0}       # every member runs here
GEN_CORE=${GEN_CORE:-1}               # the generator runs here
TTL_MS=30000                          # lease of every lock
HOT=4                                 # hot names of the contended workload
SECRET=loadtest-secret
BUILD=${BUILD:-1}                     # 0: use the binaries already in target/release
QUIET_WAIT=${QUIET_WAIT:-600}         # longest wait, in seconds, for idle cores before each run
RINGLOCK_TARGET=${RINGLOCK_TARGET:-wire}  # the protocol ringlock's rows speak
READY_S=30                            # longest wait for a cluster (or a restarted member) to serve
FAILOVER_TIMEOUT_S=30                 # longest wait for the first grant after a kill

OUT=$ROOT/target/loadtest/cluster
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
FAILOVERS=$OUT/failovers.jsonl
: >"$RESULTS"
: >"$FAILOVERS"

LOADTEST=$ROOT/target/release/loadtest
RINGLOCK=$ROOT/target/release/ringlock

log() { echo "cluster: $*" >&2; }

# shellcheck source=loadtest/common.sh
. "$ROOT/loadtest/common.sh"

# Members are started disowned (`started`): bash then neither reports the ones a trial kills
# nor can `wait` for them, so `gone` polls for their end instead.

# started PID: a member just started in the background, to stop by its PID on exit.
started() {
    PIDS+=("$1")
    disown "$1"
}

# gone PID: until the process has ended (10 s at most; bash reaps it).
gone() {
    local _
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    log "process $1 still runs 10 s after it was stopped"
}

# forget PID: a member that has ended; its PID may be reused, so cleanup must not signal it.
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

# On exit, after common.sh's cleanup has signalled them: wait for the members to end, so that
# none outlives the script.
trap 'cleanup; for pid in "${PIDS[@]}"; do gone "$pid"; done' EXIT

# apt_install PACKAGE...: Debian packages, without letting them start their services.
apt_install() {
    log "installing $* (Debian packages; needs root)"
    local own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
    [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
}

# --- build and install -----------------------------------------------------------------------
command -v protoc >/dev/null || apt_install protobuf-compiler    # the etcd target's build
if [ "$BUILD" = 1 ]; then
    packages=(-p loadtest)
    case " $SYSTEMS " in *" ringlock "*) packages+=(-p ringlock) ;; esac
    log "building ${packages[*]} (release)"
    cargo build --release "${packages[@]}" >&2
fi

# --- etcd: three members -----------------------------------------------------------------------
E_CLIENT=() E_PEER=() E_PID=()

etcd_available() {
    if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
        apt_install etcd-server etcd-client
    fi
    etcd --version | grep -q 'etcd Version: 3\.4' || log "warning: $(etcd --version | head -1), not 3.4"
}

etcd_prepare() {
    local n peers=()
    for n in 1 2 3; do
        E_CLIENT[n]=$(free_port)
        E_PEER[n]=$(free_port)
        peers+=("m$n=http://127.0.0.1:${E_PEER[n]}")
        rm -rf "$OUT/etcd-$n"
    done
    E_CLUSTER=$(IFS=,; echo "${peers[*]}")
}

# etcd_start N: member N on its data directory (a new cluster the first time; on a restart etcd
# takes its membership from the data and ignores the initial-cluster flags).
etcd_start() {
    local n=$1
    taskset -c "$SERVER_CORES" etcd --name "m$n" --data-dir "$OUT/etcd-$n" \
        --listen-client-urls "http://127.0.0.1:${E_CLIENT[n]}" \
        --advertise-client-urls "http://127.0.0.1:${E_CLIENT[n]}" \
        --listen-peer-urls "http://127.0.0.1:${E_PEER[n]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${E_PEER[n]}" \
        --initial-cluster "$E_CLUSTER" --initial-cluster-token ringlock-loadtest \
        --initial-cluster-state new --logger zap --log-outputs stderr >>"$OUT/etcd-$n.log" 2>&1 &
    E_PID[n]=$!
    started "$!"
}

etcd_addr() { echo "127.0.0.1:${E_CLIENT[$1]}"; }
etcd_pid() { echo "${E_PID[$1]}"; }

# etcd_leader: the number (1-3) of the member that leads, by `etcdctl endpoint status`; nothing
# if none does (or no live member knows).
etcd_leader() {
    local endpoints
    endpoints=$(etcd_addr 1),$(etcd_addr 2),$(etcd_addr 3)
    { etcdctl --endpoints "$endpoints" --command-timeout=2s endpoint status -w json 2>/dev/null || true; } |
        python3 -c '
import json, sys
text = sys.stdin.read().strip()
endpoints = sys.argv[1].split(",")
for s in json.loads(text) if text else []:
    st = s["Status"]
    if st["leader"] and st["leader"] == st["header"]["member_id"]:
        print(endpoints.index(s["Endpoint"]) + 1)
        break' "$endpoints"
}

# etcd_ready: until all three members answer a quorum read and one leads (READY_S at most).
etcd_ready() {
    local endpoints _
    endpoints=$(etcd_addr 1),$(etcd_addr 2),$(etcd_addr 3)
    for _ in $(seq $((READY_S * 5))); do
        if etcdctl --endpoints "$endpoints" --command-timeout=1s endpoint health >/dev/null 2>&1 &&
            [ -n "$(etcd_leader)" ]; then
            return 0
        fi
        sleep 0.2
    done
    log "etcd is not whole after $READY_S s; its members' logs end:"
    tail -n 5 "$OUT"/etcd-*.log >&2
    exit 1
}

etcd_up() {
    etcd_prepare
    local n
    for n in 1 2 3; do
        etcd_start "$n"
    done
    etcd_ready
}

# --- ringlock hooks: its three-member cluster (issue 12) -----------------------------------------
# The members as issue 12 gives them: `--node-id N`, `--peers ID=HOST:PORT,...` (every member's
# consensus address, this one's too), each with its own `--port` and `--data-dir`; `GET
# /cluster` (secret required) tells `leader_id`. A ringlock built without `--peers` is skipped,
# with a line that says so.
R_PORT=() R_RAFT=() R_PID=()

ringlock_available() {
    if ! "$RINGLOCK" --help 2>/dev/null | grep -q -- '--peers'; then
        log "ringlock has no --peers yet (issue 12): no ringlock cluster to measure"
        return 1
    fi
}

ringlock_prepare() {
    local n peers=()
    for n in 1 2 3; do
        R_PORT[n]=$(free_port)
        R_RAFT[n]=$(free_port)
        peers+=("$n=127.0.0.1:${R_RAFT[n]}")
        rm -rf "$OUT/ringlock-$n"
        mkdir -p "$OUT/ringlock-$n"
    done
    R_PEERS=$(IFS=,; echo "${peers[*]}")
}

# ringlock_start N: member N on its data directory (new or, on a restart, as it was left).
ringlock_start() {
    local n=$1
    (cd "$OUT/ringlock-$n" && LOCKSERVER_SECRET=$SECRET exec taskset -c "$SERVER_CORES" "$RINGLOCK" \
        --bind 127.0.0.1 --port "${R_PORT[n]}" --threads 1 --node-id "$n" --peers "$R_PEERS" \
        --data-dir "$OUT/ringlock-$n/data") >>"$OUT/ringlock-$n.log" 2>&1 &
    R_PID[n]=$!
    started "$!"
}

ringlock_addr() { echo "127.0.0.1:${R_PORT[$1]}"; }
ringlock_pid() { echo "${R_PID[$1]}"; }

# ringlock_leader: the number of the member that leads, by its members' `GET /cluster`;
# nothing if no live member knows one.
ringlock_leader() {
    python3 - "$SECRET" "${R_PORT[1]}" "${R_PORT[2]}" "${R_PORT[3]}" <<'EOF' || true
import json, sys, urllib.request
secret, ports = sys.argv[1], sys.argv[2:]
for port in ports:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/cluster", headers={"X-LOCKSERVER-SECRET": secret})
    try:
        leader = json.load(urllib.request.urlopen(req, timeout=1)).get("leader_id")
    except Exception:
        continue
    if leader is not None:
        print(leader)
        break
EOF
}

# ringlock_ready: until every member answers GET /cluster with the same leader (READY_S at most).
ringlock_ready() {
    local _
    for _ in $(seq $((READY_S * 5))); do
        if python3 - "$SECRET" "${R_PORT[1]}" "${R_PORT[2]}" "${R_PORT[3]}" <<'EOF'; then
import json, sys, urllib.request
secret, ports = sys.argv[1], sys.argv[2:]
statuses = []
for port in ports:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/cluster", headers={"X-LOCKSERVER-SECRET": secret})
    try:
        statuses.append(json.load(urllib.request.urlopen(req, timeout=1)))
    except Exception:
        sys.exit(1)
leaders = {s.get("leader_id") for s in statuses}
if len(leaders) != 1 or None in leaders:
    sys.exit(1)
# Whole: the leader sees every member with its whole log (a member just restarted has caught up).
leader = next(s for s in statuses if s.get("node_id") in leaders)
sys.exit(0 if all(m.get("behind") == 0 for m in leader["members"]) else 1)
EOF
            return 0
        fi
        sleep 0.2
    done
    log "ringlock is not whole after $READY_S s; its members' logs end:"
    tail -n 5 "$OUT"/ringlock-*.log >&2
    exit 1
}

ringlock_up() {
    ringlock_prepare
    local n
    for n in 1 2 3; do
        ringlock_start "$n"
    done
    for n in 1 2 3; do
        wait_ready "${R_PORT[n]}" "${R_PID[n]}" "ringlock-$n"
    done
    ringlock_ready
}

# --- the same measurements for either system ---------------------------------------------------
# target SYSTEM: the generator's target for it.
target() {
    case $1 in
        etcd) echo etcd ;;
        ringlock) echo "$RINGLOCK_TARGET" ;;
    esac
}

# addrs SYSTEM [EXCEPT]: its members' addresses, comma-separated, but member EXCEPT.
addrs() {
    local sys=$1 except=${2:-0} n out=()
    for n in 1 2 3; do
        [ "$n" = "$except" ] || out+=("$("${sys}_addr" "$n")")
    done
    (IFS=,; echo "${out[*]}")
}

# leader SYSTEM: the leader's number, waiting for one (READY_S at most).
leader() {
    local sys=$1 n _
    for _ in $(seq $((READY_S * 5))); do
        n=$("${sys}_leader")
        if [ -n "$n" ]; then
            echo "$n"
            return 0
        fi
        sleep 0.2
    done
    log "$sys has no leader after $READY_S s"
    exit 1
}

# alive SYSTEM: stop everything if a member has died outside a trial (a crash is a finding).
alive() {
    local sys=$1 n pid
    for n in 1 2 3; do
        pid=$("${sys}_pid" "$n")
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$sys member $n (pid $pid) died during the run; its log:"
            tail -50 "$OUT/$sys-$n.log" >&2
            exit 1
        fi
    done
}

# load SYSTEM: every shape and route, one bounded run each.
load() {
    local sys=$1 route c d w lead addr json
    for route in $ROUTES; do
        for w in $WORKLOADS; do
            for c in $CONNS; do
                for d in $DEPTHS; do
                    lead=$(leader "$sys")
                    case $route in
                        all) addr=$(addrs "$sys") ;;
                        leader) addr=$("${sys}_addr" "$lead") ;;
                    esac
                    wait_quiet
                    json=$(taskset -c "$GEN_CORE" "$LOADTEST" run --quiet --json --label "$sys:$route" \
                        --target "$(target "$sys")" --addr "$addr" --secret "$SECRET" \
                        --server-pid "$("${sys}_pid" "$lead")" --warmup "$WARMUP" --duration "$DURATION" \
                        -c "$c" -d "$d" --workload "$w" --hot "$HOT" --ttl-ms "$TTL_MS")
                    echo "$json" >>"$RESULTS"
                    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
c = r["counts"]
print("cluster: %-15s %-11s c=%-3s d=%-2s %8.0f req/s, errors %d, conflicts %d" % (r["label"], r["workload"],
      r["connections"], r["depth"], r["throughput"], c["errors"], c["conflicts"]), file=sys.stderr)' "$json"
                    alive "$sys"
                done
            done
        done
    done
}

# failover SYSTEM: TRIALS kills of the leader, each followed by the killed member's restart on
# its data and a whole cluster again.
failover() {
    local sys=$1 trial lead pid json
    for trial in $(seq "$TRIALS"); do
        lead=$(leader "$sys")
        pid=$("${sys}_pid" "$lead")
        log "$sys failover $trial/$TRIALS: killing member $lead (pid $pid), the leader"
        if json=$(taskset -c "$GEN_CORE" "$LOADTEST" failover --json --label "$sys" --target "$(target "$sys")" \
            --addr "$(addrs "$sys" "$lead")" --secret "$SECRET" --kill-pid "$pid" \
            --timeout "$FAILOVER_TIMEOUT_S" --ttl-ms "$TTL_MS"); then
            echo "$json" >>"$FAILOVERS"
            python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print("cluster: %s first grant %s ms after the SIGKILL (%d attempts, %d errors)" % (r["label"],
      "%.0f" % r["first_grant_ms"] if r["first_grant_ms"] is not None else "never", r["attempts"], r["errors"]),
      file=sys.stderr)' "$json"
        else
            log "$sys failover $trial: the measurement failed"
        fi
        kill "$pid" 2>/dev/null || true    # if the measurement failed before its kill
        gone "$pid"
        forget "$pid"
        "${sys}_start" "$lead"
        "${sys}_ready"
    done
}

# stop SYSTEM: its members, by PID, before the next system takes the cores.
stop() {
    local sys=$1 n pid
    for n in 1 2 3; do
        pid=$("${sys}_pid" "$n")
        kill "$pid" 2>/dev/null || true
        gone "$pid"
        forget "$pid"
    done
}

for sys in $SYSTEMS; do
    case $sys in
        etcd | ringlock) ;;
        *) log "unknown system $sys (etcd, ringlock)"; exit 2 ;;
    esac
    "${sys}_available" || continue
    "${sys}_up"
    log "$sys: three members up, leader $(leader "$sys")"
    load "$sys"
    failover "$sys"
    stop "$sys"
done

python3 "$ROOT/loadtest/cluster_report.py" "$RESULTS" "$FAILOVERS" "$DURATION" "$WARMUP"
