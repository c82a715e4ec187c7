//! `tweedie nets …`: network presets, their parameter counts, and the NVlabs/edm importer.

use std::path::PathBuf;

use anyhow::Context;
use tweedie_nets::network::group_thousands;
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
    /// Import an NVlabs/edm network pickle (training snapshot or published model) into a tweedie
    /// checkpoint; nothing in the file is executed (allowlisted globals, checked tensor data).
    #[command(after_help = "Example:\n  \
        tweedie nets import-edm edm-cifar10-32x32-cond-vp.pkl -o cifar10-cond-vp.safetensors\n  \
        tweedie sample --model cifar10-cond-vp.safetensors --sampler heun --steps 18 --n 64 --class 3 --out x.npy")]
    ImportEdm {
        /// The EDM pickle.
        input: PathBuf,
        /// The checkpoint to write (.safetensors).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
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
        NetsCommand::ImportEdm { input, out } => {
            let r = tweedie_nets::import::import_edm(&input, &out)
                .with_context(|| format!("importing {}", input.display()))?;
            println!(
                "{}: {}({}), {} tensors, {} scalars -> {}",
                input.display(),
                r.precond_class,
                r.model_class,
                r.tensors,
                group_thousands(r.scalars),
                out.display()
            );
            println!(
                "{}",
                serde_json::to_string(&r.config).context("serialising the config")?
            );
        }
    }
    Ok(())
}
