import math

import numpy as np
import pytest
import torch
from PIL import Image

from stablegen.data import DataError, InfiniteLoader, load_dataset
from stablegen.data.digits import benchmark_split, load_digits, stacked_digits
from stablegen.data.toys import TOYS, mixture_means, sample_toy
from stablegen.recipe import DataConfig


def test_ring8_and_grid25_follow_the_benchmark_protocol():
    ring = mixture_means("ring8")
    assert ring.shape == (8, 2)
    assert torch.allclose(ring[2], torch.tensor([0.0, 1.0]), atol=1e-7)  # k=2: angle pi/2
    assert torch.allclose(ring.norm(dim=1), torch.ones(8))
    grid = mixture_means("grid25")
    assert set(grid[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0} and len(grid) == 25
    x = sample_toy("ring8", 20000, torch.Generator().manual_seed(0))
    d = torch.cdist(x, ring).min(dim=1).values
    # distance to the nearest mean of a 2-D N(0, 0.01^2) is Rayleigh with mean 0.01 sqrt(pi/2)
    assert abs(d.mean().item() - 0.01 * math.sqrt(math.pi / 2)) < 5e-4


@pytest.mark.parametrize("name", TOYS)
def test_toys_are_seeded_and_finite(name):
    a = sample_toy(name, 500, torch.Generator().manual_seed(3))
    b = sample_toy(name, 500, torch.Generator().manual_seed(3))
    assert a.shape == (500, 2) and torch.equal(a, b) and torch.isfinite(a).all()


def test_digits_range_resize_and_split():
    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.min() == -1 and x.max() == 1 and set(y.tolist()) == set(range(10))
    x16, _ = load_digits(16)
    assert x16.shape == (1797, 1, 16, 16)
    tr, va, te = benchmark_split()
    assert (len(tr), len(va), len(te)) == (1294, 143, 360)
    assert len(set(tr) | set(va) | set(te)) == 1797
    s, modes = stacked_digits(10, torch.Generator().manual_seed(0))
    assert s.shape == (10, 3, 8, 8) and modes.max() < 1000


def test_dataset_info_and_labels():
    d = load_dataset(DataConfig(name="digits", labels=True, split="test"))
    assert len(d) == 360 and d.info.num_classes == 10 and d.info.levels == 17 and d.info.kind == "image"
    d = load_dataset(DataConfig(name="ring8", n=100, batch_size=10))
    assert d.info.shape == (2,) and d.y is None


def test_unknown_dataset_suggests():
    with pytest.raises(DataError, match="did you mean 'digits'"):
        load_dataset(DataConfig(name="digit"))


def test_loader_is_reproducible_and_resumable():
    d = load_dataset(DataConfig(name="moons", n=100, batch_size=32))
    a = InfiniteLoader(d, 32, seed=1)
    first = [a.next().x for _ in range(5)]  # crosses an epoch boundary (100 / 32)
    b = InfiniteLoader(d, 32, seed=1)
    assert all(torch.equal(x, b.next().x) for x in first)
    state = a.state_dict()
    expected = [a.next().x for _ in range(4)]
    c = InfiniteLoader(d, 32, seed=99)
    c.load_state_dict(state)
    assert all(torch.equal(x, c.next().x) for x in expected)


def test_loader_ranks_take_disjoint_slices():
    d = load_dataset(DataConfig(name="moons", n=64, batch_size=8))
    r0, r1 = InfiniteLoader(d, 8, 0, rank=0, world=2), InfiniteLoader(d, 8, 0, rank=1, world=2)
    x0, x1 = r0.next().x, r1.next().x
    assert not any((x1 == row).all(dim=1).any() for row in x0)


# ---- files from disk ----------------------------------------------------------------------
def _png(path, size=(8, 8), mode="L", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_image_folder_with_labels(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", value=50 * i)
    d = load_dataset(DataConfig(name="folder", path=str(tmp_path), labels=True, batch_size=2))
    assert d.x.shape == (6, 1, 8, 8) and d.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert d.x.dtype == torch.uint8 and d.as_float().min() >= -1 and d.as_float().max() <= 1  # stored as 8-bit


def test_image_folder_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(DataConfig(name="folder", path=str(tmp_path)))
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png", size=(16, 16))
    with pytest.raises(DataError, match="b.png.*differs.*data.size"):
        load_dataset(DataConfig(name="folder", path=str(tmp_path), batch_size=1))
    d = load_dataset(DataConfig(name="folder", path=str(tmp_path), size=8, batch_size=1))
    assert d.x.shape == (2, 1, 8, 8)
    (tmp_path / "c.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="c.png: not a readable image"):
        load_dataset(DataConfig(name="folder", path=str(tmp_path), size=8, batch_size=1))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(DataConfig(name="folder", path=str(tmp_path / "nope")))


def test_arrays(tmp_path):
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32))
    d = load_dataset(DataConfig(name="npy", path=str(tmp_path / "v.npy"), batch_size=4))
    assert d.info.kind == "vector" and d.info.shape == (3,)
    np.savez(tmp_path / "im.npz", x=np.zeros((5, 4, 4), np.uint8), y=np.arange(5))
    d = load_dataset(DataConfig(name="npy", path=str(tmp_path / "im.npz"), labels=True, batch_size=2))
    assert d.x.shape == (5, 1, 4, 4) and d.as_float().min() == -1 and d.y.tolist() == list(range(5))
    bad = np.ones((4, 2), np.float32)
    bad[1, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match="nan.npy: 1 non-finite"):
        load_dataset(DataConfig(name="npy", path=str(tmp_path / "nan.npy"), batch_size=1))
    np.save(tmp_path / "empty.npy", np.zeros((0, 2), np.float32))
    with pytest.raises(DataError, match="empty.npy: the array is empty"):
        load_dataset(DataConfig(name="npy", path=str(tmp_path / "empty.npy"), batch_size=1))
    (tmp_path / "junk.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="junk.npy: not a readable"):
        load_dataset(DataConfig(name="npy", path=str(tmp_path / "junk.npy"), batch_size=1))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):  # pickled objects are never loaded
        load_dataset(DataConfig(name="npy", path=str(tmp_path / "obj.npy"), batch_size=1))


def test_idx_files(tmp_path):
    import struct

    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 3, 4, 4) + images.tobytes())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([1, 2, 3]))
    d = load_dataset(DataConfig(name="idx", path=str(tmp_path / "t10k-images-idx3-ubyte"), labels=True, batch_size=1))
    assert d.x.shape == (3, 1, 4, 4) and d.y.tolist() == [1, 2, 3]
    (tmp_path / "short").write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 3, 4, 4) + b"\x00" * 5)
    with pytest.raises(DataError, match="short: truncated"):
        load_dataset(DataConfig(name="idx", path=str(tmp_path / "short"), batch_size=1))


def test_batch_larger_than_data():
    with pytest.raises(DataError, match="batch_size=500 exceeds the 360"):
        load_dataset(DataConfig(name="digits", split="test", batch_size=500))
