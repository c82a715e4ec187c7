//! Parameter counts against the reference, reference names, and a forward pass per small preset.

use tch::{nn, Device, Kind, Tensor};
use tweedie_nets::{build_network, count_params, params_report, NetConfig, NetsError, PRESETS};

fn names(cfg: &NetConfig) -> std::collections::HashMap<String, Vec<i64>> {
    let vs = nn::VarStore::new(Device::Cpu);
    tch::no_grad(|| build_network(&(vs.root() / "model"), cfg)).unwrap();
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.size()))
        .collect()
}

#[test]
fn cifar10_parameter_counts_match_reference() {
    // Published by NVlabs/edm (training log "Parameters"): exact.
    for (name, want) in [
        ("ddpmpp-cifar10", 55_732_739),
        ("ddpmpp-cifar10-cond", 55_734_147),
        ("ncsnpp-cifar10", 56_395_523),
    ] {
        let c = count_params(&NetConfig::preset(name).unwrap()).unwrap();
        assert_eq!(c.parameters, want, "{name}");
    }
}

#[test]
fn ddpmpp_cifar10_tensor_counts_and_reference_names() {
    let cfg = NetConfig::preset("ddpmpp-cifar10").unwrap();
    let c = count_params(&cfg).unwrap();
    assert_eq!((c.parameter_tensors, c.buffers), (416, 8));
    let n = names(&cfg);
    for (k, shape) in [
        ("model.map_layer0.weight", vec![512, 128]),
        ("model.enc.32x32_conv.weight", vec![128, 3, 3, 3]),
        ("model.enc.32x32_block0.norm0.weight", vec![128]),
        ("model.enc.32x32_block0.affine.weight", vec![256, 512]),
        ("model.enc.16x16_block0.qkv.weight", vec![768, 256, 1, 1]),
        (
            "model.enc.16x16_down.conv0.resample_filter",
            vec![1, 1, 2, 2],
        ),
        (
            "model.enc.16x16_down.skip.resample_filter",
            vec![1, 1, 2, 2],
        ),
        ("model.dec.32x32_aux_conv.bias", vec![3]),
        ("model.dec.8x8_in0.proj.weight", vec![256, 256, 1, 1]),
        ("model.dec.32x32_block4.conv0.weight", vec![256, 384, 3, 3]),
        ("model.dec.16x16_up.conv0.resample_filter", vec![1, 1, 2, 2]),
    ] {
        assert_eq!(n.get(k), Some(&shape), "{k}");
    }
    assert!(!n.contains_key("model.map_label.weight"));
    assert!(
        !n.contains_key("model.enc.32x32_block0.qkv.weight"),
        "no attention at 32x32"
    );
}

#[test]
fn ncsnpp_has_fourier_and_residual_names() {
    let n = names(&NetConfig::preset("ncsnpp-cifar10").unwrap());
    assert_eq!(n.get("model.map_noise.freqs"), Some(&vec![128]));
    assert_eq!(
        n.get("model.enc.16x16_aux_residual.weight"),
        Some(&vec![256, 3, 3, 3])
    );
    assert_eq!(
        n.get("model.enc.8x8_aux_residual.resample_filter"),
        Some(&vec![1, 1, 4, 4])
    );
    let cond = names(&NetConfig::preset("ddpmpp-cifar10-cond").unwrap());
    assert_eq!(cond.get("model.map_label.weight"), Some(&vec![128, 10]));
}

#[test]
fn small_presets_run_forward_with_right_shapes() {
    tch::manual_seed(0);
    // Full-size presets (CIFAR-10, ImageNet) are counted in their own tests.
    for &name in PRESETS
        .iter()
        .filter(|n| !n.contains("cifar10") && !n.contains("imagenet"))
    {
        let cfg = NetConfig::preset(name).unwrap();
        let c = count_params(&cfg).unwrap();
        // Tiny presets must train in well under a second per 64-batch on 2 cores.
        let cap = if name.contains("tiny") || name.starts_with("mlp") {
            400_000
        } else {
            1_500_000
        };
        assert!(
            c.parameters < cap,
            "{name}: {} params is too many for a CPU preset",
            c.parameters
        );
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build_network(&(vs.root() / "model"), &cfg).unwrap();
        let mut shape = vec![3i64];
        shape.extend(cfg.sample_shape());
        let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
        let y = net.forward(
            &x,
            &Tensor::from_slice(&[0.1f32, -0.5, 2.0]),
            None,
            None,
            true,
        );
        assert_eq!(y.size(), shape, "{name}");
        assert!(bool::try_from(y.isfinite().all()).unwrap(), "{name}");
        eprintln!("{name}: {} params", c.parameters);
    }
}

#[test]
fn params_report_and_unknown_preset() {
    let r = params_report("ddpmpp-tiny").unwrap();
    assert!(r.starts_with("ddpmpp-tiny: "), "{r}");
    match NetConfig::preset("ddpm-typo") {
        Err(NetsError::UnknownPreset { name, known }) => {
            assert_eq!(name, "ddpm-typo");
            assert!(known.contains("ddpmpp-cifar10"));
        }
        other => panic!("expected UnknownPreset, got {other:?}"),
    }
}

#[test]
fn small_preset_counts_are_pinned() {
    // Not reference values: pinned so that a change to a CPU preset is a visible decision.
    for (name, want) in [
        ("ddpmpp-tiny", 274_401),
        ("ncsnpp-tiny", 276_769),
        ("ddpmpp-small", 1_192_835),
        ("mlp-2d", 174_082),
        ("mlp-small", 33_602),
    ] {
        assert_eq!(
            count_params(&NetConfig::preset(name).unwrap())
                .unwrap()
                .parameters,
            want,
            "{name}"
        );
    }
}
