"""The cell contract: one time step of a recurrence.

A cell maps ``(x_t, state_{t-1})`` to ``(output_t, state_t)``. It never loops over time:
that is the scan's job (:mod:`rnnkit.scan`). To let the scan hoist the input projection out
of the time loop, a cell splits its step in two:

* :meth:`RecurrentCell.project_input` computes every term that depends only on ``x`` (for
  standard cells ``W x + b``); it accepts any leading shape, so the scan calls it once on the
  whole ``[B, T, I]`` sequence;
* :meth:`RecurrentCell.recur` finishes the step from the projected input and the state.

``forward(x_t, state)`` is simply ``recur(project_input(x_t), state)``.

Shapes: ``B`` batch, ``I`` input size, ``H`` hidden size, ``P`` output size (``H`` unless the
cell projects its output, as LSTMP does).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


class RecurrentCell(nn.Module):
    """Base class for one-step recurrent cells.

    Subclasses set ``input_size``, ``hidden_size`` and ``output_size``, declare ``state_sizes``
    (one entry per state tensor, the first being the recurrent output ``h``), list
    ``gate_names`` (what ``return_gates`` reports) and implement :meth:`project_input` and
    :meth:`recur`.

    To write a new cell, subclass this, define the parameters in ``__init__`` and the math in
    ``recur``; :class:`rnnkit.nn.Recurrent` then gives it masking, reversal, bidirectionality,
    stacking, streaming and state handling. See ``docs/core.md``, "Writing your own cell".
    """

    input_size: int
    hidden_size: int
    output_size: int
    gate_names: tuple[str, ...] = ()

    @property
    def state_sizes(self) -> tuple[int, ...]:
        """Feature size of each state tensor; the first one is the output ``h``."""
        return (self.output_size,)

    def initial_state(self, batch_size: int, *, dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> State:
        """Zero state for ``batch_size`` sequences."""
        ref = next(iter(self.parameters()), None)
        dtype = dtype or (ref.dtype if ref is not None else torch.get_default_dtype())
        device = device or (ref.device if ref is not None else None)
        return tuple(torch.zeros(batch_size, size, dtype=dtype, device=device) for size in self.state_sizes)

    def project_input(self, x: Tensor) -> Tensor:
        """Input-only part of the step for any leading shape ``[..., I] -> [..., G]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement project_input(x): the input-only part of "
                                  "the step for [..., input_size] inputs (return x itself if there is none)")

    def recur(self, x_proj: Tensor, state: State, *, recurrent_mask: Tensor | None = None,
              return_gates: bool = False) -> tuple[Tensor, State, dict[str, Tensor] | None]:
        """Finish one step.

        Args:
            x_proj: ``[B, G]`` projected input from :meth:`project_input`.
            state: tuple of ``[B, state_sizes[k]]`` tensors from the previous step.
            recurrent_mask: optional ``[B, P]`` multiplicative mask applied to ``h_{t-1}``
                before the recurrent matrix multiply (variational recurrent dropout).
            return_gates: also return the gate activations of this step.

        Returns:
            ``(output, new_state, gates)``; ``gates`` is ``None`` unless ``return_gates``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement recur(x_proj, state, *, recurrent_mask=None, "
                                  "return_gates=False) returning (output, new_state, gates)")

    def forward(self, x: Tensor, state: State | Tensor | None = None, *,
                return_gates: bool = False) -> Any:
        """One time step: ``x`` is ``[B, I]``; returns ``(output, state)`` (and gates if asked)."""
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} expects a tensor of shape [batch, {self.input_size}], got {type(x).__name__}")
        if x.dim() != 2 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name} expects input of shape [batch, {self.input_size}], "
                f"got {list(x.shape)}" + ("; a cell runs one step, use rnnkit.nn.Recurrent for sequences"
                                          if x.dim() == 3 else "")
            )
        ref = next(iter(self.parameters()), None)
        autocast = torch.is_autocast_enabled(x.device.type)  # mixed dtypes are autocast's business
        if ref is not None and (x.device != ref.device or (x.dtype != ref.dtype and not autocast)):
            raise ValueError(f"{name} input is {x.dtype} on {x.device} but the cell's parameters are {ref.dtype} "
                             f"on {ref.device}; convert one of them (x.to(...) or cell.to(...))")
        if state is None:
            state = self.initial_state(x.shape[0], dtype=x.dtype, device=x.device)
        else:
            state = self._check_state(state, x, check_dtype=not autocast)
        result = self.recur(self.project_input(x), tuple(state), return_gates=return_gates)
        if not self.__dict__.get("_step_checked"):  # once per cell: a decoder calls it at every step
            check_step(self, result, x.shape[0])
            self.__dict__["_step_checked"] = True
        out, new_state, gates = result
        if return_gates:
            return out, new_state, gates
        return out, new_state

    def _check_state(self, state: State | Tensor | list[Tensor], x: Tensor, check_dtype: bool = True) -> State:
        """``state`` as a tuple of ``[B, size]`` tensors matching ``x``, else a one-line ``ValueError``."""
        parts = (state,) if isinstance(state, Tensor) else tuple(state)
        sizes = tuple(self.state_sizes)
        name = type(self).__name__
        expected = ", ".join(f"[{x.shape[0]}, {s}]" for s in sizes)
        if len(parts) != len(sizes):
            raise ValueError(f"{name} carries {len(sizes)} state tensor(s) ({expected}), got {len(parts)}")
        for k, (h, size) in enumerate(zip(parts, sizes)):
            if not isinstance(h, Tensor):
                raise TypeError(f"{name} state[{k}] must be a tensor of shape [{x.shape[0]}, {size}], "
                                f"got {type(h).__name__}")
            if tuple(h.shape) != (x.shape[0], size):
                raise ValueError(f"{name} state[{k}] must have shape [batch, {size}] = [{x.shape[0]}, {size}], "
                                 f"got {list(h.shape)}")
            if h.device != x.device or (check_dtype and h.dtype != x.dtype):
                raise ValueError(f"{name} state[{k}] is {h.dtype} on {h.device} but the input is {x.dtype} "
                                 f"on {x.device}; convert the state")
        return parts

    def fused_mode(self) -> str | None:
        """Name of the ``torch.nn`` fused kernel that computes exactly this cell, else ``None``."""
        return None


def check_step(cell: RecurrentCell, result: Any, batch: int) -> None:
    """One-line ``ValueError`` unless ``result``, what ``cell.recur`` returned for a batch of ``batch``, is
    ``(output [batch, output_size], new_state, gates)`` with ``new_state`` a tuple of ``[batch, state_sizes[k]]``
    tensors. The scans call it on their first step: a malformed cell fails here, not in a broadcast later."""
    name = type(cell).__name__
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        got = f"{len(result)} values" if isinstance(result, (tuple, list)) else f"a {type(result).__name__}"
        raise ValueError(f"{name}.recur must return (output, new_state, gates) with gates None unless return_gates, "
                         f"got {got}")
    out, new_state, _ = result
    sizes = tuple(cell.state_sizes)
    expected = ", ".join(f"[{batch}, {s}]" for s in sizes)
    if not isinstance(new_state, (tuple, list)) or len(new_state) != len(sizes):
        got = (f"{len(new_state)} state tensors" if isinstance(new_state, (tuple, list))
               else f"a {type(new_state).__name__}")
        raise ValueError(f"{name}.recur returned {got} as the new state, expected a tuple of {len(sizes)} tensor(s) "
                         f"({expected}, from state_sizes={sizes}); return e.g. (h,) for one state, or fix state_sizes")
    for k, (s, size) in enumerate(zip(new_state, sizes)):
        if not isinstance(s, Tensor) or tuple(s.shape) != (batch, size):
            got = f"of shape {list(s.shape)}" if isinstance(s, Tensor) else f"of type {type(s).__name__}"
            raise ValueError(f"{name}.recur returned state[{k}] {got}, expected [{batch}, {size}] "
                             f"([batch, state_sizes[{k}]]); fix recur or state_sizes")
    if not isinstance(out, Tensor) or tuple(out.shape) != (batch, cell.output_size):
        got = f"of shape {list(out.shape)}" if isinstance(out, Tensor) else f"of type {type(out).__name__}"
        raise ValueError(f"{name}.recur returned an output {got}, expected [{batch}, {cell.output_size}] "
                         "([batch, output_size]); fix recur or output_size")


def check_sizes(cell: str, input_size: int, hidden_size: int) -> None:
    """One-line ``ValueError`` unless ``input_size`` and ``hidden_size`` are positive integers."""
    for what, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        try:
            ok = not isinstance(value, bool) and operator.index(value) >= 1
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"{cell} {what} must be a positive integer, got {value!r}")


def init_uniform_(module: nn.Module, hidden_size: int) -> None:
    """``torch.nn`` initialisation: every parameter ~ U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / hidden_size**0.5 if hidden_size > 0 else 0.0
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


def apply_mask(h: Tensor, mask: Tensor | None) -> Tensor:
    return h if mask is None else h * mask
