//! Criterion micro-benchmarks: a Tweedie conversion, a timer, and a 10-step run of every
//! sampler on the two states of `bench-samplers`' overhead table
//! (`cargo bench --profile dev -p tweedie-bench --bench samplers -- --quick`).
//!
//! The model in the integrator benches is the exact denoiser of N(0, I), D(x; σ) = x/(1 + σ²):
//! one cheap elementwise pass, so a step's time is dominated by the integrator's own arithmetic
//! (the quantity `cargo xtask bench-samplers` reports as overhead).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::Array2;
use tweedie_core::param::{convert, convert_coeffs};
use tweedie_core::process::{Edm, ProcessKind};
use tweedie_core::{Param, Timer, TimerKind};
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

/// The two states of `bench-samplers`' overhead table: gmm64d's [500, 64] and a batch of 64
/// images 3×32×32.
const STATES: [(usize, usize); 2] = [(500, 64), (64, 3072)];
/// Steps of a timed run (the Karras ρ = 7 grid from σ = 80 to 0.002, then 0).
const STEPS: usize = 10;

fn integrator_steps(c: &mut Criterion) {
    let edm = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let Ok(grid) = TimerKind::edm().grid(&edm, STEPS) else {
        return;
    };
    for (rows, cols) in STATES {
        let x = state(rows, cols).mapv(|v| 80.0 * v);
        let mut g = c.benchmark_group(format!("{STEPS} steps, [{rows}, {cols}]"));
        // The model alone, once per evaluation of a one-evaluation-per-step sampler: a run's
        // time minus this (× the sampler's evaluations per step) is the sampler's own.
        g.bench_with_input(BenchmarkId::from_parameter("model only"), &x, |b, x| {
            b.iter(|| {
                for i in 0..STEPS {
                    black_box(StdNormal.denoise(x, 1.0 + i as f64).ok());
                }
            })
        });
        // One read and one write of the state (a copy between two buffers, as bench-samplers'
        // ÷ rw): the unit of the overhead target, a step within 3× of it.
        let src = vec![1.0f64; rows * cols];
        let mut dst = vec![0.0f64; rows * cols];
        g.bench_function("copy (read + write)", |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        });
        for name in SAMPLER_NAMES {
            let Ok(kind) = SamplerKind::from_name(name) else {
                continue;
            };
            let Ok(d) = Sampler::new(&edm, grid.clone(), kind, &StdNormal) else {
                continue;
            };
            // The latents' copy is made outside the timed routine.
            g.bench_with_input(BenchmarkId::from_parameter(name), &x, |b, x| {
                b.iter_batched(
                    || x.clone(),
                    |x| d.run(Init::Latents(x), None),
                    criterion::BatchSize::LargeInput,
                )
            });
        }
        g.finish();
    }
}

criterion_group!(benches, conversions, timers, integrator_steps);
criterion_main!(benches);
