"""No look-ahead through filled values, for every input a forecaster reads.

With ``data.fill=interpolate`` a missing value inside an evaluated period is interpolated towards
the next observed value of that period, which may lie at or after a window's origin: the value the
window forecasts. The backtest re-fills such inputs from values observed before the origin; these
tests cover what the first fix (targets in the backtest) left out: the past covariates, the
validation windows that select the model during training, and the loss, which leaves filled
targets out. Each check shifts every value from an origin on and asserts the inputs (or forecasts)
of that origin do not move: an independent reference that needs no knowledge of the filling code.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.errors import DataError
from rnnkit.data.timeseries import TimeSeries
from rnnkit.tasks.forecasting import (
    DataConfig,
    EvaluationConfig,
    Pipeline,
    TrainedForecaster,
    _split,
    _Windows,
    refill_before,
    split_breaks,
)
from rnnkit.tasks.forecasting_models import Forecaster

N, LOOKBACK, HORIZON, VAL, TEST = 60, 7, 3, 12, 12  # periods: train [0, 36), val [36, 48), test [48, 60)
runner = CliRunner()


def _write(path: Path, *, missing_sales: tuple[int, ...] = (), missing_price: tuple[int, ...] = (),
           shift_from: int | None = None) -> Path:
    """Daily sales with a past covariate ``price``; empty cells at the given steps; every value of
    both columns from ``shift_from`` on moved by +100 (what a window at that origin must not see)."""
    t = np.arange(N)
    sales = np.round(10 + 3 * np.sin(2 * np.pi * t / 7) + 0.1 * t, 3)
    price = np.round(5 + np.cos(2 * np.pi * t / 5), 3)
    if shift_from is not None:
        sales[shift_from:] += 100.0
        price[shift_from:] += 100.0
    days = np.datetime64("2021-01-01") + t
    rows = [f"{d},{'' if i in missing_sales else sales[i]},{'' if i in missing_price else price[i]}"
            for i, d in enumerate(days)]
    path.write_text("date,sales,price\n" + "\n".join(rows) + "\n")
    return path


def _cfg() -> DataConfig:
    return DataConfig(time_column="date", target=["sales"], past_covariates=["price"], fill="interpolate",
                      calendar=[], lookback=LOOKBACK, horizon=HORIZON, val_size=VAL, test_size=TEST)


def _read(path: Path) -> list[TimeSeries]:
    return list(Pipeline.read_raw(path, _cfg(), split_breaks(None, VAL, TEST)))


def test_reading_records_which_past_covariate_values_were_observed(tmp_path: Path) -> None:
    s = _read(_write(tmp_path / "a.csv", missing_price=(40, 53)))[0]
    assert s.past_observed is not None and s.past_observed.shape == (N, 1)
    assert sorted(np.flatnonzero(~s.past_observed[:, 0]).tolist()) == [40, 53]
    assert s.observed is not None and bool(s.observed.all())
    part = s.slice(50, 55)
    assert part.past_observed is not None and part.past_observed[:, 0].tolist() == [True, True, True, False, True]
    assert TimeSeries.from_arrays(np.zeros(4), past_covariates=np.ones(4)).past_observed is None
    flags = TimeSeries.from_arrays(np.zeros(4), past_covariates=np.ones(4), past_observed=[1, 0, 1, 1]).past_observed
    assert flags is not None and flags[:, 0].tolist() == [True, False, True, True]
    with pytest.raises(DataError, match="past_observed has shape"):
        TimeSeries.from_arrays(np.zeros(4), past_covariates=np.ones((4, 2)), past_observed=[True] * 4)


def test_refill_before_a_window_is_the_same_slice_of_the_whole_refill() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 3))
    observed = rng.random((40, 3)) > 0.3
    for lo, origin, start in ((10, 30, 22), (10, 30, 5), (0, 40, 33), (25, 26, 19)):
        whole = refill_before(values, observed, lo, origin)
        np.testing.assert_array_equal(refill_before(values, observed, lo, origin, start), whole[start:])


def test_backtest_past_covariates_do_not_read_values_at_or_after_the_origin(tmp_path: Path) -> None:
    # price is missing at step 53 of the test period [48, 60): interpolated between 52 and 54, so the window
    # with origin 54 read price[54] through it before the fix.
    before_path = _write(tmp_path / "a.csv", missing_price=(53,))
    after_path = _write(tmp_path / "b.csv", missing_price=(53,), shift_from=54)
    series = _read(before_path)
    pipe = Pipeline.fit(series, _split(series, _cfg()), _cfg())
    torch.manual_seed(0)
    net = Forecaster(n_targets=1, n_past=1, n_future=0, horizon=HORIZON, lookback=LOOKBACK, hidden_size=4)
    model = TrainedForecaster(net, pipe, [0.1, 0.5, 0.9], EvaluationConfig(baselines=["naive"]))
    before = model.backtest(before_path, [f"data.test_size={TEST}"], stride=1)
    after = model.backtest(after_path, [f"data.test_size={TEST}"], stride=1)
    origins = np.array([t0 for _, t0 in before.windows])
    early = origins <= 54
    assert 54 in origins.tolist() and (~early).any()
    np.testing.assert_array_equal(before.point[early], after.point[early])
    assert not np.allclose(before.point[~early], after.point[~early])  # later origins do see the shift
    # the past covariate really feeds the model: without the gap fixed, origin 54 would have moved
    x54 = refill_before(series[0].past_covariates, series[0].past_observed, 48, 54)
    assert x54[53, 0] == pytest.approx(series[0].past_covariates[52, 0])


def test_validation_windows_read_only_values_before_their_origin(tmp_path: Path) -> None:
    # target and price both missing at step 41 of the validation period [36, 48)
    gaps = {"missing_sales": (41,), "missing_price": (41,)}
    datasets = []
    for name, shift in (("a.csv", None), ("b.csv", 42)):
        raw = _read(_write(tmp_path / name, shift_from=shift, **gaps))
        bounds = _split(raw, _cfg())
        pipe = Pipeline.fit(_read(_write(tmp_path / "fit.csv", **gaps)), bounds, _cfg())  # the same scalers
        scaled = [pipe.scale(s, bounds[s.series_id].train[1]) for s in raw]
        datasets.append(_Windows(scaled, [1], "val", bounds, LOOKBACK, HORIZON, 1, known_inputs=(raw, pipe)))
    before, after = datasets
    origins = [t0 for _, t0 in before.items]
    assert 42 in origins
    for i, t0 in enumerate(origins):
        x_before, x_after = before[i][0], after[i][0]
        if t0 <= 42:
            torch.testing.assert_close(x_before, x_after, rtol=0, atol=0)
        else:
            assert not torch.equal(x_before, x_after)
    i42 = origins.index(42)
    raw = _read(_write(tmp_path / "a.csv", **gaps))[0]
    assert before.inputs and i42 in before.inputs  # the window at 42 had its gap filled again
    # the gap at 41 takes the last observed value (40), in the model's units
    x = before[i42][0].double().numpy()
    assert x[-1, 0] == pytest.approx(x[-2, 0]) and x[-1, 1] == pytest.approx(x[-2, 1])
    assert raw.targets[41, 0] != pytest.approx(raw.targets[40, 0])  # while the file read interpolated it


def test_windows_mark_filled_targets_and_the_loss_leaves_them_out(tmp_path: Path) -> None:
    raw = _read(_write(tmp_path / "a.csv", missing_sales=(20, 41)))
    bounds = _split(raw, _cfg())
    pipe = Pipeline.fit(raw, bounds, _cfg())
    scaled = [pipe.scale(s, bounds[s.series_id].train[1]) for s in raw]
    train = _Windows(scaled, [1], "train", bounds, LOOKBACK, HORIZON, 1)
    flagged = [(t0, observed) for (_, t0), (_, _, _, _, observed) in zip(train.items, train)]
    for t0, observed in flagged:
        assert bool(observed.all()) == (not t0 <= 20 < t0 + HORIZON)
    torch.manual_seed(0)
    y = torch.randn(4, HORIZON, 2)
    observed = torch.rand(4, HORIZON, 2) > 0.4
    for likelihood in ("mse", "mae", "quantile", "gaussian", "student_t"):
        net = Forecaster(n_targets=2, n_past=0, n_future=0, horizon=HORIZON, lookback=LOOKBACK, hidden_size=4,
                         likelihood=likelihood)
        params = net(torch.randn(4, LOOKBACK, 2), torch.zeros(4, HORIZON, 0), torch.ones(4, dtype=torch.long))
        # reference: the mean of the per-position losses over the observed positions, one position at a time
        per_position = [net.loss(params[b:b + 1, h:h + 1, t:t + 1], y[b:b + 1, h:h + 1, t:t + 1])
                        for b, h, t in observed.nonzero().tolist()]
        torch.testing.assert_close(net.loss(params, y, observed), torch.stack(per_position).mean())
        torch.testing.assert_close(net.loss(params, y, torch.ones_like(observed)), net.loss(params, y))
        garbage = y.masked_fill(~observed, 1e6)  # a filled value, however far off, changes nothing
        torch.testing.assert_close(net.loss(params, garbage, observed), net.loss(params, y, observed))


def test_training_on_gappy_past_covariates_end_to_end(tmp_path: Path) -> None:
    data = _write(tmp_path / "gappy.csv", missing_sales=(20, 41, 53), missing_price=(10, 41, 53))
    args = ["train", "forecasting", "--train", str(data), "--out", str(tmp_path / "runs"), "--json", "--quiet"]
    for key, value in (("data.time_column", "date"), ("data.target", "sales"), ("data.past_covariates", "price"),
                       ("data.fill", "interpolate"), ("data.lookback", LOOKBACK), ("data.horizon", HORIZON),
                       ("data.val_size", VAL), ("data.test_size", TEST),
                       ("train.epochs", 2), ("model.hidden_size", 4), ("train.accelerator", "cpu"),
                       ("evaluation.baselines", "naive")):
        args += ["--set", f"{key}={value}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["test"]["filled_targets_excluded"] == 1 and metrics["dev"]["filled_targets_excluded"] >= 1
    assert np.isfinite(metrics["test"]["mae"]) and np.isfinite(metrics["dev"]["mae"])
    with open(Path(metrics["run"]) / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert history and all(np.isfinite(float(row["dev_loss"])) for row in history)
