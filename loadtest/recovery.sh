#!/usr/bin/env bash
# How long a durable ringlock takes to come back with LOCKS held locks: fills a fresh data
# directory (the wire protocol's ttl workload: acquires of distinct names with an hour's lease,
# never released), kills the server with SIGKILL, starts it again on the same directory and
# reports what it recovered, how long recovery took (its own log line) and how long until it
# answered again, and the bytes the directory holds.
#
#   loadtest/recovery.sh              # a million locks, two cores
#   LOCKS=200000 THREADS=1 loadtest/recovery.sh
#
# Bounded (the fill stops after LOCKS acquires), targets only 127.0.0.1, stops only the
# processes it started, by PID. Everything it writes is under target/loadtest/recovery.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
LOCKS=${LOCKS:-1000000}
THREADS=${THREADS:-2}
BUILD=${BUILD:-1}
SECRET=recovery-secret
OUT=$ROOT/target/loadtest/recovery
rm -rf "$OUT"
mkdir -p "$OUT"
LOADTEST=$ROOT/target/release/loadtest
RINGLOCK=$ROOT/target/release/ringlock

log() { echo "recovery: $*" >&2; }
# shellcheck source=loadtest/common.sh
. "$ROOT/loadtest/common.sh"

if [ "$BUILD" = 1 ]; then
    cargo build --release -p ringlock -p loadtest >&2
fi

PORT=$(free_port)
start() {
    (cd "$OUT" && LOCKSERVER_SECRET=$SECRET exec "$RINGLOCK" --bind 127.0.0.1 --port "$PORT" \
        --threads "$THREADS") >>"$OUT/ringlock.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
}

held() {
    python3 - "$PORT" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
print(sum(int(l.rsplit(b" ", 1)[1]) for l in data.split(b"\n") if l.startswith(b"ringlock_held_locks{")))
EOF
}

start
wait_ready "$PORT" "$PID" ringlock
log "filling with $LOCKS locks"
"$LOADTEST" run --quiet --target wire --addr "127.0.0.1:$PORT" --secret "$SECRET" --workload ttl \
    --keys 1000000000000 --ttl-ms 3600000 -c 64 -d 64 --warmup 0 --duration 600 --requests "$LOCKS" \
    >/dev/null
before=$(held)
bytes=$(du -sb "$OUT/ringlock-data" | cut -f1)
log "held $before locks in $bytes bytes; killing pid $PID"
kill -9 "$PID"
wait "$PID" 2>/dev/null || true
: >"$OUT/ringlock.log"
started=$(date +%s%N)
start
wait_ready "$PORT" "$PID" ringlock
# Listening is not answering: time the first `GET /health` answered, asked until it is (for
# 60 s at most).
python3 - "$PORT" <<'EOF'
import socket, sys, time
give_up = time.monotonic() + 60
while time.monotonic() < give_up:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.001)
sys.exit("recovery: no answer to GET /health within 60 s")
EOF
answered=$(( ($(date +%s%N) - started) / 1000000 ))
after=$(held)
line=$(grep -o 'recovered [0-9]* locks from [^ ]* in [0-9]* ms' "$OUT/ringlock.log" | head -1)
echo "| locks held before | after | data directory | recovery (server's log) | start to first answer |"
echo "|---:|---:|---:|---|---:|"
echo "| $before | $after | $((bytes / 1024 / 1024)) MiB | $line | $answered ms |"
