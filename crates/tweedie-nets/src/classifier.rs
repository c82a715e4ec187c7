//! A noise-conditional classifier p(c | x̃, σ̃) for classifier guidance (Dhariwal & Nichol
//! 2021, §4 and their "half U-Net" classifier): the encoder of a SongUNet, conditioned on the
//! noise level through the same embedding as the denoiser, then GroupNorm, SiLU, a global
//! average pool and a linear layer to C logits.
//!
//! Inputs are in EDM coordinates whatever process the denoiser it guides was trained under:
//! the network sees c_in·x̃ with c_in = 1/√(σ̃² + σ_d²) and c_noise = ¼·ln σ̃ (EDM's
//! preconditioning, Karras et al. 2022, Table 1), so one classifier guides any denoiser of the
//! same data.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};
use tweedie_core::{Invalid, Precond};

use crate::checkpoint::{self, FORMAT_VERSION, META_FORMAT, META_MODEL};
use crate::config::{EncoderType, UnetConfig};
use crate::error::{NetsError, Result};
use crate::layers::{
    BlockOpts, Conv2d, ConvOpts, GroupNorm, Linear, NoiseEmbedding, Resample, UNetBlock,
};
use crate::precond::sigma_per_sample;

/// Metadata key of a classifier checkpoint's [`ClassifierConfig`] JSON.
pub const META_CLASSIFIER: &str = "tweedie.classifier";

/// Everything needed to rebuild a noise-conditional classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// The U-Net whose encoder the classifier is (resolution, channels, blocks, attention,
    /// noise embedding; the decoder keys are unused; `encoder` must be `standard`).
    pub encoder: UnetConfig,
    /// Number of classes C.
    pub classes: usize,
    /// σ_d of the input scaling c_in = 1/√(σ̃² + σ_d²).
    pub sigma_data: f64,
}

impl ClassifierConfig {
    /// Checks every value; errors name the key and value.
    pub fn validate(&self) -> Result<()> {
        crate::budget::check_untrusted(&crate::NetConfig::Unet(self.encoder.clone()), None)?;
        self.encoder.validate()?;
        if self.encoder.encoder != EncoderType::Standard {
            return Err(NetsError::invalid(
                "encoder",
                format!("{:?}", self.encoder.encoder).to_lowercase(),
                "the classifier's encoder is the standard one (no input pyramid)",
            ));
        }
        if self.encoder.label_dim != 0 || self.encoder.augment_dim != 0 {
            return Err(NetsError::invalid(
                "label_dim",
                self.encoder.label_dim,
                "a classifier takes no class or augment labels (label_dim = augment_dim = 0)",
            ));
        }
        if !(2..=100_000).contains(&self.classes) {
            return Err(NetsError::invalid(
                "classes",
                self.classes,
                "a classifier needs 2 to 100000 classes",
            ));
        }
        if !(self.sigma_data.is_finite() && self.sigma_data > 0.0) {
            return Err(NetsError::invalid(
                "sigma_data",
                self.sigma_data,
                "must be finite and > 0",
            ));
        }
        Ok(())
    }

    /// Shape [C, H, W] of one input sample.
    pub fn sample_shape(&self) -> Vec<i64> {
        let e = &self.encoder;
        vec![e.in_channels as i64, e.resolution as i64, e.width() as i64]
    }

    /// Builds the classifier on `device` with fresh weights under `model` (its variables live
    /// in the returned store).
    pub fn build(&self, device: Device) -> Result<(nn::VarStore, NoisyClassifier)> {
        let vs = nn::VarStore::new(device);
        let c = NoisyClassifier::new(&(vs.root() / "model"), self)?;
        Ok((vs, c))
    }
}

#[derive(Debug)]
enum Enc {
    Conv(Conv2d),
    Block(Box<UNetBlock>),
}

/// The classifier network: logits f(c_in·x̃; c_noise) ∈ ℝ^C.
#[derive(Debug)]
pub struct NoisyClassifier {
    cfg: ClassifierConfig,
    map_noise: NoiseEmbedding,
    map_layer0: Linear,
    map_layer1: Linear,
    enc: Vec<Enc>,
    out_norm: GroupNorm,
    out: Linear,
}

impl NoisyClassifier {
    /// Builds the network under `p`, validating `cfg` first. The encoder's variables are
    /// named as SongUNet's (`enc.8x8_conv`, `enc.4x4_down`, …); the head is `out_norm`, `out`.
    pub fn new(p: &nn::Path, cfg: &ClassifierConfig) -> Result<Self> {
        cfg.validate()?;
        crate::torch_rng::with_torch_rng(|| Self::build(p, cfg))
    }

    fn build(p: &nn::Path, cfg: &ClassifierConfig) -> Result<Self> {
        let e = &cfg.encoder;
        let mc = e.model_channels;
        let emb_channels = mc * e.channel_mult_emb;
        let noise_channels = mc * e.channel_mult_noise;
        let filter = e.resample_filter.as_slice();
        let bo = BlockOpts {
            emb_channels,
            dropout: e.dropout,
            filter,
        };
        let map_noise = NoiseEmbedding::new(&(p / "map_noise"), e.embedding, noise_channels);
        let map_layer0 = Linear::new(&(p / "map_layer0"), noise_channels, emb_channels, true, 1.0);
        let map_layer1 = Linear::new(&(p / "map_layer1"), emb_channels, emb_channels, true, 1.0);
        let pe = p / "enc";
        let mut enc = Vec::new();
        let mut cout = e.in_channels;
        for (level, &mult) in e.channel_mult.iter().enumerate() {
            let name = |s: &str| format!("{}x{}_{s}", e.resolution >> level, e.width() >> level);
            if level == 0 {
                let conv = ConvOpts {
                    kernel: 3,
                    resample: Resample::None,
                    filter,
                    fused: false,
                    gain: 1.0,
                };
                enc.push(Enc::Conv(Conv2d::new(
                    &(&pe / name("conv")),
                    cout,
                    mc,
                    conv,
                )));
                cout = mc;
            } else {
                let down = &pe / name("down");
                enc.push(Enc::Block(UNetBlock::boxed(
                    &down,
                    cout,
                    cout,
                    Resample::Down,
                    false,
                    bo,
                )));
            }
            for idx in 0..e.num_blocks {
                let cin = cout;
                cout = mc * mult;
                let attn = e.attn_resolutions.contains(&(e.resolution >> level));
                let path = &pe / name(&format!("block{idx}"));
                enc.push(Enc::Block(UNetBlock::boxed(
                    &path,
                    cin,
                    cout,
                    Resample::None,
                    attn,
                    bo,
                )));
            }
        }
        Ok(NoisyClassifier {
            cfg: cfg.clone(),
            map_noise,
            map_layer0,
            map_layer1,
            enc,
            out_norm: GroupNorm::new(&(p / "out_norm"), cout, 1e-6),
            out: Linear::new(&(p / "out"), cout, cfg.classes, true, 1.0),
        })
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &ClassifierConfig {
        &self.cfg
    }

    /// Number of classes C.
    pub fn classes(&self) -> usize {
        self.cfg.classes
    }

    /// Logits [B, C] of x̃ [B, C_in, H, W] at noise levels σ̃ ([B] or a scalar, each positive
    /// and finite); `train` enables dropout. Gradients follow the caller's grad mode, so
    /// ∇_x̃ log p(c | x̃, σ̃) is one backward pass away.
    pub fn logits(&self, x: &Tensor, sigma: &Tensor, train: bool) -> Result<Tensor> {
        let shape = self.cfg.sample_shape();
        let size = x.size();
        if size.len() != 4 || size[1..] != shape[..] {
            return Err(NetsError::Shape(format!(
                "the classifier takes inputs [B, {}, {}, {}], got {size:?}",
                shape[0], shape[1], shape[2]
            )));
        }
        let b = size[0];
        let s = sigma_per_sample(sigma, b)?;
        if let Some(bad) = s.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(NetsError::invalid(
                "sigma",
                bad,
                "the classifier needs a noise level that is finite and > 0",
            ));
        }
        let pc = Precond::Edm {
            sigma_data: self.cfg.sigma_data,
        };
        let (c_in, c_noise): (Vec<f64>, Vec<f64>) = s
            .iter()
            .map(|&v| {
                let c = pc.coeffs(v);
                (c.c_in, c.c_noise)
            })
            .unzip();
        let dev = x.device();
        let c_in = Tensor::from_slice(&c_in)
            .to_kind(Kind::Float)
            .reshape([b, 1, 1, 1])
            .to_device(dev);
        let c_noise = Tensor::from_slice(&c_noise)
            .to_kind(Kind::Float)
            .to_device(dev);
        Ok(self.forward(&(x.to_kind(Kind::Float) * c_in), &c_noise, train))
    }

    fn forward(&self, x: &Tensor, c_noise: &Tensor, train: bool) -> Tensor {
        let emb = self.map_noise.forward(c_noise).to_kind(x.kind());
        let emb = self.map_layer0.forward(&emb).silu();
        let emb = self.map_layer1.forward(&emb).silu();
        let mut h = x.shallow_clone();
        for item in &self.enc {
            h = match item {
                Enc::Conv(c) => c.forward(&h),
                Enc::Block(b) => b.forward(&h, &emb, train),
            };
        }
        let pooled =
            self.out_norm
                .forward(&h)
                .silu()
                .mean_dim([2i64, 3].as_slice(), false, h.kind());
        self.out.forward(&pooled)
    }
}

/// A loaded classifier checkpoint.
#[derive(Debug)]
pub struct LoadedClassifier {
    /// Its variables.
    pub vs: nn::VarStore,
    /// The network.
    pub classifier: NoisyClassifier,
    /// The config read from the metadata.
    pub config: ClassifierConfig,
    /// Metadata other than the config (training step, data, …).
    pub extra: BTreeMap<String, String>,
}

/// Saves a classifier's variables with its config and `extra` metadata to `path` atomically.
pub fn save_classifier(
    path: &Path,
    vs: &nn::VarStore,
    config: &ClassifierConfig,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let mut meta = extra.clone();
    let json = serde_json::to_string(config).map_err(|e| NetsError::CheckpointIo {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    meta.insert(META_CLASSIFIER.into(), json);
    meta.insert(META_FORMAT.into(), FORMAT_VERSION.into());
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    checkpoint::save_tensors(path, &named, &meta)
}

/// Loads a classifier checkpoint (written by [`save_classifier`]) onto `device`; a denoiser
/// checkpoint or any other file is refused with an error naming it.
pub fn load_classifier(path: &Path, device: Device) -> Result<LoadedClassifier> {
    let bytes = checkpoint::read_file(path)?;
    let (_, mut meta) = checkpoint::parse(path, &bytes)?;
    let bad = |reason: String| NetsError::CheckpointMetadata {
        path: path.to_path_buf(),
        reason,
    };
    let Some(json) = meta.remove(META_CLASSIFIER) else {
        return Err(bad(if meta.contains_key(META_MODEL) {
            "is a denoiser checkpoint, not a classifier (train one with `tweedie \
             train-classifier`)"
                .into()
        } else {
            format!("no `{META_CLASSIFIER}` entry (not a tweedie classifier checkpoint)")
        }));
    };
    checkpoint::take_format_version(&mut meta).map_err(bad)?;
    let config: ClassifierConfig =
        serde_json::from_str(&json).map_err(|e| bad(format!("classifier config: {e}")))?;
    config.validate().map_err(|e| bad(e.to_string()))?;
    let (vs, classifier) = config.build(device)?;
    checkpoint::load_into(path, &bytes, &vs, &[])?;
    Ok(LoadedClassifier {
        vs,
        classifier,
        config,
        extra: meta.into_iter().collect(),
    })
}

/// Whether `path` is a readable classifier checkpoint (its metadata has [`META_CLASSIFIER`]):
/// for the error of a command handed a classifier where it wants a denoiser.
pub fn is_classifier_checkpoint(path: &Path) -> bool {
    checkpoint::read_file(path)
        .ok()
        .and_then(|b| checkpoint::parse(path, &b).ok().map(|(_, m)| m))
        .is_some_and(|m| m.contains_key(META_CLASSIFIER))
}

/// A classifier as classifier guidance sees it (tweedie-samplers' `ClassifierGradient` on
/// tensor states): ∇_x̃ log p(c | x̃, σ̃) by autograd on the state's device, in eval mode.
/// The mutex makes it shareable by the samplers' threads (libtorch tensors are not `Sync`).
#[cfg(feature = "samplers")]
#[derive(Debug)]
pub struct NetClassifier {
    inner: std::sync::Mutex<NoisyClassifier>,
    classes: usize,
}

#[cfg(feature = "samplers")]
impl NetClassifier {
    /// Wraps a classifier.
    pub fn new(classifier: NoisyClassifier) -> Self {
        NetClassifier {
            classes: classifier.classes(),
            inner: std::sync::Mutex::new(classifier),
        }
    }
}

#[cfg(feature = "samplers")]
impl tweedie_samplers::ClassifierGradient<tweedie_core::space::TchTensor> for NetClassifier {
    fn classes(&self) -> usize {
        self.classes
    }
    fn grad_log_prob(
        &self,
        x: &tweedie_core::space::TchTensor,
        sigma: f64,
        class: usize,
    ) -> tweedie_samplers::Result<tweedie_core::space::TchTensor> {
        // A panic inside libtorch while locked leaves the network itself intact.
        let net = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        tweedie_samplers::tch_state::grad_log_softmax(x, class, self.classes, |xg| {
            Ok(net.logits(xg, &Tensor::from(sigma), false)?)
        })
        .map(tweedie_core::space::TchTensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ClassifierConfig {
        let crate::NetConfig::Unet(encoder) = crate::NetConfig::preset("ddpmpp-tiny").unwrap()
        else {
            unreachable!("ddpmpp-tiny is a U-Net")
        };
        ClassifierConfig {
            encoder,
            classes: 10,
            sigma_data: 0.5,
        }
    }

    #[test]
    fn logits_have_one_row_per_sample_and_bad_input_is_named() -> Result<()> {
        let (_vs, c) = tiny().build(Device::Cpu)?;
        let x = Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu));
        let l = c.logits(&x, &Tensor::from(0.7), false)?;
        assert_eq!(l.size(), [3, 10]);
        // Rows are independent: a row's logits do not depend on the rest of the batch.
        let l1 = c.logits(&x.narrow(0, 1, 1), &Tensor::from(0.7), false)?;
        let d = f64::try_from((l.narrow(0, 1, 1) - l1).abs().max())?;
        assert!(d < 1e-5, "{d}");
        let e = c.logits(
            &Tensor::zeros([2, 1, 4, 4], (Kind::Float, Device::Cpu)),
            &Tensor::from(1.0),
            false,
        );
        assert!(e.unwrap_err().to_string().contains("[B, 1, 8, 8]"));
        let e = c
            .logits(&x, &Tensor::from(0.0), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sigma"), "{e}");
        let mut bad = tiny();
        bad.classes = 1;
        assert!(bad.validate().unwrap_err().to_string().contains("classes"));
        Ok(())
    }

    #[test]
    fn checkpoints_round_trip_and_a_denoiser_is_refused() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("tweedie-clf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| NetsError::Shape(e.to_string()))?;
        let cfg = tiny();
        let (vs, c) = cfg.build(Device::Cpu)?;
        let p = dir.join("c.safetensors");
        let extra = BTreeMap::from([("tweedie.data".to_string(), "digits".to_string())]);
        save_classifier(&p, &vs, &cfg, &extra)?;
        let back = load_classifier(&p, Device::Cpu)?;
        assert_eq!(back.config, cfg);
        assert_eq!(
            back.extra.get("tweedie.data").map(String::as_str),
            Some("digits")
        );
        let x = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));
        let s = Tensor::from_slice(&[0.3, 4.0]);
        let d = f64::try_from(
            (c.logits(&x, &s, false)? - back.classifier.logits(&x, &s, false)?)
                .abs()
                .max(),
        )?;
        assert_eq!(d, 0.0);
        let mcfg = crate::ModelConfig {
            net: crate::NetConfig::preset("ddpmpp-tiny")?,
            wrapper: crate::Wrapper::Precond(Precond::edm()),
            conditioning: None,
        };
        let (dvs, _) = mcfg.build(Device::Cpu)?;
        let dp = dir.join("d.safetensors");
        crate::save_checkpoint(&dp, &dvs, &mcfg, &BTreeMap::new())?;
        let e = load_classifier(&dp, Device::Cpu).unwrap_err().to_string();
        assert!(
            e.contains("d.safetensors") && e.contains("denoiser checkpoint"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
