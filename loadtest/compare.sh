#!/usr/bin/env bash
# ringlock vs the reference lockserver 0.1.3 vs Redis, on one machine, in one run.
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

# --- processes we start, and only those, are stopped on exit ---------------------------------
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready PORT PID NAME: until PORT accepts a connection (30 s at most), or PID has died.
wait_ready() {
    local port=$1 pid=$2 name=$3
    for _ in $(seq 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited before it listened; its log:"
            cat "$OUT/$name.log" >&2
            exit 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "$name is not listening on $port after 30 s"
    exit 1
}

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

# cpu_idle: idle and total ticks of all cores so far, from /proc/stat.
cpu_idle() {
    local _cpu user nice system idle iowait irq softirq steal _rest
    read -r _cpu user nice system idle iowait irq softirq steal _rest </proc/stat
    echo "$((idle + iowait)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}

# wait_quiet: the cores are shared (builds, other tests); wait, QUIET_WAIT seconds at most, for a
# second in which they are at least 90% idle, so that runs measure the servers and not the
# neighbours. Each run also reports what other processes took during it (others_cpu_share),
# and the table marks the rows where that was more than 5% of a core.
wait_quiet() {
    local waited=0 a b idle total
    while [ "$waited" -lt "$QUIET_WAIT" ]; do
        a=$(cpu_idle)
        sleep 1
        b=$(cpu_idle)
        idle=$((${b% *} - ${a% *}))
        total=$((${b#* } - ${a#* }))
        if [ "$total" -gt 0 ] && [ $((idle * 100 / total)) -ge 90 ]; then
            return 0
        fi
        if [ "$waited" -eq 0 ]; then
            log "waiting for the cores to be idle (other processes are busy)"
        fi
        waited=$((waited + 1))
    done
    log "the cores never were idle for $QUIET_WAIT s; running anyway"
}

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

# --- 2. the three servers, each pinned to the server core ------------------------------------
RL_PORT=$(free_port)
(cd "$OUT" && LOCKSERVER_SECRET=$SECRET exec taskset -c "$SERVER_CORE" "$RINGLOCK" \
    --bind 127.0.0.1 --port "$RL_PORT" --threads 1) >"$OUT/ringlock.log" 2>&1 &
RL=$!
PIDS+=("$RL")
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
wait_ready "$RL_PORT" "$RL" ringlock
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
    done
done
# The wire protocol with deeper pipelines, where its small frames pay off most, and Redis at
# the same depth, so that the ratio compares like with like.
run wire wire "$RL_PORT" "$RL" -c 64 -d 64 --workload uncontended --ttl-ms "$TTL_MS"
alive "$RL" ringlock
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
python3 - "$RESULTS" "$DURATION" "$WARMUP" <<'EOF'
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
duration, warmup = sys.argv[2], sys.argv[3]
LOCKS = ("ringlock", "reference", "redis")


def find(label, workload, mode="closed", c=None, d=None, rate=None):
    for r in rows:
        if (r["label"] == label and r["workload"] == workload and r["mode"] == mode
                and (c is None or r["connections"] == c) and (d is None or r["depth"] == d)
                and (rate is None or r["rate"] == rate)):
            return r
    return None


def rate(r):
    return f"{r['throughput'] / 1000:,.0f}k" if r else "-"


def cpu(r):
    v = r and r.get("server_cpu_us_per_request")
    return f"{v:.2f}" if v else "-"


def p99(r, which="acquire_us"):
    lat = r and (r.get(which) or r.get("all_us"))
    return f"{lat['p99']:,.0f}" if lat else "-"


def ratio(a, b):
    return f"{a['throughput'] / b['throughput']:.2f}x" if a and b and b["throughput"] else "-"


def gen(r):
    """The generator's load: its CPU share in a closed loop; its p99 send lag in an open loop
    (there its writers poll the clock between sends, so its CPU share is always near 100%)."""
    if not r:
        return "-"
    if r["mode"] == "open":
        return f"lag {r['send_lag_us']['p99']:,.0f} µs" if r.get("send_lag_us") else "-"
    if not r.get("generator_cpu_share"):
        return "-"
    return f"{r['generator_cpu_share'] * 100:.0f}% ({r['generator_user_share'] * 100:.0f}% user)"


def bad(r):
    n = r["counts"]["errors"] if r else 0
    return f" **{n} errors**" if n else ""


def disturbed(r):
    return r is not None and ((r.get("others_cpu_share") or 0) > 0.05 or (r.get("steal_share") or 0) > 0.05)


def mark(*rs):
    return " †" if any(disturbed(r) for r in rs) else ""


def shape(r):
    return f"open {r['rate'] / 1000:,.0f}k/s" if r["mode"] == "open" else "closed"


print(f"### Generator ceiling (one core, against `loadtest responder` on the other; {duration} s per run)\n")
print("| target | loop | connections | depth | req/s | generator | p99 µs |")
print("|---|---|---:|---:|---:|---:|---:|")
for r in rows:
    if r["label"].startswith("gen-"):
        target = "http acquire+release" if r["target"] == "http" else "redis SET NX (ttl)"
        print(f"| {target}{mark(r)} | {shape(r)} | {r['connections']} | {r['depth']} | {rate(r)}{bad(r)} | {gen(r)} "
              f"| {p99(r, 'all_us')} |")

if any(disturbed(r) for r in rows if r["label"].startswith("gen-")):
    print("\n† Other processes took more than 5% of a core during this run.")

print(f"\n### ringlock vs reference vs Redis (server on one core, generator on the other; "
      f"{warmup} s warm-up + {duration} s per run)\n")
print("req/s: replies per second (an acquire and its release are two). ceiling: ringlock's `GET /health` "
      "under the same load. gen: the generator's CPU in a closed loop (near 100%: generator-bound; user: "
      "the part in its own code, the rest is the kernel's), its p99 send lag in an open loop. CPU: server CPU µs per request (user + system, all threads, /proc/PID/stat). "
      "p99: acquire latency, µs (open loop: from the intended send time). depth: requests in flight per "
      "connection (closed loop) or per write (open loop).\n")
print("| workload | loop | conns | depth | ceiling | ringlock | % of ceiling | gen | reference | ringlock / ref "
      "| redis | ringlock / redis | CPU ringlock | CPU ref | CPU redis | CPU ringlock / ref | p99 ringlock "
      "| p99 ref | p99 redis |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
seen = []
for r in rows:
    key = (r["workload"], r["mode"], r["connections"], r["depth"], r["rate"])
    if r["label"] not in LOCKS or key in seen:
        continue
    seen.append(key)
    w, mode, c, d, rt = key
    rl, ref, rd = (find(label, w, mode, c, d, rt) for label in LOCKS)
    ceiling = find("health", "health", mode, c, d, rt)
    pct = f"{rl['throughput'] / ceiling['throughput'] * 100:.0f}%" if rl and ceiling else "-"
    cpu_ratio = (f"{rl['server_cpu_us_per_request'] / ref['server_cpu_us_per_request']:.2f}"
                 if rl and ref and rl.get("server_cpu_us_per_request") and ref.get("server_cpu_us_per_request")
                 else "-")
    print(f"| {w}{mark(rl, ref, rd, ceiling)} | {shape(r)} | {c} | {d} | {rate(ceiling)} | {rate(rl)}{bad(rl)} | {pct} | {gen(rl)} "
          f"| {rate(ref)}{bad(ref)} | {ratio(rl, ref)} | {rate(rd)}{bad(rd)} | {ratio(rl, rd)} | {cpu(rl)} | {cpu(ref)} "
          f"| {cpu(rd)} | {cpu_ratio} | {p99(rl)} | {p99(ref)} | {p99(rd)} |")

if any(disturbed(r) for r in rows):
    print("\n† Other processes took more than 5% of a core (or the hypervisor stole it) during at least one run "
          "of this row: its numbers are less reliable.")

wire_rows = [r for r in rows if r["label"] == "wire" and r["workload"] == "uncontended"]
if wire_rows:
    print("\nThe wire protocol (ringlock's binary frames) against Redis `SET NX` + compare-and-delete at the same "
          "shape, uncontended acquire+release; CPU: server µs per request:\n")
    print("| conns | depth | wire | redis | wire / redis | CPU wire | CPU redis | p99 wire | p99 redis |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in sorted(wire_rows, key=lambda r: (r["depth"], r["connections"])):
        rd = find("redis", "uncontended", "closed", w["connections"], w["depth"])
        ratio = f"{w['throughput'] / rd['throughput']:.2f}x" if rd else "-"
        print(f"| {w['connections']} | {w['depth']} | {rate(w)} | {rate(rd)} | {ratio} | {cpu(w)} | {cpu(rd)} "
              f"| {p99(w)} | {p99(rd)} |")

hold = [find(label, "hold") for label in LOCKS]
waits = [(label, find(label, "hold")) for label in ("ringlock-wait", "wire-wait")]
if all(hold):
    print("\nHold-and-release (64 connections, 4 names, each held 1 ms), µs, p50 / p99. wait: a cycle's first "
          "attempt to its grant (queueing behind the other 63 included); hand-off: from the release being sent to "
          "the next holder having its grant. The first three retry a conflict at once (the reference SDKs poll "
          "every 200 ms); the last two wait server-side (`wait`), over HTTP and the wire:\n")
    for label, r in list(zip(LOCKS, hold)) + [w for w in waits if w[1]]:
        w, h = r.get("wait_us"), r.get("handoff_us")
        if w and h:
            print(f"- {label}: wait {w['p50']:,.0f} / {w['p99']:,.0f}, hand-off {h['p50']:,.0f} / {h['p99']:,.0f} "
                  f"({w['count']:,} grants, {r['counts']['conflicts']:,} conflicts)")

print("\n### Goals\n")


def closed(label, w="uncontended"):
    return [r for r in rows if r["label"] == label and r["workload"] == w and r["mode"] == "closed"]


for d in sorted({r["depth"] for r in closed("ringlock")}):
    cells = [(r, find("health", "health", "closed", r["connections"], d)) for r in closed("ringlock") if r["depth"] == d]
    cells = [(r, h) for r, h in cells if h]
    if cells:
        r, h = min(cells, key=lambda x: x[0]["throughput"] / x[1]["throughput"])
        worst = r["throughput"] / h["throughput"]
        verdict = "met" if worst >= 0.9 else "**missed**"
        print(f"- Ceiling, depth {d}: uncontended acquire+release at ≥ 90% of `GET /health` at every connection "
              f"count: {verdict} (lowest {worst * 100:.0f}%, at {r['connections']} connections)")
for ref in [r for r in rows if r["label"] == "reference" and r["mode"] == "open"]:
    rl = find("ringlock", "uncontended", "open", ref["connections"], ref["depth"], ref["rate"])
    if rl and rl.get("server_cpu_us_per_request") and ref.get("server_cpu_us_per_request"):
        a, b = rl["server_cpu_us_per_request"], ref["server_cpu_us_per_request"]
        verdict = "met" if a <= b / 3 else "**missed**"
        print(f"- Server CPU per request at the same offered load ({ref['rate']:,} req/s, {ref['depth']} per write): "
              f"ringlock {a:.2f} µs, reference {b:.2f} µs, ratio {a / b:.2f} (goal ≤ 0.33): {verdict}")


def best(label, d):
    return max((r for r in closed(label) if r["depth"] == d), key=lambda r: r["throughput"], default=None)


rl16, ref16 = best("ringlock", 16), best("reference", 16)
if rl16 and ref16:
    x = rl16["throughput"] / ref16["throughput"]
    verdict = "met" if x >= 4 and rl16["throughput"] >= 1e6 else "**missed**"
    print(f"- Pipelined (depth 16) acquire+release, best of each: ringlock {rl16['throughput']:,.0f} req/s, reference "
          f"{ref16['throughput']:,.0f} ({x:.2f}x; goal ≥ 4x and ≥ 1,000,000 req/s): {verdict}")
pairs = [(c, find("ringlock", "uncontended", "closed", c, 1), find("redis", "uncontended", "closed", c, 1))
         for c in sorted({r["connections"] for r in closed("ringlock")})]
pairs = [(c, a, b) for c, a, b in pairs if a and b]
if pairs:
    slow = [f"{c} ({a['throughput'] / b['throughput']:.2f}x)" for c, a, b in pairs if a["throughput"] < b["throughput"]]
    verdict = "met" if not slow else "**missed** at " + ", ".join(slow) + " connections"
    print(f"- Not pipelined: ringlock at least as fast as Redis at every connection count: {verdict}")
for d in sorted({r["depth"] for r in closed("wire") if r["depth"] > 1}):
    w, rd = best("wire", d), best("redis", d)
    if w and rd:
        x = w["throughput"] / rd["throughput"]
        verdict = "met" if x >= 4 and w["throughput"] >= 2e6 else "**missed**"
        print(f"- Wire protocol, pipelined (depth {d}), best of each: {w['throughput']:,.0f} req/s, Redis at the same "
              f"depth {rd['throughput']:,.0f} ({x:.2f}x; goal ≥ 4x Redis and ≥ 2,000,000 req/s): {verdict}")
for label, r in waits:
    if r and r.get("handoff_us"):
        v = r["handoff_us"]["p99"]
        verdict = "met" if v < 100 else "**missed**"
        print(f"- Release-to-waiter hand-off p99 with server-side waiting ({label}): {v:,.0f} µs (goal < 100 µs): "
              f"{verdict}")
for d in sorted({r["depth"] for r in rows if r["label"] == "ringlock" and r["mode"] == "open"}):
    r = max((r for r in rows if r["label"] == "ringlock" and r["mode"] == "open" and r["depth"] == d),
            key=lambda r: r["rate"])
    v = r["acquire_us"]["p99"] if r.get("acquire_us") else float("inf")
    lag = r["send_lag_us"]["p99"] if r.get("send_lag_us") else 0
    h = find("health", "health", "open", r["connections"], d, r["rate"])
    hp = f"; `GET /health` at the same load: {p99(h, 'all_us')} µs" if h else ""
    verdict = "met" if v < 200 else "**missed**"
    print(f"- p99 acquire latency at half of peak, {d} per write ({r['rate']:,} req/s offered, "
          f"{r['throughput']:,.0f} served): {v:,.0f} µs (goal < 200 µs; generator send lag p99 {lag:,.0f} µs{hp}): "
          f"{verdict}")
EOF
