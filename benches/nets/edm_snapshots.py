"""Writes small training snapshots with NVlabs/edm's own code, to check `tweedie nets import-edm`
against the reference itself (EDM is not vendored: pass the path of a checkout).

Each snapshot is pickled exactly as EDM's training loop does (dict of ema, loss_fn, augment_pipe,
dataset_kwargs), with EDM's persistent classes embedding their source; next to it,
NAME.expected.safetensors holds the state_dict (`state.*`) and D(x; σ, labels, augment) from
EDM's own forward, the layout tests/edm_import.rs reads:

    .venv/bin/python benches/nets/edm_snapshots.py --edm ../edm --out /tmp/edm-snapshots
    TWEEDIE_EDM_SNAPSHOTS=/tmp/edm-snapshots cargo test --profile dev -p tweedie-nets \\
        --test edm_import -- --ignored

The files embed EDM source (CC BY-NC-SA 4.0): keep them out of the repository.
"""

import argparse
import os
import pickle
import sys
import types

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def d_f64(net, x, sigma, labels, extra):
    """D from EDM's own network, with the preconditioning coefficients in float64 as tweedie
    computes them (EDM's float32 c_noise moves NCSN++'s Fourier features by up to 1e-2)."""
    s = sigma.double()
    name = type(net).__name__
    if name == "EDMPrecond":
        sd = net.sigma_data
        c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
        c_in, c_noise = 1 / (sd**2 + s**2).sqrt(), s.log() / 4
    elif name == "VEPrecond":
        c_skip, c_out, c_in, c_noise = torch.ones_like(s), s, torch.ones_like(s), (0.5 * s).log()
    elif name == "VPPrecond":
        c_skip, c_out, c_in = torch.ones_like(s), -s, 1 / (s**2 + 1).sqrt()
        c_noise = (net.M - 1) * net.sigma_inv(s)
    else:
        c_skip, c_out, c_in = torch.ones_like(s), -s, 1 / (s**2 + 1).sqrt()
        c_noise = (net.M - 1 - net.round_sigma(sigma, return_index=True)).double()
    v = [-1, 1, 1, 1]
    f = net.model((x.double() * c_in.view(v)).float(), c_noise.float(), class_labels=labels, **extra)
    return (x.double() * c_skip.view(v) + f[:, :x.shape[1]].double() * c_out.view(v)).float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edm", required=True, help="path of an NVlabs/edm checkout")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sys.path.insert(0, a.edm)
    if "requests" not in sys.modules:
        try:
            import requests  # noqa: F401
        except ImportError:  # dnnlib imports it for downloads only
            sys.modules["requests"] = types.ModuleType("requests")
    from training import augment, loss, networks

    os.makedirs(a.out, exist_ok=True)
    song = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0)
    adm = dict(model_channels=64, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8, 4], dropout=0.0)
    cases = {
        # EDM's train.py passes every architecture kwarg explicitly; these leave some at defaults.
        "ref-edm-ddpmpp-cond-aug": (networks.EDMPrecond, dict(label_dim=4, model_type="SongUNet", augment_dim=9,
                                    embedding_type="positional", **song), loss.EDMLoss()),
        "ref-vp-ncsnpp-uncond": (networks.VPPrecond, dict(embedding_type="fourier", channel_mult_noise=2,
                                 encoder_type="residual", resample_filter=[1, 3, 3, 1], **song), loss.VPLoss()),
        "ref-ve-skip-cond": (networks.VEPrecond, dict(label_dim=3, encoder_type="skip", decoder_type="skip", **song),
                             loss.VELoss()),
        "ref-iddpm-adm-uncond": (networks.iDDPMPrecond, dict(**adm), None),
        "ref-edm-adm-cond-aug": (networks.EDMPrecond, dict(label_dim=5, augment_dim=9, **adm), loss.EDMLoss()),
    }
    for name, (cls, kw, loss_fn) in cases.items():
        torch.manual_seed(0)
        net = cls(img_resolution=8, img_channels=3, **kw)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        net.eval().requires_grad_(False)
        pipe = augment.AugmentPipe(p=0.12, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)
        data = dict(ema=net, loss_fn=loss_fn, augment_pipe=pipe if "aug" in name else None,
                    dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="x.zip"))
        with open(os.path.join(a.out, f"{name}.pkl"), "wb") as f:
            pickle.dump(data, f)
        x = torch.randn(4, 3, 8, 8, generator=g)
        sigma = torch.tensor([0.05, 0.7, 3.0, 40.0])
        ld = kw.get("label_dim", 0)
        labels = F.one_hot(torch.tensor([0, 1, 2, 1]) % ld, ld).float() if ld else None
        aug = torch.randn(4, 9, generator=g) if kw.get("augment_dim") else None
        extra = dict(augment_labels=aug) if aug is not None else {}
        d = net(x, sigma, labels, **extra)
        out = {f"state.{k}": v for k, v in net.state_dict().items() if k != "u"}
        out.update(x=x, sigma=sigma, d=d, d_f64=d_f64(net, x, sigma, labels, extra))
        if labels is not None:
            out["labels"] = labels
        if aug is not None:
            out["augment"] = aug
        safetensors_io.save(os.path.join(a.out, f"{name}.expected.safetensors"), out, {"producer": "edm"})
        print(name, sum(p.numel() for p in net.parameters()))


if __name__ == "__main__":
    main()
