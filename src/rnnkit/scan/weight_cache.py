"""Tensors computed from a cell's weights and kept between no-gradient calls: reordered rows, packed matmuls.

Reordering an LSTM's gate rows costs four gathers (about 350 µs at H=256) and packing a weight for
oneDNN about as much: a streaming caller that runs one step per call must not pay that on every
call. The values live in a side table keyed by the cell's identity, never in the module:
``copy.deepcopy``, ``torch.save`` and pickling see no trace of them (a packed oneDNN weight has no
storage and cannot be copied), and they go when the cell goes.

A kept value is reused only while each source tensor is unchanged in identity (address, shape,
strides, dtype, device and in-place version counter) and in content at up to 1,024 positions
evenly spaced over it (in every column of a matrix with up to 1,024 of them), compared exactly
(one strided ``torch.equal`` per tensor, 1-2 µs). The version counter alone misses edits through
``param.data`` (a separate counter, by design) and torch's fused optimizers (``Adam(fused=True)``
leaves it as it was); the sampled values catch every update that touches the whole tensor:
optimizer steps, ``param.data.copy_()``, scaling. An edit through ``.data`` of a few elements that
misses every sampled position is not seen: call :func:`forget` after one (switching the layer
between ``train()`` and ``eval()`` also clears its cells' values; ``eval()`` on a layer already in
eval mode does not).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

_SAMPLES = 1024
# id(owner) -> {name: (key, the sources, their sampled views, the sampled values when kept, value)}; an entry
# goes when its owner is collected (weakref.finalize), so ids are never stale and nothing here keeps a cell
# alive. The sources are held so that their memory cannot be reused by another tensor at the same address:
# an equal identity key then means the same memory, and the sampled views made when the value was kept read
# what is there now (made once: checking 4 sources took about 11 µs instead of 29 µs resampling them, measured in development).
_Entry = tuple[Hashable, tuple[Tensor | None, ...], tuple[Tensor | None, ...], tuple[Tensor | None, ...], Any]
_STORE: dict[int, dict[str, _Entry]] = {}
_WATCHED: set[int] = set()  # owners with a finalizer registered (one each, however often forget() runs)
_LOCK = threading.Lock()
T = TypeVar("T")


def _sample(t: Tensor) -> Tensor:
    """Up to 1,024 values of ``t`` evenly spaced over it, the first included: a strided view, no copy
    (a copy only for a tensor whose strides no permutation makes contiguous: see :func:`_live_view`)."""
    t = t.detach()
    if not t.is_contiguous():  # a permuted view of contiguous memory (W^T) flattens without a copy in stride order
        by_stride = t.permute(sorted(range(t.dim()), key=lambda d: -t.stride()[d]))
        t = by_stride if by_stride.is_contiguous() else t
    flat = t.reshape(-1)
    step = -(-flat.numel() // _SAMPLES) or 1
    # A stride sharing a factor with the row length reads only some columns (a multiple of it, as for
    # [4H, I] with I=128 at H=256, column 0 alone): an edit of one input's or unit's weights went
    # unseen. Coprime with it, the samples visit every column (up to 1,024) and still spread over the rows.
    if step > 1 and t.dim() > 1:
        while math.gcd(step, t.shape[-1]) != 1:
            step += 1
    return flat[::step]


def _live_view(t: Tensor | None) -> Tensor | None:
    """``_sample(t)`` if it is a view of ``t``'s memory (it then shows later edits), else ``None``."""
    if t is None:
        return None
    view = _sample(t)
    return view if view.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() else None


def _identity(t: Tensor | None) -> Hashable:
    if t is None:
        return None
    # a tensor made under torch.inference_mode() (a value built there, or weights loaded there) has no
    # version counter (reading it raises): its sampled values alone tell an edit
    version = None if t.is_inference() else t._version
    return (t.data_ptr(), version, tuple(t.shape), t.stride(), t.dtype, t.device)


def cached(owner: object, name: str, sources: Sequence[Tensor | None], build: Callable[[], T],
           key: Hashable = None) -> T:
    """``build()``, or the value it gave last time for ``owner`` and ``name`` if ``sources`` and ``key`` are unchanged."""
    full_key = (tuple(_identity(s) for s in sources), key)
    with _LOCK:
        entry = _STORE.get(id(owner), {}).get(name)
    if entry is not None and entry[0] == full_key and all(
            saved is None or torch.equal(view if view is not None else _sample(held), saved)  # type: ignore[arg-type]
            for held, view, saved in zip(entry[1], entry[2], entry[3], strict=True)):
        return entry[4]  # type: ignore[no-any-return]  # (a None source: the identity key already matched)
    value = build()
    held = tuple(sources)
    views = tuple(_live_view(s) for s in held)
    saved = tuple(None if s is None else (v if v is not None else _sample(s)).clone() for s, v in zip(held, views))
    with _LOCK:
        if id(owner) not in _WATCHED:
            _WATCHED.add(id(owner))
            weakref.finalize(owner, _drop, id(owner))
        _STORE.setdefault(id(owner), {})[name] = (full_key, held, views, saved, value)
    return value


def _drop(owner_id: int) -> None:
    with _LOCK:
        _STORE.pop(owner_id, None)
        _WATCHED.discard(owner_id)


def kept(owner: object) -> bool:
    """Whether anything is kept for ``owner``."""
    with _LOCK:
        return id(owner) in _STORE


def forget(owner: object | None = None) -> None:
    """Drop what is kept for ``owner`` (a cell), or for every cell when ``owner`` is None."""
    with _LOCK:
        if owner is None:
            _STORE.clear()
        else:
            _STORE.pop(id(owner), None)
