"""The forecast plot of the report (forecasts.png) is dated when the file has a time column, and
counts steps when it has none."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rnnkit.tasks.forecasting import (  # noqa: E402
    DataConfig,
    EvaluationConfig,
    Pipeline,
    TrainedForecaster,
    _plot_forecasts,
    _split,
)
from rnnkit.tasks.forecasting_models import Forecaster  # noqa: E402

N, LOOKBACK, HORIZON, TEST = 60, 7, 3, 12
START = np.datetime64("2021-01-01T00:00:00")


def _write(path: Path, dated: bool) -> Path:
    t = np.arange(N)
    y = np.round(10 + 3 * np.sin(2 * np.pi * t / 7) + 0.1 * t, 3)
    if dated:
        days = np.datetime64("2021-01-01") + t
        path.write_text("date,sales\n" + "".join(f"{d},{v}\n" for d, v in zip(days, y)))
    else:
        path.write_text("sales\n" + "".join(f"{v}\n" for v in y))
    return path


def _plot(path: Path, dated: bool, out: Path, monkeypatch: pytest.MonkeyPatch) -> Figure:
    """Backtest an untrained (seeded) model on ``path`` and draw its forecast plot; return the figure."""
    cfg = DataConfig(time_column="date" if dated else None, target=["sales"], calendar=[], lookback=LOOKBACK,
                     horizon=HORIZON, val_size=6, test_size=TEST)
    series = list(Pipeline.read_raw(path, cfg))
    pipe = Pipeline.fit(series, _split(series, cfg), cfg)
    torch.manual_seed(0)
    net = Forecaster(n_targets=1, n_past=0, n_future=0, horizon=HORIZON, lookback=LOOKBACK, hidden_size=4)
    model = TrainedForecaster(net, pipe, [0.1, 0.5, 0.9], EvaluationConfig(baselines=["naive"]))
    bt = model.backtest(path)
    figures: list[Figure] = []
    save = Figure.savefig

    def spy(fig: Figure, *args: object, **kwargs: object) -> None:
        figures.append(fig)
        save(fig, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Figure, "savefig", spy)
    series = pipe.read(path)
    assert _plot_forecasts(bt, series, {"0": (N - TEST, N)}, 4, out) == out
    assert out.is_file() and out.stat().st_size > 0 and len(figures) == 1
    return figures[0]


def test_forecast_plot_has_dates_on_the_x_axis_with_a_time_column(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fig = _plot(_write(tmp_path / "dated.csv", True), True, tmp_path / "forecasts.png", monkeypatch)
    ax = fig.axes[0]
    # the x data of every line are the series' timestamps, not step indices
    actual, forecast = ax.lines[0], ax.lines[1]
    x = np.asarray(actual.get_xdata())
    assert np.issubdtype(x.dtype, np.datetime64)
    start = N - TEST - 3 * HORIZON - 1
    np.testing.assert_array_equal(x, START + np.arange(start, N) * np.timedelta64(1, "D"))
    np.testing.assert_array_equal(np.asarray(forecast.get_xdata()),
                                  START + np.arange(N - TEST, N - TEST + HORIZON) * np.timedelta64(1, "D"))
    # the axis is a date axis: matplotlib converts the data to day numbers and labels the ticks as dates
    assert isinstance(ax.xaxis.get_major_formatter(), mdates.AutoDateFormatter | mdates.ConciseDateFormatter)
    lo, hi = ax.get_xlim()
    assert mdates.num2date(lo).year == 2021 and mdates.num2date(hi).month in (2, 3)
    fig.canvas.draw()
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all(t.get_text().startswith("2021-") for t in labels)
    assert all(t.get_rotation() == 30 and t.get_horizontalalignment() == "right" for t in labels)
    # the dashed line marks the first test date
    dashed = ax.lines[-1]
    assert dashed.get_linestyle() == "--"
    assert np.asarray(dashed.get_xdata())[0] == START + np.timedelta64(N - TEST, "D")  # 2021-02-18


def test_forecast_plot_counts_steps_without_a_time_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fig = _plot(_write(tmp_path / "steps.csv", False), False, tmp_path / "forecasts.png", monkeypatch)
    ax = fig.axes[0]
    x = np.asarray(ax.lines[0].get_xdata())
    assert np.issubdtype(x.dtype, np.integer)
    np.testing.assert_array_equal(x, np.arange(N - TEST - 3 * HORIZON - 1, N))
    assert not isinstance(ax.xaxis.get_major_formatter(), mdates.AutoDateFormatter | mdates.ConciseDateFormatter)
    assert ax.get_xlabel() == "step"
    assert np.asarray(ax.lines[-1].get_xdata(), dtype=float)[0] == N - TEST
