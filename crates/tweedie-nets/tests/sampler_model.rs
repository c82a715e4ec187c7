//! PrecondDenoiser through the samplers' Model/ClassModel traits.
#![cfg(feature = "samplers")]

use tch::{nn, Device, Kind, Tensor};
use tweedie_core::space::TchTensor;
use tweedie_core::{Precond, ProcessKind, Timer, TimerKind};
use tweedie_nets::{NetConfig, NetModel, PrecondDenoiser, Wrapper};
use tweedie_samplers::{ClassModel, Init, Model, ModelExt, Sampler, SamplerKind};

fn model(label_dim: usize) -> (nn::VarStore, NetModel) {
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = NetConfig::preset("mlp-small").unwrap();
    if let NetConfig::Mlp(m) = &mut cfg {
        m.label_dim = label_dim;
    }
    let d = PrecondDenoiser::new(&vs.root(), &cfg, Wrapper::Precond(Precond::edm())).unwrap();
    // The init makes F ≈ 0 (output layers at 1e-5); perturb so labels visibly matter.
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            let n = t.randn_like() * 0.3;
            let _ = t.f_add_(&n);
        }
    });
    (vs, NetModel::new(d, label_dim))
}

#[test]
fn net_model_matches_denoiser_and_samples() {
    let (_vs, m) = model(0);
    let x = TchTensor(Tensor::randn([5, 2], (Kind::Float, Device::Cpu)));
    let a = m.denoise(&x, 0.8).unwrap();
    let (d, g) = m.denoise_vjp(&x, 0.8, &x).unwrap();
    assert!(ModelExt::<TchTensor>::has_vjp(&m));
    assert_eq!(g.size(), vec![5, 2]);
    let inner = m.into_inner();
    let b = inner.denoise_at(&x, 0.8, None).unwrap();
    assert!(bool::try_from(a.eq_tensor(&b).all()).unwrap());
    assert!(bool::try_from(d.eq_tensor(&b).all()).unwrap());

    let m = NetModel::new(inner, 0);
    let process = ProcessKind::edm().build();
    let grid = TimerKind::edm().grid(process.as_ref(), 6).unwrap();
    let s = Sampler::new(
        process.as_ref(),
        grid,
        SamplerKind::Heun,
        &m as &dyn Model<TchTensor>,
    )
    .unwrap()
    .seed(3);
    let out = s
        .run(
            Init::Noise(TchTensor(Tensor::zeros([7, 2], (Kind::Float, Device::Cpu)))),
            None,
        )
        .unwrap();
    assert_eq!(out.samples.size(), vec![7, 2]);
    assert_eq!(out.nfe, 11, "Heun on 6 steps: 2·6 − 1");
    assert!(bool::try_from(out.samples.isfinite().all()).unwrap());
}

#[test]
fn class_labels_are_one_hot_and_checked() {
    let (_vs, m) = model(3);
    let x = TchTensor(Tensor::randn([4, 2], (Kind::Float, Device::Cpu)));
    let c1 = m.denoise_class(&x, 1.0, Some(1)).unwrap();
    let c2 = m.denoise_class(&x, 1.0, Some(2)).unwrap();
    let u = m.denoise_class(&x, 1.0, None).unwrap();
    assert!(
        (&*c1 - &*c2).abs().max().double_value(&[]) > 0.0,
        "classes differ"
    );
    assert!(
        (&*c1 - &*u).abs().max().double_value(&[]) > 0.0,
        "unconditional differs"
    );
    assert!(m.denoise_class(&x, 1.0, Some(3)).is_err());
    let inner = m.into_inner();
    let y = Tensor::from_slice(&[0f32, 1.0, 0.0])
        .view([1, 3])
        .repeat([4, 1]);
    let want = inner.denoise_at(&x, 1.0, Some(&y)).unwrap();
    assert!(bool::try_from(want.eq_tensor(&c1).all()).unwrap());
}

/// Per-row labels (training evaluation) condition row i on its own class and override the
/// model's class; ndarray states give the tensor path's values.
#[test]
fn row_labels_and_ndarray_states_match_the_tensor_path() {
    let (_vs, m) = model(3);
    let x = Tensor::randn([2, 2], (Kind::Float, Device::Cpu));
    m.set_labels(Some(&[1, 2])).unwrap();
    let rows = m.denoise_tensor(&x, &Tensor::from(0.7)).unwrap();
    let arr = ndarray::ArrayD::from_shape_vec(
        ndarray::IxDyn(&[2, 2]),
        Vec::<f32>::try_from(x.flatten(0, -1))
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect(),
    )
    .unwrap();
    let via_array = Model::<ndarray::ArrayD<f64>>::denoise(&m, &arr, 0.7).unwrap();
    // ndarray states enter as f64 (the skip path stays f64): the f64 tensor path exactly.
    let rows64 = m
        .denoise_tensor(&x.to_kind(Kind::Double), &Tensor::from(0.7))
        .unwrap();
    m.set_labels(None).unwrap();
    assert!(m.set_labels(Some(&[3])).is_err());
    let tx = TchTensor(x.shallow_clone());
    let c1 = m.denoise_class(&tx, 0.7, Some(1)).unwrap();
    let c2 = m.denoise_class(&tx, 0.7, Some(2)).unwrap();
    assert!(bool::try_from(rows.get(0).eq_tensor(&c1.get(0)).all()).unwrap());
    assert!(bool::try_from(rows.get(1).eq_tensor(&c2.get(1)).all()).unwrap());
    for (a, b) in via_array
        .iter()
        .zip(Vec::<f64>::try_from(rows64.flatten(0, -1)).unwrap())
    {
        assert_eq!(*a, b);
    }
}

/// An MLP with `out_dim = 2·dim` is a learned-variance network: the denoiser uses the first
/// `dim` outputs and the model supplies v = (raw + 1)/2 from the rest; a plain network has none.
#[test]
fn learned_variance_networks_supply_v() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = NetConfig::preset("mlp-small").unwrap();
    if let NetConfig::Mlp(m) = &mut cfg {
        m.out_dim = Some(4);
    }
    let d = PrecondDenoiser::new(&vs.root(), &cfg, Wrapper::Precond(Precond::iddpm())).unwrap();
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            let n = t.randn_like() * 0.3;
            let _ = t.f_add_(&n);
        }
    });
    let x = TchTensor(Tensor::randn([3, 2], (Kind::Float, Device::Cpu)));
    let sigma = Tensor::from(1.5f64);
    let (den, raw) = d
        .forward_with_variance(&x, &sigma, None, None, false)
        .unwrap();
    let raw = raw.expect("variance channels");
    let m = NetModel::new(d, 0);
    let (den2, v) = m.denoise_with_variance(&x, 1.5).unwrap();
    let v = v.expect("learned variance");
    assert!(bool::try_from(den.eq_tensor(&den2).all()).unwrap());
    let want = (&raw + 1.0) * 0.5;
    assert!(bool::try_from(want.eq_tensor(&v).all()).unwrap());
    let (_vs, plain) = model(0);
    assert!(plain.denoise_with_variance(&x, 1.5).unwrap().1.is_none());
    if let NetConfig::Mlp(m) = &mut cfg {
        m.out_dim = Some(3);
    }
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("out_dim") && e.contains('3'), "{e}");
}

/// A network's errors reach the sampler's caller with their text and kind: checkpoint and
/// libtorch errors travel whole (downcast back to the NetsError), shape errors stay shape
/// errors with the network's message.
#[test]
fn network_errors_keep_text_and_kind_through_the_sampler() {
    use tweedie_nets::NetsError;
    use tweedie_samplers::SamplerError;
    let nets = NetsError::CheckpointNotFound {
        path: "runs/x/model.safetensors".into(),
    };
    let text = nets.to_string();
    let e = SamplerError::from(nets);
    assert_eq!(e.to_string(), text);
    match &e {
        SamplerError::Model(m) => assert!(matches!(
            m.downcast_ref::<NetsError>(),
            Some(NetsError::CheckpointNotFound { .. })
        )),
        other => panic!("{other:?}"),
    }

    let (_vs, m) = model(3);
    m.set_labels(Some(&[0, 1, 2])).unwrap();
    let process = ProcessKind::edm().build();
    let grid = TimerKind::edm().grid(process.as_ref(), 4).unwrap();
    let s = Sampler::new(
        process.as_ref(),
        grid,
        SamplerKind::Euler,
        &m as &dyn Model<TchTensor>,
    )
    .unwrap();
    let e = s
        .run(
            Init::Noise(TchTensor(Tensor::zeros([7, 2], (Kind::Float, Device::Cpu)))),
            None,
        )
        .unwrap_err();
    assert!(matches!(e, SamplerError::Shape(_)), "{e:?}");
    assert!(
        e.to_string().contains("3 row labels set for a batch of 7"),
        "{e}"
    );
}

/// Regression (issue 10): wrappers keep every capability of the network. NetModel rounds σ̃ as
/// its iDDPM preconditioning does (EDM's stochastic sampler rounds σ̂ through the model, as
/// NVlabs/edm does), on every state type; classifier-free guidance (Cfg) keeps the rounding and
/// the learned variance (the conditional model's v, as GLIDE/ADM's guided sampling does).
#[test]
fn wrappers_keep_rounding_and_learned_variance() {
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = NetConfig::preset("mlp-small").unwrap();
    if let NetConfig::Mlp(m) = &mut cfg {
        m.out_dim = Some(4);
        m.label_dim = 3;
    }
    let d = PrecondDenoiser::new(&vs.root(), &cfg, Wrapper::Precond(Precond::iddpm())).unwrap();
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            let n = t.randn_like() * 0.3;
            let _ = t.f_add_(&n);
        }
    });
    let rounded = d.round_sigma(1.0);
    assert!(rounded != 1.0, "1.0 is not on iDDPM's u-grid");
    let m = NetModel::new(d, 3);
    assert_eq!(ModelExt::<TchTensor>::round_sigma(&m, 1.0), rounded);
    assert_eq!(
        ModelExt::<ndarray::ArrayD<f64>>::round_sigma(&m, 1.0),
        rounded
    );
    assert_eq!(
        ModelExt::<ndarray::Array2<f64>>::round_sigma(&m, 1.0),
        rounded
    );

    let x = TchTensor(Tensor::randn([3, 2], (Kind::Float, Device::Cpu)));
    m.set_labels(Some(&[1, 1, 1])).unwrap();
    let (_, v_cond) = ModelExt::<TchTensor>::denoise_with_variance(&m, &x, 1.5).unwrap();
    let v_cond = v_cond.expect("learned variance");
    m.set_labels(None).unwrap();
    let g = tweedie_samplers::Cfg {
        model: m,
        class: 1,
        w: 0.5,
    };
    assert_eq!(ModelExt::<TchTensor>::round_sigma(&g, 1.0), rounded);
    let (den, v) = ModelExt::<TchTensor>::denoise_with_variance(&g, &x, 1.5).unwrap();
    let v = v.expect("Cfg keeps the learned variance");
    assert!(bool::try_from(v.eq_tensor(&v_cond).all()).unwrap());
    let plain = Model::<TchTensor>::denoise(&g, &x, 1.5).unwrap();
    assert!(bool::try_from(den.eq_tensor(&plain).all()).unwrap());
}
