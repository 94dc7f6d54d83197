"""Property-based fuzzing of what a user types and gives (hypothesis, a fixed seed, bounded time):
recipe overrides, data files and command-line arguments either work or fail with the library's
own error (exit code 2 and one message), never with an unexpected exception."""

from __future__ import annotations

import gzip
import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import stablegen as sg
from stablegen.cli import main
from stablegen.data import load_dataset
from stablegen.data.files import DataError
from stablegen.recipe import RecipeError, load_recipe

FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=150,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

KEYS = ["train.steps", "train.ema", "train.device", "train.precision", "data.batch_size", "data.name", "data.size",
        "data.split", "model.loss", "model.family", "model.z_dim", "optim.g.lr", "optim.g.betas", "optim.d.clip",
        "guard.window", "eval.metrics", "eval.n", "model", "train", "nope.key", "model.los", "optim.x.lr", "", "."]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.integers(-3, 3), max_size=3),
                   st.sampled_from(["ns", "hinge", "cuda", "mps", "bf16", "digits", "val", "1e-3", "[0.5, 2]", "{a: 1}"]))


@FUZZ
@given(recipe=st.sampled_from(["gan-ring8", "dcgan-digits", "vae-digits", "ddpm-digits", "glow-digits"]),
       overrides=st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), VALUES, max_size=4))
def test_recipe_overrides_validate_or_name_the_key(recipe, overrides):
    try:
        load_recipe(recipe, overrides)
    except RecipeError as e:
        assert str(e).strip()


@FUZZ
@given(text=st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20), max_size=4))
def test_command_line_overrides_parse_or_name_the_override(text):
    try:
        load_recipe("gan-ring8", text)
    except RecipeError as e:
        assert str(e).strip()


def _idx(data: bytes, dims: list[int], code: int) -> bytes:
    return struct.pack(">HBB", 0, code, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + data


FILES = st.one_of(
    st.tuples(st.just("npy"), st.binary(max_size=300)),  # random bytes
    st.tuples(st.just("npz"), st.binary(max_size=300)),
    st.tuples(st.just("idx"), st.binary(max_size=300)),
    st.tuples(st.just("png"), st.binary(max_size=300)),
    st.tuples(st.just("csv"), st.text(max_size=300)),
    st.tuples(st.just("idx-header"), st.tuples(st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=4),
                                                 st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x01]),
                                                 st.binary(max_size=200))),
    st.tuples(st.just("array"), st.tuples(
        st.lists(st.integers(0, 6), min_size=0, max_size=5),
        st.sampled_from(["uint8", "int64", "float32", "float64", "bool", "complex64"]),
        st.sampled_from(["zeros", "nan", "inf", "big", "neg", "noise"]))),
)


def _write(tmp, kind, payload):
    if kind == "npy":
        path = tmp / "x.npy"
        path.write_bytes(payload)
        return "npy", path
    if kind == "npz":
        path = tmp / "x.npz"
        path.write_bytes(payload)
        return "npy", path
    if kind == "idx":
        path = tmp / "train-images-idx3-ubyte"
        path.write_bytes(payload)
        return "idx", path
    if kind == "png":
        (tmp / "imgs").mkdir(exist_ok=True)
        (tmp / "imgs" / "a.png").write_bytes(payload)
        return "folder", tmp / "imgs"
    if kind == "csv":
        path = tmp / "x.csv"
        path.write_text(payload)
        return "csv", path
    if kind == "idx-header":
        dims, code, data = payload
        path = tmp / "train-images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(_idx(data, dims, code)))
        return "idx", path
    shape, dtype, fill = payload
    x = np.zeros(shape, dtype=dtype)
    if x.size:
        if fill == "nan" and x.dtype.kind in "fc":
            x.flat[0] = np.nan
        elif fill == "inf" and x.dtype.kind in "fc":
            x.flat[-1] = np.inf
        elif fill == "big":
            x[...] = 255 if x.dtype == np.uint8 else 1 if x.dtype.kind == "b" else 10**3
        elif fill == "neg" and x.dtype.kind in "if":
            x = x - 1
        elif fill == "noise":
            x = (np.random.default_rng(0).standard_normal(shape) * 3).astype(dtype)
    path = tmp / "a.npy"
    buf = io.BytesIO()
    np.save(buf, x)
    path.write_bytes(buf.getvalue())
    return "npy", path


@FUZZ
@given(file=FILES)
def test_data_files_load_or_name_the_file(tmp_path_factory, file):
    tmp = tmp_path_factory.mktemp("fuzz")
    name, path = _write(tmp, *file)
    cfg = load_recipe("gan-ring8", {"data.name": name, "data.path": str(path), "data.batch_size": 1}).data
    try:
        data = load_dataset(cfg)
    except DataError as e:
        assert str(e).strip()
    else:
        assert len(data) >= 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    sg.train("gan-ring8", {"train.steps": 2, "train.progress": False, "train.sample_every": 0, "train.threads": 1,
                           "data.n": 256, "eval.metrics": []}, run_dir=root / "r", report=False)
    return root / "r"


ARG = st.one_of(st.sampled_from(["-n", "--n", "-o", "--seed", "--steps", "--sampler", "--metrics", "--features",
                                 "--truncate", "--no-ema", "--kind", "--checkpoint", "0", "-1", "3", "1e9", "x",
                                 "modes", "fid,nll", "ddim", "pixels", "nll", "", "--", "-", "@", "out.npy", "o.png",
                                 "o.txt"]), st.text(max_size=6))


@settings(derandomize=True, deadline=None, database=None, max_examples=60,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(command=st.sampled_from(["sample", "eval", "report", "score", "export", "compare"]),
       args=st.lists(ARG, max_size=5))
def test_command_line_arguments_work_or_exit_2(tiny_run, tmp_path_factory, capsys, monkeypatch, command, args):
    out = tmp_path_factory.mktemp("out")
    monkeypatch.chdir(out)  # what a random -o names lands here
    argv = [command, str(tiny_run)] + [str(out / a) if a in ("out.npy", "o.png", "o.txt") else a for a in args]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: a usage line and the error
        code = e.code
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err
