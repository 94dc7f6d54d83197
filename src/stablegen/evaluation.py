"""Evaluating a trained method: draws samples (EMA weights when kept) and hands them with the
reference data to stablegen.metrics.evaluate.

The reference data is the held-out split wherever there is one (`eval.split: auto`, resolved
by stablegen.data.resolve_eval_split and loaded by load_eval_data): sample metrics compare with
it and likelihoods (bits/dim, IWAE, VLB) are computed on it, never on the training images when
the dataset has others. eval.json names the split (`eval_record`).

Beside `fid` and `kid` stands their real-vs-real floor, `fid_floor` and `kid_floor`: the same
metric of `eval.n` real training images against the reference, in the same feature space: what
a generator that reproduced the training data would score at that sample size. It is computed
once per process for each reference, n and feature space.
"""

from __future__ import annotations

import hashlib
import warnings
from contextlib import nullcontext

import torch
from torch import Tensor

from .base import Method
from .data import FIXED_SPLITS, SYNTHETIC, DataError, Dataset, EvalSplit, load_dataset

FLOOR_SEED = 0  # seed of the choice of training images (and of the KID subsets) of the floor
_FLOORS: dict[tuple, dict[str, float]] = {}  # per-process memo: (reference digest, n, features) -> floors


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
    if "fid" in results or "kid" in results:
        results = _with_floors(results, real_floor(reference, cfg))
    return results


def _with_floors(results: dict[str, float], floors: dict[str, float]) -> dict[str, float]:
    """results with fid_floor next to fid and kid_floor next to kid (after kid_std)."""
    out = {}
    for key, value in results.items():
        out[key] = value
        floor = {"fid": "fid_floor", "kid_std": "kid_floor"}.get(key)
        if floor in floors:
            out[floor] = floors[floor]
    return out


def real_floor(reference: Dataset, cfg) -> dict[str, float]:
    """{fid_floor, kid_floor}: FID and KID of cfg.n real training images against `reference`
    in cfg.features; {} where there are no training images apart from the reference.
    Memoized per process."""
    from .metrics import evaluate

    key = (hashlib.blake2b(reference.x.contiguous().numpy().data, digest_size=16).hexdigest(), len(reference),
           cfg.n, cfg.features, cfg.inception_weights)
    if key not in _FLOORS:
        train = floor_images(reference, cfg.n)
        values = {} if train is None else evaluate(
            ["fid", "kid"], method=None, fake=train, real=reference.as_float(), dataset=reference.info.name,
            features=cfg.features, inception_weights=cfg.inception_weights,
            generator=torch.Generator().manual_seed(FLOOR_SEED))
        _FLOORS[key] = {f"{m}_floor": values[m] for m in ("fid", "kid") if m in values}
    return _FLOORS[key]


def floor_images(reference: Dataset, n: int) -> Tensor | None:
    """n real training images (model space) for the floor against `reference`, a held-out val or
    test split: a seeded choice from the train split of digits or fashion-mnist (all of them
    where it has fewer than n: digits' 1,078), or a draw of the training distribution of
    synthetic data. None for user data and for a reference that is itself the training data."""
    from .recipe import DataConfig

    info = reference.info
    if reference.split not in ("val", "test") or info.name not in FIXED_SPLITS + SYNTHETIC:
        return None
    cfg = DataConfig(name=info.name, split="train", n=n, batch_size=1, binarize=info.levels == 2,
                     size=info.shape[-1] if info.kind == "image" else None,
                     length=info.shape[0] if info.kind in ("sequence", "tokens") else DataConfig().length)
    try:
        train = load_dataset(cfg)
    except (DataError, ValueError) as err:  # e.g. fashion-mnist read from data.path, without Debian's package
        warnings.warn(f"no real-vs-real floor for FID / KID: {err}", stacklevel=3)
        return None
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(FLOOR_SEED))[:n]
    return reference.normalize(train.as_float(pick))  # into the reference's space (data.normalize)


def eval_record(results: dict[str, float], *, split: EvalSplit, n: int, features: str, ema: bool,
                step: int) -> dict:
    """The content of a run's eval.json: the metrics and how they were measured."""
    return {"metrics": results, "split": split.name, "held_out": split.held_out, "n": n, "features": features,
            "ema": ema, "step": step}
