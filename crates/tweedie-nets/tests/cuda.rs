//! CPU vs CUDA: same weights and inputs give the same denoiser output and the same training
//! step. Skips (with a printed reason) when no CUDA device is present.
//!
//! Tolerances: cuDNN may use TF32 for convolutions (10-bit mantissa, relative error ~1e-3 per
//! op), so outputs are compared at 1e-2 of their scale and parameters after one SGD step
//! (lr = 1e-2) at 1e-4 absolute.

use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};
use tweedie_core::Precond;
use tweedie_nets::{inference, NetConfig, PrecondDenoiser, Wrapper};

fn setup(device: Device) -> (nn::VarStore, PrecondDenoiser) {
    let vs = nn::VarStore::new(device);
    let cfg = NetConfig::preset("ddpmpp-tiny").unwrap();
    let d = PrecondDenoiser::new(&vs.root(), &cfg, Wrapper::Precond(Precond::edm())).unwrap();
    (vs, d)
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let b = b.to_device(a.device());
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    (a - b).abs().max().double_value(&[]) / scale
}

#[test]
fn cpu_and_cuda_agree_on_forward_and_one_training_step() {
    if !tch::Cuda::is_available() {
        println!("skipped: no CUDA device");
        return;
    }
    let gpu = Device::Cuda(0);
    tch::manual_seed(7);
    let (mut vs_cpu, d_cpu) = setup(Device::Cpu);
    // Non-trivial weights: the reference init zeroes the output layer.
    tch::no_grad(|| {
        for (_, mut t) in vs_cpu.variables() {
            let n = t.randn_like() * 0.05;
            let _ = t.f_add_(&n);
        }
    });
    let (mut vs_gpu, d_gpu) = setup(gpu);
    vs_gpu.copy(&vs_cpu).unwrap();

    let x0 = Tensor::randn([16, 1, 8, 8], (Kind::Float, Device::Cpu));
    let n = Tensor::randn([16, 1, 8, 8], (Kind::Float, Device::Cpu));
    let sigma = (Tensor::randn([16], (Kind::Float, Device::Cpu)) * 1.2 - 1.2).exp();
    let xt = &x0 + &n * sigma.view([16, 1, 1, 1]);

    let out_cpu = d_cpu.denoise(&xt, &sigma, None).unwrap();
    let out_gpu = d_gpu
        .denoise(&xt.to_device(gpu), &sigma.to_device(gpu), None)
        .unwrap();
    assert_eq!(out_gpu.device(), gpu);
    let e = rel_err(&out_cpu, &out_gpu);
    println!("forward: max relative difference {e:.2e}");
    assert!(e < 1e-2, "forward differs: {e}");

    // bf16 autocast on CUDA stays close to f32.
    let out_bf16 = inference(true, || {
        d_gpu.forward(&xt.to_device(gpu), &sigma.to_device(gpu), None, None, false)
    })
    .unwrap();
    let e16 = rel_err(&out_bf16.to_kind(Kind::Float), &out_gpu);
    println!("bf16 autocast: max relative difference {e16:.2e}");
    assert!(e16 < 5e-2, "bf16 differs: {e16}");

    let step = |vs: &mut nn::VarStore, d: &PrecondDenoiser, dev: Device| {
        let mut opt = nn::Sgd::default().build(vs, 1e-2).unwrap();
        let dx = d
            .forward(&xt.to_device(dev), &sigma.to_device(dev), None, None, true)
            .unwrap();
        let loss = (dx - x0.to_device(dev)).square().mean(Kind::Float);
        opt.backward_step(&loss);
        loss.double_value(&[])
    };
    let l_cpu = step(&mut vs_cpu, &d_cpu, Device::Cpu);
    let l_gpu = step(&mut vs_gpu, &d_gpu, gpu);
    println!("loss: cpu {l_cpu:.6} cuda {l_gpu:.6}");
    assert!((l_cpu - l_gpu).abs() <= 1e-2 * l_cpu.abs(), "loss differs");
    let gpu_vars = vs_gpu.variables();
    let mut worst = (0.0f64, String::new());
    for (name, t) in vs_cpu.variables() {
        let d = (&t - gpu_vars[&name].to_device(Device::Cpu))
            .abs()
            .max()
            .double_value(&[]);
        if d > worst.0 {
            worst = (d, name);
        }
    }
    println!(
        "after one SGD step: max |Δθ| = {:.2e} at {}",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 1e-4,
        "parameters differ after one step: {worst:?}"
    );
}
