//! A tiny seeded pseudo-random generator (SplitMix64) for the fault decisions.
//!
//! The relay must make the same decisions for the same seed and the same sequence of
//! datagrams, on every platform and every version of the crate, so it cannot use a generator
//! whose output may change under it; and it needs nothing stronger than "looks uniform".
//! SplitMix64 is ten lines, passes BigCrush, and any 64-bit seed (0 included) is fine.

/// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit counter run through a mixing function.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits as the mantissa.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (never for 0, always for 1). Draws nothing when `p` is 0,
    /// so a fault that is off does not shift the decisions of the others.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn floats_stay_in_the_unit_interval_and_chance_honours_the_extremes() {
        let mut r = SplitMix64::new(0);
        for _ in 0..10_000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert!(r.chance(1.0));
            assert!(!r.chance(0.0));
        }
    }
}
