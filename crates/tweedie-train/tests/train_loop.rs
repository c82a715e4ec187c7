//! End-to-end tests of the training loop on a tiny MLP and the moons toy (seconds each).

use std::collections::HashMap;
use std::path::Path;

use tch::Tensor;
use tweedie_train::checkpoint::{read_state, META_CONFIG, STATE_FILE};
use tweedie_train::trainer::files;
use tweedie_train::{train, TrainConfig, TrainError, TrainOptions};

fn config(steps: u64, extra: &[&str]) -> TrainConfig {
    config_data(
        steps,
        "[data]\ntype = \"moons\"\nn = 256\nheld_out = 64\n",
        extra,
    )
}

/// The test config with another `[data]` section.
fn config_data(steps: u64, data: &str, extra: &[&str]) -> TrainConfig {
    let base = r#"
[diffusion]
type = "EDM"
DATA
[network]
preset = "mlp-small"
dropout = 0.1
[training]
batch_size = 32
lr = 2e-3
warmup_steps = 5
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
    let mut sets: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    sets.push(format!("training.steps={steps}"));
    match TrainConfig::from_toml_str(&base.replace("DATA", data), &sets) {
        Ok(c) => c,
        Err(e) => panic!("test config: {e}"),
    }
}

fn opts(dir: &Path, resume: bool) -> TrainOptions {
    TrainOptions {
        run_dir: dir.to_path_buf(),
        resume,
        quiet: true,
        ..TrainOptions::default()
    }
}

fn state(dir: &Path) -> HashMap<String, Tensor> {
    match read_state(&dir.join(STATE_FILE)) {
        Ok(s) => s.tensors,
        Err(e) => panic!("read state: {e}"),
    }
}

fn assert_bit_identical(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    assert!(a.len() > 10, "state has {} tensors", a.len());
    for (k, t) in a {
        let u = b.get(k).unwrap_or_else(|| panic!("missing {k}"));
        assert!(t.equal(u), "tensor {k} differs");
    }
}

#[test]
fn resume_and_ctrl_c_are_bit_identical_to_one_go() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let (a, b, c) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("c"),
    );
    let full = config(12, &[]);
    let out = train(&full, &opts(&a, false))?;
    assert_eq!(out.steps, 12);
    for f in [
        files::CONFIG,
        files::MODEL,
        files::METRICS,
        files::LOSS_PLOT,
        files::SAMPLES,
        STATE_FILE,
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    // 6 steps, then resume to 12.
    train(&config(6, &[]), &opts(&b, false))?;
    train(&full, &opts(&b, true))?;
    assert_bit_identical(&state(&a), &state(&b));
    assert!(out.last_loss.is_some_and(f64::is_finite));
    // Resuming a finished run trains nothing and says so (no loss), leaving the state alone.
    let again = train(&full, &opts(&b, true))?;
    assert_eq!((again.steps, again.last_loss), (12, None));
    assert_bit_identical(&state(&a), &state(&b));
    // Ctrl-C after 7 steps (checkpoint at 7), then resume.
    let mut o = opts(&c, false);
    o.interrupt_at = Some(7);
    match train(&full, &o) {
        Err(TrainError::Interrupted { step: 7, .. }) => {}
        other => panic!("expected an interruption at step 7, got {other:?}"),
    }
    train(&full, &opts(&c, true))?;
    assert_bit_identical(&state(&a), &state(&c));
    // metrics.jsonl has each logged step once, in order, after the resume.
    let steps: Vec<u64> = std::fs::read_to_string(c.join(files::METRICS))
        .map_err(|e| TrainError::io("metrics", e))?
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .get("step")?
                .as_u64()
        })
        .collect();
    assert_eq!(steps, vec![2, 4, 6, 8, 10, 12]);
    // A different seed gives different weights (the comparison above can fail).
    let d = root.path().join("d");
    train(&config(12, &["training.seed=1"]), &opts(&d, false))?;
    let (sa, sd) = (state(&a), state(&d));
    assert!(sa.iter().any(|(k, t)| !t.equal(&sd[k])));
    Ok(())
}

/// Label dropout on conditional moons: its draws are keyed per sample, so 4 steps, a resume
/// and 4 more equal 8 in one go bit for bit; it changes training (rate 0 gives other weights); and
/// each model records its rate, which `tweedie sample --cfg` reads.
#[test]
fn label_dropout_resumes_bit_for_bit_and_is_recorded_in_the_model() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let (a, b, z) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("z"),
    );
    let cond = |steps, rate: &str| {
        config(
            steps,
            &[
                "training.conditional=true",
                &format!("training.label_dropout={rate}"),
            ],
        )
    };
    train(&cond(8, "0.5"), &opts(&a, false))?;
    train(&cond(4, "0.5"), &opts(&b, false))?;
    train(&cond(8, "0.5"), &opts(&b, true))?;
    assert_bit_identical(&state(&a), &state(&b));
    train(&cond(8, "0"), &opts(&z, false))?;
    let (sa, sz) = (state(&a), state(&z));
    assert!(sa.iter().any(|(k, t)| !t.equal(&sz[k])));
    for (dir, want) in [(&a, 0.5), (&z, 0.0)] {
        let model = dir.join(files::MODEL);
        let (config, extra) =
            tweedie_nets::read_config(&model).map_err(|e| TrainError::Other(e.to_string()))?;
        let rate = tweedie_nets::trained_label_dropout(&model, &config, &extra)
            .map_err(|e| TrainError::Other(e.to_string()))?;
        assert_eq!(rate, want, "{}", dir.display());
    }
    Ok(())
}

/// `text` (a saved config) without its `[training] label_dropout` line, as a run made before
/// the key existed wrote it.
fn without_training_label_dropout(text: &str) -> String {
    let (mut section, mut removed) = ("", 0);
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t;
        }
        if section == "[training]" && t.starts_with("label_dropout") {
            removed += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_eq!(removed, 1, "{text}");
    out
}

/// Makes the run in `dir` look as if it were made before `training.label_dropout` existed:
/// the key is removed from its `config.toml` and from the config its training state keeps.
fn forget_label_dropout(dir: &Path) {
    let config = dir.join(files::CONFIG);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, without_training_label_dropout(&text)).unwrap();
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut info = meta.metadata().clone().unwrap();
    let saved = info.get(META_CONFIG).unwrap().clone();
    info.insert(META_CONFIG.into(), without_training_label_dropout(&saved));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let out = safetensors::serialize(st.tensors(), &Some(info)).unwrap();
    std::fs::write(&path, out).unwrap();
}

/// A conditional run made before `training.label_dropout` existed trained without dropout and
/// saved its config without the key. Resumed from its own config it continues at rate 0, bit
/// for bit with an uninterrupted rate-0 run; a config that means today's default 0.1 is
/// refused naming the key (it used to be accepted silently, the comparison reading the default
/// on both sides, and training went on at 0.1).
#[test]
fn a_conditional_run_older_than_label_dropout_resumes_without_dropout() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let old = |steps| {
        config(
            steps,
            &["training.conditional=true", "training.label_dropout=0"],
        )
    };
    train(&old(8), &opts(&a, false))?;
    train(&old(4), &opts(&b, false))?;
    forget_label_dropout(&b);
    let steps = ["training.steps=8".to_string()];
    let today = TrainConfig::from_file(&b.join(files::CONFIG), &steps)?;
    assert_eq!(today.training.label_dropout, 0.1);
    let e = match train(&today, &opts(&b, true)) {
        Ok(_) => panic!("a resume at label dropout 0.1 of a run trained at 0 was accepted"),
        Err(e) => e,
    };
    let TrainError::ResumeMismatch { differences, .. } = &e else {
        panic!("expected a resume mismatch, got {e}");
    };
    assert_eq!(
        differences,
        &vec![(
            "training.label_dropout".to_string(),
            "0.0".to_string(),
            "0.1".to_string()
        )]
    );
    let resumed = TrainConfig::from_run_file(&b.join(files::CONFIG), &steps)?;
    assert_eq!(resumed.training.label_dropout, 0.0);
    train(&resumed, &opts(&b, true))?;
    assert_bit_identical(&state(&a), &state(&b));
    Ok(())
}

/// Image-conditioned training (`[conditioning]`, downscale ×4) on 8×8 fields: the condition
/// of each sample is its own 2×2 block averages, so training resumes bit for bit; the model
/// records the conditioning and takes one extra input channel; its denoiser needs a condition
/// of the right size; a factor that does not divide the grid or a network without the
/// condition's channels is refused naming the key.
#[test]
fn downscale_conditioning_trains_resumes_bit_for_bit_and_is_recorded() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let data = "[data]\ntype = \"fields\"\nsize = 8\nn = 64\nheld_out = 16\n";
    let cfg = |steps, extra: &[&str]| {
        let mut sets = vec![
            "network.preset=ddpmpp-tiny",
            "network.model_channels=16",
            "training.batch_size=8",
            "sampling.grid=4",
            "conditioning.kind=downscale",
            "conditioning.factor=4",
        ];
        sets.extend_from_slice(extra);
        config_data(steps, data, &sets)
    };
    train(&cfg(6, &[]), &opts(&a, false))?;
    train(&cfg(3, &[]), &opts(&b, false))?;
    train(&cfg(6, &[]), &opts(&b, true))?;
    assert_bit_identical(&state(&a), &state(&b));
    assert!(a.join(files::SAMPLES).is_file());

    let model = a.join(files::MODEL);
    let loaded = tweedie_nets::load_checkpoint(&model, tch::Device::Cpu)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    let want = tweedie_nets::Conditioning {
        kind: tweedie_nets::ConditioningKind::Downscale,
        factor: 4,
    };
    assert_eq!(loaded.config.conditioning, Some(want.clone()));
    assert_eq!(loaded.config.net.cond_channels(), 1);
    assert_eq!(loaded.config.net.sample_shape(), vec![1, 8, 8]);
    let den = &loaded.denoiser;
    let x = Tensor::zeros([2, 1, 8, 8], (tch::Kind::Float, tch::Device::Cpu));
    let sigma = Tensor::from(1.0);
    let low = want
        .low_res(&x)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    assert_eq!(low.size(), vec![2, 1, 2, 2]);
    let (d, _) = den
        .forward_conditioned(&x, &sigma, None, None, Some(&low), false)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    assert_eq!(d.size(), vec![2, 1, 8, 8]);
    let missing = den
        .forward(&x, &sigma, None, None, false)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("low-resolution"), "{missing}");
    let wrong = Tensor::zeros([2, 1, 4, 4], (tch::Kind::Float, tch::Device::Cpu));
    let e = den
        .forward_conditioned(&x, &sigma, None, None, Some(&wrong), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[2, 1, 2, 2]") && e.contains("[2, 1, 4, 4]"),
        "{e}"
    );

    // Refusals, before anything is written.
    let c = root.path().join("c");
    let e = train(&cfg(2, &["conditioning.factor=3"]), &opts(&c, false))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("conditioning.factor") && e.contains("8×8"),
        "{e}"
    );
    assert!(!c.exists());
    let e = TrainConfig::from_toml_str(
        "[diffusion]\ntype = \"EDM\"\n[conditioning]\nkind = \"downscale\"\nfactor = 4\nfoo = 1\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("[conditioning]") && e.contains("foo"), "{e}");
    for (set, key) in [
        ("conditioning.kind=upscale", "kind"),
        ("conditioning.factor=1", "conditioning.factor"),
        ("network.preset=mlp-small", "conditioning"),
    ] {
        let e = TrainConfig::from_toml_str(
            "[diffusion]\ntype = \"EDM\"\n[conditioning]\nkind = \"downscale\"\nfactor = 4\n",
            &[set.to_string()],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(key), "{set}: {e}");
    }
    Ok(())
}

/// The saved model is the EMA copy; its fixed buffers (here random Fourier frequencies) must be
/// the trained network's, not those of a separately initialised copy.
#[test]
fn the_saved_model_keeps_the_trained_networks_fourier_frequencies() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let dir = root.path().join("f");
    train(
        &config(2, &["network.embedding=\"fourier\""]),
        &opts(&dir, false),
    )?;
    let live = state(&dir);
    let (name, trained) = live
        .iter()
        .find(|(k, _)| k.ends_with("map_noise.freqs") && !k.starts_with("ema."))
        .unwrap_or_else(|| panic!("no Fourier frequencies in {:?}", live.keys()));
    let saved = tweedie_nets::load_checkpoint(&dir.join(files::MODEL), tch::Device::Cpu)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    let vars = saved.vs.variables();
    let (_, freqs) = vars
        .iter()
        .find(|(k, _)| k.ends_with("map_noise.freqs"))
        .unwrap_or_else(|| panic!("no Fourier frequencies in the saved model"));
    assert!(freqs.equal(trained), "{name} differs in model.safetensors");
    Ok(())
}

#[test]
fn training_reduces_the_loss() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let dir = root.path().join("r");
    // The mixture toy is far from the N(0, σ_d²) that an untrained EDM denoiser assumes.
    let sets = [
        "training.log_every=50",
        "network.dropout=0.0",
        "data.type=mixture",
        "data.preset=gmm2d",
    ];
    train(&config(300, &sets), &opts(&dir, false))?;
    let (_, losses) = tweedie_train::trainer::read_loss_history(&dir);
    assert_eq!(losses.len(), 6);
    assert!(losses[5] < 0.8 * losses[0], "loss did not fall: {losses:?}");
    eprintln!("losses {losses:?}");
    Ok(())
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let dir = root.path().join("nan");
    let cfg = config(
        40,
        &[
            "training.lr=1e30",
            "training.warmup_steps=0",
            "training.checkpoint_every=1",
        ],
    );
    let e = train(&cfg, &opts(&dir, false)).unwrap_err();
    let TrainError::NonFinite {
        step, last_good, ..
    } = e
    else {
        panic!("expected a non-finite loss, got {e}")
    };
    assert_eq!(last_good, step - 1);
    assert!(e.to_string().contains("last good checkpoint"), "{e}");
    // The kept state is the good one: it reads back (finite tensors) at step last_good.
    let st = read_state(&dir.join(STATE_FILE))?;
    assert_eq!(st.step, last_good);
    // Divergence on the very first step still leaves the initial checkpoint.
    let dir0 = root.path().join("nan0");
    let cfg0 = config(
        4,
        &[
            "training.lr=1e30",
            "training.warmup_steps=0",
            "training.checkpoint_every=10",
        ],
    );
    let e = train(&cfg0, &opts(&dir0, false)).unwrap_err();
    assert!(
        matches!(e, TrainError::NonFinite { last_good: 0, .. }),
        "{e}"
    );
    assert_eq!(read_state(&dir0.join(STATE_FILE))?.step, 0);
    Ok(())
}

#[test]
fn bad_run_directories_and_corrupt_states_are_clear_errors() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let dir = root.path().join("run");
    let cfg = config(4, &[]);
    train(&cfg, &opts(&dir, false))?;
    // A second fresh run into the same folder refuses to overwrite it.
    let e = train(&cfg, &opts(&dir, false)).unwrap_err().to_string();
    assert!(e.contains("not empty") && e.contains("--resume"), "{e}");
    // Resuming a folder that is not a run.
    let e = train(&cfg, &opts(&root.path().join("nothing"), true))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nothing") && e.contains("not a run directory"),
        "{e}"
    );
    // Resuming at the end without raising steps.
    train(&config(4, &[]), &opts(&dir, true))?;
    let e = train(&config(3, &[]), &opts(&dir, true))
        .unwrap_err()
        .to_string();
    assert!(e.contains("training.steps") && e.contains("step 4"), "{e}");
    // A resume with another network is refused before anything is written, naming the key.
    let e = train(&config(8, &["network.hidden=32"]), &opts(&dir, true))
        .unwrap_err()
        .to_string();
    assert!(e.contains("network.hidden: 64 → 32"), "{e}");
    // Even when the change is allowed, weights of one network do not load into another.
    let mut o = opts(&dir, true);
    o.allow.any = true;
    let e = train(&config(8, &["network.hidden=32"]), &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("different network"), "{e}");
    // A truncated state: clear error naming the file, and nothing else in the folder changes.
    let sp = dir.join(STATE_FILE);
    let bytes = std::fs::read(&sp).map_err(|e| TrainError::io(&sp, e))?;
    std::fs::write(&sp, &bytes[..bytes.len() / 2]).map_err(|e| TrainError::io(&sp, e))?;
    let before: Vec<(String, Vec<u8>)> = [files::CONFIG, files::METRICS, files::MODEL]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read(dir.join(f)).unwrap_or_default(),
            )
        })
        .collect();
    let e = train(&config(8, &[]), &opts(&dir, true))
        .unwrap_err()
        .to_string();
    assert!(e.contains(STATE_FILE) && e.contains("corrupt"), "{e}");
    for (f, b) in before {
        assert_eq!(
            std::fs::read(dir.join(&f)).unwrap_or_default(),
            b,
            "{f} changed"
        );
    }
    assert_eq!(
        std::fs::read(&sp)
            .map_err(|e| TrainError::io(&sp, e))?
            .len(),
        bytes.len() / 2
    );
    // A folder already in use (here `config.toml` is a folder in the way) is not written into.
    let blocked = root.path().join("blocked");
    std::fs::create_dir_all(blocked.join(files::CONFIG))
        .map_err(|e| TrainError::io(&blocked, e))?;
    let e = train(&cfg, &opts(&blocked, false)).unwrap_err().to_string();
    assert!(
        e.contains("not empty") && e.contains("blocked") && e.contains(files::CONFIG),
        "{e}"
    );
    Ok(())
}

#[cfg(unix)]
#[test]
fn a_read_only_run_directory_is_a_clear_error() -> Result<(), TrainError> {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let dir = root.path().join("ro");
    std::fs::create_dir(&dir).map_err(|e| TrainError::io(&dir, e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555))
        .map_err(|e| TrainError::io(&dir, e))?;
    if std::fs::write(dir.join("probe"), b"x").is_ok() {
        println!("skipped: running as a user who can write to read-only folders (root)");
        return Ok(());
    }
    let e = train(&config(4, &[]), &opts(&dir, false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not writable"), "{e}");
    Ok(())
}

#[test]
fn every_preset_in_configs_parses_validates_and_fits_its_data() -> Result<(), TrainError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| TrainError::io(&dir, e))? {
        let p = entry.map_err(|e| TrainError::io(&dir, e))?.path();
        if p.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        // Classifier presets (`*-classifier.toml`) are the other config kind
        // (`tweedie train-classifier`): they parse, validate and load their data as one.
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem.ends_with("-classifier") {
            let cfg =
                tweedie_train::guidance_classifier::ClassifierTrainConfig::from_file(&p, &[])?;
            cfg.data.load()?;
            continue;
        }
        let cfg = TrainConfig::from_file(&p, &[])?;
        let data = cfg.data.load()?;
        tweedie_train::trainer::model_config(&cfg, &data)
            .map_err(|e| TrainError::Other(format!("{}: {e}", p.display())))?;
        seen.insert((cfg.data.name(), cfg.diffusion.kind().name()));
    }
    // One preset per formulation for the toy, the digits and the fields.
    for d in ["mixture-gmm2d", "digits", "fields"] {
        for f in ["EDM", "VP", "VE", "iDDPM", "flow", "eps", "v"] {
            assert!(
                seen.contains(&(d.to_string(), f)),
                "no preset for {f} on {d}"
            );
        }
    }
    Ok(())
}

/// The presets are one base per data set plus a file with what differs (`extends`); these
/// values were recorded from the stand-alone files they replaced (which loaded to the same
/// configs, field for field), so a base edit that changes a preset shows here.
#[test]
fn presets_built_on_bases_keep_their_recorded_values() -> Result<(), TrainError> {
    use tweedie_core::ProcessKind;
    use tweedie_nets::{EmaSchedule, NetConfig};
    use tweedie_samplers::SamplerKind;
    use tweedie_train::data::{DataConfig, GridSize};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let load = |name: &str| TrainConfig::from_file(&dir.join(name), &[]);

    let c = load("toy-vp.toml")?;
    let f = c.formulation()?;
    assert_eq!(
        f.process,
        ProcessKind::Vp {
            beta_min: 0.1,
            beta_d: 19.9,
            eps_t: 1e-5
        }
    );
    let spec = c.sampling.spec()?;
    assert_eq!(
        (spec.kind, spec.steps, c.sampling.grid),
        (SamplerKind::Heun, 32, 2000)
    );
    assert_eq!(
        c.data,
        DataConfig::Mixture {
            preset: "gmm2d".into(),
            n: 8192,
            held_out: 2048,
            seed: 0
        }
    );
    assert!(matches!(c.network, NetConfig::Mlp(_)));
    let t = &c.training;
    assert_eq!(
        (
            t.batch_size,
            t.lr,
            t.warmup_steps,
            t.steps,
            t.checkpoint_every,
            t.log_every
        ),
        (256, 2e-3, 100, 4000, 1000, 50)
    );
    assert_eq!(
        t.ema,
        EmaSchedule::Edm {
            halflife_kimg: 100.0,
            rampup_ratio: Some(0.05)
        }
    );
    assert_eq!((c.eval.n_samples, c.eval.batch_size), (4000, 4000));

    let c = load("toy-iddpm-hybrid.toml")?;
    let spec = c.sampling.spec()?;
    assert_eq!(
        (spec.steps, spec.kind.name(), c.sampling.grid),
        (25, "ddpm_ancestral", 2000)
    );
    assert_eq!(
        c.formulation()?.learned_variance.map(|l| l.vlb_weight),
        Some(0.001)
    );
    assert_eq!(c.formulation()?.sigma_data, 0.5);

    let c = load("toy-edm.toml")?;
    assert_eq!(c.formulation()?.sigma_data, 1.7);

    let c = load("default.toml")?;
    assert_eq!(
        c.sampling.spec()?.kind,
        SamplerKind::EdmStochastic {
            s_churn: 10.0,
            s_min: 0.05,
            s_max: 50.0,
            s_noise: 1.003
        }
    );
    assert_eq!((c.sampling.steps, c.sampling.grid), (18, 100));
    assert_eq!(
        (
            c.training.steps,
            c.training.batch_size,
            c.training.warmup_steps
        ),
        (3000, 128, 200)
    );
    match &c.network {
        NetConfig::Unet(u) => assert!(u.attn_resolutions.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.eval.n_samples, 1000);

    let c = load("fields-ve.toml")?;
    let f = c.formulation()?;
    assert_eq!((f.sigma_min, f.sigma_max), (0.02, 10.0));
    assert!(matches!(
        c.data,
        DataConfig::Fields {
            size: GridSize::Square(16),
            n: 4096,
            held_out: 512,
            ..
        }
    ));
    assert_eq!(
        (
            c.training.batch_size,
            c.training.steps,
            c.training.sample_every
        ),
        (64, 1500, 750)
    );
    assert_eq!(c.eval.denoiser_sigmas, vec![0.1, 0.3, 1.0, 3.0]);
    assert_eq!((c.sampling.grid, c.eval.n_samples), (64, 256));

    let c = load("digits-ve.toml")?;
    assert_eq!(c.formulation()?.sigma_max, 10.0);
    assert_eq!(c.data, DataConfig::Digits { path: None });
    Ok(())
}

#[test]
fn a_grid_that_does_not_fit_the_unet_names_the_divisibility_rule() -> Result<(), TrainError> {
    let cfg = config_data(
        1,
        "[data]\ntype = \"fields\"\nsize = [6, 10]\nn = 4\nheld_out = 2\n",
        &[
            "network.preset=ddpmpp-tiny",
            "network.channel_mult=[1, 1, 1]",
        ],
    );
    let data = cfg.data.load()?;
    let e = tweedie_train::trainer::model_config(&cfg, &data)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("6×10") && e.contains("2^(levels−1) = 4") && e.contains("channel_mult"),
        "{e}"
    );
    // Two levels (divisor 2) fit the same grid, and the network takes its width.
    let cfg = config_data(
        1,
        "[data]\ntype = \"fields\"\nsize = [6, 10]\nn = 4\nheld_out = 2\n",
        &["network.preset=ddpmpp-tiny"],
    );
    let m = tweedie_train::trainer::model_config(&cfg, &data)?;
    assert!(format!("{m:?}").contains("width: Some(10)"), "{m:?}");
    Ok(())
}

/// Every kind of data trains, samples and evaluates end to end (a couple of steps each).
#[test]
fn each_data_kind_trains_samples_and_evaluates() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    // A tiny PNG folder with two classes.
    let pngs = root.path().join("pngs");
    for (cls, v) in [("a", 30u8), ("b", 220u8)] {
        std::fs::create_dir_all(pngs.join(cls)).map_err(|e| TrainError::io(&pngs, e))?;
        for i in 0..6 {
            let img = image::GrayImage::from_fn(8, 8, |x, y| {
                image::Luma([v.wrapping_add((x * y + i) as u8)])
            });
            img.save(pngs.join(cls).join(format!("{i}.png")))
                .map_err(|e| TrainError::Other(e.to_string()))?;
        }
    }
    let unet = [
        "network.preset=ddpmpp-tiny",
        "network.model_channels=8",
        "network.attn_resolutions=[]",
        "training.batch_size=8",
        "eval.n_samples=16",
        "sampling.steps=3",
        "sampling.grid=4",
    ];
    let png_data = format!("[data]\ntype = \"png\"\npath = \"{}\"\n", pngs.display());
    let cases: Vec<(&str, String, Vec<String>, &str)> = vec![
        (
            "digits",
            "[data]\ntype = \"digits\"\n".into(),
            vec![],
            "frechet",
        ),
        (
            "fields",
            // Rectangular, not a power of two in width: the U-Net, sampling, the PNG grid and the
            // spectrum metric all take h ≠ w.
            "[data]\ntype = \"fields\"\nsize = [8, 12]\nn = 64\nheld_out = 16\n".into(),
            vec![],
            "denoising",
        ),
        (
            "png",
            png_data,
            vec!["training.conditional=true".into()],
            "mean",
        ),
        (
            "checkerboard",
            "[data]\ntype = \"checkerboard\"\nn = 256\n".into(),
            vec![
                "network.preset=mlp-small".into(),
                "eval.n_samples=64".into(),
            ],
            "on_board_fraction",
        ),
        (
            "mixture",
            "[data]\ntype = \"mixture\"\nn = 256\n".into(),
            vec![
                "diffusion.type=flow".into(),
                "eval.n_samples=64".into(),
                "network.preset=mlp-small".into(),
            ],
            "components",
        ),
    ];
    for (name, data, sets, key) in cases {
        let mut all: Vec<&str> = Vec::new();
        if !sets
            .iter()
            .any(|s| s.starts_with("network.preset=mlp") || s.contains("mixture"))
        {
            all.extend(unet);
        }
        all.push("eval.skip=false");
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        all.extend(refs);
        let mut cfg = config_data(2, &data, &all);
        cfg.training.checkpoint_every = 2;
        let dir = root.path().join(name);
        let t0 = std::time::Instant::now();
        train(&cfg, &opts(&dir, false))?;
        let t1 = t0.elapsed().as_secs_f64();
        let rep = tweedie_train::eval::evaluate_run(&dir, Some(&cfg), None)?;
        eprintln!(
            "{name}: train {t1:.1} s, eval {:.1} s",
            t0.elapsed().as_secs_f64() - t1
        );
        assert!(
            rep.json["metrics"].get(key).is_some(),
            "{name}: no `{key}` in {}",
            rep.json["metrics"]
        );
        for f in [files::REPORT, files::EVAL, files::SAMPLES, "samples.npy"] {
            assert!(dir.join(f).is_file(), "{name}: {f} missing");
        }
    }
    Ok(())
}

/// The issue's acceptance run: a NetCDF file of two correlated variables on a 24×48 grid
/// trains, samples and writes its samples back as NetCDF in physical units.
#[test]
fn netcdf_two_variables_on_24x48_train_and_write_samples_in_physical_units(
) -> Result<(), TrainError> {
    use tweedie_train::data::fields::{FieldPair, FieldSpec};
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let (h, w) = (24, 48);
    let pair = FieldPair::new(
        FieldSpec::new(h, w, 3.0, 4.0)?,
        FieldSpec::new(h, w, 2.0, 3.0)?,
        0.6,
    )?;
    let (t, u) = pair.sample_range(0, 40, 1);
    let t = t.mapv(|v| v + 288.0);
    let u = u.mapv(|v| v + 2.0);
    let lat: Vec<f64> = (0..h).map(|i| -57.5 + 5.0 * i as f64).collect();
    let lon: Vec<f64> = (0..w).map(|i| 7.5 * i as f64).collect();
    let file = root.path().join("fields.nc");
    tweedie_train::data::netcdf::write_grid_file(
        &file,
        &lat,
        &lon,
        &[("t", "K", t.view()), ("u", "m s-1", u.view())],
    )?;
    let data = format!(
        "[data]\ntype = \"netcdf\"\npath = \"{}\"\nvariables = [\"t\", \"u\"]\nheld_out_every = 5\n",
        file.display()
    );
    let cfg = config_data(
        2,
        &data,
        &[
            "network.preset=ddpmpp-tiny",
            "network.model_channels=8",
            "network.attn_resolutions=[]",
            "training.batch_size=4",
            "sampling.steps=2",
            "sampling.grid=3",
            "eval.n_samples=8",
            "eval.skip=false",
            // One noise level: the Gaussian-fit reference factors a 2304×2304 covariance.
            "eval.denoiser_sigmas=[1.0]",
        ],
    );
    let dir = root.path().join("run");
    train(&cfg, &opts(&dir, false))?;
    let rep = tweedie_train::eval::evaluate_run(&dir, Some(&cfg), None)?;
    assert!(
        rep.json["metrics"].get("netcdf").is_some(),
        "{}",
        rep.json["metrics"]
    );
    let out = dir.join(files::SAMPLES_NC);
    let f = netcdf::open(&out).map_err(|e| TrainError::Other(format!("{}: {e}", out.display())))?;
    for (name, units, mean) in [("t", "K", 288.0), ("u", "m s-1", 2.0)] {
        let v = f
            .variable(name)
            .ok_or_else(|| TrainError::Other(format!("samples.nc has no `{name}`")))?;
        let dims: Vec<String> = v.dimensions().iter().map(|d| d.name()).collect();
        assert_eq!(dims, ["sample", "lat", "lon"]);
        assert_eq!(v.dimensions()[0].len(), 3);
        let got = v.attribute_value("units").and_then(|a| a.ok());
        assert_eq!(got, Some(netcdf::AttributeValue::Str(units.into())));
        let vals: Vec<f32> = v
            .get_values(..)
            .map_err(|e| TrainError::Other(e.to_string()))?;
        // Physical units: around the variable's mean (an untrained net's samples are ~N(0, a few)
        // in normalised units, i.e. mean ± a few std), not around 0.
        let m = vals.iter().map(|&v| f64::from(v)).sum::<f64>() / vals.len() as f64;
        assert!(
            (m - mean).abs() < 20.0 && vals.iter().all(|v| v.is_finite()),
            "{name}: mean {m}"
        );
    }
    let lat_back: Vec<f64> = f
        .variable("lat")
        .ok_or_else(|| TrainError::Other("no lat".into()))?
        .get_values(..)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    assert_eq!(lat_back, lat);
    Ok(())
}

/// Two runs given one default name (launched in the same second) get two directories; a fresh
/// run never writes into a used directory, even one whose state file was removed.
#[test]
fn fresh_runs_never_share_or_overwrite_a_directory() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let name = root.path().join("runs").join("toy-20261201-053000");
    let mut o = opts(&name, false);
    o.unique_dir = true;
    let a = train(&config(2, &[]), &o)?;
    let b = train(&config(2, &["training.seed=5"]), &o)?;
    assert_eq!(a.run_dir, name);
    assert_eq!(
        b.run_dir,
        root.path().join("runs").join("toy-20261201-053000-2")
    );
    assert_eq!(state(&a.run_dir).len(), state(&b.run_dir).len());
    // A finished run whose state was removed is still a run: refused, and left as it was.
    std::fs::remove_file(name.join(STATE_FILE)).map_err(|e| TrainError::io(&name, e))?;
    let model = std::fs::read(name.join(files::MODEL)).map_err(|e| TrainError::io(&name, e))?;
    let e = train(&config(2, &["training.seed=9"]), &opts(&name, false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not empty") && e.contains(files::MODEL), "{e}");
    assert_eq!(std::fs::read(name.join(files::MODEL)).ok(), Some(model));
    // An empty folder made for the run is fine.
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).map_err(|e| TrainError::io(&empty, e))?;
    train(&config(2, &[]), &opts(&empty, false))?;
    Ok(())
}

/// A run directory locked by a live process (here: this one, through another open file) cannot
/// be resumed; the error names the holder's pid.
#[test]
fn a_locked_run_cannot_be_resumed_by_a_second_process() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let dir = root.path().join("run");
    let out = train(&config(2, &[]), &opts(&dir, false))?;
    // The outcome holds the lock until dropped: evaluation writes into the directory too.
    let e = train(&config(4, &[]), &opts(&dir, true)).unwrap_err();
    let pid = std::process::id();
    match &e {
        TrainError::RunLocked {
            holder: Some(p), ..
        } if *p == pid => {}
        other => panic!("expected the lock held by {pid}, got {other:?}"),
    }
    assert!(e.to_string().contains(&format!("process {pid}")), "{e}");
    drop(out);
    train(&config(4, &[]), &opts(&dir, true))?;
    Ok(())
}

/// `--resume` compares every key but `training.steps`, and the data, listing each difference;
/// nothing in the run directory is written when it refuses; an explicit allowance resumes.
#[test]
fn resume_refuses_a_changed_config_or_data_unless_allowed() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let dir = root.path().join("run");
    train(&config(4, &[]), &opts(&dir, false))?;
    let snapshot = || -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .filter(|e| e.file_name() != "run.lock")
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            std::fs::read(e.path()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let before = snapshot();
    let changed = config(8, &["training.seed=3", "training.lr=1e-3"]);
    let e = train(&changed, &opts(&dir, true)).unwrap_err();
    let TrainError::ResumeMismatch { differences, .. } = &e else {
        panic!("expected a resume mismatch, got {e}");
    };
    let keys: Vec<&str> = differences.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(keys, vec!["training.lr", "training.seed"], "{e}");
    let text = e.to_string();
    assert!(
        text.contains("training.seed: 0 → 3") && text.contains("--allow-change"),
        "{text}"
    );
    // Other data (another noise level of the moons): the fingerprint differs.
    let other_data = config_data(
        8,
        "[data]\ntype = \"moons\"\nn = 256\nheld_out = 64\nnoise = 0.1\n",
        &[],
    );
    let e = train(&other_data, &opts(&dir, true)).unwrap_err();
    let TrainError::ResumeMismatch { differences, .. } = &e else {
        panic!("expected a resume mismatch, got {e}");
    };
    let keys: Vec<&str> = differences.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(keys, vec!["data.noise", "data.fingerprint"], "{e}");
    assert_eq!(
        snapshot(),
        before,
        "a refused resume wrote into the run directory"
    );
    // Allowed explicitly, the changed seed and rate resume (and become the run's config).
    let mut o = opts(&dir, true);
    o.allow.keys = vec!["training.seed".into(), "training.lr".into()];
    train(&changed, &o)?;
    let saved =
        std::fs::read_to_string(dir.join(files::CONFIG)).map_err(|e| TrainError::io(&dir, e))?;
    assert!(saved.contains("seed = 3"), "{saved}");
    Ok(())
}

/// Ctrl-C during the last step stops with `Interrupted` after its checkpoint, before the final
/// model, plots and evaluation (it used to carry on and report success).
#[test]
fn ctrl_c_in_the_last_step_stops_before_the_final_outputs() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let dir = root.path().join("run");
    let mut o = opts(&dir, false);
    o.interrupt_at = Some(6);
    match train(&config(6, &[]), &o) {
        Err(TrainError::Interrupted { step: 6, .. }) => {}
        other => panic!("expected an interruption at step 6, got {other:?}"),
    }
    assert_eq!(read_state(&dir.join(STATE_FILE))?.step, 6);
    assert!(!dir.join(files::MODEL).exists());
    // Resuming finishes the outputs without training further.
    let out = train(&config(6, &[]), &opts(&dir, true))?;
    assert_eq!(out.steps, 6);
    assert!(dir.join(files::MODEL).is_file());
    Ok(())
}

/// Temp files that killed writers leave (`.NAME.tmp-PID`, PID dead) are removed when the run
/// resumes; one of a live process is left alone.
#[cfg(unix)]
#[test]
fn stale_temp_files_of_dead_writers_are_removed_on_resume() -> Result<(), TrainError> {
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let dir = root.path().join("run");
    train(&config(2, &[]), &opts(&dir, false))?;
    // A pid that surely is dead: a child that has exited and been reaped.
    let mut child = std::process::Command::new("true")
        .spawn()
        .map_err(|e| TrainError::io("true", e))?;
    let dead = child.id();
    child.wait().map_err(|e| TrainError::io("true", e))?;
    let stale = dir.join(format!(".{STATE_FILE}.tmp-{dead}"));
    let live = dir.join(format!(".{}.tmp-1", files::METRICS));
    for p in [&stale, &live] {
        std::fs::write(p, b"half a file").map_err(|e| TrainError::io(p, e))?;
    }
    train(&config(4, &[]), &opts(&dir, true))?;
    assert!(!stale.exists(), "stale temp file kept");
    assert!(live.exists(), "a live process's temp file was removed");
    Ok(())
}

/// `training.dequantize` on 8-bit data: its offsets are keyed per sample, so 4 steps, a resume
/// and 4 more equal 8 in one go bit for bit; it changes training (off gives other weights); and
/// data without levels refuse it by name.
#[test]
fn dequantized_training_resumes_bit_for_bit_and_needs_levels() -> Result<(), TrainError> {
    use ndarray_npy::WriteNpyExt;
    let root = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
    let npy = root.path().join("x.npy");
    ndarray::Array2::<u8>::from_shape_fn((96, 2), |(i, j)| ((i * 37 + j * 101) % 256) as u8)
        .write_npy(std::fs::File::create(&npy).map_err(|e| TrainError::io(&npy, e))?)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    let data = format!(
        "[data]\ntype = \"npy\"\npath = \"{}\"\n",
        npy.display().to_string().replace('\\', "/")
    );
    let cfg = |steps, on: bool| config_data(steps, &data, &[&format!("training.dequantize={on}")]);
    let (a, b, z) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("z"),
    );
    train(&cfg(8, true), &opts(&a, false))?;
    train(&cfg(4, true), &opts(&b, false))?;
    train(&cfg(8, true), &opts(&b, true))?;
    assert_bit_identical(&state(&a), &state(&b));
    train(&cfg(8, false), &opts(&z, false))?;
    let (sa, sz) = (state(&a), state(&z));
    assert!(sa.iter().any(|(k, t)| !t.equal(&sz[k])));
    let e = train(
        &config(2, &["training.dequantize=true"]),
        &opts(&root.path().join("m"), false),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("training.dequantize") && e.contains("moons"),
        "{e}"
    );
    Ok(())
}
