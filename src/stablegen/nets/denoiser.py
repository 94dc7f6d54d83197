"""A residual MLP denoiser for vector data (2-D toys and other (D,) data).

x_t (B, D), timestep t (B,) and optional labels y (B,) -> (B, out_dim). The net knows
nothing of noise schedules or parameterizations; the method reads its output as
epsilon, x0 or v (and, with a learned variance, a second block of D values).
Each block is pre-norm with a timestep-dependent scale and shift (FiLM; Perez et al. 2018),
the conditioning the DDPM U-Net's residual blocks use (Dhariwal & Nichol 2021, "AdaGN").
"""

from __future__ import annotations

from torch import Tensor, nn

from .embeddings import ClassEmbedding, TimeEmbedding


class _FiLMBlock(nn.Module):
    """h + Linear(SiLU(Linear(SiLU(LayerNorm(h) * (1 + scale) + shift)))), zero-initialised out."""

    def __init__(self, width: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.film = nn.Linear(emb_dim, 2 * width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:  # h (B, W), emb (B, E)
        scale, shift = self.film(emb).chunk(2, dim=1)
        z = self.act(self.norm(h) * (1 + scale) + shift)
        z = self.fc2(self.drop(self.act(self.fc1(z))))
        return h + z


class MLPDenoiser(nn.Module):
    """Residual MLP eps/x0/v-predictor for vectors: (x_t (B, D), t (B,), y) -> (B, out_dim)."""

    def __init__(self, dim: int, out_dim: int, width: int = 256, depth: int = 3,
                 num_classes: int | None = None, dropout: float = 0.0):
        super().__init__()
        emb_dim = width
        self.time = TimeEmbedding(emb_dim)
        self.label = ClassEmbedding(num_classes, emb_dim) if num_classes else None
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_FiLMBlock(width, emb_dim, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, out_dim))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.time(t)  # (B, E)
        if self.label is not None:
            if y is None:
                raise ValueError("this denoiser is class-conditional: pass labels y")
            emb = emb + self.label(y)
        emb = nn.functional.silu(emb)
        h = self.inp(x)  # (B, W)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
