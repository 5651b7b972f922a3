"""Mutation testing, round 16: today's business-day frequency (inference, grid positions, the weekend
and off-grid errors, the holiday hint), ``class_quotas``, Keras' functional ``model.layers`` order,
``check_precision`` and ``restore_dtypes``.

Each test here kills a plausible bug (hourly weekday data taken for business days, one short series
turning a file daily, a time of day ignored on the business-day grid, a depth overwritten by a
shallower reader, a shared layer re-placed at its second call, an integer precision refused, float
buffers left in bfloat16 ...) that the rest of the suite let through. The expected values come from
independent references: pandas' date_range / bdate_range, NumPy's busday functions, Keras 3's own
``model.layers`` (torch backend), Hamilton's largest-remainder method in exact fractions, and the
dtypes torch gave the module before it was converted, never from the code path under test.
"""

from __future__ import annotations

import math
import random
import types
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import rnnkit.layers
import rnnkit.models
from models.keras_reference import keras_module, needs_keras  # tests/ is on sys.path (rootdir conftest)
from rnnkit.data import DataError, read_timeseries


def _business_days(start: str, stop: str) -> np.ndarray:
    days = np.arange(start, stop, dtype="datetime64[D]")
    return days[np.is_busday(days)]


# -- business days -------------------------------------------------------------------------------
def test_hourly_weekday_data_is_hourly_with_weekend_gaps_not_business_daily(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    hours = pd.date_range("2024-01-01", "2024-01-13", freq="h", inclusive="left")  # Monday 1st to Friday 12th
    hours = hours[hours.day_of_week < 5]  # every hour of the weekdays: a weekend lies between, yet steps are hours
    path = tmp_path / "hourly.csv"
    path.write_text("time,v\n" + "".join(f"{t.isoformat()},{i}\n" for i, t in enumerate(hours)))
    s = read_timeseries(path, "time", "v", fill="ffill").only()
    assert s.freq == "1h"
    np.testing.assert_array_equal(s.time, pd.date_range(hours[0], hours[-1], freq="h").to_numpy().astype("datetime64[s]"))


def test_business_days_are_inferred_when_any_series_of_a_file_spans_a_weekend(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    long = _business_days("2024-01-01", "2024-02-01")
    short = np.arange("2024-02-05", "2024-02-08", dtype="datetime64[D]")  # Monday to Wednesday: no weekend
    path = tmp_path / "two.csv"
    path.write_text("id,date,price\n" + "".join(f"a,{d},{i}\n" for i, d in enumerate(long))
                    + "".join(f"b,{d},{i}\n" for i, d in enumerate(short)))
    ds = read_timeseries(path, "date", "price", series_id_column="id")
    assert [s.freq for s in ds] == ["1B", "1B"]
    np.testing.assert_array_equal(ds["a"].time, pd.bdate_range("2024-01-01", "2024-01-31").to_numpy().astype("datetime64[s]"))


def test_weekend_error_counts_the_weekend_rows_only_when_there_are_several(tmp_path: Path) -> None:
    days = _business_days("2024-01-01", "2024-01-20")
    one = np.sort(np.append(days, np.datetime64("2024-01-14")))  # a Sunday
    path = tmp_path / "one.csv"
    path.write_text("date,price\n" + "".join(f"{d},1\n" for d in one))
    with pytest.raises(DataError) as err:
        read_timeseries(path, "date", "price", freq="B")
    assert "2024-01-14T00:00:00 is a Sunday" in str(err.value) and "fall on weekends" not in str(err.value)
    two = np.sort(np.append(one, np.datetime64("2024-01-06")))  # and a Saturday, earlier
    path.write_text("date,price\n" + "".join(f"{d},1\n" for d in two))
    with pytest.raises(DataError) as err:
        read_timeseries(path, "date", "price", freq="B")
    assert f"{path}:{2 + int(np.flatnonzero(two == np.datetime64('2024-01-06'))[0])}: " in str(err.value)
    assert "2024-01-06T00:00:00 is a Saturday" in str(err.value) and "; 2 timestamps fall on weekends" in str(err.value)


def test_a_business_day_at_another_time_of_day_is_off_the_grid(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    grid = pd.bdate_range("2024-01-01 16:00", periods=15, normalize=False)
    stamps = [str(t) for t in grid]
    stamps[6] = str(grid[6] - pd.Timedelta(hours=1))  # 15:00 on a business day: not a time of the 16:00 grid
    assert pd.Timestamp(stamps[6]) not in grid
    path = tmp_path / "t.csv"
    path.write_text("date,price\n" + "".join(f"{t},1\n" for t in stamps))
    with pytest.raises(DataError, match=f"t.csv:8: timestamp {grid[6].date()}T15:00:00 is off the regular 1B grid"):
        read_timeseries(path, "date", "price", freq="B")
def test_holiday_gap_hint_offers_fills_but_not_regular_false(tmp_path: Path) -> None:
    days = _business_days("2024-01-01", "2024-02-10")
    days = days[days != np.datetime64("2024-01-15")]  # a Monday holiday
    path = tmp_path / "h.csv"
    path.write_text("date,price\n" + "".join(f"{d},1\n" for d in days))
    with pytest.raises(DataError) as err:
        read_timeseries(path, "date", "price")
    message = str(err.value)
    # regular=False would drop the business-day grid (and the frequency) the holidays sit on
    assert "holidays?" in message and "fill='ffill' or 'interpolate'" in message and "regular" not in message



# -- class_quotas ------------------------------------------------------------------------------
def _largest_remainders(sizes: list[int], total: int, ties: list[int]) -> list[int]:
    """Hamilton's largest-remainder method in exact fractions, a class capped at ``size - 1``: floors first,
    then one more each by decreasing remainder (ties by ``ties``), skipping a class at its cap, in
    rounds until ``total`` or every cap is reached."""
    n = sum(sizes)
    shares = [Fraction(size * total, n) for size in sizes]
    quotas = [min(math.floor(share), max(size - 1, 0)) for share, size in zip(shares, sizes)]
    ranked = sorted(range(len(sizes)), key=lambda c: (-(shares[c] - quotas[c]), ties[c]))
    while sum(quotas) < total and any(quotas[c] < max(sizes[c] - 1, 0) for c in ranked):  # rounds, as needed
        for c in ranked:
            if sum(quotas) < total and quotas[c] < max(sizes[c] - 1, 0):
                quotas[c] += 1
    return quotas


def test_class_quotas_equal_a_plain_largest_remainder_allocation() -> None:
    from rnnkit.data.splits import class_quotas

    assert class_quotas([0, 4, 6], 3, [0, 1, 2]) == [0, 1, 2]  # shares 0, 1.2, 1.8
    rng = random.Random(16)
    checked = 0
    while checked < 400:
        sizes = [rng.randint(0 if k else 1, 12) for k in range(rng.randint(1, 5))]  # an empty class gives none
        if rng.random() < 0.5:  # equal classes: equal remainders, ordered by the tie values
            sizes = sizes[:1] * len(sizes)
        total = rng.randint(1, sum(sizes))
        n = sum(sizes)
        remainders = {size: Fraction(size * total, n) % 1 for size in set(sizes)}
        if len(set(remainders.values())) < len(remainders):
            continue  # classes of different sizes with equal remainders: their float remainders may differ
        ties = rng.sample(range(10), len(sizes))
        assert class_quotas(sizes, total, ties) == _largest_remainders(sizes, total, ties), (sizes, total, ties)
        checked += 1


# -- Keras' model.layers order ---------------------------------------------------------------
_rk = types.SimpleNamespace(layers=rnnkit.layers, Input=rnnkit.layers.Input, Model=rnnkit.models.Model)


def _order_graphs(keras: Any) -> dict[str, Any]:
    layers, out = keras.layers, {}
    # ``a`` feeds a shallow reader (s) and a deep one (d1): its depth is the deeper path's, also when the
    # shallow reader comes later in the walk (z0 shares the depth a would wrongly get, and is met first)
    i = keras.Input(shape=(4,), name="i")
    z = layers.Dense(2, name="z2")(layers.Dense(4, name="z1")(layers.Dense(4, name="z0")(i)))
    a = layers.Dense(4, name="a")(i)
    s = layers.Dense(2, name="s")(a)
    d2 = layers.Dense(2, name="d2")(layers.Dense(4, name="d1")(a))
    out["late_shallow_reader"] = keras.Model(i, [z, layers.Concatenate(name="cat")([s, d2])])
    # a shared layer called shallow (r) and deep (q): its depth is its deepest call's, ahead of x0 met first;
    # it keeps its place of first meeting, ahead of y0 at its depth
    j = keras.Input(shape=(4,), name="j")
    shared = layers.Dense(4, name="shared")
    x = layers.Dense(2, name="x1")(layers.Dense(4, name="x0")(j))
    r = layers.Dense(2, name="r")(shared(j))
    y = layers.Dense(2, name="y2")(layers.Dense(4, name="y1")(layers.Dense(4, name="y0")(j)))  # ties shared, met later
    q2 = layers.Dense(2, name="q2")(layers.Dense(4, name="q")(shared(layers.Dense(4, name="p")(j))))
    out["shared_called_shallow_and_deep"] = keras.Model(j, [x, r, y, q2])
    return out


@needs_keras
@pytest.mark.parametrize("graph", ["late_shallow_reader", "shared_called_shallow_and_deep"])
def test_functional_layer_order_matches_keras_when_depths_must_be_maxed(graph: str) -> None:
    keras = keras_module()
    kmodel, model = _order_graphs(keras)[graph], _order_graphs(_rk)[graph]
    assert [layer.name for layer in model.layers] == [layer.name for layer in kmodel.layers]
    model.set_weights(kmodel.get_weights())
    x = np.random.default_rng(2).random((2, 4)).astype("float32")
    ours, theirs = model.predict(x, verbose=0), kmodel.predict(x, verbose=0)
    for o, t in zip(ours if isinstance(ours, list) else [ours], theirs if isinstance(theirs, list) else [theirs]):
        np.testing.assert_allclose(np.asarray(o), np.asarray(t), atol=1e-5)


# -- precision names and dtypes -------------------------------------------------------------
def test_check_precision_takes_lightnings_integer_and_spaced_spellings() -> None:
    from rnnkit.tasks.config import ConfigError, check_precision

    # Lightning's Trainer(precision=16 / 64 / 32) and YAML's unquoted 16 are integers; a CLI value may carry spaces
    assert [check_precision(v) for v in (16, 32, 64)] == ["16-mixed", "32-true", "64-true"]
    assert check_precision(" bf16 ") == "bf16-mixed" and check_precision(" 16-true\n") == "16-true"
    for bad in (True, 16.0, "fp16"):
        with pytest.raises(ConfigError, match="train.precision"):
            check_precision(bad)


def test_restore_dtypes_puts_back_float_buffers_and_keeps_integer_ones() -> None:
    from torch import nn

    from rnnkit.training.dtypes import floating_dtypes, restore_dtypes

    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    before = {k: v.dtype for k, v in model.state_dict().items()}
    record = floating_dtypes(model)
    model.to(dtype=torch.bfloat16)  # what Lightning's bf16-true does
    assert model[1].running_mean.dtype == torch.bfloat16 and model[1].num_batches_tracked.dtype == torch.long
    restore_dtypes(model, record)
    assert {k: v.dtype for k, v in model.state_dict().items()} == before
