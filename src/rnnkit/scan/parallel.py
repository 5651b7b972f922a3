"""Scans for element-wise linear recurrences ``h_t = a_t * h_{t-1} + b_t`` (minGRU, minLSTM).

When a cell's gates depend only on ``x_t`` (a :class:`~rnnkit.cells.minrnn.LinearRecurrentCell`)
the coefficients of every step are known before the loop starts, and two forms beat the
reference scan's per-step ``recur`` call:

* :func:`linear_scan_log`: the log-space parallel scan of Feng et al. 2024 (arXiv:2410.01201,
  appendix B; after Heinsen 2023): with ``A_t = a_1 ... a_t``,
  ``h_t = A_t h_0 + A_t * sum_{k<=t} b_k / A_k``, i.e. ``log h_t = log A_t +
  logcumsumexp_k(log b_k - log A_k)``: one ``cumsum`` and one ``logcumsumexp``, no time loop.
  ``b`` of either sign is split into its positive and negative parts; ``h_0`` of any sign is
  added as ``h_0 * A_t``. By default the sequence is cut into blocks of 64 steps, scanned all at
  once, and the state is carried across blocks; this bounds ``|log A_t|`` and with it the float32
  rounding error, which grows with ``|log A_t|`` in the one-block form.
* :func:`linear_scan_sequential`: a fused element-wise loop, one ``addcmul`` per step forward
  and one per step backward (a hand-written backward through time), no matrix multiply.

:func:`parallel_scan` and :func:`sequential_scan` run a cell over a sequence with the same
signature and semantics as :func:`~rnnkit.scan.reference_scan`: masked steps are skipped (as
``a = 1, b = 0``: the state is carried and the output is zero), ``reverse`` runs time backwards,
the final state is the state after each sequence's last real step.

Which is faster depends on the hardware: on the 2-core CPU we measured (``benchmarks/bench_speed.py``,
``docs/speed.md``) the sequential loop wins at every length tried, so :func:`select_scan` picks it
for ``implementation="auto"`` on CPU; on a GPU (an H100) the parallel scan won at every length, by
7-16x at T=1024-4096, so it is the choice there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx

from ..cells.base import RecurrentCell, State
from ..cells.gru import GRUCell
from ..cells.lstm import LayerNormLSTMCell, LSTMCell
from ..cells.minrnn import LinearRecurrentCell, MinGRUCell, MinLSTMCell
from . import engine_triton
from ._bptt import eager_under_compile, first_order_only, unsupported_transform, without_autocast
from .engine import engine_scan, engine_unavailable_reason, triton_engine_unavailable_reason
from .engine_gru import gru_engine_scan, gru_engine_unavailable_reason
from .step_matmul import linear

ScanFn = Callable[..., tuple[Tensor, State, "dict[str, Tensor] | None"]]
LINEAR_SCANS = ("sequential", "parallel")


def _very_negative(dtype: torch.dtype) -> float:
    """A finite stand-in for ``log 0``: ``exp`` of it (plus any sane log-magnitude) is 0, and
    unlike ``-inf`` it keeps ``logcumsumexp``'s backward free of ``inf - inf``."""
    return torch.finfo(dtype).min / 8


def _log_a_floor(dtype: torch.dtype) -> float:
    """``2 log eps`` of float32 (-32) or of float64 (-72): a decay below ``eps^2`` leaves nothing of
    ``h_{t-1}`` that float32 could hold next to an ``h_t`` of comparable size. Half-precision dtypes
    take float32's floor too: their own (-10 in bfloat16) kept up to ``1e-4 |h_{t-1}|``, which is 7x
    ``h_t`` when a gate resets a state of 1000 to 0.01."""
    return 2.0 * math.log(torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps)


# -- tensor-level scans ------------------------------------------------------------------------
DEFAULT_CHUNK = 64


def linear_scan_log(log_a: Tensor, log_b: Tensor, h0: Tensor, *, b_sign: Tensor | None = None,
                    reverse: bool = False, chunk_size: int | None = DEFAULT_CHUNK,
                    b: Tensor | None = None) -> Tensor:
    """All states of ``h_t = a_t h_{t-1} + b_t`` by a log-space parallel scan.

    Args:
        log_a: ``[B, T, H]`` ``log a_t`` (finite: ``a_t > 0``).
        log_b: ``[B, T, H]`` ``log |b_t|`` (may hold very negative values for ``b_t = 0``).
        h0: ``[B, H]`` initial state, any sign.
        b_sign: ``[B, T, H]`` sign of ``b_t`` (``-1, 0, +1``), or ``None`` when ``b_t > 0``.
        reverse: run from ``t = T`` down to ``t = 1`` (``h0`` enters at the last step).
        chunk_size: scan blocks of this many steps in parallel (all blocks at once), then carry
            the state across blocks with a ``T / chunk_size``-step element-wise loop. ``None``
            scans the whole sequence in one block, exactly the paper's form.
        b: ``[B, T, H]`` ``b_t`` itself, carrying its graph. Given, the states are still computed
            from ``log_b`` and ``b_sign`` (read as values only), but the gradients come from the
            adjoint recurrence ``g_t = dL/dh_t + a_{t+1} g_{t+1}``, run by the same parallel scan:
            ``dL/db_t = g_t``, ``dL/d log a_t = g_t a_t h_{t-1}``, ``dL/dh_0 = a_1 g_1``. That is
            exact where ``b_t = 0``: through ``log |b_t|`` the gradient there is ``0 * inf``, and
            autograd's clamped form returns 0 (a ``"linear"`` minGRU candidate whose pre-activation
            is exactly 0 lost ``dL/dk``). The backward is itself differentiable (double backward).

    Returns:
        ``[B, T, H]`` states ``h_1 .. h_T`` (in input order when ``reverse``).

    Numerics: within a block ``log A_t`` is a running sum, and the relative error of ``h_t`` in
    float32 is about ``6e-8 * |log A_t|``. Over a whole long sequence ``|log A_t|`` reaches
    thousands (errors of 1e-3 at T = 4000 with saturated gates); blocks keep the number of steps
    in the sum bounded, and each step's ``log a_t`` is floored at ``2 log eps`` (-32 in float32 and
    the half-precision dtypes, -72 in float64): below that ``a_t h_{t-1}`` is under ``eps^2 |h_{t-1}|``,
    lost to rounding anyway, while a huge ``|log a_t|`` (pre-activations in the hundreds) would
    cost every later step of its block its precision.
    """
    if b is not None:
        return _AdjointLogScan.apply(log_a, b, log_b.detach(), b_sign, h0, reverse, chunk_size)
    return _scan_log(log_a, log_b, h0, b_sign=b_sign, reverse=reverse, chunk_size=chunk_size)


def _scan_log(log_a: Tensor, log_b: Tensor, h0: Tensor, *, b_sign: Tensor | None, reverse: bool,
              chunk_size: int | None) -> Tensor:
    """:func:`linear_scan_log` without ``b``: differentiable by autograd through the logs."""
    log_a = log_a.clamp(min=_log_a_floor(log_a.dtype))
    if reverse:
        flipped = _scan_log(log_a.flip(1), log_b.flip(1), h0, chunk_size=chunk_size, reverse=False,
                            b_sign=None if b_sign is None else b_sign.flip(1))
        return flipped.flip(1)
    batch, steps, hidden = log_a.shape
    if chunk_size is None or steps <= chunk_size:
        return _log_block(log_a, log_b, h0.unsqueeze(1), b_sign)[0]
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    n = -(-steps // chunk_size)
    pad = n * chunk_size - steps  # padded steps are a = 1, b = 0: they change nothing
    if pad:
        log_a = F.pad(log_a, (0, 0, 0, pad))
        log_b = F.pad(log_b, (0, 0, 0, pad), value=_very_negative(log_b.dtype))
        b_sign = None if b_sign is None else F.pad(b_sign, (0, 0, 0, pad))

    def blocks(t: Tensor) -> Tensor:
        return t.reshape(batch * n, chunk_size, hidden)  # [B*n, C, H]: every block from a zero state

    local, log_cum_a = _log_block(blocks(log_a), blocks(log_b), None,
                                  None if b_sign is None else blocks(b_sign))
    local = local.view(batch, n, chunk_size, hidden)
    decay = torch.exp(log_cum_a).view(batch, n, chunk_size, hidden)  # a_{start..t} within the block
    # state at the end of each block: one short element-wise loop over the blocks
    ends = linear_scan_sequential(decay[:, :, -1], local[:, :, -1], h0)  # [B, n, H]
    starts = torch.cat([h0.unsqueeze(1), ends[:, :-1]], 1)
    h = local + decay * starts.unsqueeze(2)
    return h.reshape(batch, n * chunk_size, hidden)[:, :steps]


class _AdjointLogScan(torch.autograd.Function):
    """:func:`linear_scan_log` with ``b_t`` as an input and the adjoint recurrence as backward.

    The backward is written in differentiable ops (the adjoint scan calls this function again,
    with ``dL/dh`` as its ``b``), so second derivatives are exact too.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, log_a: Tensor, b: Tensor, log_b: Tensor,  # type: ignore[override]
                b_sign: Tensor | None, h0: Tensor, reverse: bool, chunk_size: int | None) -> Tensor:
        h = _scan_log(log_a, log_b, h0, b_sign=b_sign, reverse=reverse, chunk_size=chunk_size)
        ctx.save_for_backward(log_a, h, h0)
        ctx.options = (reverse, chunk_size)  # type: ignore[attr-defined]
        return h

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        log_a, h, h0 = ctx.saved_tensors
        reverse, chunk_size = ctx.options
        floor = _log_a_floor(log_a.dtype)
        a = torch.exp(log_a.clamp(min=floor))  # the coefficients the forward used
        if reverse:  # step t feeds step t - 1
            a_next = F.pad(a[:, :-1], (0, 0, 1, 0), value=1.0)
            h_prev = torch.cat([h[:, 1:], h0.unsqueeze(1)], 1)
        else:  # step t feeds step t + 1
            a_next = F.pad(a[:, 1:], (0, 0, 0, 1), value=1.0)
            h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], 1)
        # g_t = dL/dh_t + a_{t+1} g_{t+1}: the forward's recurrence run the other way
        tiny = torch.finfo(grad_h.dtype).tiny
        g = linear_scan_log(torch.log(a_next), torch.log(grad_h.detach().abs().clamp_min(tiny)),
                            torch.zeros_like(h0), b_sign=torch.sign(grad_h.detach()), reverse=not reverse,
                            chunk_size=chunk_size, b=grad_h)
        grad_log_a = None
        if ctx.needs_input_grad[0]:  # d(a_t h_{t-1})/d log a_t, zero where the forward's clamp was active
            grad_log_a = torch.where(log_a >= floor, g * a * h_prev, 0.0)
        grad_h0 = None
        if ctx.needs_input_grad[4]:
            first = -1 if reverse else 0
            grad_h0 = a[:, first] * g[:, first]
        return grad_log_a, g, None, None, grad_h0, None, None


def _log_block(log_a: Tensor, log_b: Tensor, h0: Tensor | None, b_sign: Tensor | None) -> tuple[Tensor, Tensor]:
    """One block of the parallel scan: ``(h, log A)``, time on dim 1, ``h0`` ``[N, 1, H]`` or ``None`` for 0."""
    log_cum_a = log_a.cumsum(1)  # log A_t
    if b_sign is None:
        h = torch.exp(log_cum_a + torch.logcumsumexp(log_b - log_cum_a, 1))
    else:
        floor = _very_negative(log_b.dtype)
        log_pos = torch.where(b_sign > 0, log_b, floor)
        log_neg = torch.where(b_sign < 0, log_b, floor)
        h = (torch.exp(log_cum_a + torch.logcumsumexp(log_pos - log_cum_a, 1))
             - torch.exp(log_cum_a + torch.logcumsumexp(log_neg - log_cum_a, 1)))
    return (h if h0 is None else h + h0 * torch.exp(log_cum_a)), log_cum_a


def _sequential_loop(a: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:
    """Forward loop on time-major ``[T, B, H]`` tensors, writing into one preallocated buffer."""
    out = torch.empty_like(b)
    h = h0
    steps = range(a.shape[0] - 1, -1, -1) if reverse else range(a.shape[0])
    a_s, b_s, out_s = a.unbind(0), b.unbind(0), out.unbind(0)
    for t in steps:
        h = torch.addcmul(b_s[t], a_s[t], h, out=out_s[t])
    return out


class _SequentialLinearScan(torch.autograd.Function):
    """``h_t = a_t h_{t-1} + b_t`` over time-major tensors with backpropagation through time by hand.

    Backward: ``g_t = dL/dh_t + a_{t+1} g_{t+1}``, then ``dL/db_t = g_t``,
    ``dL/da_t = g_t h_{t-1}`` (one vectorised product after the loop) and ``dL/dh_0 = a_1 g_1``.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, a: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:  # type: ignore[override]
        out = _sequential_loop(a, b, h0, reverse)
        ctx.save_for_backward(a, out, h0)
        ctx.reverse = reverse  # type: ignore[attr-defined]
        return out

    @staticmethod
    @first_order_only
    @without_autocast
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        a, out, h0 = ctx.saved_tensors
        reverse: bool = ctx.reverse
        grad = grad_out.contiguous().clone()  # becomes dL/dh_t, accumulated in place
        g_s, a_s = grad.unbind(0), a.unbind(0)
        steps = a.shape[0]
        if reverse:  # step t feeds step t - 1
            for t in range(1, steps):
                g_s[t].addcmul_(a_s[t - 1], g_s[t - 1])
            h_prev = torch.cat([out[1:], h0.unsqueeze(0)], 0)
            first = steps - 1
        else:  # step t feeds step t + 1
            for t in range(steps - 2, -1, -1):
                g_s[t].addcmul_(a_s[t + 1], g_s[t + 1])
            h_prev = torch.cat([h0.unsqueeze(0), out[:-1]], 0)
            first = 0
        grad_a = grad * h_prev if ctx.needs_input_grad[0] else None
        grad_h0 = a_s[first] * g_s[first] if ctx.needs_input_grad[2] else None
        return grad_a, grad, grad_h0, None


def linear_scan_sequential(a: Tensor, b: Tensor, h0: Tensor, *, reverse: bool = False) -> Tensor:
    """All states of ``h_t = a_t h_{t-1} + b_t`` by a fused element-wise loop.

    Args:
        a: ``[B, T, H]`` coefficients (any values).
        b: ``[B, T, H]`` inputs.
        h0: ``[B, H]`` initial state.
        reverse: run from ``t = T`` down to ``t = 1``.

    Returns:
        ``[B, T, H]`` states (in input order). Differentiable in ``a``, ``b`` and ``h0`` through
        a hand-written backward loop (first derivatives only).
    """
    a_t = a.transpose(0, 1).contiguous()  # time-major, so each step is one contiguous slice
    b_t = b.transpose(0, 1).contiguous()
    h0 = h0.contiguous()
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or h0.requires_grad):
        out = _SequentialLinearScan.apply(a_t, b_t, h0, reverse)
    else:
        out = _sequential_loop(a_t, b_t, h0, reverse)
    return out.transpose(0, 1)


# -- cell-level scans (same contract as reference_scan) -----------------------------------------
_OVERRIDES: dict[type, bool] = {}  # per cell class, worked out once


def _recur_overrides_scan_terms(cls: type) -> bool:
    """Whether the cell class's ``recur`` is written below the class that defines its ``scan_terms`` (a subclass
    of ``MinGRUCell`` that rewrites only ``recur``): the linear scans would compute the parent's recurrence."""
    known = _OVERRIDES.get(cls)
    if known is None:
        mro = cls.__mro__
        recur_owner = next(k for k in mro if "recur" in vars(k))
        terms_owner = next(k for k in mro if "scan_terms" in vars(k))
        known = _OVERRIDES[cls] = recur_owner is not terms_owner and issubclass(recur_owner, terms_owner)
    return known


def linear_scan_unavailable_reason(cell: RecurrentCell, implementation: str, *, zoneout_rate: float = 0.0,
                                   return_gates: bool = False, recurrent_dropout: bool = False) -> str | None:
    """Why ``implementation`` (``"sequential"`` or ``"parallel"``) cannot run ``cell`` exactly, else ``None``."""
    if not isinstance(cell, LinearRecurrentCell):
        return (f"implementation={implementation!r} needs a cell whose gates depend only on the input "
                f"(a LinearRecurrentCell such as 'mingru' or 'minlstm'); {type(cell).__name__} is not one")
    if _recur_overrides_scan_terms(type(cell)):
        name = type(cell).__name__
        return (f"the linear scans run {name}.scan_terms, but {name} overrides recur without it (its own recur "
                "is the definition); define scan_terms from the same equations, or use implementation='reference'")
    if return_gates:
        return "gate activations are recorded only by the reference scan"
    if zoneout_rate:
        return "zoneout runs only in the reference scan"
    if recurrent_dropout and implementation == "parallel":
        return ("recurrent dropout zeroes a_t for dropped units, which the log-space scan cannot represent; "
                "use implementation='sequential'")
    return None


def _check(cell: RecurrentCell, implementation: str, zoneout_rate: float, return_gates: bool,
           recurrent_mask: Tensor | None) -> LinearRecurrentCell:
    reason = linear_scan_unavailable_reason(cell, implementation, zoneout_rate=zoneout_rate,
                                            return_gates=return_gates,
                                            recurrent_dropout=recurrent_mask is not None)
    if reason is not None:
        raise ValueError(f"{implementation} scan: {reason}")
    assert isinstance(cell, LinearRecurrentCell)
    return cell


def _projected(cell: LinearRecurrentCell, x: Tensor, h0: Tensor) -> Tensor:
    """``cell.project_input(x)`` in the state's dtype.

    Under autocast the projection comes out in the autocast dtype (bfloat16, float16) while the
    state stays in the weights' dtype, as the reference scan's does (its ``a_t h_{t-1}`` promotes
    back). The scans' coefficients and their running sums must be computed in the state's dtype
    too: in bfloat16 the log-space scan's error grew to 30x the reference scan's (0.3 against 0.009
    at T=200), and the sequential scan returned its outputs and final state in bfloat16. A no-op
    outside autocast.
    """
    if type(cell).project_input in _PLAIN_PROJECTIONS:  # F.linear's products on the faster GEMM (step_matmul)
        x_proj = linear(x, cell.weight_ih, cell.bias_ih)  # type: ignore[arg-type]
    else:
        x_proj = cell.project_input(x)
    return x_proj if x_proj.dtype == h0.dtype else x_proj.to(h0.dtype)


_PLAIN_PROJECTIONS = (MinGRUCell.project_input, MinLSTMCell.project_input)


def _empty(cell: RecurrentCell, x: Tensor, state: State) -> tuple[Tensor, State, None]:
    return x.new_zeros(x.shape[0], 0, cell.output_size), state, None


@eager_under_compile
def sequential_scan(cell: RecurrentCell, x: Tensor, state: State, *, mask: Tensor | None = None,
                    reverse: bool = False, recurrent_mask: Tensor | None = None, zoneout_rate: float = 0.0,
                    training: bool = False, return_gates: bool = False) -> tuple[Tensor, State, None]:
    """Run a :class:`LinearRecurrentCell` over ``x`` ``[B, T, I]`` with the fused element-wise loop.

    Arguments and results as in :func:`~rnnkit.scan.reference_scan`; ``zoneout_rate`` and
    ``return_gates`` are not supported (ValueError), ``training`` is accepted for the common signature.
    """
    lin = _check(cell, "sequential", zoneout_rate, return_gates, recurrent_mask)
    if x.shape[1] == 0:
        return _empty(cell, x, state)
    (h0,) = state
    a, b, _ = lin.scan_terms(_projected(lin, x, h0))  # [B, T, H] each, all steps at once
    if recurrent_mask is not None:
        a = a * recurrent_mask.unsqueeze(1)  # dropout on h_{t-1}: the same mask at every step
    keep = None if mask is None else mask.unsqueeze(-1)
    if keep is not None:
        a = torch.where(keep, a, 1.0)  # a masked step carries the state ...
        b = torch.where(keep, b, 0.0)
    h = linear_scan_sequential(a, b, h0, reverse=reverse)
    h_n = h[:, 0] if reverse else h[:, -1]
    if keep is not None:
        h = h * keep  # ... and outputs zero
    return h, (h_n,), None


def parallel_scan(cell: RecurrentCell, x: Tensor, state: State, *, mask: Tensor | None = None,
                  reverse: bool = False, recurrent_mask: Tensor | None = None, zoneout_rate: float = 0.0,
                  training: bool = False, return_gates: bool = False) -> tuple[Tensor, State, None]:
    """Run a :class:`LinearRecurrentCell` over ``x`` ``[B, T, I]`` with the log-space parallel scan.

    Arguments and results as in :func:`~rnnkit.scan.reference_scan`; ``zoneout_rate``,
    ``return_gates`` and ``recurrent_mask`` are not supported (ValueError).
    """
    lin = _check(cell, "parallel", zoneout_rate, return_gates, recurrent_mask)
    if x.shape[1] == 0:
        return _empty(cell, x, state)
    (h0,) = state
    x_proj = _projected(lin, x, h0)
    log_a, log_b, b_sign = lin.scan_terms(x_proj, log_space=True)
    b = None
    if torch.is_grad_enabled() and (x_proj.requires_grad or h0.requires_grad):
        log_b = log_b.detach()  # the states come from log |b|, the gradients from b itself (exact at b = 0)
        _, b, _ = lin.scan_terms(x_proj)
    keep = None if mask is None else mask.unsqueeze(-1)
    if keep is not None:
        log_a = torch.where(keep, log_a, 0.0)  # a = 1
        log_b = torch.where(keep, log_b, _very_negative(log_b.dtype))  # b = 0
        b = None if b is None else torch.where(keep, b, 0.0)
        if b_sign is not None:
            b_sign = torch.where(keep, b_sign, 0.0)
    h = linear_scan_log(log_a, log_b, h0, b_sign=b_sign, reverse=reverse, b=b)
    h_n = h[:, 0] if reverse else h[:, -1]
    if keep is not None:
        h = h * keep
    return h, (h_n,), None


# On CPU, calls shorter than this run the reference scan under "auto" instead of an engine: the
# crossover measured at I=128 H=256, batch 1 and 64, training and inference (docs/speed.md)
SHORT_STEPS = {"lstm": 8, "gru": 4}


def select_scan(cells: Sequence[RecurrentCell], implementation: str, device: torch.device, *,
                zoneout_rate: float = 0.0, return_gates: bool = False,
                recurrent_dropout: bool = False, steps: int | None = None) -> ScanFn | None:
    """The scan a layer should use when the fused kernel cannot run, or ``None`` for the reference scan.

    ``"auto"`` picks, for cells with input-only gates, ``"sequential"`` on CPU (measured faster
    there, see ``docs/speed.md``) and ``"parallel"`` on other devices (on an H100 it trained 1.3x
    the sequential form at T=100 and 7-16x at T=1024-4096), falling back to ``"parallel"``'s
    unsupported cases with ``"sequential"``;
    for :class:`~rnnkit.cells.LSTMCell` (peepholes, recurrent dropout, zoneout, masks with gaps) the
    hand-written-backward engine of :mod:`rnnkit.scan.engine` (measured 1.2-1.5x the reference
    scan on CPU; for ``LayerNormLSTMCell`` 1.3-1.5x on CPU since its per-step matmuls run on
    oneDNN, :mod:`rnnkit.scan.step_matmul`), on CUDA with its element-wise work in Triton kernels
    and its loops replayed as CUDA graphs where triton is installed (``"triton"``: 1.2-1.5x
    cuDNN's plain LSTM on an H100, where the engine without them ran 0.1-0.2x; the layer-norm
    LSTM 1.22x); for :class:`~rnnkit.cells.GRUCell` (recurrent dropout, zoneout, masks with
    gaps) the GRU engine of :mod:`rnnkit.scan.engine_gru`, with torch kernels on CPU and Triton
    kernels on CUDA where triton is installed (1.3-1.7x cuDNN's plain GRU on an H100, where the
    reference scan ran 0.1-0.2x; other GPUs keep the reference scan, the torch-kernel GRU
    engine not having been timed there); then the reference scan. An explicit ``"sequential"``,
    ``"parallel"``, ``"engine"`` or ``"triton"`` raises ValueError with the reason when it cannot
    run this call (``"engine"`` on GRU cells runs the GRU engine with torch kernels,
    ``"triton"`` with Triton kernels); any other implementation gives ``None``.

    On CPU, ``"auto"`` runs short calls (``steps``, when given, below :data:`SHORT_STEPS`: 8 for
    the LSTM engines, 4 for the GRU engine) on the reference scan, where the engines' fixed cost
    per call (weights reordered under autograd, buffers, the weight gradients' matmuls: 0.1-2 ms)
    does not pay and the reference measured faster (``docs/speed.md``, "Short sequences"): a
    streaming call of one step, a short sentence.

    Under ``torch.func`` transforms (``grad``, ``vmap``, ``jvp``: per-sample gradients) and
    forward-mode AD, whose rules the hand-written ``autograd.Function``s lack, ``"auto"`` gives
    ``None`` (the reference scan) and an explicit fast implementation raises ValueError.
    """
    transform = unsupported_transform() if implementation != "reference" else None
    if transform is not None:  # the hand-written autograd Functions have no functorch / forward-AD rules
        if implementation in (*LINEAR_SCANS, "engine", "triton"):
            raise ValueError(f"implementation={implementation!r} cannot run under {transform}: its hand-written "
                             "backward is a custom autograd.Function without vmap/jvp rules; use "
                             "implementation='reference' (or 'auto', which runs it under transforms)")
        return None  # "auto": the reference scan, which every transform supports
    if implementation in ("engine", "triton") and cells and all(isinstance(c, GRUCell) for c in cells):
        kernels = "triton" if implementation == "triton" else "torch"
        for c in cells:
            reason = gru_engine_unavailable_reason(c, device, return_gates=return_gates, kernels=kernels)
            if reason is not None:
                raise ValueError(f"{reason}; use implementation='auto' or 'reference'")
        return functools.partial(gru_engine_scan, kernels=kernels)
    if implementation == "triton":
        for c in cells:
            reason = (engine_unavailable_reason(c, zoneout_rate=zoneout_rate, return_gates=return_gates)
                      or triton_engine_unavailable_reason(c, device))
            if reason is not None:
                raise ValueError(f"{reason}; use implementation='auto' or 'reference'")
        return functools.partial(engine_scan, kernels="triton")
    if implementation == "engine":
        for c in cells:
            reason = engine_unavailable_reason(c, zoneout_rate=zoneout_rate, return_gates=return_gates)
            if reason is not None:
                raise ValueError(f"{reason}; use implementation='auto' or 'reference'")
        return engine_scan
    options: dict[str, Any] = {"zoneout_rate": zoneout_rate, "return_gates": return_gates,
                               "recurrent_dropout": recurrent_dropout}
    scans: dict[str, ScanFn] = {"sequential": sequential_scan, "parallel": parallel_scan}
    if implementation in LINEAR_SCANS:
        for c in cells:
            reason = linear_scan_unavailable_reason(c, implementation, **options)
            if reason is not None:
                raise ValueError(f"implementation={implementation!r} cannot run this call: {reason}; "
                                 "use implementation='auto' to fall back to the reference scan")
        return scans[implementation]
    if implementation != "auto":
        return None
    preferred = ("sequential",) if device.type == "cpu" else ("parallel", "sequential")
    for name in preferred:
        if all(linear_scan_unavailable_reason(c, name, **options) is None for c in cells):
            return scans[name]
    if device.type == "cpu" and steps is not None and steps < SHORT_STEPS["gru" if cells and all(
            isinstance(c, GRUCell) for c in cells) else "lstm"]:
        return None  # the reference scan: faster than the engines' fixed cost on short calls
    if all(type(c) is LSTMCell and engine_unavailable_reason(c, zoneout_rate=zoneout_rate,
                                                                return_gates=return_gates) is None for c in cells):
        if engine_triton.chosen_by_auto(device) and all(triton_engine_unavailable_reason(c, device) is None
                                                        for c in cells):
            return functools.partial(engine_scan, kernels="triton")  # 1.2-1.5x cuDNN on an H100 (CUDA graphs)
        return engine_scan
    if cells and all(type(c) is LayerNormLSTMCell and engine_unavailable_reason(
            c, zoneout_rate=zoneout_rate, return_gates=return_gates) is None for c in cells):
        if engine_triton.chosen_by_auto(device) and all(triton_engine_unavailable_reason(c, device) is None
                                                        for c in cells):
            return functools.partial(engine_scan, kernels="triton")  # 1.22x cuDNN's plain LSTM on an H100 (H=256)
        return engine_scan  # 1.3-1.5x the reference scan on CPU, 7.4x on an H100 (H=256) without Triton
    if cells and all(gru_engine_unavailable_reason(c, device, return_gates=return_gates) is None for c in cells):
        if device.type == "cpu":
            return gru_engine_scan  # GRUs with recurrent dropout, zoneout or gappy masks: faster than the reference
        if engine_triton.chosen_by_auto(device) and all(gru_engine_unavailable_reason(
                c, device, return_gates=return_gates, kernels="triton") is None for c in cells):
            return functools.partial(gru_engine_scan, kernels="triton")  # 1.3-1.7x cuDNN's plain GRU on an H100
    return None
