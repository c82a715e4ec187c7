//! Batch indices: per-epoch permutations keyed by (seed, epoch).

use rand::Rng;
use tweedie_core::rng::stream_rng;

use crate::loss::STREAM_NOISE;

/// RNG stream of the per-epoch permutations.
pub const STREAM_PERM: u64 = STREAM_NOISE + 1;

/// Batch indices of step k: positions k·B … k·B+B−1 of the infinite sequence of per-epoch
/// permutations of 0..N, permutation e keyed by (seed, e).
#[derive(Debug)]
pub struct BatchSampler {
    n: usize,
    seed: u64,
    cache: Option<(u64, Vec<usize>)>,
}

impl BatchSampler {
    pub fn new(n: usize, seed: u64) -> Self {
        BatchSampler {
            n,
            seed,
            cache: None,
        }
    }

    fn perm(&mut self, epoch: u64) -> &[usize] {
        if self.cache.as_ref().map(|c| c.0) != Some(epoch) {
            let mut rng = stream_rng(self.seed, epoch, STREAM_PERM);
            let mut p: Vec<usize> = (0..self.n).collect();
            for i in (1..self.n).rev() {
                let j = rng.gen_range(0..=i);
                p.swap(i, j);
            }
            self.cache = Some((epoch, p));
        }
        self.cache.as_ref().map(|c| c.1.as_slice()).unwrap_or(&[])
    }

    /// Indices of step k for a batch of `b`.
    pub fn indices(&mut self, k: u64, b: usize) -> Vec<usize> {
        let n = self.n as u64;
        (0..b as u64)
            .map(|i| {
                let pos = k * b as u64 + i;
                self.perm(pos / n)[(pos % n) as usize]
            })
            .collect()
    }
}
