"""Datasets (all held in memory as tensors) and a seeded, checkpointable infinite loader.

`load_dataset(cfg)` returns a Dataset: x as stored (images (N, C, H, W) in [-1, 1], or uint8
0..255 where the data is 8-bit and large (fashion-mnist); vectors (N, D), sequences (N, T, D)
or tokens (N, T)), optional labels y (N,), and the DataInfo a method needs to build its nets.
`Dataset.as_float()` / `to_float` give data space (float, images in [-1, 1]); the loader's
batches are in data space.

Splits and evaluation. `data.split` picks what to train on; `load_eval_data` loads what
evaluation compares with (`eval.split`, resolved by `resolve_eval_split`):
    digits, fashion-mnist     fixed train / val / test splits (digits.benchmark_split,
                              fashion.split_indices)
    toys, stacked-digits,     synthetic: the training draw uses data.seed; val and test are
    sines, grammar            independent draws with data.seed + HELD_OUT_SEEDS[split]
    folder, npy, idx, csv     splits when data.path holds "{split}" (images/{split} ->
                              images/train, images/val, images/test); else none
`eval.split: auto` is the test split when training never saw it, and otherwise the training
data itself (digits with data.split=all, user data without "{split}"), marked not held out.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch
from torch import Tensor

from ..base import Batch, DataInfo
from .digits import LEVELS, benchmark_split, load_digits, stacked_digits
from .files import DataError, load_array, load_idx, load_image_folder
from .toys import TOYS, sample_toy

SYNTHETIC_SEQUENCES = ("sines", "grammar")
FIXED_SPLITS = ("digits", "fashion-mnist")  # datasets with a fixed train / val / test split
SYNTHETIC = TOYS + ("stacked-digits",) + SYNTHETIC_SEQUENCES  # drawn from a seed: any split is a fresh draw
USER_FILES = ("folder", "npy", "idx", "csv")
DATASETS = TOYS + ("digits", "stacked-digits", "fashion-mnist") + SYNTHETIC_SEQUENCES + USER_FILES
SPLITS = ("train", "val", "test")
HELD_OUT_SEEDS = {"val": 10_000, "test": 20_000}  # synthetic data: val / test draw with data.seed + these
SPLIT_FIELD = "{split}"  # in data.path of user data: replaced by the split's name


def to_float(x: Tensor) -> Tensor:
    """Data as stored -> data space: uint8 images (0..255) become float32 in [-1, 1] (x / 127.5 - 1);
    float data is returned as it is."""
    return x.float().div_(127.5).sub_(1) if x.dtype == torch.uint8 else x


@dataclass
class Dataset:
    x: Tensor  # as stored: data space, or uint8 images 0..255 (fashion-mnist); as_float() reads data space
    y: Tensor | None
    info: DataInfo
    split: str = "all"  # the split it holds: all, train, val or test

    def __len__(self) -> int:
        return len(self.x)

    def as_float(self, idx: Tensor | slice | None = None) -> Tensor:
        """x[idx] (all of x when idx is None) in data space: float, images in [-1, 1]."""
        return to_float(self.x if idx is None else self.x[idx])


@dataclass(frozen=True)
class EvalSplit:
    """The data an evaluation compares with: the split's name and whether training never saw it."""

    name: str  # all (the training data as it is), train, val or test
    held_out: bool


def splits_of(cfg) -> tuple[str, ...]:
    """The splits the data of `cfg` (recipe.DataConfig) offers: train, val, test, or none."""
    if cfg.name in FIXED_SPLITS or cfg.name in SYNTHETIC or SPLIT_FIELD in (cfg.path or ""):
        return SPLITS
    return ()


def _trained_on(cfg) -> set[str]:
    if not splits_of(cfg):
        return {"all"}
    if cfg.split != "all":
        return {cfg.split}
    # all: digits has no official test set (every image); fashion-mnist's "all" is its 60,000
    # training images; a synthetic dataset's "all" is its training draw
    return {"digits": set(SPLITS), "fashion-mnist": {"train", "val"}}.get(cfg.name, {"train"})


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
        raise DataError(f"eval.split={split}: data {cfg.name!r} has no splits; use eval.split=auto (the training "
                        f"data), or put {SPLIT_FIELD} in data.path (e.g. data.path=images/{SPLIT_FIELD} reads "
                        f"images/train, images/val, images/test)")
    return EvalSplit(split, split not in seen)


def load_eval_data(data: Dataset, cfg, split: str = "auto") -> tuple[Dataset, EvalSplit]:
    """The data evaluation compares with (see resolve_eval_split) and which split it is.

    data: the training Dataset, returned as it is when evaluation uses the training data;
    cfg: its recipe.DataConfig; split: eval.split.
    """
    where = resolve_eval_split(cfg, split)
    if where.name in ("all", data.split):
        return data, where
    return load_dataset(cfg.model_copy(update={"split": where.name, "batch_size": 1})), where


def load_dataset(cfg) -> Dataset:
    """Build the dataset a recipe's data section describes (cfg: recipe.DataConfig)."""
    name = cfg.name
    if name not in DATASETS:
        hint = difflib.get_close_matches(name, DATASETS, n=1)
        raise DataError(f"unknown data.name {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                        + f" (built in: {', '.join(DATASETS)})")
    split = cfg.split if splits_of(cfg) else "all"
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
    elif name in SYNTHETIC_SEQUENCES or name == "csv":
        from . import sequences

        if name == "sines":
            x, kind = sequences.sines(cfg.n, cfg.length, g), "sequence"
        elif name == "grammar":
            x, kind = sequences.grammar_tokens(cfg.n, cfg.length, g), "tokens"
            vocab = len(sequences.GRAMMAR_VOCAB)
        else:
            x, kind = sequences.load_csv_windows(_need_path(cfg), cfg.length, cfg.stride), "sequence"
    elif name == "folder":
        x, y = load_image_folder(_need_path(cfg), cfg.size, cfg.labels)
        kind = "image"
    elif name == "idx":
        path = _need_path(cfg)
        x, y = load_idx(path, path.replace("images", "labels").replace("-idx3-", "-idx1-") if cfg.labels else None)
        kind = "image"
    else:  # npy
        x, y = load_array(_need_path(cfg), cfg.labels)
        kind = "image" if x.dim() == 4 else "vector"
    if len(x) == 0:
        raise DataError(f"data {name!r} is empty")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise DataError(f"data {name!r} holds non-finite values")
    if kind == "image" and cfg.size is not None and x.shape[-1] != cfg.size:
        x = _resize(x, cfg.size)
    if cfg.binarize:
        if kind != "image":
            raise DataError("data.binarize=true applies to images only")
        # threshold 0 in data space: uint8 u / 127.5 - 1 > 0 for u >= 128
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
    return Dataset(x, y, info, split)


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
    """Endless shuffled minibatches from an in-memory dataset, reproducible from a seed, in
    data space (uint8 images become float in [-1, 1] one batch at a time).

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
        self._x = data.x.to(self.device)
        self._y = data.y.to(self.device) if data.y is not None else None

    def next(self) -> Batch:
        global_batch = self.batch_size * self.world
        if self.pos + global_batch > len(self.order):
            self.order = torch.randperm(len(self.data), generator=self.generator)
            self.pos = 0
            self.epoch += 1
        idx = self.order[self.pos + self.rank * self.batch_size : self.pos + (self.rank + 1) * self.batch_size]
        self.pos += global_batch
        idx = idx.to(self.device)
        return Batch(to_float(self._x[idx]), self._y[idx] if self._y is not None else None)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order.clone(),
                "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"].clone()
        self.pos, self.epoch = int(state["pos"]), int(state["epoch"])
