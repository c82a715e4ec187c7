//! One process-wide lock on libtorch's global random generator.
//!
//! Weight initialisation, dropout and label dropout draw from that generator, which every
//! thread of the process shares. A seeded section (`manual_seed` then draws) is reproducible
//! only if no other thread draws in between, including code that merely builds a network (to
//! count its parameters, or before loading a checkpoint over it). Every such place in this
//! workspace runs under [`with_torch_rng`].

use std::cell::Cell;
use std::sync::Mutex;

static LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds [`LOCK`], so nested sections do not deadlock.
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` holding the generator lock; re-entrant on the same thread.
pub fn with_torch_rng<T>(f: impl FnOnce() -> T) -> T {
    if HELD.with(Cell::get) {
        return f();
    }
    // A poisoned lock only means a panic elsewhere; the generator itself is still usable.
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            HELD.with(|h| h.set(false));
        }
    }
    HELD.with(|h| h.set(true));
    let _release = Release;
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_sections_do_not_deadlock_and_seeded_draws_repeat() {
        let draw = || {
            with_torch_rng(|| {
                tch::manual_seed(3);
                with_torch_rng(|| tch::Tensor::randn([4], tch::kind::FLOAT_CPU))
            })
        };
        // Other threads drawing unseeded at the same time cannot get between seed and draw.
        let noise: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..200 {
                        let _ = with_torch_rng(|| tch::Tensor::randn([16], tch::kind::FLOAT_CPU));
                    }
                })
            })
            .collect();
        let first = draw();
        for _ in 0..200 {
            assert!(draw().equal(&first));
        }
        for t in noise {
            t.join().expect("noise thread");
        }
    }
}
