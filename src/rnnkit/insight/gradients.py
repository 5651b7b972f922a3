"""Seeing vanishing and exploding gradients in recurrent networks.

:func:`gradient_diagnostics` runs one forward and backward pass of a model (or a bare recurrent
layer) on a batch and measures, for the model's first ``rnnkit.nn`` recurrent layer:

* ``grad_norms[t] = mean_b ||dL/dh_t||_2``: the total derivative of the loss with respect to the
  hidden state at step ``t`` (all paths: the read-out at ``t`` and every later step). The layer is
  unrolled step by step, in evaluation mode (the fused kernel hides its states; zoneout takes its
  inference form, as in the layer's own scan), each ``h_t`` is kept with ``retain_grad()``, and
  the gradients are read after ``loss.backward()``; norms are taken in float64. With padding
  (``lengths=``/``mask=``), the mean is over the sequences whose step ``t`` is real, and steps
  after the last real step of every sequence are dropped: padding does not change the report.
* Step Jacobians ``J_t = ds_t / ds_{t-1}`` of the full state ``s`` (``h``; for LSTMs ``[h, c]``),
  computed with ``torch.func.jacrev`` for the first ``jacobian_samples`` sequences (vectorised
  over steps), and their norm, **spectral** (largest singular value, the default) or
  **Frobenius** (``norm=``). Reported per step, as the *product of the per-step norms*
  ``prod_{k>t} ||J_k||`` (an upper bound, in log10) and as the exact norm of the product
  ``||ds_{T-1}/ds_t||`` (float64, rescaled at every step; ``inf`` beyond float64's range). Both
  norms are sub-multiplicative, so the exact norm never exceeds the bound. At a padded step the
  layer keeps its state, so its Jacobian is the identity, and each value is a mean over the
  sequences real at that step.
* Gate saturation from ``return_gates``: the fraction of sigmoid gate values ``< 0.05`` or
  ``> 0.95`` and of tanh values with ``|x| > 0.95`` (LSTM input/forget/output and the candidate;
  GRU reset/update and candidate; a tanh RNN's ``tanh(pre-activation)``). Which activation each
  entry went through is read from the cell (:func:`gate_activations`): unbounded ones cannot
  saturate and are left out, and the report names them (``unbounded_gates``): the candidate of
  minGRU/minLSTM, ``g(x) = x + 0.5`` for ``x >= 0`` and ``sigmoid(x)`` below (or the identity),
  and a relu RNN's activation.
* The effective memory horizon, by this rule: the smallest lag ``k >= 1`` such that
  ``grad_norms[T-1-k] < threshold * grad_norms[T-1]`` (``threshold = 1e-3``), i.e. how far back
  from the last step the gradient survives above one thousandth of its value at the last step.
  ``None`` when it never falls that low within the sequence. The rule is meaningful for losses
  read at the last step (the adding problem, sequence classification); with a loss at every
  step each ``h_t`` also gets a direct gradient.

Pascanu et al. 2013 ("On the difficulty of training recurrent neural networks") is the reference
for the Jacobian products and for gradient clipping (:func:`clipping_demo`).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.recurrent import _RecurrentCore
from ..scan.reference import zoneout
from .memory import check_unique, clip_norm_or_none, json_safe

SIGMOID_GATES = ("input", "forget", "output", "reset", "update")
TANH_GATES = ("cell_candidate", "candidate")
BOUNDED = ("sigmoid", "tanh")  # activations that can saturate
UNBOUNDED = {"g": "g(x) = x + 0.5 for x >= 0, sigmoid(x) below: unbounded above",
             "linear": "the identity: unbounded", "relu": "relu: unbounded above"}
NORMS = ("spectral", "frobenius")
HORIZON_RULE = ("smallest lag k >= 1 with ||dL/dh_(T-1-k)|| < {threshold:g} x ||dL/dh_(T-1)|| "
                "(None: never within the sequence)")


# -- saturation --------------------------------------------------------------------------------
def gate_activations(cell: Any, names: Iterable[str] | None = None) -> dict[str, str | None]:
    """The activation behind each ``return_gates`` entry of ``cell``, read from the cell itself.

    ``"sigmoid"`` for gates in ``(0, 1)`` (input, forget, output, reset, update; minLSTM's
    normalised gates), for candidates the cell's own activation: ``"tanh"`` (LSTM, GRU), or
    minGRU/minLSTM's ``candidate_activation`` (``"g"``, ``"linear"``), for an RNN's
    ``pre_activation`` its ``nonlinearity`` (``"tanh"``, ``"relu"``); ``None`` for entries that
    are not activations (the LSTM cell state). Only ``"sigmoid"`` and ``"tanh"`` can saturate.
    """
    candidate = str(getattr(cell, "candidate_activation", "tanh"))
    nonlinearity = str(getattr(cell, "nonlinearity", "tanh"))
    out: dict[str, str | None] = {}
    for name in (getattr(cell, "gate_names", ()) if names is None else names):
        if name in SIGMOID_GATES:
            out[name] = "sigmoid"
        elif name in TANH_GATES:
            out[name] = candidate
        elif name == "pre_activation":
            out[name] = nonlinearity
        else:
            out[name] = None
    return out


def saturation_fractions(gates: Mapping[str, Tensor], *, nonlinearity: str = "tanh", mask: Tensor | None = None,
                         low: float = 0.05, high: float = 0.95, cell: Any = None,
                         activations: Mapping[str, str | None] | None = None) -> dict[str, float]:
    """Fraction of saturated values per gate of one layer's ``return_gates`` dict.

    Args:
        gates: gate name -> ``[B, T, H]`` activations (``rnnkit.nn`` ``return_gates`` output for one layer).
        nonlinearity: the RNN cell's activation, used for its ``pre_activation`` entry (when
            neither ``cell`` nor ``activations`` is given).
        mask: optional ``[B, T]`` bool, ``True`` on real steps (padded steps are not counted).
        low, high: a sigmoid value is saturated below ``low`` or above ``high``; a tanh value
            when ``|x| > high``.
        cell: the cell that produced ``gates``: each entry's activation is read from it
            (:func:`gate_activations`); needed for minGRU/minLSTM, whose candidate is unbounded.
        activations: gate name -> ``"sigmoid"``, ``"tanh"`` or anything else (left out), instead
            of ``cell``.

    Returns:
        gate name -> fraction in ``[0, 1]``; entries that are not bounded activations (the LSTM
        cell state, a relu RNN's pre-activation, the minGRU/minLSTM candidate) are left out.
    """
    if activations is None:
        activations = gate_activations(cell, gates) if cell is not None else \
            gate_activations(_Activation(nonlinearity), gates)
    out: dict[str, float] = {}
    for name, values in gates.items():
        kind = activations.get(name)
        if kind == "sigmoid":
            saturated = (values < low) | (values > high)
        elif kind == "tanh" and name == "pre_activation":
            saturated = torch.tanh(values).abs() > high
        elif kind == "tanh":
            saturated = values.abs() > high
        else:
            continue
        if mask is not None:
            valid = mask.unsqueeze(-1).expand_as(saturated)
            total = int(valid.sum())
            out[name] = float((saturated & valid).sum()) / total if total else 0.0
        else:
            out[name] = float(saturated.float().mean()) if saturated.numel() else 0.0
    return out


@dataclass
class _Activation:
    """Stands in for a cell when only an RNN's ``nonlinearity`` is known."""

    nonlinearity: str


def memory_horizon(grad_norms: Sequence[float], threshold: float = 1e-3) -> int | None:
    """The effective memory horizon of :data:`HORIZON_RULE` from per-step gradient norms."""
    if not grad_norms:
        return None
    reference = grad_norms[-1]
    if not reference > 0 or not math.isfinite(reference):
        return None
    last = len(grad_norms) - 1
    for lag in range(1, len(grad_norms)):
        if grad_norms[last - lag] < threshold * reference:
            return lag
    return None


# -- tracing the recurrence --------------------------------------------------------------------
@dataclass
class _Trace:
    """What one unrolled layer/direction left behind: states per step in processing order."""

    hidden: list[Tensor] = field(default_factory=list)  # h_t as used by the next step (grad retained)
    prev_states: list[tuple[Tensor, ...]] = field(default_factory=list)  # s_{t-1}, detached
    inputs: list[Tensor] = field(default_factory=list)  # projected input at t, detached
    order: list[int] = field(default_factory=list)  # time index of each processed step
    gates: dict[str, Tensor] | None = None
    cell: Any = None
    zoneout: float = 0.0  # the layer's zoneout rate (its inference form, a fixed mix, is part of each step)


def _traced_scan(cell: Any, x: Tensor, state: tuple[Tensor, ...], mask: Tensor | None, reverse: bool,
                 trace: _Trace, zoneout_rate: float = 0.0) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The reference scan (in evaluation mode), keeping every hidden state in the graph with ``retain_grad``.

    Zoneout takes its inference form, ``rate * s_(t-1) + (1 - rate) * s_t``, as the layer's own scan does.
    """
    steps = x.shape[1]
    if steps == 0:
        raise ValueError("the diagnosed batch has no time step (sequence length T = 0): there is no gradient "
                         "through time to measure; give sequences of at least one step")
    inputs = cell.project_input(x).unbind(1)  # T x [B, G]
    valid = mask.unsqueeze(-1).unbind(1) if mask is not None else None
    outputs: list[Tensor] = [x] * steps
    gate_steps: list[dict[str, Tensor]] = [{}] * steps
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        trace.prev_states.append(tuple(s.detach() for s in state))
        trace.inputs.append(inputs[t].detach())
        trace.order.append(t)
        out, new, gates = cell.recur(inputs[t], state, return_gates=True)
        if zoneout_rate:
            new = zoneout(new, state, zoneout_rate, False)
        if valid is not None:
            keep = valid[t]
            new = tuple(torch.where(keep, n, s) for n, s in zip(new, state))
            out = new[0] * keep
            gates = {k: v * keep for k, v in (gates or {}).items()}
        else:
            out = new[0]
        if new[0].requires_grad:
            new[0].retain_grad()
        trace.hidden.append(new[0])
        state = new
        outputs[t] = out
        gate_steps[t] = gates or {}
    trace.gates = {k: torch.stack([g[k] for g in gate_steps], 1).detach() for k in gate_steps[0]} if steps else {}
    trace.cell = cell
    trace.zoneout = zoneout_rate
    return torch.stack(outputs, 1), state


def _traced_run(layer: _RecurrentCore, traces: dict[str, _Trace]) -> Callable[..., Any]:
    """A replacement for ``layer._run`` that unrolls every layer and direction with tracing."""

    def run(x: Tensor, x_bf: Tensor, hx: Any, mask: Tensor | None, return_gates: bool) -> Any:
        layer._bind()
        batch = x_bf.shape[0]
        if mask is not None:  # as the layer's own scan: padding never reaches the math (NaN there would leak)
            x_bf = torch.where(mask.unsqueeze(-1).bool(), x_bf, x_bf.new_zeros(()))
        initial = layer._zeros(batch, x_bf) if hx is None else hx
        parts = initial if isinstance(initial, tuple) else (initial,)
        finals: list[tuple[Tensor, ...]] = []
        layer_input = x_bf
        for depth in range(layer.num_layers):
            outputs = []
            for direction in range(layer.num_directions):
                index = depth * layer.num_directions + direction
                key = f"l{depth}{'_reverse' if direction else ''}"
                traces[key] = _Trace()
                out, state = _traced_scan(layer._cells[index], layer_input, tuple(p[index] for p in parts), mask,
                                          direction == 1, traces[key], float(layer.zoneout or 0.0))
                outputs.append(out)
                finals.append(state)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)
        stacked = tuple(torch.stack([f[k] for f in finals], 0) for k in range(len(parts)))
        h_n = stacked if len(stacked) > 1 else stacked[0]
        gates = {k: t.gates or {} for k, t in traces.items()} if return_gates else None
        traces["_mask"] = _Trace(gates={"mask": mask} if mask is not None else None)
        return layer_input, h_n, gates

    return run


def find_recurrent_layer(module: nn.Module, name: str | None = None) -> tuple[str, _RecurrentCore]:
    """The first ``rnnkit.nn`` recurrent layer inside ``module`` (or the one called ``name``)."""
    for sub_name, sub in module.named_modules():
        if isinstance(sub, _RecurrentCore) and (name is None or sub_name == name):
            return sub_name or "<layer>", sub
    if name is not None:
        raise ValueError(f"no rnnkit recurrent layer named {name!r} in {type(module).__name__}")
    raise ValueError(f"{type(module).__name__} holds no rnnkit.nn recurrent layer (RNN, LSTM, GRU, Recurrent); "
                     "diagnostics need one (convert torch.nn layers with rnnkit.nn.LSTM(...).load_state_dict)")


# -- the report --------------------------------------------------------------------------------
@dataclass
class GradientReport:
    """Gradient diagnostics of one model on one batch (see the module docstring for definitions).

    Lists indexed by time step ``t = 0..T-1``; ``jacobian_step_norms[t]`` is ``||ds_t/ds_{t-1}||``
    (``t >= 1``; ``t = 0`` is ``nan``), ``jacobian_product_log10[t]`` is
    ``log10 mean_b prod_{k=t+1}^{T-1} ||J_k||`` and ``jacobian_product_norm[t]`` is ``||ds_{T-1}/ds_t||``
    (first layer, forward direction).
    """

    label: str
    layer: str
    cell: str
    steps: int
    loss: float
    grad_norms: list[float]
    grad_norms_by_layer: dict[str, list[float]]
    norm: str
    jacobian_step_norms: list[float]
    jacobian_product_log10: list[float]
    jacobian_product_norm: list[float]
    saturation: dict[str, dict[str, float]]
    saturation_overall: float
    horizon: int | None
    horizon_rule: str
    param_grad_norm: float
    clip_norm: float | None = None
    unbounded_gates: dict[str, str] = field(default_factory=dict)  # gate -> its activation, left out of saturation

    @property
    def clipped_grad_norm(self) -> float:
        """The parameter-gradient norm after clipping to ``clip_norm`` (the norm itself without it)."""
        if self.clip_norm is None or not math.isfinite(self.param_grad_norm):
            return self.param_grad_norm if self.clip_norm is None else float(self.clip_norm)
        return min(self.param_grad_norm, self.clip_norm)

    def summary(self) -> dict[str, Any]:
        first, last = self.grad_norms[0], self.grad_norms[-1]
        return {"label": self.label, "cell": self.cell, "steps": self.steps, "loss": self.loss,
                "grad_norm_last": last, "grad_norm_first": first,
                "ratio_first_to_last": first / last if last > 0 else math.nan,
                "horizon": self.horizon, "saturation": self.saturation_overall,
                "jacobian_product_norm_first": self.jacobian_product_norm[0] if self.jacobian_product_norm else None,
                "param_grad_norm": self.param_grad_norm,
                "clipped_grad_norm": self.clipped_grad_norm if self.clip_norm is not None else None}

    def to_json(self) -> dict[str, Any]:
        """The report as strict JSON values: non-finite floats, also inside the per-step lists
        (``jacobian_step_norms[0]`` is always ``nan``), become strings (:func:`json_safe`)."""
        return json_safe(asdict(self))  # type: ignore[no-any-return]


def _cell_name(layer: _RecurrentCore) -> str:
    spec = layer.cell_spec
    return str(getattr(spec, "__name__", spec))


def _default_loss(is_layer: bool, layer: _RecurrentCore) -> Callable[[nn.Module, Any], Tensor]:
    def loss(model: nn.Module, batch: Any) -> Tensor:
        if is_layer:
            x = batch[0] if isinstance(batch, list | tuple) else batch
            out = model(x)[0]
            last = out[:, -1] if layer.batch_first and x.dim() == 3 else out[-1]  # unbatched: [T, H]
            return last.sum()  # dL/dh_(T-1) = 1: the gradient's decay back in time is the layer's own
        if isinstance(batch, Tensor):
            return model(batch).sum()
        x, y = batch[0], batch[1]
        pred = model(x)
        if not y.dtype.is_floating_point:
            return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), y.reshape(-1))
        if pred.shape == y.shape:
            return F.mse_loss(pred, y)
        raise ValueError(f"cannot guess a loss for predictions {list(pred.shape)} and targets {list(y.shape)}; "
                         "pass loss_fn=(model, batch) -> scalar")
    return loss


JACOBIAN_CHUNK_ELEMENTS = 2**22  # Jacobian entries per vectorised call (bounds memory on long sequences)


def _matrix_norm(m: Tensor, norm: str) -> Tensor:
    """Spectral or Frobenius norm of each ``[..., S, S]`` matrix; ``nan`` for a matrix with a
    non-finite entry (the SVD refuses those)."""
    finite = torch.isfinite(m).flatten(-2).all(-1)
    values = torch.linalg.matrix_norm(torch.where(finite[..., None, None], m, m.new_zeros(())),
                                      ord=2 if norm == "spectral" else "fro")
    return torch.where(finite, values, values.new_full((), math.nan))


def _jacobian_norms(trace: _Trace, samples: int, steps: int, real: Tensor | None,
                    norm: str) -> tuple[Tensor, Tensor, Tensor]:
    """Step-Jacobian norms of the first ``samples`` sequences of a forward trace, float64.

    Returns ``(step [T, n], log10_exact [T, n], valid [T, n])``: ``step[t] = ||J_t||`` with
    ``J_t = ds_t/ds_(t-1)`` (row 0 ``nan``), ``log10_exact[t] = log10 ||ds_(T-1)/ds_t||``, and
    whether step ``t`` of each sequence is real. At a padded step the layer keeps its state, so
    ``J_t`` is the identity there. The Jacobians come from one vectorised ``jacrev`` call per chunk
    of steps (chunks walk back from the end, carrying the product, so memory stays bounded); the
    product is rescaled after every step, so neither overflow nor underflow stops it.
    """
    cell, rate = trace.cell, trace.zoneout
    sizes = [s.shape[-1] for s in trace.prev_states[0]]
    total = sum(sizes)
    n = min(samples, trace.inputs[0].shape[0])
    device = trace.inputs[0].device

    def step(xp: Tensor, flat: Tensor) -> Tensor:
        parts = tuple(p.unsqueeze(0) for p in torch.split(flat, sizes))
        _, new, _ = cell.recur(xp.unsqueeze(0), parts)
        if rate:
            new = zoneout(new, parts, rate, False)
        return torch.cat([s.squeeze(0) for s in new])

    jac_fn = torch.func.vmap(torch.func.jacrev(step, argnums=1))
    valid = (real[:n, :steps].T.to(device) if real is not None else
             torch.ones(steps, n, dtype=torch.bool, device=device))
    eye = torch.eye(total, dtype=torch.float64, device=device)
    step_norms = torch.full((steps, n), math.nan, dtype=torch.float64, device=device)
    log_exact = torch.zeros(steps, n, dtype=torch.float64, device=device)
    product = eye.expand(n, total, total).clone()  # ds_(T-1)/ds_t, rescaled by 10^scale
    scale = torch.zeros(n, dtype=torch.float64, device=device)
    chunk = max(1, JACOBIAN_CHUNK_ELEMENTS // (n * total * total))
    stop = steps
    with torch.no_grad():
        while stop > 0:
            begin = max(0, stop - chunk)
            xp = torch.stack([trace.inputs[t][:n] for t in range(begin, stop)])  # [c, n, G]
            prev = torch.stack([torch.cat([s[:n] for s in trace.prev_states[t]], -1) for t in range(begin, stop)])
            jac = jac_fn(xp.flatten(0, 1), prev.flatten(0, 1)).view(stop - begin, n, total, total).double()
            jac = torch.where(valid[begin:stop, :, None, None], jac, eye)
            step_norms[begin:stop] = _matrix_norm(jac, norm)
            products = []
            for t in range(stop - 1, begin - 1, -1):  # each product needs the one after it: sequential
                products.append(product)
                log_exact[t] = scale
                product = product @ jac[t - begin]
                size = product.abs().amax((-2, -1)).clamp_min(1e-300)
                product = product / size[:, None, None]
                scale = scale + torch.log10(size)
            norms = _matrix_norm(torch.stack(products[::-1]), norm)  # [c, n], time order
            log_exact[begin:stop] += torch.log10(norms)
            stop = begin
    step_norms[0] = math.nan  # no previous step inside the sequence
    return step_norms, log_exact, valid


def _masked_mean(values: Tensor, valid: Tensor, dim: int = -1) -> Tensor:
    """Mean over ``dim`` of the ``valid`` entries (``nan`` where none is)."""
    count = valid.sum(dim)
    total = torch.where(valid, values, values.new_zeros(())).sum(dim)
    return torch.where(count > 0, total / count.clamp_min(1), values.new_full((), math.nan))


def gradient_diagnostics(model_or_layer: nn.Module, batch: Any, *,
                         loss_fn: Callable[[nn.Module, Any], Tensor] | None = None, norm: str = "spectral",
                         jacobians: bool = True, jacobian_samples: int = 4, threshold: float = 1e-3,
                         clip_norm: float | None = None, layer: str | None = None,
                         label: str | None = None) -> GradientReport:
    """Measure how gradients flow back in time through a model's recurrent layer on one batch.

    Args:
        model_or_layer: an ``rnnkit.nn`` recurrent layer, or any model containing one (the first
            one found, or the submodule called ``layer``, is diagnosed).
        batch: for a layer, its input tensor (in the layer's layout); for a model, what
            ``loss_fn`` takes (default: ``(x, y)``, cross-entropy for integer ``y``, MSE for float).
        loss_fn: ``(model, batch) -> scalar``. Default for a bare layer: the sum of its output at
            the last step, so ``dL/dh_(T-1)`` is all ones.
        norm: ``"spectral"`` or ``"frobenius"`` for the Jacobian norms.
        jacobians: compute the step Jacobians (skip for long sequences with large states).
        jacobian_samples: sequences of the batch used for the Jacobians.
        threshold: the memory-horizon threshold (``1e-3``).
        clip_norm: also report the parameter-gradient norm after clipping to this value
            (``None`` or ``0``: no clipping; negative values are refused).
        layer: name of the recurrent submodule to diagnose.
        label: name of this report (default: the cell name).

    Returns:
        A :class:`GradientReport`. The model's parameter gradients, train/eval mode and forward
        are restored afterwards; dropout is off during the pass (eval mode).
    """
    if norm not in NORMS:
        raise ValueError(f"norm (--norm) must be one of {', '.join(NORMS)}, got {norm!r}")
    if jacobians and not jacobian_samples >= 1:
        raise ValueError(f"jacobian_samples must be a whole number >= 1 (or jacobians=False), got {jacobian_samples!r}")
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a finite number > 0 (the horizon rule compares norms with "
                         f"threshold x ||dL/dh_(T-1)||), got {threshold:g}")
    clip_norm = clip_norm_or_none(clip_norm)
    is_layer = isinstance(model_or_layer, _RecurrentCore)
    name, rec = ("<layer>", model_or_layer) if is_layer else find_recurrent_layer(model_or_layer, layer)
    assert isinstance(rec, _RecurrentCore)
    loss_fn = loss_fn or _default_loss(is_layer, rec)
    params = [p for p in model_or_layer.parameters() if p.requires_grad]
    saved_grads = [p.grad for p in params]
    modes = [(m, m.training) for m in model_or_layer.modules()]  # each submodule's own mode (frozen parts stay eval)
    carried = getattr(rec, "state", None)  # a stateful layer's carried state is put back afterwards
    traces: dict[str, _Trace] = {}
    model_or_layer.eval()
    for p in params:
        p.grad = None
    object.__setattr__(rec, "_run", _traced_run(rec, traces))
    try:
        with torch.enable_grad():
            loss = loss_fn(model_or_layer, batch)
            if loss.dim() != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {list(loss.shape)}")
            if not bool(torch.isfinite(loss.detach())):
                if not all(bool(torch.isfinite(p).all()) for p in model_or_layer.parameters()):
                    raise ValueError("the model's weights hold NaN or inf (did training diverge?): there are no "
                                     "gradients to diagnose; train again, e.g. with a lower learning rate or "
                                     "gradient clipping")
                raise ValueError(f"the loss on the diagnosed batch is {float(loss.detach())} with finite weights: "
                                 "the data holds NaN or inf values (or the model overflows on them); clean the "
                                 "data or choose other samples")
            loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        param_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))\
            if grads else 0.0
    finally:
        object.__delattr__(rec, "_run")
        if getattr(rec, "stateful", False):
            rec.state = carried
        for p, g in zip(params, saved_grads):
            p.grad = g
        for module, mode in modes:
            module.training = mode
    mask_trace = traces.pop("_mask", None)
    mask = mask_trace.gates["mask"] if mask_trace is not None and mask_trace.gates else None
    if not traces or not traces["l0"].hidden:
        raise ValueError(f"the recurrent layer {name} was not called by loss_fn (or saw an empty sequence)")

    # ||dL/dh_t|| per sequence, in float64 (a float32 norm squares entries below 1e-19 to zero), averaged
    # over the sequences whose step t is real; steps after the last real one of any sequence are dropped
    real = mask.bool() if mask is not None else None
    present = real.any(0) if real is not None else None
    steps = int(present.nonzero().max()) + 1 if present is not None and bool(present.any()) else \
        (len(traces["l0"].hidden) if present is None else 0)
    if steps == 0:
        raise ValueError("the diagnosed batch has no real step (every sequence is all padding)")
    by_layer: dict[str, list[float]] = {}
    for key, trace in traces.items():
        h_grads = torch.stack([h.grad if h.grad is not None else torch.zeros_like(h) for h in trace.hidden], 1)
        per = torch.zeros(h_grads.shape[0], len(trace.order), dtype=torch.float64, device=h_grads.device)
        per[:, torch.tensor(trace.order, device=h_grads.device)] = torch.linalg.vector_norm(h_grads.double(), dim=-1)
        valid = real.to(per.device) if real is not None else torch.ones_like(per, dtype=torch.bool)
        by_layer[key] = _masked_mean(per, valid, 0)[:steps].tolist()
    main = traces["l0"]
    saturation = {key: saturation_fractions(t.gates or {}, cell=t.cell, mask=mask) for key, t in traces.items()}
    fractions = [v for per in saturation.values() for v in per.values()]
    unbounded = {name: kind for name, kind in gate_activations(main.cell, main.gates or {}).items()
                 if kind is not None and kind not in BOUNDED}

    step_norms: list[float] = [math.nan] * steps
    bound: list[float] = [math.nan] * steps  # not measured (jacobians=False): nan, shown as n/a
    exact: list[float] = [math.nan] * steps
    if jacobians and steps:
        # forward direction: processing order = time order; means over the sequences real at each step
        per_step, log_exact, valid = _jacobian_norms(main, jacobian_samples, steps, real, norm)
        step_norms = _masked_mean(per_step, valid).tolist()
        step_norms[0] = math.nan
        logs = torch.where(valid, torch.log10(per_step.clamp_min(1e-300)), per_step.new_zeros(()))
        logs[0] = 0.0  # J_0 is not part of any product ds_(T-1)/ds_t
        # suffix[t] = sum_{k>t} log10 ||J_k||; the mean over samples of the products, in log10 (logsumexp:
        # the products overflow floats)
        suffix = torch.cat([logs.flip(0).cumsum(0).flip(0)[1:], logs.new_zeros(1, logs.shape[1])])
        ln10 = math.log(10)
        lse = torch.logsumexp(torch.where(valid, suffix * ln10, suffix.new_full((), -math.inf)), -1)
        bound = torch.where(valid.any(-1), (lse - torch.log(valid.sum(-1).clamp_min(1))) / ln10,
                            lse.new_full((), math.nan)).tolist()
        exact = _masked_mean(torch.pow(10.0, log_exact), valid).tolist()
    grad_norms = by_layer["l0"]
    return GradientReport(
        label=label or _cell_name(rec), layer=name, cell=_cell_name(rec), steps=steps, loss=float(loss.detach()),
        grad_norms=grad_norms, grad_norms_by_layer=by_layer, norm=norm if jacobians else "none",
        jacobian_step_norms=step_norms, jacobian_product_log10=bound, jacobian_product_norm=exact,
        saturation=saturation, saturation_overall=sum(fractions) / len(fractions) if fractions else math.nan,
        horizon=memory_horizon(grad_norms, threshold), horizon_rule=HORIZON_RULE.format(threshold=threshold),
        param_grad_norm=param_norm, clip_norm=clip_norm, unbounded_gates=unbounded)


# -- exploding gradients and clipping ----------------------------------------------------------
def scale_recurrent_weights(module: nn.Module, scale: float, seed: int = 0) -> nn.Module:
    """Set every ``weight_hh`` to ``scale`` x a random orthogonal matrix per gate block (all singular
    values ``= scale``): ``scale > 1`` makes a plain RNN's gradients explode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in module.named_parameters():
            if "weight_hh" not in pname:
                continue
            rows, cols = p.shape
            for start in range(0, rows, cols):
                q, r = torch.linalg.qr(torch.randn(cols, cols, generator=generator, dtype=torch.float64))
                q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
                p[start:start + cols] = (scale * q).to(p.dtype)
    return module


def clipping_demo(cell: str = "rnn", *, length: int = 50, scale: float = 3.0, clip_norm: float = 1.0,
                  steps: int = 30, learning_rate: float = 0.05, batch_size: int = 32, hidden_size: int = 32,
                  seed: int = 0) -> dict[str, Any]:
    """Train the adding problem from an exploding initialisation (``weight_hh = scale x orthogonal``)
    with plain SGD, once without and once with gradient clipping, from the same weights and batches.

    Returns:
        ``{"without": {...}, "with": {...}}``, each with per-step ``loss`` and ``grad_norm`` lists
        (the norm before clipping) and ``diverged`` (a non-finite loss or one above 1e3).
    """
    from .memory import MemoryModel, make_task, task_loss

    if clip_norm_or_none(clip_norm) is None:
        raise ValueError(f"the clipping demo needs a clip norm > 0, got {clip_norm}")

    task = make_task("adding")
    torch.manual_seed(seed)
    initial = scale_recurrent_weights(MemoryModel(task, cell, hidden_size), scale, seed).state_dict()
    results: dict[str, Any] = {}
    for key, clip in (("without", None), ("with", clip_norm)):
        model = MemoryModel(task, cell, hidden_size)
        model.load_state_dict(initial)
        optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
        generator = torch.Generator().manual_seed(seed)
        losses: list[float] = []
        norms: list[float] = []
        for _ in range(steps):
            x, y = task.generate(batch_size, length, generator)
            loss = task_loss(task, model(x), y)
            optimizer.zero_grad()
            loss.backward()
            total = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip is not None else math.inf)
            losses.append(float(loss.detach()))
            norms.append(float(total))
            if not math.isfinite(losses[-1]):
                break
            optimizer.step()
        diverged = any(not math.isfinite(v) or v > 1e3 for v in losses)
        results[key] = {"clip_norm": clip, "loss": losses, "grad_norm": norms, "diverged": diverged}
    results["settings"] = {"cell": cell, "length": length, "scale": scale, "clip_norm": clip_norm, "steps": steps,
                           "learning_rate": learning_rate, "batch_size": batch_size, "hidden_size": hidden_size}
    return results


# -- plots -------------------------------------------------------------------------------------
def plot_gradient_norms(reports: Sequence[GradientReport], path: Path, *, title: str = "",
                        clipping: Mapping[str, Any] | None = None) -> Path:
    """Log-scale ``||dL/dh_t||`` against ``t``, one line per report; a second panel with the
    clipping demo's losses when given."""
    from ..tasks.report import _pyplot

    plt = _pyplot()
    panels = 2 if clipping else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    for report in reports:
        values = [v if v > 0 and math.isfinite(v) else math.nan for v in report.grad_norms]
        ax.plot(range(len(values)), values, label=report.label)
    ax.set_yscale("log")
    ax.set(xlabel="time step t", ylabel="mean ||dL/dh_t||")
    # a title naming run folders and data paths is wrapped to the panel's width, not cut at the figure's edge
    ax.set_title("\n".join(textwrap.wrap(title or "gradient norm back through time", 60)), fontsize=10)
    ax.legend(fontsize=8)
    if clipping:
        ax2 = axes[0][1]
        for key in ("without", "with"):
            run = clipping[key]
            values = [v if math.isfinite(v) else math.nan for v in run["loss"]]
            label = "no clipping" if run["clip_norm"] is None else f"clip norm {run['clip_norm']:g}"
            ax2.plot(range(1, len(values) + 1), values, marker=".", label=label)
        s = clipping["settings"]
        ax2.set_yscale("log")
        ax2.set(xlabel="SGD step", ylabel="training loss (MSE)",
                title=f"{s['cell']}, W_hh = {s['scale']:g} x orthogonal, T={s['length']}")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _horizon_text(report: GradientReport) -> str:
    """The horizon column: the lag, ``> T-1`` when no lag fell below the threshold, and ``n/a`` when
    the rule has no reference (``||dL/dh_(T-1)||`` is 0 or not finite, e.g. a max-pooled classifier
    whose last step is never the maximum): ``None`` alone would read as a long memory."""
    last = report.grad_norms[-1] if report.grad_norms else math.nan
    if not (last > 0 and math.isfinite(last)):
        return "n/a"
    return str(report.horizon) if report.horizon is not None else f"> {report.steps - 1}"


def _jacobian_text(values: Sequence[float], fmt: str) -> str:
    """The first value of a Jacobian column; ``n/a`` when it was not measured (``nan``: ``jacobians=False``);
    ``inf`` stays (a product beyond float64's range)."""
    if not values or math.isnan(values[0]):
        return "n/a"
    return fmt.format(values[0])


def diagnostics_markdown(reports: Sequence[GradientReport], clipping: Mapping[str, Any] | None = None,
                         title: str = "Gradient diagnostics") -> str:
    """A Markdown report: one row per model, the definitions, and the clipping demo."""
    from ..tasks.report import markdown_table

    if not reports:
        return f"# {title}\n\nNo reports.\n"
    rule = reports[0].horizon_rule
    norm = reports[0].norm
    rows = []
    for r in reports:
        s = r.summary()
        rows.append([r.label, r.steps, f"{s['grad_norm_last']:.3g}", f"{s['grad_norm_first']:.3g}",
                     f"{s['ratio_first_to_last']:.3g}" if math.isfinite(s["ratio_first_to_last"]) else "n/a",
                     _horizon_text(r),
                     f"{r.saturation_overall:.3f}" if math.isfinite(r.saturation_overall) else "n/a",
                     _jacobian_text(r.jacobian_product_norm, "{:.3g}"),
                     _jacobian_text(r.jacobian_product_log10, "{:.2f}"),
                     f"{r.param_grad_norm:.3g}"])
    lines = [f"# {title}", "",
             markdown_table(["model", "T", "||dL/dh_T-1||", "||dL/dh_0||", "first/last", "horizon", "saturated",
                             f"||ds_T-1/ds_0|| ({norm})", "log10 prod ||J_t||", "param grad norm"], rows), "",
             "Definitions: `||dL/dh_t||` is the mean over the batch (on padded batches, over the sequences whose step t "
             "is real) of the L2 norm of the total derivative of the "
             "loss with respect to the hidden state at step t (retained hidden-state gradients of the unrolled "
             f"layer). Horizon: {rule}; `> T-1` means no lag within the sequence fell that low; n/a: "
             "||dL/dh_T-1|| is 0 or not finite, so the rule has no reference (the loss does not read the last "
             "step). Saturated: fraction "
             "of sigmoid gate values < 0.05 or > 0.95 and of tanh values with |x| > 0.95 (n/a: no bounded "
             f"activation). Jacobian norms are {norm} norms of ds_t/ds_(t-1) for the full state "
             "(h, and c for LSTMs); `log10 prod ||J_t||` is the product of the per-step norms (an upper bound), "
             "`||ds_T-1/ds_0||` the norm of the exact product.", ""]
    left_out = {f"{r.label}: {name} ({UNBOUNDED.get(kind, kind)})" for r in reports
                for name, kind in r.unbounded_gates.items()}
    if left_out:
        lines += ["Left out of `saturated` (unbounded activations cannot saturate): " + "; ".join(sorted(left_out))
                  + ".", ""]
    if clipping:
        s = clipping["settings"]
        w, c = clipping["without"], clipping["with"]

        def last(run: Mapping[str, Any]) -> str:
            return f"{run['loss'][-1]:.4g}" if run["loss"] else "n/a"

        lines += ["## Exploding gradients and clipping", "",
                  f"{s['cell']} with W_hh = {s['scale']:g} x orthogonal on the adding problem (T={s['length']}), "
                  f"{s['steps']} SGD steps at learning rate {s['learning_rate']:g} from identical weights and batches:",
                  "",
                  markdown_table(["run", "first grad norm", "max grad norm", "final loss", "diverged"],
                                 [["no clipping", f"{w['grad_norm'][0]:.3g}", f"{max(w['grad_norm']):.3g}", last(w),
                                   w["diverged"]],
                                  [f"clip norm {c['clip_norm']:g}", f"{c['grad_norm'][0]:.3g}",
                                   f"{max(c['grad_norm']):.3g}", last(c), c["diverged"]]]), ""]
    return "\n".join(lines)


def diagnose_fresh(cells: Sequence[str], *, task: str = "adding", length: int = 100, hidden_size: int = 64,
                   batch_size: int = 32, seed: int = 0, norm: str = "spectral", exploding_scale: float | None = 3.0,
                   clip_norm: float | None = 1.0,
                   jacobian_samples: int = 4) -> tuple[list[GradientReport], dict[str, Any] | None]:
    """Diagnose freshly initialised models of each cell on one batch of a memory task, plus an
    exploding case (a tanh RNN with ``weight_hh = exploding_scale x orthogonal``) and the
    clipping demo (``exploding_scale=None`` skips both; ``clip_norm`` ``None`` or ``0`` skips
    the demo).

    The models are :class:`~rnnkit.insight.memory.MemoryModel` s, whose LSTM cells start with
    forget-gate bias 1 (Jozefowicz et al. 2015): with bias 0 the forget gate starts near 0.5, and
    a fresh LSTM then forgets faster than a fresh tanh RNN.
    """
    from ..cells import CELLS
    from .memory import MemoryModel, make_task, task_loss

    clip_norm = clip_norm_or_none(clip_norm)
    if not cells:
        raise ValueError("give at least one cell, e.g. --cell rnn,lstm,gru")
    check_unique([c.lower().replace("-", "_") for c in cells], "--cell", shown=[repr(c) for c in cells])
    if exploding_scale is not None and not (math.isfinite(exploding_scale) and exploding_scale > 0):
        raise ValueError(f"--exploding-scale must be a finite number > 0 (0: skip the exploding case), "
                         f"got {exploding_scale:g}")
    spec = make_task(task)
    spec.check_length(length)
    for cell in cells:
        if cell.lower().replace("-", "_") not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose from {', '.join(sorted(CELLS))}")
    batch = spec.generate(batch_size, length, torch.Generator().manual_seed(seed))

    def loss_fn(model: nn.Module, b: Any) -> Tensor:
        return task_loss(spec, model(b[0]), b[1])

    reports = []
    for cell in cells:
        torch.manual_seed(seed)
        model = MemoryModel(spec, cell, hidden_size)
        reports.append(gradient_diagnostics(model, batch, loss_fn=loss_fn, norm=norm, label=cell,
                                            jacobian_samples=jacobian_samples, clip_norm=clip_norm))
    clipping = None
    if exploding_scale is not None:
        torch.manual_seed(seed)
        exploding = scale_recurrent_weights(MemoryModel(spec, "rnn", hidden_size), exploding_scale, seed)
        reports.append(gradient_diagnostics(exploding, batch, loss_fn=loss_fn, norm=norm,
                                            label=f"rnn, W_hh = {exploding_scale:g} x orthogonal",
                                            jacobian_samples=jacobian_samples, clip_norm=clip_norm))
        if clip_norm is not None:
            clipping = clipping_demo("rnn", length=min(length, 50), scale=exploding_scale, clip_norm=clip_norm,
                                     hidden_size=hidden_size, seed=seed)
    return reports, clipping


SUPPORTED_RUNS = ("image-classification", "text-classification (architecture=rnn)", "forecasting", "tagging",
                  "language-model")
LossFn = Callable[[nn.Module, Any], Tensor]


def _check_data(data: str | Path) -> None:
    """A one-line error for a data path that does not exist (before any reader guesses a format)."""
    text = str(data)
    if text.startswith("builtin:"):
        return
    first = Path(text.split(",")[0])
    if not first.exists():
        raise FileNotFoundError(f"data not found: {first} (give the labelled file or folder the run was trained on)")


def _check_samples(samples: int, jacobian_samples: int) -> None:
    """A one-line error for a batch size (``--samples``) or a Jacobian sample count below 1."""
    if not samples >= 1:
        raise ValueError(f"samples (--samples, the diagnosed batch size) must be a whole number >= 1, got {samples!r}")
    if not jacobian_samples >= 1:
        raise ValueError(f"jacobian_samples must be a whole number >= 1, got {jacobian_samples!r}")


def diagnostic_inputs(trained: Any, data: str | Path, size: int = 32) -> tuple[nn.Module, Any, LossFn]:
    """``(model, batch, loss_fn)`` for a trained task on the first ``size`` labelled examples of ``data``:
    the trained class's ``diagnostic_batch(path, size)`` (image and text classification with
    ``architecture=rnn``, forecasting, tagging, language models), whose loss is the task's training
    objective. Other tasks raise a ValueError naming the supported ones.
    """
    _check_data(data)
    if not hasattr(trained, "diagnostic_batch"):
        raise ValueError(f"diagnose does not support {type(trained).__name__} runs; supported: "
                         f"{', '.join(SUPPORTED_RUNS)}")
    return trained.diagnostic_batch(data, size)  # type: ignore[no-any-return]


def diagnose_run(run_dir: str | Path, data: str | Path, *, samples: int = 32, norm: str = "spectral",
                 jacobian_samples: int = 4, label: str | None = None) -> GradientReport:
    """Diagnose a trained run on the first ``samples`` labelled examples of ``data``.

    The diagnosed layer is the model's ``encoder`` when it is an ``rnnkit.nn`` recurrent layer
    (the word-level encoder of a tagger, not its character encoder), else its first one.
    """
    from ..tasks import load_trained

    _check_samples(samples, jacobian_samples)
    _check_data(data)
    model, batch, loss_fn = diagnostic_inputs(load_trained(str(run_dir)), data, samples)
    layer = "encoder" if isinstance(getattr(model, "encoder", None), _RecurrentCore) else None
    return gradient_diagnostics(model, batch, loss_fn=loss_fn, norm=norm, jacobian_samples=jacobian_samples,
                                layer=layer, label=label or f"{Path(run_dir).name}")


def diagnose_runs(run_dirs: Sequence[str | Path], data: str | Path, *, samples: int = 32, norm: str = "spectral",
                  jacobian_samples: int = 4) -> list[GradientReport]:
    """:func:`diagnose_run` for each run on the same ``data``, one report per run (labelled by the
    folder name, or the path where two runs share a name)."""
    if not run_dirs:
        raise ValueError("give at least one RUN folder")
    _check_samples(samples, jacobian_samples)
    check_unique([str(Path(r).resolve()) for r in run_dirs], "RUN", shown=[str(r) for r in run_dirs])
    names = [Path(r).name for r in run_dirs]
    return [diagnose_run(r, data, samples=samples, norm=norm, jacobian_samples=jacobian_samples,
                         label=name if names.count(name) == 1 else str(r)) for r, name in zip(run_dirs, names)]


__all__ = ["BOUNDED", "GradientReport", "HORIZON_RULE", "SUPPORTED_RUNS", "clipping_demo", "diagnose_fresh",
           "diagnose_run", "diagnose_runs", "diagnostic_inputs", "diagnostics_markdown", "find_recurrent_layer",
           "gate_activations", "gradient_diagnostics", "json_safe", "memory_horizon", "plot_gradient_norms",
           "saturation_fractions", "scale_recurrent_weights"]
