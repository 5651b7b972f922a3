"""Recurrent cells: one time step each, written from their equations.

Cells are looked up by name through :func:`make_cell`; a class or a factory
``(input_size, hidden_size, **options) -> RecurrentCell`` works wherever a name does.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from .base import RecurrentCell, State
from .gru import GRUCell, LayerNormGRUCell
from .lstm import LayerNormLSTMCell, LSTMCell
from .minrnn import LinearRecurrentCell, MinGRUCell, MinLSTMCell
from .rnn import RNNCell

CellFactory = Callable[..., RecurrentCell]
CellSpec = str | CellFactory

CELLS: dict[str, CellFactory] = {
    "rnn": RNNCell,
    "rnn_tanh": partial(RNNCell, nonlinearity="tanh"),
    "rnn_relu": partial(RNNCell, nonlinearity="relu"),
    "lstm": LSTMCell,
    "peephole_lstm": partial(LSTMCell, peephole=True),
    "layernorm_lstm": LayerNormLSTMCell,
    "gru": GRUCell,
    "gru_reset_before": partial(GRUCell, reset_after=False),
    "layernorm_gru": LayerNormGRUCell,
    "mingru": MinGRUCell,
    "minlstm": MinLSTMCell,
}


def register_cell(name: str, factory: CellFactory) -> None:
    """Make ``cell=name`` resolve to ``factory`` everywhere (layers, tasks, CLI).

    Names are looked up case-insensitively with ``-`` read as ``_`` (``"IndRNN"``, ``"ind-rnn"``), so the
    name is stored in that form: ``register_cell("IndRNN", ...)`` then answers to ``cell="IndRNN"``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_cell needs a non-empty name (str), got {name!r}")
    if isinstance(factory, RecurrentCell) or not callable(factory):
        raise TypeError(f"register_cell needs a RecurrentCell class or a factory, got {type(factory).__name__}"
                        + (" (an instance: pass its class)" if isinstance(factory, RecurrentCell) else ""))
    CELLS[name.lower().replace("-", "_")] = factory


def make_cell(spec: CellSpec, input_size: int, hidden_size: int, **options: Any) -> RecurrentCell:
    """Build a cell from a registered name, a cell class or a factory.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if isinstance(spec, str):
        key = spec.lower().replace("-", "_")
        if key not in CELLS:
            raise ValueError(f"unknown cell {spec!r}; choose one of {', '.join(sorted(CELLS))} "
                             "or pass a RecurrentCell class")
        spec = CELLS[key]
    elif isinstance(spec, RecurrentCell):
        raise TypeError(f"cell must be a name, a RecurrentCell class or a factory, got the instance "
                        f"{type(spec).__name__}(...); pass the class ({type(spec).__name__}) and its options "
                        "(cell_options=...) instead")
    elif not callable(spec):
        raise TypeError(f"cell must be a name, a RecurrentCell class or a factory, got {type(spec).__name__}")
    cell = spec(input_size, hidden_size, **options)
    if not isinstance(cell, RecurrentCell):
        raise TypeError(f"cell factory returned {type(cell).__name__}, expected a RecurrentCell")
    return cell


__all__ = [
    "CELLS", "CellSpec", "GRUCell", "LSTMCell", "LayerNormGRUCell", "LayerNormLSTMCell", "LinearRecurrentCell",
    "MinGRUCell", "MinLSTMCell", "RNNCell",
    "RecurrentCell", "State", "make_cell", "register_cell",
]
