"""Datasets (tensors in memory, or a memory-mapped .npy) and a seeded, checkpointable infinite loader.

`load_dataset(cfg)` returns a Dataset: x as stored (images (N, C, H, W) in [-1, 1], or uint8
0..255 where the data is 8-bit (fashion-mnist, the user's 8-bit images); vectors (N, D), sequences
(N, T, D) or tokens (N, T)), optional labels y (N,), and the DataInfo a method needs to build its
nets. `Dataset.as_float()` / `to_float` give model space (float, images in [-1, 1], after
data.normalize), which the loader's batches are in and the method samples in;
`Dataset.denormalize` maps samples back to the data's own units. `dataset_from(obj, cfg)` reads
the user's data from Python (tensor, array, (x, y) or torch Dataset) with the checks files get
(own.py: layout, value range, labels, splits).

Splits and evaluation. `data.split` picks what to train on; `load_eval_data` loads what
evaluation compares with (`eval.split`, resolved by `resolve_eval_split`):
    digits, fashion-mnist,    fixed train / val / test splits (digits.benchmark_split,
    fortunes                  fashion.split_indices, text.VAL_FILES / TEST_FILES)
    toys, stacked-digits,     synthetic: the training draw uses data.seed; val and test are
    sines, grammar            independent draws with data.seed + HELD_OUT_SEEDS[split]
    folder, npy, idx, csv,    "{split}" in data.path: a file per split (images/{split} ->
    text, python (Python)     images/train, images/val, images/test); else with data.split
                              train, val or test a seeded split of the rows (own.split_rows;
                              a CSV series splits in time; text in chunks of lines, text.py);
                              with data.split=all none
`eval.split: auto` is the test split when training never saw it, and otherwise the training
data itself (digits with data.split=all, user data with data.split=all), marked not held out.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..base import Batch, DataInfo
from .digits import LEVELS, benchmark_split, load_digits, stacked_digits
from .files import DataError, DataNote, image_files, read_array, read_idx_images, read_images
from .own import (Normalization, Own, check_normalize_keys, check_own, fit_normalization, normalization_from,
                  split_in_time, split_rows)
from .toys import TOYS, sample_toy

SYNTHETIC_SEQUENCES = ("sines", "grammar")
TEXT = ("fortunes", "text")  # character data (text.py): Debian's fortunes, the user's text file
FIXED_SPLITS = ("digits", "fashion-mnist", "fortunes")  # datasets with a fixed train / val / test split
SYNTHETIC = TOYS + ("stacked-digits",) + SYNTHETIC_SEQUENCES  # drawn from a seed: any split is a fresh draw
USER_FILES = ("folder", "npy", "idx", "csv")
PYTHON = "python"  # data.name of data given from Python (dataset_from)
DATASETS = TOYS + ("digits", "stacked-digits", "fashion-mnist") + SYNTHETIC_SEQUENCES + TEXT + USER_FILES + (PYTHON,)
SPLITS = ("train", "val", "test")
HELD_OUT_SEEDS = {"val": 10_000, "test": 20_000}  # synthetic data: val / test draw with data.seed + these
SPLIT_FIELD = "{split}"  # in data.path of user data: replaced by the split's name


def to_float(x: Tensor) -> Tensor:
    """Data as stored -> model space: uint8 images (0..255) become contiguous float32 in [-1, 1]
    (x / 127.5 - 1); float data is returned as it is."""
    if x.dtype != torch.uint8:
        return x
    return x.to(torch.float32, memory_format=torch.contiguous_format).div_(127.5).sub_(1)


@dataclass
class Dataset:
    x: Tensor  # as stored: model space, or uint8 images 0..255; as_float() reads model space
    y: Tensor | None
    info: DataInfo
    split: str = "all"  # the split it holds: all, train, val or test
    norm: Normalization | None = None  # data.normalize's map from the data's units to x; None: x is in them
    on_disk: bool = False  # x is a memory-mapped .npy: the loader reads (and moves) one batch at a time
    other_split: Callable[[str], "Dataset"] | None = None  # loads another split of the same source (Python data)

    def __len__(self) -> int:
        return len(self.x)

    def as_float(self, idx: Tensor | slice | None = None) -> Tensor:
        """x[idx] (all of x when idx is None) in model space: float, images in [-1, 1]."""
        return to_float(self.x if idx is None else self.x[idx])

    def denormalize(self, x: Tensor) -> Tensor:
        """Model space (a method's samples) -> the data's own units: data.normalize undone
        (images without it stay in [-1, 1], the data space of every image dataset)."""
        return self.norm.undo(x) if self.norm is not None else x

    def normalize(self, x: Tensor) -> Tensor:
        """The data's own units -> model space (data.normalize applied)."""
        return self.norm.apply(x) if self.norm is not None else x


@dataclass(frozen=True)
class EvalSplit:
    """The data an evaluation compares with: the split's name and whether training never saw it."""

    name: str  # all (the training data as it is), train, val or test
    held_out: bool


def splits_of(cfg) -> tuple[str, ...]:
    """The splits the data of `cfg` (recipe.DataConfig) offers: train, val, test, or none."""
    if cfg.name in FIXED_SPLITS or cfg.name in SYNTHETIC or SPLIT_FIELD in (cfg.path or ""):
        return SPLITS
    if cfg.name in USER_FILES + ("text", PYTHON) and cfg.split != "all":  # a seeded split of the rows
        return SPLITS
    return ()


def _trained_on(cfg) -> set[str]:
    if not splits_of(cfg):
        return {"all"}
    if cfg.split != "all":
        return {cfg.split}
    # all: digits has no official test set (every image); fashion-mnist's "all" is its 60,000
    # training images; fortunes' "all" every file; a synthetic dataset's "all" is its training draw
    seen = {"digits": set(SPLITS), "fashion-mnist": {"train", "val"}, "fortunes": set(SPLITS)}
    return seen.get(cfg.name, {"train"})


def resolve_eval_split(cfg, split: str = "auto") -> EvalSplit:
    """Which split evaluation uses for data `cfg` (recipe.DataConfig) and eval.split `split`.

    auto: test when training never saw it; otherwise the training data itself (not held out).
    train / val / test: that split, held out when training never saw it.
    """
    offered, seen = splits_of(cfg), _trained_on(cfg)
    if split == "auto":
        if "test" in offered and "test" not in seen:
            return EvalSplit("test", True)
        return EvalSplit(cfg.split if offered else "all", False)
    if split not in SPLITS:
        raise DataError(f"eval.split={split!r}: choose auto, train, val or test")
    if split not in offered:
        raise DataError(f"eval.split={split}: data {cfg.name!r} has no splits with data.split=all; use eval.split=auto "
                        f"(the training data), set data.split=train (a seeded split of the rows: data.val_fraction, "
                        f"data.test_fraction), or put {SPLIT_FIELD} in data.path (e.g. data.path=images/{SPLIT_FIELD} "
                        f"reads images/train, images/val, images/test)")
    return EvalSplit(split, split not in seen)


def load_eval_data(data: Dataset, cfg, split: str = "auto") -> tuple[Dataset, EvalSplit]:
    """The data evaluation compares with (see resolve_eval_split) and which split it is.

    data: the training Dataset, returned as it is when evaluation uses the training data;
    cfg: its recipe.DataConfig; split: eval.split. A held-out split is normalized with the
    training data's statistics (data.normalize).
    """
    where = resolve_eval_split(cfg, split)
    if where.name in ("all", data.split):
        return data, where
    if data.other_split is not None:
        return data.other_split(where.name), where
    return load_dataset(cfg.model_copy(update={"split": where.name, "batch_size": 1}), norm=data.norm), where


def load_dataset(cfg, norm: Normalization | None = None) -> Dataset:
    """Build the dataset a recipe's data section describes (cfg: recipe.DataConfig).

    norm: the data.normalize map to apply as it is (a held-out split takes its training data's);
    None: data.norm_shift / norm_scale when given, else fitted on the rows loaded.
    """
    name = cfg.name
    if name not in DATASETS:
        hint = difflib.get_close_matches(name, DATASETS, n=1)
        raise DataError(f"unknown data.name {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                        + f" (built in: {', '.join(DATASETS)})")
    check_normalize_keys(cfg)
    split = cfg.split if splits_of(cfg) else "all"
    if name == PYTHON:
        raise DataError("data.name=python: this data was given from Python (sg.train(..., data=...)) and is not on "
                        "disk; pass it again as data=")
    if name in TEXT:
        from .text import load_text, text_info

        x, chars = load_text(cfg, split)
        data = _finish(Own(x, None, "tokens", None, len(chars) + 1, None), cfg, split)
        data.info = text_info(data.info, chars)
        return data
    if name in USER_FILES:
        own, on_disk = _read_own(cfg, norm)
        return _finish(own, cfg, split, on_disk)
    g = torch.Generator().manual_seed(cfg.seed + HELD_OUT_SEEDS.get(split, 0))  # synthetic data's draw
    y, levels, vocab = None, None, None
    if name in TOYS:
        x, kind = sample_toy(name, cfg.n, g), "vector"
    elif name == "digits":
        x, y = load_digits(cfg.size)
        if cfg.split != "all":
            idx = torch.from_numpy(benchmark_split()[("train", "val", "test").index(cfg.split)])
            x, y = x[idx], y[idx]
        kind, levels = "image", (None if cfg.size not in (None, 8) else LEVELS)
    elif name == "fashion-mnist":
        from .fashion import load_fashion_mnist

        x, y = load_fashion_mnist(cfg.split, cfg.path)  # uint8 (N, 1, 28, 28)
        kind, levels = "image", 256
    elif name == "stacked-digits":
        x, y = stacked_digits(cfg.n, g, cfg.size)
        kind = "image"
    else:
        from . import sequences

        if name == "sines":
            x, kind = sequences.sines(cfg.n, cfg.length, g), "sequence"
        else:
            x, kind = sequences.grammar_tokens(cfg.n, cfg.length, g), "tokens"
            vocab = len(sequences.GRAMMAR_VOCAB)
    if len(x) == 0:
        raise DataError(f"data {name!r} is empty")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise DataError(f"data {name!r} holds non-finite values")
    if cfg.normalize == "none":
        norm = None
    elif not x.is_floating_point():
        raise DataError(f"data.normalize={cfg.normalize} is for float data; {name} holds "
                        + ("8-bit images, scaled to [-1, 1] already" if kind == "image" else "token ids")
                        + "; set data.normalize=none")
    else:
        axis = 1 if kind == "image" else -1
        norm = norm or normalization_from(cfg, axis, x.shape[axis]) or fit_normalization(
            x.numpy(), cfg.normalize, axis, name)
        x = norm.apply(x)
    return _finish(Own(x, y, kind, levels, vocab, norm), cfg, split)


def _read_own(cfg, norm: Normalization | None) -> tuple[Own, bool]:
    """The user's file(s) of data.path, checked (own.check_own); and whether x stays memory-mapped."""
    path = _need_path(cfg)
    rows_split = SPLIT_FIELD not in cfg.path and cfg.split != "all"  # a seeded split of the file's rows
    if cfg.name == "csv":
        from . import sequences

        series = sequences.read_csv_series(path)  # (rows, D)
        if rows_split:
            series = series[split_in_time(len(series), cfg, path)]
        x = sequences.windows(series, cfg.length, cfg.stride, path)  # (N, T, D)
        return check_own(x.numpy(), None, path, cfg, "sequence", norm=norm), False
    if cfg.name == "folder":
        files, y = image_files(path, cfg.labels)
        if rows_split:  # only the split's images are decoded
            rows = split_rows(len(files), cfg, path)
            files, y = [files[i] for i in rows], (y[rows] if y is not None else None)
        return check_own(read_images(files, cfg.size), y, path, cfg, "image", norm=norm, layout=False), False
    if cfg.name == "idx":
        labels = path.replace("images", "labels").replace("-idx3-", "-idx1-") if cfg.labels else None
        x, y = read_idx_images(path, labels)
        rows = split_rows(len(x), cfg, path) if rows_split and x.size else None
        return check_own(x, y, path, cfg, "image", rows, norm, layout=False), False
    x, y = read_array(path)  # npy (memory-mapped) or npz
    if cfg.labels and y is None:
        raise DataError(f"data.labels=true needs an array 'y' in {path} (an .npz with x and y)")
    rows = split_rows(len(x), cfg, path) if rows_split and x.ndim and x.size else None  # else check_own says why
    own = check_own(x, y if cfg.labels else None, path, cfg, rows=rows, norm=norm)
    return own, isinstance(x, np.memmap) and np.may_share_memory(x, own.x.numpy())


def dataset_from(obj: Any, cfg, kind: str | None = None, norm: Normalization | None = None) -> Dataset:
    """The user's own data from Python as a Dataset, with the checks files get (own.py: layout,
    value range, labels, data.split, data.normalize).

    obj: a tensor or numpy array (N, ...), a tuple (x, y) (y: N class ids), or a map-style
    torch Dataset (a list of samples too) whose items are x or (x, y) (tensors, arrays, PIL
    images; y an integer class); a Dataset of stablegen is returned as it is.
    cfg: recipe.DataConfig (split, val_fraction, test_fraction, seed, labels, size, binarize,
    normalize, norm_shift, norm_scale, batch_size; name and path unused).
    kind: image, vector, sequence or tokens (None: 4-d and 3-d data are images, 2-d vectors).
    norm: the data.normalize map to apply as it is (held-out splits).
    """
    if isinstance(obj, Dataset):
        return obj
    check_normalize_keys(cfg)
    source = "data from Python"
    n, read = _python_source(obj, source)
    rows = split_rows(n, cfg, source) if cfg.split != "all" and n else None  # (none: check_own says why)
    x, y, rows = read(rows)  # a torch Dataset reads only the split's items (rows then None)
    if cfg.labels and y is None:
        raise DataError(f"data.labels=true, but {source} has no labels: give (x, y), or items (x, y)")
    own = check_own(x, y if cfg.labels else None, source, cfg, kind, rows, norm)
    data = _finish(own, cfg, cfg.split, name=PYTHON)
    if cfg.split != "all":
        data.other_split = lambda split: dataset_from(
            obj, cfg.model_copy(update={"split": split, "batch_size": 1}), kind, data.norm)
    return data


def _numpy(v: Any) -> np.ndarray:
    if isinstance(v, Tensor):
        v = v.detach().cpu()
        return (v.float() if v.dtype in (torch.bfloat16, torch.float16) else v).numpy()
    return np.asarray(v)


def _python_source(obj: Any, source: str) -> tuple[int, Callable]:
    """(number of samples, read(rows) -> (x, y, rows left to take)) of Python data."""
    if isinstance(obj, (Tensor, np.ndarray)):
        x = _numpy(obj)
        return len(x) if x.ndim else 0, lambda rows: (x, None, rows)
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], (Tensor, np.ndarray)):
        x, y = _numpy(obj[0]), _numpy(obj[1])
        return len(x) if x.ndim else 0, lambda rows: (x, y, rows)
    if not (hasattr(obj, "__len__") and hasattr(obj, "__getitem__")):
        raise DataError(f"{source}: expected a tensor, a numpy array, a tuple (x, y), or a map-style torch Dataset "
                        f"whose items are x or (x, y); got {type(obj).__name__}")

    def read(rows):
        idx = range(len(obj)) if rows is None else rows.tolist()
        if not len(idx):
            raise DataError(f"{source}: the dataset is empty")
        xs, ys = None, []
        for j, i in enumerate(idx):
            item = obj[i]
            parts = tuple(item) if isinstance(item, (tuple, list)) else (item,)
            if len(parts) not in (1, 2):
                raise DataError(f"{source}: item {i} has {len(parts)} parts; items must be x or (x, y)")
            a = _numpy(parts[0])
            if xs is None:
                xs, first, labelled = np.empty((len(idx), *a.shape), a.dtype), i, len(parts) == 2
            elif a.shape != xs.shape[1:] or (len(parts) == 2) != labelled:
                raise DataError(f"{source}: item {i} is {'(x, y)' if len(parts) == 2 else 'x'} of shape {a.shape}, "
                                f"item {first} {'(x, y)' if labelled else 'x'} of shape {xs.shape[1:]}; every item "
                                f"must have one form and shape")
            xs[j] = a
            if labelled:
                ys.append(_numpy(parts[1]))
        return xs, (np.stack(ys) if labelled else None), None

    return len(obj), read


def _finish(own: Own, cfg, split: str, on_disk: bool = False, name: str | None = None) -> Dataset:
    """The checks and options every source shares: resize, binarize, labels, batch size."""
    name = name or cfg.name
    x, y, kind, levels, vocab, norm = own
    stored = x
    if kind == "image" and cfg.size is not None and tuple(x.shape[-2:]) != (cfg.size, cfg.size):
        x = _resize(x, cfg.size)
    if cfg.binarize:
        if kind != "image":
            raise DataError("data.binarize=true applies to images only")
        # threshold 0 in model space: uint8 u / 127.5 - 1 > 0 for u >= 128
        x = (x >= 128).to(torch.uint8) * 255 if x.dtype == torch.uint8 else torch.where(x > 0, 1.0, -1.0)
        levels = 2
    if not cfg.labels:
        y = None
    elif y is None:
        raise DataError(f"data {name!r} has no labels; set data.labels=false")
    if cfg.batch_size > len(x):
        raise DataError(f"data.batch_size={cfg.batch_size} exceeds the {len(x)} samples of {name!r}")
    info = DataInfo(name=name, kind=kind, shape=tuple(x.shape[1:]),
                    num_classes=int(y.max()) + 1 if y is not None else None,
                    vocab_size=vocab, levels=levels)
    return Dataset(x, y, info, split, norm, on_disk and x is stored)


def keep_normalization(cfg, data: Dataset):
    """cfg (recipe.DataConfig) with data.norm_shift / norm_scale set to the statistics `data` was
    normalized with, so that a run's recipe.yaml keeps them (resume, sampling and evaluation then
    use the very same); cfg itself when there are none or they were given."""
    if data.norm is None or cfg.norm_shift is not None:
        return cfg
    out = cfg.model_copy()
    for key, value in data.norm.recipe_fields().items():
        setattr(out, key, value)  # validated (Strict: validate_assignment)
    return out


def _resize(x: Tensor, size: int) -> Tensor:
    """Bilinear resize to size x size; uint8 images stay uint8 (resized 4,096 at a time, rounded)."""
    def resize(t: Tensor) -> Tensor:
        return torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)

    if x.dtype != torch.uint8:
        return resize(x)
    out = torch.empty(*x.shape[:2], size, size, dtype=torch.uint8)
    for i in range(0, len(x), 4096):
        out[i : i + 4096] = ((resize(to_float(x[i : i + 4096])) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return out


def _need_path(cfg) -> str:
    if not cfg.path:
        raise DataError(f"data.name={cfg.name!r} reads from disk: set data.path")
    if SPLIT_FIELD not in cfg.path:
        return cfg.path
    if cfg.split == "all":
        raise DataError(f"data.path={cfg.path} holds {SPLIT_FIELD}: set data.split to the split to train on "
                        f"(train, val or test)")
    return cfg.path.replace(SPLIT_FIELD, cfg.split)


class InfiniteLoader:
    """Endless shuffled minibatches of a dataset, reproducible from a seed, in model space
    (uint8 images become float in [-1, 1] one batch at a time). The data moves to the device
    once, except a memory-mapped file (Dataset.on_disk): its batches are read and moved one
    at a time.

    Each epoch is a fresh permutation drawn from the loader's own generator; the state
    (generator, epoch order, position) is saved in checkpoints so a resumed run sees the
    very same batches. With `rank`/`world` each process takes its own slice of every
    batch (the DistributedSampler pattern, here on a global permutation).
    """

    def __init__(self, data: Dataset, batch_size: int, seed: int, device: torch.device | str = "cpu",
                 rank: int = 0, world: int = 1):
        self.data, self.batch_size, self.device = data, batch_size, torch.device(device)
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(data), generator=self.generator)
        self.pos = 0
        self.epoch = 0
        self._x = data.x if data.on_disk else data.x.to(self.device)
        self._y = data.y.to(self.device) if data.y is not None else None

    def next(self) -> Batch:
        global_batch = self.batch_size * self.world
        if self.pos + global_batch > len(self.order):
            self.order = torch.randperm(len(self.data), generator=self.generator)
            self.pos = 0
            self.epoch += 1
        idx = self.order[self.pos + self.rank * self.batch_size : self.pos + (self.rank + 1) * self.batch_size]
        self.pos += global_batch
        x = self._x[idx.to(self._x.device)].to(self.device)
        return Batch(to_float(x), self._y[idx.to(self.device)] if self._y is not None else None)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order.clone(),
                "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"].clone()
        self.pos, self.epoch = int(state["pos"]), int(state["epoch"])
