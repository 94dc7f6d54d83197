"""PixelCNN over discrete grey levels (van den Oord et al. 2016, "Conditional Image Generation
with PixelCNN Decoders": gated blocks, vertical/horizontal stacks, class conditioning).

p(x) = prod_i p(x_i | x_<i) over pixels in raster order, each factor a categorical over the
data's `levels` grey levels (digits: 17). `log_prob` is the exact log-probability of the
integer levels (so `log_prob_is_discrete = True`; bits/dim = -log P / (D ln 2)); the loss is
-log P / D per sample (nats/dim). Sampling runs the net once per pixel with an explicit
generator. Dropout in the blocks fights overfitting on small data; sampling and log_prob
always run the net in eval mode.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..base import (Batch, DataInfo, ExportInput, ExportSpec, FamilyConfig, Method, NetContract, Phase, dims,
                    dummy_data, dummy_labels)
from ..metrics.likelihood import bits_per_dim
from ..nets.pixelcnn import GatedPixelCNN


class PixelCNNConfig(FamilyConfig):
    NETS = ("net",)  # model.nets: net(x, y) -> logits over the grey levels, each pixel seeing only earlier ones

    family: Literal["pixelcnn"] = "pixelcnn"
    channels: int = Field(64, ge=1)  # feature channels of both stacks
    blocks: int = Field(6, ge=1)  # gated blocks (the first is type A)
    kernel: int = Field(3, ge=3)  # odd kernel size of the masked convolutions
    dropout: float = Field(0.1, ge=0, lt=1)  # dropout before each block's output 1x1 conv
    conditional: bool = False  # class-conditional (needs data.labels)


def to_level_index(x: Tensor, levels: int) -> Tensor:
    """[-1, 1] images -> integer levels 0..levels-1 (int64), same shape."""
    return ((x.clamp(-1, 1) + 1) / 2 * (levels - 1)).round().long()


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class PixelCNN(Method):
    """Autoregressive likelihood over grey levels with a masked net(x, y) -> (B, levels, C, H, W)
    (the GatedPixelCNN, or the user's); class-conditional when `conditional`."""

    log_prob_is_discrete = True  # log_prob is log P of the integer levels

    def __init__(self, net: nn.Module, info: DataInfo, conditional: bool = False):
        super().__init__()
        self.net, self.info = net, info
        self.levels = int(info.levels)  # type: ignore[arg-type]
        self.num_classes = info.num_classes if conditional else None
        self.dim = math.prod(info.shape)

    def _log_prob(self, x: Tensor, y: Tensor | None) -> Tensor:
        logits = self.net(x, y)  # (B, L, C, H, W)
        target = to_level_index(x, self.levels)  # (B, C, H, W)
        return -F.cross_entropy(logits, target, reduction="none").flatten(1).sum(1)

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Exact log P (nats) of the grey levels of x (B, C, H, W) in [-1, 1], shape (B,)."""
        with _eval_mode(self):
            return self._log_prob(x, y)

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        y = batch.y if self.num_classes else None
        log_p = self._log_prob(batch.x, y)
        bpd = bits_per_dim(log_p.detach(), self.dim, levels=self.levels, continuous=False)
        return -log_p / self.dim, {"nll": -log_p.detach().mean(), "bpd": bpd.mean()}

    def phases(self) -> list[Phase]:
        return [Phase("main", list(self.parameters()), self.loss)]

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0,
               y: Tensor | None = None, **kw) -> Tensor:
        """n images (n, C, H, W) on the level grid of [-1, 1], drawn pixel by pixel in raster
        order; softmax(logits / temperature). Conditional nets draw labels uniformly unless
        `y` (n,) is given."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        p = next(self.parameters())
        if self.num_classes and y is None:
            y = torch.randint(self.num_classes, (n,), generator=generator, device=p.device)
        c, h, w = self.info.shape
        x = torch.zeros(n, c, h, w, device=p.device, dtype=p.dtype)
        with _eval_mode(self):
            for i in range(h):
                for j in range(w):
                    logits = self.net(x, y)[:, :, :, i, j]  # (n, L, C)
                    probs = F.softmax(logits / temperature, dim=1).transpose(1, 2).reshape(n * c, -1)
                    level = torch.multinomial(probs, 1, generator=generator).view(n, c)
                    x[:, :, i, j] = level.to(x.dtype) / (self.levels - 1) * 2 - 1
        return x

    def export_net(self) -> ExportSpec:
        """The net's logits: x (n, C, H, W) [, y (n,)] -> (n, levels, C, H, W); the pixel-by-pixel
        sampling loop is not exported."""
        inputs = {"x": ExportInput(("n", *self.info.shape), torch.float32,
                                   f"images on the {self.levels} grey levels of [-1, 1]")}
        if self.num_classes:
            inputs["y"] = ExportInput(("n",), torch.int64, f"class labels 0..{self.num_classes - 1}")
        notes = ["no sampling loop is exported: `stablegen sample` fills the pixels in raster order, each drawn "
                 "from softmax(logits[:, :, :, i, j] / temperature) over the levels; level l is "
                 "-1 + 2 l / (levels - 1)"]
        return ExportSpec(self.net, lambda x, *y: self.net(x, *y), inputs,
                          "logits over the grey levels of pixel (c, i, j), given the pixels before it", notes,
                          {"levels": self.levels})


def build(cfg: PixelCNNConfig, info: DataInfo, nets: dict[str, nn.Module] | None = None) -> PixelCNN:
    if info.kind != "image" or info.levels is None:
        raise ValueError(f"pixelcnn models discrete images (grey levels known); {info.name!r} is "
                         f"{info.kind} data with levels={info.levels}")
    if cfg.conditional and not info.num_classes:
        raise ValueError(f"model.conditional=true needs labelled data; {info.name!r} has no classes "
                         f"(set data.labels=true or model.conditional=false)")
    if nets:
        return PixelCNN(nets["net"], info, cfg.conditional)
    net = GatedPixelCNN(info.shape[0], info.levels, channels=cfg.channels, blocks=cfg.blocks,
                        kernel=cfg.kernel, dropout=cfg.dropout,
                        num_classes=info.num_classes if cfg.conditional else None)
    return PixelCNN(net, info, cfg.conditional)


def net_contracts(cfg: PixelCNNConfig, info: DataInfo) -> dict[str, NetContract]:
    """net(x, y): x (B, C, H, W) on the grey levels, y (B,) labels or None -> logits (B, levels, C,
    H, W); the logits of pixel (i, j) may depend only on the pixels before it in raster order."""
    y = dummy_labels(info) if cfg.conditional else None
    ys = "y (B,)" if cfg.conditional else "y=None"
    return {"net": NetContract(f"net(x, {ys}) with x (B, {dims(info.shape)}) -> logits (B, levels={info.levels}, "
                               f"{dims(info.shape)})", (dummy_data(info), y), (2, int(info.levels), *info.shape),
                               cfg.conditional)}
