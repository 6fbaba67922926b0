//! Small, fast, reproducible random numbers (SplitMix64).
//!
//! Every sample `b` of a batch drawn with seed `s` uses its own stream
//! `Rng::for_sample(s, b)`, so results do not depend on the number of threads.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finalizer: a bijective 64-bit mixer.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of batch `index` of a prefetch stream started with `seed`:
/// `mix64(seed ^ mix64(index + 0x9E3779B97F4A7C15))`.
/// `prefetch(seed=s)` yields, as batch `i`, exactly what the sampler returns
/// with `seed=derive_seed(s, i)`.
pub fn derive_seed(seed: u64, index: u64) -> u64 {
    mix64(seed ^ mix64(index.wrapping_add(GOLDEN)))
}

/// A SplitMix64 generator.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: mix64(seed ^ 0x5851_F42D_4C95_7F2D) }
    }

    /// The generator for sample `b` of a batch drawn with `seed`.
    pub fn for_sample(seed: u64, b: usize) -> Self {
        Rng::new(seed ^ mix64((b as u64).wrapping_mul(GOLDEN).wrapping_add(1)))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform integer in `[0, n)` (`n > 0`), Lemire's multiply-shift.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform float in `[0, 1)`.
    #[inline]
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_in_range_and_covers() {
        let mut r = Rng::new(7);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let x = r.below(10) as usize;
            assert!(x < 10);
            seen[x] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_ne!(derive_seed(1, 0), derive_seed(1, 1));
        assert_eq!(derive_seed(5, 3), derive_seed(5, 3));
    }
}
