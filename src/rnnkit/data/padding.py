"""Padding and truncation of variable-length sequences.

Two entry points:

* :func:`pad_sequences` mirrors ``keras.utils.pad_sequences`` (NumPy in, NumPy out, ``'pre'``
  padding and truncation by default) for code ported from Keras;
* :func:`pad_batch` is the richer PyTorch version: it returns the padded tensor together
  with the lengths, a boolean mask ``[B, T]`` (``True`` = real step), the sides used and a
  truncation report (how many sequences were cut and how many steps dropped).

Sequences may carry trailing feature dimensions (``[T, F]`` audio frames...); they must agree
across the batch. Empty sequences are allowed (length 0, mask all ``False``); an empty batch
is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

__all__ = ["PaddedBatch", "pad_batch", "pad_sequences", "lengths_to_mask", "SIDES"]

logger = logging.getLogger("rnnkit.data")

SIDES = ("pre", "post")
_SIDE_ALIASES = {"pre": "pre", "post": "post", "left": "pre", "right": "post"}


def _side(value: str, what: str) -> str:
    side = _SIDE_ALIASES.get(str(value).lower())
    if side is None:
        raise DataError(
            f"{what} must be 'pre' or 'post' (or 'left'/'right'), got {value!r}",
            hint=f"pass {what}='post' or {what}='pre'",
        )
    return side


def lengths_to_mask(lengths: Tensor, max_length: int | None = None, padding: str = "post") -> Tensor:
    """Build a boolean mask ``[B, T]`` from lengths.

    Args:
        lengths: Integer tensor ``[B]``.
        max_length: ``T``; defaults to ``lengths.max()``.
        padding: ``'post'`` (real steps first) or ``'pre'`` (real steps last).

    Returns:
        Bool tensor ``[B, T]``, ``True`` at real steps.
    """
    side = _side(padding, "padding")
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    t = int(lengths.max().item()) if max_length is None and lengths.numel() else int(max_length or 0)
    steps = torch.arange(t, device=lengths.device).unsqueeze(0)
    if side == "post":
        return steps < lengths.unsqueeze(1)
    return steps >= (t - lengths).unsqueeze(1)


@dataclass
class PaddedBatch:
    """Result of :func:`pad_batch`.

    Attributes:
        padded: ``[B, T, *features]`` tensor.
        lengths: ``[B]`` int64 lengths after truncation.
        mask: ``[B, T]`` bool, ``True`` at real steps.
        padding: Side padded (``'pre'`` or ``'post'``).
        truncation: Side truncated (``'pre'`` or ``'post'``).
        num_truncated: Number of sequences longer than ``max_length`` that were cut.
        tokens_dropped: Total number of steps removed by truncation.
    """

    padded: Tensor
    lengths: Tensor
    mask: Tensor
    padding: str
    truncation: str
    num_truncated: int = 0
    tokens_dropped: int = 0

    def __iter__(self) -> Any:
        """Unpack as ``padded, lengths, mask``."""
        return iter((self.padded, self.lengths, self.mask))


def _check_length(value: Any, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise DataError(
            f"{name} must be an int or None, got {value!r}", hint=f"pass a whole number of steps as {name}"
        )
    if value < 0:
        raise DataError(f"{name} must be >= 0, got {value}", hint=f"pass a non-negative {name} or None")


def _as_tensor(seq: Any, index: int) -> Tensor:
    if isinstance(seq, Tensor):
        return seq
    if isinstance(seq, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(seq))
    if isinstance(seq, str | bytes):
        raise DataError(
            f"sequence {index} is a {type(seq).__name__}, not a sequence of numbers",
            hint="tokenize and encode text to ids before padding",
        )
    try:
        return torch.as_tensor(seq)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(
            f"sequence {index} cannot be converted to a tensor ({exc})",
            hint="give lists of numbers, NumPy arrays or tensors of equal trailing shape",
        ) from None


def pad_batch(
    seqs: Sequence[Any],
    max_length: int | None = None,
    padding: str = "post",
    truncation: str = "post",
    pad_value: float = 0,
    dtype: torch.dtype | None = None,
) -> PaddedBatch:
    """Pad (and optionally truncate) a batch of sequences into one tensor.

    Args:
        seqs: Sequences (lists, NumPy arrays or tensors) of shape ``[T_i, *features]``.
        max_length: Cut sequences longer than this; ``T`` is ``min(max_length, longest)``.
            ``None`` keeps everything.
        padding: ``'post'`` pads at the end, ``'pre'`` at the start.
        truncation: ``'post'`` drops the end of long sequences, ``'pre'`` the start.
        pad_value: Value of padded positions.
        dtype: Output dtype; defaults to the promoted dtype of the inputs.

    Returns:
        A :class:`PaddedBatch` with the padded tensor, lengths, mask and truncation report.
    """
    pad_side = _side(padding, "padding")
    trunc_side = _side(truncation, "truncation")
    if len(seqs) == 0:
        raise DataError(
            "cannot pad an empty batch (0 sequences)", hint="filter out empty batches before padding"
        )
    _check_length(max_length, "max_length")
    tensors = [_as_tensor(s, i) for i, s in enumerate(seqs)]
    for i, t in enumerate(tensors):
        if t.dim() == 0:
            raise DataError(f"sequence {i} is a scalar, not a sequence", hint="wrap single values in a list")
    # Empty lists become float tensors of shape [0]; they adopt the batch's trailing shape.
    shaped = [t for t in tensors if t.numel() > 0 or t.dim() > 1]
    feature_shape = tuple(shaped[0].shape[1:]) if shaped else ()
    for i, t in enumerate(tensors):
        if (t.numel() > 0 or t.dim() > 1) and tuple(t.shape[1:]) != feature_shape:
            raise DataError(
                f"sequence {i} has step shape {tuple(t.shape[1:])}, sequence 0 has {feature_shape}",
                hint="give every sequence the same feature dimensions",
            )
    if dtype is None:
        typed = [t for t in tensors if t.numel() > 0] or tensors
        dtype = typed[0].dtype
        for t in typed[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
    lengths_in = [int(t.shape[0]) for t in tensors]
    longest = max(lengths_in)
    total = longest if max_length is None else min(max_length, longest)
    num_truncated = sum(1 for n in lengths_in if n > total)
    dropped = sum(n - total for n in lengths_in if n > total)
    out = torch.full((len(tensors), total, *feature_shape), pad_value, dtype=dtype)
    lengths = torch.empty(len(tensors), dtype=torch.long)
    for i, t in enumerate(tensors):
        n = int(t.shape[0])
        if n > total:
            t = t[:total] if trunc_side == "post" else t[n - total :]
            n = total
        lengths[i] = n
        if n == 0:
            continue
        t = t.to(dtype)
        if pad_side == "post":
            out[i, :n] = t
        else:
            out[i, total - n :] = t
    mask = lengths_to_mask(lengths, total, pad_side)
    return PaddedBatch(out, lengths, mask, pad_side, trunc_side, num_truncated, dropped)


def pad_sequences(
    sequences: Sequence[Any],
    maxlen: int | None = None,
    dtype: Any = "int32",
    padding: str = "pre",
    truncating: str = "pre",
    value: Any = 0.0,
) -> np.ndarray:
    """Pad sequences to the same length, like ``keras.utils.pad_sequences``.

    Truncation is reported on the ``rnnkit.data`` logger (warning level) with the number
    of sequences cut and of steps dropped, and so is a cast that loses data: float values
    with a fractional part padded into an integer ``dtype`` (Keras's default ``'int32'``
    silently turns ``0.5`` into ``0``). A scalar where a sequence is expected is an error, as
    in Keras.

    Args:
        sequences: List of sequences (lists or arrays of shape ``[T_i, *sample_shape]``).
        maxlen: Length of the output; defaults to the longest sequence.
        dtype: Output dtype (default ``'int32'``, as in Keras).
        padding: ``'pre'`` (Keras default) or ``'post'``.
        truncating: ``'pre'`` (Keras default) drops the start of long sequences, ``'post'``
            the end.
        value: Padding value.

    Returns:
        NumPy array ``[num_sequences, maxlen, *sample_shape]``.
    """
    if padding not in SIDES:
        raise DataError(f'padding type "{padding}" not understood', hint="use 'pre' or 'post'")
    if truncating not in SIDES:
        raise DataError(f'truncating type "{truncating}" not understood', hint="use 'pre' or 'post'")
    _check_length(maxlen, "maxlen")
    arrays: list[np.ndarray] = []
    for i, s in enumerate(sequences):
        if isinstance(s, str | bytes):
            raise DataError(f"sequence {i} is a string", hint="encode text to ids before padding")
        try:
            arrays.append(np.asarray(s))
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"sequence {i} is not array-like ({exc})", hint="give lists or arrays of numbers"
            ) from None
        if arrays[-1].ndim == 0:
            raise DataError(
                f"sequence {i} is a scalar ({s!r}), not a sequence", hint="wrap single values in a list"
            )
    if not arrays:
        if maxlen is None:
            raise DataError(
                "cannot pad an empty list of sequences", hint="pass at least one sequence or a maxlen"
            )
        return np.full((0, maxlen), value, dtype=dtype)
    sample_shape: tuple[int, ...] = ()
    for a in arrays:
        if a.size > 0 or a.ndim > 1:
            sample_shape = tuple(a.shape[1:])
            break
    lengths = [len(a) for a in arrays]
    if maxlen is None:
        maxlen = max(lengths)
    out = np.full((len(arrays), maxlen, *sample_shape), value, dtype=dtype)
    num_truncated = 0
    dropped = 0
    if np.issubdtype(out.dtype, np.integer):
        lossy = [
            i
            for i, a in enumerate(arrays)
            if a.dtype.kind == "f" and a.size and not np.all(np.mod(a, 1) == 0)
        ]
        if lossy:
            logger.warning(
                "pad_sequences: dtype=%s cuts the fractional part of the float values of %d sequences "
                "(first: sequence %d); pass dtype='float32' to keep them",
                out.dtype,
                len(lossy),
                lossy[0],
            )
    for i, a in enumerate(arrays):
        if len(a) == 0:
            continue
        if tuple(a.shape[1:]) != sample_shape:
            raise DataError(
                f"shape of sample {a.shape[1:]} of sequence at position {i} is different from expected shape {sample_shape}",
                hint="give every sequence the same feature dimensions",
            )
        if len(a) > maxlen:
            num_truncated += 1
            dropped += len(a) - maxlen
            a = a[len(a) - maxlen :] if truncating == "pre" else a[:maxlen]
        if len(a) == 0:
            continue
        if padding == "post":
            out[i, : len(a)] = a
        else:
            out[i, maxlen - len(a) :] = a
    if num_truncated:
        logger.warning(
            "pad_sequences: truncated %d of %d sequences to maxlen=%d (%s), dropping %d steps",
            num_truncated,
            len(arrays),
            maxlen,
            truncating,
            dropped,
        )
    return out
