//! `tweedie likelihood --method vlb`: the variational bound of an iDDPM checkpoint's discrete
//! chain (`tweedie::samplers::variational_bound`, formula there) in bits/dim, with the learned
//! variance when the network has one (else β̃). With `--levels L` the data are integer levels,
//! the chain starts at their centres and the decoder is the discretised Gaussian: the bound is
//! on −log P of the discrete data. Without, the decoder is the Gaussian density: a bound on
//! −log p(x₀) of continuous data.

use anyhow::{bail, Context, Result};
use ndarray::{s, Array1, Array2};
use tweedie::core::likelihood::{bits_per_dim, Dequantizer};
use tweedie::core::space::TchTensor;
use tweedie::nets::Wrapper;
use tweedie::samplers::variational_bound::{BoundTerms, Decoder, VariationalBound};
use tweedie::samplers::Model;

use super::likelihood::{for_batches, load_net, progress_bar, std_error, write_outputs, Args};

/// K + 1 levels u_{j_i}, j_i = round(i·M/K), of an M-step grid u_0 > … > u_M = 0: the whole grid
/// for K = M, always u_0 and u_M.
fn sub_grid(u: &[f64], k: usize) -> Vec<f64> {
    let m = u.len() - 1;
    (0..=k)
        .map(|i| u[((i * m) as f64 / k as f64).round() as usize])
        .collect()
}

/// Refuses the ODE's flags: they would be silently ignored.
fn refuse_ode_flags(args: &Args) -> Result<()> {
    for (flag, given) in [
        ("--divergence", args.divergence.is_some()),
        ("--probes", args.probes.is_some()),
        ("--sigma-min", args.sigma_min.is_some()),
        ("--sigma-max", args.sigma_max.is_some()),
    ] {
        if given {
            bail!("{flag} applies to --method ode; the variational bound has no such parameter");
        }
    }
    Ok(())
}

pub fn run(args: &Args, x: Array2<f64>) -> Result<()> {
    refuse_ode_flags(args)?;
    if !super::model::is_checkpoint(&args.model) {
        bail!(
            "--method vlb: --model {} is a mixture; the variational bound is that of a trained \
             iDDPM checkpoint's discrete chain (.safetensors): use --method ode",
            args.model
        );
    }
    let dim = x.ncols();
    let (y, decoder) = match args.levels {
        None => {
            if x.iter().any(|v| !v.is_finite()) {
                bail!("{}: non-finite values", args.data.display());
            }
            (x, Decoder::Continuous)
        }
        Some(levels) => {
            let q = Dequantizer::new(levels).context("--levels")?;
            let mut y = x;
            for (i, row) in y.rows_mut().into_iter().enumerate() {
                for v in row {
                    q.check_level(*v)
                        .with_context(|| format!("{} row {i}", args.data.display()))?;
                    // The bin centre: the value the model was trained on.
                    *v = q.dequantize(*v, 0.5);
                }
            }
            (y, Decoder::Discretized(q))
        }
    };
    let net = load_net(args, dim)?;
    let u = match &net.config.wrapper {
        Wrapper::Precond(p) => p.u_grid(),
        Wrapper::Param(_) => None,
    }
    .with_context(|| {
        format!(
            "--method vlb: {} is not an iDDPM model (no discrete u-grid to define the chain); \
             use --method ode",
            args.model
        )
    })?;
    let m = u.len() - 1;
    let k = args.steps.unwrap_or(m);
    if k == 0 || k > m {
        bail!("--steps {k}: the chain has 1 … {m} steps (the model's u-grid has {m})");
    }
    let bound = VariationalBound {
        grid: sub_grid(&u, k),
        decoder,
        seed: args.seed,
        first_index: 0,
    };
    let started = std::time::Instant::now();
    let pb = progress_bar(y.nrows().div_ceil(args.batch) * k, args.quiet);
    let batches = for_batches(y.nrows(), args.batch, &pb, |start, end, on_step| {
        let mut b = bound.clone();
        b.first_index = start as u64;
        let m: &dyn Model<TchTensor> = &net.model;
        let rows = net.rows_to_state(&y.slice(s![start..end, ..]).to_owned());
        Ok(b.run_with_progress(m, &rows, on_step)?)
    })?;
    let mut all: Option<BoundTerms> = None;
    for t in batches {
        all = Some(match all {
            None => t,
            Some(mut a) => {
                a.prior.extend(t.prior);
                a.diffusion.extend(t.diffusion);
                a.decoder.extend(t.decoder);
                a.nfe += t.nfe;
                a
            }
        });
    }
    let terms = all.context("no data points")?;
    let total = Array1::from(terms.total());
    let logp = total.mapv(|l| -l);
    let bpd = logp.mapv(|l| bits_per_dim(l, dim));
    let bpd_path = write_outputs(&args.out, &logp, &bpd)?;
    let n = total.len() as f64;
    let mean_bpd = |v: &[f64]| v.iter().sum::<f64>() / n / (dim as f64 * std::f64::consts::LN_2);
    println!(
        "{} points, D = {dim}, {k} chain steps of the {m}-step u-grid, {} evaluations, {:.1} s{}",
        total.len(),
        terms.nfe,
        started.elapsed().as_secs_f64(),
        if terms.learned_variance {
            ""
        } else {
            "; no learned variance: σ² = β̃"
        }
    );
    println!(
        "variational bound {:.4} ± {:.4} bits/dim (± standard error over points; {}): prior {:.4}, \
         diffusion {:.4}, decoder {:.4}",
        bpd.sum() / n,
        std_error(&bpd),
        match decoder {
            Decoder::Discretized(_) => "−log P of the levels, discretised decoder",
            Decoder::Continuous => "−log p of the density, Gaussian decoder",
        },
        mean_bpd(&terms.prior),
        mean_bpd(&terms.diffusion),
        mean_bpd(&terms.decoder),
    );
    println!("wrote {} and {}", args.out.display(), bpd_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_grids_keep_both_ends_and_the_whole_grid() {
        let u = [9.0, 7.0, 5.0, 3.0, 1.0, 0.0];
        assert_eq!(sub_grid(&u, 5), u.to_vec());
        assert_eq!(sub_grid(&u, 1), vec![9.0, 0.0]);
        // j = round(0, 2.5, 5) = 0, 3 (ties away from zero), 5.
        assert_eq!(sub_grid(&u, 2), vec![9.0, 3.0, 0.0]);
    }
}
