//! The `tweedie` command-line tool. Each subcommand lives in its own module of `cli/`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Megabyte states are freed and allocated every step: keep the memory mapped.
    tweedie_nets::device::retain_freed_memory();
    let args = cli::Cli::parse();
    match args.command.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole anyhow context chain on one line.
            eprintln!("error: {err:#}");
            // 128 + SIGINT, as shells report a process stopped by Ctrl-C.
            let interrupted = matches!(
                err.downcast_ref::<tweedie_train::TrainError>(),
                Some(
                    tweedie_train::TrainError::Interrupted { .. }
                        | tweedie_train::TrainError::InterruptedAfterTraining { .. }
                        | tweedie_train::TrainError::Stopped
                )
            );
            if interrupted {
                std::process::ExitCode::from(130)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
