"""The engines' per-step matrix multiply: torch's GEMM or oneDNN with the weight packed once, chosen by measurement.

On a CPU, ``torch.mm``/``torch.addmm`` call a BLAS GEMM that repacks the weight on every call.
oneDNN's linear primitive, handed a weight packed once per sequence (what ``torch.nn.LSTM``'s own
oneDNN kernel does for its recurrent matmul, and what ``torch.compile`` does for linear layers on
CPUs), runs a recurrent step's ``[B, K] x [K, N]`` 1.3-1.8x faster at ``H=256, B=2..64`` and
1.7-8x faster at ``H=1024`` on our 2-core machine, but carries a fixed cost of about 18 µs that
makes it 3-7x slower for small shapes (``H=64``) and for ``H=256`` at batch 1 (measured in
``benchmarks/bench_step_matmul.py``). Which one wins depends on the shape, the CPU and the
thread count, so :class:`StepMatmul` times both once per ``(N, K, B, threads, bias/add)`` key
(the best of five alternated samples each: at most a few tens of milliseconds, once per
process and key), and the packing too, and remembers the costs. Packing ``[4H, I+H]`` costs
about 0.8 ms at H=256, as much as 3-4 steps of a training batch of 64: oneDNN is chosen only
where the calls the object will serve (the sequence's steps) pay for it, so short sequences
(a streaming chunk, a short sentence) stay on torch's GEMM.

The large products outside the loops (the weight gradients ``dL/dW = dZ^T [x, h]`` after it, the
input gradient, the input projection of the GRU and layer-norm engines and of minGRU/minLSTM) go
through :func:`large_matmul` and :func:`linear`, chosen the same way per class of shape (each size
rounded to a power of two). It matters by CPU: on the 2-core AMD EPYC (AVX-512) measured on
2026-11-29, MKL's sgemm (what ``torch.mm`` calls) ran large products at 205-225 GFLOP/s and
oneDNN's at 480-520 (MKL takes a generic code path on CPUs that are not Intel's), while on the
Intel machine of the earlier measurements the two were close.

``RNNKIT_STEP_MATMUL`` (``auto``, ``torch`` or ``onednn``) or :func:`step_matmul_backend` sets
the choice; GPUs, float64 and tensors that need autograd always use torch. Both backends give the
same result up to float32 rounding (the order of the sums differs); since the choice is timed, two
processes may round differently: ``RNNKIT_STEP_MATMUL=torch`` makes runs repeat bit for bit.
"""

from __future__ import annotations

import math
import os
import platform
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

from . import weight_cache
from ._bptt import without_autocast

BACKENDS = ("auto", "torch", "onednn")


def _backend_from_env() -> str:
    value = os.environ.get("RNNKIT_STEP_MATMUL", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"RNNKIT_STEP_MATMUL must be one of {', '.join(BACKENDS)}, got {value!r}")
    return value


_BACKEND: ContextVar[str | None] = ContextVar("rnnkit_step_matmul_backend", default=None)
# key -> (torch, oneDNN) seconds per call and seconds to pack the weight, measured once
_CHOICES: OrderedDict[tuple[int, ...], tuple[float, float, float]] = OrderedDict()
_MAX_CHOICES = 512
_LOCK = threading.Lock()


def _onednn_ops_available() -> bool:
    return (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


_ONEDNN = _onednn_ops_available()


@contextmanager
def step_matmul_backend(backend: str) -> Iterator[None]:
    """Within this block the engines' per-step matmuls use ``backend``: ``auto``, ``torch`` or ``onednn``.

    ``onednn`` falls back to torch where oneDNN cannot run (GPU, float64, no oneDNN in this torch).
    """
    if backend not in BACKENDS:
        raise ValueError(f"step matmul backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    token = _BACKEND.set(backend)
    try:
        yield
    finally:
        _BACKEND.reset(token)


def current_backend() -> str:
    """The backend in force: :func:`step_matmul_backend`'s, else ``RNNKIT_STEP_MATMUL``'s, else ``auto``."""
    chosen = _BACKEND.get()
    return chosen if chosen is not None else _backend_from_env()


class StepMatmul:
    """``x @ weight.T (+ bias) (+ add)`` for many ``x`` of one shape ``[batch, K]``; ``weight`` is ``[N, K]``.

    Calls return a new tensor on oneDNN and ``out`` (when given) on torch, so callers read the
    result from the return value. ``weight`` may be a strided view; it must not change while this
    object is in use (oneDNN keeps a packed copy). ``calls`` is how many products it will serve
    (a sequence's steps), which decides whether packing the weight for oneDNN pays; ``None``: many
    (an object kept between calls, as for streaming inference).
    """

    __slots__ = ("_bias", "_packed", "_right")

    def __init__(self, weight: Tensor, bias: Tensor | None, batch: int, *, adds: bool = False,
                 calls: int | None = None) -> None:
        self._right = weight.t()
        self._bias = bias
        self._packed: Tensor | None = None
        if _use_onednn(weight, bias, batch, adds, calls):
            self._packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch)

    @property
    def backend(self) -> str:
        return "onednn" if self._packed is not None else "torch"

    def __call__(self, x: Tensor, add: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        if self._packed is not None:
            if add is None:
                return torch.ops.mkldnn._linear_pointwise(x, self._packed, self._bias, "none", [], "")
            return torch.ops.mkldnn._linear_pointwise.binary(x, add, self._packed, self._bias, "add")
        if add is None:
            if self._bias is None:
                return torch.mm(x, self._right, out=out) if out is not None else torch.mm(x, self._right)
            return torch.addmm(self._bias, x, self._right, out=out) if out is not None else \
                torch.addmm(self._bias, x, self._right)
        if self._bias is not None:
            add = add + self._bias
        return torch.addmm(add, x, self._right, out=out) if out is not None else torch.addmm(add, x, self._right)


def cached_step_matmul(owner: object, weight: Tensor, bias: Tensor | None, batch: int, *,
                       adds: bool = False) -> StepMatmul:
    """A :class:`StepMatmul` kept for ``owner`` (a cell) while ``weight``, ``bias``, ``batch``, the backend
    and the thread count stay the same: inference loops that run one step per call (streaming)
    must not repack the weight, or re-measure, on every call. Kept in
    :mod:`rnnkit.scan.weight_cache`, which says how a changed weight is seen.
    """
    return weight_cache.cached(owner, "step_matmul", (weight, bias),
                               lambda: StepMatmul(weight, bias, batch, adds=adds),
                               key=(batch, adds, current_backend(), torch.get_num_threads()))


def _use_onednn(weight: Tensor, bias: Tensor | None, batch: int, adds: bool, calls: int | None = None) -> bool:
    backend = current_backend()
    if backend == "torch" or not _ONEDNN or weight.device.type != "cpu" or weight.dtype != torch.float32:
        return False
    if weight.requires_grad and torch.is_grad_enabled():  # the engines call this with autograd off
        return False
    if backend == "onednn":
        return True
    n, k = weight.shape
    key = (n, k, batch, torch.get_num_threads(), bias is not None, adds)
    with _LOCK:
        costs = _CHOICES.get(key)
        if costs is not None:
            _CHOICES.move_to_end(key)
    if costs is None:
        costs = _measured_costs(weight, bias, batch, adds)
        with _LOCK:
            _CHOICES[key] = costs
            if len(_CHOICES) > _MAX_CHOICES:
                _CHOICES.popitem(last=False)
    per_torch, per_onednn, pack = costs
    saved = 0.9 * per_torch - per_onednn  # a clear win per call only: ties stay with torch
    return saved > 0 and (calls is None or calls * saved > pack)


def _measured_costs(weight: Tensor, bias: Tensor | None, batch: int, adds: bool,
                    rounds: int = 5) -> tuple[float, float, float]:
    """Seconds per call of both backends on this shape, and to pack the weight for oneDNN: the best
    of ``rounds`` alternated samples each, a sample being enough calls to take about 0.5 ms (one
    call of a small shape is too short to time)."""
    # fixed inputs: drawing them from torch's generator would shift a seeded run's random stream
    x = torch.linspace(-1.0, 1.0, batch * weight.shape[1]).view(batch, -1)
    add = torch.full((batch, weight.shape[0]), 0.5) if adds else None
    out = torch.empty(batch, weight.shape[0])
    source = weight.detach().contiguous()
    pack = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        packed = torch.ops.mkldnn._reorder_linear_weight(source, batch)
        pack = min(pack, time.perf_counter() - start)
    right = weight.detach().t()
    bias = None if bias is None else bias.detach()
    base = add if bias is None else (bias if add is None else add + bias)

    def run_torch() -> None:
        if base is None:
            torch.mm(x, right, out=out)
        else:
            torch.addmm(base, x, right, out=out)

    def run_onednn() -> None:
        if add is None:
            torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
        else:
            torch.ops.mkldnn._linear_pointwise.binary(x, add, packed, bias, "add")

    start = time.perf_counter()
    run_torch()
    run_onednn()  # also the warm-up of each
    calls = max(1, min(50, int(5e-4 / max(time.perf_counter() - start, 1e-7))))
    best = {run_torch: float("inf"), run_onednn: float("inf")}
    for _ in range(rounds):
        for fn in best:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[fn] = min(best[fn], time.perf_counter() - start)
    return best[run_torch] / calls, best[run_onednn] / calls, pack


def forget_measurements() -> None:
    """Drop the remembered choices (tests; after changing the thread count they are re-measured anyway)."""
    with _LOCK:
        _CHOICES.clear()
        _LARGE_CHOICES.clear()


# -- one large product: weight gradients, input gradients and projections ------------------------
# a product of fewer FLOPs stays on torch: oneDNN's fixed cost per call (tens of µs, and a reorder
# of an unpacked weight) is not paid back, and measuring would cost more than it saves
LARGE_MIN_FLOPS = 5e7
_LARGE_CHOICES: OrderedDict[tuple[Any, ...], str] = OrderedDict()
_LARGE_FORMS = ("torch", "onednn", "onednn_transposed")


def _dense(t: Tensor) -> Tensor:
    """``t`` if it is a plain or transposed dense matrix (what oneDNN reads in place), else a copy."""
    return t if t.is_contiguous() or t.t().is_contiguous() else t.contiguous()


def _run_large(form: str, a: Tensor, b: Tensor) -> Tensor:
    if form == "torch":
        return a @ b
    if form == "onednn":  # oneDNN computes input @ weight^T: weight = b^T, a strided view
        return torch.ops.mkldnn._linear_pointwise(_dense(a), _dense(b.t()), None, "none", [], "")
    # (b^T a^T)^T: faster when a is a transposed view (dZ^T of a weight gradient)
    return torch.ops.mkldnn._linear_pointwise(_dense(b.t()), _dense(a), None, "none", [], "").t().contiguous()


def _size_class(n: int) -> int:
    return 1 << max(0, round(math.log2(max(n, 1))))


def _stays_on_torch(backend: str, device: torch.device, dtypes: tuple[torch.dtype, ...], m: int, k: int,
                    n: int) -> bool:
    """Whether an ``[M, K] x [K, N]`` product keeps torch's GEMM whatever the timing would say."""
    return (backend == "torch" or not _ONEDNN or device.type != "cpu" or any(d != torch.float32 for d in dtypes)
            or min(m, k, n) == 0 or (backend == "auto" and 2.0 * m * k * n < LARGE_MIN_FLOPS))


def large_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for one large product ``[M, K] x [K, N]`` (either may be a transposed view), on
    torch's GEMM or oneDNN, whichever ran this class of shape faster here.

    The class is ``(M, K, N)`` each rounded to a power of two, the operands' layouts and the
    thread count; its first product is timed in each form (torch; oneDNN on ``a``; oneDNN on the
    transposed problem), alternated, and oneDNN is kept only for a clear win (under 0.8x torch's
    time). Products under :data:`LARGE_MIN_FLOPS`, tensors that need autograd, GPUs and float64
    stay on torch. Not differentiable (the engines call it inside their backward).
    """
    backend = current_backend()
    m, k = a.shape
    n = b.shape[1]
    if (_stays_on_torch(backend, a.device, (a.dtype, b.dtype), m, k, n)
            or (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad))):
        return a @ b
    if backend == "onednn":
        return _run_large("onednn_transposed" if a.stride(0) == 1 and a.stride(1) != 1 else "onednn", a, b)
    key = (_size_class(m), _size_class(k), _size_class(n), a.stride(0) == 1, b.stride(0) == 1,
           torch.get_num_threads())
    with _LOCK:
        form = _LARGE_CHOICES.get(key)
        if form is not None:
            _LARGE_CHOICES.move_to_end(key)
    if form is not None:
        return _run_large(form, a, b)
    times = {f: math.inf for f in _LARGE_FORMS}
    result: Tensor | None = None
    for timed in (False, True, True):  # the untimed round warms each form up (oneDNN creates its primitive)
        for f in _LARGE_FORMS:
            start = time.perf_counter()
            result = _run_large(f, a, b)
            if timed:
                times[f] = min(times[f], time.perf_counter() - start)
    best = min(("onednn", "onednn_transposed"), key=lambda f: times[f])
    form = best if times[best] < 0.8 * times["torch"] else "torch"
    with _LOCK:
        _LARGE_CHOICES[key] = form
        if len(_LARGE_CHOICES) > _MAX_CHOICES:
            _LARGE_CHOICES.popitem(last=False)
    return result if form == _LARGE_FORMS[-1] and result is not None else _run_large(form, a, b)


class _Linear(torch.autograd.Function):
    """``x @ weight^T + bias`` on ``[M, K]`` rows, each of its three products through :func:`large_matmul`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = large_matmul(x, weight.t())
        return y if bias is None else y.add_(bias)

    @staticmethod
    @without_autocast
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        # under create_graph=True (grad mode on here) large_matmul keeps torch's differentiable products
        grad_x = large_matmul(grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = large_matmul(grad.t(), x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear`` over any leading shape, whose forward and backward products go through
    :func:`large_matmul` (same values up to float32 rounding; under ``create_graph=True`` the
    backward's products are torch's own, so second derivatives work). Anything :func:`large_matmul`
    would keep on torch, and CPU autocast, runs ``F.linear`` itself."""
    rows = x.numel() // max(x.shape[-1], 1)
    dtypes = (x.dtype, weight.dtype) if bias is None else (x.dtype, weight.dtype, bias.dtype)
    if (_stays_on_torch(current_backend(), x.device, dtypes, rows, weight.shape[1], weight.shape[0])
            or torch.is_autocast_enabled("cpu")):
        return torch.nn.functional.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1])
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        out: Tensor = _Linear.apply(flat, weight, bias)
    else:  # inference: the product alone
        out = large_matmul(flat, weight.t())
        if bias is not None:
            out = out.add_(bias) if out.is_contiguous() else out + bias
    return out.view(*x.shape[:-1], weight.shape[0])

