"""Reports of runs: one self-contained HTML page per run, and a page comparing runs."""

from stablegen.report.compare import write_compare
from stablegen.report.html import write_report
from stablegen.report.runs import Run, load_run

__all__ = ["Run", "load_run", "write_compare", "write_report"]
