"""Pooling over time.

* Global, aware of masks: ``GlobalAveragePooling1D``, ``GlobalMaxPooling1D`` and
  ``AttentionPooling`` take ``[B, T, F]`` and return ``[B, F]``, reading only the real steps
  when a mask is given; a sequence with no real step pools to zeros. They consume the mask.
* Windowed: ``MaxPooling1D`` and ``AveragePooling1D`` take ``[B, T, F]`` and return
  ``[B, T_out, F]`` with Keras' padding rules (see :mod:`rnnkit.layers.convolutional`; with
  ``"same"`` the average counts only real steps, as Keras on TensorFlow does: Keras' torch
  backend repeats the edge steps instead when the padding is uneven). The time axis changes,
  so they drop the incoming mask.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..scan.elementwise import tanh
from .base import Layer, register_layer
from .convolutional import check_channels_last, check_length, check_padding, padding_amounts, positive_int
from .convolutional import check_sequence as check_windowed_sequence
from .initializers import Initializer, get_initializer, initializer_name


def _check_sequence(layer: Layer, x: Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"{type(layer).__name__} {layer.name!r} expects [batch, time, features], got {list(x.shape)}")


@register_layer
class GlobalAveragePooling1D(Layer):
    """Mean over the real time steps: ``[B, T, F]`` -> ``[B, F]`` (``[B, 1, F]`` with ``keepdims``).

    Args:
        data_format: ``"channels_last"`` only (features last).
        keepdims: keep the time axis with size 1.
    """

    def __init__(self, data_format: str = "channels_last", keepdims: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if data_format != "channels_last":
            raise ValueError("only data_format='channels_last' ([batch, time, features]) is supported")
        self.data_format, self.keepdims = data_format, keepdims
        self.built = True

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        _check_sequence(self, inputs)
        if mask is None:
            return inputs.mean(1, keepdim=self.keepdims)
        m = mask.unsqueeze(-1).to(inputs.dtype)
        out = (inputs * m).sum(1, keepdim=self.keepdims) / m.sum(1, keepdim=self.keepdims).clamp(min=1.0)
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


@register_layer
class GlobalMaxPooling1D(GlobalAveragePooling1D):
    """Maximum over the real time steps: ``[B, T, F]`` -> ``[B, F]``."""

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        _check_sequence(self, inputs)
        if mask is None:
            return inputs.amax(1, keepdim=self.keepdims)
        m = mask.unsqueeze(-1)
        out = inputs.masked_fill(~m, float("-inf")).amax(1, keepdim=self.keepdims)
        empty = ~mask.any(1)
        if bool(empty.any()):
            out = out.masked_fill(empty.view(-1, *([1] * (out.dim() - 1))), 0.0)
        return out


@register_layer
class AttentionPooling(Layer):
    r"""Additive attention over time (Bahdanau et al. 2015; as pooling: Yang et al. 2016, sec. 2.2).

    .. math::
        e_t = v^\top \tanh(W h_t + b),\qquad
        \alpha_t = \frac{\exp e_t}{\sum_{s \in \text{real}} \exp e_s},\qquad
        y = \sum_t \alpha_t h_t

    Padded steps get weight 0; a sequence with no real step gives ``y = 0`` and weights 0.
    The weights of the last call are kept in :attr:`last_attention` (``[B, T]``, detached)
    for inspection.

    Args:
        units: size of the attention hidden layer ``W`` (default: the input features).
        use_bias: learn ``b``.
        return_attention: return ``[y, alpha]`` instead of ``y``.
        kernel_initializer: initializer of ``W`` and ``v`` (``"glorot_uniform"``).

    Parameters: ``weight`` ``[units, F]``, ``bias`` ``[units]``, ``context`` ``[units]`` (``v``).
    """

    def __init__(self, units: int | None = None, use_bias: bool = True, return_attention: bool = False,
                 kernel_initializer: str | Initializer = "glorot_uniform", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = None if units is None else int(units)
        self.use_bias = use_bias
        self.return_attention = return_attention
        self.kernel_initializer = kernel_initializer
        get_initializer(kernel_initializer)
        self.last_attention: Tensor | None = None

    def build(self, input_shape: Any) -> None:
        features = int(input_shape[-1])
        units = self.units or features
        init = get_initializer(self.kernel_initializer)
        weight, context = torch.empty(units, features), torch.empty(1, units)
        init(weight)
        init(context)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(units)) if self.use_bias else None
        self.context = nn.Parameter(context.squeeze(0))

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Any:
        _check_sequence(self, inputs)
        scores = tanh(F.linear(inputs, self.weight, self.bias)) @ self.context  # [B, T]
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=1) * mask  # exactly 0 on padding; all-padding rows -> 0
        else:
            weights = torch.softmax(scores, dim=1)
        pooled = (weights.unsqueeze(-1) * inputs).sum(1)  # [B, F]
        self.last_attention = weights.detach()
        return [pooled, weights] if self.return_attention else pooled

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return [None, None] if self.return_attention else None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "use_bias": self.use_bias,
                "return_attention": self.return_attention,
                "kernel_initializer": initializer_name(self.kernel_initializer)}


class _Pooling1D(Layer):
    """Base of the windowed pooling layers (``MaxPooling1D``, ``AveragePooling1D``).

    Args:
        pool_size: window length.
        strides: step between windows (default: ``pool_size``).
        padding: ``"valid"`` (default) or ``"same"`` (``T_out = ceil(T / strides)``, the extra
            padding step on the right, as Keras).
        data_format: ``"channels_last"`` only.
    """

    def __init__(self, pool_size: int | tuple[int] = 2, strides: int | tuple[int] | None = None,
                 padding: str = "valid", data_format: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.pool_size = positive_int(owner, "pool_size", pool_size)
        self.strides = self.pool_size if strides is None else positive_int(owner, "strides", strides)
        self.padding = check_padding(owner, padding, ("valid", "same"))
        self.data_format = check_channels_last(owner, data_format)
        self.built = True

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        check_windowed_sequence(self, inputs)
        length = int(inputs.shape[1])
        left, right = padding_amounts(length, self.pool_size, self.strides, self.padding)
        check_length(self, length, length + left + right, self.pool_size, self.padding, f"pool_size={self.pool_size}")
        return self._pool(inputs.transpose(1, 2), left, right).transpose(1, 2)

    def _pool(self, x: Tensor, left: int, right: int) -> Tensor:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding, "data_format": self.data_format}


@register_layer
class MaxPooling1D(_Pooling1D):
    """Maximum over windows of ``pool_size`` steps: ``[B, T, F]`` -> ``[B, T_out, F]`` (drops the mask)."""

    def _pool(self, x: Tensor, left: int, right: int) -> Tensor:
        if left or right:
            x = F.pad(x, (left, right), value=float("-inf"))  # padding never wins a window
        return F.max_pool1d(x, self.pool_size, self.strides)


@register_layer
class AveragePooling1D(_Pooling1D):
    """Mean over windows of ``pool_size`` steps: ``[B, T, F]`` -> ``[B, T_out, F]`` (drops the mask).

    With ``padding="same"`` the windows that overlap the padding average their real steps only
    (Keras semantics; ``torch.nn.AvgPool1d(count_include_pad=True)`` would count the zeros).
    """

    def _pool(self, x: Tensor, left: int, right: int) -> Tensor:
        if not (left or right):
            return F.avg_pool1d(x, self.pool_size, self.strides)
        sums = F.avg_pool1d(F.pad(x, (left, right)), self.pool_size, self.strides)
        counts = F.avg_pool1d(F.pad(x.new_ones(1, 1, x.shape[-1]), (left, right)), self.pool_size, self.strides)
        return sums / counts
