"""Review of forecasting branches no other test ran: evaluate / predict / diagnose input errors, series
left out of a backtest, baselines skipped (statsmodels missing, Holt-Winters failing), MASE without an
observed pair, a corrupt run folder, a Gaussian head without a scaler and the model's own guards.
Every expected number is computed here by hand (numpy or a plain torch loop), not by rnnkit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.errors import DataError
from rnnkit.data.windows import SplitBounds
from rnnkit.tasks.config import ConfigError, load_config
from rnnkit.tasks.forecasting import (
    Config,
    DataConfig,
    Pipeline,
    TrainedForecaster,
    _Windows,
    observed_mase_scale,
    run_backtest,
    split_breaks,
)
from rnnkit.tasks.forecasting_models import Forecaster, calendar_features, statsmodels_available

runner = CliRunner()
LOOKBACK, HORIZON = 14, 7
TINY = ["--set", "train.epochs=1", "--set", "model.hidden_size=8", "--set", "train.accelerator=cpu", "--quiet", "--json"]
STORES = ["--set", "data.time_column=date", "--set", "data.target=sales", "--set", "data.series_id_column=store",
          "--set", f"data.lookback={LOOKBACK}", "--set", f"data.horizon={HORIZON}"]


def _write_stores(path: Path, n: int = 90, promo: bool = False) -> Path:
    rng = np.random.default_rng(7)
    days = np.datetime64("2022-01-01") + np.arange(n)
    lines = ["date,store,sales" + (",promo" if promo else "")]
    for store, level in {"a": 10.0, "b": 40.0}.items():
        y = level + 3 * np.sin(2 * np.pi * np.arange(n) / 7) + 0.2 * np.arange(n) + rng.normal(0, 0.3, n)
        lines += [f"{d},{store},{v:.3f}" + (f",{i % 3 == 0:d}" if promo else "") for i, (d, v) in enumerate(zip(days, y))]
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(path: Path, store: str) -> list[str]:
    return [line for line in path.read_text().splitlines()[1:] if line.split(",")[1] == store]


def _values(lines: list[str]) -> np.ndarray:
    return np.array([float(line.split(",")[2]) for line in lines])


def _train(tmp: Path, data: Path, *extra: str) -> Path:
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), *STORES, *extra, *TINY,
                                 "--out", str(tmp / "runs")])
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.output)["run"])


def _one_error(result, exit_code: int = 2) -> str:
    assert result.exit_code == exit_code, result.output
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("note: ")]  # train: run removed
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uncovered")
    data = _write_stores(tmp / "stores.csv")
    return _train(tmp, data, "--set", "data.test_size=21"), data, tmp  # default baselines: ets included


# -- evaluate ---------------------------------------------------------------------------------------
def test_evaluate_leaves_out_a_series_too_short_for_a_window_and_says_so(run):
    # A 10-step series b beside a 90-step series a: `evaluate` stopped with "data.test_size = 21 steps
    # leaves no history ... of series 'b'" although a series without a window is meant to be left out.
    path, data, tmp = run
    lines = data.read_text().splitlines()
    mixed, only_a = tmp / "mixed.csv", tmp / "only_a.csv"
    mixed.write_text("\n".join([lines[0], *_rows(data, "a"), *_rows(data, "b")[:10]]) + "\n")
    only_a.write_text("\n".join([lines[0], *_rows(data, "a")]) + "\n")
    result = runner.invoke(app, ["evaluate", str(path), "--data", str(mixed), "--json"])
    assert result.exit_code == 0, result.output
    assert ("note: 1 series left out, too short for one backtest window of lookback 14 + horizon 7 inside the "
            "evaluated period: 'b'") in result.output
    metrics = json.loads(result.output[result.output.index("{"):])
    y = _values(_rows(data, "a"))
    origins = [69, 76, 83]  # the last 21 of 90 steps, every horizon (7) steps while a whole horizon fits
    assert metrics["windows"] == len(origins)
    naive = np.mean([np.abs(y[t0:t0 + HORIZON] - y[t0 - 1]).mean() for t0 in origins])
    assert metrics["naive_mae"] == pytest.approx(naive, rel=1e-9)
    alone = TrainedForecaster.load(path).evaluate(only_a)
    assert metrics["mae"] == pytest.approx(alone["mae"], rel=1e-6)
    # with a test period too short for b's window (test_size = the horizon), b is left out the same way
    seven = TrainedForecaster.load(path).evaluate(mixed, ["data.test_size=7"])
    assert seven["windows"] == 1 and any("'b'" in note for note in seven["notes"])


@pytest.mark.parametrize("size, words", [("40", "40 steps"), ("1.0", "1.0 (a fraction of the steps)"),
                                         ("0.99", "0.99 (a fraction of the steps)")])
def test_evaluate_test_size_leaving_no_history_is_one_line_error(run, size, words):
    # A fraction that rounds to every step (0.99 of 40 steps is 40) said "training split is empty; fix: give
    # the training split some steps", naming neither the key nor the file.
    path, data, tmp = run
    a40 = tmp / "a40.csv"
    a40.write_text("\n".join([data.read_text().splitlines()[0], *_rows(data, "a")[:40]]) + "\n")
    line = _one_error(runner.invoke(app, ["evaluate", str(path), "--data", str(a40), "--set", f"data.test_size={size}"]))
    assert line == (f"error: {a40}: data.test_size = {words} leaves no history before the evaluated period of series "
                    f"'a' (40 steps); fix: add --set data.test_size=26 (steps) or give a longer file")


def test_one_step_history_skips_holt_winters_with_a_reason_and_mase_is_undefined(run):
    # History of 1 step (test_size = 39 of 40) whose only value was filled: statsmodels failed with
    # "IndexError: index 1 is out of bounds", and evaluate dropped ets without a word.
    path, data, tmp = run
    rows = _rows(data, "a")[:40]
    rows[0] = ",".join(rows[0].split(",")[:2] + [""])
    f = tmp / "a40_first_empty.csv"
    f.write_text("\n".join([data.read_text().splitlines()[0], *rows]) + "\n")
    metrics = TrainedForecaster.load(path).evaluate(f, ["data.test_size=39", "data.fill=zero"])
    assert metrics["windows"] == 3  # origins 14, 21, 28 (the lookback, then every horizon while 7 steps fit)
    assert np.isnan(metrics["mase"]) and np.isnan(metrics["naive_mase"])
    assert not any(k.startswith("ets_") for k in metrics)
    assert metrics["notes"] == ["baseline ets (a) skipped: Holt-Winters needs at least 2 steps of history before the "
                                "evaluated period, and there are 1"]
    y = _values(_rows(data, "a")[:40])
    naive = np.mean([np.abs(y[t0:t0 + HORIZON] - y[t0 - 1]).mean() for t0 in (14, 21, 28)])
    assert metrics["naive_mae"] == pytest.approx(naive, rel=1e-9)


def test_observed_mase_scale_by_hand():
    h = np.array([[1.0], [4.0], [2.0], [8.0], [3.0]])
    ok = np.array([[True], [True], [False], [True], [True]])
    # pairs (t-2, t) both observed with period 2: (1, 3) -> |8 - 4| = 4 and (3, 5)... t=4: (2, 4) has a filled value
    assert observed_mase_scale(h, ok, 2) == pytest.approx([4.0])
    assert np.isnan(observed_mase_scale(h[:1], ok[2:3], 1)).all()  # one step: no pair at all
    assert np.isnan(observed_mase_scale(h[:2], np.array([[True], [False]]), 1)).all()  # a pair, not observed


def test_holt_winters_failure_is_reported_not_raised(run, monkeypatch):
    path, data, _ = run
    from rnnkit.tasks import forecasting

    def boom(self, history):
        raise RuntimeError("optimizer diverged")

    monkeypatch.setattr(forecasting.HoltWinters, "fit", boom)
    metrics = TrainedForecaster.load(path).evaluate(data)
    assert metrics["notes"] == ["baseline ets (a) skipped: RuntimeError: optimizer diverged",
                                "baseline ets (b) skipped: RuntimeError: optimizer diverged"]
    assert "naive_mae" in metrics and not any(k.startswith("ets_") for k in metrics)


def test_missing_statsmodels_skips_ets_with_the_install_hint(run, monkeypatch):
    path, data, _ = run
    monkeypatch.setitem(sys.modules, "statsmodels", None)  # `import statsmodels` raises ImportError
    assert statsmodels_available() is False
    metrics = TrainedForecaster.load(path).evaluate(data)
    assert metrics["notes"] == ["baseline ets skipped: statsmodels is not installed (pip install 'rnnkit[timeseries]')"]
    assert not any(k.startswith("ets_") for k in metrics) and "seasonal_naive_mae" in metrics


def test_evaluate_override_errors_name_the_fix(run):
    path, data, _ = run
    line = _one_error(runner.invoke(app, ["evaluate", str(path), "--data", str(data), "--set", "model.cell=gru"]))
    assert line == "error: --set accepts data.* keys only (how the files are read), got model.*; drop that --set"
    line = _one_error(runner.invoke(app, ["evaluate", str(path), "--data", str(data), "--set", "data.lookback=5"]))
    assert line == ("error: data.lookback is fixed by the trained model (14); drop --set data.lookback, or train a new "
                    "model with it")


@pytest.mark.parametrize("edit", ["drop_period", "unknown_key", "bad_scaler", "not_json"])
def test_corrupt_forecasting_json_is_one_line_error(run, tmp_path, edit):
    import shutil

    path, data, _ = run
    copy_ = tmp_path / "copy"
    shutil.copytree(path, copy_)
    meta_file = copy_ / "forecasting.json"
    meta = json.loads(meta_file.read_text())
    if edit == "drop_period":
        del meta["period"]
    elif edit == "unknown_key":
        meta["data"]["bogus"] = 1
    elif edit == "bad_scaler":
        meta["target_scaler"] = {"x": 1}
    meta_file.write_text("{not json" if edit == "not_json" else json.dumps(meta))
    line = _one_error(runner.invoke(app, ["evaluate", str(copy_), "--data", str(data)]))
    assert f"{meta_file} is corrupt (" in line and line.endswith("; train again")


# -- predict ----------------------------------------------------------------------------------------
def test_predict_inputs_overrides_and_short_history(run, tmp_path):
    path, data, _ = run
    # --file names the history CSV itself (it passed every line of the CSV as an input); no input at all
    # forecasts from the end of the training file, which is `data` here
    plain = runner.invoke(app, ["predict", str(path), str(data), "--json"])
    by_file = runner.invoke(app, ["predict", str(path), "--file", str(data), "--json"])
    from_training = runner.invoke(app, ["predict", str(path), "--json"])
    assert by_file.exit_code == 0 and from_training.exit_code == 0, by_file.output + from_training.output
    assert by_file.output == plain.output == from_training.output
    line = _one_error(runner.invoke(app, ["predict", str(path), "a.csv", "b.csv", "c.csv"]))
    assert line == ("error: forecasting predict takes a history CSV and optionally a future-covariates CSV, got 3 "
                    "inputs; give them as rnnkit predict RUN history.csv [future.csv]")
    ffill = runner.invoke(app, ["predict", str(path), str(data), "--json", "--set", "data.fill=ffill"])
    assert plain.exit_code == 0 and ffill.exit_code == 0, plain.output + ffill.output
    assert plain.output == ffill.output and len(plain.output.splitlines()) == 2 * HORIZON  # nothing to fill
    line = _one_error(runner.invoke(app, ["predict", str(path), str(data), "--set", "data.horizon=3"]))
    assert "data.horizon is fixed by the trained model (7)" in line
    short = tmp_path / "short.csv"
    short.write_text("\n".join(data.read_text().splitlines()[:6]) + "\n")
    line = _one_error(runner.invoke(app, ["predict", str(path), str(short)]))
    assert line == f"error: {short}: series 'a' has 5 steps; the model reads the last lookback = 14; fix: give a longer history"


def test_forecast_without_a_path_reads_the_training_file_or_says_what_to_give(run, tmp_path):
    import shutil

    path, data, _ = run
    model = TrainedForecaster.load(path)
    assert model.forecast() == model.forecast(data) and model.predict([]) == model.forecast(data)
    copy_ = tmp_path / "no_train_path"
    shutil.copytree(path, copy_)
    meta = json.loads((copy_ / "forecasting.json").read_text())
    del meta["train_path"]
    (copy_ / "forecasting.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"^this run does not record its training file: give a CSV to forecast from"):
        TrainedForecaster.load(copy_).forecast()


def test_future_covariates_missing_for_a_series(tmp_path):
    data = _write_stores(tmp_path / "promo.csv", promo=True)
    path = _train(tmp_path, data, "--set", "data.test_size=21", "--set", "data.future_covariates=promo",
                  "--set", "evaluation.baselines=naive")
    days = np.datetime64("2022-04-01") + np.arange(HORIZON)
    future = tmp_path / "future_a.csv"
    future.write_text("date,store,promo\n" + "".join(f"{d},a,1\n" for d in days))
    line = _one_error(runner.invoke(app, ["predict", str(path), str(data), str(future)]))
    assert line == (f"error: {future}: no future covariates for series 'b'; fix: add rows for the 7 steps after "
                    "2022-03-31")


def test_diagnose_a_file_too_short_for_one_window(run, tmp_path):
    path, data, _ = run
    short = tmp_path / "short.csv"
    short.write_text("\n".join(data.read_text().splitlines()[:6]) + "\n")
    line = _one_error(runner.invoke(app, ["diagnose", str(path), "--data", str(short), "--out", str(tmp_path / "d")]))
    assert line == (f"error: {short}: no series is long enough for one window of lookback 14 + horizon 7; fix: give a "
                    "file with at least 21 steps per series")


# -- train ------------------------------------------------------------------------------------------
def test_train_refuses_dev_and_short_training_periods(run, tmp_path):
    _, data, _ = run
    base = ["train", "forecasting", "--train", str(data), *STORES, *TINY, "--out", str(tmp_path / "runs")]
    line = _one_error(runner.invoke(app, [*base, "--dev", str(data)]))
    assert line == ("error: forecasting selects the model on the last data.val_size steps of each training series; "
                    "--dev is not used (give one file with the whole history)")
    line = _one_error(runner.invoke(app, [*base, "--set", "data.val_size=0.4", "--set", "data.test_size=0.4"]))
    assert line == (f"error: {data}: series 'a': the training period has 18 steps, fewer than lookback + horizon = 21; "
                    "fix: give more history, lower data.val_size / data.test_size, or shorten data.lookback / "
                    "data.horizon")
    # data.fill=interpolate asks for the period ends first; sizes the split refuses give none, and the
    # split's own error follows (train = 90 - 36 - 63 < 0)
    line = _one_error(runner.invoke(app, [*base, "--set", "data.val_size=0.4", "--set", "data.test_size=0.7",
                                          "--set", "data.fill=interpolate"]))
    assert "series 'a': split sizes train=-9, val=36, test=63 exceed the 90 steps" in line


def test_split_breaks_by_hand():
    assert split_breaks(None, 0.1, 21)(90) == (60, 69, 90)  # val round(9.0) = 9, test 21, train the rest
    assert split_breaks(50, 10, 20)(90) == (50, 60, 80)
    assert split_breaks(None, 0.4, 0.7)(90) == ()  # refused: no breaks


def test_plot_series_zero_writes_no_forecast_plot_and_negative_is_refused(run, tmp_path):
    _, data, _ = run
    path = _train(tmp_path, data, "--set", "data.test_size=21", "--set", "evaluation.plot_series=0",
                  "--set", "evaluation.baselines=naive")
    report = (path / "report.md").read_text()
    assert not (path / "forecasts.png").exists() and "## Forecasts" not in report and "## Error by horizon" in report
    with pytest.raises(ConfigError, match=r"^evaluation\.plot_series: must be >= 0 \(0: no forecast plot\), got -1$"):
        load_config(Config, None, ["data.target=y", "evaluation.plot_series=-1"]).validate()


def test_gaussian_without_a_scaler_matches_a_plain_torch_loop(tmp_path):
    # data.scaler=none: standard deviations in original units are the head's own (target_scale is 1)
    t = np.arange(80)
    y = 5 + np.sin(2 * np.pi * t / 7) + 0.05 * t
    data = tmp_path / "one.csv"
    data.write_text("sales\n" + "".join(f"{v:.4f}\n" for v in y))
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), "--set", "data.target=sales",
                                 "--set", "data.lookback=10", "--set", "data.horizon=4", "--set", "data.test_size=16",
                                 "--set", "data.scaler=none", "--set", "data.calendar=", "--set",
                                 "model.likelihood=gaussian", "--set", "evaluation.baselines=naive", *TINY,
                                 "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    model = TrainedForecaster.load(json.loads(result.output)["run"])
    bt = model.backtest(data)
    origins = [64, 68, 72, 76]
    assert [o for _, o in bt.windows] == origins
    y4 = np.round(y, 4)
    net = model.model.eval()
    with torch.no_grad():
        for i, t0 in enumerate(origins):
            x = torch.tensor(y4[t0 - 10:t0], dtype=torch.float32)[None, :, None]
            params = net(x, torch.zeros(1, 4, 0), torch.ones(1, dtype=torch.long))[0, :, 0].double().numpy()
            np.testing.assert_allclose(bt.point[i, :, 0], params[:, 0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(bt.std[i, :, 0], params[:, 1], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(bt.y[i, :, 0], y4[t0:t0 + 4])
    z = np.array([-1.2815515655446004, 0.0, 1.2815515655446004])  # standard normal at 0.1, 0.5, 0.9
    np.testing.assert_allclose(bt.quantiles[..., 0, :], bt.point[..., 0, None] + bt.std[..., 0, None] * z,
                               rtol=1e-5, atol=1e-5)
    pipe = Pipeline(DataConfig(target=["sales"]), [], ["0"], None, None, 7, None)
    assert pipe.target_scale("0").tolist() == [1.0]
    past = np.array([[1.5], [2.5]])
    assert pipe.scale_past(_series(), past) is past  # no covariate scaler: unchanged


def _series():
    from rnnkit.data.timeseries import TimeSeries

    return TimeSeries.from_arrays(np.zeros(3))


# -- guards reached only from Python ------------------------------------------------------------------
def test_no_backtest_or_training_window_is_a_data_error():
    from rnnkit.data.timeseries import TimeSeries

    s = TimeSeries.from_arrays(np.arange(30, dtype=float))
    cfg = DataConfig(target=["y"], lookback=5, horizon=3, calendar=[], scaler="none")
    pipe = Pipeline(cfg, [], [s.series_id], None, None, 1, None)
    net = Forecaster(n_targets=1, n_past=0, n_future=0, horizon=3, hidden_size=4, lookback=5)
    with pytest.raises(DataError, match="no backtest window fits: each needs 3 steps inside the evaluated period and 5 "
                                        "steps before its origin"):
        run_backtest(net, pipe, [s], {s.series_id: (28, 30)}, {s.series_id: 20}, 3, ["naive"], [0.5])
    bounds = {s.series_id: SplitBounds((0, 25), (25, 27), (27, 30))}
    with pytest.raises(DataError, match="no val window fits: the val period needs at least horizon = 3 steps") as err:
        _Windows([s], [1], "val", bounds, 5, 3, 1)
    assert "data.val_size" in str(err.value)


def test_forecaster_and_calendar_guards():
    common = {"n_targets": 1, "n_past": 0, "n_future": 0, "horizon": 3, "hidden_size": 4}
    with pytest.raises(ValueError, match=r"^unknown likelihood 'poisson'; choose one of quantile, gaussian, student_t, mse, mae$"):
        Forecaster(**common, likelihood="poisson")
    with pytest.raises(ValueError, match=r"^unknown decoder 'tcn'; choose 'direct' or 'autoregressive'$"):
        Forecaster(**common, decoder="tcn")
    seasonal = Forecaster(**common, window_norm="seasonal", season=7, lookback=7)
    with pytest.raises(ValueError, match=r"needs at least 7 input steps, got 5"):
        seasonal(torch.zeros(2, 5, 1), torch.zeros(2, 3, 0), torch.zeros(2, dtype=torch.long))
    point = Forecaster(**common, likelihood="mse")
    params = torch.tensor([[[[1.0]], [[2.0]], [[3.0]]]])  # [B=1, H=3, T=1, K=1]
    q = point.quantiles_of(params, [0.1, 0.5, 0.9])
    assert q.shape == (1, 3, 1, 3) and q[0, :, 0].tolist() == [[1.0] * 3, [2.0] * 3, [3.0] * 3]
    with pytest.raises(ValueError, match=r"^unknown calendar feature 'minute'; choose from hour, weekday, month$"):
        calendar_features(np.array(["2020-01-01"], dtype="datetime64[s]"), ["minute"])
