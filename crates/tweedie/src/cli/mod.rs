//! Subcommands of `tweedie`.
//!
//! Adding a subcommand = a new module `cli/NAME.rs` with
//! `pub struct Args` (`#[derive(clap::Args)]`) and `pub fn run(args: Args) -> anyhow::Result<()>`,
//! plus one line in the `subcommands!` list below (its doc comment is the help text).

use clap::{Parser, Subcommand};

mod eval;
mod info;
mod launch;
mod likelihood;
mod measure;
mod model;
mod nets;
mod operator;
mod sample;
mod schedule;
mod train;
mod train_classifier;
mod vlb;

/// Declares the `Command` enum (one variant per module) and its dispatch.
macro_rules! subcommands {
    ($($(#[$meta:meta])* $variant:ident => $module:ident,)+) => {
        // Built once per process from the command line: variant sizes do not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Subcommand)]
        pub enum Command {
            $($(#[$meta])* $variant($module::Args),)+
        }

        impl Command {
            /// Runs the chosen subcommand.
            pub fn run(self) -> anyhow::Result<()> {
                match self {
                    $(Command::$variant(args) => $module::run(args),)+
                }
            }
        }
    };
}

subcommands! {
    /// Print the libtorch version, CUDA and cuDNN availability and thread counts.
    Info => info,
    /// Network presets: parameter counts, configurations.
    Nets => nets,
    /// Draw samples from an analytic mixture with any sampler, optionally given a measurement.
    Sample => sample,
    /// Make a measurement y = A·x₀ + n of a held-out sample x₀ (for `sample --operator`).
    Measure => measure,
    /// Print a timer's time grid (i, t, σ̃) as a sampler would use it.
    Schedule => schedule,
    /// Train a model from a TOML config (default configs/default.toml), sample, evaluate, write report.md.
    Train => train,
    /// Train a noise-conditional classifier p(c | x̃, σ̃) for classifier guidance (`sample --classifier`).
    TrainClassifier => train_classifier,
    /// log p(x₀) of data points under a mixture or checkpoint by the probability-flow ODE (nats, bits/dim).
    Likelihood => likelihood,
    /// Evaluate a trained run against ground truth and (re)write its report.md.
    Eval => eval,
    /// Start N local ranks of a tweedie command on 127.0.0.1 (as `torchrun --no-python` would).
    Launch => launch,
}

/// Diffusion and flow generative models: sampling, training, evaluation.
#[derive(Debug, Parser)]
#[command(name = "tweedie", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `tweedie sample --help` names every sampler the library accepts (the list was once
    /// hand-kept and fell behind by seven).
    #[test]
    fn sample_help_lists_every_sampler() {
        let mut cli = Cli::command();
        let sample = cli
            .find_subcommand_mut("sample")
            .expect("sample subcommand");
        let help = sample.render_long_help().to_string();
        let missing: Vec<_> = tweedie_samplers::SAMPLER_NAMES
            .iter()
            .filter(|name| {
                !help.contains(&format!(" {name},")) && !help.contains(&format!(" {name} "))
            })
            .collect();
        assert!(missing.is_empty(), "--sampler help lacks {missing:?}");
    }
}
