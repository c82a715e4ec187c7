//! The training loop: Adam with warm-up and clipping, EMA, checkpoints every N steps and on
//! Ctrl-C, exact resume, progress bar, metrics.jsonl, loss plot, sample grids, report.
//!
//! Every random draw of step k is keyed by (seed, k) or (seed, sample index): batches come
//! from per-epoch permutations keyed by (seed, epoch), noise levels, noise and label dropout
//! by (seed, sample index), dropout by a torch seed set from (seed, k). Nothing depends on the total
//! step count, so N steps in one go and N/2 + resume + N/2 give bit-identical weights on CPU.

mod batches;
mod labels;
mod metrics;
mod model;
mod options;
mod sampling;
mod setup;
mod step;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tweedie_nets::Ema;

use crate::interrupt::INTERRUPTED;
pub use crate::interrupt::{
    check_stop, install_ctrlc_handler, stop_requested, stopped_after_training, take_interrupt,
};
pub use batches::{BatchSampler, STREAM_PERM};
pub use labels::{batch_labels, dropped_labels, STREAM_LABEL_DROP};
pub use metrics::read_loss_history;
pub(crate) use metrics::truncate_metrics;
use metrics::write_config;
pub use model::{fit_network_to_data, model_config};
pub use options::{default_run_dir, TrainOptions, TrainOutcome};
use sampling::sync_sampling_copy;
pub use sampling::{grid_labels, held_out_conditions, write_samples, Sampling};
use setup::{prepare, Loaded};
pub(crate) use step::torch_step_seed;
use step::{train_step, Live};
pub use step::{STREAM_AUG, STREAM_DEQUANTIZE};

use crate::checkpoint::{restore, save_state, STATE_FILE};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::optim::Adam;
use crate::parallel::{code_version, dist_err, DataParallel, Sync};
use crate::sample::generate;

/// File names inside a run directory (they live with the run directory's other rules).
pub use crate::rundir::files;

/// Runs `f` holding the process-wide lock on libtorch's global generator (re-entrant): weight
/// initialisation and dropout draw from it, so two runs in one process (parallel tests, a
/// classifier trained beside a model) would otherwise interleave their draws and lose
/// reproducibility.
pub use tweedie_nets::with_torch_rng;

/// Trains per `cfg` in `opts.run_dir`, then writes the EMA model, plots and (unless
/// `eval.skip`) the evaluation report. On resume `cfg` must equal the run's config and the data
/// the run's data (bar `training.steps` and what `opts.allow` accepts; see [`crate::resume`]).
/// Nothing in the run directory but its lock file is written before every check has passed;
/// the lock is held until the returned outcome (and every clone of it) is dropped.
pub fn train(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainOutcome> {
    train_parallel(cfg, opts, None)
}

/// [`train`] as one rank of a data-parallel job (`dp`; `None`: a single process). Rank r
/// computes its B/N rows of each global batch; gradients are averaged over ranks; rank 0
/// alone writes. The ranks check first that they run the same config and code.
pub fn train_parallel(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    dp: Option<&DataParallel>,
) -> Result<TrainOutcome> {
    let writer = dp.is_none_or(|d| d.rank() == 0);
    if let Some(d) = dp {
        let text = format!("{}\n{}", cfg.to_toml()?, code_version());
        d.pg.check_same(
            "config and code version",
            tweedie_dist::fnv1a64(text.as_bytes()),
        )
        .map_err(dist_err)?;
    }
    let setup = prepare(cfg, opts, dp, writer);
    let (data, mcfg, loss, device, resumed, rows, claim, fingerprint) = match dp {
        Some(d) => d.agree("set-up", setup)?,
        None => setup?,
    };
    let (run_dir, lock) = match claim {
        Some((dir, lock)) => (dir, Some(lock)),
        None => (opts.run_dir.clone(), None),
    };
    if lock.is_some() {
        for p in crate::rundir::remove_stale_temp_files(&run_dir) {
            eprintln!("removed {}, left by a writer that was killed", p.display());
        }
    }
    let state_path = run_dir.join(STATE_FILE);
    let config_text = cfg.to_toml()?;
    train_loop(
        cfg,
        opts,
        dp,
        writer,
        Loaded {
            data,
            mcfg,
            loss,
            device,
            resumed,
            rows,
            state_path,
            config_text,
            fingerprint,
            run_dir,
            lock,
        },
    )
}
fn train_loop(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    dp: Option<&DataParallel>,
    writer: bool,
    loaded: Loaded,
) -> Result<TrainOutcome> {
    let Loaded {
        data,
        mcfg,
        loss,
        device,
        resumed,
        rows,
        state_path,
        config_text,
        fingerprint,
        run_dir,
        lock,
    } = loaded;
    let run_dir = &run_dir;
    let (vs, den) = with_torch_rng(|| {
        tch::manual_seed(torch_step_seed(cfg.training.seed, u64::MAX));
        mcfg.build(device)
    })
    .map_err(|e| TrainError::Other(format!("model: {e}")))?;
    let ema = Ema::new(&vs, cfg.training.ema.clone())
        .map_err(|e| TrainError::Other(format!("EMA: {e}")))?;
    let t = &cfg.training;
    let adam = Adam::new(&vs, t.adam());
    let params = vs.trainable_variables();
    let mut live = Live {
        params,
        vs,
        den,
        ema,
        adam,
    };
    if let Some(st) = &resumed {
        restore(&state_path, st, &live.vs, &mut live.ema, &mut live.adam)?;
    }
    // Every check has passed (the restore's too): the run directory may be written now.
    if writer {
        write_config(run_dir, cfg)?;
    }
    let start = match &resumed {
        Some(st) => {
            if writer {
                truncate_metrics(&run_dir.join(files::METRICS), st.step)?;
            }
            st.step
        }
        None => {
            // A fresh run starts a fresh metrics file.
            if writer {
                crate::plot::atomic_write(&run_dir.join(files::METRICS), b"")?;
            }
            0
        }
    };
    // After restoring: the reducer broadcasts rank 0's parameters to all ranks.
    let mut sync = Sync::new(dp, &live.params)?;
    let sampling = Sampling::new(cfg, &mcfg, device)?;
    let samples_dir = run_dir.join(files::SAMPLES_DIR);
    if t.sample_every > 0 && writer {
        std::fs::create_dir_all(&samples_dir).map_err(|e| TrainError::io(&samples_dir, e))?;
    }

    let mut sampler = BatchSampler::new(data.train.len(), t.seed);
    let pb = if opts.quiet || !writer {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(t.steps)
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {per_sec} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_position(start);
    let mut metrics = if writer {
        Some(
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(run_dir.join(files::METRICS))
                .map_err(|e| TrainError::io(run_dir.join(files::METRICS), e))?,
        )
    } else {
        None
    };
    let mut last_good = start;
    let save = |live: &Live, step: u64| -> Result<()> {
        if !writer {
            return Ok(());
        }
        save_state(
            &state_path,
            &live.vs,
            &live.ema,
            &live.adam,
            step,
            &config_text,
            &fingerprint,
        )
    };
    if resumed.is_none() {
        // A fresh run has a checkpoint from the start, so "the last good checkpoint" always exists.
        save(&live, 0)?;
    }
    let began = Instant::now();
    let (mut acc, mut acc_n, mut last_loss) = (0.0f64, 0u64, None);
    let mut last_log = Instant::now();
    let die_at = crate::parallel::fault_injection(dp);
    for k in start..t.steps {
        if die_at == Some(k) {
            // Test hook (TWEEDIE_FAULT_EXIT_AT): this rank dies abruptly, as a killed one would.
            std::process::exit(86);
        }
        let stop = INTERRUPTED.load(Ordering::SeqCst) || opts.interrupt_at == Some(k);
        // Under data parallelism the ranks decide together (inside the step's loss
        // all-reduce) so that all stop at the same step.
        let step_result = if stop && dp.is_none() {
            Ok(None)
        } else {
            train_step(
                &mut live,
                &loss,
                &data.train,
                &mut sampler,
                cfg,
                k,
                device,
                last_good,
                &mut sync,
                rows.clone(),
                stop,
                data.levels.filter(|_| t.dequantize),
            )
        };
        let (lv, gn) = match step_result {
            Ok(Some(v)) => v,
            Ok(None) => {
                INTERRUPTED.store(false, Ordering::SeqCst);
                pb.abandon();
                save(&live, k)?;
                return Err(TrainError::Interrupted {
                    step: k,
                    run_dir: run_dir.clone(),
                });
            }
            Err(e) => {
                pb.abandon();
                return Err(e);
            }
        };
        acc += lv;
        acc_n += 1;
        let step = k + 1;
        if step % t.log_every == 0 || step == t.steps {
            let mean_loss = acc / acc_n as f64;
            last_loss = Some(mean_loss);
            let dt = last_log.elapsed().as_secs_f64();
            let line = serde_json::json!({
                "step": step,
                "loss": mean_loss,
                "lr": t.adam().lr_at(k),
                "grad_norm": gn,
                "steps_per_s": acc_n as f64 / dt.max(1e-9),
                "elapsed_s": began.elapsed().as_secs_f64(),
            });
            if let Some(m) = metrics.as_mut() {
                writeln!(m, "{line}")
                    .map_err(|e| TrainError::io(run_dir.join(files::METRICS), e))?;
            }
            pb.set_message(format!("loss {mean_loss:.4}"));
            acc = 0.0;
            acc_n = 0;
            last_log = Instant::now();
        }
        if step % t.checkpoint_every == 0 || step == t.steps {
            save(&live, step)?;
            last_good = step;
        }
        if writer && t.sample_every > 0 && step % t.sample_every == 0 && step != t.steps {
            sync_sampling_copy(&live, &sampling)?;
            let p = samples_dir.join(format!("step-{step:07}.png"));
            if let Err(e) = write_samples(&p, &sampling, cfg, &data) {
                pb.println(format!("warning: sample grid at step {step}: {e}"));
            }
        }
        pb.inc(1);
    }
    // Ctrl-C during the last step (single process; ranks decide inside the loop): its
    // checkpoint is written; stop before the final outputs.
    if dp.is_none() && (INTERRUPTED.load(Ordering::SeqCst) || opts.interrupt_at == Some(t.steps)) {
        INTERRUPTED.store(false, Ordering::SeqCst);
        pb.abandon();
        save(&live, t.steps)?;
        return Err(TrainError::Interrupted {
            step: t.steps,
            run_dir: run_dir.clone(),
        });
    }
    pb.finish();
    let train_seconds = began.elapsed().as_secs_f64();
    let done = t.steps.saturating_sub(start);
    if let Some(d) = dp {
        // The invariant data parallelism rests on, checked: identical weights everywhere.
        d.pg.check_same(
            "parameters and EMA after training",
            crate::parallel::weights_hash(&live.vs, &live.ema),
        )
        .map_err(dist_err)?;
    }
    if !writer {
        // Rank 0 writes the model, plots and samples.
        return Ok(TrainOutcome {
            run_dir: run_dir.clone(),
            lock: None,
            steps: t.steps,
            last_loss,
            train_seconds,
            steps_per_second: done as f64 / train_seconds.max(1e-9),
        });
    }
    // Final outputs: the EMA model as a tweedie-nets checkpoint, plots, samples.
    sync_sampling_copy(&live, &sampling)?;
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("tweedie.train.step".to_string(), t.steps.to_string());
    extra.insert("tweedie.data".to_string(), data.name.clone());
    extra.insert(
        "tweedie.formulation".to_string(),
        cfg.diffusion.kind().name().to_string(),
    );
    if mcfg.net.label_dim() > 0 {
        // What `tweedie sample --cfg` checks: was the null label trained?
        extra.insert(
            tweedie_nets::META_LABEL_DROPOUT.to_string(),
            t.label_dropout.to_string(),
        );
    }
    if let Some(meta) = &data.netcdf {
        let json = serde_json::to_string(meta)
            .map_err(|e| TrainError::Other(format!("NetCDF metadata: {e}")))?;
        extra.insert(crate::data::netcdf::META_KEY.to_string(), json);
    }
    tweedie_nets::save_checkpoint(&run_dir.join(files::MODEL), &sampling.ema_vs, &mcfg, &extra)
        .map_err(|e| TrainError::Other(format!("writing the model: {e}")))?;
    let (steps, losses) = read_loss_history(run_dir);
    if let Err(e) = crate::plot::write_loss_plot(&run_dir.join(files::LOSS_PLOT), &steps, &losses) {
        eprintln!("warning: loss plot: {e}");
    }
    // Ctrl-C from here on: the state and the model are saved; say so and stop.
    let stopped = stopped_after_training(run_dir);
    write_samples(&run_dir.join(files::SAMPLES), &sampling, cfg, &data).map_err(&stopped)?;
    if let Some(meta) = &data.netcdf {
        // The grid's samples again (same seeds), in physical units with the data's names.
        let n = cfg.sampling.grid;
        let plan = sampling.plan(cfg, &data.train.shape, n.min(cfg.eval.batch_size))?;
        let conditions = sampling::held_out_conditions(cfg, &data, n)?;
        let (x, _) =
            generate(&sampling.model, &plan, 0, n, None, conditions.as_ref()).map_err(&stopped)?;
        crate::data::netcdf::write_samples(&run_dir.join(files::SAMPLES_NC), x.view(), meta)?;
    }
    Ok(TrainOutcome {
        run_dir: run_dir.clone(),
        lock: lock.map(std::sync::Arc::new),
        steps: t.steps,
        last_loss,
        train_seconds,
        steps_per_second: done as f64 / train_seconds.max(1e-9),
    })
}
