"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders"; masked convolutions of "Pixel Recurrent Neural Networks", van den Oord et al. 2016).

Two stacks remove the blind spot of the plain masked-convolution PixelCNN: a vertical stack
whose features at row i see only rows above i, and a horizontal stack that sees the pixels to
the left in row i plus the vertical stack's features. The first block is type A (the current
pixel is masked), the others type B. Each block applies the gated unit tanh(W_f * x) *
sigmoid(W_g * x), with an optional class bias (the Conditional PixelCNN). The net outputs
logits over `levels` grey levels per channel; with C > 1 channels the C values of one pixel
are predicted independently given all earlier pixels (raster order), which is still an exact
autoregressive distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedConv2d(nn.Conv2d):
    """A Conv2d whose kernel is multiplied by a fixed 0/1 `mask` (kernel_h, kernel_w)."""

    def __init__(self, cin: int, cout: int, mask: Tensor):
        kh, kw = mask.shape
        super().__init__(cin, cout, (kh, kw), padding=(kh // 2, kw // 2))
        self.register_buffer("mask", mask[None, None])

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def vertical_mask(kernel: int, mask_center: bool) -> Tensor:
    """(k, k) mask keeping the rows above the centre, and the centre row unless mask_center.
    Features of the vertical stack stay functions of strictly earlier rows: the first block
    masks the centre row, later ones may keep it because their input already excludes it."""
    m = torch.ones(kernel, kernel)
    m[kernel // 2 + 1 :] = 0
    if mask_center:
        m[kernel // 2] = 0
    return m


def horizontal_mask(kernel: int, mask_center: bool) -> Tensor:
    """(1, k) mask keeping the pixels left of the centre, and the centre unless mask_center."""
    m = torch.ones(1, kernel)
    m[0, kernel // 2 + 1 :] = 0
    if mask_center:
        m[0, kernel // 2] = 0
    return m


class GatedBlock(nn.Module):
    """One gated block (van den Oord et al. 2016, figure 2): vertical and horizontal stacks,
    vertical-to-horizontal link, gated activations, residual on the horizontal stack."""

    def __init__(self, cin: int, channels: int, kernel: int, first: bool, dropout: float,
                 num_classes: int | None):
        super().__init__()
        self.v_conv = MaskedConv2d(cin, 2 * channels, vertical_mask(kernel, first))
        self.h_conv = MaskedConv2d(cin, 2 * channels, horizontal_mask(kernel, first))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.drop = nn.Dropout(dropout)
        self.cond = nn.Embedding(num_classes, 4 * channels) if num_classes else None
        self.residual = not first

    @staticmethod
    def _gate(x: Tensor) -> Tensor:
        f, g = x.chunk(2, dim=1)
        return torch.tanh(f) * torch.sigmoid(g)

    def forward(self, v: Tensor, h: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        v_feat = self.v_conv(v)  # (B, 2c, H, W), rows < i only
        h_feat = self.h_conv(h) + self.v_to_h(v_feat)  # (B, 2c, H, W)
        if self.cond is not None:
            v_bias, h_bias = self.cond(y)[:, :, None, None].chunk(2, dim=1)
            v_feat, h_feat = v_feat + v_bias, h_feat + h_bias
        h_new = self.h_out(self.drop(self._gate(h_feat)))
        return self._gate(v_feat), h_new + h if self.residual else h_new


class GatedPixelCNN(nn.Module):
    """x (B, C, H, W) in [-1, 1] [, labels y (B,)] -> logits (B, levels, C, H, W), where the
    logits at pixel (i, j) depend only on pixels before (i, j) in raster order."""

    def __init__(self, in_channels: int, levels: int, channels: int = 64, blocks: int = 6,
                 kernel: int = 3, dropout: float = 0.0, num_classes: int | None = None):
        super().__init__()
        if kernel % 2 == 0 or kernel < 3:
            raise ValueError(f"pixelcnn kernel must be odd and >= 3, got {kernel}")
        self.in_channels, self.levels, self.num_classes = in_channels, levels, num_classes
        self.blocks = nn.ModuleList(
            GatedBlock(in_channels if i == 0 else channels, channels, kernel, i == 0, dropout, num_classes)
            for i in range(blocks)
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                  nn.Conv2d(channels, in_channels * levels, 1))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if self.num_classes and y is None:
            raise ValueError("this PixelCNN is class-conditional: pass labels y")
        v = h = x
        for block in self.blocks:
            v, h = block(v, h, y)
        b, c, hh, ww = x.shape
        return self.head(h).view(b, c, self.levels, hh, ww).transpose(1, 2)  # (B, L, C, H, W)
