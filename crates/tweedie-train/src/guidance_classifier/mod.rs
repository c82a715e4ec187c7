//! Training the noise-conditional classifier p(c | x̃, σ̃) of classifier guidance (Dhariwal &
//! Nichol 2021, §4; `tweedie train-classifier`): cross-entropy of the class on x̃ = x₀ + σ̃·ε,
//! σ̃ drawn from the `[diffusion]` formulation's training density, so the classifier knows the
//! noise levels the denoiser it will guide was trained on.
//!
//! Every draw of step k is keyed as in the denoiser's trainer: the batch by the per-epoch
//! permutation (seed, epoch), σ̃ and ε by (seed, sample index), dropout by a torch seed of
//! (seed, k); so N steps in one go and N/2 + `--resume` + N/2 give the same weights on CPU.
//!
//! A run directory holds `config.toml`, `train_state.safetensors` (weights, Adam moments,
//! step, config, data fingerprint), `metrics.jsonl` (loss and batch accuracy),
//! `classifier.safetensors` (the weights with their [`ClassifierConfig`] and metadata) and
//! `eval.json` (held-out accuracy against σ̃).

pub mod config;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use tch::{Device, Kind, Tensor};
use tweedie_core::Invalid;
use tweedie_nets::{ClassifierConfig, NetConfig, NoisyClassifier};

pub use config::{ClassifierEval, ClassifierTrainConfig, ClassifierTraining};

use crate::checkpoint::{read_state, restore_of, save_state_of, STATE_FILE};
use crate::data::{Data, Dataset};
use crate::error::{Result, TrainError};
use crate::loss::Loss;
use crate::optim::Adam;
use crate::resume::{data_fingerprint, differences, AllowChanges};
use crate::rundir::{create_fresh, RunLock};
use crate::trainer::{
    fit_network_to_data, stop_requested, take_interrupt, torch_step_seed, truncate_metrics,
    with_torch_rng, BatchSampler,
};

/// File names inside a classifier run directory.
pub mod files {
    /// Named as in a denoiser's run directory.
    pub use crate::rundir::files::{CONFIG, EVAL, METRICS};
    pub const CLASSIFIER: &str = "classifier.safetensors";
}

/// Metadata key of the data set's name in a classifier checkpoint (as the denoiser's).
pub const META_DATA: &str = "tweedie.data";
/// Metadata key of the training data's fingerprint ([`data_fingerprint`]).
pub const META_DATA_FINGERPRINT: &str = "tweedie.data.fingerprint";

/// How a classifier run is driven beyond its config.
#[derive(Debug, Clone, Default)]
pub struct ClassifierOptions {
    /// The run directory (created when new).
    pub run_dir: PathBuf,
    /// Continue the run in `run_dir` from its training state.
    pub resume: bool,
    /// No progress bar.
    pub quiet: bool,
    /// Behave as if Ctrl-C came before this step (tests).
    pub interrupt_at: Option<u64>,
    /// A fresh run whose `run_dir` is taken uses `run_dir-2`, … instead of refusing.
    pub unique_dir: bool,
}

/// What a finished classifier run reports.
#[derive(Debug, Clone)]
pub struct ClassifierOutcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Steps done in total.
    pub steps: u64,
    /// Mean loss over the last logging interval.
    pub last_loss: f64,
    /// Seconds spent in this invocation's training steps.
    pub train_seconds: f64,
    /// Held-out accuracy at each σ̃ of `eval.sigmas`.
    pub held_out_accuracy: Vec<(f64, f64)>,
}

/// The classifier's config for `cfg` and its data: the encoder fitted to the data's shape, the
/// data's classes, the formulation's σ_data. Unlabelled or non-image data are refused by name.
pub fn classifier_config(cfg: &ClassifierTrainConfig, data: &Data) -> Result<ClassifierConfig> {
    let classes = match (data.train.labels.as_ref(), data.train.num_classes) {
        (Some(_), Some(c)) if c >= 2 => c,
        (Some(_), c) => {
            return Err(TrainError::Data(format!(
                "{}: a classifier needs at least 2 classes, the labels name {}",
                data.name,
                c.unwrap_or(0)
            )))
        }
        (None, _) => {
            return Err(TrainError::Data(format!(
                "{} has no class labels: a classifier needs labelled data (e.g. digits)",
                data.name
            )))
        }
    };
    let mut net = NetConfig::Unet(cfg.network.clone());
    fit_network_to_data(&mut net, &data.train, false, None)?;
    let NetConfig::Unet(encoder) = net else {
        return Err(TrainError::Other(
            "the classifier's network is a U-Net".into(),
        ));
    };
    let c = ClassifierConfig {
        encoder,
        classes,
        sigma_data: cfg.formulation()?.sigma_data,
    };
    c.validate()
        .map_err(|e| TrainError::invalid("network", "(config)", e.to_string()))?;
    Ok(c)
}

fn device_of(cfg: &ClassifierTrainConfig) -> Result<Device> {
    let d = &cfg.training.device;
    let spec: tweedie_nets::DeviceSpec = d
        .parse()
        .map_err(|e| TrainError::invalid("training.device", d, format!("{e}")))?;
    spec.resolve()
        .map_err(|e| TrainError::invalid("training.device", d, format!("{e}")))
}

/// x̃ = x₀ + σ̃·ε and σ̃ [B] (f64) of samples `first..first+n` of a run with `seed`: the same
/// keyed draws as the denoiser's loss.
fn noised(loss: &Loss, seed: u64, first: u64, x0: &Tensor) -> (Tensor, Tensor) {
    let size = x0.size();
    let n = size[0] as usize;
    let dim = x0.numel() / n.max(1);
    let levels = loss.draw_levels(seed, first, n);
    let s: Vec<f64> = levels.iter().map(|l| l.sigma_tilde).collect();
    let sigma = Tensor::from_slice(&s);
    let eps = Loss::draw_noise(seed, first, n, dim)
        .view(size.as_slice())
        .to_device(x0.device());
    let mut col = vec![n as i64];
    col.extend(std::iter::repeat_n(1i64, size.len() - 1));
    let sc = sigma
        .to_kind(Kind::Float)
        .view(col.as_slice())
        .to_device(x0.device());
    (x0 + eps * sc, sigma)
}

/// Trains per `cfg` in `opts.run_dir` and writes the classifier and its held-out accuracy. On
/// resume the config must equal the run's (bar `training.steps`) and the data the run's.
pub fn train_classifier(
    cfg: &ClassifierTrainConfig,
    opts: &ClassifierOptions,
) -> Result<ClassifierOutcome> {
    let data = cfg.data.load()?;
    let ccfg = classifier_config(cfg, &data)?;
    let loss = Loss::new(cfg.formulation()?)?;
    let device = device_of(cfg)?;
    let fingerprint = data_fingerprint(&data.train);
    let config_text = cfg.to_toml()?;
    let t = &cfg.training;

    let (resumed, run_dir, _lock) = if opts.resume {
        let dir = opts.run_dir.clone();
        if !dir.is_dir() {
            return Err(TrainError::Other(format!(
                "cannot resume: {} is not a run directory",
                dir.display()
            )));
        }
        let lock = RunLock::acquire(&dir)?;
        let st = read_state(&dir.join(STATE_FILE))?;
        let old = ClassifierTrainConfig::from_toml_str(&st.config_toml, &[]).map_err(|e| {
            TrainError::Checkpoint {
                path: dir.join(STATE_FILE),
                reason: format!("is not a classifier run's state: {e}"),
            }
        })?;
        let diffs = differences(
            &old,
            cfg,
            st.data_fingerprint.as_deref(),
            &fingerprint,
            &AllowChanges::default(),
        )?;
        if !diffs.is_empty() {
            return Err(TrainError::ResumeMismatch {
                run_dir: dir,
                differences: diffs,
            });
        }
        if st.step > t.steps {
            return Err(TrainError::invalid(
                "training.steps",
                t.steps,
                format!(
                    "the run is already at step {}; raise training.steps to continue",
                    st.step
                ),
            ));
        }
        (Some(st), dir, lock)
    } else {
        let (dir, lock) = create_fresh(&opts.run_dir, opts.unique_dir)?;
        (None, dir, lock)
    };
    let state_path = run_dir.join(STATE_FILE);
    let (vs, net) = with_torch_rng(|| {
        tch::manual_seed(torch_step_seed(t.seed, u64::MAX));
        ccfg.build(device)
    })?;
    let mut adam = Adam::new(&vs, t.adam());
    let start = match &resumed {
        Some(st) => {
            restore_of(&state_path, st, &vs, None, &mut adam)?;
            truncate_metrics(&run_dir.join(files::METRICS), st.step)?;
            st.step
        }
        None => {
            crate::plot::atomic_write(&run_dir.join(files::METRICS), b"")?;
            0
        }
    };
    crate::plot::atomic_write(&run_dir.join(files::CONFIG), config_text.as_bytes())?;
    let save = |adam: &Adam, step: u64| {
        save_state_of(
            &state_path,
            &vs,
            None,
            adam,
            step,
            &config_text,
            &fingerprint,
        )
    };
    if resumed.is_none() {
        save(&adam, 0)?;
    }
    let metrics_path = run_dir.join(files::METRICS);
    let mut metrics = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&metrics_path)
        .map_err(|e| TrainError::io(&metrics_path, e))?;
    let pb = if opts.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(t.steps)
    };
    pb.set_position(start);
    let mut batches = BatchSampler::new(data.train.len(), t.seed);
    let labels = data.train.labels.as_deref().unwrap_or(&[]);
    let began = Instant::now();
    let mut last_good = start;
    let (mut acc_loss, mut acc_hit, mut acc_n, mut last_loss) = (0.0, 0.0, 0u64, f64::NAN);
    for k in start..t.steps {
        if stop_requested() || opts.interrupt_at == Some(k) {
            take_interrupt();
            pb.abandon();
            save(&adam, k)?;
            return Err(TrainError::Interrupted { step: k, run_dir });
        }
        let idx = batches.indices(k, t.batch_size);
        let x0 = data.train.batch_tensor(&idx, device);
        let y: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
        let y = Tensor::from_slice(&y).to_device(device);
        let (x, sigma) = noised(&loss, t.seed, k * t.batch_size as u64, &x0);
        adam.zero_grad();
        let logits = with_torch_rng(|| {
            tch::manual_seed(torch_step_seed(t.seed, k));
            net.logits(&x, &sigma, true)
        })?;
        let l = logits.cross_entropy_for_logits(&y);
        let lv = l.double_value(&[]);
        if !lv.is_finite() {
            return Err(TrainError::NonFinite {
                step: k + 1,
                value: lv,
                last_good,
            });
        }
        l.f_backward()
            .map_err(|e| TrainError::Other(format!("backward: {e}")))?;
        let info = adam.step(k);
        let hits = logits
            .argmax(1, false)
            .eq_tensor(&y)
            .sum(Kind::Int64)
            .int64_value(&[]);
        acc_loss += lv;
        acc_hit += hits as f64 / t.batch_size as f64;
        acc_n += 1;
        let step = k + 1;
        if step % t.log_every == 0 || step == t.steps {
            last_loss = acc_loss / acc_n as f64;
            let line = serde_json::json!({
                "step": step,
                "loss": last_loss,
                "batch_accuracy": acc_hit / acc_n as f64,
                "grad_norm": info.grad_norm,
                "elapsed_s": began.elapsed().as_secs_f64(),
            });
            writeln!(metrics, "{line}").map_err(|e| TrainError::io(&metrics_path, e))?;
            pb.set_message(format!("loss {last_loss:.4}"));
            (acc_loss, acc_hit, acc_n) = (0.0, 0.0, 0);
        }
        if step % t.checkpoint_every == 0 || step == t.steps {
            save(&adam, step)?;
            last_good = step;
        }
        pb.inc(1);
    }
    pb.finish();
    let train_seconds = began.elapsed().as_secs_f64();
    let mut extra = BTreeMap::new();
    extra.insert("tweedie.train.step".to_string(), t.steps.to_string());
    extra.insert(META_DATA.to_string(), data.name.clone());
    extra.insert(META_DATA_FINGERPRINT.to_string(), fingerprint.clone());
    extra.insert(
        "tweedie.formulation".to_string(),
        cfg.diffusion.kind().name().to_string(),
    );
    tweedie_nets::save_classifier(&run_dir.join(files::CLASSIFIER), &vs, &ccfg, &extra)?;
    let held_out_accuracy = cfg
        .eval
        .sigmas
        .iter()
        .map(|&s| Ok((s, accuracy_at(&net, &data.held_out, s, device)?)))
        .collect::<Result<Vec<_>>>()?;
    let json = serde_json::json!({
        "steps": t.steps,
        "held_out": data.held_out.len(),
        "accuracy_at_sigma": held_out_accuracy
            .iter()
            .map(|(s, a)| serde_json::json!({"sigma": s, "accuracy": a}))
            .collect::<Vec<_>>(),
    });
    crate::plot::atomic_write(&run_dir.join(files::EVAL), format!("{json:#}\n").as_bytes())?;
    Ok(ClassifierOutcome {
        run_dir,
        steps: t.steps,
        last_loss,
        train_seconds,
        held_out_accuracy,
    })
}

/// Accuracy of `net` on `data` noised at σ̃ (noise keyed by (seed 0, sample index), so every
/// run and σ̃ sees the same ε).
pub fn accuracy_at(
    net: &NoisyClassifier,
    data: &Dataset,
    sigma: f64,
    device: Device,
) -> Result<f64> {
    let labels = data
        .labels
        .as_ref()
        .ok_or_else(|| TrainError::Data("accuracy needs labels".into()))?;
    let mut hits = 0i64;
    for lo in (0..data.len()).step_by(256) {
        let idx: Vec<usize> = (lo..(lo + 256).min(data.len())).collect();
        let x0 = data.batch_tensor(&idx, device);
        let eps = Loss::draw_noise(0, lo as u64, idx.len(), data.dim())
            .view(x0.size().as_slice())
            .to_device(device);
        let x = x0 + eps * sigma;
        let y: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
        let pred = tch::no_grad(|| net.logits(&x, &Tensor::from(sigma), false))?.argmax(1, false);
        hits += pred
            .eq_tensor(&Tensor::from_slice(&y).to_device(device))
            .sum(Kind::Int64)
            .int64_value(&[]);
    }
    Ok(hits as f64 / data.len().max(1) as f64)
}
