"""Character data: English text from Debian's `fortunes` package, or any UTF-8 text file.

Both come out as windows of `data.length` characters, int64 token ids (N, T), cut from the
split's text one after the other (windows do not overlap; the tail shorter than a window is
dropped). The character vocabulary is built from the training split: id 0 is UNK (a character
that split never holds, met in val / test), id i the i-th of the sorted characters (`chars`).
The DataInfo of character data is a `TextInfo`, which carries `chars`; the autoregressive
family records them in the run's recipe (model.vocab), so a run decodes the same in any process.

fortunes   /usr/share/games/fortunes (or data.path): every fortune file (not the .dat indexes
           or .u8 links) as it is, the `%` lines between fortunes kept. Fixed split by file:
           val = VAL_FILES, test = TEST_FILES (about 10 % of the characters each), train = the
           rest; data.split=all takes every file. Overstriking (a character, BACKSPACE, another)
           keeps the last character, and control characters other than tab and newline are
           dropped (a few BELs).
text       data.path, a UTF-8 text file. With {split} in data.path a file per split; else with
           data.split train / val / test a seeded split of contiguous chunks of CHUNK_LINES lines
           (own.split_rows over the chunks: data.seed, data.val_fraction, data.test_fraction; each
           split keeps its chunks in file order); data.split=all the whole file.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..base import DataInfo
from . import SPLIT_FIELD
from .files import DataError
from .own import split_rows
from .sequences import EOS, GRAMMAR_VOCAB, PAD, UNK, detokenize

FORTUNES_DIR = "/usr/share/games/fortunes"
VAL_FILES = ("food", "humorists", "politics", "wisdom")  # 9.8 % of the characters of fortunes 1:1.99
TEST_FILES = ("kids", "linux", "literature", "science")  # 10.5 %
CHUNK_LINES = 20  # data.name=text without {split}: lines per chunk of the seeded split
TEXT_UNK = 0  # the id of a character outside the training vocabulary
_OVERSTRIKE = re.compile(r".\x08", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 and C1 controls, tab and newline kept


@dataclass(frozen=True)
class TextInfo(DataInfo):
    """DataInfo of character data, with its vocabulary: id 0 is UNK, id i is chars[i - 1]."""

    chars: str = ""


@dataclass(frozen=True)
class Characters:
    """A character vocabulary: id 0 is UNK (decoded as U+FFFD), id i is chars[i - 1]."""

    chars: str
    reserved: tuple[int, ...] = (TEXT_UNK,)  # ids never sampled
    eos: int | None = None  # no end-of-sequence token: every position is a character
    pad: int | None = None

    @property
    def size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> Tensor:
        """text -> ids (len(text),) int64; characters outside the vocabulary become UNK."""
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)  # sorted code points
        pos = np.searchsorted(table, points).clip(max=max(len(table) - 1, 0))
        known = table[pos] == points if len(table) else np.zeros(len(points), dtype=bool)
        return torch.from_numpy(np.where(known, pos + 1, TEXT_UNK).astype(np.int64))

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        return "".join(self.chars[i - 1] if 0 < i <= len(self.chars) else "\ufffd" for i in map(int, ids))

    def unknown(self, text: str) -> list[str]:
        """The characters of text outside the vocabulary, sorted."""
        return sorted(set(text) - set(self.chars))


@dataclass(frozen=True)
class Words:
    """The grammar's word vocabulary (data/sequences.py): PAD, BOS, EOS, UNK, then the words."""

    words: tuple[str, ...] = tuple(GRAMMAR_VOCAB)
    reserved: tuple[int, ...] = (PAD, 1, UNK)  # PAD, BOS and UNK are never sampled
    eos: int | None = EOS  # a sentence ends at EOS; PAD follows
    pad: int | None = PAD

    @property
    def size(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> Tensor:
        index = {w: i for i, w in enumerate(self.words)}
        return torch.tensor([index.get(w, UNK) for w in text.split()], dtype=torch.int64)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        return detokenize(ids)

    def unknown(self, text: str) -> list[str]:
        """The words of text that are not words of the grammar (special tokens included), sorted."""
        return sorted({w for w in text.split() if w not in self.words[UNK + 1 :]})


Vocabulary = Union[Characters, Words]


def vocabulary_of(info: DataInfo) -> Vocabulary | None:
    """How token ids of this data read as text: characters (TextInfo), the grammar's words, or
    None (token ids of the user's, which only the user can read)."""
    if isinstance(info, TextInfo):
        return Characters(info.chars)
    if info.kind == "tokens" and info.name == "grammar":
        return Words()
    return None


# ---- reading --------------------------------------------------------------------------------
def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the text file ({e.strerror or e})") from None


def fortune_files(root: str | Path = FORTUNES_DIR) -> dict[str, list[Path]]:
    """The fortune files of `root` by split (train, val, test), sorted by name."""
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"fortunes: {folder} does not exist; install Debian's package (apt-get install fortunes) "
                        "or set data.path to a folder of fortune files")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and not p.suffix)
    split = {"train": [p for p in files if p.name not in VAL_FILES + TEST_FILES],
             "val": [p for p in files if p.name in VAL_FILES], "test": [p for p in files if p.name in TEST_FILES]}
    for name, part in split.items():
        if not part:
            raise DataError(f"fortunes: {folder} holds no fortune files of the {name} split "
                            f"({', '.join(VAL_FILES if name == 'val' else TEST_FILES) if name != 'train' else 'any'})")
    return split


def _clean_fortunes(text: str) -> str:
    while _OVERSTRIKE.search(text):
        text = _OVERSTRIKE.sub("", text)
    return _CONTROL.sub("", text)


def _fortunes(cfg) -> dict[str, str]:
    """The text of each split of the fortunes, and of all files (sorted by name)."""
    files = fortune_files(cfg.path or FORTUNES_DIR)
    clean = {p: _clean_fortunes(_read(p)) for part in files.values() for p in part}
    text = {name: "".join(clean[p] for p in part) for name, part in files.items()}
    text["all"] = "".join(clean[p] for p in sorted(clean))
    return text


def _text_file(cfg, split: str) -> dict[str, str]:
    """The text of `split` and of the split the vocabulary comes from (train, or all)."""
    if not cfg.path:
        raise DataError("data.name='text' reads a text file: set data.path")
    if SPLIT_FIELD in cfg.path:
        if split == "all":
            raise DataError(f"data.path={cfg.path} holds {SPLIT_FIELD}: set data.split to the split to train on "
                            "(train, val or test)")
        return {s: _read(Path(cfg.path.replace(SPLIT_FIELD, s))) for s in dict.fromkeys(("train", split))}
    whole = _read(Path(cfg.path))
    if split == "all":
        return {"all": whole}
    lines = whole.splitlines(keepends=True)
    chunks = ["".join(lines[i : i + CHUNK_LINES]) for i in range(0, len(lines), CHUNK_LINES)]
    return {s: "".join(chunks[i] for i in split_rows(len(chunks), cfg.model_copy(update={"split": s}), cfg.path))
            for s in dict.fromkeys(("train", split))}


def load_text(cfg, split: str) -> tuple[Tensor, str]:
    """(windows (N, data.length) int64 ids of `split`, the training vocabulary) of data.name
    fortunes or text (cfg: recipe.DataConfig)."""
    if cfg.normalize != "none":
        raise DataError(f"data.normalize={cfg.normalize} is for float data; {cfg.name} holds characters; "
                        "set data.normalize=none")
    if cfg.binarize or cfg.labels:
        raise DataError(f"data.{'binarize' if cfg.binarize else 'labels'}=true does not apply to text "
                        f"({cfg.name}): set it to false")
    if cfg.stride != 1:
        raise DataError(f"data.stride={cfg.stride} applies to csv windows; text windows of data.length "
                        "characters follow one another without overlap")
    text = _fortunes(cfg) if cfg.name == "fortunes" else _text_file(cfg, split)
    chars = "".join(sorted(set(text["all" if split == "all" else "train"])))
    ids = Characters(chars).encode(text[split])
    n = len(ids) // cfg.length
    if n == 0:
        source = cfg.path or FORTUNES_DIR
        raise DataError(f"{source}: the {split} split holds {len(ids)} characters, fewer than one window of "
                        f"data.length={cfg.length}")
    return ids[: n * cfg.length].view(n, cfg.length), chars


def text_info(info: DataInfo, chars: str) -> TextInfo:
    """`info` with the vocabulary of its characters."""
    return TextInfo(**asdict(info), chars=chars)
