"""Learning-rate schedules: linear warmup, then constant, cosine decay (Loshchilov & Hutter
2017) or warmup-stable-decay (constant, then a cosine cooldown over the last `decay_fraction`
of the steps; Hu et al. 2024, "MiniCPM", Hagele et al. 2024, "Scaling Laws and Compute-Optimal
Training Beyond Fixed Training Durations"), times the guard's scale (lowered on each rollback)."""

from __future__ import annotations

import math
from typing import Callable

from ..recipe import OptimConfig


def lr_factor(cfg: OptimConfig, total: int, scale: Callable[[], float]) -> Callable[[int], float]:
    """A LambdaLR multiplier for one phase's optimizer: step -> factor of the peak learning rate."""
    warmup, schedule, min_lr = cfg.warmup, cfg.schedule, cfg.min_lr
    decay_from = warmup if schedule == "cosine" else max(warmup, total - round(cfg.decay_fraction * total))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            f = (step + 1) / warmup
        elif schedule in ("cosine", "wsd") and step >= decay_from:
            progress = min(1.0, (step - decay_from) / max(1, total - decay_from))
            f = min_lr + (1 - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        else:
            f = 1.0
        return f * scale()

    return factor
