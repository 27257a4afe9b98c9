//! Routing: which shard owns a resource ([`Router`]). Owns the process-wide resource hash.
//!
//! The hash is foldhash (the hash hashbrown itself defaults to): a few nanoseconds for a short
//! name, and seeded at random once per process, so that a client who chooses resource names
//! cannot aim them all at one shard or one probe chain. Every core gets a clone of the same
//! seeded state, so a name hashes alike everywhere and the owner of a resource is fixed for the
//! life of the process.

use std::hash::BuildHasher;

/// The seeded hash of resource names, shared (by value) by the router and every shard.
#[derive(Clone, Debug, Default)]
pub struct ResourceHasher(foldhash::fast::SeedableRandomState);

impl ResourceHasher {
    /// A hasher with a fresh random seed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The hasher of the seed `(a, b)`: the same on every run, so that a data directory's
    /// names belong to the same core after a restart.
    pub fn with_seed(a: u64, b: u64) -> Self {
        // foldhash wants its shared seed for the life of the process; one per distinct seed
        // (a process makes one or two).
        let shared: &'static foldhash::SharedSeed = Box::leak(Box::new(foldhash::SharedSeed::from_u64(b)));
        ResourceHasher(foldhash::fast::SeedableRandomState::with_seed(a, shared))
    }

    /// The 64-bit hash of a resource name.
    #[inline]
    pub fn hash(&self, resource: &str) -> u64 {
        self.0.hash_one(resource)
    }
}

/// The shard (one per core) that owns a resource with hash `hash`, out of `shards`.
///
/// Uses bits 25..57 of the hash, scaled by multiplication (Lemire's fast range): hashbrown picks
/// buckets with the low bits and tags them with the top seven, so routing on bits that neither
/// uses keeps each shard's table as evenly spread as if it held every name.
#[inline]
pub fn shard_for(hash: u64, shards: usize) -> usize {
    let middle = (hash >> 25) & 0xFFFF_FFFF;
    ((middle * shards as u64) >> 32) as usize
}

/// Which core owns a resource: the same answer on every core, for the life of the process.
#[derive(Clone, Debug)]
pub struct Router {
    hasher: ResourceHasher,
    cores: usize,
}

impl Router {
    /// A router over `cores` cores (at least one).
    pub fn new(hasher: ResourceHasher, cores: usize) -> Router {
        Router { hasher, cores: cores.max(1) }
    }

    /// Cores of the server.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// The hash it routes by (every shard hashes its table with the same).
    pub fn hasher(&self) -> &ResourceHasher {
        &self.hasher
    }

    /// The core that owns `resource`.
    #[inline]
    pub fn owner(&self, resource: &str) -> usize {
        if self.cores == 1 {
            // One shard owns everything: no need to hash the name to route it.
            return 0;
        }
        shard_for(self.hasher.hash(resource), self.cores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_hash_alike_and_fresh_hashers_differ() {
        let a = ResourceHasher::new();
        let b = a.clone();
        assert_eq!(a.hash("s3://bucket/key"), b.hash("s3://bucket/key"));
        assert_ne!(a.hash("x"), a.hash("y"));
        assert_ne!(ResourceHasher::new().hash("x"), a.hash("x"), "each process seeds anew");
    }

    #[test]
    fn spreads_names_evenly_over_shards() {
        let h = ResourceHasher::new();
        for shards in [1, 2, 3, 8] {
            let mut counts = vec![0usize; shards];
            for i in 0..80_000 {
                counts[shard_for(h.hash(&format!("job-{i}")), shards)] += 1;
            }
            let expect = 80_000 / shards;
            for c in counts {
                assert!(c.abs_diff(expect) < expect / 10, "{c} vs {expect} over {shards} shards");
            }
        }
    }
}
