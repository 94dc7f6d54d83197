"""report.html: self-contained, every picture decodes, every section present for any run."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from stablegen.report import write_report
from stablegen.report.html import pick_strip
from stablegen.report.runs import SampleImage


def test_full_report(make_run, check_self_contained):
    run = make_run(nonfinite=True)
    path = write_report(run)
    assert path == run / "report.html"
    html = path.read_text(encoding="utf-8")
    sizes = check_self_contained(html)
    # Curve cards: loss, gradient norm, learning rate, health/d_accuracy, eval/modes, eval/hq; one
    # timeline; the hero picture; 9 step grids (8 evenly spaced + the last) and final.png.
    assert len(sizes) == 6 + 1 + 1 + 9 + 1
    for text in ("gan-ring8-run", "finished", "2,000", "1 m 24 s", "grad_explosion", "loss_spike",
                 "rollback", "grad_norm=85.1", "reverse_kl", "0.05", "features: raw", "schedule: cosine",
                 "non-finite value", "logged before a rollback", "step 1,000", "final"):
        assert text in html, text
    assert html.count("<tr><td class=\"num\">") == 3  # one row per event


def test_bare_non_gan_run(make_run, check_self_contained):
    run = make_run("vae-bare", family="vae", events=False, evaluate=False, samples=False, summary=False)
    html = write_report(run).read_text(encoding="utf-8")
    sizes = check_self_contained(html)
    assert len(sizes) == 4  # loss, gradient norm, learning rate, health/active_units
    for text in ("No sample grids", "No stability events", "No evaluation", "unfinished", "vae"):
        assert text in html, text


def test_empty_run_directory(tmp_path, check_self_contained):
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert check_self_contained(html) == []
    for text in ("No metrics logged", "No sample grids", "No stability events", "No evaluation", "No recipe.yaml"):
        assert text in html, text


def test_all_non_finite_metrics_and_a_broken_sample(tmp_path, check_self_contained):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 0, "time": 0, "loss/main": NaN, "grad_norm/main": Infinity}\n'
        '{"step": 10, "time": 1, "loss/main": -Infinity, "grad_norm/main": NaN}\n'
    )
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "step-000010.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="not a readable image"):
        html = write_report(tmp_path).read_text(encoding="utf-8")
    assert len(check_self_contained(html)) == 2  # the two curve cards, no broken picture
    assert "could not be read" in html


def test_text_from_the_run_is_escaped(make_run, check_self_contained):
    run = make_run(samples=False)
    with open(run / "events.jsonl", "a") as f:
        f.write('{"step": 5, "time": 0.1, "detector": "<b>x</b>", "action": "warn", "message": "<script>alert(1)</script>"}\n')
    html = write_report(run).read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    check_self_contained(html)


def test_long_run_is_downsampled_and_large_samples_are_scaled(make_run, tmp_path, check_self_contained):
    run = make_run("long", steps=20_000, log_every=2, evaluate=False)
    Image.new("RGB", (3000, 1500), "white").save(run / "samples" / "final.png")
    html = write_report(run, tmp_path / "elsewhere.html").read_text(encoding="utf-8")
    sizes = check_self_contained(html)
    assert (1024, 512) in sizes  # scaled to MAX_IMAGE_SIDE
    assert len(html) < 3_000_000  # 10,000 log lines do not make a heavy page


def test_pick_strip_spreads_grids_and_keeps_the_last():
    samples = [SampleImage(s, Path(f"step-{s}.png")) for s in range(0, 10_001, 100)]
    picked = pick_strip(samples + [SampleImage(None, Path("final.png"))])
    steps = [s.step for s in picked]
    assert steps[0] == 0 and steps[-2] == 10_000 and steps[-1] is None
    assert len(steps) == 8 + 1 + 1 and steps[:-1] == sorted(steps[:-1])
    assert [s.step for s in pick_strip(samples[:5])] == [0, 100, 200, 300, 400]


def test_eval_table_names_the_split(make_run):
    import json

    run = make_run()
    record = json.loads((run / "eval.json").read_text())
    from stablegen.report import load_run

    assert load_run(run).eval_against == ""  # an eval.json from before eval.split does not say
    (run / "eval.json").write_text(json.dumps({**record, "split": "test", "held_out": True}))
    assert "against the test split, held out" in write_report(run).read_text(encoding="utf-8")
    (run / "eval.json").write_text(json.dumps({**record, "split": "all", "held_out": False}))
    assert "against the training data, not held out (trained on)" in write_report(run).read_text(encoding="utf-8")


def test_the_header_names_the_data_actually_used(make_run):
    """A built-in recipe trained on other data: its description (which names its own data) gives
    way to the data the run used."""
    import yaml

    from stablegen.report import load_run
    from stablegen.report.html import render_report

    run = make_run("own")
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    description = recipe["description"]
    assert description in render_report(load_run(run)) and "data: ring8" in render_report(load_run(run))
    recipe["data"].update(name="npy", path="/home/me/faces.npy", split="train")
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    header = render_report(load_run(run)).split("</header>")[0]
    assert description not in header and "data: npy faces.npy, train split" in header
