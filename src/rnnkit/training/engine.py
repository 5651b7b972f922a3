"""The training engine behind ``Model.fit``: a LightningModule around the model, a Trainer, and
Keras callbacks bridged onto Lightning's hooks.

This module imports Lightning; ``Model.fit`` imports it on first use, so ``import rnnkit.models``,
``predict`` and ``evaluate`` never pay for it.

What Lightning brings: the progress bar, ``accelerator="auto"|"cpu"|"cuda"|"mps"``,
``precision`` (``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``...), ``devices`` and ``strategy``
(``"ddp"`` for multi-process data parallel), training checkpoints and resuming, and any
``Trainer`` option through ``trainer_kwargs``.

Several processes (``strategy="ddp"``, ``devices=2``): each takes samples ``rank, rank + world, ...``
of rnnkit's epoch order (:class:`_ShardSampler`, in place of Lightning's sampler, which shuffles
again), so the processes' batches together are a single process's batches of ``world`` times the
size; the running loss and metrics are torchmetrics states, reduced across the processes.

Truncated backpropagation through time (Lightning 2 dropped its own): with ``tbptt_steps=k``
each batch is cut into chunks of ``k`` steps along time; the recurrent layers carry their
(detached) state from chunk to chunk through their stateful machinery, and the optimizer steps
after every chunk. Outputs with a time axis are trained on every chunk; one-per-sequence outputs
on the last chunk (the earlier chunks only advance the state, without gradients).

Resuming: ``fit(..., checkpoint_dir=d)`` writes ``d/last.ckpt`` at the end of every epoch
(model, optimizer, loop counters, callback state, random-number generators); after an
interruption ``fit(..., resume_from=d)`` (same data, same ``seed``) ends with the same weights
as an uninterrupted run: the shuffling order depends only on ``(seed, epoch)``. These training
checkpoints are Lightning ``.ckpt`` files (loaded with ``torch.load(weights_only=True)``); the
model files of ``Model.save`` are JSON and safetensors.

Keras' ``BackupAndRestore`` callback is the same machinery (:class:`BackupWriter`): a backup at
epoch ends or every ``save_freq`` batches, found by the next ``fit``. A mid-epoch checkpoint also
records the batches done in the epoch and the epoch's running loss and metrics (the torchmetrics
states); resuming from it passes over those batches (:class:`~rnnkit.training.resuming.PassOver`, the same order) and puts
the random-number generators back at the next batch, since creating the data iterator draws from
torch's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, cast

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback as LightningCallback
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric

from ..layers.base import capture_modes
from ..layers.recurrent import _KerasRNN
from ..layers.wrappers import Bidirectional
from ..models.utils import set_random_seed
from ..nn import GRU as NNGRU
from ..nn import LSTM as NNLSTM
from ..nn import RNN as NNRNN
from ..nn import Recurrent
from .callbacks import BackupAndRestore, Callback, CallbackList, History
from .data import (
    ArrayData,
    InputDataError,
    Ragged,
    batch_size_of,
    first_batch,
    is_loader_like,
    make_loader,
)
from .dtypes import floating_dtypes, restore_dtypes
from .evaluation import (
    build_model,
    epoch_logs,
    model_arrays,
    model_device,
    require_compiled,
    to_device,
)
from .interrupts import fit_passing_interrupts
from .optimizers import check_clipping, check_norm_limits, has_trainable_parameters, merge_clipping
from .resuming import PassOver, read_checkpoint
from .step import StepLogic

_RECURRENT = (NNRNN, NNLSTM, NNGRU, Recurrent)


# -- the LightningModule --------------------------------------------------------------------------
class KerasModule(pl.LightningModule):
    """Wraps an rnnkit model, its compiled loss and metrics for a Lightning ``Trainer``.

    Args:
        model: the rnnkit model.
        logic: the batch logic (losses, metrics, logits fusion).
        features: the last-axis size of each output (to bind metrics).
        tbptt_steps: chunk length for truncated BPTT, or ``None``.
        clip_overrides: ``clipnorm``/``clipvalue``/``global_clipnorm`` from compile or fit.
    """

    def __init__(self, model: nn.Module, logic: StepLogic, features: list[int], *, tbptt_steps: int | None = None,
                 clip_overrides: dict[str, float | None] | None = None) -> None:
        super().__init__()
        self.model = model
        self.logic = logic
        self.optimizer_spec = logic.compiled.optimizer
        self.train_metrics = logic.make_metrics(features)
        self.val_metrics = logic.make_metrics(features)
        n = len(logic.losses)
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.train_parts = nn.ModuleList(MeanMetric() for _ in range(n))
        self.val_parts = nn.ModuleList(MeanMetric() for _ in range(n))
        self.tbptt_steps = tbptt_steps
        self.automatic_optimization = tbptt_steps is None
        self.clip_overrides = clip_overrides or {}
        self._val_logs: dict[str, float] = {}
        self._seen = {"train": 0, "val": 0}
        self.epoch_batches = 0  # training batches started in this epoch (counting those before a mid-epoch resume)
        self.mid_epoch: dict[str, Any] | None = None  # set while a mid-epoch checkpoint is written
        self.resumed_mid_epoch: dict[str, Any] | None = None  # the mid-epoch record this fit resumed from
        self._pending_rng: dict[str, Any] | None = None  # restored at the next batch after a mid-epoch resume
        self.frozen = not has_trainable_parameters(model)

    # the torchmetrics holding the running loss and metrics (their states: sums, counts, confusion tables)
    METRIC_CHILDREN = ("train_loss", "val_loss", "train_parts", "val_parts", "train_metrics", "val_metrics")

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Any:
        """``nn.Module._apply`` (``.to``, ``.cuda`` ...), with the metrics' states moved but never converted
        to another dtype: Lightning's ``bf16-true`` (``16-true``, ``64-true``) runs ``module.to(dtype=...)``
        on this module, which torchmetrics lets through to the states, and a running loss summed in
        bfloat16 (8 significant bits) stopped growing by small batch losses (an epoch's loss of 0.69140625,
        the bfloat16 next to the true mean, whatever the batches). The loss and metrics are computed in
        float32 (:func:`~rnnkit.training.dtypes.full_precision`) and so summed in float32."""
        if not recurse:
            return super()._apply(fn, recurse=False)
        kept = _keeping_dtype(fn)
        for name, child in self.named_children():
            child._apply(kept if name in self.METRIC_CHILDREN else fn)
        return super()._apply(fn, recurse=False)

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.frozen:
            return None  # nothing to update: fit still runs the epochs for the losses and metrics, as Keras
        # 16-mixed's GradScaler: Lightning unscales the gradients before the clipping hooks only for an
        # unfused step (a fused one unscales inside), so clipping, loss-scale division and accumulation
        # would see scaled gradients
        return self.optimizer_spec.build(self.model.parameters(), fused=str(self.trainer.precision) != "16-mixed")

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        if self.automatic_optimization and not self.frozen:
            self.optimizer_spec.before_step()

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        if gradient_clip_val:  # a Trainer(gradient_clip_val=...) passed through trainer_kwargs
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.optimizer_spec.clip(self.model.parameters(), self.clip_overrides)

    # -- steps ---------------------------------------------------------------------------------
    def _record(self, split: str, total: Tensor, parts: list[Tensor], outputs: list[Tensor],
                out_masks: list[Tensor | None], batch: dict[str, Any]) -> None:
        n = batch_size_of(batch)
        loss_metric = self.train_loss if split == "train" else self.val_loss
        part_metrics = self.train_parts if split == "train" else self.val_parts
        loss_metric.update(total.detach(), weight=n)
        for metric, value in zip(part_metrics, parts):
            metric.update(value.detach(), weight=n)  # type: ignore[operator]
        self.logic.update_metrics(self.train_metrics if split == "train" else self.val_metrics, outputs, out_masks,
                                  batch)
        self._seen[split] += n

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        b = self.logic.canonical(batch)
        if self.tbptt_steps is not None:
            return self._tbptt_step(b)
        outputs, out_masks = self.logic.forward(b)
        total, parts = self.logic.losses_of(outputs, out_masks, b)
        self._record("train", total, parts, outputs, out_masks, b)
        self.log("loss", total.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=batch_size_of(b),
                 logger=False)
        return None if self.frozen else total

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        b = self.logic.canonical(batch)
        outputs, out_masks = self.logic.forward(b)
        total, parts = self.logic.losses_of(outputs, out_masks, b)
        self._record("val", total, parts, outputs, out_masks, b)

    # -- truncated BPTT ------------------------------------------------------------------------
    def _tbptt_step(self, b: dict[str, Any]) -> Tensor:
        assert self.tbptt_steps is not None
        k = self.tbptt_steps
        opt = None if self.frozen else self.optimizers()
        xs = b["x"]
        steps = int(xs[0].shape[1]) if xs[0].dim() >= 2 else 0
        for x in xs:
            if x.dim() < 2 or int(x.shape[1]) != steps:
                raise InputDataError("tbptt_steps needs every input as [batch, time, ...] with the same time length, "
                                     f"got shapes {[list(t.shape) for t in xs]}")
        cores = [m for m in self.model.modules() if isinstance(m, _RECURRENT)]
        saved = [(c, c.stateful) for c in cores]
        for c in cores:
            c.stateful = True
            c.reset_state()
        per_step: bool | None = None
        totals: list[Tensor] = []
        try:
            for start in range(0, steps, k):
                stop = min(start + k, steps)
                last = stop >= steps
                chunk: dict[str, Any] = {
                    "x": [x[:, start:stop] for x in xs],
                    "mask": [None if m is None else m[:, start:stop] for m in b["mask"]],
                }
                if per_step is False and not last:
                    with torch.no_grad():
                        self.logic.forward({**chunk, "y": None})
                    continue
                outputs, out_masks = self.logic.forward(chunk)
                if per_step is None:
                    per_step = all(o.dim() >= 3 and int(o.shape[1]) == stop - start for o in outputs)
                    if not per_step and not last:
                        continue
                chunk["y"] = [self._time_slice(y, steps, start, stop, per_step) for y in b["y"]]
                chunk["y_mask"] = [None if m is None else self._time_slice(m, steps, start, stop, per_step)
                                   for m in (b.get("y_mask") or [None] * len(b["y"]))]
                sw = b.get("sw")
                chunk["sw"] = None if sw is None else self._time_slice(sw, steps, start, stop, per_step and sw.dim() == 2)
                total, parts = self.logic.losses_of(outputs, out_masks, chunk)
                if self.frozen:
                    self._record("train", total, parts, outputs, out_masks, chunk if per_step else b)
                    totals.append(total.detach())
                    continue
                opt.zero_grad()  # type: ignore[union-attr]
                self.manual_backward(total)
                scaler = getattr(self.trainer.precision_plugin, "scaler", None)
                if scaler is not None:
                    scaler.unscale_(opt.optimizer)  # type: ignore[union-attr]
                self.optimizer_spec.clip(self.model.parameters(), self.clip_overrides)
                self.optimizer_spec.before_step()
                opt.step()  # type: ignore[union-attr]
                self._record("train", total, parts, outputs, out_masks, chunk if per_step else b)
                totals.append(total.detach())
        finally:
            for c, flag in saved:
                c.reset_state()
                c.stateful = flag
        mean = torch.stack(totals).mean()
        self.log("loss", mean, prog_bar=True, on_step=True, on_epoch=False, batch_size=batch_size_of(b), logger=False)
        return mean

    @staticmethod
    def _time_slice(t: Tensor, steps: int, start: int, stop: int, per_step: bool) -> Tensor:
        if per_step and t.dim() >= 2 and int(t.shape[1]) == steps:
            return t[:, start:stop]
        return t

    # -- epoch logs ----------------------------------------------------------------------------
    def _logs(self, split: str) -> dict[str, float]:
        loss_metric = self.train_loss if split == "train" else self.val_loss
        part_metrics = self.train_parts if split == "train" else self.val_parts
        metrics = self.train_metrics if split == "train" else self.val_metrics
        prefix = "" if split == "train" else "val_"
        if self._seen[split] == 0:
            return {}
        logs = {f"{prefix}loss": float(loss_metric.compute())}
        if len(part_metrics) > 1:
            for name, m in zip(self.logic.output_names, part_metrics):
                logs[f"{prefix}{name}_loss"] = float(m.compute())  # type: ignore[operator]
        logs.update({k: v for k, v in epoch_logs(self.logic, 0.0, [], 1, metrics, prefix).items()
                     if k != f"{prefix}loss"})
        loss_metric.reset()
        for m in part_metrics:
            m.reset()  # type: ignore[operator]
        for group in metrics:
            for m in cast(nn.ModuleList, group):
                m.reset()  # type: ignore[operator]
        self._seen[split] = 0
        return logs

    def on_validation_epoch_end(self) -> None:
        logs = self._logs("val")
        if self.trainer.sanity_checking:
            return
        self._val_logs = logs
        if logs:
            self.log_dict(logs, prog_bar=True, logger=bool(self.trainer.loggers))

    def collect_train_logs(self) -> dict[str, float]:
        """The epoch's training logs (then reset), plus the last validation logs."""
        logs = self._logs("train")
        if logs:
            self.log_dict(logs, prog_bar=True, logger=bool(self.trainer.loggers))
        logs.update(self._val_logs)
        self._val_logs = {}
        return logs

    # -- checkpoints ---------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.epoch_batches = 0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._pending_rng is not None:  # resumed mid-epoch: the generators as they were before this batch
            _set_rng_state(self._pending_rng)
            self._pending_rng = None
        self.epoch_batches += 1

    def optimizer_name(self) -> str:
        """The compiled optimizer, as recorded in checkpoints (``"Adam (torch Adam)"``)."""
        torch_opt = getattr(self.optimizer_spec, "torch_optimizer", None)
        inner = f" (torch {type(torch_opt).__name__})" if torch_opt is not None else ""
        return f"{type(self.optimizer_spec).__name__}{inner}"

    def _train_metrics(self) -> Iterator[tuple[str, Metric]]:
        for name, m in self.named_modules():
            if name.split(".")[0] in ("train_loss", "train_parts", "train_metrics") and isinstance(m, Metric):
                yield name, m

    def train_metric_states(self) -> dict[str, Any]:
        """The running training loss and metrics of the epoch (tensors, lists and numbers)."""
        states: dict[str, Any] = {}
        for name, m in self._train_metrics():
            values: dict[str, Any] = {}
            for key in m._defaults:
                value = getattr(m, key)
                values[key] = [v.detach().cpu().clone() for v in value] if isinstance(value, list) \
                    else value.detach().cpu().clone()
            states[name] = {"values": values, "updates": int(m._update_count)}
        return states

    def load_train_metric_states(self, states: dict[str, Any]) -> None:
        metrics = dict(self._train_metrics())
        if set(metrics) != set(states):
            raise ValueError("the checkpoint's running metrics are not this model's compiled metrics; compile "
                             "with the metrics of the interrupted run")
        for name, m in metrics.items():
            device = m.device
            for key, value in states[name]["values"].items():
                setattr(m, key, [v.to(device) for v in value] if isinstance(value, list) else value.to(device))
            m._update_count = int(states[name]["updates"])
            m._computed = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the optimizer's call count (its iterations are the updates, fewer with gradient accumulation)
        checkpoint["rnnkit"] = {**_rng_state(), "optimizer_iterations": int(self.optimizer_spec.calls),
                                "optimizer": self.optimizer_name(), "mid_epoch": self.mid_epoch}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("rnnkit")
        if not state:
            return
        self.optimizer_spec.calls = int(state["optimizer_iterations"])
        mid = state.get("mid_epoch")
        if not mid:  # at an epoch end: nothing draws random numbers before the next epoch's first batch
            _set_rng_state(state)
            return
        # mid-epoch: the running loss and metrics go on; the generators are restored at the next batch
        # (creating the data iterator draws from torch's), the batches already done are passed over
        self.load_train_metric_states(mid["metrics"])
        self._seen["train"] = int(mid["seen"])
        self.epoch_batches = int(mid["batches"])
        self.resumed_mid_epoch = mid
        self._pending_rng = state


def _keeping_dtype(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``fn`` (a tensor conversion of ``nn.Module._apply``) as a move to its device only, in the tensor's own dtype."""
    def moved(t: Tensor) -> Tensor:
        out = fn(t)
        return t.to(out.device) if out.dtype != t.dtype else out
    return moved


def _rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()
    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python_rng": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    name, keys, pos, has_gauss, cached = state["numpy_rng"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python_rng"]))


# -- Keras callbacks on Lightning hooks -----------------------------------------------------------
class KerasCallbackBridge(LightningCallback):
    """Calls Keras-style callbacks from Lightning's hooks and keeps their state in checkpoints."""

    def __init__(self, callbacks: CallbackList, model: Any, *, initial_epoch: int, epochs: int, verbose: int) -> None:
        self.callbacks = callbacks
        self.model = model
        self.initial_epoch, self.epochs, self.verbose = initial_epoch, epochs, verbose
        self._pending: dict[str, Any] | None = None
        self._batch_logs = callbacks.wants_batch_logs()
        self._epoch_start = 0.0

    @property
    def state_key(self) -> str:
        return "rnnkit.KerasCallbackBridge"

    def _epoch(self, trainer: pl.Trainer) -> int:
        return self.initial_epoch + trainer.current_epoch

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.callbacks.on_train_begin({})
        self._epoch_start = time.perf_counter()  # a mid-epoch resume starts no epoch
        if self._pending is not None:
            states = list(self._pending.get("callbacks", []))
            names = self._pending.get("names")
            if names is None:  # checkpoints written before the names: by position
                pairs = list(zip(self.callbacks.callbacks, states))
            else:  # each callback takes the next unused state of its class (a callback added or dropped is fine)
                unused = list(zip(names, states))
                pairs = []
                for cb in self.callbacks.callbacks:
                    for i, (name, state) in enumerate(unused):
                        if name == type(cb).__name__:
                            pairs.append((cb, state))
                            del unused[i]
                            break
            for cb, state in pairs:
                if state:
                    cb.load_state_dict(state)
            self._pending = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self.callbacks.on_epoch_begin(self._epoch(trainer), {})

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.callbacks.on_train_batch_begin(batch_idx, {})

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._batch_logs:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            logs = {"loss": float(loss)} if isinstance(loss, Tensor) else {}
            self.callbacks.on_train_batch_end(batch_idx, logs)
        if self.model.stop_training:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, KerasModule)
        logs = pl_module.collect_train_logs()
        epoch = self._epoch(trainer)
        self.callbacks.on_epoch_end(epoch, logs)
        if self.verbose == 2:
            took = time.perf_counter() - self._epoch_start
            shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{self.epochs} - {took:.1f}s - {shown}", flush=True)
        if self.model.stop_training:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, KerasModule)
        if not pl_module.frozen:  # Keras' end of fit (use_ema: the weights take their averages), before the
            pl_module.optimizer_spec.finalize_variable_values()  # callbacks' (restore_best_weights wins)
        self.callbacks.on_train_end({})

    # Keras runs fit's validation as an evaluate() with the fit's callbacks: their on_test_* hooks
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.callbacks.on_test_begin({})

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self.callbacks.on_test_batch_begin(batch_idx, {})

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self.callbacks.on_test_batch_end(batch_idx, {})

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            logs = dict(getattr(pl_module, "_val_logs", {}) or {})
            self.callbacks.on_test_end({k[len("val_"):] if k.startswith("val_") else k: v for k, v in logs.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"callbacks": [cb.state_dict() for cb in self.callbacks.callbacks],
                "names": [type(cb).__name__ for cb in self.callbacks.callbacks]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict


class LastCheckpoint(LightningCallback):
    """Write ``<dirpath>/last.ckpt`` at the end of every training epoch, atomically.

    It runs after the Keras callbacks (it is placed last), so their state is included.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _write_checkpoint_atomically(trainer, os.path.join(self.dirpath, "last.ckpt"))


def _write_checkpoint_atomically(trainer: pl.Trainer, target: str, previous: str | None = None) -> None:
    """``trainer.save_checkpoint`` under a temporary name in ``target``'s folder, flushed to disk, then
    renamed over ``target`` (the old file or the new one, never half of either; the temporary file
    goes on failure). With ``previous``, the old ``target`` is first renamed to it."""
    folder = os.path.dirname(target) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(target)}.tmp-{os.getpid()}")
    try:
        trainer.save_checkpoint(tmp)  # DirectCheckpointIO fsyncs it
        if trainer.is_global_zero:
            if previous is not None and os.path.isfile(target):
                os.replace(target, previous)  # for a moment only the previous one: loading falls back to it
            os.replace(tmp, target)
            _fsync_dir(folder)
        if trainer.world_size > 1:  # no process goes on (to a next fit that looks for the file) before it is there
            trainer.strategy.barrier("rnnkit_checkpoint_written")
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (where the system allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class BackupWriter(LightningCallback):
    """Writes the backups of a :class:`~rnnkit.training.callbacks.BackupAndRestore`: at every epoch
    end, or every ``save_freq`` training batches (mid-epoch, with the batches done and the epoch's
    running metrics; one on an epoch's last batch is written at the epoch's end). Placed after the
    Keras callbacks, so their state is included."""

    def __init__(self, backup: BackupAndRestore) -> None:
        self.backup = backup
        self.batches = 0  # training batches since the last backup (across epochs, as Keras counts)
        self._at_epoch_end = False

    @property
    def state_key(self) -> str:
        return "rnnkit.BackupWriter"

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.batches = int(state_dict.get("batches", 0))

    def save(self, trainer: pl.Trainer) -> None:
        self.backup.check_dir()
        _write_checkpoint_atomically(trainer, self.backup.latest_path,
                                     self.backup.previous_path if self.backup.double_checkpoint else None)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        every = self.backup.save_freq
        if not isinstance(every, int):
            return
        self.batches += 1
        if self.batches < every:
            return
        self.batches = 0
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._at_epoch_end = True  # after validation and the epoch's callbacks: an end-of-epoch backup
            return
        assert isinstance(pl_module, KerasModule)
        pl_module.mid_epoch = {"batches": pl_module.epoch_batches, "seen": pl_module._seen["train"],
                               "metrics": pl_module.train_metric_states()}
        try:
            self.save(trainer)
        finally:
            pl_module.mid_epoch = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.backup.save_freq == "epoch" or self._at_epoch_end:
            self._at_epoch_end = False
            self.save(trainer)


def _warn_random_order(loader: Any) -> None:
    """A mid-epoch resume passes over the batches already trained on: with a DataLoader that shuffles
    from its own random draws (``shuffle=True``), those are not the same batches."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    samplers = (getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None))
    if any(isinstance(s, torch.utils.data.RandomSampler) for s in samplers):
        warnings.warn("resuming mid-epoch with a DataLoader that shuffles by itself: the batches passed over are not "
                      "those trained on before the interruption; pass the Dataset to fit (shuffled by seed and "
                      "epoch) or back up with save_freq='epoch'", stacklevel=3)


def _peek_checkpoint(path: str) -> dict[str, Any]:
    """Read a training checkpoint's header (memory-mapped, ``weights_only``); ``ValueError`` with the
    reason when it is damaged or not an rnnkit training checkpoint."""
    try:
        saved = read_checkpoint(path)  # the zip's CRCs checked first
    except Exception as err:  # truncated, not a zip, unpickling refused, unreadable ...
        raise ValueError(f"{type(err).__name__}: {' '.join(str(err).split())[:100]}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict) \
            or not isinstance(saved.get("rnnkit"), dict):
        raise ValueError("not an rnnkit training checkpoint")
    return saved


def _mid_epoch_record(path: str) -> dict[str, Any] | None:
    """The mid-epoch record of a checkpoint (``None`` for one written at an epoch end)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # Lightning's own load gives the error
        return None
    state = saved.get("rnnkit") if isinstance(saved, dict) else None
    mid = state.get("mid_epoch") if isinstance(state, dict) else None
    return mid if isinstance(mid, dict) else None


def _find_backup(backup: BackupAndRestore, module: KerasModule) -> str | None:
    """The backup to resume from (``None``: start afresh), checked against this model and optimizer."""
    backup.check_dir()
    latest, previous = backup.latest_path, backup.previous_path
    candidates = [p for p in (latest, previous) if os.path.isfile(p)]
    if not candidates:
        return None
    fix = f"delete {backup.backup_dir} (or pass another backup_dir) to train from the start"
    errors: list[str] = []
    for path in candidates:
        try:
            saved = _peek_checkpoint(path)
        except ValueError as err:
            errors.append(f"{path} cannot be read ({err})")
            continue
        if errors:
            warnings.warn(f"{errors[0]}; resuming from the backup before it, {path}", stacklevel=3)
        expected = module.state_dict()
        found = saved["state_dict"]
        wrong = sorted(set(expected) ^ set(found)) or \
            [k for k in expected if tuple(expected[k].shape) != tuple(found[k].shape)]
        if wrong:
            detail = (f"{wrong[0]} is {tuple(found[wrong[0]].shape)} there, {tuple(expected[wrong[0]].shape)} here"
                      if wrong[0] in found and wrong[0] in expected else f"{wrong[0]} is only in one of them")
            raise ValueError(f"the backup {path} is of another model ({detail}); {fix}")
        if _no_optimizer_state(saved, module):
            raise ValueError(f"the backup {path} holds no optimizer state (every weight was frozen in that fit) and "
                             f"this model has trainable weights; freeze them as then, or {fix}")
        theirs, ours = saved["rnnkit"].get("optimizer"), module.optimizer_name()
        if theirs != ours:
            raise ValueError(f"the backup {path} was written with optimizer {theirs}, this model is compiled "
                             f"with {ours}; compile as before, or {fix}")
        return path
    raise ValueError(f"{errors[0]}; {fix}")


def _delete_backup(backup: BackupAndRestore) -> None:
    """Remove the backup files (the folder too when nothing else is left in it)."""
    folder = backup.backup_dir
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name in (backup.LATEST, backup.PREVIOUS) or name.startswith((f".{backup.LATEST}.", f".{backup.PREVIOUS}.")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
    with contextlib.suppress(OSError):
        os.rmdir(folder)  # only when empty


# -- fit ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's start-up banners and advice aimed at Lightning users (restored after)."""
    names = ["lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric",
             "lightning.fabric.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in (".*does not have many workers.*", ".*smaller than the logging interval.*",
                            ".*Checkpoint directory.*exists and is not empty.*", ".*LightningModule.*is not a.*",
                            ".*`training_step` returned `None`.*", ".*Total length of .* across ranks is zero.*",
                            ".*isinstance\\(treespec, LeafSpec\\).*", ".*no `val_dataloader`.*", ".*sync_dist=True.*",
                            ".*configure_optimizers` returned `None`.*",
                            # validation_data as a shuffled loader (timeseries_dataset_from_array(shuffle=True), as
                            # the Keras book writes it): the order does not change the validation loss and metrics
                            ".*`val_dataloader`'s sampler has shuffling enabled.*"):
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _check_tbptt(model: nn.Module, steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or int(steps) < 1:
        raise ValueError(f"tbptt_steps must be a positive whole number of time steps, got {steps!r}")
    for m in model.modules():
        if isinstance(m, Bidirectional) or (isinstance(m, _KerasRNN) and m.go_backwards) or \
                (isinstance(m, _RECURRENT) and getattr(m, "bidirectional", False)):
            raise ValueError("tbptt_steps needs causal (forward-only) recurrent layers: a backward direction reads "
                             "the future, which a later chunk holds; remove Bidirectional/go_backwards or tbptt_steps")
    if not any(isinstance(m, _RECURRENT) for m in model.modules()):
        raise ValueError("tbptt_steps is set but the model has no recurrent layer to carry state between chunks")


def _check_all_labels(logic: StepLogic, data: ArrayData, first_outputs: list[Tensor]) -> None:
    """Check every label against its loss once, before training (arrays only)."""
    for i, (loss, col) in enumerate(zip(logic.losses, data.y or [])):
        if isinstance(col, Ragged):
            continue
        out = first_outputs[i]
        like = out[:1].expand(col.shape[0], *out.shape[1:]) if out.dim() else out
        if tuple(col.shape[1:2]) != tuple(out.shape[1:2]) and out.dim() >= 3:
            continue  # per-batch padded sequences: checked per batch
        loss.check(col, like, values=True)


def _validation_loader(model: Any, validation_data: Any, batch_size: int, num_workers: int) -> tuple[Any, bool]:
    if is_loader_like(validation_data):
        return make_loader(validation_data, batch_size=batch_size, shuffle=False, seed=0, num_workers=num_workers), True
    if not isinstance(validation_data, list | tuple) or len(validation_data) not in (2, 3):
        raise InputDataError("validation_data must be (x_val, y_val), (x_val, y_val, sample_weight_val), a Dataset "
                             f"or a DataLoader, got {type(validation_data).__name__}")
    vx, vy = validation_data[0], validation_data[1]
    vsw = validation_data[2] if len(validation_data) == 3 else None
    arrays = model_arrays(model, vx, vy, vsw)
    return make_loader(arrays, batch_size=batch_size, shuffle=False, seed=0, num_workers=num_workers), False


def _no_optimizer_state(saved: dict[str, Any], module: KerasModule) -> bool:
    """Whether ``saved`` (a checkpoint) was written by a fit with no trainable weights (no optimizer state)
    and ``module`` has some to train: Lightning would stop in torch's ``load_state_dict`` (``KeyError``)."""
    states = saved.get("optimizer_states")
    return not module.frozen and isinstance(states, list) and any(
        isinstance(st, dict) and "param_groups" not in st for st in states)


def _resolve_resume(resume_from: str | os.PathLike[str] | None, module: KerasModule | None = None) -> str | None:
    if resume_from is None:
        return None
    path = os.fspath(resume_from)
    if os.path.isdir(path):
        path = os.path.join(path, "last.ckpt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no training checkpoint at {path}; resume_from takes the checkpoint_dir of an "
                                "earlier fit (or its last.ckpt)")
    try:  # a damaged file or another kind of file: one line here, not Lightning's unpickling traceback
        saved = _peek_checkpoint(path)
    except ValueError as err:
        raise ValueError(f"resume_from {path} cannot be resumed from ({err}); resume_from takes the checkpoint_dir "
                         "of an earlier fit (or its last.ckpt)") from None
    if module is not None and _no_optimizer_state(saved, module):
        raise ValueError(f"resume_from {path} holds no optimizer state (every weight was frozen in that fit) and "
                         "this model has trainable weights; freeze them as then to resume, or fit without resume_from")
    return path


def fit_model(model: Any, x: Any = None, y: Any = None, *, batch_size: int | None = None, epochs: int = 1,
              verbose: int | str = "auto", callbacks: list[Any] | None = None, validation_split: float = 0.0,
              validation_data: Any = None, shuffle: bool = True, class_weight: dict[int, float] | None = None,
              sample_weight: Any = None, initial_epoch: int = 0, steps_per_epoch: int | None = None,
              validation_steps: int | None = None, validation_batch_size: int | None = None,
              validation_freq: int = 1, seed: int | None = None, tbptt_steps: int | None = None,
              clipnorm: float | None = None, clipvalue: float | None = None, global_clipnorm: float | None = None,
              accelerator: str = "auto", devices: Any = "auto", strategy: Any = "auto", precision: Any = None,
              checkpoint_dir: str | os.PathLike[str] | None = None, resume_from: str | os.PathLike[str] | None = None,
              num_workers: int = 0, trainer_kwargs: dict[str, Any] | None = None) -> History:
    """Train ``model``; see ``Model.fit`` for the Keras arguments.

    Args:
        seed: seeds Python, NumPy and torch first and fixes the shuffling order (per epoch), so
            two runs with the same seed and data give the same weights.
        tbptt_steps: truncated backpropagation through time with chunks of this many steps.
        clipnorm, clipvalue, global_clipnorm: gradient clipping (override compile's).
        accelerator: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``...
        devices: devices per node (``"auto"``, a count or a list).
        strategy: ``"auto"``, ``"ddp"``, ``"ddp_spawn"``... (multi-process data parallel).
        precision: ``"32-true"`` (default), ``"bf16-mixed"``, ``"16-mixed"``... ``"bf16-true"``,
            ``"16-true"`` and ``"64-true"`` train the model converted to that dtype and give it back in
            its own dtypes (the same parameters, their optimizer state in their dtype), also when
            training stops with an exception or Ctrl-C, as Keras' ``fit`` never changes them.
        checkpoint_dir: write ``last.ckpt`` there at every epoch end (for ``resume_from``).
        resume_from: a ``checkpoint_dir`` (or ``.ckpt`` file) to continue an interrupted run
            (not with a ``BackupAndRestore`` callback, which resumes from its own backup).
        num_workers: DataLoader worker processes for arrays and Datasets.
        trainer_kwargs: more ``lightning.pytorch.Trainer`` arguments (they win over the above).

    Returns:
        The ``History``.
    """
    compiled = require_compiled(model)
    check_clipping(clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm)
    check_norm_limits(clipnorm, global_clipnorm)
    verbose_level = 1 if verbose == "auto" else int(verbose)
    if verbose_level not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    if seed is not None:
        set_random_seed(seed)
    data_seed = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
    if isinstance(x, torch.utils.data.DataLoader) and batch_size is not None:
        raise InputDataError("do not pass batch_size with a DataLoader: it batches the data itself")
    batch_size = 32 if batch_size is None else batch_size
    if validation_batch_size is not None and validation_batch_size < 1:
        raise InputDataError(f"validation_batch_size must be a positive integer, got {validation_batch_size}")
    val_batch_size = batch_size if validation_batch_size is None else validation_batch_size
    user = is_loader_like(x)
    ragged = True
    val_loader = None
    val_user = False
    arrays: ArrayData | None = None
    if validation_split and validation_data is None:
        if user:
            raise InputDataError("validation_split needs in-memory arrays; with a Dataset or DataLoader pass "
                                 "validation_data instead")
        arrays = model_arrays(model, x, y, sample_weight)
        arrays, val_arrays = arrays.split(validation_split)
        val_loader = make_loader(val_arrays, batch_size=val_batch_size, shuffle=False, seed=0,
                                 num_workers=num_workers)
    elif validation_data is not None:
        val_loader, val_user = _validation_loader(model, validation_data, val_batch_size,
                                                  num_workers)
    if user:
        if y is not None or sample_weight is not None:
            raise InputDataError("with a Dataset or DataLoader, y and sample_weight come from its items; do not pass "
                                 "them separately")
        train_loader = make_loader(x, batch_size=batch_size, shuffle=shuffle, seed=data_seed,
                                   epoch_offset=initial_epoch, num_workers=num_workers)
    else:
        if arrays is None:
            arrays = model_arrays(model, x, y, sample_weight)
        if arrays.y is None:
            raise InputDataError("fit needs targets: fit(x, y) or a Dataset/DataLoader of (x, y)")
        ragged = arrays.ragged
        train_loader = make_loader(arrays, batch_size=batch_size, shuffle=shuffle, seed=data_seed,
                                   epoch_offset=initial_epoch, num_workers=num_workers)
    logic = StepLogic(model, compiled, class_weight=class_weight,
                      check_values=user or val_user or (arrays is not None and any(isinstance(c, Ragged) for c in arrays.y or [])))
    first = to_device(logic.canonical(first_batch(train_loader)), model_device(model))
    build_model(model, first, ragged)
    first = to_device(first, model_device(model))
    features = logic.preflight(first)
    if arrays is not None:
        _check_all_labels(logic, arrays, logic.preflight_outputs)
    if val_loader is not None:
        logic.preflight(to_device(logic.canonical(first_batch(val_loader)), model_device(model)))
    if tbptt_steps is not None:
        _check_tbptt(model, tbptt_steps)
    if has_trainable_parameters(model):
        compiled.optimizer.build(model.parameters())
    else:
        warnings.warn("The model does not have any trainable weights.", stacklevel=2)  # Keras's warning

    overrides = merge_clipping(compiled.clip_overrides, {"clipnorm": clipnorm, "clipvalue": clipvalue,
                                                        "global_clipnorm": global_clipnorm})
    module = KerasModule(model, logic, features, tbptt_steps=tbptt_steps, clip_overrides=overrides)

    history = History()
    keras_callbacks: list[Callback] = []
    lightning_callbacks: list[LightningCallback] = []
    backups = [cb for cb in callbacks or [] if isinstance(cb, BackupAndRestore)]
    if len(backups) > 1:
        raise ValueError("pass one BackupAndRestore callback, not several")
    backup = backups[0] if backups else None
    if backup is not None and resume_from is not None:
        raise ValueError("BackupAndRestore resumes by itself from its backup_dir; drop resume_from (or the "
                         "BackupAndRestore callback)")
    for cb in callbacks or []:
        if isinstance(cb, BackupAndRestore):
            continue
        if isinstance(cb, Callback):
            keras_callbacks.append(cb)
        elif isinstance(cb, LightningCallback):
            lightning_callbacks.append(cb)
        else:
            raise TypeError(f"callbacks must be rnnkit.training.callbacks.Callback or lightning Callback objects, "
                            f"got {type(cb).__name__}")
    steps = steps_per_epoch if steps_per_epoch is not None else _batches_per_epoch(train_loader)
    params = {"epochs": epochs, "steps": steps, "verbose": verbose_level}
    cb_list = CallbackList([*keras_callbacks, history], model, params)
    bridge = KerasCallbackBridge(cb_list, model, initial_epoch=initial_epoch, epochs=epochs, verbose=verbose_level)
    checkpointing: list[LightningCallback] = []
    if checkpoint_dir is not None:
        checkpointing.append(LastCheckpoint(os.fspath(checkpoint_dir)))
    if backup is not None:
        checkpointing.append(BackupWriter(backup))
    ckpt_path = _resolve_resume(resume_from, module) if backup is None else _find_backup(backup, module)
    # Lightning counts this fit's epochs from 0 (a checkpoint's count too): epoch initial_epoch + i
    max_epochs = epochs - initial_epoch
    if max_epochs <= 0:
        return history
    mid = _mid_epoch_record(ckpt_path) if ckpt_path is not None else None
    progress = _keras_progress_bar(lightning_callbacks, epochs, initial_epoch, verbose_level)
    options: dict[str, Any] = {
        "max_epochs": max_epochs, "accelerator": accelerator, "devices": devices, "strategy": strategy,
        "logger": False, "enable_checkpointing": False, "enable_model_summary": False,
        "enable_progress_bar": verbose_level == 1, "num_sanity_val_steps": 0,
        "callbacks": [bridge, *lightning_callbacks, *checkpointing, *progress],
        "check_val_every_n_epoch": validation_freq, "log_every_n_steps": 1,
        "default_root_dir": os.fspath(checkpoint_dir) if checkpoint_dir is not None else None,
    }
    if precision is not None:
        options["precision"] = precision
    if steps_per_epoch is not None:
        options["limit_train_batches"] = int(steps_per_epoch)
    if validation_steps is not None:
        options["limit_val_batches"] = int(validation_steps)
    if checkpoint_dir is not None or backup is not None:  # into the checkpoint folder's temporary name, not /tmp
        from .checkpoint_io import DirectCheckpointIO

        options["plugins"] = [DirectCheckpointIO()]
    options.update(trainer_kwargs or {})  # a caller's own plugins replace it
    if options["default_root_dir"] is None:
        options.pop("default_root_dir")
    model.stop_training = False
    with _quiet_lightning():
        trainer = pl.Trainer(**options)
        if backup is not None and isinstance(backup.save_freq, int) and trainer.world_size > 1:
            raise ValueError("BackupAndRestore(save_freq=<batches>) backs up mid-epoch in one process only; with "
                             f"{trainer.world_size} processes use save_freq='epoch'")
        if trainer.world_size > 1 and options.get("use_distributed_sampler", True):  # each process its share of rnnkit's order (not Lightning's reshuffle)
            train_loader = _shard_loader(train_loader, train=True)
            sampler = getattr(train_loader, "sampler", None)
            if steps_per_epoch is None and isinstance(sampler, _ShardSampler):
                # the process group, which len() reads, comes later: callbacks see this process's batch
                # count, as Lightning runs it, not the single-process one
                share = sampler.share(len(sampler.inner), 0, trainer.world_size)
                params["steps"] = -(-share // int(train_loader.batch_size))
            if val_loader is not None:
                val_loader = _shard_loader(val_loader, train=False)
        loader: Any = train_loader
        if mid is not None:  # the epoch's batches in the same order, the first ones (already trained on) passed over
            loader = PassOver(train_loader, int(mid["batches"]), lambda skip: ValueError(
                f"the interrupted epoch had {skip} training batches done but the data now gives fewer; resume "
                "with the same data and batch_size"))
            _warn_random_order(train_loader)
            warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
        # A Keras model rests in inference mode: fit trains it in training mode, and each module gets its own mode
        # back after (Lightning leaves the last loop's). A model the user put in train mode keeps the modes its
        # modules have (a BatchNormalization frozen with .eval() stays frozen).
        restore_modes = capture_modes(model)
        if not model.training:
            model.train()
        dtypes = floating_dtypes(model)  # Lightning's *-true precisions convert the model for training
        try:
            fit_passing_interrupts(trainer, module, train_dataloaders=loader, val_dataloaders=val_loader,
                                   ckpt_path=ckpt_path, weights_only=True if ckpt_path is not None else None)
        finally:
            restore_modes()
            restore_dtypes(model, dtypes)
            compiled.optimizer.match_parameter_dtypes()  # its moments, EMA average, accumulators follow
    if backup is not None and backup.delete_checkpoint and not trainer.interrupted:
        if trainer.is_global_zero:  # the files are rank 0's: another process deleting them raced its last write
            _delete_backup(backup)
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            trainer.strategy.barrier("rnnkit_backup_deleted")  # no process finds it again in its next fit
    model.history = history
    _warn_nan(history)
    return history


def _batches_per_epoch(loader: Any) -> int | None:
    """The loader's batch count, or ``None`` for a stream that has none (a ``DataLoader`` over an
    ``IterableDataset`` without ``__len__``: the epoch ends where it does, and Keras callbacks see
    ``params["steps"] = None``, as Keras gives for a generator)."""
    try:
        return len(loader)
    except TypeError:
        return None


class _ShardSampler(torch.utils.data.DistributedSampler):  # type: ignore[type-arg]
    """One process's share of an :class:`~rnnkit.data.bucketing.EpochSampler`'s order under
    multi-process training: samples ``rank, rank + world, ...`` of that order, unshuffled.

    Lightning's own replacement (``DistributedSamplerWrapper``) shuffles every training loader again
    with its own seed, so ``shuffle=False`` was ignored and the batches of a ``devices=2`` run were
    not those of a single-process run over the same order. With this one, batch ``j`` of the two
    processes together is batch ``j`` of a single process with twice the batch size. Training
    shares are padded to equal length with the order's first samples, as torch's ``DistributedSampler``
    does (every process must take the same number of optimizer steps: with a sample count that is
    not a multiple of the process count, those few samples count twice in the epoch); validation
    shares are not, so each sample is scored once and
    the reduced ``val_`` logs are those of one process. The rank and world size are read when
    iterating, once the process group exists (``ddp_spawn`` builds the loaders before).
    (A ``DistributedSampler`` subclass, so Lightning leaves it in place.)"""

    def __init__(self, inner: Any, *, pad: bool) -> None:  # no super().__init__: rank and world come later
        self.inner, self.pad = inner, pad
        self.epoch, self.seed, self.shuffle, self.drop_last = 0, 0, False, False

    @property
    def rank(self) -> int:  # type: ignore[override]
        return self._rank_world()[0]

    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        return self._rank_world()[1]

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def _padded(self, n: int, world: int) -> bool:
        return self.pad or n < world  # a process without batches would leave the others waiting

    def share(self, n: int, rank: int, world: int) -> int:
        """How many of ``n`` samples process ``rank`` of ``world`` takes (all the same when padded)."""
        return -(-n // world) if self._padded(n, world) else len(range(rank, n, world))

    def __len__(self) -> int:
        return self.share(len(self.inner), *self._rank_world())

    def __iter__(self) -> Iterator[int]:
        rank, world = self._rank_world()
        order = list(self.inner)
        if self._padded(len(order), world):
            size = self.share(len(order), rank, world) * world
            while len(order) < size:
                order += order[: size - len(order)]
        return iter(order[rank::world])


def _shard_loader(loader: Any, *, train: bool) -> Any:
    """``loader`` with its :class:`EpochSampler` split between the processes (see
    :class:`_ShardSampler`); a user's ``DataLoader`` is left to Lightning."""
    from ..data.bucketing import EpochSampler

    if not isinstance(loader, torch.utils.data.DataLoader) or not isinstance(loader.sampler, EpochSampler) \
            or loader.batch_size is None:
        return loader
    return torch.utils.data.DataLoader(loader.dataset, batch_size=loader.batch_size,
                                       sampler=_ShardSampler(loader.sampler, pad=train),
                                       collate_fn=loader.collate_fn, num_workers=loader.num_workers)


def _keras_progress_bar(lightning_callbacks: list[Any], epochs: int, offset: int, verbose_level: int) -> list[Any]:
    """Lightning's progress bar, counting epochs like Keras ("Epoch 2/2", not "Epoch 1/1"), unless
    ``verbose`` is not 1 or the user passed a progress bar of their own."""
    from lightning.pytorch.callbacks import ProgressBar

    from ..progress import epoch_progress_bar

    if verbose_level != 1 or any(isinstance(c, ProgressBar) for c in lightning_callbacks):
        return []
    return [epoch_progress_bar(offset, epochs)]


def _warn_nan(history: History) -> None:
    losses = history.history.get("loss", [])
    if losses and not math.isfinite(losses[-1]):
        warnings.warn("the training loss is NaN or infinite: lower the learning rate, clip gradients "
                      "(clipnorm=1.0) or check the data", stacklevel=3)
