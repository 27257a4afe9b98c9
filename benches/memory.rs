//! Bytes per held lock at 1M locks, with and without a TTL. Counts the bytes the engine asks
//! the allocator for (a counting wrapper around mimalloc, the server's allocator) and, as a
//! cross-check, the growth of the process's resident set. Run: `cargo bench --bench memory`.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc as Inner;
use std::sync::atomic::{AtomicUsize, Ordering};

use ringlock::route::ResourceHasher;
use ringlock::shard::{AcquireOpts, Shard, TokenSeries};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to mimalloc unchanged, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { Inner.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { Inner.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { Inner.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const LOCKS: usize = 1_000_000;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn measure(label: &str, ttl: Option<u64>) {
    // Names are generated up front so that only the engine's own memory is counted.
    let names: Vec<String> = (0..LOCKS).map(|i| format!("bucket/object-{i:07}")).collect();
    let owner = "worker-17";
    let name_bytes: usize = names.iter().map(|n| n.len()).sum::<usize>() + LOCKS * owner.len();
    let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), rss_bytes());
    let mut shard = Shard::new(ResourceHasher::new(), TokenSeries::after(0));
    for name in &names {
        shard.acquire(name, owner, AcquireOpts { ttl, ..AcquireOpts::default() }, 0);
    }
    let heap = LIVE.load(Ordering::Relaxed) - heap0;
    let rss = rss_bytes().saturating_sub(rss0);
    println!(
        "{label:>8}: {} locks, heap {:.1} B/lock ({:.1} B/lock beyond the {:.1} B of names), rss {:.1} B/lock",
        shard.len(),
        heap as f64 / LOCKS as f64,
        (heap - name_bytes) as f64 / LOCKS as f64,
        name_bytes as f64 / LOCKS as f64,
        rss as f64 / LOCKS as f64,
    );
    // Churn: release everything, then check what is left.
    for name in &names {
        shard.release(name, owner, None, 1);
    }
    println!("{label:>8}: after releasing all, heap {} B", LIVE.load(Ordering::Relaxed) - heap0);
}

fn main() {
    // `cargo test --benches` runs bench targets with no arguments; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // Each case in a fresh process, so that one case's freed pages do not flatter the other's
    // resident-set figure.
    match std::env::var("RINGLOCK_MEMORY_CASE").as_deref() {
        Ok("no-ttl") => measure("no TTL", None),
        Ok("ttl") => measure("TTL", Some(60_000)),
        _ => {
            for case in ["no-ttl", "ttl"] {
                let status = std::process::Command::new(std::env::current_exe().expect("own path"))
                    .arg("--bench")
                    .env("RINGLOCK_MEMORY_CASE", case)
                    .status()
                    .expect("run a case");
                assert!(status.success());
            }
        }
    }
}
