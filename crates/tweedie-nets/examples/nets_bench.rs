//! Forward+backward time of a U-Net preset in tch next to the same network in PyTorch eager
//! (benches/nets/bench.py, run from the project's virtualenv in the same run), plus a check
//! that both give the same output for the same weights and inputs.
//!
//! cargo run --release -p tweedie-nets --example nets_bench -- --preset ddpmpp-tiny --batch 64

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{nn, Device, Kind, Tensor};
use tweedie_nets::checkpoint::save_tensors;
use tweedie_nets::{build_network, count_params, set_threads, NetConfig};

struct Args {
    preset: String,
    batch: i64,
    iters: usize,
    warmup: usize,
    threads: Option<usize>,
    python: PathBuf,
}

fn parse_args() -> Result<Args> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut a = Args {
        preset: "ddpmpp-tiny".into(),
        batch: 64,
        iters: 20,
        warmup: 3,
        threads: None,
        python: std::env::var_os("TWEEDIE_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python")),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--preset" => a.preset = v()?,
            "--batch" => a.batch = v()?.parse().context("--batch")?,
            "--iters" => a.iters = v()?.parse().context("--iters")?,
            "--warmup" => a.warmup = v()?.parse().context("--warmup")?,
            "--threads" => a.threads = Some(v()?.parse().context("--threads")?),
            "--python" => a.python = PathBuf::from(v()?),
            "--bench" => {} // passed by `cargo bench`-style runners
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        f64::NAN
    } else {
        s[s.len() / 2]
    }
}

/// Non-trivial weights (the reference init zeroes the output layers), so the output check bites.
fn perturb(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            if !t.requires_grad() {
                continue;
            }
            let s = t.size();
            let new = if s.len() >= 2 {
                let fan_in = (t.numel() as i64 / s[0]).max(1) as f64;
                t.randn_like() / fan_in.sqrt()
            } else {
                t.randn_like() * 0.1 + &t
            };
            t.copy_(&new);
        }
    });
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let threads = set_threads(a.threads);
    tch::manual_seed(0);
    let cfg = NetConfig::preset(&a.preset)?;
    let NetConfig::Unet(ucfg) = &cfg else {
        bail!("the PyTorch side implements the U-Net presets only")
    };
    let params = count_params(&cfg)?.parameters;
    let vs = nn::VarStore::new(Device::Cpu);
    let net = build_network(&(vs.root() / "model"), &cfg)?;
    perturb(&vs);
    let mut shape = vec![a.batch];
    shape.extend(cfg.sample_shape());
    let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
    let c = Tensor::randn([a.batch], (Kind::Float, Device::Cpu));
    let out = tch::no_grad(|| net.forward(&x, &c, None, None, false));

    let dir = std::env::temp_dir().join(format!("tweedie-nets-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_string(ucfg)?)?;
    let w_path = dir.join("weights.safetensors");
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    save_tensors(&w_path, &named, &BTreeMap::new())?;
    let io_path = dir.join("inputs.safetensors");
    let io = vec![
        ("x".to_string(), x.shallow_clone()),
        ("c_noise".to_string(), c.shallow_clone()),
        ("out".to_string(), out.shallow_clone()),
    ];
    save_tensors(&io_path, &io, &BTreeMap::new())?;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/nets/bench.py");
    let mut child = Command::new(&a.python)
        .arg(&script)
        .args([
            "--config",
            &cfg_path.to_string_lossy(),
            "--weights",
            &w_path.to_string_lossy(),
        ])
        .args(["--inputs", &io_path.to_string_lossy()])
        .args([
            "--warmup",
            &a.warmup.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", a.python.display()))?;
    let mut to_py = child.stdin.take().context("python stdin")?;
    let mut from_py = BufReader::new(child.stdout.take().context("python stdout")?).lines();
    let mut read_line = || -> Result<String> {
        match from_py.next() {
            Some(l) => Ok(l?),
            None => bail!("bench.py exited early (see its stderr above)"),
        }
    };
    let r: serde_json::Value = serde_json::from_str(&read_line()?).context("bench.py header")?;
    let _ = std::fs::remove_dir_all(&dir);

    let vars = vs.trainable_variables();
    let step = || {
        for v in &vars {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let loss = net
            .forward(&x, &c, None, None, true)
            .square()
            .mean(Kind::Float);
        loss.backward();
    };
    let fwd = || tch::no_grad(|| drop(net.forward(&x, &c, None, None, false)));
    for _ in 0..a.warmup {
        step();
    }
    // Interleaved one-for-one so that both sides see the same machine load.
    let mut times = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for (k, cmd) in [(0, "fb"), (2, "f")] {
        for _ in 0..a.iters {
            let t0 = Instant::now();
            if cmd == "fb" {
                step()
            } else {
                fwd()
            }
            times[k].push(t0.elapsed().as_secs_f64() * 1e3);
            writeln!(to_py, "{cmd}")?;
            to_py.flush()?;
            times[k + 1].push(
                read_line()?
                    .trim()
                    .parse::<f64>()
                    .context("bench.py timing")?,
            );
        }
    }
    writeln!(to_py, "quit")?;
    drop(to_py);
    child.wait()?;
    let (rfb, torch_fb, rf, torch_f) = (
        median(&times[0]),
        median(&times[1]),
        median(&times[2]),
        median(&times[3]),
    );
    let paired =
        |r: &[f64], p: &[f64]| median(&r.iter().zip(p).map(|(a, b)| a / b).collect::<Vec<_>>());
    let diff = r["max_abs_diff"].as_f64().unwrap_or(f64::NAN);
    let scale = r["out_max_abs"].as_f64().unwrap_or(f64::NAN);

    println!(
        "preset {} ({} params), batch {}, {} threads, {} iters (median), torch {}",
        a.preset, params, a.batch, threads, a.iters, r["torch"]
    );
    println!(
        "same weights, same input: max |tch − PyTorch| = {diff:.3e} (output max |·| = {scale:.3e})"
    );
    println!(
        "forward+backward: tch {rfb:.2} ms, PyTorch eager {torch_fb:.2} ms, ratio tch/PyTorch = {:.3} (median of paired ratios {:.3})",
        rfb / torch_fb,
        paired(&times[0], &times[1])
    );
    println!(
        "forward (no grad): tch {rf:.2} ms, PyTorch eager {torch_f:.2} ms, ratio tch/PyTorch = {:.3} (median of paired ratios {:.3})",
        rf / torch_f,
        paired(&times[2], &times[3])
    );
    if diff.is_nan() || diff > 1e-4 * scale.max(1.0) {
        bail!("outputs differ: {diff:e}");
    }
    Ok(())
}
