"""Layers built from recurrent layers: Bidirectional, Stack and Hierarchical."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..scan import check_lengths, check_mask, lengths_to_mask, reverse_padded
from .pooling import masked_max, masked_mean

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def _check_batch_first(owner: str, layer: nn.Module, what: str = "layer") -> None:
    if not getattr(layer, "batch_first", True):
        raise ValueError(f"{owner} needs batch_first=True layers; this {what} ({type(layer).__name__}) is "
                         "time-first: build it with batch_first=True")


def _check_sequence(owner: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        got = f"shape {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{owner} expects batch-first input [batch, time, features], got {got}"
                         + ("; for one sequence pass x.unsqueeze(0)" if isinstance(x, Tensor) and x.dim() == 2 else ""))


def _mask_from(lengths: Tensor | None, mask: Tensor | None, batch: int, steps: int,
               device: torch.device) -> Tensor | None:
    if lengths is not None and mask is not None:
        raise ValueError("pass either lengths= or mask=, not both")
    if lengths is not None:
        return lengths_to_mask(check_lengths(lengths, batch, steps, device), steps)
    if mask is not None:
        return check_mask(torch.as_tensor(mask), batch, steps, device)
    return None


class Bidirectional(nn.Module):
    """Run a unidirectional batch-first layer forwards and a fresh copy of it backwards.

    The backward copy reads each sequence's real steps in reverse (padding stays where it is,
    on either side) and its outputs are put back in time order before merging.

    Args:
        layer: a unidirectional recurrent layer with ``batch_first=True`` (e.g.
            ``rnnkit.nn.LSTM(..., batch_first=True)`` or ``rnnkit.nn.Recurrent``).
        merge: ``"concat"`` (default), ``"sum"``, ``"mul"``, ``"ave"``, or ``None`` for a pair.
        backward_layer: optional layer for the backward direction (default: a re-initialised copy).

    Returns from ``forward``: ``(output, (state_forward, state_backward))``.
    """

    def __init__(self, layer: nn.Module, merge: str | None = "concat", *,
                 backward_layer: nn.Module | None = None) -> None:
        super().__init__()
        if merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {MERGE_MODES}, got {merge!r}")
        if getattr(layer, "bidirectional", False):
            raise ValueError("Bidirectional wraps a unidirectional layer; this one already has bidirectional=True")
        for role, candidate in (("layer", layer), ("backward_layer", backward_layer)):
            if getattr(candidate, "stateful", False):  # the backward copy would carry state across chunks
                raise ValueError(f"Bidirectional cannot wrap a stateful {role}: the backward direction of a chunk "
                                 "needs the steps after it, which the next call holds, so a carried state would be "
                                 "wrong; use stateful=False, or stream with a unidirectional layer")
        _check_batch_first("Bidirectional", layer)
        if backward_layer is not None:
            _check_batch_first("Bidirectional", backward_layer, "backward_layer")
        self.forward_layer = layer
        if backward_layer is None:
            backward_layer = copy.deepcopy(layer)
            reset = getattr(backward_layer, "reset_parameters", None)
            if callable(reset):
                reset()
        self.backward_layer = backward_layer
        self.merge = merge

    def forward(self, x: Tensor, hx: tuple[Any, Any] | None = None, *, lengths: Tensor | None = None,
                mask: Tensor | None = None) -> tuple[Any, tuple[Any, Any]]:
        _check_sequence("Bidirectional", x)  # a [T, I] input would be reversed along its features
        m = _mask_from(lengths, mask, x.shape[0], x.shape[1], x.device)
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise ValueError("Bidirectional expects hx=(state_forward, state_backward), each in the wrapped "
                             f"layer's own format (None for zeros), got {type(hx).__name__}"
                             + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else ""))
        h_f, h_b = hx if hx is not None else (None, None)
        out_f, state_f = self.forward_layer(x, h_f, mask=m)
        out_b, state_b = self.backward_layer(reverse_padded(x, m), h_b, mask=m)
        out_b = reverse_padded(out_b, m)
        return self._merge(out_f, out_b), (state_f, state_b)

    def _merge(self, a: Tensor, b: Tensor) -> Any:
        if self.merge == "concat":
            return torch.cat([a, b], -1)
        if self.merge == "sum":
            return a + b
        if self.merge == "mul":
            return a * b
        if self.merge == "ave":
            return (a + b) / 2
        return a, b


class Stack(nn.Module):
    """Recurrent layers applied one after another; they may differ in size and cell.

    Every layer must be batch-first and take ``mask=``; the mask is passed to each layer.

    Args:
        layers: the layers, each consuming the previous one's output.
        dropout: dropout between layers (not after the last).

    Returns from ``forward``: ``(output, [state of each layer])``.
    """

    def __init__(self, layers: Sequence[nn.Module], *, dropout: float = 0.0) -> None:
        super().__init__()
        if not layers:
            raise ValueError("Stack needs at least one layer")
        for k, layer in enumerate(layers):
            _check_batch_first("Stack", layer, f"layer {k}")
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, states: Sequence[Any] | None = None, *, lengths: Tensor | None = None,
                mask: Tensor | None = None) -> tuple[Tensor, list[Any]]:
        if lengths is not None or mask is not None:
            _check_sequence("Stack with lengths= or mask=", x)
        m = _mask_from(lengths, mask, x.shape[0], x.shape[1], x.device) if x.dim() == 3 else None
        if states is not None and (not isinstance(states, (list, tuple)) or len(states) != len(self.layers)):
            got = f"{len(states)} entries" if isinstance(states, (list, tuple)) else f"a {type(states).__name__}"
            raise ValueError(f"states must be a list with one entry per layer ({len(self.layers)}; None for zeros), "
                             f"got {got}")
        finals = []
        for k, layer in enumerate(self.layers):
            if k:
                x = self.dropout(x)
            x, state = layer(x, None if states is None else states[k], mask=m)
            finals.append(state)
        return x, finals


def last_state_pooling(outputs: Tensor, state: Any, mask: Tensor | None, *, num_directions: int = 1) -> Tensor:
    """The final hidden state of the top layer, ``[B, D*P]``: ``h_n`` of its ``num_directions``
    directions concatenated (forward first), as ``torch.nn`` stacks them (``[L*D, B, P]``; for an
    LSTM the ``h`` of ``(h, c)``). For a :class:`Bidirectional` wrapper's ``(forward, backward)``
    pair, pool each state and concatenate (``Hierarchical`` does)."""
    h = state[0] if isinstance(state, tuple) else state
    if h.dim() == 2:  # already one vector per sequence
        return h
    return torch.cat(list(h[-num_directions:]), -1)


class Hierarchical(nn.Module):
    """Two-level encoder: an inner RNN encodes each segment, an outer RNN runs over segment vectors.

    For documents: the inner layer reads the words of each sentence, the outer layer reads the
    sentence vectors. Masks apply at both levels: padded words are skipped inside sentences,
    empty sentences give zero vectors and padded sentences are skipped by the outer layer.

    Args:
        inner: batch-first recurrent layer over the units of one segment.
        outer: batch-first recurrent layer over segment vectors.
        pool: how a segment becomes one vector: ``"last"`` (final hidden state), ``"mean"`` or
            ``"max"`` over real steps, or a module ``(outputs, mask) -> [N, F]`` such as attention.

    Shapes in ``forward``: ``x`` ``[B, S, W, I]``; ``unit_lengths`` ``[B, S]`` (0 for padded
    segments); ``segment_lengths`` ``[B]`` (defaults to the segments with a non-zero length).

    Returns: ``(outer outputs [B, S, F], outer final state, segment vectors [B, S, F_inner])``.
    """

    def __init__(self, inner: nn.Module, outer: nn.Module, *, pool: str | nn.Module = "last") -> None:
        super().__init__()
        if isinstance(pool, str) and pool not in ("last", "mean", "max"):
            raise ValueError(f"pool must be 'last', 'mean', 'max' or a module, got {pool!r}")
        _check_batch_first("Hierarchical", inner, "inner layer")
        _check_batch_first("Hierarchical", outer, "outer layer")
        self.inner, self.outer, self.pool = inner, outer, pool

    def forward(self, x: Tensor, unit_lengths: Tensor, segment_lengths: Tensor | None = None) -> tuple[Tensor, Any, Tensor]:
        if x.dim() != 4:
            raise ValueError(f"Hierarchical expects input [batch, segments, units, features], got {list(x.shape)}")
        batch, segments, units, features = x.shape
        unit_lengths = torch.as_tensor(unit_lengths, device=x.device)
        if tuple(unit_lengths.shape) != (batch, segments):
            raise ValueError(f"unit_lengths must have shape [{batch}, {segments}], got {list(unit_lengths.shape)}")
        flat_lengths = check_lengths(unit_lengths.reshape(-1), batch * segments, units, x.device)
        flat_mask = lengths_to_mask(flat_lengths, units)
        flat_out, flat_state = self.inner(x.reshape(batch * segments, units, features), mask=flat_mask)
        vectors = self._pool(flat_out, flat_state, flat_mask)
        vectors = vectors * (flat_lengths > 0).unsqueeze(-1)  # empty segments -> zero vectors
        vectors = vectors.view(batch, segments, -1)
        if segment_lengths is None:
            segment_mask = unit_lengths > 0
        else:
            seg = check_lengths(segment_lengths, batch, segments, x.device)
            segment_mask = lengths_to_mask(seg, segments)
        outputs, state = self.outer(vectors, mask=segment_mask)
        return outputs, state, vectors

    def _pool(self, outputs: Tensor, state: Any, mask: Tensor) -> Tensor:
        if isinstance(self.pool, nn.Module):
            pooled = self.pool(outputs, mask)
            return pooled[0] if isinstance(pooled, tuple) else pooled  # AttentionPooling: (vector, weights)
        if self.pool == "last":
            if isinstance(self.inner, Bidirectional):  # state = (forward state, backward state)
                return torch.cat([last_state_pooling(outputs, s, mask) for s in state], -1)
            directions = 2 if getattr(self.inner, "bidirectional", False) else 1
            return last_state_pooling(outputs, state, mask, num_directions=directions)
        return masked_mean(outputs, mask) if self.pool == "mean" else masked_max(outputs, mask)
