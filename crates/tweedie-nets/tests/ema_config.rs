//! EMA against hand-computed values; configs through TOML/JSON; device strings.

use approx::assert_relative_eq;
use tch::{nn, Device, Tensor};
use tweedie_core::InvalidValue;
use tweedie_nets::{DeviceSpec, Ema, EmaSchedule, ModelConfig, NetConfig, NetsError, UnetConfig};

#[test]
fn edm_halflife_beta_matches_hand_values() {
    let s = EmaSchedule::edm_default();
    // β = 0.5^(512 / min(500 000, 0.05·n)).
    assert_eq!(s.beta(0, 0, 512), 0.0, "first update copies the weights");
    assert_relative_eq!(
        s.beta(7, 10_000, 512),
        0.491_751_037_013_124_17,
        max_relative = 1e-14
    );
    assert_relative_eq!(
        s.beta(7, 20_000_000, 512),
        0.999_290_469_123_269_9,
        max_relative = 1e-14
    );
    let no_ramp = EmaSchedule::Edm {
        halflife_kimg: 500.0,
        rampup_ratio: None,
    };
    assert_relative_eq!(
        no_ramp.beta(0, 0, 512),
        0.999_290_469_123_269_9,
        max_relative = 1e-14
    );
}

#[test]
fn power_warmup_beta_matches_hand_values() {
    let s = EmaSchedule::Power {
        inv_gamma: 1.0,
        power: 0.75,
        max_decay: 0.9999,
        min_decay: 0.0,
    };
    assert_eq!(s.beta(0, 0, 1), 0.0);
    // 1 − 11^(−3/4)
    assert_relative_eq!(
        s.beta(10, 0, 1),
        0.834_439_973_923_829_8,
        max_relative = 1e-14
    );
    assert_eq!(s.beta(10_000_000_000, 0, 1), 0.9999, "clamped at max_decay");
    let bad = EmaSchedule::Power {
        inv_gamma: 1.0,
        power: 0.75,
        max_decay: 1.5,
        min_decay: 0.0,
    };
    assert!(
        matches!(bad.validate(), Err(NetsError::InvalidValue(InvalidValue { key, .. })) if key == "max_decay")
    );
}

#[test]
fn ema_updates_follow_lerp_and_skip_buffers() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut w = vs.root().var("w", &[2], nn::Init::Const(1.0));
    let buf = vs.root().add("buf", Tensor::from_slice(&[7.0f32]), false);
    // β_k = 1 − 1/(k+1): 0, 1/2, 2/3.
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
    assert_eq!(
        ema.tensors().len(),
        1,
        "only trainable variables are averaged"
    );
    let set = |w: &mut Tensor, v: f64| {
        let _ = tch::no_grad(|| w.fill_(v));
    };
    for (param, beta, want) in [(3.0, 0.0, 3.0), (5.0, 0.5, 4.0), (1.0, 2.0 / 3.0, 3.0)] {
        set(&mut w, param);
        let b = ema.update(&vs, 0, 1).unwrap();
        assert_relative_eq!(b, beta, max_relative = 1e-15);
        assert_relative_eq!(
            ema.tensors()[0].1.double_value(&[0]),
            want,
            max_relative = 1e-6
        );
    }
    assert_eq!(ema.step(), 3);
    ema.copy_to(&vs).unwrap();
    assert_relative_eq!(w.double_value(&[1]), 3.0, max_relative = 1e-6);
    assert_eq!(buf.double_value(&[0]), 7.0);
}

#[test]
fn net_config_from_toml_with_unknown_key_rejected() {
    let cfg: NetConfig = toml::from_str(
        r#"
        type = "unet"
        resolution = 16
        in_channels = 1
        out_channels = 1
        model_channels = 32
        channel_mult = [1, 2]
        embedding = "fourier"
        encoder = "residual"
        resample_filter = [1.0, 3.0, 3.0, 1.0]
        "#,
    )
    .unwrap();
    match &cfg {
        NetConfig::Unet(u) => {
            assert_eq!(
                (u.resolution, u.num_blocks),
                (16, UnetConfig::default().num_blocks)
            );
            cfg.validate().unwrap();
        }
        other => panic!("{other:?}"),
    }
    let e = toml::from_str::<NetConfig>("type = \"mlp\"\ndim = 2\nhiden = 64\n").unwrap_err();
    assert!(e.to_string().contains("hiden"), "{e}");
    let bad: NetConfig =
        toml::from_str("type = \"unet\"\nresolution = 30\nchannel_mult = [1, 2, 2]\n").unwrap();
    match bad.validate() {
        Err(NetsError::InvalidValue(InvalidValue { key, value, .. })) => {
            assert_eq!((key.as_str(), value.as_str()), ("resolution", "30"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn model_config_json_round_trip() {
    let m = ModelConfig {
        net: NetConfig::preset("ncsnpp-cifar10").unwrap(),
        wrapper: tweedie_nets::Wrapper::Precond(tweedie_core::Precond::vp()),
        conditioning: None,
    };
    let s = serde_json::to_string(&m).unwrap();
    assert_eq!(serde_json::from_str::<ModelConfig>(&s).unwrap(), m);
    let t: ModelConfig = toml::from_str(
        "[net]\ntype = \"mlp\"\ndim = 3\n[wrapper.param]\nparam = \"eps\"\nprocess = { type = \"vp\" }\ntime_scale = 999.0\n",
    )
    .unwrap();
    assert!(matches!(t.wrapper, tweedie_nets::Wrapper::Param(ref a) if a.time_scale == 999.0));
}

#[test]
fn device_strings() {
    assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
    assert_eq!("CPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
    assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
    assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
    for bad in ["cuda:x", "tpu", "cuda:-1", ""] {
        assert!(
            matches!(
                bad.parse::<DeviceSpec>(),
                Err(NetsError::InvalidDevice { .. })
            ),
            "{bad}"
        );
    }
    assert_eq!(DeviceSpec::Cpu.resolve().unwrap(), Device::Cpu);
    let n = tch::Cuda::device_count() as usize;
    assert!(
        DeviceSpec::Cuda(n).resolve().is_err(),
        "cuda:{n} does not exist"
    );
    assert_eq!(DeviceSpec::Auto.resolve().unwrap() == Device::Cpu, n == 0);
}
