"""Sequence data: noisy sines, sentences of a tiny grammar, and CSV time-series windows.

Real-valued sequences come out as float32 (N, T, D); token sequences as int64 (N, T) over
GRAMMAR_VOCAB, with the id convention PAD = 0, BOS = 1, EOS = 2, UNK = 3 that the sequence
VAE relies on: a row holds the sentence, then EOS, then PAD to length T (BOS is never stored;
a decoder prepends it).

The grammar (a finite context-free grammar, so also regular):
    S  -> NP VP                 NP -> Det N | Det Adj N
    VP -> V | V NP              Det -> the | a
    N  -> cat | dog | bird | fox      Adj -> big | small | red      V -> sees | chases | likes
Sentences have 3 to 7 words (8 tokens with EOS).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from .files import DataError

PAD, BOS, EOS, UNK = 0, 1, 2, 3
_DET, _N, _ADJ, _V = ("the", "a"), ("cat", "dog", "bird", "fox"), ("big", "small", "red"), ("sees", "chases", "likes")
GRAMMAR_VOCAB: list[str] = ["<pad>", "<bos>", "<eos>", "<unk>", *_DET, *_N, *_ADJ, *_V]
_ID = {w: i for i, w in enumerate(GRAMMAR_VOCAB)}
MAX_SENTENCE = 7  # words in the longest sentence: Det Adj N V Det Adj N


def sines(n: int, length: int, generator: torch.Generator, noise: float = 0.1) -> Tensor:
    """n noisy sines (n, T, 1): sin(2 pi f t / T + phi) + noise * eps, with f ~ U[1, 3] cycles
    per window, phase phi ~ U[0, 2 pi) and eps ~ N(0, 1) per step."""
    g = generator
    f = 1 + 2 * torch.rand(n, 1, generator=g)  # (n, 1)
    phase = 2 * math.pi * torch.rand(n, 1, generator=g)
    t = torch.arange(length, dtype=torch.float32) / length  # (T,)
    x = torch.sin(2 * math.pi * f * t + phase) + noise * torch.randn(n, length, generator=g)
    return x.unsqueeze(-1)


def _noun_phrase(g: torch.Generator) -> list[str]:
    pick = lambda words: words[int(torch.randint(len(words), (1,), generator=g))]  # noqa: E731
    np_ = [pick(_DET)]
    if torch.rand(1, generator=g).item() < 0.5:
        np_.append(pick(_ADJ))
    return np_ + [pick(_N)]


def grammar_tokens(n: int, length: int, generator: torch.Generator) -> Tensor:
    """n sentences of the grammar as token ids (n, T): words, EOS, then PAD to T."""
    if length < MAX_SENTENCE + 1:
        raise ValueError(f"grammar sentences need length >= {MAX_SENTENCE + 1} (7 words + EOS), got {length}")
    g = generator
    out = torch.full((n, length), PAD, dtype=torch.int64)
    for i in range(n):
        words = _noun_phrase(g) + [_V[int(torch.randint(len(_V), (1,), generator=g))]]
        if torch.rand(1, generator=g).item() < 0.5:
            words += _noun_phrase(g)
        ids = [_ID[w] for w in words] + [EOS]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def detokenize(tokens: Sequence[int] | Tensor) -> str:
    """A token row as text: the words up to EOS (BOS, PAD and EOS left out, UNK kept)."""
    ids = [int(t) for t in tokens]
    ids = ids[: ids.index(EOS)] if EOS in ids else ids
    return " ".join(GRAMMAR_VOCAB[t] if 0 <= t < len(GRAMMAR_VOCAB) else f"<{t}?>" for t in ids if t not in (PAD, BOS))


def _parse_np(words: list[str], i: int) -> int | None:
    """Index after a noun phrase starting at i, or None."""
    if i >= len(words) or words[i] not in _DET:
        return None
    i += 1
    if i < len(words) and words[i] in _ADJ:
        i += 1
    return i + 1 if i < len(words) and words[i] in _N else None


def is_grammatical(tokens: Sequence[int] | Tensor) -> bool:
    """True when `tokens` (T,) is a sentence of the grammar followed by EOS and only PAD after
    (an optional leading BOS is allowed)."""
    ids = [int(t) for t in tokens]
    if ids and ids[0] == BOS:
        ids = ids[1:]
    if EOS not in ids:
        return False
    end = ids.index(EOS)
    if any(t != PAD for t in ids[end + 1:]):
        return False
    if any(t < 0 or t >= len(GRAMMAR_VOCAB) for t in ids[:end]):
        return False
    words = [GRAMMAR_VOCAB[t] for t in ids[:end]]
    i = _parse_np(words, 0)
    if i is None or i >= len(words) or words[i] not in _V:
        return False
    i += 1
    return i == len(words) or _parse_np(words, i) == len(words)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def load_csv_windows(path: str | Path, length: int, stride: int = 1) -> Tensor:
    """Windows (n, T, D) float32 of a CSV time series: columns are channels, rows are steps.

    The first row is a header when none of its cells is a number. Every other cell must be a
    finite number; anything else raises ValueError naming the file, row (1-based, as an
    editor counts lines) and column. Windows start every `stride` rows.
    """
    if length < 1 or stride < 1:
        raise DataError(f"window length and stride must be >= 1, got length={length}, stride={stride}")
    return windows(read_csv_series(path), length, stride, path)


def windows(series: Tensor, length: int, stride: int, source: str | Path) -> Tensor:
    """Windows (n, T, D) of a series (rows, D), starting every `stride` rows."""
    if len(series) < length:
        raise DataError(f"{source}: {len(series)} data rows are fewer than the window length {length}")
    return series.unfold(0, length, stride).transpose(1, 2).contiguous()  # (n, T, D)


def read_csv_series(path: str | Path) -> Tensor:
    """The series (rows, D) float32 of a CSV file (see load_csv_windows)."""
    p = Path(path)
    try:
        with p.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DataError(f"{p}: cannot read the CSV file ({e.strerror or e})") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{p}: not a readable CSV text file ({e})") from None
    numbered = [(r + 1, row) for r, row in enumerate(rows) if any(c.strip() for c in row)]  # skip blank lines
    if not numbered:
        raise DataError(f"{p}: the CSV file is empty")
    header: list[str] | None = None
    if not any(_is_number(c) for c in numbered[0][1]):
        header = [c.strip() for c in numbered[0][1]]
        numbered = numbered[1:]
    if not numbered:
        raise DataError(f"{p}: the CSV file has a header but no data rows")
    width = len(header) if header is not None else len(numbered[0][1])
    values: list[list[float]] = []
    for line, row in numbered:
        if len(row) != width:
            raise DataError(f"{p}: row {line} has {len(row)} columns, expected {width}")
        parsed = []
        for col, cell in enumerate(row):
            name = f"column {col + 1}" + (f" ({header[col]!r})" if header is not None else "")
            try:
                v = float(cell)
            except ValueError:
                raise DataError(f"{p}: row {line}, {name}: {cell.strip()!r} is not a number") from None
            if not math.isfinite(v):
                raise DataError(f"{p}: row {line}, {name}: {cell.strip()!r} is not finite")
            parsed.append(v)
        values.append(parsed)
    return torch.tensor(values, dtype=torch.float32)  # (rows, D)
