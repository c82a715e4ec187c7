//! A small digits classifier the project trains itself, and the Fréchet distance between
//! generated and held-out digits in its feature space (the FID recipe of Heusel et al. 2017,
//! with this classifier in place of Inception).
//!
//! Network: 64 → 256 → 64 (features, ReLU) → 10, Adam, trained on the fixed training split
//! (every image with i mod 6 ≠ 5); its weights are cached next to the digits file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayView2};
use tch::{nn, nn::Module, nn::OptimizerConfig, Device, Kind, Tensor};

use crate::data::Dataset;
use crate::error::{Result, TrainError};

/// Version tag of the cached weights; bump when the architecture or recipe changes.
const CACHE_TAG: &str = "digits-mlp-v1";
/// Feature width.
pub const FEATURES: i64 = 64;

/// The digits classifier.
#[derive(Debug)]
pub struct Classifier {
    vs: nn::VarStore,
    body: nn::Sequential,
    head: nn::Linear,
}

fn build(vs: &nn::VarStore) -> (nn::Sequential, nn::Linear) {
    let p = vs.root();
    let body = nn::seq()
        .add(nn::linear(&p / "fc1", 64, 256, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&p / "fc2", 256, FEATURES, Default::default()))
        .add_fn(|x| x.relu());
    let head = nn::linear(&p / "head", FEATURES, 10, Default::default());
    (body, head)
}

fn as_input(x: ArrayView2<f32>) -> Result<Tensor> {
    if x.ncols() != 64 {
        return Err(TrainError::Data(format!(
            "the digits classifier takes 64 pixels, got {}",
            x.ncols()
        )));
    }
    let v: Vec<f32> = x.iter().copied().collect();
    Ok(Tensor::from_slice(&v).view([x.nrows() as i64, 64]))
}

impl Classifier {
    /// Trains from scratch on `train` (labels 0–9), deterministically for a given seed.
    pub fn train(train: &Dataset, steps: usize, seed: i64) -> Result<Self> {
        crate::trainer::with_torch_rng(|| Self::train_locked(train, steps, seed))
    }

    fn train_locked(train: &Dataset, steps: usize, seed: i64) -> Result<Self> {
        let labels = train
            .labels
            .as_ref()
            .ok_or_else(|| TrainError::Data("classifier: data have no labels".into()))?;
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let (body, head) = build(&vs);
        let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
        let x = as_input(train.x.view())?;
        let y = Tensor::from_slice(labels);
        let n = train.len() as i64;
        for _ in 0..steps {
            let idx = Tensor::randint(n, [128], (Kind::Int64, Device::Cpu));
            // Light noise augmentation: generated digits are not pixel-perfect either.
            let xb = x.index_select(0, &idx);
            let xb = &xb + Tensor::randn_like(&xb) * 0.1;
            let loss = head
                .forward(&body.forward(&xb))
                .cross_entropy_for_logits(&y.index_select(0, &idx));
            opt.backward_step(&loss);
        }
        Ok(Classifier { vs, body, head })
    }

    /// Loads cached weights, or trains (2,000 steps) and caches them (a cache that cannot be
    /// written only warns).
    pub fn cached(train: &Dataset, cache: &Path) -> Result<Self> {
        Self::cached_with(train, cache, 2000)
    }

    /// [`Classifier::cached`] with a given number of training steps. Under the torch generator
    /// lock: building the layers to load the cache into draws their initial weights, which
    /// must not get between another thread's seed and its draws (dropout in a training step).
    pub fn cached_with(train: &Dataset, cache: &Path, steps: usize) -> Result<Self> {
        crate::trainer::with_torch_rng(|| Self::cached_locked(train, cache, steps))
    }

    fn cached_locked(train: &Dataset, cache: &Path, steps: usize) -> Result<Self> {
        if cache.is_file() {
            let vs = nn::VarStore::new(Device::Cpu);
            let (body, head) = build(&vs);
            let ok = tweedie_nets::checkpoint::read_file(cache)
                .ok()
                .is_some_and(|b| {
                    safetensors::SafeTensors::read_metadata(&b)
                        .ok()
                        .and_then(|(_, m)| {
                            m.metadata().as_ref().and_then(|m| m.get("tag").cloned())
                        })
                        .as_deref()
                        == Some(CACHE_TAG)
                });
            if ok && tch::no_grad(|| vs.read_safetensors(cache)).is_ok() {
                return Ok(Classifier { vs, body, head });
            }
            eprintln!(
                "warning: ignoring the stale or unreadable classifier cache {}",
                cache.display()
            );
        }
        let c = Self::train(train, steps, 0)?;
        let named: Vec<(String, Tensor)> = c.vs.variables().into_iter().collect();
        let mut meta = BTreeMap::new();
        meta.insert("tag".to_string(), CACHE_TAG.to_string());
        if let Err(e) = tweedie_nets::checkpoint::save_tensors(cache, &named, &meta) {
            eprintln!(
                "warning: cannot cache the digits classifier at {}: {e}",
                cache.display()
            );
        }
        Ok(c)
    }

    /// Penultimate-layer features [N, 64] of images in [−1, 1].
    pub fn features(&self, x: ArrayView2<f32>) -> Result<Array2<f64>> {
        let input = as_input(x)?;
        let f = tch::no_grad(|| self.body.forward(&input)).to_kind(Kind::Double);
        let v: Vec<f64> = Vec::<f64>::try_from(f.flatten(0, -1))?;
        Array2::from_shape_vec((x.nrows(), FEATURES as usize), v)
            .map_err(|e| TrainError::Other(e.to_string()))
    }

    /// Predicted classes.
    pub fn predict(&self, x: ArrayView2<f32>) -> Result<Vec<i64>> {
        let input = as_input(x)?;
        let logits = tch::no_grad(|| self.head.forward(&self.body.forward(&input)));
        Ok(Vec::<i64>::try_from(logits.argmax(1, false))?)
    }

    /// Fraction of correct predictions on a labelled set.
    pub fn accuracy(&self, data: &Dataset) -> Result<f64> {
        let labels = data
            .labels
            .as_ref()
            .ok_or_else(|| TrainError::Data("accuracy needs labels".into()))?;
        let p = self.predict(data.x.view())?;
        Ok(
            p.iter().zip(labels).filter(|(a, b)| a == b).count() as f64
                / labels.len().max(1) as f64,
        )
    }
}

/// Where the classifier is cached: next to the digits file.
pub fn default_cache_path(digits_file: &Path) -> PathBuf {
    digits_file.with_file_name("digits_classifier.safetensors")
}

/// Mean and covariance (divisor N − 1) of the rows.
pub fn moments(x: &Array2<f64>) -> (Array1<f64>, Array2<f64>) {
    let n = x.nrows().max(2) as f64;
    let mu = x
        .mean_axis(ndarray::Axis(0))
        .unwrap_or_else(|| Array1::zeros(x.ncols()));
    let c = x - &mu;
    (mu, c.t().dot(&c) / (n - 1.0))
}

fn to_tensor(a: &Array2<f64>) -> Tensor {
    let v: Vec<f64> = a.iter().copied().collect();
    Tensor::from_slice(&v).view([a.nrows() as i64, a.ncols() as i64])
}

/// Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂): ‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁^½ Σ₂ Σ₁^½)^½
/// (Dowson & Landau 1982; Heusel et al. 2017), in f64 via symmetric eigendecompositions.
pub fn frechet_from_moments(
    mu1: &Array1<f64>,
    c1: &Array2<f64>,
    mu2: &Array1<f64>,
    c2: &Array2<f64>,
) -> Result<f64> {
    if mu1.len() != mu2.len() || c1.dim() != (mu1.len(), mu1.len()) || c2.dim() != c1.dim() {
        return Err(TrainError::Other(
            "Fréchet distance: mismatched moments".into(),
        ));
    }
    let d2 = (mu1 - mu2).mapv(|v| v * v).sum();
    let (a, b) = (to_tensor(c1), to_tensor(c2));
    let (l, v) = a.linalg_eigh("L");
    let s = v
        .matmul(&l.clamp_min(0.0).sqrt().diag_embed(0, -2, -1))
        .matmul(&v.transpose(0, 1));
    let m = s.matmul(&b).matmul(&s);
    let m = (&m + m.transpose(0, 1)) * 0.5;
    let tr_sqrt = m
        .linalg_eigvalsh("L")
        .clamp_min(0.0)
        .sqrt()
        .sum(Kind::Double)
        .double_value(&[]);
    let tr = |t: &Tensor| t.trace().double_value(&[]);
    Ok(d2 + tr(&a) + tr(&b) - 2.0 * tr_sqrt)
}

/// Fréchet distance between two feature sets (rows).
pub fn frechet(x: &Array2<f64>, y: &Array2<f64>) -> Result<f64> {
    let (m1, c1) = moments(x);
    let (m2, c2) = moments(y);
    frechet_from_moments(&m1, &c1, &m2, &c2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    #[test]
    fn frechet_matches_closed_forms() -> Result<()> {
        // Diagonal covariances: ‖Δμ‖² + Σ (√a_i − √b_i)².
        let (m1, m2) = (arr1(&[0.0, 1.0, 2.0]), arr1(&[1.0, 1.0, 0.0]));
        let (c1, c2) = (
            Array2::from_diag(&arr1(&[1.0, 4.0, 9.0])),
            Array2::from_diag(&arr1(&[4.0, 4.0, 1.0])),
        );
        let want = 1.0 + 4.0 + (1.0 + 0.0 + 4.0);
        assert!((frechet_from_moments(&m1, &c1, &m2, &c2)? - want).abs() < 1e-10);
        // Rotating both by the same orthogonal matrix changes nothing (non-commuting case).
        let (c, s) = (0.6f64, 0.8f64);
        let r = arr2(&[[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]);
        let c2r = arr2(&[[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 3.0]]);
        let base = frechet_from_moments(&m1, &c1, &m2, &c2r)?;
        let rot = frechet_from_moments(
            &r.dot(&m1),
            &r.dot(&c1).dot(&r.t()),
            &r.dot(&m2),
            &r.dot(&c2r).dot(&r.t()),
        )?;
        assert!((base - rot).abs() < 1e-9, "{base} vs {rot}");
        // Identical distributions: 0.
        assert!(frechet_from_moments(&m1, &c2r, &m1, &c2r)?.abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn the_cache_round_trips_and_a_stale_one_is_replaced() -> Result<()> {
        let d = crate::data::DataConfig::Digits { path: None }.load()?;
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
        let p = dir.path().join("c.safetensors");
        std::fs::write(&p, b"stale").map_err(|e| TrainError::io(&p, e))?;
        let a = Classifier::cached_with(&d.train, &p, 300)?;
        let b = Classifier::cached_with(&d.train, &p, 300)?;
        let (fa, fb) = (
            a.features(d.held_out.x.view())?,
            b.features(d.held_out.x.view())?,
        );
        assert_eq!(fa, fb);
        assert!(a.accuracy(&d.held_out)? > 0.85);
        Ok(())
    }

    /// Loading the cache from another thread while a seeded section holds the generator lock
    /// leaves the section's draws as they are alone: the load waits for the lock. (Unlocked,
    /// its layer initialisation drew between a training step's seed and its dropout masks, and
    /// the downscale resume test of train_loop.rs failed when digits evaluation ran beside it.)
    #[test]
    fn loading_the_cache_does_not_draw_inside_another_threads_seeded_section() -> Result<()> {
        use std::sync::mpsc::channel;
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
        let p = dir.path().join("c.safetensors");
        let d = crate::data::DataConfig::Digits { path: None }.load()?;
        Classifier::cached_with(&d.train, &p, 5)?;
        let seeded = || {
            tch::manual_seed(7);
            Tensor::rand([64], (Kind::Float, Device::Cpu))
        };
        let alone = crate::trainer::with_torch_rng(seeded);
        let (go_tx, go_rx) = channel::<()>();
        let loader = std::thread::spawn(move || -> Result<()> {
            go_rx.recv().map_err(|e| TrainError::Other(e.to_string()))?;
            Classifier::cached_with(&d.train, &p, 5).map(|_| ())
        });
        let beside = crate::trainer::with_torch_rng(|| {
            tch::manual_seed(7);
            let _ = go_tx.send(());
            // Time for the loader to build its layers, were it not waiting for the lock.
            std::thread::sleep(std::time::Duration::from_millis(500));
            Tensor::rand([64], (Kind::Float, Device::Cpu))
        });
        loader
            .join()
            .map_err(|_| TrainError::Other("loader panicked".into()))??;
        assert!(beside.equal(&alone));
        Ok(())
    }

    #[test]
    fn classifier_learns_digits() -> Result<()> {
        let d = crate::data::DataConfig::Digits { path: None }.load()?;
        let c = Classifier::train(&d.train, 400, 0)?;
        let acc = c.accuracy(&d.held_out)?;
        assert!(acc > 0.9, "held-out accuracy {acc}");
        let f = c.features(d.held_out.x.view())?;
        assert_eq!(f.dim(), (299, 64));
        // Held-out vs train digits are close in feature space; vs noise they are far.
        let ft = c.features(d.train.x.view())?;
        let noise = Array2::from_shape_fn((299, 64), |(i, j)| {
            ((i * 64 + j) as f32 * 0.618).fract() * 2.0 - 1.0
        });
        let fnoise = c.features(noise.view())?;
        let (near, far) = (frechet(&f, &ft)?, frechet(&f, &fnoise)?);
        assert!(far > 10.0 * near, "near {near}, far {far}");
        Ok(())
    }
}
