"""PyTorch-eager side of the tweedie-nets benchmark (driven by `cargo run --example nets_bench`).

Loads the same config, weights and inputs the Rust side wrote, checks the forward output
against Rust's, then times forward+backward of the same training-style step. Prints one JSON
line: {"max_abs_diff": …, "fwd_bwd_ms": [...], "fwd_ms": [...]}.
"""

import argparse
import json
import os
import sys
import time

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from songunet import Wrapped  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="UnetConfig as JSON")
    ap.add_argument("--weights", required=True, help="safetensors state_dict (model.* names)")
    ap.add_argument("--inputs", required=True, help="safetensors with x, c_noise, out (Rust output)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    with open(a.config) as f:
        cfg = json.load(f)
    net = Wrapped(cfg)
    state = load_file(a.weights)
    net.load_state_dict(state, strict=True)
    io = load_file(a.inputs)
    x, c = io["x"], io["c_noise"]

    net.eval()
    with torch.no_grad():
        out = net.model(x, c)
    diff = (out - io["out"]).abs().max().item()
    ref_scale = io["out"].abs().max().item()

    net.train()
    params = [p for p in net.parameters() if p.requires_grad]

    def step():
        net.zero_grad(set_to_none=True)
        loss = net.model(x, c).square().mean()
        loss.backward()
        return loss

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    fwd = []
    with torch.no_grad():
        for _ in range(a.iters):
            t0 = time.perf_counter()
            net.model(x, c)
            fwd.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({
        "max_abs_diff": diff,
        "out_max_abs": ref_scale,
        "params": sum(p.numel() for p in params),
        "threads": torch.get_num_threads(),
        "fwd_bwd_ms": times,
        "fwd_ms": fwd,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
