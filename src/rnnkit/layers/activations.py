"""Activation functions by Keras name.

``get_activation("relu")`` returns a function of one tensor; ``None`` and ``"linear"`` give the
identity. Softmax and log-softmax act on the last axis, as in Keras. Names are what layers
store in their config, so a callable passed as ``activation=`` must be one of these functions
(or registered with :func:`register_activation`) for the model to be saved.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Activation = Callable[[Tensor], Tensor]


def linear(x: Tensor) -> Tensor:
    """Identity (Keras ``"linear"``)."""
    return x


def softmax(x: Tensor) -> Tensor:
    """Softmax over the last axis."""
    return torch.softmax(x, dim=-1)


def log_softmax(x: Tensor) -> Tensor:
    """Log-softmax over the last axis."""
    return torch.log_softmax(x, dim=-1)


def hard_sigmoid(x: Tensor) -> Tensor:
    """Keras 3 hard sigmoid: ``relu6(x + 3) / 6``."""
    return F.relu6(x + 3.0) / 6.0


def leaky_relu(x: Tensor) -> Tensor:
    """Keras' leaky ReLU: slope ``0.2`` below zero (``torch``'s default is ``0.01``)."""
    return F.leaky_relu(x, negative_slope=0.2)


def softsign(x: Tensor) -> Tensor:
    """``x / (1 + |x|)``."""
    return F.softsign(x)


ACTIVATIONS: dict[str, Activation] = {
    "linear": linear,
    "relu": torch.relu,
    "relu6": F.relu6,
    "leaky_relu": leaky_relu,
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "softplus": F.softplus,
    "softsign": softsign,
    "exponential": torch.exp,
    "softmax": softmax,
    "log_softmax": log_softmax,
}


def register_activation(name: str, fn: Activation) -> None:
    """Make ``activation=name`` resolve to ``fn`` in every layer (and in saved configs)."""
    ACTIVATIONS[name] = fn


def get_activation(spec: str | Activation | None) -> Activation:
    """Resolve an activation name (or function, or ``None`` for linear).

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    if spec is None:
        return linear
    if isinstance(spec, str):
        key = spec.lower()
        if key not in ACTIVATIONS:
            raise ValueError(f"unknown activation {spec!r}; choose one of {', '.join(sorted(ACTIVATIONS))}")
        return ACTIVATIONS[key]
    if callable(spec):
        return spec
    raise TypeError(f"activation must be a name, a function or None, got {type(spec).__name__}")


def activation_name(spec: str | Activation | None) -> str:
    """The registry name of an activation, for configs.

    Raises:
        ValueError: for a function that is not registered (it could not be saved).
    """
    if spec is None:
        return "linear"
    if isinstance(spec, str):
        get_activation(spec)
        return spec.lower()
    for name, fn in ACTIVATIONS.items():
        if fn is spec:
            return name
    raise ValueError(f"activation {getattr(spec, '__name__', spec)!r} is not registered, so the layer cannot be "
                     "saved; call rnnkit.layers.register_activation(name, fn) first")


def known_activation_name(spec: str | Activation | None) -> str:
    """The registry name of an activation, or ``""`` for an unregistered function."""
    try:
        return activation_name(spec)
    except ValueError:
        return ""
