//! `tweedie train`: placeholder until the trainers land (issue 5).

/// Arguments are accepted and ignored for now, so scripts can already call it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments for the trainer (ignored until issue 5).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    println!("tweedie train: training arrives with issue 5; the set-up and build work.");
    println!("Try `tweedie info` and `tweedie schedule --timer edm --steps 18` meanwhile.");
    Ok(())
}
