# Shell helpers the load scripts share (sourced, not run). The caller sets OUT (where server
# logs go) and defines `log`. Every process a script starts goes into PIDS and is stopped by
# its PID when the script exits.

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

