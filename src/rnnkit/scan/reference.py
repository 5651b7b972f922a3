"""The reference scan: run any :class:`~rnnkit.cells.RecurrentCell` over time with a plain loop.

It is the definition every fast path is tested against: masks of any shape, reversal that
respects padding, the final state taken at each sequence's last real step, zeros at padded
outputs, and zero-length sequences (their state stays the initial state).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells.base import RecurrentCell, State, check_step


def zoneout(new: State, old: State, rate: float, training: bool) -> State:
    """Zoneout (Krueger et al. 2017): each unit keeps its previous value with probability ``rate``.

    In training a fresh Bernoulli mask per step; at inference the expectation
    ``rate * old + (1 - rate) * new``.
    """
    if training:
        return tuple(torch.where(torch.rand_like(n) < rate, o, n) for n, o in zip(new, old))
    return tuple(rate * o + (1 - rate) * n for n, o in zip(new, old))


def _empty_gates(cell: RecurrentCell, x: Tensor, state: State) -> dict[str, Tensor]:
    """``[B, 0, size]`` gates of a zero-length call, named and sized as the cell reports them: one step on an
    empty batch (no arithmetic) tells; ``gate_names`` of ``hidden_size`` if the cell cannot run one."""
    try:
        with torch.no_grad():
            x_proj = cell.project_input(x.new_zeros(0, x.shape[-1]))
            _, _, probe = cell.recur(x_proj, tuple(s[:0] for s in state), return_gates=True)
        sizes = {k: v.shape[-1] for k, v in (probe or {}).items()}
    except Exception:  # noqa: BLE001 - only the names and sizes are wanted; fall back to the declared ones
        sizes = {g: cell.hidden_size for g in cell.gate_names}
    return {k: x.new_zeros(x.shape[0], 0, size) for k, size in sizes.items()}


def reference_scan(
    cell: RecurrentCell,
    x: Tensor,
    state: State,
    *,
    mask: Tensor | None = None,
    reverse: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_rate: float = 0.0,
    training: bool = False,
    return_gates: bool = False,
) -> tuple[Tensor, State, dict[str, Tensor] | None]:
    """Run ``cell`` over a batch-first sequence.

    Args:
        cell: the one-step cell.
        x: ``[B, T, I]`` inputs.
        state: initial state, a tuple of ``[B, state_sizes[k]]`` tensors.
        mask: optional ``[B, T]`` bool, ``True`` on real steps; masked steps are skipped.
        reverse: process time from last to first (the real steps of each sequence in reverse).
        recurrent_mask: optional ``[B, P]`` mask on ``h_{t-1}`` (variational recurrent dropout).
        zoneout_rate: zoneout probability for every state tensor (0 disables it).
        training: selects zoneout's training or inference behaviour.
        return_gates: also collect the cell's gate activations.

    Returns:
        ``(outputs [B, T, P], final_state, gates)`` where ``gates`` maps each gate name to a
        ``[B, T, H]`` tensor (zeros at masked steps), or ``None``.

    Under ``torch.autocast`` the cell's matmuls run in the autocast dtype, but the state is carried,
    and the outputs returned, in the initial state's dtype (the layer's), as the engines and the
    linear scans do. A cell whose step ends in a matmul or its activation (an Elman RNN, a projected
    LSTM's ``h``) came out in bfloat16 from unmasked calls and in float32 from masked ones (where
    ``torch.where`` promoted it back to the carried state), and rounded its state to bfloat16 at
    every step. Outside autocast the cast is a no-op.
    """
    batch, steps = x.shape[0], x.shape[1]
    if steps == 0:
        empty = x.new_zeros(batch, 0, cell.output_size)
        return empty, state, (_empty_gates(cell, x, state) if return_gates else None)
    inputs = cell.project_input(x).unbind(1)  # one matmul for all steps: T x [B, G]
    valid = mask.unsqueeze(-1).unbind(1) if mask is not None else None  # T x [B, 1]
    outputs: list[Tensor] = [x] * steps
    gate_steps: list[dict[str, Tensor]] = [{}] * steps
    first = steps - 1 if reverse else 0
    autocast = torch.is_autocast_enabled(x.device.type)  # (checked once: the cast below is per step)
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        result = cell.recur(inputs[t], state, recurrent_mask=recurrent_mask, return_gates=return_gates)
        if t == first:  # a malformed cell fails here with what to fix, not in a broadcast below
            check_step(cell, result, batch)
        out, new, gates = result
        if autocast:  # the state in the layer's dtype, not the autocast dtype its last matmul gave
            new = tuple(n if n.dtype == s.dtype else n.to(s.dtype) for n, s in zip(new, state))
            if out.dtype != new[0].dtype:
                out = out.to(new[0].dtype)
        if zoneout_rate:
            new = zoneout(new, state, zoneout_rate, training)
            out = new[0]
        if valid is not None:
            keep = valid[t]
            new = tuple(torch.where(keep, n, s) for n, s in zip(new, state))
            out = out * keep
            if gates is not None:
                gates = {k: v * keep for k, v in gates.items()}
        state = new
        outputs[t] = out
        if gates is not None:
            gate_steps[t] = gates
    stacked_gates = {k: torch.stack([g[k] for g in gate_steps], 1) for k in gate_steps[0]} if return_gates else None
    return torch.stack(outputs, 1), state, stacked_gates
