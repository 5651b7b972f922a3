"""A GRU engine with a hand-written backward: one matmul per step and the gate math in torch ops or one Triton kernel.

For GRU configurations cuDNN has no kernel for (recurrent dropout, zoneout, masks with gaps) the
reference scan records every small op of every step; on an H100 that trained at 0.10x cuDNN
(``benchmarks/RESULTS.md``). This engine follows the LSTM one (:mod:`rnnkit.scan.engine` with
``kernels="triton"``):

* the input projection ``xw = W_ih x + b_ih`` for all steps is one matmul, under autograd;
* per step, ``hw = W_hh h_in + b_hh`` (``h_in``: ``h_{t-1}``, recurrent-dropped) is one matmul
  and :func:`~rnnkit.scan.engine_triton.gru_forward_step` does the rest in one kernel::

      r = sigmoid(xw_r + hw_r),  z = sigmoid(xw_z + hw_z),  n = tanh(xw_n + r * hw_n)
      h_t = h_{t-1} + u_t ((1 - z) n + z h_{t-1} - h_{t-1})

  with the update weight ``u_t`` of :mod:`rnnkit.scan.engine` (1, the sequence mask, zoneout's
  keep-mask or its expectation);
* backward, per step, one kernel for ``dL/d xw_t`` and ``dL/d hw_t`` and one matmul for
  ``dL/dh_{t-1}``; ``dL/dW_hh`` is one large matmul after the loop;
* on CUDA both loops are recorded as CUDA graphs and replayed (:mod:`rnnkit.scan.cuda_graph`).

``torch.nn.GRU``'s gate layout (``reset_after=True``). ``kernels="torch"`` does each step's gate
math in about eight torch ops forward and fifteen backward (any device; the per-step matmuls go
through :class:`~rnnkit.scan.step_matmul.StepMatmul`, oneDNN on CPUs where faster): on CPU
``"auto"`` uses it for the GRUs ``torch.nn.GRU`` has no kernel for (recurrent dropout, zoneout,
masks with gaps), ``implementation="engine"`` forces it. ``kernels="triton"`` (``implementation=
"triton"``) uses the Triton kernels, which ``"auto"`` picks on CUDA where triton is installed
(on an H100, recurrent dropout and zoneout trained at 1.3-1.7x cuDNN's plain GRU, where the
reference scan ran 0.1-0.2x: ``benchmarks/RESULTS.md``, "Speed on a GPU").
Both match the reference scan in float64 (``tests/test_gru_engine.py``; the Triton kernels through
Triton's interpreter on a CPU).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from ..cells.base import RecurrentCell, State
from ..cells.gru import GRUCell
from . import cuda_graph, engine_triton
from ._bptt import (
    check_constant_mask,
    eager_under_compile,
    first_order_only,
    needs_grad,
    recurrent_grad,
    without_autocast,
)
from .elementwise import tanh_for
from .recompute import recompute_requested
from .step_matmul import StepMatmul, cached_step_matmul, large_matmul, linear


def gru_engine_unavailable_reason(cell: RecurrentCell, device: torch.device, *, return_gates: bool = False,
                                  kernels: str = "torch") -> str | None:
    """Why the GRU engine with ``kernels`` (``"torch"`` or ``"triton"``) cannot run ``cell`` on ``device``, else ``None``."""
    if type(cell) is not GRUCell:
        return f"the GRU engine runs GRUCell only; got {type(cell).__name__}"
    if not cell.reset_after:
        return "the GRU engine runs reset_after=True (torch.nn.GRU's form) only; use implementation='reference'"
    if return_gates:
        return "gate activations are recorded only by the reference scan"
    if kernels == "torch":
        return None
    if kernels != "triton":
        return f"kernels must be 'torch' or 'triton', got {kernels!r}"
    if cell.weight_ih.dtype not in (torch.float32, torch.float64):
        return (f"implementation='triton' runs float32 or float64 weights, got {cell.weight_ih.dtype}; "
                "keep the weights in float32 (autocast still works around them)")
    return engine_triton.triton_unavailable_reason(device)


class _GRUEngine(torch.autograd.Function):
    """Time-major GRU over ``xw [T, B, 3H]`` (``W_ih x + b_ih``, blocks ``r, z, n``); see the module docstring."""

    @staticmethod
    def forward(ctx: FunctionCtx, xw: Tensor, w_hh: Tensor, b_hh: Tensor | None,  # type: ignore[override]
                h0: Tensor, rec_mask: Tensor | None, update_h: Tensor | None,
                out_mask: Tensor | None, triton: bool = True, recompute: bool = False) -> tuple[Tensor, Tensor]:
        recompute = recompute and not triton  # the Triton loops always keep their activations
        ctx.recompute = recompute  # type: ignore[attr-defined]
        inputs: cuda_graph.Inputs = {"xw": xw, "w_hh": w_hh, "b_hh": b_hh, "h0": h0, "rec": rec_mask,
                                     "uh": update_h}
        graphs = cuda_graph.graphs_enabled(xw.device)
        ctx.graphs = graphs  # type: ignore[attr-defined]  # decided here for the backward too
        ctx.triton = triton  # type: ignore[attr-defined]
        loop: Callable[..., cuda_graph.Outputs] = functools.partial(_forward_loop, triton=triton, recompute=recompute)
        res, _ = (cuda_graph.run_captured(("gru engine forward", triton, recompute), loop, inputs) if graphs
                  else (loop(**inputs), False))
        hs, gates, hw = res["hs"], res["gates"], res["hw"]
        assert hs is not None and gates is not None and hw is not None
        h_in = res["h_in"] if res["h_in"] is not None else hs
        steps = xw.shape[0]
        out = hs[1:] if out_mask is None else hs[1:] * out_mask
        if recompute:  # backward rebuilds each step's gates from xw_t and h_in[t] (one more matmul per step)
            gates, hw = xw, None  # type: ignore[assignment]  # xw in the gates' slot: [T, B, 3H] instead of 2x
        saved: tuple[Any, ...] = (gates, hw, hs, h_in, w_hh, b_hh, rec_mask, update_h, out_mask)  # None is allowed
        ctx.save_for_backward(*saved)
        return out, hs[steps].clone()

    @staticmethod
    @first_order_only
    @without_autocast
    def backward(ctx: Any, grad_out: Tensor | None, grad_h: Tensor | None) -> tuple[Tensor | None, ...]:
        gates, hw, hs, h_in, w_hh, b_hh, rec_mask, update_h, out_mask = ctx.saved_tensors
        steps, batch, three_h = gates.shape
        g_out = None if grad_out is None else (grad_out if out_mask is None else grad_out * out_mask).contiguous()
        gh = torch.zeros_like(hs[0]) if grad_h is None else grad_h
        if g_out is not None:
            gh = gh + g_out[steps - 1]
        inputs: cuda_graph.Inputs = {"gh": gh, "gout": g_out, "gates": gates, "hw": hw, "hs": hs, "w_hh": w_hh,
                                     "rec": rec_mask, "uh": update_h}
        if ctx.recompute:  # the gates' slot holds xw: rebuild each step's gates and hw from it and h_in
            inputs.update(h_in=h_in, b_hh=b_hh)
        loop: Callable[..., cuda_graph.Outputs] = functools.partial(_backward_loop, triton=ctx.triton,
                                                                    recompute=ctx.recompute)
        res, _ = (cuda_graph.run_captured(("gru engine backward", ctx.triton, ctx.recompute), loop, inputs)
                  if ctx.graphs and cuda_graph.graphs_enabled(gates.device) else (loop(**inputs), False))
        dxw, dhw, gh_0 = res["dxw"], res["dhw"], res["gh"]
        assert dxw is not None and dhw is not None and gh_0 is not None
        grad_w = large_matmul(dhw.view(steps * batch, three_h).t(), h_in[:steps].reshape(steps * batch, -1)) \
            if ctx.needs_input_grad[1] else None
        grad_b = dhw.sum((0, 1)) if b_hh is not None and ctx.needs_input_grad[2] else None
        return dxw, grad_w, grad_b, gh_0, None, None, None, None, None


def _forward_loop(xw: Tensor, w_hh: Tensor, b_hh: Tensor | None, h0: Tensor, rec: Tensor | None,
                  uh: Tensor | None, triton: bool, recompute: bool = False) -> cuda_graph.Outputs:
    """The forward loop; writes only tensors it allocates (it may be recorded as a CUDA graph).

    Returns ``hs`` ``[T+1, B, H]`` (``hs[0] = h0``), ``h_in`` (the matmul inputs ``h * rec``, or
    ``None`` when they are ``hs``), ``hw`` ``[T, B, 3H]`` and ``gates`` (``r, z, n``). With torch
    kernels only ``hw``'s ``n`` block is kept (all the backward reads) when the matmul's result
    arrives in a new tensor. With ``recompute`` (torch kernels) ``hw`` and ``gates`` hold one step,
    reused by all: the backward rebuilds them.
    """
    steps, batch, three_h = xw.shape
    hidden = three_h // 3
    hs = xw.new_empty(steps + 1, batch, hidden)
    hs[0] = h0
    h_in = xw.new_empty(steps + 1, batch, hidden) if rec is not None else hs
    if rec is not None:
        torch.mul(h0, rec, out=h_in[0])
    kept = 1 if recompute else steps
    hw = xw.new_empty(kept, batch, three_h)
    gates = xw.new_empty(kept, batch, three_h)
    xw_s, hw_s, g_s, h_s, hin_s = xw.unbind(0), hw.unbind(0), gates.unbind(0), hs.unbind(0), h_in.unbind(0)
    uh_s = uh.unbind(0) if uh is not None else ()
    if triton:
        w_t = w_hh.t()
        for t in range(steps):
            if b_hh is None:
                torch.mm(hin_s[t], w_t, out=hw_s[t])
            else:
                torch.addmm(b_hh, hin_s[t], w_t, out=hw_s[t])
            engine_triton.gru_forward_step(xw_s[t], hw_s[t], g_s[t], h_s[t], h_s[t + 1],
                                           hin_s[t + 1] if rec is not None else None,
                                           uh_s[t] if uh is not None else None, rec)
    else:
        project = StepMatmul(w_hh, b_hh, batch, calls=steps)
        hidden_n = hw[..., 2 * hidden:].unbind(0)
        rz_s, n_s = gates[..., :2 * hidden].unbind(0), gates[..., 2 * hidden:].unbind(0)
        xrz_s, xn_s = xw[..., :2 * hidden].unbind(0), xw[..., 2 * hidden:].unbind(0)
        h_cand = xw.new_empty(batch, hidden) if uh is not None else None
        tanh = tanh_for(h0)
        for t in range(steps):
            k = 0 if recompute else t
            pre = project(hin_s[t], out=hw_s[k])
            if pre is not hw_s[k] and not recompute:  # oneDNN's result: keep the n block for the backward
                hidden_n[k].copy_(pre[:, 2 * hidden:])
            rz = torch.add(xrz_s[t], pre[:, :2 * hidden], out=rz_s[k]).sigmoid_()
            n = torch.addcmul(xn_s[t], rz[:, :hidden], pre[:, 2 * hidden:], out=n_s[k])
            tanh(n, n)
            h_prev = h_s[t]
            target = h_s[t + 1] if h_cand is None else h_cand
            torch.sub(h_prev, n, out=target)
            torch.addcmul(n, rz[:, hidden:], target, out=target)  # (1 - z) n + z h_{t-1}
            if h_cand is not None:
                torch.lerp(h_prev, h_cand, uh_s[t], out=h_s[t + 1])
            if rec is not None:
                torch.mul(h_s[t + 1], rec, out=hin_s[t + 1])
    return {"hs": hs, "h_in": h_in if rec is not None else None, "hw": hw, "gates": gates}


def _backward_loop(gh: Tensor, gout: Tensor | None, gates: Tensor, hw: Tensor | None, hs: Tensor, w_hh: Tensor,
                   rec: Tensor | None, uh: Tensor | None, triton: bool, recompute: bool = False,
                   h_in: Tensor | None = None, b_hh: Tensor | None = None) -> cuda_graph.Outputs:
    """The backward loop; writes only tensors it allocates. Returns ``dxw``, ``dhw`` and ``gh`` (``dL/dh_0``).

    With ``recompute`` (torch kernels), ``gates`` holds ``xw`` and ``hw`` is ``None``: each step's
    ``hw = W_hh h_in[t] + b_hh`` and gates are rebuilt into one ``[B, 3H]`` buffer each, from the
    last step to the first.
    """
    steps, batch, three_h = gates.shape
    hidden = three_h // 3
    dxw, dhw = torch.empty_like(gates), torch.empty_like(gates)
    skip = hs.new_empty(batch, hidden)
    h_s, dxw_s, dhw_s = hs.unbind(0), dxw.unbind(0), dhw.unbind(0)
    if recompute:
        assert h_in is not None and not triton
        xw_s, hin_s = gates.unbind(0), h_in.unbind(0)
        project = StepMatmul(w_hh, b_hh, batch, calls=steps)
        gate_buf, hw_buf = hs.new_empty(batch, three_h), hs.new_empty(batch, three_h)
    else:
        assert hw is not None
        g_s, hw_s = gates.unbind(0), hw.unbind(0)
    gout_s = gout.unbind(0) if gout is not None else ()
    uh_s = uh.unbind(0) if uh is not None else ()
    gh = gh.contiguous()
    back = StepMatmul(w_hh.t(), None, batch, adds=True, calls=steps)
    step = engine_triton.gru_backward_step if triton else _torch_backward_step
    tanh = tanh_for(gh)
    for t in range(steps - 1, -1, -1):
        if recompute:  # r, z = sigmoid(xw_rz + hw_rz), n = tanh(xw_n + r hw_n), as the forward
            pre = project(hin_s[t], out=hw_buf)
            x_t = xw_s[t]
            torch.add(x_t[:, :2 * hidden], pre[:, :2 * hidden], out=gate_buf[:, :2 * hidden]).sigmoid_()
            n = torch.addcmul(x_t[:, 2 * hidden:], gate_buf[:, :hidden], pre[:, 2 * hidden:],
                              out=gate_buf[:, 2 * hidden:])
            tanh(n, n)
            g_t, hw_t = gate_buf, pre
        else:
            g_t, hw_t = g_s[t], hw_s[t]
        step(g_t, hw_t, h_s[t], gh, dxw_s[t], dhw_s[t], skip, gout_s[t - 1] if (gout_s and t) else None,
             uh_s[t] if uh_s else None)
        gh = recurrent_grad(skip, dhw_s[t], back, rec)
    return {"dxw": dxw, "dhw": dhw, "gh": gh}


def _torch_backward_step(gates: Tensor, hw: Tensor, h_prev: Tensor, gh: Tensor, dxw: Tensor, dhw: Tensor,
                         skip: Tensor, g_prev: Tensor | None, u_h: Tensor | None) -> None:
    """:func:`~rnnkit.scan.engine_triton.gru_backward_step` in torch ops (same arguments and results)::

        a_n' = dh (1 - z)(1 - n^2),  a_z' = dh (h_{t-1} - n) z (1 - z),  a_r' = a_n' hw_n r (1 - r)
        dxw = [a_r', a_z', a_n'],  dhw = [a_r', a_z', a_n' r],  skip = dh z (+ dL/dh_t - dh) (+ g_prev)

    with ``dh = dL/dh_t * u_h`` (what reaches the cell).
    """
    hidden = h_prev.shape[1]
    r, z, n = gates[:, :hidden], gates[:, hidden:2 * hidden], gates[:, 2 * hidden:]
    da_r, da_z, da_n = dxw[:, :hidden], dxw[:, hidden:2 * hidden], dxw[:, 2 * hidden:]
    dh = gh if u_h is None else gh * u_h
    torch.mul(dh, z, out=skip)  # h_{t-1}'s own share of h_t
    torch.sub(dh, skip, out=da_n).mul_(torch.addcmul(n.new_ones(()), n, n, value=-1))  # dh (1 - z)(1 - n^2)
    torch.sub(h_prev, n, out=da_z).mul_(dh).mul_(torch.addcmul(z, z, z, value=-1))
    torch.mul(da_n, hw[:, 2 * hidden:], out=da_r).mul_(torch.addcmul(r, r, r, value=-1))
    dhw[:, :2 * hidden].copy_(dxw[:, :2 * hidden])
    torch.mul(da_n, r, out=dhw[:, 2 * hidden:])
    if u_h is not None:
        skip.add_(gh).sub_(dh)  # what the update weights let skip the cell
    if g_prev is not None:
        skip.add_(g_prev)


def _gru_inference(cell: GRUCell, xw: Tensor, h0: Tensor, rec: Tensor | None, uh: Tensor | None,
                   out_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """The forward when no gradient is needed: nothing saved, each output written in place.

    Per step one matmul (cached on the cell, see :func:`~rnnkit.scan.step_matmul.cached_step_matmul`)
    and six element-wise ops (eight with update weights or a recurrent mask) on ``[B, 3H]`` buffers
    made once.
    """
    steps, batch, three_h = xw.shape
    hidden = three_h // 3
    recur = cached_step_matmul(cell, cell.weight_hh.detach(),
                               None if cell.bias_hh is None else cell.bias_hh.detach(), batch)
    out = xw.new_empty(steps, batch, hidden)
    hw, rz, n = xw.new_empty(batch, three_h), xw.new_empty(batch, 2 * hidden), xw.new_empty(batch, hidden)
    r, z = rz[:, :hidden], rz[:, hidden:]
    h_cand = xw.new_empty(batch, hidden) if uh is not None else None
    h_in = xw.new_empty(batch, hidden) if rec is not None else None
    xrz_s, xn_s = xw[..., :2 * hidden].unbind(0), xw[..., 2 * hidden:].unbind(0)
    uh_s = uh.unbind(0) if uh is not None else ()
    h = h0
    tanh = tanh_for(n)
    for t, out_t in enumerate(out.unbind(0)):
        pre = recur(h if rec is None or h_in is None else torch.mul(h, rec, out=h_in), out=hw)
        torch.add(xrz_s[t], pre[:, :2 * hidden], out=rz).sigmoid_()
        tanh(torch.addcmul(xn_s[t], r, pre[:, 2 * hidden:], out=n), n)
        target = out_t if h_cand is None else h_cand
        torch.addcmul(n, z, torch.sub(h, n, out=target), out=target)  # (1 - z) n + z h_{t-1}
        h = out_t if h_cand is None else torch.lerp(h, h_cand, uh_s[t], out=out_t)
    h_n = h.clone()
    if out_mask is not None:
        out.mul_(out_mask)
    return out, h_n


@eager_under_compile
def gru_engine_scan(cell: RecurrentCell, x: Tensor, state: State, *, mask: Tensor | None = None,
                    reverse: bool = False, recurrent_mask: Tensor | None = None, zoneout_rate: float = 0.0,
                    training: bool = False, return_gates: bool = False,
                    kernels: str = "torch") -> tuple[Tensor, State, None]:
    """Run a :class:`~rnnkit.cells.GRUCell` over ``x`` ``[B, T, I]`` on the GRU engine.

    Arguments and results as in :func:`~rnnkit.scan.reference_scan`; raises ValueError with
    :func:`gru_engine_unavailable_reason`'s reason when it cannot run. In training, zoneout draws
    its masks as the LSTM engine does: same distribution as the reference scan, other samples.
    """
    from . import engine  # noqa: PLC0415  # its update weights, looked up at call time (tests patch them)

    reason = gru_engine_unavailable_reason(cell, x.device, return_gates=return_gates, kernels=kernels)
    if reason is not None:
        raise ValueError(reason)
    check_constant_mask(recurrent_mask)
    assert isinstance(cell, GRUCell)
    if torch.is_autocast_enabled(x.device.type):  # the out= buffers need one dtype: run in the weights' dtype
        dtype = cell.weight_ih.dtype
        with torch.autocast(x.device.type, enabled=False):
            return gru_engine_scan(cell, x.to(dtype), tuple(s.to(dtype) for s in state), mask=mask, reverse=reverse,
                                   recurrent_mask=None if recurrent_mask is None else recurrent_mask.to(dtype),
                                   zoneout_rate=zoneout_rate, training=training, kernels=kernels)
    batch, steps = x.shape[0], x.shape[1]
    if steps == 0:
        return x.new_zeros(batch, 0, cell.output_size), state, None
    x_tm = x.transpose(0, 1)
    if reverse:  # run the flipped sequence forwards; autograd flips the gradients back
        x_tm = x_tm.flip(0)
        mask = None if mask is None else mask.flip(1)
    update_h, _, out_mask = engine._update_weights(mask, zoneout_rate, training, steps, batch, (cell.hidden_size,),
                                                   x)
    xw = linear(x_tm, cell.weight_ih, cell.bias_ih).contiguous()
    (h0,) = state
    if not needs_grad(cell, x, h0, recurrent_mask) and kernels == "torch":
        out, h_n = _gru_inference(cell, xw, h0, recurrent_mask, update_h, out_mask)
    else:
        out, h_n = _GRUEngine.apply(xw, cell.weight_hh, cell.bias_hh, h0.contiguous(), recurrent_mask, update_h,
                                    out_mask, kernels == "triton", recompute_requested())
    if reverse:
        out = out.flip(0)
    return out.transpose(0, 1), (h_n,), None
