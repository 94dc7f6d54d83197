"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms", arXiv:1708.07747): 70,000 grey 28x28 images of
clothing in 10 classes, read from its four IDX files.

The files come from Debian's `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist)
or from `data.path`, a folder holding them (.gz or not). Splits:
    train  55,000 of the 60,000 training images
    val     5,000 of the 60,000 training images: the first VAL_SIZE of
            np.random.default_rng(VAL_SEED).permutation(60_000), never in `train`
    test   the 10,000 t10k images
    all    the 60,000 training images (train + val; test stays held out)
Images stay uint8 (N, 1, 28, 28) in memory, 0..255 as stored (47 MB for 60,000 images, a
quarter of float32); stablegen.data.to_float maps them to [-1, 1] one batch at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .files import DataError, read_idx

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # where `apt-get install dataset-fashion-mnist` puts it
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {  # part -> (images, labels) file names, without .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SIZES = {"train": 60_000, "test": 10_000}  # images per file
VAL_SIZE = 5_000  # validation images taken from the 60,000 training images
VAL_SEED = 0  # seed of the permutation that picks them


def find_folder(path: str | Path | None = None) -> Path:
    """The folder holding the four IDX files: `path` when given, else Debian's. A missing file
    raises DataError naming both ways to get them."""
    folder = Path(path) if path else DEBIAN_DIR
    missing = [name for pair in FILES.values() for name in pair if _file(folder, name) is None]
    if missing:
        where = f"data.path={folder}" if path else f"{DEBIAN_DIR} (Debian's dataset-fashion-mnist package)"
        raise DataError(
            f"Fashion-MNIST not found: {where} lacks {', '.join(missing)} (.gz or not). Get it with "
            f"`apt-get install dataset-fashion-mnist` (installs into {DEBIAN_DIR}), or set data.path=FOLDER "
            f"to a folder holding the four IDX files {', '.join(n for pair in FILES.values() for n in pair)}")
    return folder


def _file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices into the 60,000 training images, each sorted."""
    perm = np.random.default_rng(VAL_SEED).permutation(SIZES["train"])
    return np.sort(perm[VAL_SIZE:]), np.sort(perm[:VAL_SIZE])


def load_fashion_mnist(split: str, path: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """One split as (x, y): x uint8 (N, 1, 28, 28) in 0..255, y int64 (N,) in 0..9.

    split: train, val, test or all (see the module doc); path: a folder with the IDX files
    (default: Debian's)."""
    if split not in ("train", "val", "test", "all"):
        raise DataError(f"fashion-mnist has splits train, val, test and all; got {split!r}")
    folder = find_folder(path)
    part = "test" if split == "test" else "train"
    images_file, labels_file = (_file(folder, name) for name in FILES[part])
    x, y = read_idx(images_file), read_idx(labels_file)
    if x.shape != (SIZES[part], 28, 28):
        raise DataError(f"{images_file}: expected {SIZES[part]:,} Fashion-MNIST images of 28x28, got shape {x.shape}")
    if y.shape != (SIZES[part],) or y.max() >= len(CLASSES):
        raise DataError(f"{labels_file}: expected {SIZES[part]:,} labels in 0..9, got shape {y.shape}, "
                        f"max {y.max()}")
    x, y = torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))  # (N, 1, 28, 28) uint8
    if split in ("train", "val"):
        idx = torch.from_numpy(split_indices()[split == "val"])
        x, y = x[idx], y[idx]
    return x, y
