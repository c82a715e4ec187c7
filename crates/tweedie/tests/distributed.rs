//! Data-parallel training and sharded sampling through `tweedie launch` (Gloo on 127.0.0.1):
//! 2 ranks × B/2 = 1 rank × B, a killed rank fails the job clearly, its last checkpoint
//! resumes on 1 rank, and sharded sampling equals single-process sampling bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tch::Tensor;

const TWEEDIE: &str = env!("CARGO_BIN_EXE_tweedie");

/// A tiny run: moons, the small MLP, no dropout (dropout masks depend on the batch split).
const CONFIG: &str = r#"
[diffusion]
type = "EDM"
[data]
type = "moons"
n = 256
held_out = 64
[network]
preset = "mlp-small"
dropout = 0.0
[training]
batch_size = 32
lr = 2e-3
warmup_steps = 2
checkpoint_every = 4
sample_every = 0
log_every = 2
device = "cpu"
[sampling]
steps = 4
sampler = "euler"
grid = 16
[eval]
skip = true
"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tweedie-dist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cfg.toml"), CONFIG).unwrap();
    dir
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(TWEEDIE);
    cmd.args(args).env("OMP_NUM_THREADS", "1");
    for var in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn train_args<'a>(dir: &'a str, cfg: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train", "--config", cfg, "--out", dir, "--quiet", "--set", steps,
    ]
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// max |a − b| / max |b| over all tensors, which must have the same names.
fn max_rel_diff(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    for (name, ta) in a {
        let tb = &b[name];
        let ta = ta.to_kind(tch::Kind::Double);
        let tb = tb.to_kind(tch::Kind::Double);
        let d = (&ta - &tb).abs().max().double_value(&[]);
        let s = tb.abs().max().double_value(&[]).max(1e-12);
        worst = worst.max(d / s);
    }
    worst
}

#[test]
fn two_ranks_train_like_one_then_sharded_sampling_matches() {
    let dir = scratch("equal");
    let cfg = dir.join("cfg.toml");
    let cfg = cfg.to_str().unwrap();
    let one = dir.join("one");
    let two = dir.join("two");
    let flat = dir.join("flat");
    let steps = "training.steps=6";
    // Adam's m/√v turns float rounding of a near-zero gradient (the sum over 32 rows in
    // another order) into an lr-sized update; an ε above those gradients keeps the
    // comparison about data parallelism, not about that amplification (1.2e-5 with ε = 1e-8).
    std::fs::write(
        dir.join("cfg.toml"),
        CONFIG.replace("[training]\n", "[training]\nadam_eps = 1e-3\n"),
    )
    .unwrap();
    ok(&run(&train_args(one.to_str().unwrap(), cfg, steps), &[]));
    let mut launch = vec!["launch", "--nproc", "2", "--timeout", "60", "--"];
    launch.extend(train_args(two.to_str().unwrap(), cfg, steps));
    ok(&run(&launch, &[]));
    let mut launch_flat = vec!["launch", "--nproc", "2", "--timeout", "60", "--"];
    launch_flat.extend(train_args(flat.to_str().unwrap(), cfg, steps));
    launch_flat.extend(["--grad-sync", "flat"]);
    ok(&run(&launch_flat, &[]));
    // Parameters, EMA and Adam moments after K = 6 steps: 2 × 16 = 1 × 32 to 1e-6.
    let s1 = tensors(&one.join("train_state.safetensors"));
    for other in [&two, &flat] {
        let s2 = tensors(&other.join("train_state.safetensors"));
        let rel = max_rel_diff(&s2, &s1);
        assert!(
            rel < 1e-6,
            "{}: max relative difference {rel:e}",
            other.display()
        );
        let rel = max_rel_diff(
            &tensors(&other.join("model.safetensors")),
            &tensors(&one.join("model.safetensors")),
        );
        assert!(rel < 1e-6, "EMA model: {rel:e}");
    }
    // Sharded sampling (7 samples over 2 ranks) = one process, bit for bit.
    let model = one.join("model.safetensors");
    let a = dir.join("a.npy");
    let b = dir.join("b.npy");
    let sample = |out: &Path| {
        vec![
            "sample".to_string(),
            "--model".into(),
            model.to_str().unwrap().into(),
            "--sampler".into(),
            "euler_ancestral".into(),
            "--steps".into(),
            "6".into(),
            "--n".into(),
            "7".into(),
            "--seed".into(),
            "3".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let sa = sample(&a);
    ok(&run(
        &sa.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    ));
    let mut sb = vec![
        "launch".to_string(),
        "--nproc".into(),
        "2".into(),
        "--".into(),
    ];
    sb.extend(sample(&b));
    ok(&run(
        &sb.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    ));
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ba.len(), bb.len());
    assert!(
        ba == bb,
        "sharded samples differ from single-process samples"
    );
    // In batches of 2 per rank (rounds of rows 0–3, 4–6; rank 1 draws 2–3 and 6): the same.
    let c = dir.join("c.npy");
    let mut sc = vec![
        "launch".to_string(),
        "--nproc".into(),
        "2".into(),
        "--".into(),
    ];
    sc.extend(sample(&c));
    sc.extend(["--batch".to_string(), "2".to_string()]);
    ok(&run(
        &sc.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    ));
    assert!(
        std::fs::read(&c).unwrap() == ba,
        "sharded samples in batches of 2 differ from single-process samples"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn killed_rank_fails_the_job_and_the_checkpoint_resumes_on_one_rank() {
    let dir = scratch("fault");
    let cfg = dir.join("cfg.toml");
    let cfg = cfg.to_str().unwrap();
    let run_dir = dir.join("run");
    let rd = run_dir.to_str().unwrap();
    let mut launch = vec!["launch", "--nproc", "2", "--timeout", "20", "--"];
    launch.extend(train_args(rd, cfg, "training.steps=10"));
    // Rank 1 dies at step 6: the last checkpoint is step 4.
    let started = std::time::Instant::now();
    let out = run(&launch, &[("TWEEDIE_FAULT_EXIT_AT", "1:6")]);
    let secs = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("rank 1 of 2 failed"), "{err}");
    assert!(
        err.contains("rank 0 of 2:") && err.contains("failed"),
        "rank 0 must say why: {err}"
    );
    assert!(secs < 60.0, "took {secs} s");
    // The last checkpoint is intact and resumes on one rank.
    let state =
        tweedie_train::checkpoint::read_state(&run_dir.join("train_state.safetensors")).unwrap();
    assert_eq!(state.step, 4);
    ok(&run(&["train", "--resume", rd, "--quiet"], &[]));
    let state =
        tweedie_train::checkpoint::read_state(&run_dir.join("train_state.safetensors")).unwrap();
    assert_eq!(state.step, 10);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ranks_with_different_configs_refuse_to_train() {
    let dir = scratch("mismatch");
    let cfg = dir.join("cfg.toml");
    // Rank 1 gets another learning rate through an environment-selected config file.
    let other = dir.join("other.toml");
    std::fs::write(&other, CONFIG.replace("lr = 2e-3", "lr = 1e-3")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let spawn = |rank: &str, cfg: &Path| {
        let mut cmd = Command::new(TWEEDIE);
        cmd.args([
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            dir.join("run").to_str().unwrap(),
            "--quiet",
            "--set",
            "training.steps=2",
        ])
        .env("RANK", rank)
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", &port)
        .env("TWEEDIE_DIST_TIMEOUT", "30")
        .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let (a, b) = (spawn("0", &cfg), spawn("1", &other));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("config and code version differs across ranks"),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
