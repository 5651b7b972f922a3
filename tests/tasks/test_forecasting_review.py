"""Review of time-series forecasting as a user with a real sales / sensor CSV meets it: timestamps
off whole units (hourly at :30, daily at 09:00), compact YYYYMMDD dates and step-count time
columns, MASE against forecasts that are not finite, fill errors naming the column, and a file
whose sampling step is not the model's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.errors import DataError
from rnnkit.data.timeseries import TimeSeries, fill_missing, read_timeseries
from rnnkit.metrics import forecasting as fm
from rnnkit.tasks.forecasting import (
    DataConfig,
    EvaluationConfig,
    Pipeline,
    TrainedForecaster,
    _split,
    future_times,
    refill_before,
)
from rnnkit.tasks.forecasting_models import Forecaster

runner = CliRunner()
TINY = ["--set", "train.epochs=1", "--set", "model.hidden_size=4", "--set", "train.accelerator=cpu",
        "--set", "evaluation.baselines=naive,seasonal_naive,drift", "--quiet", "--json"]


def _train(tmp_path: Path, data: Path, *settings: str) -> Path:
    args = ["train", "forecasting", "--train", str(data), *[a for s in settings for a in ("--set", s)], *TINY,
            "--out", str(tmp_path / "runs")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.output)["run"])


def _hourly_at_half_past(path: Path, n: int = 120, skip: tuple[int, ...] = ()) -> Path:
    t = np.arange(n)
    times = np.datetime64("2021-03-01T00:30") + t * np.timedelta64(1, "h")
    y = 20 + 5 * np.sin(2 * np.pi * t / 24)
    rows = [f"{d},{v:.3f},{i % 3 == 0:d}" for i, (d, v) in enumerate(zip(times, y)) if i not in skip]
    path.write_text("time,load,promo\n" + "\n".join(rows) + "\n")
    return path


# -- timestamps off whole units --------------------------------------------------------------------
def test_forecast_times_keep_the_minutes_of_the_series():
    # future_times cut the last timestamp to the unit of the step: hourly data at :30 was forecast
    # at :00, daily data at 09:00 at midnight, one step off the file's own grid.
    hourly = TimeSeries.from_arrays(np.zeros(3), time=np.array(
        ["2021-03-01T00:30", "2021-03-01T01:30", "2021-03-01T02:30"], dtype="datetime64[s]"))
    hourly.freq = "1h"
    assert [str(t) for t in future_times(hourly, 2)] == ["2021-03-01T03:30:00", "2021-03-01T04:30:00"]
    daily = TimeSeries.from_arrays(np.zeros(2), time=np.array(["2021-03-01T09:00", "2021-03-02T09:00"],
                                                               dtype="datetime64[s]"))
    daily.freq = "1D"
    assert [str(t) for t in future_times(daily, 2)] == ["2021-03-03T09:00:00", "2021-03-04T09:00:00"]
    month = TimeSeries.from_arrays(np.zeros(2), time=np.array(["2021-01", "2021-02"], dtype="datetime64[M]")
                                   .astype("datetime64[s]"))
    month.freq = "1M"  # calendar steps are unchanged
    assert [str(t)[:10] for t in future_times(month, 2)] == ["2021-03-01", "2021-04-01"]


def test_predict_with_future_covariates_at_half_past_the_hour(tmp_path: Path):
    # The future-covariates file holds the 6 steps after the history (at :30); predict refused it as
    # "missing at 2021-03-06 00:00:00", the step it had wrongly computed.
    data = _hourly_at_half_past(tmp_path / "load.csv")
    run = _train(tmp_path, data, "data.time_column=time", "data.target=load", "data.future_covariates=promo",
                 "data.lookback=24", "data.horizon=6")
    last = np.datetime64("2021-03-01T00:30") + 119 * np.timedelta64(1, "h")
    wanted = [last + k * np.timedelta64(1, "h") for k in range(1, 7)]
    future = tmp_path / "future.csv"
    future.write_text("time,promo\n" + "".join(f"{t},{k % 2}\n" for k, t in enumerate(wanted)))
    result = runner.invoke(app, ["predict", str(run), str(data), str(future), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [r["time"] for r in rows] == [str(t).replace("T", " ") + ":00" for t in wanted]


def test_an_explicit_step_accepts_a_grid_that_starts_off_the_whole_unit(tmp_path: Path):
    # The file's step is inferred as 1h, yet freq="1h" refused it ("00:30 is not on a 1h grid"), and a
    # gap filled on such a grid would have been dated at whole hours.
    data = _hourly_at_half_past(tmp_path / "load.csv", n=30, skip=(10, 11))
    inferred = read_timeseries(data, "time", "load", fill="interpolate").only()
    explicit = read_timeseries(data, "time", "load", fill="interpolate", freq="1h").only()
    assert inferred.freq == explicit.freq == "1h"
    np.testing.assert_array_equal(inferred.time, explicit.time)
    assert str(explicit.time[10]) == "2021-03-01T10:30:00" and len(explicit) == 30
    np.testing.assert_array_equal(explicit.observed[9:13, 0], [True, False, False, True])
    with pytest.raises(DataError, match="not on a 2h grid"):  # a step that does not fit is still refused
        read_timeseries(data, "time", "load", fill="interpolate", freq="2h")


# -- whole-number time columns ---------------------------------------------------------------------
def test_yyyymmdd_dates_are_dates_not_years(tmp_path: Path):
    # numpy read 20210131 as the year 20,210,131: a daily file crossing a month end had a "gap of 69
    # missing 1Y steps" (or, with data.fill, 69 invented values per month).
    days = np.datetime64("2021-01-20") + np.arange(30)
    data = tmp_path / "sales.csv"
    data.write_text("day,sales\n" + "".join(f"{str(d).replace('-', '')},{i}\n" for i, d in enumerate(days)))
    s = read_timeseries(data, "day", "sales").only()
    assert s.freq == "1D" and len(s) == 30
    np.testing.assert_array_equal(s.time, days.astype("datetime64[s]"))
    bad = tmp_path / "bad.csv"
    bad.write_text("day,sales\n20210130,1\n20210131,2\n20210132,3\n")
    with pytest.raises(DataError, match=r"bad\.csv:4: cannot parse '20210132' .* YYYYMMDD"):
        read_timeseries(bad, "day", "sales")


def test_a_column_of_step_numbers_is_steps_and_four_digits_are_years(tmp_path: Path):
    # 0, 1, 2, ... were read as the years 0000, 0001, ...: forecasts were dated "0120-01-01".
    steps = tmp_path / "steps.csv"
    steps.write_text("t,y\n" + "".join(f"{i},{i % 5}\n" for i in range(40)))
    s = read_timeseries(steps, "t", "y").only()
    assert s.time.dtype.kind == "i" and s.time[-1] == 39 and s.freq == "1"
    assert future_times(s, 2).tolist() == [40, 41]
    years = tmp_path / "years.csv"
    years.write_text("YEAR,y\n" + "".join(f"{1700 + i},{i}\n" for i in range(5)))
    y = read_timeseries(years, "YEAR", "y").only()
    assert str(y.time[0])[:4] == "1700" and y.freq == "1Y"


def test_predict_dates_forecasts_of_a_step_numbered_file_by_step(tmp_path: Path):
    data = tmp_path / "steps.csv"
    t = np.arange(80)
    data.write_text("t,y\n" + "".join(f"{i},{10 + np.sin(i / 3):.3f}\n" for i in t))
    run = _train(tmp_path, data, "data.time_column=t", "data.target=y", "data.lookback=8", "data.horizon=4")
    rows = TrainedForecaster.load(run).forecast(data)
    assert [r["time"] for r in rows] == ["80", "81", "82", "83"]


# -- metrics ---------------------------------------------------------------------------------------
def test_mase_does_not_drop_forecasts_that_are_not_finite():
    # mase() kept only finite |y - pred| / scale: a NaN or infinite forecast vanished from the mean, so
    # MASE looked fine (and the verdict, which prefers MASE, could say "beats") where MAE was inf.
    y = np.array([1.0, 2.0, 3.0])
    assert fm.mase(y, [1.0, 2.0, 5.0], 2.0) == pytest.approx(2 / 3 / 2)
    assert math.isinf(fm.mase(y, [1.0, 2.0, np.inf], 2.0))
    assert math.isnan(fm.mase(y, [1.0, np.nan, 3.0], 2.0))
    # an undefined scale (a constant history) still leaves its series out, as documented
    scale = np.array([[[2.0]], [[np.nan]]])
    ys, ps = np.array([[[1.0]], [[5.0]]]), np.array([[[3.0]], [[0.0]]])
    assert fm.mase(ys, ps, scale) == pytest.approx(1.0)
    assert math.isnan(fm.mase(y, y, np.nan))


def test_mase_matches_a_hand_computation_with_the_seasonal_in_sample_scale(tmp_path: Path):
    n, season = 70, 7
    t = np.arange(n)
    y = np.round(30 + 4 * np.sin(2 * np.pi * t / season) + 0.3 * t, 3)
    data = tmp_path / "d.csv"
    data.write_text("date,sales\n" + "".join(f"{np.datetime64('2022-01-01') + i},{v}\n" for i, v in enumerate(y)))
    cfg = DataConfig(time_column="date", target=["sales"], calendar=[], lookback=14, horizon=7, val_size=7,
                     test_size=14)
    series = list(Pipeline.read_raw(data, cfg))
    pipe = Pipeline.fit(series, _split(series, cfg), cfg)
    torch.manual_seed(0)
    net = Forecaster(n_targets=1, n_past=0, n_future=0, horizon=7, lookback=14, hidden_size=4)
    model = TrainedForecaster(net, pipe, [0.1, 0.5, 0.9], EvaluationConfig(baselines=["seasonal_naive"]))
    bt = model.backtest(data, ["data.test_size=14"])
    m = model.evaluate(data, ["data.test_size=14"])
    history = y[:n - 14]  # evaluate: the part of the file before the test period
    scale = np.mean(np.abs(history[season:] - history[:-season]))
    origins = [56, 63]
    actual = np.concatenate([y[o:o + 7] for o in origins])
    snaive = np.concatenate([y[o - 7:o] for o in origins])
    assert [o for _, o in bt.windows] == origins
    assert m["seasonal_naive_mae"] == pytest.approx(np.mean(np.abs(actual - snaive)))
    assert m["seasonal_naive_mase"] == pytest.approx(np.mean(np.abs(actual - snaive)) / scale)
    point = bt.point[:, :, 0].reshape(-1)
    assert m["mase"] == pytest.approx(np.mean(np.abs(actual - point)) / scale)


# -- fill errors -----------------------------------------------------------------------------------
def test_fill_errors_name_the_column_not_its_position(tmp_path: Path):
    # "cannot forward-fill column 1" pointed at the file's second column (store), not at 'temp'.
    data = tmp_path / "cov.csv"
    data.write_text("date,store,sales,temp\n" + "".join(
        f"2020-01-{i + 1:02d},A,{i},{'' if i < 3 else i}\n" for i in range(20)))
    with pytest.raises(DataError, match=r"cov\.csv:2: cannot forward-fill column 'temp'"):
        read_timeseries(data, "date", "sales", past_covariates=["temp"], fill="ffill")
    empty = tmp_path / "empty.csv"
    empty.write_text("date,store,sales,temp\n" + "".join(f"2020-01-{i + 1:02d},A,{i},\n" for i in range(20)))
    with pytest.raises(DataError, match="column 'temp' has no value to interpolate from"):
        read_timeseries(empty, "date", "sales", past_covariates=["temp"], fill="interpolate")
    with pytest.raises(DataError, match=r"column 1 has no value"):  # arrays without names: positions
        fill_missing(np.array([[1.0, np.nan], [2.0, np.nan]]), "interpolate")


# -- a file sampled at another step than the model's ------------------------------------------------
def test_predict_and_evaluate_refuse_a_file_with_another_step(tmp_path: Path):
    # A daily model forecast a weekly file as if it were daily (dated daily), with no word.
    days = np.datetime64("2022-01-03") + np.arange(70)
    y = 10 + 2 * np.sin(2 * np.pi * np.arange(70) / 7)
    data = tmp_path / "daily.csv"
    data.write_text("date,sales\n" + "".join(f"{d},{v:.3f}\n" for d, v in zip(days, y)))
    run = _train(tmp_path, data, "data.time_column=date", "data.target=sales", "data.lookback=14",
                 "data.horizon=7")
    weekly = tmp_path / "weekly.csv"
    weekly.write_text("date,sales\n" + "".join(f"{d},{v:.3f}\n" for d, v in zip(days[::7], y[::7])))
    model = TrainedForecaster.load(run)
    with pytest.raises(DataError, match=r"weekly\.csv: series '0' steps by 7D, but the model was trained on .* 1D"):
        model.forecast(weekly)
    with pytest.raises(DataError, match="steps by 7D"):
        model.evaluate(weekly)
    result = runner.invoke(app, ["predict", str(run), str(weekly), "--json"])
    assert result.exit_code != 0 and "steps by 7D" in result.output and "data.freq=1D" in result.output
    assert len(model.forecast(data)) == 7  # the training file itself is fine


def test_a_series_or_period_too_short_is_an_error_naming_the_file(tmp_path: Path):
    # docs/forecasting.md: "a series shorter than lookback + horizon and a period shorter than the
    # horizon each stop with a one-line error naming the file"; they named no file.
    short = tmp_path / "short.csv"
    short.write_text("date,sales\n" + "".join(f"2020-01-{d:02d},{d}\n" for d in range(1, 21)))
    for extra, message in ((["data.lookback=30"], "has 20 steps, fewer than lookback + horizon"),
                           (["data.lookback=2", "data.horizon=5"], "the val period has 2 steps, fewer than the horizon")):
        result = runner.invoke(app, ["train", "forecasting", "--train", str(short), "--set", "data.time_column=date",
                                     "--set", "data.target=sales", *[a for e in extra for a in ("--set", e)],
                                     "--quiet", "--out", str(tmp_path / "runs")])
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1, result.output
        assert errors[0].startswith(f"error: {short}: series '0'") and message in errors[0], errors[0]


# -- no look-ahead through interpolated inputs -----------------------------------------------------
def _gappy(path: Path, shift_from: int | None = None) -> Path:
    n = 60
    days = np.datetime64("2021-01-01") + np.arange(n)
    y = np.round(10 + 3 * np.sin(2 * np.pi * np.arange(n) / 7) + 0.1 * np.arange(n), 3)
    if shift_from is not None:
        y[shift_from:] += 100.0
    path.write_text("date,sales\n" + "".join(f"{d},{v}\n" for i, (d, v) in enumerate(zip(days, y)) if i != 53))
    return path


def test_interpolated_inputs_do_not_read_values_at_or_after_the_origin(tmp_path: Path):
    # With data.fill=interpolate, the missing value at step 53 of the test period [48, 60) was
    # interpolated between steps 52 and 54, and the window forecasting from origin 54 read it as an
    # input (the model's and the naive baseline's "last value"): the value it forecasts leaked in.
    cfg = DataConfig(time_column="date", target=["sales"], fill="interpolate", calendar=[], lookback=7, horizon=3,
                     val_size=6, test_size=12)
    data = _gappy(tmp_path / "a.csv")
    series = list(Pipeline.read_raw(data, cfg))
    pipe = Pipeline.fit(series, _split(series, cfg), cfg)
    torch.manual_seed(0)
    net = Forecaster(n_targets=1, n_past=0, n_future=0, horizon=3, lookback=7, hidden_size=4)
    model = TrainedForecaster(net, pipe, [0.1, 0.5, 0.9], EvaluationConfig(baselines=["naive", "seasonal_naive"]))
    before = model.backtest(data, ["data.test_size=12"], stride=1)
    after = model.backtest(_gappy(tmp_path / "b.csv", shift_from=54), ["data.test_size=12"], stride=1)
    origins = np.array([t0 for _, t0 in before.windows])
    early = origins <= 54
    assert 54 in origins.tolist() and (~early).any()
    np.testing.assert_array_equal(before.point[early], after.point[early])
    for name in before.baselines:
        np.testing.assert_array_equal(before.baselines[name][early], after.baselines[name][early])
    k = origins.tolist().index(54)
    y52 = series[0].targets[52, 0]
    assert before.baselines["naive"][k, 0, 0] == pytest.approx(y52)  # the last value known at 54
    # a later origin reads the value interpolated between its observed neighbours, as before
    s = series[0]
    later = refill_before(s.targets, s.observed, 48, 56)
    assert later[53, 0] == pytest.approx((s.targets[52, 0] + s.targets[54, 0]) / 2)
    np.testing.assert_array_equal(refill_before(s.targets, s.observed, 48, 54)[:53], s.targets[:53])
    assert refill_before(s.targets, s.observed, 48, 54)[53, 0] == y52
