"""Losses by Keras name, computed per element so the engine can weight and mask them.

Every loss maps ``(y_true, y_pred)`` to one value per sample (``[B]``), or per step for
sequence outputs (``[B, T]``), averaging over the last (feature) axis where Keras does. The
engine then applies sample weights, class weights and the output mask and divides by the
number of real positions (Keras' ``sum_over_batch_size`` with masks).

Stability: cross-entropies accept probabilities (``from_logits=False``, Keras' default: clipped
to ``[1e-7, 1 - 1e-7]`` before the log) or logits. When the model's last layer ends in softmax
(or sigmoid for binary cross-entropy) the engine asks that layer for its logits and calls the
loss with ``logits=True``: ``log_softmax``/``binary_cross_entropy_with_logits`` instead of
``log(softmax(z))``. Predictions from ``predict`` are still probabilities.

Names: ``categorical_crossentropy``, ``sparse_categorical_crossentropy``,
``binary_crossentropy``, ``mse`` (``mean_squared_error``), ``mae`` (``mean_absolute_error``),
``huber`` (``huber_loss``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

EPSILON = 1e-7


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(["B", *map(str, t.shape[1:])]) + "]"


class Loss:
    """Base of the named losses.

    Args:
        from_logits: ``y_pred`` holds logits rather than probabilities (cross-entropies).
        name: key prefix in logs (default: the registry name).

    Subclasses implement :meth:`elementwise` and may override :meth:`check`.
    """

    registry_name = ""
    task: str | None = None  # "binary", "multiclass" or "regression": how 'accuracy' is read
    fusable_activation: str | None = None  # final activation the engine may fuse into this loss

    def __init__(self, from_logits: bool = False, name: str | None = None) -> None:
        self.from_logits = from_logits
        self.name = name or self.registry_name

    def elementwise(self, y_true: Tensor, y_pred: Tensor, *, logits: bool = False) -> Tensor:
        """Loss per sample (or per step): ``[B]`` or ``[B, T]``."""
        raise NotImplementedError

    def positions(self, y_true: Tensor, y_pred: Tensor) -> Tensor | None:
        """The positions that count, shaped like :meth:`elementwise`'s result (``None``: all).

        The mean is taken over these (Keras divides by the unmasked count too).
        """
        return None

    def check(self, y_true: Tensor, y_pred: Tensor, *, values: bool = True) -> None:
        """Raise a one-line ``ValueError`` when the labels do not fit this loss and output.

        Args:
            y_true: labels of one batch.
            y_pred: the model output for it.
            values: also check label values (ranges), which reads them (a device sync).
        """

    def __call__(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        """Keras-style standalone use: the weighted mean loss of a batch."""
        y_true, y_pred = torch.as_tensor(y_true), torch.as_tensor(y_pred)
        self.check(y_true, y_pred)
        per = self.elementwise(y_true, y_pred, logits=self.from_logits)
        if sample_weight is not None:
            w = torch.as_tensor(sample_weight, dtype=per.dtype, device=per.device)
            while w.dim() < per.dim():
                w = w.unsqueeze(-1)
            per = per * w
        keep = self.positions(y_true, y_pred)
        if keep is not None:
            return (per * keep).sum() / keep.sum().clamp(min=1)
        return per.sum() / max(per.numel(), 1)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly)."""
        return {"from_logits": self.from_logits, "name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


def _squeeze_to(y_true: Tensor, y_pred: Tensor) -> tuple[Tensor, Tensor]:
    """Align ranks the Keras way: drop or add a trailing axis of size 1."""
    if y_true.dim() == y_pred.dim() - 1 and y_pred.shape[-1] == 1:
        y_true = y_true.unsqueeze(-1)
    elif y_pred.dim() == y_true.dim() - 1 and y_true.shape[-1] == 1:
        y_true = y_true.squeeze(-1)
    return y_true, y_pred


def _is_integral(t: Tensor) -> bool:
    return not t.dtype.is_floating_point and t.dtype != torch.bool


class CategoricalCrossentropy(Loss):
    """Cross-entropy against one-hot (or soft) labels ``[..., C]``.

    Args:
        from_logits: ``y_pred`` holds logits.
        label_smoothing: mix the labels with the uniform distribution by this amount.
    """

    registry_name = "categorical_crossentropy"
    task = "multiclass"
    fusable_activation = "softmax"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, name: str | None = None) -> None:
        super().__init__(from_logits, name)
        self.label_smoothing = float(label_smoothing)

    def check(self, y_true: Tensor, y_pred: Tensor, *, values: bool = True) -> None:
        classes = y_pred.shape[-1]
        if y_true.shape == y_pred.shape:
            return
        as_ids = y_true.dim() == y_pred.dim() - 1 or (y_true.dim() == y_pred.dim() and y_true.shape[-1] == 1)
        if as_ids and (_is_integral(y_true) or bool((y_true == y_true.round()).all())):
            raise ValueError(_one_line(f"""categorical_crossentropy expects one-hot labels of shape {_shape(y_pred)},
                got class ids of shape {_shape(y_true)}: use loss='sparse_categorical_crossentropy' or one-hot
                encode the labels (rnnkit.models.to_categorical(y, {classes}))"""))
        raise ValueError(_one_line(f"""categorical_crossentropy expects labels of shape {_shape(y_pred)} (one-hot over
            {classes} classes, like the model output), got {_shape(y_true)}"""))

    def elementwise(self, y_true: Tensor, y_pred: Tensor, *, logits: bool = False) -> Tensor:
        y = y_true.to(y_pred.dtype)
        if self.label_smoothing:
            y = y * (1 - self.label_smoothing) + self.label_smoothing / y_pred.shape[-1]
        if logits:
            log_p = torch.log_softmax(y_pred, dim=-1)
        else:
            p = y_pred / y_pred.sum(-1, keepdim=True)
            log_p = torch.log(p.clamp(EPSILON, 1 - EPSILON))
        return -(y * log_p).sum(-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy against integer class ids ``[...]`` (or ``[..., 1]``) for outputs ``[..., C]``.

    Args:
        from_logits: ``y_pred`` holds logits.
        ignore_class: a label value that contributes no loss and is left out of the mean (e.g. a padding
            tag), as in Keras.
    """

    registry_name = "sparse_categorical_crossentropy"
    task = "multiclass"
    fusable_activation = "softmax"

    def __init__(self, from_logits: bool = False, ignore_class: int | None = None, name: str | None = None) -> None:
        super().__init__(from_logits, name)
        self.ignore_class = ignore_class

    def check(self, y_true: Tensor, y_pred: Tensor, *, values: bool = True) -> None:
        classes = y_pred.shape[-1]
        lead = tuple(y_pred.shape[:-1])
        want = "[" + ", ".join(["B", *map(str, lead[1:])]) + "]"
        if y_true.shape == y_pred.shape and classes > 1:
            raise ValueError(_one_line(f"""sparse_categorical_crossentropy expects class ids of shape {want}, got
                one-hot labels of shape {_shape(y_true)}: use loss='categorical_crossentropy' or pass
                y.argmax(-1)"""))
        if tuple(y_true.shape) not in (lead, (*lead, 1)):
            raise ValueError(_one_line(f"""sparse_categorical_crossentropy expects class ids of shape {want} for an
                output of shape {_shape(y_pred)}, got {_shape(y_true)}"""))
        if y_true.dtype.is_floating_point and values and not bool((y_true == y_true.round()).all()):
            raise ValueError("sparse_categorical_crossentropy expects integer class ids, got fractional labels; "
                             "for probabilities per class use categorical_crossentropy")
        if values and y_true.numel():
            ids = y_true.long()
            if self.ignore_class is not None:
                ids = ids[ids != self.ignore_class]
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= classes):
                raise ValueError(_one_line(f"""sparse_categorical_crossentropy got class ids in [{int(ids.min())},
                    {int(ids.max())}] but the output has {classes} classes (ids 0..{classes - 1}); give the last
                    layer more units or remap the labels"""))

    def positions(self, y_true: Tensor, y_pred: Tensor) -> Tensor | None:
        if self.ignore_class is None:
            return None
        return y_true.reshape(y_pred.shape[:-1]) != self.ignore_class

    def elementwise(self, y_true: Tensor, y_pred: Tensor, *, logits: bool = False) -> Tensor:
        classes = y_pred.shape[-1]
        lead = y_pred.shape[:-1]
        ids = y_true.reshape(lead).long()
        flat_pred = y_pred.reshape(-1, classes)
        flat_ids = ids.reshape(-1)
        ignore = self.ignore_class
        safe_ids = flat_ids if ignore is None else flat_ids.masked_fill(flat_ids == ignore, 0)
        if logits:
            per = F.cross_entropy(flat_pred, safe_ids, reduction="none")
        else:
            p = flat_pred / flat_pred.sum(-1, keepdim=True)
            per = -torch.log(p.gather(1, safe_ids.unsqueeze(1)).squeeze(1).clamp(EPSILON, 1 - EPSILON))
        if ignore is not None:
            per = per * (flat_ids != ignore)
        return per.reshape(lead)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ignore_class": self.ignore_class}


class BinaryCrossentropy(Loss):
    """Binary cross-entropy for labels in ``[0, 1]``, averaged over the last axis.

    Args:
        from_logits: ``y_pred`` holds logits.
        label_smoothing: squeeze the labels towards 0.5 by this amount.
    """

    registry_name = "binary_crossentropy"
    task = "binary"
    fusable_activation = "sigmoid"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, name: str | None = None) -> None:
        super().__init__(from_logits, name)
        self.label_smoothing = float(label_smoothing)

    def check(self, y_true: Tensor, y_pred: Tensor, *, values: bool = True) -> None:
        t, p = _squeeze_to(y_true, y_pred)
        if t.shape != p.shape:
            if p.shape[-1] > 1 and t.dim() == p.dim() - 1:
                raise ValueError(_one_line(f"""binary_crossentropy expects labels of shape {_shape(y_pred)}, got
                    class ids of shape {_shape(y_true)} for an output with {p.shape[-1]} units: for one class per
                    sample use loss='sparse_categorical_crossentropy' with a softmax output"""))
            raise ValueError(_one_line(f"""binary_crossentropy expects labels of shape {_shape(y_pred)} (like the
                output), got {_shape(y_true)}"""))
        if values and t.numel():
            low, high = float(t.min()), float(t.max())
            if low < 0 or high > 1:
                hint = ("; for one of several classes per sample use loss='sparse_categorical_crossentropy' with a "
                        "softmax output" if high > 1 else "")
                raise ValueError(f"binary_crossentropy expects labels in [0, 1], got values in [{low:g}, {high:g}]{hint}")

    def elementwise(self, y_true: Tensor, y_pred: Tensor, *, logits: bool = False) -> Tensor:
        t, p = _squeeze_to(y_true, y_pred)
        t = t.to(p.dtype)
        if self.label_smoothing:
            t = t * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        if logits:
            per = F.binary_cross_entropy_with_logits(p, t, reduction="none")
        else:
            q = p.clamp(EPSILON, 1 - EPSILON)
            per = -(t * torch.log(q) + (1 - t) * torch.log(1 - q))
        return per.mean(-1) if per.dim() > 1 else per

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class _Regression(Loss):
    task = "regression"

    def __init__(self, name: str | None = None) -> None:
        super().__init__(False, name)

    def check(self, y_true: Tensor, y_pred: Tensor, *, values: bool = True) -> None:
        t, p = _squeeze_to(y_true, y_pred)
        if t.shape != p.shape:
            raise ValueError(f"{self.registry_name} expects targets of shape {_shape(y_pred)} (like the output), "
                             f"got {_shape(y_true)}")

    def _diff(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        t, p = _squeeze_to(y_true, y_pred)
        return p - t.to(p.dtype)

    def _reduce(self, per: Tensor) -> Tensor:
        return per.mean(-1) if per.dim() > 1 else per

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}


class MeanSquaredError(_Regression):
    """Mean of squared errors over the last axis."""

    registry_name = "mean_squared_error"

    def elementwise(self, y_true: Tensor, y_pred: Tensor, *, logits: bool = False) -> Tensor:
        return self._reduce(self._diff(y_true, y_pred).square())


class MeanAbsoluteError(_Regression):
    """Mean of absolute errors over the last axis."""

    registry_name = "mean_absolute_error"

    def elementwise(self, y_true: Tensor, y_pred: Tensor, *, logits: bool = False) -> Tensor:
        return self._reduce(self._diff(y_true, y_pred).abs())


class Huber(_Regression):
    """Huber loss: quadratic within ``delta``, linear beyond (Keras ``Huber``)."""

    registry_name = "huber"

    def __init__(self, delta: float = 1.0, name: str | None = None) -> None:
        super().__init__(name)
        self.delta = float(delta)

    def elementwise(self, y_true: Tensor, y_pred: Tensor, *, logits: bool = False) -> Tensor:
        d = self._diff(y_true, y_pred)
        return self._reduce(F.huber_loss(d, torch.zeros_like(d), reduction="none", delta=self.delta))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "delta": self.delta}


class FunctionLoss(Loss):
    """Wrap ``fn(y_true, y_pred) -> per-sample losses`` (or a scalar) as a loss.

    A scalar result is used as the batch loss (no sample weighting possible).
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], name: str | None = None) -> None:
        super().__init__(False, name or getattr(fn, "__name__", "loss"))
        self.fn = fn

    def elementwise(self, y_true: Tensor, y_pred: Tensor, *, logits: bool = False) -> Tensor:
        out = self.fn(y_true, y_pred)
        return out.reshape(1) if out.dim() == 0 else out

    def get_config(self) -> dict[str, Any]:
        raise ValueError(f"loss {self.name!r} is a Python function and cannot be saved in a config")


LOSSES: dict[str, type[Loss]] = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "huber_loss": Huber,
}

_CLASSES = {cls.__name__: cls for cls in LOSSES.values()}


def get_loss(spec: str | Loss | Callable[[Tensor, Tensor], Tensor] | dict[str, Any]) -> Loss:
    """Resolve a loss name, :class:`Loss` object, config dict or function.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if isinstance(spec, Loss):
        return spec
    if isinstance(spec, str):
        key = spec.lower()
        if key not in LOSSES:
            raise ValueError(f"unknown loss {spec!r}; choose one of {', '.join(sorted(LOSSES))}")
        cls = LOSSES[key]
        return cls(name=spec) if key != cls.registry_name else cls()
    if isinstance(spec, dict) and "class_name" in spec:
        found = _CLASSES.get(spec["class_name"])
        if found is None:
            raise ValueError(f"unknown loss class {spec['class_name']!r}; choose one of {', '.join(sorted(_CLASSES))}")
        return found(**spec.get("config", {}))
    if callable(spec):
        return FunctionLoss(spec)
    raise TypeError(f"loss must be a name, an rnnkit Loss or a function, got {type(spec).__name__}")


def serialize_loss(loss: Loss) -> dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` for saving with a model."""
    return {"class_name": type(loss).__name__, "config": loss.get_config()}
