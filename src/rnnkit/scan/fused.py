"""The fused path: hand a whole sequence to PyTorch's fused RNN kernels (oneDNN, cuDNN).

Variable lengths go through packed sequences; left padding is turned into right padding and
back; zero-length sequences (which packing rejects) are run with length 1 and then given
zero outputs and their initial state, as the reference scan defines.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .masks import gather_time, invert_order, padding_side, valid_first_order

Hidden = Tensor | tuple[Tensor, ...]
FusedForward = Callable[[Tensor | PackedSequence, Hidden | None], tuple[Tensor | PackedSequence, Hidden]]



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
    side = padding_side(mask)
    if side is None:
        raise ValueError("the fused path needs each sequence's real steps in one block at the start or end")
    steps = x.shape[1]
    order = None
    if side == "left":
        order = valid_first_order(mask)
        x = gather_time(x, order)
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
