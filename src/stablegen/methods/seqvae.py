"""Sequence VAE (Bowman et al. 2016, "Generating Sentences from a Continuous Space").

A GRU encoder reads the whole sequence into q(z|x) = N(mu, diag(sigma^2)); z sets the
initial state of a GRU decoder that predicts step t from steps < t (teacher forcing).
The ELBO, KL annealing (linear / cyclical), beta, free bits, the IWAE log_prob bound and the
active-units health signal are those of `stablegen.methods.vae` (LatentVariableMethod).

Word dropout (Bowman et al. 2016, section 3.2): during training each decoder input is
replaced, with probability `word_dropout`, by UNK (tokens) or by a zero step whose "no
input" flag is set (real values), so the decoder must lean on z instead of the previous
step; this counters posterior collapse with strong autoregressive decoders.

Data: real-valued (B, T, D) with a Gaussian likelihood per step (log_prob is a density:
bits_per_dim(..., continuous=True)), or token ids (B, T) with the PAD/BOS/EOS/UNK convention
of `stablegen.data.sequences` and a categorical likelihood over the steps up to and
including EOS (log_prob is a probability: continuous=False).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ..base import DataInfo
from ..data.sequences import BOS, EOS, PAD, UNK
from ..nets.gru import GRUDecoder, GRUEncoder
from .diffusion_samplers import randn
from .vae import LatentOptions, LatentVariableMethod, gaussian_log_lik


class SeqVaeConfig(LatentOptions):
    family: Literal["seqvae"] = "seqvae"
    hidden: int = Field(128, ge=1)  # GRU hidden size of encoder and decoder
    layers: int = Field(1, ge=1)  # stacked GRU layers
    embed_dim: int = Field(32, ge=1)  # token embedding size (token data)
    bidirectional: bool = True  # bidirectional encoder
    word_dropout: float = Field(0.25, ge=0, le=1)  # P(decoder input -> UNK / zero step) in training
    min_log_scale: float = -5.0  # floor of the predicted log std (real-valued data)
    sample_noise: bool = True  # real-valued sample(): draw each step (else the mean)
    temperature: float = Field(1.0, gt=0)  # token sample(): softmax temperature


class SeqVAE(LatentVariableMethod):
    """GRU encoder -> z -> conditional GRU decoder over (B, T, D) reals or (B, T) tokens."""

    def __init__(self, cfg: SeqVaeConfig, info: DataInfo, encoder: GRUEncoder, decoder: GRUDecoder):
        super().__init__(cfg, info)
        self.cfg = cfg
        self.encoder, self.decoder = encoder, decoder
        self.tokens = info.kind == "tokens"
        self.log_prob_is_discrete = self.tokens
        self.length = info.shape[0]

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    # ---- decoder inputs --------------------------------------------------------------
    def _real_inputs(self, x: Tensor, drop: Tensor | None) -> Tensor:
        """x (B, T, D) -> inputs (B, T, D + 1): previous step and a 'no input' flag, which is
        set at the first step and wherever `drop` (B, T) is True."""
        b, t, d = x.shape
        prev = torch.cat([x.new_zeros(b, 1, d), x[:, :-1]], dim=1)  # (B, T, D)
        flag = x.new_zeros(b, t, 1)
        flag[:, 0] = 1
        if drop is not None:
            prev = prev.masked_fill(drop.unsqueeze(-1), 0.0)
            flag = flag.masked_fill(drop.unsqueeze(-1), 1.0)
        return torch.cat([prev, flag], dim=2)

    def _token_inputs(self, x: Tensor, drop: Tensor | None) -> Tensor:
        """x (B, T) -> inputs (B, T): BOS then x shifted right, dropped positions -> UNK."""
        prev = torch.cat([torch.full_like(x[:, :1], BOS), x[:, :-1]], dim=1)
        if drop is not None:
            prev = prev.masked_fill(drop & (prev != BOS), UNK)
        return prev

    def decoder_inputs(self, x: Tensor, *, train: bool) -> Tensor:
        """Teacher-forcing inputs of the decoder for targets x, with word dropout when training:
        (B, T) token ids, or (B, T, D + 1) real steps plus the 'no input' flag."""
        p = self.cfg.word_dropout
        drop = torch.rand(x.shape[:2], device=x.device) < p if train and p > 0 else None  # (B, T)
        return self._token_inputs(x, drop) if self.tokens else self._real_inputs(x, drop)

    def decoder_log_lik(self, x: Tensor, z: Tensor, *, train: bool) -> Tensor:
        h0 = self.decoder.initial_state(z)
        out, _ = self.decoder(self.decoder_inputs(x, train=train), h0)
        if self.tokens:  # out: logits (B, T, V)
            nll = F.cross_entropy(out.transpose(1, 2), x, reduction="none")  # (B, T)
            return -(nll * (x != PAD)).sum(dim=1)
        # out: (B, T, 2D)
        mean, log_scale = out.chunk(2, dim=2)
        return gaussian_log_lik(x, mean, log_scale.clamp(min=self.cfg.min_log_scale))

    # ---- generation ------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, z: Tensor, *, greedy: bool, generator: torch.Generator | None = None) -> Tensor:
        """Free-running decoding of z (B, z_dim) into (B, T, D) reals or (B, T) tokens.

        greedy: the mean of each step (reals) / the most likely token; otherwise a draw.
        Tokens after EOS are PAD; PAD, BOS and UNK are never emitted.
        """
        b, dev = z.shape[0], z.device
        h = self.decoder.initial_state(z)
        steps = []
        if self.tokens:
            inp = torch.full((b, 1), BOS, dtype=torch.int64, device=dev)
            done = torch.zeros(b, dtype=torch.bool, device=dev)
            for _ in range(self.length):
                logits, h = self.decoder(inp, h)
                logits = logits[:, 0] / self.cfg.temperature  # (B, V)
                logits[:, [PAD, BOS, UNK]] = float("-inf")
                if greedy:
                    tok = logits.argmax(dim=1)
                else:
                    on = generator.device if generator is not None else dev
                    tok = torch.multinomial(logits.softmax(dim=1).to(on), 1, generator=generator).squeeze(1).to(dev)
                tok = tok.masked_fill(done, PAD)
                steps.append(tok)
                done = done | (tok == EOS)
                inp = tok.unsqueeze(1)
            return torch.stack(steps, dim=1)
        d = self.info.shape[1]
        inp = torch.zeros(b, 1, d + 1, device=dev)
        inp[:, 0, d] = 1
        for _ in range(self.length):
            out, h = self.decoder(inp, h)
            mean, log_scale = out[:, 0].chunk(2, dim=1)  # (B, D) each
            x_t = mean
            if not greedy:
                eps = randn(tuple(mean.shape), generator, dev)
                x_t = mean + log_scale.clamp(min=self.cfg.min_log_scale).exp() * eps
            steps.append(x_t)
            inp = torch.cat([x_t, torch.zeros(b, 1, device=dev)], dim=1).unsqueeze(1)
        return torch.stack(steps, dim=1)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, noise: bool | None = None,
               **kw) -> Tensor:
        """n sequences from z ~ N(0, I): (n, T, D) reals or (n, T) tokens. Tokens are always
        drawn (at cfg.temperature); real steps are drawn when noise (default cfg.sample_noise)."""
        z = randn((n, self.cfg.z_dim), generator, self.device)
        greedy = False if self.tokens else not (self.cfg.sample_noise if noise is None else noise)
        return self.decode(z, greedy=greedy, generator=generator)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Greedy free-running decoding of the posterior mean: x (B, T, ...) -> (B, T, ...)."""
        mu, _ = self.encode(x)
        return self.decode(mu, greedy=True)

    @torch.no_grad()
    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int) -> Tensor:
        """Greedy decodings along the line between the posterior means of two sequences
        (Bowman et al. 2016, section 5.3 "homotopies"): x_a, x_b (T, ...) -> (steps, T, ...),
        the first decoding x_a's mean, the last x_b's."""
        if steps < 2:
            raise ValueError(f"interpolate needs steps >= 2, got {steps}")
        mu, _ = self.encode(torch.stack([x_a, x_b]))  # (2, Z)
        t = torch.linspace(0, 1, steps, device=mu.device).unsqueeze(1)  # (steps, 1)
        return self.decode((1 - t) * mu[0] + t * mu[1], greedy=True)


def build(cfg: SeqVaeConfig, info: DataInfo) -> SeqVAE:
    """A sequence VAE for (T, D) real-valued or (T,) token data."""
    if info.kind == "tokens":
        if info.vocab_size is None or info.vocab_size <= UNK:
            raise ValueError(f"token data {info.name!r} needs a vocabulary with PAD/BOS/EOS/UNK "
                             f"(ids 0-3) and words; got vocab_size={info.vocab_size}")
        v = info.vocab_size
        enc = GRUEncoder(2 * cfg.z_dim, cfg.hidden, cfg.layers, vocab_size=v, embed_dim=cfg.embed_dim,
                         bidirectional=cfg.bidirectional)
        dec = GRUDecoder(cfg.z_dim, v, cfg.hidden, cfg.layers, vocab_size=v, embed_dim=cfg.embed_dim)
    elif info.kind == "sequence":
        if len(info.shape) != 2:
            raise ValueError(f"sequence data must have per-sample shape (T, D), got {info.shape}")
        d = info.shape[1]
        enc = GRUEncoder(2 * cfg.z_dim, cfg.hidden, cfg.layers, in_dim=d, bidirectional=cfg.bidirectional)
        dec = GRUDecoder(cfg.z_dim, 2 * d, cfg.hidden, cfg.layers, in_dim=d + 1)
    else:
        raise ValueError(f"the seqvae family models sequences; {info.name!r} is {info.kind} data "
                         "(use family: vae for vectors and images)")
    return SeqVAE(cfg, info, enc, dec)
