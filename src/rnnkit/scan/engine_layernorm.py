"""The hand-written-backward engine for :class:`~rnnkit.cells.LayerNormLSTMCell`.

Same scheme as :mod:`rnnkit.scan.engine` (gates reordered ``o, i, f, 2g`` so one ``sigmoid``
serves all four, states in ``[T+1, B, H]`` buffers, the adjoint per step on cached ``[B, 4H]``
tensors, weight gradients in one matmul after the loop), with the two per-step layer norms done
by ATen's fused kernels: ``native_layer_norm`` forward and ``native_layer_norm_backward``, one op
each instead of the half-dozen autograd records of ``F.layer_norm``. The input-side norm
``LN_ih(W_ih x)`` does not depend on the state, so it runs for all steps at once, under autograd.
On CUDA the forward and backward loops are recorded as CUDA graphs from a shape's second call
and replayed (:mod:`rnnkit.scan.cuda_graph`), which takes the host's per-op launch work out of
each step. With ``implementation="triton"`` (``triton=True`` here) each step is instead one
matmul and one Triton kernel that does both layer norms (whole rows per program: ``LN_hh`` over
the ``4H`` gate row, ``LN_c`` over ``H``) with the gate math, forward and backward
(``_triton_kernels.ln_lstm_forward_step`` / ``ln_lstm_backward_step``); the gain and bias
gradients are summed per row inside the loop and over the batch after it. On CPU ``"auto"`` runs
layer-norm LSTMs on this engine (1.3-1.5x the reference scan), and on CUDA its Triton form where
triton is installed (1.22x cuDNN's plain LSTM on an H100 at H=256), else its torch-op form (7.4x
the reference scan there). Under :func:`~rnnkit.scan.recompute_gates` (and at inference,
where nothing is saved) the torch-op loops keep one step's gates instead of every step's: the
forward saves ``xw`` ``[T, B, 4H]`` in place of the activations ``z`` and ``W_hh h`` (two
``[T, B, 4H]``), ``tanh LN_c(c~)`` and, with zoneout or masks, ``c~`` (``[T, B, H]`` each), and
the backward rebuilds each step's gates with the forward's own code (one more ``[B, H] x [H, 4H]``
matmul per step). The Triton loops always save their activations.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx

from ..cells.lstm import LayerNormLSTMCell
from . import cuda_graph, engine_triton
from ._bptt import first_order_only, recurrent_grad, without_autocast
from .elementwise import tanh_for
from .step_matmul import StepMatmul, large_matmul, linear


class _LayerNormLSTMEngine(torch.autograd.Function):
    """Time-major layer-norm LSTM over ``xw [T, B, 4H]`` (``LN_ih(W_ih x) + b``, gates ``o, i, f, 2g``).

    ``gain_hh`` is ``LN_hh``'s gain in engine order with the cell-candidate block doubled;
    ``update_h``/``update_c``/``out_mask`` as in :mod:`rnnkit.scan.engine`.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, xw: Tensor, w_hh: Tensor, gain_hh: Tensor,  # type: ignore[override]
                gain_c: Tensor, bias_c: Tensor, peep: Tensor | None, h0: Tensor, c0: Tensor,
                rec_mask: Tensor | None, update_h: Tensor | None, update_c: Tensor | None,
                out_mask: Tensor | None, eps_hh: float, eps_c: float,
                triton: bool = False, recompute: bool = False,
                w_hr: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        recompute = recompute and not triton  # the Triton loops always keep their activations
        inputs: cuda_graph.Inputs = {"xw": xw, "w_hh": w_hh, "gain_hh": gain_hh, "gain_c": gain_c,
                                     "bias_c": bias_c, "peep": peep, "h0": h0, "c0": c0, "rec_mask": rec_mask,
                                     "update_h": update_h, "update_c": update_c}
        if w_hr is not None:  # LSTMP
            inputs["w_hr"] = w_hr
        loop: Callable[..., cuda_graph.Outputs] = (
            functools.partial(_triton_forward_loop, eps_hh=eps_hh, eps_c=eps_c) if triton
            else functools.partial(_forward_loop, eps_hh=eps_hh, eps_c=eps_c, recompute=recompute))
        graphs = cuda_graph.graphs_enabled(xw.device)
        ctx.graphs = graphs  # type: ignore[attr-defined]  # decided here for the backward too
        ctx.triton = triton  # type: ignore[attr-defined]
        ctx.recompute = recompute  # type: ignore[attr-defined]
        ctx.eps = (eps_hh, eps_c)  # type: ignore[attr-defined]
        res, _ = (cuda_graph.run_captured(("layernorm engine forward", eps_hh, eps_c, triton, recompute), loop,
                                          inputs) if graphs else (loop(**inputs), False))
        hs, cs = res["hs"], res["cs"]
        assert hs is not None and cs is not None
        steps = xw.shape[0]
        c_cand = res["c_cand"] if res["c_cand"] is not None or recompute else cs[1:]
        h_in = res["h_in"] if res["h_in"] is not None else hs[:-1]
        out = hs[1:] if out_mask is None else hs[1:] * out_mask
        # recomputing: xw instead of the gates, W_hh h, tanh c~ and the norms' statistics (z's slot holds it)
        saved: tuple[Any, ...] = (xw if recompute else res["z"], res["y"], cs, res["tanh_c"], c_cand, h_in, w_hh,
                                  gain_hh, gain_c, bias_c, peep, rec_mask, update_h, update_c, out_mask,
                                  res["stats"], w_hr)  # None is allowed
        ctx.save_for_backward(*saved)
        return out, hs[steps].clone(), cs[steps].clone()

    @staticmethod
    @first_order_only
    @without_autocast
    def backward(ctx: Any, grad_out: Tensor | None, grad_h: Tensor | None,  # type: ignore[override]
                 grad_c: Tensor | None) -> tuple[Tensor | None, ...]:
        (z, y, cs, tanh_c, c_cand, h_in, w_hh, gain_hh, gain_c, bias_c, peep, rec_mask, update_h, update_c,
         out_mask, stats, w_hr) = ctx.saved_tensors
        xw = z if ctx.recompute else None  # recomputing: z's slot holds xw
        steps, batch, hidden = cs.shape[0] - 1, cs.shape[1], cs.shape[2]
        g_out = None if grad_out is None else (grad_out if out_mask is None else grad_out * out_mask)
        gh = torch.zeros(batch, w_hh.shape[1], dtype=cs.dtype, device=cs.device) if grad_h is None else grad_h
        if g_out is not None:
            gh = gh + g_out[steps - 1]
        gc = cs.new_zeros(batch, hidden) if grad_c is None else grad_c  # [B, H]: gh is [B, P] with a projection
        inputs: cuda_graph.Inputs = {
            "gh": gh, "gc": gc, "g_out": g_out, "z": None if ctx.recompute else z, "y": y, "cs": cs,
            "tanh_c": tanh_c, "c_cand": c_cand if update_h is not None else None, "stats": stats, "w_hh": w_hh,
            "gain_hh": gain_hh, "gain_c": gain_c, "bias_c": bias_c, "peep": peep, "rec_mask": rec_mask,
            "update_h": update_h, "update_c": update_c}
        if w_hr is not None:
            inputs["w_hr"] = w_hr
        loop: Callable[..., cuda_graph.Outputs] = _triton_backward_loop if ctx.triton else _backward_loop
        if ctx.recompute:
            inputs.update(xw=xw, h_in=h_in)
            loop = functools.partial(_backward_loop, eps_hh=ctx.eps[0], eps_c=ctx.eps[1])
        res, _ = (cuda_graph.run_captured(("layernorm engine backward", ctx.triton, ctx.recompute, *ctx.eps), loop,
                                          inputs)
                  if ctx.graphs and cuda_graph.graphs_enabled(cs.device) else (loop(**inputs), False))
        dz, dy, gh_0, gc_0 = res["dz"], res["dy"], res["gh"], res["gc"]
        assert dz is not None and dy is not None and gh_0 is not None and gc_0 is not None
        grad_w = large_matmul(dy.view(steps * batch, 4 * hidden).t(), h_in.reshape(steps * batch, -1))
        grads = [res["grad_gain_hh"], res["grad_gain_c"], res["grad_bias_c"], gh_0, gc_0]
        grad_p = None
        if peep is not None and res["peep_if"] is not None and res["peep_o"] is not None:
            grad_p = torch.cat([res["peep_if"].sum(0), res["peep_o"].sum(0, keepdim=True)])
        return (dz, grad_w, *grads[:3], grad_p, *grads[3:], None, None, None, None, None, None, None, None,
                res.get("grad_hr"))


StepViews = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _step_views(z: Tensor, y: Tensor, c_cand: Tensor, tanh_c: Tensor, steps: int, peephole: bool) -> list[StepViews]:
    """Per step: ``(z, sigmoid target, [i, f] as [B, 2, H], o, i, f, s_g, y, c~, tanh LN_c(c~))`` views.

    Each buffer holds every step, or one step reused by all (the gates recomputed in backward).
    """
    hidden = z.shape[-1] // 4
    act = z[..., hidden:] if peephole else z  # what one sigmoid covers
    parts = [z, act, z[..., hidden:3 * hidden].unflatten(-1, (2, hidden)), *z.chunk(4, -1), y, c_cand, tanh_c]
    per_step = [p.unbind(0) for p in parts]
    return [tuple(p[t if len(p) == steps else 0] for p in per_step) for t in range(steps)]  # type: ignore[misc]


class _GateStep:
    """One step's gates: ``y = W_hh h``, ``z = xw_t + LN_hh(y)`` activated, ``c~``, ``tanh LN_c(c~)``.

    Writes into the step's views; returns ``(mean_hh, rstd_hh, mean_c, rstd_c)``. The forward loop
    and, when the gates are recomputed, the backward loop run the same code, so they agree bitwise.
    """

    def __init__(self, w_hh: Tensor, gain_hh: Tensor, gain_c: Tensor, bias_c: Tensor, peep: Tensor | None,
                 batch: int, steps: int, eps_hh: float, eps_c: float) -> None:
        self.project = StepMatmul(w_hh, None, batch, calls=steps)
        self.tanh = tanh_for(gain_c.new_empty(batch, gain_c.shape[-1]))  # decided once for the loop
        self.gain_hh, self.gain_c, self.bias_c, self.peep = gain_hh, gain_c, bias_c, peep
        self.eps_hh, self.eps_c = eps_hh, eps_c
        self.four_h = w_hh.shape[0]

    def __call__(self, x_t: Tensor, h: Tensor, c: Tensor, views: StepViews) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        z_t, act, i_f, o, i, f, s_g, y_t, cc, tc = views
        peep = self.peep
        y_new = self.project(h, out=y_t)
        normed, mean_hh, rstd_hh = torch.native_layer_norm(y_new, (self.four_h,), self.gain_hh, None, self.eps_hh)
        if y_new is not y_t:  # oneDNN's result is a new tensor: keep it for the backward
            y_t.copy_(y_new)
        torch.add(x_t, normed, out=z_t)
        if peep is not None:
            i_f.addcmul_(peep[:2], c.unsqueeze(1))
        torch.sigmoid_(act)
        torch.mul(f, c, out=cc).addcmul_(i, s_g, value=2.0).sub_(i)  # f c + i (2 s_g - 1)
        if peep is not None:
            torch.sigmoid_(o.addcmul_(peep[2], cc))
        normed_c, mean_c, rstd_c = torch.native_layer_norm(cc, (cc.shape[-1],), self.gain_c, self.bias_c, self.eps_c)
        self.tanh(normed_c, tc)
        return mean_hh, rstd_hh, mean_c, rstd_c


def _forward_loop(xw: Tensor, w_hh: Tensor, gain_hh: Tensor, gain_c: Tensor, bias_c: Tensor, peep: Tensor | None,
                  h0: Tensor, c0: Tensor, rec_mask: Tensor | None, update_h: Tensor | None,
                  update_c: Tensor | None, eps_hh: float, eps_c: float, recompute: bool = False,
                  w_hr: Tensor | None = None) -> cuda_graph.Outputs:
    """The forward loop; writes only tensors it allocates (it may be recorded as a CUDA graph).

    Returns ``z`` (gate activations), ``y`` (``W_hh h_{t-1}``), ``hs``/``cs`` ``[T+1, B, H]``,
    ``tanh_c``, ``c_cand`` and ``h_in`` (``None`` where they are views of ``cs``/``hs``) and
    ``stats`` ``[T, 4, B, 1]``: the mean and reciprocal deviation of ``LN_hh`` and ``LN_c`` per step.
    With ``recompute``, ``z``, ``y``, ``tanh_c``, ``c_cand`` and ``stats`` are ``None``: they were one
    step's buffers, and the backward rebuilds them from ``xw``, ``h_in`` and ``cs``. ``w_hr``
    ``[P, H]`` (LSTMP) projects each step's ``o * tanh LN_c(c~)`` to the ``h`` that is output and fed back.
    """
    steps, batch, four_h = xw.shape
    hidden, state = four_h // 4, w_hh.shape[1]  # state: h's size, the projection's or H
    kept = 1 if recompute else steps
    z = xw.new_empty(kept, batch, four_h)  # pre-activations, then (in place) sigmoids of o, i, f, 2g
    y = xw.new_empty(kept, batch, four_h)  # W_hh h_{t-1}: the input of LN_hh
    hs, cs = xw.new_empty(steps + 1, batch, state), xw.new_empty(steps + 1, batch, hidden)
    hs[0], cs[0] = h0, c0
    h_in = xw.new_empty(steps, batch, state) if rec_mask is not None else hs[:-1]
    updates = update_h is not None
    c_cand = xw.new_empty(kept, batch, hidden) if updates or recompute else cs[1:]
    tanh_c = xw.new_empty(kept, batch, hidden)  # tanh(LN_c(c~_t))
    h_cand = xw.new_empty(batch, state) if updates else None
    h_raw = xw.new_empty(batch, hidden) if w_hr is not None else None  # o * tanh LN_c(c~) before the projection
    w_hr_t = w_hr.t() if w_hr is not None else None
    stats: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []  # (mean, rstd) of LN_hh and LN_c per step
    gate_step = _GateStep(w_hh, gain_hh, gain_c, bias_c, peep, batch, steps, eps_hh, eps_c)
    views = _step_views(z, y, c_cand, tanh_c, steps, peep is not None)
    x_s, h_s, c_s, hin_s = xw.unbind(0), hs.unbind(0), cs.unbind(0), h_in.unbind(0)
    uh_s = update_h.unbind(0) if update_h is not None else ()
    uc_s = update_c.unbind(0) if update_c is not None else ()
    for t in range(steps):
        h = h_s[t] if rec_mask is None else torch.mul(h_s[t], rec_mask, out=hin_s[t])
        step_stats = gate_step(x_s[t], h, c_s[t], views[t])
        if not recompute:
            stats.append(step_stats)
        o, cn, tc = views[t][3], views[t][8], views[t][9]
        new_h = h_s[t + 1] if h_cand is None else h_cand
        if w_hr_t is None:
            torch.mul(o, tc, out=new_h)
        else:
            torch.mm(torch.mul(o, tc, out=h_raw), w_hr_t, out=new_h)
        if h_cand is not None:
            torch.lerp(h_s[t], h_cand, uh_s[t], out=h_s[t + 1])
            torch.lerp(c_s[t], cn, uc_s[t], out=c_s[t + 1])
        if recompute and not updates:
            c_s[t + 1].copy_(cn)
    if recompute:
        return {"z": None, "y": None, "hs": hs, "cs": cs, "tanh_c": None, "c_cand": None,
                "h_in": h_in if rec_mask is not None else None, "stats": None}
    stacked = torch.stack([torch.stack(s) for s in stats])  # [T, 4, B, 1]
    return {"z": z, "y": y, "hs": hs, "cs": cs, "tanh_c": tanh_c, "c_cand": c_cand if updates else None,
            "h_in": h_in if rec_mask is not None else None, "stats": stacked}


def _backward_loop(gh: Tensor, gc: Tensor, g_out: Tensor | None, z: Tensor | None, y: Tensor | None, cs: Tensor,
                   tanh_c: Tensor | None, c_cand: Tensor | None, stats: Tensor | None, w_hh: Tensor, gain_hh: Tensor,
                   gain_c: Tensor, bias_c: Tensor, peep: Tensor | None, rec_mask: Tensor | None,
                   update_h: Tensor | None, update_c: Tensor | None, xw: Tensor | None = None,
                   h_in: Tensor | None = None, eps_hh: float = 0.0, eps_c: float = 0.0,
                   w_hr: Tensor | None = None) -> cuda_graph.Outputs:
    """The backward loop; writes only tensors it allocates (it may be recorded as a CUDA graph).

    Returns ``dz`` (``dL/d`` pre-activations: the input side's gradient), ``dy`` (``LN_hh``'s input
    gradient, for ``dL/dW_hh``), ``gh``/``gc`` (``dL/dh_0``, ``dL/dc_0``), the layer-norm gain and
    bias gradients and the peephole gradients per batch row. Given ``xw`` and ``h_in`` instead of
    the saved activations (``z`` ... ``stats`` ``None``), it rebuilds each step's gates first, with
    the forward's code (one more ``[B, H] x [H, 4H]`` matmul per step). With ``w_hr`` (LSTMP) it also
    returns ``grad_hr``: one matmul after the loop, or summed step by step when recomputing.
    """
    steps, batch, hidden = cs.shape[0] - 1, cs.shape[1], cs.shape[2]
    four_h = 4 * hidden
    recompute = z is None
    gate_step = None
    if recompute:
        assert xw is not None and h_in is not None
        z, y = cs.new_empty(1, batch, four_h), cs.new_empty(1, batch, four_h)
        tanh_c, c_cand = cs.new_empty(1, batch, hidden), cs.new_empty(1, batch, hidden)
        gate_step = _GateStep(w_hh, gain_hh, gain_c, bias_c, peep, batch, steps, eps_hh, eps_c)
    elif c_cand is None:
        c_cand = cs[1:]
    assert z is not None and y is not None and tanh_c is not None and c_cand is not None
    views = _step_views(z, y, c_cand, tanh_c, steps, peep is not None)
    x_s = xw.unbind(0) if xw is not None else ()
    hin_s = h_in.unbind(0) if h_in is not None else ()
    dz, dy = cs.new_empty(steps, batch, four_h), cs.new_empty(steps, batch, four_h)
    slope = cs.new_empty(batch, four_h)
    partner = cs.new_empty(batch, 3, hidden)  # what multiplies i, f and g in c~: g, c_{t-1}, 2i
    slope_o, slope_ifg = slope[:, :hidden], slope[:, hidden:].view(batch, 3, hidden)
    p_g, p_c, p_i = partner.unbind(1)
    cp_s = cs.unbind(0)
    dz_s, dy_s, dzo_s = dz.unbind(0), dy.unbind(0), dz[..., :hidden].unbind(0)
    dzifg_s = dz[..., hidden:].unflatten(-1, (3, hidden)).unbind(0)
    dzi_s, dzf_s = dz[..., hidden:2 * hidden].unbind(0), dz[..., 2 * hidden:3 * hidden].unbind(0)
    gout_s = g_out.unbind(0) if g_out is not None else ()
    uh_s = update_h.unbind(0) if update_h is not None else ()
    uc_s = update_c.unbind(0) if update_c is not None else ()
    grad_gain_hh, grad_gain_c, grad_bias_c = torch.zeros_like(gain_hh), torch.zeros_like(gain_c), torch.zeros_like(bias_c)
    if peep is not None:
        peep_if_acc, peep_o_acc = cs.new_zeros(batch, 2, hidden), cs.new_zeros(batch, hidden)
        dzif_s = dz[..., hidden:3 * hidden].unflatten(-1, (2, hidden)).unbind(0)
    gh = gh.clone()
    back = StepMatmul(w_hh.t(), None, batch, adds=g_out is not None or update_h is not None, calls=steps)
    grad_hr: Tensor | None = None
    if w_hr is not None:  # dL/dh~ per step, for dL/dW_hr after the loop (or summed here when recomputing)
        dh_hat = cs.new_empty(1 if recompute else steps, batch, w_hr.shape[0])
        dh_raw = cs.new_empty(batch, hidden)
        if recompute:
            grad_hr = cs.new_zeros(w_hr.shape)
    for t in range(steps - 1, -1, -1):
        a, _, _, o, i, f, s_g, y_t, cc, tc = views[t]
        if gate_step is not None:
            mean_hh, rstd_hh, mean_c, rstd_c = gate_step(x_s[t], hin_s[t], cp_s[t], views[t])
        else:
            assert stats is not None
            mean_hh, rstd_hh, mean_c, rstd_c = stats[t].unbind(0)
        torch.addcmul(a, a, a, value=-1, out=slope)
        dh = gh if update_h is None else gh * uh_s[t]
        dh_skip = dh
        if w_hr is not None:  # back through h~ = W_hr (o tanh LN_c(c~))
            dh_t = dh_hat[0 if recompute else t]
            dh_t.copy_(dh)
            dh = torch.mm(dh_t, w_hr, out=dh_raw)
            if grad_hr is not None:
                grad_hr.addmm_(dh_t.t(), o * tc)
        dh_tc = dh * tc
        torch.mul(dh_tc, slope_o, out=dzo_s[t])
        d_normed_c = torch.addcmul(dh, dh_tc, tc, value=-1).mul_(o)  # dh o (1 - tanh^2)
        dc, d_gain_c, d_bias_c = torch.ops.aten.native_layer_norm_backward(
            d_normed_c, cc, [hidden], mean_c, rstd_c, gain_c, bias_c, [True, True, True])
        grad_gain_c += d_gain_c
        grad_bias_c += d_bias_c
        if peep is not None:
            dc.addcmul_(dzo_s[t], peep[2])
        gc_kept = gc if update_c is None else gc * uc_s[t]
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
            gc_next -= gc_kept
        gc = gc_next
        d_y, d_gain_hh, _ = torch.ops.aten.native_layer_norm_backward(
            dz_s[t], y_t, [four_h], mean_hh, rstd_hh, gain_hh, None, [True, True, False])
        dy_s[t].copy_(d_y)
        grad_gain_hh += d_gain_hh
        skip = gout_s[t - 1] if (g_out is not None and t) else None
        if update_h is not None:
            skip = gh - dh_skip if skip is None else (gh - dh_skip).add_(skip)
        gh = recurrent_grad(skip, d_y, back, rec_mask)
    if w_hr is not None and grad_hr is None:  # sum_t dh~_t^T (o_t tanh LN_c(c~_t))
        h_raw = torch.mul(z[..., :hidden], tanh_c)
        grad_hr = large_matmul(dh_hat.view(-1, w_hr.shape[0]).t(), h_raw.view(-1, hidden))
    return {"dz": dz, "dy": dy, "gh": gh, "gc": gc, "grad_gain_hh": grad_gain_hh, "grad_gain_c": grad_gain_c,
            "grad_bias_c": grad_bias_c, "peep_if": peep_if_acc if peep is not None else None,
            "peep_o": peep_o_acc if peep is not None else None, "grad_hr": grad_hr}


def _triton_forward_loop(xw: Tensor, w_hh: Tensor, gain_hh: Tensor, gain_c: Tensor, bias_c: Tensor,
                         peep: Tensor | None, h0: Tensor, c0: Tensor, rec_mask: Tensor | None, update_h: Tensor | None,
                         update_c: Tensor | None, eps_hh: float, eps_c: float,
                         w_hr: Tensor | None = None) -> cuda_graph.Outputs:
    """:func:`_forward_loop` with one matmul and one Triton kernel per step (same outputs, but
    ``stats`` is ``[T, B, 4]``). A projected cell (``w_hr`` ``[P, H]``) has the kernel write
    ``o tanh LN_c(c~)`` and update only ``c``; the projection, ``h``'s update and the next matmul
    input are small torch ops after it."""
    steps, batch, four_h = xw.shape
    hidden, state = four_h // 4, w_hh.shape[1]  # state: h's size, the projection's or H
    z, y = torch.empty_like(xw), torch.empty_like(xw)
    hs, cs = xw.new_empty(steps + 1, batch, state), xw.new_empty(steps + 1, batch, hidden)
    hs[0], cs[0] = h0, c0
    carried = rec_mask is not None  # the matmul input h * rec differs from h
    h_in = xw.new_empty(steps + 1, batch, state) if carried else hs
    if rec_mask is not None:
        torch.mul(h0, rec_mask, out=h_in[0])
    updates = update_h is not None
    c_cand = xw.new_empty(steps, batch, hidden) if updates else cs[1:]
    tanh_c = xw.new_empty(steps, batch, hidden)
    stats = xw.new_empty(steps, batch, 4)
    w_t = w_hh.t()
    x_s, z_s, y_s, tc_s, cc_s, st_s = (xw.unbind(0), z.unbind(0), y.unbind(0), tanh_c.unbind(0), c_cand.unbind(0),
                                       stats.unbind(0))
    h_s, c_s, hin_s = hs.unbind(0), cs.unbind(0), h_in.unbind(0)
    uh_s = update_h.unbind(0) if update_h is not None else ()
    uc_s = update_c.unbind(0) if update_c is not None else ()
    h_raw = xw.new_empty(batch, hidden) if w_hr is not None else None  # o * tanh LN_c(c~) before the projection
    h_cand = xw.new_empty(batch, state) if w_hr is not None and updates else None
    w_hr_t = w_hr.t() if w_hr is not None else None
    for t in range(steps):
        torch.mm(hin_s[t], w_t, out=y_s[t])
        if h_raw is None:
            engine_triton.ln_forward_step(x_s[t], y_s[t], z_s[t], gain_hh, st_s[t], c_s[t], cc_s[t], tc_s[t],
                                          h_s[t], h_s[t + 1], c_s[t + 1], hin_s[t + 1] if carried else None, peep,
                                          gain_c, bias_c, uh_s[t] if updates else None,
                                          uc_s[t] if updates else None, rec_mask, eps_hh, eps_c)
            continue
        engine_triton.ln_forward_step(x_s[t], y_s[t], z_s[t], gain_hh, st_s[t], c_s[t], cc_s[t], tc_s[t], h_raw,
                                      h_raw, c_s[t + 1], None, peep, gain_c, bias_c, None,
                                      uc_s[t] if updates else None, None, eps_hh, eps_c)
        assert w_hr_t is not None
        engine_triton.project_state(h_raw, w_hr_t, h_s[t], h_s[t + 1], h_cand, uh_s[t] if updates else None,
                                    rec_mask, hin_s[t + 1] if carried else None)
    return {"z": z, "y": y, "hs": hs, "cs": cs, "tanh_c": tanh_c, "c_cand": c_cand if updates else None,
            "h_in": h_in[:steps] if carried else None, "stats": stats}


def _triton_backward_loop(gh: Tensor, gc: Tensor, g_out: Tensor | None, z: Tensor, y: Tensor, cs: Tensor,
                          tanh_c: Tensor, c_cand: Tensor | None, stats: Tensor, w_hh: Tensor, gain_hh: Tensor,
                          gain_c: Tensor, bias_c: Tensor, peep: Tensor | None, rec_mask: Tensor | None,
                          update_h: Tensor | None, update_c: Tensor | None,
                          w_hr: Tensor | None = None) -> cuda_graph.Outputs:
    """:func:`_backward_loop` with one Triton kernel and one matmul per step (same outputs). A projected cell
    adds a ``[B, P] x [P, H]`` matmul per step before the kernel, and ``dL/dW_hr`` as one matmul after the loop."""
    del bias_c  # LN_c's bias does not enter its backward
    steps, batch, four_h = z.shape
    hidden = four_h // 4
    if c_cand is None:
        c_cand = cs[1:]
    dz, dy = torch.empty_like(z), torch.empty_like(z)
    acc_gain_hh, acc_gain_c, acc_bias_c = z.new_zeros(batch, four_h), z.new_zeros(batch, hidden), \
        z.new_zeros(batch, hidden)
    peep_if = z.new_zeros(batch, 2, hidden) if peep is not None else None
    peep_o = z.new_zeros(batch, hidden) if peep is not None else None
    updates = update_h is not None
    z_s, y_s, st_s, tc_s, cc_s, cp_s = (z.unbind(0), y.unbind(0), stats.unbind(0), tanh_c.unbind(0),
                                        c_cand.unbind(0), cs.unbind(0))
    dz_s, dy_s = dz.unbind(0), dy.unbind(0)
    gout_s = g_out.contiguous().unbind(0) if g_out is not None else ()
    uh_s = update_h.unbind(0) if update_h is not None else ()
    uc_s = update_c.unbind(0) if update_c is not None else ()
    gh = gh.contiguous()
    gc = gc.contiguous().clone()
    gc_next = torch.empty_like(gc)  # two buffers, swapped each step
    skip_buf = torch.empty_like(gh) if updates and w_hr is None else None
    back = StepMatmul(w_hh.t(), None, batch, calls=steps)
    grad_hr = None
    if w_hr is not None:  # dL/dh~ -> dL/d(o tanh LN_c(c~)) through W_hr, h's update weight applied in torch
        dh_hat = z.new_empty(steps, batch, w_hr.shape[0])
        dh_raw = z.new_empty(batch, hidden)
        for t in range(steps - 1, -1, -1):
            dh = torch.mul(gh, uh_s[t], out=dh_hat[t]) if updates else dh_hat[t].copy_(gh)
            torch.mm(dh, w_hr, out=dh_raw)
            engine_triton.ln_backward_step(z_s[t], y_s[t], st_s[t], tc_s[t], cc_s[t], cp_s[t], dh_raw, gc, dz_s[t],
                                           dy_s[t], gc_next, None, None, gain_hh, gain_c, acc_gain_hh, acc_gain_c,
                                           acc_bias_c, peep, peep_if, peep_o, None, uc_s[t] if updates else None)
            gc, gc_next = gc_next, gc
            skip = gout_s[t - 1] if (gout_s and t) else None  # what reaches dL/dh_{t-1} around the matmul
            if updates:
                skip = gh - dh if skip is None else (gh - dh).add_(skip)
            gh = recurrent_grad(skip, dy_s[t], back, rec_mask)
        grad_hr = dh_hat.flatten(0, 1).t() @ torch.mul(z[..., :hidden], tanh_c).flatten(0, 1)  # sum_t dh~ (o tanh)
    else:
        for t in range(steps - 1, -1, -1):
            g_prev = gout_s[t - 1] if (gout_s and t) else None
            skip = skip_buf if updates else g_prev  # what reaches dL/dh_{t-1} around the matmul
            engine_triton.ln_backward_step(z_s[t], y_s[t], st_s[t], tc_s[t], cc_s[t], cp_s[t], gh, gc, dz_s[t],
                                           dy_s[t], gc_next, skip_buf, g_prev if updates else None, gain_hh, gain_c,
                                           acc_gain_hh, acc_gain_c, acc_bias_c, peep, peep_if, peep_o,
                                           uh_s[t] if updates else None, uc_s[t] if updates else None)
            gc, gc_next = gc_next, gc
            gh = recurrent_grad(skip, dy_s[t], back, rec_mask)
    return {"dz": dz, "dy": dy, "gh": gh, "gc": gc, "grad_gain_hh": acc_gain_hh.sum(0),
            "grad_gain_c": acc_gain_c.sum(0), "grad_bias_c": acc_bias_c.sum(0), "peep_if": peep_if, "peep_o": peep_o,
            "grad_hr": grad_hr}


def layernorm_engine_scan(cell: LayerNormLSTMCell, x_tm: Tensor, state: tuple[Tensor, Tensor], order: Tensor,
                          scale: Tensor, recurrent_mask: Tensor | None, update_h: Tensor | None,
                          update_c: Tensor | None, out_mask: Tensor | None,
                          triton: bool = False, recompute: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Run ``cell`` over time-major ``x_tm`` (already flipped for reverse); see :func:`engine_scan`.

    ``order`` permutes torch's gate rows into the engine's, ``scale`` (``[4H]``) doubles the
    cell-candidate block. ``recompute`` (torch kernels): keep ``xw`` instead of the gate activations,
    ``W_hh h``, ``tanh LN_c(c~)`` and the norms' statistics, and rebuild them in backward.
    """
    four_h = 4 * cell.hidden_size
    xw = F.layer_norm(linear(x_tm, cell.weight_ih[order]), (four_h,), cell.ln_ih.weight[order] * scale,
                      None, cell.ln_ih.eps)
    if cell.bias_ih is not None and cell.bias_hh is not None:
        xw = xw + (cell.bias_ih + cell.bias_hh)[order] * scale
    h0, c0 = state
    out, h_n, c_n = _LayerNormLSTMEngine.apply(
        xw.contiguous(), cell.weight_hh[order], cell.ln_hh.weight[order] * scale, cell.ln_cell.weight,
        cell.ln_cell.bias, cell.weight_peephole, h0.contiguous(), c0.contiguous(), recurrent_mask, update_h,
        update_c, out_mask, cell.ln_hh.eps, cell.ln_cell.eps, triton, recompute, cell.weight_hr)
    return out, h_n, c_n
