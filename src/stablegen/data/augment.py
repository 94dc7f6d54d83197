"""Differentiable augmentation for GAN discriminators.

DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training"): color (brightness, saturation, contrast), translation (1/8 of the image, zero
padded) and cutout (a square of half the image size), applied to real and fake images alike
in both phases, differentiably, so G gets gradients through them.

ADA (Karras et al. 2020, "Training GANs with Limited Data"): the same kind of differentiable
ops, each applied per sample with probability p, and p steered so that the overfitting
heuristic r_t = E[sign(D(real))] tracks a target (0.6). Here the ops are the DiffAugment set
(a subset of ADA's pipeline that is non-leaking for p well below 1 on digits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POLICIES = ("color", "translation", "cutout")


def _apply(x: Tensor, y: Tensor, mask: Tensor | None) -> Tensor:
    return y if mask is None else torch.where(mask.view(-1, 1, 1, 1), y, x)


def color(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5); x (B, C, H, W)."""
    b = x.shape[0]
    r = lambda: torch.rand(b, 1, 1, 1, dtype=x.dtype, device=x.device)  # noqa: E731
    y = x + (r() - 0.5)
    mean = y.mean(dim=1, keepdim=True)
    y = (y - mean) * (r() * 2) + mean
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * (r() + 0.5) + mean
    return _apply(x, y, mask)


def translation(x: Tensor, mask: Tensor | None = None, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ratio * size pixels in x and y, zero-padded."""
    b, _, h, w = x.shape
    sh, sw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    tx = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    ty = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    y = padded.permute(0, 2, 3, 1)[gb, gx, gy].permute(0, 3, 1, 2)
    return _apply(x, y, mask)


def cutout(x: Tensor, mask: Tensor | None = None, ratio: float = 0.5) -> Tensor:
    """Zero a random square of ratio * size per image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
    gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
    keep = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    keep[gb, gx, gy] = 0
    return _apply(x, x * keep.unsqueeze(1), mask)


OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: Tensor, policy: tuple[str, ...] = POLICIES, p: float | Tensor = 1.0) -> Tensor:
    """Apply each op of `policy` to images (B, C, H, W); with p < 1 each op hits a sample
    with probability p (ADA). Randomness comes from torch's global RNG (checkpointed)."""
    if x.dim() != 4:
        raise ValueError(f"augmentation works on images (B, C, H, W), got shape {tuple(x.shape)}")
    for name in policy:
        mask = None
        if not (isinstance(p, float) and p >= 1.0):
            mask = torch.rand(x.shape[0], device=x.device) < p
        x = OPS[name](x, mask)
    return x


def check_policy(policy: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in policy.split(",") if s.strip())
    bad = [n for n in names if n not in OPS]
    if bad:
        raise ValueError(f"unknown augmentation {bad[0]!r}; choose from {', '.join(POLICIES)}")
    return names


def ada_adjust(p: float, rt: float, target: float, batch: int, interval: int, speed_img: int) -> float:
    """One ADA update of p: move by sign(r_t - target) * (batch * interval) / speed_img,
    so p can go from 0 to 1 within `speed_img` real images (Karras et al. 2020, sec. 3)."""
    step = (1.0 if rt > target else -1.0) * batch * interval / speed_img
    return min(max(p + step, 0.0), 1.0)
