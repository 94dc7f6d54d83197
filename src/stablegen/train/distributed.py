"""Data-parallel training across processes (torchrun), kept in one small place.

    torchrun --nproc_per_node 4 -m stablegen train RECIPE

Each process takes its own slice of every global batch (data.batch_size per process), draws
its own noise (seed + rank), and averages gradients with one all-reduce per phase update,
issued between backward and the optimizer step. This is the gradient averaging of
DistributedDataParallel (Li et al. 2020, "PyTorch Distributed") done by hand, as
stylegan2-ada's training loop does, because a GAN's phases must decide what to reduce
(the generator phase must not reduce the critic's gradients), gradient penalties need double
backward (which the DDP wrapper does not support), and parameter names (so checkpoints) stay
the same as in a single process. Buffers (batch-norm statistics) are not broadcast during
training, like DDP's broadcast_buffers=False. The phase's loss travels in the same buffer, so every rank
sees the same loss and gradient norm and the guard reaches the same verdict everywhere; the
verdict itself is also agreed (max over ranks) before anyone rolls back or stops.

When torchrun restarts the workers after a failure (--max-restarts), `restarted()` is true and
the run continues from its newest checkpoint (api.train).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor, nn


def setup() -> tuple[int, int]:
    """(rank, world) from torchrun's environment, initialising the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # torchrun keeps one key-value store across worker restarts (--max-restarts), still holding
        # the addresses the failed workers published: each attempt gets a key space of its own
        store, rank, world = next(dist.rendezvous("env://"))
        store = dist.PrefixStore(f"stablegen/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", store=store, rank=rank,
                                world_size=world)
    return dist.get_rank(), dist.get_world_size()


def restarted() -> bool:
    """True in workers that torchrun started again after a failure (--max-restarts)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def from_rank_zero(value):
    """Rank 0's value (any picklable object) on every rank, e.g. a run directory named by the clock."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_state(module: nn.Module) -> None:
    """Make every rank hold rank 0's weights and buffers: at the start, and again after a
    data-dependent initialisation (actnorm, GAN standardization), which each rank ran on its own
    slice of the first batch."""
    with torch.no_grad():
        for t in (*module.parameters(), *module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: list[nn.Parameter], loss: Tensor) -> Tensor:
    """All-reduce the mean of the phase's gradients and loss in one flat buffer; returns
    the averaged loss. Parameters without a gradient on this update are left alone."""
    world = dist.get_world_size()
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().float().reshape(1).to(grads[0].dtype if grads else torch.float32)])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n
    return flat[-1].to(loss.dtype)


def mean_values(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each value over ranks (health signals, diversity)."""
    if not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / dist.get_world_size()).tolist()))


def agree(code: int, device: torch.device) -> int:
    """The largest code over ranks (0 nothing, 2 rollback, 3 stop): all act together."""
    t = torch.tensor([code], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
