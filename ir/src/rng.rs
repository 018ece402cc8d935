//! A small seeded pseudo-random generator (SplitMix64) for initialisers, data
//! shuffling and randomized tests: the same seed gives the same stream on every
//! machine, with no dependency. [`Rng::with_choices`] lets a fuzzer steer it.

/// SplitMix64 (Steele, Lea, Flood 2014): 64-bit state, passes BigCrush, trivially seedable.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    /// Bytes that decide the top byte of the next outputs, one each, in order.
    choices: Vec<u8>,
    /// How many of `choices` have been used.
    used: usize,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng::with_choices(seed, &[])
    }

    /// A generator whose first `choices.len()` outputs have the given bytes as their
    /// top byte (the other bits come from the seeded stream), and that continues as
    /// the seeded stream after them. A coverage-guided fuzzer that mutates the bytes
    /// thereby steers one decision per byte: `below(n)` for `n <= 256` is decided by
    /// its byte to within one of two neighbouring values.
    pub fn with_choices(seed: u64, choices: &[u8]) -> Rng {
        Rng {
            state: seed,
            choices: choices.to_vec(),
            used: 0,
        }
    }

    /// The generator's position in its stream: `Rng::new(rng.state())` continues it
    /// exactly, once the choices of `with_choices` are used up (checkpoints keep it).
    pub fn state(&self) -> u64 {
        self.state
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        match self.choices.get(self.used) {
            Some(&choice) => {
                self.used += 1;
                u64::from(choice) << 56 | z >> 8
            }
            None => z,
        }
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }

    /// Standard normal, by Box-Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // in (0, 1], so the log is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0) has no values");
        // Multiply-shift: bias is at most n / 2^64, negligible here.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn choices_decide_the_top_byte_then_the_seeded_stream_continues() {
        let mut steered = Rng::with_choices(7, &[0, 255, 128]);
        let mut plain = Rng::new(7);
        for choice in [0u64, 255, 128] {
            let (value, free) = (steered.next_u64(), plain.next_u64());
            assert_eq!(value >> 56, choice);
            assert_eq!(value << 8, free >> 8 << 8);
        }
        for _ in 0..5 {
            assert_eq!(steered.next_u64(), plain.next_u64());
        }
        let mut rng = Rng::with_choices(1, &[0, 255, 64]);
        assert_eq!(rng.below(10), 0);
        assert_eq!(rng.below(10), 9);
        assert_eq!(rng.below(4), 1);
    }

    #[test]
    fn uniform_and_normal_have_the_expected_moments() {
        let mut rng = Rng::new(1);
        let n = 20_000;
        let samples: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        let uniform: Vec<f64> = (0..n).map(|_| rng.uniform(-2.0, 2.0)).collect();
        assert!(uniform.iter().all(|&x| (-2.0..2.0).contains(&x)));
        let mean = uniform.iter().sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut items: Vec<usize> = (0..100).collect();
        Rng::new(3).shuffle(&mut items);
        assert_ne!(items, (0..100).collect::<Vec<_>>());
        items.sort();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }
}
