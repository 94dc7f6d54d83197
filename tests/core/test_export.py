"""`stablegen export`: files that reproduce `stablegen sample` bit for bit without stablegen."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import stablegen as sg
from stablegen.api import build_method
from stablegen.base import Batch
from stablegen.cli import main
from stablegen.data import load_dataset
from stablegen.export import plain_copy, trace
from stablegen.recipe import load_recipe

FAST = ["train.steps=6", "train.progress=false", "train.sample_every=0", "train.threads=1", "eval.metrics=[]"]
RUNS = {  # recipe -> tiny overrides
    "dcgan-digits": ["model.width=8", "model.z_dim=8", "data.batch_size=16"],  # BatchNorm in G, EMA
    "gan-ring8": ["model.width=16", "data.n=512", "data.batch_size=64", "train.ema=0.9"],  # truncation on
    "vae-digits": ["model.width=16", "model.z_dim=4", "data.batch_size=32"],
    "realnvp-moons": ["model.width=8", "model.couplings=2", "data.n=512", "data.batch_size=64"],
}
N, SEED = 300, 3  # N within sample()'s batch of 1000 latents

# Runs in a fresh interpreter: loads each export, draws its inputs as config.json says, saves the samples.
REPRODUCE = r"""
import json, sys
import numpy as np, torch
torch.set_num_threads(1)
n, seed = int(sys.argv[1]), int(sys.argv[2])
for out in sys.argv[3:]:
    config = json.load(open(f"{out}/config.json"))
    program = torch.export.load(f"{out}/program.pt2").module()
    g = torch.Generator().manual_seed(seed)
    inputs = [eval(i["draw"], {"torch": torch, "n": n, "g": g}) for i in config["program"]["inputs"].values()]
    with torch.no_grad():
        np.save(f"{out}/x.npy", program(*inputs).numpy())
assert "stablegen" not in sys.modules, "stablegen was imported"
"""


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Each recipe trained for a few steps, exported, sampled by `stablegen sample` and by the
    exported program in a fresh interpreter: {recipe: (run dir, export dir)}."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for recipe, overrides in RUNS.items():
        run, exported = root / recipe, root / f"{recipe}-export"
        sg.train(recipe, FAST + overrides, run_dir=run, report=False)
        assert main(["export", str(run), "-o", str(exported)]) == 0
        flags = ["--no-truncate"] if recipe.startswith(("gan", "dcgan")) else []
        assert main(["sample", str(run), "-n", str(N), "--seed", str(SEED), "-o", str(exported / "ref.npy"),
                     *flags]) == 0
        out[recipe] = run, exported
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", REPRODUCE, str(N), str(SEED), *(str(e) for _, e in out.values())],
                          capture_output=True, text=True, timeout=120, env=env, cwd=root)
    assert done.returncode == 0, done.stderr
    return out


def _draw(config: dict, n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [eval(i["draw"], {"torch": torch, "n": n, "g": g}) for i in config["program"]["inputs"].values()]


@pytest.mark.parametrize("recipe", list(RUNS))
def test_program_reproduces_stablegen_sample(exports, recipe):
    _, exported = exports[recipe]
    ref, x = np.load(exported / "ref.npy"), np.load(exported / "x.npy")
    assert x.shape == ref.shape and x.dtype == ref.dtype
    assert np.array_equal(x, ref)


@pytest.mark.parametrize("recipe", list(RUNS))
def test_weights_rebuild_the_net(exports, recipe):
    """model.safetensors holds the net's own state-dict names; loaded into a freshly built net
    they give the program's output."""
    run, exported = exports[recipe]
    config = json.loads((exported / "config.json").read_text())
    assert config["family"] == load_recipe(run / "recipe.yaml").model.family
    assert config["source"]["step"] == 6 and config["source"]["checkpoint"] == "step-000006.safetensors"
    assert config["source"]["ema"] == recipe.startswith(("gan", "dcgan"))  # the GAN runs keep an EMA
    recipe_obj = load_recipe(run / "recipe.yaml")
    fresh = build_method(recipe_obj, load_dataset(recipe_obj.data)).eval().requires_grad_(False)
    net = getattr(fresh, config["net"]["attribute"])
    weights = load_file(exported / "model.safetensors")
    assert sorted(weights) == sorted(net.state_dict())  # safetensors stores them sorted
    net.load_state_dict(weights)
    spec = fresh.export_net()
    inputs = _draw(config, N, SEED)
    with torch.no_grad():
        assert np.array_equal(spec.program(*inputs).numpy(), np.load(exported / "x.npy"))


def test_config_states_inputs_and_data(exports):
    gan = json.loads((exports["gan-ring8"][1] / "config.json").read_text())
    assert gan["program"]["inputs"] == {"z": {"shape": ["n", 2], "dtype": "float32",
                                              "meaning": "latent codes, normal prior",
                                              "draw": "torch.randn(n, 2, generator=g)"}}
    assert "Jacobian truncation" in gan["program"]["notes"][0]
    assert gan["model"]["truncation"] == "jacobian" and gan["data"]["shape"] == [2]
    assert gan["stablegen_version"] == sg.__version__
    vae = json.loads((exports["vae-digits"][1] / "config.json").read_text())
    assert vae["data"] == {"name": "digits", "kind": "image", "shape": [1, 8, 8], "range": [-1.0, 1.0], "levels": 17}
    assert vae["vae"]["likelihood"] == "logistic" and vae["net"]["attribute"] == "decoder"


def test_no_ema_and_checkpoint_options(exports, tmp_path):
    run, exported = exports["dcgan-digits"]
    checkpoint = run / "checkpoints" / "step-000006.safetensors"
    assert main(["export", str(run), "-o", str(tmp_path), "--no-ema", "--checkpoint", str(checkpoint)]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["source"]["ema"] is False
    live, averaged = load_file(tmp_path / "model.safetensors"), load_file(exported / "model.safetensors")
    assert live.keys() == averaged.keys() and not all(torch.equal(live[k], averaged[k]) for k in live)


def test_family_without_export_exits_2(tmp_path, capsys):
    run = tmp_path / "rbm"
    sg.train("rbm-digits", FAST + ["model.hidden=8", "model.chains=16", "data.batch_size=16"], run_dir=run,
             report=False)
    assert main(["export", str(run), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'rbm'" in err and "gan (generator)" in err
    assert not (tmp_path / "out").exists()


CONTRACT = {  # family -> recipe and tiny overrides, built untrained
    "cgan": ("cgan-digits", ["model.width=8", "model.z_dim=4"]),
    "gan-wn-std": ("gan-ring8", ["model.width=8", "model.weight_norm=0.5", "model.standardize=true", "data.n=256",
                                 "model.truncation=none"]),
    "vae-conv": ("vae-digits", ["model.net=conv", "model.width=8", "model.z_dim=4"]),
    "glow": ("glow-digits", ["model.width=8", "model.steps=2"]),
    "ddpm-cfg": ("cfg-digits", ["model.unet.channels=8", "model.unet.channel_mult=[1]", "model.unet.num_res_blocks=1",
                                "model.unet.attention_resolutions=[]"]),
    "pixelcnn": ("pixelcnn-digits", ["model.channels=8", "model.blocks=2"]),
    "ebm-sn": ("ebm-ring8", ["model.width=8", "model.spectral_norm=true", "data.n=256", "model.buffer_size=256"]),
}


@pytest.mark.parametrize("case", list(CONTRACT))
def test_every_family_traces_to_its_eager_program(case):
    """The traced program equals the program of the original method (spectral / weight norm
    still parametrized) bit for bit, at a batch size other than the example's."""
    recipe, overrides = CONTRACT[case]
    recipe_obj = load_recipe(recipe, overrides)
    data = load_dataset(recipe_obj.data)
    torch.manual_seed(0)
    method = build_method(recipe_obj, data)
    method.data_init(Batch(data.x[:64], None if data.y is None else data.y[:64]))
    method.eval()
    spec = plain_copy(method).export_net()
    assert not any("parametrizations" in k for k in spec.net.state_dict())  # folded, on the copy only
    g = torch.Generator().manual_seed(0)
    inputs = [torch.arange(5) % 2 if i.dtype == torch.int64  # labels
              else torch.randn([5 if d == "n" else d for d in i.shape], generator=g) for i in spec.inputs.values()]
    with torch.no_grad():
        expected = method.export_net().program(*inputs)
        got = trace(spec).module()(*inputs)
    assert torch.equal(got, expected)
