//! The counter-based random numbers of [`Op::Random`](crate::op::Op::Random):
//! element `n` of a sample is a pure function of `(seed, stream, n)`, so it does not
//! depend on how kernels are tiled, vectorised or split over threads, and the same
//! seed gives the same tensor on every machine.
//!
//! The bits are Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random
//! numbers: as easy as 1, 2, 3", SC 2011; the generator JAX uses), keyed by
//! `(seed, stream)` and fed the counter `(n, 0)`; the first output word is used.
//! Only 32-bit wrapping additions, rotations and exclusive ors, which Cranelift
//! emits identically on `i32` and `i32x4`.
//!
//! - uniform: the top 23 bits as a mantissa, `((bits >> 9) | bits(1.0)) − 1.0`, in
//!   `[0, 1)` on the grid `k·2^-23` (JAX's construction);
//! - normal: `√2·erfinv(v)` with `v = (2m + 1 − 2^23)·2^-23` from the same 23 bits
//!   `m`: symmetric about 0, never ±1, so the result is finite (|z| ≤ 5.42) — the
//!   inverse-CDF method JAX uses, with `erfinv` in Giles' single-precision form
//!   ("Approximating the erfinv function", GPU Computing Gems, 2011; relative error
//!   below 4e-7 on (-1, 1)) built from kiln's own `log_f32`, IEEE `sqrt` and `fma`.
//!   Under the contract of the `scalar` module docs, so compiled code equals these
//!   functions bit for bit.

use super::{horner, log_f32};

/// Threefry's key-schedule parity constant (Skein's C240, 32-bit form).
pub const THREEFRY_PARITY: u32 = 0x1bd1_1bda;
/// Rotation amounts of the four rounds of even and odd groups.
pub const THREEFRY_ROTATIONS: [[u32; 4]; 2] = [[13, 15, 26, 6], [17, 29, 16, 24]];

/// Threefry-2x32-20 of `counter` under `key`.
pub fn threefry2x32(key: [u32; 2], counter: [u32; 2]) -> [u32; 2] {
    let schedule = [key[0], key[1], key[0] ^ key[1] ^ THREEFRY_PARITY];
    let mut x = [
        counter[0].wrapping_add(schedule[0]),
        counter[1].wrapping_add(schedule[1]),
    ];
    for group in 0..5u32 {
        for &rotation in &THREEFRY_ROTATIONS[group as usize % 2] {
            x[0] = x[0].wrapping_add(x[1]);
            x[1] = x[1].rotate_left(rotation) ^ x[0];
        }
        // Key injection `group + 1`: the schedule words rotate by one each time.
        let injection = group as usize + 1;
        x[0] = x[0].wrapping_add(schedule[injection % 3]);
        x[1] = x[1]
            .wrapping_add(schedule[(injection + 1) % 3])
            .wrapping_add(group + 1);
    }
    x
}

/// The 32 random bits of element `counter` of stream `stream` under `seed`.
pub fn random_bits(seed: i32, stream: i32, counter: i32) -> u32 {
    threefry2x32([seed as u32, stream as u32], [counter as u32, 0])[0]
}

/// The bits of 1.0f32: or-ed below a 23-bit mantissa, a float in [1, 2).
pub const ONE_BITS: u32 = 0x3f80_0000;
/// 2^-23, the spacing of the uniform grid.
pub const TWO_POW_MINUS_23: f32 = 1.0 / 8_388_608.0;
/// 2^23 as an integer: the centre of the 24-bit odd grid of [`normal_f32`].
pub const TWO_POW_23_INT: i32 = 1 << 23;

/// A uniform sample in `[0, 1)` from random bits.
pub fn uniform_from_bits(bits: u32) -> f32 {
    f32::from_bits((bits >> 9) | ONE_BITS) - 1.0
}

/// A standard normal sample from random bits (see the module docs).
pub fn normal_from_bits(bits: u32) -> f32 {
    // 2m + 1 − 2^23 is an odd integer of magnitude below 2^23: exact as f32, and so
    // is its scaling by a power of two.
    let odd = (((bits >> 9) << 1) as i32 | 1).wrapping_sub(TWO_POW_23_INT);
    let v = odd as f32 * TWO_POW_MINUS_23;
    std::f32::consts::SQRT_2 * erfinv_f32(v)
}

/// Element `counter` of the uniform sample of stream `stream` under `seed`.
pub fn uniform_f32(seed: i32, stream: i32, counter: i32) -> f32 {
    uniform_from_bits(random_bits(seed, stream, counter))
}

/// Element `counter` of the normal sample of stream `stream` under `seed`.
pub fn normal_f32(seed: i32, stream: i32, counter: i32) -> f32 {
    normal_from_bits(random_bits(seed, stream, counter))
}

/// Giles' erfinv polynomials in `w − 2.5` (central, w < 5) and `√w − 3` (tails),
/// highest degree first, where `w = −ln(1 − x²)`.
pub const ERFINV_CENTRAL: [f32; 9] = [
    2.810_226_4e-8,
    3.432_739_4e-7,
    -3.523_387_7e-6,
    -4.391_506_5e-6,
    2.185_808_7e-4,
    -1.253_725e-3,
    -4.177_681_6e-3,
    0.246_640_73,
    1.501_409_4,
];
/// See [`ERFINV_CENTRAL`].
pub const ERFINV_TAIL: [f32; 9] = [
    -2.002_142_6e-4,
    1.009_505_6e-4,
    1.349_343_2e-3,
    -3.673_428_4e-3,
    5.739_507_7e-3,
    -7.622_461_3e-3,
    9.438_870_5e-3,
    1.001_674,
    2.832_976_8,
];
/// Where Giles' approximation switches from the central to the tail polynomial.
pub const ERFINV_SPLIT: f32 = 5.0;

/// The inverse error function on (-1, 1), Giles' single-precision form: both
/// polynomials are evaluated and a select picks one, as compiled code does.
pub fn erfinv_f32(x: f32) -> f32 {
    // (1 − x)(1 + x): 1 − x is exact for |x| ≥ ½ (Sterbenz), where it matters.
    let w = -log_f32((1.0 - x) * (1.0 + x));
    let central = horner(&ERFINV_CENTRAL, w - 2.5);
    let tail = horner(&ERFINV_TAIL, w.sqrt() - 3.0);
    let p = if w < ERFINV_SPLIT { central } else { tail };
    p * x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The known-answer vectors of the Random123 reference implementation (JAX's
    /// `testThreefry2x32` checks the same three).
    #[test]
    fn threefry_matches_the_reference_vectors() {
        assert_eq!(threefry2x32([0, 0], [0, 0]), [0x6b20_0159, 0x99ba_4efe]);
        assert_eq!(
            threefry2x32([u32::MAX, u32::MAX], [u32::MAX, u32::MAX]),
            [0x1cb9_96fc, 0xbb00_2be7]
        );
        assert_eq!(
            threefry2x32([0x1319_8a2e, 0x0370_7344], [0x243f_6a88, 0x85a3_08d3]),
            [0xc492_3a9c, 0x483d_f7a0]
        );
    }

    #[test]
    fn uniform_covers_the_unit_interval_on_its_grid() {
        assert_eq!(uniform_from_bits(0), 0.0);
        assert_eq!(uniform_from_bits(u32::MAX), 1.0 - TWO_POW_MINUS_23);
        assert_eq!(uniform_from_bits(1 << 31), 0.5);
        // The low 9 bits do not matter.
        assert_eq!(uniform_from_bits(0x1ff), 0.0);
    }

    #[test]
    fn normal_is_symmetric_and_finite_at_the_extremes() {
        let top = normal_from_bits(u32::MAX);
        let bottom = normal_from_bits(0);
        assert_eq!(top, -bottom);
        assert!(top.is_finite() && top > 5.0 && top < 5.5, "{top}");
        // m = 2^22 gives v = 2^-23, the smallest positive value.
        let near_zero = normal_from_bits(1 << 31);
        assert!(near_zero > 0.0 && near_zero < 1e-6, "{near_zero}");
    }

    #[test]
    fn erfinv_inverts_erf() {
        for i in -99..=99 {
            let x = i as f32 / 100.0;
            let y = erfinv_f32(x);
            let back = libm::erf(f64::from(y));
            // Relative error of Giles' form is below 4e-7; erf's slope near ±1 is small,
            // so compare in x.
            assert!(
                (back - f64::from(x)).abs() <= 1e-6 * f64::from(x.abs()).max(1e-3),
                "erf(erfinv({x})) = {back}"
            );
        }
        assert_eq!(erfinv_f32(0.0), 0.0);
    }
}
