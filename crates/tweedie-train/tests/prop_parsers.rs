//! Property tests of the parsers and validators that read user input: the `.npy` header and
//! reader, the IDX reader, `[diffusion]` and whole training configs. Arbitrary bytes or values
//! either parse or return an error, never panic; written arrays read back exactly.

use std::path::PathBuf;

use proptest::prelude::*;
use tweedie_train::data::npy::{self, parse_header, Dtype, Values};
use tweedie_train::{DiffusionConfig, TrainConfig};

/// 64 cases per property: each runs in well under a second on a loaded 2-core machine.
fn config() -> ProptestConfig {
    ProptestConfig::with_cases(64)
}

/// A syntactically valid `.npy` header around arbitrary descr, order and shape text, so that
/// the cases reach the dict parsing rather than stopping at the magic string.
fn npy_header() -> impl Strategy<Value = Vec<u8>> {
    let descr = prop_oneof![
        prop::sample::select(vec![
            "'<f8'",
            "'>f4'",
            "'|u1'",
            "'<i4'",
            "'<i8'",
            "'<c16'",
            "[('a', '<f4')]",
            "'é'",
            "'<'",
            "''",
            "'"
        ])
        .prop_map(str::to_string),
        "\\PC{0,6}".prop_map(|s| format!("'{s}'")),
    ];
    let order = prop::sample::select(vec!["True", "False", "1", "", "Tru"]);
    let shape = prop_oneof![
        prop::collection::vec(any::<u64>(), 0..4).prop_map(|v| format!(
            "({})",
            v.iter().map(|d| format!("{d}, ")).collect::<String>()
        )),
        "\\PC{0,12}",
    ];
    (
        descr,
        order,
        shape,
        prop::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(|(d, o, s, data, v2)| {
            let dict = format!("{{'descr': {d}, 'fortran_order': {o}, 'shape': {s}, }}\n");
            let mut b = b"\x93NUMPY".to_vec();
            if v2 {
                b.extend_from_slice(&[2, 0]);
                b.extend_from_slice(&(dict.len() as u32).to_le_bytes());
            } else {
                b.extend_from_slice(&[1, 0]);
                b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
            }
            b.extend_from_slice(dict.as_bytes());
            b.extend_from_slice(&data);
            b
        })
}

fn temp_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// An IDX file: the magic bytes, ndim, big-endian u32 dims and data, each possibly wrong.
fn idx_file() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![0x08u8, 0x0D, 0x00]),
        prop::collection::vec(prop_oneof![0u32..6, any::<u32>()], 0..5),
        prop::collection::vec(any::<u8>(), 0..200),
        0usize..4,
    )
        .prop_map(|(ty, dims, data, cut)| {
            let mut b = vec![0, 0, ty, dims.len() as u8];
            for d in &dims {
                b.extend_from_slice(&d.to_be_bytes());
            }
            b.extend_from_slice(&data);
            b.truncate(b.len().saturating_sub(cut));
            b
        })
}

/// A TOML value literal for config keys: numbers of every class and size, strings, booleans,
/// arrays and tables.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|v| if v.is_nan() {
            "nan".into()
        } else if v.is_infinite() {
            (if v > 0.0 { "inf" } else { "-inf" }).into()
        } else {
            format!("{v:e}")
        }),
        any::<i64>().prop_map(|v| v.to_string()),
        (0i64..10).prop_map(|v| v.to_string()),
        prop::sample::select(vec![
            "true",
            "\"\"",
            "\"heun\"",
            "\"edm\"",
            "\"EDM\"",
            "\"cpu\"",
            "\"mixture\"",
            "[]",
            "[1, 2]",
            "[0.0]",
            "[1e9]",
            "{}",
            "{ type = \"edm\" }",
            "\"ddpmpp-tiny\"",
            "-0.0",
            "1e-320",
        ])
        .prop_map(str::to_string),
    ]
}

const CONFIG_KEYS: &[&str] = &[
    "sampling.steps",
    "sampling.sampler",
    "sampling.grid",
    "sampling.s_churn",
    "sampling.eta",
    "data.type",
    "data.n",
    "data.held_out",
    "data.preset",
    "network.preset",
    "network.hidden",
    "network.num_blocks",
    "network.channel_mult",
    "training.batch_size",
    "training.lr",
    "training.warmup_steps",
    "training.grad_clip",
    "training.steps",
    "training.checkpoint_every",
    "training.seed",
    "training.ema",
    "training.device",
    "eval.n_samples",
    "eval.batch_size",
    "eval.denoiser_sigmas",
    "diffusion.type",
    "diffusion.sigma_data",
    "diffusion.sigma_min",
    "diffusion.sigma_max",
    "diffusion.rho",
    "diffusion.p_mean",
    "diffusion.p_std",
    "diffusion.m",
    "diffusion.num_steps",
    "nonsense.key",
    "training.nonsense",
];

const DIFFUSION_TYPES: &[&str] = &["EDM", "VP", "VE", "iDDPM", "flow", "eps", "v", "edm", "x"];
const DIFFUSION_KEYS: &[&str] = &[
    "sigma_data",
    "sigma_min",
    "sigma_max",
    "rho",
    "p_mean",
    "p_std",
    "beta_min",
    "beta_d",
    "eps_t",
    "m",
    "c1",
    "c2",
    "j0",
    "num_steps",
    "schedule",
    "t_min",
    "t_max",
    "learn_sigma",
    "weighting",
    "unknown",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn npy_headers_of_arbitrary_bytes_parse_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        let mut with_magic = b"\x93NUMPY".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = parse_header(&bytes);
        let _ = parse_header(&with_magic);
    }

    #[test]
    fn npy_files_with_arbitrary_headers_read_or_fail(bytes in npy_header()) {
        let dir = tempfile::tempdir().unwrap();
        if let Ok(h) = parse_header(&bytes) {
            prop_assert!(h.data_offset <= bytes.len());
        }
        match npy::read(&temp_file(&dir, "a.npy", &bytes)) {
            // What was read is exactly what the header declared.
            Ok(v) => {
                let h = parse_header(&bytes).unwrap();
                prop_assert_eq!(v.shape(), &h.shape[..]);
                prop_assert_eq!(h.shape.iter().product::<usize>() * h.dtype.size(), bytes.len() - h.data_offset);
            }
            Err(e) => prop_assert!(e.to_string().contains("a.npy"), "{}", e),
        }
    }

    #[test]
    fn written_arrays_read_back_exactly(
        shape in prop::collection::vec(0usize..5, 0..4),
        seed in any::<u64>(),
        dtype in 0usize..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let n: usize = shape.iter().product();
        // Values of every bit pattern of the type (f64 from raw bits: NaN payloads included).
        let bits: Vec<u64> = (0..n as u64)
            .map(|i| (seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(i as u32 % 64))
            .collect();
        let back = |p: &std::path::Path| npy::read(p).unwrap();
        match dtype {
            0 => {
                let v: Vec<f64> = bits.iter().map(|&b| f64::from_bits(b)).collect();
                npy::write(&p, &shape, &v).unwrap();
                let Values::F64(a) = back(&p) else { panic!("dtype") };
                prop_assert_eq!(a.shape(), &shape[..]);
                prop_assert!(a.iter().zip(&v).all(|(x, y)| x.to_bits() == y.to_bits()));
            }
            1 => {
                let v: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b as u32)).collect();
                npy::write(&p, &shape, &v).unwrap();
                let Values::F32(a) = back(&p) else { panic!("dtype") };
                prop_assert_eq!(a.shape(), &shape[..]);
                prop_assert!(a.iter().zip(&v).all(|(x, y)| x.to_bits() == y.to_bits()));
            }
            2 => {
                let v: Vec<i64> = bits.iter().map(|&b| b as i64).collect();
                npy::write(&p, &shape, &v).unwrap();
                let Values::I64(a) = back(&p) else { panic!("dtype") };
                prop_assert_eq!(a.iter().copied().collect::<Vec<_>>(), v);
            }
            3 => {
                let v: Vec<i32> = bits.iter().map(|&b| b as i32).collect();
                npy::write(&p, &shape, &v).unwrap();
                let Values::I32(a) = back(&p) else { panic!("dtype") };
                prop_assert_eq!(a.iter().copied().collect::<Vec<_>>(), v);
            }
            _ => {
                let v: Vec<u8> = bits.iter().map(|&b| b as u8).collect();
                npy::write(&p, &shape, &v).unwrap();
                let Values::U8(a) = back(&p) else { panic!("dtype") };
                prop_assert_eq!(a.iter().copied().collect::<Vec<_>>(), v);
            }
        }
        let h = parse_header(&std::fs::read(&p).unwrap()).unwrap();
        prop_assert_eq!(h.data_offset % 64, 0);
        prop_assert!(!h.fortran_order && !h.big_endian);
        prop_assert!(matches!(h.dtype, Dtype::F64 | Dtype::F32 | Dtype::I64 | Dtype::I32 | Dtype::U8));
    }

    #[test]
    fn idx_files_load_or_fail(images in idx_file(), labels in idx_file(), with_labels in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let i = temp_file(&dir, "images.idx", &images);
        let l = temp_file(&dir, "labels.idx", &labels);
        match tweedie_train::data::user::load_idx(&i, with_labels.then_some(l.as_path())) {
            Ok(loaded) => {
                // Only a well-formed [N, H, W] u8 file loads: its header says what it holds.
                prop_assert_eq!(images[3], 3);
                let dims: Vec<usize> = (0..3)
                    .map(|k| u32::from_be_bytes(images[4 + 4 * k..8 + 4 * k].try_into().unwrap()) as usize)
                    .collect();
                prop_assert_eq!(dims.iter().product::<usize>(), images.len() - 16);
                prop_assert_eq!(loaded.x.nrows(), dims[0]);
            }
            Err(e) => {
                let m = e.to_string();
                prop_assert!(m.contains("images.idx") || m.contains("labels.idx") || m.contains("IDX"), "{}", m);
            }
        }
    }

    #[test]
    fn diffusion_tables_parse_or_name_the_problem(
        ty in prop::sample::select(DIFFUSION_TYPES),
        kv in prop::collection::vec((prop::sample::select(DIFFUSION_KEYS), toml_value()), 0..4),
        with_type in any::<bool>(),
    ) {
        let mut text = if with_type { format!("type = \"{ty}\"\n") } else { String::new() };
        let mut seen = Vec::new();
        for (k, v) in kv {
            if !seen.contains(&k) {
                seen.push(k);
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        let value: toml::Value = toml::from_str(&text).unwrap();
        if let Ok(c) = DiffusionConfig::from_toml(value) {
            let _ = c.resolve();
        }
    }

    #[test]
    fn training_configs_with_any_overrides_load_or_name_the_key(
        sets in prop::collection::vec((prop::sample::select(CONFIG_KEYS), toml_value()), 1..4),
    ) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/toy-edm.toml");
        let sets: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = TrainConfig::from_file(&path, &sets);
    }
}
