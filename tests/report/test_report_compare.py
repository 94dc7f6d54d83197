"""compare.html: runs side by side, one metric table, recipe differences, overlaid curves."""

from __future__ import annotations

import json

import pytest
import yaml

from stablegen.report import load_run, write_compare
from stablegen.report.compare import metric_direction, run_labels


def _edit(run, recipe_change, metrics_change):
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe_change(recipe)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    ev = json.loads((run / "eval.json").read_text())
    ev["metrics"].update(metrics_change)
    (run / "eval.json").write_text(json.dumps(ev))


def test_compare_two_gans_and_a_bare_vae(make_run, tmp_path, check_self_contained):
    a = make_run("a")
    b = make_run("b", seed=1, events=False)
    _edit(b, lambda r: r["optim"]["g"].update(lr=3e-4), {"modes": 7.0, "reverse_kl": 0.2})
    c = make_run("c", family="vae", events=False, evaluate=False, samples=False, summary=False)
    out = write_compare([a, b, c], tmp_path / "out" / "cmp.html")
    assert out == tmp_path / "out" / "cmp.html"
    html = out.read_text(encoding="utf-8")
    sizes = check_self_contained(html)
    keys = set(load_run(a).keys()) | set(load_run(c).keys())  # b logs the same keys as a
    assert len(sizes) == len(keys) + 2  # one card per key, the last samples of a and b
    # One metric table: modes (higher is better) is best for a, reverse_kl (lower) too; hq is a tie.
    assert '<td class="num best">8</td><td class="num">7</td><td class="num">—</td>' in html
    assert '<td class="num best">0.05</td><td class="num">0.2</td>' in html
    assert '<td class="num best">0.93</td><td class="num best">0.93</td>' in html
    # The learning rate of g differs between a and b (c has no g phase).
    assert '<td class="ev">optim.g.lr</td><td>0.0001</td><td>0.0003</td><td>—</td>' in html
    assert "<td>nonsaturating</td><td>nonsaturating</td><td>—</td>" in html
    assert "unfinished" in html and html.count("<details>") == 3


def test_compare_of_identical_recipes(make_run, tmp_path):
    a, b = make_run("a"), make_run("b", seed=1)
    html = write_compare([a, b], tmp_path / "compare.html").read_text(encoding="utf-8")
    assert "The resolved recipes are identical." in html


def test_compare_needs_a_run(tmp_path):
    with pytest.raises(ValueError, match="at least one run"):
        write_compare([], tmp_path / "x.html")
    with pytest.raises(FileNotFoundError):
        write_compare([tmp_path / "missing"], tmp_path / "x.html")


def test_labels_stay_unique(tmp_path):
    for parent in ("x", "y"):
        (tmp_path / parent / "run").mkdir(parents=True)
    runs = [load_run(tmp_path / p / "run") for p in ("x", "y", "x")]
    assert run_labels(runs) == ["x/run #1", "y/run", "x/run #3"]


def test_metric_direction():
    assert metric_direction("fid") == -1 and metric_direction("reverse_kl") == -1 and metric_direction("test/bpd") == -1
    assert metric_direction("modes") == 1 and metric_direction("class_coverage") == 1 and metric_direction("hq") == 1
    assert metric_direction("acceptance_rate") == 0


def test_metric_table_names_each_runs_eval_split(make_run, tmp_path):
    a, b = make_run("a"), make_run("b", seed=1)
    ev = json.loads((a / "eval.json").read_text())
    (a / "eval.json").write_text(json.dumps({**ev, "split": "test", "held_out": True}))
    html = write_compare([a, b], tmp_path / "cmp.html").read_text(encoding="utf-8")
    assert '<td class="num">eval.json (test)</td><td class="num">eval.json</td>' in html


def test_no_best_is_marked_across_runs_on_different_data(make_run, tmp_path):
    a, b = make_run("a"), make_run("b", seed=1)
    _edit(b, lambda r: r["data"].update(name="grid25"), {"modes": 7.0})
    html = write_compare([a, b], tmp_path / "cmp.html").read_text(encoding="utf-8")
    assert 'class="num best"' not in html and "no best is marked" in html
