"""Data from the user's disk: image folders (PIL), .npy / .npz arrays, MNIST IDX files.

The readers return arrays as stored (numpy; a .npy memory-mapped, images uint8); the checks
every source shares (layout, value range, labels, splits) live in own.py. Every reader fails
loudly, naming the file: empty folders, unreadable or corrupt files, images of mixed sizes.
Nothing is skipped silently.
"""

from __future__ import annotations

import gzip
import mmap
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class DataError(ValueError):
    """Data that cannot be used; the message names the file and what was expected."""


class DataNote(UserWarning):
    """A conversion made to read the data (a layout transposed, a value range rescaled); the
    message names the file, what was found and what it became."""


def note(message: str) -> None:
    """Say what was converted (a DataNote warning: shown once per message, filterable)."""
    warnings.warn(message, DataNote, stacklevel=3)


def image_files(path: str | Path, labels: bool = False) -> tuple[list[Path], np.ndarray | None]:
    """The image files under `path` (recursively, sorted) and, with labels=True, their classes:
    each immediate sub-folder is a class (sorted names -> 0..K-1)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"image folder {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if not labels:
        return files, None
    classes = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    if not classes:
        raise DataError(f"data.labels=true needs one sub-folder per class in {root}")
    loose = [p for p in files if len(p.relative_to(root).parts) == 1]
    if loose:
        raise DataError(f"{loose[0]}: an image outside the class sub-folders of {root} has no label; move it "
                        f"into a class folder or set data.labels=false")
    return files, np.array([classes.index(p.relative_to(root).parts[0]) for p in files], dtype=np.int64)


def read_images(files: list[Path], size: int | None = None) -> np.ndarray:
    """The images as uint8 (N, C, H, W), 0..255 as stored (a quarter of float32), read into one
    preallocated array. Grey images stay 1 channel, colour images are RGB (alpha dropped). They
    must share one size unless `size` resizes them (bilinear)."""
    from PIL import Image, UnidentifiedImageError

    out, first = None, None
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                im.load()
                im = im.convert("L") if im.mode in ("L", "1", "I;16", "I") else im.convert("RGB")
                if size is not None:
                    im = im.resize((size, size), Image.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{p}: not a readable image ({e})") from None
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)
        if out is None:
            out, first = np.empty((len(files), *a.shape), dtype=np.uint8), p
        elif a.shape != out.shape[1:]:
            want = out.shape[1:]
            raise DataError(f"{p}: image of shape {a.shape[1:]} x {a.shape[0]} channels differs from "
                            f"{first} ({want[1:]} x {want[0]}); set data.size to resize all")
        out[i] = a
    return out


def read_array(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y) of a .npy (y None) or an .npz: x is the array named `x`, else the first array (with
    a note); y the array named `y` when there is one. A .npy is memory-mapped (copy-on-write):
    only the rows used are read, so a file larger than memory works. Pickled objects are never
    loaded."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"array file {p} does not exist")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if not z.files:
                    raise DataError(f"{p}: the .npz holds no arrays")
                key = "x" if "x" in z.files else next((k for k in z.files if k != "y"), None)
                if key is None:
                    raise DataError(f"{p}: the .npz holds only labels 'y'; put the samples in an array named 'x'")
                if key != "x":
                    note(f"{p}: no array named 'x'; read the first array, {key!r} (of {', '.join(z.files)})")
                return z[key], (z["y"] if "y" in z.files else None)
        try:
            x = np.load(p, mmap_mode="c", allow_pickle=False)
        except ValueError:  # cannot be mapped (e.g. object dtype): the plain read says why
            return np.load(p, allow_pickle=False), None
        if hasattr(getattr(x, "_mmap", None), "madvise"):  # batches read random rows: no read-ahead
            x._mmap.madvise(mmap.MADV_RANDOM)
        return x, None
    except DataError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{p}: not a readable .npy/.npz array ({e})") from None


def read_idx_images(path: str | Path, labels_path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """MNIST IDX files (optionally .gz): images uint8 (N, 1, H, W) as stored and int64 labels (N,)."""
    x = read_idx(Path(path))
    if x.ndim != 3:
        raise DataError(f"{path}: an IDX image file holds (N, H, W), got {x.ndim} dimensions")
    y = None
    if labels_path is not None:
        y = read_idx(Path(labels_path))
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{labels_path}: expected {len(x)} labels, got shape {y.shape}")
        y = y.astype(np.int64)
    return x[:, None], y


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
