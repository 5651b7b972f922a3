"""Lengths, masks and padding sides: conversions and checks shared by every scan.

Convention: masks are boolean ``[B, T]`` with ``True`` on real steps. Right padding puts the
real steps first (``[x x x _ _]``), left padding last (``[_ _ x x x]``). The reference scan
accepts any mask (masked steps are skipped and carry the state); the fused path needs a
contiguous block on either side.
"""

from __future__ import annotations

import torch
from torch import Tensor


def lengths_to_mask(lengths: Tensor, max_length: int, *, padding_side: str = "right") -> Tensor:
    """``[B]`` lengths to a ``[B, T]`` boolean mask with padding on ``padding_side``."""
    steps = torch.arange(max_length, device=lengths.device)
    if padding_side == "right":
        return steps.unsqueeze(0) < lengths.unsqueeze(1)
    if padding_side == "left":
        return steps.unsqueeze(0) >= (max_length - lengths).unsqueeze(1)
    raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")


def check_lengths(lengths: Tensor | list[int], batch_size: int, max_length: int,
                  device: torch.device | None) -> Tensor:
    """Validate per-sequence lengths and return them as an int64 tensor on ``device`` (``None``: where
    they are). The values are checked before the move, so CPU lengths (a list, or a CPU tensor as
    packing wants them) for a GPU layer cost no device synchronisation."""
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != batch_size:
        raise ValueError(f"lengths must have shape [{batch_size}] (one per sequence), got {list(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"lengths must be >= 0, got minimum {int(lengths.min())}")
    if lengths.numel() and int(lengths.max()) > max_length:
        raise ValueError(f"lengths must be <= the sequence length {max_length}, got maximum {int(lengths.max())}")
    return lengths.long() if device is None else lengths.to(device=device, dtype=torch.long)


def check_mask(mask: Tensor, batch_size: int, max_length: int, device: torch.device | None) -> Tensor:
    """Validate a ``[B, T]`` mask (bool, or 0/1 numbers) and return it as bool on ``device`` (``None``:
    where it is)."""
    if mask.shape != (batch_size, max_length):
        raise ValueError(f"mask must have shape [batch, time] = [{batch_size}, {max_length}], got {list(mask.shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must be boolean (True on real steps) or contain only 0 and 1")
        mask = mask.bool()
    return mask if device is None else mask.to(device)


def padding_side(mask: Tensor) -> str | None:
    """``'right'`` or ``'left'`` if every row is one contiguous block on that side, else ``None``.

    A mask that is all ``True`` (or all ``False``) counts as right-padded.
    """
    lengths = mask.sum(1)
    if bool((mask == lengths_to_mask(lengths, mask.shape[1])).all()):
        return "right"
    if bool((mask == lengths_to_mask(lengths, mask.shape[1], padding_side="left")).all()):
        return "left"
    return None


def valid_first_order(mask: Tensor) -> Tensor:
    """Per row, the time indices of real steps in order, then the padded ones: ``[B, T]``.

    Gathering with it turns any padding into right padding; :func:`invert_order` undoes it.
    """
    t = mask.shape[1]
    key = (~mask).long() * t + torch.arange(t, device=mask.device)
    return key.argsort(dim=1)


def invert_order(order: Tensor) -> Tensor:
    """Inverse permutation of each row of ``order``."""
    return order.argsort(dim=1)


def gather_time(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, t]]`` for batch-first ``x`` of shape ``[B, T, ...]``."""
    idx = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:])
    return x.gather(1, idx)


def reverse_padded(x: Tensor, mask: Tensor | None) -> Tensor:
    """Reverse each sequence in time among its real steps, leaving padding where it is.

    ``x`` is batch-first ``[B, T, ...]``. Without a mask the whole time axis is flipped. The
    operation is its own inverse, and the mask is unchanged by it.
    """
    if mask is None:
        return x.flip(1)
    order = valid_first_order(mask)  # real positions first, in time order
    lengths = mask.sum(1, keepdim=True)
    rank = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    # the k-th real step swaps with the (n-1-k)-th; padded ranks map to themselves
    swapped_rank = torch.where(rank < lengths, lengths - 1 - rank, rank)
    source_by_rank = order.gather(1, swapped_rank)  # for rank k: the position it reads from
    index = torch.empty_like(order).scatter_(1, order, source_by_rank)
    return gather_time(x, index)
