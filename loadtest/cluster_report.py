#!/usr/bin/env python3
"""The tables of loadtest/cluster.sh, from its results (one JSON report per line):

    python3 loadtest/cluster_report.py target/loadtest/cluster/results.jsonl \
        target/loadtest/cluster/failovers.jsonl DURATION WARMUP

cluster.sh calls it at the end; run by hand, it prints the same tables again."""
import json
import math
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
failovers = [json.loads(line) for line in open(sys.argv[2]) if line.strip()]
duration, warmup = sys.argv[3], sys.argv[4]
SYSTEMS = ("ringlock", "etcd")
ROUTE_NAMES = {"all": "round robin over the 3", "leader": "all on the leader"}


def system(r):
    return r["label"].split(":")[0]


def route(r):
    return r["label"].split(":")[1]


def find(sys_, route_, workload, c, d):
    for r in rows:
        if (system(r), route(r), r["workload"], r["connections"], r["depth"]) == (sys_, route_, workload, c, d):
            return r
    return None


def rate(r):
    if not r:
        return "-"
    t = r["throughput"]
    return f"{t / 1000:,.1f}k" if t >= 10_000 else f"{t:,.0f}"


def lat(r, q):
    lat = r and (r.get("acquire_us") or r.get("all_us"))
    return f"{lat[q] / 1000:,.1f}" if lat else "-"


def cpu(r):
    v = r and r.get("server_cpu_us_per_request")
    return f"{v:,.0f}" if v else "-"


def bad(r):
    n = r["counts"]["errors"] if r else 0
    return f" **{n} errors**" if n else ""


def others(r):
    v = r.get("others_cpu_share")
    return f"{v * 100:.0f}%" if v is not None else "-"


def nearest_rank(values, q):
    """The nearest-rank percentile: of ten trials, p50 is the 5th and p99 the 10th (the worst)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


print(f"### Three-member clusters on one core (generator on the other; {warmup} s warm-up + {duration} s per run)\n")
print("req/s: lock requests answered per second (an acquire and its release are two). p50/p99: acquire latency, "
      "ms. CPU: the leader's CPU µs per request (user + system; the followers' is not counted). others: CPU of "
      "every other process during the run, in cores (the two followers are among them).\n")
print("| system | connections to | workload | conns | depth | req/s | p50 ms | p99 ms | conflicts | CPU µs/req "
      "| others |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {system(r)} | {ROUTE_NAMES.get(route(r), route(r))} | {r['workload']} | {r['connections']} "
          f"| {r['depth']} | {rate(r)}{bad(r)} | {lat(r, 'p50')} | {lat(r, 'p99')} | {r['counts']['conflicts']:,} "
          f"| {cpu(r)} | {others(r)} |")

print("\n### Failover: SIGKILL of the leader to the first grant by the new leader\n")
print("Each trial: a grant through the survivors, SIGKILL of the leader, a new acquire on the next survivor every "
      "10 ms until one is granted; then the killed member is restarted on its data and the cluster is whole again. "
      "p50 and p99 are nearest-rank over the trials (of ten, p99 is the worst). Goal (issue 12): p99 < 2 s.\n")
print("| system | trials | p50 ms | p99 ms | max ms | goal | every trial, ms |")
print("|---|---:|---:|---:|---:|---|---|")
for sys_ in SYSTEMS:
    mine = [f for f in failovers if f["label"] == sys_]
    if not mine:
        continue
    times = [f["first_grant_ms"] for f in mine if f["first_grant_ms"] is not None]
    missed = len(mine) - len(times)
    if not times:
        print(f"| {sys_} | {len(mine)} | - | - | - | no grant | - |")
        continue
    p99 = nearest_rank(times, 0.99) if not missed else math.inf
    goal = "met" if p99 < 2000 else "**missed**"
    each = ", ".join(f"{t:,.0f}" for t in times) + (f", {missed} never" if missed else "")
    print(f"| {sys_} | {len(mine)} | {nearest_rank(times, 0.5):,.0f} | "
          f"{'never' if missed else f'{p99:,.0f}'} | {max(times):,.0f} | {goal} | {each} |")

both = [r for r in rows if system(r) == "ringlock" and find("etcd", route(r), r["workload"], r["connections"],
                                                              r["depth"])]
if both:
    print("\n### Goals (issue 12): three-member ringlock ≥ 20× three-member etcd at the same shape, and ≥ 200k "
          "lock operations/s\n")
    print("| connections to | workload | conns | depth | ringlock | etcd | ringlock / etcd | ≥ 20× |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in both:
        e = find("etcd", route(r), r["workload"], r["connections"], r["depth"])
        x = r["throughput"] / e["throughput"] if e["throughput"] else math.inf
        print(f"| {ROUTE_NAMES.get(route(r), route(r))} | {r['workload']} | {r['connections']} | {r['depth']} "
              f"| {rate(r)} | {rate(e)} | {x:,.1f}× | {'met' if x >= 20 else '**missed**'} |")
    best = max(r["throughput"] for r in rows if system(r) == "ringlock")
    print(f"\nringlock's best: {best:,.0f} lock operations/s: {'met' if best >= 200_000 else '**missed**'} (≥ 200k).")
