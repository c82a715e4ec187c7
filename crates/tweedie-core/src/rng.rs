//! Per-sample seeded noise: a sample depends on (seed, sample index, draw) only, never on
//! batch size, thread count or device.

// TODO(core helper): pub fn sample_rng(seed: u64, index: u64) -> rand_chacha::ChaCha12Rng;
//   pub fn normal_vec(seed, index, stream, len) -> Vec<f64>  (stream separates draws, e.g. step)
