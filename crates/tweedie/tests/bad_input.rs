//! The bad-input corpus: the built `tweedie` binary against bad flags, configs, data files and
//! checkpoints. Each case must end in a clear error (exit 1, message naming the problem) or in
//! the correct result: never a panic (exit 101), an abort (a signal), a hang (a per-case
//! timeout) or exit 0 with a wrong result. Run by `cargo xtask test` with the other tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ndarray::{Array1, Array2};
use ndarray_npy::WriteNpyExt;

/// A case fails if the binary runs longer than this (a hang).
const TIMEOUT: Duration = Duration::from_secs(90);

/// A check of a successful case: (fixture folder, stdout + stderr) → Ok or what is wrong.
type Check = Box<dyn Fn(&Path, &str) -> Result<(), String>>;

/// What a case must end in.
enum Expect {
    /// Exit 1 with every substring in the error message.
    Err(Vec<&'static str>),
    /// Exit 0, then this check of (fixture folder, stdout + stderr).
    Ok(Check),
}

struct Case {
    name: String,
    args: Vec<String>,
    expect: Expect,
}

/// A case's arguments, written as one line (no argument holds a space).
fn words(args: &str) -> Vec<String> {
    args.split_whitespace().map(String::from).collect()
}

fn err(name: &str, args: &str, needles: &[&'static str]) -> Case {
    Case {
        name: name.into(),
        args: words(args),
        expect: Expect::Err(needles.to_vec()),
    }
}

fn ok(name: &str, args: &str, check: impl Fn(&Path, &str) -> Result<(), String> + 'static) -> Case {
    Case {
        name: name.into(),
        args: words(args),
        expect: Expect::Ok(Box::new(check)),
    }
}

/// Runs the binary in `dir` with a timeout: (exit code or None for a signal, stdout + stderr).
fn run(dir: &Path, args: &[String]) -> Result<(Option<i32>, String), String> {
    let out_path = dir.join(".case.out");
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(args)
        .current_dir(dir)
        // A tight memory limit for the budget checks: 4 GiB, whatever the machine has.
        .env("TWEEDIE_MAX_BYTES", (4u64 << 30).to_string())
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start tweedie: {e}"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("hang: still running after {TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    Ok((status.code(), text))
}

fn write_npy2(p: &Path, a: &Array2<f64>) {
    a.write_npy(std::fs::File::create(p).unwrap()).unwrap();
}

/// An .npy file with a hand-written header (for headers no writer would produce).
fn raw_npy(p: &Path, descr: &str, fortran: bool, shape: &str, data: &[u8]) {
    let f = if fortran { "True" } else { "False" };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}");
    while (11 + dict.len()) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    b.extend_from_slice(dict.as_bytes());
    b.extend_from_slice(data);
    std::fs::write(p, b).unwrap();
}

fn idx(p: &Path, dims: &[u32], data: &[u8]) {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    std::fs::write(p, b).unwrap();
}

fn png(p: &Path, v: u8) {
    image::GrayImage::from_fn(8, 8, |x, _| image::Luma([v.wrapping_add(x as u8)]))
        .save(p)
        .unwrap();
}

fn checkpoint(dir: &Path, preset: &str) -> PathBuf {
    use std::collections::BTreeMap;
    use tweedie::core::Precond;
    use tweedie::nets::{save_checkpoint, ModelConfig, NetConfig, Wrapper};
    let cfg = ModelConfig {
        net: NetConfig::preset(preset).unwrap(),
        wrapper: Wrapper::Precond(Precond::edm()),
        conditioning: None,
    };
    let (vs, _) = cfg.build(tch::Device::Cpu).unwrap();
    let path = dir.join(format!("{preset}.safetensors"));
    save_checkpoint(&path, &vs, &cfg, &BTreeMap::new()).unwrap();
    path
}

/// A training config: a tiny MLP on `data` (TOML lines of the `[data]` section), 1 step.
fn train_config(dir: &Path, name: &str, data: &str, extra: &str) -> String {
    let network = if extra.contains("[network]") {
        ""
    } else {
        "[network]\npreset = \"mlp-small\"\n\n"
    };
    let text = format!(
        "[diffusion]\ntype = \"EDM\"\n\n{network}\
         [training]\nsteps = 1\nbatch_size = 4\n\n[data]\n{data}\n\n{extra}\n"
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// Reads an .npy written by the binary as rows of f64.
fn read_rows(p: &Path) -> Result<Array2<f64>, String> {
    let a = tweedie::train::data::npy::read(p)
        .map_err(|e| e.to_string())?
        .to_f64();
    a.into_dimensionality().map_err(|e| e.to_string())
}

fn fixtures(d: &Path) {
    std::fs::create_dir_all(d.join("adir")).unwrap();
    write_npy2(&d.join("lat2.npy"), &Array2::zeros((4, 2)));
    let mut nan = Array2::<f64>::zeros((4, 2));
    nan[[2, 1]] = f64::NAN;
    write_npy2(&d.join("nan.npy"), &nan);
    // [[1, 2], [3, 4], [5, 6], [7, 8]] column-major.
    let col: Vec<u8> = [1.0f64, 3.0, 5.0, 7.0, 2.0, 4.0, 6.0, 8.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    raw_npy(&d.join("fortran.npy"), "<f8", true, "(4, 2)", &col);
    raw_npy(
        &d.join("huge.npy"),
        "<f4",
        false,
        "(1000000000000, 2)",
        &[0; 32],
    );
    raw_npy(&d.join("cplx.npy"), "<c16", false, "(2,)", &[0; 32]);
    // A descr whose first character is two bytes long (found by the npy property test).
    raw_npy(&d.join("utf8descr.npy"), "é8", false, "(4, 2)", &[0; 64]);
    raw_npy(&d.join("trunc.npy"), "<f8", false, "(10, 2)", &[0; 24]);
    std::fs::write(d.join("garbage.npy"), b"\x93NUMPY but not really").unwrap();
    Array1::from(vec![0.5f64, 0.25])
        .write_npy(std::fs::File::create(d.join("y1.npy")).unwrap())
        .unwrap();
    Array1::from(vec![0.5f64, f64::NAN])
        .write_npy(std::fs::File::create(d.join("ynan.npy")).unwrap())
        .unwrap();
    Array1::from(vec![0.5f64, 0.1, 0.2])
        .write_npy(std::fs::File::create(d.join("y3.npy")).unwrap())
        .unwrap();
    std::fs::write(
        d.join("bad_mix.toml"),
        "weights = [1.0]\nmeans = [[0.0, 0.0]]\n",
    )
    .unwrap();
    std::fs::write(d.join("corrupt.safetensors"), b"not safetensors at all").unwrap();
    // Data for training configs: 20 vectors of 2, labels.
    let x = Array2::<f32>::from_shape_fn((20, 2), |(i, j)| (i as f32 * 0.1) - j as f32);
    x.write_npy(std::fs::File::create(d.join("x.npy")).unwrap())
        .unwrap();
    for (name, labels) in [
        (
            "lab12",
            (0..20).map(|i| 1 + (i % 2) as i64).collect::<Vec<_>>(),
        ),
        (
            "labbig",
            (0..20)
                .map(|i| if i == 0 { 1_000_000_000 } else { 0 })
                .collect(),
        ),
        (
            "labneg",
            (0..20).map(|i| if i == 3 { -1 } else { 0 }).collect(),
        ),
        ("labshort", vec![0; 5]),
    ] {
        Array1::from(labels)
            .write_npy(std::fs::File::create(d.join(format!("{name}.npy"))).unwrap())
            .unwrap();
    }
    let mut xn = x.clone();
    xn[[7, 0]] = f32::INFINITY;
    xn.write_npy(std::fs::File::create(d.join("xinf.npy")).unwrap())
        .unwrap();
    Array2::<f32>::zeros((3, 2))
        .write_npy(std::fs::File::create(d.join("x3.npy")).unwrap())
        .unwrap();
    // PNG folders: classes plus a stray top-level image; three images only.
    for cls in ["a", "b"] {
        std::fs::create_dir_all(d.join("mixed").join(cls)).unwrap();
        png(&d.join("mixed").join(cls).join("0.png"), 10);
    }
    png(&d.join("mixed").join("stray.png"), 10);
    std::fs::create_dir_all(d.join("few")).unwrap();
    for i in 0..3 {
        png(&d.join("few").join(format!("{i}.png")), i * 40);
    }
    std::fs::create_dir_all(d.join("nopng")).unwrap();
    idx(
        &d.join("idx_overflow"),
        &[u32::MAX, u32::MAX, u32::MAX],
        &[0; 8],
    );
    idx(&d.join("idx_trunc"), &[4, 2, 2], &[0; 5]);
    std::fs::write(d.join("idx_bad"), b"hello").unwrap();
    checkpoint(d, "ddpmpp-tiny");
    checkpoint(d, "mlp-2d");
    // 8×8 fields (the ddpmpp-tiny checkpoint's sample shape) for `tweedie measure`.
    std::fs::write(
        d.join("fields8.toml"),
        "[diffusion]\ntype = \"EDM\"\n\n[training]\nsteps = 1\nbatch_size = 4\n\n\
         [data]\ntype = \"fields\"\nsize = 8\nn = 16\nheld_out = 4\n",
    )
    .unwrap();
    netcdf_fixtures(d);
    conditional_checkpoint(d, "cond-no-dropout", None);
    classifier_checkpoint(d, "clf8", "ddpmpp-tiny");
    classifier_checkpoint(d, "clf32", "ddpmpp-small");
    conditional_checkpoint(d, "cond-bad-record", Some("often"));
    downscale_fixtures(d);
}

/// `down.safetensors`: an 8×8 one-channel U-Net conditioned on its 4×4 block averages
/// (downscale ×2), and conditions for it: `low.npy` (two, [2, 1, 4, 4]), `low_wrong.npy` (the
/// wrong grid, [2, 1, 2, 2]) and `low_nan.npy` (a NaN in the second).
fn downscale_fixtures(d: &Path) {
    use std::collections::BTreeMap;
    use tweedie::core::Precond;
    use tweedie::nets::{
        save_checkpoint, Conditioning, ConditioningKind, ModelConfig, NetConfig, Wrapper,
    };
    let mut net = NetConfig::preset("ddpmpp-tiny").unwrap();
    if let NetConfig::Unet(u) = &mut net {
        u.cond_channels = 1;
    }
    let cfg = ModelConfig {
        net,
        wrapper: Wrapper::Precond(Precond::edm()),
        conditioning: Some(Conditioning {
            kind: ConditioningKind::Downscale,
            factor: 2,
        }),
    };
    let (vs, _) = cfg.build(tch::Device::Cpu).unwrap();
    save_checkpoint(&d.join("down.safetensors"), &vs, &cfg, &BTreeMap::new()).unwrap();
    write_npy2(&d.join("low.npy"), &Array2::from_elem((2, 16), 0.25));
    let mut nan = Array2::<f64>::zeros((2, 16));
    nan[[1, 5]] = f64::NAN;
    write_npy2(&d.join("low_nan.npy"), &nan);
    raw_npy(
        &d.join("low_wrong.npy"),
        "<f8",
        false,
        "(2, 1, 2, 2)",
        &[0; 64],
    );
}

/// NetCDF files of 20 samples: `f.nc` (6×10 grid; `t`, and `gone`, NaN everywhere) and
/// `grid_1.nc`, `grid_2.nc`, whose grids differ (6×8, 6×10).
fn netcdf_fixtures(d: &Path) {
    use tweedie::train::data::netcdf::write_grid_file;
    let write = |name: &str, h: usize, w: usize, vars: &[(&str, f32)]| {
        let lat: Vec<f64> = (0..h).map(|i| i as f64).collect();
        let lon: Vec<f64> = (0..w).map(|i| i as f64).collect();
        let fields: Vec<Array2<f32>> = vars
            .iter()
            .map(|(_, fill)| {
                Array2::from_shape_fn((20, h * w), |(n, i)| {
                    if fill.is_nan() {
                        f32::NAN
                    } else {
                        ((n * 7 + i) as f32 * 0.37).sin() + fill
                    }
                })
            })
            .collect();
        let named: Vec<(&str, &str, ndarray::ArrayView2<f32>)> = vars
            .iter()
            .zip(&fields)
            .map(|((v, _), x)| (*v, "K", x.view()))
            .collect();
        write_grid_file(&d.join(name), &lat, &lon, &named).unwrap();
    };
    write("f.nc", 6, 10, &[("t", 280.0), ("gone", f32::NAN)]);
    write("grid_1.nc", 6, 8, &[("t", 280.0)]);
    write("grid_2.nc", 6, 10, &[("t", 280.0)]);
}

/// A 3-class `mlp-2d` checkpoint with an optional label-dropout record (none: a model trained
/// without label dropout, or before the record existed).
fn conditional_checkpoint(dir: &Path, name: &str, record: Option<&str>) {
    use std::collections::BTreeMap;
    use tweedie::core::Precond;
    use tweedie::nets::{save_checkpoint, ModelConfig, NetConfig, Wrapper, META_LABEL_DROPOUT};
    let mut net = NetConfig::preset("mlp-2d").unwrap();
    if let NetConfig::Mlp(m) = &mut net {
        m.label_dim = 3;
    }
    let cfg = ModelConfig {
        net,
        wrapper: Wrapper::Precond(Precond::edm()),
        conditioning: None,
    };
    let (vs, _) = cfg.build(tch::Device::Cpu).unwrap();
    let extra: BTreeMap<String, String> = record
        .map(|r| (META_LABEL_DROPOUT.to_string(), r.to_string()))
        .into_iter()
        .collect();
    let path = dir.join(format!("{name}.safetensors"));
    save_checkpoint(&path, &vs, &cfg, &extra).unwrap();
}

/// An untrained guidance classifier with the encoder of the U-Net `preset` and 10 classes.
fn classifier_checkpoint(dir: &Path, name: &str, preset: &str) {
    use tweedie::nets::{save_classifier, ClassifierConfig, NetConfig};
    let NetConfig::Unet(encoder) = NetConfig::preset(preset).unwrap() else {
        panic!("{preset} is not a U-Net");
    };
    let cfg = ClassifierConfig {
        encoder,
        classes: 10,
        sigma_data: 0.5,
    };
    let (vs, _) = cfg.build(tch::Device::Cpu).unwrap();
    let path = dir.join(format!("{name}.safetensors"));
    save_classifier(&path, &vs, &cfg, &Default::default()).unwrap();
}

/// `sample` of the ddpmpp-tiny checkpoint: 2 samples, 2 steps, on the CPU.
const TINY: &str = "sample --model ddpmpp-tiny.safetensors --device cpu --n 2 --steps 2";

/// Classifier guidance (`sample --classifier`) and `train-classifier`.
fn classifier_cases() -> Vec<Case> {
    let smp = |extra: &str| format!("{TINY} --out g.npy {extra}");
    let e = |name: &str, extra: &str, needles: &[&'static str]| err(name, &smp(extra), needles);
    let train = |name: &str, data: &str, extra: &str, needles: &[&'static str]| Case {
        name: name.into(),
        args: vec![
            "train-classifier".into(),
            "--config".into(),
            format!("@{name}"),
            "--out".into(),
            "clfrun".into(),
            format!("@@{data}@@{extra}"),
        ],
        expect: Expect::Err(needles.to_vec()),
    };
    vec![
        e(
            "classifier without a class",
            "--classifier clf8.safetensors",
            &["--classifier needs --class"],
        ),
        e(
            "classifier class out of range",
            "--classifier clf8.safetensors --class 10",
            &["--class 10", "clf8.safetensors", "0..10"],
        ),
        e(
            "negative classifier scale",
            "--classifier clf8.safetensors --class 1 --classifier-scale=-1",
            &["--classifier-scale -1", "≥ 0"],
        ),
        e(
            "NaN classifier scale",
            "--classifier clf8.safetensors --class 1 --classifier-scale NaN",
            &["--classifier-scale NaN"],
        ),
        e(
            "classifier of another data shape",
            "--classifier clf32.safetensors --class 1",
            &["clf32.safetensors", "[3, 32, 32]", "[1, 8, 8]"],
        ),
        e(
            "denoiser given as the classifier",
            "--classifier ddpmpp-tiny.safetensors --class 1",
            &[
                "ddpmpp-tiny.safetensors",
                "denoiser checkpoint",
                "train-classifier",
            ],
        ),
        e(
            "missing classifier",
            "--classifier nope-clf.safetensors --class 1",
            &["nope-clf.safetensors", "not found"],
        ),
        e(
            "classifier scale without a classifier",
            "--classifier-scale 2",
            &["--classifier-scale needs --classifier"],
        ),
        e(
            "classifier and cfg together",
            "--classifier clf8.safetensors --class 1 --cfg 1",
            &["--classifier and --cfg"],
        ),
        err(
            "classifier given as the model",
            "sample --model clf8.safetensors --out g.npy --device cpu",
            &["clf8.safetensors", "classifier checkpoint", "--classifier"],
        ),
        err(
            "classifier with a mixture",
            "sample --model gmm2d --n 2 --out g.npy --classifier clf8.safetensors --class 1",
            &["--classifier", "not mixtures"],
        ),
        ok(
            "classifier guidance samples",
            &smp("--classifier clf8.safetensors --class 3 --classifier-scale 4"),
            |d, _| {
                let x = read_rows(&d.join("g.npy"))?;
                if x.shape() != [2, 64] || !x.iter().all(|v| v.is_finite()) {
                    return Err(format!("shape {:?} or non-finite values", x.shape()));
                }
                Ok(())
            },
        ),
        train(
            "classifier on an MLP preset",
            "type = \"digits\"",
            "",
            &["network.preset", "mlp-small", "U-Net"],
        ),
        train(
            "classifier on vector data",
            "type = \"moons\"\nn = 64",
            "[network]\npreset = \"ddpmpp-tiny\"",
            &["image data"],
        ),
        train(
            "classifier on unlabelled images",
            "type = \"fields\"\nsize = 8\nn = 32\nheld_out = 8",
            "[network]\npreset = \"ddpmpp-tiny\"",
            &["no class labels"],
        ),
    ]
}

fn cases() -> Vec<Case> {
    let s = |v: &[&str]| -> Vec<&'static str> {
        v.iter()
            .map(|x| &*Box::leak(x.to_string().into_boxed_str()))
            .collect()
    };
    // `sample` with defaults for what `extra` does not set.
    let smp = |extra: &str| {
        let mut v = String::from("sample");
        for (flag, value) in [("--model", "gmm2d"), ("--n", "4"), ("--steps", "4")] {
            if !extra.split_whitespace().any(|w| w == flag) {
                v += &format!(" {flag} {value}");
            }
        }
        format!("{v} {extra}")
    };
    let sample_err =
        |name: &str, extra: &str, needles: &[&'static str]| err(name, &smp(extra), needles);
    // `sample` of the ddpmpp-tiny checkpoint with `extra` (and `--out c.npy` unless it has one).
    let ck = |extra: &str| {
        let named = extra.split_whitespace().any(|w| w == "--out");
        let out = if named { "" } else { " --out c.npy" };
        format!("{TINY}{out} {extra}")
    };
    let mut v = vec![
        // ---- sample: sizes
        err(
            "n near 2^64",
            "sample --model gmm2d --n 18446744073709551615 --out x.npy",
            &["--n", "would need"],
        ),
        err(
            "steps near 2^64",
            "sample --model gmm2d --n 4 --steps 18446744073709551615 --out x.npy",
            &["steps", "would need"],
        ),
        sample_err(
            "blur radius huge",
            "--out x.npy --operator blur --image 2,1,1 --blur-radius 18446744073709551615 --y y1.npy",
            &["blur_radius"],
        ),
        sample_err(
            "image product overflows",
            "--out x.npy --operator blur --image 4294967296,4294967296,1 --y y1.npy",
            &["--image", "C·H·W"],
        ),
        sample_err(
            "downsample image overflow",
            "--out x.npy --operator downsample --image 18446744073709551615,2,1 --y y1.npy",
            &["--image"],
        ),
        err(
            "n zero",
            "sample --model gmm2d --n 0 --out x.npy",
            &["--n 0"],
        ),
        err(
            "steps zero",
            "sample --model gmm2d --steps 0 --out x.npy",
            &["steps", "0"],
        ),
        // ---- sample: sampler and timer
        sample_err(
            "adaptive with one step",
            "--out x.npy --sampler adaptive --steps 1",
            &["steps ≥ 2"],
        ),
        sample_err(
            "unknown sampler",
            "--out x.npy --sampler eulr",
            &["eulr", "heun"],
        ),
        sample_err(
            "unknown process",
            "--out x.npy --process vpp",
            &["vpp"],
        ),
        sample_err(
            "unknown timer",
            "--out x.npy --timer edmm",
            &["edmm"],
        ),
        sample_err(
            "ddim timer on edm process",
            "--out x.npy --timer ddim",
            &["ddim", "ddpm"],
        ),
        sample_err(
            "vp_linear timer on edm process",
            "--out x.npy --timer vp_linear",
            &["vp_linear", "edm"],
        ),
        sample_err(
            "ve grid beyond the edm range",
            "--out x.npy --timer ve_geometric",
            &["t_max", "beyond"],
        ),
        sample_err(
            "timer param unknown key",
            "--out x.npy --timer-param rhoo=7",
            &["--timer edm", "rhoo"],
        ),
        sample_err(
            "timer param not key=value",
            "--out x.npy --timer-param rho",
            &["--timer edm", "KEY=VALUE"],
        ),
        sample_err(
            "timer param negative rho",
            "--out x.npy --timer-param rho=-1",
            &["rho", "-1"],
        ),
        sample_err(
            "timer param not a number",
            "--out x.npy --timer-param rho=seven",
            &["--timer edm", "seven"],
        ),
        sample_err(
            "process param unknown key",
            "--out x.npy --process vp --process-param beta=1",
            &["--process vp", "beta"],
        ),
        sample_err(
            "eta out of range",
            "--out x.npy --sampler ddim --eta 2",
            &["eta"],
        ),
        sample_err(
            // (heun with churn is EDM's stochastic sampler; a sampler without churn refuses it)
            "churn on dpmpp_2m",
            "--out x.npy --sampler dpmpp_2m --churn 5",
            &["s_churn", "dpmpp_2m"],
        ),
        sample_err(
            "class with a mixture",
            "--out x.npy --class 1",
            &["--class"],
        ),
        // ---- sample: output paths
        sample_err(
            "out is a directory",
            "--out adir",
            &["adir", "is a directory"],
        ),
        sample_err(
            "out in a missing folder",
            "--out nowhere/x.npy",
            &["nowhere", "does not exist"],
        ),
        sample_err(
            "png out for a mixture",
            "--out x.png",
            &["x.png", "vectors"],
        ),
        sample_err(
            "netcdf out for a mixture",
            "--out x.nc",
            &["x.nc", "NetCDF"],
        ),
        // ---- sample: input files
        sample_err(
            "NaN latents",
            "--out x.npy --latents nan.npy",
            &["nan.npy", "NaN"],
        ),
        sample_err(
            "latents header claims 10^12 rows",
            "--out x.npy --latents huge.npy",
            &["huge.npy", "1000000000000"],
        ),
        sample_err(
            "latents truncated",
            "--out x.npy --latents trunc.npy",
            &["trunc.npy", "holds"],
        ),
        sample_err(
            "latents complex dtype",
            "--out x.npy --latents cplx.npy",
            &["cplx.npy", "c16"],
        ),
        sample_err(
            "latents garbage",
            "--out x.npy --latents garbage.npy",
            &["garbage.npy"],
        ),
        sample_err(
            "latents missing",
            "--out x.npy --latents missing.npy",
            &["missing.npy"],
        ),
        sample_err(
            "latents wrong shape",
            "--out x.npy --n 5 --latents lat2.npy",
            &["lat2.npy", "[5, 2]"],
        ),
        sample_err(
            "mixture toml missing key",
            "--out x.npy --model bad_mix.toml",
            &["bad_mix.toml"],
        ),
        err(
            "unknown model",
            "sample --model gmm3d --out x.npy",
            &["gmm3d", "gmm2d"],
        ),
        sample_err(
            "mask coordinate out of range",
            "--out x.npy --operator mask --observe 7 --y y1.npy",
            &["observe 7"],
        ),
        sample_err(
            "matrix operator without matrix",
            "--out x.npy --operator matrix --y y1.npy",
            &["--matrix"],
        ),
        sample_err(
            "measurement of the wrong length",
            "--out x.npy --operator mask --observe 0,1 --y y3.npy",
            &["y3.npy", "3 entries"],
        ),
        sample_err(
            "NaN measurement",
            "--out x.npy --operator mask --observe 0,1 --y ynan.npy",
            &["ynan.npy", "NaN"],
        ),
        sample_err(
            "measurement without operator",
            "--out x.npy --y y1.npy",
            &["--y needs"],
        ),
        sample_err(
            "unknown operator",
            "--out x.npy --operator smear --y y1.npy",
            &["smear"],
        ),
        // ---- conditional sampling of a checkpoint (issue #12): ddpmpp-tiny draws [1, 8, 8]
        err(
            "checkpoint downsample factor not dividing the image",
            &ck("--operator downsample --factor 3 --y y1.npy"),
            &["--factor 3", "divide", "8"],
        ),
        err(
            "checkpoint measurement of the wrong length",
            &ck("--operator downsample --factor 2 --noise-std 0.1 --y y1.npy --guidance pigdm"),
            &["y1.npy", "2 entries", "16"],
        ),
        err(
            "checkpoint NaN measurement",
            &ck("--operator mask --observe 0,1 --y ynan.npy --guidance pigdm"),
            &["ynan.npy", "NaN"],
        ),
        err(
            "checkpoint exact posterior",
            &ck("--operator mask --observe 0,1 --y y1.npy"),
            &["exact_posterior", "closed-form"],
        ),
        err(
            "checkpoint mask file of the wrong size",
            &ck("--operator mask --mask lat2.npy --y y1.npy --guidance pigdm"),
            &["--mask", "lat2.npy", "64"],
        ),
        err(
            "checkpoint negative measurement noise",
            &ck("--operator mask --observe 0,1 --noise-std=-1 --y y1.npy --guidance pigdm"),
            &["--noise-std -1"],
        ),
        err(
            "checkpoint DPS without measurement noise",
            &ck("--operator mask --observe 0,1 --y y1.npy --guidance dps"),
            &["--guidance dps", "noise_std", "s > 0"],
        ),
        err(
            "checkpoint PnP-DM with a deterministic sampler",
            &ck("--operator mask --observe 0,1 --noise-std 0.1 --y y1.npy --guidance pnpdm --sampler heun"),
            &["--guidance pnpdm", "stochastic sampler"],
        ),
        err(
            "checkpoint truth of the wrong size",
            &ck("--operator mask --observe 0,1 --y y1.npy --guidance pigdm --truth lat2.npy"),
            &["--truth", "lat2.npy", "64"],
        ),
        ok(
            "checkpoint inpainting with ΠGDM (autograd VJP)",
            &ck("--operator mask --observe 0,1 --noise-std 0.1 --y y1.npy --guidance pigdm --out cond.png"),
            |d, _| {
                let x = read_rows(&d.join("cond.npy"))?;
                if x.dim() != (2, 64) || x.iter().any(|v| !v.is_finite()) {
                    return Err(format!(
                        "samples {:?}, finite: {}",
                        x.dim(),
                        x.iter().all(|v| v.is_finite())
                    ));
                }
                d.join("cond.png")
                    .is_file()
                    .then_some(())
                    .ok_or("no cond.png".into())
            },
        ),
        err(
            "measure index beyond the held-out split",
            "measure --data fields8.toml --index 4 --operator mask --observe 0 --out ym.npy",
            &["--index 4", "4 samples"],
        ),
        err(
            "measure without operator",
            "measure --data fields8.toml --out ym.npy",
            &["--operator"],
        ),
        err(
            "measure unknown blur boundary",
            "measure --data fields8.toml --operator blur --blur-boundary mirror --out ym.npy",
            &["--blur-boundary mirror"],
        ),
        ok(
            "measure block averages of a held-out field",
            "measure --data fields8.toml --index 1 --operator downsample --factor 2 --noise-std 0.1 --out ym.npy --truth xm.npy",
            |d, _| {
                let y = tweedie::train::data::npy::read(&d.join("ym.npy"))
                    .map_err(|e| e.to_string())?;
                let x = tweedie::train::data::npy::read(&d.join("xm.npy"))
                    .map_err(|e| e.to_string())?;
                if y.shape() != [16] || x.shape() != [1, 8, 8] {
                    return Err(format!("y {:?}, truth {:?}", y.shape(), x.shape()));
                }
                Ok(())
            },
        ),
        ok(
            "measure the conditions of a downscaling model: several held-out fields",
            "measure --data fields8.toml --index 0,2 --operator downsample --factor 4 --out yl.npy --truth xl.npy",
            |d, _| {
                let y = tweedie::train::data::npy::read(&d.join("yl.npy"))
                    .map_err(|e| e.to_string())?
                    .to_f64();
                let x = tweedie::train::data::npy::read(&d.join("xl.npy"))
                    .map_err(|e| e.to_string())?
                    .to_f64();
                if y.shape() != [2, 4] || x.shape() != [2, 1, 8, 8] {
                    return Err(format!("y {:?}, truth {:?}", y.shape(), x.shape()));
                }
                // Noise 0: each row is its field's 4×4 block averages.
                for m in 0..2 {
                    for (b, yv) in y.iter().skip(4 * m).take(4).enumerate() {
                        let (bi, bj) = (b / 2, b % 2);
                        let mean = (0..16)
                            .map(|p| x[[m, 0, 4 * bi + p / 4, 4 * bj + p % 4]])
                            .sum::<f64>()
                            / 16.0;
                        if (yv - mean).abs() > 1e-12 {
                            return Err(format!("field {m} block {b}: {yv} vs {mean}"));
                        }
                    }
                }
                Ok(())
            },
        ),
        // ---- sample: checkpoints
        err(
            "out equal to model",
            "sample --model ddpmpp-tiny.safetensors --out ddpmpp-tiny.safetensors --device cpu --n 2 --steps 2",
            &["would overwrite the model"],
        ),
        err(
            "png out of a vector checkpoint",
            "sample --model mlp-2d.safetensors --out v.png --device cpu --n 2 --steps 2",
            &["v.png", "vectors"],
        ),
        err(
            "class on an unconditional checkpoint",
            "sample --model ddpmpp-tiny.safetensors --out c.npy --device cpu --n 2 --steps 2 --class 3",
            &["unconditional"],
        ),
        err(
            "cfg on a checkpoint trained without label dropout",
            "sample --model cond-no-dropout.safetensors --out c.npy --device cpu --n 2 --steps 2 --class 1 --cfg 2",
            &[
                "--cfg 2",
                "cond-no-dropout.safetensors",
                "without label dropout",
                "null label",
                "never trained",
                "training.label_dropout",
                "--cfg-untrained-null",
            ],
        ),
        err(
            "label-dropout record that is not a probability",
            "sample --model cond-bad-record.safetensors --out c.npy --device cpu --class 1 --cfg 2",
            &[
                "cond-bad-record.safetensors",
                "tweedie.train.label_dropout",
                "often",
            ],
        ),
        err(
            "corrupt checkpoint",
            "sample --model corrupt.safetensors --out c.npy --device cpu",
            &["corrupt.safetensors"],
        ),
        err(
            "missing checkpoint",
            "sample --model gone.safetensors --out c.npy --device cpu",
            &["gone.safetensors", "not found"],
        ),
        err(
            "unknown device",
            "sample --model ddpmpp-tiny.safetensors --out c.npy --device tpu",
            &["tpu"],
        ),
        err(
            "checkpoint n near 2^64",
            "sample --model ddpmpp-tiny.safetensors --out c.npy --device cpu --n 18446744073709551615",
            &["--n", "would need"],
        ),
        err(
            "checkpoint n beyond the free disk",
            "sample --model ddpmpp-tiny.safetensors --out c.npy --device cpu --n 1000000000000000",
            &["--n", "would need", "on disk", "c.npy"],
        ),
        err(
            "batch 0",
            "sample --model ddpmpp-tiny.safetensors --out c.npy --device cpu --batch 0",
            &["--batch 0"],
        ),
        err(
            "batch near 2^64",
            "sample --model ddpmpp-tiny.safetensors --out c.npy --device cpu --n 18446744073709551615 --batch 18446744073709551615",
            &["--batch", "would need"],
        ),
        err(
            "batch with a mixture",
            "sample --model gmm2d --n 4 --out c.npy --batch 2",
            &["--batch 2", "mixture"],
        ),
        err(
            "npy descr with a multi-byte character",
            "sample --model gmm2d --n 4 --out c.npy --latents utf8descr.npy",
            &["utf8descr.npy", "byte order"],
        ),
        err(
            "checkpoint NaN latents",
            "sample --model mlp-2d.safetensors --out c.npy --device cpu --n 4 --latents nan.npy",
            &["nan.npy", "NaN"],
        ),
        // ---- schedule
        err(
            "sigma_max inf",
            "schedule --timer edm --steps 3 sigma_max=inf",
            &["sigma_max", "inf"],
        ),
        err(
            "rho tiny",
            "schedule --timer edm --steps 3 rho=0.001",
            &["`rho`", "0.001"],
        ),
        err(
            "negative grid",
            "schedule --timer uniform_time --steps 3 t_max=2",
            &["negative"],
        ),
        err(
            "iddpm table of 10^12",
            "schedule --timer iddpm --steps 3 m=1000000000000",
            &["`m`", "would need"],
        ),
        err(
            "ddpm table of 10^12",
            "schedule --timer edm --steps 3 --process ddpm --process-param num_steps=1000000000000",
            &["num_steps", "would need"],
        ),
        err(
            "ddim table of 10^12",
            "schedule --timer ddim --steps 3 num_train_steps=1000000000000",
            &["num_train_steps", "would need"],
        ),
        err(
            "schedule steps near 2^64",
            "schedule --timer edm --steps 18446744073709551615",
            &["steps", "would need"],
        ),
        err(
            "schedule unknown key",
            "schedule --timer edm --steps 3 rhoo=7",
            &["rhoo"],
        ),
        err(
            "schedule not key=value",
            "schedule --timer edm --steps 3 rho",
            &["KEY=VALUE"],
        ),
        err(
            "sigma_min above sigma_max",
            "schedule --timer edm --steps 3 sigma_min=100",
            &["sigma_max"],
        ),
        ok(
            "schedule json writes inf as a string",
            "schedule --timer uniform_time --steps 3 --json",
            |_, out| {
                let j: serde_json::Value =
                    serde_json::from_str(&out[out.find('{').ok_or("no JSON")?..])
                        .map_err(|e| e.to_string())?;
                let s = j["sigma_tilde"].as_array().ok_or("no sigma_tilde")?;
                if s.first() != Some(&serde_json::Value::from("inf"))
                    || s.iter().any(|v| v.is_null())
                {
                    return Err(format!("σ̃ = {s:?}"));
                }
                Ok(())
            },
        ),
        ok(
            "schedule edm published grid",
            "schedule --timer edm --steps 18 --json",
            |_, out| {
                let j: serde_json::Value =
                    serde_json::from_str(&out[out.find('{').ok_or("no JSON")?..])
                        .map_err(|e| e.to_string())?;
                let s1 = j["sigma_tilde"][1].as_f64().ok_or("no σ̃₁")?;
                if (s1 - 57.586).abs() > 5e-4 {
                    return Err(format!("σ̃₁ = {s1}, published 57.586"));
                }
                Ok(())
            },
        ),
    ];
    // ---- train: configs and data loaders (each fails before the first step)
    let t = |name: &str, data: &str, extra: &str, needles: &[&str]| {
        (
            name.to_string(),
            data.to_string(),
            extra.to_string(),
            s(needles),
        )
    };
    let train_cases = vec![
        t(
            "empty eval.denoiser_sigmas",
            "type = \"moons\"\nn = 64",
            "[eval]\ndenoiser_sigmas = []",
            &["eval.denoiser_sigmas"],
        ),
        t(
            "65 channel_mult levels",
            "type = \"digits\"",
            &format!(
                "[network]\npreset = \"ddpmpp-tiny\"\nchannel_mult = [{}]",
                vec!["1"; 65].join(", ")
            ),
            &["channel_mult", "65 levels"],
        ),
        t(
            "channel_mult_noise overflow",
            "type = \"digits\"",
            "[network]\npreset = \"ddpmpp-tiny\"\nchannel_mult_noise = 9223372036854775807",
            &["channel_mult_noise"],
        ),
        t(
            "fields size 2^32",
            "type = \"fields\"\nsize = 4294967296",
            "",
            &["data.size", "would need"],
        ),
        t(
            "toy n near 2^63",
            "type = \"moons\"\nn = 9223372036854775807",
            "",
            &["data.n", "would need"],
        ),
        t(
            "npy header claims 10^12 rows",
            "type = \"npy\"\npath = \"huge.npy\"",
            "",
            &["huge.npy", "1000000000000"],
        ),
        t(
            "npy truncated",
            "type = \"npy\"\npath = \"trunc.npy\"",
            "",
            &["trunc.npy", "holds"],
        ),
        t(
            "npy infinite value",
            "type = \"npy\"\npath = \"xinf.npy\"",
            "",
            &["xinf.npy", "infinite"],
        ),
        t(
            "npy labels 1 and 2",
            "type = \"npy\"\npath = \"x.npy\"\nlabels = \"lab12.npy\"",
            "",
            &["lab12.npy", "{1, 2}", "0..1"],
        ),
        t(
            "npy label 10^9",
            "type = \"npy\"\npath = \"x.npy\"\nlabels = \"labbig.npy\"",
            "",
            &["labbig.npy", "1000000000"],
        ),
        t(
            "npy negative label",
            "type = \"npy\"\npath = \"x.npy\"\nlabels = \"labneg.npy\"",
            "",
            &["labneg.npy", "negative"],
        ),
        t(
            "npy labels too few",
            "type = \"npy\"\npath = \"x.npy\"\nlabels = \"labshort.npy\"",
            "",
            &["5 labels for 20"],
        ),
        t(
            "npy channels last on 2-D",
            "type = \"npy\"\npath = \"x.npy\"\nchannels = \"last\"",
            "",
            &["channels", "4-D"],
        ),
        t(
            "npy too few to hold out",
            "type = \"npy\"\npath = \"x3.npy\"",
            "",
            &["data.held_out_every", "3 samples"],
        ),
        t(
            "npy held_out_every 1",
            "type = \"npy\"\npath = \"x.npy\"\nheld_out_every = 1",
            "",
            &["data.held_out_every"],
        ),
        t(
            "png mixed levels",
            "type = \"png\"\npath = \"mixed\"",
            "",
            &["stray.png", "top level"],
        ),
        t(
            "png few images",
            "type = \"png\"\npath = \"few\"",
            "",
            &["data.held_out_every", "3 samples"],
        ),
        t(
            "png none",
            "type = \"png\"\npath = \"nopng\"",
            "",
            &["no .png"],
        ),
        t(
            "png folder missing",
            "type = \"png\"\npath = \"nofolder\"",
            "",
            &["nofolder", "does not exist"],
        ),
        t(
            "idx dims overflow",
            "type = \"idx\"\nimages = \"idx_overflow\"",
            "",
            &["idx_overflow", "more than 2^64"],
        ),
        t(
            "idx truncated",
            "type = \"idx\"\nimages = \"idx_trunc\"",
            "",
            &["idx_trunc", "16 bytes"],
        ),
        t(
            "idx bad magic",
            "type = \"idx\"\nimages = \"idx_bad\"",
            "",
            &["idx_bad", "magic"],
        ),
        t("unknown data type", "type = \"jpegs\"", "", &["jpegs"]),
        t(
            "unknown data key",
            "type = \"moons\"\nsize = 3",
            "",
            &["size"],
        ),
        t("moons n zero", "type = \"moons\"\nn = 0", "", &["data.n"]),
        t(
            "moons negative noise",
            "type = \"moons\"\nnoise = -1.0",
            "",
            &["data.noise"],
        ),
        // ---- NetCDF data (issue #15's list)
        t(
            "netcdf missing variable",
            "type = \"netcdf\"\npath = \"f.nc\"\nvariables = [\"t\", \"nope\"]",
            "",
            &["f.nc", "no variable `nope`", "gone"],
        ),
        t(
            "netcdf mismatched grids across files",
            "type = \"netcdf\"\npath = \"grid_*.nc\"\nvariables = [\"t\"]",
            "",
            &["mismatched grids", "6×8", "6×10", "grid_2.nc"],
        ),
        t(
            "netcdf missing sample dimension",
            "type = \"netcdf\"\npath = \"f.nc\"\nvariables = [\"t\"]\nsample_dim = \"step\"",
            "",
            &["f.nc", "no dimension `step`", "data.sample_dim"],
        ),
        t(
            "netcdf all-NaN variable",
            "type = \"netcdf\"\npath = \"f.nc\"\nvariables = [\"t\", \"gone\"]",
            "",
            &["`gone`", "everywhere"],
        ),
        t(
            "netcdf grid does not fit the U-Net",
            "type = \"netcdf\"\npath = \"f.nc\"\nvariables = [\"t\"]",
            "[network]\npreset = \"ddpmpp-tiny\"\nchannel_mult = [1, 1, 1]",
            &["network.channel_mult", "6×10", "2^(levels−1) = 4"],
        ),
        t(
            "network label dropout instead of the trainer's",
            "type = \"moons\"",
            "[network]\npreset = \"mlp-small\"\nlabel_dropout = 0.2",
            &["network.label_dropout", "0.2", "training.label_dropout"],
        ),
        t(
            "conditioning factor that does not divide the grid",
            "type = \"fields\"\nsize = 8\nn = 16\nheld_out = 4",
            "[network]\npreset = \"ddpmpp-tiny\"\n[conditioning]\nkind = \"downscale\"\nfactor = 3",
            &["conditioning.factor", "8×8"],
        ),
        t(
            "conditioning with an unknown key",
            "type = \"fields\"\nsize = 8\nn = 16\nheld_out = 4",
            "[network]\npreset = \"ddpmpp-tiny\"\n[conditioning]\nkind = \"downscale\"\nfactor = 2\nfactr = 2",
            &["[conditioning]", "factr"],
        ),
        t(
            "conditioning on an MLP",
            "type = \"moons\"",
            "[conditioning]\nkind = \"downscale\"\nfactor = 2",
            &["conditioning", "unet"],
        ),
        t(
            "training steps wrong type",
            "type = \"moons\"",
            "[sampling]\nsteps = \"many\"",
            &["steps"],
        ),
    ];
    for (name, data, extra, needles) in train_cases {
        v.push(Case {
            args: vec![
                "train".into(),
                "--config".into(),
                format!("@{name}"),
                "--out".into(),
                format!("runs/{}", name.replace(' ', "_")),
                format!("@@{data}@@{extra}"),
            ],
            name,
            expect: Expect::Err(needles),
        });
    }
    v.push(err(
        "missing config file",
        "train --config nope.toml --out runs/nope",
        &["nope.toml"],
    ));
    // ---- eval and likelihood
    v.push(err(
        "eval of a missing run",
        "eval no_run_here",
        &["no_run_here"],
    ));
    v.push(err(
        "likelihood of a lying header",
        "likelihood --model gmm2d --data huge.npy --out l.npy",
        &["huge.npy"],
    ));
    // ---- valid input gives the right result
    v.push(ok(
        "fortran-order latents are read in logical order",
        "sample --model gmm2d --n 4 --steps 4 --out f.npy --latents fortran.npy --sampler euler",
        |d, _| {
            let x = read_rows(&d.join("f.npy"))?;
            if x.shape() != [4, 2] || x.iter().any(|v| !v.is_finite()) {
                return Err(format!("samples {x:?}"));
            }
            Ok(())
        },
    ));
    v.push(ok(
        "adaptive reports its true NFE",
        "sample --model gmm2d --n 64 --steps 2 --sampler adaptive --out a.npy",
        |d, out| {
            let nfe: usize = out
                .split("NFE ")
                .nth(1)
                .and_then(|r| r.split(')').next())
                .and_then(|n| n.trim().parse().ok())
                .ok_or(format!("no NFE in {out}"))?;
            let x = read_rows(&d.join("a.npy"))?;
            // gmm2d's components sit far apart: samples spread, not collapsed on the mean.
            let spread = x
                .column(0)
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            if nfe < 4 || spread.1 - spread.0 < 1.0 {
                return Err(format!("NFE {nfe}, x₀ range {spread:?}"));
            }
            Ok(())
        },
    ));
    v.push(ok(
        "png out writes the npy too",
        "sample --model ddpmpp-tiny.safetensors --out g.png --device cpu --n 4 --steps 2 --sampler euler",
        |d, _| {
            let x = read_rows(&d.join("g.npy"))?;
            let img = image::open(d.join("g.png")).map_err(|e| e.to_string())?;
            if x.shape() != [4, 64] || img.width() < 16 {
                return Err(format!("npy {:?}, png {}", x.shape(), img.width()));
            }
            Ok(())
        },
    ));
    // ---- image conditioning (downscaling)
    let down = |extra: &str| {
        format!("sample --model down.safetensors --device cpu --steps 2 --sampler euler {extra}")
    };
    v.extend([
        err(
            "conditioned checkpoint without a condition",
            &down("--n 2 --out d.npy"),
            &["down.safetensors", "downscale ×2", "--condition"],
        ),
        err(
            "condition of the wrong size",
            &down("--n 2 --out d.npy --condition low_wrong.npy"),
            &["low_wrong.npy", "[2, 1, 2, 2]", "[M, 1, 4, 4]"],
        ),
        err(
            "condition with NaN",
            &down("--n 2 --out d.npy --condition low_nan.npy"),
            &["low_nan.npy", "NaN", "field 1"],
        ),
        err(
            "n not a multiple of the conditions",
            &down("--n 3 --out d.npy --condition low.npy"),
            &["--n 3", "multiple", "2 conditions"],
        ),
        err(
            "condition for an unconditioned checkpoint",
            "sample --model ddpmpp-tiny.safetensors --device cpu --n 2 --out d.npy --condition low.npy",
            &["low.npy", "not conditioned"],
        ),
        err(
            "condition for a mixture",
            "sample --model gmm2d --n 2 --out d.npy --condition low.npy",
            &["--condition", "mixtures"],
        ),
        ok(
            "downscaling samples given two conditions",
            &down("--n 4 --out d.npy --condition low.npy"),
            |d, _| {
                let x = read_rows(&d.join("d.npy"))?;
                if x.shape() != [4, 64] || x.iter().any(|v| !v.is_finite()) {
                    return Err(format!("shape {:?}", x.shape()));
                }
                Ok(())
            },
        ),
    ]);
    v.push(ok(
        "mixture samples to npy",
        "sample --model gmm2d --n 10 --steps 8 --out m.npy",
        |d, _| {
            let x = read_rows(&d.join("m.npy"))?;
            if x.shape() != [10, 2] {
                return Err(format!("shape {:?}", x.shape()));
            }
            Ok(())
        },
    ));
    v.extend(classifier_cases());
    v
}

#[test]
fn every_bad_input_ends_in_a_clear_error_or_the_right_result() {
    let dir = std::env::temp_dir().join(format!("tweedie-bad-input-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    fixtures(&dir);
    let model_bytes = std::fs::read(dir.join("ddpmpp-tiny.safetensors")).unwrap();
    let all = cases();
    assert!(all.len() >= 60, "the corpus has {} cases", all.len());
    let mut failures = Vec::new();
    for case in &all {
        // Train cases carry their config inline: `@name` and `@@data@@extra`.
        let mut args = case.args.clone();
        if let Some(inline) = args.iter().position(|a| a.starts_with("@@")) {
            let spec = args.remove(inline);
            let mut parts = spec[2..].splitn(2, "@@");
            let (data, extra) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            for a in args.iter_mut().filter(|a| a.starts_with('@')) {
                *a = train_config(&dir, &a[1..].replace(' ', "_"), data, extra);
            }
        }
        let outcome = run(&dir, &args);
        let verdict = match (&case.expect, outcome) {
            (_, Err(e)) => Some(e),
            (Expect::Err(needles), Ok((code, text))) => {
                let missing: Vec<&&str> = needles.iter().filter(|n| !text.contains(**n)).collect();
                if code != Some(1) || text.contains("panicked") {
                    Some(format!("exit {code:?} (want 1): {text}"))
                } else if !missing.is_empty() {
                    Some(format!("message lacks {missing:?}: {text}"))
                } else {
                    None
                }
            }
            (Expect::Ok(check), Ok((code, text))) => {
                if code != Some(0) {
                    Some(format!("exit {code:?} (want 0): {text}"))
                } else {
                    check(&dir, &text).err()
                }
            }
        };
        if let Some(v) = verdict {
            failures.push(format!(
                "- {}: `tweedie {}`: {v}",
                case.name,
                args.join(" ")
            ));
        }
    }
    // `--out` equal to `--model` must leave the checkpoint untouched.
    if std::fs::read(dir.join("ddpmpp-tiny.safetensors"))
        .ok()
        .as_ref()
        != Some(&model_bytes)
    {
        failures.push("- out equal to model: the checkpoint changed".into());
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    std::fs::remove_dir_all(&dir).ok();
}
