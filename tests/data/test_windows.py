"""Tests for rnnkit.data.windows (sliding windows and chronological splits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from rnnkit.data import (
    DataError,
    MinMaxScaler,
    StandardScaler,
    TimeSeries,
    WindowDataset,
    chronological_split,
    make_forecasting_splits,
    window_starts,
)


def test_chronological_split_sizes() -> None:
    b = chronological_split(100, 0.7, 0.1, 0.2)
    assert b.train == (0, 70) and b.val == (70, 80) and b.test == (80, 100)
    b = chronological_split(17420, 8640, 2880, 2880)  # ETTh1 standard split; the tail is unused
    assert b.test == (11520, 14400)
    b = chronological_split(10, 5, None, 2)
    assert b.as_dict() == {"train": (0, 5), "val": (5, 8), "test": (8, 10)}
    with pytest.raises(DataError, match="exceed"):
        chronological_split(10, 8, 2, 1)
    with pytest.raises(DataError, match="at most one"):
        chronological_split(10, None, None, 2)
    with pytest.raises(DataError, match="empty"):
        chronological_split(10, 0, 5, 5)
    with pytest.raises(DataError, match="fraction"):
        chronological_split(10, 1.5, 0.0, 0.0)


def test_chronological_split_fractions_round_halves_up() -> None:
    """A fraction lands on the nearest step, halves up, for every series length alike (Python's
    round() sent 0.5 * 5 = 2.5 to 2 but 0.5 * 7 = 3.5 to 4)."""
    assert chronological_split(5, None, 0, 0.5).test == (2, 5)  # 2.5 -> 3 test steps
    assert chronological_split(7, None, 0, 0.5).test == (3, 7)  # 3.5 -> 4
    assert chronological_split(25, None, 0.1, 0.1).as_dict() == {"train": (0, 19), "val": (19, 22), "test": (22, 25)}
    b = chronological_split(25, 0.8, 0.1, 0.1)  # fractions summing to 1: training takes the rest
    assert b.test == (22, 25) and b.val == (19, 22) and b.train == (0, 19)


def test_window_starts_basic() -> None:
    assert window_starts(10, 3, 2).tolist() == [0, 1, 2, 3, 4, 5]
    assert window_starts(10, 3, 2, stride=2).tolist() == [0, 2, 4]
    assert window_starts(10, 3, 2, target_range=(6, 10)).tolist() == [3, 4, 5]
    assert window_starts(10, 3, 2, target_range=(6, 10), lookback_into_previous=False).tolist() == []
    with pytest.raises(DataError):
        window_starts(10, 0, 1)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(10, 300),
    lookback=st.integers(1, 20),
    horizon=st.integers(1, 10),
    stride=st.integers(1, 5),
    sizes=st.tuples(st.integers(1, 150), st.integers(0, 100), st.integers(0, 100)),
    into_previous=st.booleans(),
)
def test_windows_never_leak(
    n: int, lookback: int, horizon: int, stride: int, sizes: tuple[int, int, int], into_previous: bool
) -> None:
    scale = min(1.0, n / sum(sizes))
    tr, va, te = (int(x * scale) for x in sizes)
    b = chronological_split(n, max(tr, 1), va, min(te, n - max(tr, 1) - va))
    assert b.train[0] == 0 and b.train[1] == b.val[0] and b.val[1] == b.test[0] and b.test[1] <= n
    ranges = b.as_dict()
    for lo, hi in ranges.values():
        starts = window_starts(n, lookback, horizon, stride, (lo, hi), into_previous)
        for s in starts.tolist():
            in_lo, in_hi = s, s + lookback
            t_lo, t_hi = in_hi, in_hi + horizon
            assert in_lo >= 0 and in_hi <= t_lo  # inputs strictly before targets
            assert lo <= t_lo and t_hi <= hi  # targets inside the split: never reach the next one
            if not into_previous:
                assert in_lo >= lo
        # every admissible window is produced (stride 1 and into_previous: exact count)
        if stride == 1 and into_previous:
            expected = max(0, (hi - horizon) - max(lo, lookback) + 1)
            assert len(starts) == expected


def _series(n: int = 50, sid: str = "0") -> TimeSeries:
    t = np.arange(n, dtype=np.float64)
    return TimeSeries.from_arrays(
        np.stack([t, 10 * t], axis=1),
        past_covariates=t + 0.5,
        future_covariates=np.stack([t % 7, t % 2], axis=1),
        series_id=sid,
    )


def test_window_dataset_items() -> None:
    ds = WindowDataset(_series(20), lookback=4, horizon=3)
    assert len(ds) == 20 - 4 - 3 + 1
    item = ds[2]
    assert item["inputs"].shape == (4, 2 + 1 + 2) and item["targets"].shape == (3, 2)
    assert item["future_inputs"].shape == (3, 2) and item["target_start"] == 6
    assert item["inputs"][:, 0].tolist() == [2, 3, 4, 5] and item["targets"][:, 0].tolist() == [6, 7, 8]
    assert item["future_inputs"][:, 0].tolist() == [6 % 7, 7 % 7, 8 % 7]
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["inputs"].shape == (5, 4, 5) and batch["inputs"].dtype == torch.float32
    arr = WindowDataset(np.arange(10.0), 3, 1)
    assert len(arr) == 7 and arr[0]["targets"].tolist() == [[3.0]]
    assert ds.target_ranges()[0] == (0, 4, 7)


def test_window_dataset_errors() -> None:
    with pytest.raises(
        DataError, match="series 'short' has 5 steps, fewer than lookback \\+ horizon = 4 \\+ 3"
    ):
        WindowDataset([_series(20), _series(5, "short")], 4, 3)
    with pytest.raises(DataError, match="needs bounds"):
        WindowDataset(_series(), 4, 3, split="val")
    with pytest.raises(DataError, match="no val window fits"):
        WindowDataset(_series(20), 4, 3, split="val", bounds=chronological_split(20, 18, 2, 0))
    with pytest.raises(DataError, match="TimeSeries"):
        WindowDataset(["abc"], 1, 1)
    with pytest.raises(DataError, match="cannot make windows"):
        WindowDataset(3, 1, 1)


def test_make_forecasting_splits_fits_on_train_only() -> None:
    series = [_series(100, "a"), _series(60, "b")]
    splits = make_forecasting_splits(
        series,
        lookback=8,
        horizon=4,
        train=0.6,
        val=0.2,
        test=0.2,
        target_scaler=StandardScaler(per_series=True),
        covariate_scaler=MinMaxScaler(),
    )
    assert splits.bounds["a"].train == (0, 60) and splits.bounds["b"].train == (0, 36)
    sc = splits.target_scaler
    assert sc is not None
    center, scale = sc.stats["a"]
    train_a = series[0].targets[:60]
    np.testing.assert_allclose(center, train_a.mean(axis=0))
    np.testing.assert_allclose(scale, train_a.std(axis=0))
    scaled_train = splits.series[0].targets[:60]
    np.testing.assert_allclose(scaled_train.mean(axis=0), 0, atol=1e-9)
    assert splits.series[0].targets[60:].mean() > 1  # later (larger) values are not squeezed: no leak
    assert series[0].targets[0, 0] == 0  # the input series is not modified
    assert splits.covariate_scaler is not None
    for name, ds in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        assert ds is not None
        for k, t0, t1 in ds.target_ranges():
            lo, hi = getattr(splits.bounds[ds.series[k].series_id], name)
            assert lo <= t0 and t1 <= hi
    pred = torch.zeros(2, 4, 2)
    assert sc.inverse_transform(pred, "a").shape == (2, 4, 2)


def test_make_forecasting_splits_without_val() -> None:
    splits = make_forecasting_splits(_series(40), 5, 2, train=30, val=0, test=10)
    assert splits.val is None and splits.test is not None and splits.target_scaler is None
    with pytest.raises(DataError, match="fewer than lookback"):
        make_forecasting_splits(_series(5), 5, 2)
