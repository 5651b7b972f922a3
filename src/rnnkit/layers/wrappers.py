"""Keras-style wrappers: ``Bidirectional`` and ``TimeDistributed``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import Layer, deserialize_layer, register_layer, serialize_layer
from .recurrent import _KerasRNN

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


@register_layer
class Bidirectional(Layer):
    """Run a recurrent layer forwards and a copy of it backwards, and merge the two.

    The backward copy is built from the forward layer's config with ``go_backwards`` flipped
    (as Keras does); with a mask it reads each sequence's real steps in reverse, and its output
    sequence is put back in time order before merging.

    Args:
        layer: a ``SimpleRNN``, ``LSTM`` or ``GRU`` layer (not yet called).
        merge_mode: ``"concat"`` (default), ``"sum"``, ``"mul"``, ``"ave"``, or ``None`` for a
            list ``[forward, backward]``.
        backward_layer: optional explicit backward layer (normally with ``go_backwards=True``);
            by default a fresh copy of ``layer``'s config with ``go_backwards`` flipped.

    Call arguments: ``inputs`` ``[B, T, F]``, ``mask`` ``[B, T]``, ``initial_state``: the forward
    states followed by the backward states.

    Returns: the merged output; with ``return_state``, ``[output, *forward_states, *backward_states]``.

    Example:
        >>> Bidirectional(LSTM(64, return_sequences=True), merge_mode="concat")
    """

    supports_masking = True

    def __init__(self, layer: Layer, merge_mode: str | None = "concat", weights: Any = None,
                 backward_layer: Layer | None = None, **kwargs: Any) -> None:
        if not isinstance(layer, _KerasRNN):
            raise ValueError(f"Bidirectional wraps a SimpleRNN, LSTM or GRU layer, got {type(layer).__name__}")
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}")
        # default names as Keras 3 gives them: bidirectional, bidirectional_1 ... (get_layer finds them)
        super().__init__(**kwargs)
        if backward_layer is None:
            config = layer.get_config()
            config.update(go_backwards=not layer.go_backwards, name=f"backward_{layer.name}")
            backward_layer = type(layer).from_config(config)
        if not isinstance(backward_layer, _KerasRNN):
            raise ValueError("backward_layer must be a SimpleRNN, LSTM or GRU layer")
        for attr in ("return_sequences", "return_state", "stateful"):
            if getattr(backward_layer, attr) != getattr(layer, attr):
                raise ValueError(f"forward and backward layers must agree on {attr}, got {getattr(layer, attr)} "
                                 f"and {getattr(backward_layer, attr)}")
        if backward_layer.go_backwards == layer.go_backwards:
            raise ValueError(f"backward_layer must read the other way from the forward layer (both have "
                             f"go_backwards={layer.go_backwards}); create it with go_backwards="
                             f"{not layer.go_backwards}")
        self.forward_layer = layer
        self.backward_layer = backward_layer
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful
        if weights is not None:
            raise ValueError("pass weights with set_weights() after the layer is built")

    def call(self, inputs: Tensor, mask: Any = None, initial_state: Any = None, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(f"Bidirectional got unexpected call argument(s) {', '.join(sorted(kwargs))}")
        init_f = init_b = None
        if initial_state is not None:
            states = list(initial_state)
            if len(states) % 2:
                raise ValueError("Bidirectional initial_state must hold the forward states then the backward states")
            half = len(states) // 2
            init_f, init_b = states[:half], states[half:]
        out_f = self.forward_layer(inputs, mask=mask, initial_state=init_f)
        out_b = self.backward_layer(inputs, mask=mask, initial_state=init_b)
        states_f: list[Tensor] = []
        states_b: list[Tensor] = []
        if self.return_state:
            out_f, *states_f = out_f
            out_b, *states_b = out_b
        if self.return_sequences and self.backward_layer.go_backwards != self.forward_layer.go_backwards:
            out_b = out_b.flip(1)  # back to time order (padding stays in place: the mask was flipped too)
        merged = self._merge(out_f, out_b)
        if self.return_state:
            return [*(merged if isinstance(merged, list) else [merged]), *states_f, *states_b]
        return merged

    def _merge(self, a: Tensor, b: Tensor) -> Any:
        if self.merge_mode == "concat":
            return torch.cat([a, b], -1)
        if self.merge_mode == "sum":
            return a + b
        if self.merge_mode == "mul":
            return a * b
        if self.merge_mode == "ave":
            return (a + b) / 2
        return [a, b]

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        out_mask = mask if self.return_sequences else None
        outputs = [out_mask] if self.merge_mode is not None else [out_mask, out_mask]
        if self.return_state:
            n = 2 if self.forward_layer._kind == "lstm" else 1
            return outputs + [None] * (2 * n)
        return outputs[0] if self.merge_mode is not None else outputs

    def reset_states(self) -> None:
        """Forget the carried state of both directions."""
        self.forward_layer.reset_states()
        self.backward_layer.reset_states()

    def get_weights(self) -> list[np.ndarray]:
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def set_weights(self, weights: list[np.ndarray]) -> None:
        half = len(weights) // 2
        self.forward_layer.set_weights(list(weights[:half]))
        self.backward_layer.set_weights(list(weights[half:]))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(layer=serialize_layer(self.forward_layer), merge_mode=self.merge_mode,
                      backward_layer=serialize_layer(self.backward_layer))
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        config = dict(config)
        config["layer"] = deserialize_layer(config["layer"])
        if config.get("backward_layer") is not None:
            config["backward_layer"] = deserialize_layer(config["backward_layer"])
        return cls(**config)


@register_layer
class TimeDistributed(Layer):
    """Apply a layer to every time step: ``[B, T, ...]`` -> ``[B, T, ...]``.

    The wrapped layer sees ``[B*T, ...]``; the mask passes through unchanged. A final softmax
    of the wrapped layer is fused into the loss like a plain ``Dense``'s.

    Args:
        layer: the layer to apply (e.g. ``Dense(n_tags, activation="softmax")``).
    """

    supports_masking = True

    def __init__(self, layer: Layer, **kwargs: Any) -> None:
        if not isinstance(layer, Layer):
            raise ValueError(f"TimeDistributed wraps an rnnkit layer, got {type(layer).__name__}")
        # default names as Keras 3 gives them: time_distributed, time_distributed_1 ...
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs: Tensor, mask: Any = None, **kwargs: Any) -> Tensor:
        if inputs.dim() < 3:
            raise ValueError(f"TimeDistributed expects [batch, time, ...], got {list(inputs.shape)}")
        b, t = inputs.shape[0], inputs.shape[1]
        flat = self.layer(inputs.reshape(b * t, *inputs.shape[2:]), **kwargs)
        return flat.reshape(b, t, *flat.shape[1:])

    def output_activation(self) -> str:
        """The wrapped layer's final activation."""
        fn = getattr(self.layer, "output_activation", None)
        return fn() if callable(fn) else ""

    def set_emit_logits(self, value: bool) -> None:
        """Skip the wrapped layer's final activation."""
        fn = getattr(self.layer, "set_emit_logits", None)
        if callable(fn):
            fn(value)

    def get_weights(self) -> list[np.ndarray]:
        return self.layer.get_weights()

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.layer.set_weights(weights)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "layer": serialize_layer(self.layer)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        config = dict(config)
        config["layer"] = deserialize_layer(config["layer"])
        return cls(**config)
