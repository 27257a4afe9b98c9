#!/usr/bin/env bash
# ringlock vs the reference lockserver 0.1.3 vs Redis, on one machine, in one run; and
# ringlock durable (its default) vs in memory vs Redis with its append-only file.
#
# Builds ringlock and the load generator, installs the reference server (`cargo install` into
# target/reference) and redis-server (Debian package) if missing, starts all three on free
# loopback ports pinned to one core, and drives each from the other core with identical
# workloads. Prints two markdown tables on stdout: the generator's own ceiling (against its
# trivial responder), and the comparison with its ratios, then a line per goal.
#
#   loadtest/compare.sh                     # about 25 minutes on 2 cores, after the build
#   DURATION=2 CONNS="16 64" loadtest/compare.sh   # a quicker, rougher pass
#   BUILD=0 loadtest/compare.sh             # measure the binaries already built
#
# Every run is bounded (WARMUP + DURATION seconds), targets only 127.0.0.1, and every process
# the script starts is stopped by its PID when it exits. Raw results (one JSON report per run)
# are kept in target/loadtest/results.jsonl, server logs next to them.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${DURATION:-5}          # seconds measured per run
WARMUP=${WARMUP:-1}              # seconds of warm-up per run, not measured
CONNS=${CONNS:-"1 16 64 256"}    # connection counts
DEPTHS=${DEPTHS:-"1 16"}         # closed-loop pipeline depths
SERVER_CORE=${SERVER_CORE:-0}    # every server runs here
GEN_CORE=${GEN_CORE:-1}          # the generator runs here
OPEN_CONNS=${OPEN_CONNS:-64}     # connections of the open-loop runs
TTL_MS=30000                     # lease of every lock workload but ttl (whole seconds: the reference takes no fractions)
TTL_ONLY_MS=1000                 # lease of the ttl workload
TTL_KEYS=100000000               # key space of the ttl workload: far more names than a run holds at once
HOT=4                            # hot names of the contended workload
SECRET=loadtest-secret
BUILD=${BUILD:-1}                # 0: use the binaries already in target/release
QUIET_WAIT=${QUIET_WAIT:-600}    # longest wait, in seconds, for other processes to leave the cores idle

OUT=$ROOT/target/loadtest
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

LOADTEST=$ROOT/target/release/loadtest
RINGLOCK=$ROOT/target/release/ringlock
REFERENCE=$ROOT/target/reference/bin/lockserver

log() { echo "compare: $*" >&2; }

# shellcheck source=loadtest/common.sh
. "$ROOT/loadtest/common.sh"

# alive PID NAME: stop the whole comparison if a server has died (a crash is a finding).
alive() {
    if ! kill -0 "$1" 2>/dev/null; then
        log "$2 (pid $1) died during the run; its log:"
        tail -50 "$OUT/$2.log" >&2
        exit 1
    fi
}

# --- build and install -----------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    log "building ringlock and loadtest (release)"
    cargo build --release -p ringlock -p loadtest >&2
fi
if [ ! -x "$REFERENCE" ]; then
    log "installing the reference server (lockserver 0.1.3) into target/reference"
    cargo install lockserver --version 0.1.3 --locked --root "$ROOT/target/reference" >&2
fi
if ! command -v redis-server >/dev/null; then
    log "installing redis-server (Debian package; needs root)"
    apt-get install -y redis-server >&2
fi

# run LABEL TARGET PORT PID ARGS...: one bounded run from the generator core; appends its JSON.
run() {
    local label=$1 target=$2 port=$3 pid=$4
    shift 4
    local json
    wait_quiet
    json=$(taskset -c "$GEN_CORE" "$LOADTEST" run --quiet --json --label "$label" \
        --target "$target" --addr "127.0.0.1:$port" --secret "$SECRET" --server-pid "$pid" \
        --warmup "$WARMUP" --duration "$DURATION" "$@")
    echo "$json" >>"$RESULTS"
    python3 -c "
import json, sys
r = json.loads(sys.argv[1])
c = r['counts']
print('compare: %-9s %-11s c=%-3s d=%-2s rate=%-7s %9.0f req/s, errors %d, conflicts %d' % (r['label'], r['workload'],
      r['connections'], r['depth'] or '-', r['rate'] or '-', r['throughput'], c['errors'], c['conflicts']), file=sys.stderr)
" "$json"
}

# --- 1. the generator's own ceiling ----------------------------------------------------------
log "generator ceiling: the trivial responder on core $SERVER_CORE"
RESP_HTTP_PORT=$(free_port)
(cd "$OUT" && exec taskset -c "$SERVER_CORE" "$LOADTEST" responder --port "$RESP_HTTP_PORT" --kind http) \
    >"$OUT/responder-http.log" 2>&1 &
RESP_HTTP=$!
PIDS+=("$RESP_HTTP")
RESP_REDIS_PORT=$(free_port)
(cd "$OUT" && exec taskset -c "$SERVER_CORE" "$LOADTEST" responder --port "$RESP_REDIS_PORT" --kind redis) \
    >"$OUT/responder-redis.log" 2>&1 &
RESP_REDIS=$!
PIDS+=("$RESP_REDIS")
wait_ready "$RESP_HTTP_PORT" "$RESP_HTTP" responder-http
wait_ready "$RESP_REDIS_PORT" "$RESP_REDIS" responder-redis
for c in 16 64 256; do
    for d in $DEPTHS; do
        run gen-http http "$RESP_HTTP_PORT" "$RESP_HTTP" -c "$c" -d "$d" --ttl-ms "$TTL_MS"
    done
done
for d in $DEPTHS; do
    run gen-redis redis "$RESP_REDIS_PORT" "$RESP_REDIS" -c 64 -d "$d" --workload ttl \
        --ttl-ms "$TTL_ONLY_MS" --keys "$TTL_KEYS"
done
# The open loop's own floor: latency and send lag with nothing behind the socket.
run gen-http http "$RESP_HTTP_PORT" "$RESP_HTTP" -c "$OPEN_CONNS" -d 1 --rate 50000 --ttl-ms "$TTL_MS"
run gen-http http "$RESP_HTTP_PORT" "$RESP_HTTP" -c "$OPEN_CONNS" -d 16 --rate 500000 --ttl-ms "$TTL_MS"
kill "$RESP_HTTP" "$RESP_REDIS"
wait "$RESP_HTTP" "$RESP_REDIS" 2>/dev/null || true

# --- 2. the servers, each pinned to the server core ------------------------------------------
# The storage's floor first, on the file system ringlock's data directory is on and on the
# servers' core (where a sync's completion must wake the waiting thread): one small append and
# its fdatasync, as one durable answer costs at least; then the same into room the file was
# given first, as ringlock's log is.
for room in "" --room; do
    taskset -c "$SERVER_CORE" "$LOADTEST" fsync --dir "$OUT" --count 2000 $room | python3 -c '
import json, sys
r = json.load(sys.stdin); r["label"] = "fsync-room" if r["room"] else "fsync"; print(json.dumps(r))' >>"$RESULTS"
done
# ringlock durable (its default: a log in ./ringlock-data, fsync always), and in memory.
rm -rf "$OUT/ringlock-data" "$OUT/memory"
mkdir -p "$OUT/memory"
RL_PORT=$(free_port)
(cd "$OUT" && LOCKSERVER_SECRET=$SECRET exec taskset -c "$SERVER_CORE" "$RINGLOCK" \
    --bind 127.0.0.1 --port "$RL_PORT" --threads 1) >"$OUT/ringlock.log" 2>&1 &
RL=$!
PIDS+=("$RL")
MEM_PORT=$(free_port)
(cd "$OUT/memory" && LOCKSERVER_SECRET=$SECRET exec taskset -c "$SERVER_CORE" "$RINGLOCK" \
    --bind 127.0.0.1 --port "$MEM_PORT" --threads 1 --in-memory) >"$OUT/ringlock-memory.log" 2>&1 &
MEM=$!
PIDS+=("$MEM")
REF_PORT=$(free_port)
(cd "$OUT" && LOCKSERVER_SECRET=$SECRET exec taskset -c "$SERVER_CORE" "$REFERENCE" \
    --bind 127.0.0.1 --port "$REF_PORT") >"$OUT/reference.log" 2>&1 &
REF=$!
PIDS+=("$REF")
REDIS_PORT=$(free_port)
(cd "$OUT" && exec taskset -c "$SERVER_CORE" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --save '' --appendonly no) >"$OUT/redis.log" 2>&1 &
REDIS=$!
PIDS+=("$REDIS")
# Redis with its append-only file, both ways a lock service would run it: synced on every
# write (appendfsync always), and once a second (everysec: a second of writes may be lost).
rm -rf "$OUT/aof-always" "$OUT/aof-everysec"
mkdir -p "$OUT/aof-always" "$OUT/aof-everysec"
AOF_PORT=$(free_port)
(cd "$OUT/aof-always" && exec taskset -c "$SERVER_CORE" redis-server --port "$AOF_PORT" --bind 127.0.0.1 \
    --save '' --appendonly yes --appendfsync always --dir "$OUT/aof-always") >"$OUT/redis-aof.log" 2>&1 &
AOF=$!
PIDS+=("$AOF")
SEC_PORT=$(free_port)
(cd "$OUT/aof-everysec" && exec taskset -c "$SERVER_CORE" redis-server --port "$SEC_PORT" --bind 127.0.0.1 \
    --save '' --appendonly yes --appendfsync everysec --dir "$OUT/aof-everysec") >"$OUT/redis-aof-everysec.log" 2>&1 &
SEC=$!
PIDS+=("$SEC")
# ringlock durable over TLS (TLS 1.3, ECDSA P-256, a self-signed certificate made here, which
# is also the generator's trust root; CA:FALSE, as rustls refuses a CA as an end entity):
# what TLS costs against the plaintext rows of the same server configuration.
rm -rf "$OUT/tls"
mkdir -p "$OUT/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
    -keyout "$OUT/tls/key.pem" -out "$OUT/tls/cert.pem" 2>/dev/null
TLS_PORT=$(free_port)
(cd "$OUT/tls" && LOCKSERVER_SECRET=$SECRET exec taskset -c "$SERVER_CORE" "$RINGLOCK" \
    --bind 127.0.0.1 --port "$TLS_PORT" --threads 1 --tls-cert "$OUT/tls/cert.pem" --tls-key "$OUT/tls/key.pem") \
    >"$OUT/ringlock-tls.log" 2>&1 &
TLS=$!
PIDS+=("$TLS")
wait_ready "$RL_PORT" "$RL" ringlock
wait_ready "$MEM_PORT" "$MEM" ringlock-memory
wait_ready "$TLS_PORT" "$TLS" ringlock-tls
wait_ready "$AOF_PORT" "$AOF" redis-aof
wait_ready "$SEC_PORT" "$SEC" redis-aof-everysec
wait_ready "$REF_PORT" "$REF" reference
wait_ready "$REDIS_PORT" "$REDIS" redis
log "ringlock pid $RL port $RL_PORT; reference pid $REF port $REF_PORT; redis pid $REDIS port $REDIS_PORT"

# all_three ARGS...: the same run against each server, then check none died.
all_three() {
    run ringlock http "$RL_PORT" "$RL" "$@"
    alive "$RL" ringlock
    run reference http "$REF_PORT" "$REF" "$@"
    alive "$REF" reference
    run redis redis "$REDIS_PORT" "$REDIS" "$@"
    alive "$REDIS" redis
}

# --- 3. closed loop: every connection count and depth ----------------------------------------
for c in $CONNS; do
    for d in $DEPTHS; do
        run health health "$RL_PORT" "$RL" -c "$c" -d "$d"
        all_three -c "$c" -d "$d" --workload uncontended --ttl-ms "$TTL_MS"
        all_three -c "$c" -d "$d" --workload contended --hot "$HOT" --ttl-ms "$TTL_MS"
        all_three -c "$c" -d "$d" --workload ttl --ttl-ms "$TTL_ONLY_MS" --keys "$TTL_KEYS"
        # ringlock's binary protocol under the same load shapes.
        run wire wire "$RL_PORT" "$RL" -c "$c" -d "$d" --workload uncontended --ttl-ms "$TTL_MS"
        alive "$RL" ringlock
        # What TLS costs: the same uncontended runs, HTTP and wire, inside TLS.
        run ringlock-tls http "$TLS_PORT" "$TLS" -c "$c" -d "$d" --workload uncontended --ttl-ms "$TTL_MS" \
            --ca "$OUT/tls/cert.pem"
        run wire-tls wire "$TLS_PORT" "$TLS" -c "$c" -d "$d" --workload uncontended --ttl-ms "$TTL_MS" \
            --ca "$OUT/tls/cert.pem"
        alive "$TLS" ringlock-tls
        # What durability costs: the same uncontended runs in memory, and Redis with its AOF.
        run ringlock-memory http "$MEM_PORT" "$MEM" -c "$c" -d "$d" --workload uncontended --ttl-ms "$TTL_MS"
        alive "$MEM" ringlock-memory
        run redis-aof redis "$AOF_PORT" "$AOF" -c "$c" -d "$d" --workload uncontended --ttl-ms "$TTL_MS"
        alive "$AOF" redis-aof
        run redis-aof-everysec redis "$SEC_PORT" "$SEC" -c "$c" -d "$d" --workload uncontended --ttl-ms "$TTL_MS"
        alive "$SEC" redis-aof-everysec
    done
done
# The wire protocol with deeper pipelines, where its small frames pay off most, and Redis at
# the same depth, so that the ratio compares like with like.
run wire wire "$RL_PORT" "$RL" -c 64 -d 64 --workload uncontended --ttl-ms "$TTL_MS"
alive "$RL" ringlock
run wire-memory wire "$MEM_PORT" "$MEM" -c 64 -d 64 --workload uncontended --ttl-ms "$TTL_MS"
alive "$MEM" ringlock-memory
run redis redis "$REDIS_PORT" "$REDIS" -c 64 -d 64 --workload uncontended --ttl-ms "$TTL_MS"
alive "$REDIS" redis
# Hand-off: 64 connections competing for 4 names, each held 1 ms; a conflict retried at once.
all_three -c 64 -d 1 --workload hold --hot "$HOT" --hold-ms 1 --ttl-ms "$TTL_MS"
# The same with ringlock's server-side waiting instead of retries, over HTTP and the wire.
run ringlock-wait http "$RL_PORT" "$RL" -c 64 -d 1 --workload hold --hot "$HOT" --hold-ms 1 --ttl-ms "$TTL_MS" \
    --wait-ms 5000
run wire-wait wire "$RL_PORT" "$RL" -c 64 -d 1 --workload hold --hot "$HOT" --hold-ms 1 --ttl-ms "$TTL_MS" \
    --wait-ms 5000
alive "$RL" ringlock

# peak LABEL DEPTH: the best uncontended closed-loop throughput of LABEL at DEPTH so far.
peak() {
    python3 -c 'import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
print(int(max(r["throughput"] for r in rs if r["label"] == sys.argv[2] and r["workload"] == "uncontended"
              and r["mode"] == "closed" and r["depth"] == int(sys.argv[3]))))' \
        "$RESULTS" "$1" "$2"
}

# --- 4. open loop: the same offered load for all three, and half of ringlock's peak ----------
# Requests leave on schedule, one per write (depth 1) or sixteen per write (depth 16), and
# latency counts from the intended send time. Two rates per shape: half the reference's peak
# of that shape, offered to all three (server CPU per request at the same load), and half of
# ringlock's own peak, offered to ringlock and to its health endpoint (the latency goal).
for d in $DEPTHS; do
    ref_half=$(($(peak reference "$d") / 2))
    rl_half=$(($(peak ringlock "$d") / 2))
    log "open loop, $d per write: $ref_half req/s on all three, $rl_half req/s on ringlock"
    all_three -c "$OPEN_CONNS" -d "$d" --rate "$ref_half" --workload uncontended --ttl-ms "$TTL_MS"
    run ringlock http "$RL_PORT" "$RL" -c "$OPEN_CONNS" -d "$d" --rate "$rl_half" --workload uncontended \
        --ttl-ms "$TTL_MS"
    alive "$RL" ringlock
    run health health "$RL_PORT" "$RL" -c "$OPEN_CONNS" -d "$d" --rate "$rl_half"
done

# --- 5. the tables ----------------------------------------------------------------------------
python3 "$ROOT/loadtest/compare_report.py" "$RESULTS" "$DURATION" "$WARMUP"
