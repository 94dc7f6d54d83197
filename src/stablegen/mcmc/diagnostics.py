"""Convergence diagnostics: rank-normalized split R-hat, bulk and tail ESS.

Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, "Rank-normalization, folding, and
localization: an improved R-hat for assessing convergence of MCMC" (Bayesian Analysis 16(2)),
computed exactly as ArviZ defines them (`arviz.rhat(method="rank")`, `arviz.ess(method=
"bulk" | "tail" | "mean")`): chains split in halves; ranks back-transformed with Blom's
offset 3/8; autocorrelations by FFT; Geyer's (1992) initial positive and initial monotone
sequences; tail ESS is the smaller ESS of the indicators of the 0.05 and 0.95 quantiles.

Monte Carlo standard errors of the mean and of the sd are ArviZ's (`arviz.mcse(method="mean"
| "sd")`). Every function takes draws (chains, draws, dim) as a torch tensor or numpy array
and returns a float64 numpy array (dim,). `convergence_warnings` turns R-hat, ESS and the
divergence count into plain-language warnings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import fft as sp_fft
from scipy import special, stats
from torch import Tensor

Draws = Tensor | np.ndarray


def _as_array(draws: Draws) -> np.ndarray:
    """(C, S, D) float64 numpy array; a (C, S) array is one dimension."""
    a = draws.detach().cpu().numpy() if isinstance(draws, Tensor) else np.asarray(draws)
    a = a.astype(np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"draws must be (chains, draws, dim), got shape {a.shape}")
    return a


def _split_chains(a: np.ndarray) -> np.ndarray:
    """(C, S, D) -> (2C, S // 2, D): first and last halves (the middle draw of odd S dropped)."""
    half = a.shape[1] // 2
    return np.concatenate([a[:, :half], a[:, a.shape[1] - half:]], axis=0)


def _z_scale(a: np.ndarray) -> np.ndarray:
    """Rank-normalize each dimension over all chains and draws (Vehtari et al. 2021, eq. 14)."""
    c, s, d = a.shape
    flat = a.reshape(c * s, d)
    ranks = stats.rankdata(flat, method="average", axis=0)
    z = special.ndtri((ranks - 3 / 8) / (c * s - 2 * 3 / 8 + 1))
    return z.reshape(c, s, d)


def _rhat(a: np.ndarray) -> np.ndarray:
    """Classic potential scale reduction of (C, S, D) draws (Gelman & Rubin 1992)."""
    s = a.shape[1]
    chain_mean = a.mean(axis=1)  # (C, D)
    between = s * chain_mean.var(axis=0, ddof=1)
    within = a.var(axis=1, ddof=1).mean(axis=0)
    return np.sqrt((between / within + s - 1) / s)


def _ess(a: np.ndarray) -> np.ndarray:
    """Effective sample size of (C, S, D) draws: ArviZ's `_ess`, vectorized over D."""
    c, s, d = a.shape
    out = np.empty(d)
    constant = (a.max(axis=(0, 1)) - a.min(axis=(0, 1))) < np.finfo(float).resolution
    centered = a - a.mean(axis=1, keepdims=True)
    m = sp_fft.next_fast_len(2 * s)
    f = np.fft.rfft(centered, n=m, axis=1)
    acov = np.fft.irfft(f * np.conjugate(f), n=m, axis=1)[:, :s] / s  # (C, S, D)
    mean_var = acov[:, 0].mean(axis=0) * s / (s - 1.0)  # (D,)
    var_plus = mean_var * (s - 1.0) / s
    if c > 1:
        var_plus = var_plus + a.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var - acov.mean(axis=0)) / var_plus  # (S, D) autocorrelations
    rho[0] = 1.0
    for k in range(d):
        out[k] = _tau_to_ess(rho[:, k], c * s)
    out[constant] = c * s
    return out


def _tau_to_ess(rho: np.ndarray, n_total: int) -> float:
    """ESS from autocorrelations rho (S,) with Geyer's initial positive / monotone sequences.

    Follows ArviZ's loop exactly: pairs (rho[2k], rho[2k+1]) are summed while the previous
    pair's sum is positive; the sums are made non-increasing; rho at the first pair beyond
    the positive sequence enters once when it is positive.
    """
    s = rho.shape[0]
    if np.isnan(rho[: min(s, 2)]).any():
        return float("nan")
    n_pairs = (s - 1) // 2  # pairs k with 2k + 1 < s
    pair = rho[: 2 * n_pairs].reshape(n_pairs, 2).sum(axis=1) if n_pairs else np.zeros(0)
    # pair k >= 1 is computed while 2k - 1 < s - 3 and the sum of pair k - 1 is positive
    last = 0
    while last + 1 < n_pairs and 2 * (last + 1) - 1 < s - 3 and pair[last] > 0:
        last += 1
    even_last = rho[2 * last] if last > 0 else 1.0
    tail = 0.0
    if last > 0 and pair[last] >= 0:
        tail = rho[2 * last]
    elif even_last > 0:
        tail = even_last
    monotone = np.minimum.accumulate(pair[:last]) if last > 0 else np.zeros(0)
    tau = -1.0 + 2.0 * monotone.sum() + tail
    tau = max(tau, 1.0 / np.log10(n_total))
    return n_total / tau


def rhat(draws: Draws) -> np.ndarray:
    """Rank-normalized split R-hat, max of bulk and folded (tail) versions, (D,)."""
    a = _split_chains(_as_array(draws))
    bulk = _rhat(_z_scale(a))
    folded = np.abs(a - np.median(a.reshape(-1, a.shape[2]), axis=0))
    return np.maximum(bulk, _rhat(_z_scale(folded)))


def ess_bulk(draws: Draws) -> np.ndarray:
    """Bulk effective sample size: ESS of the rank-normalized split chains, (D,)."""
    return _ess(_z_scale(_split_chains(_as_array(draws))))


def ess_tail(draws: Draws, prob: tuple[float, float] = (0.05, 0.95)) -> np.ndarray:
    """Tail effective sample size: min ESS of the indicators I(x <= q) at both quantiles, (D,)."""
    a = _as_array(draws)
    flat = a.reshape(-1, a.shape[2])
    out = np.full(a.shape[2], np.inf)
    for p in prob:
        q = np.quantile(flat, p, axis=0)  # (D,) type 7, as ArviZ's mquantiles(1, 1)
        out = np.minimum(out, _ess(_split_chains((a <= q).astype(np.float64))))
    return out


def ess_mean(draws: Draws) -> np.ndarray:
    """ESS for the mean of the draws themselves (no rank normalization), (D,)."""
    return _ess(_split_chains(_as_array(draws)))


def mcse_mean(draws: Draws) -> np.ndarray:
    """Monte Carlo standard error of the mean, sd / sqrt(ESS_mean), (D,) (ArviZ's "mean")."""
    a = _as_array(draws)
    sd = a.reshape(-1, a.shape[2]).std(axis=0, ddof=1)
    return sd / np.sqrt(_ess(_split_chains(a)))


def mcse_sd(draws: Draws) -> np.ndarray:
    """Monte Carlo standard error of the standard deviation, (D,) (ArviZ's "sd"): the error
    of the mean of the squared deviations, whose ESS is estimated from the draws, carried
    to the sd by the delta method (d sd = d var / (2 sd))."""
    a = _as_array(draws)
    sq = (a - a.mean(axis=(0, 1))) ** 2  # (C, S, D)
    var = sq.mean(axis=(0, 1))
    var_of_var = (np.square(sq).mean(axis=(0, 1)) - var**2) / _ess(_split_chains(sq))
    return np.sqrt(var_of_var / var / 4)


def summarize(
    draws: Draws,
    *,
    num_grad_evals: int | None = None,
    seconds: float | None = None,
    true_mean: Tensor | np.ndarray | None = None,
    true_std: Tensor | np.ndarray | None = None,
) -> dict[str, Any]:
    """Per-dimension moments, their Monte Carlo standard errors and diagnostics, plus
    efficiency and moment errors when known.

    ESS per gradient divides the bulk ESS by the gradient evaluations summed over chains
    (sampling phase); ESS per second divides by the sampling wall time. Errors of the means
    are in units of the true standard deviation; errors of the standard deviations relative.
    """
    a = _as_array(draws)
    flat = a.reshape(-1, a.shape[2])
    mean, sd = flat.mean(axis=0), flat.std(axis=0, ddof=1)
    bulk, tail = ess_bulk(a), ess_tail(a)
    out: dict[str, Any] = {
        "means": mean,
        "sds": sd,
        "mcse_mean": mcse_mean(a),
        "mcse_sd": mcse_sd(a),
        "rhat": rhat(a),
        "ess_bulk": bulk,
        "ess_tail": tail,
    }
    if num_grad_evals:
        out["ess_bulk_per_gradient"] = bulk / num_grad_evals
        out["ess_tail_per_gradient"] = tail / num_grad_evals
    if seconds:
        out["ess_bulk_per_second"] = bulk / seconds
        out["ess_tail_per_second"] = tail / seconds
    if true_mean is not None and true_std is not None:
        mu = np.asarray(torch.as_tensor(true_mean).cpu(), dtype=np.float64)
        sigma = np.asarray(torch.as_tensor(true_std).cpu(), dtype=np.float64)
        out["mean_error"] = np.abs(mean - mu) / sigma
        out["sd_error"] = np.abs(sd - sigma) / sigma
    return out


# ---- warnings ---------------------------------------------------------------------------
RHAT_MAX = 1.01  # Vehtari et al. 2021, section 4: use the draws only below this
ESS_MIN = 400.0  # Vehtari et al. 2021: bulk and tail ESS above 100 per chain, for 4 chains


def _worst(values: np.ndarray, *, largest: bool) -> tuple[float, int]:
    """The worst value and its dimension; a NaN (a constant chain) is the worst of all."""
    bad = np.isnan(values)
    if bad.any():
        return float("nan"), int(np.argmax(bad))
    i = int(np.argmax(values) if largest else np.argmin(values))
    return float(values[i]), i


def convergence_warnings(
    rhat: np.ndarray,
    ess_bulk: np.ndarray,
    ess_tail: np.ndarray,
    num_divergent: int,
    num_transitions: int,
) -> list[str]:
    """Plain-language warnings when the draws should not be trusted, [] when none applies.

    One warning per failed check, each naming the check, the worst dimension and what to
    try: split R-hat above RHAT_MAX (the chains disagree), bulk or tail ESS below ESS_MIN
    (too few effective draws for the means, sds, quantiles and R-hat to be reliable), and
    divergent transitions (Betancourt 2017, section 6.2: the step size is too large for some
    region of the target, which is then under-sampled, biasing the estimates). NaN (a chain
    that never moved) fails its check. rhat, ess_bulk, ess_tail: (D,) arrays;
    num_transitions: sampling transitions summed over chains.
    """
    out = []
    value, dim = _worst(np.asarray(rhat, dtype=float), largest=True)
    if not value <= RHAT_MAX:
        out.append(
            f"R-hat {value:.3f} > {RHAT_MAX} (dimension {dim}): the chains disagree, so they have "
            "not all found the same distribution; run more warmup and more draws (--warmup, "
            "--samples), and if that does not help, reparameterize the target (e.g. a "
            "non-centered funnel) or look for several modes")
    low = []
    for name, ess in (("bulk", ess_bulk), ("tail", ess_tail)):
        value, dim = _worst(np.asarray(ess, dtype=float), largest=False)
        if not value >= ESS_MIN:
            low.append(f"{name} ESS {value:.0f} (dimension {dim})")
    if low:
        out.append(
            f"{' and '.join(low)} < {ESS_MIN:.0f}: too few effective draws for reliable means, "
            "sds, quantiles and R-hat; draw more (--samples), and if the ESS per draw is very "
            "low, reparameterize the target")
    if num_divergent > 0:
        share = 100.0 * num_divergent / max(num_transitions, 1)
        out.append(
            f"{num_divergent} divergent transitions ({share:.2g} % of draws): the step size is "
            "too large for part of the target, which is then under-sampled and biases the "
            "estimates; raise --target-acceptance (0.95, 0.99), lengthen --warmup, or "
            "reparameterize the target (e.g. a non-centered funnel)")
    return out
