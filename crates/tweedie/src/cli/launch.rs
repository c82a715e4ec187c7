//! `tweedie launch`: start N local ranks of a tweedie command on 127.0.0.1, as
//! `torchrun --no-python --nproc-per-node N` would, for people without torchrun.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Options of `tweedie launch`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: tweedie launch --nproc 2 -- train --config configs/toy.toml --out runs/toy-2r"
)]
pub struct Args {
    /// Number of ranks (processes) to start on this machine.
    #[arg(long, default_value_t = 2)]
    pub nproc: usize,
    /// TCPStore port on 127.0.0.1 (default: a free port).
    #[arg(long)]
    pub master_port: Option<u16>,
    /// Timeout of the rendezvous and of every collective, seconds (TWEEDIE_DIST_TIMEOUT).
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// The tweedie command each rank runs, after `--` (e.g. `train --config …`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    if args.nproc == 0 {
        bail!("--nproc 0: need at least one rank");
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!(
            "--timeout {}: need a positive number of seconds",
            args.timeout
        );
    }
    let port = match args.master_port {
        Some(p) => p,
        None => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("no free port on 127.0.0.1")?
            .port(),
    };
    let exe = std::env::current_exe().context("cannot find the tweedie executable")?;
    let mut children: Vec<Option<Child>> = Vec::new();
    for rank in 0..args.nproc {
        let mut cmd = Command::new(&exe);
        cmd.args(&args.command)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", args.nproc.to_string())
            .env("LOCAL_WORLD_SIZE", args.nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("TWEEDIE_DIST_TIMEOUT", args.timeout.to_string())
            .env_remove("TORCHELASTIC_USE_AGENT_STORE");
        // As torchrun: one thread per rank unless the user says otherwise.
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            cmd.env("OMP_NUM_THREADS", "1");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start rank {rank}"))?;
        children.push(Some(child));
    }
    // Wait for all; after the first failure give the others the collective timeout (plus a
    // margin) to notice and exit with their own message, then stop them.
    let mut failures: Vec<String> = Vec::new();
    let mut deadline: Option<Instant> = None;
    while children.iter().any(Option::is_some) {
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Some(status) = child.try_wait().context("waiting for a rank")? {
                if !status.success() {
                    failures.push(format!("rank {rank} ({status})"));
                    eprintln!(
                        "tweedie launch: rank {rank} of {} failed ({status})",
                        args.nproc
                    );
                    deadline.get_or_insert_with(|| {
                        Instant::now() + Duration::from_secs_f64(args.timeout + 10.0)
                    });
                }
                *slot = None;
            }
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            for (rank, slot) in children.iter_mut().enumerate() {
                if let Some(mut child) = slot.take() {
                    eprintln!(
                        "tweedie launch: stopping rank {rank} (still running after the timeout)"
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push(format!("rank {rank} (stopped)"));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} ranks failed: {}",
            failures.len(),
            args.nproc,
            failures.join(", ")
        );
    }
    Ok(())
}
