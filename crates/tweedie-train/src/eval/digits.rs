//! Digits: the project classifier's accuracy, and the Fréchet distance in its feature space
//! next to the real-data floor.

use std::fmt::Write as _;

use ndarray::Array2;
use serde_json::{json, Value};

use crate::classifier::{default_cache_path, frechet, Classifier};
use crate::config::TrainConfig;
use crate::data::{Data, DataConfig};
use crate::error::Result;

pub(super) fn eval_digits(
    cfg: &TrainConfig,
    x: &Array2<f32>,
    labels: Option<&[i64]>,
    data: &Data,
    md: &mut String,
    head: &mut Vec<String>,
) -> Result<Value> {
    let digits_path = match &cfg.data {
        DataConfig::Digits { path: Some(p) } => p.clone(),
        _ => crate::data::digits::default_path()?,
    };
    let clf = Classifier::cached(&data.train, &default_cache_path(&digits_path))?;
    let acc = clf.accuracy(&data.held_out)?;
    let f_gen = clf.features(x.view())?;
    let f_ho = clf.features(data.held_out.x.view())?;
    let m = x.nrows().min(data.train.len());
    let f_tr = clf.features(data.train.x.slice(ndarray::s![..m, ..]))?;
    let fd = frechet(&f_gen, &f_ho)?;
    let fd_ref = frechet(&f_tr, &f_ho)?;
    let pred = clf.predict(x.view())?;
    let mut hist = [0usize; 10];
    for &p in &pred {
        if (0..10).contains(&p) {
            hist[p as usize] += 1;
        }
    }
    let cond_acc = labels
        .map(|l| pred.iter().zip(l).filter(|(a, b)| a == b).count() as f64 / l.len().max(1) as f64);
    let _ = writeln!(md, "### Digits: classifier features\n");
    let _ = writeln!(
        md,
        "Classifier (64→256→64→10 MLP trained by the project on the {} training digits): held-out accuracy **{:.1} %**.\n",
        data.train.len(),
        100.0 * acc
    );
    let _ = writeln!(
        md,
        "| Fréchet distance in classifier feature space | value |"
    );
    let _ = writeln!(md, "|---|---|");
    let _ = writeln!(
        md,
        "| generated ({} samples) vs held-out ({}) | **{fd:.3}** |",
        x.nrows(),
        data.held_out.len()
    );
    let _ = writeln!(
        md,
        "| real training digits ({m}) vs held-out (floor) | {fd_ref:.3} |"
    );
    let _ = writeln!(
        md,
        "\nPredicted classes of the generated digits: {hist:?}\n"
    );
    if let Some(c) = cond_acc {
        let _ = writeln!(
            md,
            "Class-conditional samples classified as their requested class: {:.1} %\n",
            100.0 * c
        );
    }
    head.push(format!("digits: classifier accuracy {:.1} %, Fréchet distance {fd:.3} (real-data floor {fd_ref:.3})", 100.0 * acc));
    Ok(
        json!({"classifier_accuracy": acc, "frechet": fd, "frechet_real_floor": fd_ref, "predicted_class_counts": hist,
        "conditional_accuracy": cond_acc}),
    )
}
