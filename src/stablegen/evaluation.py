"""Evaluating a trained method: draws samples (EMA weights when kept) and hands them with the
reference data to stablegen.metrics.evaluate.

The reference data is the held-out split wherever there is one (`eval.split: auto`, resolved
by stablegen.data.resolve_eval_split and loaded by load_eval_data): sample metrics compare with
it and likelihoods (bits/dim, IWAE, VLB) are computed on it, never on the training images when
the dataset has others. eval.json names the split (`eval_record`).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .base import Method
from .data import Dataset, EvalSplit


def evaluate_method(method: Method, reference: Dataset, cfg, ema=None, seed: int = 0) -> dict[str, float]:
    """cfg: recipe.EvalConfig (metrics, n, features); reference: the data to compare with
    (stablegen.data.load_eval_data); ema: a train.ema.EMA or None."""
    from .metrics import evaluate

    if not cfg.metrics:
        return {}
    needs_samples = any(m not in ("nll", "recon") for m in cfg.metrics)
    was_training = method.training
    method.eval()
    with ema.swapped() if ema is not None else nullcontext():
        fake = method.sample(cfg.n, generator=torch.Generator().manual_seed(seed)).cpu() if needs_samples else None
        results = evaluate(cfg.metrics, method=method, fake=fake, real=reference.as_float(),
                           dataset=reference.info.name, features=cfg.features,
                           inception_weights=cfg.inception_weights, real_labels=reference.y,
                           generator=torch.Generator().manual_seed(seed + 1))
    method.train(was_training)
    return results


def eval_record(results: dict[str, float], *, split: EvalSplit, n: int, features: str, ema: bool,
                step: int) -> dict:
    """The content of a run's eval.json: the metrics and how they were measured."""
    return {"metrics": results, "split": split.name, "held_out": split.held_out, "n": n, "features": features,
            "ema": ema, "step": step}
