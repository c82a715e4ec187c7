"""PyTorch-eager side of the tch-vs-PyTorch U-Net benchmark (driven by `cargo xtask bench-nets`,
crates/tweedie-bench/src/nets.rs).

Loads the config, weights and inputs the Rust side wrote, runs the same network on the same
device and checks its forward output against Rust's; prints one JSON line {"max_abs_diff": …}.
Then it serves timing requests on stdin so that the Rust side can interleave its own iterations
with these (on a shared machine both then see the same conditions), each answered with the
milliseconds on one line:

- "step": one training step: zero the gradients, forward, mean-square loss, backward, Adam;
- "fb": the same without the Adam update;
- "f": one forward without gradients;
- "quit" exits.

On CUDA every timed request is bracketed by torch.cuda.synchronize(), so the time is the GPU's.
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from songunet import Wrapped  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="UnetConfig as JSON")
    ap.add_argument("--weights", required=True, help="safetensors state_dict (model.* names)")
    ap.add_argument("--inputs", required=True, help="safetensors with x, c_noise, out (Rust output)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.999))
    ap.add_argument("--eps", type=float, default=1e-8)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"

    with open(a.config) as f:
        cfg = json.load(f)
    net = Wrapped(cfg)
    net.load_state_dict(safetensors_io.load(a.weights), strict=True)
    net.to(dev)
    io = safetensors_io.load(a.inputs)
    x, c = io["x"].to(dev), io["c_noise"].to(dev)

    net.eval()
    with torch.no_grad():
        out = net.model(x, c).cpu()
    diff = (out - io["out"]).abs().max().item()
    ref_scale = io["out"].abs().max().item()

    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    # PyTorch's defaults (the multi-tensor implementation on CUDA), as EDM's training uses them.
    opt = torch.optim.Adam(params, lr=a.lr, betas=tuple(a.betas), eps=a.eps)

    def fb():
        opt.zero_grad(set_to_none=True)
        loss = net.model(x, c).square().mean()
        loss.backward()

    def step():
        fb()
        opt.step()

    def fwd():
        net.eval()
        with torch.no_grad():
            net.model(x, c)
        net.train()

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    for _ in range(a.warmup):
        step()
    sync()
    print(json.dumps({
        "max_abs_diff": diff,
        "out_max_abs": ref_scale,
        "params": sum(p.numel() for p in params),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
    }), flush=True)
    requests = {"step": step, "fb": fb, "f": fwd}
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        f = requests.get(cmd)
        if f is None:
            sys.exit(f"bench.py: unknown request {cmd!r}")
        sync()
        t0 = time.perf_counter()
        f()
        sync()
        print(f"{(time.perf_counter() - t0) * 1e3:.6f}", flush=True)


if __name__ == "__main__":
    main()
