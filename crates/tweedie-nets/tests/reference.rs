//! Golden outputs of the reference SongUNet (NVlabs/edm, produced by benches/nets/make_fixture.py
//! --edm): reference state_dicts load by name and give the same output.

use std::path::PathBuf;

use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};
use tweedie_core::Precond;
use tweedie_nets::{load_reference_state_dict, ModelConfig, NetConfig, UnetConfig, Wrapper};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn check(case: &str) {
    let io_bytes = std::fs::read(data(&format!("{case}.io.safetensors"))).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&io_bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(
        meta["producer"], "edm",
        "fixtures come from the reference itself"
    );
    let ucfg: UnetConfig = serde_json::from_str(&meta["config"]).unwrap();
    let io = SafeTensors::deserialize(&io_bytes).unwrap();
    let get = |n: &str| {
        let v = io.tensor(n).unwrap();
        let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
        Tensor::from_data_size(v.data(), &shape, Kind::Float)
    };
    let cfg = ModelConfig {
        net: NetConfig::Unet(ucfg),
        wrapper: Wrapper::Precond(Precond::edm()),
        conditioning: None,
    };
    let m = load_reference_state_dict(
        &data(&format!("{case}.weights.safetensors")),
        &cfg,
        Device::Cpu,
    )
    .unwrap();
    let (labels, aug) = (get("labels"), get("augment"));
    let out = tch::no_grad(|| {
        m.denoiser
            .network()
            .forward(&get("x"), &get("c_noise"), Some(&labels), Some(&aug), false)
    });
    let want = get("out");
    let err = (&out - &want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]);
    assert!(
        err <= 2e-5 * scale.max(1.0),
        "{case}: max |diff| {err:e} (|out| {scale})"
    );
}

#[test]
fn skip_encoder_decoder_fourier_fir_matches_reference() {
    check("songunet_skip");
}

#[test]
fn residual_encoder_positional_box_matches_reference() {
    check("songunet_residual");
}
