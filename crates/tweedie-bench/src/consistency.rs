//! `cargo xtask consistency` (`tweedie-bench consistency`): the same sampler, seed and model on
//! every backend, and one training step of a small U-Net with the trainer's loss on CPU and
//! CUDA; differences against stated tolerances.
//!
//! Noise is drawn per sample in f64 on the CPU (tweedie-core's keyed generators) whatever the
//! state type, so even the stochastic samplers must agree across backends up to rounding.
//! Exit status is non-zero when a difference exceeds its tolerance; the CUDA parts are skipped
//! with the reason printed when no GPU is present.

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};
use tweedie_core::process::Edm;
use tweedie_core::rng;
use tweedie_core::space::TchTensor;
use tweedie_core::{Timer, TimerKind};
use tweedie_nets::{ModelConfig, NetConfig};
use tweedie_samplers::{GaussianMixture, Init, Model, Sampler, SamplerKind, State};
use tweedie_train::loss::STREAM_NOISE;
use tweedie_train::{DiffusionConfig, FormulationKind, Loss};

/// Options of `tweedie-bench consistency`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Samplers to compare across backends (comma-separated; deterministic and stochastic).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "heun,dpmpp_2m,deis3,euler_ancestral,dpmpp_2m_sde,edm_stochastic"
    )]
    pub samplers: Vec<String>,
    /// Steps of the EDM (ρ = 7) grid.
    #[arg(long, default_value_t = 18)]
    pub steps: usize,
    /// Samples per run.
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    /// tweedie-core mixture preset used as the model (gmm2d, gmm64d).
    #[arg(long, default_value = "gmm64d")]
    pub mixture: String,
    /// Seed of the latents, the noise and the network initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Network preset for the training-step check.
    #[arg(long, default_value = "ddpmpp-tiny")]
    pub net: String,
    /// Batch size of the training step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
}

/// Relative tolerances: max |a − b| / max |b| over all entries.
mod tol {
    /// Same f64 arithmetic in another library: only the order of operations differs.
    pub const F64: f64 = 1e-10;
    /// f32 state: ≈ 2^-24 per operation, amplified by the ODE's sensitivity along 18 steps.
    pub const F32_STATE: f64 = 2e-4;
    /// Training step, CPU vs CUDA, f32: convolution algorithms (and TF32 on Ampere or newer)
    /// differ, so the loss agrees to ~1e-4 and gradients to ~1e-2 of their largest entry.
    pub const TRAIN_LOSS: f64 = 1e-3;
    pub const TRAIN_GRAD: f64 = 2e-2;
    /// Same device twice: libtorch on CPU is deterministic for this network.
    pub const SAME_DEVICE: f64 = 1e-6;
}

/// One comparison line: what, the max-abs and relative differences, the tolerance.
struct Check {
    what: String,
    max_abs: f64,
    rel: f64,
    tol: f64,
}

impl Check {
    fn passed(&self) -> bool {
        self.rel <= self.tol
    }
}

fn compare_rows(what: String, a: &Array2<f64>, b: &Array2<f64>, tol: f64) -> Check {
    let max_abs = a
        .iter()
        .zip(b.iter())
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    let scale = b
        .iter()
        .fold(0.0f64, |m, y| m.max(y.abs()))
        .max(f64::MIN_POSITIVE);
    // A NaN anywhere must fail, not compare false and pass.
    let rel = if a.iter().chain(b.iter()).all(|v| v.is_finite()) {
        max_abs / scale
    } else {
        f64::INFINITY
    };
    Check {
        what,
        max_abs,
        rel,
        tol,
    }
}

fn compare_tensors(what: String, a: &Tensor, b: &Tensor, tol: f64) -> Result<Check> {
    let a = a
        .to_device(Device::Cpu)
        .to_kind(Kind::Double)
        .reshape([1, -1]);
    let b = b
        .to_device(Device::Cpu)
        .to_kind(Kind::Double)
        .reshape([1, -1]);
    let ra = TchTensor(a).to_rows();
    let rb = TchTensor(b).to_rows();
    if ra.dim() != rb.dim() {
        bail!("{what}: shapes differ ({:?} vs {:?})", ra.dim(), rb.dim());
    }
    Ok(compare_rows(what, &ra, &rb, tol))
}

/// A backend for the sampler state.
#[derive(Clone, Copy, Debug)]
struct Backend {
    name: &'static str,
    device: Device,
    kind: Kind,
    tol: f64,
}

fn grid(steps: usize) -> Result<(Edm, tweedie_core::TimeGrid)> {
    let p = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let g = TimerKind::edm().grid(&p, steps).context("EDM timer grid")?;
    Ok((p, g))
}

fn run_ndarray(
    model: &GaussianMixture,
    kind: &SamplerKind,
    xt: &Array2<f64>,
    steps: usize,
    seed: u64,
) -> Result<Array2<f64>> {
    let (p, g) = grid(steps)?;
    let d = Sampler::new(&p, g, kind.clone(), model)?.seed(seed);
    Ok(d.run(Init::Latents(xt.clone()), None)?.samples)
}

fn run_tch(
    model: &GaussianMixture,
    kind: &SamplerKind,
    xt: &Array2<f64>,
    steps: usize,
    seed: u64,
    b: Backend,
) -> Result<Array2<f64>> {
    let (p, g) = grid(steps)?;
    let v: Vec<f64> = xt.iter().copied().collect();
    let t = Tensor::f_from_slice(&v)?
        .f_reshape([xt.nrows() as i64, xt.ncols() as i64])?
        .to_kind(b.kind)
        .to_device(b.device);
    let m: &dyn Model<TchTensor> = model;
    let d = Sampler::new(&p, g, kind.clone(), m)?.seed(seed);
    let out = tch::no_grad(|| d.run(Init::Latents(TchTensor(t)), None))?;
    Ok(out.samples.to_rows())
}

/// Sampler endpoints on every backend against ndarray f64.
fn sampler_checks(args: &Args, backends: &[Backend]) -> Result<Vec<Check>> {
    let model = crate::bench::bench_mixture(&args.mixture)?;
    let xt = model.sample_rows(args.samples, 80.0, args.seed, 0);
    let mut out = Vec::new();
    for name in &args.samplers {
        let kind = SamplerKind::from_name(name).with_context(|| format!("--samplers: `{name}`"))?;
        let reference = run_ndarray(&model, &kind, &xt, args.steps, args.seed)?;
        for b in backends {
            let x = run_tch(&model, &kind, &xt, args.steps, args.seed, *b)
                .with_context(|| format!("{name} on {}", b.name))?;
            let c = compare_rows(
                format!("sampler {name:<16} {} vs ndarray-f64", b.name),
                &x,
                &reference,
                b.tol,
            );
            println!("{}", line(&c));
            out.push(c);
        }
    }
    Ok(out)
}

/// What one training step produced on one device.
struct StepOut {
    loss: Tensor,
    grads: Vec<(String, Tensor)>,
    updates: Vec<(String, Tensor)>,
}

/// One SGD step of the trainer's own loss (tweedie-train's [`Loss`] for the EDM formulation:
/// Karras et al. 2022, eq. 2 with λ(σ̃) = (σ̃² + σ_d²)/(σ̃·σ_d)² and log-normal σ̃) on a fixed
/// batch, from weights copied from `init`.
fn train_step(
    cfg: &ModelConfig,
    loss: &Loss,
    init: &nn::VarStore,
    device: Device,
    batch: usize,
    seed: u64,
) -> Result<StepOut> {
    let (mut vs, den) = cfg.build(device)?;
    vs.copy(init).context("copying the initial weights")?;
    let shape = cfg.net.sample_shape();
    let numel: i64 = shape.iter().product();
    let mut full = vec![batch as i64];
    full.extend(&shape);
    // Data are drawn on the CPU in f64, noise levels and noise by the trainer's keyed draws
    // (sample g of the batch has its own generator): identical on every device. The data use
    // a stream of their own, next to the loss's σ̃ and ε streams.
    let x0 = rng::normal_rows(seed, 0, batch, STREAM_NOISE + 1, numel as usize);
    let v: Vec<f64> = x0.iter().copied().collect();
    let x0 = Tensor::f_from_slice(&v)?
        .f_reshape(full.as_slice())?
        .to_kind(Kind::Float)
        .to_device(device);
    let levels = loss.draw_levels(seed, 0, batch);
    let eps = Loss::draw_noise(seed, 0, batch, numel as usize).to_device(device);
    let before: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect();
    let mut opt = nn::Sgd::default().build(&vs, 1e-2)?;
    opt.zero_grad();
    let loss = loss
        .per_sample(
            |x, s| Ok(den.forward(x, s, None, None, true)?),
            &x0,
            &eps,
            &levels,
        )?
        .mean(Kind::Float);
    loss.backward();
    let vars = vs.variables();
    // Buffers (e.g. resample filters) and unused parameters have no gradient: count them as 0.
    let mut grads: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(k, v)| {
            let g = v.grad();
            (
                k.clone(),
                if g.defined() {
                    g.copy()
                } else {
                    v.zeros_like()
                },
            )
        })
        .collect();
    opt.step();
    let after = vs.variables();
    let mut updates = Vec::new();
    for (k, v0) in before {
        if let Some(v1) = after.get(&k) {
            updates.push((k, v1.detach() - v0));
        }
    }
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    updates.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(StepOut {
        loss: loss.detach(),
        grads,
        updates,
    })
}

fn flat(ts: &[(String, Tensor)]) -> Tensor {
    let parts: Vec<Tensor> = ts
        .iter()
        .map(|(_, t)| t.to_device(Device::Cpu).to_kind(Kind::Double).reshape([-1]))
        .collect();
    Tensor::cat(&parts, 0)
}

fn train_checks(
    args: &Args,
    label: &str,
    device: Device,
    tol_loss: f64,
    tol_grad: f64,
) -> Result<Vec<Check>> {
    let net = NetConfig::preset(&args.net).with_context(|| format!("--net `{}`", args.net))?;
    let loss = Loss::new(DiffusionConfig::new(FormulationKind::Edm).resolve()?)?;
    // The network is wrapped as the formulation says, so the loss and D agree on σ̃.
    let cfg = ModelConfig {
        net,
        wrapper: loss.formulation().wrapper.clone(),
        conditioning: None,
    };
    tch::manual_seed(args.seed as i64);
    let (init, _) = cfg.build(Device::Cpu)?;
    let a = train_step(&cfg, &loss, &init, Device::Cpu, args.batch, args.seed)?;
    let b = train_step(&cfg, &loss, &init, device, args.batch, args.seed)?;
    let out = vec![
        compare_tensors(
            format!("train {} loss       {label}", args.net),
            &b.loss,
            &a.loss,
            tol_loss,
        )?,
        compare_tensors(
            format!("train {} gradients  {label}", args.net),
            &flat(&b.grads),
            &flat(&a.grads),
            tol_grad,
        )?,
        compare_tensors(
            format!("train {} SGD update {label}", args.net),
            &flat(&b.updates),
            &flat(&a.updates),
            tol_grad,
        )?,
    ];
    // An all-zero gradient would make every comparison pass vacuously.
    let g_scale = flat(&a.grads).abs().max().double_value(&[]);
    if !(g_scale > 0.0 && g_scale.is_finite()) {
        bail!("the training step's gradient is {g_scale} everywhere: nothing to compare");
    }
    if a.grads.len() != b.grads.len() {
        bail!(
            "the two devices have different variables ({} vs {})",
            a.grads.len(),
            b.grads.len()
        );
    }
    for c in &out {
        println!("{}", line(c));
    }
    Ok(out)
}

fn line(c: &Check) -> String {
    format!(
        "{:<58} max|Δ| {:>9.2e}  rel {:>9.2e}  tol {:>7.0e}  {}",
        c.what,
        c.max_abs,
        c.rel,
        c.tol,
        if c.passed() { "ok" } else { "EXCEEDED" }
    )
}

/// Runs every check; an error when a tolerance is exceeded.
pub fn run(args: Args) -> Result<()> {
    if args.steps == 0 || args.samples == 0 || args.batch == 0 {
        bail!("--steps, --samples and --batch must be at least 1");
    }
    let cuda = tch::Cuda::is_available();
    let mut backends = vec![
        Backend {
            name: "tch-cpu-f64",
            device: Device::Cpu,
            kind: Kind::Double,
            tol: tol::F64,
        },
        Backend {
            name: "tch-cpu-f32",
            device: Device::Cpu,
            kind: Kind::Float,
            tol: tol::F32_STATE,
        },
    ];
    if cuda {
        backends.push(Backend {
            name: "tch-cuda-f64",
            device: Device::Cuda(0),
            kind: Kind::Double,
            tol: tol::F64,
        });
        backends.push(Backend {
            name: "tch-cuda-f32",
            device: Device::Cuda(0),
            kind: Kind::Float,
            tol: tol::F32_STATE,
        });
    }
    println!(
        "consistency: {} samples of the {} mixture, EDM grid with {} steps, seed {}",
        args.samples, args.mixture, args.steps, args.seed
    );
    let mut checks = sampler_checks(&args, &backends)?;
    if !cuda {
        println!(
            "sampler on tch-cuda: skipped (no CUDA device: tch::Cuda::is_available() is false)"
        );
    }
    // The same step twice on the CPU validates the comparison itself (and CPU determinism).
    checks.extend(train_checks(
        &args,
        "cpu vs cpu",
        Device::Cpu,
        tol::SAME_DEVICE,
        tol::SAME_DEVICE,
    )?);
    if cuda {
        checks.extend(train_checks(
            &args,
            "cuda vs cpu",
            Device::Cuda(0),
            tol::TRAIN_LOSS,
            tol::TRAIN_GRAD,
        )?);
    } else {
        println!("training step on CUDA: skipped (no CUDA device)");
    }
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.passed()).collect();
    if failed.is_empty() {
        println!("consistency: all {} checks within tolerance", checks.len());
        Ok(())
    } else {
        bail!(
            "{} of {} checks exceeded their tolerance: {}",
            failed.len(),
            checks.len(),
            failed
                .iter()
                .map(|c| c.what.trim().to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn comparisons_flag_differences_and_nans() {
        let a = array![[1.0, 2.0], [3.0, 4.0]];
        let b = array![[1.0, 2.0], [3.0, 4.0 + 4e-3]];
        let c = compare_rows("x".into(), &a, &b, 1e-3);
        assert!((c.max_abs - 4e-3).abs() < 1e-15);
        assert!((c.rel - 4e-3 / 4.004).abs() < 1e-12);
        assert!(c.passed() != (c.rel > 1e-3));
        assert!(!compare_rows("x".into(), &a, &b, 1e-4).passed());
        let n = array![[f64::NAN, 2.0], [3.0, 4.0]];
        assert!(!compare_rows("x".into(), &n, &a, 1.0).passed());
    }

    #[test]
    fn tch_cpu_f64_matches_ndarray_for_a_stochastic_sampler() {
        let model = crate::bench::bench_mixture("gmm2d").unwrap();
        let xt = model.sample_rows(16, 80.0, 3, 0);
        let kind = SamplerKind::from_name("euler_ancestral").unwrap();
        let a = run_ndarray(&model, &kind, &xt, 8, 3).unwrap();
        let b = Backend {
            name: "cpu64",
            device: Device::Cpu,
            kind: Kind::Double,
            tol: tol::F64,
        };
        let t = run_tch(&model, &kind, &xt, 8, 3, b).unwrap();
        let c = compare_rows("ea".into(), &t, &a, tol::F64);
        assert!(c.passed(), "rel {}", c.rel);
        // A different seed must change the stochastic endpoint (the check can fail).
        let other = run_ndarray(&model, &kind, &xt, 8, 4).unwrap();
        assert!(!compare_rows("ea".into(), &other, &a, 1e-3).passed());
    }

    #[test]
    fn the_training_step_with_the_trainers_loss_is_reproducible_on_the_cpu() {
        let args = Args {
            samplers: vec![],
            steps: 18,
            samples: 4,
            mixture: "gmm2d".into(),
            seed: 5,
            net: "ddpmpp-tiny".into(),
            batch: 2,
        };
        let checks = train_checks(
            &args,
            "cpu vs cpu",
            Device::Cpu,
            tol::SAME_DEVICE,
            tol::SAME_DEVICE,
        )
        .unwrap();
        assert_eq!(checks.len(), 3);
        assert!(checks.iter().all(Check::passed));
        // The step is a real one: a finite positive loss that moves the weights, so the
        // comparisons above are not between two zeros.
        let loss = Loss::new(
            DiffusionConfig::new(FormulationKind::Edm)
                .resolve()
                .unwrap(),
        )
        .unwrap();
        let cfg = ModelConfig {
            net: NetConfig::preset("ddpmpp-tiny").unwrap(),
            wrapper: loss.formulation().wrapper.clone(),
            conditioning: None,
        };
        let (init, _) = cfg.build(Device::Cpu).unwrap();
        let out = train_step(&cfg, &loss, &init, Device::Cpu, 2, 5).unwrap();
        let l = out.loss.double_value(&[]);
        assert!(l.is_finite() && l > 0.0, "loss {l}");
        assert!(flat(&out.updates).abs().max().double_value(&[]) > 0.0);
    }
}
