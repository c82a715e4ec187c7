"""Writes the golden files of crates/tweedie-nets/tests/reference.rs: small SongUNets covering the
skip and residual encoders, skip decoder, Fourier/positional embeddings, both resample filters,
class and augmentation labels. For each case:

  <name>.weights.safetensors  state_dict with the reference's `model.` names
  <name>.io.safetensors       x, c_noise, labels, augment, out; metadata `config` = UnetConfig JSON

    .venv/bin/python benches/nets/make_fixture.py --edm /path/to/edm   # outputs of the reference
    .venv/bin/python benches/nets/make_fixture.py                      # outputs of songunet.py
"""

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402
from songunet import Wrapped, reference  # noqa: E402

COMMON = dict(
    resolution=8, in_channels=2, out_channels=2, model_channels=4, channel_mult=[1, 2], channel_mult_emb=2,
    num_blocks=1, attn_resolutions=[4], dropout=0.0, label_dropout=0.0, label_dim=3, augment_dim=2,
)
CASES = {
    "songunet_skip": dict(COMMON, embedding="fourier", channel_mult_noise=2, encoder="skip", decoder="skip",
                          resample_filter=[1.0, 3.0, 3.0, 1.0]),
    "songunet_residual": dict(COMMON, embedding="positional", channel_mult_noise=1, encoder="residual",
                              decoder="standard", resample_filter=[1.0, 1.0]),
}


def build(cfg, edm):
    if edm is None:
        return Wrapped(cfg)
    sys.path.insert(0, edm)
    from training import networks

    return reference(networks, cfg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edm", default=None, help="NVlabs/edm checkout to produce the outputs with")
    ap.add_argument("--out", default=os.path.join(HERE, "../../crates/tweedie-nets/tests/data"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(20261122)
    for name, cfg in CASES.items():
        net = build(cfg, a.edm).eval()
        with torch.no_grad():
            # The reference init zeroes output layers; random weights make every path count.
            for p in net.parameters():
                p.copy_(torch.randn_like(p) / max(p[0].numel(), 1) ** 0.5 if p.dim() > 1 else p + 0.1 * torch.randn_like(p))
            b = 3
            x = torch.randn(b, cfg["in_channels"], cfg["resolution"], cfg["resolution"])
            c = torch.randn(b)
            y = torch.nn.functional.one_hot(torch.tensor([0, 2, 1]), cfg["label_dim"]).float()
            aug = torch.randn(b, cfg["augment_dim"])
            out = net.model(x, c, y, aug)
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        safetensors_io.save(os.path.join(a.out, f"{name}.weights.safetensors"), state)
        io = dict(x=x, c_noise=c, labels=y, augment=aug, out=out.contiguous())
        meta = dict(config=json.dumps(cfg), producer="edm" if a.edm else "songunet.py")
        safetensors_io.save(os.path.join(a.out, f"{name}.io.safetensors"), io, meta)
        print(name, sum(p.numel() for p in net.parameters()), "params", out.abs().max().item())


if __name__ == "__main__":
    main()
