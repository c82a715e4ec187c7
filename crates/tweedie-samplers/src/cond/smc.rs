//! Sequential Monte Carlo bookkeeping: normalised weights, effective sample size and the two
//! low-variance resampling schemes (Douc, Cappé & Moulines 2005; Kitagawa 1996).

use serde::{Deserialize, Serialize};

/// How particles are resampled when the effective sample size falls below its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resampling {
    /// One uniform u, positions (i + u)/M (Kitagawa 1996): particle i is copied ⌊Mwᵢ⌋ or ⌈Mwᵢ⌉ times.
    #[default]
    Systematic,
    /// One uniform per stratum, positions (i + uᵢ)/M (Kitagawa 1996; Douc et al. 2005).
    Stratified,
}

/// Weights wᵢ = exp(ℓᵢ − max ℓ)/Σⱼ exp(ℓⱼ − max ℓ) from log-weights ℓ (all −∞ or NaN: uniform).
pub fn normalize(logw: &[f64]) -> Vec<f64> {
    let m = logw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return vec![1.0 / logw.len().max(1) as f64; logw.len()];
    }
    let w: Vec<f64> = logw.iter().map(|l| (l - m).exp()).collect();
    let s: f64 = w.iter().sum();
    w.into_iter().map(|v| v / s).collect()
}

/// Effective sample size ESS = 1/Σᵢwᵢ² of normalised weights (Kong, Liu & Wong 1994): M for
/// uniform weights, 1 when one particle carries all the weight.
pub fn ess(w: &[f64]) -> f64 {
    1.0 / w.iter().map(|v| v * v).sum::<f64>()
}

/// Ancestor indices for normalised weights `w`: M positions (i + uᵢ)/M walked through the
/// cumulative weights; `uniform(i)` gives uᵢ ∈ [0, 1) (only u₀ is used by systematic resampling).
pub fn resample(
    w: &[f64],
    scheme: Resampling,
    mut uniform: impl FnMut(usize) -> f64,
) -> Vec<usize> {
    let m = w.len();
    let u0 = uniform(0);
    let mut out = Vec::with_capacity(m);
    let mut cum = 0.0;
    let mut j = 0;
    for i in 0..m {
        let u = match scheme {
            Resampling::Systematic => u0,
            Resampling::Stratified => {
                if i == 0 {
                    u0
                } else {
                    uniform(i)
                }
            }
        };
        let pos = (i as f64 + u) / m as f64;
        while j < m - 1 && cum + w[j] <= pos {
            cum += w[j];
            j += 1;
        }
        out.push(j);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systematic_copies_floor_or_ceil() {
        let w = normalize(&[0.0, 1.0, -2.0, 0.5, -0.3, 2.0, -5.0]);
        for k in 0..50 {
            let u = (k as f64 + 0.37) / 50.0;
            let idx = resample(&w, Resampling::Systematic, |_| u);
            let m = w.len() as f64;
            for (i, wi) in w.iter().enumerate() {
                let n = idx.iter().filter(|&&j| j == i).count() as f64;
                assert!(
                    n >= (m * wi).floor() && n <= (m * wi).ceil(),
                    "particle {i}: {n} copies for M·w = {}",
                    m * wi
                );
            }
        }
    }

    #[test]
    fn stratified_is_unbiased() {
        // E[copies of i] = M·wᵢ; 4000 draws, the count of a particle has std ≤ 0.5.
        let w = normalize(&[0.0, 1.0, -2.0, 0.5]);
        let mut counts = [0.0; 4];
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let n = 4000;
        for _ in 0..n {
            let idx = resample(&w, Resampling::Stratified, |_| next());
            for j in idx {
                counts[j] += 1.0;
            }
        }
        for i in 0..4 {
            let mean = counts[i] / n as f64;
            assert!(
                (mean - 4.0 * w[i]).abs() < 4.0 * 0.5 / (n as f64).sqrt(),
                "{mean} vs {}",
                4.0 * w[i]
            );
        }
        assert!((ess(&[0.25; 4]) - 4.0).abs() < 1e-12);
        assert!((ess(&[1.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
    }
}
