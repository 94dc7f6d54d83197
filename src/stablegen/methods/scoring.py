"""Anomaly scores from a trained method: higher = more anomalous.

nll    -log p(x): the method's log_prob (exact for flows / autoregressive models, the IWAE
       bound for VAEs), the likelihood-based detector of e.g. An & Cho 2015 ("Variational
       Autoencoder based Anomaly Detection using Reconstruction Probability") and Nalisnick
       et al. 2019 (who show its pitfalls on out-of-distribution images).
recon  reconstruction error of reconstruct(x): mean squared error over the sample's
       dimensions for real-valued data, the share of mismatched tokens for token data.
auto   nll when the method has log_prob, else recon.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..base import Method, MissingCapability, has_capability

ScoreKind = Literal["auto", "nll", "recon"]


def score(method: Method, x: Tensor, kind: ScoreKind = "auto", batch_size: int = 256) -> Tensor:
    """Per-sample anomaly scores (N,) of data x (N, ...), computed in batches in eval mode."""
    if kind not in ("auto", "nll", "recon"):
        raise ValueError(f"unknown score kind {kind!r}; choose auto, nll or recon")
    if kind == "auto":
        if not (has_capability(method, "log_prob") or has_capability(method, "reconstruct")):
            raise MissingCapability(f"{type(method).__name__} has neither log_prob nor reconstruct, so it gives no "
                                    "anomaly scores; score with a likelihood model (VAE, flow, PixelCNN, diffusion)")
        kind = "nll" if has_capability(method, "log_prob") else "recon"
    needed = "log_prob" if kind == "nll" else "reconstruct"
    if not has_capability(method, needed):
        raise MissingCapability(f"{type(method).__name__} has no {needed}, so it cannot give {kind} scores; "
                                f"use kind={'recon' if kind == 'nll' else 'nll'} or auto")
    was_training = method.training
    method.eval()
    out = []
    try:
        with torch.no_grad():
            for xb in x.split(batch_size):
                xb = xb.to(method.device)
                if kind == "nll":
                    s = -method.log_prob(xb)
                else:
                    r = method.reconstruct(xb)
                    diff = (r != xb).float() if not xb.is_floating_point() else (r.float() - xb.float()).square()
                    s = diff.flatten(1).mean(dim=1)
                out.append(s.float().cpu())
    finally:
        method.train(was_training)
    return torch.cat(out)
