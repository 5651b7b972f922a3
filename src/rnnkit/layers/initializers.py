"""Weight initializers by Keras name, applied in place to ``torch`` parameters.

Keras stores a dense kernel as ``[in, out]`` and ``torch`` as ``[out, in]``; the fan-based
schemes (Glorot, He, LeCun) read the fans from the ``torch`` layout, so they give the bounds
Keras gives the transposed matrix (for an LSTM kernel ``[4H, I]``: ``fan_in = I``,
``fan_out = 4H``, as for Keras' ``[I, 4H]``), and ``orthogonal`` on ``[4H, H]`` is the
transpose of Keras' orthogonal ``[H, 4H]``. A convolution kernel ``[filters, in, k]`` counts its
receptive field too (``fan_in = in * k``, ``fan_out = filters * k``), as Keras does for
``[k, in, filters]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn

Initializer = Callable[[Tensor], object]


def _fans(t: Tensor) -> tuple[int, int]:
    if t.dim() < 2:
        return t.numel(), t.numel()
    receptive = math.prod(t.shape[2:])  # a convolution kernel [out, in, *kernel]: 1 for a matrix
    fan_out, fan_in = t.shape[0] * receptive, t.shape[1] * receptive  # torch layout [out, in]
    return fan_in, fan_out


_TRUNCATED_STD = 0.87962566103423978  # std of a unit normal truncated at +-2 (Keras' VarianceScaling constant)


def _scaled_truncated_normal(t: Tensor, variance: float) -> Tensor:
    """Truncated normal (at two standard deviations) whose variance after truncation is ``variance``.

    Keras' ``VarianceScaling`` widens the normal by ``1 / 0.8796...`` before truncating, so
    ``glorot_normal``, ``he_normal`` and ``lecun_normal`` keep the variance their names promise.
    """
    std = math.sqrt(variance) / _TRUNCATED_STD
    return nn.init.trunc_normal_(t, 0.0, std, -2 * std, 2 * std)


def glorot_uniform(t: Tensor) -> Tensor:
    """U(-l, l), ``l = sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans(t)
    limit = math.sqrt(6.0 / max(1, fan_in + fan_out))
    return nn.init.uniform_(t, -limit, limit)


def glorot_normal(t: Tensor) -> Tensor:
    """Truncated normal with variance ``2 / (fan_in + fan_out)`` (after truncation, as Keras)."""
    fan_in, fan_out = _fans(t)
    return _scaled_truncated_normal(t, 2.0 / max(1, fan_in + fan_out))


def he_uniform(t: Tensor) -> Tensor:
    """U(-l, l), ``l = sqrt(6 / fan_in)``."""
    limit = math.sqrt(6.0 / max(1, _fans(t)[0]))
    return nn.init.uniform_(t, -limit, limit)


def he_normal(t: Tensor) -> Tensor:
    """Truncated normal with variance ``2 / fan_in`` (after truncation, as Keras)."""
    return _scaled_truncated_normal(t, 2.0 / max(1, _fans(t)[0]))


def lecun_uniform(t: Tensor) -> Tensor:
    """U(-l, l), ``l = sqrt(3 / fan_in)``."""
    limit = math.sqrt(3.0 / max(1, _fans(t)[0]))
    return nn.init.uniform_(t, -limit, limit)


def lecun_normal(t: Tensor) -> Tensor:
    """Truncated normal with variance ``1 / fan_in`` (after truncation, as Keras)."""
    return _scaled_truncated_normal(t, 1.0 / max(1, _fans(t)[0]))


def orthogonal(t: Tensor) -> Tensor:
    """A (semi-)orthogonal matrix."""
    return nn.init.orthogonal_(t)


def zeros(t: Tensor) -> Tensor:
    """All zeros."""
    return nn.init.zeros_(t)


def ones(t: Tensor) -> Tensor:
    """All ones."""
    return nn.init.ones_(t)


def random_uniform(t: Tensor) -> Tensor:
    """U(-0.05, 0.05) (Keras ``RandomUniform`` defaults; the ``Embedding`` default)."""
    return nn.init.uniform_(t, -0.05, 0.05)


def random_normal(t: Tensor) -> Tensor:
    """N(0, 0.05) (Keras ``RandomNormal`` defaults)."""
    return nn.init.normal_(t, 0.0, 0.05)


def truncated_normal(t: Tensor) -> Tensor:
    """N(0, 0.05) truncated at two standard deviations."""
    return nn.init.trunc_normal_(t, 0.0, 0.05, -0.1, 0.1)


def torch_default(t: Tensor) -> Tensor:
    """Leave the ``torch.nn`` initialisation in place (U(-1/sqrt(H), 1/sqrt(H)) for recurrent layers)."""
    return t


INITIALIZERS: dict[str, Initializer] = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "lecun_uniform": lecun_uniform,
    "lecun_normal": lecun_normal,
    "orthogonal": orthogonal,
    "zeros": zeros,
    "ones": ones,
    "uniform": random_uniform,
    "random_uniform": random_uniform,
    "normal": random_normal,
    "random_normal": random_normal,
    "truncated_normal": truncated_normal,
    "torch_default": torch_default,
}


def get_initializer(spec: str | Initializer) -> Initializer:
    """Resolve an initializer name or pass a callable ``fn(tensor)`` through.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    if isinstance(spec, str):
        key = spec.lower()
        if key not in INITIALIZERS:
            raise ValueError(f"unknown initializer {spec!r}; choose one of {', '.join(sorted(INITIALIZERS))}")
        return INITIALIZERS[key]
    if callable(spec):
        return spec
    raise TypeError(f"initializer must be a name or a function, got {type(spec).__name__}")


def initializer_name(spec: str | Initializer) -> str:
    """The registry name of an initializer, for configs.

    Raises:
        ValueError: for an unregistered function (the layer could not be saved).
    """
    if isinstance(spec, str):
        get_initializer(spec)
        return spec.lower()
    for name, fn in INITIALIZERS.items():
        if fn is spec:
            return name
    raise ValueError(f"initializer {getattr(spec, '__name__', spec)!r} is not registered, so the layer cannot "
                     "be saved; add it to rnnkit.layers.initializers.INITIALIZERS first")

