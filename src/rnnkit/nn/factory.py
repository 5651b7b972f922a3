"""Build the right recurrent layer for a cell name, so tasks can offer ``cell=`` for any cell."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..cells import CELLS, CellSpec
from .recurrent import GRU, LSTM, RNN, Recurrent

LSTM_CELLS = ("lstm", "peephole_lstm", "layernorm_lstm")
GRU_CELLS = ("gru", "gru_reset_before", "layernorm_gru")
RNN_CELLS = {"rnn": "tanh", "rnn_tanh": "tanh", "rnn_relu": "relu"}


def recurrent_layer(cell: CellSpec, input_size: int, hidden_size: int, *, num_layers: int = 1,
                    bidirectional: bool = False, dropout: float = 0.0, **extras: Any) -> nn.Module:
    """A batch-first layer for ``cell``: the torch-compatible layer where one exists (fused when
    possible), else :class:`Recurrent`.

    Args:
        cell: a registered cell name (see ``rnnkit.cells.CELLS``) or a cell class/factory.
        input_size: features per step.
        hidden_size: hidden units per direction.
        num_layers: stacked layers.
        bidirectional: add a backward direction.
        dropout: dropout between layers.
        extras: ``input_dropout``, ``recurrent_dropout``, ``zoneout``, ``implementation``, ``cell_options``...
    """
    if "batch_first" in extras:
        raise ValueError("recurrent_layer always builds batch-first layers ([batch, time, features]); drop "
                         "batch_first= (transpose a time-first input, or build rnnkit.nn.LSTM/GRU/RNN directly)")
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, dropout=dropout, batch_first=True, **extras)
    if isinstance(cell, str):
        name = cell.lower().replace("-", "_")
        if name in LSTM_CELLS:
            return LSTM(input_size, hidden_size, cell=name, **kw)
        if name in GRU_CELLS:
            return GRU(input_size, hidden_size, cell=name, **kw)
        if name in RNN_CELLS:
            return RNN(input_size, hidden_size, nonlinearity=RNN_CELLS[name], **kw)
        if name not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(sorted(CELLS))}")
    kw.pop("batch_first")
    return Recurrent(cell, input_size, hidden_size, batch_first=True, **kw)
