"""Writes pickles shaped like NVlabs/edm training snapshots, and malicious ones, for the tests of
`tweedie_nets::import` (run by tests/edm_import.rs with the project's .venv python).

Written for this project; no EDM code or weights are used or embedded. Like an EDM snapshot, each
file is a protocol-4 pickle of {ema, loss_fn, augment_pipe, dataset_kwargs}, every network module
pickles as a call to `torch_utils.persistence._reconstruct_persistent_obj(meta)` whose meta holds
source text (here: a line that would create a marker file if anyone executed it), the class name
and the object's __dict__ with `_init_kwargs`; tensors go through torch's own reducers, so storages
are nested legacy `torch.save` blobs. Some tensors share one storage through pickle's memo and
have non-contiguous strides; EDMPrecond carries sigma_max = inf; numpy scalars appear as EDM's
modules hold them (e.g. `skip_scale = np.sqrt(0.5)`).

Usage: make_pickles.py OUT_DIR MARKER_PATH [CASE ...]   (no CASE: every case and the malicious files)
"""

import collections
import io
import json
import math
import os
import pickle
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "benches", "nets"))
import songunet  # noqa: E402  (the project's own PyTorch SongUNet with EDM's names)

OUT, MARKER = sys.argv[1], sys.argv[2]
ONLY = set(sys.argv[3:])
# What `pickle.load` would exec: proof that nothing ran is the marker file's absence.
SOURCE = f"open({MARKER!r}, 'w').write('the embedded source was executed')\n"

# A stand-in `torch_utils.persistence` so that pickle names the same global EDM files name.
pkg = types.ModuleType("torch_utils")
persistence = types.ModuleType("torch_utils.persistence")


def _reconstruct_persistent_obj(meta):  # never called by the Rust reader
    exec(meta["module_src"], {})
    raise RuntimeError("fixtures are not meant to be unpickled")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
pkg.persistence = persistence
sys.modules["torch_utils"] = pkg
sys.modules["torch_utils.persistence"] = persistence


class View:
    """Pickles as `_rebuild_tensor_v2(storage, offset, size, stride, ...)` on a chosen storage."""

    def __init__(self, storage, offset, size, stride, param):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())
        self.param = param

    def __reduce__(self):
        if self.param:
            return (torch._utils._rebuild_parameter, (View(*self.args[:4], False), True, collections.OrderedDict()))
        return (torch._utils._rebuild_tensor_v2, self.args)


class Pickler(pickle.Pickler):
    """EDM's persistent-class reduction for every module; custom views for chosen tensors."""

    def __init__(self, f, names, kwargs, views):
        super().__init__(f, protocol=4)
        self.names, self.kwargs, self.views = names, kwargs, views

    def reducer_override(self, obj):
        if isinstance(obj, torch.Tensor) and id(obj) in self.views:
            return self.views[id(obj)].__reduce__()
        if isinstance(obj, nn.Module) and not isinstance(obj, nn.ModuleDict):
            state = dict(obj.__dict__)
            state["_init_args"] = ()
            state["_init_kwargs"] = self.kwargs.get(id(obj), {})
            meta = dict(type="class", version=6, module_src=SOURCE,
                        class_name=self.names.get(id(obj), type(obj).__name__), state=state)
            return (_reconstruct_persistent_obj, (meta,))
        return NotImplemented


# ---------------------------------------------------------------- ADM, written from the paper
# (Dhariwal & Nichol 2021) and EDM's description of its DhariwalUNet; EDM's module names.

def _kaiming(shape, fan_in):
    return (torch.rand(*shape) * 2 - 1) / math.sqrt(fan_in)


class AConv(nn.Module):
    def __init__(self, cin, cout, k, mode=None, zero=False):
        super().__init__()
        self.mode = mode
        if k:
            self.weight = nn.Parameter(_kaiming([cout, cin, k, k], cin * k * k) * (0 if zero else 1) + 0.01 * torch.randn(cout, cin, k, k))
            self.bias = nn.Parameter(_kaiming([cout], cin * k * k))
        else:
            self.weight = self.bias = None
        self.register_buffer("resample_filter", torch.full([1, 1, 2, 2], 0.25) if mode else None)

    def forward(self, x):
        c = x.shape[1]
        if self.mode == "up":
            x = F.conv_transpose2d(x, (self.resample_filter * 4).tile([c, 1, 1, 1]), groups=c, stride=2)
        elif self.mode == "down":
            x = F.conv2d(x, self.resample_filter.tile([c, 1, 1, 1]), groups=c, stride=2)
        if self.weight is not None:
            x = F.conv2d(x, self.weight, self.bias, padding=self.weight.shape[-1] // 2)
        return x


class AGroupNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.groups = min(32, c // 4)
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(c))
        self.bias = nn.Parameter(0.1 * torch.randn(c))

    def forward(self, x):
        return F.group_norm(x, self.groups, self.weight, self.bias, 1e-5)


class ALinear(nn.Module):
    def __init__(self, fin, fout, bias=True):
        super().__init__()
        self.weight = nn.Parameter(_kaiming([fout, fin], fin))
        self.bias = nn.Parameter(_kaiming([fout], fin)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class ABlock(nn.Module):
    def __init__(self, cin, cout, emb, mode=None, attention=False):
        super().__init__()
        self.cin = cin
        self.norm0 = AGroupNorm(cin)
        self.conv0 = AConv(cin, cout, 3, mode)
        self.affine = ALinear(emb, 2 * cout)
        self.norm1 = AGroupNorm(cout)
        self.conv1 = AConv(cout, cout, 3)
        self.skip = AConv(cin, cout, 1 if cin != cout else 0, mode) if (cin != cout or mode) else None
        self.heads = cout // 64 if attention else 0
        if self.heads:
            self.norm2 = AGroupNorm(cout)
            self.qkv = AConv(cout, 3 * cout, 1)
            self.proj = AConv(cout, cout, 1)

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv1(F.silu(shift + self.norm1(h) * (scale + 1)))
        x = h + (self.skip(x) if self.skip is not None else x)
        if self.heads:
            b, c, hh, ww = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(b * self.heads, c // self.heads, 3, -1).unbind(2)
            w = torch.softmax(torch.einsum("ncq,nck->nqk", q, k / math.sqrt(c // self.heads)), dim=2)
            a = torch.einsum("nqk,nck->ncq", w, v)
            x = self.proj(a.reshape(b, c, hh, ww)) + x
        return x


class Adm(nn.Module):
    def __init__(self, res, cin, cout_img, label_dim, augment_dim, mc, mult, nblocks, attn):
        super().__init__()
        emb = 4 * mc
        self.mc, self.label_dim = mc, label_dim
        if augment_dim:
            self.map_augment = ALinear(augment_dim, mc, bias=False)
        self.map_layer0 = ALinear(mc, emb)
        self.map_layer1 = ALinear(emb, emb)
        if label_dim:
            self.map_label = ALinear(label_dim, emb, bias=False)
        self.enc, self.dec = nn.ModuleDict(), nn.ModuleDict()
        c, skips = cin, []
        for lvl, m in enumerate(mult):
            r = res >> lvl
            if lvl == 0:
                self.enc[f"{r}x{r}_conv"] = AConv(c, mc * m, 3)
                c = mc * m
            else:
                self.enc[f"{r}x{r}_down"] = ABlock(c, c, emb, "down")
            skips.append(c)
            for i in range(nblocks):
                self.enc[f"{r}x{r}_block{i}"] = ABlock(c, mc * m, emb, attention=r in attn)
                c = mc * m
                skips.append(c)
        for lvl in reversed(range(len(mult))):
            r, m = res >> lvl, mult[lvl]
            if lvl == len(mult) - 1:
                self.dec[f"{r}x{r}_in0"] = ABlock(c, c, emb, attention=True)
                self.dec[f"{r}x{r}_in1"] = ABlock(c, c, emb)
            else:
                self.dec[f"{r}x{r}_up"] = ABlock(c, c, emb, "up")
            for i in range(nblocks + 1):
                self.dec[f"{r}x{r}_block{i}"] = ABlock(c + skips.pop(), mc * m, emb, attention=r in attn)
                c = mc * m
        self.out_norm = AGroupNorm(c)
        self.out_conv = AConv(c, cout_img, 3)

    def forward(self, x, c_noise, labels=None, augment=None):
        half = self.mc // 2
        freqs = (1 / 10000) ** (torch.arange(half, dtype=torch.float32) / half)
        arg = torch.outer(c_noise, freqs)
        emb = torch.cat([arg.cos(), arg.sin()], dim=1)
        if augment is not None and hasattr(self, "map_augment"):
            emb = emb + self.map_augment(augment)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.label_dim:
            emb = emb + self.map_label(labels)
        emb = F.silu(emb)
        skips = []
        for mod in self.enc.values():
            x = mod(x, emb) if isinstance(mod, ABlock) else mod(x)
            skips.append(x)
        for mod in self.dec.values():
            if x.shape[1] != mod.cin:
                x = torch.cat([x, skips.pop()], dim=1)
            x = mod(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


# ---------------------------------------------------------------- preconditioning (Karras et al. 2022, Table 1)

def coeffs(kind, sigma, p):
    """(c_skip, c_out, c_in, c_noise) per sample, in float64."""
    s = sigma.double()
    if kind == "EDMPrecond":
        sd = p["sigma_data"]
        return sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (s**2 + sd**2).sqrt(), s.log() / 4
    if kind == "VPPrecond":
        bd, bm, m = p["beta_d"], p["beta_min"], p["M"]
        t = ((bm**2 + 2 * bd * (1 + s**2).log()).sqrt() - bm) / bd
        return torch.ones_like(s), -s, 1 / (s**2 + 1).sqrt(), (m - 1) * t
    if kind == "VEPrecond":
        return torch.ones_like(s), s, torch.ones_like(s), (0.5 * s).log()
    if kind == "iDDPMPrecond":
        u = p["u"].double()
        idx = (s[:, None] - u[None, :]).abs().argmin(1)
        return torch.ones_like(s), -s, 1 / (s**2 + 1).sqrt(), (p["M"] - 1 - idx).double()
    raise ValueError(kind)


def iddpm_u(c1, c2, m):
    """u_M = 0, u_{j-1} = sqrt((u_j² + 1) / max(ᾱ(j-1)/ᾱ(j), C₁) - 1), ᾱ(j) = sin²(π/2 · j/M/(C₂+1))."""
    ab = lambda j: math.sin(0.5 * math.pi * j / m / (c2 + 1)) ** 2  # noqa: E731
    u = [0.0] * (m + 1)
    for j in range(m, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(ab(j - 1) / ab(j), c1) - 1)
    return torch.tensor(u, dtype=torch.float32)


class Precond(nn.Module):
    def __init__(self, net, attrs):
        super().__init__()
        for k, v in attrs.items():
            setattr(self, k, v)
        self.model = net


def randomize(net):
    """Non-trivial weights everywhere (init-zero layers would hide mistakes)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(p + 0.05 * torch.randn(p.shape, generator=g))


def save_safetensors(path, tensors, meta):
    """Minimal safetensors writer (f32), so the script needs nothing beyond torch."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def snapshot(case, precond, pattrs, pkw, net, nclass, nkw, views_for=None):
    if ONLY and case not in ONLY:
        return
    torch.manual_seed(1)
    randomize(net)
    if "u" in pattrs:
        u = pattrs.pop("u")
    else:
        u = None
    top = Precond(net, pattrs)
    if u is not None:
        top.register_buffer("u", u)
    names = {id(top): precond, id(net): nclass}
    kwargs = {id(top): pkw, id(net): nkw}
    views = {}
    if views_for:
        # Two parameters in one storage, memo-shared: the first stored transposed (strides (1, n)).
        a, b = views_for(net)
        ta = a.detach().t().contiguous().flatten()
        big = torch.cat([ta, b.detach().flatten()])
        st = torch.storage.TypedStorage(wrap_storage=big.untyped_storage(), dtype=torch.float32, _internal=True)
        views[id(a)] = View(st, 0, a.shape, (1, a.shape[0]), True)
        views[id(b)] = View(st, a.numel(), b.shape, b.stride(), True)
    data = dict(ema=top, loss_fn=None, augment_pipe=None,
                dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="x.zip", max_size=None))
    buf = io.BytesIO()
    Pickler(buf, names, kwargs, views).dump(data)
    with open(os.path.join(OUT, f"{case}.pkl"), "wb") as f:
        f.write(buf.getvalue())
    # Expected tensors and D(x; σ, labels, augment) from this file's own forward.
    net.eval()
    res, ch = pkw["img_resolution"], pkw["img_channels"]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, ch, res, res, generator=g)
    sigma = torch.tensor([0.05, 0.7, 3.0, 40.0])
    ld = pkw.get("label_dim", 0)
    labels = F.one_hot(torch.tensor([0, 1, 2, 1]) % max(ld, 1), max(ld, 1)).float() if ld else None
    aug_dim = nkw.get("augment_dim", 0)
    aug = torch.randn(4, aug_dim, generator=g) if aug_dim else None
    p = dict(pattrs)
    p.setdefault("sigma_data", 0.5)
    p.setdefault("beta_d", 19.9)
    p.setdefault("beta_min", 0.1)
    p.setdefault("M", 1000)
    if u is not None:
        p["u"] = u
    c_skip, c_out, c_in, c_noise = coeffs(precond, sigma, p)
    shape = [-1, 1, 1, 1]
    with torch.no_grad():
        f = net((x.double() * c_in.view(shape)).float(), c_noise.float(), labels, aug)[:, :ch]
    d = (x.double() * c_skip.view(shape) + f.double() * c_out.view(shape)).float()
    out = {f"state.{k}": v for k, v in top.state_dict().items() if k != "u"}
    out.update(x=x, sigma=sigma, d=d)
    if labels is not None:
        out["labels"] = labels
    if aug is not None:
        out["augment"] = aug
    save_safetensors(os.path.join(OUT, f"{case}.expected.safetensors"), out, {"case": case})


def song(cfg):
    base = dict(resolution=8, in_channels=3, out_channels=3, label_dim=0, augment_dim=0, model_channels=16,
                channel_mult=[1, 2], channel_mult_emb=4, num_blocks=1, attn_resolutions=[4], dropout=0.0,
                label_dropout=0.0, embedding="positional", channel_mult_noise=1, encoder="standard",
                decoder="standard", resample_filter=[1, 1])
    base.update(cfg)
    return songunet.SongUNet(base)


def main():
    os.makedirs(OUT, exist_ok=True)
    # 1. EDMPrecond over SongUNet (DDPM++ flavour), conditional with augment labels; kwargs left
    #    at EDM's defaults are absent (channel_mult_emb, embedding_type, encoder/decoder, filter).
    net = song(dict(label_dim=4, augment_dim=9))
    nkw = dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=4, augment_dim=9, model_channels=16,
               channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0)
    pkw = dict(img_resolution=8, img_channels=3, label_dim=4, use_fp16=False, model_type="SongUNet",
               augment_dim=9, model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0)
    snapshot("edm-songunet-cond-aug", "EDMPrecond",
             dict(img_resolution=8, img_channels=3, label_dim=4, use_fp16=False, sigma_min=0, sigma_max=float("inf"), sigma_data=0.5),
             pkw, net, "SongUNet", nkw, views_for=lambda n: (n.map_layer0.weight, n.map_layer1.weight))
    # 2. VPPrecond over NCSN++-style SongUNet (Fourier, residual encoder, FIR [1,3,3,1]), unconditional.
    net = song(dict(embedding="fourier", channel_mult_noise=2, encoder="residual", resample_filter=[1, 3, 3, 1]))
    nkw = dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=0, model_channels=16, channel_mult=[1, 2],
               num_blocks=1, attn_resolutions=[4], dropout=0.0, embedding_type="fourier", channel_mult_noise=2,
               encoder_type="residual", resample_filter=[1, 3, 3, 1])
    pkw = dict(img_resolution=8, img_channels=3, label_dim=0, model_type="SongUNet", **{k: v for k, v in nkw.items()
               if k not in ("img_resolution", "in_channels", "out_channels", "label_dim")})
    snapshot("vp-songunet-uncond", "VPPrecond",
             dict(img_resolution=8, img_channels=3, label_dim=0, beta_d=np.float64(19.9), beta_min=0.1, gain=np.float32(1.5),
                  M=np.int64(1000), epsilon_t=1e-5, skip_scale=np.sqrt(0.5), flag=np.bool_(True)),
             pkw, net, "SongUNet", nkw)
    # 3. VEPrecond over SongUNet with skip encoder and decoder, conditional.
    net = song(dict(label_dim=3, encoder="skip", decoder="skip"))
    nkw = dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=3, model_channels=16, channel_mult=[1, 2],
               num_blocks=1, attn_resolutions=[4], dropout=0.0, encoder_type="skip", decoder_type="skip")
    pkw = dict(img_resolution=8, img_channels=3, label_dim=3, model_type="SongUNet", **{k: v for k, v in nkw.items()
               if k not in ("img_resolution", "in_channels", "out_channels", "label_dim")})
    snapshot("ve-songunet-cond", "VEPrecond", dict(img_resolution=8, img_channels=3, label_dim=3, sigma_min=0.02, sigma_max=100),
             pkw, net, "SongUNet", nkw)
    # 4. iDDPMPrecond over DhariwalUNet (2× output channels, u buffer), unconditional; model_type
    #    absent (EDM's default for iDDPM is DhariwalUNet). 128 channels at 4×4: two heads.
    net = Adm(8, 3, 6, 0, 0, 64, [1, 2], 1, [4])
    nkw = dict(img_resolution=8, in_channels=3, out_channels=6, label_dim=0, model_channels=64, channel_mult=[1, 2],
               num_blocks=1, attn_resolutions=[4], dropout=0.0)
    pkw = dict(img_resolution=8, img_channels=3, label_dim=0, model_channels=64, channel_mult=[1, 2], num_blocks=1,
               attn_resolutions=[4], dropout=0.0)
    snapshot("iddpm-adm-uncond", "iDDPMPrecond",
             dict(img_resolution=8, img_channels=3, label_dim=0, C_1=0.001, C_2=0.008, M=1000, u=iddpm_u(0.001, 0.008, 1000)),
             pkw, net, "DhariwalUNet", nkw)
    # 5. EDMPrecond over DhariwalUNet, conditional with augment labels (EDM's ImageNet set-up, small).
    net = Adm(8, 3, 3, 5, 9, 64, [1, 2], 1, [8, 4])
    nkw = dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=5, augment_dim=9, model_channels=64,
               channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8, 4], dropout=0.0)
    pkw = dict(img_resolution=8, img_channels=3, label_dim=5, augment_dim=9, model_type="DhariwalUNet", model_channels=64,
               channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8, 4], dropout=0.0)
    snapshot("edm-adm-cond-aug", "EDMPrecond",
             dict(img_resolution=8, img_channels=3, label_dim=5, sigma_min=0, sigma_max=float("inf"), sigma_data=0.5),
             pkw, net, "DhariwalUNet", nkw)
    if not ONLY:
        malicious()


class Touch:
    """Would create the marker file when unpickled (a global outside the allowlist)."""

    def __reduce__(self):
        return (evil_payload.touch, (MARKER,))


evil_payload = types.ModuleType("evil_payload")
exec("def touch(p):\n    open(p, 'w').write('executed')\n", evil_payload.__dict__)
sys.modules["evil_payload"] = evil_payload


class Raw:
    """Pickles as an arbitrary call (used to plant bad storage blobs)."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def malicious():
    good = open(os.path.join(OUT, "edm-songunet-cond-aug.pkl"), "rb").read()
    w = lambda name, b: open(os.path.join(OUT, name), "wb").write(b)  # noqa: E731
    # A snapshot whose dataset_kwargs hide a call to evil_payload.touch(MARKER).
    w("evil-global.pkl", pickle.dumps(dict(ema=None, dataset_kwargs=dict(x=Touch())), protocol=4))
    # os.system('touch MARKER'), written by hand (pickle itself would name it posix.system).
    cmd = f"touch {MARKER}".encode()
    w("os-system.pkl", b"\x80\x02cos\nsystem\nq\x00X" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R.")
    # A storage blob whose declared element count exceeds its data.
    b = io.BytesIO()
    torch.save(torch.arange(4.0).untyped_storage(), b, _use_new_zipfile_serialization=False)
    blob = b.getvalue()
    k = blob.rindex((16).to_bytes(8, "little"))  # untyped storage: 16 bytes
    st = torch.storage.TypedStorage(wrap_storage=torch.arange(4.0).untyped_storage(), dtype=torch.float32, _internal=True)
    b = io.BytesIO()
    torch.save(st, b, _use_new_zipfile_serialization=False)
    blob = b.getvalue()
    k = blob.rindex((4).to_bytes(8, "little"))
    lying = blob[:k] + (1 << 40).to_bytes(8, "little") + blob[k + 8:]
    t = Raw(torch._utils._rebuild_tensor_v2,
            (Raw(torch.storage._load_from_bytes, (lying,)), 0, (4,), (1,), False, collections.OrderedDict()))
    w("lying-blob.pkl", pickle.dumps(dict(ema=t), protocol=4))
    # A view reaching past its storage: size 4, stride 100.
    t = Raw(torch._utils._rebuild_tensor_v2,
            (Raw(torch.storage._load_from_bytes, (blob,)), 0, (4,), (100,), False, collections.OrderedDict()))
    w("lying-stride.pkl", pickle.dumps(dict(ema=t), protocol=4))
    # Truncated snapshot.
    w("truncated.pkl", good[: len(good) // 2])
    # A bytes object claiming 2^60 bytes: must fail without allocating.
    w("huge-length.pkl", b"\x80\x04\x8e" + (1 << 60).to_bytes(8, "little") + b"abc")
    # Shared references that expand to 2^40 nodes.
    a = ["x" * 100]
    for _ in range(40):
        a = [a, a]
    w("expansion.pkl", pickle.dumps(a, protocol=4))


if __name__ == "__main__":
    main()
