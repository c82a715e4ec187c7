//! DhariwalUNet (ADM): the ImageNet-64 preset's parameter count equals the reference's, the
//! shape-only count equals a real build on small configs, names follow EDM's state_dict.

use tch::{nn::VarStore, Device, Kind, Tensor};
use tweedie_nets::{
    build_network, count_params, params_report, DhariwalConfig, NetConfig, ParamCount,
};

fn small(f: impl FnOnce(&mut DhariwalConfig)) -> DhariwalConfig {
    let NetConfig::Dhariwal(mut c) = NetConfig::preset("adm-small").unwrap() else {
        panic!("adm-small is an ADM preset")
    };
    f(&mut c);
    c
}

/// EDM's DhariwalUNet at `--arch=adm --cond=1` on ImageNet-64 (192 channels, mult [1,2,3,4],
/// 3 blocks, attention at 32/16/8, 1000 classes) has 295,899,267 parameters in 541 tensors and
/// 12 resample-filter buffers: counted with EDM's own networks.py on PyTorch's meta device; the
/// EDM paper rounds it to 296 M.
#[test]
fn imagenet64_preset_matches_the_reference_count() {
    let NetConfig::Dhariwal(c) = NetConfig::preset("adm-imagenet64").unwrap() else {
        panic!()
    };
    assert_eq!(
        c.shape_count(),
        ParamCount {
            parameters: 295_899_267,
            parameter_tensors: 541,
            buffers: 12
        }
    );
    assert_eq!(
        params_report("adm-imagenet64").unwrap(),
        "adm-imagenet64: 295,899,267 parameters in 541 tensors (+12 buffers)"
    );
}

#[test]
fn shape_only_count_equals_a_real_build() {
    let cases = [
        small(|_| {}),
        small(|c| {
            c.label_dim = 7;
            c.augment_dim = 9;
        }),
        // 128 channels at 4×4: two heads; 2× outputs as iDDPM builds it; three levels.
        small(|c| {
            c.model_channels = 64;
            c.channel_mult = vec![1, 2, 2];
            c.attn_resolutions = vec![8, 4, 2];
            c.out_channels = 2;
            c.num_blocks = 2;
        }),
    ];
    for c in cases {
        let built = count_params(&NetConfig::Dhariwal(c.clone())).unwrap();
        assert_eq!(c.shape_count(), built, "{c:?}");
    }
}

#[test]
fn names_follow_the_reference_state_dict() {
    let c = small(|c| {
        c.model_channels = 64;
        c.label_dim = 3;
        c.augment_dim = 9;
    });
    let vs = VarStore::new(Device::Cpu);
    build_network(&(vs.root() / "model"), &NetConfig::Dhariwal(c)).unwrap();
    let v = vs.variables();
    let shape = |n: &str| v.get(n).unwrap_or_else(|| panic!("no `{n}`")).size();
    assert_eq!(shape("model.enc.8x8_conv.weight"), [64, 1, 3, 3]);
    assert_eq!(shape("model.map_label.weight"), [256, 3]);
    assert!(
        !v.contains_key("model.map_label.bias"),
        "no bias on the label map"
    );
    assert_eq!(shape("model.map_augment.weight"), [64, 9]);
    // Scale and shift for the 64 channels that enter the 4×4 level.
    assert_eq!(shape("model.enc.4x4_down.affine.weight"), [128, 256]);
    // A same-width down block's skip is the bare filter: a buffer, no weight.
    assert_eq!(
        shape("model.enc.4x4_down.skip.resample_filter"),
        [1, 1, 2, 2]
    );
    assert!(!v.contains_key("model.enc.4x4_down.skip.weight"));
    assert_eq!(shape("model.dec.4x4_in0.qkv.weight"), [384, 128, 1, 1]);
    assert_eq!(
        shape("model.dec.8x8_up.conv0.resample_filter"),
        [1, 1, 2, 2]
    );
    assert_eq!(shape("model.out_norm.weight"), [64]);
    assert_eq!(shape("model.out_conv.weight"), [1, 64, 3, 3]);
}

#[test]
fn forward_shapes_and_zero_initialised_output() {
    let c = small(|c| c.label_dim = 2);
    let vs = VarStore::new(Device::Cpu);
    let net = build_network(&(vs.root() / "model"), &NetConfig::Dhariwal(c)).unwrap();
    let x = Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[1f32, 0., 0., 1., 1., 0.]).reshape([3, 2]);
    let out = net.forward(
        &x,
        &Tensor::from_slice(&[0.1f32, 1.0, 5.0]),
        Some(&y),
        None,
        false,
    );
    assert_eq!(out.size(), [3, 1, 8, 8]);
    // ADM zero-initialises out_conv: a fresh network outputs exactly 0.
    assert_eq!(out.abs().max().double_value(&[]), 0.0);
}

#[test]
fn bad_head_split_is_refused_by_name() {
    let c = small(|c| {
        c.model_channels = 112;
        c.channel_mult = vec![1, 2];
    });
    // 224 channels at 4×4 → 224/64 = 3 heads, which do not divide 224 (EDM's reshape would fail).
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("model_channels")
            && e.contains("224 channels do not split into 3 attention heads"),
        "{e}"
    );
}
