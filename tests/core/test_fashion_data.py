"""Fashion-MNIST: splits (55,000 / 5,000 / 10,000, val fixed and never in train), uint8 storage,
batches in [-1, 1], data.path folders of plain IDX files, and the error when the files are missing.

Tests that read the real images need Debian's dataset-fashion-mnist package and skip without it;
the data.path and missing-data tests write their own files.
"""

import hashlib
import struct

import numpy as np
import pytest
import torch

from stablegen.cli import main
from stablegen.data import DataError, InfiniteLoader, load_dataset, to_float
from stablegen.data import fashion
from stablegen.recipe import DataConfig

INSTALLED = all((fashion.DEBIAN_DIR / f"{name}.gz").is_file() for pair in fashion.FILES.values() for name in pair)
needs_package = pytest.mark.skipif(not INSTALLED, reason="Debian's dataset-fashion-mnist is not installed "
                                                         "(apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def splits():
    """The Debian package's four splits, loaded once for the module (~2 s)."""
    return {s: load_dataset(DataConfig(name="fashion-mnist", split=s, labels=True))
            for s in ("train", "val", "test", "all")}


@needs_package
def test_split_sizes_storage_and_labels(splits):
    assert {s: len(d) for s, d in splits.items()} == {"train": 55_000, "val": 5_000, "test": 10_000, "all": 60_000}
    for s, d in splits.items():
        assert d.x.dtype == torch.uint8 and d.x.shape[1:] == (1, 28, 28), s  # stored as in the files
        assert d.split == s and d.info.kind == "image" and d.info.levels == 256 and d.info.num_classes == 10
        assert d.y.dtype == torch.int64 and set(d.y.unique().tolist()) == set(range(len(fashion.CLASSES)))
    assert splits["test"].y.bincount().tolist() == [1000] * 10  # the t10k file: 1,000 per class


@needs_package
def test_val_is_fixed_and_disjoint_from_train(splits):
    train, val = fashion.split_indices()
    again = fashion.split_indices()
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    # pinned: a change of VAL_SEED or of numpy's permutation would move the benchmark's val split
    assert val[:5].tolist() == [9, 24, 49, 60, 65]
    assert hashlib.sha256(val.astype(np.int64).tobytes()).hexdigest()[:16] == "55ad26621306ab66"
    assert len(np.intersect1d(train, val)) == 0 and len(np.union1d(train, val)) == 60_000
    everything = splits["all"]
    assert torch.equal(splits["val"].x, everything.x[torch.from_numpy(val)])
    assert torch.equal(splits["train"].x, everything.x[torch.from_numpy(train)])
    assert torch.equal(splits["val"].y, everything.y[torch.from_numpy(val)])


@needs_package
def test_batches_are_float_in_unit_range(splits):
    d = splits["train"]
    batch = InfiniteLoader(d, 256, seed=0).next()
    assert batch.x.dtype == torch.float32 and batch.x.shape == (256, 1, 28, 28)
    assert batch.x.min() == -1 and batch.x.max() == 1  # 0 and 255 occur in every batch of clothes
    idx = torch.arange(10)
    assert torch.equal(d.as_float(idx), d.x[idx].float() / 127.5 - 1)
    assert d.as_float(slice(0, 3)).shape == (3, 1, 28, 28)


def _write_idx(path, array: np.ndarray) -> None:
    path.write_bytes(struct.pack(f">BBBB{array.ndim}I", 0, 0, 8, array.ndim, *array.shape) + array.tobytes())


def test_data_path_folder_of_plain_idx_files(tmp_path):
    # full-size files: image i is filled with i % 256, label i % 10, so every split is checkable
    for part, n in fashion.SIZES.items():
        images_name, labels_name = fashion.FILES[part]
        i = np.arange(n)
        images = np.broadcast_to((i % 256).astype(np.uint8)[:, None, None], (n, 28, 28))
        _write_idx(tmp_path / images_name, np.ascontiguousarray(images))
        _write_idx(tmp_path / labels_name, (i % 10).astype(np.uint8))
    train_idx, val_idx = fashion.split_indices()
    for split, idx in (("val", val_idx), ("train", train_idx), ("test", np.arange(10_000))):
        d = load_dataset(DataConfig(name="fashion-mnist", path=str(tmp_path), split=split, labels=True))
        assert d.x.dtype == torch.uint8 and len(d) == len(idx)
        assert torch.equal(d.x[:, 0, 0, 0], torch.from_numpy((idx % 256).astype(np.uint8)))
        assert torch.equal(d.y, torch.from_numpy(idx % 10))
    resized = load_dataset(DataConfig(name="fashion-mnist", path=str(tmp_path), split="val", size=14))
    assert resized.x.dtype == torch.uint8 and resized.x.shape[1:] == (1, 14, 14)
    assert torch.equal(resized.x[:, 0, 0, 0], torch.from_numpy((val_idx % 256).astype(np.uint8)))  # flat images
    binary = load_dataset(DataConfig(name="fashion-mnist", path=str(tmp_path), split="test", binarize=True))
    assert binary.info.levels == 2 and set(to_float(binary.x).unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(to_float(binary.x[:256, 0, 0, 0]) > 0, torch.arange(256) >= 128)  # threshold 0 in [-1, 1]
    (tmp_path / fashion.FILES["test"][0]).write_bytes((tmp_path / fashion.FILES["test"][0]).read_bytes()[:1000])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: truncated"):
        load_dataset(DataConfig(name="fashion-mnist", path=str(tmp_path), split="test"))


def test_missing_data_names_both_ways_to_get_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")  # one file of four
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(name="fashion-mnist", path=str(tmp_path), split="train"))
    message = str(e.value)
    assert f"data.path={tmp_path}" in message and "t10k-labels-idx1-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.path=FOLDER" in message
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="dataset-fashion-mnist package.*apt-get install dataset-fashion-mnist"):
        load_dataset(DataConfig(name="fashion-mnist"))
    code = main(["train", "vae-digits", "--run-dir", str(tmp_path / "r"), "data.name=fashion-mnist",
                 "train.progress=false"])
    assert code == 2 and "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
