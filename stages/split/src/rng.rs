//! The split's random numbers, specified here so that a seed gives the same split on every
//! platform and with every version of every dependency.
//!
//! SplitMix64 (Steele, Lea, Flood 2014): `state += 0x9E3779B97F4A7C15`, then
//! `z = state; z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) * 0x94D049BB133111EB;
//! z ^ z>>31` (wrapping arithmetic). Shuffles are Fisher–Yates from the last index down,
//! swapping `i` with `next() % (i + 1)`.

pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // First outputs for seed 1234567 from the SplitMix64 reference implementation.
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(rng.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn shuffles_are_fixed_by_the_seed() {
        let mut a: Vec<u32> = (0..10).collect();
        SplitMix64::new(42).shuffle(&mut a);
        assert_eq!(a, vec![0, 9, 5, 8, 6, 4, 7, 2, 1, 3]);
    }
}
