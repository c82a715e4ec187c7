"""PyTorch-eager side of the tweedie-nets benchmark (driven by `cargo run --example nets_bench`).

Loads the same config, weights and inputs the Rust side wrote and checks the forward output
against Rust's; prints one JSON line {"max_abs_diff": …, …}. Then it serves timing requests on
stdin so that the Rust side can interleave its own iterations with these (on a shared, loaded
machine both then see the same conditions): "fb" times one forward+backward step, "f" one
forward without gradients, each answered with the milliseconds on one line; "quit" exits.
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

    def fwd():
        net.eval()
        with torch.no_grad():
            net.model(x, c)
        net.train()

    for _ in range(a.warmup):
        step()
    print(json.dumps({
        "max_abs_diff": diff,
        "out_max_abs": ref_scale,
        "params": sum(p.numel() for p in params),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        f = step if cmd == "fb" else fwd
        t0 = time.perf_counter()
        f()
        print(f"{(time.perf_counter() - t0) * 1e3:.6f}", flush=True)


if __name__ == "__main__":
    main()
