"""Autoregressive sequence models: next-step maximum likelihood.

    p(x) = prod_t p(x_t | x_<t)

A net reads the steps before t and predicts step t; training is teacher forcing (the inputs
are the targets shifted right behind a start symbol), and log_prob is exact. References:
Graves 2013, "Generating Sequences With Recurrent Neural Networks" (character and real-valued
sequences with an LSTM, mixture density outputs, section 4.1); Karpathy 2015, "The
Unreasonable Effectiveness of Recurrent Neural Networks" (char-rnn); Radford et al. 2019,
"Language Models are Unsupervised Multitask Learners" (a causal Transformer language model).

Steps are
- tokens (B, T): a categorical over the vocabulary (characters of `data.name: fortunes / text`,
  the grammar's words, or the user's ids). With an end token (the grammar: EOS then PAD) the
  steps after the first EOS are PAD by construction and count nothing. log_prob is log P of the
  ids (`log_prob_is_discrete`); bits per character = -log_prob / (T ln 2).
- reals (B, T, D): a mixture of K diagonal Gaussians per step (Bishop 1994, "Mixture Density
  Networks"): p(x_t | x_<t) = sum_k pi_k N(x_t; mu_k, diag sigma_k^2); log_prob is a density.

Nets (nets/rnn.py, nets/transformer.py): `model.net` gru, lstm or transformer, each called as
`out, state = net(inputs, state)`, so one sampler serves both. The loss is -log p(x) / T (nats
per step). Every window is a sequence of its own from a zero state: no truncated
backpropagation through time across windows.

Sampling is ancestral, one step per net call, with a temperature (tokens: logits / temperature;
reals: mixture logits / temperature and each sigma x temperature), top-k (Fan et al. 2018,
"Hierarchical Neural Story Generation") and top-p (Holtzman et al. 2020, "The Curious Case of
Neural Text Degeneration"), and a prompt that the samples continue.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..base import Batch, DataInfo, FamilyConfig, Method, Phase
from ..data.text import TextInfo, Vocabulary, vocabulary_of
from ..nets.rnn import RecurrentNet
from ..nets.transformer import CausalTransformer
from .diffusion_samplers import randn


class AutoregressiveConfig(FamilyConfig):
    family: Literal["autoregressive"] = "autoregressive"
    net: Literal["gru", "lstm", "transformer"] = "lstm"  # the sequence net
    hidden: int = Field(256, ge=1)  # RNN hidden size; Transformer width
    layers: int = Field(2, ge=1)  # stacked RNN layers; Transformer blocks
    embed_dim: int = Field(64, ge=1)  # RNN token embedding size (the Transformer embeds into its width)
    heads: int = Field(4, ge=1)  # Transformer attention heads
    positions: Literal["learned", "rotary"] = "learned"  # Transformer positions (rotary: Su et al. 2021)
    context: int | None = Field(None, ge=1)  # Transformer context in steps (None: data.length)
    dropout: float = Field(0.0, ge=0, lt=1)  # between RNN layers / in Transformer blocks
    components: int = Field(5, ge=1)  # real-valued steps: Gaussians K of the mixture
    min_log_scale: float = -7.0  # real-valued steps: floor of each component's log std
    vocab: str | None = None  # character data: the training vocabulary; recorded by training, leave unset


def mixture_log_prob(x: Tensor, logits: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log sum_k pi_k N(x; mu_k, diag sigma_k^2) with pi = softmax(logits), sigma = exp(log_scale):
    x (..., D), logits (..., K), mean and log_scale (..., K, D) -> (...)."""
    z = (x.unsqueeze(-2) - mean) * torch.exp(-log_scale)  # (..., K, D)
    per_component = (-0.5 * z.square() - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)  # (..., K)
    return torch.logsumexp(F.log_softmax(logits, dim=-1) + per_component, dim=-1)


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """logits (B, V) with all but the top_k largest, and all outside the smallest set whose
    probability reaches top_p (the nucleus), set to -inf."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)
        probs = ordered.softmax(dim=-1)
        outside = probs.cumsum(dim=-1) - probs >= top_p  # the mass before it already reaches top_p
        logits = logits.masked_fill(torch.zeros_like(outside).scatter(-1, order, outside), float("-inf"))
    return logits


def _draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One category per row of probs (B, V) -> (B,), drawn on the generator's device."""
    on = generator.device if generator is not None else probs.device
    return torch.multinomial(probs.to(on), 1, generator=generator).squeeze(1).to(probs.device)


class Autoregressive(Method):
    """Next-step likelihood over tokens (B, T) or real steps (B, T, D) with a GRU / LSTM /
    causal Transformer net(inputs, state) -> (outputs, state)."""

    def __init__(self, net: nn.Module, info: DataInfo, vocab: Vocabulary | None = None, components: int = 5,
                 min_log_scale: float = -7.0):
        super().__init__()
        self.net, self.info, self.vocab = net, info, vocab
        self.tokens = info.kind == "tokens"
        self.log_prob_is_discrete = self.tokens
        self.length = info.shape[0]
        self.k, self.min_log_scale = components, min_log_scale
        if self.tokens:
            self.start = int(info.vocab_size)  # type: ignore[arg-type]  # the start symbol: one id past the vocabulary
            self.reserved = list(vocab.reserved) if vocab is not None else []  # ids never sampled
            self.eos = vocab.eos if vocab is not None else None
            self.pad = vocab.pad if vocab is not None else None
        else:
            self.dim = info.shape[1]

    # ---- inputs: the steps before t, behind a start symbol ---------------------------------------
    def _as_input(self, x: Tensor) -> Tensor:
        """Steps x (B, t) ids or (B, t, D) -> net inputs: ids, or the step and a 0 'start' flag (B, t, D + 1)."""
        return x if self.tokens else F.pad(x, (0, 1))

    def _start(self, n: int) -> Tensor:
        """The start input (n, 1): the start id, or a zero step with the 'start' flag set."""
        if self.tokens:
            return torch.full((n, 1), self.start, dtype=torch.int64, device=self.device)
        s = torch.zeros(n, 1, self.dim + 1, device=self.device)
        s[..., -1] = 1
        return s

    def teacher_inputs(self, x: Tensor) -> Tensor:
        """Teacher forcing: the start input, then x without its last step, (B, T[, D + 1])."""
        return torch.cat([self._start(len(x)), self._as_input(x[:, :-1])], dim=1)

    # ---- likelihood ---------------------------------------------------------------------------
    def _split(self, out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mixture parameters of net outputs (..., K (1 + 2D)): logits (..., K), mean and log_scale (..., K, D)."""
        k, d = self.k, self.dim
        mean = out[..., k : k + k * d].unflatten(-1, (k, d))
        log_scale = out[..., k + k * d :].unflatten(-1, (k, d)).clamp(min=self.min_log_scale)
        return out[..., :k], mean, log_scale

    def step_log_probs(self, x: Tensor) -> Tensor:
        """log p(x_t | x_<t) of every step, (B, T); 0 after the first end token."""
        out, _ = self.net(self.teacher_inputs(x))  # (B, T, V) or (B, T, K (1 + 2D))
        if not self.tokens:
            return mixture_log_prob(x, *self._split(out))
        lp = -F.cross_entropy(out.transpose(1, 2), x, reduction="none")  # (B, T)
        if self.eos is not None:
            ended = (x == self.eos).long()
            lp = lp * ((ended.cumsum(dim=1) - ended) == 0)  # steps after the first EOS are PAD
        return lp

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) (nats) of tokens (B, T) or real steps (B, T, D), shape (B,)."""
        was_training = self.training
        self.eval()
        try:
            return self.step_log_probs(x).sum(dim=1)
        finally:
            self.train(was_training)

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        x = batch.x if self.tokens else batch.x.float()
        nll = -self.step_log_probs(x).sum(dim=1) / self.length  # (B,) nats per step
        logs = {"nll": nll.detach().mean()}
        if self.tokens:
            logs["bpc"] = logs["nll"] / math.log(2.0)
        return nll, logs

    def phases(self) -> list[Phase]:
        return [Phase("main", list(self.parameters()), self.loss)]

    # ---- sampling -----------------------------------------------------------------------------
    def _prompt(self, prompt: str | Tensor | None, n: int) -> Tensor:
        """The prompt as steps (n, P[, D]): text (read with the data's vocabulary), or a tensor
        (P[, D]) or (n, P[, D]) of ids / model-space steps."""
        shape = () if self.tokens else (self.dim,)
        if prompt is None:
            return torch.zeros(n, 0, *shape, device=self.device, dtype=torch.int64 if self.tokens else torch.float32)
        if isinstance(prompt, str):
            if not self.tokens or self.vocab is None:
                raise ValueError(f"a text prompt needs token data whose vocabulary is known; {self.info.name!r} "
                                 f"is {self.info.kind} data: give the prompt as a tensor")
            unknown = self.vocab.unknown(prompt)
            if unknown:
                raise ValueError(f"the prompt holds {', '.join(map(repr, unknown))}, outside the run's vocabulary")
            prompt = self.vocab.encode(prompt)
        prompt = torch.as_tensor(prompt, device=self.device)
        if prompt.dim() == len(shape) + 1:
            prompt = prompt.expand(n, *prompt.shape)
        if prompt.dim() != len(shape) + 2 or len(prompt) != n or tuple(prompt.shape[2:]) != shape:
            raise ValueError(f"prompt of shape {tuple(prompt.shape)}: expected (P{', D' if shape else ''}) or "
                             f"(n, P{', D' if shape else ''}) with n={n}" + (f", D={self.dim}" if shape else ""))
        if self.tokens and (prompt.is_floating_point() or prompt.min() < 0 or prompt.max() >= self.start):
            raise ValueError(f"prompt ids must be integers 0..{self.start - 1}")
        return prompt.long() if self.tokens else prompt.float()

    def _next(self, out: Tensor, generator: torch.Generator | None, temperature: float, top_k: int | None,
              top_p: float | None) -> Tensor:
        """Draw the next step from the net's last outputs (n, out_dim): ids (n,) or steps (n, D)."""
        if self.tokens:
            logits = out.float() / temperature
            logits[:, self.reserved] = float("-inf")
            return _draw(filter_logits(logits, top_k, top_p).softmax(dim=1), generator)
        logits, mean, log_scale = self._split(out.float())
        k = _draw((logits / temperature).softmax(dim=1), generator)  # (n,) component of each sample
        pick = torch.arange(len(k), device=k.device)
        eps = randn(tuple(mean[:, 0].shape), generator, mean.device)
        return mean[pick, k] + log_scale[pick, k].exp() * temperature * eps

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, prompt: str | Tensor | None = None,
               length: int | None = None, **kw) -> Tensor:
        """n sequences (n, length) of ids or (n, length, D) of steps, each continuing `prompt`
        (text, or a tensor of ids / model-space steps, its steps included in `length`;
        default: the data's length). Tokens are drawn from softmax(logits / temperature) cut to
        top_k and top_p; real steps from the mixture with its logits / temperature and each
        sigma x temperature (top_k and top_p do not apply)."""
        if kw:
            raise TypeError(f"autoregressive sampling has no option {', '.join(sorted(kw))} (it takes temperature, "
                            "top_k, top_p, prompt, length)")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if not self.tokens and (top_k is not None or top_p is not None):
            raise ValueError("top_k and top_p cut a categorical: they apply to token data, not real-valued steps")
        length = self.length if length is None else length
        steps = self._prompt(prompt, n)
        if steps.shape[1] > length:
            raise ValueError(f"the prompt has {steps.shape[1]} steps, more than the sample length {length}")
        was_training = self.training
        self.eval()
        try:
            x = torch.cat([steps, steps.new_zeros(n, length - steps.shape[1], *steps.shape[2:])], dim=1)
            out, state = self.net(torch.cat([self._start(n), self._as_input(steps)], dim=1))
            ended = (steps == self.eos).any(dim=1) if self.tokens and self.eos is not None else None
            for t in range(steps.shape[1], length):
                x_t = self._next(out[:, -1], generator, temperature, top_k, top_p)
                if ended is not None:
                    x_t = x_t.masked_fill(ended, self.pad)
                    ended = ended | (x_t == self.eos)
                x[:, t] = x_t
                if t + 1 < length:
                    out, state = self.net(self._as_input(x_t.unsqueeze(1)), state)
        finally:
            self.train(was_training)
        return x


def build(cfg: AutoregressiveConfig, info: DataInfo) -> Autoregressive:
    """An autoregressive model of (T,) token or (T, D) real-valued sequences. On character data
    the training vocabulary is recorded in cfg.vocab (so the run's recipe.yaml keeps it), and a
    recorded vocabulary must match the data's."""
    if info.kind == "tokens":
        if not info.vocab_size:
            raise ValueError(f"token data {info.name!r} has no known vocabulary size; the autoregressive family "
                             "needs it to size its output")
        if isinstance(info, TextInfo):
            if cfg.vocab is None:
                cfg.vocab = info.chars
            elif cfg.vocab != info.chars:
                added, lost = sorted(set(info.chars) - set(cfg.vocab)), sorted(set(cfg.vocab) - set(info.chars))
                raise ValueError(f"the {info.name} data's characters differ from the run's model.vocab (the text "
                                 f"changed since training: new {added}, gone {lost}); train a new run on this "
                                 "text, or restore the text the run was trained on")
        inputs = {"vocab_size": info.vocab_size + 1}  # + the start symbol
        out_dim = info.vocab_size
    elif info.kind == "sequence" and len(info.shape) == 2:
        inputs = {"in_dim": info.shape[1] + 1}  # + the start flag
        out_dim = cfg.components * (1 + 2 * info.shape[1])
    else:
        raise ValueError(f"the autoregressive family models sequences (T,) of tokens or (T, D) of reals; "
                         f"{info.name!r} is {info.kind} data of shape {info.shape}")
    length = info.shape[0]
    if cfg.net == "transformer":
        context = cfg.context or length
        if context < length:
            raise ValueError(f"model.context={context} is shorter than the sequences (data.length={length}); "
                             "the Transformer sees a whole training window")
        net: nn.Module = CausalTransformer(out_dim, dim=cfg.hidden, layers=cfg.layers, heads=cfg.heads,
                                           context=context, positions=cfg.positions, dropout=cfg.dropout, **inputs)
    else:
        net = RecurrentNet(out_dim, cell=cfg.net, hidden=cfg.hidden, layers=cfg.layers, dropout=cfg.dropout,
                           embed_dim=cfg.embed_dim, **inputs)
    return Autoregressive(net, info, vocabulary_of(info), cfg.components, cfg.min_log_scale)
