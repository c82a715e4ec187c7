//! Ctrl-C: the first asks the run to stop at the next safe point (training saves a
//! checkpoint first; sampling and evaluation stop between batches), a second exits.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crate::error::{Result, TrainError};

pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

static HANDLER: Once = Once::new();

/// Installs the Ctrl-C handler once per process: the first Ctrl-C asks the loop to save and
/// stop (or the evaluation to stop after its current batch); a second one exits at once.
pub fn install_ctrlc_handler() {
    HANDLER.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\nCtrl-C: stopping (training saves a checkpoint first; press again to quit at once)"
            );
        });
    });
}

/// Whether Ctrl-C came since the last call (and clears it): the CLI asks before evaluating.
pub fn take_interrupt() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}

/// Whether Ctrl-C came (without clearing it): sampling and evaluation check it between
/// batches and stop with [`TrainError::Stopped`], so a stop during evaluation is prompt.
pub fn stop_requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `Err(Stopped)` when Ctrl-C came.
pub fn check_stop() -> Result<()> {
    if stop_requested() {
        Err(TrainError::Stopped)
    } else {
        Ok(())
    }
}

/// Maps [`TrainError::Stopped`] from the final samples or the evaluation to
/// [`TrainError::InterruptedAfterTraining`] naming `run_dir` (other errors unchanged).
pub fn stopped_after_training(run_dir: &Path) -> impl Fn(TrainError) -> TrainError + '_ {
    move |e| match e {
        TrainError::Stopped => TrainError::InterruptedAfterTraining {
            run_dir: run_dir.to_path_buf(),
        },
        e => e,
    }
}
