//! Criterion micro-benchmarks: a Tweedie conversion, a timer, and one step of every integrator
//! on a fixed state (`cargo bench -p tweedie-bench --bench samplers`).
//!
//! The model in the integrator benches is the exact denoiser of N(0, I), D(x; σ) = x/(1 + σ²):
//! one cheap elementwise pass, so a step's time is dominated by the integrator's own arithmetic
//! (the quantity `cargo xtask bench-samplers` reports as overhead).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::Array2;
use tweedie_core::param::{convert, convert_coeffs};
use tweedie_core::process::{Edm, ProcessKind};
use tweedie_core::{Param, TimeGrid, Timer, TimerKind};
use tweedie_samplers::{Capabilities, Init, Model, Sampler, SamplerKind, SAMPLER_NAMES};

/// Exact denoiser of a standard normal prior: E[x₀ | x₀ + σε] = x/(1 + σ²).
struct StdNormal;

impl Model<Array2<f64>> for StdNormal {
    fn denoise(&self, x: &Array2<f64>, sigma: f64) -> tweedie_samplers::Result<Array2<f64>> {
        Ok(x * (1.0 / (1.0 + sigma * sigma)))
    }
    fn capabilities(&self) -> Capabilities<'_, Array2<f64>> {
        Capabilities::none()
    }
}

/// A fixed state [B, D] with entries of order 1 (deterministic, no RNG needed).
fn state(b: usize, d: usize) -> Array2<f64> {
    Array2::from_shape_fn((b, d), |(i, j)| {
        ((i * 31 + j * 17) % 97) as f64 / 48.5 - 1.0
    })
}

fn conversions(c: &mut Criterion) {
    let vp = ProcessKind::vp().build();
    let x = state(256, 64);
    let pred = state(256, 64).mapv(|v| 0.5 * v);
    let mut g = c.benchmark_group("core");
    g.bench_function("convert_coeffs eps→x0 (VP)", |b| {
        b.iter(|| {
            convert_coeffs(
                black_box(Param::Eps),
                black_box(Param::X0),
                vp.as_ref(),
                black_box(0.3),
            )
        })
    });
    g.bench_function("convert eps→x0 (VP) on [256, 64]", |b| {
        b.iter(|| {
            convert(
                Param::Eps,
                Param::X0,
                vp.as_ref(),
                black_box(0.3),
                &x,
                &pred,
            )
        })
    });
    g.finish();
}

fn timers(c: &mut Criterion) {
    let edm = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let vp = ProcessKind::vp().build();
    let mut g = c.benchmark_group("timer");
    let karras = TimerKind::edm();
    g.bench_function("edm ρ=7, 18 steps", |b| {
        b.iter(|| karras.grid(&edm, black_box(18)))
    });
    let vpl = TimerKind::vp_linear();
    g.bench_function("vp_linear, 18 steps (VP process)", |b| {
        b.iter(|| vpl.grid(vp.as_ref(), black_box(18)))
    });
    g.finish();
}

fn integrator_steps(c: &mut Criterion) {
    let edm = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let x = state(256, 64);
    let mut g = c.benchmark_group("one step, [256, 64], σ 1.0 → 0.5");
    for name in SAMPLER_NAMES {
        let Ok(kind) = SamplerKind::from_name(name) else {
            continue;
        };
        let Ok(grid) = TimeGrid::from_sigma_tilde(&edm, vec![1.0, 0.5]) else {
            continue;
        };
        let Ok(d) = Sampler::new(&edm, grid, kind, &StdNormal) else {
            continue;
        };
        g.bench_with_input(BenchmarkId::from_parameter(name), &x, |b, x| {
            b.iter(|| d.run(Init::Latents(x.clone()), None))
        });
    }
    g.finish();
}

criterion_group!(benches, conversions, timers, integrator_steps);
criterion_main!(benches);
