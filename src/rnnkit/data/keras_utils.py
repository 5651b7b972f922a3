"""Keras' dataset helpers on torch: ``keras.utils.timeseries_dataset_from_array``.

Keras returns a ``tf.data.Dataset`` (or a Grain dataset); here the same windows come as a
``torch.utils.data.DataLoader`` of ``(inputs, targets)`` tensor batches, which ``Model.fit``,
``evaluate`` and ``predict`` take as they are, plus Keras' ``take(n)`` for a first look.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["TimeseriesWindows", "WindowBatches", "timeseries_dataset_from_array"]


class TimeseriesWindows(Dataset):  # type: ignore[type-arg]
    """The windows of :func:`timeseries_dataset_from_array`, one sample per item.

    Item ``i`` is ``data[p, p + r, ..., p + (L - 1) r]`` (``p`` the ``i``-th start position,
    relative to ``start_index``), with ``targets[p]`` beside it when targets are given.
    """

    def __init__(self, data: np.ndarray, targets: np.ndarray | None, positions: np.ndarray, sequence_length: int,
                 sampling_rate: int) -> None:
        self.data = torch.tensor(data)  # a copy: read-only arrays (pandas .values) warn as views
        self.targets = None if targets is None else torch.tensor(targets)
        self.positions = positions
        self.offsets = torch.arange(sequence_length) * sampling_rate

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> Any:
        p = int(self.positions[i])
        window = self.data[p + self.offsets]
        if self.targets is None:
            return window
        return window, self.targets[p]

    def take(self, count: int) -> list[Any]:
        """The first ``count`` samples (all of them for ``count=-1``), as Keras' ``Dataset.take``."""
        n = len(self) if count < 0 else min(int(count), len(self))
        return [self[i] for i in range(n)]


class WindowBatches(DataLoader):  # type: ignore[type-arg]
    """A ``DataLoader`` of window batches with Keras' ``take(n)`` (the first ``n`` batches)."""

    def take(self, count: int) -> list[Any]:
        """The first ``count`` batches (all of them for ``count=-1``), as Keras' ``Dataset.take``."""
        it: Iterator[Any] = iter(self)
        return list(it if count < 0 else islice(it, int(count)))


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return (value.float() if value.dtype == torch.bfloat16 else value).cpu().numpy()  # NumPy has no bfloat16
    arr = np.asarray(value)  # NumPy arrays, lists, pandas DataFrames and Series
    if arr.ndim == 0:
        raise ValueError(f"{what} must be an array with time on axis 0, got a scalar")
    if arr.dtype.kind in "USO":
        raise ValueError(f"{what} holds {arr.dtype} values; pass numbers")
    return arr


def timeseries_dataset_from_array(
    data: Any,
    targets: Any,
    sequence_length: int,
    sequence_stride: int = 1,
    sampling_rate: int = 1,
    batch_size: int | None = 128,
    shuffle: bool = False,
    seed: int | None = None,
    start_index: int | None = None,
    end_index: int | None = None,
    format: str | None = None,
) -> WindowBatches | TimeseriesWindows:
    """Sliding windows over a time series, as ``keras.utils.timeseries_dataset_from_array``.

    Window ``i`` starts at ``p_i = i * sequence_stride`` (counted from ``start_index``) and holds
    the steps ``data[p_i], data[p_i + sampling_rate], ...`` (``sequence_length`` of them); its
    target is ``targets[p_i]`` (counted from ``start_index`` too), so the target of a window
    that should predict the step after it sits ``sequence_length * sampling_rate`` rows further
    in ``targets``, as in Keras. The number of windows is as Keras': those that fit between
    ``start_index`` and ``end_index``, and at most ``len(targets)``.

    Args:
        data: array (or tensor, list, pandas DataFrame) with time on axis 0.
        targets: one target per time step (axis 0), or ``None`` to yield the windows alone.
        sequence_length: steps per window.
        sequence_stride: steps between the starts of consecutive windows.
        sampling_rate: steps between the samples inside a window.
        batch_size: windows per batch; ``None`` gives a ``Dataset`` of single windows.
        shuffle: draw the windows in random order (a new order at every pass over them, from
            ``seed``; Keras shuffles within a buffer of 8 batches, so the orders differ).
        seed: seed of the shuffling.
        start_index, end_index: use only the rows ``[start_index, end_index)`` of ``data``.
        format: accepted for Keras compatibility (``"tf"``/``"grain"``); the result is always a
            torch ``DataLoader``.

    Returns:
        A :class:`WindowBatches` (a ``DataLoader``) yielding ``(inputs [B, L, ...], targets [B, ...])``
        tensors (``inputs`` alone without targets), with the dtypes of the arrays; ``Model.fit``
        takes it as ``x`` (and as ``validation_data``). ``take(n)`` lists the first ``n`` batches.
        With ``batch_size=None``, a :class:`TimeseriesWindows` dataset of single windows.

    Raises:
        ValueError: for the arguments Keras refuses (with the same conditions), and when no
            window fits.
    """
    if format not in (None, "tf", "grain"):
        raise ValueError(f'format should be either "tf" or "grain", got {format!r}')
    arr = _as_array(data, "data")
    tgt = None if targets is None else _as_array(targets, "targets")
    if tgt is not None and len(tgt) != len(arr):
        raise ValueError(f"expected data and targets to have the same number of time steps (axis 0), got "
                         f"data: {len(arr)} and targets: {len(tgt)}")
    for name, value in (("sequence_length", sequence_length), ("sequence_stride", sequence_stride),
                        ("sampling_rate", sampling_rate)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer)
                                   or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if sampling_rate >= len(arr):
        raise ValueError(f"sampling_rate must be lower than the length of the data, got sampling_rate="
                         f"{sampling_rate} for data of length {len(arr)}")
    if sequence_stride >= len(arr):
        raise ValueError(f"sequence_stride must be lower than the length of the data, got sequence_stride="
                         f"{sequence_stride} for data of length {len(arr)}")
    if start_index:
        if start_index < 0:
            raise ValueError(f"start_index must be 0 or greater, got {start_index}")
        if start_index >= len(arr):
            raise ValueError(f"start_index must be lower than the length of the data, got start_index="
                             f"{start_index} for data of length {len(arr)}")
    if end_index:
        if start_index and end_index <= start_index:
            raise ValueError(f"end_index must be higher than start_index, got start_index={start_index} and "
                             f"end_index={end_index}")
        if end_index >= len(arr):
            raise ValueError(f"end_index must be lower than the length of the data, got end_index={end_index} "
                             f"for data of length {len(arr)}")
        if end_index <= 0:
            raise ValueError(f"end_index must be higher than 0, got {end_index}")
    start = int(start_index or 0)
    end = len(arr) if end_index is None else int(end_index)
    num_seqs = end - start - (int(sequence_length) - 1) * int(sampling_rate)
    if tgt is not None:
        num_seqs = min(num_seqs, len(tgt))
    if num_seqs <= 0:
        raise ValueError(f"no window of sequence_length={sequence_length} with sampling_rate={sampling_rate} fits "
                         f"in the {end - start} rows [{start}, {end}) of data; use shorter windows or more data")
    positions = np.arange(0, num_seqs, int(sequence_stride))
    windows = TimeseriesWindows(arr[start:end], None if tgt is None else tgt[start:end], positions,
                                int(sequence_length), int(sampling_rate))
    if batch_size is None:
        if shuffle:
            rng = np.random.RandomState(np.random.randint(1_000_000) if seed is None else seed)
            windows.positions = rng.permutation(positions)
        return windows
    generator = None
    if shuffle:
        generator = torch.Generator()
        generator.manual_seed(int(np.random.randint(1_000_000) if seed is None else seed))
    return WindowBatches(windows, batch_size=int(batch_size), shuffle=bool(shuffle), generator=generator)
