#!/usr/bin/env bash
# Two ringlock builds (or two settings of one build) side by side, in one run: A and B are
# started together, each pinned to the server core, and every load shape is measured against
# A, then B, ROUNDS times over, so that a shift in the machine's speed hits both alike. Prints
# a markdown table of the medians with the B/A ratio and each side's spread (min-max).
#
#   A=/path/to/old/ringlock B=target/release/ringlock loadtest/ab.sh
#   A_ARGS=--in-memory B_ARGS="" loadtest/ab.sh          # one build, two settings
#   ROUNDS=5 DURATION=10 SHAPES="http:64:16 wire:64:64" loadtest/ab.sh
#
# A shape is TARGET:CONNECTIONS:DEPTH of the uncontended workload (acquire + release of random
# names). Every run is bounded, targets only 127.0.0.1, and every process the script starts is
# stopped by its PID when it exits; each server runs in a directory of its own under
# target/loadtest/ab (its data directory, if it keeps one, is there). Raw results:
# target/loadtest/ab/results.jsonl.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

A=${A:-$ROOT/target/release/ringlock}
B=${B:-$ROOT/target/release/ringlock}
A=$(realpath "$A")
B=$(realpath "$B")
A_ARGS=${A_ARGS:-}
B_ARGS=${B_ARGS:-}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}          # seconds measured per run
WARMUP=${WARMUP:-1}              # seconds of warm-up per run, not measured
SHAPES=${SHAPES:-"http:64:1 http:64:16 wire:64:16 wire:64:64"}
SERVER_CORE=${SERVER_CORE:-0}
GEN_CORE=${GEN_CORE:-1}
TTL_MS=30000
SECRET=ab-secret
BUILD=${BUILD:-1}                # 0: use the load generator already built
QUIET_WAIT=${QUIET_WAIT:-600}    # longest wait, in seconds, for other processes to leave the cores idle

OUT=$ROOT/target/loadtest/ab
rm -rf "$OUT"
mkdir -p "$OUT/a" "$OUT/b"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
LOADTEST=$ROOT/target/release/loadtest

log() { echo "ab: $*" >&2; }

# shellcheck source=loadtest/common.sh
. "$ROOT/loadtest/common.sh"

if [ "$BUILD" = 1 ]; then
    log "building the load generator (release)"
    cargo build --release -p loadtest >&2
fi

# start NAME BIN ARGS: a server pinned to the server core, in its own directory; sets PORT
# and PID.
start() {
    local name=$1 bin=$2 args=$3
    PORT=$(free_port)
    # shellcheck disable=SC2086 # ARGS is a list of flags
    (cd "$OUT/$name" && LOCKSERVER_SECRET=$SECRET exec taskset -c "$SERVER_CORE" "$bin" \
        --bind 127.0.0.1 --port "$PORT" --threads 1 $args) >"$OUT/$name.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_ready "$PORT" "$PID" "$name"
}

start a "$A" "$A_ARGS"
A_PORT=$PORT A_PID=$PID
start b "$B" "$B_ARGS"
B_PORT=$PORT B_PID=$PID
log "A: $A $A_ARGS (pid $A_PID); B: $B $B_ARGS (pid $B_PID)"

run() {
    local label=$1 port=$2 pid=$3 target=$4 conns=$5 depth=$6
    wait_quiet
    taskset -c "$GEN_CORE" "$LOADTEST" run --quiet --json --label "$label" --target "$target" \
        --addr "127.0.0.1:$port" --secret "$SECRET" --server-pid "$pid" --warmup "$WARMUP" \
        --duration "$DURATION" -c "$conns" -d "$depth" --workload uncontended --ttl-ms "$TTL_MS" \
        >>"$RESULTS"
    kill -0 "$pid" 2>/dev/null || { log "$label died; its log:"; tail -20 "$OUT/$label.log" >&2; exit 1; }
}

for round in $(seq "$ROUNDS"); do
    for shape in $SHAPES; do
        IFS=: read -r target conns depth <<<"$shape"
        log "round $round: $target c=$conns d=$depth"
        run a "$A_PORT" "$A_PID" "$target" "$conns" "$depth"
        run b "$B_PORT" "$B_PID" "$target" "$conns" "$depth"
    done
done

python3 - "$RESULTS" "$A $A_ARGS" "$B $B_ARGS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"A: `{sys.argv[2].strip()}`  \nB: `{sys.argv[3].strip()}`\n")
print("| target | conns | depth | A req/s (median, min-max) | B req/s (median, min-max) | B/A | errors |")
print("|---|---|---|---|---|---|---|")
shapes = []
for r in rows:
    key = (r["target"], r["connections"], r["depth"])
    if key not in shapes:
        shapes.append(key)
def fmt(v):
    return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.0f} k"
for key in shapes:
    side = {l: [r for r in rows if (r["target"], r["connections"], r["depth"]) == key and r["label"] == l]
            for l in "ab"}
    tp = {l: [r["throughput"] for r in side[l]] for l in "ab"}
    med = {l: statistics.median(tp[l]) for l in "ab"}
    errors = sum(r["counts"]["errors"] for l in "ab" for r in side[l])
    cells = [f"{fmt(med[l])} ({fmt(min(tp[l]))}-{fmt(max(tp[l]))})" for l in "ab"]
    print(f"| {key[0]} | {key[1]} | {key[2]} | {cells[0]} | {cells[1]} | {med['b'] / med['a']:.2f} | {errors} |")
EOF
