//! `cargo xtask bench-nets` (`tweedie-bench bench-nets`): one training step of a tweedie U-Net
//! preset in tch next to the same network in PyTorch eager (benches/nets/bench.py with its twin
//! benches/nets/songunet.py, run from the project's virtualenv), on the same device, after a
//! check that both give the same output for the same weights and inputs.
//!
//! The tch step is the trainer's: zero the gradients, forward, backward, and tweedie-train's
//! Adam (which also computes the global gradient norm it clips with); the PyTorch step uses
//! `torch.optim.Adam` with its defaults. Iterations alternate one for one, so both sides see the
//! same machine load; on CUDA each timed iteration is bracketed by device synchronisation.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{nn, Device, Kind, Tensor};
use tweedie_nets::checkpoint::save_tensors;
use tweedie_nets::{build_network, count_params, set_threads, DeviceSpec, NetConfig};
use tweedie_train::optim::{Adam, AdamConfig};

/// Options of `tweedie-bench bench-nets`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// U-Net preset (`tweedie nets list`); `ddpmpp-cifar10` is EDM's CIFAR-10 DDPM++.
    #[arg(long, default_value = "ddpmpp-tiny")]
    pub preset: String,
    /// Batch size, the same on both sides.
    #[arg(long, default_value_t = 64)]
    pub batch: i64,
    /// Timed iterations of each kind and side (medians are reported).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Untimed training steps on each side first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// libtorch threads on each side (default: the available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu | cuda | cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Python with torch and safetensors (default: TWEEDIE_PYTHON, else .venv/bin/python).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// Adam as EDM trains CIFAR-10 (β = (0.9, 0.999), ε = 1e-8, no clipping); a small learning
/// rate keeps the weights near the compared ones during timing.
const ADAM: AdamConfig = AdamConfig {
    lr: 1e-4,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    warmup_steps: 0,
    grad_clip: None,
};

/// Largest |tch − PyTorch| accepted, relative to the output's largest magnitude. On the CPU
/// both run the same float32 kernels up to summation order; on CUDA convolutions run in TF32
/// (PyTorch's default on both sides, 10-bit mantissa) and the two implementations resample
/// with different kernels (pooling vs grouped convolution), so rounding differs at ~1e-3.
fn tolerance(device: Device) -> f64 {
    if device.is_cuda() {
        1e-2
    } else {
        1e-4
    }
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

/// Waits for the device's queued work (CUDA); nothing on the CPU.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The PyTorch side as a child process answering timing requests.
struct Twin {
    child: std::process::Child,
    to_py: std::process::ChildStdin,
    from_py: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Twin {
    fn line(&mut self) -> Result<String> {
        match self.from_py.next() {
            Some(l) => Ok(l?),
            None => bail!("bench.py exited early (see its stderr above)"),
        }
    }

    /// Milliseconds of one request.
    fn time(&mut self, request: &str) -> Result<f64> {
        writeln!(self.to_py, "{request}")?;
        self.to_py.flush()?;
        self.line()?
            .trim()
            .parse::<f64>()
            .context("bench.py timing")
    }

    fn quit(mut self) -> Result<()> {
        writeln!(self.to_py, "quit")?;
        drop(self.to_py);
        self.child.wait()?;
        Ok(())
    }
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device.resolve()?;
    let threads = set_threads(a.threads);
    if a.batch < 1 || a.iters < 1 {
        bail!("--batch and --iters must be at least 1");
    }
    tch::manual_seed(0);
    let cfg = NetConfig::preset(&a.preset)?;
    let NetConfig::Unet(ucfg) = &cfg else {
        bail!(
            "--preset {}: the PyTorch side implements the U-Net (SongUNet) presets only",
            a.preset
        )
    };
    let params = count_params(&cfg)?.parameters;
    let vs = nn::VarStore::new(device);
    let net = build_network(&(vs.root() / "model"), &cfg)?;
    perturb(&vs);
    let mut shape = vec![a.batch];
    shape.extend(cfg.sample_shape());
    let x = Tensor::randn(shape.as_slice(), (Kind::Float, device));
    let c = Tensor::randn([a.batch], (Kind::Float, device));
    let out = tch::no_grad(|| net.forward(&x, &c, None, None, false));

    let dir = std::env::temp_dir().join(format!("tweedie-bench-nets-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_string(ucfg)?)?;
    let w_path = dir.join("weights.safetensors");
    let cpu = |t: &Tensor| t.to_device(Device::Cpu);
    let named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, cpu(&t)))
        .collect();
    save_tensors(&w_path, &named, &BTreeMap::new())?;
    let io_path = dir.join("inputs.safetensors");
    let io = vec![
        ("x".to_string(), cpu(&x)),
        ("c_noise".to_string(), cpu(&c)),
        ("out".to_string(), cpu(&out)),
    ];
    save_tensors(&io_path, &io, &BTreeMap::new())?;

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = a
        .python
        .clone()
        .or_else(|| std::env::var_os("TWEEDIE_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let script = root.join("benches/nets/bench.py");
    let device_arg = match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    let mut child = Command::new(&python)
        .arg(&script)
        .arg("--config")
        .arg(&cfg_path)
        .arg("--weights")
        .arg(&w_path)
        .arg("--inputs")
        .arg(&io_path)
        .args(["--device", &device_arg])
        .args(["--warmup", &a.warmup.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--lr", &ADAM.lr.to_string()])
        .args(["--betas", &ADAM.beta1.to_string(), &ADAM.beta2.to_string()])
        .args(["--eps", &ADAM.eps.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", python.display()))?;
    let mut twin = Twin {
        to_py: child.stdin.take().context("python stdin")?,
        from_py: BufReader::new(child.stdout.take().context("python stdout")?).lines(),
        child,
    };
    let header = twin.line();
    let _ = std::fs::remove_dir_all(&dir);
    let r: serde_json::Value = serde_json::from_str(&header?).context("bench.py header")?;
    let diff = r["max_abs_diff"].as_f64().unwrap_or(f64::NAN);
    let scale = r["out_max_abs"].as_f64().unwrap_or(f64::NAN);
    let tol = tolerance(device) * scale.max(1.0);
    println!(
        "preset {} ({params} params), batch {}, device {}, {threads} threads, {} iters (median), torch {}",
        a.preset, a.batch, r["device"], a.iters, r["torch"]
    );
    println!(
        "same weights, same input: max |tch − PyTorch| = {diff:.3e} (output max |·| = {scale:.3e}, tolerance {tol:.1e})"
    );
    if diff.is_nan() || diff > tol {
        let _ = twin.quit();
        bail!("tch and PyTorch outputs differ by {diff:e} (tolerance {tol:e})");
    }

    let mut adam = Adam::new(&vs, ADAM);
    let mut k = 0u64;
    let fb = |adam: &mut Adam| {
        adam.zero_grad();
        net.forward(&x, &c, None, None, true)
            .square()
            .mean(Kind::Float)
            .backward();
    };
    let mut step = |adam: &mut Adam| {
        fb(adam);
        adam.step(k);
        k += 1;
    };
    for _ in 0..a.warmup {
        step(&mut adam);
    }
    sync(device);
    let kinds = [
        ("step", "training step (forward+backward+Adam)"),
        ("fb", "forward+backward"),
        ("f", "forward (no grad)"),
    ];
    for (request, label) in kinds {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..a.iters {
            let t0 = Instant::now();
            match request {
                "step" => step(&mut adam),
                "fb" => fb(&mut adam),
                _ => tch::no_grad(|| drop(net.forward(&x, &c, None, None, false))),
            }
            sync(device);
            ours.push(t0.elapsed().as_secs_f64() * 1e3);
            theirs.push(twin.time(request)?);
        }
        let paired = median(
            &ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| a / b)
                .collect::<Vec<_>>(),
        );
        let (t, p) = (median(&ours), median(&theirs));
        println!(
            "{label}: tch {t:.2} ms, PyTorch eager {p:.2} ms, ratio tch/PyTorch = {:.3} (median of paired ratios {paired:.3})",
            t / p
        );
    }
    twin.quit()
}
