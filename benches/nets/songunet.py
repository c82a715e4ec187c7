"""SongUNet (DDPM++ / NCSN++) in plain PyTorch, for side-by-side timing and numerical checks
against tweedie-nets.

Written for this project from the architecture description (Song et al. 2021; Karras et al.
2022): module and parameter names follow the EDM state_dict layout so that one safetensors file
loads into both implementations. Configured by the JSON form of `tweedie_nets::UnetConfig`.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def _xavier(shape, fan_in, fan_out, gain):
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(*shape) * 2 - 1) * bound


class Linear(nn.Module):
    def __init__(self, fin, fout, bias=True, gain=1.0):
        super().__init__()
        self.weight = nn.Parameter(_xavier([fout, fin], fin, fout, gain))
        self.bias = nn.Parameter(torch.zeros(fout)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class GroupNorm(nn.Module):
    def __init__(self, channels, eps):
        super().__init__()
        self.groups = min(32, channels // 4)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)


class Conv2d(nn.Module):
    """Convolution with optional FIR resampling by 2; `mode` is None, 'up' or 'down'."""

    def __init__(self, cin, cout, kernel, mode=None, taps=(1, 1), fused=False, gain=1.0):
        super().__init__()
        self.cin, self.cout, self.mode, self.fused = cin, cout, mode, fused
        if kernel:
            k = kernel
            self.weight = nn.Parameter(_xavier([cout, cin, k, k], cin * k * k, cout * k * k, gain))
            self.bias = nn.Parameter(torch.zeros(cout))
        else:
            self.weight = None
            self.bias = None
        t = torch.tensor(taps, dtype=torch.float32)
        filt = torch.outer(t, t)[None, None] / t.sum() ** 2
        self.register_buffer("resample_filter", filt if mode else None)
        self.w_pad = kernel // 2
        self.f_pad = (len(taps) - 1) // 2

    def _down(self, x, channels, pad):
        f = self.resample_filter.expand(channels, 1, -1, -1)
        return F.conv2d(x, f, stride=2, padding=pad, groups=channels)

    def _up(self, x, channels, pad):
        f = (self.resample_filter * 4).expand(channels, 1, -1, -1)
        return F.conv_transpose2d(x, f, stride=2, padding=pad, groups=channels)

    def forward(self, x):
        w = self.weight
        if self.fused and w is not None and self.mode == "up":
            x = self._up(x, self.cin, max(self.f_pad - self.w_pad, 0))
            x = F.conv2d(x, w, padding=max(self.w_pad - self.f_pad, 0))
        elif self.fused and w is not None and self.mode == "down":
            x = F.conv2d(x, w, padding=self.w_pad + self.f_pad)
            x = self._down(x, self.cout, 0)
        else:
            if self.mode == "up":
                x = self._up(x, self.cin, self.f_pad)
            elif self.mode == "down":
                x = self._down(x, self.cin, self.f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=self.w_pad)
        if self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1)
        return x


class Block(nn.Module):
    def __init__(self, cin, cout, emb, mode=None, attention=False, dropout=0.0, taps=(1, 1)):
        super().__init__()
        self.cin, self.dropout = cin, dropout
        self.norm0 = GroupNorm(cin, 1e-6)
        self.conv0 = Conv2d(cin, cout, 3, mode=mode, taps=taps)
        self.affine = Linear(emb, cout)
        self.norm1 = GroupNorm(cout, 1e-6)
        self.conv1 = Conv2d(cout, cout, 3, gain=1e-5)
        self.skip = Conv2d(cin, cout, 1, mode=mode, taps=taps) if (cin != cout or mode) else None
        self.attention = attention
        if attention:
            self.norm2 = GroupNorm(cout, 1e-6)
            self.qkv = Conv2d(cout, cout * 3, 1, gain=math.sqrt(0.2))
            self.proj = Conv2d(cout, cout, 1, gain=1e-5)

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None]))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (self.skip(x) if self.skip is not None else x)) * math.sqrt(0.5)
        if self.attention:
            b, c, hh, ww = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(b, c, 3, hh * ww).unbind(2)
            att = torch.softmax(torch.bmm(q.transpose(1, 2), k / math.sqrt(c)), dim=2)
            a = torch.bmm(v, att.transpose(1, 2)).reshape(b, c, hh, ww)
            x = (self.proj(a) + x) * math.sqrt(0.5)
        return x


class NoiseEmbedding(nn.Module):
    def __init__(self, kind, channels):
        super().__init__()
        self.kind, self.channels = kind, channels
        if kind == "fourier":
            self.register_buffer("freqs", torch.randn(channels // 2) * 16)

    def forward(self, c):
        if self.kind == "fourier":
            arg = torch.outer(c, 2 * math.pi * self.freqs)
        else:
            half = self.channels // 2
            i = torch.arange(half, dtype=torch.float32, device=c.device) / (half - 1)
            arg = torch.outer(c, torch.exp(-math.log(10000.0) * i))
        return torch.cat([arg.sin(), arg.cos()], dim=1)


class SongUNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        mc = cfg["model_channels"]
        emb = mc * cfg["channel_mult_emb"]
        noise = mc * cfg["channel_mult_noise"]
        taps = tuple(cfg["resample_filter"])
        drop = cfg["dropout"]
        self.label_dim = cfg["label_dim"]
        self.map_noise = NoiseEmbedding(cfg["embedding"], noise)
        if cfg["label_dim"]:
            self.map_label = Linear(cfg["label_dim"], noise)
        if cfg["augment_dim"]:
            self.map_augment = Linear(cfg["augment_dim"], noise, bias=False)
        self.map_layer0 = Linear(noise, emb)
        self.map_layer1 = Linear(emb, emb)

        res0, mults = cfg["resolution"], cfg["channel_mult"]
        attn_at = set(cfg["attn_resolutions"])
        enc_type, dec_type = cfg["encoder"], cfg["decoder"]
        self.enc = nn.ModuleDict()
        self.dec = nn.ModuleDict()
        skips = []
        c = cfg["in_channels"]
        caux = c
        for lvl, m in enumerate(mults):
            r = res0 >> lvl
            if lvl == 0:
                self.enc[f"{r}x{r}_conv"] = Conv2d(c, mc, 3)
                c = mc
                skips.append(c)
            else:
                self.enc[f"{r}x{r}_down"] = Block(c, c, emb, mode="down", dropout=drop, taps=taps)
                skips.append(c)
                if enc_type == "skip":
                    self.enc[f"{r}x{r}_aux_down"] = Conv2d(caux, caux, 0, mode="down", taps=taps)
                    self.enc[f"{r}x{r}_aux_skip"] = Conv2d(caux, c, 1)
                elif enc_type == "residual":
                    self.enc[f"{r}x{r}_aux_residual"] = Conv2d(caux, c, 3, mode="down", taps=taps, fused=True)
                    caux = c
            for i in range(cfg["num_blocks"]):
                self.enc[f"{r}x{r}_block{i}"] = Block(c, mc * m, emb, attention=r in attn_at, dropout=drop, taps=taps)
                c = mc * m
                skips.append(c)
        out_ch = cfg["out_channels"]
        for lvl in reversed(range(len(mults))):
            r, m = res0 >> lvl, mults[lvl]
            if lvl == len(mults) - 1:
                self.dec[f"{r}x{r}_in0"] = Block(c, c, emb, attention=True, dropout=drop, taps=taps)
                self.dec[f"{r}x{r}_in1"] = Block(c, c, emb, dropout=drop, taps=taps)
            else:
                self.dec[f"{r}x{r}_up"] = Block(c, c, emb, mode="up", dropout=drop, taps=taps)
            for i in range(cfg["num_blocks"] + 1):
                att = i == cfg["num_blocks"] and r in attn_at
                self.dec[f"{r}x{r}_block{i}"] = Block(c + skips.pop(), mc * m, emb, attention=att, dropout=drop, taps=taps)
                c = mc * m
            if dec_type == "skip" or lvl == 0:
                if dec_type == "skip" and lvl < len(mults) - 1:
                    self.dec[f"{r}x{r}_aux_up"] = Conv2d(out_ch, out_ch, 0, mode="up", taps=taps)
                self.dec[f"{r}x{r}_aux_norm"] = GroupNorm(c, 1e-6)
                self.dec[f"{r}x{r}_aux_conv"] = Conv2d(c, out_ch, 3, gain=1e-5)

    def forward(self, x, c_noise, labels=None, augment=None):
        emb = self.map_noise(c_noise)
        if self.label_dim:
            if labels is None:
                labels = torch.zeros(x.shape[0], self.label_dim, device=x.device)
            emb = emb + self.map_label(labels * math.sqrt(self.label_dim))
        if augment is not None and hasattr(self, "map_augment"):
            emb = emb + self.map_augment(augment)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
        skips, aux, h = [], x, x
        for name, mod in self.enc.items():
            if name.endswith("aux_down"):
                aux = mod(aux)
            elif name.endswith("aux_skip"):
                h = h + mod(aux)
                skips[-1] = h
            elif name.endswith("aux_residual"):
                h = (h + mod(aux)) / math.sqrt(2)
                aux = skips[-1] = h
            else:
                h = mod(h, emb) if isinstance(mod, Block) else mod(h)
                skips.append(h)
        out, tmp = None, None
        for name, mod in self.dec.items():
            if name.endswith("aux_up"):
                out = mod(out)
            elif name.endswith("aux_norm"):
                tmp = mod(h)
            elif name.endswith("aux_conv"):
                t = mod(F.silu(tmp))
                out = t if out is None else t + out
            else:
                if h.shape[1] != mod.cin:
                    h = torch.cat([h, skips.pop()], dim=1)
                h = mod(h, emb)
        return out


class Wrapped(nn.Module):
    """Puts the network under `model.` as the EDM preconditioners do."""

    def __init__(self, cfg):
        super().__init__()
        self.model = SongUNet(cfg)


def reference(networks, cfg):
    """The reference SongUNet of an NVlabs/edm checkout's `training.networks` module, built from
    the same config keys and put under `model.` like `Wrapped`, so state_dicts are interchangeable.
    The EDM code is imported from the caller's checkout, never copied here."""

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = networks.SongUNet(
                img_resolution=cfg["resolution"], in_channels=cfg["in_channels"], out_channels=cfg["out_channels"],
                label_dim=cfg["label_dim"], augment_dim=cfg["augment_dim"], model_channels=cfg["model_channels"],
                channel_mult=cfg["channel_mult"], channel_mult_emb=cfg["channel_mult_emb"],
                num_blocks=cfg["num_blocks"], attn_resolutions=cfg["attn_resolutions"], dropout=cfg["dropout"],
                embedding_type=cfg["embedding"], channel_mult_noise=cfg["channel_mult_noise"],
                encoder_type=cfg["encoder"], decoder_type=cfg["decoder"], resample_filter=cfg["resample_filter"])

    return Holder()
