"""Data from the user's disk: image folders (PIL), .npy / .npz arrays, MNIST IDX files.

Every loader fails loudly, naming the file: empty folders, unreadable or corrupt files,
images of mixed sizes, non-finite values. Nothing is skipped silently.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class DataError(ValueError):
    """Data that cannot be used; the message names the file and what was expected."""


def _to_unit_range(x: np.ndarray, source: Path) -> Tensor:
    """uint8 / [0, 1] / [-1, 1] arrays -> float32 tensor in [-1, 1]."""
    if x.size == 0:
        raise DataError(f"{source}: the array is empty")
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise DataError(f"{source}: integer images must lie in 0..255, got {x.min()}..{x.max()}")
        return torch.from_numpy(x.astype(np.float32) / 127.5 - 1)
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise DataError(f"{source}: {bad} non-finite values (NaN or inf); clean the data first")
    return torch.from_numpy(x)


def load_image_folder(path: str | Path, size: int | None = None, labels: bool = False) -> tuple[Tensor, Tensor | None]:
    """All images under `path` (recursively) as (N, C, H, W) in [-1, 1].

    With labels=True each immediate sub-folder is a class (sorted names -> 0..K-1).
    Images must share one size unless `size` resizes them; grey images stay 1 channel,
    colour images are RGB.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"image folder {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    classes = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    if labels and not classes:
        raise DataError(f"data.labels=true needs one sub-folder per class in {root}")
    arrays, ys, first = [], [], None
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                im = im.convert("L") if im.mode in ("L", "1", "I;16", "I") else im.convert("RGB")
                if size is not None:
                    im = im.resize((size, size), Image.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{p}: not a readable image ({e})") from None
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if first is None:
            first = (a.shape, p)
        elif a.shape != first[0]:
            raise DataError(f"{p}: image of shape {a.shape[1:]} x {a.shape[0]} channels differs from "
                            f"{first[1]} ({first[0][1:]} x {first[0][0]}); set data.size to resize all")
        arrays.append(a)
        if labels:
            ys.append(classes.index(p.relative_to(root).parts[0]))
    x = _to_unit_range(np.stack(arrays), root)
    return x, (torch.tensor(ys) if labels else None)


def load_array(path: str | Path, labels: bool = False) -> tuple[Tensor, Tensor | None]:
    """A .npy array, or an .npz with key `x` (and `y` for labels). Images (N, C, H, W) or
    (N, H, W), vectors (N, D). Integer arrays are read as 0..255 images."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"array file {p} does not exist")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "x" not in z:
                    raise DataError(f"{p}: an .npz needs an array named 'x' (found {', '.join(z.files) or 'none'})")
                x = z["x"]
                y = z["y"] if "y" in z else None
        else:
            x, y = np.load(p, allow_pickle=False), None
    except (ValueError, OSError, EOFError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{p}: not a readable .npy/.npz array ({e})") from None
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim not in (2, 4):
        raise DataError(f"{p}: expected (N, D) vectors or (N, [C,] H, W) images, got shape {x.shape}")
    if labels and y is None:
        raise DataError(f"data.labels=true needs an array 'y' in {p} (an .npz with x and y)")
    data = _to_unit_range(x, p) if x.ndim == 4 else _finite_float(x, p)
    ys = None
    if labels:
        if len(y) != len(x):
            raise DataError(f"{p}: {len(y)} labels for {len(x)} samples")
        ys = torch.from_numpy(np.asarray(y).astype(np.int64))
    return data, ys


def _finite_float(x: np.ndarray, source: Path) -> Tensor:
    if x.size == 0:
        raise DataError(f"{source}: the array is empty")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{source}: {int((~np.isfinite(x)).sum())} non-finite values (NaN or inf)")
    return torch.from_numpy(x)


def load_idx(path: str | Path, labels_path: str | Path | None = None) -> tuple[Tensor, Tensor | None]:
    """MNIST IDX files (optionally .gz): images (N, 1, H, W) in [-1, 1] and labels."""
    x = read_idx(Path(path))
    if x.ndim != 3:
        raise DataError(f"{path}: an IDX image file holds (N, H, W), got {x.ndim} dimensions")
    images = _to_unit_range(x[:, None].astype(np.uint8), Path(path))
    ys = None
    if labels_path is not None:
        y = read_idx(Path(labels_path))
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{labels_path}: expected {len(x)} labels, got shape {y.shape}")
        ys = torch.from_numpy(y.astype(np.int64))
    return images, ys


def _idx_body_bytes(p: Path, header: int) -> int | None:
    """The bytes an IDX file holds after its header: from the file size, or for .gz from the
    gzip trailer's ISIZE (the decompressed size modulo 2^32; None where it may have wrapped)."""
    size = p.stat().st_size
    if p.suffix != ".gz":
        return size - header
    if size < 18 or size >= 1 << 30:  # no trailer, or large enough that ISIZE could wrap
        return None
    with open(p, "rb") as f:
        f.seek(-4, 2)
        return struct.unpack("<I", f.read(4))[0] - header


def read_idx(p: Path) -> np.ndarray:
    """The array of an unsigned-byte IDX file (optionally .gz), uint8 and writable.

    The body is read in 1 MiB pieces into one preallocated array, so reading a file costs its
    decompressed size once (no compressed + decompressed copies side by side).
    """
    if not p.is_file():
        raise DataError(f"IDX file {p} does not exist")
    try:
        with (gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise DataError(f"{p}: not an unsigned-byte IDX file (bad magic number)")
            ndim = head[3]
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{p}: truncated IDX header")
            dims = struct.unpack(f">{ndim}I", dims_raw)
            size, held = int(np.prod(dims)), _idx_body_bytes(p, 4 + 4 * ndim)
            if held is not None and size > held:  # checked before allocating what the header claims
                raise DataError(f"{p}: truncated IDX file ({held} bytes for shape {dims})")
            body = np.empty(size, dtype=np.uint8)
            pos = 0
            while pos < body.size:
                chunk = f.read(min(1 << 20, body.size - pos))
                if not chunk:
                    break
                body[pos : pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
                pos += len(chunk)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{p}: not a readable IDX file ({e})") from None
    if pos != body.size:
        raise DataError(f"{p}: truncated IDX file ({pos} bytes for shape {dims})")
    return body.reshape(dims)
