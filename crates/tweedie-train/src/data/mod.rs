//! Data sets: built-in toys, digits and fields, and the user's own PNG / .npy / IDX data.
//!
//! Every data set is an [N, D] f32 matrix of flattened samples plus the per-sample shape
//! ([2] for the toys, [C, H, W] for images), optional labels, and where the data are
//! synthetic the exact distribution they come from ([`GroundTruth`]) for evaluation.

pub mod digits;
pub mod fields;
pub mod fields_posterior;
pub mod netcdf;
pub mod npy;
pub mod toys;
pub mod user;

use std::path::PathBuf;
use tweedie_core::Invalid;

use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
pub use fields::FieldSpec;
pub use fields_posterior::FieldPosterior;
pub use netcdf::{NetcdfConfig, NetcdfMeta};

/// Flattened samples with their shape and optional class labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Samples, one per row: [N, D] with D = product of `shape`.
    pub x: Array2<f32>,
    /// Shape of one sample: [D] for vectors, [C, H, W] for images.
    pub shape: Vec<usize>,
    /// Class label of each sample, 0..num_classes.
    pub labels: Option<Vec<i64>>,
    /// Number of classes when labelled.
    pub num_classes: Option<usize>,
}

impl Dataset {
    /// Checks that rows, shape and labels agree and values are finite.
    pub fn new(x: Array2<f32>, shape: Vec<usize>, labels: Option<Vec<i64>>) -> Result<Self> {
        let d: usize = shape.iter().product();
        if x.ncols() != d {
            return Err(TrainError::Data(format!(
                "samples have {} values but shape {shape:?} needs {d}",
                x.ncols()
            )));
        }
        if x.nrows() == 0 {
            return Err(TrainError::Data("data set is empty".into()));
        }
        if let Some(l) = &labels {
            if l.len() != x.nrows() {
                return Err(TrainError::Data(format!(
                    "{} labels for {} samples",
                    l.len(),
                    x.nrows()
                )));
            }
            if l.iter().any(|&v| v < 0) {
                return Err(TrainError::Data("negative class label".into()));
            }
        }
        if let Some((i, _)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(TrainError::Data(format!(
                "sample {} has a NaN or infinite value",
                i / d.max(1)
            )));
        }
        let num_classes = labels
            .as_ref()
            .map(|l| l.iter().max().map_or(0, |&m| m as usize + 1));
        Ok(Dataset {
            x,
            shape,
            labels,
            num_classes,
        })
    }

    /// Number of samples N.
    pub fn len(&self) -> usize {
        self.x.nrows()
    }

    /// Whether the set has no samples (never true for a constructed set).
    pub fn is_empty(&self) -> bool {
        self.x.nrows() == 0
    }

    /// Values per sample D.
    pub fn dim(&self) -> usize {
        self.x.ncols()
    }

    /// Whether samples are images [C, H, W].
    pub fn is_image(&self) -> bool {
        self.shape.len() == 3
    }

    /// The samples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        Dataset {
            x: self.x.select(Axis(0), idx),
            shape: self.shape.clone(),
            labels: self
                .labels
                .as_ref()
                .map(|l| idx.iter().map(|&i| l[i]).collect()),
            num_classes: self.num_classes,
        }
    }

    /// Rows `idx` as a tensor [B, shape…] on `device`.
    pub fn batch_tensor(&self, idx: &[usize], device: tch::Device) -> tch::Tensor {
        let mut v: Vec<f32> = Vec::with_capacity(idx.len() * self.dim());
        for &i in idx {
            v.extend(self.x.row(i).iter());
        }
        let mut shape = vec![idx.len() as i64];
        shape.extend(self.shape.iter().map(|&s| s as i64));
        tch::Tensor::from_slice(&v)
            .view(shape.as_slice())
            .to_device(device)
    }

    /// Labels at `idx` as an i64 tensor [B], when labelled.
    pub fn labels_tensor(&self, idx: &[usize], device: tch::Device) -> Option<tch::Tensor> {
        self.labels.as_ref().map(|l| {
            let v: Vec<i64> = idx.iter().map(|&i| l[i]).collect();
            tch::Tensor::from_slice(&v).to_device(device)
        })
    }

    /// Root-mean-square value over all entries (a cheap estimate of σ_data).
    pub fn rms(&self) -> f64 {
        (self.x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / self.x.len().max(1) as f64)
            .sqrt()
    }
}

/// The exact distribution a synthetic data set is drawn from (for evaluation).
#[derive(Debug, Clone)]
pub enum GroundTruth {
    /// No known distribution (digits, user data).
    None,
    /// Analytic Gaussian mixture: exact weights, means, covariances.
    Mixture(tweedie_core::mixture::GaussianMixture),
    /// Power-law Gaussian random field: exact spectrum and Wiener filter.
    Fields(FieldSpec),
}

/// Training and held-out splits of one data set, and its ground truth where known.
#[derive(Debug, Clone)]
pub struct Data {
    /// Short name (`digits`, `moons`, …) for reports.
    pub name: String,
    pub train: Dataset,
    pub held_out: Dataset,
    pub truth: GroundTruth,
    /// Names, units, coordinates and normalisation of NetCDF data (samples are written back
    /// in physical units with them).
    pub netcdf: Option<NetcdfMeta>,
    /// Integer data: L levels 0 … L−1 stored as x/((L−1)/2) − 1 (digits 17, 8-bit images
    /// 256), what likelihoods in bits/dim dequantise; None for continuous data.
    pub levels: Option<u32>,
}

impl Data {
    /// The held-out split as its integer levels (`levels` of each value, exact: the stored
    /// values are level/((L−1)/2) − 1 in f32), or None for continuous data.
    pub fn held_out_levels(&self) -> Option<Array2<f64>> {
        let half = f64::from(self.levels? - 1) / 2.0;
        Some(
            self.held_out
                .x
                .mapv(|v| ((f64::from(v) + 1.0) * half).round()),
        )
    }
}

mod defaults {
    pub fn toy_n() -> usize {
        8192
    }
    pub fn held_out_n() -> usize {
        2048
    }
    pub fn noise() -> f64 {
        0.05
    }
    pub fn preset() -> String {
        "gmm2d".into()
    }
    pub fn field_size() -> super::GridSize {
        super::GridSize::Square(16)
    }
    pub fn field_exponent() -> f64 {
        3.0
    }
    pub fn field_std() -> f64 {
        0.5
    }
    pub fn field_n() -> usize {
        4096
    }
    pub fn field_held_out() -> usize {
        512
    }
    pub fn every() -> usize {
        10
    }
}

/// A grid in a config: one side (`size = 16`, square) or `[height, width]` (`size = [24, 48]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GridSize {
    /// A square side×side grid.
    Square(usize),
    /// A height×width grid.
    Rect([usize; 2]),
}

impl GridSize {
    /// (height, width).
    pub fn hw(self) -> (usize, usize) {
        match self {
            GridSize::Square(n) => (n, n),
            GridSize::Rect([h, w]) => (h, w),
        }
    }
}

/// `[data]` section of a training config (TOML `type = "digits" | "moons" | …`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataConfig {
    /// Samples of an analytic Gaussian mixture preset of tweedie-core (labels = component).
    Mixture {
        #[serde(default = "defaults::preset")]
        preset: String,
        #[serde(default = "defaults::toy_n")]
        n: usize,
        #[serde(default = "defaults::held_out_n")]
        held_out: usize,
        #[serde(default)]
        seed: u64,
    },
    /// Checkerboard on [−2, 2]².
    Checkerboard {
        #[serde(default = "defaults::toy_n")]
        n: usize,
        #[serde(default = "defaults::held_out_n")]
        held_out: usize,
        #[serde(default)]
        seed: u64,
    },
    /// Two moons (labels = moon).
    Moons {
        #[serde(default = "defaults::toy_n")]
        n: usize,
        #[serde(default = "defaults::held_out_n")]
        held_out: usize,
        #[serde(default = "defaults::noise")]
        noise: f64,
        #[serde(default)]
        seed: u64,
    },
    /// 2-D swiss roll.
    SwissRoll {
        #[serde(default = "defaults::toy_n")]
        n: usize,
        #[serde(default = "defaults::held_out_n")]
        held_out: usize,
        #[serde(default = "defaults::noise")]
        noise: f64,
        #[serde(default)]
        seed: u64,
    },
    /// The 8×8 digits in [−1, 1], fixed split (every 6th image held out).
    Digits {
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// Power-law Gaussian random fields, [1, height, width] (`size = n` or `[h, w]`).
    Fields {
        #[serde(default = "defaults::field_size")]
        size: GridSize,
        #[serde(default = "defaults::field_exponent")]
        exponent: f64,
        #[serde(default = "defaults::field_std")]
        std: f64,
        #[serde(default = "defaults::field_n")]
        n: usize,
        #[serde(default = "defaults::field_held_out")]
        held_out: usize,
        #[serde(default)]
        seed: u64,
    },
    /// A folder of PNGs (sub-folders = classes); every `held_out_every`-th image held out.
    Png {
        path: PathBuf,
        #[serde(default = "defaults::every")]
        held_out_every: usize,
    },
    /// An .npy array [N, …] with optional .npy labels; `channels` = "auto" | "first" | "last"
    /// places the channel axis of 4-D arrays.
    Npy {
        path: PathBuf,
        #[serde(default)]
        labels: Option<PathBuf>,
        #[serde(default)]
        channels: user::Channels,
        #[serde(default = "defaults::every")]
        held_out_every: usize,
    },
    /// Variables of NetCDF files as channels [C, H, W], normalised per variable.
    Netcdf(NetcdfConfig),
    /// MNIST IDX images (and labels), optionally gzipped.
    Idx {
        images: PathBuf,
        #[serde(default)]
        labels: Option<PathBuf>,
        #[serde(default = "defaults::every")]
        held_out_every: usize,
    },
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig::Digits { path: None }
    }
}

fn check_n(key: &str, n: usize) -> Result<()> {
    check_n_of(key, n, 3)
}

/// `n` ≥ 1 samples of `width` f32 values (plus an i64 label) must fit in memory.
fn check_n_of(key: &str, n: usize, width: usize) -> Result<()> {
    if n == 0 {
        return Err(TrainError::invalid(key, n, "must be ≥ 1"));
    }
    tweedie_core::budget::check_array(key, n, &[n, width.saturating_add(2)], 4)?;
    Ok(())
}

fn check_noise(noise: f64) -> Result<()> {
    if !(noise.is_finite() && noise >= 0.0) {
        return Err(TrainError::invalid(
            "data.noise",
            noise,
            "must be finite and ≥ 0",
        ));
    }
    Ok(())
}

/// Seeds of the train and held-out draws of a toy: distinct streams of the same seed.
fn toy_seeds(seed: u64) -> (u64, u64) {
    (seed.wrapping_mul(2), seed.wrapping_mul(2).wrapping_add(1))
}

/// Splits by index: every `every`-th sample (i mod every = every − 1) is held out; 0 = none
/// held out (then the held-out set is the training set).
fn split_every(all: Dataset, every: usize) -> Result<(Dataset, Dataset)> {
    if every == 1 {
        return Err(TrainError::invalid(
            "data.held_out_every",
            every,
            "must be 0 (no split) or ≥ 2",
        ));
    }
    if every == 0 {
        return Ok((all.clone(), all));
    }
    if all.len() < every {
        // Evaluating on the training data must be asked for (held_out_every = 0), never
        // the silent outcome of a small data set.
        return Err(TrainError::invalid(
            "data.held_out_every",
            every,
            format!(
                "{n} samples hold none out when every {every}-th is held out: set it to \
                 2..={n}, or to 0 to evaluate on the training set",
                n = all.len()
            ),
        ));
    }
    let (mut tr, mut ho) = (Vec::new(), Vec::new());
    for i in 0..all.len() {
        if i % every == every - 1 {
            ho.push(i)
        } else {
            tr.push(i)
        }
    }
    Ok((all.select(&tr), all.select(&ho)))
}

impl DataConfig {
    /// Short name for reports and run folders.
    pub fn name(&self) -> String {
        match self {
            DataConfig::Mixture { preset, .. } => format!("mixture-{preset}"),
            DataConfig::Checkerboard { .. } => "checkerboard".into(),
            DataConfig::Moons { .. } => "moons".into(),
            DataConfig::SwissRoll { .. } => "swiss_roll".into(),
            DataConfig::Digits { .. } => "digits".into(),
            DataConfig::Fields { .. } => "fields".into(),
            DataConfig::Png { .. } => "png".into(),
            DataConfig::Npy { .. } => "npy".into(),
            DataConfig::Idx { .. } => "idx".into(),
            DataConfig::Netcdf(_) => "netcdf".into(),
        }
    }

    /// Validates the values without reading any file.
    pub fn validate(&self) -> Result<()> {
        match self {
            DataConfig::Mixture { n, held_out, .. }
            | DataConfig::Checkerboard { n, held_out, .. } => {
                check_n("data.n", *n)?;
                check_n("data.held_out", *held_out)
            }
            DataConfig::Moons {
                n, held_out, noise, ..
            }
            | DataConfig::SwissRoll {
                n, held_out, noise, ..
            } => {
                check_n("data.n", *n)?;
                check_n("data.held_out", *held_out)?;
                check_noise(*noise)
            }
            DataConfig::Fields {
                size,
                exponent,
                std,
                n,
                held_out,
                ..
            } => {
                let (h, w) = size.hw();
                FieldSpec::new(h, w, *exponent, *std)?;
                check_n_of("data.n", *n, h * w)?;
                check_n_of("data.held_out", *held_out, h * w)
            }
            DataConfig::Png { held_out_every, .. }
            | DataConfig::Npy { held_out_every, .. }
            | DataConfig::Idx { held_out_every, .. } => {
                if *held_out_every == 1 {
                    return Err(TrainError::invalid(
                        "data.held_out_every",
                        held_out_every,
                        "must be 0 or ≥ 2",
                    ));
                }
                Ok(())
            }
            DataConfig::Digits { .. } => Ok(()),
            DataConfig::Netcdf(c) => {
                if c.held_out_every == 1 {
                    return Err(TrainError::invalid(
                        "data.held_out_every",
                        c.held_out_every,
                        "must be 0 or ≥ 2",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Builds or reads the data set.
    pub fn load(&self) -> Result<Data> {
        self.validate()?;
        let name = self.name();
        let toy = |f: &dyn Fn(usize, u64) -> (Array2<f32>, Option<Vec<i64>>),
                   n: usize,
                   h: usize,
                   seed: u64| {
            let (s_tr, s_ho) = toy_seeds(seed);
            let (x, l) = f(n, s_tr);
            let (xh, lh) = f(h, s_ho);
            Ok::<_, TrainError>((Dataset::new(x, vec![2], l)?, Dataset::new(xh, vec![2], lh)?))
        };
        let mut netcdf = None;
        let mut levels = None;
        let (train, held_out, truth) = match self {
            DataConfig::Mixture {
                preset,
                n,
                held_out,
                seed,
            } => {
                let (a, b, gm) = load_mixture(preset, *n, *held_out, *seed)?;
                (a, b, GroundTruth::Mixture(gm))
            }
            DataConfig::Checkerboard { n, held_out, seed } => {
                let (a, b) = toy(
                    &|n, s| (toys::checkerboard(n, s), None),
                    *n,
                    *held_out,
                    *seed,
                )?;
                (a, b, GroundTruth::None)
            }
            DataConfig::Moons {
                n,
                held_out,
                noise,
                seed,
            } => {
                let (a, b) = toy(
                    &|n, s| {
                        let (x, l) = toys::moons(n, *noise, s);
                        (x, Some(l))
                    },
                    *n,
                    *held_out,
                    *seed,
                )?;
                (a, b, GroundTruth::None)
            }
            DataConfig::SwissRoll {
                n,
                held_out,
                noise,
                seed,
            } => {
                let (a, b) = toy(
                    &|n, s| (toys::swiss_roll(n, *noise, s), None),
                    *n,
                    *held_out,
                    *seed,
                )?;
                (a, b, GroundTruth::None)
            }
            DataConfig::Digits { path } => {
                let p = match path {
                    Some(p) => p.clone(),
                    None => digits::default_path()?,
                };
                let raw = digits::load(&p)?;
                let x = raw
                    .pixels
                    .mapv(|v| v / ((digits::LEVELS - 1) as f32 / 2.0) - 1.0);
                let all = Dataset::new(x, vec![1, 8, 8], Some(raw.labels))?;
                levels = Some(digits::LEVELS);
                let (tr, ho): (Vec<usize>, Vec<usize>) =
                    (0..all.len()).partition(|&i| !digits::is_held_out(i));
                (all.select(&tr), all.select(&ho), GroundTruth::None)
            }
            DataConfig::Fields {
                size,
                exponent,
                std,
                n,
                held_out,
                seed,
            } => {
                let (h, w) = size.hw();
                let spec = FieldSpec::new(h, w, *exponent, *std)?;
                let shape = vec![1, h, w];
                let tr = Dataset::new(spec.sample_range(0, *n, *seed), shape.clone(), None)?;
                let ho = Dataset::new(spec.sample_range(*n as u64, *held_out, *seed), shape, None)?;
                (tr, ho, GroundTruth::Fields(spec))
            }
            DataConfig::Png {
                path,
                held_out_every,
            } => {
                let l = user::load_png_dir(path)?;
                levels = l.levels;
                let (a, b) = split_every(Dataset::new(l.x, l.shape, l.labels)?, *held_out_every)?;
                (a, b, GroundTruth::None)
            }
            DataConfig::Npy {
                path,
                labels,
                channels,
                held_out_every,
            } => {
                let l = user::load_npy(path, *channels)?;
                levels = l.levels;
                let lab = labels.as_deref().map(user::load_npy_labels).transpose()?;
                let (a, b) = split_every(Dataset::new(l.x, l.shape, lab)?, *held_out_every)?;
                (a, b, GroundTruth::None)
            }
            DataConfig::Idx {
                images,
                labels,
                held_out_every,
            } => {
                let l = user::load_idx(images, labels.as_deref())?;
                levels = l.levels;
                let (a, b) = split_every(Dataset::new(l.x, l.shape, l.labels)?, *held_out_every)?;
                (a, b, GroundTruth::None)
            }
            DataConfig::Netcdf(c) => {
                let (a, b, meta) = netcdf::load(c)?;
                netcdf = Some(meta);
                (a, b, GroundTruth::None)
            }
        };
        Ok(Data {
            name,
            train,
            held_out,
            truth,
            netcdf,
            levels,
        })
    }
}

/// A named analytic mixture preset of tweedie-core (`gmm2d`, `gmm64d`).
pub fn mixture_preset(name: &str) -> Result<tweedie_core::mixture::GaussianMixture> {
    tweedie_core::mixture::preset(name)
        .map_err(|e| TrainError::invalid("data.preset", name, e.to_string()))
}

/// Train and held-out draws of a mixture preset, labelled by the component each came from.
fn load_mixture(
    preset: &str,
    n: usize,
    held_out: usize,
    seed: u64,
) -> Result<(Dataset, Dataset, tweedie_core::mixture::GaussianMixture)> {
    let gm = mixture_preset(preset)?;
    let (s_tr, s_ho) = toy_seeds(seed);
    let draw = |n: usize, s: u64| -> Result<Dataset> {
        let (x, labels) = gm.sample_with_labels(n, s);
        let d = x.ncols();
        Dataset::new(
            x.mapv(|v| v as f32),
            vec![d],
            Some(labels.into_iter().map(|c| c as i64).collect()),
        )
    };
    Ok((draw(n, s_tr)?, draw(held_out, s_ho)?, gm))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<DataConfig, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn configs_parse_with_defaults_and_reject_unknown_keys() {
        assert_eq!(
            parse("type = \"digits\"").unwrap(),
            DataConfig::Digits { path: None }
        );
        match parse("type = \"moons\"\nn = 10").unwrap() {
            DataConfig::Moons { n, noise, .. } => assert_eq!((n, noise), (10, 0.05)),
            other => panic!("{other:?}"),
        }
        let e = parse("type = \"moons\"\nnn = 10").unwrap_err().to_string();
        assert!(e.contains("nn"), "{e}");
        let e = parse("type = \"nope\"").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn toys_load_with_disjoint_train_and_held_out_draws() -> Result<()> {
        let d = DataConfig::Moons {
            n: 100,
            held_out: 50,
            noise: 0.1,
            seed: 4,
        }
        .load()?;
        assert_eq!(
            (d.train.len(), d.held_out.len(), d.train.dim()),
            (100, 50, 2)
        );
        assert_eq!(d.train.num_classes, Some(2));
        assert_ne!(d.train.x.row(0), d.held_out.x.row(0));
        assert!(d.levels.is_none() && d.held_out_levels().is_none());
        let e = DataConfig::Moons {
            n: 0,
            held_out: 5,
            noise: 0.1,
            seed: 0,
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.n") && e.contains('0'), "{e}");
        let e = DataConfig::SwissRoll {
            n: 5,
            held_out: 5,
            noise: -1.0,
            seed: 0,
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.noise") && e.contains("-1"), "{e}");
        Ok(())
    }

    #[test]
    fn digits_scale_to_unit_interval_with_a_fixed_split() -> Result<()> {
        let d = DataConfig::Digits { path: None }.load()?;
        assert_eq!((d.train.len(), d.held_out.len()), (1498, 299));
        assert_eq!(d.train.shape, vec![1, 8, 8]);
        assert_eq!(d.train.num_classes, Some(10));
        let (lo, hi) = d
            .train
            .x
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert_eq!((lo, hi), (-1.0, 1.0));
        // First digit of the file is a 0 whose top-left pixel is 0 → −1 and third is 5 → 5/8 − 1.
        assert_eq!(d.train.labels.as_ref().map(|l| l[0]), Some(0));
        assert_eq!(d.train.x[[0, 2]], 5.0 / 8.0 - 1.0);
        // The held-out split as levels: integers 0 … 16 that give back every stored value.
        assert_eq!(d.levels, Some(17));
        let lv = d.held_out_levels().expect("digits are levels");
        assert_eq!(lv.dim(), d.held_out.x.dim());
        for (l, x) in lv.iter().zip(&d.held_out.x) {
            assert!((0.0..=16.0).contains(l) && l.fract() == 0.0, "{l}");
            assert_eq!((*l / 8.0 - 1.0) as f32, *x);
        }
        assert_eq!(lv.fold(0.0_f64, |a, &b| a.max(b)), 16.0);
        let e = DataConfig::Digits {
            path: Some("/no/such/digits.csv.gz".into()),
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(e.contains("/no/such/digits.csv.gz"), "{e}");
        Ok(())
    }

    #[test]
    fn mixture_loads_with_component_labels_and_truth() -> Result<()> {
        let d = DataConfig::Mixture {
            preset: "gmm2d".into(),
            n: 4000,
            held_out: 10,
            seed: 0,
        }
        .load()?;
        assert_eq!(
            (d.train.len(), d.train.dim(), d.train.num_classes),
            (4000, 2, Some(4))
        );
        let GroundTruth::Mixture(gm) = &d.truth else {
            panic!("no mixture truth")
        };
        // Component 0 has weight 0.4: its label frequency is within 5 standard errors.
        let f0 = d
            .train
            .labels
            .as_ref()
            .map_or(0, |l| l.iter().filter(|&&c| c == 0).count()) as f64
            / 4000.0;
        let w0 = gm.weights()[0];
        assert!(
            (f0 - w0).abs() < 5.0 * (w0 * (1.0 - w0) / 4000.0).sqrt(),
            "{f0} vs {w0}"
        );
        let e = DataConfig::Mixture {
            preset: "nope".into(),
            n: 4,
            held_out: 1,
            seed: 0,
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.preset") && e.contains("nope"), "{e}");
        Ok(())
    }

    #[test]
    fn fields_load_with_ground_truth() -> Result<()> {
        let d = DataConfig::Fields {
            size: GridSize::Rect([6, 10]),
            exponent: 2.0,
            std: 0.5,
            n: 20,
            held_out: 4,
            seed: 1,
        }
        .load()?;
        assert_eq!(d.train.shape, vec![1, 6, 10]);
        assert_eq!((d.train.len(), d.held_out.len()), (20, 4));
        match parse("type = \"fields\"\nsize = [24, 48]").unwrap() {
            DataConfig::Fields { size, .. } => assert_eq!(size.hw(), (24, 48)),
            other => panic!("{other:?}"),
        }
        match parse("type = \"fields\"\nsize = 32").unwrap() {
            DataConfig::Fields { size, .. } => assert_eq!(size.hw(), (32, 32)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(d.truth, GroundTruth::Fields(_)));
        Ok(())
    }

    #[test]
    fn dataset_checks_and_batches() -> Result<()> {
        assert!(Dataset::new(Array2::zeros((2, 3)), vec![4], None).is_err());
        assert!(Dataset::new(Array2::zeros((2, 4)), vec![4], Some(vec![1])).is_err());
        let mut x = Array2::zeros((2, 4));
        x[[1, 2]] = f32::NAN;
        assert!(Dataset::new(x, vec![4], None)
            .unwrap_err()
            .to_string()
            .contains("sample 1"));
        let x = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32);
        let d = Dataset::new(x, vec![1, 2, 2], Some(vec![0, 2, 1]))?;
        assert_eq!(d.num_classes, Some(3));
        let t = d.batch_tensor(&[2, 0], tch::Device::Cpu);
        assert_eq!(t.size(), vec![2, 1, 2, 2]);
        assert_eq!(t.double_value(&[0, 0, 1, 1]), 11.0);
        let (a, b) = split_every(d, 2)?;
        assert_eq!((a.len(), b.len()), (2, 1));
        assert_eq!(b.labels, Some(vec![2]));
        Ok(())
    }
}
