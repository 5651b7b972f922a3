"""Allocation budgets: rebuild a model described by a file without letting the file's sizes
allocate more memory than its weights could justify.

A saved model (``config.json``) or a run folder (``model.json``, ``config.yaml``) records its
layer sizes as data from whoever sent the file: ``hidden_size: 10000000`` or a vocabulary of
``10**10`` would otherwise allocate (and initialise) terabytes, or fill the machine's memory,
before the weights are compared with the model. :class:`AllocationBudget` refuses such
allocations before they are made (:class:`TooLarge`); the budget is :func:`budget_for` the size
of the weights file the model must match.

Only construction runs under the budget; inference never does (the dispatch mode adds a Python
call to every torch op it sees).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["BUILD_ALLOWANCE", "BUILD_FACTOR", "AllocationBudget", "TooLarge", "budget_for", "build_within",
           "file_bytes", "size_argument_bytes", "too_large_message"]

#: Bytes a model's construction may allocate beyond what its weights file holds (a subclassed
#: model's first call on zeros, initializers' temporaries): 1 GiB plus 8 times the weights.
BUILD_ALLOWANCE, BUILD_FACTOR = 1 << 30, 8

T = TypeVar("T")


class TooLarge(Exception):
    """A model being rebuilt from a file asked for far more memory than its weights file holds."""

    def __init__(self, need: int) -> None:
        super().__init__(need)
        self.need = need


class AllocationBudget(TorchDispatchMode):
    """Refuse, before they are made, tensor allocations past ``limit`` bytes in all (:class:`TooLarge`).

    Ops that take a ``size`` (``empty``, ``zeros``, ``new_*`` ...) are counted against the budget
    before they run; any other op whose result alone is over the limit stops the build right
    after it.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.left = limit, limit

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        need = size_argument_bytes(func, args, kwargs)
        if need is not None:
            if need > self.left:
                raise TooLarge(self.limit - self.left + need)
            self.left -= need
        out = func(*args, **kwargs)
        returns = func._schema.returns
        fresh = bool(returns) and returns[0].alias_info is None  # not a view, not in place
        if need is None and fresh and isinstance(out, torch.Tensor) and out.numel() * out.element_size() > self.limit:
            raise TooLarge(out.numel() * out.element_size())
        return out


def size_argument_bytes(func: Any, args: Any, kwargs: dict[str, Any]) -> int | None:
    """Bytes an allocating op with a ``size`` argument (not a view or an in-place op) will make."""
    schema = func._schema
    returns = schema.returns
    if not returns or returns[0].alias_info is not None:  # views and in-place ops allocate nothing new
        return None
    for i, arg in enumerate(schema.arguments):
        if arg.name != "size":
            continue
        size = args[i] if i < len(args) else kwargs.get("size")
        if not isinstance(size, list | tuple) or not all(isinstance(d, int) for d in size):
            return None
        dtype = kwargs.get("dtype")
        if dtype is None:
            first = args[0] if args else None
            dtype = first.dtype if isinstance(first, torch.Tensor) else torch.get_default_dtype()
        return max(math.prod(size), 0) * dtype.itemsize
    return None


def budget_for(held_bytes: int) -> int:
    """The bytes a model may allocate while it is built to receive ``held_bytes`` of weights."""
    return BUILD_ALLOWANCE + BUILD_FACTOR * max(int(held_bytes), 0)


def file_bytes(path: str | os.PathLike[str]) -> int:
    """The size of a weights file (0 when it cannot be read: the budget is then the allowance alone,
    and reading the weights reports the file)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _size(n: int) -> str:
    """``n`` bytes for a message: ``"5.4 KiB"``, ``"12.0 MiB"``, ``"1.2 GiB"``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def too_large_message(source: str, err: TooLarge, weights: str, held: int, fix: str) -> str:
    """The one-line error for a model file ``source`` whose sizes ask for more than ``weights``
    (``held`` bytes) justifies; ``fix`` says what to do."""
    return (f"{source} describes a model far larger than its weights (it would allocate over {_size(err.need)}; "
            f"{weights} holds {_size(held)}): the file was damaged or edited; {fix}")


def build_within(limit: int, build: Callable[[], T]) -> T:
    """``build()`` with its tensor allocations held to ``limit`` bytes (:class:`TooLarge` past it)."""
    with AllocationBudget(limit):
        return build()
