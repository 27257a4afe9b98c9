//! The generator's randomness: a SplitMix64 stream per connection, and picking a key from a
//! key space with it. Seeded, so a run's sequence of names is reproducible; no `rand` crate,
//! because three lines of arithmetic do.

/// SplitMix64 (Steele, Lea and Flood, 2014): 64 bits of state, one add and two multiplies per
/// number, and every seed (zero included) gives a full-period stream.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

/// The golden-ratio increment SplitMix64 adds to its state on every step.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    /// A stream starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The stream for connection `conn` of a run seeded with `seed`: the run's seed mixed with
    /// the connection's index, so connections do not walk the same names in lockstep.
    pub fn for_connection(seed: u64, conn: usize) -> SplitMix64 {
        let mut mixer = SplitMix64::new(seed ^ (conn as u64).wrapping_mul(GOLDEN_GAMMA));
        SplitMix64::new(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0), by Lemire's multiply-and-shift: no division, and a bias
    /// below n / 2^64, which no key space here comes near.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_splitmix64_stream_for_seed_zero() {
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SplitMix64::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let k = r.below(10);
            assert!(k < 10);
            seen[k as usize] += 1;
        }
        // 1000 expected per bucket; 800 is more than six standard deviations below.
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }

    #[test]
    fn below_one_is_always_zero() {
        let mut r = SplitMix64::new(99);
        assert!((0..100).all(|_| r.below(1) == 0));
    }

    #[test]
    fn connections_get_different_reproducible_streams() {
        let a1: Vec<u64> = {
            let mut r = SplitMix64::for_connection(42, 0);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let a2: Vec<u64> = {
            let mut r = SplitMix64::for_connection(42, 0);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix64::for_connection(42, 1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
    }
}
