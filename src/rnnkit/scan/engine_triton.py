"""Triton kernels for the LSTM engine's per-step element-wise math (CUDA; ``"auto"`` uses them there).

On a GPU the engine of :mod:`rnnkit.scan.engine` spends its time launching kernels: each step's
gate math is about ten small PyTorch ops forward and fifteen backward, each a kernel launch of a
few microseconds on a ``[B, 4H]`` tile, where cuDNN runs a whole step in about ten (measured on an
H100: the engine trains at 0.1-0.2x cuDNN, ``benchmarks/RESULTS.md``). These two kernels do a
step's element-wise work in one launch each, so a step is one matmul plus one kernel in both
directions:

* forward (:func:`forward_step`): from the pre-activations ``z_t = [x_t, h_{t-1}] W^T + b`` (gate
  rows ``o, i, f, 2g`` as in the engine), with optional peepholes, update weights (zoneout, masks)
  and recurrent dropout, write the gate activations in place, ``c~``, ``tanh c~``, the new
  ``h_t``, ``c_t`` and the next matmul input;
* backward (:func:`backward_step`): from the saved activations and ``dL/dh_t``, ``dL/dc_t``, write
  ``dL/dz_t``, ``dL/dc_{t-1}``, what skips the cell towards ``dL/dh_{t-1}``, and the per-row
  peephole gradients.

The math is the engine's own, term for term, and the tests run it against the reference scan
through Triton's interpreter (``TRITON_INTERPRET=1``), which executes kernels on the CPU, and on
a GPU when there is one. One kernel per step is not enough on its own: the host still spent
300-470 µs per step on Python and launches while the GPU worked about 50 (0.2-0.5x cuDNN), so
the engine records its forward and backward loops as CUDA graphs and replays them
(:mod:`rnnkit.scan.cuda_graph`): 1.2-1.5x cuDNN's plain LSTM on an H100 for plain, peephole,
recurrent-dropout and zoneout LSTMs (``benchmarks/RESULTS.md``). Projected cells (LSTMP) use the
same kernels with ``u_h=None``: the kernel writes ``o tanh c`` and updates only ``c``, and the engine
projects and updates ``h`` after it. The layer uses them with
``implementation="triton"``, and ``"auto"`` on CUDA where triton is installed. Triton ships with
CUDA builds of PyTorch; nothing here is imported unless asked for.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import torch
from torch import Tensor


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on ``device``, else ``None``."""
    try:
        import triton  # noqa: F401, PLC0415  # optional: ships with CUDA builds of torch
    except ImportError:
        return "implementation='triton' needs the triton package (it ships with CUDA builds of PyTorch)"
    if device.type != "cuda" and not _interpreting():
        return (f"implementation='triton' runs on CUDA tensors, got {device.type} "
                "(TRITON_INTERPRET=1 runs the kernels on the CPU, slowly, for testing)")
    return None


def chosen_by_auto(device: torch.device) -> bool:
    """Whether ``implementation="auto"`` should use the Triton kernels on ``device``.

    On CUDA devices of compute capability 8.0 and newer (what Triton supports; the kernels were
    measured on an H100), where the kernels can run; older GPUs keep the torch engine.
    """
    if device.type != "cuda" or not torch.cuda.is_available() or triton_unavailable_reason(device) is not None:
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=1)
def _kernels() -> tuple[Any, Any]:
    """The forward and backward kernels (the module that defines them is imported on first use)."""
    from . import _triton_kernels  # noqa: PLC0415  # imports triton

    return _triton_kernels.lstm_forward_step, _triton_kernels.lstm_backward_step


def _on(device: torch.device) -> Any:
    """Triton launches on the current CUDA device: make it the tensors' own."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@functools.lru_cache(maxsize=64)
def _grid(batch: int, hidden: int) -> tuple[tuple[int, int], int, int]:
    block_h = min(128, 1 << max(4, (hidden - 1).bit_length()))
    block_b = 4 if block_h >= 128 else 8
    return ((batch + block_b - 1) // block_b, (hidden + block_h - 1) // block_h), block_b, block_h


def _row(t: Tensor | None) -> int:
    if t is None:
        return 0
    if t.stride(-1) != 1:
        raise ValueError("the Triton kernels need unit stride along the hidden dimension")
    return t.stride(0)


def _update(u: Tensor | None, like: Tensor) -> tuple[Tensor, int, int]:
    """An update weight ``[B, 1]`` or ``[B, H]`` with its row and column strides (0 for broadcast)."""
    if u is None:
        return like, 0, 0
    return u, u.stride(0), (u.stride(1) if u.shape[1] > 1 else 0)


def _check_updates(u_h: Tensor | None, u_c: Tensor | None) -> None:
    """``u_c`` alone is allowed (a projected cell, whose ``h`` is updated after its projection), ``u_h`` alone is not."""
    if u_h is not None and u_c is None:
        raise ValueError("an update weight for h needs one for c (pass u_c, all ones if c is not updated)")


def project_state(h_raw: Tensor, w_hr_t: Tensor, h_prev: Tensor, h_next: Tensor, h_cand: Tensor | None,
                  u_h: Tensor | None, rec: Tensor | None, h_in: Tensor | None) -> None:
    """A projected cell's step after its kernel (torch ops; recorded in the same CUDA graph).

    ``h~ = W_hr (o tanh c)`` from ``h_raw``; ``h_next`` is ``h~``, or lerped from ``h_prev`` by
    ``u_h`` (``h_cand`` then holds ``h~``); ``h_in``, when the next matmul reads its own copy, gets
    ``h_next * rec`` (or ``h_next``).
    """
    torch.mm(h_raw, w_hr_t, out=h_next if h_cand is None else h_cand)
    if h_cand is not None:
        assert u_h is not None
        torch.lerp(h_prev, h_cand, u_h, out=h_next)
    if h_in is None:
        return
    if rec is not None:
        torch.mul(h_next, rec, out=h_in)
    else:
        h_in.copy_(h_next)


def forward_step(z: Tensor, c_prev: Tensor, c_cand: Tensor, tanh_c: Tensor, h_prev: Tensor, h_next: Tensor,
                 c_next: Tensor, h_in: Tensor | None, peep: Tensor | None, u_h: Tensor | None,
                 u_c: Tensor | None, rec: Tensor | None) -> None:
    """One step's gate math (see the module docstring). All ``[B, H]`` except ``z`` ``[B, 4H]``.

    ``z`` holds the pre-activations and receives the activations ``o, i, f, sigmoid(2 a_g)``;
    ``c_next`` is written only with update weights (else ``c~`` is the new cell state, and
    ``c_cand`` should be that buffer); ``h_in`` (the next matmul's ``h`` input, recurrent-dropped)
    only when it is not ``h_next`` itself. ``u_c`` without ``u_h`` (a projected cell) updates ``c``
    only and writes ``o tanh c`` to ``h_next`` as it is (``h_prev`` is then not read).
    """
    fwd, _ = _kernels()
    batch, hidden = c_prev.shape
    peep = None if peep is None else peep.contiguous()  # read by plain offsets
    grid, block_b, block_h = _grid(batch, hidden)
    uh, uh_row, uh_col = _update(u_h, c_prev)
    uc, uc_row, uc_col = _update(u_c, c_prev)
    _check_updates(u_h, u_c)
    if rec is not None:  # [B, H], [B, 1] or [1, H]: read through broadcast strides
        rec = rec.expand(batch, hidden)
    with _on(z.device):
        fwd[grid](z, _row(z), c_prev, _row(c_prev), c_cand, _row(c_cand), tanh_c, _row(tanh_c), h_prev, _row(h_prev),
                  h_next, _row(h_next), c_next, _row(c_next), h_in if h_in is not None else h_next,
                  _row(h_in if h_in is not None else h_next), peep if peep is not None else z, uh, uh_row, uh_col,
                  uc, uc_row, uc_col, rec if rec is not None else c_prev, 0 if rec is None else rec.stride(0),
                  0 if rec is None else rec.stride(1), batch, hidden,
                  HAS_PEEP=peep is not None, HAS_UPDATES=u_c is not None, UPDATE_H=u_h is not None,
                  HAS_REC=rec is not None, CARRIED=h_in is not None, BLOCK_B=block_b, BLOCK_H=block_h)


def backward_step(a: Tensor, tanh_c: Tensor, c_cand: Tensor, c_prev: Tensor, gh: Tensor, gc: Tensor, dz: Tensor,
                  gc_next: Tensor, skip: Tensor | None, g_prev: Tensor | None, peep: Tensor | None,
                  peep_if: Tensor | None, peep_o: Tensor | None, u_h: Tensor | None, u_c: Tensor | None) -> None:
    """One step of backward through the gate math (see the module docstring).

    Writes ``dz`` ``[B, 4H]``, ``gc_next`` (``dL/dc_{t-1}``), and, with update weights, into
    ``skip`` the part of ``dL/dh_{t-1}`` that does not pass through the recurrent matmul: what the
    update weights let skip the cell, plus ``g_prev`` (the output gradient of step ``t-1``) if
    given. Without update weights that part is ``g_prev`` alone, and the caller adds it. Adds the peephole gradients of this step to ``peep_if``
    ``[B, 2, H]`` and ``peep_o`` ``[B, H]``.
    """
    _, bwd = _kernels()
    batch, hidden = c_prev.shape
    peep = None if peep is None else peep.contiguous()  # read by plain offsets
    grid, block_b, block_h = _grid(batch, hidden)
    uh, uh_row, uh_col = _update(u_h, c_prev)
    uc, uc_row, uc_col = _update(u_c, c_prev)
    _check_updates(u_h, u_c)
    if u_h is not None and skip is None:
        raise ValueError("backward_step needs a skip buffer with update weights")
    with _on(a.device):
        bwd[grid](a, _row(a), tanh_c, _row(tanh_c), c_cand, _row(c_cand), c_prev, _row(c_prev), gh, _row(gh), gc,
                  _row(gc), dz, _row(dz), gc_next, _row(gc_next), skip if skip is not None else gc_next, _row(skip),
                  g_prev if g_prev is not None else gh, _row(g_prev), peep if peep is not None else gh,
                  peep_if if peep_if is not None else gh, peep_o if peep_o is not None else gh,
                  uh, uh_row, uh_col, uc, uc_row, uc_col, batch, hidden,
                  HAS_PEEP=peep is not None, HAS_UPDATES=u_c is not None, UPDATE_H=u_h is not None,
                  HAS_GPREV=g_prev is not None, BLOCK_B=block_b, BLOCK_H=block_h)


@functools.lru_cache(maxsize=1)
def _gru_kernels() -> tuple[Any, Any]:
    from . import _triton_kernels  # noqa: PLC0415  # imports triton

    return _triton_kernels.gru_forward_step, _triton_kernels.gru_backward_step


def gru_forward_step(xw: Tensor, hw: Tensor, gates: Tensor, h_prev: Tensor, h_next: Tensor, h_in: Tensor | None,
                     u_h: Tensor | None, rec: Tensor | None) -> None:
    """One GRU step's gate math (``reset_after``, as ``torch.nn.GRU``): all ``[B, H]`` but the ``[B, 3H]`` ones.

    From ``xw = W_ih x_t + b_ih`` and ``hw = W_hh h_in + b_hh`` (blocks ``r, z, n``) writes the
    activations ``r, z, n`` into ``gates``, ``h_t`` (lerped from ``h_{t-1}`` by the update weight
    ``u_h`` when given) into ``h_next`` and, with a recurrent mask, the next matmul input
    ``h_t * rec`` into ``h_in``.
    """
    fwd, _ = _gru_kernels()
    batch, hidden = h_prev.shape
    if rec is not None and h_in is None:
        raise ValueError("gru_forward_step needs an h_in buffer with a recurrent mask (h_next must stay h_t)")
    grid, block_b, block_h = _grid(batch, hidden)
    uh, uh_row, uh_col = _update(u_h, h_prev)
    if rec is not None:
        rec = rec.expand(batch, hidden)
    with _on(xw.device):
        fwd[grid](xw, _row(xw), hw, _row(hw), gates, _row(gates), h_prev, _row(h_prev), h_next, _row(h_next),
                  h_in if h_in is not None else h_next, _row(h_in if h_in is not None else h_next), uh, uh_row, uh_col,
                  rec if rec is not None else h_prev, 0 if rec is None else rec.stride(0),
                  0 if rec is None else rec.stride(1), batch, hidden,
                  HAS_UPDATES=u_h is not None, HAS_REC=rec is not None, BLOCK_B=block_b, BLOCK_H=block_h)


def gru_backward_step(gates: Tensor, hw: Tensor, h_prev: Tensor, gh: Tensor, dxw: Tensor, dhw: Tensor, skip: Tensor,
                      g_prev: Tensor | None, u_h: Tensor | None) -> None:
    """One GRU step backward: ``dL/d xw`` and ``dL/d hw`` (``[B, 3H]``) from ``dL/dh_t`` (``gh``).

    Also writes into ``skip`` the part of ``dL/dh_{t-1}`` that does not pass through the recurrent
    matmul: ``z`` times what reaches the cell, what the update weights let skip it, and ``g_prev``
    (the output gradient of step ``t-1``) if given.
    """
    _, bwd = _gru_kernels()
    batch, hidden = h_prev.shape
    grid, block_b, block_h = _grid(batch, hidden)
    uh, uh_row, uh_col = _update(u_h, h_prev)
    with _on(gates.device):
        bwd[grid](gates, _row(gates), hw, _row(hw), h_prev, _row(h_prev), gh, _row(gh), dxw, _row(dxw), dhw,
                  _row(dhw), skip, _row(skip), g_prev if g_prev is not None else gh, _row(g_prev), uh, uh_row, uh_col,
                  batch, hidden, HAS_UPDATES=u_h is not None, HAS_GPREV=g_prev is not None,
                  BLOCK_B=block_b, BLOCK_H=block_h)


@functools.lru_cache(maxsize=1)
def _ln_kernels() -> tuple[Any, Any]:
    from . import _triton_kernels  # noqa: PLC0415  # imports triton

    return _triton_kernels.ln_lstm_forward_step, _triton_kernels.ln_lstm_backward_step


@functools.lru_cache(maxsize=64)
def _row_grid(batch: int, hidden: int) -> tuple[tuple[int, int], int, int, int]:
    """Whole rows per program (the layer norms reduce over them): ``(grid, BLOCK_B, BLOCK_H, num_warps)``."""
    block_h = 1 << max(4, (hidden - 1).bit_length())
    block_b = max(1, 512 // block_h)
    return ((batch + block_b - 1) // block_b, 1), block_b, block_h, min(32, max(4, block_h // 128))


def ln_forward_step(xw: Tensor, y: Tensor, z: Tensor, gain_hh: Tensor, stats: Tensor, c_prev: Tensor,
                    c_cand: Tensor, tanh_c: Tensor, h_prev: Tensor, h_next: Tensor, c_next: Tensor,
                    h_in: Tensor | None, peep: Tensor | None, gain_c: Tensor, bias_c: Tensor, u_h: Tensor | None,
                    u_c: Tensor | None, rec: Tensor | None, eps_hh: float, eps_c: float) -> None:
    """One layer-norm LSTM step (:class:`~rnnkit.cells.LayerNormLSTMCell`) after the recurrent matmul.

    From ``xw`` (``LN_ih(W_ih x) + b``) and ``y = W_hh h_in`` (``[B, 4H]``, gate blocks ``o, i, f,
    2g``) writes the activations into ``z``, ``LN_hh``'s and ``LN_c``'s mean and ``1/std`` per row
    into ``stats`` ``[B, 4]``, ``c~``, ``tanh(LN_c(c~))``, the new state and, with a recurrent mask,
    the next matmul input into ``h_in``. Conventions as in :func:`forward_step`.
    """
    fwd, _ = _ln_kernels()
    batch, hidden = c_prev.shape
    gain_hh, gain_c, bias_c = gain_hh.contiguous(), gain_c.contiguous(), bias_c.contiguous()  # plain offsets
    peep = None if peep is None else peep.contiguous()
    grid, block_b, block_h, warps = _row_grid(batch, hidden)
    uh, uh_row, uh_col = _update(u_h, c_prev)
    uc, uc_row, uc_col = _update(u_c, c_prev)
    _check_updates(u_h, u_c)
    if rec is not None:
        rec = rec.expand(batch, hidden)
    with _on(z.device):
        fwd[grid](xw, _row(xw), y, _row(y), z, _row(z), gain_hh, stats, _row(stats), c_prev, _row(c_prev), c_cand,
                  _row(c_cand), tanh_c, _row(tanh_c), h_prev, _row(h_prev), h_next, _row(h_next), c_next, _row(c_next),
                  h_in if h_in is not None else h_next, _row(h_in if h_in is not None else h_next),
                  peep if peep is not None else gain_c, gain_c, bias_c, uh, uh_row, uh_col, uc, uc_row, uc_col,
                  rec if rec is not None else c_prev, 0 if rec is None else rec.stride(0),
                  0 if rec is None else rec.stride(1), batch, hidden, eps_hh, eps_c,
                  HAS_PEEP=peep is not None, HAS_UPDATES=u_c is not None, UPDATE_H=u_h is not None,
                  HAS_REC=rec is not None, CARRIED=h_in is not None, BLOCK_B=block_b, BLOCK_H=block_h,
                  num_warps=warps)


def ln_backward_step(a: Tensor, y: Tensor, stats: Tensor, tanh_c: Tensor, c_cand: Tensor, c_prev: Tensor, gh: Tensor,
                     gc: Tensor, dz: Tensor, dy: Tensor, gc_next: Tensor, skip: Tensor | None, g_prev: Tensor | None,
                     gain_hh: Tensor, gain_c: Tensor, acc_gain_hh: Tensor, acc_gain_c: Tensor, acc_bias_c: Tensor,
                     peep: Tensor | None, peep_if: Tensor | None, peep_o: Tensor | None, u_h: Tensor | None,
                     u_c: Tensor | None) -> None:
    """One layer-norm LSTM step backward: ``dz`` (``dL/dxw``), ``dy`` (``dL/d(W_hh h_in)``), ``dL/dc_{t-1}``.

    Adds this step's layer-norm gain and bias gradients per row to ``acc_gain_hh`` ``[B, 4H]``,
    ``acc_gain_c`` and ``acc_bias_c`` ``[B, H]`` (and the peephole ones, as :func:`backward_step`);
    ``skip`` and ``g_prev`` as there.
    """
    _, bwd = _ln_kernels()
    batch, hidden = c_prev.shape
    gain_hh, gain_c = gain_hh.contiguous(), gain_c.contiguous()  # read by plain offsets
    peep = None if peep is None else peep.contiguous()
    grid, block_b, block_h, warps = _row_grid(batch, hidden)
    uh, uh_row, uh_col = _update(u_h, c_prev)
    uc, uc_row, uc_col = _update(u_c, c_prev)
    _check_updates(u_h, u_c)
    if u_h is not None and skip is None:
        raise ValueError("ln_backward_step needs a skip buffer with update weights")
    with _on(a.device):
        bwd[grid](a, _row(a), y, _row(y), stats, _row(stats), tanh_c, _row(tanh_c), c_cand, _row(c_cand), c_prev,
                  _row(c_prev), gh, _row(gh), gc, _row(gc), dz, _row(dz), dy, _row(dy), gc_next, _row(gc_next),
                  skip if skip is not None else gc_next, _row(skip), g_prev if g_prev is not None else gh,
                  _row(g_prev), gain_hh, gain_c, acc_gain_hh, acc_gain_c, acc_bias_c,
                  peep if peep is not None else gain_c, peep_if if peep_if is not None else gh,
                  peep_o if peep_o is not None else gh, uh, uh_row, uh_col, uc, uc_row, uc_col, batch, hidden,
                  HAS_PEEP=peep is not None, HAS_UPDATES=u_c is not None, UPDATE_H=u_h is not None,
                  HAS_GPREV=g_prev is not None, BLOCK_B=block_b, BLOCK_H=block_h, num_warps=warps)
