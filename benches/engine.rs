//! Criterion micro-benchmarks of the lock engine: one shard's acquire+release pairs, the timer
//! wheel's insert+cancel, expiry sweeps, and list pages. Run: `cargo bench --bench engine`.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringlock::route::ResourceHasher;
use ringlock::shard::{AcquireOpts, Acquired, Changed, Shard, TokenSeries};
use ringlock::timer::TimerWheel;

// The server's allocator, so that the numbers are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}/{i:08}")).collect()
}

/// Uncontended acquire+release of names that are free, next to `live` held locks. "hot"
/// cycles through 1k names (a working set that stays in cache, as a fleet's busy names do);
/// "cold" through as many names as there are live locks, so at 1M every lookup misses the
/// cache.
fn acquire_release(c: &mut Criterion) {
    let mut g = c.benchmark_group("shard/acquire+release");
    g.throughput(Throughput::Elements(1));
    for live in [1_000, 1_000_000] {
        let mut shard = Shard::new(ResourceHasher::new(), TokenSeries::after(0));
        for name in names("held", live) {
            shard.acquire(&name, "holder", AcquireOpts::default(), 0);
        }
        let sets = if live == 1_000 { vec![("hot", 1_000)] } else { vec![("hot", 1_000), ("cold", live)] };
        for (set, count) in sets {
            let free = names("free", count);
            for (ttl_label, ttl) in [("no-ttl", None), ("ttl", Some(30_000))] {
                let label = format!("{set}/{ttl_label}");
                let opts = AcquireOpts { ttl, ..AcquireOpts::default() };
                let mut i = 0;
                g.bench_with_input(BenchmarkId::new(label, live), &live, |b, _| {
                    b.iter(|| {
                        let name = &free[i % free.len()];
                        i += 1;
                        let got =
                            matches!(shard.acquire(name, "worker-1", opts, 1), Acquired::Granted { .. });
                        let gone = matches!(shard.release(name, "worker-1", None, 1), Changed::Ok { .. });
                        black_box(got && gone)
                    })
                });
            }
        }
    }
    g.finish();
}

/// A busy acquire (the conflict answer), the most common reply under contention.
fn conflict(c: &mut Criterion) {
    let mut g = c.benchmark_group("shard/acquire-busy");
    g.throughput(Throughput::Elements(1));
    let mut shard = Shard::new(ResourceHasher::new(), TokenSeries::after(0));
    shard.acquire("hot", "holder", AcquireOpts::default(), 0);
    g.bench_function("held", |b| {
        b.iter(|| {
            black_box(matches!(
                shard.acquire("hot", "worker-1", AcquireOpts::default(), 1),
                Acquired::Busy { .. }
            ))
        })
    });
    g.finish();
}

/// Insert + cancel with `live` timers already in the wheel, deadlines spread over an hour.
fn timer_insert_cancel(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer/insert+cancel");
    g.throughput(Throughput::Elements(1));
    let spread = |i: u64| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) % 3_600_000 + 1;
    for live in SIZES {
        let mut wheel: TimerWheel<u64> = TimerWheel::new();
        for i in 0..live as u64 {
            wheel.insert(spread(i), i);
        }
        let mut i = live as u64;
        g.bench_with_input(BenchmarkId::from_parameter(live), &live, |b, _| {
            b.iter(|| {
                i += 1;
                let id = wheel.insert(spread(i), i);
                black_box(wheel.cancel(id, &i))
            })
        });
    }
    g.finish();
}

/// Advancing over 1M timers that all fall due within one second.
fn timer_advance(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer/advance");
    let n = 1_000_000u64;
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("1M expiries over 1s", |b| {
        b.iter_batched(
            || {
                let mut wheel: TimerWheel<u64> = TimerWheel::new();
                for i in 0..n {
                    wheel.insert(1 + i % 1000, i);
                }
                wheel
            },
            |mut wheel| {
                let mut fired = Vec::with_capacity(n as usize);
                while wheel.advance(1000, 4096, &mut fired) {}
                black_box(fired.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A shard sweeping 1M expired leases (each ends a lock and frees its memory).
fn shard_expiry(c: &mut Criterion) {
    let mut g = c.benchmark_group("shard/expire");
    let n = 1_000_000usize;
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    let all = names("lease", n);
    g.bench_function("1M leases", |b| {
        b.iter_batched(
            || {
                let mut shard = Shard::new(ResourceHasher::new(), TokenSeries::after(0));
                for (i, name) in all.iter().enumerate() {
                    let opts = AcquireOpts { ttl: Some(1 + (i % 1000) as u64), ..AcquireOpts::default() };
                    shard.acquire(name, "w", opts, 0);
                }
                shard
            },
            |mut shard| {
                while shard.advance(2000, 4096) {}
                assert!(shard.is_empty());
                shard
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A list page of 1,000 from the middle of `live` held locks: it costs the page, not the shard
/// (the shard keeps a large table's names in order).
fn list_page(c: &mut Criterion) {
    let mut g = c.benchmark_group("shard/list-page-1000");
    g.throughput(Throughput::Elements(1000));
    for live in [10_000, 100_000, 1_000_000] {
        let mut shard = Shard::new(ResourceHasher::new(), TokenSeries::after(0));
        let all = names("held", live);
        // In an order unrelated to the names', as a fleet takes them.
        for i in 0..live {
            shard.acquire(&all[(i * 7919) % live], "holder", AcquireOpts::default(), 0);
        }
        let after = &all[live / 2];
        g.bench_with_input(BenchmarkId::from_parameter(live), &live, |b, _| {
            b.iter(|| black_box(shard.list("held/", Some(after), 1000, 1).len()))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = acquire_release, conflict, timer_insert_cancel, timer_advance, shard_expiry, list_page
}
criterion_main!(benches);
