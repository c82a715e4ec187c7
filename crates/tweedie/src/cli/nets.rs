//! `tweedie nets …`: network presets, their parameter counts, and the NVlabs/edm importer.

use std::path::PathBuf;

use anyhow::Context;
use tweedie_nets::builder::group_thousands;
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use clap::Parser;
    use ndarray::Array2;
    use ndarray_npy::{ReadNpyExt, WriteNpyExt};
    use tweedie::nets::{load_checkpoint, tch};

    #[derive(Parser)]
    struct N {
        #[command(flatten)]
        a: super::Args,
    }

    #[derive(Parser)]
    struct S {
        #[command(flatten)]
        a: super::super::sample::Args,
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// `tweedie nets import-edm` on an EDM-shaped snapshot (written by tweedie-nets'
    /// tests/edm/make_pickles.py), then `tweedie sample --model` with one Euler step from σ = 80:
    /// x₀ = x_T + (0 − 80)·(x_T − D(x_T; 80))/80 = D(x_T; 80), the imported network's own output.
    #[test]
    fn import_edm_then_sample_gives_the_networks_output() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: `cargo xtask setup` creates the project's virtualenv (PyTorch)",
            python.display()
        );
        let dir = std::env::temp_dir().join(format!("tweedie-cli-edm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let case = "vp-songunet-uncond";
        let out = std::process::Command::new(&python)
            .arg(root.join("crates/tweedie-nets/tests/edm/make_pickles.py"))
            .args([s(&dir), s(&dir.join("EXECUTED")), case])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pkl = dir.join(format!("{case}.pkl"));
        let ckpt = dir.join("imported.safetensors");
        super::run(N::parse_from(["t", "import-edm", s(&pkl), "-o", s(&ckpt)]).a).unwrap();
        assert!(!dir.join("EXECUTED").exists());

        let n = 2;
        let dim = 3 * 8 * 8;
        let xt = Array2::from_shape_fn((n, dim), |(i, j)| {
            80.0 * ((i * dim + j) as f64 * 0.37).sin()
        });
        let lat = dir.join("xt.npy");
        xt.write_npy(std::fs::File::create(&lat).unwrap()).unwrap();
        let got = dir.join("x0.npy");
        let argv = [
            "t",
            "--model",
            s(&ckpt),
            "--sampler",
            "euler",
            "--steps",
            "1",
            "--n",
            "2",
            "--latents",
            s(&lat),
            "--device",
            "cpu",
            "--out",
            s(&got),
        ];
        super::super::sample::run(S::parse_from(argv).a).unwrap();
        let got = Array2::<f64>::read_npy(std::fs::File::open(&got).unwrap()).unwrap();

        let m = load_checkpoint(&ckpt, tch::Device::Cpu).unwrap();
        let x = tch::Tensor::from_slice(xt.as_slice().unwrap())
            .reshape([2, 3, 8, 8])
            .to_kind(tch::Kind::Float);
        let d = m.denoiser.denoise_at(&x, 80.0, None).unwrap();
        let d: Vec<f32> = Vec::try_from(d.flatten(0, -1)).unwrap();
        let scale = d.iter().fold(0f64, |a, &v| a.max(v.abs() as f64));
        let err = got
            .iter()
            .zip(&d)
            .fold(0f64, |a, (&g, &w)| a.max((g - w as f64).abs()));
        assert!(
            err <= 1e-5 * scale.max(1.0),
            "max |x₀ − D| = {err:e}, |D| ≤ {scale}"
        );
        assert!(scale > 1e-3, "the network's output is not trivially zero");
    }
}
