"""Cross-check benches/nets/songunet.py (and through bench.py, tweedie-nets) against the
reference SongUNet of an NVlabs/edm checkout: parameter counts, state_dict names and shapes,
and the forward output for the same weights.

    .venv/bin/python benches/nets/check_reference.py --edm /path/to/edm

The EDM code is only imported from the given checkout, never copied here.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from songunet import Wrapped, reference  # noqa: E402

BASE = dict(
    in_channels=3, out_channels=3, label_dim=0, augment_dim=0, model_channels=128, channel_mult=[2, 2, 2],
    channel_mult_emb=4, num_blocks=4, attn_resolutions=[16], dropout=0.13, label_dropout=0.0,
    resolution=32, embedding="positional", channel_mult_noise=1, encoder="standard", decoder="standard",
    resample_filter=[1, 1],
)
CASES = {
    "ddpmpp-cifar10": (dict(BASE), 55_732_739),
    "ddpmpp-cifar10-cond": (dict(BASE, label_dim=10), 55_734_147),
    "ncsnpp-cifar10": (dict(BASE, embedding="fourier", channel_mult_noise=2, encoder="residual",
                            resample_filter=[1, 3, 3, 1]), 56_395_523),
    # Small variants exercise the skip encoder/decoder and run the forward comparison quickly.
    "skip-small": (dict(BASE, resolution=16, model_channels=32, channel_mult=[1, 2], num_blocks=1,
                        attn_resolutions=[8], encoder="skip", decoder="skip", augment_dim=9), None),
    "ncsnpp-small": (dict(BASE, resolution=16, model_channels=32, channel_mult=[1, 2, 2], num_blocks=1,
                          attn_resolutions=[8], embedding="fourier", channel_mult_noise=2, encoder="residual",
                          resample_filter=[1, 3, 3, 1], label_dim=10), None),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edm", required=True, help="path to an NVlabs/edm checkout")
    a = ap.parse_args()
    sys.path.insert(0, a.edm)
    from training import networks  # noqa: E402

    torch.manual_seed(0)
    ok = True
    for name, (cfg, want) in CASES.items():
        ref, ours = reference(networks, cfg), Wrapped(cfg)
        rs, os_ = ref.state_dict(), ours.state_dict()
        n_ref = sum(p.numel() for p in ref.parameters())
        n_ours = sum(p.numel() for p in ours.parameters())
        same_names = {k: tuple(v.shape) for k, v in rs.items()} == {k: tuple(v.shape) for k, v in os_.items()}
        line = f"{name}: params ref {n_ref:,} ours {n_ours:,}; tensors {len(list(ref.parameters()))}+" \
               f"{len(rs) - len(list(ref.parameters()))} buffers; names/shapes equal: {same_names}"
        ok &= same_names and n_ref == n_ours and (want is None or want == n_ref)
        if cfg["resolution"] <= 16:
            # Non-trivial weights, then the same state_dict in both.
            with torch.no_grad():
                for p in ref.parameters():
                    p.copy_(torch.randn_like(p) / max(p[0].numel(), 1) ** 0.5 if p.dim() > 1 else p + 0.1 * torch.randn_like(p))
            ours.load_state_dict(ref.state_dict(), strict=True)
            ref.eval(), ours.eval()
            x = torch.randn(4, cfg["in_channels"], cfg["resolution"], cfg["resolution"])
            c = torch.randn(4)
            y = torch.nn.functional.one_hot(torch.arange(4) % 10, 10).float() if cfg["label_dim"] else None
            aug = torch.randn(4, cfg["augment_dim"]) if cfg["augment_dim"] else None
            with torch.no_grad():
                r = ref.model(x, c, y, aug)
                o = ours.model(x, c, y, aug)
            d = (r - o).abs().max().item()
            line += f"; forward max |diff| {d:.2e} (|out| {r.abs().max().item():.2e})"
            ok &= d <= 1e-4 * max(1.0, r.abs().max().item())
        print(line)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
