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
last epoch's pace, would end beyond it (the best weights so far are kept, as with early stopping);
:func:`stop_reason` says which of the two ended the last run early.
The precision (Lightning's ``"32-true"``, ``"bf16-mixed"`` ...) is ``options.precision`` (every task's
``train.precision``); the model is given back, and its weights saved, in the dtypes it came with, and
the dev metrics see float32 predictions.
Lightning is imported here only, so ``--help``, ``predict`` and ``evaluate`` stay fast.

Resuming: after every epoch the engine writes ``checkpoint-last.ckpt`` in the run folder (atomically:
a Lightning checkpoint of the weights, optimizer, loop counters, and the engine's own state: history,
best score, epochs without improvement, weight average, random-number generators and the training
loader's shuffling state). In long epochs it also writes one mid-epoch, after the batch that ends
:func:`checkpoint_interval` (10 minutes by default) since the last one, and after the batch in which
a SIGTERM or a first Ctrl-C arrives (the fit stops there; a second Ctrl-C stops it at once), with the
batches done so far and the epoch's running loss.
Inside :func:`resuming` a :func:`fit` on that run continues from it (from the next batch of the same
epoch for a mid-epoch checkpoint: the epoch's batches are drawn in the same order and the first ones
passed over), so an interrupted run ends with the weights, history and metrics an uninterrupted one
would have; the checkpoint is loaded with ``weights_only`` (tensors and plain values, no code).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from ..training.dtypes import floating_dtypes, full_precision, restore_dtypes
from ..training.interrupts import StopRequest, ctrl_c_requests_a_stop, fit_passing_interrupts
from ..training.resuming import PassOver, read_checkpoint
from .run import RunDir, atomic_write_bytes, build_recorded, unshared_tensors

LossFn = Callable[[nn.Module, Any], Tensor]
PredictFn = Callable[[nn.Module, Any], tuple[Tensor, Tensor]]
MetricFn = Callable[[Tensor, Tensor], dict[str, float]]
M = TypeVar("M")

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "asgd")
LAST_CHECKPOINT = "checkpoint-last.ckpt"


class ResumeError(ValueError):
    """``checkpoint-last.ckpt`` cannot be continued from (unreadable, or another model's)."""


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
    # a second dev metric that decides between epochs whose monitored metric ties exactly (speech: CER under
    # an equal WER, which a small dev set repeats often), in its own direction ("min" or "max")
    tie_break: str | None = None
    tie_break_mode: str = "min"
    seed: int = 0
    accelerator: str = "auto"
    progress: bool = True
    lr_decay: float | None = None
    lr_decay_patience: int = 1  # epochs without dev improvement before each cut
    average_weights: bool = False  # average the iterates from the first epoch without dev improvement
    max_seconds: float | None = None  # time budget: no epoch starts that would end past it
    precision: str = "32-true"  # Lightning's precision ("32-true", "bf16-mixed" ...; train.precision)


_BATCH_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("rnnkit_engine_batch_limit", default=None)
_RESUMING: contextvars.ContextVar[bool] = contextvars.ContextVar("rnnkit_engine_resuming", default=False)
_PRIOR_SECONDS: contextvars.ContextVar[float] = contextvars.ContextVar("rnnkit_engine_prior_seconds", default=0.0)
_STOPPED: contextvars.ContextVar[str | None] = contextvars.ContextVar("rnnkit_engine_stopped", default=None)
DEFAULT_CHECKPOINT_MINUTES = 10.0
_CHECKPOINT_SECONDS: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "rnnkit_engine_checkpoint_seconds", default=DEFAULT_CHECKPOINT_MINUTES * 60)


@contextlib.contextmanager
def checkpoint_interval(minutes: float | None) -> Iterator[None]:
    """Inside this block :func:`fit` also writes ``checkpoint-last.ckpt`` in the middle of an epoch,
    after the first batch that ends ``minutes`` or more after the last checkpoint (``None``: at the
    ends of epochs only). Outside it, every 10 minutes."""
    if minutes is not None and not (isinstance(minutes, int | float) and math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"the checkpoint interval must be a number of minutes > 0 (or none), got {minutes!r}")
    token = _CHECKPOINT_SECONDS.set(None if minutes is None else float(minutes) * 60)
    try:
        yield
    finally:
        _CHECKPOINT_SECONDS.reset(token)


def stop_reason() -> str | None:
    """Why the last :func:`fit` ended before ``train.epochs``: ``"early"`` (early stopping), ``"time"``
    (the time budget), or ``None`` (it ran every epoch), for a task's metrics.json."""
    return _STOPPED.get()


def prior_seconds() -> float:
    """Seconds the last :func:`fit` had trained before it resumed (0 for a run trained in one go):
    tasks add them to their ``train_seconds``, so a resumed run reports its whole training time."""
    return _PRIOR_SECONDS.get()


@contextlib.contextmanager
def resuming() -> Iterator[None]:
    """Inside this block :func:`fit` continues from the run folder's ``checkpoint-last.ckpt`` (the
    task's ``train`` rebuilds data and model as before; the checkpoint restores the rest)."""
    token = _RESUMING.set(True)
    try:
        yield
    finally:
        _RESUMING.reset(token)


def build_for_run(run: RunDir | None, build: Callable[[], M]) -> M:
    """A task's model for :func:`fit` in ``run``: ``build()`` as configured for a new run; inside
    :func:`resuming`, where the sizes come from the run folder's own config.yaml, under an allocation
    budget from the size of ``checkpoint-last.ckpt`` (which holds the weights the model must take), so
    an edited config.yaml asking for an absurd model is a one-line :class:`ResumeError` before the
    memory is allocated."""
    if not _RESUMING.get() or run is None:
        return build()
    return build_recorded(build, source=run.file("config.yaml"), weights=run.file(LAST_CHECKPOINT),
                          fix="restore it or train a new run", error=ResumeError)


def _rng_states() -> dict[str, Any]:
    """Every random-number generator training draws from, as plain values and tensors."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(np.asarray(keys).copy()), int(pos), int(has_gauss), float(gauss)],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_states(states: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_value = states["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss_value))
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _dataset_epoch(loader: Any) -> int | None:
    """The epoch counter of a dataset that shuffles itself (the language model's windows)."""
    epoch = getattr(getattr(loader, "dataset", None), "epoch", None)
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def _set_dataset_epoch(loader: Any, epoch: int | None) -> None:
    if epoch is not None:
        loader.dataset.epoch = epoch


def _set_sampler_epochs(loader: Any, epoch: int) -> None:
    """``set_epoch(epoch)`` on the loader's samplers. Lightning does this too, but from a counter that,
    in the first epoch after resuming, still reads the epoch before; the samplers draw their order
    lazily, after this is called at the epoch's start."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    for part in {id(p): p for p in (getattr(loader, "sampler", None), batch_sampler,
                                    getattr(batch_sampler, "sampler", None)) if p is not None}.values():
        if callable(getattr(part, "set_epoch", None)):
            part.set_epoch(epoch)


def _check_last_checkpoint(path: Any, module: nn.Module) -> dict[str, Any] | None:
    """A one-line :class:`ResumeError` unless ``path`` is a readable engine checkpoint of ``module``'s
    shapes (memory-mapped: the tensors are not read here). Returns its mid-epoch record (``batches``
    done in the interrupted epoch ...), ``None`` for a checkpoint written at the end of an epoch."""
    try:
        saved = read_checkpoint(path)  # the zip's CRCs checked first
    except PermissionError as err:  # not damaged: only unreadable to this user
        raise ResumeError(f"{path} cannot be read ({err.strerror}); make it readable (chmod u+r {path}) and "
                          "resume again") from None
    except Exception as err:  # truncated zip, not a zip, bit flips, unpickling refused ...
        raise ResumeError(f"{path} is corrupt or truncated ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:100]}); it cannot be resumed: train a new run") from None
    track = [v for k, v in saved.get("callbacks", {}).items() if isinstance(k, str) and k.endswith("Track")] \
        if isinstance(saved, dict) and isinstance(saved.get("callbacks"), dict) else []
    if not track or not isinstance(saved.get("state_dict"), dict) or "optimizer_states" not in saved:
        raise ResumeError(f"{path} is not an rnnkit training checkpoint; it cannot be resumed: train a new run")
    problem = _track_problem(track[0]) or _optimizer_problem(saved["optimizer_states"])
    if problem is None and not all(isinstance(v, Tensor) for v in saved["state_dict"].values()):
        problem = "its state_dict holds something other than tensors"
    if problem is not None:
        raise ResumeError(f"{path} is corrupt ({problem}); it cannot be resumed: train a new run")
    expected = module.state_dict()
    found = saved["state_dict"]
    wrong = sorted(set(expected) ^ set(found), key=str) or [k for k in expected
                                                            if tuple(expected[k].shape) != tuple(found[k].shape)]
    if wrong:
        detail = (f"{wrong[0]} is {tuple(found[wrong[0]].shape)} there, {tuple(expected[wrong[0]].shape)} here"
                  if wrong[0] in found and wrong[0] in expected else f"{wrong[0]} is only in one of them")
        raise ResumeError(f"{path} holds another model than this run's config.yaml builds ({detail}); "
                          "it cannot be resumed: train a new run")
    mid = track[0].get("mid_epoch") if isinstance(track[0], dict) else None
    return mid if isinstance(mid, dict) else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _track_problem(track: Any) -> str | None:
    """What is wrong with a checkpoint's training record (the ``Track`` callback's state), or ``None``.

    Lightning hands the record to ``Track.load_state_dict`` inside ``trainer.fit``: a damaged or
    edited one would stop there with a bare ``KeyError`` or ``TypeError``, or resume wrongly."""
    if not isinstance(track, dict):
        return "its training record is not a mapping"
    for key in ("history", "best", "bad_epochs", "elapsed", "average", "rng", "dataset_epoch"):
        if key not in track:
            return f"its training record has no {key!r}"
    if not isinstance(track["history"], list) or not all(isinstance(row, dict) for row in track["history"]):
        return "its training record's history is not a list of epochs"
    if not _number(track["best"]) or not _number(track["elapsed"]) or not isinstance(track["bad_epochs"], int):
        return "its training record's best score, elapsed time or epochs without improvement are not numbers"
    average = track["average"]
    if average is not None and not (isinstance(average, dict) and {"mean", "steps"} <= set(average)):
        return "its training record's weight average is malformed"
    rng = track["rng"]
    if not (isinstance(rng, dict) and isinstance(rng.get("torch"), Tensor)
            and isinstance(rng.get("python"), list | tuple) and len(rng["python"]) == 3
            and isinstance(rng.get("numpy"), list | tuple) and len(rng["numpy"]) == 5
            and isinstance(rng["numpy"][1], Tensor) and isinstance(rng.get("cuda", []), list | tuple)):
        return "its training record's random-generator states are malformed"
    if track["dataset_epoch"] is not None and not isinstance(track["dataset_epoch"], int):
        return "its training record's dataset epoch is not a number"
    mid = track.get("mid_epoch")
    if mid is not None and not (isinstance(mid, dict) and isinstance(mid.get("batches"), int)
                                and not isinstance(mid["batches"], bool) and mid["batches"] >= 0
                                and _number(mid.get("loss_sum")) and _number(mid.get("loss_count"))
                                and _number(mid.get("epoch_seconds"))):
        return "its training record's mid-epoch position is malformed"
    task_state = track.get("task_state")
    if task_state is not None and not isinstance(task_state, dict):
        return "its training record's task state is not a mapping"
    return None


def _optimizer_problem(states: Any) -> str | None:
    """What is wrong with a checkpoint's ``optimizer_states`` (Lightning's list of state dicts), or ``None``."""
    if not isinstance(states, list) or not all(
            isinstance(st, dict) and isinstance(st.get("state"), dict) and isinstance(st.get("param_groups"), list)
            for st in states):
        return "its optimizer states are malformed"
    return None


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


def make_optimizer(name: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float, *,
                   fused: bool = True) -> torch.optim.Optimizer:
    """The task optimizer ``name``; Adam, AdamW and SGD with torch's fused step where it runs
    (:func:`rnnkit.training.optimizers.fused_step_kwargs`: 4x faster for Adam on CPU) and ``fused``.
    Mixed precision (``bf16-mixed``, ``16-mixed``) takes torch's default step: a fused step unscales a
    float16 GradScaler's gradients itself, after the clipping, so Lightning refuses to clip for one."""
    from ..training.optimizers import make_torch_optimizer

    if name == "adam":
        return make_torch_optimizer(torch.optim.Adam, params, fused=fused, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return make_torch_optimizer(torch.optim.AdamW, params, fused=fused, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return make_torch_optimizer(torch.optim.SGD, params, fused=fused, lr=lr, momentum=0.9,
                                    weight_decay=weight_decay)
    if name == "asgd":  # plain SGD; the engine averages the iterates once dev stops improving
        return make_torch_optimizer(torch.optim.SGD, params, fused=fused, lr=lr, weight_decay=weight_decay)
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
            self._preds.append(full_precision(preds.detach().cpu()))
            self._targets.append(full_precision(targets.detach().cpu()))

        def on_validation_epoch_end(self) -> None:
            if not self._preds:
                return
            metrics = metric_fn(torch.cat(self._preds), torch.cat(self._targets))
            self._preds.clear()
            self._targets.clear()
            self.dev_metrics = metrics
            self.log_dict({f"dev_{k}": float(v) for k, v in metrics.items()}, prog_bar=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            mixed = str(self.trainer.precision).endswith("-mixed")
            return make_optimizer(options.optimizer, self.model.parameters(), options.learning_rate,
                                  options.weight_decay, fused=not mixed)

    return TaskModule()


class WeightAverage:
    """Running mean of a model's parameters over optimizer steps, swapped in for evaluation (kept in
    float32 for float16/bfloat16 weights: an increment of 1/steps of a difference is below their rounding)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.mean: dict[str, Tensor] | None = None
        self.live: dict[str, Tensor] | None = None
        self.steps = 0

    @property
    def active(self) -> bool:
        return self.mean is not None

    def start(self) -> None:
        self.mean = {name: full_precision(p.detach()).clone() for name, p in self.model.named_parameters()}
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


def _trainer(pl: Any, precision: str, log: Callable[[str], None], **kwargs: Any) -> Any:
    """``pl.Trainer(precision=precision, **kwargs)``; where Lightning trains with another precision than
    asked (``16-mixed`` on a CPU, where float16 autocast is not supported, becomes ``bf16-mixed``) the log
    says so in one line, in place of Lightning's warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not supported on CPU. Using `precision=.*")
        trainer = pl.Trainer(precision=precision, **kwargs)
    used = str(trainer.precision)
    if used != precision:
        device = type(trainer.accelerator).__name__.replace("Accelerator", "") or "this device"
        log(f"note: train.precision={precision} is not supported on {device}; Lightning trains with {used}")
    return trainer


def _check_options(options: EngineOptions) -> None:
    """One-line errors for settings that would otherwise train silently wrong: a patience of 0 or less
    stops after the first epoch, a clip norm of 0 or less turns clipping off (Lightning skips it), a
    mode other than "max" would select the worst epochs."""
    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if options.optimizer not in OPTIMIZERS:
        raise ValueError(f"train.optimizer: unknown optimizer {options.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if not (isinstance(options.learning_rate, int | float) and math.isfinite(options.learning_rate)
            and options.learning_rate > 0):
        raise ValueError(f"train.learning_rate must be a number > 0, got {options.learning_rate!r}")
    if not options.weight_decay >= 0:
        raise ValueError(f"train.weight_decay must be >= 0 (0 for none), got {options.weight_decay!r}")
    if options.patience is not None and not (whole(options.patience) and options.patience >= 1):
        raise ValueError(f"train.patience must be a whole number >= 1 (or null to never stop early), got "
                         f"{options.patience!r}; 1 stops after the first epoch without dev improvement")
    if options.clip_norm is not None and not options.clip_norm > 0:
        raise ValueError(f"train.clip_norm must be > 0 (or null for no clipping), got {options.clip_norm!r}")
    for key, mode in (("mode", options.mode), ("tie_break_mode", options.tie_break_mode)):
        if mode not in ("max", "min"):
            raise ValueError(f"{key} must be 'max' (higher is better) or 'min' (lower is better), got {mode!r}")


def fit(model: nn.Module, train_loader: Any, dev_loader: Any, *, loss_fn: LossFn, predict_fn: PredictFn,
        metric_fn: MetricFn, options: EngineOptions, run: RunDir | None = None,
        log: Callable[[str], None] = print, task_state: dict[str, Any] | None = None) -> list[dict[str, float]]:
    """Train ``model`` and leave it holding the best weights by ``options.monitor`` on dev.

    ``task_state``: a small dict of plain values the task's own functions keep across batches (a
    step counter for a schedule); it is saved in ``checkpoint-last.ckpt`` and updated in place when
    a run resumes.

    Returns:
        One dict per epoch: ``epoch``, ``train_loss``, ``seconds`` and ``dev_<metric>`` for each
        metric.
    """
    import lightning.pytorch as pl

    if options.epochs < 1:
        raise ValueError(f"train.epochs must be >= 1, got {options.epochs}")
    _check_options(options)
    from .config import check_precision

    precision = check_precision(options.precision)
    try:
        dev_batches = len(dev_loader)
    except TypeError:  # an iterable loader: its length is not known ahead
        dev_batches = None
    if dev_batches == 0:  # Lightning then skips validation: every epoch trained, none scored, none kept
        raise ValueError("the dev data give no batches (no dev examples), so no epoch could be scored or selected; "
                         "give dev data with at least one example")
    if options.max_seconds is not None and not options.max_seconds > 0:
        raise ValueError(f"train.max_minutes must be > 0 (or null for no time budget), got {options.max_seconds / 60:g}")
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
    _PRIOR_SECONDS.set(0.0)
    _STOPPED.set(None)
    history: list[dict[str, float]] = []
    sign = 1.0 if options.mode == "max" else -1.0
    started = time.perf_counter()
    tie_sign = 1.0 if options.tie_break_mode == "max" else -1.0
    state: dict[str, Any] = {"best": -math.inf, "best_tie": -math.inf, "best_weights": None, "bad_epochs": 0, "start": started,
                             "saved_at": started, "epoch_start": started, "epoch_batches": 0, "mid_epoch": None,
                             "stopped": None}  # "early" or "time": the run ended before train.epochs
    averager = WeightAverage(model)
    dtypes = floating_dtypes(model)  # put back after training in another precision
    weight_dtypes = {k: v.dtype for k, v in model.state_dict().items()}  # the best weights are kept in these
    limit = _BATCH_LIMIT.get()  # set by batch_limit(): a warm-up of one short epoch
    resume_from = None
    if _RESUMING.get():
        if run is None or not run.file(LAST_CHECKPOINT).is_file():
            raise ValueError(f"nothing to resume: {run.path if run else 'no run folder'} has no {LAST_CHECKPOINT} "
                             "(it is written after each finished epoch); train a new run")
        resume_from = run.file(LAST_CHECKPOINT)
    pending: dict[str, Any] = {}
    stop = StopRequest()  # a first Ctrl-C's request to stop after the batch (set below, where it can be saved)

    class Track(pl.Callback):
        def state_dict(self) -> dict[str, Any]:
            return {"history": [dict(row) for row in history], "best": state["best"], "best_tie": state["best_tie"],
                    "bad_epochs": state["bad_epochs"], "elapsed": time.perf_counter() - state["start"],
                    "average": None if averager.mean is None else {"mean": averager.mean, "steps": averager.steps},
                    "rng": _rng_states(), "dataset_epoch": _dataset_epoch(train_loader),
                    "stopped": state["stopped"], "max_seconds": options.max_seconds,
                    "task_state": dict(task_state) if task_state is not None else None,
                    "mid_epoch": state["mid_epoch"]}

        def load_state_dict(self, saved: dict[str, Any]) -> None:
            history[:] = saved["history"]
            if task_state is not None and saved.get("task_state") is not None:
                task_state.update(saved["task_state"])
            state["best"], state["bad_epochs"] = saved["best"], saved["bad_epochs"]
            state["best_tie"] = saved.get("best_tie", -math.inf)  # checkpoints from before the tie-breaker
            state["start"] = time.perf_counter() - saved["elapsed"]
            _PRIOR_SECONDS.set(float(saved["elapsed"]))
            if saved["average"] is not None:
                averager.mean, averager.steps = saved["average"]["mean"], saved["average"]["steps"]
            best_file = run.file("checkpoint-best.safetensors") if run is not None else None
            if history and best_file is not None and best_file.is_file():
                from safetensors.torch import load_file

                try:
                    best = load_file(best_file)
                except Exception as err:  # safetensors raises its own error types for bad headers
                    raise ResumeError(f"{best_file} is corrupt ({' '.join(str(err).split())[:100]}); it cannot be "
                                      "resumed: train a new run") from None
                own = model.state_dict()
                for alias, name in unshared_tensors(own)[1].items():  # tied weights: saved once
                    if alias not in best and name in best:
                        best[alias] = best[name]
                wrong = sorted(set(own) ^ set(best)) or [k for k in own if tuple(own[k].shape) != tuple(best[k].shape)]
                if wrong:  # else training would run to its end and fail there, loading these weights
                    raise ResumeError(f"{best_file} holds another model's weights ({wrong[0]} does not match); it "
                                      "cannot be resumed: train a new run")
                state["best_weights"] = best
            # a dataset that shuffles itself may be read before the first epoch's hooks run: set it now
            _set_dataset_epoch(train_loader, saved["dataset_epoch"])
            pending["rng"] = saved["rng"]  # applied when the next epoch (or, mid-epoch, the next batch) starts
            mid = saved.get("mid_epoch")
            if mid is not None:  # the epoch's running loss and clock go on from where they were
                module.loss_sum, module.loss_count = mid["loss_sum"], mid["loss_count"]
                state["epoch_start"] = time.perf_counter() - mid["epoch_seconds"]
                state["epoch_batches"] = mid["batches"]
                pending["mid_epoch"] = mid
            state["saved_at"] = time.perf_counter()
            # a run that early stopping or the time budget ended stays ended, as it would have without the
            # interruption (a stop after the last checkpoint repeats itself); a larger budget trains on
            # (early stopping is judged with this call's train.patience: a larger one trains on)
            early = options.patience is not None and saved["bad_epochs"] >= options.patience
            stopped = "early" if early else ("time" if saved.get("stopped") == "time" else None)
            if stopped == "early" or (stopped == "time" and options.max_seconds is not None
                                      and options.max_seconds <= (saved.get("max_seconds") or math.inf)):
                pending["stopped"] = stopped

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            if pending.get("stopped"):
                trainer.should_stop = True  # no further epoch


        def save(self, trainer: Any) -> None:
            if run is None or limit is not None:
                return
            partial = run.file(LAST_CHECKPOINT + ".partial")
            try:
                # DirectCheckpointIO fsyncs it: on disk before the rename, or a lost machine may leave it empty
                trainer.save_checkpoint(partial)
                os.replace(partial, run.file(LAST_CHECKPOINT))  # atomic: the old checkpoint or the new one
            except BaseException:  # a full disk: the old checkpoint stays, and no half-written copy takes space
                partial.unlink(missing_ok=True)
                raise
            state["saved_at"] = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.save(trainer)
            if state.pop("sigterm", False):  # SIGTERM during the epoch's last batch or its validation: saved,
                trainer._signal_connector.received_sigterm = True  # now Lightning stops the fit (143)
            if stop.asked:  # Ctrl-C during the epoch's last batch or its validation: saved, now stop
                raise KeyboardInterrupt

        def on_validation_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
            # Lightning's validation loop stops at its next batch on a SIGTERM, before the epoch's checkpoint:
            # the epoch is trained, so it is validated and saved first (as after a first Ctrl-C), then stopped
            connector: Any = getattr(trainer, "_signal_connector", None)  # (Lightning's: else it stops as it did)
            if trainer.received_sigterm and run is not None and limit is None \
                    and hasattr(connector, "received_sigterm"):
                state["sigterm"] = True
                connector.received_sigterm = False

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            if "rng" in pending:  # the first epoch after resuming; its batches are drawn after this hook
                _set_rng_states(pending.pop("rng"))
                log(f"resuming from {LAST_CHECKPOINT} after epoch {len(history)} of {options.epochs}")
            _set_sampler_epochs(train_loader, trainer.current_epoch)
            state["epoch_start"], state["epoch_batches"] = time.perf_counter(), 0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if "mid_epoch" in pending:  # resumed mid-epoch: Lightning starts no epoch, this is the next batch
                if "rng" in pending:
                    _set_rng_states(pending.pop("rng"))
                log(f"resuming from {LAST_CHECKPOINT} in epoch {trainer.current_epoch + 1} of {options.epochs}, "
                    f"after batch {pending.pop('mid_epoch')['batches']}")

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            averager.update()
            state["epoch_batches"] += 1  # Lightning's batch_idx restarts one short after a mid-epoch resume
            interval = _CHECKPOINT_SECONDS.get()
            # a SIGTERM (a scheduler's preemption, `timeout`) stops the fit after this batch: the
            # checkpoint keeps the epoch's batches done so far, not those up to the last interval
            last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            if (interval is not None and not last
                    and (time.perf_counter() - state["saved_at"] >= interval or trainer.received_sigterm
                         or stop.asked)):
                state["mid_epoch"] = {"batches": state["epoch_batches"], "loss_sum": pl_module.loss_sum,
                                      "loss_count": pl_module.loss_count,
                                      "epoch_seconds": time.perf_counter() - state["epoch_start"]}
                try:
                    self.save(trainer)
                finally:
                    state["mid_epoch"] = None
            if stop.asked and not last:  # a first Ctrl-C: this batch is trained and checkpointed, now stop
                raise KeyboardInterrupt

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            averager.swap_in()

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.sanity_checking:
                averager.swap_out()
                return
            metrics = pl_module.dev_metrics
            pl_module.dev_metrics = {}  # an epoch whose dev data gave no batches must not reuse these
            for key in (options.monitor, options.tie_break):  # else no epoch would ever count as better
                if key is not None and key not in metrics:
                    raise ValueError(f"the dev metrics have no {key!r} to select epochs by (they are: "
                                     f"{', '.join(metrics) or 'none, the dev data gave no batches'}); "
                                     "monitor or tie_break must name one of them")
            optimizer = trainer.optimizers[0]
            row = {"epoch": trainer.current_epoch + 1,
                   "train_loss": pl_module.loss_sum / max(pl_module.loss_count, 1),
                   "seconds": time.perf_counter() - state["start"], "lr": optimizer.param_groups[0]["lr"],
                   **{f"dev_{k}": float(v) for k, v in metrics.items()}}
            history.append(row)
            score = sign * metrics.get(options.monitor, -sign * math.inf)
            tie = -math.inf if options.tie_break is None else tie_sign * metrics.get(options.tie_break,
                                                                                     -tie_sign * math.inf)
            if score > state["best"] or (score == state["best"] and tie > state["best_tie"]):
                state["best"], state["best_tie"], state["bad_epochs"] = score, tie, 0
                state["best_weights"] = copy.deepcopy({k: v.detach().cpu().to(weight_dtypes.get(k, v.dtype))
                                                       for k, v in model.state_dict().items()})
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
                trainer.should_stop, state["stopped"] = True, "early"
            last_epoch = time.perf_counter() - state["epoch_start"]  # training + dev
            if (options.max_seconds is not None and row["epoch"] < options.epochs and not trainer.should_stop
                    and row["seconds"] + last_epoch > options.max_seconds):
                log(f"time budget: another epoch (about {last_epoch:.0f} s) would end past "
                    f"{options.max_seconds / 60:g} min (train.max_minutes); stopping after epoch {row['epoch']}")
                trainer.should_stop, state["stopped"] = True, "time"

    from ..training.checkpoint_io import DirectCheckpointIO

    trainer = _trainer(
        pl, precision, log,
        plugins=[DirectCheckpointIO()],  # into the run folder's .partial, not through /tmp (see the module)
        max_epochs=options.epochs if limit is None else 1, accelerator=options.accelerator, devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=options.progress, enable_model_summary=False,
        num_sanity_val_steps=0, gradient_clip_val=options.clip_norm,
        callbacks=[Track(), progress_bar()] if options.progress else [Track()],
        deterministic=False, limit_train_batches=1.0 if limit is None else limit,
        limit_val_batches=1.0 if limit is None else limit,
    )
    # with a run folder and mid-epoch checkpoints, a first Ctrl-C stops after the batch it came in, with a
    # checkpoint of it (as a SIGTERM does): the run resumes there, where it lost the batches since the last one
    saving = run is not None and limit is None and _CHECKPOINT_SECONDS.get() is not None
    with ctrl_c_requests_a_stop("interrupted: stopping after this batch with a checkpoint to resume from (Ctrl-C "
                                "again to stop at once)") if saving else contextlib.nullcontext(stop) as stop:
        try:
            _fit_or_resume(trainer, module, train_loader, dev_loader, resume_from, history, pending, log)
        finally:
            restore_dtypes(model, dtypes)
    if stop.asked:  # a Ctrl-C after the last epoch's checkpoint (while Lightning tore down): it stops all the same
        raise KeyboardInterrupt
    _STOPPED.set(None if len(history) >= options.epochs else state["stopped"] or pending.get("stopped"))
    if state["best_weights"] is not None:
        model.load_state_dict(state["best_weights"])
    model.cpu().eval()
    return history


def _fit_or_resume(trainer: Any, module: Any, train_loader: Any, dev_loader: Any, resume_from: Any,
                   history: list[dict[str, float]], pending: dict[str, Any], log: Callable[[str], None]) -> None:
    """``trainer.fit`` from the start, or from the checkpoint ``resume_from`` (mid-epoch: passing over
    the batches done), logging why a resumed run had nothing left to train."""
    if resume_from is None:
        fit_passing_interrupts(trainer, module, train_dataloaders=train_loader, val_dataloaders=dev_loader)
    else:
        import inspect

        safe: dict[str, Any] = {"weights_only": True} if "weights_only" in inspect.signature(trainer.fit).parameters \
            else {}
        mid = _check_last_checkpoint(resume_from, module)
        loader = train_loader if mid is None else PassOver(train_loader, int(mid["batches"]), lambda skip: ResumeError(
            f"the interrupted epoch had {skip} training batches done but the data now gives fewer; it cannot be "
            "resumed mid-epoch: train a new run"))
        with warnings.catch_warnings():  # "not resumable" mid-epoch: PassOver is what resumes it
            warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
            fit_passing_interrupts(trainer, module, train_dataloaders=loader, val_dataloaders=dev_loader,
                                   ckpt_path=resume_from, **safe)
        if pending.get("stopped") == "early":
            log(f"{resume_from.name}: early stopping ended this run after epoch {len(history)}; nothing to train "
                "(an uninterrupted run stops there too)")
        elif pending.get("stopped") == "time":
            log(f"{resume_from.name}: the time budget ended this run after epoch {len(history)}; raise "
                "train.max_minutes to train on")
        elif "rng" in pending:  # training never started: the checkpoint had every epoch
            log(f"{resume_from.name}: all {len(history)} epoch(s) were done already; raise train.epochs to train on")
