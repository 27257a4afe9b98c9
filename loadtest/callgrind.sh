#!/usr/bin/env bash
# User-side work a reply, for machines without hardware counters (a VM's `perf stat -e
# instructions` is not supported): one ringlock under valgrind's callgrind, pinned to the
# server core with one worker thread, under the load generator on the other core. Counters are
# zeroed when the generator's warm-up ends and dumped when its measured run ends, so every
# event is divided by the replies that run counted. Prints one line of events a reply
# (instructions, and with CACHE=1 the simulated first-level data-cache misses, D1mr/D1mw),
# and leaves the profile for `callgrind_annotate` in target/loadtest/callgrind/NAME.
#
#   loadtest/callgrind.sh old /path/to/old/ringlock
#   TARGET=wire CACHE=1 loadtest/callgrind.sh new target/release/ringlock --in-memory
#
# Load: TARGET (http or wire) x C connections x D pipelined, the uncontended workload. Under
# valgrind a server runs some 50 times slower, so only same-script ratios mean anything. Every
# run is bounded, targets only 127.0.0.1, and the server is stopped by its PID.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 NAME RINGLOCK [SERVER ARGS...]" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "callgrind: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
NAME=$1
BIN=$(realpath "$2")
shift 2

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${TARGET:-http}
C=${C:-64}
D=${D:-16}
WARMUP=${WARMUP:-2}              # seconds of load before the counters are zeroed
DURATION=${DURATION:-10}         # seconds counted
SERVER_CORE=${SERVER_CORE:-0}
GEN_CORE=${GEN_CORE:-1}
BUILD=${BUILD:-1}                # 0: use the load generator already built
SECRET=callgrind-secret
OUT=$ROOT/target/loadtest/callgrind/$NAME
LOADTEST=$ROOT/target/release/loadtest
if [ "$BUILD" = 1 ]; then
    cargo build --release -p loadtest >&2
fi

log() { echo "callgrind: $*" >&2; }
# shellcheck source=loadtest/common.sh
. "$ROOT/loadtest/common.sh"

rm -rf "$OUT"
mkdir -p "$OUT"
PORT=$(free_port)
SIM=()
[ "${CACHE:-0}" = 1 ] && SIM=(--cache-sim=yes)
(cd "$OUT" && LOCKSERVER_SECRET=$SECRET exec taskset -c "$SERVER_CORE" valgrind --tool=callgrind "${SIM[@]}" \
    --callgrind-out-file="$OUT/callgrind.out" "$BIN" --threads 1 --port "$PORT" "$@" >"$OUT/$NAME.log" 2>&1) &
SERVER=$!
PIDS+=("$SERVER")
wait_ready "$PORT" "$SERVER" "$NAME"

taskset -c "$GEN_CORE" "$LOADTEST" run --quiet --json --target "$TARGET" --addr "127.0.0.1:$PORT" \
    --secret "$SECRET" --warmup "$WARMUP" --duration "$DURATION" -c "$C" -d "$D" \
    --workload uncontended --ttl-ms 30000 >"$OUT/run.json" &
GEN=$!
PIDS+=("$GEN")
sleep "$WARMUP"
callgrind_control -z "$SERVER" >/dev/null 2>&1
wait "$GEN"
callgrind_control -d "$SERVER" >/dev/null 2>&1

python3 - "$OUT" "$NAME" <<'EOF'
import glob, json, os, re, sys
out, name = sys.argv[1], sys.argv[2]
replies = json.load(open(os.path.join(out, "run.json")))["requests"]
# The dump made at the end of the measured run: the newest part after the zeroing.
dump = max(glob.glob(os.path.join(out, "callgrind.out.*")), key=os.path.getmtime)
text = open(dump).read()
events = re.search(r"^events: (.*)$", text, re.M).group(1).split()
totals = [int(v) for v in re.search(r"^summary: (.*)$", text, re.M).group(1).split()]
each = " ".join(f"{e} {v / replies:,.2f}" for e, v in zip(events, totals))
print(f"{name}: {replies:,} replies; a reply: {each}; profile {dump}")
EOF
