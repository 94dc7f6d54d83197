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
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, NamedTuple

import torch
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
