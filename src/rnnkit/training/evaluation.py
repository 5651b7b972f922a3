"""``evaluate`` and ``predict``: plain batched loops (no Lightning), plus helpers shared with ``fit``.

``train_on_batch``/``test_on_batch``/``predict_on_batch`` run one batch through the same
:class:`StepLogic` (forward, losses, metrics) and, for training, one optimizer step with the
compiled optimizer and clipping, as ``fit`` does.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..layers.base import flatten, map_structure, module_mode, to_numpy
from ..metrics import BoundMetric
from .compile import CompileState
from .data import (
    ArrayData,
    InputDataError,
    array_data,
    batch_size_of,
    canonical_batch,
    columns,
    first_batch,
    is_loader_like,
    make_loader,
)
from .optimizers import has_trainable_parameters
from .step import StepLogic


def input_names(model: Any) -> list[str]:
    """The model's input names (``["input"]`` for subclassed models)."""
    return list(getattr(model, "input_names", None) or ["input"])


def output_names(model: Any) -> list[str]:
    """The model's output names (``["output"]`` for subclassed models)."""
    return list(getattr(model, "output_names", None) or ["output"])


def require_compiled(model: Any) -> CompileState:
    """The model's compile state bound to its outputs.

    Raises:
        ValueError: if ``compile`` was not called.
    """
    compiled = getattr(model, "compiled", None)
    if compiled is None:
        raise ValueError("the model must be compiled first: model.compile(optimizer='adam', loss=..., metrics=[...])")
    compiled.resolve(output_names(model))
    return compiled


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a model without any yet)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a batch dict to ``device``."""
    return map_structure(lambda t: t.to(device, non_blocking=True) if isinstance(t, Tensor) else t, batch)


def one_input_list(model: Any, x: Any) -> Any:
    """``[x]`` for a model of one input is ``x``, as in Keras (``predict([x_test])``), when ``x`` is one array with the
    rank of the model's inputs; other lists of one item stay lists of samples (a ragged list of one sequence)."""
    if not isinstance(x, list | tuple) or len(x) != 1 or len(input_names(model)) != 1:
        return x
    item = x[0]
    if not (isinstance(item, np.ndarray | Tensor) or hasattr(item, "to_numpy")):
        return x
    try:
        shape = model.input_shape
    except (AttributeError, ValueError, NotImplementedError):
        return x
    if isinstance(shape, tuple) and shape and all(d is None or isinstance(d, int) for d in shape) \
            and np.ndim(item) == len(shape) and np.ndim(item) >= 2:
        return item
    return x


def model_arrays(model: Any, x: Any, y: Any, sample_weight: Any) -> ArrayData:
    """:func:`array_data` for ``model``'s inputs and outputs (``[x]`` of a one-input model read as ``x``)."""
    return array_data(one_input_list(model, x), y, sample_weight, input_names(model), output_names(model))


def prepare_data(model: Any, x: Any, y: Any, sample_weight: Any, *, batch_size: int | None, shuffle: bool, seed: int,
                 epoch_offset: int = 0, num_workers: int = 0, for_predict: bool = False) -> tuple[DataLoader, bool, bool]:
    """A loader of batch dicts for any accepted input.

    ``batch_size=None`` makes one batch of all the samples (arrays only: the ``*_on_batch`` methods).

    Returns:
        ``(loader, ragged, from_user_loader)``: whether inputs are padded per batch, and whether
        the data came as a Dataset/DataLoader (then every batch is checked for bad values).
    """
    if is_loader_like(x):
        if batch_size is None:
            raise InputDataError("the *_on_batch methods take one batch of arrays, not a Dataset or DataLoader; "
                                 "use fit/evaluate/predict for those")
        if y is not None or sample_weight is not None:
            raise InputDataError("with a Dataset or DataLoader, y and sample_weight come from its items; "
                                 "do not pass them separately")
        data: ArrayData | Dataset | DataLoader = x
        ragged = True
        user = True
    else:
        arrays = model_arrays(model, x, y, sample_weight)
        ragged = arrays.ragged
        data = arrays.padded() if for_predict else arrays
        user = False
        if batch_size is None:
            batch_size = max(arrays.n, 1)
    assert batch_size is not None
    loader = make_loader(data, batch_size=batch_size, shuffle=shuffle, seed=seed, epoch_offset=epoch_offset,
                         num_workers=num_workers)
    return loader, ragged, user


def build_model(model: Any, batch: dict[str, Any], ragged: bool) -> None:
    """Build a lazily built model from its first batch (records the input spec for saving)."""
    build = getattr(model, "build_from_batch", None)
    if callable(build) and len(batch["x"]) == 1:
        build(batch["x"][0], dynamic_time=ragged)


def _pad_concat(parts: list[np.ndarray]) -> np.ndarray:
    if len({p.shape[1:] for p in parts}) == 1:
        return np.concatenate(parts, 0)
    rank = {p.ndim for p in parts}
    if len(rank) != 1:
        raise ValueError("the model returned outputs of different ranks for different batches")
    target = [max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim)]
    padded = []
    for p in parts:
        pad = [(0, 0)] + [(0, t - s) for t, s in zip(target, p.shape[1:])]
        padded.append(np.pad(p, pad))
    return np.concatenate(padded, 0)


def predict_model(model: Any, x: Any, *, batch_size: int | None = None, verbose: int | str = "auto",
                  steps: int | None = None, one_batch: bool = False) -> Any:
    """Batched inference in input order; see ``Model.predict`` (``one_batch``: ``predict_on_batch``)."""
    _check_steps(steps)
    size = None if one_batch else 32 if batch_size is None else batch_size
    loader, ragged, _ = prepare_data(model, x, None, None, batch_size=size, shuffle=False, seed=0, for_predict=True)
    device = model_device(model)
    collected: list[list[np.ndarray]] = []
    structure: Any = None
    start = time.perf_counter()
    with module_mode(model, False), torch.no_grad():
        for i, raw in enumerate(loader):
            if steps is not None and i >= steps:
                break
            batch = to_device(canonical_batch(raw, input_names(model), output_names(model)), device)
            if i == 0:
                build_model(model, batch, ragged)
                device = model_device(model)
                batch = to_device(batch, device)
            xs, masks = batch["x"], batch["mask"]
            inputs = xs[0] if len(xs) == 1 else xs
            mask = masks[0] if len(masks) == 1 else (None if all(m is None for m in masks) else masks)
            outs, _ = model.forward_with_mask(inputs, mask=mask)
            if structure is None:
                structure = outs
                collected = [[] for _ in flatten(outs)]
            for k, o in enumerate(flatten(outs)):
                collected[k].append(to_numpy(o))  # in the output's dtype, as Keras
    if structure is None:
        raise InputDataError("predict received no samples")
    arrays = [_pad_concat(parts) for parts in collected]
    if verbose == 1:
        print(f"predicted {arrays[0].shape[0]} samples in {time.perf_counter() - start:.2f}s")
    it = iter(arrays)
    return map_structure(lambda _: next(it), structure)


def epoch_logs(logic: StepLogic, loss_sum: float, part_sums: list[float], count: int,
               metrics: nn.ModuleList, prefix: str = "") -> dict[str, float]:
    """Keras-style logs from accumulated sums and metric objects."""
    n = max(count, 1)
    logs = {f"{prefix}loss": loss_sum / n}
    if len(part_sums) > 1:
        for name, s in zip(logic.output_names, part_sums):
            logs[f"{prefix}{name}_loss"] = s / n
    for group in metrics:
        for m in cast(nn.ModuleList, group):
            assert isinstance(m, BoundMetric)
            logs[f"{prefix}{m.name}"] = m.compute()
    return logs


def evaluate_model(model: Any, x: Any, y: Any = None, *, batch_size: int | None = None, verbose: int | str = "auto",
                   sample_weight: Any = None, steps: int | None = None, return_dict: bool = False) -> Any:
    """Loss and metrics over data; see ``Model.evaluate``."""
    compiled = require_compiled(model)
    _check_steps(steps)
    if y is None and not is_loader_like(x):
        _check_inputs(model, x)
        raise InputDataError("evaluate needs targets: evaluate(x, y) or a Dataset/DataLoader of (x, y)")
    loader, ragged, user = prepare_data(model, x, y, sample_weight, batch_size=32 if batch_size is None else batch_size, shuffle=False, seed=0)
    logic = StepLogic(model, compiled, check_values=user)
    device = model_device(model)
    metrics: nn.ModuleList | None = None
    loss_sum, count = 0.0, 0
    part_sums: list[float] = []
    with module_mode(model, False):
        for i, raw in enumerate(loader):
            if steps is not None and i >= steps:
                break
            batch = to_device(logic.canonical(raw), device)
            if metrics is None:
                build_model(model, batch, ragged)
                device = model_device(model)
                batch = to_device(batch, device)
                metrics = logic.make_metrics(logic.preflight(batch)).to(device)
                part_sums = [0.0] * len(logic.losses)
            with torch.no_grad():
                outputs, out_masks = logic.forward(batch)
                total, parts = logic.losses_of(outputs, out_masks, batch)
                logic.update_metrics(metrics, outputs, out_masks, batch)
            n = batch_size_of(batch)
            loss_sum += float(total) * n
            part_sums = [s + float(p) * n for s, p in zip(part_sums, parts)]
            count += n
    if metrics is None:
        raise InputDataError("evaluate received no samples")
    logs = epoch_logs(logic, loss_sum, part_sums, count, metrics)
    if verbose in (1, "auto"):
        print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
    return _logs_result(logs, return_dict)


def _check_steps(steps: int | None) -> None:
    if steps is not None and not (isinstance(steps, int) and steps >= 1):
        raise InputDataError(f"steps must be a positive number of batches (None for all the data), got {steps!r}")


def _check_inputs(model: Any, x: Any) -> None:
    """Raise the error for an ``x`` that is not data rnnkit reads (a generator names itself),
    before the one about missing targets, which would send the user the wrong way."""
    columns(x, input_names(model), "x")


def _logs_result(logs: dict[str, float], return_dict: bool) -> Any:
    """``evaluate``'s return convention: the loss alone, ``[loss, *metrics]``, or the dict."""
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


def batch_step(model: Any, x: Any, y: Any, *, train: bool, sample_weight: Any = None,
               class_weight: dict[int, float] | None = None, return_dict: bool = False) -> Any:
    """One batch: loss and metrics, after one optimizer step if ``train``; see ``Model.train_on_batch``.

    The batch goes through :class:`StepLogic` as in ``fit`` (training mode, gradients, the
    compiled optimizer and clipping) or ``evaluate`` (inference mode, no gradients). Recurrent
    state is not reset, so stateful models carry it from one call to the next.
    """
    what = "train_on_batch" if train else "test_on_batch"
    compiled = require_compiled(model)
    if y is None and not is_loader_like(x):
        _check_inputs(model, x)
        raise InputDataError(f"{what} needs targets: {what}(x, y)")
    loader, ragged, _ = prepare_data(model, x, y, sample_weight, batch_size=None, shuffle=False, seed=0)
    logic = StepLogic(model, compiled, class_weight=class_weight, check_values=True)
    batch = logic.canonical(first_batch(loader))
    build_model(model, batch, ragged)
    device = model_device(model)
    batch = to_device(batch, device)
    with module_mode(model, train), torch.set_grad_enabled(train):
        outputs, out_masks = logic.forward(batch)
        if len(outputs) != len(logic.losses):
            raise ValueError(f"the model returns {len(outputs)} output(s) but compile() set "
                             f"{len(logic.losses)} loss(es)")
        total, parts = logic.losses_of(outputs, out_masks, batch)
        if train and not has_trainable_parameters(model):
            warnings.warn("The model does not have any trainable weights.", stacklevel=2)  # as Keras: no update
        elif train:
            spec = compiled.optimizer
            optimizer = spec.build(model.parameters())
            optimizer.zero_grad()
            total.backward()
            spec.clip(model.parameters(), compiled.clip_overrides)
            step = spec.calls  # the call count (with gradient accumulation, iterations counts updates)
            spec.before_step(step)
            optimizer.step()
            spec.calls = step + 1
        features = [int(o.shape[-1]) if o.dim() > 1 else 1 for o in outputs]
        metrics = logic.make_metrics(features).to(device)
        logic.update_metrics(metrics, outputs, out_masks, batch)
    n = batch_size_of(batch)
    logs = epoch_logs(logic, float(total.detach()) * n, [float(p.detach()) * n for p in parts], n, metrics)
    return _logs_result(logs, return_dict)
