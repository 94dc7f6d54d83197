"""Learning-rate schedules: linear warmup, then constant or cosine decay (Loshchilov &
Hutter 2017), times the guard's scale (lowered on each rollback)."""

from __future__ import annotations

import math
from typing import Callable


def lr_factor(warmup: int, total: int, schedule: str, min_lr: float, scale: Callable[[], float]) -> Callable[[int], float]:
    """A LambdaLR multiplier: step -> factor of the peak learning rate."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            f = (step + 1) / warmup
        elif schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            f = min_lr + (1 - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        else:
            f = 1.0
        return f * scale()

    return factor
