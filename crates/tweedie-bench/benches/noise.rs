//! Criterion micro-benchmark of the keyed normal generator (`tweedie_core::rng`, Philox4x32-10
//! and Box–Muller) on one thread: the per-step noise of a stochastic sampler on the states of
//! the overhead table and gmm2d's
//! (`cargo bench --profile dev -p tweedie-bench --bench noise -- --quick --noplot`).
//! Criterion's throughput line gives normals per second; ns per normal is its inverse.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tweedie_core::rng::{self, streams};

/// [rows, len] states: gmm2d's and gmm64d's batches and 64 images 3×32×32.
const STATES: [(usize, usize); 3] = [(4000, 2), (500, 64), (64, 3072)];

fn noise(c: &mut Criterion) {
    // One thread, as the overhead table measures (the generator splits large batches over rayon).
    let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(1).build() else {
        return;
    };
    let mut g = c.benchmark_group("noise, one thread");
    for (rows, len) in STATES {
        let n = rows * len;
        g.throughput(Throughput::Elements(n as u64));
        let mut buf = vec![0.0f64; n];
        let id = format!("[{rows}, {len}]");
        g.bench_function(BenchmarkId::new("normal_rows_into", &id), |b| {
            pool.install(|| {
                b.iter(|| rng::normal_rows_into(1, 0, streams::STEP_BASE, len, black_box(&mut buf)))
            })
        });
        g.bench_function(BenchmarkId::new("add_normal_rows", &id), |b| {
            pool.install(|| {
                b.iter(|| {
                    rng::add_normal_rows(1, 0, streams::STEP_BASE, 0.5, len, black_box(&mut buf))
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, noise);
criterion_main!(benches);
