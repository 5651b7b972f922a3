"""Keras-style callbacks for ``Model.fit``.

A callback sees the rnnkit model (``self.model``), the fit parameters (``self.params``:
``epochs``, ``steps``, ``verbose``) and ``logs`` dicts with Keras' keys (``loss``,
``accuracy``, ``val_loss``, ``val_accuracy``, ``learning_rate``...). The engine calls them from
Lightning's hooks, and their state (best value, patience counter...) is saved in training
checkpoints, so a resumed run continues exactly.

Lightning callbacks (``lightning.pytorch.Callback``) can be passed to ``fit(callbacks=...)``
alongside these; they go to the ``Trainer`` unchanged.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .optimizers import LearningRateSchedule


class Callback:
    """Base class: override the hooks you need.

    Hooks: ``on_train_begin(logs)``, ``on_train_end(logs)``, ``on_epoch_begin(epoch, logs)``,
    ``on_epoch_end(epoch, logs)``, ``on_train_batch_begin(batch, logs)``,
    ``on_train_batch_end(batch, logs)`` (``logs["loss"]`` is the batch loss), and for the validation that ``fit``
    runs ``on_test_begin(logs)``, ``on_test_batch_begin(batch, logs)``, ``on_test_batch_end(batch, logs)`` and
    ``on_test_end(logs)`` (the validation loss and metrics, named without ``val_``). Epochs count from 0.
    The ``on_predict_*`` hooks exist to be overridden, as in Keras, but nothing calls them (``predict`` takes no
    callbacks).
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        """Attach the model being trained."""
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        """Attach the fit parameters."""
        self.params = params

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Called once after the last epoch."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called at the start of each epoch."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called at the end of each epoch with the epoch's training and validation logs."""

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called before each training batch."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called after each training batch with ``{"loss": ...}``."""

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Called before each validation pass of ``fit``."""

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        """Called after each validation pass of ``fit`` with its loss and metrics (``loss``, not ``val_loss``)."""

    def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called before each validation batch."""

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called after each validation batch (with empty logs)."""

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Keras' hook; not called (``predict`` takes no callbacks)."""

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        """Keras' hook; not called (``predict`` takes no callbacks)."""

    def on_predict_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Keras' hook; not called (``predict`` takes no callbacks)."""

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Keras' hook; not called (``predict`` takes no callbacks)."""

    def state_dict(self) -> dict[str, Any]:
        """State to keep in training checkpoints (plain Python values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""

    def wants_batch_logs(self) -> bool:
        """Whether this callback reads per-batch logs (computing them costs a device sync)."""
        return type(self).on_train_batch_end is not Callback.on_train_batch_end


def _monitor_mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    name = monitor.lower()
    return "max" if any(k in name for k in ("acc", "auc", "precision", "recall", "f1")) else "min"


def _better(mode: str, current: float, best: float, min_delta: float) -> bool:
    if mode == "min":
        return current < best - min_delta
    return current > best + min_delta


def _refuse_a_schedule(model: Any, callback: str) -> None:
    """A one-line error at ``fit``'s start (not when the callback first acts, epochs later) when the
    optimizer's learning rate follows a schedule, which this callback would have to overwrite."""
    opt = getattr(model, "optimizer", None)
    if opt is not None and isinstance(getattr(opt, "_learning_rate", None), LearningRateSchedule):
        raise ValueError(f"{callback} sets the learning rate, but the optimizer's follows a schedule "
                         f"({type(opt._learning_rate).__name__}); compile with a constant learning_rate, or drop "
                         f"{callback}")


def _lr_of(model: Any) -> float:
    opt = getattr(model, "optimizer", None)
    if opt is None:
        raise ValueError("this callback needs a compiled model with an optimizer")
    return float(opt.learning_rate)


class History(Callback):
    """Records the logs of every epoch: ``history.history["val_loss"]`` is a list over epochs.

    ``fit`` returns one; it is also ``model.history``, from the end of the fit's first epoch on (so a
    fit stopped by Ctrl-C leaves the epochs it finished there, as in Keras).
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.epoch = []
        self.history = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        if self.model is not None:  # as Keras: a fit stopped by Ctrl-C leaves the epochs it finished in model.history
            self.model.history = self


class EarlyStopping(Callback):
    """Stop when a monitored value stops improving (Keras ``EarlyStopping``).

    Args:
        monitor: log key, ``"val_loss"`` by default.
        min_delta: smallest change that counts as an improvement.
        patience: epochs without improvement before stopping.
        verbose: print when stopping.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like keys).
        baseline: stop unless the value beats this (by ``min_delta``) within ``patience`` epochs.
        restore_best_weights: at the end of training, put back the weights of the best epoch.
        start_from_epoch: epochs to wait before monitoring.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0) -> None:
        super().__init__()
        self.monitor, self.min_delta, self.patience, self.verbose = monitor, abs(float(min_delta)), int(patience), verbose
        self.mode = _monitor_mode(monitor, mode)
        self.baseline, self.restore_best_weights, self.start_from_epoch = baseline, restore_best_weights, start_from_epoch
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._reset()

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"EarlyStopping monitors {self.monitor!r}, which is not in the logs "
                          f"({', '.join(sorted(logs or {}))})", stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self._snapshot(), epoch
        self.wait += 1
        if _better(self.mode, current, self.best, self.min_delta):  # never for NaN: it counts as no improvement
            self.best, self.best_epoch = float(current), epoch
            if self.restore_best_weights:
                self.best_weights = self._snapshot()
            if self.baseline is None or _better(self.mode, current, self.baseline, self.min_delta):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "stopped_epoch": self.stopped_epoch, "best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait, self.stopped_epoch = int(state["wait"]), int(state["stopped_epoch"])
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])


class ModelCheckpoint(Callback):
    """Save the model (or its weights) every epoch, or only when it improves (Keras ``ModelCheckpoint``).

    Args:
        filepath: where to save; may contain ``{epoch}`` (1-based) and log keys, e.g.
            ``"ckpt/model-{epoch:02d}-{val_loss:.3f}.safetensors"``. A path ending in
            ``.safetensors`` is one file; anything else a model folder.
        monitor: log key compared with ``save_best_only``.
        verbose: print a line when saving.
        save_best_only: save only when ``monitor`` improves (keeping one file unless the
            path has fields).
        save_weights_only: save only the weights (``.safetensors``).
        mode: ``"min"``, ``"max"`` or ``"auto"``.
        save_freq: ``"epoch"`` or a number of batches.
        initial_value_threshold: the value ``monitor`` must beat for the first save.

    Every write goes to a temporary file that is then moved over the target (``os.replace``),
    so an interruption never leaves a truncated checkpoint.
    """

    def __init__(self, filepath: str | os.PathLike[str], monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str | int = "epoch", initial_value_threshold: float | None = None) -> None:
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor, self.verbose = monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.mode = _monitor_mode(monitor, mode)
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ValueError(f"save_freq must be 'epoch' or a positive number of batches, got {save_freq!r}")
        self.save_freq = save_freq
        if initial_value_threshold is not None:
            self.best = float(initial_value_threshold)
        else:
            self.best = math.inf if self.mode == "min" else -math.inf
        self._batches = 0
        self._epoch = 0
        self.saved: list[str] = []

    def _path(self, epoch: int, logs: dict[str, Any], batch: int | None = None) -> str:
        fields = dict(logs) if batch is None or "batch" in logs else {**logs, "batch": batch + 1}
        try:
            return self.filepath.format(epoch=epoch + 1, **{k: v for k, v in fields.items() if k != "epoch"})
        except KeyError as err:
            raise KeyError(f"ModelCheckpoint filepath {self.filepath!r} uses {err}, which is not in the logs "
                           f"({', '.join(sorted(logs))})") from None

    def _save(self, epoch: int, logs: dict[str, Any], batch: int | None = None) -> None:
        path = self._path(epoch, logs, batch)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        self.saved.append(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if isinstance(self.save_freq, int):
            self._batches += 1
            if self._batches % self.save_freq == 0:
                self._maybe_save(self._epoch, dict(logs or {}), batch)

    def wants_batch_logs(self) -> bool:
        return isinstance(self.save_freq, int)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.save_freq == "epoch":
            self._maybe_save(epoch, dict(logs or {}))

    def _maybe_save(self, epoch: int, logs: dict[str, Any], batch: int | None = None) -> None:
        if not self.save_best_only:
            self._save(epoch, logs, batch)
            return
        current = logs.get(self.monitor)
        if current is None:  # as Keras: warn, and save anyway rather than never
            warnings.warn(f"ModelCheckpoint monitors {self.monitor!r}, which is not in the logs "
                          f"({', '.join(sorted(logs))}); saving every time instead", stacklevel=2)
            self._save(epoch, logs, batch)
            return
        if _better(self.mode, float(current), self.best, 0.0):
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {float(current):.5f}")
            self.best = float(current)
            self._save(epoch, logs, batch)
        elif self.verbose:
            print(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "batches": self._batches, "epoch": self._epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self._batches = float(state["best"]), int(state["batches"])
        self._epoch = int(state.get("epoch", self._epoch))  # a mid-epoch resume starts no epoch


class BackupAndRestore(Callback):
    """Back up the whole training state, and resume from it when ``fit`` is called again (Keras
    ``BackupAndRestore``).

    ``fit(..., callbacks=[BackupAndRestore("backup")])`` writes ``backup/latest.ckpt`` at the end of
    every epoch (or every ``save_freq`` training batches): the weights, optimizer, epoch and batch
    counters, the state of the other callbacks, the random-number generators and, mid-epoch, the
    epoch's running loss and metrics. After an interruption the same ``fit`` call (same data, same
    ``seed``) finds the backup and continues from it, from the next batch for a mid-epoch backup, and
    ends with the weights an uninterrupted run would have. When ``fit`` ends normally the backup is
    deleted (``delete_checkpoint=True``). Each backup is written under a temporary name, flushed to
    disk and renamed over the last one; it is read back with ``torch.load(weights_only=True)``.

    Args:
        backup_dir: the folder of the backup (created when needed); give each run its own.
        save_freq: ``"epoch"``, or a whole number of training batches between backups (counted
            across epochs, as in Keras; one falling on an epoch's last batch is written at the
            epoch's end).
        delete_checkpoint: delete the backup when ``fit`` finishes normally (not after an error).
        double_checkpoint: also keep the backup before the latest (``previous.ckpt``), used when
            the latest one cannot be read.
    """

    LATEST = "latest.ckpt"
    PREVIOUS = "previous.ckpt"

    def __init__(self, backup_dir: str | os.PathLike[str], save_freq: str | int = "epoch",
                 delete_checkpoint: bool = True, double_checkpoint: bool = False) -> None:
        super().__init__()
        if not isinstance(backup_dir, str | os.PathLike) or not os.fspath(backup_dir):
            raise ValueError(f"BackupAndRestore needs a backup_dir, a folder path, got {backup_dir!r}")
        self.backup_dir = os.fspath(backup_dir)
        if save_freq != "epoch" and (not isinstance(save_freq, int) or isinstance(save_freq, bool) or save_freq < 1):
            raise ValueError(f"BackupAndRestore save_freq must be 'epoch' or a whole number of batches >= 1, got "
                             f"{save_freq!r}")
        for name, flag in (("delete_checkpoint", delete_checkpoint), ("double_checkpoint", double_checkpoint)):
            if not isinstance(flag, bool):
                raise ValueError(f"BackupAndRestore {name} must be True or False, got {flag!r}")
        self.save_freq: str | int = save_freq
        self.delete_checkpoint, self.double_checkpoint = delete_checkpoint, double_checkpoint
        self.check_dir()

    def check_dir(self) -> None:
        """A one-line error when ``backup_dir`` exists but is not a folder."""
        if os.path.exists(self.backup_dir) and not os.path.isdir(self.backup_dir):
            raise ValueError(f"BackupAndRestore backup_dir {self.backup_dir} is a file, not a folder; pass a folder "
                             "path (it is created when needed)")

    @property
    def latest_path(self) -> str:
        """The latest backup, ``<backup_dir>/latest.ckpt``."""
        return os.path.join(self.backup_dir, self.LATEST)

    @property
    def previous_path(self) -> str:
        """The backup before it, kept with ``double_checkpoint=True``."""
        return os.path.join(self.backup_dir, self.PREVIOUS)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving (Keras ``ReduceLROnPlateau``).

    Its state (best value, counters) restarts with every ``fit``, and the rate in use is added to
    each epoch's logs as ``learning_rate``.

    Args:
        monitor: log key (``"val_loss"``).
        factor: multiplier, below 1.
        patience: epochs without improvement before reducing.
        verbose: print when reducing.
        mode: ``"min"``, ``"max"`` or ``"auto"``.
        min_delta: smallest change counted as an improvement.
        cooldown: epochs to wait after a reduction.
        min_lr: lower bound.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:
        super().__init__()
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau factor must be < 1, got {factor}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, float(factor), int(patience), verbose
        self.mode = _monitor_mode(monitor, mode)
        self.min_delta, self.cooldown, self.min_lr = float(min_delta), int(cooldown), float(min_lr)
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.cooldown_counter = 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        _refuse_a_schedule(self.model, "ReduceLROnPlateau")
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        logs["learning_rate"] = _lr_of(self.model)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"ReduceLROnPlateau monitors {self.monitor!r}, which is not in the logs "
                          f"({', '.join(sorted(logs))})", stacklevel=2)
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if _better(self.mode, float(current), self.best, self.min_delta):
            self.best = float(current)
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = _lr_of(self.model)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    self.model.optimizer.learning_rate = new
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new:g}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "cooldown_counter": self.cooldown_counter, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait, self.cooldown_counter, self.best = int(state["wait"]), int(state["cooldown_counter"]), float(state["best"])


class LearningRateScheduler(Callback):
    """Set the learning rate at each epoch start to ``schedule(epoch, current_lr)`` (Keras ``LearningRateScheduler``).

    Args:
        schedule: ``fn(epoch, lr) -> new lr`` (epochs from 0), or ``fn(epoch) -> new lr``.
        verbose: print the rate set.

    The rate in use is added to each epoch's logs as ``learning_rate`` (so ``History`` records it).
    """

    def __init__(self, schedule: Callable[[int, float], float], verbose: int = 0) -> None:
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        _refuse_a_schedule(self.model, "LearningRateScheduler")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        current = _lr_of(self.model)
        try:
            value = self.schedule(epoch, current)
        except TypeError:  # Keras also takes a schedule of the epoch alone
            value = self.schedule(epoch)  # type: ignore[call-arg]
        try:
            lr = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"the schedule must return a float learning rate, got {value!r} for epoch {epoch}") from None
        if not math.isfinite(lr):
            raise ValueError(f"the schedule returned learning rate {lr} for epoch {epoch}")
        self.model.optimizer.learning_rate = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr:g}.")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = _lr_of(self.model)


class CSVLogger(Callback):
    """Write each epoch's logs as a CSV row (Keras ``CSVLogger``).

    Args:
        filename: the CSV file.
        separator: column separator.
        append: add to an existing file (its header is kept) instead of replacing it.
    """

    def __init__(self, filename: str | os.PathLike[str], separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self.keys: list[str] | None = None
        self._file: Any = None
        self._writer: Any = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self.keys = None
        if exists:
            with open(self.filename, newline="") as f:
                header = f.readline().strip()
            self.keys = header.split(self.separator)[1:] if header else None
        parent = os.path.dirname(self.filename)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self._file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115
        self._writer = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                # as Keras: columns for the validation values too, which later epochs may have
                # (validation_freq > 1); "NA" where an epoch has none
                self.keys += [f"val_{k}" for k in self.keys]
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch", *self.keys], delimiter=self.separator)
            if self._file.tell() == 0:
                self._writer.writeheader()
        row: dict[str, Any] = {"epoch": epoch}
        row.update({k: logs.get(k, "NA") for k in self.keys})
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoard(Callback):
    """Write epoch logs as TensorBoard scalars under ``log_dir/train`` and ``log_dir/validation``.

    Needs the ``tensorboard`` package (``pip install tensorboard``); without it the constructor
    raises ``ImportError``.

    Args:
        log_dir: where to write event files.
        update_freq: ``"epoch"``, ``"batch"``, or a number of batches between loss writes.
    """

    def __init__(self, log_dir: str | os.PathLike[str] = "logs", update_freq: str | int = "epoch", **ignored: Any) -> None:
        super().__init__()
        if importlib.util.find_spec("tensorboard") is None:
            raise ImportError("the TensorBoard callback needs the tensorboard package: pip install tensorboard "
                              "(or use CSVLogger)")
        self.log_dir, self.update_freq = os.fspath(log_dir), update_freq
        self._writers: dict[str, Any] = {}
        self._step = 0

    def _writer(self, split: str) -> Any:
        if split not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[split] = SummaryWriter(os.path.join(self.log_dir, split))
        return self._writers[split]

    def wants_batch_logs(self) -> bool:
        return self.update_freq != "epoch"

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._step += 1
        every = 1 if self.update_freq == "batch" else self.update_freq
        if isinstance(every, int) and self._step % every == 0 and logs and "loss" in logs:
            self._writer("train").add_scalar("batch_loss", logs["loss"], self._step)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._writer(split).add_scalar(f"epoch_{name}", value, epoch)
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for w in self._writers.values():
            w.close()
        self._writers = {}


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch loss is NaN or infinite.

    Args:
        raise_error: raise ``RuntimeError`` at once instead of stopping after the batch (Keras'
            ``raise_error``).
    """

    def __init__(self, raise_error: bool = False) -> None:
        super().__init__()
        self.raise_error = raise_error

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}. "
                                   "Terminating training immediately.")
            print(f"Batch {batch}: invalid loss {loss}, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, on_epoch_begin: Callable[..., Any] | None = None, on_epoch_end: Callable[..., Any] | None = None,
                 on_train_begin: Callable[..., Any] | None = None, on_train_end: Callable[..., Any] | None = None,
                 on_train_batch_begin: Callable[..., Any] | None = None,
                 on_train_batch_end: Callable[..., Any] | None = None, *,
                 on_test_begin: Callable[..., Any] | None = None, on_test_end: Callable[..., Any] | None = None,
                 on_test_batch_begin: Callable[..., Any] | None = None,
                 on_test_batch_end: Callable[..., Any] | None = None) -> None:
        super().__init__()
        self._fns = {"on_epoch_begin": on_epoch_begin, "on_epoch_end": on_epoch_end,
                     "on_train_begin": on_train_begin, "on_train_end": on_train_end,
                     "on_train_batch_begin": on_train_batch_begin, "on_train_batch_end": on_train_batch_end,
                     "on_test_begin": on_test_begin, "on_test_end": on_test_end,
                     "on_test_batch_begin": on_test_batch_begin, "on_test_batch_end": on_test_batch_end}

    def _call(self, hook: str, *args: Any) -> None:
        fn = self._fns[hook]
        if fn is not None:
            fn(*args)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._call("on_epoch_end", epoch, logs)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._call("on_train_begin", logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._call("on_train_end", logs)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._call("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._call("on_train_batch_end", batch, logs)

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._call("on_test_begin", logs)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self._call("on_test_end", logs)

    def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._call("on_test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._call("on_test_batch_end", batch, logs)

    def wants_batch_logs(self) -> bool:
        return self._fns["on_train_batch_end"] is not None


class CallbackList:
    """Dispatch each hook to several callbacks."""

    def __init__(self, callbacks: list[Callback], model: Any, params: dict[str, Any]) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)
        self.started = time.perf_counter()

    def wants_batch_logs(self) -> bool:
        """Whether any callback reads per-batch logs."""
        return any(cb.wants_batch_logs() for cb in self.callbacks)

    def __getattr__(self, hook: str) -> Callable[..., None]:
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def dispatch(*args: Any) -> None:
            for cb in self.callbacks:
                getattr(cb, hook)(*args)
        return dispatch
