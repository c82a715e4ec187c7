//! Fault soak of `tweedie train`: SIGKILL at random moments (early in a run, between steps,
//! inside checkpoint writes), resume, and end bit-identical to an uninterrupted run on the
//! CPU; and Ctrl-C (SIGINT) stops with exit code 130 before the evaluation.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tweedie_train::checkpoint::{read_state, STATE_FILE};
use tweedie_train::trainer::files;

const STEPS: u64 = 300;

/// A 2-D moons MLP that checkpoints every 3 steps, so kills often land inside a checkpoint write.
fn write_config(dir: &Path, steps: u64, skip_eval: bool) -> PathBuf {
    let text = format!(
        r#"
[diffusion]
type = "EDM"
[data]
type = "moons"
n = 256
held_out = 64
[network]
preset = "mlp-small"
dropout = 0.1
[training]
steps = {steps}
batch_size = 32
lr = 2e-3
warmup_steps = 5
checkpoint_every = 3
sample_every = 0
log_every = 10
device = "cpu"
[sampling]
steps = 4
sampler = "euler"
grid = 16
[eval]
skip = {skip_eval}
n_samples = 256
"#
    );
    let path = dir.join(format!("soak-{steps}.toml"));
    if let Err(e) = std::fs::write(&path, text) {
        panic!("writing {}: {e}", path.display());
    }
    path
}

fn tweedie() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tweedie"));
    // One thread: the same reductions in the same order, as the bit-identity claim needs.
    c.env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

fn train_cmd(config: &Path, dir: &Path, resume: bool) -> Command {
    let mut c = tweedie();
    c.arg("train").arg("--quiet");
    if resume {
        c.arg("--resume").arg(dir);
    } else {
        c.arg("--config").arg(config).arg("--out").arg(dir);
    }
    c
}

/// Deterministic uniform draws in [0, 1) (SplitMix64), so a failing soak can be replayed.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn logged_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join(files::METRICS))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .get("step")?
                .as_u64()
        })
        .collect()
}

fn state_step(dir: &Path) -> Option<u64> {
    read_state(&dir.join(STATE_FILE)).ok().map(|s| s.step)
}

#[test]
fn random_kills_then_resume_end_bit_identical_to_one_uninterrupted_run() {
    let root = match tempfile::tempdir() {
        Ok(r) => r,
        Err(e) => panic!("tempdir: {e}"),
    };
    let config = write_config(root.path(), STEPS, true);

    // The uninterrupted reference, timed: the kills are spread over its training time.
    let reference = root.path().join("reference");
    let t0 = Instant::now();
    let status = train_cmd(&config, &reference, false).status();
    let total = t0.elapsed().as_secs_f64();
    assert!(matches!(status, Ok(s) if s.success()), "{status:?}");
    let train_s = std::fs::read_to_string(reference.join(files::METRICS))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .get("elapsed_s")?
                .as_f64()
        })
        .next_back()
        .unwrap_or(total);
    let startup = (total - train_s).max(0.0);

    let dir = root.path().join("soak");
    let mut draws = Draws(0x50A6);
    // Kill 1 lands early in the first run (start-up or first steps); kills 2–8 once the
    // run has checkpointed past a random step, plus up to 100 ms (a step or two, often inside
    // a checkpoint write). Aiming at steps, not at times, keeps the count of kills exact on a
    // loaded machine, where a step's duration varies several-fold.
    let mut targets: Vec<u64> = (0..7)
        .map(|_| 10 + (draws.next() * (STEPS - 40) as f64) as u64)
        .collect();
    targets.sort_unstable();
    let mut killed_at = Vec::new();
    for kill in 0..=8 {
        let resume = dir.join(STATE_FILE).exists();
        if !resume && dir.exists() {
            // Killed before its first checkpoint: nothing to resume; the run starts afresh.
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                panic!("removing {}: {e}", dir.display());
            }
        }
        let mut cmd = train_cmd(&config, &dir, resume);
        if kill == 8 {
            let status = cmd.stderr(Stdio::inherit()).status();
            assert!(
                matches!(status, Ok(s) if s.success()),
                "last run: {status:?}"
            );
            break;
        }
        let mut child = match cmd.stderr(Stdio::null()).spawn() {
            Ok(c) => c,
            Err(e) => panic!("spawn: {e}"),
        };
        if kill == 0 {
            std::thread::sleep(Duration::from_secs_f64(draws.next() * 0.8 * startup));
        } else {
            let target = targets[kill - 1];
            let t0 = Instant::now();
            while state_step(&dir).is_none_or(|s| s < target) {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("run exited with {status:?} before step {target}");
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(300),
                    "step {target} not reached in 300 s"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_secs_f64(draws.next() * 0.1));
        }
        // SIGKILL: no handler runs, whatever the process was doing is cut short.
        if let Err(e) = child.kill() {
            panic!("kill: {e}");
        }
        let _ = child.wait();
        killed_at.push(state_step(&dir));
    }
    println!(
        "soak: 8 kills, checkpoints after each {killed_at:?}, startup {startup:.2} s, training {train_s:.2} s"
    );
    // Kills after distinct checkpoints inside the run (so the comparison below is not between
    // two runs that were never interrupted).
    let mid_run: std::collections::BTreeSet<u64> = killed_at
        .iter()
        .flatten()
        .copied()
        .filter(|&s| s > 0 && s < STEPS)
        .collect();
    assert!(
        mid_run.len() >= 5,
        "kills did not land during training: checkpoints {killed_at:?}"
    );

    // Weights, EMA and Adam moments: bit for bit.
    let (a, b) = match (
        read_state(&reference.join(STATE_FILE)),
        read_state(&dir.join(STATE_FILE)),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => panic!("states: {:?} / {:?}", a.err(), b.err()),
    };
    assert_eq!((a.step, b.step), (STEPS, STEPS));
    assert_eq!(a.tensors.len(), b.tensors.len());
    assert!(a.tensors.len() > 10);
    for (k, t) in &a.tensors {
        match b.tensors.get(k) {
            Some(u) => assert!(t.equal(u), "tensor {k} differs after the soak"),
            None => panic!("tensor {k} missing after the soak"),
        }
    }
    // The sampling checkpoint (EMA weights) too, and each logged step exactly once, in order.
    let load =
        |d: &Path| match tweedie_nets::load_checkpoint(&d.join(files::MODEL), tch::Device::Cpu) {
            Ok(m) => m.vs.variables(),
            Err(e) => panic!("{}: {e}", d.display()),
        };
    let (ma, mb) = (load(&reference), load(&dir));
    assert_eq!(ma.len(), mb.len());
    for (k, t) in &ma {
        assert!(
            mb.get(k).is_some_and(|u| t.equal(u)),
            "model tensor {k} differs"
        );
    }
    assert_eq!(logged_steps(&dir), logged_steps(&reference));
    assert_eq!(logged_steps(&dir).len(), (STEPS / 10) as usize);
}

/// Ctrl-C saves the checkpoint and stops with exit code 130 without evaluating (it used to
/// print "stopping", evaluate and exit 0 or 1).
#[cfg(unix)]
#[test]
fn ctrl_c_saves_and_exits_130_without_evaluation() {
    let root = match tempfile::tempdir() {
        Ok(r) => r,
        Err(e) => panic!("tempdir: {e}"),
    };
    let config = write_config(root.path(), 1_000_000, false);
    let dir = root.path().join("run");
    let child = match train_cmd(&config, &dir, false)
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("spawn: {e}"),
    };
    // Wait for the first checkpoint (step 0), then some training.
    let t0 = Instant::now();
    while state_step(&dir).is_none_or(|s| s < 6) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint after 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    assert!(matches!(sent, Ok(s) if s.success()), "kill -INT: {sent:?}");
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("wait: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted at step") && stderr.contains("no evaluation"),
        "{stderr}"
    );
    assert!(
        !dir.join(files::REPORT).exists(),
        "evaluation ran after Ctrl-C"
    );
    let step = state_step(&dir);
    assert!(step.is_some_and(|s| s >= 6), "checkpoint at {step:?}");
}

/// Ctrl-C while the evaluation after training samples: it stops at the next batch, exits 130
/// and says so; the training state and the model stay as training left them, no report.
#[test]
fn ctrl_c_during_evaluation_stops_promptly_with_130_and_keeps_the_checkpoint() {
    use std::io::{BufRead, BufReader};
    let root = match tempfile::tempdir() {
        Ok(r) => r,
        Err(e) => panic!("tempdir: {e}"),
    };
    // Two training steps, then an evaluation of 400,000 samples by 63-NFE Heun in batches
    // of 500: about a minute of sampling, so the signal lands inside it.
    let text = std::fs::read_to_string(write_config(root.path(), 2, false))
        .unwrap_or_default()
        .replace(
            "steps = 4\nsampler = \"euler\"",
            "steps = 32\nsampler = \"heun\"",
        )
        .replace("n_samples = 256", "n_samples = 400000\nbatch_size = 500");
    let config = root.path().join("long-eval.toml");
    if let Err(e) = std::fs::write(&config, text) {
        panic!("writing {}: {e}", config.display());
    }
    let dir = root.path().join("run");
    let mut child = match train_cmd(&config, &dir, false)
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("spawn: {e}"),
    };
    let Some(stderr) = child.stderr.take() else {
        panic!("no stderr")
    };
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Training ends with "trained 2 steps …"; give the evaluation 3 s to load and start.
    let mut lines = Vec::new();
    let t0 = Instant::now();
    while !lines.iter().any(|l: &String| l.starts_with("trained ")) {
        assert!(t0.elapsed() < Duration::from_secs(180), "{lines:?}");
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let sent = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    assert!(matches!(sent, Ok(s) if s.success()), "kill -INT: {sent:?}");
    let stop = Instant::now();
    let status = match child.wait() {
        Ok(s) => s,
        Err(e) => panic!("wait: {e}"),
    };
    let stopped_in = stop.elapsed();
    let _ = reader.join();
    lines.extend(rx.try_iter());
    let text = lines.join("\n");
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(
        text.contains("interrupted after training") && text.contains("evaluation stopped"),
        "{text}"
    );
    // One batch of 500 (63 NFE of a small MLP) is well under a second; allow for a loaded
    // machine, but not for the minute the whole evaluation takes.
    assert!(
        stopped_in < Duration::from_secs(20),
        "stopped after {stopped_in:?}"
    );
    assert!(!dir.join(files::REPORT).exists(), "a report after Ctrl-C");
    assert!(!dir.join(files::EVAL).exists(), "eval.json after Ctrl-C");
    assert!(dir.join(files::MODEL).is_file(), "the model is kept");
    assert_eq!(state_step(&dir), Some(2));
}
