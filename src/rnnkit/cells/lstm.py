"""Long short-term memory cells.

Hochreiter and Schmidhuber 1997; forget gate: Gers et al. 2000; peepholes: Gers and
Schmidhuber 2000; projection (LSTMP): Sak et al. 2014; layer norm: Ba et al. 2016, sec. 3.1.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import RecurrentCell, State, apply_mask, check_sizes, init_uniform_


class LSTMCell(RecurrentCell):
    r"""LSTM, one step, gates stacked ``i, f, g, o`` as in ``torch.nn.LSTM``.

    .. math::
        z &= W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh} = [z_i, z_f, z_g, z_o] \\
        i_t &= \sigma(z_i + p_i \odot c_{t-1}) \\
        f_t &= \sigma(z_f + p_f \odot c_{t-1}) \\
        g_t &= \tanh(z_g) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        o_t &= \sigma(z_o + p_o \odot c_t) \\
        h_t &= W_{hr}\,(o_t \odot \tanh(c_t))

    The peephole terms ``p`` exist only with ``peephole=True``; ``W_hr`` only with
    ``proj_size > 0`` (then ``h`` has ``proj_size`` features, ``c`` keeps ``hidden_size``).

    Args:
        input_size: features per step ``I``.
        hidden_size: cell size ``H``.
        bias: learn ``bias_ih`` and ``bias_hh``.
        proj_size: if > 0, project ``h`` to this size (``weight_hr`` ``[P, H]``).
        peephole: add diagonal peephole connections ``weight_peephole`` ``[3, H]`` (i, f, o).
        forget_bias: if given, initialise the forget-gate bias so that ``b_f = forget_bias``
            (Jozefowicz et al. 2015 recommend 1.0).
    """

    gate_names = ("input", "forget", "cell_candidate", "output", "cell")

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, proj_size: int = 0,
                 peephole: bool = False, forget_bias: float | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        check_sizes(type(self).__name__, input_size, hidden_size)
        if proj_size < 0 or (proj_size and proj_size >= hidden_size):
            raise ValueError(f"proj_size must be 0 or in [1, hidden_size={hidden_size}), got {proj_size}")
        if forget_bias is not None and not bias:
            raise ValueError(f"forget_bias={forget_bias} needs bias=True (a cell without biases has no forget-gate "
                             "bias to set); drop forget_bias or keep the biases")
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.proj_size = input_size, hidden_size, proj_size
        self.output_size = proj_size or hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, self.output_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **kw)) if bias else None
        self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size, **kw)) if proj_size else None
        self.weight_peephole = nn.Parameter(torch.empty(3, hidden_size, **kw)) if peephole else None
        self.forget_bias = forget_bias
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_uniform_(self, self.hidden_size)
        if self.forget_bias is not None and self.bias_ih is not None and self.bias_hh is not None:
            h = self.hidden_size
            with torch.no_grad():
                self.bias_ih[h:2 * h].fill_(self.forget_bias)
                self.bias_hh[h:2 * h].zero_()

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return (self.output_size, self.hidden_size)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # W_ih x + b_ih, all four gates

    def _recurrent(self, h: Tensor) -> Tensor:
        return F.linear(h, self.weight_hh, self.bias_hh)  # W_hh h + b_hh

    def _cell_for_output(self, c: Tensor) -> Tensor:
        return c

    def recur(self, x_proj: Tensor, state: State, *, recurrent_mask: Tensor | None = None,
              return_gates: bool = False) -> tuple[Tensor, State, dict[str, Tensor] | None]:
        h, c = state
        z = x_proj + self._recurrent(apply_mask(h, recurrent_mask))
        z_i, z_f, z_g, z_o = z.chunk(4, dim=-1)
        if self.weight_peephole is not None:
            z_i = z_i + self.weight_peephole[0] * c
            z_f = z_f + self.weight_peephole[1] * c
        i = torch.sigmoid(z_i)
        f = torch.sigmoid(z_f)
        g = torch.tanh(z_g)
        c = f * c + i * g
        if self.weight_peephole is not None:
            z_o = z_o + self.weight_peephole[2] * c
        o = torch.sigmoid(z_o)
        h = o * torch.tanh(self._cell_for_output(c))
        if self.weight_hr is not None:
            h = F.linear(h, self.weight_hr)
        gates = {"input": i, "forget": f, "cell_candidate": g, "output": o, "cell": c} if return_gates else None
        return h, (h, c), gates

    def fused_mode(self) -> str | None:
        return "LSTM" if type(self) is LSTMCell and self.weight_peephole is None else None

    def extra_repr(self) -> str:
        extra = f", proj_size={self.proj_size}" if self.proj_size else ""
        extra += ", peephole=True" if self.weight_peephole is not None else ""
        return f"{self.input_size}, {self.hidden_size}{extra}"


class LayerNormLSTMCell(LSTMCell):
    r"""LSTM with layer normalisation (Ba et al. 2016, eq. 20-22), one step.

    .. math::
        z &= \mathrm{LN}_{ih}(W_{ih} x_t) + b_{ih} + \mathrm{LN}_{hh}(W_{hh} h_{t-1}) + b_{hh} \\
        i, f, g, o &\text{ as in } \texttt{LSTMCell} \\
        h_t &= o_t \odot \tanh(\mathrm{LN}_c(c_t))

    Each ``LN`` normalises over its whole vector (``4H`` for the gate terms, ``H`` for the cell)
    with a learned gain and no extra bias (the torch-named biases play that role).
    Parameters beyond ``LSTMCell``'s: ``ln_ih.weight``, ``ln_hh.weight``, ``ln_cell.weight`` and,
    for the cell norm, ``ln_cell.bias``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, proj_size: int = 0,
                 peephole: bool = False, forget_bias: float | None = None, eps: float = 1e-5,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self._eps = eps
        super().__init__(input_size, hidden_size, bias, proj_size=proj_size, peephole=peephole,
                         forget_bias=forget_bias, **kw)

    def reset_parameters(self) -> None:
        if not hasattr(self, "ln_ih"):
            h = self.hidden_size
            kw: dict[str, Any] = {"device": self.weight_ih.device, "dtype": self.weight_ih.dtype}
            self.ln_ih = nn.LayerNorm(4 * h, eps=self._eps, bias=False, **kw)
            self.ln_hh = nn.LayerNorm(4 * h, eps=self._eps, bias=False, **kw)
            self.ln_cell = nn.LayerNorm(h, eps=self._eps, **kw)
        super().reset_parameters()
        for ln in (self.ln_ih, self.ln_hh, self.ln_cell):
            ln.reset_parameters()

    def project_input(self, x: Tensor) -> Tensor:
        z = self.ln_ih(F.linear(x, self.weight_ih))
        return z if self.bias_ih is None else z + self.bias_ih

    def _recurrent(self, h: Tensor) -> Tensor:
        z = self.ln_hh(F.linear(h, self.weight_hh))
        return z if self.bias_hh is None else z + self.bias_hh

    def _cell_for_output(self, c: Tensor) -> Tensor:
        return self.ln_cell(c)
