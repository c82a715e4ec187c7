//! Classifier guidance on the digits, measured: for each scale s, `n` samples of each class
//! 0–9 from an unconditional checkpoint guided by a classifier of `tweedie train-classifier`;
//! the project's evaluation classifier's accuracy on them (predicted = requested class) and
//! the Fréchet distance of all of them to the held-out digits in its feature space; a PNG
//! grid per s (row k = class k).
//!
//! cargo run --example classifier_guidance -- MODEL CLASSIFIER OUT_DIR [n per class] [scales…]

use std::path::PathBuf;

use anyhow::{Context, Result};
use ndarray::Array2;
use tch::{Device, Kind, Tensor};
use tweedie::core::process::Edm;
use tweedie::core::space::TchTensor;
use tweedie::core::{Timer, TimerKind};
use tweedie::nets::{load_checkpoint, load_classifier, NetClassifier, NetModel};
use tweedie::samplers::{ClassifierGuided, Init, Sampler, SamplerKind, State};
use tweedie::train::classifier::{default_cache_path, frechet, Classifier};
use tweedie::train::data::{digits, DataConfig};
use tweedie::train::plot::write_image_grid;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, clf, out, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: classifier_guidance MODEL CLASSIFIER OUT_DIR [n] [scales…]");
    };
    let n: usize = rest.first().map_or(Ok(50), |v| v.parse()).context("n")?;
    let scales: Vec<f64> = if rest.len() > 1 {
        rest[1..]
            .iter()
            .map(|v| v.parse())
            .collect::<Result<_, _>>()?
    } else {
        vec![0.0, 1.0, 2.0, 4.0, 8.0]
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    let data = DataConfig::Digits { path: None }.load()?;
    let eval = Classifier::cached(&data.train, &default_cache_path(&digits::default_path()?))?;
    let f_ho = eval.features(data.held_out.x.view())?;
    let loaded = load_checkpoint(std::path::Path::new(model), Device::Cpu)?;
    let net = NetModel::new(loaded.denoiser, 0);
    let classifier =
        NetClassifier::new(load_classifier(std::path::Path::new(clf), Device::Cpu)?.classifier);
    let edm = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let grid = TimerKind::edm().grid(&edm, 18)?;
    println!("| s | accuracy (eval. classifier) | Fréchet distance to held-out |");
    println!("|---:|---:|---:|");
    for &s in &scales {
        let mut rows: Vec<f32> = Vec::new();
        let mut hits = 0usize;
        for k in 0..10 {
            let guided = ClassifierGuided::new(&net, &classifier, k, s)?;
            let x = tch::no_grad(|| {
                Sampler::new(&edm, grid.clone(), SamplerKind::Heun, &guided)?
                    .seed(0)
                    .first_index((k * n) as u64)
                    .run(
                        Init::Noise(TchTensor(Tensor::zeros(
                            [n as i64, 1, 8, 8],
                            (Kind::Float, Device::Cpu),
                        ))),
                        None,
                    )
            })?
            .samples
            .to_rows();
            let xf = x.mapv(|v| v as f32);
            hits += eval
                .predict(xf.view())?
                .iter()
                .filter(|&&p| p == k as i64)
                .count();
            rows.extend(xf.iter());
        }
        let x = Array2::from_shape_vec((10 * n, 64), rows)?;
        let fd = frechet(&eval.features(x.view())?, &f_ho)?;
        println!(
            "| {s} | {:.1} % | {fd:.2} |",
            100.0 * hits as f64 / (10 * n) as f64
        );
        // Grid: the first 10 samples of each class, one class per row.
        let pick: Vec<usize> = (0..10)
            .flat_map(|k| (0..10).map(move |i| k * n + i))
            .collect();
        let g = x.select(ndarray::Axis(0), &pick);
        write_image_grid(&out.join(format!("guided-s{s}.png")), g.view(), &[1, 8, 8])?;
    }
    Ok(())
}
