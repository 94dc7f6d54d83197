"""The report's eval table shows the real-vs-real floor beside fid and kid."""

import json
import re

from stablegen.report import write_report
from stablegen.report.html import fmt_num


def _eval_table(html: str) -> str:
    return html[html.index('id="eval"'):html.index('id="recipe"')]


def test_floor_stands_beside_its_metric(make_run):
    run = make_run()
    record = json.loads((run / "eval.json").read_text())
    metrics = {"fid": 1.5, "fid_floor": 0.086, "kid": 0.01, "kid_std": 0.001, "kid_floor": -0.0001,
               "precision": 0.9}
    (run / "eval.json").write_text(json.dumps({**record, "metrics": metrics}))
    table = _eval_table(write_report(run).read_text(encoding="utf-8"))
    assert "real-vs-real floor" in table
    row = r'<tr><td>(\w+)</td><td class="num">[^<]*</td><td class="num">([^<]*)</td></tr>'
    cells = dict(re.findall(row, table))
    assert set(cells) == {"fid", "kid", "kid_std", "precision"}  # the floors are no rows of their own
    assert cells["fid"] == fmt_num(0.086) and cells["kid"] == fmt_num(-0.0001)
    assert cells["precision"] == "" and cells["kid_std"] == ""


def test_no_floor_column_without_floors(make_run):
    run = make_run()
    record = json.loads((run / "eval.json").read_text())
    (run / "eval.json").write_text(json.dumps({**record, "metrics": {"fid": 1.5}}))
    assert "real-vs-real floor" not in _eval_table(write_report(run).read_text(encoding="utf-8"))
