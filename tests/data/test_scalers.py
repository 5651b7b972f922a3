"""Tests for rnnkit.data.scalers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rnnkit.data import (
    DataError,
    DifferenceTransform,
    LogTransform,
    MinMaxScaler,
    RobustScaler,
    StandardScaler,
    load_transform,
)

X = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, 50.0]])


def test_standard_scaler_values() -> None:
    sc = StandardScaler().fit(X)
    y = sc.transform(X)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=0), 1)
    np.testing.assert_allclose(sc.inverse_transform(y), X)


def test_minmax_and_robust_values() -> None:
    mm = MinMaxScaler((-1, 1)).fit(X)
    y = mm.transform(X)
    np.testing.assert_allclose(y.min(axis=0), -1)
    np.testing.assert_allclose(y.max(axis=0), 1)
    rb = RobustScaler().fit(X)
    y = rb.transform(X)
    np.testing.assert_allclose(np.median(y, axis=0), 0)
    q1, q3 = np.percentile(y, [25, 75], axis=0)
    np.testing.assert_allclose(q3 - q1, 1)
    np.testing.assert_allclose(rb.inverse_transform(y), X)


def test_constant_feature_and_1d() -> None:
    sc = StandardScaler().fit(np.array([[5.0, 1.0], [5.0, 2.0]]))
    assert sc.transform(np.array([[5.0, 1.5]])).tolist() == [[0.0, 0.0]]
    one = MinMaxScaler().fit(np.array([1.0, 3.0]))
    np.testing.assert_allclose(one.transform(np.array([[2.0, 3.0], [1.0, 1.0]])), [[0.5, 1.0], [0.0, 0.0]])


def test_per_series_and_pooled() -> None:
    data = {"a": np.array([[0.0], [2.0]]), "b": np.array([[10.0], [30.0]])}
    per = StandardScaler(per_series=True).fit(data)
    out = per.transform(data)
    np.testing.assert_allclose(out["a"][:, 0], [-1, 1])
    np.testing.assert_allclose(out["b"][:, 0], [-1, 1])
    np.testing.assert_allclose(per.inverse_transform(np.array([[0.0]]), "b"), [[20.0]])
    pooled = StandardScaler().fit(data)
    assert pooled.transform(data["a"])[0, 0] < -0.5
    with pytest.raises(DataError, match="series_id"):
        per.transform(np.array([[1.0]]))
    with pytest.raises(DataError, match="no statistics for series 'c'"):
        per.transform(np.array([[1.0]]), "c")
    with pytest.raises(DataError, match="needs a mapping"):
        StandardScaler(per_series=True).fit(X)


def test_errors() -> None:
    with pytest.raises(DataError, match="not fitted"):
        StandardScaler().transform(X)
    with pytest.raises(DataError, match="NaN or inf"):
        StandardScaler().fit(np.array([1.0, np.nan]))
    with pytest.raises(DataError, match="empty"):
        StandardScaler().fit(np.zeros((0, 2)))
    with pytest.raises(DataError, match="features on its last axis"):
        StandardScaler().fit(X).transform(np.ones((3, 3)))
    with pytest.raises(DataError, match="low < high"):
        MinMaxScaler((1, 1))
    with pytest.raises(DataError, match="quantile_range"):
        RobustScaler((80, 20))


def test_tensors_in_and_out() -> None:
    sc = StandardScaler().fit(torch.as_tensor(X))
    t = torch.as_tensor(X, dtype=torch.float32)
    y = sc.transform(t)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    torch.testing.assert_close(sc.inverse_transform(y), t)
    batch = torch.zeros(4, 3, 2)  # predictions [B, H, F]
    assert sc.inverse_transform(batch).shape == (4, 3, 2)


@pytest.mark.parametrize(
    "transform",
    [StandardScaler(), MinMaxScaler((-2, 3)), RobustScaler((10, 90)), StandardScaler(per_series=True)],
)
def test_save_load_round_trip(transform: StandardScaler, tmp_path: Path) -> None:
    data = {"s1": X, "s2": X * 3 + 1} if transform.per_series else X
    transform.fit(data)
    loaded = load_transform(transform.save(tmp_path / "scaler.json"))
    assert type(loaded) is type(transform) and loaded == transform
    probe = X[:2] * 1.5
    kw = {"series_id": "s2"} if transform.per_series else {}
    np.testing.assert_array_equal(loaded.transform(probe, **kw), transform.transform(probe, **kw))


def test_nan_stats_cannot_be_saved(tmp_path: Path) -> None:
    sc = StandardScaler()
    sc.stats = {"__all__": (np.array([np.nan]), np.array([1.0]))}
    with pytest.raises(DataError, match="cannot save"):
        sc.save(tmp_path / "x.json")


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(
    data=arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 4)), elements=finite),
    kind=st.sampled_from(["standard", "minmax", "robust"]),
)
def test_scaler_inversion_property(data: np.ndarray, kind: str) -> None:
    sc = {"standard": StandardScaler(), "minmax": MinMaxScaler(), "robust": RobustScaler()}[kind]
    sc.fit(data)
    back = sc.inverse_transform(sc.transform(data))
    np.testing.assert_allclose(back, data, rtol=1e-9, atol=1e-6)
    reloaded = type(sc).from_config(sc.to_config())
    np.testing.assert_allclose(
        reloaded.inverse_transform(reloaded.transform(data)), data, rtol=1e-9, atol=1e-6
    )


@settings(max_examples=100, deadline=None)
@given(
    data=arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 1e4, allow_nan=False)),
    offset=st.floats(0.5, 10),
)
def test_log_inversion_property(data: np.ndarray, offset: float) -> None:
    lt = LogTransform(offset)
    np.testing.assert_allclose(lt.inverse_transform(lt.transform(data)), data, rtol=1e-9, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    data=arrays(np.float64, st.tuples(st.integers(8, 40), st.integers(1, 3)), elements=st.floats(-1e3, 1e3)),
    lag=st.integers(1, 3),
    order=st.integers(1, 2),
)
def test_difference_inversion_property(data: np.ndarray, lag: int, order: int) -> None:
    dt = DifferenceTransform(lag, order)
    d = dt.transform(data)
    assert d.shape[0] == data.shape[0] - lag * order
    h = dt.history_length
    np.testing.assert_allclose(dt.inverse_transform(d, data[:h]), data[h:], atol=1e-6)
    # invert a later segment from its own history (as for a forecast)
    np.testing.assert_allclose(dt.inverse_transform(d[2:], data[2 : 2 + h]), data[2 + h :], atol=1e-6)


def test_log_and_difference_details(tmp_path: Path) -> None:
    lt = LogTransform(1.0)
    assert lt.fit(np.array([0.0, 1.0])) is lt
    torch.testing.assert_close(lt.transform(torch.tensor([0.0])), torch.tensor([0.0]))
    with pytest.raises(DataError, match="log transform needs values > -1"):
        lt.transform(np.array([-2.0]))
    assert load_transform(lt.save(tmp_path / "log.json")) == lt
    dt = DifferenceTransform(lag=12)
    assert load_transform(dt.save(tmp_path / "diff.json")) == dt
    np.testing.assert_array_equal(DifferenceTransform().transform(np.array([1.0, 4.0, 9.0])), [3.0, 5.0])
    with pytest.raises(DataError, match="too short"):
        dt.transform(np.arange(12.0))
    with pytest.raises(DataError, match="history has 1 steps"):
        dt.inverse_transform(np.zeros(3), np.zeros(1))
    with pytest.raises(DataError, match="lag and order"):
        DifferenceTransform(0)
