//! Train a tiny model from Rust code: an EDM-preconditioned MLP on the two-moons toy, a few
//! optimiser steps on the CPU, written to a run directory like `tweedie train` writes one.
//!
//! ```sh
//! cargo run --profile dev -p tweedie --example train_from_code
//! cargo run --profile dev -p tweedie --example sample_checkpoint -- <run dir>/model.safetensors
//! ```

use tweedie::train::trainer::files;
use tweedie::train::{train, TrainConfig, TrainOptions};

fn main() -> anyhow::Result<()> {
    // The same TOML as a config file; `--set`-style overrides go in the second argument.
    let cfg = TrainConfig::from_toml_str(
        r#"
[diffusion]
type = "EDM"

[data]
type = "moons"
n = 512
held_out = 128

[network]
preset = "mlp-small"

[training]
batch_size = 64
steps = 40
warmup_steps = 10
checkpoint_every = 40
sample_every = 0
log_every = 10
device = "cpu"

[sampling]
steps = 8
sampler = "heun"
grid = 64
"#,
        &["training.seed=1".to_string()],
    )?;
    let run_dir =
        std::env::temp_dir().join(format!("tweedie-train-from-code-{}", std::process::id()));
    let out = train(
        &cfg,
        &TrainOptions {
            run_dir: run_dir.clone(),
            resume: false,
            quiet: true,
            ..TrainOptions::default()
        },
    )?;
    println!(
        "{} steps in {:.1} s, last loss {:.4}",
        out.steps,
        out.train_seconds,
        out.last_loss.unwrap_or(f64::NAN)
    );
    println!("checkpoint: {}", run_dir.join(files::MODEL).display());
    Ok(())
}
