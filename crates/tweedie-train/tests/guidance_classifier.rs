//! `tweedie train-classifier`'s loop: a run interrupted and resumed gives the same weights,
//! metrics and checkpoint as one run straight through, bit for bit on CPU; a resume with
//! another config is refused by key.

use std::collections::BTreeMap;

use tch::Device;
use tweedie_train::guidance_classifier::{
    files, train_classifier, ClassifierOptions, ClassifierTrainConfig,
};
use tweedie_train::TrainError;

fn cfg(sets: &[&str]) -> ClassifierTrainConfig {
    let text =
        "[diffusion]\ntype = \"EDM\"\n[network]\nmodel_channels = 8\nattn_resolutions = []\n\
                [training]\nbatch_size = 16\nsteps = 6\ncheckpoint_every = 2\nlog_every = 1\n\
                device = \"cpu\"\n[eval]\nsigmas = [0.5, 2.0]\n";
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    ClassifierTrainConfig::from_toml_str(text, &sets).unwrap()
}

fn weights(dir: &std::path::Path) -> BTreeMap<String, Vec<f32>> {
    let c = tweedie_nets::load_classifier(&dir.join(files::CLASSIFIER), Device::Cpu).unwrap();
    c.vs.variables()
        .into_iter()
        .map(|(n, t)| (n, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()))
        .collect()
}

#[test]
fn resumed_classifier_training_equals_one_run_and_a_changed_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let opts = |dir: &std::path::Path| ClassifierOptions {
        run_dir: dir.to_path_buf(),
        quiet: true,
        ..Default::default()
    };
    let c = cfg(&[]);
    let whole = train_classifier(&c, &opts(&a)).unwrap();
    assert_eq!(whole.steps, 6);
    assert_eq!(whole.held_out_accuracy.len(), 2);
    let e = train_classifier(
        &c,
        &ClassifierOptions {
            interrupt_at: Some(3),
            ..opts(&b)
        },
    )
    .unwrap_err();
    assert!(matches!(e, TrainError::Interrupted { step: 3, .. }), "{e}");
    // Another learning rate is another run.
    let e = train_classifier(
        &cfg(&["training.lr=0.5"]),
        &ClassifierOptions {
            resume: true,
            ..opts(&b)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("training.lr") && e.contains("0.5"), "{e}");
    let resumed = train_classifier(
        &c,
        &ClassifierOptions {
            resume: true,
            ..opts(&b)
        },
    )
    .unwrap();
    assert_eq!(weights(&a), weights(&b));
    assert_eq!(whole.held_out_accuracy, resumed.held_out_accuracy);
    let metrics = |d: &std::path::Path| std::fs::read_to_string(d.join(files::METRICS)).unwrap();
    let losses = |d: &std::path::Path| -> Vec<String> {
        metrics(d)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {}", v["step"], v["loss"])
            })
            .collect()
    };
    assert_eq!(losses(&a).len(), 6);
    assert_eq!(losses(&a), losses(&b));
    let meta = tweedie_nets::load_classifier(&a.join(files::CLASSIFIER), Device::Cpu)
        .unwrap()
        .extra;
    assert_eq!(meta.get("tweedie.data").map(String::as_str), Some("digits"));
    assert_eq!(
        meta.get("tweedie.train.step").map(String::as_str),
        Some("6")
    );
    assert!(a.join(files::EVAL).is_file() && a.join(files::CONFIG).is_file());
}
