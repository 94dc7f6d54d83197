"""Evaluating a trained method on its data: draws samples (EMA weights when kept) and hands
them with the real data to stablegen.metrics.evaluate."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .base import Method
from .data import Dataset


def evaluate_method(method: Method, data: Dataset, cfg, ema=None, seed: int = 0) -> dict[str, float]:
    """cfg: recipe.EvalConfig (metrics, n, features); ema: a train.ema.EMA or None."""
    from .metrics import evaluate

    if not cfg.metrics:
        return {}
    needs_samples = any(m not in ("nll", "recon") for m in cfg.metrics)
    was_training = method.training
    method.eval()
    with ema.swapped() if ema is not None else nullcontext():
        fake = method.sample(cfg.n, generator=torch.Generator().manual_seed(seed)).cpu() if needs_samples else None
        results = evaluate(cfg.metrics, method=method, fake=fake, real=data.x, dataset=data.info.name,
                           features=cfg.features, inception_weights=cfg.inception_weights, real_labels=data.y,
                           generator=torch.Generator().manual_seed(seed + 1))
    method.train(was_training)
    return results
