//! Ctrl-C: the first asks the training loop to save a checkpoint and stop, a second exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

static HANDLER: Once = Once::new();

/// Installs the Ctrl-C handler once per process: the first Ctrl-C asks the loop to save and
/// stop; a second one exits at once.
pub fn install_ctrlc_handler() {
    HANDLER.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: saving a checkpoint and stopping (press again to quit at once)");
        });
    });
}

/// Whether Ctrl-C came since the last call (and clears it): the CLI asks before evaluating.
pub fn take_interrupt() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}
