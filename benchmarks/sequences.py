"""Held-out bits per character on Debian's fortunes: stablegen's GRU, LSTM and Transformer
recipes beside a plain PyTorch character LSTM of the LSTM recipe's size (the char-rnn baseline),
a unigram and a bigram model.

Data: `data.name: fortunes`, its fixed split by file (docs/autoregressive.md): train on the
train files, report the test files (kids, linux, literature, science), in windows of 64
characters, every character scored (the first of a window from a start symbol alone). One CPU
budget: every net trains the same steps of 32 windows at one thread, and the table gives the
CPU seconds each took. The n-gram models count the training characters with add-one smoothing
(the bigram conditions the first character of a window on nothing, as the nets do).

    OMP_NUM_THREADS=1 python benchmarks/sequences.py                 # 1,500 steps each
    OMP_NUM_THREADS=1 python benchmarks/sequences.py --steps 200     # a quick look

Writes benchmarks/results/sequences.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn

import stablegen as sg
from stablegen.data import load_dataset
from stablegen.recipe import load_recipe

RECIPES = {"GRU (charrnn-fortunes, model.net=gru)": ("charrnn-fortunes", {"model.net": "gru"}),
           "LSTM (charrnn-fortunes)": ("charrnn-fortunes", {}),
           "Transformer (charlm-fortunes)": ("charlm-fortunes", {})}


class CharLSTM(nn.Module):
    """The char-rnn baseline in plain PyTorch: embedding, LSTM, linear; a start id V."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab + 1, embed)
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: Tensor) -> Tensor:  # x (B, T) -> logits (B, T, V) of each character
        start = torch.full_like(x[:, :1], self.head.out_features)
        out, _ = self.lstm(self.embed(torch.cat([start, x[:, :-1]], dim=1)))
        return self.head(out)


def bits(logits: Tensor, x: Tensor) -> float:
    return float(nn.functional.cross_entropy(logits.transpose(1, 2), x, reduction="sum")) / (x.numel() * math.log(2))


def char_rnn_baseline(train: Tensor, test: Tensor, vocab: int, steps: int, seed: int) -> dict:
    """Adam 3e-3, gradient norm clipped at 1, batch 32: the LSTM recipe's optimizer, no guard,
    no schedule; the same 2 x 192 LSTM and 64-wide embedding."""
    torch.manual_seed(seed)
    model = CharLSTM(vocab, 64, 192, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(seed)
    cpu = time.process_time()
    for _ in range(steps):
        x = train[torch.randint(len(train), (32,), generator=g)]
        loss = nn.functional.cross_entropy(model(x).transpose(1, 2), x)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    cpu = time.process_time() - cpu
    model.eval()
    with torch.no_grad():
        total = sum(bits(model(xb), xb) * xb.numel() for xb in test.split(256)) / test.numel()
    return {"bpc": total, "cpu_s": cpu, "params": sum(p.numel() for p in model.parameters())}


def ngrams(train: Tensor, test: Tensor, vocab: int) -> dict[str, float]:
    """Held-out bits per character of add-one unigram and bigram models of the training text."""
    uni = torch.bincount(train.flatten(), minlength=vocab).double() + 1
    log_uni = (uni / uni.sum()).log()
    stream = train.flatten()
    pairs = torch.bincount(stream[:-1] * vocab + stream[1:], minlength=vocab * vocab).double().view(vocab, vocab) + 1
    log_bi = (pairs / pairs.sum(1, keepdim=True)).log()
    unigram = -float(log_uni[test].sum())
    bigram = -float(log_uni[test[:, 0]].sum() + log_bi[test[:, :-1], test[:, 1:]].sum())
    n = test.numel() * math.log(2)
    return {"unigram": unigram / n, "bigram": bigram / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="training steps of every net")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sequences.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = load_recipe("charrnn-fortunes").data
    train = load_dataset(cfg).x
    test = load_dataset(cfg.model_copy(update={"split": "test", "batch_size": 1}))
    vocab = int(test.info.vocab_size)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (recipe, over) in RECIPES.items():
            over = {**over, "train.steps": args.steps, "train.seed": args.seed, "train.threads": 1,
                    "train.progress": False, "train.sample_every": 0, "train.checkpoint_every": 0,
                    "eval.metrics": []}
            cpu = time.process_time()
            run = sg.train(recipe, over, run_dir=Path(tmp) / recipe / name[:3], report=False)
            cpu = time.process_time() - cpu
            got = run.evaluate(["nll"], split="test", ema=False)
            rows[name] = {"bpc": got["bpc"], "cpu_s": cpu, "params": sum(p.numel() for p in run.method.parameters())}
            print(f"{name}: {got['bpc']:.3f} bits per character, {cpu:.0f} s CPU", flush=True)
    rows["char-rnn baseline (plain PyTorch LSTM 2 x 192)"] = char_rnn_baseline(train, test.x, vocab, args.steps,
                                                                                args.seed)
    grams = ngrams(train, test.x, vocab)
    rows["bigram (add-one)"] = {"bpc": grams["bigram"]}
    rows["unigram (add-one)"] = {"bpc": grams["unigram"]}
    rows["uniform"] = {"bpc": math.log2(vocab)}

    record = {"benchmark": "held-out bits per character, fortunes test files", "steps": args.steps, "batch": 32,
              "length": cfg.length, "seed": args.seed, "threads": 1, "vocab": vocab,
              "test_characters": test.x.numel(), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"\n| model | test bits per character | parameters | CPU s |\n|---|---|---|---|")
    for name, r in rows.items():
        params = f"{r['params']:,}" if "params" in r else ""
        cpu = f"{r['cpu_s']:.0f}" if "cpu_s" in r else ""
        print(f"| {name} | {r['bpc']:.3f} | {params} | {cpu} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
