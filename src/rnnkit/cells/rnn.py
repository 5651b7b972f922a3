"""Elman recurrent cell (Elman 1990, "Finding structure in time")."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import RecurrentCell, State, apply_mask, check_sizes, init_uniform_

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class RNNCell(RecurrentCell):
    r"""Elman RNN, one step.

    .. math::
        h_t = f(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}),\quad f \in \{\tanh, \mathrm{relu}\}

    Parameters follow ``torch.nn.RNNCell``: ``weight_ih`` ``[H, I]``, ``weight_hh`` ``[H, H]``,
    ``bias_ih`` and ``bias_hh`` ``[H]``.

    Args:
        input_size: features per step ``I``.
        hidden_size: state size ``H``.
        bias: learn the two bias vectors.
        nonlinearity: ``"tanh"`` or ``"relu"``.
    """

    gate_names = ("pre_activation",)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        check_sizes(type(self).__name__, input_size, hidden_size)
        if nonlinearity not in _ACTIVATIONS:
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; choose one of {sorted(_ACTIVATIONS)}")
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.nonlinearity = nonlinearity
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(hidden_size, **kw)) if bias else None
        init_uniform_(self, hidden_size)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # W_ih x + b_ih

    def recur(self, x_proj: Tensor, state: State, *, recurrent_mask: Tensor | None = None,
              return_gates: bool = False) -> tuple[Tensor, State, dict[str, Tensor] | None]:
        (h,) = state
        pre = x_proj + F.linear(apply_mask(h, recurrent_mask), self.weight_hh, self.bias_hh)
        h = _ACTIVATIONS[self.nonlinearity](pre)  # h_t = f(...)
        return h, (h,), ({"pre_activation": pre} if return_gates else None)

    def fused_mode(self) -> str | None:
        if type(self) is not RNNCell:  # a subclass may change the math: only the reference scan runs its recur
            return None
        return "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}"
