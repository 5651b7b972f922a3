"""A training engine for LSTM cells in pure PyTorch, with a hand-written backward through time.

For the LSTM configurations ``torch.nn`` has no kernel for (peephole connections, variational
recurrent dropout, zoneout, masks with gaps) the reference scan records every small op of every
step on the autograd tape. This engine runs the whole sequence as one
:class:`torch.autograd.Function` and keeps the per-step work to a few ops on cached tensors:

* gates are reordered ``o, i, f, g`` inside the engine and the ``g`` rows doubled (the weights
  are permuted once per call, through autograd), so that ``tanh(a) = 2 sigmoid(2a) - 1`` lets
  one in-place ``sigmoid`` on a contiguous ``[B, 4H]`` row serve all four gates;
* forward, per step: one ``addmm`` of ``[x_t, h_{t-1}]`` (one buffer, ``h`` written there by the
  step before) with ``[W_ih, W_hh]``, so the input projection rides along with the recurrent
  one and no ``[T, B, 4H]`` projection is stored; then the activations in place and the new
  state written straight into ``[T+1, B, H]`` state buffers (no copies); a projected cell
  (``proj_size``, LSTMP) adds one ``[B, H] x [H, P]`` matmul per step each way;
* backward, per step: the gate derivatives recomputed from the saved activations (cheaper on
  a memory-bound CPU than passes over the whole history), a handful of element-wise ops and one
  ``[B, 4H] x [4H, H]`` ``addmm`` that also adds ``dL/d out_{t-1}``; after the loop
  ``dL/d[W_ih, W_hh]`` is one ``[4H, T*B] x [T*B, I+H]`` matmul (the technique cuDNN uses);
* inference (no gradient needed) runs a leaner loop that saves nothing, and
  :func:`recompute_gates` trades one more matmul per step in backward for the gate buffers.

State updates are written as ``s_t = s_{t-1} + u_t (s~_t - s_{t-1})`` (``torch.lerp``) with an
update weight ``u``: 1 everywhere (plain), the sequence mask (masked steps keep their state),
zoneout's Bernoulli keep-mask in training or its expectation ``1 - rate`` at inference, or their
product. Same contract as :func:`~rnnkit.scan.reference_scan` for ``LSTMCell`` (plain or
peephole, projected) and ``LayerNormLSTMCell`` (see :mod:`rnnkit.scan.engine_layernorm`;
projected too, with torch kernels): masks of any pattern, reverse, initial state, recurrent dropout, zoneout. Gate
recording is not supported (:func:`engine_unavailable_reason` says why). ``implementation="auto"``
uses it for the ``LSTMCell`` configurations the fused kernel cannot run (measured 1.2-1.5x the
reference scan; see ``docs/speed.md``) and, on CPU, for plain projected LSTMs at batch > 1 and
from 16 steps on (outside autocast), where torch has no oneDNN kernel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from ..cells.base import RecurrentCell, State
from ..cells.lstm import LayerNormLSTMCell, LSTMCell
from . import cuda_graph, engine_triton, weight_cache
from ._bptt import (
    check_constant_mask,
    eager_under_compile,
    first_order_only,
    needs_grad,
    recurrent_grad,
    without_autocast,
)
from .elementwise import tanh_for, tanh_into
from .engine_layernorm import layernorm_engine_scan
from .recompute import recompute_requested
from .step_matmul import StepMatmul, cached_step_matmul, large_matmul, linear


def engine_unavailable_reason(cell: RecurrentCell, *, zoneout_rate: float = 0.0,
                              return_gates: bool = False) -> str | None:
    """Why the engine cannot run ``cell`` exactly, else ``None``."""
    del zoneout_rate  # any rate is supported
    if type(cell) not in (LSTMCell, LayerNormLSTMCell):
        return (f"implementation='engine' supports LSTMCell and LayerNormLSTMCell (plain, peephole, projection, "
                f"recurrent dropout, zoneout) only; got {type(cell).__name__}")
    if return_gates:
        return "gate activations are recorded only by the reference scan"
    return None


@functools.lru_cache(maxsize=64)
def _gate_order(hidden: int, device: torch.device) -> Tensor:
    """Row indices turning torch's ``i, f, g, o`` blocks into the engine's ``o, i, f, g`` (made once per size and device).

    Made outside inference mode even when the first call runs under ``torch.inference_mode()``: an
    inference tensor kept here would break every later call that autograd records (training).
    """
    with torch.inference_mode(False):
        blocks = torch.arange(4 * hidden, device=device).view(4, hidden)
        return blocks[[3, 0, 1, 2]].reshape(-1)


def _engine_rows(weight: Tensor, order: Tensor) -> Tensor:
    """``weight``'s gate rows (or entries) in the engine's order, the cell-candidate block doubled."""
    rows = weight[order]
    hidden = rows.shape[0] // 4
    scale = rows.new_ones(4, hidden)
    scale[3] = 2.0
    return rows * scale.view(-1, *([1] * (rows.dim() - 1)))


def _forward_buffers(x: Tensor, h0: Tensor, c0: Tensor, hidden: int, rec_mask: Tensor | None,
                     update_h: Tensor | None, recompute: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The forward's buffers ``(xh, hs, cs, z, tanh_c, c_cand)``, step 0 filled in.

    ``xh`` ``[T+1, B, I+P]`` holds ``[x_t, h_{t-1}]`` (recurrent-masked), one matmul input per step
    (``P``: ``h``'s size, the projection's or ``H``); ``hs`` ``[T+1, B, P]`` and ``cs`` ``[T+1, B, H]`` the states (``hs[t]``: before step ``t``; ``xh``'s ``h`` columns
    themselves when nothing changes ``h`` on its way to the matmul); ``z`` ``[K, B, 4H]`` the
    pre-activations, then (in place) the sigmoids of ``o, i, f, 2g``, ``tanh_c`` and ``c_cand``
    (``c~`` before the update; ``cs[1:]`` without update weights) for every step, or ``K = 1``
    step reused by all when the gates are recomputed in backward.
    """
    steps, batch, inputs = x.shape
    state = h0.shape[-1]
    xh = x.new_empty(steps + 1, batch, inputs + state)
    xh[:steps, :, :inputs] = x
    carried = update_h is not None or rec_mask is not None  # h itself differs from the matmul input
    hs = x.new_empty(steps + 1, batch, state) if carried else xh[..., inputs:]
    cs = x.new_empty(steps + 1, batch, hidden)
    hs[0], cs[0] = h0, c0
    if rec_mask is not None:
        torch.mul(h0, rec_mask, out=xh[0, :, inputs:])
    elif carried:
        xh[0, :, inputs:] = h0
    kept = 1 if recompute else steps
    z = x.new_empty(kept, batch, 4 * hidden)
    tanh_c = x.new_empty(kept, batch, hidden)
    c_cand = x.new_empty(kept, batch, hidden) if update_h is not None else cs[1:]
    return xh, hs, cs, z, tanh_c, c_cand


class _LSTMEngine(torch.autograd.Function):
    """Time-major LSTM over ``x [T, B, I]`` with ``w_cat = [W_ih, W_hh]`` rows in gate order ``o, i, f, 2g``.

    The cell-candidate rows arrive scaled by 2 so that one ``sigmoid`` serves all four gates:
    ``tanh(a) = 2 sigmoid(2a) - 1``. Each step's matmul reads ``[x_t, h_{t-1}]`` from one buffer
    (``h`` is written there by the step before), so the input projection rides along with the
    recurrent one and no ``[T, B, 4H]`` projection is ever stored. ``update_h``/``update_c``
    (``[T, B, 1 or H]`` or ``None`` for all ones) weight each state update; ``out_mask``
    (``[T, B, 1]`` or ``None``) zeroes the outputs of masked steps. ``w_hr`` ``[P, H]`` (LSTMP)
    projects each step's ``o * tanh c`` to the ``h`` that is output and fed back: one more
    ``[B, H] x [H, P]`` matmul per step each way, its gradient one matmul after the loop.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, w_cat: Tensor, bias: Tensor | None,  # type: ignore[override]
                peep: Tensor | None, h0: Tensor, c0: Tensor, rec_mask: Tensor | None, update_h: Tensor | None,
                update_c: Tensor | None, out_mask: Tensor | None, recompute: bool,
                triton: bool = False, w_hr: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        steps, batch, inputs = x.shape
        ctx.recompute = recompute  # type: ignore[attr-defined]
        ctx.triton = triton  # type: ignore[attr-defined]
        if triton:
            return _triton_engine_forward(ctx, x, w_cat, bias, peep, h0, c0, rec_mask, update_h, update_c, out_mask,
                                          recompute, w_hr)
        hidden = w_cat.shape[0] // 4
        xh, hs, cs, z, tanh_c, c_cand = _forward_buffers(x, h0, c0, hidden, rec_mask, update_h, recompute)
        carried = update_h is not None or rec_mask is not None
        h_cand = x.new_empty(batch, h0.shape[-1]) if update_h is not None else None
        h_raw = x.new_empty(batch, hidden) if w_hr is not None else None  # o * tanh c before the projection
        w_hr_t = w_hr.t() if w_hr is not None else None
        project = StepMatmul(w_cat, bias, batch, calls=steps)
        # per-step views, made once (indexing inside the loop costs more than the small ops)
        xh_s, hin_s, h_s, c_s = xh.unbind(0), xh[..., inputs:].unbind(0), hs.unbind(0), cs.unbind(0)
        gate_s = _gate_views(z, tanh_c, c_cand, steps, peep is not None)
        uh_s = update_h.unbind(0) if update_h is not None else ()
        uc_s = update_c.unbind(0) if update_c is not None else ()
        tanh = tanh_for(c0)
        for t in range(steps):
            c = c_s[t]
            views = gate_s[t]
            _gates(xh_s[t], project, c, peep, views, tanh)
            o, cn, tc = views[2], views[-2], views[-1]
            new_h = h_s[t + 1] if h_cand is None else h_cand
            if w_hr_t is None:
                torch.mul(o, tc, out=new_h)
            else:
                torch.mm(torch.mul(o, tc, out=h_raw), w_hr_t, out=new_h)
            if h_cand is not None:
                torch.lerp(h_s[t], h_cand, uh_s[t], out=h_s[t + 1])
                torch.lerp(c, cn, uc_s[t], out=c_s[t + 1])
            if rec_mask is not None:
                torch.mul(h_s[t + 1], rec_mask, out=hin_s[t + 1])
            elif carried:
                hin_s[t + 1].copy_(h_s[t + 1])
        out = hs[1:] if out_mask is None else hs[1:] * out_mask
        if recompute:
            z = tanh_c = c_cand = None  # type: ignore[assignment]
        saved: tuple[Any, ...] = (x, z, cs, tanh_c, c_cand, xh, w_cat, bias, peep, rec_mask, update_h, update_c,
                                  out_mask, w_hr)  # None is allowed
        ctx.save_for_backward(*saved)
        return out, hs[steps].clone(), cs[steps].clone()

    @staticmethod
    @first_order_only
    @without_autocast
    def backward(ctx: Any, grad_out: Tensor | None, grad_h: Tensor | None,  # type: ignore[override]
                 grad_c: Tensor | None) -> tuple[Tensor | None, ...]:
        x, z, cs, tanh_c, c_cand, xh, w_cat, bias, peep, rec_mask, update_h, update_c, out_mask, w_hr = \
            ctx.saved_tensors
        if ctx.triton:
            return _triton_engine_backward(ctx, grad_out, grad_h, grad_c)
        steps, batch, inputs = x.shape
        four_h = w_cat.shape[0]
        hidden = four_h // 4
        state = w_cat.shape[1] - inputs  # h's size: the projection's or H
        w_hh = w_cat[:, inputs:]
        if ctx.recompute:  # rebuild each step's gates from the saved [x_t, h_{t-1}] and c_{t-1} (one more matmul)
            z, tanh_c = x.new_empty(1, batch, four_h), x.new_empty(1, batch, hidden)
            c_cand = x.new_empty(1, batch, hidden) if update_h is not None else cs[1:]
        gate_s = _gate_views(z, tanh_c, c_cand, steps, peep is not None)
        xh_s = xh.unbind(0)
        project = StepMatmul(w_cat, bias, batch, calls=steps) if ctx.recompute else None
        back = StepMatmul(w_hh.t(), None, batch, adds=grad_out is not None or update_h is not None, calls=steps)
        # Everything below is per step on [B, 4H] tensors that stay in cache: a pass over the whole
        # [T, B, 4H] history costs more on a CPU (memory bound) than the same math done step by step.
        g_out = None if grad_out is None else (grad_out if out_mask is None else grad_out * out_mask)
        dz = x.new_empty(steps, batch, four_h)
        slope = x.new_empty(batch, four_h)  # sigmoid'(.) = s (1 - s) of each gate at this step
        partner = x.new_empty(batch, 3, hidden)  # what multiplies i, f and g in c~: g, c_{t-1}, 2i
        slope_o, slope_ifg = slope[:, :hidden], slope[:, hidden:].view(batch, 3, hidden)
        p_g, p_c, p_i = partner.unbind(1)
        cp_s = cs.unbind(0)
        dz_s, dzo_s = dz.unbind(0), dz[..., :hidden].unbind(0)
        dzifg_s = dz[..., hidden:].unflatten(-1, (3, hidden)).unbind(0)
        dzi_s, dzf_s = dz[..., hidden:2 * hidden].unbind(0), dz[..., 2 * hidden:3 * hidden].unbind(0)
        gout_s = g_out.unbind(0) if g_out is not None else ()
        uh_s = update_h.unbind(0) if update_h is not None else ()
        uc_s = update_c.unbind(0) if update_c is not None else ()
        gh = torch.zeros(batch, state, dtype=x.dtype, device=x.device) if grad_h is None else grad_h.clone()
        if g_out is not None:
            gh = gh + gout_s[steps - 1]
        gc = torch.zeros(batch, hidden, dtype=x.dtype, device=x.device) if grad_c is None else grad_c
        grad_hr: Tensor | None = None
        if w_hr is not None:  # dL/dh~ per step, for dL/dW_hr after the loop (or summed here when recomputing)
            dh_hat = x.new_empty(1 if ctx.recompute else steps, batch, state)
            dh_hat_s = dh_hat.unbind(0)
            dh_raw = x.new_empty(batch, hidden)
            if ctx.recompute:
                grad_hr = x.new_zeros(state, hidden)
        if peep is not None:  # dL/dpeephole summed over the batch after the loop, over time inside it
            peep_if_acc = x.new_zeros(batch, 2, hidden)
            peep_o_acc = x.new_zeros(batch, hidden)
            dzif_s = dz[..., hidden:3 * hidden].unflatten(-1, (2, hidden)).unbind(0)
        tanh = tanh_for(cs[0])
        for t in range(steps - 1, -1, -1):
            views = gate_s[t]
            if project is not None:
                _gates(xh_s[t], project, cp_s[t], peep, views, tanh)
            a, _, o, i, f, s_g, _, cc, tc = views
            torch.addcmul(a, a, a, value=-1, out=slope)
            dh = gh if update_h is None else gh * uh_s[t]  # what reaches the cell's h~
            dh_skip = dh
            if w_hr is not None:  # back through h~ = W_hr (o tanh c~)
                dh_t = dh_hat_s[0 if ctx.recompute else t]
                dh_t.copy_(dh)
                dh = torch.mm(dh_t, w_hr, out=dh_raw)
                if grad_hr is not None:
                    grad_hr.addmm_(dh_t.t(), o * tc)
            dh_tc = dh * tc
            torch.mul(dh_tc, slope_o, out=dzo_s[t])
            dc = torch.addcmul(dh, dh_tc, tc, value=-1).mul_(o)  # dh o (1 - tanh^2 c~)
            if peep is not None:
                dc.addcmul_(dzo_s[t], peep[2])
            gc_kept = gc if update_c is None else gc * uc_s[t]  # what reaches the cell's c~
            dc += gc_kept
            torch.mul(s_g, 2.0, out=p_g).sub_(1.0)
            p_c.copy_(cp_s[t])
            torch.add(i, i, out=p_i)
            torch.mul(partner, slope_ifg, out=dzifg_s[t]).mul_(dc.unsqueeze(1))
            gc_next = torch.mul(dc, f)
            if peep is not None:
                gc_next.addcmul_(dzi_s[t], peep[0]).addcmul_(dzf_s[t], peep[1])
                peep_if_acc.addcmul_(dzif_s[t], p_c.unsqueeze(1))
                peep_o_acc.addcmul_(dzo_s[t], cc)
            if update_c is not None:
                gc_next += gc
                gc_next -= gc_kept  # what skipped the cell: (1 - u_c) dL/dc_t
            gc = gc_next
            skip = gout_s[t - 1] if (g_out is not None and t) else None
            if update_h is not None:
                skip = gh - dh_skip if skip is None else (gh - dh_skip).add_(skip)
            gh = recurrent_grad(skip, dz_s[t], back, rec_mask)
        grads = _weight_grads(ctx, dz, xh, inputs, w_cat, bias, peep, peep_if_acc if peep is not None else None,
                              peep_o_acc if peep is not None else None)
        if w_hr is not None and grad_hr is None and ctx.needs_input_grad[12]:  # sum_t dh~_t^T (o_t tanh c_t)
            h_raw = torch.mul(z[..., :hidden], tanh_c)
            grad_hr = large_matmul(dh_hat.view(-1, state).t(), h_raw.view(-1, hidden))
        return (*grads, gh, gc, None, None, None, None, None, None, grad_hr)


def triton_engine_unavailable_reason(cell: RecurrentCell, device: torch.device) -> str | None:
    """Why the engine with Triton kernels cannot run ``cell`` on ``device``, else ``None``."""
    if type(cell) not in (LSTMCell, LayerNormLSTMCell):
        return (f"implementation='triton' supports LSTMCell and LayerNormLSTMCell (plain, peephole, recurrent "
                f"dropout, zoneout) only; got {type(cell).__name__}")
    if cell.weight_ih.dtype not in (torch.float32, torch.float64):
        return (f"implementation='triton' runs float32 or float64 weights, got {cell.weight_ih.dtype}; "
                "keep the weights in float32 (autocast still works around them)")
    return engine_triton.triton_unavailable_reason(device)


def _triton_engine_forward(ctx: Any, x: Tensor, w_cat: Tensor, bias: Tensor | None, peep: Tensor | None,
                           h0: Tensor, c0: Tensor, rec_mask: Tensor | None, update_h: Tensor | None,
                           update_c: Tensor | None, out_mask: Tensor | None,
                           recompute: bool, w_hr: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """:class:`_LSTMEngine`'s forward with Triton kernels: the loop replayed as a CUDA graph where it can be."""
    inputs: cuda_graph.Inputs = {"x": x, "h0": h0, "c0": c0, "w_cat": w_cat, "bias": bias, "peep": peep,
                                 "rec": rec_mask, "uh": update_h, "uc": update_c, "w_hr": w_hr}
    loop: Callable[..., cuda_graph.Outputs] = functools.partial(_triton_forward_loop, recompute=recompute)
    ctx.graphs = cuda_graph.graphs_enabled(x.device)  # decided here for the backward too
    res, _ = (cuda_graph.run_captured(("lstm engine forward", recompute), loop, inputs)
              if ctx.graphs else (loop(**inputs), False))
    xh, cs = res["xh"], res["cs"]
    assert xh is not None and cs is not None
    steps, inputs_size = x.shape[0], x.shape[2]
    hs = res["hs"] if res["hs"] is not None else xh[..., inputs_size:]
    c_cand = res["c_cand"] if res["c_cand"] is not None or recompute else cs[1:]
    out = hs[1:] if out_mask is None else hs[1:] * out_mask
    ctx.save_for_backward(x, res["z"], cs, res["tanh_c"], c_cand, xh, w_cat, bias, peep, rec_mask, update_h,
                          update_c, out_mask, w_hr)
    return out, hs[steps].clone(), cs[steps].clone()


def _triton_forward_loop(x: Tensor, h0: Tensor, c0: Tensor, w_cat: Tensor, bias: Tensor | None, peep: Tensor | None,
                         rec: Tensor | None, uh: Tensor | None, uc: Tensor | None, w_hr: Tensor | None,
                         recompute: bool) -> cuda_graph.Outputs:
    """The forward loop, one matmul and one Triton kernel per step; returns what backward needs.

    Writes only into tensors it allocates (it may be recorded as a CUDA graph and replayed):
    ``xh`` ``[T+1, B, I+P]`` (``[x_t, h_{t-1}]``, recurrent-masked), ``hs`` (the states, when they
    differ from the matmul input, else ``None``: they are ``xh``'s ``h`` columns), ``cs``, and, unless
    the gates are recomputed in backward, ``z`` (activations ``o, i, f, sigmoid(2 a_g)``), ``tanh_c``
    and, with update weights, ``c_cand``. A projected cell (``w_hr`` ``[P, H]``) has the kernel
    write ``o tanh c`` and update only ``c``; the projection, ``h``'s update and the next matmul
    input are three small torch ops after it.
    """
    steps, batch, inputs = x.shape
    hidden = w_cat.shape[0] // 4
    xh, hs, cs, z, tanh_c, c_cand = _forward_buffers(x, h0, c0, hidden, rec, uh, recompute)
    carried = uh is not None or rec is not None
    updates = uh is not None
    w_t = w_cat.t()
    w_hr_t = w_hr.t() if w_hr is not None else None
    h_raw = x.new_empty(batch, hidden) if w_hr is not None else None  # o * tanh c before the projection
    h_cand = x.new_empty(batch, h0.shape[-1]) if w_hr is not None and updates else None
    xh_s, hin_s, h_s, c_s = xh.unbind(0), xh[..., inputs:].unbind(0), hs.unbind(0), cs.unbind(0)
    z_s, cc_s, tc_s = z.unbind(0), c_cand.unbind(0), tanh_c.unbind(0)
    uh_s = uh.unbind(0) if uh is not None else ()
    uc_s = uc.unbind(0) if uc is not None else ()
    for t in range(steps):
        k = 0 if recompute else t
        if bias is None:
            torch.mm(xh_s[t], w_t, out=z_s[k])
        else:
            torch.addmm(bias, xh_s[t], w_t, out=z_s[k])
        c_next = cc_s[k] if updates else c_s[t + 1]
        if h_raw is None:
            engine_triton.forward_step(z_s[k], c_s[t], c_next, tc_s[k], h_s[t], h_s[t + 1], c_s[t + 1],
                                       hin_s[t + 1] if carried else None, peep, uh_s[t] if updates else None,
                                       uc_s[t] if updates else None, rec)
            continue
        engine_triton.forward_step(z_s[k], c_s[t], c_next, tc_s[k], h_raw, h_raw, c_s[t + 1], None, peep, None,
                                   uc_s[t] if updates else None, None)
        assert w_hr_t is not None
        engine_triton.project_state(h_raw, w_hr_t, h_s[t], h_s[t + 1], h_cand, uh_s[t] if updates else None, rec,
                                    hin_s[t + 1] if carried else None)
    return {"xh": xh, "hs": hs if carried else None, "cs": cs, "z": None if recompute else z,
            "tanh_c": None if recompute else tanh_c, "c_cand": c_cand if updates and not recompute else None}


def _triton_engine_backward(ctx: Any, grad_out: Tensor | None, grad_h: Tensor | None,
                            grad_c: Tensor | None) -> tuple[Tensor | None, ...]:
    """:class:`_LSTMEngine`'s backward with Triton kernels (recorded as a CUDA graph where it can be)."""
    x, z, cs, tanh_c, c_cand, xh, w_cat, bias, peep, rec_mask, update_h, update_c, out_mask, w_hr = \
        ctx.saved_tensors
    steps = x.shape[0]
    g_out = None if grad_out is None else (grad_out if out_mask is None else grad_out * out_mask).contiguous()
    gh = xh.new_zeros(xh.shape[1], xh.shape[2] - x.shape[2]) if grad_h is None else grad_h
    if g_out is not None:
        gh = gh + g_out[steps - 1]
    gc = torch.zeros_like(cs[0]) if grad_c is None else grad_c
    inputs: cuda_graph.Inputs = {
        "gh": gh, "gc": gc, "gout": g_out, "z": z, "tanh_c": tanh_c, "c_cand": None if update_h is None else c_cand,
        "cs": cs, "xh": xh if ctx.recompute else None, "w_cat": w_cat, "bias": bias if ctx.recompute else None,
        "peep": peep, "rec": rec_mask, "uh": update_h, "uc": update_c, "w_hr": w_hr}
    loop: Callable[..., cuda_graph.Outputs] = functools.partial(_triton_backward_loop, inputs_size=x.shape[2],
                                                                recompute=ctx.recompute)
    res, _ = (cuda_graph.run_captured(("lstm engine backward", ctx.recompute, x.shape[2]), loop, inputs)
              if ctx.graphs and cuda_graph.graphs_enabled(x.device) else (loop(**inputs), False))
    dz, gh_0, gc_0 = res["dz"], res["gh"], res["gc"]
    assert dz is not None and gh_0 is not None and gc_0 is not None
    grads = _weight_grads(ctx, dz, xh, x.shape[2], w_cat, bias, peep, res["peep_if"], res["peep_o"])
    grad_hr = res["grad_hr"]
    if w_hr is not None and grad_hr is None and ctx.needs_input_grad[12]:  # sum_t dh~_t^T (o_t tanh c_t)
        dh_hat = res["dh_hat"]
        assert dh_hat is not None and z is not None and tanh_c is not None
        hidden = cs.shape[-1]
        grad_hr = dh_hat.flatten(0, 1).t() @ torch.mul(z[..., :hidden], tanh_c).flatten(0, 1)
    return (*grads, gh_0, gc_0, None, None, None, None, None, None, grad_hr if ctx.needs_input_grad[12] else None)


def _triton_backward_loop(gh: Tensor, gc: Tensor, gout: Tensor | None, z: Tensor | None, tanh_c: Tensor | None,
                          c_cand: Tensor | None, cs: Tensor, xh: Tensor | None, w_cat: Tensor, bias: Tensor | None,
                          peep: Tensor | None, rec: Tensor | None, uh: Tensor | None, uc: Tensor | None,
                          w_hr: Tensor | None, inputs_size: int, recompute: bool) -> cuda_graph.Outputs:
    """The backward loop, one Triton kernel and one matmul per step; writes only tensors it allocates.

    Returns ``dz`` ``[T, B, 4H]`` (``dL/d`` pre-activations, for the weight gradients after the
    loop), ``gh``/``gc`` (``dL/dh_0``, ``dL/dc_0``) and the peephole gradients per batch row. A
    projected cell (``w_hr`` ``[P, H]``) adds a ``[B, P] x [P, H]`` matmul per step before the
    kernel and returns every step's ``dL/dh~`` (``dh_hat`` ``[T, B, P]``) for ``dL/dW_hr``, or,
    recomputing the gates, that gradient summed per step (``grad_hr``).
    """
    steps, batch, hidden = cs.shape[0] - 1, cs.shape[1], cs.shape[2]
    updates = uh is not None
    if recompute:  # rebuild each step's gates from the saved [x_t, h_{t-1}] and c_{t-1} (one more matmul)
        z, tanh_c = cs.new_empty(1, batch, 4 * hidden), cs.new_empty(1, batch, hidden)
        c_cand = cs.new_empty(1, batch, hidden) if updates else cs[1:]
    elif c_cand is None:
        c_cand = cs[1:]
    assert z is not None and tanh_c is not None
    gate_s = _gate_views(z, tanh_c, c_cand, steps, peep is not None)
    xh_s = xh.unbind(0) if xh is not None else ()
    project = StepMatmul(w_cat, bias, batch, calls=steps) if recompute else None
    back = StepMatmul(w_cat[:, inputs_size:].t(), None, batch, calls=steps)
    dz = cs.new_empty(steps, batch, 4 * hidden)
    dz_s, cp_s = dz.unbind(0), cs.unbind(0)
    gout_s = gout.unbind(0) if gout is not None else ()
    uh_s = uh.unbind(0) if uh is not None else ()
    uc_s = uc.unbind(0) if uc is not None else ()
    peep_if = cs.new_zeros(batch, 2, hidden) if peep is not None else None
    peep_o = cs.new_zeros(batch, hidden) if peep is not None else None
    gh = gh.contiguous()
    gc = gc.contiguous().clone()
    gc_next = torch.empty_like(gc)  # two buffers, swapped each step
    if w_hr is not None:
        return _triton_projected_backward(gh, gc, gc_next, gout_s, gate_s, xh_s, project, back, dz, cp_s, peep,
                                          peep_if, peep_o, rec, uh_s, uc_s, w_hr)
    skip_buf = torch.empty_like(gh) if updates else None
    for t in range(steps - 1, -1, -1):
        views = gate_s[t]
        if project is not None:
            _gates(xh_s[t], project, cp_s[t], peep, views)
        g_prev = gout_s[t - 1] if (gout_s and t) else None
        skip = skip_buf if updates else g_prev  # what reaches dL/dh_{t-1} around the matmul
        engine_triton.backward_step(views[0], views[-1], views[-2], cp_s[t], gh, gc, dz_s[t], gc_next, skip_buf,
                                    g_prev if updates else None, peep, peep_if, peep_o,
                                    uh_s[t] if updates else None, uc_s[t] if updates else None)
        gc, gc_next = gc_next, gc
        gh = recurrent_grad(skip, dz_s[t], back, rec)
    return {"dz": dz, "gh": gh, "gc": gc, "peep_if": peep_if, "peep_o": peep_o, "dh_hat": None, "grad_hr": None}


def _triton_projected_backward(gh: Tensor, gc: Tensor, gc_next: Tensor, gout_s: tuple[Tensor, ...],
                               gate_s: list[GateViews], xh_s: tuple[Tensor, ...], project: StepMatmul | None,
                               back: StepMatmul, dz: Tensor, cp_s: tuple[Tensor, ...], peep: Tensor | None,
                               peep_if: Tensor | None, peep_o: Tensor | None, rec: Tensor | None,
                               uh_s: tuple[Tensor, ...], uc_s: tuple[Tensor, ...], w_hr: Tensor) -> cuda_graph.Outputs:
    """:func:`_triton_backward_loop` for a projected cell: ``dL/dh~`` (``P``) goes back through ``W_hr`` to ``o tanh c``
    (``H``) in one matmul, the kernel takes it from there and handles ``c``'s update weight, and what skips the
    cell through ``h``'s update weight is added in torch."""
    steps, batch = dz.shape[0], dz.shape[1]
    hidden, state = w_hr.shape[1], w_hr.shape[0]
    recompute = project is not None
    dz_s = dz.unbind(0)
    dh_hat = gh.new_empty(1 if recompute else steps, batch, state)
    dh_hat_s = dh_hat.unbind(0)
    dh_raw = gh.new_empty(batch, hidden)
    grad_hr = gh.new_zeros(state, hidden) if recompute else None
    for t in range(steps - 1, -1, -1):
        views = gate_s[t]
        if project is not None:
            _gates(xh_s[t], project, cp_s[t], peep, views)
        dh = dh_hat_s[0 if recompute else t]  # what reaches the cell's h~
        if uh_s:
            torch.mul(gh, uh_s[t], out=dh)
        else:
            dh.copy_(gh)
        torch.mm(dh, w_hr, out=dh_raw)
        if grad_hr is not None:
            grad_hr.addmm_(dh.t(), views[2] * views[-1])  # o tanh c~
        engine_triton.backward_step(views[0], views[-1], views[-2], cp_s[t], dh_raw, gc, dz_s[t], gc_next, None, None,
                                    peep, peep_if, peep_o, None, uc_s[t] if uc_s else None)
        gc, gc_next = gc_next, gc
        skip = gout_s[t - 1] if (gout_s and t) else None  # what reaches dL/dh_{t-1} around the matmul
        if uh_s:
            skip = gh - dh if skip is None else (gh - dh).add_(skip)
        gh = recurrent_grad(skip, dz_s[t], back, rec)
    return {"dz": dz, "gh": gh, "gc": gc, "peep_if": peep_if, "peep_o": peep_o,
            "dh_hat": None if recompute else dh_hat, "grad_hr": grad_hr}


def _weight_grads(ctx: Any, dz: Tensor, xh: Tensor, inputs: int, w_cat: Tensor, bias: Tensor | None,
                  peep: Tensor | None, peep_if: Tensor | None, peep_o: Tensor | None) -> tuple[Tensor | None, ...]:
    """``dL/d(x, w_cat, bias, peephole)`` from every step's ``dz`` ``[T, B, 4H]``: one large matmul each."""
    steps, batch, four_h = dz.shape
    flat_dz = dz.view(steps * batch, four_h)
    grad_x = large_matmul(flat_dz, w_cat[:, :inputs]).view(steps, batch, inputs) if ctx.needs_input_grad[0] else None
    grad_w = large_matmul(flat_dz.t(), xh[:steps].reshape(steps * batch, -1)) if ctx.needs_input_grad[1] else None
    grad_b = flat_dz.sum(0) if bias is not None and ctx.needs_input_grad[2] else None
    grad_p = None
    if peep is not None and peep_if is not None and peep_o is not None and ctx.needs_input_grad[3]:
        grad_p = torch.cat([peep_if.sum(0), peep_o.sum(0, keepdim=True)])
    return grad_x, grad_w, grad_b, grad_p


GateViews = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _gate_views(z: Tensor, tanh_c: Tensor, c_cand: Tensor, steps: int, peephole: bool) -> list[GateViews]:
    """Per step: ``(z, sigmoid target, o, i, f, s_g, [i, f] as [B, 2, H], c~, tanh c~)`` views.

    ``z`` and ``tanh_c`` hold every step, or one step reused by all (recomputation).
    """
    hidden = z.shape[-1] // 4
    act = z[..., hidden:] if peephole else z  # what one sigmoid covers
    parts = [z, act, *z.chunk(4, -1), z[..., hidden:3 * hidden].unflatten(-1, (2, hidden)), c_cand, tanh_c]
    per_step = [p.unbind(0) for p in parts]
    return [tuple(p[t if len(p) == steps else 0] for p in per_step) for t in range(steps)]  # type: ignore[misc]


def _gates(xh_t: Tensor, project: StepMatmul, c: Tensor, peep: Tensor | None, views: GateViews,
           tanh: Callable[[Tensor, Tensor], Tensor] = tanh_into) -> None:
    """One step's gate activations, ``c~`` and ``tanh c~`` written into ``views``.

    ``project`` writes the pre-activations into ``z_t`` (torch) or returns them in a new tensor
    (oneDNN): the sigmoid then reads them from there and writes ``z_t``, no extra pass either way.
    ``tanh``: :func:`~rnnkit.scan.elementwise.tanh_for`, resolved once by the loop that calls this.
    """
    z_t, act, o, i, f, s_g, i_f, c_new, tanh_c = views
    pre = project(xh_t, out=z_t)
    if peep is None:
        torch.sigmoid(pre, out=z_t)
    else:
        hidden = c.shape[-1]
        pre_act, pre_o, pre_if = (act, o, i_f) if pre is z_t else \
            (pre[:, hidden:], pre[:, :hidden], pre[:, hidden:3 * hidden].view(-1, 2, hidden))
        pre_if.addcmul_(peep[:2], c.unsqueeze(1))
        torch.sigmoid(pre_act, out=act)
    torch.mul(f, c, out=c_new).addcmul_(i, s_g, value=2.0).sub_(i)  # f c + i (2 s_g - 1)
    if peep is not None:
        torch.sigmoid(pre_o.addcmul_(peep[2], c_new), out=o)
    tanh(c_new, tanh_c)


def _inference_weights(cell: LSTMCell, order: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
    """``(W_ih rows, bias, W_hh^T contiguous, W_hr^T contiguous or None)`` in the engine's gate order, kept for the cell.

    Reordering costs four gathers per call (about 350 µs at H=256, as much as 20 steps at batch 1,
    and all of a streaming call of one step), so inference keeps the result until a weight
    changes (:mod:`rnnkit.scan.weight_cache` says how a change is seen). ``W_hh^T`` is made
    contiguous: a ``[1, H] x [H, 4H]`` product on a transposed view runs 1.3-1.5x slower on a CPU
    (``W_hr^T`` likewise).
    """
    def build() -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        with torch.no_grad():
            bias = None
            if cell.bias_ih is not None and cell.bias_hh is not None:
                bias = _engine_rows(cell.bias_ih + cell.bias_hh, order)
            w_hr_t = cell.weight_hr.t().contiguous() if cell.weight_hr is not None else None
            return (_engine_rows(cell.weight_ih, order), bias, _engine_rows(cell.weight_hh, order).t().contiguous(),
                    w_hr_t)

    return weight_cache.cached(cell, "lstm_inference_weights",
                               (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, cell.weight_hr), build)


def _lstm_inference(cell: LSTMCell, x_tm: Tensor, h0: Tensor, c0: Tensor, order: Tensor,
                    rec_mask: Tensor | None, update_h: Tensor | None, update_c: Tensor | None,
                    out_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The engine's forward when no gradient is needed: nothing saved, one ``[B, 4H]`` gate buffer.

    The input projection is one matmul for all steps (what oneDNN does too), so each step's
    matmul has ``K = H``; every view the loop needs (gates, peephole rows, per-step update
    weights, the cell state's ``[B, 1, H]`` view) is made once, and the cell state alternates
    between two buffers, so a step is the matmul and about ten element-wise ops (batch-1 latency
    is set by per-op dispatch). When oneDNN runs the matmul (:mod:`rnnkit.scan.step_matmul`) its
    result is a new tensor each step and the gate views are taken from it.
    """
    hidden, state = cell.hidden_size, cell.output_size
    w_ih, bias, w_t, w_hr_t = _inference_weights(cell, order)
    xw = linear(x_tm, w_ih, bias)
    steps, batch = x_tm.shape[0], x_tm.shape[1]
    recur = cached_step_matmul(cell, w_t.t(), None, batch, adds=True)
    out = xw.new_empty(steps, batch, state)
    gates = xw.new_empty(batch, 4 * hidden)
    o, i, f, g = gates.chunk(4, -1)
    peep = cell.weight_peephole
    act = gates[:, hidden:] if peep is not None else gates
    peep_if = gates[:, hidden:3 * hidden].unflatten(-1, (2, hidden))
    peep_ifw, peep_o = (peep[:2].detach(), peep[2].detach()) if peep is not None else (None, None)
    cells = xw.new_empty(2, batch, 1, hidden)  # c_t alternates between two buffers
    c_views, c_rows = cells.unbind(0), cells.squeeze(2).unbind(0)
    tanh_c = xw.new_empty(batch, hidden)
    h_raw = xw.new_empty(batch, hidden) if w_hr_t is not None else None  # o * tanh c before the projection
    h_in = xw.new_empty(batch, state) if rec_mask is not None else None
    updates = (list(zip(update_h.unbind(0), update_c.unbind(0)))  # (u_h, u_c) per step
               if update_h is not None and update_c is not None else [])
    h_cand = xw.new_empty(batch, state) if updates else None  # h~ before its update
    h, c = h0, c0
    c3 = c0.unsqueeze(1)
    tanh = tanh_for(tanh_c)
    for t, (x_t, out_t) in enumerate(zip(xw.unbind(0), out.unbind(0))):
        pre = recur(h if h_in is None or rec_mask is None else torch.mul(h, rec_mask, out=h_in), add=x_t, out=gates)
        if pre is not gates:
            o, i, f, g = pre.chunk(4, -1)
            act = pre[:, hidden:] if peep is not None else pre
            if peep is not None:
                peep_if = pre[:, hidden:3 * hidden].view(batch, 2, hidden)
        if peep_ifw is not None:
            peep_if.addcmul_(peep_ifw, c3)
        torch.sigmoid_(act)
        c_new, c_new3 = c_rows[t % 2], c_views[t % 2]
        torch.mul(f, c, out=c_new).addcmul_(i, g, value=2.0).sub_(i)  # f c + i (2 s_g - 1)
        if peep_o is not None:
            torch.sigmoid_(o.addcmul_(peep_o, c_new))
        h_new = out_t if h_cand is None else h_cand
        o_tanh_c = torch.mul(o, tanh(c_new, tanh_c), out=h_new if w_hr_t is None else h_raw)
        if w_hr_t is not None:
            torch.mm(o_tanh_c, w_hr_t, out=h_new)
        if h_cand is None:
            h = out_t
            c, c3 = c_new, c_new3
        else:
            u_h, u_c = updates[t]
            h = torch.lerp(h, h_cand, u_h, out=out_t)
            c = torch.lerp(c, c_new, u_c, out=c_new)  # c_new is dead once lerped: reuse it
            c3 = c_new3
    h_n = h.clone()
    if out_mask is not None:
        out.mul_(out_mask)
    return out, h_n, c.clone()


def _zoneout_keep(out: Tensor, rate: float) -> Tensor:
    """Fill ``out`` with a Bernoulli keep-mask: 0 with probability ``rate``, else 1.

    On CPU, where drawing the numbers dominates, each 64-bit draw of the generator gives four
    16-bit lanes compared against ``rate * 2^16`` in one pass into ``out``: 1.1 ms for 1.6M
    decisions against 3.1 ms for ``uniform_`` then ``ge_`` (about 4 ms of a 110 ms training step
    at I=128 H=256 B=64 T=100). The rate is thereby rounded to a multiple of ``2^-16`` (0.1 keeps
    0.100006; a non-zero rate stays at least ``2^-16``). Elsewhere ``uniform_`` and ``ge_``.
    """
    if out.device.type != "cpu":
        return out.uniform_().ge_(rate)
    lanes = min(max(round(rate * 65536), 1), 65535)  # P(lane < threshold) = lanes / 2^16
    words = torch.empty((out.numel() + 3) // 4, dtype=torch.int64).random_(-2**63, None)
    bits = words.view(torch.int16)[:out.numel()].view(out.shape)
    return torch.ge(bits, lanes - 32768, out=out)


def _update_weights(mask: Tensor | None, zoneout_rate: float, training: bool, steps: int, batch: int,
                    sizes: tuple[int, ...], like: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """``(update_h, update_c, out_mask)`` time-major, from the sequence mask and zoneout.

    ``sizes`` are the state tensors' sizes: ``(P, H)`` for an LSTM (``P`` its projection's or
    ``H``), ``(H,)`` for a GRU, which has no cell state: ``update_c`` is then ``None``.
    """
    keep = None if mask is None else mask.t().unsqueeze(-1).to(like.dtype)  # [T, B, 1]
    if not zoneout_rate:
        return keep, keep, keep
    if training:  # a fresh Bernoulli mask per step and per state tensor, as in the reference scan
        draws = [_zoneout_keep(like.new_empty(steps, batch, size), zoneout_rate) for size in sizes]
        if keep is not None:
            draws = [d * keep for d in draws]
        return draws[0], draws[1] if len(draws) == 2 else None, keep
    expected = like.new_full((steps, batch, 1), 1.0 - zoneout_rate)
    u = expected if keep is None else expected * keep
    return u, u, keep


@eager_under_compile
def engine_scan(cell: RecurrentCell, x: Tensor, state: State, *, mask: Tensor | None = None,
                reverse: bool = False, recurrent_mask: Tensor | None = None, zoneout_rate: float = 0.0,
                training: bool = False, return_gates: bool = False,
                kernels: str = "torch") -> tuple[Tensor, State, None]:
    """Run an :class:`~rnnkit.cells.LSTMCell` over ``x`` ``[B, T, I]`` with the hand-written BPTT engine.

    Arguments and results as in :func:`~rnnkit.scan.reference_scan`; raises ValueError for what
    :func:`engine_unavailable_reason` reports. In training, zoneout draws its masks from torch's
    generator in a different order than the reference scan: same distribution, other samples.
    ``kernels="triton"`` does each step's element-wise work in one Triton kernel
    (:mod:`rnnkit.scan.engine_triton`; CUDA, ``LSTMCell`` and ``LayerNormLSTMCell``, projected or not).
    """
    reason = engine_unavailable_reason(cell, zoneout_rate=zoneout_rate, return_gates=return_gates)
    if reason is None and kernels == "triton":
        reason = triton_engine_unavailable_reason(cell, x.device)
    elif reason is None and kernels != "torch":
        reason = f"kernels must be 'torch' or 'triton', got {kernels!r}"
    if reason is not None:
        raise ValueError(reason)
    check_constant_mask(recurrent_mask)
    assert isinstance(cell, LSTMCell)  # LayerNormLSTMCell included
    if torch.is_autocast_enabled(x.device.type):  # the out= buffers need one dtype: run in the weights' dtype
        dtype = cell.weight_ih.dtype
        with torch.autocast(x.device.type, enabled=False):
            return engine_scan(cell, x.to(dtype), tuple(s.to(dtype) for s in state), mask=mask, reverse=reverse,
                               recurrent_mask=None if recurrent_mask is None else recurrent_mask.to(dtype),
                               zoneout_rate=zoneout_rate, training=training, return_gates=return_gates,
                               kernels=kernels)
    batch, steps = x.shape[0], x.shape[1]
    if steps == 0:
        return x.new_zeros(batch, 0, cell.output_size), state, None
    hidden = cell.hidden_size
    order = _gate_order(hidden, x.device)
    x_tm = x.transpose(0, 1)
    if reverse:  # run the flipped sequence forwards; autograd flips the gradients back
        x_tm = x_tm.flip(0)
        mask = None if mask is None else mask.flip(1)
    x_tm = x_tm.contiguous()
    update_h, update_c, out_mask = _update_weights(mask, zoneout_rate, training, steps, batch,
                                                   (cell.output_size, hidden), x)
    h0, c0 = state
    backward_needed = needs_grad(cell, x, h0, c0, recurrent_mask)
    if not backward_needed and type(cell) is LSTMCell and kernels == "torch":
        out, h_n, c_n = _lstm_inference(cell, x_tm, h0, c0, order, recurrent_mask, update_h, update_c, out_mask)
    elif isinstance(cell, LayerNormLSTMCell):
        scale = x.new_ones(4, hidden)
        scale[3] = 2.0
        out, h_n, c_n = layernorm_engine_scan(cell, x_tm, (h0, c0), order, scale.view(-1), recurrent_mask,
                                              update_h, update_c, out_mask, triton=kernels == "triton",
                                              recompute=recompute_requested() or not backward_needed)
    else:
        bias = None
        if cell.bias_ih is not None and cell.bias_hh is not None:
            bias = _engine_rows(cell.bias_ih + cell.bias_hh, order)
        w_cat = _engine_rows(torch.cat([cell.weight_ih, cell.weight_hh], 1), order)
        out, h_n, c_n = _LSTMEngine.apply(x_tm, w_cat, bias, cell.weight_peephole, h0.contiguous(),
                                          c0.contiguous(), recurrent_mask, update_h, update_c, out_mask,
                                          recompute_requested() or not backward_needed, kernels == "triton",
                                          cell.weight_hr)
    if reverse:
        out = out.flip(0)
    return out.transpose(0, 1), (h_n, c_n), None
