"""What ``fit``, ``evaluate`` and ``predict`` accept, turned into batches.

Accepted inputs (``x``; ``y`` and ``sample_weight`` alike):

* NumPy arrays, tensors, or nested Python lists of numbers (rectangular);
* **ragged** lists of sequences (``[[3, 8, 2], [5, 1], ...]`` or a list of ``[T_i, F]`` arrays):
  padded per batch (after the real steps, with zeros) and masked: the model receives the mask
  with its input, so recurrent layers stop at each sequence's end and pooling and losses skip
  the padding;
* a list (or dict by input name) of the above for models with several inputs or outputs;
* a ``torch.utils.data.Dataset`` whose items are ``(x, y)``, ``(x, y, sample_weight)`` or ``x``
  (items of different lengths are padded and masked the same way);
* a ``torch.utils.data.DataLoader`` yielding such batches, or ``rnnkit.data.Batch`` objects
  (anything with ``inputs``, ``targets`` and ``mask``), used as is.

Every batch becomes one dict: ``{"x": [per input], "mask": [per input or None], "y": [per output]
or None, "y_mask": [...], "sw": [B] / [B, T] or None}``. Floats become float32, integers int64.
Inputs are checked at the boundary (sizes agree, no NaN or infinity, not empty) and errors say
what was expected in one line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..data.bucketing import EpochSampler
from ..layers.base import from_numpy


class InputDataError(ValueError):
    """Data given to ``fit``/``evaluate``/``predict`` that cannot be used (one-line message)."""


class Ragged(list):  # type: ignore[type-arg]
    """A list of tensors of different lengths along their first axis (one per sample)."""


Column = Tensor | Ragged


def _kind(obj: Any) -> str:
    return type(obj).__name__


def _is_keras_batches(obj: Any) -> bool:
    """A keras ``PyDataset`` or ``tf.data.Dataset`` (judged by the class's module, importing neither)."""
    return any(cls.__module__.split(".")[0] in ("keras", "tensorflow") and cls.__name__ in ("PyDataset", "DatasetV2")
               for cls in type(obj).__mro__)


def _cast(t: Tensor) -> Tensor:
    if t.dtype == torch.bool:
        return t.float()
    if t.dtype.is_floating_point:
        return t.float() if t.dtype != torch.float32 else t
    if t.dtype.is_complex:
        raise InputDataError(f"complex values are not supported (got {t.dtype})")
    return t.long() if t.dtype != torch.int64 else t


def to_column(obj: Any, what: str) -> Column:
    """One input, target or weight array as a tensor, or a :class:`Ragged` list of tensors.

    Raises:
        InputDataError: for strings, objects or inconsistent ragged items.
    """
    if hasattr(obj, "to_numpy") and not isinstance(obj, Tensor):  # pandas
        obj = obj.to_numpy()
    if isinstance(obj, Tensor):
        return _cast(obj.detach().cpu() if obj.requires_grad else obj.cpu())
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "USO":
            if obj.dtype.kind == "O" and obj.ndim == 1:
                return _ragged(list(obj), what)
            raise InputDataError(f"{what} holds {obj.dtype} values; models take numbers: tokenize text first "
                                 "(rnnkit.data tokenizers, or a vocabulary of your own)")
        return _cast(from_numpy(np.ascontiguousarray(obj)))
    if isinstance(obj, list | tuple):
        if len(obj) == 0:
            return torch.zeros(0)
        try:
            arr = np.asarray(obj)
        except ValueError:  # inhomogeneous: ragged
            return _ragged(list(obj), what)
        if arr.dtype.kind == "O":
            return _ragged(list(obj), what)
        return to_column(arr, what)
    if isinstance(obj, int | float | np.number):
        raise InputDataError(f"{what} must be an array of samples, got a single number {obj!r}")
    if isinstance(obj, Iterator) or _is_keras_batches(obj):
        raise InputDataError(f"{what} is a {_kind(obj)} of batches (a Python generator, keras PyDataset or "
                             "tf.data.Dataset), which rnnkit does not read; pass arrays, a torch Dataset of samples, "
                             "or a torch DataLoader of (x, y) batches over an object with __len__ and __getitem__ "
                             "(a PyDataset too: DataLoader(py_dataset, batch_size=None))")
    raise InputDataError(f"{what} must be a NumPy array, tensor, list of sequences, Dataset or DataLoader, "
                         f"got {_kind(obj)}")


def _ragged(items: list[Any], what: str) -> Ragged:
    out = Ragged()
    tail: tuple[int, ...] | None = None
    floating = False
    for i, item in enumerate(items):
        t = to_column(item, f"{what}[{i}]")
        if isinstance(t, Ragged):
            raise InputDataError(f"{what}[{i}] is itself ragged; each sample must be a [time, ...] array")
        if t.dim() == 0:
            t = t.reshape(1)
        if tail is None:
            tail = tuple(t.shape[1:])
        elif tuple(t.shape[1:]) != tail:
            raise InputDataError(f"{what}: every sequence must have the same feature shape after its time axis; "
                                 f"sample 0 has {list(tail)}, sample {i} has {list(t.shape[1:])}")
        floating = floating or t.dtype.is_floating_point
        out.append(t)
    if floating:
        out = Ragged(t.float() for t in out)
    return out


def column_length(col: Column) -> int:
    """Number of samples."""
    return len(col) if isinstance(col, Ragged) else (int(col.shape[0]) if col.dim() else 1)


def check_finite(col: Column, what: str) -> None:
    """Raise :class:`InputDataError` if a float column holds NaN or infinity."""
    items = col if isinstance(col, Ragged) else [col]
    for part in items:
        if part.dtype.is_floating_point and part.numel() and not bool(torch.isfinite(part).all()):
            bad = part[~torch.isfinite(part)]
            kind = "NaN" if bool(torch.isnan(bad).any()) else "infinite values"
            raise InputDataError(f"{what} contains {kind}; clean or impute them before training "
                                 "(e.g. np.nan_to_num, or drop those samples)")


def pad_column(items: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Pad ``[T_i, ...]`` tensors after their real steps with zeros: ``([B, T, ...], mask [B, T])``."""
    lengths = torch.tensor([int(t.shape[0]) for t in items])
    steps = int(lengths.max()) if len(items) else 0
    first = items[0]
    out = first.new_zeros((len(items), steps, *first.shape[1:]))
    for i, t in enumerate(items):
        out[i, : t.shape[0]] = t
    mask = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)
    return out, mask


def _gather(col: Column, index: list[int]) -> tuple[Tensor, Tensor | None]:
    if isinstance(col, Ragged):
        return pad_column([col[i] for i in index])
    return col[torch.as_tensor(index, dtype=torch.long)], None


class ArrayData:
    """In-memory inputs, targets and sample weights, one column per model input/output.

    Args:
        x: one column per input.
        y: one column per output, or ``None`` (predict).
        sample_weight: ``[N]`` or ``[N, T]`` weights, or ``None``.
    """

    def __init__(self, x: list[Column], y: list[Column] | None = None, sample_weight: Tensor | None = None,
                 x_masks: list[Tensor | None] | None = None) -> None:
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.x_masks = x_masks or [None] * len(x)
        counts = {f"x[{i}]": column_length(c) for i, c in enumerate(x)}
        counts.update({f"y[{i}]": column_length(c) for i, c in enumerate(y or [])})
        if sample_weight is not None:
            counts["sample_weight"] = column_length(sample_weight)
        sizes = set(counts.values())
        if len(sizes) > 1:
            detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
            raise InputDataError(f"x, y and sample_weight must have the same number of samples, got {detail}")
        self.n = sizes.pop() if sizes else 0

    def __len__(self) -> int:
        return self.n

    def subset(self, index: list[int]) -> ArrayData:
        """The samples at ``index``, as a new :class:`ArrayData`."""
        idx = torch.as_tensor(index, dtype=torch.long)

        def take(c: Column) -> Column:
            return Ragged(c[i] for i in index) if isinstance(c, Ragged) else c[idx]
        return ArrayData([take(c) for c in self.x], None if self.y is None else [take(c) for c in self.y],
                         None if self.sample_weight is None else self.sample_weight[idx],
                         [None if m is None else m[idx] for m in self.x_masks])

    def padded(self) -> ArrayData:
        """Ragged inputs padded once to the longest sequence (masks kept), for ``predict``."""
        xs: list[Column] = []
        masks: list[Tensor | None] = []
        for c, m in zip(self.x, self.x_masks):
            if isinstance(c, Ragged):
                c, m = pad_column(c)
            xs.append(c)
            masks.append(m)
        return ArrayData(xs, self.y, self.sample_weight, masks)

    @property
    def ragged(self) -> bool:
        """Whether some input is a ragged list."""
        return any(isinstance(c, Ragged) for c in self.x) or any(m is not None for m in self.x_masks)

    def split(self, fraction: float) -> tuple[ArrayData, ArrayData]:
        """Keras' ``validation_split``: the last ``fraction`` of the samples (before shuffling)."""
        if not 0.0 < fraction < 1.0:
            raise InputDataError(f"validation_split must be in (0, 1), got {fraction}")
        cut = int(math.floor(self.n * (1.0 - fraction)))  # as Keras: the training part rounds down
        if cut == 0 or cut == self.n:
            raise InputDataError(f"validation_split={fraction} of {self.n} samples leaves an empty training or "
                                 "validation set; use more data or another fraction")
        return self.subset(list(range(cut))), self.subset(list(range(cut, self.n)))

    def batch(self, index: list[int]) -> dict[str, Any]:
        """Collate the samples at ``index`` into a batch dict."""
        xs, masks = zip(*(_gather(c, index) for c in self.x))
        idx = torch.as_tensor(index, dtype=torch.long)
        masks = tuple(m if given is None else given[idx] for m, given in zip(masks, self.x_masks))
        out: dict[str, Any] = {"x": list(xs), "mask": list(masks), "y": None, "y_mask": None, "sw": None}
        if self.y is not None:
            ys, y_masks = zip(*(_gather(c, index) for c in self.y))
            out["y"], out["y_mask"] = list(ys), list(y_masks)
        if self.sample_weight is not None:
            out["sw"] = self.sample_weight[torch.as_tensor(index, dtype=torch.long)]
        return out

    def check(self, what: str = "x") -> None:
        """Refuse empty data and NaN/infinite values."""
        if self.n == 0:
            raise InputDataError(f"{what} has no samples; pass at least one")
        for i, c in enumerate(self.x):
            check_finite(c, "x" if len(self.x) == 1 else f"x[{i}]")
        for i, c in enumerate(self.y or []):
            check_finite(c, "y" if len(self.y or []) == 1 else f"y[{i}]")
        if self.sample_weight is not None:
            check_finite(self.sample_weight, "sample_weight")
            if bool((self.sample_weight < 0).any()):
                raise InputDataError("sample_weight must be >= 0")


class _Indices(Dataset):  # type: ignore[type-arg]
    """Dataset of sample indices; the collate function does the (vectorised) gathering."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class _IndexCollate:
    def __init__(self, data: ArrayData) -> None:
        self.data = data

    def __call__(self, index: list[int]) -> dict[str, Any]:
        return self.data.batch(list(index))


def _split_item(item: Any) -> tuple[Any, Any, Any]:
    if isinstance(item, tuple) and len(item) in (2, 3):
        return item[0], item[1], item[2] if len(item) == 3 else None
    if isinstance(item, list) and len(item) in (2, 3) and not isinstance(item[0], int | float):
        return item[0], item[1], item[2] if len(item) == 3 else None
    return item, None, None


def _stack_or_pad(values: list[Any], what: str) -> tuple[Tensor, Tensor | None]:
    ts: list[Tensor] = []
    for v in values:
        if isinstance(v, Tensor):
            t: Column = _cast(v)
        elif isinstance(v, int | float | bool | np.number):
            t = _cast(torch.as_tensor(v))
        else:
            t = to_column(v, what)
        if isinstance(t, Ragged):
            raise InputDataError(f"{what}: a Dataset item must be a single array per input")
        ts.append(t)
    shapes = {tuple(t.shape) for t in ts}
    if len(shapes) == 1:
        return torch.stack(ts), None
    if len({tuple(t.shape[1:]) for t in ts}) == 1 and all(t.dim() >= 1 for t in ts):
        return pad_column(ts)
    raise InputDataError(f"{what}: items have shapes {sorted(shapes)}, which neither stack nor pad along time")


def _numbers(seq: list[Any] | tuple[Any, ...]) -> bool:
    """Whether a list holds plain numbers (a sequence), not one array per input or output."""
    return len(seq) == 0 or isinstance(seq[0], int | float | bool | np.number)


class SampleCollate:
    """Collate ``(x, y[, sample_weight])`` items of a user ``Dataset``, padding ragged ones."""

    def __call__(self, items: list[Any]) -> dict[str, Any]:
        parts = [_split_item(it) for it in items]
        xs = [p[0] for p in parts]
        # a list of arrays is one per input; a list of numbers is one input's sequence (token ids)
        multi = isinstance(xs[0], list | tuple) and not _numbers(xs[0])
        x_cols = list(zip(*xs)) if multi else [xs]
        stacked = [_stack_or_pad(list(c), f"x[{i}]" if multi else "x") for i, c in enumerate(x_cols)]
        out: dict[str, Any] = {"x": [s[0] for s in stacked], "mask": [s[1] for s in stacked],
                               "y": None, "y_mask": None, "sw": None}
        if parts[0][1] is not None:
            ys = [p[1] for p in parts]
            multi_y = isinstance(ys[0], list | tuple) and not _numbers(ys[0])
            y_cols = list(zip(*ys)) if multi_y else [ys]
            ystacked = [_stack_or_pad(list(c), "y") for c in y_cols]
            out["y"], out["y_mask"] = [s[0] for s in ystacked], [s[1] for s in ystacked]
        if parts[0][2] is not None:
            out["sw"] = _stack_or_pad([p[2] for p in parts], "sample_weight")[0].float()
        return out


def _as_list(obj: Any) -> list[Any]:
    return list(obj) if isinstance(obj, list | tuple) else [obj]


def canonical_batch(batch: Any, input_names: list[str], output_names: list[str]) -> dict[str, Any]:
    """Turn a batch from any accepted loader into the batch dict (see the module docstring).

    Raises:
        InputDataError: for a batch of an unknown form.
    """
    if isinstance(batch, dict) and "x" in batch and "mask" in batch:
        return batch
    if hasattr(batch, "inputs") and hasattr(batch, "mask") and hasattr(batch, "targets"):  # rnnkit.data.Batch
        extras = getattr(batch, "extras", {}) or {}
        targets = batch.targets
        return {"x": [batch.inputs], "mask": [batch.mask], "y": None if targets is None else [targets],
                "y_mask": None if targets is None else [extras.get("target_mask")], "sw": extras.get("sample_weight")}
    if isinstance(batch, Tensor):
        return {"x": [batch], "mask": [None], "y": None, "y_mask": None, "sw": None}
    if isinstance(batch, list | tuple) and len(batch) in (1, 2, 3):
        x = batch[0]
        y = batch[1] if len(batch) > 1 else None
        sw = batch[2] if len(batch) > 2 else None
        xs = _by_name(x, input_names, "x")
        out: dict[str, Any] = {"x": [_cast(t) for t in xs], "mask": [None] * len(xs), "y": None, "y_mask": None,
                               "sw": None if sw is None else torch.as_tensor(sw).float()}
        if y is not None:
            ys = _by_name(y, output_names, "y")
            out["y"], out["y_mask"] = [_cast(torch.as_tensor(t)) for t in ys], [None] * len(ys)
        return out
    raise InputDataError(f"a DataLoader batch must be x, (x, y), (x, y, sample_weight) or an rnnkit.data.Batch, "
                         f"got {_kind(batch)}")


def _by_name(value: Any, names: list[str], what: str) -> list[Any]:
    if isinstance(value, dict):
        missing = [n for n in names if n not in value]
        if missing:
            raise InputDataError(f"{what} is a dict without the key(s) {missing}; expected keys {names}")
        return [value[n] for n in names]
    if len(names) > 1:
        if not isinstance(value, list | tuple) or len(value) != len(names):
            raise InputDataError(f"the model has {len(names)} {'inputs' if what == 'x' else 'outputs'} {names}; "
                                 f"pass {what} as a list of {len(names)} arrays or a dict by name")
        return list(value)
    return [value]


def columns(value: Any, names: list[str], what: str) -> list[Column]:
    """Arrays for a model's inputs or outputs (list or dict for several) as columns."""
    parts = _by_name(value, names, what)
    return [to_column(p, what if len(parts) == 1 else f"{what}[{names[i]!r}]") for i, p in enumerate(parts)]


def is_loader_like(obj: Any) -> bool:
    """Whether ``obj`` is a ``torch.utils.data.Dataset`` or ``DataLoader`` (rather than arrays)."""
    return isinstance(obj, Dataset | DataLoader)


def make_loader(data: ArrayData | Dataset | DataLoader, *, batch_size: int, shuffle: bool, seed: int,
                epoch_offset: int = 0, num_workers: int = 0) -> DataLoader:
    """A ``DataLoader`` of batch dicts for arrays or a ``Dataset``; a ``DataLoader`` is returned as is."""
    if isinstance(data, DataLoader):
        return data
    if batch_size < 1:
        raise InputDataError(f"batch_size must be a positive integer, got {batch_size}")
    if isinstance(data, ArrayData):
        sampler = EpochSampler(data.n, shuffle=shuffle, seed=seed, epoch_offset=epoch_offset)
        return DataLoader(_Indices(data.n), batch_size=batch_size, sampler=sampler, collate_fn=_IndexCollate(data),
                          num_workers=num_workers)
    n = len(data)  # type: ignore[arg-type]
    if n == 0:
        raise InputDataError("the Dataset is empty")
    sampler = EpochSampler(n, shuffle=shuffle, seed=seed, epoch_offset=epoch_offset)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, collate_fn=SampleCollate(), num_workers=num_workers)


def array_data(x: Any, y: Any, sample_weight: Any, input_names: list[str], output_names: list[str]) -> ArrayData:
    """Validate and convert in-memory ``x``, ``y`` and ``sample_weight``."""
    if x is None:
        raise InputDataError("x is None; pass the input data")
    xs = columns(x, input_names, "x")
    if len(output_names) == 1 and isinstance(y, list | tuple) and len(y) == 1 and xs \
            and (isinstance(y[0], np.ndarray | Tensor) or hasattr(y[0], "to_numpy")) \
            and column_length(xs[0]) != 1 and np.ndim(y[0]) >= 1 and len(y[0]) == column_length(xs[0]):
        y = y[0]  # [y] for a model of one output, as Keras takes it (one sample's targets would not match x's N)
    ys = None if y is None else columns(y, output_names, "y")
    sw = None
    if sample_weight is not None:
        sw_col = to_column(sample_weight, "sample_weight")
        if isinstance(sw_col, Ragged):
            sw_col, _ = pad_column(sw_col)
        sw = sw_col.float()
    data = ArrayData(xs, ys, sw)
    data.check()
    return data


def batch_size_of(batch: dict[str, Any]) -> int:
    """Number of samples in a batch dict."""
    return int(batch["x"][0].shape[0])


def first_batch(loader: DataLoader) -> Any:
    """The first batch a loader yields (raises :class:`InputDataError` for an empty loader)."""
    for batch in loader:
        return batch
    raise InputDataError("the data yields no batches; pass at least one sample")
