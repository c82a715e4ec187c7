//! Per-sample seeded noise: a sample depends on (seed, sample index, stream) only, never on
//! batch size, thread count or device.
//!
//! This module is the one source of noise for every sampler and backend: initial x_T, the
//! per-step noise of stochastic samplers, training noise. Backends (ndarray or tch, CPU or
//! CUDA) draw here, in f64 on the CPU, and only then convert/upload, so a CPU run and a GPU
//! run with the same seed see the same numbers.
//!
//! Normals come from Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as
//! 1, 2, 3"), the counter-based generator cuRAND and JAX use: the key is derived once from
//! (seed, stream) by one Philox call, the 128-bit counter is (block, sample index), and each
//! block's four 32-bit words become two 53-bit uniforms and, by Box–Muller, two normals. Normal
//! j of a sample is a pure function of (seed, stream, index, j): no generator state, so rows
//! can be drawn in any order, on any thread, into a preallocated buffer.
//!
//! Discrete draws (component choices, permutations, coin flips) use [`stream_rng`], a ChaCha12
//! generator keyed the same way: key = (seed, stream) as 2×8 little-endian bytes, stream id
//! (nonce) = sample index.

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Conventional stream ids, so independent uses never share noise.
pub mod streams {
    /// Initial state x_T.
    pub const INIT: u64 = 0;
    /// Per-step sampler noise uses `STEP_BASE + step`.
    pub const STEP_BASE: u64 = 1 << 32;
    /// Mixture sampling (component choice and Gaussian draw).
    pub const MIXTURE: u64 = 2 << 32;
    /// Training noise ε and noise levels.
    pub const TRAIN: u64 = 3 << 32;
    /// Likelihood: Hutchinson probe k uses `LIKELIHOOD + k`, dequantisation noise `LIKELIHOOD - 1`.
    pub const LIKELIHOOD: u64 = 4 << 32;
    /// Posterior samplers with loops of their own (FPS, DiffPIR, DAPS, PnP-DM, EnKG, DPS-GSG):
    /// outer step i, draw j uses `COND + (i << 20) + j`.
    pub const COND: u64 = 5 << 32;
}

/// The generator of sample `index` in stream `stream` under `seed`.
pub fn stream_rng(seed: u64, index: u64, stream: u64) -> ChaCha12Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&stream.to_le_bytes());
    let mut rng = ChaCha12Rng::from_seed(key);
    rng.set_stream(index);
    rng
}

/// The generator of sample `index` under `seed` (stream 0).
pub fn sample_rng(seed: u64, index: u64) -> ChaCha12Rng {
    stream_rng(seed, index, 0)
}

/// Philox4x32 multipliers and Weyl key increments (Salmon et al. 2011, Table 2).
const PHILOX_M: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
const PHILOX_W: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

/// Philox4x32-10: ten rounds of (hi, lo) = M·c products, c′ = (hi₁ ⊕ c₁ ⊕ k₀, lo₁, hi₀ ⊕ c₃ ⊕ k₁, lo₀),
/// key bumped by the Weyl constants between rounds (Salmon et al. 2011, §3.2).
#[inline(always)]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W[0]);
            k[1] = k[1].wrapping_add(PHILOX_W[1]);
        }
        let p0 = PHILOX_M[0] as u64 * c[0] as u64;
        let p1 = PHILOX_M[1] as u64 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// The Philox key of (seed, stream): one Philox call on the counter (stream, tag) under the seed,
/// so every stream gets its own 64-bit key and the 128-bit counter is free for (block, index).
fn philox_key(seed: u64, stream: u64) -> [u32; 2] {
    const KEY_TAG: u32 = 0x6B65_7921;
    let out = philox4x32_10(
        [stream as u32, (stream >> 32) as u32, KEY_TAG, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    [out[0], out[1]]
}

/// A uniform in the open interval (0, 1) from 53 bits of (hi, lo): (m + ½)·2⁻⁵³.
#[inline(always)]
fn open_uniform(hi: u32, lo: u32) -> f64 {
    let m = (((hi as u64) << 32) | lo as u64) >> 11;
    (m as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// Box–Muller (Box & Muller 1958): √(−2 ln u₁)·(cos 2πu₂, sin 2πu₂) for the Philox block.
#[inline(always)]
fn normal_pair(block: [u32; 4]) -> (f64, f64) {
    let u1 = open_uniform(block[0], block[1]);
    let u2 = open_uniform(block[2], block[3]);
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
    (r * c, r * s)
}

/// Standard normals 0 .. out.len() of sample `index` in stream `stream` under `seed`, written
/// into `out` (normals 2j and 2j + 1 come from Philox block j, counter (j, index)).
pub fn fill_normals(seed: u64, index: u64, stream: u64, out: &mut [f64]) {
    normals_with(philox_key(seed, stream), index, out.len(), |j, z| {
        out[j] = z
    });
}

/// Uniforms in (0, 1) for sample `index` in stream `stream` under `seed`, written into `out`
/// (uniforms 2j and 2j + 1 are the two 53-bit halves of Philox block j, counter (j, index)).
pub fn fill_uniforms(seed: u64, index: u64, stream: u64, out: &mut [f64]) {
    let key = philox_key(seed, stream);
    let (i0, i1) = (index as u32, (index >> 32) as u32);
    for j in 0..out.len().div_ceil(2) {
        let b = philox4x32_10([j as u32, (j as u64 >> 32) as u32, i0, i1], key);
        out[2 * j] = open_uniform(b[0], b[1]);
        if 2 * j + 1 < out.len() {
            out[2 * j + 1] = open_uniform(b[2], b[3]);
        }
    }
}

/// Calls `put(j, z_j)` for the standard normals j = 0 .. len of sample `index` under `key`.
#[inline(always)]
fn normals_with(key: [u32; 2], index: u64, len: usize, mut put: impl FnMut(usize, f64)) {
    let (i0, i1) = (index as u32, (index >> 32) as u32);
    for block in 0..len.div_ceil(2) {
        let b = block as u64;
        let (z0, z1) = normal_pair(philox4x32_10([b as u32, (b >> 32) as u32, i0, i1], key));
        put(2 * block, z0);
        if 2 * block + 1 < len {
            put(2 * block + 1, z1);
        }
    }
}

/// Standard normals for the rows of a `[B, len]` buffer (row-major, `out.len() = B·len`): row
/// i is sample `first_index + i`, so it equals `normal_vec(seed, first_index + i, stream, len)`
/// whatever the batch split. `put(k, z)` receives flat position k; nothing is allocated.
pub fn normal_rows_with(
    seed: u64,
    first_index: u64,
    stream: u64,
    rows: usize,
    len: usize,
    mut put: impl FnMut(usize, f64),
) {
    let key = philox_key(seed, stream);
    for i in 0..rows {
        normals_with(key, first_index + i as u64, len, |j, z| put(i * len + j, z));
    }
}

/// `len` standard normals for sample `index`, stream `stream` (Philox4x32-10 + Box–Muller).
pub fn normal_vec(seed: u64, index: u64, stream: u64, len: usize) -> Vec<f64> {
    let mut v = vec![0.0; len];
    fill_normals(seed, index, stream, &mut v);
    v
}

/// Standard normals for samples `first_index .. first_index + n`, one row per sample ([n, len]).
/// Row i equals `normal_vec(seed, first_index + i, stream, len)` whatever the batch split.
pub fn normal_rows(seed: u64, first_index: u64, n: usize, stream: u64, len: usize) -> Array2<f64> {
    let mut v = vec![0.0; n * len];
    normal_rows_with(seed, first_index, stream, n, len, |k, z| v[k] = z);
    Array2::from_shape_vec((n, len), v).unwrap_or_else(|_| Array2::zeros((n, len)))
}

/// One uniform draw in [0, 1) for sample `index`, stream `stream`.
pub fn uniform(seed: u64, index: u64, stream: u64) -> f64 {
    stream_rng(seed, index, stream).gen::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn independent_of_batching() {
        let all = normal_rows(7, 0, 10, streams::INIT, 5);
        let tail = normal_rows(7, 6, 4, streams::INIT, 5);
        assert_eq!(all.slice(ndarray::s![6.., ..]), tail);
        assert_eq!(all.row(3).to_vec(), normal_vec(7, 3, streams::INIT, 5));
    }

    #[test]
    fn seeds_indices_streams_differ() {
        let a = normal_vec(1, 0, 0, 4);
        assert_ne!(a, normal_vec(2, 0, 0, 4));
        assert_ne!(a, normal_vec(1, 1, 0, 4));
        assert_ne!(a, normal_vec(1, 0, 1, 4));
        assert_eq!(a, normal_vec(1, 0, 0, 4));
    }

    /// Random123's known-answer vectors for philox4x32 with 10 rounds (kat_vectors: counter, key → output).
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    /// Row i is a function of (seed, stream, first_index + i) only, and of the prefix length never:
    /// a longer row starts with the shorter one (odd lengths drop the block's second normal).
    #[test]
    fn rows_are_prefix_stable_and_buffer_fills_agree() {
        let long = normal_vec(5, 9, 3, 7);
        assert_eq!(normal_vec(5, 9, 3, 4), long[..4].to_vec());
        let mut buf = [0.0; 7];
        fill_normals(5, 9, 3, &mut buf);
        assert_eq!(buf.to_vec(), long);
        let rows = normal_rows(5, 8, 3, 3, 7);
        assert_eq!(rows.row(1).to_vec(), long);
    }

    /// Distribution test: Kolmogorov–Smirnov distance of 100 000 draws (from many samples,
    /// streams and positions) to Φ, below the 0.1%-level critical value 1.95/√n; and the
    /// fourth moment 3 within 5 standard errors (√(96/n)).
    #[test]
    fn normals_pass_ks_and_kurtosis() {
        let mut z: Vec<f64> = (0..50u64)
            .flat_map(|i| normal_vec(11, i, streams::STEP_BASE + i % 3, 2000))
            .collect();
        let n = z.len() as f64;
        let m4 = z.iter().map(|v| v.powi(4)).sum::<f64>() / n;
        assert!((m4 - 3.0).abs() < 5.0 * (96.0 / n).sqrt(), "{m4}");
        z.sort_by(|a, b| a.total_cmp(b));
        let phi = |x: f64| 0.5 * erfc(-x / std::f64::consts::SQRT_2);
        let d = z
            .iter()
            .enumerate()
            .map(|(k, &x)| {
                let f = phi(x);
                (f - k as f64 / n).abs().max(((k + 1) as f64 / n - f).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 1.95 / n.sqrt(), "KS distance {d}");
    }

    /// erfc to ~1e-7 (Numerical Recipes' Chebyshev fit), enough for a KS bound of 6e-3.
    fn erfc(x: f64) -> f64 {
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let r = t
            * (-z * z - 1.26551223
                + t * (1.00002368
                    + t * (0.37409196
                        + t * (0.09678418
                            + t * (-0.18628806
                                + t * (0.27886807
                                    + t * (-1.13520398
                                        + t * (1.48851587
                                            + t * (-0.82215223 + t * 0.17087277)))))))))
                .exp();
        if x >= 0.0 {
            r
        } else {
            2.0 - r
        }
    }

    /// Uniforms: prefix-stable, inside (0, 1), mean ½ and variance 1/12 within 5 standard errors.
    #[test]
    fn uniforms_are_uniform() {
        let mut u = vec![0.0; 20001];
        fill_uniforms(4, 2, 9, &mut u);
        let mut v = vec![0.0; 3];
        fill_uniforms(4, 2, 9, &mut v);
        assert_eq!(v, u[..3].to_vec());
        assert!(u.iter().all(|&x| x > 0.0 && x < 1.0));
        let n = u.len() as f64;
        let m = u.iter().sum::<f64>() / n;
        let var = u.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
        assert!((m - 0.5).abs() < 5.0 * (1.0 / 12.0 / n).sqrt(), "{m}");
        assert!(
            (var - 1.0 / 12.0).abs() < 5.0 * (1.0 / 180.0 / n).sqrt(),
            "{var}"
        );
    }

    #[test]
    fn normals_have_unit_moments() {
        let z = normal_rows(3, 0, 2000, 0, 10);
        let n = z.len() as f64;
        let mean = z.sum() / n;
        let var = z.mapv(|v| v * v).sum() / n - mean * mean;
        // 20 000 draws: standard errors 0.007 (mean) and 0.01 (variance); 5σ bounds.
        assert!(mean.abs() < 0.035, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }
}
