"""The fused path: hand a whole sequence to PyTorch's fused RNN kernels (oneDNN, cuDNN).

Variable lengths go through packed sequences; left padding is turned into right padding and
back; zero-length sequences (which packing rejects) are run with length 1 and then given
zero outputs and their initial state, as the reference scan defines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .masks import gather_time, invert_order, padding_side, reverse_padded, valid_first_order

Hidden = Tensor | tuple[Tensor, ...]
FusedForward = Callable[[Tensor | PackedSequence, Hidden | None], tuple[Tensor | PackedSequence, Hidden]]



def to_right_padding(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Move left-padded sequences to right padding: ``(x, mask, order)``; ``order`` is ``None`` when
    nothing moved, else the time permutation to undo with :func:`invert_order`."""
    side = padding_side(mask)
    if side is None:
        raise ValueError("the fused path needs each sequence's real steps in one block at the start or end")
    if side == "right":
        return x, mask, None
    order = valid_first_order(mask)
    right = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0) < mask.sum(1, keepdim=True)
    return gather_time(x, order), right, order


def run_fused_masked(forward: FusedForward, x: Tensor, hx: Hidden | None, mask: Tensor,
                     initial: Hidden) -> tuple[Tensor, Hidden]:
    """Run ``forward`` (a ``torch.nn.RNNBase.forward``) on batch-first ``x`` under a contiguous mask.

    Args:
        forward: the fused forward taking a ``PackedSequence`` and ``hx``.
        x: ``[B, T, I]`` batch-first input.
        hx: initial hidden state in ``torch.nn`` layout, or ``None`` for zeros.
        mask: ``[B, T]`` bool, right- or left-padded.
        initial: the initial state in ``torch.nn`` layout (zeros when ``hx`` is None), used for
            zero-length sequences.

    Returns:
        ``(output [B, T, D*P], h_n)`` with zeros at padded outputs.
    """
    steps = x.shape[1]
    x, mask, order = to_right_padding(x, mask)
    lengths = mask.sum(1)
    empty = lengths == 0
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    out_packed, h_n = forward(packed, hx)
    assert isinstance(out_packed, PackedSequence)
    out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=steps)
    if bool(empty.any()):
        out = out * (~empty).view(-1, 1, 1)
        h_n = _map_hidden_pair(h_n, initial, empty)
    if order is not None:
        out = gather_time(out, invert_order(order))
    return out, h_n


def _map_hidden_pair(h_n: Hidden, initial: Hidden, empty: Tensor) -> Hidden:
    """Keep the initial state for the sequences flagged ``empty`` (batch is dim 1)."""
    keep = empty.view(1, -1, 1)
    if isinstance(h_n, tuple):
        assert isinstance(initial, tuple)
        return tuple(torch.where(keep, i, h) for h, i in zip(h_n, initial))  # type: ignore[return-value]
    assert isinstance(initial, Tensor)
    return torch.where(keep, initial, h_n)


# -- CPU: the fused kernel per run of equal activity, instead of packed sequences ----------------
# On CPU, torch's packed-sequence RNN path skips oneDNN and runs several times slower than the
# padded one (measured 9x for a BiLSTM, B=32, T=300). Sorting the batch by length, every stretch
# of time in which the set of running sequences does not change is a plain padded problem for a
# prefix of the batch: one fused call per stretch and per layer and direction gives the same
# numbers as packing at the padded kernel's speed.

def _vf_call(mode: str, x: Tensor, state: tuple[Tensor, ...], weights: list[Tensor], has_bias: bool,
             training: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One single-layer, one-direction fused call on batch-first ``x`` with ``state`` ``[1, n, *]``."""
    from torch import _VF

    if mode == "LSTM":
        out, h, c = _VF.lstm(x, state, weights, has_bias, 1, 0.0, training, False, True)
        return out, (h, c)
    fn = {"GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}[mode]
    out, h = fn(x, state[0], weights, has_bias, 1, 0.0, training, False, True)
    return out, (h,)


def _segmented_direction(call: Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]],
                         x: Tensor, state: tuple[Tensor, ...], lengths: list[int]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run one direction over a batch sorted by decreasing length; returns outputs ``[B, T, P]`` and states."""
    batch, steps = x.shape[0], x.shape[1]
    initial = state
    bounds = sorted({n for n in lengths if n > 0})
    outputs: list[Tensor] = []
    finished: list[tuple[Tensor, ...]] = []  # states of rows that end at each bound, shortest first
    start = 0
    for end in bounds:
        active = sum(1 for n in lengths if n >= end)  # a prefix of the sorted batch
        out, new = call(x[:active, start:end], tuple(s[:, :active] for s in state))
        outputs.append(F.pad(out, (0, 0, 0, 0, 0, batch - active)))  # rows that have ended output zeros
        still = sum(1 for n in lengths if n > end)
        finished.append(tuple(s[:, still:active] for s in new))
        state = tuple(s[:, :still] for s in new)
        start = end
    empty = sum(1 for n in lengths if n == 0)
    pieces = finished[::-1] + ([tuple(s[:, batch - empty:] for s in initial)] if empty else [])  # never ran
    final = tuple(torch.cat([p[k] for p in pieces], 1) for k in range(len(state)))
    if not outputs:  # every sequence is empty: nothing to run, but see _all_empty
        return _all_empty(call, x, initial)
    out = torch.cat(outputs, 1)
    if out.shape[1] < steps:
        out = F.pad(out, (0, 0, 0, steps - out.shape[1]))
    return out, final


def _all_empty(call: Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]], x: Tensor,
               initial: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Zero outputs and the initial state for a batch whose sequences are all empty, in the graph.

    The reference scan's zeros and states depend on the input, the weights and the initial state
    (with zero gradients): fresh zeros instead left a loss on this layer alone nothing to
    differentiate (``backward()`` raised where the reference scan's ran). One step of the kernel
    on zeros (``x`` enters through ``where``, so padding that holds NaN stays out) puts them back
    in the graph; it runs only for such a batch.
    """
    off = torch.zeros((), dtype=torch.bool, device=x.device)
    out, new = call(torch.where(off, x[:, :1], 0.0), initial)
    zeros = F.pad(torch.where(off, out, 0.0), (0, 0, 0, x.shape[1] - 1))
    return zeros, tuple(torch.where(off, n, i) for n, i in zip(new, initial))


def run_fused_segments(module: Any, x: Tensor, mask: Tensor, initial: Hidden) -> tuple[Tensor, Hidden]:
    """The fused kernel under a contiguous mask without packing (CPU fast path).

    Args:
        module: a ``torch.nn.RNN``/``LSTM``/``GRU`` (its ``mode``, ``_flat_weights``, layers,
            directions, bias and inter-layer dropout are used).
        x: ``[B, T, I]`` batch-first input.
        mask: ``[B, T]`` bool, right- or left-padded.
        initial: initial state in ``torch.nn`` layout.

    Returns:
        ``(output [B, T, D*P], h_n)`` equal to the packed computation.
    """
    x, mask, order_time = to_right_padding(x, mask)
    lengths = mask.sum(1)
    order = lengths.argsort(descending=True, stable=True)
    inverse = order.argsort()
    sorted_lengths = lengths[order].tolist()
    sorted_mask = mask[order]
    parts = initial if isinstance(initial, tuple) else (initial,)
    parts = tuple(p[:, order] for p in parts)
    directions = 2 if module.bidirectional else 1
    per = len(module._flat_weights) // (module.num_layers * directions)
    layer_input = x[order]
    finals: list[tuple[Tensor, ...]] = []
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            weights = module._flat_weights[index * per:(index + 1) * per]

            def call(seg: Tensor, state: tuple[Tensor, ...], weights: list[Tensor] = weights) -> Any:
                return _vf_call(module.mode, seg, state, weights, module.bias, module.training)

            state = tuple(p[index:index + 1] for p in parts)
            inp = layer_input if direction == 0 else reverse_padded(layer_input, sorted_mask)
            out, final = _segmented_direction(call, inp, state, sorted_lengths)
            outputs.append(out if direction == 0 else reverse_padded(out, sorted_mask))
            finals.append(final)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, -1)
        if module.dropout and module.training and layer < module.num_layers - 1:
            layer_input = F.dropout(layer_input, module.dropout, training=True)
    out = layer_input[inverse]
    if order_time is not None:
        out = gather_time(out, invert_order(order_time))
    stacked = tuple(torch.cat([f[k] for f in finals], 0)[:, inverse] for k in range(len(parts)))
    return out, (stacked if len(stacked) > 1 else stacked[0])
