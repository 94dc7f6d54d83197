"""A small causal Transformer (decoder only): Vaswani et al. 2017, "Attention Is All You Need",
with the pre-norm blocks and initialisation of GPT-2 (Radford et al. 2019) as nanoGPT writes
them, and learned absolute positions or rotary ones (Su et al. 2021, "RoFormer: Enhanced
Transformer with Rotary Position Embedding").

    out, state = net(inputs, state)     inputs (B, T) ids or (B, T, D) -> out (B, T, out_dim)

Position t attends to positions <= t only (the causal mask). `state` is the window of inputs
seen so far (at most `context` steps), so a caller can feed a sequence piece by piece as it
feeds an RNN: each call runs the whole window again (no key/value cache) and returns the
outputs of the new steps. A window longer than `context` keeps its last `context` steps, which
then sit at positions 0..context-1 (each training window starts at position 0 too).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .gru import _StepInput

Positions = Literal["learned", "rotary"]


def rotary_tables(length: int, dim: int, device: torch.device, base: float = 10_000.0) -> tuple[Tensor, Tensor]:
    """cos and sin (length, dim) of the rotary embedding: pair (i, i + dim/2) of a head turns by
    t * base^(-2i/dim) at position t."""
    inv_freq = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)  # (dim/2,)
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq  # (length, dim/2)
    angles = torch.cat([angles, angles], dim=1)  # (length, dim)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate queries or keys x (B, heads, T, head_dim) by their position (cos, sin: (T, head_dim))."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class Block(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x)) (4x wide, GELU)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None) -> Tensor:  # x (B, T, dim)
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if rotary is not None:  # q, k, v: (B, heads, T, head_dim)
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class CausalTransformer(nn.Module):
    """Token ids (B, T) or real steps (B, T, D) -> outputs (B, T, out_dim), T <= context."""

    def __init__(self, out_dim: int, *, dim: int = 128, layers: int = 4, heads: int = 4, context: int = 128,
                 positions: Positions = "learned", dropout: float = 0.0, in_dim: int | None = None,
                 vocab_size: int | None = None):
        super().__init__()
        if dim % heads or (positions == "rotary" and (dim // heads) % 2):
            raise ValueError(f"transformer width {dim} must split into {heads} heads"
                             + (" of even size (rotary positions)" if positions == "rotary" else ""))
        if positions not in ("learned", "rotary"):
            raise ValueError(f"unknown positions {positions!r}; choose learned or rotary")
        self.context, self.positions, self.head_dim = context, positions, dim // heads
        self.inp = _StepInput(in_dim, vocab_size, dim)
        self.inp_proj = nn.Linear(in_dim, dim) if in_dim is not None else nn.Identity()
        self.pos = nn.Embedding(context, dim) if positions == "learned" else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)
        self.apply(_gpt2_init)
        for block in self.blocks:  # residual projections scaled by 1/sqrt(2 layers) (GPT-2)
            nn.init.normal_(block.proj.weight, std=0.02 / math.sqrt(2 * layers))
            nn.init.normal_(block.mlp[2].weight, std=0.02 / math.sqrt(2 * layers))

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        new = inputs.shape[1]
        window = inputs if state is None else torch.cat([state, inputs], dim=1)
        window = window[:, -self.context:]  # (B, T, ...) with T <= context
        t = window.shape[1]
        h = self.inp_proj(self.inp(window))  # (B, T, dim)
        if self.pos is not None:
            h = h + self.pos(torch.arange(t, device=h.device))
        rotary = rotary_tables(t, self.head_dim, h.device) if self.positions == "rotary" else None
        h = self.drop(h)
        for block in self.blocks:
            h = block(h, rotary)
        out = self.head(self.norm(h))  # (B, T, out_dim)
        return out[:, -min(new, t):], window


def _gpt2_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
