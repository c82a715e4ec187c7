//! The EDM pickle importer on files shaped like NVlabs/edm snapshots (written by
//! tests/edm/make_pickles.py with the project's .venv python; no EDM file is used): the four
//! preconditionings over SongUNet and DhariwalUNet import, load and give the writer's own
//! D(x; σ, labels, augment); malicious files are refused by name and nothing is executed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};
use tweedie_core::Precond;
use tweedie_nets::import::{import_edm, ImportError};
use tweedie_nets::{load_checkpoint, NetConfig, Wrapper};

struct Fixtures {
    dir: PathBuf,
    marker: PathBuf,
}

/// Runs the writer once per test binary.
fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join("../../.venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run `cargo xtask setup` to create the project's virtualenv (PyTorch), \
             which writes the EDM-shaped test pickles",
            python.display()
        );
        let dir = std::env::temp_dir().join(format!("tweedie-edm-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("EXECUTED");
        let out = Command::new(&python)
            .arg(root.join("tests/edm/make_pickles.py"))
            .arg(&dir)
            .arg(&marker)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make_pickles.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Fixtures { dir, marker }
    })
}

fn tensor(st: &SafeTensors<'_>, name: &str) -> Tensor {
    let v = st.tensor(name).unwrap();
    let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
    Tensor::from_data_size(v.data(), &shape, Kind::Float)
}

/// Imports `case`, checks every tensor bitwise against the writer's state_dict and D against the
/// writer's own forward; returns the loaded config.
fn round_trip(case: &str) -> tweedie_nets::ModelConfig {
    let f = fixtures();
    let c = check(&f.dir, case);
    assert!(!f.marker.exists(), "embedded source was executed");
    c
}

fn check(dir: &Path, case: &str) -> tweedie_nets::ModelConfig {
    let out = dir.join(format!("{case}.safetensors"));
    let report = import_edm(&dir.join(format!("{case}.pkl")), &out).unwrap();
    let m = load_checkpoint(&out, Device::Cpu).unwrap();
    assert_eq!(m.config, report.config);
    assert_eq!(m.extra["edm.source"], format!("{case}.pkl"));
    let bytes = std::fs::read(dir.join(format!("{case}.expected.safetensors"))).unwrap();
    let exp = SafeTensors::deserialize(&bytes).unwrap();
    let vars = m.vs.variables();
    let mut n = 0;
    for name in exp.names() {
        if let Some(key) = name.strip_prefix("state.") {
            let got = vars
                .get(key)
                .unwrap_or_else(|| panic!("{case}: no `{key}`"));
            let want = tensor(&exp, name);
            assert!(got.equal(&want), "{case}: `{key}` differs");
            n += 1;
        }
    }
    assert_eq!(n, vars.len(), "{case}: every variable is in the state_dict");
    assert_eq!(report.tensors, n);
    let x = tensor(&exp, "x");
    let sigma = tensor(&exp, "sigma");
    let labels = exp
        .names()
        .contains(&&"labels".to_string())
        .then(|| tensor(&exp, "labels"));
    let aug = exp
        .names()
        .contains(&&"augment".to_string())
        .then(|| tensor(&exp, "augment"));
    let d = tch::no_grad(|| {
        m.denoiser
            .forward(&x, &sigma, labels.as_ref(), aug.as_ref(), false)
            .unwrap()
    });
    // Snapshots from EDM itself also carry D with float64 coefficients (tweedie's arithmetic).
    let key = if exp.names().contains(&&"d_f64".to_string()) {
        "d_f64"
    } else {
        "d"
    };
    let want = tensor(&exp, key);
    if key == "d_f64" {
        let all_f32 = (&d - tensor(&exp, "d")).abs().max().double_value(&[]);
        println!("{case}: max |D − D_edm(f32 coefficients)| = {all_f32:e}");
    }
    let err = (&d - &want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]);
    assert!(
        err <= 1e-5 * scale.max(1.0),
        "{case}: max |D − D_ref| = {err:e} (|D| ≤ {scale})"
    );
    m.config
}

#[test]
fn edm_precond_songunet_conditional_with_augment_labels() {
    let c = round_trip("edm-songunet-cond-aug");
    assert_eq!(c.wrapper, Wrapper::Precond(Precond::edm()));
    let NetConfig::Unet(u) = c.net else {
        panic!("{c:?}")
    };
    // Absent kwargs take EDM's defaults (not tweedie's): channel_mult_emb 4, positional, [1,1].
    assert_eq!((u.label_dim, u.augment_dim, u.channel_mult_emb), (4, 9, 4));
    assert_eq!(u.channel_mult, vec![1, 2]);
}

#[test]
fn vp_precond_ncsnpp_style_unconditional() {
    let c = round_trip("vp-songunet-uncond");
    assert_eq!(c.wrapper, Wrapper::Precond(Precond::vp()));
}

#[test]
fn ve_precond_skip_encoder_decoder_conditional() {
    let c = round_trip("ve-songunet-cond");
    assert_eq!(c.wrapper, Wrapper::Precond(Precond::ve()));
}

#[test]
fn iddpm_precond_dhariwal_unet_learned_variance() {
    let c = round_trip("iddpm-adm-uncond");
    assert_eq!(c.wrapper, Wrapper::Precond(Precond::iddpm()));
    let NetConfig::Dhariwal(u) = c.net else {
        panic!("{c:?}")
    };
    assert_eq!(u.out_channels, 6);
}

#[test]
fn edm_precond_dhariwal_unet_conditional_with_augment_labels() {
    let c = round_trip("edm-adm-cond-aug");
    let NetConfig::Dhariwal(u) = c.net else {
        panic!("{c:?}")
    };
    assert_eq!((u.label_dim, u.augment_dim), (5, 9));
}

#[test]
fn metadata_keeps_the_original_class_names_and_kwargs() {
    let f = fixtures();
    let out = f.dir.join("meta.safetensors");
    import_edm(&f.dir.join("edm-songunet-cond-aug.pkl"), &out).unwrap();
    let (_, extra) = tweedie_nets::read_config(&out).unwrap();
    assert_eq!(extra["edm.class_name"], "EDMPrecond");
    assert_eq!(extra["edm.model.class_name"], "SongUNet");
    assert_eq!(extra["edm.sigma_max"], "inf");
    let kw: serde_json::Value = serde_json::from_str(&extra["edm.model.init_kwargs"]).unwrap();
    assert_eq!(kw["augment_dim"], 9);
    assert!(
        kw.get("channel_mult_emb").is_none(),
        "kwargs are kept as written"
    );
}

fn refused(name: &str) -> ImportError {
    let f = fixtures();
    let out = f.dir.join(format!("{name}.safetensors"));
    let e = import_edm(&f.dir.join(name), &out).expect_err(name);
    assert!(!f.marker.exists(), "{name}: something was executed");
    assert!(!out.exists(), "{name}: an output was written");
    e
}

#[test]
fn global_outside_the_allowlist_is_refused_by_name() {
    let e = refused("evil-global.pkl");
    assert!(
        matches!(&e, ImportError::ForbiddenGlobal { name, .. } if name == "evil_payload.touch"),
        "{e}"
    );
    let e = refused("os-system.pkl");
    assert!(
        matches!(&e, ImportError::ForbiddenGlobal { name, .. } if name == "os.system"),
        "{e}"
    );
    assert!(e.to_string().contains("`os.system`"), "{e}");
}

#[test]
fn lying_sizes_truncation_and_expansion_are_refused() {
    let e = refused("lying-blob.pkl");
    assert!(
        e.to_string()
            .contains("declares 4 elements but its data header says 1099511627776"),
        "{e}"
    );
    let e = refused("lying-stride.pkl");
    assert!(
        e.to_string()
            .contains("reach element 300 of a storage of 4"),
        "{e}"
    );
    let e = refused("truncated.pkl");
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = refused("huge-length.pkl");
    assert!(
        e.to_string()
            .contains("needs 1152921504606846976 bytes, 3 remain"),
        "{e}"
    );
    let e = refused("expansion.pkl");
    assert!(e.to_string().contains("expands far beyond"), "{e}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let e = import_edm(
        Path::new("/nonexistent/x.pkl"),
        Path::new("/tmp/x.safetensors"),
    )
    .unwrap_err();
    assert!(
        matches!(e, ImportError::Io { .. }) && e.to_string().contains("/nonexistent/x.pkl"),
        "{e}"
    );
}

/// Snapshots written by NVlabs/edm's own code (benches/nets/edm_snapshots.py --edm PATH; not in
/// the repository, their licence forbids it): every `NAME.pkl` in $TWEEDIE_EDM_SNAPSHOTS imports
/// and gives EDM's own D(x; σ, labels, augment).
#[test]
#[ignore = "needs snapshots written with NVlabs/edm's code: set TWEEDIE_EDM_SNAPSHOTS"]
fn snapshots_written_by_edm_itself() {
    let dir = PathBuf::from(
        std::env::var("TWEEDIE_EDM_SNAPSHOTS").expect("set TWEEDIE_EDM_SNAPSHOTS to a folder"),
    );
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(case) = name.strip_suffix(".pkl") {
            let c = check(&dir, case);
            println!("{case}: {:?}", c.wrapper);
            n += 1;
        }
    }
    assert!(n > 0, "no .pkl in {}", dir.display());
}
