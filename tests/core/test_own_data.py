"""The user's own data is never silently misread: layouts, value ranges, labels, data.split and
data.normalize, for files (npy / npz / folder / IDX / CSV) and data from Python (dataset_from).
Each conversion says so (a DataNote warning); each refusal is a DataError naming the fix."""

import struct

import numpy as np
import pytest
import torch
from PIL import Image

from stablegen.data import (DataError, DataNote, EvalSplit, InfiniteLoader, dataset_from, keep_normalization,
                            load_dataset, load_eval_data, resolve_eval_split)
from stablegen.recipe import DataConfig

RNG = np.random.default_rng(0)


def _npy(tmp_path, x, name="x.npy"):
    np.save(tmp_path / name, x)
    return str(tmp_path / name)


# ---- layout -------------------------------------------------------------------------------------
def test_channels_last_uint8_is_transposed_and_said(tmp_path):
    x = RNG.integers(0, 256, (50, 16, 16, 3), dtype=np.uint8)
    with pytest.warns(DataNote, match=r"x.npy: read shape \(50, 16, 16, 3\) as channels-last"):
        d = load_dataset(DataConfig(name="npy", path=_npy(tmp_path, x), batch_size=8))
    assert d.x.shape == (50, 3, 16, 16) and d.info.shape == (3, 16, 16) and d.info.levels == 256
    assert torch.equal(d.x, torch.from_numpy(x).permute(0, 3, 1, 2))  # pixel (h, w) of channel c where it was
    with pytest.warns(DataNote, match="channels-last"):
        assert torch.equal(dataset_from(torch.from_numpy(x), DataConfig(batch_size=8)).x, d.x)


@pytest.mark.parametrize("shape, expected, said", [
    ((4, 3, 3, 3), (4, 3, 3, 3), "reads both ways; took channels-first"),
    ((4, 8, 8), (4, 1, 8, 8), "as grey images"),
    ((4, 3, 8, 8), (4, 3, 8, 8), None),
])
def test_ambiguous_grey_and_plain_layouts(tmp_path, shape, expected, said):
    x = RNG.integers(0, 256, shape, dtype=np.uint8)
    with pytest.warns(DataNote, match=said) if said else _no_note():
        d = load_dataset(DataConfig(name="npy", path=_npy(tmp_path, x), batch_size=2))
    assert d.x.shape == expected


class _no_note:
    def __enter__(self):
        import warnings

        self.w = warnings.catch_warnings()
        self.w.__enter__()
        warnings.simplefilter("error", DataNote)

    def __exit__(self, *a):
        self.w.__exit__(*a)


# ---- values and data.normalize -------------------------------------------------------------------
def test_float_images_outside_the_range_name_the_file_range_and_fix(tmp_path):
    x = RNG.uniform(0, 255, (20, 3, 8, 8)).astype(np.float32)
    with pytest.raises(DataError, match=r"x.npy: float images must lie in \[-1, 1\].*found 0\.\d+\.\.25\d.*"
                                        r"uint8.*data.normalize=minmax"):
        load_dataset(DataConfig(name="npy", path=_npy(tmp_path, x), batch_size=4))


def test_minmax_gives_training_ready_data_and_its_statistics_undo_it(tmp_path):
    x = RNG.uniform(0, 255, (40, 3, 8, 8)).astype(np.float32)
    cfg = DataConfig(name="npy", path=_npy(tmp_path, x), batch_size=8, normalize="minmax")
    d = load_dataset(cfg)
    assert d.x.dtype == torch.float32 and d.x.min() == -1 and d.x.max() == 1
    for c in range(3):  # per channel: each spans [-1, 1]
        assert d.x[:, c].min() == -1 and d.x[:, c].max() == 1
    batch = InfiniteLoader(d, 8, seed=0).next().x
    assert batch.min() >= -1 and batch.max() <= 1
    assert torch.allclose(d.denormalize(d.x), torch.from_numpy(x), atol=1e-4)
    kept = keep_normalization(cfg, d)  # what a run's recipe.yaml stores
    assert kept.norm_shift == pytest.approx(((x.min((0, 2, 3)) + x.max((0, 2, 3))) / 2).tolist())
    again = load_dataset(kept)  # the stored statistics reproduce the data exactly
    assert torch.equal(again.x, d.x) and torch.equal(again.norm.scale, d.norm.scale)


def test_meanstd_on_vectors_and_the_held_out_split_uses_the_training_statistics(tmp_path):
    x = RNG.normal(100, 5, (200, 2)).astype(np.float32)
    cfg = DataConfig(name="npy", path=_npy(tmp_path, x), batch_size=8, normalize="meanstd", split="train")
    train = load_dataset(cfg)
    assert train.x.mean(0).abs().max() < 1e-4 and (train.x.std(0) - 1).abs().max() < 1e-2
    test, where = load_eval_data(train, cfg)
    assert where == EvalSplit("test", True) and test.norm is train.norm
    rows = np.sort(np.random.default_rng(0).permutation(200)[:20])
    assert torch.allclose(test.denormalize(test.x), torch.from_numpy(x[rows]), atol=1e-3)


def test_unit_floats_are_scaled_and_integer_or_normalize_misuse_refused(tmp_path):
    x = RNG.uniform(0, 1, (10, 1, 8, 8)).astype(np.float64)
    with pytest.warns(DataNote, match=r"read as \[0, 1\] images and scaled to \[-1, 1\]"):
        d = load_dataset(DataConfig(name="npy", path=_npy(tmp_path, x), batch_size=2))
    assert torch.allclose(d.x, torch.from_numpy(2 * x - 1).float())
    signed = 2 * x - 1
    assert torch.equal(load_dataset(DataConfig(name="npy", path=_npy(tmp_path, signed), batch_size=2)).x,
                       torch.from_numpy(signed).float())
    with pytest.raises(DataError, match=r"integer images must lie in 0\.\.255, found 0\.\.1020"):
        load_dataset(DataConfig(name="npy", path=_npy(tmp_path, np.arange(256).reshape(4, 1, 8, 8) * 4), batch_size=2))
    u8 = _npy(tmp_path, np.zeros((4, 1, 8, 8), np.uint8))
    with pytest.raises(DataError, match="data.normalize=minmax is for float data"):
        load_dataset(DataConfig(name="npy", path=u8, batch_size=2, normalize="minmax"))
    with pytest.raises(DataError, match="set data.normalize"):
        load_dataset(DataConfig(name="npy", path=u8, batch_size=2, norm_shift=[0.0], norm_scale=[1.0]))


# ---- data.split ----------------------------------------------------------------------------------
def test_split_of_a_npy_file_is_seeded_disjoint_and_complete(tmp_path):
    x = np.arange(100, dtype=np.float32)[:, None].repeat(3, 1) / 100  # row i holds i / 100
    path = _npy(tmp_path, x)
    part = {s: load_dataset(DataConfig(name="npy", path=path, batch_size=2, split=s)) for s in ("train", "val", "test")}
    rows = {s: set((d.x[:, 0] * 100).round().int().tolist()) for s, d in part.items()}
    assert [len(rows[s]) for s in ("train", "val", "test")] == [80, 10, 10]
    assert not rows["train"] & rows["test"] and not rows["val"] & rows["test"] and not rows["train"] & rows["val"]
    assert rows["train"] | rows["val"] | rows["test"] == set(range(100))
    again = load_dataset(DataConfig(name="npy", path=path, batch_size=2, split="test"))
    assert torch.equal(again.x, part["test"].x)  # fixed across calls (data.seed)
    other = load_dataset(DataConfig(name="npy", path=path, batch_size=2, split="test", seed=1))
    assert not torch.equal(other.x, part["test"].x)
    cfg = DataConfig(name="npy", path=path, split="train")
    assert resolve_eval_split(cfg) == EvalSplit("test", True)
    with pytest.raises(DataError, match=r"data.split=val: data.val_fraction=0.0 .* leaves none for val"):
        load_dataset(DataConfig(name="npy", path=path, split="val", val_fraction=0.0))


def test_split_of_a_folder_decodes_only_its_images(tmp_path):
    for cls in ("a", "b"):
        for i in range(10):
            (tmp_path / cls).mkdir(exist_ok=True)
            Image.new("L", (4, 4), 10 * i + (100 if cls == "b" else 0)).save(tmp_path / cls / f"{i}.png")
    cfg = DataConfig(name="folder", path=str(tmp_path), labels=True, batch_size=1, split="train")
    train = load_dataset(cfg)
    test, where = load_eval_data(train, cfg)
    values = lambda d: set(d.x[:, 0, 0, 0].tolist())  # noqa: E731  each image has its own grey value
    assert len(train) == 16 and len(test) == 2 and where.held_out and not values(train) & values(test)
    assert train.x.dtype == torch.uint8 and test.y.tolist() == [int(v >= 100) for v in test.x[:, 0, 0, 0]]
    assert torch.equal(load_dataset(cfg.model_copy(update={"split": "test"})).x, test.x)


def test_split_of_a_csv_series_is_in_time(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("".join(f"{i}\n" for i in range(100)))
    parts = {s: load_dataset(DataConfig(name="csv", path=str(p), length=5, batch_size=1, split=s))
             for s in ("train", "val", "test")}
    assert parts["train"].x.max() == 79 and parts["val"].x.min() == 80 and parts["test"].x.min() == 90


def test_idx_split_and_labels(tmp_path):
    images = np.arange(10 * 4 * 4, dtype=np.uint8).reshape(10, 4, 4)
    (tmp_path / "t-images-idx3-ubyte").write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 10, 4, 4) + images.tobytes())
    (tmp_path / "t-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + bytes(range(10)))
    d = load_dataset(DataConfig(name="idx", path=str(tmp_path / "t-images-idx3-ubyte"), labels=True, batch_size=1,
                                split="test", test_fraction=0.2))
    assert len(d) == 2 and torch.equal(d.x[:, 0, 0, 0], torch.from_numpy(images[d.y.numpy(), 0, 0]))


# ---- larger than memory ----------------------------------------------------------------------------
def test_memory_mapped_npy_stays_uint8_and_batches_are_float(tmp_path):
    x = RNG.integers(0, 256, (64, 1, 8, 8), dtype=np.uint8)
    d = load_dataset(DataConfig(name="npy", path=_npy(tmp_path, x), batch_size=16))
    assert d.x.dtype == torch.uint8 and d.on_disk  # the file's pages, not a copy
    batch = InfiniteLoader(d, 16, seed=0).next().x
    assert batch.dtype == torch.float32 and batch.is_contiguous() and -1 <= batch.min() and batch.max() <= 1
    assert not load_dataset(DataConfig(name="npy", path=str(tmp_path / "x.npy"), batch_size=2, split="train")).on_disk


# ---- labels and .npz keys ---------------------------------------------------------------------------
def test_npz_keys_and_labels(tmp_path):
    np.savez(tmp_path / "a.npz", np.zeros((6, 3, 8, 8), np.uint8))
    with pytest.warns(DataNote, match="no array named 'x'; read the first array, 'arr_0'"):
        assert load_dataset(DataConfig(name="npy", path=str(tmp_path / "a.npz"), batch_size=2)).x.shape == (6, 3, 8, 8)
    for y, match in ((np.array([0, 1, 2, 0.5, 1, 1]), "integer class ids"), (np.array([0, -1, 0, 0, 0, 0]), "found -1"),
                     (np.arange(5), "5 labels")):
        np.savez(tmp_path / "b.npz", x=np.zeros((6, 3, 4, 4), np.uint8), y=y)
        with pytest.raises(DataError, match=match):
            load_dataset(DataConfig(name="npy", path=str(tmp_path / "b.npz"), labels=True, batch_size=2))


# ---- data from Python ------------------------------------------------------------------------------
class _Items(torch.utils.data.Dataset):
    """A map-style dataset of (H, W, C) uint8 arrays and integer labels."""

    def __len__(self):
        return 30

    def __getitem__(self, i):
        return np.full((6, 6, 3), 8 * i, np.uint8), i % 3


def test_a_torch_dataset_gets_the_same_checks_and_seeded_splits():
    cfg = DataConfig(labels=True, batch_size=4, split="train")
    with pytest.warns(DataNote, match="channels-last"):
        train = dataset_from(_Items(), cfg)
        test, where = load_eval_data(train, cfg.model_copy(update={"name": "python"}))
    assert train.x.shape == (24, 3, 6, 6) and train.x.dtype == torch.uint8 and train.info.num_classes == 3
    assert where == EvalSplit("test", True) and len(test) == 3
    assert not set(train.x[:, 0, 0, 0].tolist()) & set(test.x[:, 0, 0, 0].tolist())
    assert test.y.tolist() == [int(v) // 8 % 3 for v in test.x[:, 0, 0, 0]]
    with pytest.warns(DataNote, match=r"\(4, 8, 8, 3\) as channels-last"):  # a list of PIL images
        pil = dataset_from([Image.new("RGB", (8, 8), (60 * i, 0, 0)) for i in range(4)], DataConfig(batch_size=2))
    assert pil.x.dtype == torch.uint8 and pil.x[:, 0, 0, 0].tolist() == [0, 60, 120, 180]
    seq = dataset_from(torch.randn(10, 16, 2) * 50, DataConfig(batch_size=2), kind="sequence")
    assert seq.info.kind == "sequence" and seq.info.shape == (16, 2)  # units kept
    with pytest.raises(DataError, match="data from Python: float images must lie in"):
        dataset_from(torch.full((4, 1, 8, 8), 7.0), DataConfig(batch_size=2))
    with pytest.raises(DataError, match="expected a tensor"):
        dataset_from(object(), DataConfig())
    with pytest.raises(DataError, match="data.name=python"):
        load_dataset(DataConfig(name="python"))


def test_training_on_a_tensor_from_python_samples_in_its_units(tmp_path):
    """sg.train(..., data=tensor) with data.normalize: the run records the data as given from
    Python and its statistics; samples come back in the data's own units."""
    import stablegen as sg

    x = torch.randn(256, 2) * 50 + 300  # raw units, far outside [-1, 1]
    over = {"train.steps": 5, "train.progress": False, "train.sample_every": 0, "train.threads": 1,
            "eval.metrics": [], "data.normalize": "meanstd", "data.batch_size": 32}
    run = sg.train("gan-ring8", over, run_dir=tmp_path / "r", data=x, report=False)
    assert run.recipe.data.name == "python" and run.recipe.data.norm_shift is not None
    s = run.sample(500, seed=0, truncate=False)
    assert 200 < s.mean() < 400  # un-normalized: around the data's mean of 300, not 0
    with pytest.raises(sg.RecipeError, match="data given from Python"):
        sg.open_run(tmp_path / "r")
    again = sg.open_run(tmp_path / "r", data=x)
    assert torch.equal(again.sample(50, seed=1, truncate=False), run.sample(50, seed=1, truncate=False))
