"""``tanh`` computed as ``2 sigmoid(2x) - 1`` where this CPU's ``tanh`` kernel is the slow one, chosen by measurement.

On the 2-core AMD EPYC (AVX-512, torch 2.13 CPU wheel) measured on 2026-11-29, ``torch.tanh``
ran at about 1 ns per float32 element, four to nine times slower than ``torch.sigmoid``:
18.8 µs for 16384 elements (an LSTM step's ``tanh c`` at ``B=64, H=256``), 68 for 65536 and
270 for 262144, while on Intel CPUs ``tanh`` has measured as fast as ``sigmoid``
(pytorch/pytorch#110611). The identity ``tanh(x) = 2 sigmoid(2x) - 1`` takes three passes
(``x + x``, ``sigmoid_``, ``-1 + 2 s`` with a 0-d tensor, the fastest affine op) and ran in
7.3, 14.8 and 45 µs on the same sizes (``python benchmarks/bench_tanh.py``); below about 2048
elements per-op dispatch dominates and one ``tanh`` call wins.

So on the CPU, for float32/float64 tensors of at least :data:`MIN_ELEMENTS`, the first call per
dtype and thread count times both forms on 16384 elements (alternated, best of five; about a
millisecond, once per process) and keeps the identity only for a clear win (under 0.8x the
time of ``tanh``). Elsewhere (GPUs, small tensors, other dtypes, CPUs whose ``tanh`` is fast)
``torch.tanh`` runs. The identity is within 2e-7 of ``tanh`` in float32 (``torch.tanh`` itself:
3e-8 from the float64 value) and 4e-16 in float64, absolute; near 0 its relative error is that
of ``sigmoid`` near 1/2, about 1e-7.

``RNNKIT_STEP_MATMUL=torch`` (the switch for runs that repeat bit for bit across processes,
:mod:`rnnkit.scan.step_matmul`) keeps ``torch.tanh`` everywhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .step_matmul import current_backend

MIN_ELEMENTS = 4096
_PROBE_ELEMENTS = 16384
_CHOICES: dict[tuple[torch.dtype, int], bool] = {}  # (dtype, threads) -> the identity wins here
_LOCK = threading.Lock()
_MINUS_ONE: dict[torch.dtype, Tensor] = {}


def _minus_one(dtype: torch.dtype) -> Tensor:
    value = _MINUS_ONE.get(dtype)
    if value is None:
        value = _MINUS_ONE.setdefault(dtype, torch.tensor(-1.0, dtype=dtype))
    return value


def _via_sigmoid(x: Tensor, out: Tensor) -> Tensor:
    """``out = 2 sigmoid(2 x) - 1`` (``out`` may be ``x``)."""
    torch.add(x, x, out=out).sigmoid_()
    return torch.add(_minus_one(out.dtype), out, alpha=2.0, out=out)


def _measure(dtype: torch.dtype) -> bool:
    x = torch.linspace(-3.0, 3.0, _PROBE_ELEMENTS, dtype=dtype)  # fixed: no draw from torch's generator
    out = torch.empty_like(x)
    best = {"tanh": float("inf"), "sigmoid": float("inf")}
    for timed in (False, True, True, True, True, True):
        for form in best:
            start = time.perf_counter()
            for _ in range(5):
                if form == "tanh":
                    torch.tanh(x, out=out)
                else:
                    _via_sigmoid(x, out)
            if timed:
                best[form] = min(best[form], time.perf_counter() - start)
    return best["sigmoid"] < 0.8 * best["tanh"]


def uses_sigmoid(x: Tensor) -> bool:
    """Whether :func:`tanh_into` computes ``x``'s ``tanh`` through ``sigmoid`` (measured once per dtype and thread count)."""
    if (x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.numel() < MIN_ELEMENTS
            or current_backend() == "torch"):
        return False
    key = (x.dtype, torch.get_num_threads())
    with _LOCK:
        chosen = _CHOICES.get(key)
    if chosen is None:
        chosen = _measure(x.dtype)
        with _LOCK:
            _CHOICES[key] = chosen
    return chosen


def _torch_tanh_into(x: Tensor, out: Tensor) -> Tensor:
    return torch.tanh(x, out=out)


def tanh_for(like: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """``tanh_into`` decided once for tensors shaped like ``like``: an engine resolves it before its
    loop over time, so the per-step call does no dispatching (``(x, out) -> out``, ``out`` may be ``x``)."""
    return _via_sigmoid if uses_sigmoid(like) else _torch_tanh_into


def tanh_into(x: Tensor, out: Tensor) -> Tensor:
    """``torch.tanh(x, out=out)`` (``out`` may be ``x``), through ``sigmoid`` where that measured faster.

    Not differentiable: for the engines' loops, which run with autograd off; see :func:`tanh`.
    """
    if x.shape != out.shape:
        return torch.tanh(x, out=out)
    return tanh_for(out)(x, out)


def tanh_(x: Tensor) -> Tensor:
    """``x.tanh_()``, through ``sigmoid`` where that measured faster (not differentiable)."""
    return tanh_into(x, x)


def _functional(x: Tensor) -> Tensor:
    """``2 sigmoid(2x) - 1`` in a new tensor, without ``out=`` (``vmap`` has no batching rule for those)."""
    return torch.add(_minus_one(x.dtype), torch.add(x, x).sigmoid_(), alpha=2.0)


class _Tanh(torch.autograd.Function):
    """``tanh`` forward through ``sigmoid``; backward ``grad (1 - y^2)`` from the saved output, as torch's own.

    Written with ``setup_context`` and ``generate_vmap_rule`` so that ``torch.func`` transforms
    (``vmap``, ``jacrev``) work through it as through ``torch.tanh``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override]
        return _functional(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:  # type: ignore[override]
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def tanh(x: Tensor) -> Tensor:
    """``torch.tanh(x)``, differentiable (twice too), through ``sigmoid`` where that measured faster on this CPU."""
    if not uses_sigmoid(x):
        return torch.tanh(x)
    if torch.is_grad_enabled() and x.requires_grad:
        out: Tensor = _Tanh.apply(x)
        return out
    return _functional(x)
