#!/usr/bin/env python3
"""The tables and goal lines of loadtest/compare.sh, from its results (one JSON report per run):

    python3 loadtest/compare_report.py target/loadtest/results.jsonl DURATION WARMUP

compare.sh calls it at the end of a run; run by hand, it prints the same tables again."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
floor = next((r for r in rows if r["label"] == "fsync"), None)
room_floor = next((r for r in rows if r["label"] == "fsync-room"), None)
rows = [r for r in rows if r["label"] not in ("fsync", "fsync-room")]
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
    # Shapes that ringlock's HTTP API or the reference ran (Redis alone at a wire depth is
    # in the wire table).
    if r["label"] not in LOCKS[:2] or key in seen:
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
        print(f"| {w['connections']} | {w['depth']} | {rate(w)} | {rate(rd)} | {ratio(w, rd)} | {cpu(w)} | {cpu(rd)} "
              f"| {p99(w)} | {p99(rd)} |")

durable = [r for r in rows if r["label"] == "ringlock" and r["workload"] == "uncontended" and r["mode"] == "closed"]
if any(find("ringlock-memory", "uncontended", "closed", r["connections"], r["depth"]) for r in durable):
    print("\nDurability: ringlock as it runs by default (a log, fsync always: an answer goes out once its record "
          "is synced) against ringlock `--in-memory` and Redis with its append-only file (`appendfsync always`, "
          "and `everysec`: up to a second of writes lost in a crash), uncontended acquire+release over HTTP "
          "(Redis: SET NX / compare-and-delete); p50 / p99 acquire µs.")
    if floor:
        print(f"The storage's floor on this file system, on the servers' core: one {floor['bytes']}-byte append and "
              f"its fdatasync, p50 {floor['p50_us']} µs, p99 {floor['p99_us']} µs ({floor['count']} measured)"
              + (f"; into room the file was given first, as ringlock's log is: p50 {room_floor['p50_us']} µs, "
                 f"p99 {room_floor['p99_us']} µs." if room_floor else "."))
    print("\n| conns | depth | durable | in memory | durable / memory | redis AOF always | durable / AOF always "
          "| redis AOF everysec | p50 / p99 durable | p50 / p99 memory | p50 / p99 AOF always |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def p50_99(r):
        lat = r and (r.get("acquire_us") or r.get("all_us"))
        return f"{lat['p50']:,.0f} / {lat['p99']:,.0f}" if lat else "-"

    for r in sorted(durable, key=lambda r: (r["depth"], r["connections"])):
        c, d = r["connections"], r["depth"]
        mem, aof, sec = (find(label, "uncontended", "closed", c, d) for label in ("ringlock-memory", "redis-aof", "redis-aof-everysec"))
        print(f"| {c} | {d} | {rate(r)}{bad(r)} | {rate(mem)} | {ratio(r, mem)} | {rate(aof)} | {ratio(r, aof)} "
              f"| {rate(sec)} | {p50_99(r)} | {p50_99(mem)} | {p50_99(aof)} |")
    wm, w = find("wire-memory", "uncontended", "closed", 64, 64), find("wire", "uncontended", "closed", 64, 64)
    if w and wm:
        print(f"\nWire protocol, 64 connections × 64 in flight: durable {rate(w)}, in memory {rate(wm)} ({ratio(w, wm)}).")

tls_rows = [r for r in rows if r["label"] == "ringlock-tls" and r["workload"] == "uncontended" and r["mode"] == "closed"]
if tls_rows:
    print("\nTLS: ringlock durable over TLS 1.3 (ECDSA P-256, rustls with ring) against the same server in "
          "plaintext, uncontended acquire+release, HTTP and the wire; CPU: server µs per request:\n")
    print("| conns | depth | http TLS | http plain | TLS / plain | wire TLS | wire plain | TLS / plain "
          "| CPU http TLS | CPU http plain | p99 http TLS | p99 http plain |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in sorted(tls_rows, key=lambda r: (r["depth"], r["connections"])):
        c, d = t["connections"], t["depth"]
        plain, wt, wp = (find(label, "uncontended", "closed", c, d) for label in ("ringlock", "wire-tls", "wire"))
        print(f"| {c} | {d} | {rate(t)} | {rate(plain)} | {ratio(t, plain)} | {rate(wt)} | {rate(wp)} "
              f"| {ratio(wt, wp)} | {cpu(t)} | {cpu(plain)} | {p99(t)} | {p99(plain)} |")

hold = [find(label, "hold") for label in LOCKS]
waits = [(label, find(label, "hold")) for label in ("ringlock-wait", "wire-wait")]
if all(hold):
    print("\nHold-and-release (64 connections, 4 names, each held 1 ms), µs, p50 / p99 (hand-offs also p99.9). wait: a cycle's first "
          "attempt to its grant (queueing behind the other 63 included); hand-off: from a release being sent, while "
          "another connection was trying for the name, to the next holder having its grant. The first three retry a conflict at once (the reference SDKs poll "
          "every 200 ms); the last two wait server-side (`wait`), over HTTP and the wire:\n")
    for label, r in list(zip(LOCKS, hold)) + [w for w in waits if w[1]]:
        w, h = r.get("wait_us"), r.get("handoff_us")
        if w and h:
            print(f"- {label}: wait {w['p50']:,.0f} / {w['p99']:,.0f}, hand-off {h['p50']:,.0f} / {h['p99']:,.0f} "
                  f"/ p99.9 {h['p999']:,.0f} ({w['count']:,} grants, {h['count']:,} hand-offs, "
                  f"{r['counts']['conflicts']:,} conflicts)")

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
for d in sorted({r["depth"] for r in durable if r["depth"] > 1}):
    dur, mem = best("ringlock", d), best("ringlock-memory", d)
    aof = best("redis-aof", d)
    if dur and mem and aof:
        x, y = dur["throughput"] / mem["throughput"], dur["throughput"] / aof["throughput"]
        verdict = "met" if x >= 0.6 and y >= 2 else "**missed**"
        print(f"- Durable, pipelined (depth {d}) HTTP acquire+release, best of each: {dur['throughput']:,.0f} req/s, "
              f"{x * 100:.0f}% of in memory ({mem['throughput']:,.0f}), {y:.2f}x Redis appendfsync always "
              f"({aof['throughput']:,.0f}) (goal ≥ 60% and ≥ 2x): {verdict}")
w = find("wire", "uncontended", "closed", 64, 64)
if w:
    verdict = "met" if w["throughput"] >= 2e6 else "**missed**"
    print(f"- Durable wire protocol at depth 64: {w['throughput']:,.0f} req/s (goal ≥ 2,000,000): {verdict}")
one = find("ringlock", "uncontended", "closed", 1, 1)
if one and floor and one.get("acquire_us"):
    gap = one["acquire_us"]["p50"] - floor["p50_us"]
    verdict = "met" if gap <= 100 else "**missed**"
    into_room = (f"; {one['acquire_us']['p50'] - room_floor['p50_us']:,.0f} µs above a sync into room "
                 f"({room_floor['p50_us']} µs)" if room_floor else "")
    print(f"- One connection, one request at a time: acquire p50 {one['acquire_us']['p50']:,.0f} µs, fdatasync p50 "
          f"{floor['p50_us']} µs in the same run: {gap:,.0f} µs above it (goal ≤ 100 µs{into_room}): {verdict}")
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
