#!/usr/bin/env bash
# Soak: lock churn against ringlock for a while, sampling the server's resident memory.
#
#   loadtest/soak.sh [minutes, default 10] [seconds between samples, default 10]
#
# ringlock runs on one core (--threads 1, pinned to core 0); on the other core two generators
# run for the whole time, each in an open loop at a fixed rate:
#   - ttl: acquires of ever-new names (a key space of 10^9) with a 2 s lease, never released,
#     so the table churns through unique names and the timer wheel expires them all;
#   - uncontended: acquire then release of names from a space of 10^6.
# Every sample prints the elapsed time, the server's RSS, and the held locks and connections it
# reports on /metrics. At the end it compares the RSS of the first sample after the first minute
# (the table has reached its steady size by then) with the last, and exits 1 if it grew by more
# than 10%. Traffic goes to 127.0.0.1 only; every process started here is stopped by its PID.
set -euo pipefail

cd "$(dirname "$0")/.."
MINUTES=${1:-10}
EVERY=${2:-10}
TTL_RATE=${TTL_RATE:-100000}       # acquires/s with a 2 s lease, never released
CHURN_RATE=${CHURN_RATE:-100000}   # requests/s of acquire+release
SECRET=soak-secret
OUT=target/loadtest
mkdir -p "$OUT"

if [ "${BUILD:-1}" = 1 ]; then
    cargo build --release -p ringlock -p loadtest >&2
fi

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOCKSERVER_SECRET=$SECRET taskset -c 0 target/release/ringlock -b 127.0.0.1 -p "$PORT" --threads 1 \
    >"$OUT/soak-server.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 100); do
    grep -q "listening on" "$OUT/soak-server.log" 2>/dev/null && break
    sleep 0.1
done

SECONDS_TOTAL=$((MINUTES * 60))
generate() {
    taskset -c 1 target/release/loadtest run --quiet --json --target http --addr "127.0.0.1:$PORT" \
        --secret "$SECRET" -c 32 --warmup 0 --duration "$SECONDS_TOTAL" --requests 10000000000 "$@"
}
generate --label soak-ttl --workload ttl --ttl-ms 2000 --keys 1000000000 --rate "$TTL_RATE" \
    >"$OUT/soak-ttl.json" 2>"$OUT/soak-ttl.log" &
PIDS+=("$!")
generate --label soak-churn --workload uncontended --ttl-ms 30000 --keys 1000000 --rate "$CHURN_RATE" \
    >"$OUT/soak-churn.json" 2>"$OUT/soak-churn.log" &
PIDS+=("$!")

metric() { # NAME: the sum of a gauge over cores, from /metrics
    python3 - "$PORT" "$1" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
print(sum(int(float(l.split()[-1])) for l in text.splitlines() if l.startswith(sys.argv[2] + "{")))
EOF
}

echo "| elapsed s | RSS MiB | held locks | connections |"
echo "|---:|---:|---:|---:|"
SAMPLES=()
start=$(date +%s)
sample() { # prints a row; leaves the RSS in KiB in $rss_kib
    rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER/status")
    printf "| %s | %s | %s | %s |\n" "$1" "$(python3 -c "print(f'{$rss_kib / 1024:.1f}')")" \
        "$(metric ringlock_held_locks)" "$(metric ringlock_connections)"
}
# Samples while the load runs (the generators stop at SECONDS_TOTAL; the last sample is taken
# a margin before that).
while :; do
    elapsed=$(($(date +%s) - start))
    [ "$elapsed" -gt "$((SECONDS_TOTAL - 3))" ] && break
    sample "$elapsed"
    if [ "$elapsed" -ge 60 ]; then SAMPLES+=("$rss_kib"); fi
    sleep "$EVERY"
done
wait "${PIDS[1]}" "${PIDS[2]}" || true
sleep 3
sample "after the load"

python3 - "$OUT/soak-ttl.json" "$OUT/soak-churn.json" <<'EOF'
import json, sys
for path in sys.argv[1:]:
    r = json.load(open(path))
    c = r["counts"]
    print(f"{r['label']}: {r['requests']:,} requests, {r['throughput']:,.0f} req/s, {c['errors']} errors")
EOF
if [ "${#SAMPLES[@]}" -lt 2 ]; then
    echo "soak: too short to judge (run at least two minutes)"
    exit 0
fi
first=${SAMPLES[0]}
last=${SAMPLES[${#SAMPLES[@]}-1]}
python3 - "$first" "$last" <<'EOF'
import sys
first, last = (int(v) for v in sys.argv[1:])
growth = (last - first) * 100 / first
print(f"soak: RSS {first / 1024:.1f} MiB after the first minute, {last / 1024:.1f} MiB at the end: {growth:+.1f}%")
if growth > 10:
    print("soak: memory grew by more than 10%")
    sys.exit(1)
print("soak: memory stayed flat")
EOF
