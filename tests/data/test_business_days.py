"""Business-day frequency ('B', Monday to Friday): inferred from daily timestamps that never fall on a
weekend, or given as freq='B' / 'nB'; positions, filled holidays and forecast dates checked against
NumPy's business-day functions and pandas' bdate_range / infer_freq; forecasting end to end."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data import DataError, parse_freq, read_timeseries
from rnnkit.data.timeseries import TimeSeries
from rnnkit.tasks.forecasting import TrainedForecaster, future_times, infer_period, resolve_calendar

runner = CliRunner()


def _write(path: Path, days: np.ndarray, values: np.ndarray | None = None, time: str = "") -> Path:
    values = np.arange(len(days), dtype=float) if values is None else values
    path.write_text("date,price\n" + "".join(f"{d}{time},{v:.4f}\n" for d, v in zip(days, values)))
    return path


def _business_days(start: str, stop: str) -> np.ndarray:
    days = np.arange(start, stop, dtype="datetime64[D]")
    return days[np.is_busday(days)]


def _pandas_freq(pd: Any, days: np.ndarray) -> str:
    """pandas' inferred frequency as a string (pandas 3 warns that it will return an offset object)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        freq = pd.infer_freq(pd.DatetimeIndex(days))
    return str(getattr(freq, "freqstr", freq))


def test_parse_freq_reads_business_days():
    assert parse_freq("B") == (1, "B") and parse_freq("1B") == (1, "B") and parse_freq("3B") == (3, "B")
    with pytest.raises(DataError, match="'B' \\(business day\\)"):
        parse_freq("0B")


def test_weekday_only_daily_data_is_inferred_business_daily_as_pandas_does(tmp_path):
    pd = pytest.importorskip("pandas")
    days = _business_days("2024-01-01", "2024-03-01")
    s = read_timeseries(_write(tmp_path / "b.csv", days), "date", "price").only()
    assert s.freq == "1B" and _pandas_freq(pd, days) == "B"
    np.testing.assert_array_equal(s.time, pd.bdate_range("2024-01-01", "2024-02-29").to_numpy().astype("datetime64[s]"))
    # Monday to Wednesday spans no weekend: no evidence of business days, daily as for pandas
    short = np.arange("2024-01-01", "2024-01-04", dtype="datetime64[D]")
    assert read_timeseries(_write(tmp_path / "s.csv", short), "date", "price").only().freq == "1D"
    assert _pandas_freq(pd, short) == "D"
    # every day of the week: daily, as before
    full = np.arange("2024-01-01", "2024-03-01", dtype="datetime64[D]")
    assert read_timeseries(_write(tmp_path / "d.csv", full), "date", "price").only().freq == "1D"


def test_holidays_are_gaps_on_the_business_day_grid_filled_as_pandas_reindexes(tmp_path):
    pd = pytest.importorskip("pandas")
    grid = _business_days("2024-01-01", "2024-04-10")
    holidays = np.array(["2024-01-15", "2024-02-19", "2024-03-28", "2024-03-29"], dtype="datetime64[D]")
    days = grid[~np.isin(grid, holidays)]
    values = np.round(100 + np.cumsum(np.random.default_rng(0).normal(0, 1, len(days))), 4)  # as written
    path = _write(tmp_path / "h.csv", days, values)
    with pytest.raises(DataError) as err:
        read_timeseries(path, "date", "price")
    message = str(err.value)
    line = 1 + 1 + int(np.flatnonzero(days > holidays[0])[0])  # header, then the first row after the gap
    assert f"h.csv:{line}: gap of 1 missing 1B steps between 2024-01-12T00:00:00 and 2024-01-16T00:00:00" in message
    assert "(3 gaps in all)" in message and "weekdays" in message and "holidays?" in message
    assert "fill='ffill' or 'interpolate'" in message and len(message.splitlines()) == 1
    ds = read_timeseries(path, "date", "price", fill="ffill")
    s, report = ds.only(), ds.reports["0"]
    index = pd.bdate_range(days[0], days[-1])
    reference = pd.Series(values, index=pd.DatetimeIndex(days)).reindex(index).ffill()
    np.testing.assert_array_equal(s.time, index.to_numpy().astype("datetime64[s]"))
    np.testing.assert_allclose(s.targets[:, 0], reference.to_numpy())
    assert (report.num_gaps, report.num_missing_steps) == (3, 4)
    np.testing.assert_array_equal(s.observed[:, 0], index.isin(pd.DatetimeIndex(days)))
    interpolated = read_timeseries(path, "date", "price", fill="interpolate").only()
    np.testing.assert_allclose(interpolated.targets[:, 0], reference.where(s.observed[:, 0]).interpolate().to_numpy())


def test_a_weekend_timestamp_under_freq_b_is_an_error_naming_its_line(tmp_path):
    days = np.sort(np.concatenate([_business_days("2024-01-01", "2024-01-20"), [np.datetime64("2024-01-13")]]))
    path = _write(tmp_path / "w.csv", days)
    with pytest.raises(DataError) as err:
        read_timeseries(path, "date", "price", freq="B")
    message = str(err.value)
    assert message.startswith(f"{path}:{2 + int(np.flatnonzero(days == np.datetime64('2024-01-13'))[0])}: ")
    assert "2024-01-13T00:00:00 is a Saturday, not a business day" in message and "freq='D'" in message
    assert len(message.splitlines()) == 1
    # not inferred as business days (a Saturday is there): daily, with the gap error's weekend hint
    with pytest.raises(DataError, match="mostly weekends.*freq='B'"):
        read_timeseries(path, "date", "price")


def test_multi_step_business_frequency_matches_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    index = pd.bdate_range("2024-01-02", periods=30, freq="2B")
    days = index.to_numpy().astype("datetime64[D]")
    s = read_timeseries(_write(tmp_path / "b2.csv", days), "date", "price", freq="2B").only()
    assert s.freq == "2B" and len(s) == 30
    gapped = read_timeseries(_write(tmp_path / "g.csv", np.delete(days, [4, 5])), "date", "price", freq="2B",
                             fill="ffill").only()
    np.testing.assert_array_equal(gapped.time, index.to_numpy().astype("datetime64[s]"))
    ahead = future_times(s, 4)
    expected = pd.bdate_range(index[-1], periods=5, freq="2B")[1:].to_numpy().astype("datetime64[s]")
    np.testing.assert_array_equal(ahead, expected)
    off = np.sort(np.append(days, np.busday_offset(days[3], 1)))  # a business day between two grid days
    with pytest.raises(DataError, match="off the regular 2B grid"):
        read_timeseries(_write(tmp_path / "o.csv", off), "date", "price", freq="2B")


def test_forecast_dates_are_the_next_business_days_at_the_same_time_of_day():
    pd = pytest.importorskip("pandas")
    index = pd.bdate_range("2024-03-04 09:30", "2024-03-15 09:30", normalize=False)  # ends on a Friday
    s = TimeSeries.from_arrays(np.arange(len(index), dtype=float), time=index.to_numpy().astype("datetime64[s]"))
    s.freq = "1B"
    ahead = future_times(s, 7)
    expected = pd.bdate_range("2024-03-15 09:30", periods=8, normalize=False)[1:].to_numpy().astype("datetime64[s]")
    np.testing.assert_array_equal(ahead, expected)
    assert str(ahead[0]) == "2024-03-18T09:30:00"  # Friday -> Monday
    days = ahead.astype("datetime64[D]")
    np.testing.assert_array_equal(days, np.busday_offset(np.datetime64("2024-03-15"), np.arange(1, 8)))


def test_business_daily_data_at_a_fixed_time_keeps_its_time_of_day(tmp_path):
    days = _business_days("2024-01-01", "2024-02-01")
    s = read_timeseries(_write(tmp_path / "t.csv", np.delete(days, 7), time=" 16:00:00"), "date", "price",
                        fill="interpolate").only()
    assert s.freq == "1B"
    np.testing.assert_array_equal(s.time, days.astype("datetime64[s]") + np.timedelta64(16 * 3600, "s"))


def test_season_and_calendar_features_of_business_days():
    assert infer_period("1B") == 5 and infer_period("5B") == 52 and infer_period("2B") == 1
    days = _business_days("2024-01-01", "2024-02-01")
    s = TimeSeries.from_arrays(np.zeros(len(days)), time=days.astype("datetime64[s]"))
    s.freq = "1B"
    assert resolve_calendar(["auto"], s) == ["weekday", "month"]
    s.freq = "5B"  # always the same weekday
    assert resolve_calendar(["auto"], s) == ["month"]


def _stock(path: Path, days: np.ndarray, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(len(days))
    weekday = np.busday_count(days[0], days) % 5  # no time index: a weekly pattern over business days only
    price = 50 + 0.02 * t + np.array([0.0, 0.4, 0.8, 0.4, -0.2])[weekday] + rng.normal(0, 0.05, len(days))
    return _write(path, days, price)


def test_train_evaluate_predict_on_business_days(tmp_path):
    pd = pytest.importorskip("pandas")
    grid = _business_days("2022-01-03", "2022-12-31")
    holidays = np.array(["2022-04-15", "2022-07-04", "2022-09-05"], dtype="datetime64[D]")
    data = _stock(tmp_path / "stock.csv", grid[~np.isin(grid, holidays)])
    base = ["train", "forecasting", "--train", str(data), "--set", "data.time_column=date", "--set", "data.target=price",
            "--set", "data.lookback=20", "--set", "data.horizon=5", "--set", "data.test_size=40", "--set",
            "train.epochs=2", "--set", "model.hidden_size=8", "--set", "train.accelerator=cpu", "--out",
            str(tmp_path / "runs")]
    refused = runner.invoke(app, [*base, "--quiet"])
    assert refused.exit_code == 2 and "holidays?" in refused.output
    assert "add --set data.fill=ffill (or interpolate)" in refused.output
    result = runner.invoke(app, [*base, "--set", "data.fill=ffill", "--json"])
    assert result.exit_code == 0, result.output
    run = Path(json.loads(result.output)["run"])
    saved = json.loads((run / "forecasting.json").read_text())
    assert saved["freq"] == "1B" and saved["period"] == 5 and saved["calendar"] == ["weekday", "month"]
    assert "(1B)" in (run / "train.log").read_text()
    ev = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "--set", "data.fill=ffill", "--json"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.output)["windows"] > 0
    pred = runner.invoke(app, ["predict", str(run), str(data), "--json"])  # data.fill=ffill is kept with the run
    assert pred.exit_code == 0, pred.output
    times = [json.loads(line)["time"] for line in pred.output.splitlines()]
    assert times == [str(d.date()) for d in pd.bdate_range("2022-12-30", periods=6)[1:]]  # a Friday: Jan 2 is a Monday
    # the last 22 business days span weekends; the last 3 (Wednesday to Friday) do not, and still read as 1B
    model = TrainedForecaster.load(run)
    short = _write(tmp_path / "short.csv", grid[-22:])
    assert [r["time"] for r in model.forecast(short)] == times
    saturday = _write(tmp_path / "sat.csv", np.append(grid[-21:], np.datetime64("2022-12-31")))
    with pytest.raises(DataError, match="steps by 1D, but the model was trained on data that steps by 1B"):
        model.forecast(saturday)  # a weekend day: daily data, refused as before
    with pytest.raises(DataError, match="sat.csv:23: timestamp 2022-12-31T00:00:00 is a Saturday"):
        model.forecast(saturday, overrides=["data.freq=B"])


def test_a_file_spanning_no_weekend_is_read_on_the_trained_business_grid(tmp_path):
    grid = _business_days("2022-01-03", "2022-07-02")
    data = _stock(tmp_path / "stock.csv", grid)
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), "--set", "data.time_column=date",
                                 "--set", "data.target=price", "--set", "data.lookback=3", "--set", "data.horizon=2",
                                 "--set", "data.test_size=10", "--set", "train.epochs=1", "--set",
                                 "model.hidden_size=4", "--set", "train.accelerator=cpu", "--out",
                                 str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    model = TrainedForecaster.load(json.loads(result.output)["run"])
    wed_to_fri = _write(tmp_path / "short.csv", grid[-3:])  # 2022-06-29 .. 2022-07-01, a Friday
    assert [r["time"] for r in model.forecast(wed_to_fri)] == ["2022-07-04", "2022-07-05"]
    mondays = _write(tmp_path / "weekly.csv", grid[np.busday_count(grid[0], grid) % 5 == 0][-8:])
    with pytest.raises(DataError, match="steps by 7D, but the model was trained on data that steps by 1B"):
        model.forecast(mondays)  # weekly data stays refused, not spread over business days


@pytest.mark.data
def test_msft_stock_prices_end_to_end(shared_data, tmp_path):
    pd = pytest.importorskip("pandas")
    source = shared_data / "msft-stock" / "msft.csv"
    if not source.is_file():
        pytest.skip(f"{source} not found (see ../shared/data/README.md)")
    lines = source.read_text().splitlines()
    data = tmp_path / "msft_recent.csv"
    data.write_text("\n".join([lines[0], *lines[-1500:]]) + "\n")
    days = np.array([line.split(",", 1)[0] for line in lines[-1500:]], dtype="datetime64[D]")
    assert np.is_busday(days).all()
    # business days inferred; the exchange holidays are weekday gaps
    with pytest.raises(DataError, match="missing 1B steps.*holidays"):
        read_timeseries(data, "Date", "Close")
    series = read_timeseries(data, "Date", "Close", fill="ffill").only()
    assert series.freq == "1B" and len(series) == int(np.busday_count(days[0], days[-1])) + 1
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), "--set", "data.time_column=Date",
                                 "--set", "data.target=Close", "--set", "data.fill=ffill", "--set",
                                 "data.lookback=30", "--set", "data.horizon=5", "--set", "train.epochs=2", "--set",
                                 "train.accelerator=cpu", "--out", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    run = Path(json.loads(result.output)["run"])
    assert json.loads((run / "forecasting.json").read_text())["freq"] == "1B"
    pred = runner.invoke(app, ["predict", str(run), str(data), "--set", "data.fill=ffill", "--json"])
    assert pred.exit_code == 0, pred.output
    times = [json.loads(line)["time"] for line in pred.output.splitlines()]
    assert times == [str(d.date()) for d in pd.bdate_range(str(days[-1]), periods=6)[1:]]
    assert np.is_busday(np.array(times, dtype="datetime64[D]")).all()
