//! Two real processes on 127.0.0.1 (this test binary re-executed as each rank) exercise the
//! c10d collectives, DDP's reducer and the fault paths through Gloo.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tch::{nn, nn::Module, Kind, Tensor};
use tweedie_dist::{Backend, DistEnv, DistError, ProcessGroup, Reducer};

const ROLE: &str = "TWEEDIE_DIST_TEST_ROLE";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Run the `worker` test of this binary as `world` ranks with role `role`.
fn spawn_ranks(role: &str, world: usize, timeout_s: &str) -> Vec<Output> {
    let exe = std::env::current_exe().unwrap();
    let port = free_port().to_string();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(&exe)
                .args(["--exact", "worker", "--nocapture", "--test-threads=1"])
                .env(ROLE, role)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("TWEEDIE_DIST_TIMEOUT", timeout_s)
                .env("OMP_NUM_THREADS", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

fn group() -> ProcessGroup {
    tch::set_num_threads(1);
    let env = DistEnv::from_env()
        .unwrap()
        .expect("launched with WORLD_SIZE");
    ProcessGroup::new(&env, Backend::Gloo).unwrap()
}

fn close(a: &Tensor, b: &Tensor, rel: f64) -> bool {
    let diff = (a - b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    diff <= rel * scale
}

fn collectives() {
    let pg = group();
    let (rank, world) = (pg.rank() as f64, pg.world_size() as f64);
    // Sum of (rank + 1)·[1, 2, 3] over ranks 0..world.
    let mut t = Tensor::from_slice(&[1.0f64, 2.0, 3.0]) * (rank + 1.0);
    pg.all_reduce_sum(&mut t).unwrap();
    let s = world * (world + 1.0) / 2.0;
    assert_eq!(Vec::<f64>::try_from(&t).unwrap(), vec![s, 2.0 * s, 3.0 * s]);
    let mut m = Tensor::from_slice(&[rank]);
    pg.all_reduce_mean(&mut m).unwrap();
    assert_eq!(m.double_value(&[0]), (world - 1.0) / 2.0);
    // Broadcast from the last rank.
    let mut b = Tensor::from_slice(&[rank as f32; 4]);
    pg.broadcast(&mut b, pg.world_size() - 1).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(&b).unwrap(),
        vec![(world - 1.0) as f32; 4]
    );
    // All-gather stacks in rank order.
    let g = pg
        .all_gather(&Tensor::from_slice(&[rank as i64, 10 * rank as i64]))
        .unwrap();
    assert_eq!(g.size(), vec![world as i64, 2]);
    let want: Vec<i64> = (0..pg.world_size() as i64)
        .flat_map(|r| [r, 10 * r])
        .collect();
    assert_eq!(Vec::<i64>::try_from(g.reshape([-1])).unwrap(), want);
    pg.barrier().unwrap();
    // Multi-tensor broadcast through one flat buffer.
    let ts = [
        Tensor::full([2, 3], rank, (Kind::Float, tch::Device::Cpu)),
        Tensor::full([5], -rank, (Kind::Float, tch::Device::Cpu)),
    ];
    pg.broadcast_tensors(&ts, 0).unwrap();
    assert_eq!(ts[0].sum(Kind::Double).double_value(&[]), 0.0);
    assert_eq!(ts[1].sum(Kind::Double).double_value(&[]), 0.0);
    pg.check_same("config", 42).unwrap();
    let err = pg.check_same("config", pg.rank() as u64).unwrap_err();
    assert!(matches!(err, DistError::Mismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("config differs across ranks"),
        "{err}"
    );
    // Mismatched shapes are caught before a (silent) broadcast.
    let bad = [Tensor::zeros(
        [1 + pg.rank() as i64],
        (Kind::Float, tch::Device::Cpu),
    )];
    let err = pg.broadcast_tensors(&bad, 0).unwrap_err();
    assert!(err.to_string().contains("tensor shapes"), "{err}");
    println!("collectives ok on rank {}", pg.rank());
}

/// Rank r's data: rows keyed by (rank, row) so every rank can rebuild every other's.
fn data(rank: usize) -> (Tensor, Tensor) {
    tch::manual_seed(100 + rank as i64);
    (
        Tensor::randn([8, 5], (Kind::Float, tch::Device::Cpu)),
        Tensor::randn([8, 3], (Kind::Float, tch::Device::Cpu)),
    )
}

fn net(vs: &nn::VarStore) -> nn::Sequential {
    let p = vs.root();
    nn::seq()
        .add(nn::linear(&p / "l0", 5, 16, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(&p / "l1", 16, 3, Default::default()))
}

fn loss(m: &nn::Sequential, (x, y): &(Tensor, Tensor)) -> Tensor {
    (m.forward(x) - y).square().mean(Kind::Float)
}

fn reducer() {
    let pg = group();
    let world = pg.world_size();
    // Different initial weights per rank: the reducer must broadcast rank 0's.
    tch::manual_seed(pg.rank() as i64);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let m = net(&vs);
    let params = vs.trainable_variables();
    // Tiny buckets so that several all-reduces run during backward.
    let mut r = Reducer::new(&pg, &params, 256, 128).unwrap();
    for step in 0..3 {
        r.prepare_forward().unwrap();
        let l = loss(&m, &data(pg.rank()));
        r.prepare_backward().unwrap();
        l.f_backward().unwrap();
        let grads: Vec<Tensor> = params.iter().map(|p| p.grad().copy()).collect();
        // Reference: the gradient of the mean of all ranks' losses, computed locally.
        let reference: Vec<Tensor> = {
            let vs2 = nn::VarStore::new(tch::Device::Cpu);
            let m2 = net(&vs2);
            let p2 = vs2.trainable_variables();
            tch::no_grad(|| {
                for (a, b) in p2.iter().zip(&params) {
                    a.detach().copy_(b);
                }
            });
            let total = (0..world).map(|k| loss(&m2, &data(k))).fold(
                Tensor::zeros([], (Kind::Float, tch::Device::Cpu)),
                |a, b| a + b,
            ) / world as f64;
            total.backward();
            p2.iter().map(|p| p.grad().copy()).collect()
        };
        for (g, want) in grads.iter().zip(&reference) {
            assert!(
                close(g, want, 1e-6),
                "step {step}: reducer gradient ≠ mean gradient"
            );
        }
        // Identical parameters on every rank after an SGD step.
        tch::no_grad(|| {
            for p in &params {
                let mut p = p.shallow_clone();
                let g = p.grad();
                let _ = p.f_sub_(&(g * 0.1)).unwrap();
                p.zero_grad();
            }
        });
        for p in &params {
            let all = pg.all_gather(&p.detach().contiguous()).unwrap();
            assert!(
                close(&all.get(0), &all.get(1), 0.0),
                "parameters differ across ranks"
            );
        }
    }
    println!("reducer ok on rank {}", pg.rank());
}

/// Rank 1 dies before the all-reduce, or hangs past the timeout; rank 0 must fail (not
/// hang) with a message naming itself and the collective.
fn fault(kind: &str) {
    let pg = group();
    if pg.rank() == 1 {
        if kind == "die" {
            std::process::exit(17);
        }
        std::thread::sleep(Duration::from_secs(8));
        std::process::exit(0);
    }
    let start = Instant::now();
    let mut t = Tensor::ones([4], (Kind::Float, tch::Device::Cpu));
    let err = pg.all_reduce_sum(&mut t).unwrap_err();
    println!("FAULT-ERROR {err}");
    eprintln!("FAULT-ERROR {err}");
    println!("FAULT-SECONDS {:.2}", start.elapsed().as_secs_f64());
    std::process::exit(3);
}

#[test]
fn worker() {
    match std::env::var(ROLE).as_deref() {
        Ok("collectives") => collectives(),
        Ok("reducer") => reducer(),
        Ok("die") => fault("die"),
        Ok("hang") => fault("hang"),
        _ => {} // not launched as a rank: nothing to do
    }
}

fn assert_all_ok(outs: &[Output]) {
    for (r, o) in outs.iter().enumerate() {
        assert!(
            o.status.success(),
            "rank {r} failed: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn two_ranks_collectives() {
    assert!(
        Backend::Gloo.available(),
        "tweedie-dist built without Gloo: install libgloo-dev"
    );
    assert_all_ok(&spawn_ranks("collectives", 2, "30"));
}

#[test]
fn three_ranks_collectives() {
    assert_all_ok(&spawn_ranks("collectives", 3, "30"));
}

#[test]
fn two_ranks_reducer_averages_gradients() {
    assert_all_ok(&spawn_ranks("reducer", 2, "30"));
}

fn fault_report(role: &str, timeout: &str) -> (String, f64) {
    let outs = spawn_ranks(role, 2, timeout);
    let out0 = String::from_utf8_lossy(&outs[0].stdout).to_string();
    assert_eq!(
        outs[0].status.code(),
        Some(3),
        "rank 0: {out0}\n{}",
        String::from_utf8_lossy(&outs[0].stderr)
    );
    let msg = out0
        .lines()
        .find_map(|l| l.split_once("FAULT-ERROR ").map(|(_, m)| m))
        .unwrap_or_default()
        .to_string();
    let secs: f64 = out0
        .lines()
        .find_map(|l| l.split_once("FAULT-SECONDS ").map(|(_, m)| m))
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    (msg, secs)
}

#[test]
fn dead_rank_fails_the_other_with_a_clear_error() {
    let (msg, secs) = fault_report("die", "20");
    assert!(
        msg.starts_with("rank 0 of 2: allreduce(sum) failed:"),
        "{msg}"
    );
    assert!(secs < 20.0, "took {secs} s");
}

#[test]
fn hung_rank_fails_the_other_within_the_timeout() {
    let (msg, secs) = fault_report("hang", "2");
    assert!(
        msg.starts_with("rank 0 of 2: allreduce(sum) failed:"),
        "{msg}"
    );
    assert!(
        (1.5..6.0).contains(&secs),
        "took {secs} s for a 2 s timeout"
    );
}

#[test]
fn nccl_without_a_gpu_is_a_clear_error() {
    if tch::Cuda::is_available() || !Backend::Nccl.available() {
        return; // covered by `cargo xtask gpu-check` on CUDA machines
    }
    let env = DistEnv::new(0, 1, "127.0.0.1", free_port(), Duration::from_secs(10)).unwrap();
    let err = ProcessGroup::new(&env, Backend::Nccl).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("rank 0 of 1: rendezvous at 127.0.0.1:"),
        "{msg}"
    );
    assert!(msg.contains("(nccl) failed"), "{msg}");
}

/// NCCL on a real GPU (run by `cargo xtask gpu-check`): one rank, since a GPU check gets one
/// GPU and NCCL refuses two ranks on one device. Every collective the trainer and the sampler
/// use, with the group's own device for the small control values (`check_same`), and DDP's
/// reducer on CUDA gradients, which must equal plain backward's (the mean over one rank).
#[test]
fn nccl_one_rank_on_cuda() {
    if !tch::Cuda::is_available() {
        println!("nccl on cuda: skipped: no CUDA device (tch::Cuda::is_available() is false)");
        return;
    }
    assert!(
        Backend::Nccl.available(),
        "a CUDA device is present but tweedie-dist was built without NCCL (CUDA headers missing at build time)"
    );
    let dev = tch::Device::Cuda(0);
    let env = DistEnv::new(0, 1, "127.0.0.1", free_port(), Duration::from_secs(60)).unwrap();
    let pg = ProcessGroup::new(&env, Backend::Nccl).unwrap();
    assert_eq!(pg.device(), dev);
    let mut t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).to_device(dev);
    pg.all_reduce_sum(&mut t).unwrap();
    pg.all_reduce_mean(&mut t).unwrap();
    let mut m = Tensor::from_slice(&[5i64]).to_device(dev);
    pg.all_reduce_max(&mut m).unwrap();
    pg.broadcast(&mut t, 0).unwrap();
    let g = pg.all_gather(&t).unwrap();
    pg.barrier().unwrap();
    assert_eq!(
        Vec::<f32>::try_from(g.reshape([-1]).to_device(tch::Device::Cpu)).unwrap(),
        vec![1.0, 2.0, 3.0]
    );
    assert_eq!(m.int64_value(&[0]), 5);
    pg.check_same("config", 42).unwrap();
    let ts = [
        Tensor::ones([2, 3], (Kind::Float, dev)),
        Tensor::ones([5], (Kind::Float, dev)),
    ];
    pg.broadcast_tensors(&ts, 0).unwrap();
    pg.all_reduce_mean_tensors(&ts).unwrap();
    assert_eq!(ts[0].sum(Kind::Double).double_value(&[]), 6.0);

    let vs = nn::VarStore::new(dev);
    let model = net(&vs);
    let params = vs.trainable_variables();
    let mut r = Reducer::new(&pg, &params, 256, 128).unwrap();
    let (x, y) = data(0);
    let batch = (x.to_device(dev), y.to_device(dev));
    for step in 0..2 {
        for p in &params {
            p.shallow_clone().zero_grad();
        }
        r.prepare_forward().unwrap();
        let l = loss(&model, &batch);
        r.prepare_backward().unwrap();
        l.f_backward().unwrap();
        let grads: Vec<Tensor> = params.iter().map(|p| p.grad().copy()).collect();
        let vs2 = nn::VarStore::new(dev);
        let m2 = net(&vs2);
        let p2 = vs2.trainable_variables();
        tch::no_grad(|| {
            for (a, b) in p2.iter().zip(&params) {
                a.detach().copy_(b);
            }
        });
        loss(&m2, &batch).backward();
        for (g, p) in grads.iter().zip(&p2) {
            assert!(
                close(g, &p.grad(), 1e-6),
                "step {step}: reducer gradient on CUDA ≠ plain backward's"
            );
        }
    }
    println!("nccl on cuda: all-reduce, broadcast, all-gather, barrier, check_same and the DDP reducer ok");
}
