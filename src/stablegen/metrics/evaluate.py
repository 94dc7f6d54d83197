"""The evaluation entry point shared by the CLI, the trainer's periodic eval and the report.

    evaluate(["fid", "kid", "prdc"], method=m, fake=None, real=x, dataset="digits")
    -> {"fid": 3.1, "kid": 0.002, "kid_std": 0.0004, "precision": 0.8, ...}

Metric names and the keys they return:
    fid            fid                                   Fréchet distance in the feature space
    kid            kid, kid_std                          kernel (MMD) distance, mean/std over subsets
    is             is, is_std                            Inception score (classifier features only)
    prdc           precision, recall, density, coverage  k = 5
    modes          modes, hq, spread, reverse_kl         ring8 / grid25 only
    classes        class_coverage, class_kl, classes_covered, class_share_<c>   digits, fashion-mnist
    stacked_modes  stacked_modes, stacked_kl             stacked-digits only
    nll            nll (+ bpd for images, bpc for tokens, methods with log_prob
                   nll_step for real sequences)
    recon          recon                                 methods with reconstruct
    diversity      diversity                             generated / real mean pairwise distance
Every value is a plain Python float. See docs/metrics.md for the definitions.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from pathlib import Path
from typing import Iterator, Literal, Sequence, get_args

import torch
from torch import Tensor

from ..base import Method, has_capability
from ..data import to_float
from ..data.digits import LEVELS
from ..data.toys import MIXTURES
from .classes import class_coverage, stacked_modes
from .diversity import diversity
from .features import FeatureExtractor, FeatureName, Features, extract, get_extractor
from .fid import fid
from .inception_score import inception_score, joint_class_probs
from .kid import kid
from .likelihood import batched_log_prob, image_bits_per_dim
from .mixtures import mixture_metrics
from .prdc import prdc

MetricName = Literal["fid", "kid", "is", "prdc", "modes", "classes", "stacked_modes", "nll", "recon", "diversity"]
METRICS: tuple[str, ...] = get_args(MetricName)
FeatureChoice = Literal["auto", "digits", "fashion", "inception", "pixels"]
FEATURE_CHOICES: tuple[str, ...] = get_args(FeatureChoice)

_SAMPLE_METRICS = ("fid", "kid", "is", "prdc", "modes", "classes", "stacked_modes", "diversity")
_DIVERSITY_N = 1000  # subsample size of the diversity ratio


def _is_digits(dataset: str) -> bool:
    return dataset.startswith("digits")


def _is_stacked(dataset: str) -> bool:
    return dataset.startswith("stacked-digits")


def _is_fashion(dataset: str) -> bool:
    return dataset == "fashion-mnist"


def _class_reader(dataset: str) -> FeatureName:
    """The classifier that reads the class of a single-channel image of `dataset`."""
    return "fashion" if _is_fashion(dataset) else "digits"


def resolve_features(features: str, dataset: str, real: Tensor) -> FeatureName:
    """'auto' -> 'digits' for digit images (digits*, stacked-digits*), 'fashion' for fashion-mnist
    images, 'pixels' otherwise."""
    if features not in FEATURE_CHOICES:
        hint = difflib.get_close_matches(features, FEATURE_CHOICES, n=1)
        raise ValueError(f"unknown features {features!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                         + f" (choose one of {', '.join(FEATURE_CHOICES)})")
    if features in ("digits", "fashion", "inception") and real.dim() != 4:
        raise ValueError(f"features={features!r} reads images (N, C, H, W); data {dataset!r} has samples of "
                         f"shape {tuple(real.shape[1:])}: use features='pixels'")
    if features != "auto":
        return features  # type: ignore[return-value]
    if real.dim() == 4 and (_is_digits(dataset) or _is_stacked(dataset)):
        return "digits"
    return "fashion" if real.dim() == 4 and _is_fashion(dataset) else "pixels"


def _why_not(name: str, *, dataset: str, real: Tensor, method: Method | None, fake: Tensor | None,
             features: FeatureName) -> str | None:
    """Why metric `name` does not apply to this data / method; None when it does."""
    if name in _SAMPLE_METRICS and fake is None and method is None:
        return "it needs generated samples: pass fake= or a method to sample from"
    if name == "is" and features == "pixels":
        return "the Inception score needs a classifier: features='digits', 'fashion' or 'inception'"
    if name == "modes" and dataset not in MIXTURES:
        return f"mode metrics are defined for the 2-D mixtures {', '.join(MIXTURES)}, not {dataset!r}"
    if name == "classes" and not ((_is_digits(dataset) or _is_fashion(dataset)) and real.dim() == 4
                                  and real.shape[1] == 1):
        return (f"class coverage reads classes with the digits or the fashion classifier; data {dataset!r} is "
                "neither single-channel digits nor fashion-mnist")
    if name == "stacked_modes" and not (_is_stacked(dataset) and real.dim() == 4 and real.shape[1] == 3):
        return f"stacked modes need 3-channel stacked-digits data, not {dataset!r}"
    if name == "nll" and (method is None or not has_capability(method, "log_prob")):
        return "it needs a method with log_prob (flows, autoregressive, VAE, diffusion, RBM)"
    if name == "recon" and (method is None or not has_capability(method, "reconstruct")):
        return "it needs a method with reconstruct (the VAE family)"
    return None


def applicable_metrics(*, dataset: str, real: Tensor, method: Method | None = None, fake: Tensor | None = None,
                       features: FeatureChoice = "auto") -> tuple[str, ...]:
    """The metric names `evaluate` accepts for this data, method and feature choice."""
    feat = resolve_features(features, dataset, real)
    return tuple(m for m in METRICS
                 if _why_not(m, dataset=dataset, real=real, method=method, fake=fake, features=feat) is None)


def _check_names(metrics: Sequence[str], allowed: tuple[str, ...], reasons: dict[str, str]) -> list[str]:
    names = list(dict.fromkeys(metrics))  # de-duplicated, in order
    for name in names:
        if name not in METRICS:
            hint = difflib.get_close_matches(name, METRICS, n=1)
            raise ValueError(f"unknown metric {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                             + f" (metrics: {', '.join(METRICS)}; here: {', '.join(allowed) or 'none'})")
        if name in reasons:
            raise ValueError(f"metric {name!r} does not apply here: {reasons[name]} "
                             f"(applicable here: {', '.join(allowed) or 'none'})")
    return names


def _device(method: Method | None, default: torch.device) -> torch.device:
    if method is None:
        return default
    try:
        return method.device
    except StopIteration:  # a method without parameters
        return default


@contextlib.contextmanager
def _eval_mode(method: Method | None) -> Iterator[None]:
    """Run with the method in eval mode (no dropout, BatchNorm running stats), then restore."""
    if method is None:
        yield
        return
    was_training = method.training
    method.eval()
    try:
        yield
    finally:
        method.train(was_training)


def _sample(method: Method, n: int, generator: torch.Generator, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([method.sample(min(batch_size, n - i), generator=generator).detach()
                          for i in range(0, n, batch_size)])


def _levels(method: Method, dataset: str, x: Tensor) -> int:
    """Grey levels of image data: the method's DataInfo.levels, else 17 for 8x8 digits, else 256."""
    levels = getattr(getattr(method, "info", None), "levels", None)
    if levels:
        return int(levels)
    if (_is_digits(dataset) or _is_stacked(dataset)) and x.shape[-2:] == (8, 8):
        return LEVELS
    return 256


def evaluate(metrics: Sequence[str], *, method: Method | None, fake: Tensor | None, real: Tensor,
             dataset: str, features: FeatureChoice = "auto", real_labels: Tensor | None = None,
             real_test: Tensor | None = None, generator: torch.Generator | None = None,
             batch_size: int = 500, inception_weights: str | Path | None = None) -> dict[str, float]:
    """Compute `metrics` and return them as a flat dict of floats (keys: see the module doc).

    method: the trained model; used to draw `len(real)` samples when `fake` is None, and for
        nll (log_prob) and recon (reconstruct). Put in eval mode for the call, then restored.
    fake: generated samples in data space, same per-sample shape as `real`.
    real: data samples (the reference set: the held-out split where the data has one, see
        stablegen.data.load_eval_data), in data space or as stored (uint8 images 0..255 are read
        as [-1, 1]); real_labels: their classes (digits, fashion-mnist: else the classifier's
        predictions); real_test: other held-out data for nll / recon (else real).
    dataset: the data name (decides 'auto' features and which metrics apply).
    features: feature space of fid / kid / is / prdc / diversity ('auto': the digits classifier on
        digit images, the fashion classifier on fashion-mnist, pixels otherwise).
        inception_weights: local Inception weights file (else $STABLEGEN_INCEPTION_WEIGHTS).
    generator: randomness of sampling, subsets and dequantization (default: seed 0). Each
        metric draws from its own generator seeded from this one, so a metric's value does
        not depend on which other metrics were asked for.
    Raises ValueError for unknown metrics or metrics that do not apply to the data / method.
    """
    real = to_float(real)
    real_test = to_float(real_test) if real_test is not None else None
    feat = resolve_features(features, dataset, real)
    reasons = {m: r for m in METRICS
               if (r := _why_not(m, dataset=dataset, real=real, method=method, fake=fake, features=feat))}
    allowed = tuple(m for m in METRICS if m not in reasons)
    names = _check_names(metrics, allowed, reasons)
    if not names:
        return {}
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    device = _device(method, real.device)

    with _eval_mode(method):
        if any(m in _SAMPLE_METRICS for m in names):
            if fake is None:
                fake = _sample(method, len(real), generator, batch_size)
            if fake.shape[1:] != real.shape[1:]:
                raise ValueError(f"generated samples have shape {tuple(fake.shape[1:])} per sample, "
                                 f"the data {tuple(real.shape[1:])}")
            if fake.is_floating_point() and not torch.isfinite(fake).all():
                bad = int((~torch.isfinite(fake.reshape(len(fake), -1))).any(1).sum())
                raise ValueError(f"{bad} of {len(fake)} generated samples hold non-finite values")
        cache: dict[tuple[str, str], Features] = {}
        extractors: dict[str, FeatureExtractor] = {}

        def feats(which: FeatureName, side: Literal["fake", "real"]) -> Features:
            if (which, side) not in cache:
                if which not in extractors:
                    extractors[which] = get_extractor(which, inception_weights=inception_weights)
                x = fake if side == "fake" else real
                cache[which, side] = extract(extractors[which], x, batch_size=batch_size, device=device)
            return cache[which, side]

        base_seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        out: dict[str, float] = {}
        for name in names:
            g = torch.Generator().manual_seed(base_seed + METRICS.index(name))
            if name == "fid":
                out["fid"] = fid(feats(feat, "real").features, feats(feat, "fake").features)
            elif name == "kid":
                out["kid"], out["kid_std"] = kid(feats(feat, "real").features, feats(feat, "fake").features,
                                                 generator=g)
            elif name == "is":
                out["is"], out["is_std"] = inception_score(joint_class_probs(feats(feat, "fake").logits),
                                                           generator=g)
            elif name == "prdc":
                out.update(prdc(feats(feat, "real").features, feats(feat, "fake").features, k=5))
            elif name == "diversity":
                d_fake = diversity(feats(feat, "fake").features, n=_DIVERSITY_N, generator=g)
                d_real = diversity(feats(feat, "real").features, n=_DIVERSITY_N, generator=g)
                out["diversity"] = d_fake / d_real if d_real > 0 else math.inf
            elif name == "modes":
                out.update(mixture_metrics(fake.detach().cpu(), dataset))
            elif name == "classes":
                reader = _class_reader(dataset)
                fake_pred = feats(reader, "fake").logits[:, 0].argmax(-1)
                ref = real_labels if real_labels is not None else feats(reader, "real").logits[:, 0].argmax(-1)
                out.update(class_coverage(fake_pred, ref.cpu(), num_classes=10))
            elif name == "stacked_modes":
                out.update(stacked_modes(feats("digits", "fake").logits.argmax(-1)))
            elif name == "nll":
                out.update(_nll(method, real_test if real_test is not None else real, dataset=dataset,
                                generator=g, batch_size=batch_size, device=device))
            elif name == "recon":
                out["recon"] = _recon(method, real_test if real_test is not None else real,
                                      batch_size=batch_size, device=device)
    return {k: float(v) for k, v in out.items()}


def _nll(method: Method, x: Tensor, *, dataset: str, generator: torch.Generator, batch_size: int,
         device: torch.device) -> dict[str, float]:
    """Images: nll in nats per image of the discrete levels and bpd (5 dequantization draws for
    densities); other data: nll = -mean log_prob in nats per sample, and per step of a sequence:
    bpc in bits per token (character) of tokens (N, T), nll_step in nats per step of (N, T, D)."""
    if x.dim() != 4:
        nll = -float(batched_log_prob(method.log_prob, x, batch_size=batch_size, device=device).mean())
        if x.dim() == 2 and not x.is_floating_point():
            return {"nll": nll, "bpc": nll / (x.shape[1] * math.log(2.0))}
        return {"nll": nll, "nll_step": nll / x.shape[1]} if x.dim() == 3 else {"nll": nll}
    # a method whose log_prob is log P of the integer levels (PixelCNN, RBM, a VAE with a
    # discrete decoder) sets log_prob_is_discrete = True: it sees the images undequantized
    continuous = not getattr(method, "log_prob_is_discrete", False)
    bpd = image_bits_per_dim(method.log_prob, x, levels=_levels(method, dataset, x), continuous=continuous,
                             draws=5, generator=generator, batch_size=batch_size, device=device)
    dim = math.prod(x.shape[1:])
    return {"nll": float(bpd.mean()) * dim * math.log(2.0), "bpd": float(bpd.mean())}


def _recon(method: Method, x: Tensor, *, batch_size: int, device: torch.device) -> float:
    """Mean over samples of the per-sample mean squared reconstruction error."""
    errors = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            errors.append((method.reconstruct(xb) - xb).double().square().reshape(len(xb), -1).mean(1).cpu())
    return float(torch.cat(errors).mean())
