"""`stablegen export`: a trained run as three files that work without stablegen.

    DIR/model.safetensors  the sampling network's weights (EMA weights when the run kept them),
                           named as in the network's own state dict
    DIR/program.pt2        torch.export of the sampling program (torch.export.save), on CPU
    DIR/config.json        family, the recipe's model options, the network's class, the data's
                           shape and range, the program's inputs and how `stablegen sample` draws
                           them, the schedule of a diffusion model, the stablegen version, the
                           source run and checkpoint step

What the program is comes from each family's `Method.export_net` (base.py): a GAN's generator
in data space, a VAE's decoder mean, a flow's inverse, a diffusion model's denoiser, a
PixelCNN's logits, an EBM's energy. It is traced from a copy of the method in eval mode (batch
norm uses its running statistics) whose parametrizations (spectral / weight norm) are folded
into plain weights.
"""

from __future__ import annotations

import copy
import io
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import __version__
from .api import open_run
from .base import ExportSpec, Method, MissingCapability
from .train.checkpoint import atomic_write_bytes, atomic_write_text, latest_checkpoint
from .train.ema import EMA

EXPORTED = {"gan": "generator", "vae": "decoder mean", "realnvp": "inverse flow", "glow": "inverse flow",
            "diffusion": "denoiser", "pixelcnn": "logits", "ebm": "energy"}  # what export_net gives, per family
EXAMPLE_BATCH = 2  # batch of the example inputs; the exported batch dimension is dynamic


class ExportError(ValueError):
    """A run whose family has nothing to export."""


def plain_copy(method: Method, ema: EMA | None = None) -> Method:
    """A CPU copy of `method` in eval mode without gradients, with the EMA weights when given,
    and every parametrization (spectral / weight norm) folded into a plain weight."""
    with ema.swapped() if ema is not None else nullcontext():
        out = copy.deepcopy(method)
    out = out.cpu().eval().requires_grad_(False)
    for module in [m for m in out.modules() if parametrize.is_parametrized(m)]:
        # torch gives each parametrized module a class of its own, which a deepcopy shares with
        # the original, and removing a parametrization edits that class: copy it first
        cls = type(module)
        module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
        for name in list(module.parametrizations):  # type: ignore[union-attr]
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return out


class _Program(nn.Module):
    """What torch.export traces: `spec.program(*inputs)`, with the net registered so that its
    weights are the program's parameters (other tensors the program reads become constants)."""

    def __init__(self, spec: ExportSpec):
        super().__init__()
        self.net = spec.net
        self.__dict__["run"] = spec.program  # a plain attribute, even when a module: its weights are `net`'s

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.run(*inputs)


def trace(spec: ExportSpec) -> torch.export.ExportedProgram:
    """torch.export of the spec's program with a dynamic batch dimension "n"."""
    n = torch.export.Dim("n")
    example = tuple(torch.zeros([EXAMPLE_BATCH if d == "n" else d for d in i.shape], dtype=i.dtype)
                    for i in spec.inputs.values())
    dynamic = tuple({k: n for k, d in enumerate(i.shape) if d == "n"} for i in spec.inputs.values())
    return torch.export.export(_Program(spec), example, dynamic_shapes=(dynamic,))


def export_spec(method: Method, family: str) -> ExportSpec:
    """`method.export_net()`, or an ExportError naming what is exported for which families."""
    try:
        return method.export_net()
    except MissingCapability:
        supported = ", ".join(f"{k} ({v})" for k, v in EXPORTED.items())
        raise ExportError(f"family {family!r} cannot be exported; export writes the network of {supported}") from None


def export_run(run_dir: str | Path, out_dir: str | Path, *, ema: bool = True,
               checkpoint: str | Path | None = None, nets: Mapping[str, nn.Module] | None = None) -> dict[str, Any]:
    """Write model.safetensors, program.pt2 and config.json of a run into `out_dir`; returns
    the config. ema=False exports the live weights; checkpoint: a checkpoint file of the run
    (default: the newest); nets: those the run was trained with as Python objects (open_run)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run = open_run(run_dir, checkpoint, nets=nets)
    path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir / "checkpoints")
    family = run.recipe.model.family
    averaged = run.ema() if ema else None
    method = plain_copy(run.method, averaged)
    spec = export_spec(method, family)
    program = trace(spec)

    buf = io.BytesIO()
    torch.export.save(program, buf)
    tensors = {k: v.detach().contiguous().clone() for k, v in spec.net.state_dict().items()}
    atomic_write_bytes(out_dir / "model.safetensors", safetensors_bytes(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(out_dir / "program.pt2", buf.getvalue())
    config = _config(run, method, spec, path, averaged is not None)
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=1))
    return config


def _config(run, method: Method, spec: ExportSpec, path: Path, ema: bool) -> dict[str, Any]:
    info = method.info
    family = run.recipe.model.family
    attribute = next(name for name, m in method.named_modules() if m is spec.net)
    net = type(spec.net)
    inputs = {name: {"shape": list(i.shape), "dtype": str(i.dtype).removeprefix("torch."), "meaning": i.meaning,
                     **({"draw": i.draw} if i.draw else {})} for name, i in spec.inputs.items()}
    drawn = [name for name, i in spec.inputs.items() if i.draw]
    config: dict[str, Any] = {
        "stablegen_version": __version__,
        "torch_version": torch.__version__,
        "family": family,
        "source": {"run": str(run.run_dir.resolve()), "checkpoint": path.name,
                   "step": int(json.loads(path.with_suffix(".json").read_text())["step"]), "ema": ema},
        "model": run.recipe.model.model_dump(mode="json"),
        "net": {"attribute": attribute, "class": f"{net.__module__}.{net.__qualname__}",
                "weights": "model.safetensors",
                "note": "spectral / weight norm parametrizations are folded into plain weights"},
        "data": _data_section(run, info),
        "program": {"file": "program.pt2", "inputs": inputs, "output": spec.output, "notes": spec.notes},
    }
    if drawn:
        how = (f"g = torch.Generator().manual_seed(seed), seed as in `stablegen sample --seed` (default 0); "
               f"then {', '.join(drawn)} = the `draw` expressions, in that order, on CPU")
        if spec.draw_batch:
            how += (f"; `stablegen sample` draws them per batch of at most {spec.draw_batch} samples "
                    "(all inputs of one batch, then the next batch)")
        config["program"]["sampling"] = how
    if spec.extra:
        config[family] = spec.extra
    return config


def _data_section(run, info) -> dict[str, Any]:
    out: dict[str, Any] = {"name": info.name, "kind": info.kind, "shape": list(info.shape)}
    if info.kind == "image":
        out["range"] = [-1.0, 1.0]
    else:
        x = run.data.x.float()
        out["range"] = [float(x.min()), float(x.max())]
        out["range_note"] = "observed on the training data"
    if info.levels:
        out["levels"] = info.levels
    if info.num_classes:
        out["num_classes"] = info.num_classes
    return out
