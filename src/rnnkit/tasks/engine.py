"""The training engine behind every task: Lightning underneath, plain callables on top.

A task hands over its model, a loss function for a batch, a prediction function and a metric
function; the engine runs the epochs with a progress bar, evaluates on the dev data after each
epoch, keeps the best weights by the monitored dev metric (early stopping with patience),
checkpoints them atomically as safetensors, and returns the per-epoch history. Two optional
strategies act on the dev metric: ``lr_decay`` multiplies the learning rate by a factor after each
epoch that did not improve it, and the ``asgd`` optimizer (plain SGD) starts averaging the weights
at the first such epoch (non-monotonically triggered averaged SGD, Merity et al. 2018); the average
is what dev sees and what is kept; ``average_weights`` does the same averaging for any optimizer.
``max_seconds`` is a time budget: training stops after the epoch past which another one, at the
last epoch's pace, would end beyond it (the best weights so far are kept, as with early stopping).
Lightning is imported here only, so ``--help``, ``predict`` and ``evaluate`` stay fast.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .run import RunDir, atomic_write_bytes, unshared_tensors

LossFn = Callable[[nn.Module, Any], Tensor]
PredictFn = Callable[[nn.Module, Any], tuple[Tensor, Tensor]]
MetricFn = Callable[[Tensor, Tensor], dict[str, float]]

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "asgd")


@dataclass
class EngineOptions:
    epochs: int = 5
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    clip_norm: float | None = 5.0
    patience: int | None = 3
    monitor: str = "accuracy"
    mode: str = "max"
    seed: int = 0
    accelerator: str = "auto"
    progress: bool = True
    lr_decay: float | None = None
    lr_decay_patience: int = 1  # epochs without dev improvement before each cut
    average_weights: bool = False  # average the iterates from the first epoch without dev improvement
    max_seconds: float | None = None  # time budget: no epoch starts that would end past it


_BATCH_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("rnnkit_engine_batch_limit", default=None)


@contextlib.contextmanager
def batch_limit(batches: int = 1) -> Iterator[None]:
    """Inside this block :func:`fit` runs one epoch of at most ``batches`` training and dev batches.

    A warm-up: ``rnnkit compare`` runs each task's own ``train`` once this way (imports, first
    allocations, kernels) before it times the real runs.
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    token = _BATCH_LIMIT.set(batches)
    try:
        yield
    finally:
        _BATCH_LIMIT.reset(token)


def make_optimizer(name: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "asgd":  # plain SGD; the engine averages the iterates once dev stops improving
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _lightning_module(model: nn.Module, loss_fn: LossFn, predict_fn: PredictFn, metric_fn: MetricFn,
                      options: EngineOptions) -> Any:
    import lightning.pytorch as pl

    class TaskModule(pl.LightningModule):
        """Tensor-level training of a task model (the task owns data and metrics)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self._preds: list[Tensor] = []
            self._targets: list[Tensor] = []
            self.dev_metrics: dict[str, float] = {}
            self.loss_sum, self.loss_count = 0.0, 0

        def on_train_epoch_start(self) -> None:
            self.loss_sum, self.loss_count = 0.0, 0

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            loss = loss_fn(self.model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at batch {batch_idx}; lower "
                                         "train.learning_rate or keep train.clip_norm set")
            size = _batch_size(batch)
            self.loss_sum += float(loss.detach()) * size
            self.loss_count += size
            self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=size)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            preds, targets = predict_fn(self.model, batch)
            self._preds.append(preds.detach().cpu())
            self._targets.append(targets.detach().cpu())

        def on_validation_epoch_end(self) -> None:
            if not self._preds:
                return
            metrics = metric_fn(torch.cat(self._preds), torch.cat(self._targets))
            self._preds.clear()
            self._targets.clear()
            self.dev_metrics = metrics
            self.log_dict({f"dev_{k}": float(v) for k, v in metrics.items()}, prog_bar=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return make_optimizer(options.optimizer, self.model.parameters(), options.learning_rate,
                                  options.weight_decay)

    return TaskModule()


class WeightAverage:
    """Running mean of a model's parameters over optimizer steps, swapped in for evaluation."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.mean: dict[str, Tensor] | None = None
        self.live: dict[str, Tensor] | None = None
        self.steps = 0

    @property
    def active(self) -> bool:
        return self.mean is not None

    def start(self) -> None:
        self.mean = {name: p.detach().clone() for name, p in self.model.named_parameters()}
        self.steps = 1

    @torch.no_grad()
    def update(self) -> None:
        if self.mean is None:
            return
        self.steps += 1
        for name, p in self.model.named_parameters():
            self.mean[name].add_(p.detach() - self.mean[name], alpha=1.0 / self.steps)

    @torch.no_grad()
    def swap_in(self) -> None:
        if self.mean is None or self.live is not None:
            return
        self.live = {}
        for name, p in self.model.named_parameters():
            self.live[name] = p.detach().clone()
            p.copy_(self.mean[name])

    @torch.no_grad()
    def swap_out(self) -> None:
        if self.live is None:
            return
        for name, p in self.model.named_parameters():
            p.copy_(self.live[name])
        self.live = None


def history_csv(history: list[dict[str, float]]) -> str:
    """The per-epoch history as CSV (the columns of the first row)."""
    if not history:
        return ""
    keys = list(history[0])
    return "\n".join([",".join(keys)] + [",".join(f"{row.get(k, '')}" for k in keys) for row in history]) + "\n"


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, list | tuple) else getattr(batch, "inputs", batch)
    return int(first.shape[0]) if isinstance(first, Tensor) else 1


def progress_bar() -> Any:
    """Lightning's progress bar, counting epochs from 1 as the log does (:mod:`rnnkit.progress`)."""
    from ..progress import epoch_progress_bar

    return epoch_progress_bar()


def fit(model: nn.Module, train_loader: Any, dev_loader: Any, *, loss_fn: LossFn, predict_fn: PredictFn,
        metric_fn: MetricFn, options: EngineOptions, run: RunDir | None = None,
        log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """Train ``model`` and leave it holding the best weights by ``options.monitor`` on dev.

    Returns:
        One dict per epoch: ``epoch``, ``train_loss``, ``seconds`` and ``dev_<metric>`` for each
        metric.
    """
    import lightning.pytorch as pl

    if options.epochs < 1:
        raise ValueError(f"train.epochs must be >= 1, got {options.epochs}")
    if options.max_seconds is not None and not options.max_seconds > 0:
        raise ValueError(f"train.max_minutes must be > 0, got {options.max_seconds / 60:g}")
    if options.lr_decay is not None and not 0.0 < options.lr_decay <= 1.0:
        raise ValueError(f"train.lr_decay must be in (0, 1], got {options.lr_decay}; 0.25 divides the rate by 4")
    patience_ok = isinstance(options.lr_decay_patience, int) and not isinstance(options.lr_decay_patience, bool)
    if not patience_ok or options.lr_decay_patience < 1:
        raise ValueError(f"train.lr_decay_patience must be a whole number >= 1, got {options.lr_decay_patience!r}")
    if (options.lr_decay is not None and options.patience is not None
            and options.lr_decay_patience >= options.patience):
        log(f"note: early stopping (train.patience={options.patience}) comes before the first learning-rate cut "
            f"(train.lr_decay_patience={options.lr_decay_patience}): the rate is never lowered")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning 2.6 vs torch 2.13, harmless
    pl.seed_everything(options.seed, verbose=False)
    module = _lightning_module(model, loss_fn, predict_fn, metric_fn, options)
    history: list[dict[str, float]] = []
    sign = 1.0 if options.mode == "max" else -1.0
    state: dict[str, Any] = {"best": -math.inf, "best_weights": None, "bad_epochs": 0, "start": time.perf_counter()}
    averager = WeightAverage(model)

    class Track(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            state["epoch_start"] = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            averager.update()

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            averager.swap_in()

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.sanity_checking:
                averager.swap_out()
                return
            metrics = pl_module.dev_metrics
            optimizer = trainer.optimizers[0]
            row = {"epoch": trainer.current_epoch + 1,
                   "train_loss": pl_module.loss_sum / max(pl_module.loss_count, 1),
                   "seconds": time.perf_counter() - state["start"], "lr": optimizer.param_groups[0]["lr"],
                   **{f"dev_{k}": float(v) for k, v in metrics.items()}}
            history.append(row)
            score = sign * metrics.get(options.monitor, -sign * math.inf)
            if score > state["best"]:
                state["best"], state["bad_epochs"] = score, 0
                state["best_weights"] = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                if run is not None:
                    from safetensors.torch import save

                    atomic_write_bytes(run.file("checkpoint-best.safetensors"),
                                       save(unshared_tensors(state["best_weights"])[0]))
            else:
                state["bad_epochs"] += 1
            averager.swap_out()
            if run is not None:
                run.write_text("history.csv", history_csv(history))
            shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("dev_"))
            log(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, {shown} ({row['seconds']:.0f} s)")
            if state["bad_epochs"] and (options.optimizer == "asgd" or options.average_weights) \
                    and not averager.active:
                averager.start()
                log(f"dev {options.monitor} did not improve: averaging the weights from here on")
            if (state["bad_epochs"] and options.lr_decay is not None
                    and state["bad_epochs"] % options.lr_decay_patience == 0):
                for group in optimizer.param_groups:
                    group["lr"] *= options.lr_decay
                log(f"dev {options.monitor} did not improve for {state['bad_epochs']} epoch(s): learning rate now "
                    f"{optimizer.param_groups[0]['lr']:.3g}")
            if options.patience is not None and state["bad_epochs"] >= options.patience:
                log(f"early stopping: dev {options.monitor} has not improved for {options.patience} epochs")
                trainer.should_stop = True
            last_epoch = time.perf_counter() - state.get("epoch_start", state["start"])  # training + dev
            if (options.max_seconds is not None and row["epoch"] < options.epochs and not trainer.should_stop
                    and row["seconds"] + last_epoch > options.max_seconds):
                log(f"time budget: another epoch (about {last_epoch:.0f} s) would end past "
                    f"{options.max_seconds / 60:g} min (train.max_minutes); stopping after epoch {row['epoch']}")
                trainer.should_stop = True

    limit = _BATCH_LIMIT.get()  # set by batch_limit(): a warm-up of one short epoch
    trainer = pl.Trainer(
        max_epochs=options.epochs if limit is None else 1, accelerator=options.accelerator, devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=options.progress, enable_model_summary=False,
        num_sanity_val_steps=0, gradient_clip_val=options.clip_norm,
        callbacks=[Track(), progress_bar()] if options.progress else [Track()],
        deterministic=False, limit_train_batches=1.0 if limit is None else limit,
        limit_val_batches=1.0 if limit is None else limit,
    )
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=dev_loader)
    if state["best_weights"] is not None:
        model.load_state_dict(state["best_weights"])
    model.cpu().eval()
    return history
