//! The preconditioned denoiser against tweedie-core's coefficients and closed forms.

use tch::{nn, Device, Kind, Tensor};
use tweedie_core::{Param, Precond, ProcessKind};
use tweedie_nets::{NetConfig, Network, ParamAdapter, PrecondDenoiser, Wrapper};

/// F(x; c) = 2·x + c (per sample), or NaN everywhere when `nan`.
#[derive(Debug)]
struct Affine {
    nan: bool,
}

impl Network for Affine {
    fn forward(
        &self,
        x: &Tensor,
        c: &Tensor,
        _: Option<&Tensor>,
        _: Option<&Tensor>,
        _: bool,
    ) -> Tensor {
        if self.nan {
            return x.full_like(f64::NAN);
        }
        let mut shape = vec![-1i64];
        shape.extend(std::iter::repeat_n(1, x.dim() - 1));
        x * 2.0 + c.reshape(shape.as_slice())
    }
}

/// F = a fixed tensor, whatever the input (an oracle ε, v or velocity).
#[derive(Debug)]
struct Constant(Tensor);

impl Network for Constant {
    fn forward(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: Option<&Tensor>,
        _: Option<&Tensor>,
        _: bool,
    ) -> Tensor {
        self.0.shallow_clone()
    }
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn families() -> Vec<Precond> {
    vec![
        Precond::vp(),
        Precond::ve(),
        Precond::iddpm(),
        Precond::edm(),
    ]
}

#[test]
fn denoiser_matches_core_coefficients_per_sample() {
    tch::manual_seed(1);
    let sigmas = [0.002, 0.5, 3.0, 80.0];
    let x = Tensor::randn([4, 2, 3, 3], (Kind::Double, Device::Cpu));
    for pc in families() {
        let d = PrecondDenoiser::from_network(
            Box::new(Affine { nan: false }),
            Wrapper::Precond(pc.clone()),
            0,
        )
        .unwrap();
        let out = d.denoise(&x, &Tensor::from_slice(&sigmas), None).unwrap();
        for (i, &s) in sigmas.iter().enumerate() {
            let c = pc.coeffs(s);
            let xi = x.get(i as i64);
            // The network runs in f32: compare with f32 rounding of c_in·x.
            let f = (&xi * c.c_in).to_kind(Kind::Float).to_kind(Kind::Double) * 2.0 + c.c_noise;
            let want = &xi * c.c_skip + f * c.c_out;
            let err = max_abs(&out.get(i as i64), &want);
            let scale = want.abs().max().double_value(&[]).max(1.0);
            assert!(err <= 1e-5 * scale, "{pc:?} sigma={s}: err {err}");
        }
    }
}

#[test]
fn zero_c_out_returns_input_exactly() {
    tch::manual_seed(2);
    let x = Tensor::randn([3, 1, 4, 4], (Kind::Float, Device::Cpu));
    // EDM at σ̃ = 0: c_skip = 1, c_out = 0; the network (here NaN) must not leak in.
    let d = PrecondDenoiser::from_network(
        Box::new(Affine { nan: true }),
        Wrapper::Precond(Precond::edm()),
        0,
    )
    .unwrap();
    let out = d.denoise_at(&x, 0.0, None).unwrap();
    assert!(bool::try_from(out.eq_tensor(&x).all()).unwrap());
    // Mixed batch: the σ̃ = 0 sample is bit-identical, the others are not the input.
    let d = PrecondDenoiser::from_network(
        Box::new(Affine { nan: false }),
        Wrapper::Precond(Precond::edm()),
        0,
    )
    .unwrap();
    let out = d
        .denoise(&x, &Tensor::from_slice(&[0.0, 2.0, 0.0]), None)
        .unwrap();
    assert!(bool::try_from(out.get(0).eq_tensor(&x.get(0)).all()).unwrap());
    assert!(bool::try_from(out.get(2).eq_tensor(&x.get(2)).all()).unwrap());
    assert!(max_abs(&out.get(1), &x.get(1)) > 1e-3);
}

#[test]
fn iddpm_uses_the_u_grid() {
    let d = PrecondDenoiser::from_network(
        Box::new(Affine { nan: false }),
        Wrapper::Precond(Precond::iddpm()),
        0,
    )
    .unwrap();
    let u = Precond::iddpm().u_grid().unwrap();
    let r = d.round_sigma(1.0);
    assert!(u.contains(&r));
    let c = d.coeffs(1.0).unwrap();
    assert_eq!(
        c.c_noise,
        c.c_noise.round(),
        "iDDPM c_noise is an integer index"
    );
    assert_eq!(c, Precond::iddpm().coeffs(1.0));
}

fn adapter(param: Param, process: ProcessKind, eps: &Tensor) -> PrecondDenoiser {
    let w = Wrapper::Param(ParamAdapter {
        param,
        process,
        time_scale: 1.0,
    });
    PrecondDenoiser::from_network(Box::new(Constant(eps.shallow_clone())), w, 0).unwrap()
}

#[test]
fn eps_v_and_velocity_networks_become_denoisers() {
    tch::manual_seed(3);
    let x = Tensor::randn([2, 5], (Kind::Double, Device::Cpu));
    let e = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
    let ed = e.to_kind(Kind::Double);
    let sigma = 0.7;
    // ε-prediction: x₀ = (x_t − σε)/α, i.e. D = x̃ − σ̃·ε, for any process.
    for pk in [
        ProcessKind::vp(),
        ProcessKind::vp_cosine(),
        ProcessKind::edm(),
    ] {
        let d = adapter(Param::Eps, pk.clone(), &e)
            .denoise_at(&x, sigma, None)
            .unwrap();
        let want = &x - &ed * sigma;
        assert!(max_abs(&d, &want) < 1e-9, "{pk:?}");
    }
    // Flow velocity (α = 1−t, σ = t, v = ε − x₀): x₀ = x_t − t·v, t = σ̃/(1+σ̃).
    let t = sigma / (1.0 + sigma);
    let d = adapter(Param::Velocity, ProcessKind::flow(), &e)
        .denoise_at(&x, sigma, None)
        .unwrap();
    let want = &x * (1.0 - t) - &ed * t;
    assert!(max_abs(&d, &want) < 1e-9);
    // v-prediction on VP (α² + σ² = 1): x₀ = α·x_t − σ·v.
    let p = ProcessKind::vp().build();
    let tv = p.t_of_sigma_tilde(sigma);
    let (a, s) = (p.alpha(tv), p.sigma(tv));
    let d = adapter(Param::V, ProcessKind::vp(), &e)
        .denoise_at(&x, sigma, None)
        .unwrap();
    let want = &x * (a * a) - &ed * s;
    assert!(max_abs(&d, &want) < 1e-9);
    // No noise: identity.
    let d = adapter(Param::Eps, ProcessKind::vp(), &e)
        .denoise_at(&x, 0.0, None)
        .unwrap();
    assert!(bool::try_from(d.eq_tensor(&x).all()).unwrap());
}

#[test]
fn vjp_of_affine_network_is_exact() {
    let x = Tensor::randn([2, 3], (Kind::Float, Device::Cpu));
    let v = Tensor::randn([2, 3], (Kind::Float, Device::Cpu));
    let pc = Precond::edm();
    let d = PrecondDenoiser::from_network(
        Box::new(Affine { nan: false }),
        Wrapper::Precond(pc.clone()),
        0,
    )
    .unwrap();
    let (dx, g) = tch::no_grad(|| d.vjp(&x, &Tensor::from(1.3), None, &v)).unwrap();
    let c = pc.coeffs(1.3);
    let want = &v * (c.c_skip + 2.0 * c.c_out * c.c_in);
    assert!(max_abs(&g, &want) < 1e-6);
    assert!(max_abs(&dx, &d.denoise_at(&x, 1.3, None).unwrap()) < 1e-6);
}

#[test]
fn vjp_of_mlp_matches_finite_differences() {
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let d = PrecondDenoiser::new(
        &vs.root(),
        &NetConfig::preset("mlp-small").unwrap(),
        Wrapper::Precond(Precond::edm()),
    )
    .unwrap();
    let x = Tensor::randn([4, 2], (Kind::Double, Device::Cpu));
    let v = Tensor::randn([4, 2], (Kind::Double, Device::Cpu));
    let u = Tensor::randn([4, 2], (Kind::Double, Device::Cpu));
    let s = Tensor::from_slice(&[0.1, 0.5, 1.0, 2.0]);
    let (_, g) = d.vjp(&x, &s, None, &v).unwrap();
    let h = 1e-3;
    let dp = d.denoise(&(&x + &u * h), &s, None).unwrap();
    let dm = d.denoise(&(&x - &u * h), &s, None).unwrap();
    // ⟨Jᵀv, u⟩ = ⟨v, J·u⟩ per sample; the network runs in f32, hence the tolerance.
    let lhs = (&g * &u).sum_dim_intlist(1, false, Kind::Double);
    let rhs = (&v * (dp - dm) / (2.0 * h)).sum_dim_intlist(1, false, Kind::Double);
    let err = max_abs(&lhs, &rhs);
    assert!(
        err < 2e-3 * (1.0 + rhs.abs().max().double_value(&[])),
        "err {err}"
    );
}

#[test]
fn bad_inputs_are_typed_errors() {
    let d = PrecondDenoiser::from_network(
        Box::new(Affine { nan: false }),
        Wrapper::Precond(Precond::edm()),
        0,
    )
    .unwrap();
    let x = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
    assert!(
        d.denoise(&x, &Tensor::from_slice(&[1.0, 2.0]), None)
            .is_err(),
        "2 sigmas for 3 samples"
    );
    assert!(d.denoise_at(&x, -1.0, None).is_err(), "negative sigma");
    assert!(d.denoise_at(&x, f64::NAN, None).is_err());
    let y = Tensor::zeros([3, 10], (Kind::Float, Device::Cpu));
    assert!(
        d.denoise_at(&x, 1.0, Some(&y)).is_err(),
        "labels on an unconditional model"
    );
}

#[test]
fn wrong_input_shapes_are_errors_not_panics() {
    let vs = nn::VarStore::new(Device::Cpu);
    let d = PrecondDenoiser::new(
        &vs.root(),
        &NetConfig::preset("ddpmpp-tiny").unwrap(),
        Wrapper::Precond(Precond::edm()),
    )
    .unwrap();
    let ok = Tensor::zeros([2, 1, 8, 8], (Kind::Float, Device::Cpu));
    assert!(d.denoise_at(&ok, 1.0, None).is_ok());
    for bad in [vec![2, 3, 8, 8], vec![2, 1, 16, 16], vec![2, 64]] {
        let x = Tensor::zeros(bad.as_slice(), (Kind::Float, Device::Cpu));
        assert!(
            matches!(
                d.denoise_at(&x, 1.0, None),
                Err(tweedie_nets::NetsError::Shape(_))
            ),
            "{bad:?}"
        );
    }
    let aug = Tensor::zeros([2, 4], (Kind::Float, Device::Cpu));
    assert!(
        d.forward(&ok, &Tensor::from(1.0), None, Some(&aug), false)
            .is_err(),
        "no augment input"
    );
}
