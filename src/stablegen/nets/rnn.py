"""Recurrent sequence nets: a GRU (Cho et al. 2014) or LSTM (Hochreiter & Schmidhuber 1997)
stack between a step input (token embedding or real-valued step) and a linear head.

    out, state = net(inputs, state)     inputs (B, T) ids or (B, T, D) -> out (B, T, out_dim)

`state` is None at the start of a sequence; passing back the returned state continues the
sequence one call later (step-by-step generation). The net knows nothing of objectives.
"""

from __future__ import annotations

from typing import Literal, Union

from torch import Tensor, nn

from .gru import _StepInput

Cell = Literal["gru", "lstm"]
RecurrentState = Union[Tensor, tuple[Tensor, Tensor]]  # GRU: h; LSTM: (h, c); each (layers, B, hidden)


class RecurrentNet(nn.Module):
    """Token ids (B, T) or real steps (B, T, D) -> outputs (B, T, out_dim) and the new state."""

    def __init__(self, out_dim: int, *, cell: Cell = "lstm", hidden: int = 256, layers: int = 2,
                 dropout: float = 0.0, in_dim: int | None = None, vocab_size: int | None = None,
                 embed_dim: int = 64):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"unknown recurrent cell {cell!r}; choose gru or lstm")
        self.inp = _StepInput(in_dim, vocab_size, embed_dim)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(self.inp.dim, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, inputs: Tensor, state: RecurrentState | None = None) -> tuple[Tensor, RecurrentState]:
        out, state = self.rnn(self.inp(inputs), state)  # out (B, T, hidden)
        return self.head(self.drop(out)), state
