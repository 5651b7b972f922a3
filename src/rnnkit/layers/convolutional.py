"""Convolution over time: ``Conv1D`` (Keras layout and padding rules on ``torch.nn.functional.conv1d``).

Inputs are channels-last ``[B, T, C]`` as in Keras; the layer transposes to ``[B, C, T]`` for
``F.conv1d`` and back. Padding follows Keras (TensorFlow) exactly:

* ``"valid"``: no padding; ``T_out = floor((T - span) / strides) + 1`` with
  ``span = (kernel_size - 1) * dilation_rate + 1``.
* ``"same"``: ``T_out = ceil(T / strides)``; the total padding
  ``max((T_out - 1) * strides + span - T, 0)`` is split with the extra step on the **right**
  (as ``torch.nn.Conv1d(padding="same")`` does for strides 1; torch refuses larger strides).
* ``"causal"``: ``span - 1`` zeros on the left only, so step ``t`` sees steps ``<= t``.

The time axis changes, so a mask cannot follow: ``Conv1D`` drops the incoming mask (Keras
warns and drops it too), and padded steps enter the convolution as they are.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import Activation as ActivationFn
from .activations import activation_name, get_activation, known_activation_name
from .base import Layer, register_layer
from .core import KernelWeights, _ActivationMixin
from .initializers import Initializer, get_initializer, initializer_name

CONV_PADDINGS = ("valid", "same", "causal")


def positive_int(owner: str, arg: str, value: Any) -> int:
    """``value`` as a positive ``int`` (Keras also takes a one-element tuple), else a one-line error."""
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{owner} {arg} must be a positive integer, got {value!r}")
    return int(value)


def check_padding(owner: str, padding: Any, allowed: tuple[str, ...]) -> str:
    """The padding name in lower case, or a one-line error listing the valid ones."""
    key = padding.lower() if isinstance(padding, str) else padding
    if key not in allowed:
        raise ValueError(f"{owner} padding must be one of {', '.join(repr(a) for a in allowed)}, got {padding!r}")
    return str(key)


def check_channels_last(owner: str, data_format: Any) -> str:
    """Only ``"channels_last"`` (``[batch, time, channels]``, Keras' default) is supported."""
    if data_format not in (None, "channels_last"):
        raise ValueError(f"{owner} supports data_format='channels_last' ([batch, time, channels]) only, got "
                         f"{data_format!r}; transpose channels-first input with x.transpose(1, 2)")
    return "channels_last"


def padding_amounts(length: int, span: int, stride: int, padding: str) -> tuple[int, int]:
    """Steps of padding ``(left, right)`` Keras adds for a window of ``span`` steps (see the module doc)."""
    if padding == "causal":
        return span - 1, 0
    if padding == "same":
        out = -(-length // stride)
        total = max((out - 1) * stride + span - length, 0)
        return total // 2, total - total // 2
    return 0, 0


def check_sequence(layer: Layer, x: Tensor | Any) -> None:
    """Refuse anything but ``[batch, time, channels]`` (a tensor or a shape) with a one-line error."""
    shape = list(x.shape) if isinstance(x, Tensor) else list(x)
    if len(shape) != 3:
        hint = " (add a channel axis with x[..., None])" if len(shape) == 2 else ""
        raise ValueError(f"{type(layer).__name__} {layer.name!r} expects [batch, time, channels], got {shape}{hint}")


def check_length(layer: Layer, length: int, padded: int, span: int, padding: str, window: str) -> None:
    """Refuse sequences shorter than the window (only possible with ``padding="valid"``)."""
    if padded >= span and length > 0:
        return
    raise ValueError(f"{type(layer).__name__} {layer.name!r} needs at least {span} time steps with "
                     f"padding={padding!r} ({window}), got {length}; pad the sequences to at least {span} steps "
                     "(rnnkit.data.pad_sequences(maxlen=...), or a fixed length in Input(shape=...)/"
                     "Embedding(input_length=...)) or use padding='same'")


@register_layer
class Conv1D(KernelWeights, _ActivationMixin, Layer):
    """1D convolution over time: ``[B, T, C]`` -> ``[B, T_out, filters]`` (Keras ``Conv1D``).

    Args:
        filters: output channels.
        kernel_size: window length (an int or a one-element tuple).
        strides: step between windows.
        padding: ``"valid"`` (default), ``"same"`` (Keras' asymmetric split: more on the
            right) or ``"causal"`` (left only); see the module docstring.
        data_format: ``"channels_last"`` only.
        dilation_rate: spacing between the kernel taps.
        groups: split the channels into ``groups`` independent convolutions (both ``C`` and
            ``filters`` must be divisible by it).
        activation: name or function (``None`` = linear).
        use_bias: learn ``bias``.
        kernel_initializer: Keras default ``"glorot_uniform"`` (fans include the kernel size).
        bias_initializer: Keras default ``"zeros"``.

    Parameters use ``torch.nn.Conv1d`` names and layout (``weight`` ``[filters, C / groups,
    kernel_size]``, ``bias``); :meth:`get_weights` gives Keras' ``[kernel [kernel_size,
    C / groups, filters], bias]``, so ``set_weights(keras_layer.get_weights())`` imports Keras
    weights. The incoming mask is dropped.
    """

    def __init__(self, filters: int, kernel_size: int | tuple[int], strides: int | tuple[int] = 1,
                 padding: str = "valid", data_format: str | None = None, dilation_rate: int | tuple[int] = 1,
                 groups: int = 1, activation: str | ActivationFn | None = None, use_bias: bool = True,
                 kernel_initializer: str | Initializer = "glorot_uniform",
                 bias_initializer: str | Initializer = "zeros", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.filters = positive_int(owner, "filters", filters)
        self.kernel_size = positive_int(owner, "kernel_size", kernel_size)
        self.strides = positive_int(owner, "strides", strides)
        self.dilation_rate = positive_int(owner, "dilation_rate", dilation_rate)
        self.groups = positive_int(owner, "groups", groups)
        self.padding = check_padding(owner, padding, CONV_PADDINGS)
        self.data_format = check_channels_last(owner, data_format)
        if self.filters % self.groups:
            raise ValueError(f"{owner} filters ({self.filters}) must be divisible by groups ({self.groups})")
        self.activation = get_activation(activation)
        self.activation_name = known_activation_name(activation)
        self._activation_spec = activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        get_initializer(kernel_initializer), get_initializer(bias_initializer)  # fail early on unknown names
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None

    @property
    def span(self) -> int:
        """Steps one output reads: ``(kernel_size - 1) * dilation_rate + 1``."""
        return (self.kernel_size - 1) * self.dilation_rate + 1

    def build(self, input_shape: Any) -> None:
        check_sequence(self, input_shape)
        channels = int(input_shape[-1])
        if channels % self.groups:
            raise ValueError(f"{type(self).__name__} {self.name!r} has groups={self.groups}, which must divide the "
                             f"input channels, got {channels}")
        self.weight = nn.Parameter(torch.empty(self.filters, channels // self.groups, self.kernel_size))
        get_initializer(self.kernel_initializer)(self.weight.data)
        if self.use_bias:
            self.bias = nn.Parameter(torch.empty(self.filters))
            get_initializer(self.bias_initializer)(self.bias.data)

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        assert self.weight is not None
        check_sequence(self, inputs)
        channels = self.weight.shape[1] * self.groups
        if inputs.shape[-1] != channels:
            raise ValueError(f"{type(self).__name__} {self.name!r} was built for {channels} input channels, got "
                             f"{inputs.shape[-1]} (input shape {list(inputs.shape)})")
        length = int(inputs.shape[1])
        left, right = padding_amounts(length, self.span, self.strides, self.padding)
        check_length(self, length, length + left + right, self.span, self.padding,
                     f"kernel_size={self.kernel_size}, dilation_rate={self.dilation_rate}")
        x = inputs.transpose(1, 2)
        if left or right:
            x = F.pad(x, (left, right))
        y = F.conv1d(x, self.weight, self.bias, stride=self.strides, dilation=self.dilation_rate,
                     groups=self.groups).transpose(1, 2)
        return y if self._emit_logits else self.activation(y)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides, padding=self.padding,
                      data_format=self.data_format, dilation_rate=self.dilation_rate, groups=self.groups,
                      activation=activation_name(self._activation_spec), use_bias=self.use_bias,
                      kernel_initializer=initializer_name(self.kernel_initializer),
                      bias_initializer=initializer_name(self.bias_initializer))
        return config
