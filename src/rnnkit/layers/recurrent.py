"""Keras-style recurrent layers: ``SimpleRNN``, ``LSTM`` and ``GRU``.

Each is a thin wrapper over the batch-first :mod:`rnnkit.nn` layer of the same kind, built on
the first call (the input size is read from the data). The wrapper adds Keras' arguments and
return conventions; the sequence work (masks on either padding side, fused kernels, variational
dropout, stateful mode) happens in :mod:`rnnkit.nn`, so both APIs share its speed and tests.

Keras argument -> ``rnnkit.nn`` mapping:

* ``dropout`` -> ``input_dropout`` and ``recurrent_dropout`` -> ``recurrent_dropout``: one mask
  per sequence, as Keras does (both run on the reference scan while training).
* ``use_cudnn``: ``"auto"`` -> ``implementation="auto"`` (fused ``torch.nn`` kernel when it computes
  the call exactly, else the reference scan); ``True`` -> ``"fused"`` (fails with the reason when it
  cannot); ``False`` -> ``"reference"``.
* ``activation`` / ``recurrent_activation``: the defaults (``tanh`` / ``sigmoid``) run the fused
  cells. Any other registered activation runs a cell that honours it on the reference scan
  (:class:`KerasLSTMCell`, :class:`KerasGRUCell`, :class:`KerasSimpleRNNCell`); with
  ``use_cudnn=True`` that is an error. ``SimpleRNN(activation="relu")`` stays fused.
* ``stateful`` -> ``stateful``; ``reset_states()`` forgets the carried state.
* ``go_backwards``: the time axis (and mask) is flipped before the scan and the output sequence
  is returned in processing order, as Keras does.

Differences from Keras: with a mask and ``return_sequences=True``, outputs at padded steps are
zero (Keras repeats the previous output); ``unroll`` is accepted and ignored;
regularizers and constraints are not supported (use ``weight_decay`` on the optimizer).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from ..cells import GRUCell, LSTMCell, RNNCell
from ..cells.base import State, apply_mask
from ..nn import GRU as NNGRU
from ..nn import LSTM as NNLSTM
from ..nn import RNN as NNRNN
from .activations import activation_name, get_activation
from .base import Layer, check_weight_list, register_layer, to_numpy
from .initializers import Initializer, get_initializer, initializer_name
from .keras_weights import keras_to_torch, torch_to_keras

_USE_CUDNN = {"auto": "auto", True: "fused", False: "reference"}


# -- cells that honour Keras' activation arguments (reference scan) ------------------------------
class KerasLSTMCell(LSTMCell):
    r"""LSTM step with configurable activations (Keras ``activation`` and ``recurrent_activation``).

    .. math::
        i, f, o = \rho(z_i), \rho(z_f), \rho(z_o),\quad g = \alpha(z_g),\quad
        c_t = f c_{t-1} + i g,\quad h_t = o\, \alpha(c_t)

    with :math:`\alpha` = ``activation`` and :math:`\rho` = ``recurrent_activation``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, activation: str = "tanh",
                 recurrent_activation: str = "sigmoid", **kwargs: Any) -> None:
        super().__init__(input_size, hidden_size, bias, **kwargs)
        self.activation, self.recurrent_activation = activation, recurrent_activation
        self._act, self._rec = get_activation(activation), get_activation(recurrent_activation)

    def recur(self, x_proj: Tensor, state: State, *, recurrent_mask: Tensor | None = None,
              return_gates: bool = False) -> tuple[Tensor, State, dict[str, Tensor] | None]:
        h, c = state
        z = x_proj + self._recurrent(apply_mask(h, recurrent_mask))
        z_i, z_f, z_g, z_o = z.chunk(4, dim=-1)
        i, f, o = self._rec(z_i), self._rec(z_f), self._rec(z_o)
        g = self._act(z_g)
        c = f * c + i * g
        h = o * self._act(c)
        gates = {"input": i, "forget": f, "cell_candidate": g, "output": o, "cell": c} if return_gates else None
        return h, (h, c), gates

    def fused_mode(self) -> str | None:
        return None


class KerasGRUCell(GRUCell):
    r"""GRU step with configurable activations; ``reset_after`` as in :class:`rnnkit.cells.GRUCell`.

    .. math::
        r, z = \rho(\cdot),\quad n = \alpha(\cdot),\quad h_t = (1 - z) n + z h_{t-1}
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, activation: str = "tanh",
                 recurrent_activation: str = "sigmoid", reset_after: bool = True, **kwargs: Any) -> None:
        super().__init__(input_size, hidden_size, bias, reset_after=reset_after, **kwargs)
        self.activation, self.recurrent_activation = activation, recurrent_activation
        self._act, self._rec = get_activation(activation), get_activation(recurrent_activation)

    def recur(self, x_proj: Tensor, state: State, *, recurrent_mask: Tensor | None = None,
              return_gates: bool = False) -> tuple[Tensor, State, dict[str, Tensor] | None]:
        (h,) = state
        h_in = apply_mask(h, recurrent_mask)
        x_r, x_z, x_n = x_proj.chunk(3, dim=-1)
        size = self.hidden_size
        b_hh = self.bias_hh
        if self.reset_after:
            h_r, h_z, h_n = self._recurrent(h_in).chunk(3, dim=-1)
            r, z = self._rec(x_r + h_r), self._rec(x_z + h_z)
            n = self._act(x_n + r * h_n)
        else:
            h_rz = torch.nn.functional.linear(h_in, self.weight_hh[: 2 * size], None if b_hh is None else b_hh[: 2 * size])
            h_r, h_z = h_rz.chunk(2, dim=-1)
            r, z = self._rec(x_r + h_r), self._rec(x_z + h_z)
            n = self._act(x_n + torch.nn.functional.linear(r * h_in, self.weight_hh[2 * size:],
                                                           None if b_hh is None else b_hh[2 * size:]))
        h = (1 - z) * n + z * h
        return h, (h,), ({"reset": r, "update": z, "candidate": n} if return_gates else None)

    def fused_mode(self) -> str | None:
        return None


class KerasSimpleRNNCell(RNNCell):
    r"""Elman step with any activation: :math:`h_t = \alpha(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, activation: str = "tanh",
                 **kwargs: Any) -> None:
        super().__init__(input_size, hidden_size, bias, "tanh", **kwargs)
        self.activation = activation
        self._act = get_activation(activation)

    def recur(self, x_proj: Tensor, state: State, *, recurrent_mask: Tensor | None = None,
              return_gates: bool = False) -> tuple[Tensor, State, dict[str, Tensor] | None]:
        (h,) = state
        pre = x_proj + torch.nn.functional.linear(apply_mask(h, recurrent_mask), self.weight_hh, self.bias_hh)
        h = self._act(pre)
        return h, (h,), ({"pre_activation": pre} if return_gates else None)

    def fused_mode(self) -> str | None:
        return None


# -- the layers -----------------------------------------------------------------------------------
class _KerasRNN(Layer):
    """Shared plumbing of SimpleRNN, LSTM and GRU (see the module docstring)."""

    supports_masking = True
    _kind = ""  # "lstm", "gru", "simple_rnn"
    _gates = 1
    _default_recurrent_activation: str | None = None

    def __init__(self, units: int, activation: str | None = "tanh", recurrent_activation: str | None = None,
                 use_bias: bool = True, kernel_initializer: str | Initializer = "glorot_uniform",
                 recurrent_initializer: str | Initializer = "orthogonal",
                 bias_initializer: str | Initializer = "zeros", dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 use_cudnn: str | bool = "auto", seed: int | None = None, **kwargs: Any) -> None:
        kwargs.pop("implementation", None)  # Keras 2 (1 or 2): no effect
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int | np.integer) or units < 1:
            raise ValueError(f"{type(self).__name__} units must be a positive integer, got {units!r}")
        if use_cudnn not in _USE_CUDNN:
            raise ValueError(f"use_cudnn must be 'auto', True or False, got {use_cudnn!r}")
        self.units = int(units)
        self.activation = activation_name(activation)
        rec = recurrent_activation if recurrent_activation is not None else self._default_recurrent_activation
        self.recurrent_activation = activation_name(rec) if rec is not None else None
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        for init in (kernel_initializer, recurrent_initializer, bias_initializer):
            get_initializer(init)  # fail early on unknown names
        if not (0.0 <= float(dropout) < 1.0 and 0.0 <= float(recurrent_dropout) < 1.0):
            raise ValueError(f"dropout and recurrent_dropout must be in [0, 1), got {dropout} and {recurrent_dropout}")
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.stateful = stateful
        self.unroll = unroll
        self.use_cudnn = use_cudnn
        self.seed = seed
        self.rnn: nn.Module | None = None

    # -- construction --------------------------------------------------------------------------
    def _custom_activations(self) -> bool:
        return self.activation != "tanh" or self.recurrent_activation not in (None, "sigmoid")

    def _make_rnn(self, input_size: int) -> nn.Module:
        raise NotImplementedError

    def _common_rnn_kwargs(self) -> dict[str, Any]:
        return {"bias": self.use_bias, "batch_first": True, "input_dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout, "implementation": _USE_CUDNN[self.use_cudnn],
                "stateful": self.stateful}

    def build(self, input_shape: Any) -> None:
        if not isinstance(input_shape, tuple) or len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} {self.name!r} expects input [batch, time, features], "
                             f"got shape {list(input_shape) if isinstance(input_shape, tuple) else input_shape}; "
                             "put an Embedding before it for token ids, or reshape features to [B, T, F]")
        self.rnn = self._make_rnn(int(input_shape[-1]))
        self._initialize()
        if self.use_bias and not (self._reset_after() and self._kind == "gru"):
            # Keras has one bias where torch adds bias_ih and bias_hh: bias_hh stays a constant 0, for trained
            # too it would take the same gradient as bias_ih and double the bias's step (SGD: 0.1 off Keras's
            # bias after one step at lr 0.5). trainable=True/False leaves it frozen (non_trainable_parameter_names).
            frozen = tuple(n for n, _ in self.rnn.named_parameters() if n.startswith("bias_hh"))
            object.__setattr__(self.rnn, "non_trainable_parameter_names", frozen)
            object.__setattr__(self.rnn, "keras_hidden_parameter_names", frozen)  # not counted: Keras has no such weight
            for name, p in self.rnn.named_parameters():
                if name in frozen:
                    p.requires_grad_(False)

    @torch.no_grad()
    def _initialize(self) -> None:
        rnn: Any = self.rnn
        assert rnn is not None
        get_initializer(self.kernel_initializer)(rnn.weight_ih_l0)
        get_initializer(self.recurrent_initializer)(rnn.weight_hh_l0)
        if self.use_bias:
            get_initializer(self.bias_initializer)(rnn.bias_ih_l0)
            if self._reset_after() and self._kind == "gru":  # Keras' bias [2, 3H]: both rows initialised
                get_initializer(self.bias_initializer)(rnn.bias_hh_l0)
            else:  # Keras has one bias: bias_hh stays 0 (the two are summed in get_weights)
                rnn.bias_hh_l0.zero_()
            if self._kind == "lstm" and getattr(self, "unit_forget_bias", False):
                rnn.bias_ih_l0[self.units:2 * self.units].fill_(1.0)

    # -- running -------------------------------------------------------------------------------
    def _initial_hx(self, initial_state: Any, batch: int) -> Any:
        if initial_state is None:
            return None
        initial_state = self._autocast(initial_state)  # NumPy arrays and float64, as for the inputs
        states = list(initial_state) if isinstance(initial_state, list | tuple) else [initial_state]
        n = 2 if self._kind == "lstm" else 1
        if len(states) != n:
            raise ValueError(f"{type(self).__name__} {self.name!r} takes initial_state as a list of {n} tensor(s) "
                             f"of shape [batch, {self.units}], got {len(states)}")
        for k, s in enumerate(states):
            if not isinstance(s, Tensor) or tuple(s.shape) != (batch, self.units):
                got = list(s.shape) if isinstance(s, Tensor) else type(s).__name__
                raise ValueError(f"initial_state[{k}] of {self.name!r} must have shape [{batch}, {self.units}], got {got}")
        hx = tuple(s.unsqueeze(0).contiguous() for s in states)
        return hx if n > 1 else hx[0]

    def call(self, inputs: Tensor, mask: Any = None, initial_state: Any = None, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected call argument(s) {', '.join(sorted(kwargs))}")
        assert self.rnn is not None
        if inputs.dim() != 3:
            raise ValueError(f"{type(self).__name__} {self.name!r} expects input [batch, time, features], "
                             f"got shape {list(inputs.shape)}")
        x, m = inputs, mask
        if self.go_backwards:
            x = x.flip(1)
            m = None if m is None else m.flip(1)
        hx = self._initial_hx(initial_state, x.shape[0])
        if self.stateful:
            self.__dict__["_state_batch"] = int(x.shape[0])  # the size ``states`` has after a reset
        out, h_n = self.rnn(x, hx, mask=m)
        states = list(h_n) if isinstance(h_n, tuple) else [h_n]
        finals = [s[-1] for s in states]  # [B, H] each: top layer, last real step
        output = out if self.return_sequences else finals[0]
        return [output, *finals] if self.return_state else output

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        out_mask = None
        if self.return_sequences and mask is not None:
            out_mask = mask.flip(1) if self.go_backwards else mask
        if self.return_state:
            return [out_mask] + [None] * (2 if self._kind == "lstm" else 1)
        return out_mask

    def reset_states(self) -> None:
        """Forget the carried state of a ``stateful`` layer."""
        if self.rnn is not None:
            self.rnn.reset_state()  # type: ignore[operator]

    reset_state = reset_states

    @property
    def states(self) -> list[Tensor] | None:
        """The carried state of a ``stateful`` layer, as Keras' ``layer.states``: ``[h, c]`` for an
        ``LSTM``, ``[h]`` otherwise, each ``[batch, units]`` (detached; pass them as another layer's
        ``initial_state``). Zeros after ``reset_states()``; ``None`` for a layer that is not stateful
        or has not run yet (Keras: ``None`` until it is built).
        """
        if not self.stateful or self.rnn is None:
            return None
        carried = getattr(self.rnn, "state", None)
        n = 2 if self._kind == "lstm" else 1
        if carried is None:
            batch = self.__dict__.get("_state_batch")
            if batch is None:
                return None
            weight = cast(Tensor, self.rnn.weight_hh_l0)
            return [torch.zeros(batch, self.units, dtype=weight.dtype, device=weight.device) for _ in range(n)]
        parts = carried if isinstance(carried, tuple) else (carried,)
        return [p[-1].detach() for p in parts]

    @property
    def implementation_in_use(self) -> str:
        """``"fused"`` or ``"reference"``: which path a plain (unmasked, inference) call takes."""
        if self.rnn is None:
            return "unbuilt"
        return "fused" if self.rnn._use_fused(None, False) else "reference"  # type: ignore[operator]

    # -- Keras weights -------------------------------------------------------------------------
    def _torch_params(self) -> dict[str, np.ndarray]:
        assert self.rnn is not None
        return {k: to_numpy(v) for k, v in self.rnn.named_parameters()}

    def _reset_after(self) -> bool:
        return True

    def get_weights(self) -> list[np.ndarray]:
        if self.rnn is None:
            return []
        return torch_to_keras(self._kind, self._torch_params(), reset_after=self._reset_after())

    def set_weights(self, weights: list[np.ndarray]) -> None:
        if self.rnn is None:
            check_weight_list(self, weights, [])
        assert self.rnn is not None
        expected = [tuple(p.shape) for p in self.get_weights()]
        check_weight_list(self, [np.asarray(w) for w in weights], expected)
        params = keras_to_torch(self._kind, list(weights), self.units, use_bias=self.use_bias,
                                reset_after=self._reset_after())
        own = dict(self.rnn.named_parameters())
        with torch.no_grad():
            for name, value in params.items():
                own[name].copy_(torch.as_tensor(value, dtype=own[name].dtype))

    # -- config --------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                      kernel_initializer=initializer_name(self.kernel_initializer),
                      recurrent_initializer=initializer_name(self.recurrent_initializer),
                      bias_initializer=initializer_name(self.bias_initializer), dropout=self.dropout,
                      recurrent_dropout=self.recurrent_dropout, return_sequences=self.return_sequences,
                      return_state=self.return_state, go_backwards=self.go_backwards, stateful=self.stateful,
                      unroll=self.unroll, use_cudnn=self.use_cudnn, seed=self.seed)
        if self.recurrent_activation is not None:
            config["recurrent_activation"] = self.recurrent_activation
        return config

    def extra_repr(self) -> str:
        return f"units={self.units}, return_sequences={self.return_sequences}, name={self.name!r}"


@register_layer
class SimpleRNN(_KerasRNN):
    """Fully connected recurrent layer: :math:`h_t = \\alpha(x_t W + h_{t-1} U + b)` (Keras ``SimpleRNN``).

    Args:
        units: hidden size ``H``.
        activation: ``"tanh"`` (default) or ``"relu"`` run the fused kernel; others the reference scan.
        use_bias, kernel_initializer, recurrent_initializer, bias_initializer: as in Keras.
        dropout: variational dropout on the inputs (one mask per sequence).
        recurrent_dropout: variational dropout on the recurrent state.
        return_sequences: return ``[B, T, H]`` instead of the last output ``[B, H]``.
        return_state: also return the final state: ``[output, h]``.
        go_backwards: process the sequence in reverse.
        stateful: carry the final state into the next batch (``reset_states()`` to forget it).
        use_cudnn: ``"auto"``, ``True`` (fused kernel or error) or ``False`` (reference scan).

    Call arguments: ``inputs`` ``[B, T, F]``; ``mask`` ``[B, T]``; ``initial_state`` ``[h]``.
    """

    _kind = "simple_rnn"
    _gates = 1

    def __init__(self, units: int, activation: str | None = "tanh", **kwargs: Any) -> None:
        if "recurrent_activation" in kwargs:
            raise TypeError("SimpleRNN has no recurrent_activation")
        super().__init__(units, activation, **kwargs)

    def _custom_activations(self) -> bool:
        return self.activation not in ("tanh", "relu")

    def _make_rnn(self, input_size: int) -> nn.Module:
        kw = self._common_rnn_kwargs()
        if self._custom_activations():
            return NNRNN(input_size, self.units, cell=KerasSimpleRNNCell,
                         cell_options={"activation": self.activation}, **kw)
        return NNRNN(input_size, self.units, nonlinearity=self.activation, **kw)


@register_layer
class LSTM(_KerasRNN):
    """Long short-term memory layer (Keras ``LSTM``; Hochreiter and Schmidhuber 1997).

    Args:
        units: hidden size ``H``.
        activation: cell activation, ``"tanh"``.
        recurrent_activation: gate activation, ``"sigmoid"``. Non-default activations run
            :class:`KerasLSTMCell` on the reference scan.
        use_bias: learn biases.
        kernel_initializer: ``"glorot_uniform"``; recurrent_initializer: ``"orthogonal"``;
            bias_initializer: ``"zeros"`` (Keras defaults).
        unit_forget_bias: start the forget-gate bias at 1 (Jozefowicz et al. 2015).
        dropout, recurrent_dropout: variational dropout rates (inputs, recurrent state).
        return_sequences, return_state, go_backwards, stateful, use_cudnn: see :class:`SimpleRNN`.

    Call arguments: ``inputs`` ``[B, T, F]``; ``mask`` ``[B, T]`` (either padding side);
    ``initial_state`` ``[h, c]``, each ``[B, H]``.

    Returns: ``[B, H]`` (last output), ``[B, T, H]`` with ``return_sequences``, and with
    ``return_state`` the list ``[output, h, c]``.

    Example:
        >>> model = Sequential([Embedding(1000, 32), LSTM(64), Dense(2, activation="softmax")])
    """

    _kind = "lstm"
    _gates = 4
    _default_recurrent_activation = "sigmoid"

    def __init__(self, units: int, activation: str | None = "tanh", recurrent_activation: str = "sigmoid",
                 use_bias: bool = True, unit_forget_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(units, activation, recurrent_activation, use_bias, **kwargs)
        self.unit_forget_bias = unit_forget_bias

    def _make_rnn(self, input_size: int) -> nn.Module:
        kw = self._common_rnn_kwargs()
        if self._custom_activations():
            return NNLSTM(input_size, self.units, cell=KerasLSTMCell,
                          cell_options={"activation": self.activation,
                                        "recurrent_activation": self.recurrent_activation}, **kw)
        return NNLSTM(input_size, self.units, **kw)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


@register_layer
class GRU(_KerasRNN):
    """Gated recurrent unit layer (Keras ``GRU``; Cho et al. 2014).

    Args:
        units: hidden size ``H``.
        activation: ``"tanh"``; recurrent_activation: ``"sigmoid"``.
        reset_after: apply the reset gate after the recurrent matmul (Keras 3 and cuDNN default,
            the fused ``torch.nn.GRU`` form). ``reset_after=False`` (Cho et al.) runs the
            reference scan.
        Other arguments: see :class:`LSTM`.

    Call arguments: ``inputs`` ``[B, T, F]``; ``mask`` ``[B, T]``; ``initial_state`` ``[h]``.
    """

    _kind = "gru"
    _gates = 3
    _default_recurrent_activation = "sigmoid"

    def __init__(self, units: int, activation: str | None = "tanh", recurrent_activation: str = "sigmoid",
                 use_bias: bool = True, reset_after: bool = True, **kwargs: Any) -> None:
        super().__init__(units, activation, recurrent_activation, use_bias, **kwargs)
        self.reset_after = reset_after

    def _reset_after(self) -> bool:
        return self.reset_after

    def _make_rnn(self, input_size: int) -> nn.Module:
        kw = self._common_rnn_kwargs()
        if self._custom_activations():
            return NNGRU(input_size, self.units, cell=KerasGRUCell,
                         cell_options={"activation": self.activation, "reset_after": self.reset_after,
                                       "recurrent_activation": self.recurrent_activation}, **kw)
        if not self.reset_after:
            return NNGRU(input_size, self.units, cell="gru_reset_before", **kw)
        return NNGRU(input_size, self.units, **kw)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "reset_after": self.reset_after}
