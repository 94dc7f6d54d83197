"""The user's own nets (docs/custom.md): given from Python or named by import path in a recipe,
checked against their family's contract before training, recorded in the run, and rebuilt by
the command line in a new process. The user modules and recipes live in tests/custom_nets/;
docs/custom.md shows them verbatim and its Python blocks are run here."""

import importlib
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import stablegen as sg
from stablegen.api import build_method
from stablegen.base import PYTHON_NET, check_net
from stablegen.data import load_dataset
from stablegen.methods import FAMILIES, Family, gan
from stablegen.recipe import RecipeError, builtin_names, load_recipe

ROOT = Path(__file__).parents[2]
NETS_DIR = ROOT / "tests" / "custom_nets"
DOC = ROOT / "docs" / "custom.md"
FAST = {"train.steps": 4, "train.threads": 1, "train.progress": False, "train.sample_every": 0,
        "train.checkpoint_every": 0, "train.sample_n": 16, "eval.metrics": [], "data.n": 512, "data.batch_size": 32}


@pytest.fixture(autouse=True)
def _user_modules_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(NETS_DIR))


def _mod(name: str):
    return importlib.import_module(name)


# ---- nets given from Python ------------------------------------------------------------------
PYTHON_CASES = {  # family -> (built-in recipe, extra overrides, the user's nets)
    "gan": ("gan-ring8", {}, lambda: {"G": _mod("my_gan").Generator(2, (2,)), "D": _mod("my_gan").Critic((2,))}),
    "vae": ("vae-digits", {}, lambda: {"encoder": _mod("my_vae").Encoder((1, 8, 8), 32),
                                       "decoder": _mod("my_vae").Decoder(32, (1, 8, 8))}),
    "diffusion": ("ddpm-ring8", {"model.steps": 5}, lambda: {"denoiser": _mod("my_diffusion").Denoiser(2)}),
}


@pytest.mark.parametrize("family", PYTHON_CASES)
def test_nets_given_from_python_train_and_the_run_asks_for_them_again(family, tmp_path):
    recipe, extra, make = PYTHON_CASES[family]
    run = sg.train(recipe, {**FAST, **extra}, run_dir=tmp_path / "r", nets=make(), report=False)
    assert run.status == "finished"
    x = run.sample(5, seed=1)
    assert x.shape[0] == 5 and torch.isfinite(x).all()
    recorded = yaml.safe_load((tmp_path / "r" / "recipe.yaml").read_text())["model"]["nets"]
    assert recorded == {name: PYTHON_NET for name in make()}
    with pytest.raises(RecipeError, match=r"given as Python objects.*sg\.open_run\(run_dir, nets=.*import path"):
        sg.open_run(tmp_path / "r")
    again = sg.open_run(tmp_path / "r", nets=make())  # fresh nets: the weights come from the checkpoint
    assert torch.equal(again.sample(5, seed=1), x)


def test_a_python_net_run_resumes_with_its_nets(tmp_path):
    make = PYTHON_CASES["gan"][2]
    sg.train("gan-ring8", FAST, run_dir=tmp_path / "r", nets=make(), report=False)
    run = sg.train(run_dir=tmp_path / "r", resume=True, overrides={"train.steps": 6}, nets=make(), report=False)
    assert run.status == "finished" and (tmp_path / "r" / "checkpoints" / "step-000006.safetensors").is_file()


# ---- nets named by import path; the command line in a new process ------------------------------
IMPORT_CASES = {  # family -> (recipe file, extra overrides, eval metric)
    "gan": ("gan-own.yaml", {}, "modes"),
    "vae": ("vae-own.yaml", {}, "nll"),
    "diffusion": ("diffusion-own.yaml", {"model.timesteps": 100, "model.steps": 5,
                                         "model.net_args.denoiser.timesteps": 100}, "modes"),
    "flow": ("flow-own.yaml", {}, "nll"),
}

CLI = r"""
import json, sys
from stablegen.cli import main
out = {}
for family, (run, metric) in json.loads(sys.argv[1]).items():
    out[family] = [main(["sample", run, "-n", "8", "--seed", "1", "-o", f"{run}/x.npy"]),
                   main(["eval", run, "--metrics", metric, "--n", "64"]),
                   main(["export", run, "-o", f"{run}-export"]),
                   main(["report", run]),
                   main(["train", "--run-dir", run, "--resume", "train.steps=6"])]
print("CODES", json.dumps(out))
"""


@pytest.fixture(scope="module")
def import_path_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    sys.path.insert(0, str(NETS_DIR))
    try:
        runs = {}
        for family, (recipe, extra, _) in IMPORT_CASES.items():
            run = sg.train(NETS_DIR / recipe, {**FAST, **extra}, run_dir=root / family, report=False)
            runs[family] = run.run_dir, run.sample(8, seed=1)
    finally:
        sys.path.remove(str(NETS_DIR))
    return runs


def test_import_path_runs_train_and_record_their_nets(import_path_runs):
    for family, (run_dir, x) in import_path_runs.items():
        model = yaml.safe_load((run_dir / "recipe.yaml").read_text())["model"]
        assert all(":" in path for path in model["nets"].values()) and model["net_args"], family
        assert torch.isfinite(x).all()


def test_the_command_line_uses_import_path_runs_in_a_new_process(import_path_runs, tmp_path):
    runs = {f: (str(d), IMPORT_CASES[f][2]) for f, (d, _) in import_path_runs.items()}
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(NETS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-c", CLI, json.dumps(runs)], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    codes = json.loads(out.stdout.split("CODES ", 1)[1])
    assert codes == {f: [0] * 5 for f in runs}, out.stderr[-3000:]
    for family, (run_dir, x) in import_path_runs.items():
        assert np.array_equal(np.load(run_dir / "x.npy"), x.numpy()), family  # the same nets, the same weights
        assert json.loads((run_dir / "eval.json").read_text())["metrics"], family
        config = json.loads((run_dir.parent / f"{family}-export" / "config.json").read_text())
        assert config["net"]["class"].startswith("my_") and config["model"]["nets"], family
        assert (run_dir / "report.html").is_file()
        assert (run_dir / "checkpoints" / "step-000006.safetensors").is_file(), family


def test_an_import_path_that_does_not_import_is_named(tmp_path):
    with pytest.raises(RecipeError, match=r"model\.nets\.G = 'no_such_module:make_g': cannot import "
                                          r"'no_such_module'.*PYTHONPATH"):
        sg.train("gan-ring8", FAST, run_dir=tmp_path / "r", nets={"G": "no_such_module:make_g"})
    with pytest.raises(RecipeError, match=r"'my_gan' has no attribute 'make_g'"):
        sg.train("gan-ring8", FAST, run_dir=tmp_path / "r", nets={"G": "my_gan:make_g"})
    with pytest.raises(RecipeError, match=r"make_generator\(info, \*\*\{\}\) raised TypeError.*z_dim"):
        sg.train("gan-ring8", FAST, run_dir=tmp_path / "r", nets={"G": "my_gan:make_generator"})


# ---- the contract check -----------------------------------------------------------------------
class NoLabels(nn.Module):
    """A generator for 8x8 digits whose forward takes no y."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(32, 64)

    def forward(self, z):
        return self.net(z).tanh().view(-1, 1, 8, 8)


def _bad_flow():
    flow = _mod("my_flow").Flow(2)
    flow.inverse = lambda z: 2 * z
    return flow


CONTRACT_CASES = {  # case -> (recipe, nets, the error)
    "G of the wrong output shape": (
        "gan-ring8", lambda: {"G": _mod("my_gan").Generator(2, (3,))},
        r"model\.nets\.G \(Generator\): G\(z, y=None\).*must return a tensor of shape \(2, 2\); "
        r"it returned a tensor of shape \(2, 3\)"),
    "conditional recipe, G without y": (
        "cgan-digits", lambda: {"G": NoLabels()},
        r"model\.nets\.G \(NoLabels\): the method calls G\(z, y \(B,\)\).*its forward\(z\) cannot take these "
        r"arguments \(the model is class-conditional"),
    "unconditional recipe, G without y=None": (
        "dcgan-digits", lambda: {"G": NoLabels()}, r"forward\(z\) cannot take these arguments \(y is None"),
    "decoder with one parameter per pixel, logistic needs two": (
        "vae-digits", lambda: {"decoder": _mod("my_vae").Decoder(32, (1, 8, 8), params=1)},
        r"model\.nets\.decoder \(Decoder\): decoder\(z\).*must return a tensor of shape \(2, 2, 1, 8, 8\); "
        r"it returned a tensor of shape \(2, 1, 1, 8, 8\)"),
    "denoiser for other data": (
        "ddpm-ring8", lambda: {"denoiser": _mod("my_diffusion").Denoiser(3)},
        r"model\.nets\.denoiser \(Denoiser\): the method calls denoiser\(x_t, t, y=None\).*raised RuntimeError"),
    "flow whose inverse is not": (
        "realnvp-moons", lambda: {"flow": _bad_flow()}, r"model\.nets\.flow \(Flow\).*not inverses"),
    "not a module": ("gan-ring8", lambda: {"G": lambda z, y=None: z}, r"nets\['G'\] must be a torch\.nn\.Module"),
    "a name the family does not have": (
        "gan-ring8", lambda: {"Gen": NoLabels()}, r"'Gen' is not a net of family 'gan'; its nets: G, D"),
}


@pytest.mark.parametrize("case", CONTRACT_CASES)
def test_the_contract_check_names_the_net_and_the_mismatch(case, tmp_path):
    recipe, nets, error = CONTRACT_CASES[case]
    with pytest.raises(RecipeError, match=error):
        sg.train(recipe, FAST, run_dir=tmp_path / "r", nets=nets())
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_the_contracts_describe_the_built_in_nets():
    """Each family calls its built-in nets as its contracts say: they pass the check."""
    checked = set()
    for name in builtin_names():
        recipe = load_recipe(name, {"data.n": 256})
        family = FAMILIES[recipe.model.family]
        if family.contracts is None or recipe.model.family in checked:
            continue
        checked.add(recipe.model.family)
        data = load_dataset(recipe.data)
        method = build_method(recipe, data)
        for net_name, contract in family.contracts(recipe.model, data.info).items():
            net = getattr(method, net_name, None)
            check_net(net_name, net if isinstance(net, nn.Module) else method.net, contract)  # diffusion: .net
    assert {"gan", "vae", "diffusion", "realnvp", "glow", "pixelcnn", "ebm"} <= checked


def test_images_outside_the_data_range_only_warn():
    class Loud(NoLabels):
        def forward(self, z, y=None):
            return 5 * self.net(z).view(-1, 1, 8, 8)

    recipe = load_recipe("dcgan-digits", {"model.nets.G": PYTHON_NET})
    with pytest.warns(UserWarning, match=r"model\.nets\.G \(Loud\) returned values in .*end the net with tanh"):
        method = build_method(recipe, load_dataset(recipe.data), {"G": Loud()})
    assert isinstance(method.G, Loud)


def test_the_check_leaves_the_random_state_and_the_training_mode_alone():
    recipe = load_recipe("gan-ring8", {"model.nets.G": PYTHON_NET})
    data = load_dataset(recipe.data)
    g = _mod("my_gan").Generator(2, (2,))
    state = torch.get_rng_state()
    build_method(recipe, data, {"G": g})
    built_in = torch.get_rng_state()  # the built-in D drew its weights
    torch.set_rng_state(state)
    gan.build(recipe.model, data.info, {"G": g})
    assert torch.equal(torch.get_rng_state(), built_in) and g.training


# ---- families registered by the user ------------------------------------------------------------
def test_a_registered_family_validates_and_trains(monkeypatch, tmp_path):
    class MyGanConfig(gan.GanConfig):
        family: Literal["mygan"] = "mygan"

    monkeypatch.setitem(FAMILIES, "mygan", Family(MyGanConfig, gan.build, gan.net_contracts))
    assert type(load_recipe("gan-ring8", {"model.family": "mygan"}).model) is MyGanConfig
    with pytest.raises(RecipeError, match=r"model\.family: got 'nope'; allowed: .*mygan"):
        load_recipe("gan-ring8", {"model.family": "nope"})
    run = sg.train("gan-ring8", {**FAST, "model.family": "mygan"}, run_dir=tmp_path / "r",
                   nets={"G": _mod("my_gan").Generator(2, (2,))}, report=False)
    assert run.recipe.model.family == "mygan" and run.sample(3).shape == (3, 2)
    assert sg.open_run(tmp_path / "r", nets={"G": _mod("my_gan").Generator(2, (2,))}).recipe.model.family == "mygan"


# ---- docs/custom.md --------------------------------------------------------------------------------
def _doc_blocks() -> list[tuple[str, str, str]]:
    """(comment before the block or "", language, code) of every fenced block of docs/custom.md."""
    return re.findall(r"(?:<!-- (.*?) -->\n)?```(\w+)\n(.*?)```", DOC.read_text(), re.S)


def test_the_docs_show_the_tested_files_verbatim():
    shown = {}
    for comment, _, code in _doc_blocks():
        if comment.startswith("file: "):
            shown[comment[6:]] = code
    files = {str(p.relative_to(ROOT)): p.read_text() for p in NETS_DIR.iterdir() if p.suffix in (".py", ".yaml")}
    assert shown == files


def test_the_docs_table_names_the_nets_of_every_family():
    named: dict[str, set[str]] = {}
    for families, net in re.findall(r"^\| ([a-z_, ]+) \| (`\w+`|—) \|", DOC.read_text(), re.M):
        for family in families.split(", "):
            named.setdefault(family, set()).update({net.strip("`")} if net != "—" else set())
    assert named == {name: set(getattr(f.config, "NETS", ())) for name, f in FAMILIES.items()}


def test_the_python_blocks_of_the_docs_run(monkeypatch, tmp_path):
    blocks = [code for comment, lang, code in _doc_blocks() if lang == "python" and not comment]
    assert len(blocks) >= 5
    train, runs = sg.train, itertools.count()

    def short(recipe=None, overrides=None, **kw):  # the docs' calls, a few steps long
        kw.setdefault("run_dir", tmp_path / f"run{next(runs)}")
        return train(recipe, {**(overrides or {}), **FAST}, report=False, **kw)

    monkeypatch.setattr(sg, "train", short)
    families = dict(FAMILIES)
    try:
        for code in blocks:
            exec(compile(code, str(DOC), "exec"), {"__name__": "docs_custom"})
    finally:
        FAMILIES.clear()
        FAMILIES.update(families)
