"""What the StabilityGuard's periodic checks saw over a run, and what other thresholds would
have reported from the same checks.

Trains a recipe (a built-in name or a YAML file) and records, at every guard check, the step,
class coverage, high-quality share, critic accuracy and diversity ratio. The recorded shares
are then replayed through a fresh StabilityGuard under each `--replay` setting (guard keys,
e.g. `quality_drop=0.5`): the events those thresholds raise from the very same checks.

    python benchmarks/guard_trace.py gan-ring8 --replay quality_drop=0.5 --replay quality_drop=0.25
    python benchmarks/guard_trace.py my-recipe.yaml --set train.steps=28000 --out trace.json
    python benchmarks/guard_trace.py --from trace.json --replay patience=3 --out trace.json

`--from` replays the checks of an earlier trace (its live events kept) without training: the
guard's rules can change and be measured again on the same checks. Replays see only the shares,
not the weights: a rollback in the live run is not replayed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import stablegen as sg
from stablegen.recipe import GuardConfig, parse_overrides
from stablegen.train import guard as guard_module


def record(recipe: str, overrides: dict, threads: int) -> tuple[list[dict], list[dict]]:
    """Train the recipe; its guard checks (step, shares, critic accuracy) and live events."""
    checks: list[dict] = []
    live = guard_module.StabilityGuard.check_health

    def recording(self, step, health, diversity_ratio, coverage=None, quality=None):
        checks.append({"step": step, "coverage": coverage, "quality": quality,
                       "d_acc": health.get("d_acc"), "diversity": diversity_ratio})
        return live(self, step, health, diversity_ratio, coverage, quality)

    guard_module.StabilityGuard.check_health = recording
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            sg.train(recipe, {"train.progress": False, "train.threads": threads, **overrides}, run_dir=run, report=False)
            events_file = run / "events.jsonl"
            events = [json.loads(line) for line in events_file.read_text().splitlines()] if events_file.exists() else []
    finally:
        guard_module.StabilityGuard.check_health = live
    return checks, events


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe", nargs="?")
    p.add_argument("--from", dest="trace", type=Path, help="replay the checks of this trace instead of training")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--replay", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="guard settings to replay the recorded checks under")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("guard-trace.json"))
    args = p.parse_args()

    if args.trace is not None:
        if not args.trace.is_file():
            p.error(f"--from {args.trace}: no such trace file")
        earlier = json.loads(args.trace.read_text())
        recipe, sets, checks, events = earlier["recipe"], earlier["set"], earlier["checks"], earlier["events"]
    elif args.recipe is None:
        p.error("give a recipe to train, or --from TRACE.json to replay")
    else:
        recipe, sets = args.recipe, args.set
        checks, events = record(recipe, parse_overrides(args.set), args.threads)

    replays = {}
    for setting in args.replay:
        cfg = GuardConfig(**parse_overrides(setting.split(",")))
        g = guard_module.StabilityGuard(cfg)
        for c in checks:
            g.check_health(c["step"], {}, None, c["coverage"], c["quality"])
        replays[setting] = [e.to_json() for e in g.events]
    out = {"recipe": recipe, "set": sets, "checks": checks, "events": events, "replays": replays}
    if args.trace is not None:  # the live events are the earlier code's; the replays are this code's
        out["replayed_from"] = str(args.trace)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"{len(checks)} checks; live events: " + (", ".join(f"{e['step']} {e['detector']} ({e['action']})" for e in events) or "none"))
    for setting, evs in replays.items():
        print(f"replay {setting}: " + (", ".join(f"{e['step']} {e['detector']}" for e in evs) or "no events"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
