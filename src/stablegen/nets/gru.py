"""GRU sequence encoder and conditional GRU decoder (Cho et al. 2014), over real-valued
steps (B, T, D) or token ids (B, T).

The decoder is the sentence-VAE decoder of Bowman et al. 2016, "Generating Sentences from a
Continuous Space": a conditioning vector sets the initial hidden state of a GRU language
model. The nets know nothing of objectives: they map tensors to tensors.
"""

from __future__ import annotations

from torch import Tensor, nn


class _StepInput(nn.Module):
    """Token ids (B, T) -> embeddings (B, T, E), or real steps (B, T, D) passed through."""

    def __init__(self, in_dim: int | None, vocab_size: int | None, embed_dim: int):
        super().__init__()
        if (in_dim is None) == (vocab_size is None):
            raise ValueError("give exactly one of in_dim (real-valued steps) or vocab_size (tokens)")
        self.embed = nn.Embedding(vocab_size, embed_dim) if vocab_size is not None else None
        self.dim = embed_dim if vocab_size is not None else int(in_dim)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        return self.embed(x) if self.embed is not None else x


class GRUEncoder(nn.Module):
    """x (B, T, D) or tokens (B, T) -> (B, out_dim) from the GRU's final hidden state(s)."""

    def __init__(self, out_dim: int, hidden: int = 128, layers: int = 1, *, in_dim: int | None = None,
                 vocab_size: int | None = None, embed_dim: int = 32, bidirectional: bool = True):
        super().__init__()
        self.inp = _StepInput(in_dim, vocab_size, embed_dim)
        self.gru = nn.GRU(self.inp.dim, hidden, layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), out_dim)
        self.directions = 2 if bidirectional else 1

    def forward(self, x: Tensor) -> Tensor:
        _, h = self.gru(self.inp(x))  # h (layers * directions, B, hidden)
        last = h[-self.directions:].transpose(0, 1).flatten(1)  # top layer, (B, directions * hidden)
        return self.head(last)


class GRUDecoder(nn.Module):
    """Conditional GRU: c (B, c_dim) sets the initial state; inputs (B, T, D) or (B, T) ids
    -> outputs (B, T, out_dim) and the final state (layers, B, hidden) for step-by-step use."""

    def __init__(self, c_dim: int, out_dim: int, hidden: int = 128, layers: int = 1, *,
                 in_dim: int | None = None, vocab_size: int | None = None, embed_dim: int = 32):
        super().__init__()
        self.inp = _StepInput(in_dim, vocab_size, embed_dim)
        self.layers, self.hidden = layers, hidden
        self.init = nn.Linear(c_dim, layers * hidden)
        self.gru = nn.GRU(self.inp.dim, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, out_dim)

    def initial_state(self, c: Tensor) -> Tensor:
        """c (B, c_dim) -> h0 (layers, B, hidden)."""
        h = self.init(c).tanh().view(c.shape[0], self.layers, self.hidden)
        return h.transpose(0, 1).contiguous()

    def forward(self, inputs: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        out, h = self.gru(self.inp(inputs), h)  # out (B, T, hidden)
        return self.head(out), h
