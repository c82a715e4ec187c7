//! No per-step allocation: once a multistep history is full, a step of any fixed-grid sampler
//! allocates no state-sized buffer besides the model's own outputs (one per evaluation).
//!
//! A counting global allocator records every allocation of at least half a state; this file
//! holds one test so that no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::Array2;
use tweedie_core::process::Edm;
use tweedie_core::{Timer, TimerKind};
use tweedie_samplers::{Capabilities, Init, Model, Sampler, SamplerKind, StepInfo, SAMPLER_NAMES};

const ROWS: usize = 64;
/// 64 × 600 f64 = 300 KiB: large enough for the kernels' and the noise's thread split.
const COLS: usize = 600;
const BIG: usize = ROWS * COLS * 8 / 2;

static BIG_ALLOCS: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= BIG {
            BIG_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= BIG {
            BIG_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= BIG {
            BIG_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The exact denoiser of N(0, ½²I), counting its calls (each allocates its output).
struct Prior(AtomicUsize);

impl Model<Array2<f64>> for Prior {
    fn denoise(&self, x: &Array2<f64>, sigma: f64) -> tweedie_samplers::Result<Array2<f64>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(x * (0.25 / (0.25 + sigma * sigma)))
    }
    fn capabilities(&self) -> Capabilities<'_, Array2<f64>> {
        Capabilities::none()
    }
}

#[test]
fn steps_allocate_only_the_model_outputs() {
    let edm = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let steps = 10;
    let grid = TimerKind::edm().grid(&edm, steps).unwrap();
    let x = tweedie_core::rng::normal_rows(1, 0, ROWS, 0, COLS) * 80.0;
    let mut checked = Vec::new();
    for name in SAMPLER_NAMES {
        let kind = SamplerKind::from_name(name).unwrap();
        if matches!(kind, SamplerKind::Adaptive { .. }) {
            continue;
        }
        let model = Prior(AtomicUsize::new(0));
        let sampler = Sampler::new(&edm, grid.clone(), kind, &model)
            .unwrap()
            .seed(2);
        // (big allocations, model calls) after each step.
        let mut marks = Vec::new();
        let mut cb = |_: &StepInfo<Array2<f64>>| {
            marks.push((
                BIG_ALLOCS.load(Ordering::Relaxed),
                model.0.load(Ordering::Relaxed),
            ))
        };
        sampler
            .run(Init::Latents(x.clone()), Some(&mut cb))
            .unwrap();
        // Steps 5 .. n−2: every history (order ≤ 4) is full, and the last step (to σ̃ = 0,
        // which returns D) is left out.
        for i in 5..steps - 1 {
            let allocs = marks[i].0 - marks[i - 1].0;
            let calls = marks[i].1 - marks[i - 1].1;
            assert_eq!(
                allocs, calls,
                "{name}: step {i} allocated {allocs} state-sized buffers for {calls} model calls"
            );
        }
        checked.push(name);
    }
    assert_eq!(checked.len(), SAMPLER_NAMES.len() - 1);
}
