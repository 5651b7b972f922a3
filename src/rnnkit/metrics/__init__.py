"""Metrics by name, on top of torchmetrics, for ``Model.compile(metrics=[...])``.

A name resolves to a :class:`Metric` spec; once the model's output size and loss are known the
spec is bound to one output and becomes a :class:`BoundMetric` (a ``torch.nn.Module`` holding
the torchmetrics object) that takes ``(probabilities, labels, mask)`` straight from the model:

* **classification** outputs ``[..., C]``: labels may be class ids ``[...]`` or one-hot
  ``[..., C]``; ``C = 1`` (or a binary loss) means binary with threshold 0.5.
* **sequence outputs** ``[B, T, ...]``: padded steps (mask ``False``) are left out.
* **regression**: ``mae``, ``mse``, ``rmse`` on the flattened values.

Names (see :data:`METRICS`): ``accuracy`` (alias ``acc``: binary, categorical or sparse as the
loss and labels say, like Keras), ``binary_accuracy``, ``categorical_accuracy``,
``sparse_categorical_accuracy``, ``top_k_categorical_accuracy`` (k=5),
``sparse_top_k_categorical_accuracy``, ``precision``, ``recall``, ``f1`` (binary outputs:
the positive class; multiclass: macro average), ``precision_macro|micro|weighted``,
``recall_...``, ``f1_macro``, ``f1_micro``, ``f1_weighted`` (binary outputs are scored as two
classes), ``auc`` (ROC AUC; one-vs-rest macro for multiclass), ``mae``, ``mse``, ``rmse``.

Metrics are unweighted: ``sample_weight`` and ``class_weight`` affect the loss only.
torchmetrics is imported when a metric is bound, never by ``import rnnkit.metrics``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

TASKS = ("binary", "multiclass", "regression")

# name -> (family, options)
METRICS: dict[str, tuple[str, dict[str, Any]]] = {
    "accuracy": ("accuracy", {}),
    "acc": ("accuracy", {}),
    "binary_accuracy": ("accuracy", {"task": "binary"}),
    "categorical_accuracy": ("accuracy", {"task": "multiclass"}),
    "sparse_categorical_accuracy": ("accuracy", {"task": "multiclass"}),
    "top_k_categorical_accuracy": ("accuracy", {"task": "multiclass", "k": 5}),
    "sparse_top_k_categorical_accuracy": ("accuracy", {"task": "multiclass", "k": 5}),
    "precision": ("precision", {}),
    "recall": ("recall", {}),
    "f1": ("f1", {}),
    "f1_score": ("f1", {}),
    "auc": ("auc", {}),
    "mae": ("mae", {"task": "regression"}),
    "mean_absolute_error": ("mae", {"task": "regression"}),
    "mse": ("mse", {"task": "regression"}),
    "mean_squared_error": ("mse", {"task": "regression"}),
    "rmse": ("rmse", {"task": "regression"}),
    "root_mean_squared_error": ("rmse", {"task": "regression"}),
}
for _family in ("precision", "recall", "f1"):
    for _avg in ("macro", "micro", "weighted"):
        METRICS[f"{_family}_{_avg}"] = (_family, {"average": _avg})


class Metric:
    """A metric by registry name, with options, not yet bound to an output.

    Args:
        kind: a name from :data:`METRICS` (``"f1_macro"``, ``"auc"``...).
        name: the key in logs and ``History`` (default: ``kind``).
        task: force ``"binary"``, ``"multiclass"`` or ``"regression"`` instead of inferring it.
        k: for top-k accuracy.
        average: ``"macro"``, ``"micro"`` or ``"weighted"`` for precision, recall and F1.
        threshold: decision threshold of binary metrics (default 0.5).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """

    def __init__(self, kind: str, name: str | None = None, *, task: str | None = None, k: int | None = None,
                 average: str | None = None, threshold: float = 0.5) -> None:
        key = kind.lower()
        if key not in METRICS:
            raise ValueError(f"unknown metric {kind!r}; choose one of {', '.join(sorted(METRICS))}")
        family, defaults = METRICS[key]
        self.kind = key
        self.family = family
        self.name = name or kind
        self.task = task or defaults.get("task")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        self.k = k if k is not None else defaults.get("k")
        self.average = average or defaults.get("average")
        self.threshold = float(threshold)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly)."""
        return {"kind": self.kind, "name": self.name, "task": self.task, "k": self.k, "average": self.average,
                "threshold": self.threshold}

    def resolve_task(self, features: int, loss_task: str | None) -> str:
        """The task for an output with ``features`` last-axis size under a loss of ``loss_task``."""
        if self.task is not None:
            return self.task
        if self.family in ("mae", "mse", "rmse"):
            return "regression"
        if loss_task in ("binary", "multiclass"):
            return loss_task
        return "binary" if features <= 1 else "multiclass"

    def bind(self, features: int, loss_task: str | None) -> BoundMetric:
        """A stateful metric for one output (torchmetrics is imported here)."""
        task = self.resolve_task(features, loss_task)
        return BoundMetric(self.name, task, self._build(task, features), features=features, threshold=self.threshold,
                           two_class=(task == "binary" and self.average is not None))

    def _build(self, task: str, classes: int) -> nn.Module:
        from torchmetrics import classification as tc
        from torchmetrics import regression as tr

        fam = self.family
        if task == "regression":
            if fam == "mae":
                return tr.MeanAbsoluteError()
            if fam in ("mse", "rmse"):
                return tr.MeanSquaredError(squared=fam == "mse")
            raise ValueError(f"metric {self.name!r} is for classification, but this output is scored as regression "
                             "(mse/mae/huber loss); use 'mae', 'mse' or 'rmse'")
        if fam in ("mae", "mse", "rmse"):
            raise ValueError(f"metric {self.name!r} is for regression outputs")
        if task == "binary" and self.average is None:
            if fam == "accuracy":
                return tc.BinaryAccuracy(threshold=self.threshold, validate_args=False)
            if fam == "auc":
                return tc.BinaryAUROC(validate_args=False)
            binary: dict[str, Any] = {"precision": tc.BinaryPrecision, "recall": tc.BinaryRecall, "f1": tc.BinaryF1Score}
            return binary[fam](threshold=self.threshold, validate_args=False)
        n = 2 if task == "binary" else classes
        if n < 2:
            raise ValueError(f"metric {self.name!r} needs at least 2 classes, the output has {classes} feature(s)")
        if fam == "accuracy":
            return tc.MulticlassAccuracy(num_classes=n, average="micro", top_k=min(self.k or 1, n), validate_args=False)
        if fam == "auc":
            return tc.MulticlassAUROC(num_classes=n, average="macro", validate_args=False)
        multi: dict[str, Any] = {"precision": tc.MulticlassPrecision, "recall": tc.MulticlassRecall,
                                 "f1": tc.MulticlassF1Score}
        return multi[fam](num_classes=n, average=self.average or "macro", validate_args=False)

    def __repr__(self) -> str:
        return f"Metric({self.kind!r}, name={self.name!r})"


class BoundMetric(nn.Module):
    """A metric bound to one output: ``update(y_prob, y_true, mask)``, ``compute()``, ``reset()``.

    Args:
        name: key in logs.
        task: ``"binary"``, ``"multiclass"``, ``"regression"`` or ``"custom"`` (a torchmetrics
            object used as given, fed probabilities and labels with padding removed).
        metric: the torchmetrics object.
        features: the output's last-axis size.
        threshold: binary decision threshold (for the two-class view).
        two_class: score a binary output as two classes (macro/weighted averages).
    """

    def __init__(self, name: str, task: str, metric: nn.Module, *, features: int = 1, threshold: float = 0.5,
                 two_class: bool = False) -> None:
        super().__init__()
        self.name, self.task, self.metric = name, task, metric
        self.features, self.threshold, self.two_class = features, threshold, two_class
        self.updates = 0

    @torch.no_grad()
    def update(self, y_prob: Tensor, y_true: Tensor, mask: Tensor | None = None) -> None:
        """Accumulate one batch: model probabilities, labels, optional ``[B, T]`` mask."""
        preds, target = prepare_for_metric(self.task, y_prob, y_true, mask)
        if self.two_class:
            preds = torch.stack([1 - preds, preds], -1)
            target = target.long()
        if preds.shape[0] == 0:
            return
        self.metric.update(preds, target)  # type: ignore[operator]
        self.updates += 1

    def compute(self) -> float:
        """The metric over everything seen since the last reset (NaN if nothing was seen).

        Under multi-process training (``strategy="ddp"``) every process calls torchmetrics'
        ``compute``, which gathers the states of all of them, even one that saw nothing (every
        position masked): a process skipping it would leave the others waiting forever. Whether
        anything was seen is then summed across the processes too.
        """
        updates = self.updates
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1
        if distributed:
            seen = torch.tensor([updates], device=getattr(self.metric, "device", None))
            torch.distributed.all_reduce(seen)
            updates = int(seen.item())
        if updates == 0:
            return float("nan")
        with warnings.catch_warnings():  # this process may have seen nothing; the others did
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
            value = self.metric.compute()  # type: ignore[operator]
        return float(value.float().mean()) if isinstance(value, Tensor) else float(value)

    def reset(self) -> None:
        """Forget the accumulated state."""
        self.metric.reset()  # type: ignore[operator]
        self.updates = 0


def _flat_mask(mask: Tensor | None, lead: tuple[int, ...], device: torch.device) -> Tensor | None:
    if mask is None:
        return None
    m = mask.to(device)
    while m.dim() < len(lead):
        m = m.unsqueeze(-1)
    return m.expand(*lead).reshape(-1)


def prepare_for_metric(task: str, y_prob: Tensor, y_true: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Flatten predictions and labels for torchmetrics and drop padded positions.

    Returns:
        ``(preds, target)``: ``[N, C]`` probabilities and ``[N]`` class ids (multiclass), or
        ``[N]`` and ``[N]`` (binary, regression, custom).
    """
    y_prob = y_prob.detach().float()
    y_true = y_true.detach().to(y_prob.device)
    if task == "custom":  # class ids against [.., C] probabilities: multiclass layout; else values as given
        task = "multiclass" if y_prob.shape[-1] > 1 and y_true.shape != y_prob.shape else "raw"
    if task == "multiclass":
        classes = y_prob.shape[-1]
        lead = tuple(y_prob.shape[:-1])
        if y_true.shape == y_prob.shape and classes > 1:
            target = y_true.argmax(-1)
        else:
            target = y_true.reshape(lead) if y_true.numel() == int(torch.Size(lead).numel()) else y_true
        preds, target = y_prob.reshape(-1, classes), target.reshape(-1).long()
        m = _flat_mask(mask, lead, y_prob.device)
    else:
        if y_prob.dim() == y_true.dim() + 1 and y_prob.shape[-1] == 1:
            y_prob = y_prob.squeeze(-1)
        elif y_true.dim() == y_prob.dim() + 1 and y_true.shape[-1] == 1:
            y_true = y_true.squeeze(-1)
        lead = tuple(y_prob.shape)
        m = _flat_mask(mask, lead, y_prob.device)
        preds = y_prob.reshape(-1)
        target = y_true.reshape(-1)
        if task == "binary":
            target = (target > 0.5).long()
        elif task == "regression":
            target = target.float()
    if m is not None:
        preds, target = preds[m], target[m]
    return preds, target


class CustomMetric(Metric):
    """Wrap a torchmetrics object (or any ``nn.Module`` with ``update``/``compute``/``reset``).

    It receives the output probabilities and the labels, flattened, with padded steps removed.
    """

    def __init__(self, metric: nn.Module, name: str | None = None) -> None:
        self.metric = metric
        self.kind = "custom"
        self.family = "custom"
        self.name = name or _snake(type(metric).__name__)
        self.task = "custom"
        self.k, self.average, self.threshold = None, None, 0.5

    def bind(self, features: int, loss_task: str | None) -> BoundMetric:
        import copy

        return BoundMetric(self.name, "custom", copy.deepcopy(self.metric), features=features)

    def get_config(self) -> dict[str, Any]:
        raise ValueError(f"metric {self.name!r} is a custom object and cannot be saved in a config")


def _snake(name: str) -> str:
    import re

    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def get_metric(spec: str | Metric | nn.Module) -> Metric:
    """Resolve a metric name, :class:`Metric`, or torchmetrics object.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        return Metric(spec)
    if isinstance(spec, nn.Module) and hasattr(spec, "update") and hasattr(spec, "compute"):
        return CustomMetric(spec)
    raise TypeError(f"a metric must be a name, an rnnkit.metrics.Metric or a torchmetrics object, "
                    f"got {type(spec).__name__}")


__all__ = ["METRICS", "BoundMetric", "CustomMetric", "Metric", "get_metric", "prepare_for_metric"]
