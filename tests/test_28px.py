"""Every image family trains at 28x28 (MNIST / Fashion-MNIST size) without resizing.

Each family's built-in recipe, shrunk by model overrides, is built for 28x28 grey images,
takes two optimizer steps through its phases and samples (n, C, 28, 28). The nets follow
`nets.layers.ladder` (28 -> 14 -> 7); sizes a net cannot take fail at build time with the
recipe key to change."""

import numpy as np
import pytest
import torch

from stablegen.api import build_method, seed_everything
from stablegen.base import Batch, DataInfo
from stablegen.data import Dataset, load_dataset
from stablegen.nets.layers import Ladder, ladder
from stablegen.recipe import RecipeError, load_recipe

# recipe, model overrides (small widths), sampling options
CASES = {
    "dcgan": ("dcgan-digits", {"model.width": 8, "model.z_dim": 8}, {}),
    "dcgan-mbstd-sn": ("dcgan-digits", {"model.width": 8, "model.z_dim": 8, "model.mbstd": True,
                                        "model.spectral_norm": True}, {}),
    "cgan": ("cgan-digits", {"model.width": 8, "model.z_dim": 8}, {}),
    "resnet-gan": ("dcgan-digits", {"model.net": "resnet", "model.width": 8, "model.z_dim": 8}, {}),
    "vae-mlp": ("vae-digits", {"model.width": 16, "model.z_dim": 4}, {}),
    "vae-conv": ("vae-digits", {"model.net": "conv", "model.width": 8, "model.z_dim": 4}, {}),
    "realnvp": ("realnvp-moons", {"model.couplings": 1, "model.width": 8, "model.depth": 1}, {}),
    "glow": ("glow-digits", {"model.steps": 2, "model.width": 8}, {}),
    "pixelcnn": ("pixelcnn-digits", {"model.channels": 8, "model.blocks": 2}, {}),
    "ddpm": ("ddpm-digits", {"model.unet.channels": 8, "model.unet.channel_mult": [1, 2, 2]}, {"steps": 3}),
    "cfg-ddpm": ("cfg-digits", {"model.unet.channels": 8, "model.unet.channel_mult": [1, 2]}, {"steps": 3}),
    "ebm": ("ebm-digits", {"model.width": 8, "model.langevin_steps": 2}, {"steps": 2}),
}
RGB_CASES = ["dcgan", "resnet-gan", "vae-conv", "ddpm"]  # 3-channel 28x28
# 27x27, with the overrides an odd size needs (a multi-scale flow cannot squeeze it)
ODD_CASES = {"dcgan": {}, "resnet-gan": {}, "vae-conv": {}, "ddpm": {}, "ebm": {}, "pixelcnn": {},
             "realnvp": {"model.scales": 0}}


def _images(c: int, size: int, n: int = 16, seed: int = 0) -> torch.Tensor:
    """n random 8-bit images (n, c, size, size) in [-1, 1]: 256 grey levels, as IDX data."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g).float() / 127.5 - 1


def _dataset(c: int, size: int) -> Dataset:
    x = _images(c, size)
    y = torch.arange(len(x)) % 10
    return Dataset(x, y, DataInfo("images", "image", (c, size, size), num_classes=10, levels=256))


def _train_and_sample(case: str, c: int, size: int, extra: dict | None = None):
    recipe_name, overrides, sample_kw = CASES[case]
    recipe = load_recipe(recipe_name, {**overrides, **(extra or {})})
    data = _dataset(c, size)
    if not recipe.data.labels:
        data = Dataset(data.x, None, DataInfo("images", "image", data.info.shape, levels=256))
    seed_everything(0, True)
    method = build_method(recipe, data)
    batch = Batch(data.x[:8], None if data.y is None else data.y[:8])
    method.data_init(batch)
    phases = method.phases()
    opts = [torch.optim.Adam(p.params, lr=1e-3) for p in phases]
    for step in range(2):
        for phase, opt in zip(phases, opts):
            opt.zero_grad(set_to_none=True)
            loss, _ = phase.loss(batch, step)
            assert torch.isfinite(loss).all(), f"{case}: non-finite {phase.name} loss at {size}x{size}"
            loss.mean().backward()
            opt.step()
    method.eval()
    with torch.no_grad():
        x = method.sample(3, generator=torch.Generator().manual_seed(0), **sample_kw)
    return x


@pytest.mark.parametrize("case", list(CASES))
def test_every_image_family_trains_and_samples_at_28px(case):
    x = _train_and_sample(case, 1, 28)
    assert tuple(x.shape) == (3, 1, 28, 28)
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("case", RGB_CASES)
def test_colour_28px(case):
    x = _train_and_sample(case, 3, 28)
    assert tuple(x.shape) == (3, 3, 28, 28) and torch.isfinite(x).all()


@pytest.mark.parametrize("case", list(ODD_CASES))
def test_odd_sizes_work_where_the_architecture_allows(case):
    x = _train_and_sample(case, 1, 27, ODD_CASES[case])
    assert tuple(x.shape) == (3, 1, 27, 27) and torch.isfinite(x).all()


def test_the_ladder_keeps_powers_of_two_at_4px_and_takes_28_exactly():
    assert ladder(8, 8) == Ladder(1, (4, 4), (8, 8))
    assert ladder(32, 32) == Ladder(3, (4, 4), (32, 32))
    assert ladder(28, 28) == Ladder(2, (7, 7), (28, 28))  # 7 -> 14 -> 28, no padding
    assert ladder(27, 27) == Ladder(2, (7, 7), (28, 28))  # one pixel of padding
    assert ladder(8, 32) == Ladder(1, (4, 16), (8, 32))
    assert ladder(5, 5) == Ladder(0, (5, 5), (5, 5))


def test_32px_dcgan_keeps_its_layout():
    """The 32 px nets build the same modules as before 28 px support: checkpoints still load."""
    recipe = load_recipe("dcgan-digits", {"model.width": 8, "model.z_dim": 8})
    method = build_method(recipe, _dataset(1, 32))
    shapes = {k: tuple(v.shape) for k, v in method.state_dict().items()}
    assert shapes["G.project.0.weight"] == (8 * 8 * 4 * 4, 8)  # 4x4 start, 8 * 2**3 channels
    assert shapes["G.body.9.weight"] == (1, 8, 3, 3)  # three up-sampling steps, then the output conv
    assert shapes["D.head.psi.weight"] == (1, 64 * 4 * 4)


def test_28px_npy_file_trains_with_the_dcgan_recipe(tmp_path):
    """The user's case: a (N, 1, 28, 28) array on disk and the default recipe, no resizing."""
    path = tmp_path / "x.npy"
    np.save(path, _images(1, 28, n=64).numpy())
    recipe = load_recipe("dcgan-digits", {"data.name": "npy", "data.path": str(path), "data.batch_size": 8,
                                          "model.width": 8})
    data = load_dataset(recipe.data)
    assert data.info.shape == (1, 28, 28)
    method = build_method(recipe, data)
    x = method.sample(2, generator=torch.Generator().manual_seed(0))
    assert tuple(x.shape) == (2, 1, 28, 28)


@pytest.mark.parametrize("recipe_name, overrides, key, fix", [
    ("glow-digits", {"model.levels": 3}, "model.levels=3", "lower model.levels to 2"),
    ("realnvp-moons", {"model.scales": 3}, "model.scales=3", "lower model.scales to 2"),
])
def test_flows_name_the_key_and_what_works_when_28_does_not_divide(recipe_name, overrides, key, fix):
    with pytest.raises(RecipeError) as e:
        build_method(load_recipe(recipe_name, overrides), _dataset(1, 28))
    assert key in str(e.value) and "28x28" in str(e.value) and fix in str(e.value)


def test_glow_refuses_odd_sizes_with_a_way_out():
    with pytest.raises(RecipeError, match=r"27x27.*data\.size.*model\.scales=0"):
        build_method(load_recipe("glow-digits"), _dataset(1, 27))
