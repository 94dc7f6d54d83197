"""A small U-Net for 8-32 px images (Ronneberger et al. 2015, as adapted for diffusion).

The DDPM U-Net (Ho et al. 2020, appendix B) with the refinements of Nichol & Dhariwal
(2021) and Dhariwal & Nichol (2021, section 3): residual blocks with GroupNorm, timestep
(and class) conditioning by scale-shift of the second norm ("AdaGN"), self-attention at
the listed resolutions and always in the middle, zero-initialised output layers so every
block starts as the identity. Levels halve the resolution with stride-2 convolutions;
upsampling is nearest-neighbour to the skip's size, so odd sizes (7x7) work. For 8x8
digits the default `channel_mult=(1, 2, 2)` gives levels 8 -> 4 -> 2.

x_t (B, C, H, W), timestep t (B,) and optional labels y (B,) -> (B, out_channels, H, W).
The net knows nothing of noise schedules; the method decides what its output means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import ClassEmbedding, TimeEmbedding


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    g = groups
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN-SiLU-conv, then GN * (1 + scale) + shift from the embedding, SiLU, dropout, conv."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = _norm(cout, groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # x (B, Cin, H, W), emb (B, E)
        h = self.conv1(F.silu(self.norm1(x)))  # (B, Cout, H, W)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.drop(h))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, zero-initialised output."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention channels {channels} are not divisible by heads {heads}")
        self.heads = heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class _Level(nn.Module):
    """Residual blocks (each followed by attention when enabled) at one resolution."""

    def __init__(self, cins: list[int], cout: int, emb_dim: int, dropout: float, groups: int,
                 attention: bool, heads: int):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(cin, cout, emb_dim, dropout, groups) for cin in cins)
        self.attn = nn.ModuleList(
            (Attention(cout, heads, groups) if attention else nn.Identity()) for _ in cins)


class UNet(nn.Module):
    """Diffusion U-Net: (x_t (B, C, H, W), t (B,), y) -> (B, out_channels, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, image_size: int, channels: int = 64,
                 channel_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: tuple[int, ...] = (4,), heads: int = 4, dropout: float = 0.1,
                 num_classes: int | None = None, groups: int = 8):
        super().__init__()
        emb_dim = 4 * channels
        self.time = TimeEmbedding(emb_dim, base=channels)
        self.label = ClassEmbedding(num_classes, emb_dim) if num_classes else None
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)

        widths = [channels * m for m in channel_mult]
        skips = [channels]  # channels of every tensor pushed on the skip stack
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        resolutions = [image_size]  # resolution of each level: 8 -> 4 -> 2
        for _ in widths[1:]:
            resolutions.append((resolutions[-1] + 1) // 2)
        cur = channels
        for i, width in enumerate(widths):
            cins = [cur] + [width] * (num_res_blocks - 1)
            attention = resolutions[i] in attention_resolutions
            self.down.append(_Level(cins, width, emb_dim, dropout, groups, attention, heads))
            cur = width
            skips += [width] * num_res_blocks
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
        self.mid1 = ResBlock(cur, cur, emb_dim, dropout, groups)
        self.mid_attn = Attention(cur, heads, groups)
        self.mid2 = ResBlock(cur, cur, emb_dim, dropout, groups)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            cins = []
            for _ in range(num_res_blocks + 1):
                cins.append(cur + skips.pop())
                cur = width
            attention = resolutions[i] in attention_resolutions
            self.up.append(_Level(cins, width, emb_dim, dropout, groups, attention, heads))
            if i > 0:
                self.upsample.append(nn.Conv2d(cur, cur, 3, padding=1))
        self.out = nn.Sequential(_norm(cur, groups), nn.SiLU(), _zero(nn.Conv2d(cur, out_channels, 3, padding=1)))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.time(t)  # (B, E)
        if self.label is not None:
            if y is None:
                raise ValueError("this U-Net is class-conditional: pass labels y")
            emb = emb + self.label(y)
        emb = F.silu(emb)

        h = self.inp(x)  # (B, ch, H, W)
        stack = [h]
        for i, level in enumerate(self.down):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(h, emb))
                stack.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                stack.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, level in enumerate(self.up):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(torch.cat([h, stack.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = F.interpolate(h, size=stack[-1].shape[-2:], mode="nearest")
                h = self.upsample[i](h)
        return self.out(h)
