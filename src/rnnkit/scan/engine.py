"""A training engine for LSTM cells in pure PyTorch, with a hand-written backward through time.

For the LSTM configurations ``torch.nn`` has no kernel for (peephole connections, variational
recurrent dropout, masks with gaps) the reference scan records every small op of every step on
the autograd tape. This engine instead runs the whole sequence as one
:class:`torch.autograd.Function`:

* forward: the input projection for all steps is one matmul (done by the caller, outside the
  function, so autograd handles ``W_ih``, ``b_ih`` and ``x``); per step one recurrent matmul
  ``addmm`` into a preallocated ``[T, B, 4H]`` buffer, then the gate math, writing gates and
  cell states into preallocated buffers;
* backward: the adjoint recurrence step by step (one ``[B, 4H] x [4H, H]`` matmul per step),
  writing ``dL/dz_t`` into a buffer; after the loop ``dL/dW_hh`` is one ``[4H, T*B] x [T*B, H]``
  matmul, and the bias and peephole gradients are reductions.

Same contract as :func:`~rnnkit.scan.reference_scan` for :class:`~rnnkit.cells.LSTMCell` with
``type(cell) is LSTMCell`` and no projection (``proj_size == 0``): masks of any pattern, reverse,
initial state, recurrent dropout, peepholes. Zoneout, gate recording, layer norm and projections
are not supported (:func:`engine_unavailable_reason` says why). The engine is opt-in
(``implementation="engine"``); see ``docs/speed.md`` for when it wins.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from ..cells.base import RecurrentCell, State
from ..cells.lstm import LSTMCell


def engine_unavailable_reason(cell: RecurrentCell, *, zoneout_rate: float = 0.0,
                              return_gates: bool = False) -> str | None:
    """Why the engine cannot run ``cell`` exactly, else ``None``."""
    if type(cell) is not LSTMCell:
        return (f"implementation='engine' supports LSTMCell (plain, peephole, recurrent dropout) only; "
                f"got {type(cell).__name__}")
    if cell.weight_hr is not None:
        return "implementation='engine' does not support proj_size"
    if zoneout_rate:
        return "zoneout runs only in the reference scan"
    if return_gates:
        return "gate activations are recorded only by the reference scan"
    return None


class _LSTMEngine(torch.autograd.Function):
    """Time-major LSTM over ``xw [T, B, 4H]`` (input projection incl. ``b_ih`` already added)."""

    @staticmethod
    def forward(ctx: FunctionCtx, xw: Tensor, w_hh: Tensor, b_hh: Tensor | None, peep: Tensor | None,  # type: ignore[override]
                h0: Tensor, c0: Tensor, rec_mask: Tensor | None, keep: Tensor | None,
                reverse: bool) -> tuple[Tensor, Tensor, Tensor]:
        steps, batch, four_h = xw.shape
        hidden = four_h // 4
        z = torch.empty_like(xw)  # gate pre-activations, then (in place) activations i, f, g, o
        c_new = xw.new_empty(steps, batch, hidden)  # c' of each step (before masking)
        c_prev = xw.new_empty(steps, batch, hidden)  # c_{t-1} seen by each step
        h_in = xw.new_empty(steps, batch, hidden)  # h_{t-1} * recurrent mask, the matmul's input
        out = xw.new_empty(steps, batch, hidden)
        w_t = w_hh.t()
        h, c = h0, c0
        order = range(steps - 1, -1, -1) if reverse else range(steps)
        for t in order:
            hm = h if rec_mask is None else h * rec_mask
            h_in[t] = hm
            c_prev[t] = c
            zt = z[t]
            torch.addmm(xw[t], hm, w_t, out=zt)
            if b_hh is not None:
                zt += b_hh
            z_i, z_f, z_g, z_o = zt.chunk(4, -1)  # views: the activations overwrite them in place
            if peep is not None:
                z_i.addcmul_(peep[0], c)
                z_f.addcmul_(peep[1], c)
            torch.sigmoid_(z_i)
            torch.sigmoid_(z_f)
            torch.tanh_(z_g)
            cn = torch.addcmul(z_f * c, z_i, z_g, out=c_new[t])
            if peep is not None:
                z_o.addcmul_(peep[2], cn)
            torch.sigmoid_(z_o)
            hn = torch.mul(z_o, torch.tanh(cn), out=out[t])
            if keep is None:
                h, c = hn, cn
            else:
                k = keep[t]
                h = torch.where(k, hn, h)
                c = torch.where(k, cn, c)
                out[t].mul_(k)
        ctx.save_for_backward(z, c_new, c_prev, h_in, w_hh, peep, rec_mask, keep)  # type: ignore[arg-type]  # None is allowed
        ctx.reverse = reverse  # type: ignore[attr-defined]
        ctx.has_bias = b_hh is not None  # type: ignore[attr-defined]
        return out, h, c

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor | None, grad_h: Tensor | None,  # type: ignore[override]
                 grad_c: Tensor | None) -> tuple[Tensor | None, ...]:
        z, c_new, c_prev, h_in, w_hh, peep, rec_mask, keep = ctx.saved_tensors
        steps, batch, four_h = z.shape
        hidden = four_h // 4
        dz = torch.empty_like(z)
        gh = torch.zeros(batch, hidden, dtype=z.dtype, device=z.device) if grad_h is None else grad_h.clone()
        gc = torch.zeros_like(gh) if grad_c is None else grad_c.clone()
        order = range(steps) if ctx.reverse else range(steps - 1, -1, -1)
        for t in order:
            i, f, g, o = z[t].chunk(4, -1)
            cn, cp = c_new[t], c_prev[t]
            dh_new = gh if grad_out is None else gh + grad_out[t]  # out_t is h' (zeroed where masked)
            if keep is not None:
                k = keep[t]
                dh_new = dh_new * k
                dc_new = gc * k
                gh_skip, gc_skip = gh * ~k, gc * ~k  # masked step: state passes through unchanged
            else:
                dc_new = gc
            tanh_c = torch.tanh(cn)
            dz_i, dz_f, dz_g, dz_o = dz[t].chunk(4, -1)
            torch.mul(dh_new * tanh_c, o * (1 - o), out=dz_o)
            dc = dc_new + dh_new * o * (1 - tanh_c * tanh_c)
            if peep is not None:
                dc = dc + dz_o * peep[2]
            torch.mul(dc * g, i * (1 - i), out=dz_i)
            torch.mul(dc * cp, f * (1 - f), out=dz_f)
            torch.mul(dc * i, 1 - g * g, out=dz_g)
            dc_prev = dc * f
            if peep is not None:
                dc_prev = dc_prev + dz_i * peep[0] + dz_f * peep[1]
            dh_prev = dz[t] @ w_hh
            if rec_mask is not None:
                dh_prev = dh_prev * rec_mask
            if keep is not None:
                gh, gc = dh_prev + gh_skip, dc_prev + gc_skip
            else:
                gh, gc = dh_prev, dc_prev
        flat_dz = dz.view(steps * batch, four_h)
        grad_w = flat_dz.t() @ h_in.view(steps * batch, hidden) if ctx.needs_input_grad[1] else None
        grad_b = flat_dz.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        grad_p = None
        if peep is not None and ctx.needs_input_grad[3]:
            dz_i, dz_f, _, dz_o = dz.chunk(4, -1)
            grad_p = torch.stack([(dz_i * c_prev).sum((0, 1)), (dz_f * c_prev).sum((0, 1)),
                                  (dz_o * c_new).sum((0, 1))])
        return dz, grad_w, grad_b, grad_p, gh, gc, None, None, None


def engine_scan(cell: RecurrentCell, x: Tensor, state: State, *, mask: Tensor | None = None,
                reverse: bool = False, recurrent_mask: Tensor | None = None, zoneout_rate: float = 0.0,
                training: bool = False, return_gates: bool = False) -> tuple[Tensor, State, None]:
    """Run an :class:`~rnnkit.cells.LSTMCell` over ``x`` ``[B, T, I]`` with the hand-written BPTT engine.

    Arguments and results as in :func:`~rnnkit.scan.reference_scan`; raises ValueError for what
    :func:`engine_unavailable_reason` reports.
    """
    reason = engine_unavailable_reason(cell, zoneout_rate=zoneout_rate, return_gates=return_gates)
    if reason is not None:
        raise ValueError(reason)
    assert isinstance(cell, LSTMCell)
    if x.shape[1] == 0:
        return x.new_zeros(x.shape[0], 0, cell.output_size), state, None
    h0, c0 = state
    xw = cell.project_input(x.transpose(0, 1))  # [T, B, 4H]: one matmul for every step
    keep = None if mask is None else mask.t().unsqueeze(-1).contiguous()  # [T, B, 1]
    out, h_n, c_n = _LSTMEngine.apply(xw.contiguous(), cell.weight_hh, cell.bias_hh, cell.weight_peephole,
                                      h0.contiguous(), c0.contiguous(), recurrent_mask, keep, reverse)
    return out.transpose(0, 1), (h_n, c_n), None
