"""What ``Model.compile`` records: optimizer, per-output losses and weights, metrics, clipping."""

from __future__ import annotations

from typing import Any

from ..metrics import Metric, get_metric
from .losses import LOSSES, Loss, get_loss, serialize_loss
from .optimizers import Optimizer, check_clipping, check_norm_limits, get_optimizer, serialize_optimizer


def _per_output(spec: Any, names: list[str], what: str, default: Any) -> list[Any]:
    n = len(names)
    if spec is None:
        return [default] * n
    if isinstance(spec, dict):
        unknown = [k for k in spec if k not in names]
        if unknown:
            raise ValueError(f"{what} has keys {unknown} that are not outputs; the outputs are {names}")
        return [spec.get(name, default) for name in names]
    if isinstance(spec, list | tuple):
        if len(spec) != n:
            raise ValueError(f"{what} has {len(spec)} entries but the model has {n} output(s) {names}")
        return list(spec)
    return [spec] * n


class CompileState:
    """Resolved ``compile`` arguments.

    Args:
        optimizer: name, optimizer object or ``torch.optim`` class.
        loss: loss spec (one, list or dict by output name).
        loss_weights: weights per output (list or dict), default 1.
        metrics: list (all outputs), list with one entry per output once any entry is a list (as
            Keras 3: ``[["accuracy"], "mae"]``), or dict by output name.
        clipnorm, clipvalue, global_clipnorm: gradient clipping overriding the optimizer's.

    Raises:
        ValueError: for an unknown optimizer, loss or metric name, or a missing loss.
    """

    def __init__(self, *, optimizer: Any, loss: Any, loss_weights: Any = None, metrics: Any = None,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None) -> None:
        self.optimizer: Optimizer = get_optimizer(optimizer)
        check_clipping(clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm)
        check_norm_limits(clipnorm, global_clipnorm)
        if loss is None:
            raise ValueError(f"compile() needs a loss, e.g. loss='sparse_categorical_crossentropy'; choose one of "
                             f"{', '.join(sorted(LOSSES))} or pass a function (y_true, y_pred) -> loss")
        for leaf in (loss.values() if isinstance(loss, dict) else loss if isinstance(loss, list | tuple) else [loss]):
            get_loss(leaf)  # fail at compile time for unknown names
        self._loss, self._loss_weights, self._metrics = loss, loss_weights, metrics
        for m in self._metric_leaves():
            get_metric(m)
        self.clip_overrides: dict[str, float | None] = {"clipnorm": clipnorm, "clipvalue": clipvalue,
                                                        "global_clipnorm": global_clipnorm}
        self.output_names: list[str] | None = None
        self.losses: list[Loss] = []
        self.loss_weights: list[float] = []
        self.metrics: list[list[Metric]] = []

    def _metric_leaves(self) -> list[Any]:
        spec = self._metrics
        if spec is None:
            return []
        if isinstance(spec, dict):
            values = list(spec.values())
        elif isinstance(spec, list | tuple):
            values = list(spec)
        else:
            values = [spec]
        leaves: list[Any] = []
        for v in values:
            if isinstance(v, list | tuple):
                leaves.extend(v)
            elif v is not None:
                leaves.append(v)
        return leaves

    def resolve(self, output_names: list[str]) -> None:
        """Bind the specs to the model's outputs (called once their names are known)."""
        if self.output_names == list(output_names):
            return
        self.output_names = list(output_names)
        self.losses = [get_loss(s) for s in _per_output(self._loss, output_names, "loss", None)]
        self.loss_weights = [float(w) for w in _per_output(self._loss_weights, output_names, "loss_weights", 1.0)]
        spec = self._metrics
        if spec is None:
            per: list[Any] = [[] for _ in output_names]
        elif isinstance(spec, dict):
            per = _per_output(spec, output_names, "metrics", [])
        elif isinstance(spec, list | tuple) and spec and any(isinstance(m, list | tuple) for m in spec):
            per = _per_output(list(spec), output_names, "metrics", [])
        else:
            per = [list(spec) if isinstance(spec, list | tuple) else [spec]] * len(output_names)
        self.metrics = [[get_metric(m) for m in (ms if isinstance(ms, list | tuple) else [ms])] for ms in per]

    def log_prefixes(self) -> list[str]:
        """Prefix of each output's keys in logs: ``""`` for one output, ``"<name>_"`` for several."""
        assert self.output_names is not None
        return [""] if len(self.output_names) == 1 else [f"{n}_" for n in self.output_names]

    def log_names(self) -> list[str]:
        """The keys of ``evaluate``'s logs, in order: ``loss``, per-output losses (several outputs),
        then each output's metrics (``model.metrics_names``)."""
        assert self.output_names is not None
        names = ["loss"]
        if len(self.output_names) > 1:
            names += [f"{n}_loss" for n in self.output_names]
        for prefix, metrics in zip(self.log_prefixes(), self.metrics):
            names += [prefix + m.name for m in metrics]
        return names

    def get_config(self) -> dict[str, Any]:
        """JSON-friendly description for saving (raises ``ValueError`` for unsaveable objects)."""
        if self.output_names is None:
            raise ValueError("compile settings are not bound to outputs yet")
        return {
            "optimizer": serialize_optimizer(self.optimizer),
            "loss": [serialize_loss(loss) for loss in self.losses],
            "loss_weights": self.loss_weights,
            "metrics": [[m.get_config() for m in ms] for ms in self.metrics],
            "clip": self.clip_overrides,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CompileState:
        """Rebuild from :meth:`get_config` output."""
        metrics = [[Metric(**m) for m in ms] for ms in config.get("metrics", [])]
        state = cls(optimizer=config["optimizer"], loss=list(config["loss"]), loss_weights=config.get("loss_weights"),
                    metrics=metrics or None, **config.get("clip", {}))
        return state
