//! `cargo xtask bench-dist` (`tweedie-bench bench-dist`): what data parallelism costs and gains
//! on this machine, with the trainer's own pieces (EDM loss with the keyed per-sample noise, a
//! tweedie-nets U-Net, tweedie-train's Adam and EMA) and tweedie-dist's Gloo process group.
//!
//! Each run starts its ranks as processes of this binary on 127.0.0.1 (as `tweedie launch`
//! does), one libtorch thread each unless told otherwise, and times every phase of each step:
//!
//! - forward: draw the shard's noise, zero the gradients, the loss forward;
//! - loss all-reduce: the one small all-reduce of [loss, stop] the trainer makes every step;
//! - backward: with DDP's reducer this includes the bucket all-reduces launched from autograd
//!   hooks, overlapped with the rest of backward, and the wait for the last of them;
//! - gradient all-reduce: `flat` only, one all-reduce of every gradient after backward;
//! - Adam + EMA.
//!
//! The runs compared, with the same global batch (N ranks × B/N = 1 rank × B):
//! 1 rank; 2 ranks without any collective (compute only, not a valid training: it gives the
//! backward time without communication under the same load); 2 ranks with the reducer at each
//! bucket size; 2 ranks with one flat all-reduce. Communication of the reducer is what it adds
//! to backward over the compute-only run; that of `flat` is the time inside its all-reduce. The
//! runs are repeated in rounds, interleaved, so that all see the same changes of machine load,
//! and every figure is a median over all timed steps of all ranks and rounds.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use tweedie_dist::{Backend, DistEnv, ProcessGroup, Reducer, DEFAULT_FIRST_BUCKET_BYTES};
use tweedie_nets::{count_params, Ema, EmaSchedule, ModelConfig, NetConfig};
use tweedie_train::optim::{Adam, AdamConfig};
use tweedie_train::parallel::shard_rows;
use tweedie_train::{DiffusionConfig, FormulationKind, Loss};

/// Options of `tweedie-bench bench-dist`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// U-Net preset (`tweedie nets list`); `ddpmpp-small` is DDPM++ at 32×32×3 with 1.2 M parameters.
    #[arg(long, default_value = "ddpmpp-small")]
    pub preset: String,
    /// Global batch, split over the ranks.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Timed steps per run and round.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Untimed steps at the start of every run (the reducer rebuilds its buckets after the first).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Repetitions of the whole set of runs, interleaved.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Ranks of the data-parallel runs.
    #[arg(long, default_value_t = 2)]
    pub ranks: usize,
    /// Reducer bucket caps to compare, MiB (DDP's default 25 first).
    #[arg(long, value_delimiter = ',', default_value = "25,1")]
    pub bucket_mb: Vec<f64>,
    /// libtorch threads per rank (torchrun's and `tweedie launch`'s default: 1).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Also write the Markdown table to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// How a run averages gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    /// No collective at all (compute only).
    None,
    /// DDP's `c10d::Reducer`, buckets all-reduced during backward.
    Reducer,
    /// One all-reduce of every gradient after backward.
    Flat,
}

/// Options of one rank (`tweedie-bench bench-dist-rank`, started by `bench-dist`).
#[derive(Debug, Clone, clap::Args)]
pub struct RankArgs {
    #[arg(long)]
    pub preset: String,
    /// Global batch.
    #[arg(long)]
    pub batch: usize,
    #[arg(long)]
    pub steps: usize,
    #[arg(long)]
    pub warmup: usize,
    #[arg(long, value_enum)]
    pub sync: SyncMode,
    #[arg(long, default_value_t = 25.0)]
    pub bucket_mb: f64,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Milliseconds of each phase of every timed step of one rank.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Phases {
    forward: Vec<f64>,
    loss_allreduce: Vec<f64>,
    backward: Vec<f64>,
    grad_allreduce: Vec<f64>,
    optimizer: Vec<f64>,
    step: Vec<f64>,
}

impl Phases {
    fn extend(&mut self, o: Phases) {
        self.forward.extend(o.forward);
        self.loss_allreduce.extend(o.loss_allreduce);
        self.backward.extend(o.backward);
        self.grad_allreduce.extend(o.grad_allreduce);
        self.optimizer.extend(o.optimizer);
        self.step.extend(o.step);
    }
}

/// The trainer's Adam at EDM's CIFAR-10 settings (timing does not depend on the values).
const ADAM: AdamConfig = AdamConfig {
    lr: 1e-3,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    warmup_steps: 0,
    grad_clip: Some(1.0),
};
const SEED: u64 = 0;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// One rank: set up as the trainer does, run the steps, print the phases as one JSON line.
pub fn rank(a: RankArgs) -> Result<()> {
    tch::set_num_threads(i32::try_from(a.threads.max(1)).unwrap_or(1));
    let pg = match DistEnv::from_env()? {
        Some(env) => Some(ProcessGroup::new(&env, Backend::Gloo)?),
        None => None,
    };
    let (rank, world) = pg
        .as_ref()
        .map_or((0, 1), |pg| (pg.rank(), pg.world_size()));
    let rows = shard_rows(a.batch, rank, world)?;
    let loss = Loss::new(DiffusionConfig::new(FormulationKind::Edm).resolve()?)?;
    let mcfg = ModelConfig {
        net: NetConfig::preset(&a.preset)?,
        wrapper: loss.formulation().wrapper.clone(),
        conditioning: None,
    };
    tch::manual_seed(0);
    let (vs, den) = mcfg.build(Device::Cpu)?;
    let mut ema = Ema::new(&vs, EmaSchedule::edm_default())?;
    let mut adam = Adam::new(&vs, ADAM);
    let params = vs.trainable_variables();
    let mut shape = vec![rows.len() as i64];
    shape.extend(mcfg.net.sample_shape());
    let dim = shape[1..].iter().product::<i64>() as usize;
    let n = rows.len();
    // Data: fixed noise images standing for the shard's batch (timing does not depend on them).
    let x0 = Loss::draw_noise(SEED + 1, rows.start as u64, n, dim).view(shape.as_slice());

    let group = |mode: SyncMode| pg.as_ref().filter(|_| a.sync == mode);
    let mut reducer = match group(SyncMode::Reducer) {
        Some(pg) => {
            let bytes = (a.bucket_mb * 1024.0 * 1024.0) as i64;
            Some(Reducer::new(
                pg,
                &params,
                bytes,
                DEFAULT_FIRST_BUCKET_BYTES.min(bytes),
            )?)
        }
        None => None,
    };
    if let Some(pg) = group(SyncMode::Flat) {
        pg.broadcast_tensors(&params, 0)?;
    }
    let any = pg.as_ref().filter(|_| a.sync != SyncMode::None);

    let mut ph = Phases::default();
    let b = a.batch as u64;
    for k in 0..(a.warmup + a.steps) as u64 {
        let t_step = Instant::now();
        let t = Instant::now();
        let first = k * b + rows.start as u64;
        let levels = loss.draw_levels(SEED, first, n);
        let eps = Loss::draw_noise(SEED, first, n, dim);
        adam.zero_grad();
        if let Some(r) = reducer.as_mut() {
            r.prepare_forward()?;
        }
        let l = loss
            .per_sample(
                |x, s| {
                    den.forward(x, s, None, None, true)
                        .map_err(|e| tweedie_train::TrainError::Other(e.to_string()))
                },
                &x0,
                &eps,
                &levels,
            )?
            .mean(Kind::Float);
        let lv = l.double_value(&[]);
        let forward = ms(t);

        let t = Instant::now();
        if let Some(pg) = any {
            let mut v = Tensor::from_slice(&[lv, 0.0]);
            pg.all_reduce_sum(&mut v)?;
        }
        let loss_allreduce = ms(t);

        let t = Instant::now();
        if let Some(r) = reducer.as_mut() {
            r.prepare_backward()?;
        }
        l.f_backward().context("backward")?;
        let backward = ms(t);

        let t = Instant::now();
        if let Some(pg) = group(SyncMode::Flat) {
            let grads: Vec<Tensor> = params
                .iter()
                .map(Tensor::grad)
                .filter(Tensor::defined)
                .collect();
            pg.all_reduce_mean_tensors(&grads)?;
        }
        let grad_allreduce = ms(t);

        let t = Instant::now();
        adam.step(k);
        ema.update(&vs, k * b, a.batch)?;
        let optimizer = ms(t);

        if k >= a.warmup as u64 {
            ph.forward.push(forward);
            ph.loss_allreduce.push(loss_allreduce);
            ph.backward.push(backward);
            ph.grad_allreduce.push(grad_allreduce);
            ph.optimizer.push(optimizer);
            ph.step.push(ms(t_step));
        }
    }
    println!("{}", serde_json::to_string(&ph)?);
    Ok(())
}

/// One configuration of the comparison.
struct Run {
    label: String,
    ranks: usize,
    sync: SyncMode,
    bucket_mb: f64,
}

fn runs(a: &Args) -> Vec<Run> {
    let mut v = vec![
        Run {
            label: "1 rank".into(),
            ranks: 1,
            sync: SyncMode::None,
            bucket_mb: 0.0,
        },
        Run {
            label: "no gradient averaging (compute only)".into(),
            ranks: a.ranks,
            sync: SyncMode::None,
            bucket_mb: 0.0,
        },
    ];
    for &mb in &a.bucket_mb {
        v.push(Run {
            label: format!("DDP reducer, {mb} MiB buckets"),
            ranks: a.ranks,
            sync: SyncMode::Reducer,
            bucket_mb: mb,
        });
    }
    v.push(Run {
        label: "one flat all-reduce after backward".into(),
        ranks: a.ranks,
        sync: SyncMode::Flat,
        bucket_mb: 0.0,
    });
    v
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("no free port on 127.0.0.1")?
        .port())
}

/// Starts the run's ranks and returns each rank's phases.
fn launch(a: &Args, run: &Run) -> Result<Vec<Phases>> {
    let exe = std::env::current_exe().context("cannot find the tweedie-bench executable")?;
    let port = free_port()?.to_string();
    let mut children = Vec::new();
    for rank in 0..run.ranks {
        let mut cmd = Command::new(&exe);
        cmd.arg("bench-dist-rank")
            .args(["--preset", &a.preset])
            .args(["--batch", &a.batch.to_string()])
            .args(["--steps", &a.steps.to_string()])
            .args(["--warmup", &a.warmup.to_string()])
            .args(["--bucket-mb", &run.bucket_mb.max(1.0).to_string()])
            .args(["--threads", &a.threads.to_string()])
            .arg("--sync")
            .arg(match run.sync {
                SyncMode::None => "none",
                SyncMode::Reducer => "reducer",
                SyncMode::Flat => "flat",
            })
            .env("OMP_NUM_THREADS", a.threads.to_string())
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
            .stdout(Stdio::piped());
        if run.ranks > 1 {
            cmd.env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", run.ranks.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("TWEEDIE_DIST_TIMEOUT", "120");
        } else {
            for v in [
                "RANK",
                "LOCAL_RANK",
                "WORLD_SIZE",
                "MASTER_ADDR",
                "MASTER_PORT",
            ] {
                cmd.env_remove(v);
            }
        }
        children.push(
            cmd.spawn()
                .with_context(|| format!("cannot start rank {rank}"))?,
        );
    }
    let mut out = Vec::new();
    for (rank, child) in children.into_iter().enumerate() {
        let o = child.wait_with_output()?;
        if !o.status.success() {
            bail!(
                "{}: rank {rank} of {} failed ({}); its message is above",
                run.label,
                run.ranks,
                o.status
            );
        }
        let text = String::from_utf8_lossy(&o.stdout);
        let line = text.lines().last().unwrap_or_default();
        out.push(
            serde_json::from_str(line)
                .with_context(|| format!("{}: rank {rank} printed {line:?}", run.label))?,
        );
    }
    Ok(out)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// 1-, 5- and 15-minute load averages and the number of cores, as `uptime` reports them.
fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("load average {avg} on {cores} cores")
}

/// The medians of one run, and the derived figures.
struct Summary {
    step: f64,
    forward: f64,
    loss_ar: f64,
    backward: f64,
    grad_ar: f64,
    optimizer: f64,
}

impl Summary {
    fn of(p: &Phases) -> Self {
        Self {
            step: median(&p.step),
            forward: median(&p.forward),
            loss_ar: median(&p.loss_allreduce),
            backward: median(&p.backward),
            grad_ar: median(&p.grad_allreduce),
            optimizer: median(&p.optimizer),
        }
    }
}

/// Time spent communicating in one step: the collectives' own time, plus for the reducer what
/// it adds to backward over the compute-only run (`compute_backward`).
fn communication(sync: SyncMode, s: &Summary, compute_backward: f64) -> f64 {
    match sync {
        SyncMode::None => 0.0,
        SyncMode::Flat => s.loss_ar + s.grad_ar,
        SyncMode::Reducer => s.loss_ar + (s.backward - compute_backward).max(0.0),
    }
}

fn table(a: &Args, runs: &[Run], sums: &[Summary]) -> String {
    let base = sums[0].step;
    let compute_backward = sums[1].backward;
    let mut s = String::from(
        "| run | ranks × batch | step ms | forward | loss all-reduce | backward | gradient all-reduce | Adam + EMA | communication ms (share) | speed-up |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (run, m) in runs.iter().zip(sums) {
        let comm = communication(run.sync, m, compute_backward);
        let _ = writeln!(
            s,
            "| {} | {} × {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} | {:.0} | {:.1} ({:.1} %) | {:.2} |",
            run.label,
            run.ranks,
            a.batch / run.ranks,
            m.step,
            m.forward,
            m.loss_ar,
            m.backward,
            m.grad_ar,
            m.optimizer,
            comm,
            100.0 * comm / m.step,
            base / m.step
        );
    }
    s
}

pub fn run(a: Args) -> Result<()> {
    if a.ranks < 2 || !a.batch.is_multiple_of(a.ranks) || a.steps == 0 || a.rounds == 0 {
        bail!(
            "need --ranks ≥ 2 dividing --batch ({} / {}), and --steps, --rounds ≥ 1",
            a.batch,
            a.ranks
        );
    }
    if a.bucket_mb.iter().any(|&m| !(m.is_finite() && m > 0.0)) {
        bail!("--bucket-mb {:?}: need positive sizes", a.bucket_mb);
    }
    let cfg = NetConfig::preset(&a.preset)?;
    let n_params = count_params(&cfg)?.parameters;
    let started = Instant::now();
    let load_before = load();
    println!(
        "bench-dist: {} ({n_params} parameters, {:.1} MB of f32 gradients), global batch {}, \
         {} threads per rank, {} rounds × ({} warm-up + {} timed steps); {load_before}",
        a.preset,
        n_params as f64 * 4.0 / 1e6,
        a.batch,
        a.threads,
        a.rounds,
        a.warmup,
        a.steps
    );
    let runs = runs(&a);
    let mut pooled: Vec<Phases> = vec![Phases::default(); runs.len()];
    for round in 0..a.rounds {
        for (run, pool) in runs.iter().zip(pooled.iter_mut()) {
            let t = Instant::now();
            for p in launch(&a, run)? {
                pool.extend(p);
            }
            println!(
                "  round {}/{}: {} ({:.1} s)",
                round + 1,
                a.rounds,
                run.label,
                t.elapsed().as_secs_f64()
            );
        }
    }
    let sums: Vec<Summary> = pooled.iter().map(Summary::of).collect();
    let text = format!(
        "{}\nMedians over all timed steps of all ranks and rounds. Before: {load_before}; after: {}; {:.0} s in all.\n",
        table(&a, &runs, &sums),
        load(),
        started.elapsed().as_secs_f64()
    );
    println!("\n{text}");
    if let Some(path) = &a.out {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn communication_of_each_mode() {
        let s = Summary {
            step: 100.0,
            forward: 30.0,
            loss_ar: 1.0,
            backward: 60.0,
            grad_ar: 5.0,
            optimizer: 4.0,
        };
        assert_eq!(communication(SyncMode::None, &s, 50.0), 0.0);
        assert_eq!(communication(SyncMode::Flat, &s, 50.0), 6.0);
        // The reducer's all-reduces hide inside backward: 60 − 50 ms exposed, plus the loss.
        assert_eq!(communication(SyncMode::Reducer, &s, 50.0), 11.0);
        // Faster than the compute-only backward (noise): nothing exposed, never negative.
        assert_eq!(communication(SyncMode::Reducer, &s, 70.0), 1.0);
    }
}
