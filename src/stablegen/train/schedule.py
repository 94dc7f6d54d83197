"""Learning-rate schedules: linear warmup, then constant, cosine decay (Loshchilov & Hutter
2017) or warmup-stable-decay (constant, then a cosine cooldown over the last `decay_fraction`
of the steps; Hu et al. 2024, "MiniCPM", Hagele et al. 2024, "Scaling Laws and Compute-Optimal
Training Beyond Fixed Training Durations"), times the guard's scale (lowered on each rollback)."""

from __future__ import annotations

import math
from typing import Callable


def lr_factor(warmup: int, total: int, schedule: str, min_lr: float, scale: Callable[[], float],
              decay_fraction: float = 0.2) -> Callable[[int], float]:
    """A LambdaLR multiplier: step -> factor of the peak learning rate."""
    decay_from = warmup if schedule == "cosine" else max(warmup, total - round(decay_fraction * total))

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
