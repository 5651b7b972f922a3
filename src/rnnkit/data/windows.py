"""Sliding windows and chronological splits for forecasting, without leaking the future.

A window starting at ``s`` uses steps ``[s, s + lookback)`` as inputs and
``[s + lookback, s + lookback + horizon)`` as targets. :func:`chronological_split` cuts a
series into consecutive train/val/test ranges; the windows of a split have *targets*
entirely inside that split (inputs may look back into earlier splits, which is the past,
unless ``lookback_into_previous=False``), so no window's target reaches the next split.
:func:`make_forecasting_splits` does it all: split each series, fit scalers on the training
range only, scale, and build the three :class:`WindowDataset` s.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError
from .scalers import Scaler
from .timeseries import TimeSeries, TimeSeriesDataset

__all__ = [
    "SplitBounds",
    "chronological_split",
    "window_starts",
    "WindowDataset",
    "ForecastingSplits",
    "make_forecasting_splits",
]


@dataclass(frozen=True)
class SplitBounds:
    """Step ranges ``[start, stop)`` of the three consecutive splits.

    Attributes:
        train: Training range.
        val: Validation range (may be empty).
        test: Test range (may be empty).
    """

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]

    def as_dict(self) -> dict[str, tuple[int, int]]:
        """Return ``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": self.train, "val": self.val, "test": self.test}


def _size(value: float | int | None, n: int, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or value < 0:
        raise DataError(
            f"{name} size must be a step count >= 0 or a fraction in [0, 1], got {value!r}",
            hint="pass a count or a fraction in [0, 1]",
        )
    if isinstance(value, float | np.floating):  # np.float32 is no float: int(0.1) made it 0 steps
        if value > 1:
            raise DataError(
                f"{name} fraction {value} > 1", hint="pass a fraction in [0, 1] or an integer count"
            )
        return math.floor(float(value) * n + 0.5)  # halves round up (round() sent 2.5 to 2 and 3.5 to 4)
    return int(value)


def chronological_split(
    n_steps: int,
    train: float | int | None = 0.7,
    val: float | int | None = 0.1,
    test: float | int | None = 0.2,
) -> SplitBounds:
    """Cut ``n_steps`` into consecutive train, val and test ranges.

    Each size is an ``int`` (steps) or a ``float`` (fraction of ``n_steps``, rounded to the nearest
    step, halves up; three fractions summing to 1 give the training split the rest). One of them may be
    ``None``: it takes what is left. Steps beyond the three splits are unused (e.g. the
    standard ETTh1 split ``train=8640, val=2880, test=2880`` of 17,420 rows).

    Args:
        n_steps: Series length.
        train: Training size.
        val: Validation size.
        test: Test size.

    Returns:
        The :class:`SplitBounds`.
    """
    sizes = [_size(train, n_steps, "train"), _size(val, n_steps, "val"), _size(test, n_steps, "test")]
    if sizes.count(None) > 1:
        raise DataError("at most one of train/val/test may be None", hint="give sizes for the other two")
    known = sum(s for s in sizes if s is not None)
    if None in sizes:
        sizes[sizes.index(None)] = n_steps - known
    elif all(isinstance(v, float | np.floating) for v in (train, val, test)) and abs(sum((train, val, test)) - 1.0) < 1e-9:  # type: ignore[arg-type]
        sizes[0] = n_steps - sizes[1] - sizes[2]  # type: ignore[operator]
    tr, va, te = (int(s) for s in sizes)  # type: ignore[arg-type]
    if min(tr, va, te) < 0 or tr + va + te > n_steps:
        raise DataError(
            f"split sizes train={tr}, val={va}, test={te} exceed the {n_steps} steps",
            hint="reduce the sizes or fractions",
        )
    if tr == 0:
        raise DataError("training split is empty", hint="give the training split some steps")
    return SplitBounds((0, tr), (tr, tr + va), (tr + va, tr + va + te))


def window_starts(
    n_steps: int,
    lookback: int,
    horizon: int,
    stride: int = 1,
    target_range: tuple[int, int] | None = None,
    lookback_into_previous: bool = True,
) -> np.ndarray:
    """Start indices of the windows whose targets lie inside ``target_range``.

    Args:
        n_steps: Series length.
        lookback: Input steps.
        horizon: Target steps.
        stride: Step between consecutive windows.
        target_range: ``[lo, hi)`` that must contain every target (default: the series).
        lookback_into_previous: Allow inputs before ``lo`` (the past of the split).

    Returns:
        Int64 array of window starts ``s`` (inputs ``[s, s+lookback)``).
    """
    if lookback < 1 or horizon < 1 or stride < 1:
        raise DataError(
            f"lookback, horizon and stride must be >= 1, got {lookback}, {horizon}, {stride}",
            hint="pass positive sizes",
        )
    lo, hi = target_range if target_range is not None else (0, n_steps)
    lo, hi = max(lo, 0), min(hi, n_steps)
    first_target = max(lo, lookback) if lookback_into_previous else lo + lookback
    last_target = hi - horizon
    if last_target < first_target:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first_target, last_target + 1, stride, dtype=np.int64) - lookback


def _check_finite(s: TimeSeries) -> None:
    for kind, values, names in (
        ("target", s.targets, s.target_names),
        ("past covariate", s.past_covariates, s.past_covariate_names),
        ("future covariate", s.future_covariates, s.future_covariate_names),
    ):
        bad = ~np.isfinite(values)
        if bad.any():
            step, col = (int(i) for i in np.argwhere(bad)[0])
            name = names[col] if col < len(names) else str(col)
            raise DataError(
                f"series {s.series_id!r} has {int(bad.sum())} NaN/inf values in its {kind}s "
                f"(first: {kind} {name!r} at step {step}, value {values[step, col]})",
                hint="fill them first: read_timeseries(fill='interpolate'), or rnnkit.data.fill_missing(values, 'interpolate')",
            )


def _as_series_list(data: Any) -> list[TimeSeries]:
    if isinstance(data, TimeSeriesDataset):
        return list(data.series.values())
    if isinstance(data, TimeSeries):
        return [data]
    if isinstance(data, np.ndarray | torch.Tensor):
        return [TimeSeries.from_arrays(np.asarray(data))]
    if isinstance(data, Iterable):
        out = list(data)
        if not all(isinstance(s, TimeSeries) for s in out):
            raise DataError(
                "expected TimeSeries objects", hint="use TimeSeries.from_arrays(values) to wrap arrays"
            )
        return out
    raise DataError(
        f"cannot make windows from {type(data).__name__}",
        hint="pass a TimeSeries, a TimeSeriesDataset or an array",
    )


class WindowDataset(Dataset):
    """Fixed-size forecasting windows over one or many series (never crossing series).

    Each item is a dict of float32 tensors:

    * ``inputs`` ``[lookback, n_targets + P + F]``: past targets, past covariates and
      known-future covariates over the lookback;
    * ``future_inputs`` ``[horizon, F]``: the known-future covariates over the horizon;
    * ``targets`` ``[horizon, n_targets]``;
    * ``series_index`` and ``target_start`` (ints) to trace the window back.

    A NaN or inf value in a series is an error naming the series, the column and the step
    (fill gaps first), as is a series shorter than ``lookback + horizon``.

    Args:
        data: A :class:`TimeSeries`, a list of them, a :class:`TimeSeriesDataset` or an
            array ``[N]`` / ``[N, n_targets]``.
        lookback: Input steps.
        horizon: Target steps.
        stride: Step between windows.
        split: ``'train'``, ``'val'``, ``'test'`` with ``bounds``, or ``None`` for all steps.
        bounds: Per-series :class:`SplitBounds` (a dict by series id, or one for all).
        lookback_into_previous: Let inputs reach into the preceding splits.
    """

    def __init__(
        self,
        data: Any,
        lookback: int,
        horizon: int,
        stride: int = 1,
        split: str | None = None,
        bounds: dict[str, SplitBounds] | SplitBounds | None = None,
        lookback_into_previous: bool = True,
    ) -> None:
        self.series = _as_series_list(data)
        self.lookback, self.horizon, self.stride = lookback, horizon, stride
        self.split = split
        if split is not None and split not in ("train", "val", "test"):
            raise DataError(f"split must be 'train', 'val', 'test' or None, got {split!r}", hint="pick one")
        if split is not None and bounds is None:
            raise DataError("split= needs bounds=", hint="compute them with chronological_split")
        index: list[tuple[int, int]] = []
        for k, s in enumerate(self.series):
            n = len(s)
            if n < lookback + horizon:
                raise DataError(
                    f"series {s.series_id!r} has {n} steps, fewer than lookback + horizon = {lookback} + {horizon}",
                    hint="use a shorter lookback/horizon or drop short series",
                )
            rng: tuple[int, int] | None = None
            if split is not None:
                b = bounds[s.series_id] if isinstance(bounds, dict) else bounds
                assert isinstance(b, SplitBounds)
                rng = b.as_dict()[split]
            for start in window_starts(n, lookback, horizon, stride, rng, lookback_into_previous):
                index.append((k, int(start)))
        if not index:
            raise DataError(
                f"no {split or ''} window fits: each needs {horizon} target steps inside the split"
                + ("" if lookback_into_previous else f" plus {lookback} input steps"),
                hint="enlarge the split or shorten lookback/horizon",
            )
        self.index = index
        for s in self.series:
            _check_finite(s)
        self._arrays = [
            (
                torch.as_tensor(
                    np.concatenate([s.targets, s.past_covariates, s.future_covariates], axis=1),
                    dtype=torch.float32,
                ),
                torch.as_tensor(s.future_covariates, dtype=torch.float32),
                torch.as_tensor(s.targets, dtype=torch.float32),
            )
            for s in self.series
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        k, s = self.index[i]
        x, fut, y = self._arrays[k]
        t0 = s + self.lookback
        return {
            "inputs": x[s:t0],
            "future_inputs": fut[t0 : t0 + self.horizon],
            "targets": y[t0 : t0 + self.horizon],
            "series_index": k,
            "target_start": t0,
        }

    def target_ranges(self) -> list[tuple[int, int, int]]:
        """Return ``(series_index, target_start, target_stop)`` of every window."""
        return [(k, s + self.lookback, s + self.lookback + self.horizon) for k, s in self.index]


@dataclass
class ForecastingSplits:
    """Output of :func:`make_forecasting_splits`.

    Attributes:
        train: Training windows.
        val: Validation windows (``None`` if the split is empty).
        test: Test windows (``None`` if the split is empty).
        bounds: Split ranges per series id.
        target_scaler: Scaler fitted on the training targets (or ``None``).
        covariate_scaler: Scaler fitted on the training covariates (or ``None``).
        series: The scaled series.
    """

    train: WindowDataset
    val: WindowDataset | None
    test: WindowDataset | None
    bounds: dict[str, SplitBounds]
    target_scaler: Scaler | None
    covariate_scaler: Scaler | None
    series: list[TimeSeries]


def make_forecasting_splits(
    data: Any,
    lookback: int,
    horizon: int,
    *,
    train: float | int | None = 0.7,
    val: float | int | None = 0.1,
    test: float | int | None = 0.2,
    stride: int = 1,
    target_scaler: Scaler | None = None,
    covariate_scaler: Scaler | None = None,
    lookback_into_previous: bool = True,
) -> ForecastingSplits:
    """Split each series chronologically, fit scalers on the training steps only, scale, window.

    Args:
        data: Series (see :class:`WindowDataset`).
        lookback: Input steps.
        horizon: Target steps.
        train: Training size per series (count or fraction).
        val: Validation size.
        test: Test size.
        stride: Step between windows (all splits).
        target_scaler: Unfitted scaler for targets (copied, then fitted on training rows).
        covariate_scaler: Unfitted scaler for past + future covariates.
        lookback_into_previous: See :class:`WindowDataset`.

    Returns:
        :class:`ForecastingSplits`.
    """
    series = _as_series_list(data)
    if len({s.series_id for s in series}) != len(series):
        raise DataError("series ids are not unique", hint="give each series its own id")
    bounds = {s.series_id: chronological_split(len(s), train, val, test) for s in series}
    for s in series:
        if len(s) < lookback + horizon:
            raise DataError(
                f"series {s.series_id!r} has {len(s)} steps, fewer than lookback + horizon = {lookback} + {horizon}",
                hint="use a shorter lookback/horizon or drop short series",
            )
    t_scaler = copy.deepcopy(target_scaler) if target_scaler is not None else None
    c_scaler = copy.deepcopy(covariate_scaler) if covariate_scaler is not None else None
    if t_scaler is not None:
        t_scaler.fit({s.series_id: s.targets[: bounds[s.series_id].train[1]] for s in series})
    has_cov = any(s.past_covariates.shape[1] + s.future_covariates.shape[1] for s in series)
    if c_scaler is not None and has_cov:
        c_scaler.fit(
            {
                s.series_id: np.concatenate([s.past_covariates, s.future_covariates], axis=1)[
                    : bounds[s.series_id].train[1]
                ]
                for s in series
            }
        )
    scaled: list[TimeSeries] = []
    for s in series:
        new = copy.copy(s)
        if t_scaler is not None:
            new.targets = t_scaler.transform(s.targets, s.series_id)
        if c_scaler is not None and has_cov:
            cov = c_scaler.transform(
                np.concatenate([s.past_covariates, s.future_covariates], axis=1), s.series_id
            )
            p = s.past_covariates.shape[1]
            new.past_covariates, new.future_covariates = cov[:, :p], cov[:, p:]
        scaled.append(new)

    def build(split: str) -> WindowDataset | None:
        if all(getattr(b, split)[1] <= getattr(b, split)[0] for b in bounds.values()):
            return None
        return WindowDataset(scaled, lookback, horizon, stride, split, bounds, lookback_into_previous)

    train_ds = build("train")
    if train_ds is None:  # pragma: no cover - chronological_split forbids an empty train split
        raise DataError("training split is empty", hint="give the training split some steps")
    return ForecastingSplits(
        train_ds, build("val"), build("test"), bounds, t_scaler, c_scaler if has_cov else None, scaled
    )
