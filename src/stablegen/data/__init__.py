"""Datasets (all held in memory as tensors) and a seeded, checkpointable infinite loader.

`load_dataset(cfg)` returns a Dataset: x in data space (images (N, C, H, W) in [-1, 1],
vectors (N, D), sequences (N, T, D) or tokens (N, T)), optional labels y (N,), and the
DataInfo a method needs to build its nets.
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
DATASETS = TOYS + ("digits", "stacked-digits") + SYNTHETIC_SEQUENCES + ("folder", "npy", "idx", "csv")


@dataclass
class Dataset:
    x: Tensor
    y: Tensor | None
    info: DataInfo

    def __len__(self) -> int:
        return len(self.x)


def load_dataset(cfg) -> Dataset:
    """Build the dataset a recipe's data section describes (cfg: recipe.DataConfig)."""
    name = cfg.name
    if name not in DATASETS:
        hint = difflib.get_close_matches(name, DATASETS, n=1)
        raise DataError(f"unknown data.name {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                        + f" (built in: {', '.join(DATASETS)})")
    g = torch.Generator().manual_seed(cfg.seed)
    y, levels, vocab = None, None, None
    if name in TOYS:
        x, kind = sample_toy(name, cfg.n, g), "vector"
    elif name == "digits":
        x, y = load_digits(cfg.size)
        if cfg.split != "all":
            idx = torch.from_numpy(benchmark_split()[("train", "val", "test").index(cfg.split)])
            x, y = x[idx], y[idx]
        kind, levels = "image", (None if cfg.size not in (None, 8) else LEVELS)
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
        x = torch.nn.functional.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False)
    if cfg.binarize:
        if kind != "image":
            raise DataError("data.binarize=true applies to images only")
        x = torch.where(x > 0, 1.0, -1.0)
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
    return Dataset(x, y, info)


def _need_path(cfg) -> str:
    if not cfg.path:
        raise DataError(f"data.name={cfg.name!r} reads from disk: set data.path")
    return cfg.path


class InfiniteLoader:
    """Endless shuffled minibatches from an in-memory dataset, reproducible from a seed.

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
        return Batch(self._x[idx], self._y[idx] if self._y is not None else None)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order.clone(),
                "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"].clone()
        self.pos, self.epoch = int(state["pos"]), int(state["epoch"])
