import json
import subprocess
import sys

import numpy as np

from stablegen.cli import main

FAST = ["train.steps=20", "train.progress=false", "train.sample_every=0", "train.threads=1", "data.n=2048"]


def test_recipes_lists_builtins(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "gan-ring8" in out and "(default)" in out


def test_train_sample_eval(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "gan-ring8", "--run-dir", str(run), *FAST]) == 0
    out = capsys.readouterr().out
    assert "finished after 20 steps" in out
    assert "final eval against the test split" in out and "spread" in out  # the end-of-run eval, printed
    assert main(["sample", str(run), "-n", "100", "-o", str(tmp_path / "x.npy"), "--seed", "1"]) == 0
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (100, 2) and x.dtype == np.float32
    # gan-ring8 samples with Jacobian truncation; --no-truncate gives the raw generator's draws
    assert main(["sample", str(run), "-n", "100", "-o", str(tmp_path / "raw.npy"), "--seed", "1", "--no-truncate"]) == 0
    from stablegen.api import open_run

    raw = open_run(run).sample(100, seed=1, truncate=False).numpy()
    assert np.array_equal(np.load(tmp_path / "raw.npy"), raw) and not np.array_equal(x, raw)
    assert main(["sample", str(run), "-n", "16", "-o", str(tmp_path / "g.png"), "--no-ema"]) == 0
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["eval", str(run), "--metrics", "modes", "--n", "500"]) == 0
    record = json.loads((run / "eval.json").read_text())
    assert set(record["metrics"]) == {"modes", "hq", "spread", "reverse_kl"} and record["n"] == 500


def test_resume_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "r"
    main(["train", "gan-ring8", "--run-dir", str(run), *FAST])
    assert main(["train", "--run-dir", str(run), "--resume", "train.steps=30", "train.progress=false"]) == 0
    assert "finished after 30 steps" in capsys.readouterr().out


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main(["train", "gan-ring8", "--run-dir", str(tmp_path / "r"), "model.los=ns"]) == 2
    assert "did you mean 'model.loss'" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "gan-ring8", "--run-dir", str(tmp_path / "r2"), "data.name=folder", "data.path=/nope"]) == 2
    assert "/nope does not exist" in capsys.readouterr().err


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "stablegen", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "train" in out.stdout
