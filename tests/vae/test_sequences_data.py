"""Synthetic sequences (sines, grammar tokens) and the CSV time-series loader."""

from __future__ import annotations

import math

import pytest
import torch

from stablegen.data.sequences import (
    BOS, EOS, GRAMMAR_VOCAB, PAD, UNK, detokenize, grammar_tokens, is_grammatical, load_csv_windows, sines,
)


def ids(words: str) -> list[int]:
    return [GRAMMAR_VOCAB.index(w) for w in words.split()]


# ---- sines ---------------------------------------------------------------------------------


def test_sines_shape_seed_and_variety():
    x = sines(500, 40, torch.Generator().manual_seed(0))
    assert x.shape == (500, 40, 1) and x.dtype == torch.float32
    assert torch.equal(x, sines(500, 40, torch.Generator().manual_seed(0)))
    assert not torch.equal(x, sines(500, 40, torch.Generator().manual_seed(1)))
    # amplitude 1 plus N(0, 0.1^2) noise: |x| <= 1 + 6 sigma (P(exceed) ~ 1e-9 per value)
    assert x.abs().max() < 1.6
    # random phase: the first steps of different sequences spread over [-1, 1] (a fixed
    # phase would give one value +- noise); std of sin(U[0, 2pi)) is 0.71
    assert x[:, 0, 0].std() > 0.5


def test_sines_noise_level():
    # with zero noise the series is exactly a sine: compare the two with the same generator state
    clean = sines(200, 30, torch.Generator().manual_seed(3), noise=0.0)
    noisy = sines(200, 30, torch.Generator().manual_seed(3), noise=0.1)
    resid = noisy - clean
    # 6,000 N(0, 0.01) residuals: the sample std is within 5 % of 0.1 (its relative SE is ~0.9 %)
    assert abs(resid.std().item() - 0.1) < 0.005
    assert clean.abs().max() <= 1.0 + 1e-6


# ---- grammar -------------------------------------------------------------------------------


def test_vocab_convention():
    assert GRAMMAR_VOCAB[PAD] == "<pad>" and GRAMMAR_VOCAB[BOS] == "<bos>"
    assert GRAMMAR_VOCAB[EOS] == "<eos>" and GRAMMAR_VOCAB[UNK] == "<unk>"
    assert 10 <= len(GRAMMAR_VOCAB) <= 20 and len(set(GRAMMAR_VOCAB)) == len(GRAMMAR_VOCAB)


def test_grammar_tokens_are_grammatical_and_padded():
    x = grammar_tokens(400, 12, torch.Generator().manual_seed(0))
    assert x.shape == (400, 12) and x.dtype == torch.int64
    assert all(is_grammatical(row) for row in x)
    for row in x.tolist():
        end = row.index(EOS)
        assert 3 <= end <= 7 and all(t == PAD for t in row[end + 1:])
        assert BOS not in row and UNK not in row
    # the language has 32 noun phrases x 99 verb phrases = 3,168 sentences: 400 draws give many
    assert len({tuple(r) for r in x.tolist()}) > 200
    assert torch.equal(x, grammar_tokens(400, 12, torch.Generator().manual_seed(0)))


def test_detokenize():
    assert detokenize(ids("<bos> the big cat sees <eos> <pad>")) == "the big cat sees"
    assert detokenize(ids("a <unk> likes")) == "a <unk> likes"
    assert detokenize([5, 99, EOS]) == "a <99?>"


def test_grammar_too_short_length_raises():
    with pytest.raises(ValueError, match="length >= 8"):
        grammar_tokens(3, 7, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("sentence, ok", [
    ("the cat sees <eos>", True),
    ("a big dog chases the red fox <eos> <pad> <pad>", True),
    ("<bos> a bird likes <eos>", True),
    ("the cat sees", False),  # no EOS
    ("cat the sees <eos>", False),  # word order
    ("the big red cat sees <eos>", False),  # two adjectives
    ("the cat sees the <eos>", False),  # unfinished object
    ("the cat <eos>", False),  # no verb
    ("the cat sees <eos> dog", False),  # words after EOS
    ("the <unk> sees <eos>", False),  # UNK is no word
    ("the cat sees the dog likes <eos>", False),  # two verbs
])
def test_is_grammatical(sentence, ok):
    assert is_grammatical(ids(sentence)) is ok


def test_is_grammatical_rejects_out_of_range_ids():
    assert not is_grammatical([len(GRAMMAR_VOCAB), EOS])
    assert not is_grammatical(torch.tensor([-1, EOS]))


# ---- CSV windows ---------------------------------------------------------------------------


def test_csv_header_and_windows(tmp_path):
    p = tmp_path / "series.csv"
    p.write_text("a,b\n" + "".join(f"{i},{10 * i}\n" for i in range(10)))
    w = load_csv_windows(p, length=4, stride=3)
    assert w.shape == (3, 4, 2) and w.dtype == torch.float32  # starts 0, 3, 6
    assert torch.equal(w[1, :, 0], torch.tensor([3.0, 4.0, 5.0, 6.0]))
    assert torch.equal(w[2, :, 1], torch.tensor([60.0, 70.0, 80.0, 90.0]))


def test_csv_without_header(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("1.5,2\n-3,4e-1\n5,6\n")
    w = load_csv_windows(p, length=2, stride=1)
    assert w.shape == (2, 2, 2)
    assert torch.allclose(w[0], torch.tensor([[1.5, 2.0], [-3.0, 0.4]]))


@pytest.mark.parametrize("body, match", [
    ("t,v\n1,2\n3,abc\n5,6\n", r"row 3, column 2 \('v'\): 'abc' is not a number"),
    ("1,2\n3,nan\n", r"row 2, column 2: 'nan' is not finite"),
    ("1,2\n3,4\n-inf,1\n", r"row 3, column 1: '-inf' is not finite"),
    ("1,2\n3\n", r"row 2 has 1 columns, expected 2"),
    ("", "empty"),
    ("a,b\n", "no data rows"),
    ("1,2\n3,4\n", "fewer than the window length 5"),
])
def test_csv_errors_name_file_and_row(tmp_path, body, match):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(ValueError, match=match) as err:
        load_csv_windows(p, length=5 if "fewer" in match else 2, stride=1)
    assert str(p) in str(err.value)


def test_csv_missing_file_and_bad_args(tmp_path):
    with pytest.raises(ValueError, match="nothere.csv"):
        load_csv_windows(tmp_path / "nothere.csv", 2, 1)
    with pytest.raises(ValueError, match="stride"):
        load_csv_windows(tmp_path / "nothere.csv", 2, 0)


def test_csv_window_count(tmp_path):
    p = tmp_path / "long.csv"
    p.write_text("".join(f"{math.sin(i)}\n" for i in range(100)))
    # (rows - T) // stride + 1 windows
    assert load_csv_windows(p, 20, 7).shape == ((100 - 20) // 7 + 1, 20, 1)
