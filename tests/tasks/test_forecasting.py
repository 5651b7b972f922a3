"""Forecasting: metrics against hand-computed values, leakage-free windows and backtests, ordered
quantiles, baselines, bad input as one-line errors, and train/evaluate/predict end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.timeseries import TimeSeries
from rnnkit.data.windows import chronological_split
from rnnkit.metrics import forecasting as fm
from rnnkit.tasks.config import ConfigError, load_config
from rnnkit.tasks.forecasting import (
    Backtest,
    Config,
    DataConfig,
    Pipeline,
    TrainedForecaster,
    _split,
    _Windows,
    backtest_origins,
    calendar_features,
    future_times,
    infer_period,
    run_backtest,
    verdict,
    write_forecasts,
)
from rnnkit.tasks.forecasting_models import (
    Forecaster,
    drift_forecast,
    naive_forecast,
    seasonal_naive_forecast,
    student_t_quantile,
)

runner = CliRunner()
FAST = ["--set", "train.epochs=12", "--set", "model.hidden_size=24", "--set", "train.accelerator=cpu"]


def _write_sine(path: Path, n: int = 240, seed: int = 0, noise: float = 0.3) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 10 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(0, noise, n)
    dates = np.datetime64("1990-01", "M") + t
    path.write_text("date,sales\n" + "".join(f"{d},{v:.4f}\n" for d, v in zip(dates, y)))
    return path


# -- metrics -----------------------------------------------------------------------------------
def test_point_metrics_match_hand_computed_values():
    y = np.array([1.0, 2.0, 4.0, 0.0])
    p = np.array([2.0, 2.0, 1.0, 1.0])
    assert fm.mae(y, p) == pytest.approx((1 + 0 + 3 + 1) / 4)
    assert fm.rmse(y, p) == pytest.approx(math.sqrt((1 + 0 + 9 + 1) / 4))
    assert fm.mape(y, p) == pytest.approx(100 * (1 / 1 + 0 + 3 / 4) / 3)  # the zero actual is left out
    assert fm.smape(y, p) == pytest.approx(100 * (2 / 3 + 0 + 6 / 5 + 2) / 4)
    assert fm.smape([0.0], [0.0]) == 0.0 and math.isnan(fm.mape([0.0], [1.0]))
    history = np.array([1.0, 3.0, 2.0, 6.0])  # seasonal diffs with m=2: |2-1|, |6-3| -> 2
    assert fm.mase_scale(history, 2) == pytest.approx(2.0)
    assert fm.mase_scale(history, 1) == pytest.approx((2 + 1 + 4) / 3)
    assert fm.mase(y, p, 2.0) == pytest.approx(1.25 / 2)  # MAE 1.25 over a scale of 2
    assert math.isnan(float(fm.mase_scale(np.ones(5), 1)))  # constant history: MASE undefined, not inf


def test_probabilistic_metrics_match_hand_computed_values():
    y = np.array([1.0, 3.0])
    q = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    levels = [0.1, 0.5, 0.9]
    # y=1: errors 1, 0, -1 -> 0.1, 0, 0.1;  y=3: errors 3, 2, 1 -> 0.3, 1.0, 0.9
    assert fm.pinball_loss(y, q, levels) == pytest.approx((0.1 + 0 + 0.1 + 0.3 + 1.0 + 0.9) / 6)
    out = fm.probabilistic_metrics(y, q, levels)
    assert out["crps"] == pytest.approx(2 * out["quantile_loss"])
    assert out["coverage"] == 0.5 and out["nominal_coverage"] == pytest.approx(0.8)
    # Gaussian closed form at y = mean: sigma * (2 phi(0) - 1/sqrt(pi))
    assert fm.crps_gaussian(0.0, 0.0, 2.0) == pytest.approx(2 * (2 / math.sqrt(2 * math.pi) - 1 / math.sqrt(math.pi)))
    # ... agrees with the integral of the pinball loss over a dense grid of quantiles
    grid = np.linspace(0.0005, 0.9995, 1000)
    quant = 0.3 + 1.5 * torch.special.ndtri(torch.tensor(grid)).numpy()
    assert fm.crps_from_quantiles(np.array([1.1]), quant[None], grid) == pytest.approx(fm.crps_gaussian(1.1, 0.3, 1.5),
                                                                                          rel=1e-2)
    assert fm.by_horizon(np.zeros((2, 3, 1)), np.array([[[1], [2], [3]], [[3], [2], [1]]])) == [2.0, 2.0, 2.0]


def test_student_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    levels = torch.tensor([0.02, 0.1, 0.25, 0.5, 0.9, 0.98], dtype=torch.float64)
    for df in (3.0, 5.0, 30.0):
        ours = student_t_quantile(levels, torch.tensor(df, dtype=torch.float64)).numpy()
        np.testing.assert_allclose(ours, stats.t.ppf(levels.numpy(), df), atol=2e-2)


# -- baselines ---------------------------------------------------------------------------------
def test_baselines_match_hand_computed_values():
    h = np.array([[1.0], [2.0], [3.0], [5.0], [6.0], [7.0]])
    assert naive_forecast(h, 2)[:, 0].tolist() == [7.0, 7.0]
    assert seasonal_naive_forecast(h, 5, 3)[:, 0].tolist() == [5.0, 6.0, 7.0, 5.0, 6.0]
    assert seasonal_naive_forecast(h[:2], 2, 3)[:, 0].tolist() == [2.0, 2.0]  # too short: naive
    np.testing.assert_allclose(drift_forecast(h, 2)[:, 0], [7 + 6 / 5, 7 + 12 / 5])


def test_verdict_says_plainly_when_the_model_loses():
    lose = verdict({"mase": 1.2, "mae": 3.0}, {"seasonal_naive": {"mase": 1.0, "mae": 2.0}})
    assert "does NOT beat seasonal naive" in lose
    assert "beats seasonal naive" in verdict({"mase": 0.5, "mae": 1.0}, {"seasonal_naive": {"mase": 1.0, "mae": 2.0}})


# -- windows, splits, backtests never leak ------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(n=st.integers(20, 300), lookback=st.integers(1, 30), horizon=st.integers(1, 12), stride=st.integers(1, 15),
       test=st.floats(0.05, 0.5))
def test_backtest_origins_stay_inside_the_test_period(n, lookback, horizon, stride, test):
    bounds = chronological_split(n, None, 0, test)
    lo, hi = bounds.test
    origins = backtest_origins(n, lookback, horizon, stride, (lo, hi))
    if len(origins):
        assert origins[0] == max(lo, lookback)
        assert (origins - lookback >= 0).all() and (origins + horizon <= hi).all() and (origins >= lo).all()
        assert (np.diff(origins) == stride).all()
        assert origins[-1] + stride + horizon > hi  # no origin that fits is left out
    else:
        assert hi - max(lo, lookback) < horizon


@settings(max_examples=40, deadline=None)
@given(n=st.integers(60, 200), lookback=st.integers(1, 12), horizon=st.integers(1, 6),
       val=st.floats(0.1, 0.3), test=st.floats(0.1, 0.3))
def test_training_windows_never_reach_the_validation_or_test_period(n, lookback, horizon, val, test):
    series = [TimeSeries.from_arrays(np.arange(n, dtype=float), series_id="a")]
    cfg = DataConfig(target=["target_0"], lookback=lookback, horizon=horizon, val_size=val, test_size=test)
    try:
        bounds = _split(series, cfg)
    except ValueError:
        return  # a period shorter than the horizon is refused, which is fine
    for period in ("train", "val"):
        ds = _Windows(series, [1], period, bounds, lookback, horizon, 1)
        lo, hi = getattr(bounds["a"], period)
        for i in range(len(ds)):
            x, _, _, y, observed = ds[i]
            assert bool(observed.all())  # every value of a series built from arrays was observed
            first_target = int(y[0, 0])  # values equal their step index
            assert lo <= first_target and first_target + horizon <= hi
            assert int(x[-1, 0]) == first_target - 1  # inputs end right before the targets


def _tiny_pipeline(series: list[TimeSeries], cfg: DataConfig) -> tuple[Pipeline, dict]:
    bounds = _split(series, cfg)
    return Pipeline.fit(series, bounds, cfg), bounds


@pytest.mark.parametrize("decoder", ["direct", "autoregressive"])
def test_backtest_forecasts_do_not_depend_on_values_after_their_origin(decoder):
    rng = np.random.default_rng(1)
    values = rng.normal(size=(120, 1)).cumsum(0)
    cov = rng.normal(size=(120, 1))
    cfg = DataConfig(target=["target_0"], lookback=10, horizon=4, val_size=0.1, test_size=0.3)
    s = TimeSeries.from_arrays(values, past_covariates=cov, series_id="s")
    pipe, bounds = _tiny_pipeline([s], cfg)
    model = Forecaster(n_targets=1, n_past=1, n_future=0, horizon=4, lookback=10, hidden_size=8, decoder=decoder)
    stops = {"s": bounds["s"].train[1]}
    before = run_backtest(model, pipe, [s], {"s": bounds["s"].test}, stops, 1, ["naive", "seasonal_naive", "drift"],
                          [0.1, 0.5, 0.9])
    cut = bounds["s"].test[0] + 15
    changed = TimeSeries.from_arrays(values.copy(), past_covariates=cov.copy(), series_id="s")
    changed.targets[cut:] += 100.0
    changed.past_covariates[cut:] -= 50.0
    after = run_backtest(model, pipe, [changed], {"s": bounds["s"].test}, stops, 1,
                         ["naive", "seasonal_naive", "drift"], [0.1, 0.5, 0.9])
    origins = np.array([t0 for _, t0 in before.windows])
    early = origins <= cut
    assert early.any() and (~early).any()
    np.testing.assert_array_equal(before.point[early], after.point[early])
    for name in before.baselines:
        np.testing.assert_array_equal(before.baselines[name][early], after.baselines[name][early])
    assert not np.allclose(before.point[~early], after.point[~early])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=30, max_size=80), st.sampled_from(["standard", "robust", "minmax"]))
def test_pipeline_scaling_inverts_exactly(values, scaler):
    s = TimeSeries.from_arrays(np.asarray(values), series_id="x")
    cfg = DataConfig(target=["target_0"], lookback=3, horizon=2, val_size=4, test_size=4, scaler=scaler)  # type: ignore[arg-type]
    pipe, bounds = _tiny_pipeline([s], cfg)
    scaled = pipe.scale(s, bounds["x"].train[1])
    np.testing.assert_allclose(pipe.unscale(scaled.targets, "x"), s.targets, rtol=1e-9, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(1e-3, 1e6, allow_nan=False), min_size=30, max_size=80), st.sampled_from(["standard", "none"]))
def test_log_transform_inverts_exactly(values, scaler):
    s = TimeSeries.from_arrays(np.asarray(values), series_id="x")
    cfg = DataConfig(target=["target_0"], lookback=3, horizon=2, val_size=4, test_size=4, scaler=scaler,  # type: ignore[arg-type]
                     transform="log")
    pipe, bounds = _tiny_pipeline([s], cfg)
    scaled = pipe.scale(s, bounds["x"].train[1])
    if scaler == "none":
        np.testing.assert_allclose(scaled.targets, np.log(s.targets))
    np.testing.assert_allclose(pipe.unscale(scaled.targets, "x"), s.targets, rtol=1e-9)


def test_log_transform_forecasts_in_original_units_and_refuses_non_positive_targets(tmp_path):
    data = _write_sine(tmp_path / "s.csv", n=120)
    common = ["train", "forecasting", "--train", str(data), "--set", "data.time_column=date", "--set",
              "data.target=sales", "--set", "data.horizon=6", "--set", "data.lookback=24", "--set", "data.test_size=24",
              "--set", "data.transform=log", *FAST, "--out", str(tmp_path / "runs")]
    result = runner.invoke(app, [*common, "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["test"]["mase"] < metrics["baselines"]["naive"]["mase"]
    pred = runner.invoke(app, ["predict", metrics["run"], str(data), "--json"])
    assert pred.exit_code == 0, pred.output
    rows = [json.loads(line) for line in pred.output.splitlines()]
    assert len(rows) == 6 and all(10 < r["forecast"] < 23 for r in rows)  # the series' units (ends near 16 +- 3)
    assert all(r["q0.1"] <= r["q0.5"] <= r["q0.9"] for r in rows)
    shifted = tmp_path / "shifted.csv"
    lines = data.read_text().splitlines()
    shifted.write_text("\n".join([lines[0], *(f"{d},{float(v) - 12:.4f}" for d, v in (x.split(",") for x in lines[1:]))]))
    common[3] = str(shifted)
    result = runner.invoke(app, [*common, "--quiet"])
    assert result.exit_code == 2 and "data.transform=log needs positive targets" in result.output


# -- model heads -------------------------------------------------------------------------------
@pytest.mark.parametrize("likelihood", ["quantile", "mse"])
def test_seasonal_window_norm_starts_from_the_seasonal_naive_forecast(likelihood):
    torch.manual_seed(0)
    model = Forecaster(n_targets=2, n_past=0, n_future=0, horizon=7, lookback=8, hidden_size=8, season=3,
                       window_norm="seasonal", likelihood=likelihood).eval()
    with torch.no_grad():
        model.head[-1].weight.zero_()  # the learned correction is zero: the forecast is seasonal naive
        model.head[-1].bias.zero_()
        x = torch.randn(4, 8, 2)
        point = model.point(model(x, torch.zeros(4, 7, 0), torch.zeros(4, dtype=torch.long)))
    # steps 1..7 repeat the last season: x[5], x[6], x[7], x[5], ...
    expected = x[:, [5, 6, 7, 5, 6, 7, 5]]
    torch.testing.assert_close(point, expected)
    with pytest.raises(ValueError, match="direct decoder"):
        Forecaster(n_targets=1, n_past=0, n_future=0, horizon=2, season=3, window_norm="seasonal",
                   decoder="autoregressive")
    with pytest.raises(ConfigError, match="direct decoder only"):
        load_config(Config, None, ["data.target=y", "model.window_norm=seasonal", "model.decoder=autoregressive"])


def test_seasonal_window_norm_needs_a_season_in_the_lookback(tmp_path):
    data = _write_sine(tmp_path / "s.csv", n=120)
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), "--set", "data.time_column=date",
                                 "--set", "data.target=sales", "--set", "data.horizon=6", "--set", "data.lookback=6",
                                 "--set", "model.window_norm=seasonal", *FAST, "--quiet", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "shorter than the season length 12" in result.output
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), "--set", "data.time_column=date",
                                 "--set", "data.target=sales", "--set", "data.horizon=6", "--set", "data.lookback=24",
                                 "--set", "data.test_size=24", "--set", "model.window_norm=seasonal", *FAST, "--json",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["beats_seasonal_naive"] is True
    again = TrainedForecaster.load(metrics["run"])  # the season length travels with the model
    assert again.model.season == 12 and again.model.window_norm == "seasonal"
@pytest.mark.parametrize("likelihood", ["quantile", "gaussian", "student_t"])
def test_probabilistic_heads_give_ordered_quantiles(likelihood):
    torch.manual_seed(0)
    model = Forecaster(n_targets=2, n_past=0, n_future=3, horizon=5, lookback=7, hidden_size=8,
                       likelihood=likelihood, quantiles=[0.05, 0.25, 0.5, 0.75, 0.95], num_series=3,
                       series_embedding_dim=4)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=2.0)  # wild weights: the ordering is structural, not learned
    params = model(torch.randn(16, 7, 5), torch.randn(16, 5, 3), torch.randint(0, 4, (16,)))
    q = model.quantiles_of(params, [0.05, 0.25, 0.5, 0.75, 0.95])
    assert q.shape == (16, 5, 2, 5)
    assert (q.diff(dim=-1) >= 0).all()
    torch.testing.assert_close(q[..., 2], model.point(params))
    assert torch.isfinite(model.loss(params, torch.randn(16, 5, 2)))


def test_calendar_features_and_time_helpers():
    times = np.array(["2024-01-01T00", "2024-01-06T13"], dtype="datetime64[s]")  # a Monday, a Saturday
    f = calendar_features(times, ["hour", "weekday", "month"])
    np.testing.assert_allclose(np.arctan2(f[:, 0], f[:, 1]) % (2 * np.pi) * 24 / (2 * np.pi), [0, 13], atol=1e-9)
    np.testing.assert_allclose(np.arctan2(f[:, 2], f[:, 3]) % (2 * np.pi) * 7 / (2 * np.pi), [0, 5], atol=1e-9)
    assert infer_period("1h") == 24 and infer_period("1M") == 12 and infer_period("1D") == 7 and infer_period(None) == 1
    s = TimeSeries.from_arrays([1.0, 2.0], time=np.array(["2024-01", "2024-02"], dtype="datetime64[M]").astype("datetime64[s]"))
    s.freq = "1M"
    assert [str(t)[:10] for t in future_times(s, 2)] == ["2024-03-01", "2024-04-01"]


def test_config_requires_a_target_and_valid_choices(tmp_path):
    data = _write_sine(tmp_path / "s.csv", n=60)
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2 and "data.target is required" in result.output
    assert runner.invoke(app, ["train", "forecasting", "--print-config"]).exit_code == 0
    with pytest.raises(ConfigError, match="calendar"):
        load_config(Config, None, ["data.target=y", "data.calendar=fortnight"])
    cfg = load_config(Config, None, ["data.target=a,b", "data.test_size=24", "model.quantiles=[0.2,0.8]"])
    assert cfg.data.target == ["a", "b"] and cfg.data.test_size == 24 and cfg.levels() == [0.2, 0.5, 0.8]
    # numbers written comma-separated on the command line, as the help text says
    cfg = load_config(Config, None, ["data.target=1,true", "model.quantiles=0.1,0.9"])
    assert cfg.data.target == ["1", "true"] and cfg.levels() == [0.1, 0.5, 0.9]
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(Config, None, ["data.target=y", "model.quantiles=0.1,high"])


# -- end to end --------------------------------------------------------------------------------
def test_train_evaluate_predict_beats_seasonal_naive(tmp_path):
    data = _write_sine(tmp_path / "sine.csv")
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), "--set", "data.time_column=date",
                                 "--set", "data.target=sales", "--set", "data.horizon=6", "--set", "data.lookback=24",
                                 "--set", "data.test_size=48", *FAST, "--out", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    run = Path(metrics["run"])
    assert metrics["beats_seasonal_naive"] and metrics["test"]["mase"] < metrics["baselines"]["seasonal_naive"]["mase"]
    assert set(metrics["baselines"]) >= {"naive", "seasonal_naive", "drift"}
    assert 0 <= metrics["test"]["coverage"] <= 1 and metrics["test"]["crps"] > 0
    for name in ("report.md", "forecasts.png", "error_by_horizon.png", "forecasting.json", "metrics.json"):
        assert (run / name).is_file()
    assert "beats seasonal naive" in (run / "report.md").read_text()

    ev = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "--json"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.output)["beats_seasonal_naive"] is True

    pred = runner.invoke(app, ["predict", str(run), str(data), "--json"])
    assert pred.exit_code == 0, pred.output
    rows = [json.loads(line) for line in pred.output.splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["time"] == "2010-01-01" and all(r["q0.1"] <= r["q0.5"] <= r["q0.9"] for r in rows)
    assert 15 < rows[0]["forecast"] < 35  # original units (the series ends near 22 +- 3)

    again = TrainedForecaster.load(run)
    assert again.forecast() == again.forecast(data) == TrainedForecaster.load(run).predict([str(data)])
    write_forecasts(rows, tmp_path / "f.csv")
    write_forecasts(rows, tmp_path / "f.json")
    assert (tmp_path / "f.csv").read_text().splitlines()[0].startswith("series_id,time,step,target,forecast")
    assert json.loads((tmp_path / "f.json").read_text()) == rows


def _write_panel(path: Path, n: int = 150, with_future: bool = True, blank_promo_at: int | None = None) -> Path:
    rng = np.random.default_rng(3)
    lines = ["day,store,units,temp,promo"]
    days = np.datetime64("2023-01-01") + np.arange(n)
    for store, level in (("a", 20.0), ("b", 50.0)):
        promo = (np.arange(n) % 5 == 0).astype(float)
        units = level + 5 * np.sin(2 * np.pi * np.arange(n) / 7) + 8 * promo + rng.normal(0, 0.5, n)
        temp = rng.normal(15, 3, n)
        for i in range(n):
            p = "" if blank_promo_at == i and store == "b" else f"{promo[i]:.0f}"
            lines.append(f"{days[i]},{store},{units[i]:.3f},{temp[i]:.2f},{p}")
    path.write_text("\n".join(lines) + "\n")
    if with_future:
        fut = ["day,store,promo"] + [f"{np.datetime64('2023-01-01') + n + h},{s},{int((n + h) % 5 == 0)}"
                                     for s in ("a", "b") for h in range(7)]
        path.with_name("future.csv").write_text("\n".join(fut) + "\n")
    return path


def test_many_series_autoregressive_gaussian_with_covariates(tmp_path):
    data = _write_panel(tmp_path / "panel.csv")
    common = ["--set", "data.time_column=day", "--set", "data.target=units", "--set", "data.series_id_column=store",
              "--set", "data.past_covariates=temp", "--set", "data.future_covariates=promo", "--set", "data.horizon=7",
              "--set", "data.lookback=14"]
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), *common, "--set",
                                 "model.decoder=autoregressive", "--set", "model.likelihood=gaussian", "--set",
                                 "train.epochs=2", "--set", "model.hidden_size=8", "--set", "evaluation.baselines=naive,ets",
                                 "--out", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["series"] == 2 and {"crps", "coverage", "mase"} <= set(metrics["test"])
    assert "ets" in metrics["baselines"] or "ets" in metrics["baselines_skipped"]
    run = metrics["run"]
    cfg = json.loads((Path(run) / "forecasting.json").read_text())
    assert cfg["calendar"] == ["weekday", "month"] and cfg["period"] == 7
    model = TrainedForecaster.load(run)
    with pytest.raises(ValueError, match=r"needs the known-future covariates \['promo'\]"):
        model.forecast(data)
    rows = model.forecast(data, tmp_path / "future.csv")
    assert len(rows) == 2 * 7 and {r["series_id"] for r in rows} == {"a", "b"}
    assert rows[0]["time"] == "2023-05-31"
    short = tmp_path / "short_future.csv"
    short.write_text("\n".join((tmp_path / "future.csv").read_text().splitlines()[:5]) + "\n")
    out = runner.invoke(app, ["predict", run, str(data), str(short)])
    assert out.exit_code == 2 and "missing at" in out.output and len(out.output.strip().splitlines()) == 1


BAD_INPUTS = {
    "unparseable": ("date,sales\n2020-01-01,1\nnot-a-date,2\n", [], "cannot parse"),
    "duplicate": ("date,sales\n2020-01-01,1\n2020-01-02,2\n2020-01-02,3\n2020-01-03,4\n", [], "duplicate timestamp"),
    "gap": ("date,sales\n" + "".join(f"2020-01-{d:02d},{d}\n" for d in (1, 2, 3, 5, 6, 7)), [], "gap of 1 missing"),
    "nan_target": ("date,sales\n2020-01-01,1\n2020-01-02,\n2020-01-03,3\n", [], "missing value"),
    "short": ("date,sales\n" + "".join(f"2020-01-{d:02d},{d}\n" for d in range(1, 11)), [], "fewer than lookback"),
    "future_cov_missing": ("date,sales,promo\n" + "".join(f"2020-01-{d:02d},{d},{'' if d == 20 else 1}\n"
                                                          for d in range(1, 29)),
                           ["--set", "data.future_covariates=promo"], "missing value in column 'promo'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_one_line_error(tmp_path, case):
    text, extra, message = BAD_INPUTS[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    result = runner.invoke(app, ["train", "forecasting", "--train", str(path), "--set", "data.time_column=date",
                                 "--set", "data.target=sales", "--set", "data.lookback=8", "--set", "data.horizon=4",
                                 *extra, "--quiet", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output


def test_gaps_are_filled_by_the_stated_policy_and_reported(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    days = np.datetime64("2021-01-01") + np.arange(120)
    keep = np.ones(120, bool)
    keep[[30, 31, 70]] = False
    values = 5 + np.sin(np.arange(120) / 3) + rng.normal(0, 0.1, 120)
    path = tmp_path / "gappy.csv"
    path.write_text("date,sales\n" + "".join(f"{d},{v:.3f}\n" for d, v, k in zip(days, values, keep) if k))
    monkeypatch.setattr("rnnkit.tasks.forecasting.statsmodels_available", lambda: False)
    result = runner.invoke(app, ["train", "forecasting", "--train", str(path), "--set", "data.time_column=date",
                                 "--set", "data.target=sales", "--set", "data.fill=interpolate", "--set",
                                 "data.lookback=10", "--set", "data.horizon=5", "--set", "train.epochs=1", "--set",
                                 "model.hidden_size=4", "--json", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    report = metrics["data_reports"]["0"]
    assert report["num_gaps"] == 2 and report["num_missing_steps"] == 3 and report["policy"] == "interpolate"
    assert "statsmodels is not installed" in metrics["baselines_skipped"]["ets"]
    text = (Path(metrics["run"]) / "report.md").read_text()
    assert "2 gaps (3 steps)" in text and "Baseline ets was skipped" in text
    assert "2 gaps / 3 missing steps" in (Path(metrics["run"]) / "train.log").read_text()


@pytest.mark.data
def test_airline_passengers_end_to_end(shared_data, tmp_path):
    data = shared_data / "airline-passengers" / "Airline.csv"
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), "--set", "data.time_column=Date",
                                 "--set", "data.target=Passengers", "--set", "data.horizon=12", "--set",
                                 "data.lookback=24", "--set", "data.test_size=24", "--set", "data.val_size=24",
                                 "--set", "train.epochs=3", "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["test"]["windows"] == 2


def test_data_errors_name_the_config_key_to_set(tmp_path):
    path = tmp_path / "gap.csv"
    path.write_text("date,sales\n" + "".join(f"2020-01-{d:02d},{d}\n" for d in range(1, 29) if d != 10))
    result = runner.invoke(app, ["train", "forecasting", "--train", str(path), "--set", "data.time_column=date",
                                 "--set", "data.target=sales", "--set", "data.lookback=8", "--set", "data.horizon=4",
                                 "--quiet", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "fix: add --set data.fill=ffill (or interpolate, zero) to fill gaps" in result.output
    assert "fill=" not in result.output.replace("data.fill=", "") and "regular" not in result.output


# -- review fixes ------------------------------------------------------------------------------
def _write_stores(path: Path, stores: dict[str, float], n: int = 90, jump_after: int | None = None) -> Path:
    rng = np.random.default_rng(7)
    days = np.datetime64("2022-01-01") + np.arange(n)
    lines = ["date,store,sales"]
    for store, level in stores.items():
        y = level + 3 * np.sin(2 * np.pi * np.arange(n) / 7) + 0.2 * np.arange(n) + rng.normal(0, 0.3, n)
        if jump_after is not None:
            y[jump_after:] += 10 * level  # a test period far above the history
        lines += [f"{d},{store},{v:.3f}" for d, v in zip(days, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def store_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stores")
    data = _write_stores(tmp / "stores.csv", {"a": 10.0, "b": 40.0})
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), "--set", "data.time_column=date",
                                 "--set", "data.target=sales", "--set", "data.series_id_column=store", "--set",
                                 "data.lookback=14", "--set", "data.horizon=7", "--set", "data.test_size=21", "--set",
                                 "train.epochs=1", "--set", "model.hidden_size=4", "--set", "train.accelerator=cpu",
                                 "--set", "evaluation.baselines=naive,seasonal_naive,drift", "--quiet", "--json",
                                 "--out", str(tmp / "runs")])
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.output)["run"]), data, tmp


def test_predict_reads_the_history_from_standard_input(store_run):
    run, data, _ = store_run
    from_file = runner.invoke(app, ["predict", str(run), "--file", str(data), "--json"])
    from_stdin = runner.invoke(app, ["predict", str(run), "--file", "-", "--json"], input=data.read_text())
    assert from_file.exit_code == 0 and from_stdin.exit_code == 0, from_stdin.output
    assert from_stdin.stdout == from_file.stdout and len(from_stdin.stdout.splitlines()) == 2 * 7  # 2 stores


def test_unseen_series_results_do_not_depend_on_earlier_calls(store_run):
    # Statistics of a series unseen in training were cached in the pipeline by the first call: a
    # forecast (fitted on the whole file) before an evaluate leaked the test period into the
    # backtest's scaling, and an evaluate before a forecast changed the forecast.
    run, _, tmp = store_run
    new = _write_stores(tmp / "new.csv", {"c": 100.0}, jump_after=69)
    alone = TrainedForecaster.load(run).evaluate(new)
    model = TrainedForecaster.load(run)
    model.forecast(new)
    assert model.evaluate(new) == alone
    forecast_alone = TrainedForecaster.load(run).forecast(new)
    model = TrainedForecaster.load(run)
    model.evaluate(new)
    assert model.forecast(new) == forecast_alone


def test_evaluate_metrics_match_a_hand_computation(store_run):
    run, data, _ = store_run
    model = TrainedForecaster.load(run)
    bt = model.backtest(data)
    metrics = model.evaluate(data)
    raw = {s: np.array([float(line.split(",")[2]) for line in data.read_text().splitlines()[1:]
                        if line.split(",")[1] == s]) for s in ("a", "b")}
    errs, scaled, sq = [], [], []
    for i, (k, t0) in enumerate(bt.windows):
        y = raw["ab"[k]]
        np.testing.assert_allclose(bt.y[i, :, 0], y[t0:t0 + 7])
        history = y[:len(y) - 21]  # evaluate: the part of the file before its test period
        scale = np.mean(np.abs(history[7:] - history[:-7]))  # in-sample seasonal naive MAE, season 7
        e = np.abs(y[t0:t0 + 7] - bt.point[i, :, 0])
        errs += e.tolist()
        sq += (e**2).tolist()
        scaled += (e / scale).tolist()
        np.testing.assert_allclose(bt.baselines["seasonal_naive"][i, :, 0], y[t0 - 7:t0])
    assert len(bt.windows) == 6  # 3 origins (every 7 steps over 21) x 2 series
    assert metrics["mae"] == pytest.approx(np.mean(errs))
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean(sq)))
    assert metrics["mase"] == pytest.approx(np.mean(scaled))


def test_beats_seasonal_naive_agrees_with_the_verdict(store_run, monkeypatch):
    # Two series of very different scales: the model wins on MASE (scale-free, as the verdict judges)
    # and loses on MAE; the flag used to follow MAE and contradict the report.
    run, data, _ = store_run
    y = np.zeros((2, 1, 1))
    bt = Backtest(y=y, point=np.array([[[1.0]], [[0.0]]]), quantiles=None, levels=[0.5], std=None,
                  baselines={"seasonal_naive": np.array([[[0.0]], [[0.5]]])}, scale=np.array([[[10.0]], [[0.1]]]),
                  windows=[(0, 0), (1, 0)], skipped={})
    monkeypatch.setattr(TrainedForecaster, "backtest", lambda self, path, overrides=(), stride=None: bt)
    metrics = TrainedForecaster.load(run).evaluate(data)
    assert metrics["mae"] > metrics["seasonal_naive_mae"] and metrics["mase"] < metrics["seasonal_naive_mase"]
    base = {"seasonal_naive": {"mase": metrics["seasonal_naive_mase"], "mae": metrics["seasonal_naive_mae"]}}
    assert "The model beats seasonal naive" in verdict(metrics, base)
    assert metrics["beats_seasonal_naive"] is True


def test_evaluate_and_predict_errors_name_the_problem_and_the_fix(store_run):
    run, data, tmp = store_run
    short = tmp / "short.csv"
    short.write_text("\n".join(data.read_text().splitlines()[:41]) + "\n")  # 40 steps of store a
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(short), "--set", "data.test_size=0.125"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "the evaluated period (the last data.test_size = 5 of 40 steps)" in result.output
    assert "fix: add --set data.test_size=26" in result.output
    ok = runner.invoke(app, ["evaluate", str(run), "--data", str(short), "--set", "data.test_size=26", "--json"])
    assert ok.exit_code == 0, ok.output
    tiny = tmp / "tiny.csv"
    tiny.write_text("\n".join(data.read_text().splitlines()[:11]) + "\n")
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(tiny)])
    assert "has 10 steps, fewer than the trained model's lookback + horizon = 14 + 7" in result.output
    for args in (["predict", str(run), str(tmp / "nope.csv")], ["evaluate", str(run), "--data", str(tmp / "nope.csv")]):
        result = runner.invoke(app, args)
        assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1, result.output
        assert "data file not found" in result.output and "fix:" in result.output


def test_month_end_series_forecast_month_ends(tmp_path):
    t = np.datetime64("2019-01", "M") + np.arange(40)
    ends = ((t + 1).astype("datetime64[D]") - 1)
    path = tmp_path / "eom.csv"
    path.write_text("date,sales\n" + "".join(f"{d},{10 + np.sin(i / 2):.3f}\n" for i, d in enumerate(ends)))
    s = Pipeline.read_raw(path, DataConfig(time_column="date", target=["sales"])).only()
    assert s.freq == "1M" and infer_period(s.freq) == 12
    assert [str(d)[:10] for d in future_times(s, 3)] == ["2022-05-31", "2022-06-30", "2022-07-31"]


def test_split_size_errors_name_the_config_key(tmp_path):
    # They used to say "test fraction 1.5 > 1" / "test size must be >= 0", naming no key to change.
    with pytest.raises(ConfigError, match=r"data\.test_size: must be a number of steps >= 0 or a fraction"):
        load_config(Config, None, ["data.target=y", "data.test_size=1.5"]).validate()
    with pytest.raises(ConfigError, match=r"data\.val_size"):
        load_config(Config, None, ["data.target=y", "data.val_size=-3"]).validate()
    data = _write_sine(tmp_path / "sine.csv", n=60)
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), "--set", "data.time_column=date",
                                 "--set", "data.target=sales", "--set", "data.lookback=8", "--set", "data.horizon=4",
                                 "--set", "data.test_size=100", "--quiet", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "fix: lower data.val_size and data.test_size" in result.output, result.output


def test_evaluate_honours_a_seasonal_period_override(store_run):
    # `rnnkit evaluate RUN --data F --set data.seasonal_period=1` was accepted and silently ignored.
    run, data, _ = store_run
    default = TrainedForecaster.load(run).evaluate(data)
    one = TrainedForecaster.load(run).evaluate(data, ["data.seasonal_period=1"])
    assert one["seasonal_naive_mae"] == pytest.approx(one["naive_mae"])  # a season of 1 step is the naive forecast
    assert default["seasonal_naive_mae"] != pytest.approx(default["naive_mae"])
    assert one["mae"] == default["mae"] and one["mase"] != default["mase"]  # same forecasts, another scale
    with pytest.raises(ConfigError, match="data.seasonal_period: must be >= 1"):
        TrainedForecaster.load(run).evaluate(data, ["data.seasonal_period=0"])
