//! Checksums of every sampler's output, for changes that must keep samples bit for bit (fused
//! passes, kernels, buffer reuse): run it before and after and diff the two files.
//!
//! `cargo run --profile dev -p tweedie-samplers --example sampler_checksums > before.txt`
//!
//! One line per case: every name of `SAMPLER_NAMES` and the other orders and variants of LMS,
//! iPNDM, DEIS-logρ and UniPC (with and without its corrector), DDIM(η), 2M SDE(η) and DDPM with
//! a learned variance, on the EDM and VP processes, the 2-D and 64-D mixtures ([50, 2] and
//! [600, 64]: the latter is split across rayon threads), f64 and f32 states. Each hash covers the
//! samples, the recorded trajectory and every callback's x̃ and D; further lines hash a run with
//! a step hook and one with churn, and give the error of a model that returns NaN or ±∞ from a
//! given call on.

use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{Array2, Dimension};
use tweedie_core::multistep::UniPcVariant;
use tweedie_core::process::{Edm, VpLinear};
use tweedie_core::{Process, Timer, TimerKind};
use tweedie_samplers::model::LearnedVariance;
use tweedie_samplers::problems::{mixture_2d, mixture_64d};
use tweedie_samplers::step::NoiseKey;
use tweedie_samplers::{
    Capabilities, Churn, GaussianMixture, Init, Model, Sampler, SamplerKind, State, StepHook,
    StepInfo, SAMPLER_NAMES,
};

/// Folds the bits of every element into `acc` (FNV-style, order-sensitive).
fn fold<T: Copy + Into<f64>, D: Dimension>(acc: &mut u64, a: &ndarray::Array<T, D>) {
    for v in a.iter() {
        *acc ^= (*v).into().to_bits();
        *acc = acc.wrapping_mul(0x100_0000_01b3).rotate_left(7);
    }
}

/// The mixture's denoiser with a learned-variance interpolation v = D/100.
struct WithVariance(GaussianMixture);

impl<S: State> Model<S> for WithVariance {
    fn denoise(&self, x: &S, s: f64) -> tweedie_samplers::Result<S> {
        self.0.denoise(x, s)
    }
    fn capabilities(&self) -> Capabilities<'_, S> {
        Capabilities {
            learned_variance: Some(self),
            ..Capabilities::none()
        }
    }
}

impl<S: State> LearnedVariance<S> for WithVariance {
    fn denoise_variance(&self, x: &S, s: f64) -> tweedie_samplers::Result<(S, Option<S>)> {
        let d: S = self.0.denoise(x, s)?;
        let v = d.scale(0.01);
        Ok((d, Some(v)))
    }
}

/// A step hook that shrinks x̃ by 0.1 %.
struct Shrink;

impl<S: State> StepHook<S> for Shrink {
    fn after_step(&self, _: usize, _: f64, x: S, _: NoiseKey) -> tweedie_samplers::Result<S> {
        Ok(x.scale(0.999))
    }
}

/// The mixture's denoiser with its last element set to `bad` from call `from` on.
struct NonFinite {
    mix: GaussianMixture,
    calls: AtomicUsize,
    from: usize,
    bad: f64,
}

impl<S: State> Model<S> for NonFinite {
    fn denoise(&self, x: &S, s: f64) -> tweedie_samplers::Result<S> {
        let d: S = self.mix.denoise(x, s)?;
        if self.calls.fetch_add(1, Ordering::Relaxed) < self.from {
            return Ok(d);
        }
        let mut r = d.to_rows();
        let (i, j) = (r.nrows() - 1, r.ncols() - 1);
        r[[i, j]] = self.bad;
        d.with_rows(&r)
    }
    fn capabilities(&self) -> Capabilities<'_, S> {
        Capabilities::none()
    }
}

/// The one case run with [`WithVariance`] (every other: the mixture itself).
const WITH_VARIANCE: &str = "ddpm_ancestral with a learned variance";

fn kinds() -> Vec<(String, SamplerKind)> {
    let mut v: Vec<(String, SamplerKind)> = SAMPLER_NAMES
        .iter()
        .filter_map(|n| Some((n.to_string(), SamplerKind::from_name(n).ok()?)))
        .collect();
    for order in 1..=3 {
        for corrector in [false, true] {
            let kind = SamplerKind::UniPc {
                order,
                variant: UniPcVariant::Bh1,
                corrector,
            };
            v.push((
                format!("unipc_bh1 order {order} corrector {corrector}"),
                kind,
            ));
        }
        v.push((
            format!("deis_logrho order {order}"),
            SamplerKind::DeisLogRho { order },
        ));
    }
    for order in 1..=4 {
        v.push((format!("lms order {order}"), SamplerKind::Lms { order }));
        v.push((format!("ipndm order {order}"), SamplerKind::Ipndm { order }));
    }
    v.push((
        "dpmpp_2m_sde η 0.5".into(),
        SamplerKind::DpmSolverPp2mSde { eta: 0.5 },
    ));
    v.push(("ddim η 0.5".into(), SamplerKind::Ddim { eta: 0.5 }));
    v.push((
        WITH_VARIANCE.into(),
        SamplerKind::DdpmAncestral {
            learned_variance: true,
        },
    ));
    v
}

/// Every case of one (process, mixture, element type).
fn cases<T>(
    tag: &str,
    p: &dyn Process,
    mix: &GaussianMixture,
    latents: Array2<T>,
) -> tweedie_samplers::Result<()>
where
    T: Copy + Into<f64>,
    Array2<T>: State,
{
    let grid = TimerKind::edm().grid(p, 12)?;
    let with_variance = WithVariance(mix.clone());
    for (name, kind) in kinds() {
        let model: &dyn Model<Array2<T>> = match name.as_str() {
            WITH_VARIANCE => &with_variance,
            _ => mix,
        };
        let sampler = || Sampler::new(p, grid.clone(), kind.clone(), model).map(|s| s.seed(5));
        let mut acc = 0xcbf2_9ce4_8422_2325u64;
        let mut callback = |info: &StepInfo<Array2<T>>| {
            fold(&mut acc, info.x);
            fold(&mut acc, info.denoised);
        };
        let out = sampler()?
            .record(true)
            .run(Init::Latents(latents.clone()), Some(&mut callback))?;
        fold(&mut acc, &out.samples);
        for x in &out.trajectory {
            fold(&mut acc, x);
        }
        println!("{tag} {name}: {acc:016x} nfe {}", out.nfe);
        let hooks = !matches!(
            kind,
            SamplerKind::UniPc {
                corrector: true,
                ..
            } | SamplerKind::Adaptive { .. }
        );
        if hooks {
            let out = sampler()?
                .hook(&Shrink)
                .run(Init::Latents(latents.clone()), None)?;
            let mut acc = 1;
            fold(&mut acc, &out.samples);
            println!("{tag} {name} with a hook: {acc:016x}");
        }
        if kind.accepts_churn() && !matches!(kind, SamplerKind::EdmStochastic { .. }) {
            let churn = Churn {
                s_churn: 10.0,
                s_min: 0.0,
                s_max: f64::INFINITY,
                s_noise: 1.003,
            };
            let out = sampler()?
                .churn(churn)
                .run(Init::Latents(latents.clone()), None)?;
            let mut acc = 1;
            fold(&mut acc, &out.samples);
            println!("{tag} {name} with churn: {acc:016x}");
        }
        for (from, bad) in [(0, f64::NAN), (3, f64::INFINITY), (5, f64::NEG_INFINITY)] {
            let model = NonFinite {
                mix: mix.clone(),
                calls: AtomicUsize::new(0),
                from,
                bad,
            };
            let run = Sampler::new(p, grid.clone(), kind.clone(), &model as &dyn Model<_>)?
                .seed(5)
                .run(Init::Latents(latents.clone()), None);
            let err = run.err().map(|e| e.to_string());
            println!("{tag} {name} with {bad} from call {from}: {err:?}");
        }
    }
    Ok(())
}

fn main() -> tweedie_samplers::Result<()> {
    let edm = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let vp = VpLinear {
        beta_min: 0.1,
        beta_d: 19.9,
        eps_t: 1e-3,
    };
    for (pname, p) in [("edm", &edm as &dyn Process), ("vp", &vp)] {
        let alpha = p.alpha(p.t_of_sigma_tilde(80.0));
        for (mname, mix, n) in [("2d", mixture_2d(), 50), ("64d", mixture_64d(), 600)] {
            let x = mix.sample_rows(n, 80.0, 3, 0) * alpha;
            cases(&format!("{pname} {mname} f64"), p, &mix, x.clone())?;
            cases(
                &format!("{pname} {mname} f32"),
                p,
                &mix,
                x.mapv(|v| v as f32),
            )?;
        }
    }
    Ok(())
}
