"""The small protocol every family implements, so the trainer never branches on the family.

A *method* is the objective and sampling procedure of one family (GAN, VAE, flow, diffusion,
autoregressive, EBM, RBM). It receives its nets as arguments; nets never import methods.

    class Method(nn.Module):
        phases() -> list[Phase]          ordered update phases of one training step
        sample(n, generator=...) -> Tensor
        # optional capabilities, declared by overriding them:
        log_prob(x) -> Tensor[N]          exact (flows, AR) or a bound (VAE: IWAE; diffusion: VLB)
        reconstruct(x) -> Tensor          VAE family
        health() -> dict[str, float]      family-specific signals the guard watches
        export_net() -> ExportSpec        the sampling network and the program `stablegen export` writes

Losses return per-sample values (or a scalar); the trainer owns reduction, precision, loss
scaling, clipping and the optimizer step, identically for every family.

Every family's model config derives from `FamilyConfig`, whose `nets` / `net_args` name the
user's own nets; each family states how it calls them as `NetContract`s, which `check_net`
tries on a dummy batch before training (docs/custom.md).
"""

from __future__ import annotations

import abc
import inspect
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

DataKind = Literal["vector", "image", "sequence", "tokens"]


class Batch(NamedTuple):
    """One minibatch: x (B, ...) in data space and optional integer labels y (B,)."""

    x: Tensor
    y: Tensor | None = None


@dataclass(frozen=True)
class DataInfo:
    """What a method needs to know about the data to build its nets."""

    name: str  # dataset name, e.g. "ring8", "digits"
    kind: DataKind
    shape: tuple[int, ...]  # per-sample shape: (D,), (C, H, W), (T, D) or (T,) for tokens
    num_classes: int | None = None  # labelled data: number of classes
    vocab_size: int | None = None  # token data: vocabulary size
    levels: int | None = None  # discrete data: number of grey levels (digits: 17)


LossFn = Callable[[Batch, int], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass
class Phase:
    """One update phase of a training step.

    `loss(batch, step)` returns (per-sample loss (B,) or scalar, logs); logs are detached
    scalar tensors (the trainer converts them only at log steps, avoiding a sync per step).
    The trainer builds one optimizer per phase from the recipe's `optim.<name>` section and
    steps it `repeats` times per training step, each repeat on a fresh batch.
    """

    name: str
    params: list[nn.Parameter]
    loss: LossFn
    repeats: int = 1


@dataclass(frozen=True)
class ExportInput:
    """One input of an exported program: shape ("n" is the batch), dtype, and how `stablegen
    sample` draws it, as a Python expression in `n`, `g` (its torch.Generator) and `torch`;
    None when the program is not the sampler's first step (a diffusion denoiser)."""

    shape: tuple[int | str, ...]
    dtype: torch.dtype
    meaning: str  # what the input is, for config.json
    draw: str | None = None


@dataclass
class ExportSpec:
    """What `stablegen export` writes for a method (`Method.export_net`).

    `net` is the sampling network, whose state dict becomes model.safetensors; `program(*inputs)`
    is what torch.export traces: the net and the method's fixed output transform (a GAN's
    un-standardization, a flow's clamp), calling no sampling loop. It may read tensors of the
    method beyond `net`; the export holds them as constants.
    """

    net: nn.Module
    program: Callable[..., Tensor]
    inputs: dict[str, ExportInput]  # in call order; inputs with a `draw` are drawn in this order
    output: str  # what the program returns
    notes: list[str]  # what the program leaves out of `sample` (sampling loops, truncation)
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific config.json entries
    draw_batch: int | None = None  # `sample` draws the inputs per batch of this many samples


class MissingCapability(TypeError):
    """A method was asked for an optional capability (log_prob, reconstruct) it lacks."""


class Method(nn.Module, abc.ABC):
    """Base class of every family. Subclasses implement `phases` and `sample`."""

    info: DataInfo
    fast_sampling: bool = False  # sampling costs one forward pass: the guard may watch diversity
    log_prob_is_discrete: bool = False  # True: log_prob is log P of the integer levels (no dequantization)

    @abc.abstractmethod
    def phases(self) -> list[Phase]:
        """The ordered update phases of one training step."""

    @abc.abstractmethod
    def sample(self, n: int, *, generator: torch.Generator | None = None, **kw) -> Tensor:
        """n samples in data space (no gradient)."""

    # ---- optional capabilities -------------------------------------------------------
    def monitor_sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Samples for the guard's diversity check: what training produced, without any
        sampling-time filtering (GANs skip Jacobian truncation here)."""
        return self.sample(n, generator=generator)

    def log_prob(self, x: Tensor) -> Tensor:
        raise MissingCapability(f"{type(self).__name__} has no log_prob")

    def reconstruct(self, x: Tensor) -> Tensor:
        raise MissingCapability(f"{type(self).__name__} has no reconstruct")

    def health(self) -> dict[str, float]:
        """Signals for the guard, measured on the last training step. Default: none."""
        return {}

    def export_net(self) -> ExportSpec:
        """The sampling network and the program around it that `stablegen export` writes
        (stablegen/export.py); called on an eval-mode copy with plain (unparametrized) weights."""
        raise MissingCapability(f"{type(self).__name__} has no export_net")

    def ema_module(self) -> nn.Module:
        """The part whose exponential moving average (weights and buffers) is kept and used
        for sampling: the whole method by default, a GAN's generator."""
        return self

    def data_init(self, batch: Batch) -> None:
        """Data-dependent initialisation (actnorm), called once before the first step."""

    def on_step_end(self, step: int, logs: dict[str, Tensor]) -> None:
        """Per-step bookkeeping after all phases (ADA's p, annealing); default: nothing."""

    def regularization_boost(self, factor: float) -> bool:
        """Raise the method's regularization (GP / R1 weight) by `factor` when the guard
        rolls back. Returns True when there was something to raise."""
        return False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def has_capability(method: Method, name: Literal["log_prob", "reconstruct", "health", "export_net"]) -> bool:
    """True when `method` overrides the optional capability `name`."""
    return getattr(type(method), name) is not getattr(Method, name)


# ---- the user's own nets (docs/custom.md) ------------------------------------------------------
PYTHON_NET = "<python object>"  # model.nets value of a net given as an object from Python
IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")  # module:callable


class FamilyConfig(BaseModel):
    """Options every family's model config shares: the user's own nets, by the family's names
    for them (`NETS`). A net not named in `nets` is the family's built-in one."""

    model_config = ConfigDict(extra="forbid")
    NETS: ClassVar[tuple[str, ...]] = ()  # names of the nets a user may give (docs/custom.md has the table)

    family: str  # the family; each config narrows it to a Literal
    nets: dict[str, str] = {}  # your nets: name -> "module:callable" import path (or PYTHON_NET)
    net_args: dict[str, dict[str, Any]] = {}  # keyword arguments of each import path's callable

    @field_validator("nets")
    @classmethod
    def _known_names(cls, nets: dict[str, str]) -> dict[str, str]:
        for name, path in nets.items():
            if name not in cls.NETS:
                family = cls.model_fields["family"].default
                allowed = f"its nets: {', '.join(cls.NETS)}" if cls.NETS else "it takes no nets of yours yet"
                raise PydanticCustomError("nets", f"{name!r} is not a net of family {family!r}; {allowed}")
            if path != PYTHON_NET and not IMPORT_PATH.fullmatch(path):
                raise PydanticCustomError("nets", f"{name}: {path!r} is not an import path 'module:callable' "
                                          "(e.g. 'my_package.nets:make_generator')")
        return nets

    @field_validator("net_args")
    @classmethod
    def _args_of_imported_nets(cls, net_args: dict[str, dict[str, Any]], info: ValidationInfo) -> dict:
        nets = info.data.get("nets", {})
        for name, args in net_args.items():
            if args and nets.get(name, PYTHON_NET) == PYTHON_NET:
                raise PydanticCustomError("nets", f"{name!r} has arguments but model.nets has no import path for "
                                          f"it; net_args are the keyword arguments of the import path's callable")
        return {name: args for name, args in net_args.items() if args}


@dataclass(frozen=True)
class NetContract:
    """How a method calls one of its nets and what it must return; `check_net` tries it on a
    dummy batch of 2 built from the DataInfo. `inputs` are the arguments (None where the method
    passes None: the labels of an unconditional model)."""

    call: str  # the call as the method makes it, with shapes, for messages
    inputs: tuple[Tensor | None, ...]
    shape: tuple[int, ...] | None = None  # the output's shape (None: `extra` checks the output)
    labels: bool = False  # `inputs` hold class labels y (a conditional model)
    range: tuple[float, float] | None = None  # outputs outside only warn (images in [-1, 1])
    extra: Callable[[nn.Module, Any], str | None] | None = None  # (net, output) -> what is wrong, or None


def dummy_data(info: DataInfo, n: int = 2) -> Tensor:
    """n example samples of the data's shape: uniform on [-1, 1] for images, standard normal
    otherwise; seeded, so the contract check is the same each time."""
    g = torch.Generator().manual_seed(0)
    if info.kind == "image":
        return torch.rand(n, *info.shape, generator=g) * 2 - 1
    return torch.randn(n, *info.shape, generator=g)


def dummy_latents(z_dim: int, n: int = 2) -> Tensor:
    """n standard normal latent codes (n, z_dim), seeded."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(0))


def dummy_labels(info: DataInfo, n: int = 2, extra_class: bool = False) -> Tensor:
    """n class labels 0, K-1, ... (with `extra_class`: the last is K, the "no label" class)."""
    k = int(info.num_classes or 1)
    top = k if extra_class else k - 1
    return torch.tensor([0, top] * (n // 2) + [0] * (n % 2), dtype=torch.long)


def dims(shape: tuple[int, ...] | torch.Size) -> str:
    """(1, 28, 28) -> '1, 28, 28', for the shapes in contract messages."""
    return ", ".join(str(d) for d in shape)


def _shape(out: Any) -> str:
    if isinstance(out, Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {', '.join(_shape(o) for o in out)}"
    return f"a {type(out).__name__}"


def check_net(name: str, net: Any, contract: NetContract) -> None:
    """One forward pass of a user's net as its method calls it; ValueError naming the net, what
    was expected and what came back. The net runs in eval mode without gradients, and the global
    RNG is left as it was."""
    where = f"model.nets.{name}"
    if not isinstance(net, nn.Module):
        raise ValueError(f"{where} must be a torch.nn.Module, got {type(net).__name__}")
    where = f"{where} ({type(net).__name__})"
    params = list(net.parameters())
    if not params:
        raise ValueError(f"{where} has no parameters to train")
    try:
        signature = inspect.signature(net.forward)
        signature.bind(*contract.inputs)
    except TypeError:
        why = ("the model is class-conditional: y holds the class labels" if contract.labels else
               "y is None for an unconditional model: give forward a y=None argument")
        raise ValueError(f"{where}: the method calls {contract.call}; its forward{signature} cannot take "
                         f"these arguments ({why})") from None
    except ValueError:  # no signature to read: the call below tells
        pass
    inputs = tuple(None if t is None else t.to(params[0].device) for t in contract.inputs)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            try:
                out = net(*inputs)
            except Exception as e:  # noqa: BLE001 — any failure of the user's net is a broken contract
                shapes = ", ".join("None" if t is None else str(tuple(t.shape)) for t in inputs)
                raise ValueError(f"{where}: the method calls {contract.call}; on a dummy batch (inputs of "
                                 f"shape {shapes}) it raised {type(e).__name__}: {e}") from None
            problem = contract.extra(net, out) if contract.extra is not None else None
    finally:
        net.train(was_training)
    if contract.shape is not None:
        if not isinstance(out, Tensor) or tuple(out.shape) != contract.shape:
            raise ValueError(f"{where}: {contract.call} must return a tensor of shape {contract.shape}; "
                             f"it returned {_shape(out)}")
        if not torch.isfinite(out).all():
            raise ValueError(f"{where}: {contract.call} returned non-finite values")
    if problem:
        raise ValueError(f"{where}: {problem}")
    if contract.range is not None and isinstance(out, Tensor):
        lo, hi = contract.range
        got = (float(out.min()), float(out.max()))
        if got[0] < lo - 1e-3 or got[1] > hi + 1e-3:
            warnings.warn(f"{where} returned values in [{got[0]:.3g}, {got[1]:.3g}]; the data lie in "
                          f"[{lo:g}, {hi:g}] (end the net with tanh)", stacklevel=3)


def flow_contract(info: DataInfo) -> NetContract:
    """A flow's contract: flow(x) -> (z (B, D), log|det dz/dx| (B,)), and flow.inverse(z) -> x."""
    x = dummy_data(info)
    d = math.prod(info.shape)

    def invertible(flow: nn.Module, out: Any) -> str | None:
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(o, Tensor) for o in out)
                and tuple(out[0].shape) == (2, d) and tuple(out[1].shape) == (2,)):
            return f"flow(x) with x (2, {dims(info.shape)}) must return (z (2, {d}), logdet (2,)); " \
                   f"it returned {_shape(out)}"
        if not callable(getattr(flow, "inverse", None)):
            return "the flow has no inverse(z) method: sampling runs x = flow.inverse(z)"
        try:
            back = flow.inverse(out[0])  # check_net runs this in eval mode without gradients
        except Exception as e:  # noqa: BLE001
            return f"flow.inverse(z) with z (2, {d}) raised {type(e).__name__}: {e}"
        if not isinstance(back, Tensor) or back.shape != x.shape:
            return f"flow.inverse(z) must return x of shape {tuple(x.shape)}; it returned {_shape(back)}"
        err = float((back.cpu() - x).abs().max())
        if not err <= 1e-3:
            return f"flow.inverse(flow(x)[0]) differs from x by up to {err:.3g}: the two are not inverses"
        return None

    return NetContract("flow(x) -> (z, logdet), flow.inverse(z) -> x", (x,), extra=invertible)
