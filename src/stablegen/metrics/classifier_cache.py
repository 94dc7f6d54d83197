"""What the feature classifiers (digits_net.py, fashion_net.py) share: a seeded training loop,
accuracy, the unit-RMS feature scale, and a cache of the trained weights.

A classifier is trained once, on CPU and one thread from a fixed seed, and cached as
safetensors in the user's cache directory ($STABLEGEN_CACHE, else ~/.cache/stablegen) under a
file name that carries its VERSION; the file is written atomically (temporary file + rename)
so concurrent runs never read half a file, and loaded once per process. A corrupt or
mismatched file is replaced by a freshly trained one, with a warning.

A classifier here is an nn.Module whose forward maps images to (features (B, F), logits
(B, K)) and which holds a scalar `feature_scale` buffer that multiplies the features.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

Net = TypeVar("Net", bound=nn.Module)
Augment = Callable[[Tensor, torch.Generator], Tensor]  # (batch, generator) -> augmented batch

LOADED: dict[Path, nn.Module] = {}  # per-process memo of every cached classifier, keyed by cache file


def cache_dir() -> Path:
    """The user's cache directory: $STABLEGEN_CACHE, else ~/.cache/stablegen."""
    env = os.environ.get("STABLEGEN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "stablegen"


def seeded_init(build: Callable[[], Net], seed: int) -> Net:
    """build() with its parameters initialized from `seed`, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def fit(net: nn.Module, x: Tensor, y: Tensor, *, epochs: int, batch_size: int, lr: float,
        generator: torch.Generator, augment: Augment | None = None) -> None:
    """Cross-entropy training of net's logits on (x, y): Adam at `lr` with a cosine decay to 0
    over all steps, batches shuffled by `generator` and augmented by `augment` (None: as they
    are) with it. Leaves net in eval mode without gradients."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            xb = x[idx] if augment is None else augment(x[idx], generator)
            loss = F.cross_entropy(net(xb)[1], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval().requires_grad_(False)


def _batches(net: nn.Module, x: Tensor, batch_size: int):
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            yield net(x[i : i + batch_size])


def set_feature_scale(net: nn.Module, x: Tensor, batch_size: int = 1000) -> None:
    """Set net.feature_scale to 1 / RMS of its features on x, so that features (and FID / KID
    values) are on a unit scale like the Inception features."""
    net.feature_scale.fill_(1.0)
    sum_sq, count = 0.0, 0
    for features, _ in _batches(net, x, batch_size):
        sum_sq, count = sum_sq + float(features.double().square().sum()), count + features.numel()
    net.feature_scale.fill_((count / sum_sq) ** 0.5)


def accuracy(net: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Share of images x whose predicted class equals y."""
    pred = torch.cat([logits.argmax(1) for _, logits in _batches(net, x, batch_size)])
    return (pred == y).double().mean().item()


def save(net: nn.Module, path: Path, *, version: str, test_accuracy: float, train_seconds: float) -> None:
    """Write net's state as safetensors, atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        save_file(state, tmp, metadata={"version": version, "test_accuracy": f"{test_accuracy:.6f}",
                                        "train_seconds": f"{train_seconds:.1f}"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: Path, build: Callable[[], Net]) -> Net:
    """The classifier cached at `path`; raises ValueError when the file is unreadable, holds
    another architecture or non-finite weights."""
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    net = build()
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} does not hold a {type(net).__name__} of this version: {err}") from err
    if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        raise ValueError(f"{path} holds non-finite weights")
    return net.eval().requires_grad_(False)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one thread, then restore torch's thread count: trained weights then do not depend
    on the machine's core count, and busy-waiting threads cannot stall training on a shared
    machine (the fashion net trained 3.8x slower on 2 threads than on 1 beside other jobs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cached_classifier(path: Path, build: Callable[[], Net], train: Callable[[], tuple[Net, float]], *,
                      version: str, min_accuracy: float, what: str) -> Net:
    """The classifier cached at `path`, else `train()` -> (net, held-out accuracy), checked
    against `min_accuracy` and cached. Memoized per process; `what` names it in messages."""
    if path in LOADED:
        return LOADED[path]  # type: ignore[return-value]
    net = None
    if path.exists():
        try:
            net = load(path, build)
        except ValueError as err:
            warnings.warn(f"{what} cache is corrupt ({err}); retraining", stacklevel=3)
    if net is None:
        start = time.perf_counter()
        with _one_thread():
            net, test_accuracy = train()
        if test_accuracy < min_accuracy:
            raise RuntimeError(f"{what} reached only {test_accuracy:.3f} held-out accuracy (< {min_accuracy}); "
                               "this is a bug in stablegen, please report it")
        save(net, path, version=version, test_accuracy=test_accuracy, train_seconds=time.perf_counter() - start)
    LOADED[path] = net
    return net
