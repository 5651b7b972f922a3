"""Normalization layers with Keras semantics: ``BatchNormalization`` and ``LayerNormalization``.

Both pass masks through. ``BatchNormalization`` computes its batch statistics over the real
steps only when a mask comes with the input (as Keras 3 does). Statistics are computed in
float32 for half-precision inputs.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Layer, register_layer
from .initializers import Initializer, get_initializer, initializer_name

_KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): guards the masked moments against empty batches


def _axis(owner: str, axis: Any, rank: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -rank <= int(axis) < rank:
        raise ValueError(f"{owner} axis={axis!r} is out of range for inputs of rank {rank}")
    ax = int(axis) % rank
    if ax == 0:
        raise ValueError(f"{owner} cannot normalize along the batch axis (axis={axis!r}); use the feature axis "
                         "(axis=-1, the default)")
    return ax


def _check_float(owner: str, name: str, value: Any, low: float, high: float | None = None) -> float:
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not (number >= low and (high is None or number <= high)):
        limits = f"in [{low}, {high}]" if high is not None else f"at least {low}"
        raise ValueError(f"{owner} {name} must be a number {limits}, got {value!r}")
    return number


def _compute_dtype(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@register_layer
class BatchNormalization(Layer):
    """Normalize each feature with the batch's mean and variance in training, and with moving
    averages of them at inference (Keras ``BatchNormalization``).

    ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta``, with ``mean`` and ``var`` (biased)
    taken over every axis but ``axis``. After each training batch
    ``moving = momentum * moving + (1 - momentum) * batch_statistic``: ``momentum`` is Keras' keep
    rate (``torch.nn.BatchNorm1d(momentum=1 - momentum)`` keeps an *unbiased* moving variance;
    this layer keeps the biased one, as Keras). With ``trainable=False`` the layer runs in
    inference mode even in training, as in Keras.

    Args:
        axis: the feature axis (default ``-1``: ``[B, F]`` and ``[B, T, F]``).
        momentum: moving-average keep rate, Keras default 0.99.
        epsilon: added to the variance, Keras default 1e-3.
        center: learn ``beta``.
        scale: learn ``gamma``.
        beta_initializer, gamma_initializer, moving_mean_initializer,
        moving_variance_initializer: Keras defaults ``"zeros"``, ``"ones"``, ``"zeros"``, ``"ones"``.
        synchronized: accepted for compatibility (statistics stay per device); must be false.

    Parameters (``torch.nn.BatchNorm1d`` names): ``weight`` (gamma), ``bias`` (beta),
    ``running_mean`` and ``running_var``; the last two are non-trainable parameters, so
    ``summary()`` counts them as Keras does and :meth:`get_weights` gives Keras' order
    ``[gamma, beta, moving_mean, moving_variance]``.
    """

    supports_masking = True
    non_trainable_parameter_names: ClassVar[tuple[str, ...]] = ("running_mean", "running_var")

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer: str | Initializer = "zeros",
                 gamma_initializer: str | Initializer = "ones", moving_mean_initializer: str | Initializer = "zeros",
                 moving_variance_initializer: str | Initializer = "ones", synchronized: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ValueError(f"{owner} axis must be an integer (the feature axis), got {axis!r}")
        if synchronized:
            raise ValueError(f"{owner} synchronized=True is not supported; statistics are computed per device")
        self.axis: int = int(axis)
        self.momentum: float = _check_float(owner, "momentum", momentum, 0.0, 1.0)
        self.epsilon: float = _check_float(owner, "epsilon", epsilon, 0.0)
        self.center: bool = bool(center)
        self.scale: bool = bool(scale)
        self.beta_initializer: str | Initializer = beta_initializer
        self.gamma_initializer: str | Initializer = gamma_initializer
        self.moving_mean_initializer: str | Initializer = moving_mean_initializer
        self.moving_variance_initializer: str | Initializer = moving_variance_initializer
        for init in (beta_initializer, gamma_initializer, moving_mean_initializer, moving_variance_initializer):
            get_initializer(init)  # fail early on unknown names
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        self.running_mean: nn.Parameter | None = None
        self.running_var: nn.Parameter | None = None
        self._rank: int | None = None

    def build(self, input_shape: Any) -> None:
        rank = len(input_shape)
        ax = _axis(type(self).__name__, self.axis, rank)
        features = input_shape[ax]
        if features is None:
            raise ValueError(f"{type(self).__name__} {self.name!r} needs a fixed size on axis {self.axis}, got "
                             f"input shape {list(input_shape)}")

        def make(init: str | Initializer, trainable: bool = True) -> nn.Parameter:
            t = torch.empty(int(features))
            get_initializer(init)(t)
            return nn.Parameter(t, requires_grad=trainable)

        self._rank = rank
        if self.scale:
            self.weight = make(self.gamma_initializer)
        if self.center:
            self.bias = make(self.beta_initializer)
        self.running_mean = make(self.moving_mean_initializer, trainable=False)
        self.running_var = make(self.moving_variance_initializer, trainable=False)

    def _moments(self, x: Tensor, mask: Tensor | None, reduce: list[int]) -> tuple[Tensor, Tensor]:
        if mask is None:
            var, mean = torch.var_mean(x, dim=reduce, unbiased=False)
            return mean, var
        if mask.dim() != x.dim() - 1:
            raise ValueError(f"{type(self).__name__} {self.name!r} got a mask of shape {list(mask.shape)} for inputs "
                             f"of shape {list(x.shape)}; the mask must have one axis less than the inputs")
        weights = mask.unsqueeze(-1).expand_as(x).to(x.dtype)
        count = weights.sum(reduce, keepdim=True) + _KERAS_EPSILON
        mean = (x * weights).sum(reduce, keepdim=True) / count
        var = (((x - mean) * weights) ** 2).sum(reduce, keepdim=True) / count
        return mean.flatten(), var.flatten()

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        assert self.running_mean is not None and self.running_var is not None
        if inputs.dim() != self._rank:
            raise ValueError(f"{type(self).__name__} {self.name!r} was built for inputs of rank {self._rank}, got "
                             f"{list(inputs.shape)}")
        ax = self.axis % inputs.dim()
        features = self.running_mean.shape[0]
        if inputs.shape[ax] != features:
            raise ValueError(f"{type(self).__name__} {self.name!r} was built for {features} features on axis "
                             f"{self.axis}, got {inputs.shape[ax]} (input shape {list(inputs.shape)})")
        x = _compute_dtype(inputs)
        if self.training and self._trainable:
            mean, var = self._moments(x, mask, [d for d in range(x.dim()) if d != ax])
            with torch.no_grad():
                self.running_mean.mul_(self.momentum).add_(mean.detach().to(self.running_mean.dtype),
                                                           alpha=1.0 - self.momentum)
                self.running_var.mul_(self.momentum).add_(var.detach().to(self.running_var.dtype),
                                                          alpha=1.0 - self.momentum)
        else:
            mean, var = self.running_mean.detach().to(x.dtype), self.running_var.detach().to(x.dtype)
        shape = [1] * x.dim()
        shape[ax] = features
        inv = torch.rsqrt(var + self.epsilon)
        if self.weight is not None:
            inv = inv * self.weight.to(x.dtype)
        shift = -mean * inv
        if self.bias is not None:
            shift = shift + self.bias.to(x.dtype)
        return (x * inv.view(shape) + shift.view(shape)).to(inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(axis=self.axis, momentum=self.momentum, epsilon=self.epsilon, center=self.center,
                      scale=self.scale, beta_initializer=initializer_name(self.beta_initializer),
                      gamma_initializer=initializer_name(self.gamma_initializer),
                      moving_mean_initializer=initializer_name(self.moving_mean_initializer),
                      moving_variance_initializer=initializer_name(self.moving_variance_initializer))
        return config


@register_layer
class LayerNormalization(Layer):
    """Normalize each sample over ``axis`` (default: its features) with its own mean and variance
    (Keras ``LayerNormalization``): ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta``.

    Args:
        axis: an axis or a list of axes to normalize over (not the batch axis).
        epsilon: added to the variance, Keras default 1e-3.
        center: learn ``beta``.
        scale: learn ``gamma``.
        beta_initializer, gamma_initializer: Keras defaults ``"zeros"``, ``"ones"``.

    Parameters: ``weight`` (gamma) and ``bias`` (beta), shaped like the normalized axes; Keras'
    order ``[gamma, beta]``. Masks pass through (each step is normalized on its own).
    """

    supports_masking = True

    def __init__(self, axis: int | list[int] | tuple[int, ...] = -1, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer: str | Initializer = "zeros",
                 gamma_initializer: str | Initializer = "ones", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        axes = list(axis) if isinstance(axis, list | tuple) else [axis]
        if not axes or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in axes):
            raise ValueError(f"{owner} axis must be an integer or a list of integers, got {axis!r}")
        self.axis: int | list[int] = [int(a) for a in axes] if isinstance(axis, list | tuple) else int(axes[0])
        self.epsilon = _check_float(owner, "epsilon", epsilon, 0.0)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer, self.gamma_initializer = beta_initializer, gamma_initializer
        get_initializer(beta_initializer), get_initializer(gamma_initializer)  # fail early on unknown names
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        self._axes: list[int] = []
        self._sizes: list[int] = []
        self._rank: int | None = None

    def build(self, input_shape: Any) -> None:
        rank = len(input_shape)
        owner = type(self).__name__
        axes = sorted({_axis(owner, a, rank) for a in (self.axis if isinstance(self.axis, list) else [self.axis])})
        if any(input_shape[a] is None for a in axes):
            raise ValueError(f"{owner} {self.name!r} needs fixed sizes on the normalized axes, got input shape "
                             f"{list(input_shape)}")
        shape = [int(input_shape[a]) for a in axes]
        self._axes, self._rank, self._sizes = axes, rank, shape
        if self.scale:
            self.weight = nn.Parameter(torch.empty(shape))
            get_initializer(self.gamma_initializer)(self.weight.data)
        if self.center:
            self.bias = nn.Parameter(torch.empty(shape))
            get_initializer(self.beta_initializer)(self.bias.data)

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        rank = inputs.dim()
        if rank != self._rank or [int(inputs.shape[a]) for a in self._axes] != self._sizes:
            raise ValueError(f"{type(self).__name__} {self.name!r} was built for rank-{self._rank} inputs with sizes "
                             f"{self._sizes} on axes {self._axes}, got {list(inputs.shape)}")
        x = _compute_dtype(inputs)
        weight = None if self.weight is None else self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self._axes == list(range(rank - len(self._axes), rank)):  # trailing axes: the fused kernel
            out = F.layer_norm(x, [int(x.shape[a]) for a in self._axes], weight, bias, self.epsilon)
        else:
            var, mean = torch.var_mean(x, dim=self._axes, unbiased=False, keepdim=True)
            out = (x - mean) * torch.rsqrt(var + self.epsilon)
            shape = [int(x.shape[d]) if d in self._axes else 1 for d in range(rank)]
            if weight is not None:
                out = out * weight.reshape(shape)
            if bias is not None:
                out = out + bias.reshape(shape)
        return out.to(inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(axis=self.axis, epsilon=self.epsilon, center=self.center, scale=self.scale,
                      beta_initializer=initializer_name(self.beta_initializer),
                      gamma_initializer=initializer_name(self.gamma_initializer))
        return config
