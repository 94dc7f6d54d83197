"""Sample pictures: image grids (PIL) and 2-D scatter plots (matplotlib), written as PNG."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def image_grid(x: Tensor, nrow: int | None = None, pad: int = 1, scale: int = 4) -> np.ndarray:
    """Tile images (N, C, H, W) in [-1, 1] into one uint8 array (H', W', 3), upscaled."""
    x = x.detach().float().cpu().clamp(-1, 1)
    n, c, h, w = x.shape
    if c == 1:
        x = x.expand(n, 3, h, w)
    elif c != 3:
        x = x[:, :1].expand(n, 3, h, w)
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.ones(3, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i]
    grid = ((grid + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)


def scatter_png(x: Tensor, reference: Tensor | None = None, title: str = "") -> bytes:
    """A 2-D scatter plot of samples (N, 2), over a reference sample in grey; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if reference is not None:
        r = reference.detach().cpu().numpy()
        ax.scatter(r[:, 0], r[:, 1], s=2, c="0.8", linewidths=0)
    p = x.detach().float().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=2, c="tab:blue", linewidths=0)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_samples_png(x: Tensor, path: str | Path, reference: Tensor | None = None, title: str = "") -> Path:
    """Write samples as a PNG: a scatter for (N, 2) vectors, a grid for (N, C, H, W) images.

    Other shapes (sequences (N, T, D)) are drawn as line plots of the first channel.
    Written atomically (temp file + rename).
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    if x.dim() == 2 and x.shape[1] == 2:
        tmp.write_bytes(scatter_png(x, reference, title))
    elif x.dim() == 4:
        Image.fromarray(image_grid(x)).save(tmp, format="PNG")
    else:
        tmp.write_bytes(_lines_png(x, title))
    tmp.replace(path)
    return path


def _lines_png(x: Tensor, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = x.detach().float().cpu()
    x = x if x.dim() == 2 else x[..., 0]  # (N, T)
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    for row in x[:16].numpy():
        ax.plot(row, lw=0.8, alpha=0.8)
    ax.set_title(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
