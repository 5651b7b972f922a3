"""Gated recurrent unit cells (Cho et al. 2014; cuDNN's reset-after form, Chung et al. 2014)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import RecurrentCell, State, apply_mask, check_sizes, init_uniform_


class GRUCell(RecurrentCell):
    r"""GRU, one step, gates stacked ``r, z, n`` as in ``torch.nn.GRU``.

    With ``reset_after=True`` (``torch.nn`` / cuDNN, the default):

    .. math::
        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    With ``reset_after=False`` (Cho et al. 2014, Keras ``reset_after=False``) the candidate is
    :math:`n_t = \tanh(W_{in} x_t + b_{in} + W_{hn}(r_t \odot h_{t-1}) + b_{hn})`.
    """

    gate_names = ("reset", "update", "candidate")

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, reset_after: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        check_sizes(type(self).__name__, input_size, hidden_size)
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.reset_after = reset_after
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_uniform_(self, self.hidden_size)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # [W_ir x + b_ir, W_iz x + b_iz, W_in x + b_in]

    def _recurrent(self, h: Tensor) -> Tensor:
        return F.linear(h, self.weight_hh, self.bias_hh)

    def recur(self, x_proj: Tensor, state: State, *, recurrent_mask: Tensor | None = None,
              return_gates: bool = False) -> tuple[Tensor, State, dict[str, Tensor] | None]:
        (h,) = state
        h_in = apply_mask(h, recurrent_mask)
        x_r, x_z, x_n = x_proj.chunk(3, dim=-1)
        if self.reset_after:
            h_r, h_z, h_n = self._recurrent(h_in).chunk(3, dim=-1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
        else:
            size = self.hidden_size
            b_hh = self.bias_hh
            h_rz = F.linear(h_in, self.weight_hh[: 2 * size], None if b_hh is None else b_hh[: 2 * size])
            h_r, h_z = h_rz.chunk(2, dim=-1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + F.linear(r * h_in, self.weight_hh[2 * size:],
                                          None if b_hh is None else b_hh[2 * size:]))
        h = (1 - z) * n + z * h
        return h, (h,), ({"reset": r, "update": z, "candidate": n} if return_gates else None)

    def fused_mode(self) -> str | None:
        return "GRU" if type(self) is GRUCell and self.reset_after else None

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.reset_after else ", reset_after=False")


class LayerNormGRUCell(GRUCell):
    r"""GRU (reset-after form) with layer normalisation on both gate pre-activations.

    .. math::
        [x_r, x_z, x_n] &= \mathrm{LN}_{ih}(W_{ih} x_t) + b_{ih},\quad
        [h_r, h_z, h_n] = \mathrm{LN}_{hh}(W_{hh} h_{t-1}) + b_{hh} \\
        r_t &= \sigma(x_r + h_r),\ z_t = \sigma(x_z + h_z),\ n_t = \tanh(x_n + r_t \odot h_n) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, eps: float = 1e-5,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        self._eps = eps
        super().__init__(input_size, hidden_size, bias, reset_after=True, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        if not hasattr(self, "ln_ih"):
            kw: dict[str, Any] = {"device": self.weight_ih.device, "dtype": self.weight_ih.dtype}
            self.ln_ih = nn.LayerNorm(3 * self.hidden_size, eps=self._eps, bias=False, **kw)
            self.ln_hh = nn.LayerNorm(3 * self.hidden_size, eps=self._eps, bias=False, **kw)
        super().reset_parameters()
        self.ln_ih.reset_parameters()
        self.ln_hh.reset_parameters()

    def project_input(self, x: Tensor) -> Tensor:
        z = self.ln_ih(F.linear(x, self.weight_ih))
        return z if self.bias_ih is None else z + self.bias_ih

    def _recurrent(self, h: Tensor) -> Tensor:
        z = self.ln_hh(F.linear(h, self.weight_hh))
        return z if self.bias_hh is None else z + self.bias_hh
