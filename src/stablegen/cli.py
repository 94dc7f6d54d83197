"""The command line: a thin layer over the library.

Exit codes (exitcodes.py): 0 success; 1 unexpected error (one line; the traceback with
--debug); 2 bad input (recipe, data, checkpoint, arguments), one message naming the key, file
or argument; 3 the guard stopped the run; 130 interrupted (a checkpoint was written; --resume
continues).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .exitcodes import EXIT_ERROR, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_STOPPED


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the ValueError into exit 2 and its message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _run_dir(path: str) -> Path:
    """A run directory given on the command line: it must exist and hold recipe.yaml."""
    from .train.checkpoint import CheckpointError

    run = Path(path)
    if not run.is_dir():
        raise CheckpointError(f"run directory {run} does not exist")
    if not (run / "recipe.yaml").is_file():
        raise CheckpointError(f"{run} is not a run directory (no recipe.yaml): give a directory written by "
                              "stablegen train")
    return run


def _cmd_train(args: argparse.Namespace) -> int:
    from .api import train
    from .train import distributed

    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe and not Path(recipe).exists():
        overrides.insert(0, recipe)  # `stablegen train key=value` on the default recipe
        recipe = None
    if args.resume and args.run_dir is None:
        if recipe is None or not Path(recipe).is_dir():
            print("error: --resume needs the run directory (--run-dir DIR or stablegen train DIR --resume)",
                  file=sys.stderr)
            return EXIT_INPUT
        args.run_dir, recipe = recipe, None
    rank, _ = distributed.setup()  # under torchrun only rank 0 speaks
    if distributed.restarted():
        note, stopped = _after_restart(args.run_dir)
        if rank == 0:
            print(note, file=sys.stderr)
        if stopped:
            return EXIT_STOPPED
    run = train(recipe, overrides, run_dir=args.run_dir, resume=args.resume, allow_changes=args.allow_changes)
    code = {"finished": EXIT_OK, "stopped": EXIT_STOPPED}.get(run.status, EXIT_INTERRUPTED)
    if rank != 0:  # done: rank 0 alone writes the final samples, eval, summary and report
        return code
    summary = json.loads((run.run_dir / "summary.json").read_text())
    events = ", ".join(f"{k}: {v}" for k, v in summary["events"].items()) or "none"
    print(f"run {run.run_dir}: {summary['status']} after {summary['steps']} steps in "
          f"{summary['wall_time']:.0f}s; guard events: {events}")
    if summary["message"]:
        print(f"guard: {summary['message']}")
    _print_final_eval(run.run_dir)
    for problem in summary.get("problems", []):  # visible, though the training itself succeeded
        print(f"warning: {problem}", file=sys.stderr)
    if (run.run_dir / "report.html").is_file():
        print(f"report: {run.run_dir / 'report.html'}")
    return code


def _print_final_eval(run_dir: Path) -> None:
    """The end-of-run evaluation (eval.json) as a small table, with the data it compared with."""
    path = run_dir / "eval.json"
    if not path.is_file():
        return
    record = json.loads(path.read_text())
    results = record.get("metrics") or {}
    if not results:
        return
    split = record.get("split")
    against = f" against the {split} split" + ("" if record.get("held_out", True) else " (trained on)") if split else ""
    print(f"final eval{against}, {record.get('n')} samples, {'EMA' if record.get('ema') else 'raw'} weights:")
    width = max(len(k) for k in results)
    for k, v in results.items():
        print(f"  {k:<{width}}  {v:.6g}" if isinstance(v, (int, float)) else f"  {k:<{width}}  {v}")


def _after_restart(run_dir: str | None) -> tuple[str, bool]:
    """What a worker that torchrun restarted (--max-restarts) does with the run, and whether the
    guard had stopped it (then it is not trained again). `train` resumes from the newest checkpoint."""
    from .train.checkpoint import list_checkpoints

    if run_dir is None:
        return ("warning: torchrun restarted the workers and no --run-dir was given: training starts over "
                "in a new run directory"), False
    checkpoints = list_checkpoints(Path(run_dir) / "checkpoints")
    if not checkpoints:
        return f"torchrun restarted the workers: {run_dir} has no checkpoint yet, training starts over", False
    step = int(checkpoints[-1].stem.split("-")[1])
    summary = Path(run_dir) / "summary.json"
    if summary.is_file() and (s := json.loads(summary.read_text()))["status"] == "stopped" and s["steps"] == step:
        return (f"error: the guard stopped {run_dir} at step {step} ({s['message']}); "
                "a restart does not train it again"), True
    return f"torchrun restarted the workers: resuming {run_dir} from step {step}", False


def _cmd_recipes(args: argparse.Namespace) -> int:
    from .recipe import DEFAULT_RECIPE, builtin_descriptions

    descs = builtin_descriptions()
    width = max(map(len, descs))
    for name, desc in descs.items():
        mark = " (default)" if name == DEFAULT_RECIPE else ""
        print(f"{name:<{width}}  {desc}{mark}")
    return EXIT_OK


def _sample_kwargs(args: argparse.Namespace) -> dict:
    kw = {}
    for key in ("sampler", "steps", "guidance", "temperature", "eta", "truncate", "prompt", "length", "top_k",
                "top_p"):
        value = getattr(args, key, None)
        if value is not None:
            kw[key] = value
    return kw


def _cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from .api import open_run
    from .data.text import vocabulary_of
    from .report.grid import save_samples_png
    from .train.checkpoint import atomic_write_bytes, atomic_write_text

    out = Path(args.output) if args.output else None
    if out is not None and out.suffix not in (".npy", ".png", ".txt"):
        print(f"error: -o must end in .npy, .png or .txt, got {out}", file=sys.stderr)
        return EXIT_INPUT
    run = open_run(_run_dir(args.run))
    tokens = run.data.info.kind == "tokens"
    if (out is None or out.suffix == ".txt") and not tokens:
        print(f"error: {'-o is required' if out is None else '-o .txt is for token runs'}: this run's samples are "
              f"{run.data.info.kind} data; give -o samples.npy or grid.png", file=sys.stderr)
        return EXIT_INPUT
    try:
        x = run.sample(args.n, ema=args.ema, seed=args.seed, **_sample_kwargs(args))
    except (TypeError, ValueError) as e:  # an option this family lacks, a value it refuses
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    if out is None or out.suffix == ".txt":  # token runs: text, samples between lines holding only %
        vocab = vocabulary_of(run.data.info)
        rows = [vocab.decode(row) if vocab is not None else " ".join(map(str, row.tolist())) for row in x]
        text = "".join(f"{row}\n%\n" for row in rows)
        if out is None:
            sys.stdout.write(text)
            return EXIT_OK
        atomic_write_text(out, text)
    elif out.suffix == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, x.numpy() if tokens else x.float().numpy())  # token ids stay integers
        atomic_write_bytes(out, buf.getvalue())
    else:
        vec = run.data.info.kind == "vector"  # grids draw in the model's space
        save_samples_png(x if vec else run.data.normalize(x), out,
                         run.data.denormalize(run.data.x[:2000]) if vec else None)
    print(f"wrote {args.n} samples of shape {tuple(x.shape[1:])} to {out}")
    return EXIT_OK


def _cmd_eval(args: argparse.Namespace) -> int:
    from .api import open_run
    from .data import resolve_eval_split
    from .evaluation import eval_record
    from .train.checkpoint import atomic_write_text

    run = open_run(_run_dir(args.run))
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    split = args.split or run.recipe.eval.split  # auto: the held-out split (docs/data.md)
    try:
        where = resolve_eval_split(run.recipe.data, split)
        results = run.evaluate(metrics, n=args.n, ema=args.ema, features=args.features, seed=args.seed, split=split)
    except (ValueError, RuntimeError) as e:  # unknown / inapplicable metric, missing Inception weights, no such split
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    against = "the training data" if where.name == "all" else f"the {where.name} split"
    print(f"evaluated against {against} ({'held out' if where.held_out else 'trained on: not held out'})",
          file=sys.stderr)
    width = max((len(k) for k in results), default=6)
    for k, v in results.items():
        print(f"{k:<{width}}  {v:.6g}")
    cfg = run.recipe.eval
    record = eval_record(results, split=where, n=args.n or cfg.n, features=args.features or cfg.features,
                         ema=bool(args.ema and run.ema_state), step=_latest_step(run.run_dir))
    atomic_write_text(run.run_dir / "eval.json", json.dumps(record, indent=1))
    return EXIT_OK


def _latest_step(run_dir: Path) -> int:
    from .train.checkpoint import latest_checkpoint

    return int(latest_checkpoint(run_dir / "checkpoints").stem.split("-")[1])


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(f"wrote {write_report(_run_dir(args.run))}")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from .report import write_compare

    print(f"wrote {write_compare([_run_dir(r) for r in args.runs], Path(args.output))}")
    return EXIT_OK


def _cmd_mcmc(args: argparse.Namespace) -> int:
    from .mcmc.command import run

    return run(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import ExportError, export_run

    try:
        config = export_run(args.run, args.output, ema=args.ema, checkpoint=args.checkpoint)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    src = config["source"]
    print(f"wrote {Path(args.output)}/: model.safetensors ({config['net']['attribute']}, "
          f"{'EMA' if src['ema'] else 'live'} weights of step {src['step']}), program.pt2, config.json")
    return EXIT_OK


def _cmd_score(args: argparse.Namespace) -> int:
    import io

    import numpy as np
    import torch

    from .api import open_run
    from .data import load_dataset
    from .methods.scoring import score
    from .train.checkpoint import atomic_write_bytes

    from .base import MissingCapability
    from .data.files import DataError

    run = open_run(_run_dir(args.run))
    if Path(args.data).exists():
        kind = ("npy" if args.data.endswith((".npy", ".npz")) else "csv" if args.data.endswith(".csv")
                else "idx" if "idx" in Path(args.data).name else "folder")
        cfg = run.recipe.data.model_copy(update={"name": kind, "path": args.data, "labels": False, "batch_size": 1,
                                                 "split": "all"})
    else:
        cfg = run.recipe.data.model_copy(update={"name": args.data, "batch_size": 1})
    x = load_dataset(cfg, norm=run.data.norm).as_float()
    want = tuple(run.data.info.shape)
    if tuple(x.shape[1:]) != want:
        raise DataError(f"{args.data}: samples of shape {tuple(x.shape[1:])}, but the run was trained on samples "
                        f"of shape {want}; score data of the training shape")
    try:
        with torch.no_grad():
            s = score(run.method, x, args.kind).cpu().numpy()
    except (MissingCapability, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    buf = io.BytesIO()
    np.save(buf, s)
    atomic_write_bytes(Path(args.output), buf.getvalue())
    print(f"wrote {len(s)} scores to {args.output} (mean {s.mean():.4g}, max {s.max():.4g})")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stablegen", description="Train generative models stably.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a recipe (default: the quick built-in dcgan-digits)")
    t.add_argument("recipe", nargs="?", help="built-in recipe name or recipe.yaml (see `stablegen recipes`)")
    t.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.steps=500")
    t.add_argument("--run-dir", help="run directory (default runs/<name>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its newest checkpoint")
    t.add_argument("--allow-changes", action="store_true",
                   help="with --resume: accept overrides of keys other than train.steps, logging and eval")
    t.set_defaults(func=_cmd_train)

    r = sub.add_parser("recipes", help="list the built-in recipes")
    r.set_defaults(func=_cmd_recipes)

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run")
    s.add_argument("-n", type=_positive_int, default=64, help="number of samples (>= 1)")
    s.add_argument("-o", "--output", help="samples.npy (data space; token ids), grid.png, or samples.txt (token "
                   "runs, which print their text when -o is left out)")
    s.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="use EMA weights if kept")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sampler", help="diffusion: ddpm, ddim or heun; flow matching: euler, midpoint, heun or dopri5")
    s.add_argument("--steps", type=_positive_int, help="diffusion, flow matching (not dopri5): sampling steps (>= 1)")
    s.add_argument("--guidance", type=float, help="diffusion, flow matching: classifier-free guidance scale")
    s.add_argument("--eta", type=float, help="DDIM eta")
    s.add_argument("--temperature", type=float, help="flows, autoregressive: sampling temperature")
    s.add_argument("--prompt", help="autoregressive: text (token runs) that every sample continues")
    s.add_argument("--length", type=_positive_int, help="autoregressive: steps per sample, prompt included "
                   "(default: data.length)")
    s.add_argument("--top-k", type=_positive_int, help="autoregressive tokens: draw from the k likeliest (1: greedy)")
    s.add_argument("--top-p", type=float, help="autoregressive tokens: draw from the smallest set of probability >= p")
    s.add_argument("--truncate", action=argparse.BooleanOptionalAction, default=None,
                   help="GANs: Jacobian truncation on / off (default: the recipe's model.truncation)")
    s.set_defaults(func=_cmd_sample)

    e = sub.add_parser("eval", help="evaluate a trained run; writes eval.json into it")
    e.add_argument("run")
    e.add_argument("--metrics", help="comma-separated: fid,kid,is,prdc,modes,classes,stacked_modes,nll,recon,diversity")
    e.add_argument("--n", type=_positive_int, help="generated samples (>= 1)")
    e.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True)
    e.add_argument("--features", choices=["auto", "digits", "fashion", "inception", "pixels"])
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--split", choices=["auto", "train", "val", "test"],
                   help="data to compare with (default: the recipe's eval.split; auto = the held-out split)")
    e.set_defaults(func=_cmd_eval)

    rep = sub.add_parser("report", help="write RUN/report.html")
    rep.add_argument("run")
    rep.set_defaults(func=_cmd_report)

    c = sub.add_parser("compare", help="put runs side by side in one HTML page")
    c.add_argument("runs", nargs="+")
    c.add_argument("-o", "--output", default="compare.html")
    c.set_defaults(func=_cmd_compare)

    sc = sub.add_parser("score", help="anomaly scores (NLL or reconstruction error) of data under a run")
    sc.add_argument("run")
    sc.add_argument("data", help="a .npy/.npz file, an image folder, or a built-in data name")
    sc.add_argument("-o", "--output", required=True)
    sc.add_argument("--kind", choices=["auto", "nll", "recon"], default="auto")
    sc.set_defaults(func=_cmd_score)

    ex = sub.add_parser("export", help="write a run's network as safetensors + a torch.export program (docs/export.md)")
    ex.add_argument("run")
    ex.add_argument("-o", "--output", required=True, help="directory for model.safetensors, program.pt2, config.json")
    ex.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="use EMA weights if kept")
    ex.add_argument("--checkpoint", help="a checkpoint file of the run (default: the newest)")
    ex.set_defaults(func=_cmd_export)

    from .tune import add_arguments as tune_arguments, run as tune_run

    tu = sub.add_parser("tune", help="hyperparameter search with Optuna (docs/tuning.md)")
    tune_arguments(tu)
    tu.set_defaults(func=tune_run)

    from .mcmc.command import add_arguments as mcmc_arguments

    m = sub.add_parser("mcmc", help="run an MCMC kernel on a target and print diagnostics")
    mcmc_arguments(m)
    m.set_defaults(func=_cmd_mcmc)
    return p


def main(argv: list[str] | None = None) -> int:
    from .data.files import DataError
    from .recipe import RecipeError
    from .train.checkpoint import CheckpointError
    from .train.lock import RunLocked

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # anywhere on the line: the traceback of an unexpected error
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides given after options (`train R --run-dir D a.b=1`)
        bad = [e for e in extra if e.startswith("-") or "=" not in e or args.command not in ("train", "tune")]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = list(args.overrides) + extra
    try:
        return args.func(args)
    except (RecipeError, DataError, CheckpointError, RunLocked) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 — a bug or an environment problem: one line, or all of it with --debug
        if debug:
            raise
        where = e.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        at = f" at {Path(where.tb_frame.f_code.co_filename).name}:{where.tb_lineno}" if where is not None else ""
        print(f"error: unexpected {type(e).__name__}{at}: {e} (stablegen --debug ... shows the traceback)",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
