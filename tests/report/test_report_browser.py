"""Open reports in headless Chromium: every image decodes and the page reports no error.

A probe script is put in front of the report's Content-Security-Policy (so the policy still governs
everything the report itself contains); on load it writes into the DOM the images that did not
decode, uncaught errors, failed resource loads, policy violations and console errors and warnings,
and `--dump-dom` hands the DOM back. Chromium's own console log on stderr must be empty as well.
Skipped, with the reason, where no Chromium is installed (Debian: apt-get install -y chromium).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from stablegen.report import write_compare, write_report

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]

PROBE = """<script>
(function () {
  var problems = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    problems.push(t && t !== window && t.tagName ? "failed to load <" + t.tagName.toLowerCase() + ">"
                                                 : "error: " + e.message);
  }, true);
  document.addEventListener("securitypolicyviolation", function (e) {
    problems.push("blocked by the page's policy: " + e.violatedDirective + " " + e.blockedURI);
  });
  ["error", "warn"].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      problems.push("console." + level + ": " + Array.prototype.join.call(arguments, " "));
      return original.apply(console, arguments);
    };
  });
  window.addEventListener("load", function () {
    var broken = [];
    for (var i = 0; i < document.images.length; i++) {
      var im = document.images[i];
      if (!(im.complete && im.naturalWidth > 0)) broken.push(im.alt || "image " + i);
    }
    var out = document.createElement("pre");
    out.id = "sg-probe";
    out.textContent = JSON.stringify({images: document.images.length, broken: broken, problems: problems});
    document.body.appendChild(out);
  });
})();
</script>"""


def find_chromium() -> str | None:
    """$STABLEGEN_CHROMIUM, else the first Chromium or Chrome on PATH."""
    named = os.environ.get("STABLEGEN_CHROMIUM")
    if named:
        return named
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install -y chromium); browser check skipped"
)


def open_in_browser(page: Path, workdir: Path) -> tuple[dict, list[str]]:
    """Load a copy of `page` with the probe in Chromium; return the probe's findings and console lines."""
    text = page.read_text(encoding="utf-8")
    assert text.count("<head>") == 1, "the page should have exactly one <head>"
    probed = workdir / f"probed-{page.name}"
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        done = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", probed.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    match = re.search(r'<pre id="sg-probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"Chromium gave no probe result (exit {done.returncode}); stderr tail:\n{done.stderr[-2000:]}"
    findings = json.loads(html.unescape(match.group(1)))
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return findings, console


def assert_clean(page: Path, workdir: Path) -> None:
    findings, console = open_in_browser(page, workdir)
    expected = page.read_text(encoding="utf-8").count("<img ")
    assert findings["images"] == expected > 0, findings
    assert findings["broken"] == [], f"images that did not decode: {findings['broken']}"
    assert findings["problems"] == [], findings["problems"]
    assert console == [], console


def test_full_report_opens_clean(make_run, tmp_path):
    run = make_run(nonfinite=True)  # events, eval, samples, NaN and inf in the metrics
    assert_clean(write_report(run), tmp_path)


def test_bare_report_opens_clean(make_run, tmp_path):
    run = make_run("vae-bare", family="vae", events=False, evaluate=False, samples=False, summary=False)
    assert_clean(write_report(run), tmp_path)


def test_compare_opens_clean(make_run, tmp_path):
    a = make_run("a")
    b = make_run("b", family="vae", events=False, samples=False, seed=1)
    assert_clean(write_compare([a, b], tmp_path / "compare.html"), tmp_path)


def test_probe_catches_a_broken_image_and_an_external_load(tmp_path):
    """The check itself can fail: a bad data URI and a blocked external picture are both reported."""
    from stablegen.report.html import page

    bad = tmp_path / "bad.html"
    bad.write_text(page("bad", '<img alt="bad" src="data:image/png;base64,AAAA"><img alt="far" src="http://127.0.0.1:9/x.png">'))
    findings, console = open_in_browser(bad, tmp_path)
    assert sorted(findings["broken"]) == ["bad", "far"]
    assert any("img-src" in p for p in findings["problems"]), findings["problems"]
    assert console, "Chromium logs the policy violation on its console"
