"""Core Keras-style layers: Input, Dense, Activation, Dropout, SpatialDropout1D, Flatten, Reshape,
RepeatVector, Embedding, Masking and the merge layers (Concatenate, Add, Multiply, Average).

Shapes: ``B`` batch, ``T`` time, ``F`` features. Every layer accepts ``mask=``; see
:mod:`rnnkit.layers.base` for what each does with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import Activation as ActivationFn
from .activations import activation_name, get_activation, known_activation_name
from .base import (
    Layer,
    Node,
    Shape,
    SymbolicTensor,
    check_weight_list,
    dtype_name,
    make_example,
    register_layer,
    to_numpy,
    to_torch_dtype,
)
from .initializers import Initializer, get_initializer, initializer_name


class _ActivationMixin:
    """Shared by layers that end in an activation, so a model can fuse softmax into the loss."""

    _emit_logits: bool
    activation_name: str

    def output_activation(self) -> str:
        """Name of the activation applied last (``"linear"`` if none)."""
        return self.activation_name

    def set_emit_logits(self, value: bool) -> None:
        """Skip the final activation (the engine then applies it inside the loss, stably)."""
        self._emit_logits = value


@register_layer
class InputLayer(Layer):
    """The entry point of a functional model; ``Input(...)`` returns its symbolic output.

    Args:
        shape: shape of one sample, without the batch dimension; ``None`` for dynamic sizes
            (``(None,)`` for token ids of any length, ``(None, 8)`` for sequences of 8 features).
        dtype: ``"float32"`` (default), ``"int64"``...
        batch_size: accepted for Keras compatibility (the batch is always dynamic here).
        batch_shape: full shape including the batch dimension (alternative to ``shape``).
        name: layer name.
    """

    def __init__(self, shape: Shape | list[int | None] | None = None, *, dtype: str | None = None,
                 batch_size: int | None = None, batch_shape: Shape | list[int | None] | None = None,
                 sparse: bool | None = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if shape is None and batch_shape is None:
            raise ValueError("Input needs a shape, e.g. Input(shape=(None,), dtype='int64') for token ids")
        if sparse:
            raise ValueError("sparse inputs are not supported; pass dense tensors")
        full = tuple(batch_shape)[1:] if batch_shape is not None else tuple(shape or ())
        self.shape: Shape = tuple(None if d is None else int(d) for d in full)
        self.input_dtype = to_torch_dtype(dtype)
        self.batch_size = batch_size
        self.built = True
        examples = (make_example(self.shape, self.input_dtype, 0), make_example(self.shape, self.input_dtype, 1))
        output = SymbolicTensor(examples, (None, None))
        node = Node(self, (), {}, output)
        output.node = node
        self.inbound_nodes.append(node)  # ``self.output`` (Layer.output) reads it back
        self.output_shape = output.shape

    def call(self, inputs: Any, mask: Any = None, **kwargs: Any) -> Any:
        return inputs

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(shape=list(self.shape), dtype=dtype_name(self.input_dtype))
        if self.batch_size is not None:
            config["batch_size"] = self.batch_size
        return config


def Input(shape: Shape | list[int | None] | None = None, batch_size: int | None = None, dtype: str | None = None,
          *, batch_shape: Shape | list[int | None] | None = None, name: str | None = None,
          sparse: bool | None = None) -> SymbolicTensor:
    """A symbolic model input (Keras ``keras.Input``).

    Args:
        shape: shape of one sample without the batch dimension (``None`` = dynamic).
        batch_size: accepted for compatibility; the batch is always dynamic.
        dtype: ``"float32"`` by default; ``"int64"`` for token ids.
        batch_shape: full shape with the batch dimension, instead of ``shape``.
        name: name of the input layer.

    Returns:
        A :class:`SymbolicTensor` to call layers on; pass it to ``Model(inputs=...)`` or to
        ``Sequential.add``.
    """
    return InputLayer(shape, dtype=dtype, batch_size=batch_size, batch_shape=batch_shape, name=name,
                      sparse=sparse).output


class KernelWeights:
    """Keras' ``get_weights``/``set_weights`` for a layer with a ``weight`` kernel and an optional ``bias``.

    Keras stores a kernel with its axes reversed from torch's (``Dense`` ``[in, out]`` against
    ``[out, in]``, ``Conv1D`` ``[kernel_size, in, filters]`` against ``[filters, in, kernel_size]``):
    ``.T`` on a NumPy array reverses every axis, so one rule serves both.
    """

    weight: nn.Parameter | None
    bias: nn.Parameter | None

    def get_weights(self) -> list[np.ndarray]:
        if self.weight is None:
            return []
        out = [to_numpy(self.weight).T.copy()]
        if self.bias is not None:
            out.append(to_numpy(self.bias))
        return out

    def set_weights(self, weights: list[np.ndarray]) -> None:
        shapes = [] if self.weight is None else [tuple(self.weight.shape[::-1])]
        if self.bias is not None:
            shapes.append(tuple(self.bias.shape))
        check_weight_list(self, weights, shapes)  # type: ignore[arg-type]  # refuses an unbuilt layer
        assert self.weight is not None
        with torch.no_grad():
            self.weight.copy_(torch.as_tensor(np.asarray(weights[0]).T, dtype=self.weight.dtype))
            if self.bias is not None:
                self.bias.copy_(torch.as_tensor(np.asarray(weights[1]), dtype=self.bias.dtype))


@register_layer
class Dense(KernelWeights, _ActivationMixin, Layer):
    """Fully connected layer on the last axis: ``activation(x W^T + b)``.

    Works on any rank (``[B, F]`` or ``[B, T, F]``); masks pass through. Parameters use
    ``torch.nn.Linear`` names and layout (``weight`` ``[units, F]``, ``bias``);
    :meth:`get_weights` gives Keras' ``[kernel [F, units], bias]``.

    Args:
        units: output features.
        activation: name or function (``None`` = linear).
        use_bias: learn ``bias``.
        kernel_initializer: Keras default ``"glorot_uniform"``.
        bias_initializer: Keras default ``"zeros"``.
    """

    supports_masking = True

    def __init__(self, units: int, activation: str | ActivationFn | None = None, use_bias: bool = True,
                 kernel_initializer: str | Initializer = "glorot_uniform",
                 bias_initializer: str | Initializer = "zeros", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int | np.integer) or units < 1:
            raise ValueError(f"Dense units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.activation = get_activation(activation)
        self.activation_name = known_activation_name(activation)
        self._activation_spec = activation
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        get_initializer(kernel_initializer), get_initializer(bias_initializer)  # fail early on unknown names
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None

    def build(self, input_shape: Any) -> None:
        features = input_shape[-1]
        self.weight = nn.Parameter(torch.empty(self.units, features))
        get_initializer(self.kernel_initializer)(self.weight.data)
        if self.use_bias:
            self.bias = nn.Parameter(torch.empty(self.units))
            get_initializer(self.bias_initializer)(self.bias.data)

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        assert self.weight is not None
        if inputs.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"Dense layer {self.name!r} was built for {self.weight.shape[1]} input features, "
                             f"got {inputs.shape[-1]} (input shape {list(inputs.shape)})")
        if not inputs.dtype.is_floating_point:  # int or bool features: Keras' matmul promotes them to the kernel's
            inputs = inputs.to(self.weight.dtype)
        y = F.linear(inputs, self.weight, self.bias)
        return y if self._emit_logits else self.activation(y)


    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(units=self.units, activation=activation_name(self._activation_spec), use_bias=self.use_bias,
                      kernel_initializer=initializer_name(self.kernel_initializer),
                      bias_initializer=initializer_name(self.bias_initializer))
        return config


@register_layer
class Activation(_ActivationMixin, Layer):
    """Apply an activation function (``Activation("softmax")``); masks pass through."""

    supports_masking = True

    def __init__(self, activation: str | ActivationFn | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.activation = get_activation(activation)
        self.activation_name = known_activation_name(activation)
        self._activation_spec = activation
        self.built = True

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        return inputs if self._emit_logits else self.activation(inputs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "activation": activation_name(self._activation_spec)}


@register_layer
class Dropout(Layer):
    """Zero a fraction ``rate`` of the inputs in training and scale the rest by ``1 / (1 - rate)``.

    Args:
        rate: fraction to drop, in ``[0, 1)``.
        noise_shape: shape of the binary mask with 1 where it is shared, e.g. ``(None, 1, F)``
            drops the same features at every time step; ``None`` for independent dropout.
        seed: accepted for compatibility; use ``rnnkit.models.set_random_seed``.
    """

    supports_masking = True

    def __init__(self, rate: float, noise_shape: Shape | list[int | None] | None = None, seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed
        self.built = True

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        if not self.training or self.rate == 0.0:
            return inputs
        if self.noise_shape is None:
            return F.dropout(inputs, self.rate, training=True)
        shape = [inputs.shape[i] if d is None else int(d) for i, d in enumerate(self.noise_shape)]
        keep = 1.0 - self.rate
        return inputs * torch.bernoulli(inputs.new_full(shape, keep)) / keep

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "rate": self.rate, "seed": self.seed}
        config["noise_shape"] = None if self.noise_shape is None else list(self.noise_shape)
        return config


@register_layer
class SpatialDropout1D(Dropout):
    """Dropout of whole channels: in training, zero a fraction ``rate`` of the ``F`` features of each
    sample at every time step at once, and scale the rest by ``1 / (1 - rate)``.

    Input ``[B, T, F]``; the same as ``Dropout(rate, noise_shape=(None, 1, None))``. Masks pass
    through; at inference the input is returned unchanged.

    Args:
        rate: fraction of channels to drop, in ``[0, 1)``.
        seed: accepted for compatibility; use ``rnnkit.models.set_random_seed``.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(rate, noise_shape=None, seed=seed, **kwargs)

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        if inputs.dim() != 3:
            raise ValueError(f"SpatialDropout1D {self.name!r} expects [batch, time, channels], got "
                             f"{list(inputs.shape)}; use Dropout for other ranks")
        if not self.training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        return inputs * torch.bernoulli(inputs.new_full((inputs.shape[0], 1, inputs.shape[2]), keep)) / keep

    def get_config(self) -> dict[str, Any]:
        return {**Layer.get_config(self), "rate": self.rate, "seed": self.seed}


@register_layer
class Flatten(Layer):
    """``[B, d1, d2, ...]`` -> ``[B, d1 * d2 * ...]``; drops the mask."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.built = True

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        return inputs.reshape(inputs.shape[0], -1)


@register_layer
class Reshape(Layer):
    """Reshape each sample to ``target_shape`` (without the batch axis); one entry may be ``-1``
    (inferred). Drops the mask (the time axis may change).

    Example: ``Reshape((-1, 2))`` turns ``[B, 6, 4]`` into ``[B, 12, 2]``.
    """

    def __init__(self, target_shape: tuple[int, ...] | list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        shape = tuple(target_shape) if isinstance(target_shape, list | tuple) else (target_shape,)
        if any(isinstance(d, bool) or not isinstance(d, int | np.integer) or (d < 1 and d != -1) for d in shape) \
                or sum(d == -1 for d in shape) > 1:
            raise ValueError(f"Reshape target_shape must hold positive integers and at most one -1 (without the "
                             f"batch axis), got {target_shape!r}")
        self.target_shape: tuple[int, ...] = tuple(int(d) for d in shape)
        self.built = True

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        per_sample = int(np.prod(inputs.shape[1:], dtype=np.int64))
        known = int(np.prod([d for d in self.target_shape if d != -1], dtype=np.int64))
        target = list(self.target_shape)
        if -1 in target and known > 0 and per_sample % known == 0:
            target[target.index(-1)] = per_sample // known
        if int(np.prod(target, dtype=np.int64)) != per_sample:
            raise ValueError(f"Reshape {self.name!r} cannot reshape {list(inputs.shape)} ({per_sample} values per "
                             f"sample) to target_shape {self.target_shape}; the target sizes must multiply to "
                             f"{per_sample} (use -1 for one size to infer)")
        return inputs.reshape(inputs.shape[0], *target)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "target_shape": list(self.target_shape)}


@register_layer
class RepeatVector(Layer):
    """``[B, F]`` -> ``[B, n, F]``: repeat a vector ``n`` times (seq2seq autoencoders)."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = int(n)
        self.built = True

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        if inputs.dim() != 2:
            raise ValueError(f"RepeatVector expects [batch, features], got {list(inputs.shape)}")
        return inputs.unsqueeze(1).expand(-1, self.n, -1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n": self.n}


@register_layer
class Masking(Layer):
    """Mark the time steps whose features all equal ``mask_value`` as padding.

    Input ``[B, T, F]``; the output is the input with masked steps set to zero, and the mask
    ``[B, T]`` (``True`` where some feature differs from ``mask_value``) is combined with any
    incoming mask.
    """

    supports_masking = True

    def __init__(self, mask_value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)
        self.built = True

    def _mask(self, inputs: Tensor) -> Tensor:
        return (inputs != self.mask_value).any(dim=-1)

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        if inputs.dim() < 3:
            raise ValueError(f"Masking expects [batch, time, features], got {list(inputs.shape)}")
        return inputs * self._mask(inputs).unsqueeze(-1).to(inputs.dtype)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        own = self._mask(inputs)
        return own if mask is None else own & mask


@register_layer
class Embedding(Layer):
    """Look up a vector for each integer id: ``[B, T]`` -> ``[B, T, output_dim]``.

    Args:
        input_dim: vocabulary size (ids in ``[0, input_dim)``).
        output_dim: vector size.
        embeddings_initializer: Keras default ``"uniform"`` (U(-0.05, 0.05)).
        mask_zero: treat id 0 as padding: the layer emits a mask (``ids != 0``) that recurrent
            layers, pooling and losses respect. Combined with any incoming mask (for example
            the one ``fit`` makes for ragged lists).
        input_length: length of the sequences (Keras 2); on the first layer of a ``Sequential``
            model it lets the model build, and show its ``summary()``, before seeing data.
        sparse: accepted for compatibility; must be false.
        weights: initial vectors, ``[input_dim, output_dim]`` (or a one-element list of it, as
            Keras accepts), e.g. pretrained word vectors; with ``trainable=False`` they stay fixed.

    Parameters: ``weight`` ``[input_dim, output_dim]`` (``torch.nn.Embedding`` name; Keras'
    ``embeddings``).
    """

    supports_masking = True

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer: str | Initializer = "uniform",
                 mask_zero: bool = False, input_length: int | None = None, sparse: bool = False,
                 weights: Any = None, **kwargs: Any) -> None:
        if input_length is not None and "input_shape" not in kwargs and "batch_input_shape" not in kwargs:
            kwargs["input_shape"] = (int(input_length),)
        super().__init__(**kwargs)
        if int(input_dim) < 1 or int(output_dim) < 1:
            raise ValueError(f"Embedding needs positive input_dim and output_dim, got {input_dim} and {output_dim}")
        if sparse:
            raise ValueError("sparse embeddings are not supported")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = embeddings_initializer
        self.mask_zero = bool(mask_zero)
        self.input_length = input_length
        self.weight = nn.Parameter(torch.empty(self.input_dim, self.output_dim))
        get_initializer(embeddings_initializer)(self.weight.data)
        self.built = True
        if weights is not None:
            matrix = weights[0] if isinstance(weights, list | tuple) and len(weights) == 1 else weights
            check_weight_list(self, [matrix], [(self.input_dim, self.output_dim)])
            with torch.no_grad():
                self.weight.copy_(torch.as_tensor(np.asarray(matrix), dtype=self.weight.dtype))
        self.weight.requires_grad_(self._trainable)  # built here, so maybe_build never applies trainable=False

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        ids = inputs if not (inputs.dtype.is_floating_point or inputs.dtype == torch.bool) else inputs.long()
        try:
            return F.embedding(ids, self.weight)
        except (IndexError, RuntimeError) as err:
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.input_dim:
                raise ValueError(f"Embedding {self.name!r} has input_dim={self.input_dim} (ids 0..{self.input_dim - 1}) "
                                 f"but got ids in [{low}, {high}]; raise input_dim or cap the vocabulary") from None
            raise err

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        if not self.mask_zero:
            return mask
        if not isinstance(inputs, Tensor):  # NumPy ids or a list, as Keras takes them: a tensor mask
            inputs = torch.as_tensor(np.asarray(inputs))
        own = inputs != 0
        return own if mask is None else own & mask

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(input_dim=self.input_dim, output_dim=self.output_dim, mask_zero=self.mask_zero,
                      embeddings_initializer=initializer_name(self.embeddings_initializer),
                      input_length=self.input_length)
        return config


class _Merge(Layer):
    """Base of layers that combine a list of tensors of the same batch size."""

    supports_masking = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.built = True

    def _check(self, inputs: Any) -> list[Tensor]:
        if not isinstance(inputs, list | tuple) or len(inputs) < 2:
            raise ValueError(f"{type(self).__name__} expects a list of at least two tensors")
        return list(inputs)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        """Keras' rule: a step is real where any input has it real (OR); an input without a mask
        makes every step real, so the output has no mask."""
        if mask is None:
            return None
        masks = list(mask) if isinstance(mask, list | tuple) else [mask]
        if any(m is None for m in masks):
            return None
        out = masks[0].bool()
        for m in masks[1:]:
            out = out | m.bool()
        return out


@register_layer
class Concatenate(_Merge):
    """Concatenate a list of tensors along ``axis`` (default: features).

    Masks, as Keras: OR-ed along the features (an input without a mask counts as all real), joined
    end to end along time.
    """

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, inputs: Any, mask: Any = None, **kwargs: Any) -> Tensor:
        return torch.cat(self._check(inputs), dim=self.axis)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        masks = list(mask) if isinstance(mask, list | tuple) else [mask]
        if self.axis in (-1, inputs[0].dim() - 1):
            if mask is None or all(m is None for m in masks):
                return None
            if any(m is None for m in masks):  # Keras: an unmasked input counts as all real, OR-ed in
                return torch.ones(inputs[0].shape[:-1], dtype=torch.bool, device=inputs[0].device)
            return super().compute_mask(inputs, mask)
        if mask is None or all(m is None for m in masks) or len(masks) != len(inputs):
            return None
        rank = inputs[0].dim()
        if rank < 3 or self.axis % rank != 1 or any(m is not None and m.dim() != 2 for m in masks):
            return None
        # joined along time (Keras): the masks are joined end to end, an input without one counts as all real
        return torch.cat([torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if m is None else m.bool()
                          for x, m in zip(inputs, masks)], dim=1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}


@register_layer
class Add(_Merge):
    """Element-wise sum of a list of tensors."""

    def call(self, inputs: Any, mask: Any = None, **kwargs: Any) -> Tensor:
        parts = self._check(inputs)
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out


@register_layer
class Multiply(_Merge):
    """Element-wise product of a list of tensors."""

    def call(self, inputs: Any, mask: Any = None, **kwargs: Any) -> Tensor:
        parts = self._check(inputs)
        out = parts[0]
        for p in parts[1:]:
            out = out * p
        return out


@register_layer
class Average(_Merge):
    """Element-wise mean of a list of tensors."""

    def call(self, inputs: Any, mask: Any = None, **kwargs: Any) -> Tensor:
        parts = self._check(inputs)
        return torch.stack(parts, 0).mean(0)
