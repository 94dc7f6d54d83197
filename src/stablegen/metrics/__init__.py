"""Evaluation: FID / KID / IS, precision-recall-density-coverage, 2-D mixture modes, class and
stacked-digits coverage, likelihood (bits/dim), reconstruction error and diversity.

`evaluate(names, method=..., fake=..., real=..., dataset=...)` is the one entry point the CLI,
trainer and report use; the functions below are the individual metrics on tensors.
"""

from .classes import class_coverage, stacked_modes
from .digits_net import digits_classifier
from .diversity import diversity, mean_pairwise_distance
from .evaluate import FEATURE_CHOICES, METRICS, applicable_metrics, evaluate, resolve_features
from .fashion_net import fashion_classifier
from .features import FEATURES, FeatureExtractor, Features, extract, get_extractor
from .fid import fid, frechet_distance
from .inception_score import inception_score
from .kid import kid, mmd2_unbiased
from .likelihood import bits_per_dim, dequantize, image_bits_per_dim
from .mixtures import mixture_metrics, mode_metrics
from .prdc import prdc

__all__ = [
    "FEATURES", "FEATURE_CHOICES", "METRICS", "FeatureExtractor", "Features", "applicable_metrics",
    "bits_per_dim", "class_coverage", "dequantize", "digits_classifier", "diversity", "evaluate", "extract",
    "fashion_classifier", "fid", "frechet_distance", "get_extractor", "image_bits_per_dim", "inception_score",
    "kid", "mean_pairwise_distance", "mixture_metrics", "mmd2_unbiased", "mode_metrics", "prdc", "resolve_features",
    "stacked_modes",
]
