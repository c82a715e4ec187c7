//! `tweedie nets …`: network presets and their parameter counts (tweedie-nets).

use anyhow::Context;
use tweedie_nets::{params_report, NetConfig, PRESETS};

/// Network presets.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: NetsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum NetsCommand {
    /// Print the parameter count of a preset (e.g. ddpmpp-cifar10: 55,732,739).
    Params {
        /// Preset name; omit to print every preset.
        #[arg(long)]
        preset: Option<String>,
    },
    /// Print a preset's configuration as TOML (a starting point for a config file).
    Show {
        /// Preset name.
        #[arg(long)]
        preset: String,
    },
    /// List the preset names.
    List,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        NetsCommand::Params { preset } => {
            let names: Vec<String> = match preset {
                Some(p) => vec![p],
                None => PRESETS.iter().map(|s| s.to_string()).collect(),
            };
            for name in names {
                println!("{}", params_report(&name)?);
            }
        }
        NetsCommand::Show { preset } => {
            let cfg = NetConfig::preset(&preset)?;
            print!(
                "{}",
                toml::to_string(&cfg).context("serialising the preset")?
            );
        }
        NetsCommand::List => {
            for p in PRESETS {
                println!("{p}");
            }
        }
    }
    Ok(())
}
