"""Exponential moving average of weights (Polyak & Juditsky 1992; for GAN generators
Yazıcı et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training").

shadow <- decay * shadow + (1 - decay) * param, after every step from `start` on
(before it the shadow simply copies the weights). Sampling and evaluation use the shadow.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn


class EMA:
    def __init__(self, params: list[nn.Parameter], decay: float, start: int = 0):
        self.params, self.decay, self.start = list(params), decay, start
        self.shadow: list[Tensor] = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        live = [p.detach() for p in self.params]
        if step < self.start:
            torch._foreach_copy_(self.shadow, live)
        else:
            torch._foreach_lerp_(self.shadow, live, 1.0 - self.decay)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Temporarily load the averaged weights into the parameters."""
        with torch.no_grad():
            backup = [p.detach().clone() for p in self.params]
            torch._foreach_copy_([p.data for p in self.params], self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], backup)

    def state_dict(self) -> dict[str, Tensor]:
        return {f"{i}": t for i, t in enumerate(self.shadow)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if len(state) != len(self.shadow):
            raise ValueError(f"EMA state has {len(state)} tensors, the model {len(self.shadow)}")
        with torch.no_grad():
            for i, t in enumerate(self.shadow):
                t.copy_(state[f"{i}"])
