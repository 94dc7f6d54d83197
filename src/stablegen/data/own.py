"""The user's own data: the checks every source of it passes (folder, .npy / .npz, IDX, CSV, and
tensors, arrays and torch Datasets from Python), so that nothing is silently misread. What is
converted says so in a DataNote warning; what cannot be read safely is a DataError naming the
source, what was found and the fix.

    layout     images are (N, C, H, W). (N, H, W) is grey: (N, 1, H, W). Channels-last
               (N, H, W, C), C in CHANNELS and axis 1 not, is transposed (a view: no copy).
               A shape that reads both ways, such as (N, 3, 3, 3), is taken channels-first.
    values     uint8 images stay uint8 as stored (0..255; to [-1, 1] one batch at a time);
               other integers in 0..255 become uint8. Bool and floats within [0, 1] are
               [0, 1] images: 2x - 1. Floats within [-1, 1] (some below 0) are used as they
               are. Any other range is refused unless data.normalize maps it. The reading is
               decided on the whole file, so every split of it is read the same way.
    normalize  data.normalize (float data): per channel (images: C; vectors and sequences:
               the last axis), model space = (x - shift) / scale; minmax: shift = (min + max)
               / 2, scale = (max - min) / 2, so the training rows span [-1, 1]; meanstd: the
               mean and the standard deviation. The statistics come from the training rows
               (or data.norm_shift / data.norm_scale) and are kept in the run's recipe.yaml;
               Dataset.denormalize undoes them.
    splits     data.split of user data without {split} in data.path: a seeded split of the
               rows (data.seed; data.val_fraction to val, data.test_fraction to test, the rest
               to train). A CSV series splits in time instead (train, then val, then test), so
               that overlapping windows never straddle two splits.
    labels     integer class ids 0..K-1, one per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .files import DataError, note

CHANNELS = (1, 3, 4)  # channel counts a layout is recognised by: grey, RGB, RGBA
CHUNK = 1 << 22  # elements converted or scanned per pass (16 MiB of float32)


# ---- layout ---------------------------------------------------------------------------------
def channels_first(x: np.ndarray, source: str) -> np.ndarray:
    """Images as (N, C, H, W): (N, H, W) gains a channel axis, channels-last is transposed."""
    if x.ndim == 3:
        note(f"{source}: read shape {x.shape} as grey images (N, H, W) -> (N, 1, H, W)")
        return x[:, None]
    a, b, c = x.shape[1:]
    if c in CHANNELS and a not in CHANNELS:
        out = x.transpose(0, 3, 1, 2)
        note(f"{source}: read shape {x.shape} as channels-last (N, H, W, C); transposed to {out.shape}")
        return out
    if c in CHANNELS:
        note(f"{source}: shape {x.shape} reads both ways; took channels-first (N, C, H, W), {a} channel(s) "
             f"of {b}x{c}. If the channels are last, give x.transpose(0, 3, 1, 2)")
    elif a not in CHANNELS:
        note(f"{source}: read shape {x.shape} as channels-first (N, C, H, W), {a} channels of {b}x{c}")
    return x


# ---- values ---------------------------------------------------------------------------------
def _chunks(x: np.ndarray):
    rows = max(1, CHUNK // max(1, int(np.prod(x.shape[1:]))))
    for i in range(0, len(x), rows):
        yield i, np.asarray(x[i : i + rows])


def value_range(x: np.ndarray, source: str) -> tuple[float, float]:
    """(min, max) of x, read in chunks (a memory-mapped file is never held whole); non-finite
    values are a DataError counting them."""
    lo, hi, bad = np.inf, -np.inf, 0
    for _, c in _chunks(x):
        if c.dtype.kind == "f":
            finite = np.isfinite(c)
            if not finite.all():
                bad += int(c.size - np.count_nonzero(finite))
                continue
        if c.size:
            lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
    if bad:
        raise DataError(f"{source}: {bad} non-finite values (NaN or inf); clean the data first")
    return lo, hi


def _affine(x: np.ndarray, shift, scale, axis: int) -> np.ndarray:
    """float32 (x - shift) / scale, per channel along `axis`, computed in float64 (so minmax maps
    the extremes to exactly -1 and 1) and converted in chunks."""
    shape = [1] * x.ndim
    shape[axis] = -1
    shift = np.asarray(shift, np.float64).reshape(shape)
    scale = np.asarray(scale, np.float64).reshape(shape)
    out = np.empty(x.shape, np.float32)
    for i, c in _chunks(x):
        out[i : i + len(c)] = (c - shift) / scale
    return out


@dataclass(frozen=True)
class Normalization:
    """data.normalize's per-channel map to model space, (x - shift) / scale, and back."""

    kind: str  # minmax or meanstd
    shift: Tensor  # (channels,) float64: minmax (min + max) / 2, meanstd the mean
    scale: Tensor  # (channels,) float64 > 0: minmax (max - min) / 2, meanstd the std
    axis: int  # the channel axis of a batch: 1 for images (N, C, H, W), -1 for (N, D) and (N, T, D)

    def _view(self, t: Tensor, x: Tensor) -> Tensor:
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return t.to(x.device).reshape(shape)

    def apply(self, x: Tensor) -> Tensor:
        """The data's units -> model space, float32 (computed in float64)."""
        return ((x.double() - self._view(self.shift, x)) / self._view(self.scale, x)).float()

    def undo(self, x: Tensor) -> Tensor:
        """Model space (a method's samples) -> the data's own units, float32."""
        return (x.double() * self._view(self.scale, x) + self._view(self.shift, x)).float()

    def recipe_fields(self) -> dict[str, list[float]]:
        """The data.norm_shift / data.norm_scale that reproduce it."""
        return {"norm_shift": self.shift.tolist(), "norm_scale": self.scale.tolist()}


def fit_normalization(x: np.ndarray, kind: str, axis: int, source: str) -> Normalization:
    """data.normalize=`kind`'s statistics of x per channel (along `axis`), read in chunks."""
    reduce = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    if kind == "minmax":
        lo = hi = None
        for _, c in _chunks(x):
            cl, ch = c.min(axis=reduce).astype(np.float64), c.max(axis=reduce).astype(np.float64)
            lo, hi = (cl, ch) if lo is None else (np.minimum(lo, cl), np.maximum(hi, ch))
        shift, scale = (lo + hi) / 2, (hi - lo) / 2
    else:  # meanstd: sums in float64 around a first guess of the mean (no cancellation)
        guess = np.asarray(x[:1]).astype(np.float64).mean(axis=reduce)
        shape = [1] * x.ndim
        shape[axis] = -1
        n, s1, s2 = 0, 0.0, 0.0
        for _, c in _chunks(x):
            d = c.astype(np.float64) - guess.reshape(shape)
            n += d.size // d.shape[axis]
            s1, s2 = s1 + d.sum(axis=reduce), s2 + (d * d).sum(axis=reduce)
        mean = s1 / n
        shift, scale = guess + mean, np.sqrt(np.maximum(s2 / n - mean * mean, 0))
    flat = scale <= 1e-12 * np.maximum(1, np.abs(shift))
    if flat.any():
        note(f"{source}: channel(s) {np.flatnonzero(flat).tolist()} hold one value; data.normalize={kind} "
             f"scales them by 1")
        scale = np.where(flat, 1.0, scale)
    return Normalization(kind, torch.tensor(shift, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64),
                         axis)


def check_normalize_keys(cfg) -> None:
    """Refuse data.norm_shift / norm_scale without data.normalize, or one without the other."""
    if cfg.norm_shift is None and cfg.norm_scale is None:
        return
    if cfg.normalize == "none":
        raise DataError("data.norm_shift / data.norm_scale are data.normalize's statistics: set data.normalize "
                        "to minmax or meanstd, or remove them")
    if cfg.norm_shift is None or cfg.norm_scale is None or len(cfg.norm_shift) != len(cfg.norm_scale):
        raise DataError("data.norm_shift and data.norm_scale go together, one value per channel each")


def normalization_from(cfg, axis: int, channels: int) -> Normalization | None:
    """The Normalization data.norm_shift / data.norm_scale give (cfg: recipe.DataConfig, checked
    by check_normalize_keys); None when they are unset."""
    if cfg.norm_shift is None:
        return None
    if len(cfg.norm_shift) not in (1, channels):
        raise DataError(f"data.norm_shift holds {len(cfg.norm_shift)} values for data of {channels} channels; "
                        f"give {channels} (or 1 for all)")
    return Normalization(cfg.normalize, torch.tensor(cfg.norm_shift, dtype=torch.float64),
                         torch.tensor(cfg.norm_scale, dtype=torch.float64), axis)


# ---- splits ---------------------------------------------------------------------------------
def _fractions(cfg) -> tuple[float, float]:
    v, t = cfg.val_fraction, cfg.test_fraction
    if v + t >= 1:
        raise DataError(f"data.val_fraction={v} + data.test_fraction={t} leave no rows to train on; keep the sum "
                        f"under 1")
    return v, t


def _empty_split(cfg, n: int, source: str) -> DataError:
    key = "val_fraction" if cfg.split == "val" else "test_fraction" if cfg.split == "test" else None
    fix = (f"raise data.{key}" if key else "lower data.val_fraction / data.test_fraction")
    frac = f"data.{key}={getattr(cfg, key)}" if key else "what val and test take"
    return DataError(f"data.split={cfg.split}: {frac} of the {n} rows of {source} leaves none for {cfg.split}; "
                     f"{fix}, or give each split its own file with {{split}} in data.path")


def split_rows(n: int, cfg, source: str) -> np.ndarray:
    """The sorted rows of data.split (train, val or test) of n rows: a permutation seeded by
    data.seed; its first test_fraction are test, the next val_fraction val, the rest train."""
    v, t = _fractions(cfg)
    n_test, n_val = int(round(n * t)), int(round(n * v))
    perm = np.random.default_rng(cfg.seed).permutation(n)
    rows = {"test": perm[:n_test], "val": perm[n_test : n_test + n_val], "train": perm[n_test + n_val :]}[cfg.split]
    if not len(rows):
        raise _empty_split(cfg, n, source)
    return np.sort(rows)


def split_in_time(n: int, cfg, source: str) -> slice:
    """The rows of data.split of a series of n rows: train first, then val, then test."""
    v, t = _fractions(cfg)
    n_test, n_val = int(round(n * t)), int(round(n * v))
    part = {"train": slice(0, n - n_val - n_test), "val": slice(n - n_val - n_test, n - n_test),
            "test": slice(n - n_test, n)}[cfg.split]
    if part.stop <= part.start:
        raise _empty_split(cfg, n, source)
    return part


# ---- the whole check ------------------------------------------------------------------------
class Own(NamedTuple):
    """User data after the checks: what load_dataset needs to build a Dataset."""

    x: Tensor  # images (N, C, H, W) uint8 0..255 or float in model space; vectors (N, D); (N, T, D); tokens (N, T)
    y: Tensor | None
    kind: str  # image, vector, sequence or tokens
    levels: int | None  # grey levels of 8-bit images (256) or bool images (2)
    vocab: int | None  # tokens: vocabulary size
    norm: Normalization | None


def labels_of(y, n: int, source: str) -> Tensor:
    """Class ids (N,) int64 0..K-1 from y, checked: one per sample, integers, none negative."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{source}: {len(y) if y.ndim else 0} labels of shape {y.shape} for {n} samples; give one "
                        f"class id per sample")
    if y.dtype.kind not in "uib":
        if y.dtype.kind != "f" or not np.isfinite(y).all() or (y != np.round(y)).any():
            raise DataError(f"{source}: labels must be integer class ids 0..K-1, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{source}: labels must be class ids 0..K-1, found {y.min()}")
    return torch.from_numpy(y.astype(np.int64))


def check_own(x: np.ndarray, y, source: str, cfg, kind: str | None = None, rows=None,
              norm: Normalization | None = None, layout: bool = True) -> Own:
    """Read the user's array `x` (and labels `y`) safely; see the module doc.

    kind: image, vector, sequence or tokens (None: 4-d and 3-d arrays are images, 2-d vectors);
    rows: the rows to keep (a split), taken after the reading is decided on the whole array;
    norm: the Normalization to apply (a held-out split takes its training data's); None: fitted
    on the kept rows when data.normalize asks for it, or data.norm_shift / norm_scale;
    layout: False where the format fixes it (folder, IDX: (N, C, H, W) already).
    """
    if x.dtype.kind not in "uifb":
        raise DataError(f"{source}: values of dtype {x.dtype} are not numbers stablegen reads (unsigned or "
                        f"signed integers, bool, floats)")
    kind = kind or {4: "image", 3: "image", 2: "vector"}.get(x.ndim)
    want = {"image": (3, 4), "vector": (2,), "sequence": (3,), "tokens": (2,)}.get(kind, ())
    if x.ndim not in want:
        raise DataError(f"{source}: expected (N, D) vectors or (N, [C,] H, W) images"
                        + (f" ({kind}: {' or '.join(f'{d}-d' for d in want)})" if kind else "")
                        + f", got shape {x.shape}")
    if x.size == 0:
        raise DataError(f"{source}: the array is empty")
    ys = labels_of(y, len(x), source) if y is not None else None
    if kind == "image" and layout:
        x = channels_first(x, source)
    # the reading is decided on the whole array: every split of a file is read the same way
    lo, hi = value_range(x, source) if x.dtype not in (np.uint8, np.bool_) and kind != "tokens" else (0.0, 1.0)
    if rows is not None:
        x, ys = x[rows], (ys[torch.from_numpy(rows)] if ys is not None else None)
    if kind == "tokens":
        return Own(_tokens(x, source, cfg), ys, kind, None, None, None)
    if kind == "image" and x.dtype.kind in "ui":
        return Own(_bytes(x, lo, hi, source, cfg), ys, kind, 256, None, None)
    axis = 1 if kind == "image" else -1
    if cfg.normalize != "none":
        norm = norm or normalization_from(cfg, axis, x.shape[axis]) or fit_normalization(x, cfg.normalize, axis,
                                                                                          source)
        return Own(torch.from_numpy(_affine(x, norm.shift, norm.scale, axis)), ys, kind, None, None, norm)
    if kind != "image":
        return Own(_float32(x), ys, kind, None, None, None)
    if lo >= 0 and hi <= 1:
        note(f"{source}: values in [{lo:.4g}, {hi:.4g}] read as [0, 1] images and scaled to [-1, 1] (2x - 1)")
        levels = 2 if x.dtype == np.bool_ else None
        return Own(torch.from_numpy(_affine(x, 0.5, 0.5, 1)), ys, kind, levels, None, None)
    if lo >= -1 and hi <= 1:
        return Own(_float32(x), ys, kind, None, None, None)
    raise DataError(f"{source}: float images must lie in [-1, 1] (or [0, 1]), found {lo:.4g}..{hi:.4g}. If they are "
                    f"0..255 pixel values, store them as uint8 (x.astype(np.uint8)); otherwise set "
                    f"data.normalize=minmax (per channel min..max -> [-1, 1], undone at sampling) or meanstd")


def _float32(x: np.ndarray) -> Tensor:
    """x as a float32 tensor, sharing x's memory (a mapped file stays mapped) where it can."""
    if x.dtype == np.float32 and x.dtype.isnative and x.flags.c_contiguous:
        return torch.from_numpy(x)
    return torch.from_numpy(_affine(x, 0.0, 1.0, -1))


def _bytes(x: np.ndarray, lo: float, hi: float, source: str, cfg) -> Tensor:
    """Integer images as uint8 0..255 (uint8 as stored: a mapped file stays mapped)."""
    if cfg.normalize != "none":
        raise DataError(f"{source}: data.normalize={cfg.normalize} is for float data; integer images are 8-bit "
                        f"images, scaled to [-1, 1] already. Set data.normalize=none")
    if x.dtype == np.uint8:
        return torch.from_numpy(x)
    if lo < 0 or hi > 255:
        raise DataError(f"{source}: integer images must lie in 0..255, found {lo:.0f}..{hi:.0f}. For 16-bit or "
                        f"other integer data give floats (x.astype(np.float32)) and set data.normalize=minmax")
    return torch.from_numpy(x.astype(np.uint8))


def _tokens(x: np.ndarray, source: str, cfg) -> Tensor:
    if cfg.normalize != "none":
        raise DataError(f"{source}: data.normalize={cfg.normalize} is for float data, not token ids")
    if x.dtype.kind not in "ui":
        raise DataError(f"{source}: token ids must be integers, got dtype {x.dtype}")
    if x.min() < 0:
        raise DataError(f"{source}: token ids must be 0..V-1, found {x.min()}")
    return torch.from_numpy(x.astype(np.int64))
