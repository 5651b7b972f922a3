"""Convert recurrent weights between Keras 3 and ``torch.nn`` layouts.

Keras stores one recurrent layer as ``kernel [I, G*H]``, ``recurrent_kernel [H, G*H]`` and
one ``bias``; ``torch.nn`` as ``weight_ih [G*H, I]``, ``weight_hh [G*H, H]``, ``bias_ih`` and
``bias_hh`` ``[G*H]``. Gate blocks:

=========  ===================  ==================  ============================================
layer      Keras order          torch order         bias
=========  ===================  ==================  ============================================
LSTM       i, f, c, o           i, f, g, o (same)   Keras ``[4H]`` -> ``bias_ih``; ``bias_hh = 0``
GRU        z, r, h              r, z, n (swap 0, 1) reset_after: Keras ``[2, 3H]`` = (input,
                                                    recurrent) -> (``bias_ih``, ``bias_hh``);
                                                    otherwise ``[3H]`` -> ``bias_ih``
SimpleRNN  one block            one block           ``[H]`` -> ``bias_ih``; ``bias_hh = 0``
=========  ===================  ==================  ============================================

Going back to Keras, the two torch biases are summed where Keras has one (exact: both are
added before any nonlinearity in those cells).
"""

from __future__ import annotations

import numpy as np

_GRU_KERAS_TO_TORCH = (1, 0, 2)  # torch block k takes Keras block _GRU_KERAS_TO_TORCH[k] (r<-r, z<-z, n<-h)


def _blocks(a: np.ndarray, n: int, axis: int) -> list[np.ndarray]:
    if a.shape[axis] % n:
        raise ValueError(f"expected a dimension divisible by {n} gates, got shape {list(a.shape)}")
    return np.split(a, n, axis=axis)


def _reorder(a: np.ndarray, order: tuple[int, ...], axis: int) -> np.ndarray:
    parts = _blocks(a, len(order), axis)
    return np.concatenate([parts[k] for k in order], axis=axis)


_GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}


def _gates(kind: str) -> int:
    if kind not in _GATES:
        raise ValueError(f"unknown recurrent layer kind {kind!r}; use one of {', '.join(_GATES)}")
    return _GATES[kind]


def _check_2d(name: str, a: np.ndarray, rows: int | None, cols: int) -> None:
    if a.ndim != 2 or (rows is not None and a.shape[0] != rows) or a.shape[1] != cols:
        want = f"[{rows if rows is not None else 'I'}, {cols}]"
        raise ValueError(f"Keras {name} must have shape {want}, got {list(a.shape)}")


def keras_to_torch(kind: str, weights: list[np.ndarray], units: int, *, use_bias: bool = True,
                   reset_after: bool = True) -> dict[str, np.ndarray]:
    """Keras ``layer.get_weights()`` of one recurrent layer -> ``torch.nn`` parameters of layer 0.

    Args:
        kind: ``"lstm"``, ``"gru"`` or ``"simple_rnn"``.
        weights: ``[kernel, recurrent_kernel(, bias)]`` as Keras returns them.
        units: the layer's ``units`` (``H``).
        use_bias: whether the Keras layer has a bias.
        reset_after: for GRU, Keras' ``reset_after``.

    Returns:
        ``{"weight_ih_l0": ..., "weight_hh_l0": ..., "bias_ih_l0": ..., "bias_hh_l0": ...}``.
    """
    gates = _gates(kind)
    expected = 3 if use_bias else 2
    if len(weights) != expected:
        raise ValueError(f"a Keras {kind} layer with use_bias={use_bias} has {expected} weight arrays "
                         f"(kernel, recurrent_kernel{', bias' if use_bias else ''}), got {len(weights)}")
    kernel, recurrent = (np.asarray(w, dtype=np.float32) for w in weights[:2])
    _check_2d("kernel", kernel, None, gates * units)
    _check_2d("recurrent_kernel", recurrent, units, gates * units)
    order = _GRU_KERAS_TO_TORCH if kind == "gru" else tuple(range(gates))
    out = {
        "weight_ih_l0": _reorder(kernel, order, 1).T.copy(),
        "weight_hh_l0": _reorder(recurrent, order, 1).T.copy(),
    }
    if use_bias:
        bias = np.asarray(weights[2], dtype=np.float32)
        if kind == "gru" and reset_after:
            if bias.shape != (2, gates * units):
                raise ValueError(f"Keras GRU(reset_after=True) bias must have shape [2, {gates * units}], "
                                 f"got {list(bias.shape)}")
            out["bias_ih_l0"] = _reorder(bias[0], order, 0).copy()
            out["bias_hh_l0"] = _reorder(bias[1], order, 0).copy()
        else:
            if bias.shape != (gates * units,):
                raise ValueError(f"Keras {kind} bias must have shape [{gates * units}], got {list(bias.shape)}")
            out["bias_ih_l0"] = _reorder(bias, order, 0).copy()
            out["bias_hh_l0"] = np.zeros_like(bias)
    return out


def torch_to_keras(kind: str, params: dict[str, np.ndarray], *, reset_after: bool = True) -> list[np.ndarray]:
    """``torch.nn`` parameters of layer 0 -> Keras ``[kernel, recurrent_kernel(, bias)]``.

    Args:
        kind: ``"lstm"``, ``"gru"`` or ``"simple_rnn"``.
        params: ``weight_ih_l0``, ``weight_hh_l0`` and, with a bias, ``bias_ih_l0``, ``bias_hh_l0``.
        reset_after: for GRU, whether the biases stay separate (Keras ``[2, 3H]``).

    Returns:
        The arrays in Keras order, ready for ``keras_layer.set_weights``.
    """
    gates = _gates(kind)
    missing = [k for k in ("weight_ih_l0", "weight_hh_l0") if k not in params]
    if "bias_ih_l0" in params and "bias_hh_l0" not in params:
        missing.append("bias_hh_l0")
    if missing:
        raise ValueError(f"torch {kind} parameters lack {', '.join(missing)}; pass the layer-0 parameters "
                         "weight_ih_l0, weight_hh_l0 (and bias_ih_l0, bias_hh_l0)")
    order = _GRU_KERAS_TO_TORCH if kind == "gru" else tuple(range(gates))  # the swap is its own inverse
    out = [_reorder(params["weight_ih_l0"].T, order, 1).copy(), _reorder(params["weight_hh_l0"].T, order, 1).copy()]
    if "bias_ih_l0" in params:
        b_ih, b_hh = params["bias_ih_l0"], params["bias_hh_l0"]
        if kind == "gru" and reset_after:
            out.append(np.stack([_reorder(b_ih, order, 0), _reorder(b_hh, order, 0)]))
        else:
            out.append(_reorder(b_ih + b_hh, order, 0).copy())
    return out
