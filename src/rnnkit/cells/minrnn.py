"""Minimal RNNs whose gates depend only on the input: minGRU and minLSTM.

Feng, Tung, Ahmed, Bengio and Hajimirsadeghi 2024, "Were RNNs All We Needed?",
arXiv:2410.01201: section 3.1 (minGRU), section 3.2 (minLSTM) and appendix B (their log-space
forms, with the positive activation ``g``).

Neither cell has a recurrent weight matrix: each step is the element-wise linear recurrence

.. math::
    h_t = a_t \\odot h_{t-1} + b_t, \\qquad a_t, b_t \\text{ functions of } x_t \\text{ only,}\\ 0 < a_t < 1

so a whole sequence can be computed without a matrix multiply in the time loop, or with no time
loop at all (a parallel scan). :class:`LinearRecurrentCell` is the contract that the scans in
:mod:`rnnkit.scan.parallel` use: besides the usual one-step ``recur`` a cell gives the
coefficients ``(a_t, b_t)`` for every step at once, in linear or in log space.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import RecurrentCell, State, apply_mask, check_sizes, init_uniform_

CANDIDATE_ACTIVATIONS = ("g", "linear")


def g(x: Tensor) -> Tensor:
    """The paper's positive activation (appendix B): ``x + 0.5`` for ``x >= 0``, else ``sigmoid(x)``.

    Continuous at 0 (its slope jumps from ``sigmoid'(0) = 1/4`` to 1 there) and always > 0, so
    ``log g(x)`` exists.
    """
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """``log g(x)`` computed without forming ``g(x)``: ``log(x + 0.5)`` or ``-softplus(-x)``."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


class LinearRecurrentCell(RecurrentCell):
    r"""A cell whose step is ``h_t = a_t * h_{t-1} + b_t`` with ``a_t``, ``b_t`` from ``x_t`` only.

    Subclasses implement :meth:`scan_terms`; ``recur`` follows from it unless a subclass writes
    it from its own equations (the cells here do, so the two forms check each other in tests).
    The single state is ``h`` (``state_sizes == (hidden_size,)``) and the output is ``h``.

    A ``recurrent_mask`` (variational recurrent dropout) multiplies ``h_{t-1}``, i.e. ``a_t``.
    """

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size,)

    def scan_terms(self, x_proj: Tensor, *, log_space: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """Recurrence coefficients for every position of ``x_proj`` (any leading shape ``[..., G]``).

        Args:
            x_proj: output of :meth:`project_input`.
            log_space: return logarithms (computed directly, never as ``log(exp(...))``).

        Returns:
            ``(a, b, None)`` with ``h_t = a * h_{t-1} + b``; with ``log_space``,
            ``(log a, log |b|, sign)`` where ``sign`` is ``None`` when ``b > 0`` everywhere (the
            paper's ``g`` activation), else a tensor of ``-1, 0, +1``.
        """
        raise NotImplementedError

    def recur(self, x_proj: Tensor, state: State, *, recurrent_mask: Tensor | None = None,
              return_gates: bool = False) -> tuple[Tensor, State, dict[str, Tensor] | None]:
        (h,) = state
        a, b, _ = self.scan_terms(x_proj)
        h = a * apply_mask(h, recurrent_mask) + b
        return h, (h,), None


def _check_activation(name: str) -> str:
    if name not in CANDIDATE_ACTIVATIONS:
        raise ValueError(f"candidate_activation must be one of {CANDIDATE_ACTIVATIONS}, got {name!r}")
    return name


def _signed_log(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(log |x|, sign x)``; zeros get a very negative finite log so gradients stay finite."""
    tiny = torch.finfo(x.dtype).tiny
    return torch.log(x.abs().clamp_min(tiny)), torch.sign(x)


class MinGRUCell(LinearRecurrentCell):
    r"""minGRU (Feng et al. 2024, section 3.1; log-space form in appendix B), one step.

    Weights stacked ``z, h`` in ``weight_ih`` ``[2H, I]`` (no recurrent weights):

    .. math::
        z_t &= \sigma(W_{iz} x_t + b_{iz}) \\
        \tilde h_t &= g(W_{ih} x_t + b_{ih}) \\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    With ``candidate_activation="g"`` (the default, the paper's log-space version) ``g`` is the
    positive activation :func:`g`; with ``"linear"`` it is the identity (section 3.1 as written),
    and the parallel scan then splits ``b_t`` by sign. As a linear recurrence:
    ``a_t = 1 - z_t``, ``b_t = z_t \odot \tilde h_t``; in log space
    ``log a_t = -softplus(k)``, ``log z_t = -softplus(-k)`` for ``k = W_{iz} x_t + b_{iz}``.

    Args:
        input_size: features per step ``I``.
        hidden_size: state size ``H``.
        bias: learn ``bias_ih``.
        candidate_activation: ``"g"`` or ``"linear"``.

    Example:
        >>> cell = MinGRUCell(8, 16)
        >>> h, (h_state,) = cell(torch.randn(4, 8))
    """

    gate_names = ("update", "candidate")

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, candidate_activation: str = "g",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        check_sizes(type(self).__name__, input_size, hidden_size)
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.candidate_activation = _check_activation(candidate_activation)
        self.weight_ih = nn.Parameter(torch.empty(2 * hidden_size, input_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(2 * hidden_size, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_uniform_(self, self.hidden_size)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # [k_z, k_h], all steps at once

    def _candidate(self, k_h: Tensor) -> Tensor:
        return g(k_h) if self.candidate_activation == "g" else k_h

    def recur(self, x_proj: Tensor, state: State, *, recurrent_mask: Tensor | None = None,
              return_gates: bool = False) -> tuple[Tensor, State, dict[str, Tensor] | None]:
        (h,) = state
        k_z, k_h = x_proj.chunk(2, dim=-1)
        z = torch.sigmoid(k_z)
        h_tilde = self._candidate(k_h)
        h = (1 - z) * apply_mask(h, recurrent_mask) + z * h_tilde
        return h, (h,), ({"update": z, "candidate": h_tilde} if return_gates else None)

    def scan_terms(self, x_proj: Tensor, *, log_space: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        k_z, k_h = x_proj.chunk(2, dim=-1)
        if not log_space:
            z = torch.sigmoid(k_z)
            return 1 - z, z * self._candidate(k_h), None
        log_a = -F.softplus(k_z)  # log(1 - z)
        log_z = -F.softplus(-k_z)  # log z
        if self.candidate_activation == "g":
            return log_a, log_z + log_g(k_h), None
        log_abs, sign = _signed_log(k_h)
        return log_a, log_z + log_abs, sign

    def extra_repr(self) -> str:
        extra = "" if self.candidate_activation == "g" else f", candidate_activation={self.candidate_activation!r}"
        return f"{self.input_size}, {self.hidden_size}{extra}"


class MinLSTMCell(LinearRecurrentCell):
    r"""minLSTM (Feng et al. 2024, section 3.2; log-space form in appendix B), one step.

    Weights stacked ``f, i, h`` in ``weight_ih`` ``[3H, I]`` (no recurrent weights, no cell state):

    .. math::
        f_t &= \sigma(W_{if} x_t + b_{if}) \\
        i_t &= \sigma(W_{ii} x_t + b_{ii}) \\
        \tilde h_t &= g(W_{ih} x_t + b_{ih}) \\
        f'_t &= f_t / (f_t + i_t), \quad i'_t = i_t / (f_t + i_t) \\
        h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t

    The normalised gates make the scale of ``h`` independent of the sequence length (section
    3.2.3). In log space, with ``d = softplus(-k_f) - softplus(-k_i)``:
    ``log f'_t = -softplus(d)`` and ``log i'_t = -softplus(-d)``. ``candidate_activation`` is as
    in :class:`MinGRUCell`. ``return_gates`` reports the normalised ``f'`` and ``i'``.

    Example:
        >>> cell = MinLSTMCell(8, 16)
        >>> h, (h_state,) = cell(torch.randn(4, 8))
    """

    gate_names = ("forget", "input", "candidate")

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, candidate_activation: str = "g",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        check_sizes(type(self).__name__, input_size, hidden_size)
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.candidate_activation = _check_activation(candidate_activation)
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_uniform_(self, self.hidden_size)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # [k_f, k_i, k_h], all steps at once

    def _candidate(self, k_h: Tensor) -> Tensor:
        return g(k_h) if self.candidate_activation == "g" else k_h

    def _normalised_gates(self, k_f: Tensor, k_i: Tensor) -> tuple[Tensor, Tensor]:
        """``f / (f + i)`` and ``i / (f + i)`` as ``sigmoid(-d)`` and ``sigmoid(d)``, ``d = log(i / f)``:
        the plain quotient is 0/0 once both sigmoids underflow (pre-activations below about -104 in
        float32, -17 in float16), the log-space form stays finite, as the parallel scan's does."""
        d = F.softplus(-k_f) - F.softplus(-k_i)  # log(i / f)
        return torch.sigmoid(-d), torch.sigmoid(d)

    def recur(self, x_proj: Tensor, state: State, *, recurrent_mask: Tensor | None = None,
              return_gates: bool = False) -> tuple[Tensor, State, dict[str, Tensor] | None]:
        (h,) = state
        k_f, k_i, k_h = x_proj.chunk(3, dim=-1)
        f_n, i_n = self._normalised_gates(k_f, k_i)
        h_tilde = self._candidate(k_h)
        h = f_n * apply_mask(h, recurrent_mask) + i_n * h_tilde
        return h, (h,), ({"forget": f_n, "input": i_n, "candidate": h_tilde} if return_gates else None)

    def scan_terms(self, x_proj: Tensor, *, log_space: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        k_f, k_i, k_h = x_proj.chunk(3, dim=-1)
        if not log_space:
            f_n, i_n = self._normalised_gates(k_f, k_i)
            return f_n, i_n * self._candidate(k_h), None
        d = F.softplus(-k_f) - F.softplus(-k_i)  # log(i / f)
        log_f = -F.softplus(d)  # log f'
        log_i = -F.softplus(-d)  # log i'
        if self.candidate_activation == "g":
            return log_f, log_i + log_g(k_h), None
        log_abs, sign = _signed_log(k_h)
        return log_f, log_i + log_abs, sign

    def extra_repr(self) -> str:
        extra = "" if self.candidate_activation == "g" else f", candidate_activation={self.candidate_activation!r}"
        return f"{self.input_size}, {self.hidden_size}{extra}"
