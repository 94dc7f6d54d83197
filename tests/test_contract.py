"""One contract for every family, run through its built-in recipe at a tiny size (zuko's
tests/test_flows.py is the model): shapes, every parameter gets a gradient, finite samples of
the data's shape, save/load round trip through safetensors, and log_prob where declared."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from stablegen.api import build_method, seed_everything
from stablegen.base import has_capability
from stablegen.data import InfiniteLoader, load_dataset
from stablegen.methods import FAMILIES
from stablegen.recipe import builtin_names, load_recipe

SMALL = {"data.n": 256, "data.batch_size": 8}


def _family_recipes():
    seen, out = set(), []
    for name in builtin_names():
        fam = load_recipe(name).model.family
        if fam not in seen:
            seen.add(fam)
            out.append(name)
    return out


RECIPES = _family_recipes()


def test_every_family_has_a_builtin_recipe():
    assert {load_recipe(n).model.family for n in RECIPES} == set(FAMILIES)


@pytest.fixture(params=RECIPES)
def built(request):
    recipe = load_recipe(request.param, SMALL)
    seed_everything(0, True)
    data = load_dataset(recipe.data)
    method = build_method(recipe, data)
    loader = InfiniteLoader(data, 8, seed=0)
    method.data_init(loader.next())
    return request.param, method, data, loader


def _sample(method, n, seed):
    kw = {"Diffusion": {"steps": 4}, "FlowMatching": {"sampler": "euler", "steps": 4}}.get(type(method).__name__, {})
    with torch.no_grad():
        return method.sample(n, generator=torch.Generator().manual_seed(seed), **kw)


def test_phases_give_finite_losses_and_gradients_reach_every_parameter(built):
    name, method, data, loader = built
    touched = set()
    for phase in method.phases():
        assert phase.params, f"{name}: phase {phase.name} has no parameters"
        batch = loader.next()
        loss, logs = phase.loss(batch, 0)
        assert loss.dim() <= 1 and (loss.dim() == 0 or loss.shape[0] >= 1)
        assert torch.isfinite(loss).all(), f"{name}: non-finite loss in phase {phase.name}"
        method.zero_grad(set_to_none=True)
        loss.mean().backward()
        touched |= {id(p) for p in phase.params if p.grad is not None and torch.isfinite(p.grad).all()}
    missing = [n for n, p in method.named_parameters() if p.requires_grad and id(p) not in touched]
    assert not missing, f"{name}: no gradient for {missing[:5]}"


def test_samples_have_the_data_shape_and_are_finite(built):
    name, method, data, _ = built
    x = _sample(method, 3, 0)
    assert tuple(x.shape) == (3, *data.info.shape), name
    assert torch.isfinite(x.float()).all(), name


def test_save_load_round_trip(built, tmp_path):
    name, method, data, _ = built
    state = {k: v.detach().contiguous().clone() for k, v in method.state_dict().items()}
    save_file(state, str(tmp_path / "m.safetensors"))
    recipe = load_recipe(name, SMALL)
    seed_everything(123, True)  # a differently initialised copy
    other = build_method(recipe, data)
    other.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    method.eval()
    other.eval()
    assert torch.equal(_sample(method, 2, 5), _sample(other, 2, 5)), name


def test_log_prob_where_declared(built):
    name, method, data, loader = built
    if not has_capability(method, "log_prob"):
        pytest.skip(f"{name} declares no log_prob")
    method.eval()
    x = loader.next().x[:4]
    with torch.no_grad():
        lp = method.log_prob(x)
    assert lp.shape == (4,) and torch.isfinite(lp).all(), name
