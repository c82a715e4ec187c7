//! Checkpoint round trip and every failure mode as a typed error naming the file or tensor.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tch::{Device, Kind, Tensor};
use tweedie_core::Precond;
use tweedie_nets::checkpoint::{save_tensors, FORMAT_VERSION, META_FORMAT};
use tweedie_nets::{
    load_checkpoint, load_reference_state_dict, read_config, save_checkpoint, ModelConfig,
    NetConfig, NetsError, UnetConfig, Wrapper,
};

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tweedie-nets-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny() -> ModelConfig {
    ModelConfig {
        net: NetConfig::preset("ddpmpp-tiny").unwrap(),
        wrapper: Wrapper::Precond(Precond::edm()),
        conditioning: None,
    }
}

fn with_net(f: impl FnOnce(&mut UnetConfig)) -> ModelConfig {
    let mut c = tiny();
    if let NetConfig::Unet(u) = &mut c.net {
        f(u);
    }
    c
}

#[test]
fn round_trip_restores_config_weights_and_metadata() {
    tch::manual_seed(5);
    let dir = tmp_dir("rt");
    let path = dir.join("ckpt.safetensors");
    let cfg = tiny();
    let (vs, d) = cfg.build(Device::Cpu).unwrap();
    let mut extra = BTreeMap::new();
    extra.insert("kimg".to_string(), "12.5".to_string());
    save_checkpoint(&path, &vs, &cfg, &extra).unwrap();
    // Saving again over the file works and leaves no temporary file behind.
    save_checkpoint(&path, &vs, &cfg, &extra).unwrap();
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["ckpt.safetensors".to_string()]);

    let loaded = load_checkpoint(&path, Device::Cpu).unwrap();
    assert_eq!(loaded.config, cfg);
    assert_eq!(loaded.extra.get("kimg").map(String::as_str), Some("12.5"));
    assert_eq!(read_config(&path).unwrap().0, cfg);
    let x = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));
    let s = Tensor::from_slice(&[0.3, 4.0]);
    let a = d.denoise(&x, &s, None).unwrap();
    let b = loaded.denoiser.denoise(&x, &s, None).unwrap();
    assert!(
        bool::try_from(a.eq_tensor(&b).all()).unwrap(),
        "bit-identical after reload"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_truncated_and_garbage_files_are_clear_errors() {
    let dir = tmp_dir("bad");
    let path = dir.join("ckpt.safetensors");
    match load_checkpoint(&path, Device::Cpu) {
        Err(NetsError::CheckpointNotFound { path: p }) => assert_eq!(p, path),
        other => panic!("expected CheckpointNotFound, got {other:?}"),
    }
    let cfg = tiny();
    let (vs, _) = cfg.build(Device::Cpu).unwrap();
    save_checkpoint(&path, &vs, &cfg, &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for cut in [4, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = load_checkpoint(&path, Device::Cpu).unwrap_err();
        assert!(
            matches!(e, NetsError::CheckpointCorrupt { .. }),
            "cut at {cut}: {e}"
        );
        assert!(e.to_string().contains("ckpt.safetensors"), "{e}");
    }
    std::fs::write(&path, b"not a checkpoint at all, just some text").unwrap();
    assert!(matches!(
        load_checkpoint(&path, Device::Cpu),
        Err(NetsError::CheckpointCorrupt { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mismatched_weights_name_the_tensor() {
    let dir = tmp_dir("mm");
    let path = dir.join("ckpt.safetensors");
    let cfg = tiny();
    let (vs, _) = cfg.build(Device::Cpu).unwrap();
    save_checkpoint(&path, &vs, &cfg, &BTreeMap::new()).unwrap();

    // Wider network: first tensor in name order with another shape.
    let wide = with_net(|u| u.model_channels = 48);
    match load_reference_state_dict(&path, &wide, Device::Cpu) {
        Err(NetsError::ShapeMismatch {
            name,
            expected,
            found,
            ..
        }) => {
            assert!(name.starts_with("model."), "{name}");
            assert_ne!(expected, found);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    // Deeper network: a block the file lacks.
    let deep = with_net(|u| u.num_blocks = 2);
    match load_reference_state_dict(&path, &deep, Device::Cpu) {
        Err(NetsError::MissingTensor { name, .. }) => assert!(
            name.contains("_block1") || name.contains("_block2"),
            "{name}"
        ),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    // Network without attention: the file has attention tensors it does not know.
    let no_attn = with_net(|u| u.attn_resolutions.clear());
    match load_reference_state_dict(&path, &no_attn, Device::Cpu) {
        Err(NetsError::UnexpectedTensor { name, .. }) => assert!(
            name.contains("qkv") || name.contains("proj") || name.contains("norm2"),
            "{name}"
        ),
        other => panic!("expected UnexpectedTensor, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plain_state_dict_needs_the_reference_loader() {
    let dir = tmp_dir("ref");
    let path = dir.join("edm.safetensors");
    let cfg = tiny();
    let (vs, d) = cfg.build(Device::Cpu).unwrap();
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    // A reference iDDPM export also carries its u-grid buffer, which core recomputes.
    named.push((
        "u".to_string(),
        Tensor::zeros([1001], (Kind::Float, Device::Cpu)),
    ));
    save_tensors(&path, &named, &BTreeMap::new()).unwrap();
    match load_checkpoint(&path, Device::Cpu) {
        Err(NetsError::CheckpointMetadata { .. }) => {}
        other => panic!("expected CheckpointMetadata, got {other:?}"),
    }
    let loaded = load_reference_state_dict(&path, &cfg, Device::Cpu).unwrap();
    let x = Tensor::randn([1, 1, 8, 8], (Kind::Float, Device::Cpu));
    let a = d.denoise_at(&x, 1.0, None).unwrap();
    let b = loaded.denoiser.denoise_at(&x, 1.0, None).unwrap();
    assert!(bool::try_from(a.eq_tensor(&b).all()).unwrap());

    // A future format version is refused, not misread.
    let mut meta = BTreeMap::new();
    meta.insert(META_FORMAT.to_string(), format!("{FORMAT_VERSION}9"));
    meta.insert(
        "tweedie.model".to_string(),
        serde_json::to_string(&cfg).unwrap(),
    );
    save_tensors(&path, &named, &meta).unwrap();
    assert!(matches!(
        load_checkpoint(&path, Device::Cpu),
        Err(NetsError::CheckpointMetadata { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ema_checkpoint_holds_the_averaged_weights() {
    use tweedie_nets::{save_ema_checkpoint, Ema, EmaSchedule};
    let dir = tmp_dir("ema");
    let path = dir.join("ema.safetensors");
    let cfg = tiny();
    let (vs, _) = cfg.build(Device::Cpu).unwrap();
    let mut ema = Ema::new(
        &vs,
        EmaSchedule::Power {
            inv_gamma: 1.0,
            power: 1.0,
            max_decay: 1.0,
            min_decay: 0.0,
        },
    )
    .unwrap();
    ema.update(&vs, 0, 1).unwrap();
    // Move the live weights away; the checkpoint must hold the average, not these.
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            if t.requires_grad() {
                let _ = t.f_add_scalar_(1.0);
            }
        }
    });
    save_ema_checkpoint(&path, &vs, &ema, &cfg, &BTreeMap::new()).unwrap();
    let loaded = load_checkpoint(&path, Device::Cpu).unwrap();
    assert_eq!(
        loaded.extra.get("tweedie.ema_step").map(String::as_str),
        Some("1")
    );
    let got = loaded.vs.variables();
    for (name, t) in ema.tensors() {
        assert!(
            bool::try_from(got[name].eq_tensor(t).all()).unwrap(),
            "{name}"
        );
    }
    let f = "model.enc.4x4_down.conv0.resample_filter";
    assert_eq!(
        got[f].size(),
        vec![1, 1, 2, 2],
        "buffers come from the var store"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small file whose metadata describes `cfg`, holding one 1-value tensor.
fn claim(dir: &std::path::Path, tag: &str, cfg: &ModelConfig) -> PathBuf {
    let p = dir.join(format!("{tag}.safetensors"));
    let mut meta = BTreeMap::new();
    meta.insert(
        tweedie_nets::checkpoint::META_MODEL.to_string(),
        serde_json::to_string(cfg).unwrap(),
    );
    meta.insert(META_FORMAT.to_string(), FORMAT_VERSION.to_string());
    save_tensors(&p, &[("x".to_string(), Tensor::from_slice(&[0f32]))], &meta).unwrap();
    p
}

/// Untrusted metadata is checked from shapes before any network is built: a few hundred bytes
/// asking for a giant network, 65 levels, or outputs the denoiser cannot use are clear errors
/// (they used to panic, abort on allocation, or broadcast silently).
#[test]
fn untrusted_metadata_is_refused_before_building() {
    let dir = tmp_dir("untrusted");
    let cases: Vec<(&str, ModelConfig, Vec<&str>)> = vec![
        (
            "giant",
            with_net(|u| {
                u.resolution = 64;
                u.model_channels = 8192;
                u.channel_mult = vec![8, 8, 8, 8];
                u.num_blocks = 64;
            }),
            vec!["parameters", "GiB"],
        ),
        (
            "cifar",
            ModelConfig {
                net: NetConfig::preset("ddpmpp-cifar10").unwrap(),
                wrapper: Wrapper::Precond(Precond::edm()),
                conditioning: None,
            },
            vec!["at least", "holds only 1 values"],
        ),
        (
            "levels",
            with_net(|u| u.channel_mult = vec![1; 65]),
            vec!["channel_mult", "at most 16"],
        ),
        (
            "noise",
            with_net(|u| u.channel_mult_noise = usize::MAX / 2),
            vec!["channel_mult_noise"],
        ),
        (
            "channels",
            with_net(|u| u.out_channels = 3),
            vec!["out_channels", "in_channels = 1"],
        ),
    ];
    for (tag, cfg, words) in cases {
        let p = claim(&dir, tag, &cfg);
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(size < 2048, "{tag}: {size} bytes");
        for res in [
            load_checkpoint(&p, Device::Cpu).map(|_| ()),
            read_config(&p).map(|_| ()),
        ] {
            match res {
                Err(e @ NetsError::CheckpointMetadata { .. }) => {
                    let m = e.to_string();
                    assert!(m.contains(&*p.to_string_lossy()), "{tag}: {m}");
                    for w in &words {
                        assert!(m.contains(w), "{tag}: `{w}` not in {m}");
                    }
                }
                other => panic!("{tag}: expected a metadata error, got {other:?}"),
            }
        }
    }
}

/// A NaN or infinite weight is refused, naming the tensor.
#[test]
fn untrusted_weights_with_nan_or_inf_name_the_tensor() {
    let dir = tmp_dir("nan");
    let cfg = tiny();
    let (vs, _) = cfg.build(Device::Cpu).unwrap();
    let p = dir.join("good.safetensors");
    save_checkpoint(&p, &vs, &cfg, &BTreeMap::new()).unwrap();
    load_checkpoint(&p, Device::Cpu).unwrap();
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().filter(|n| n.ends_with("conv.weight")).collect();
    names.sort();
    let name = names.last().map(|n| n.to_string()).unwrap_or_default();
    for bad in [f64::NAN, f64::INFINITY] {
        let Some(w) = vars.get(&name) else {
            panic!("no {name} in {:?}", vars.keys().collect::<Vec<_>>())
        };
        tch::no_grad(|| {
            let _ = w.shallow_clone().fill_(bad);
        });
        save_checkpoint(&p, &vs, &cfg, &BTreeMap::new()).unwrap();
        match load_checkpoint(&p, Device::Cpu) {
            Err(e @ NetsError::NonFiniteTensor { .. }) => {
                assert!(e.to_string().contains(&name), "{e}")
            }
            other => panic!("expected a non-finite weight error, got {other:?}"),
        }
    }
}
