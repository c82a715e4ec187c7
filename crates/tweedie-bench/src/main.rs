//! `tweedie-bench`: the project's measurement tooling, kept out of the user CLI. Reached through
//! `cargo xtask bench-samplers|consistency|bench-nets|bench-dist …`, which set up libtorch first.

mod bench;
mod cond;
mod consistency;
mod dist;
mod nets;

use clap::{Parser, Subcommand};

/// Measurements behind docs/benchmarks.md.
#[derive(Debug, Parser)]
#[command(name = "tweedie-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Built once per process from the command line: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Sampler error vs NFE on exact Gaussian mixtures and cost, side by side with k-diffusion/diffusers.
    BenchSamplers(bench::Args),
    /// DPS, FPS and TMP against exact mixture posteriors, side by side with diffuse (JAX) with --with-diffuse.
    BenchConditional(cond::Args),
    /// The same sampler and model on ndarray, tch CPU (f64/f32) and CUDA; one U-Net training step CPU vs CUDA.
    Consistency(consistency::Args),
    /// One U-Net training step (forward, backward, Adam) in tch next to the same network in PyTorch eager.
    BenchNets(nets::Args),
    /// Data-parallel step time on this machine: 1 rank vs N ranks, communication share, DDP reducer vs one all-reduce.
    BenchDist(dist::Args),
    /// One rank of bench-dist (started by it).
    #[command(hide = true)]
    BenchDistRank(dist::RankArgs),
}

fn main() -> std::process::ExitCode {
    // Megabyte states are freed and allocated every step: keep the memory mapped.
    tweedie_nets::device::retain_freed_memory();
    let result = match Cli::parse().command {
        Command::BenchSamplers(args) => bench::run(args),
        Command::BenchConditional(args) => cond::run(args),
        Command::Consistency(args) => consistency::run(args),
        Command::BenchNets(args) => nets::run(args),
        Command::BenchDist(args) => dist::run(args),
        Command::BenchDistRank(args) => dist::rank(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole anyhow context chain on one line.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
