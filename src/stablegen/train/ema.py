"""Exponential moving average of weights (Polyak & Juditsky 1992; for GAN generators
Yazıcı et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training").

    shadow <- d_t * shadow + (1 - d_t) * live,   d_t = min(decay, (1 + t) / (10 + t))

after every step from `start` on, t counting the averaging updates (before `start` the
shadow copies the weights). The ramp d_t is the warm-up of TensorFlow's
`ExponentialMovingAverage(num_updates=...)` and diffusers' `EMAModel`: early on the average
spans only the last few steps, so a short run does not sample from weights still close to
their random initialisation. `warmup=False` uses the constant decay.

Floating-point buffers (BatchNorm's running mean and variance) are averaged with the weights,
so the averaged net normalises with statistics that match it; integer buffers
(`num_batches_tracked`) are copied. Tensors are keyed by their names in the method's
`state_dict()`, so a checkpoint's `ema.G.body.0.weight` loads into `G.body.0.weight`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn


class EMA:
    def __init__(self, named: dict[str, Tensor], decay: float, start: int = 0, warmup: bool = True):
        """named: the live tensors to average, by state-dict name (`EMA.of(method, ...)`)."""
        self.names = list(named)
        self.live = [named[k] for k in self.names]
        self.decay, self.start, self.warmup = decay, start, warmup
        floating = [t.is_floating_point() for t in self.live]
        self._avg = [i for i, f in enumerate(floating) if f]  # averaged: weights, BN statistics
        self._copied = [i for i, f in enumerate(floating) if not f]  # copied: counters
        self.shadow: list[Tensor] = [t.detach().clone() for t in self.live]

    @classmethod
    def of(cls, method: nn.Module, decay: float, start: int = 0, warmup: bool = True) -> EMA:
        """The EMA of `method.ema_module()` (the whole method by default, a GAN's generator),
        named as in the method's state dict."""
        module = method.ema_module()
        mine = {id(t) for t in (*module.parameters(), *module.buffers())}
        named = {k: t for k, t in (*method.named_parameters(), *method.named_buffers()) if id(t) in mine}
        return cls(named, decay, start, warmup)

    def decay_at(self, step: int) -> float:
        """The decay used by the update at `step` (0 before `start`: the shadow copies)."""
        if step < self.start:
            return 0.0
        t = step - self.start
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = self.decay_at(step)
        live = [t.detach() for t in self.live]
        avg_shadow, avg_live = [self.shadow[i] for i in self._avg], [live[i] for i in self._avg]
        if d == 0.0:
            torch._foreach_copy_(avg_shadow, avg_live)
        elif avg_shadow:
            torch._foreach_lerp_(avg_shadow, avg_live, 1.0 - d)
        for i in self._copied:
            self.shadow[i].copy_(live[i])

    def reset(self) -> None:
        """Start the average afresh from the live weights (after a data-dependent init)."""
        with torch.no_grad():
            torch._foreach_copy_(self.shadow, [t.detach() for t in self.live])

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Temporarily load the averaged weights and buffers into the method."""
        with torch.no_grad():
            backup = [t.detach().clone() for t in self.live]
            torch._foreach_copy_([t.data for t in self.live], self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([t.data for t in self.live], backup)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(zip(self.names, self.shadow))

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Named tensors; checkpoints of older runs keyed them by position ("0", "1", ...) over
        the parameters alone, which still load."""
        if state and all(k.isdigit() for k in state):
            params = [i for i, t in enumerate(self.live) if isinstance(t, nn.Parameter)]
            if len(state) != len(params):
                raise ValueError(f"EMA state has {len(state)} tensors, the model {len(params)} parameters")
            by_name = {self.names[i]: state[str(j)] for j, i in enumerate(params)}
            # buffers were not averaged then: take the live ones
            state = {**{k: t.detach() for k, t in zip(self.names, self.live)}, **by_name}
        missing = [k for k in self.names if k not in state]
        unexpected = [k for k in state if k not in self.names]
        if missing or unexpected:
            raise ValueError(f"EMA state does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
        with torch.no_grad():
            for k, t in zip(self.names, self.shadow):
                t.copy_(state[k])
