"""Forecast errors are scored on observed target values only: positions that ``data.fill`` filled
(a gap in the timestamps or an empty cell) may feed the model but are left out of every metric,
counted, and a period with no observed target value is refused with a one-line error."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.errors import DataError
from rnnkit.metrics import forecasting as fm
from rnnkit.tasks.forecasting import (
    DataConfig,
    EvaluationConfig,
    Pipeline,
    TrainedForecaster,
    _split,
    observed_mase_scale,
    split_breaks,
)
from rnnkit.tasks.forecasting_models import Forecaster

runner = CliRunner()
N, LOOKBACK, HORIZON, TEST, SEASON = 60, 7, 3, 12, 7
GAP, EMPTY = 50, 55  # a missing row and an empty target cell, both inside the test period [48, 60)
TRAIN_GAP = 20  # a missing row in the history used for the MASE scale


def _values(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(N)
    return np.round(10 + 3 * np.sin(2 * np.pi * t / SEASON) + 0.1 * t + rng.normal(0, 0.4, N), 3)


def _write(path: Path, missing_rows: tuple[int, ...] = (), empty_cells: tuple[int, ...] = ()) -> Path:
    days = np.datetime64("2021-01-01") + np.arange(N)
    y = _values()
    lines = [f"{d},{'' if i in empty_cells else y[i]}" for i, d in enumerate(days) if i not in missing_rows]
    path.write_text("date,sales\n" + "\n".join(lines) + "\n")
    return path


def _model(path: Path) -> TrainedForecaster:
    """An untrained (seeded) model with a pipeline fitted on ``path``: the metrics are about scoring."""
    cfg = DataConfig(time_column="date", target=["sales"], fill="interpolate", calendar=[], lookback=LOOKBACK,
                     horizon=HORIZON, val_size=6, test_size=TEST)
    series = list(Pipeline.read_raw(path, cfg))
    pipe = Pipeline.fit(series, _split(series, cfg), cfg)
    torch.manual_seed(0)
    net = Forecaster(n_targets=1, n_past=0, n_future=0, horizon=HORIZON, lookback=LOOKBACK, hidden_size=4)
    return TrainedForecaster(net, pipe, [0.1, 0.5, 0.9],
                             EvaluationConfig(baselines=["naive", "seasonal_naive", "drift"]))


@pytest.fixture()
def gappy(tmp_path: Path) -> Path:
    return _write(tmp_path / "gappy.csv", missing_rows=(TRAIN_GAP, GAP), empty_cells=(EMPTY,))


def test_metrics_are_computed_over_observed_targets_only(gappy: Path) -> None:
    model = _model(gappy)
    bt = model.backtest(gappy)
    metrics = model.evaluate(gappy)
    raw = _values()
    observed = np.ones(N, bool)
    observed[[TRAIN_GAP, GAP, EMPTY]] = False
    steps = np.arange(N)
    filled = np.interp(steps, steps[observed], raw[observed])  # data.fill=interpolate, by hand
    origins = [t0 for _, t0 in bt.windows]
    assert origins == [48, 51, 54, 57]
    # the MASE scale: seasonal differences of the history before the test period, observed pairs only
    pairs = [t for t in range(SEASON, 48) if observed[t] and observed[t - SEASON]]
    assert len(pairs) == 48 - SEASON - 2  # the pairs (20, 13) and (27, 20) are left out
    scale = np.mean([abs(raw[t] - raw[t - SEASON]) for t in pairs])
    errs, snaive, pinball = [], [], []
    for i, t0 in enumerate(origins):
        np.testing.assert_allclose(bt.y[i, :, 0], filled[t0:t0 + HORIZON])  # the model saw filled values
        np.testing.assert_array_equal(bt.observed[i, :, 0], observed[t0:t0 + HORIZON])
        for h in range(HORIZON):
            if not observed[t0 + h]:
                continue
            y = raw[t0 + h]
            errs.append(y - bt.point[i, h, 0])
            snaive.append(y - filled[t0 - SEASON + h])  # seasonal naive reads the (filled) season before
            e = y - bt.quantiles[i, h, 0]
            pinball.append(np.mean(np.maximum(np.array([0.1, 0.5, 0.9]) * e, (np.array([0.1, 0.5, 0.9]) - 1) * e)))
    errs_a, snaive_a = np.abs(errs), np.abs(snaive)
    assert len(errs) == 10 and metrics["filled_targets_excluded"] == 2
    assert metrics["mae"] == pytest.approx(errs_a.mean())
    assert metrics["rmse"] == pytest.approx(math.sqrt(np.mean(errs_a**2)))
    assert metrics["mase"] == pytest.approx(errs_a.mean() / scale)
    assert metrics["seasonal_naive_mae"] == pytest.approx(snaive_a.mean())
    assert metrics["seasonal_naive_rmse"] == pytest.approx(math.sqrt(np.mean(snaive_a**2)))
    assert metrics["seasonal_naive_mase"] == pytest.approx(snaive_a.mean() / scale)
    assert metrics["quantile_loss"] == pytest.approx(np.mean(pinball))
    # ... which is not what scoring every position, filled ones included, gave before
    old_scale = fm.mase_scale(filled[:48, None], SEASON)
    assert metrics["mae"] != pytest.approx(fm.mae(bt.y, bt.point))
    assert metrics["rmse"] != pytest.approx(fm.rmse(bt.y, bt.point))
    assert metrics["mase"] != pytest.approx(fm.mase(bt.y, bt.point, old_scale))
    assert metrics["seasonal_naive_mae"] != pytest.approx(fm.mae(bt.y, bt.baselines["seasonal_naive"]))
    assert metrics["notes"] == ["2 of 12 forecast target positions (window x step x target) were filled by "
                                "data.fill, not observed, and are excluded from every error metric of the model "
                                "and the baselines."]
    by_h = bt.by_horizon(bt.point)  # the gap (step 50) is the 3rd step of the window at 48, 55 the 2nd at 54
    assert by_h[0] == pytest.approx(np.mean(np.abs(raw[origins] - bt.point[:, 0, 0])))
    assert by_h[2] == pytest.approx(np.mean(np.abs(raw[[53, 56, 59]] - bt.point[1:, 2, 0])))


def test_data_without_filled_values_scores_exactly_as_before(tmp_path: Path) -> None:
    clean = _write(tmp_path / "clean.csv")
    model = _model(clean)
    bt = model.backtest(clean)
    metrics = model.evaluate(clean)
    assert bt.observed is not None and bt.observed.all()
    # the unmasked formulas, on the whole arrays, as before masks existed: equal to the last bit
    np.testing.assert_array_equal(bt.scale[0, 0], fm.mase_scale(_values()[:48, None], SEASON))
    old = fm.point_metrics(bt.y, bt.point, bt.scale)
    old.update(fm.probabilistic_metrics(bt.y, bt.quantiles, bt.levels))
    for key, value in old.items():
        assert metrics[key] == value, key
    for name, pred in bt.baselines.items():
        for key, value in fm.point_metrics(bt.y, pred, bt.scale).items():
            assert metrics[f"{name}_{key}"] == value, (name, key)
    assert bt.by_horizon(bt.point) == fm.by_horizon(bt.y, bt.point)
    assert metrics["filled_targets_excluded"] == 0 and "notes" not in metrics
    # a Backtest without a mask (built by hand, or from arrays) scores the same
    assert dataclasses.replace(bt, observed=None).metrics() == bt.metrics()


def test_a_period_with_every_target_filled_is_a_one_line_error(tmp_path: Path, gappy: Path) -> None:
    model = _model(gappy)
    hollow = _write(tmp_path / "hollow.csv", empty_cells=tuple(range(48, N)))
    with pytest.raises(DataError) as err:
        model.evaluate(hollow)
    text = str(err.value)
    assert "\n" not in text
    assert "every target value in the evaluated period was filled by data.fill=interpolate" in text
    assert "fix: give a file with observed values in that period" in text


def test_observed_mase_scale_uses_observed_pairs_only() -> None:
    h = np.array([[1.0], [3.0], [2.0], [6.0], [4.0], [9.0]])
    ok = np.array([[True], [True], [True], [False], [True], [True]])
    # season 2: pairs (2,0) |2-1| and (4,2) |4-2|; (3,1) and (5,3) touch the filled step 3
    assert observed_mase_scale(h, ok, 2) == pytest.approx([1.5])
    np.testing.assert_array_equal(observed_mase_scale(h, np.ones_like(ok), 2), fm.mase_scale(h, 2))
    np.testing.assert_array_equal(observed_mase_scale(h, None, 1), fm.mase_scale(h, 1))
    assert np.isnan(observed_mase_scale(h, np.zeros_like(ok), 2)).all()  # no observed pair: MASE undefined


def test_training_reports_the_excluded_positions_and_refuses_a_hollow_test_period(tmp_path: Path,
                                                                                   gappy: Path) -> None:
    common = ["train", "forecasting", "--set", "data.time_column=date", "--set", "data.target=sales", "--set",
              "data.fill=interpolate", "--set", f"data.lookback={LOOKBACK}", "--set", f"data.horizon={HORIZON}",
              "--set", "data.val_size=6", "--set", f"data.test_size={TEST}", "--set", "train.epochs=1", "--set",
              "model.hidden_size=4", "--set", "train.accelerator=cpu", "--set",
              "evaluation.baselines=naive,seasonal_naive", "--out", str(tmp_path / "runs")]
    result = runner.invoke(app, [*common, "--train", str(gappy), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    run = Path(metrics["run"])
    assert metrics["test"]["filled_targets_excluded"] == 2 and metrics["dev"]["filled_targets_excluded"] == 0
    assert json.loads((run / "metrics.json").read_text())["test"]["filled_targets_excluded"] == 2
    assert "2 of 12 forecast target positions" in (run / "report.md").read_text()
    assert "test backtest: 2 of 12 forecast target positions" in (run / "train.log").read_text()
    hollow = _write(tmp_path / "hollow.csv", empty_cells=tuple(range(48, N)))
    result = runner.invoke(app, [*common, "--train", str(hollow), "--quiet"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "every target value in the test period was filled by data.fill=interpolate" in errors[0]
    assert "fix:" in errors[0]


def test_a_period_whose_scored_windows_are_all_filled_is_refused_before_training(tmp_path: Path) -> None:
    # val_size=7 with horizon = stride = 3: the validation windows start at 41 and 44 and score steps 41-46;
    # step 47 is observed but lies in no window, so nothing the backtest scores is observed
    hollow = _write(tmp_path / "hollow_val.csv", empty_cells=tuple(range(41, 47)))
    result = runner.invoke(app, ["train", "forecasting", "--set", "data.time_column=date", "--set",
                                 "data.target=sales", "--set", "data.fill=interpolate", "--set",
                                 f"data.lookback={LOOKBACK}", "--set", f"data.horizon={HORIZON}", "--set",
                                 "data.val_size=7", "--set", f"data.test_size={TEST}", "--set", "train.epochs=1",
                                 "--set", "model.hidden_size=4", "--set", "train.accelerator=cpu", "--set",
                                 "evaluation.baselines=naive", "--out", str(tmp_path / "runs"), "--train",
                                 str(hollow)])
    assert result.exit_code == 2, result.output
    assert "every target value in the validation period was filled" in result.output
    assert "epoch 1" not in result.output  # refused before training, not after it


# -- data.fill=interpolate never reads a later period ------------------------------------------
# N=60, val_size=6, test_size=12: train [0, 42), validation [42, 48), test [48, 60)
TRAIN_END, VAL_END = 42, 48


def _write_varied(path: Path, changed: dict[int, float], missing_rows: tuple[int, ...] = (),
                  empty_cells: tuple[int, ...] = ()) -> Path:
    """``_write`` with some observed values replaced."""
    days = np.datetime64("2021-01-01") + np.arange(N)
    y = _values()
    for i, v in changed.items():
        y[i] = v
    lines = [f"{d},{'' if i in empty_cells else y[i]}" for i, d in enumerate(days) if i not in missing_rows]
    path.write_text("date,sales\n" + "\n".join(lines) + "\n")
    return path


def _windows_of(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, list[np.ndarray]]:
    """Train on ``path`` (one tiny epoch) and return the inputs and targets of every training and
    validation window the model was given."""
    import rnnkit.tasks.forecasting as fc

    seen: dict[str, list[np.ndarray]] = {}
    original = fc._Windows.__init__

    def spy(self: fc._Windows, series: list, ids: list, period: str, *args: object, **kwargs: object) -> None:
        original(self, series, ids, period, *args, **kwargs)
        items = [self[i] for i in range(len(self))]
        seen[period] = [np.stack([x.numpy() for x, *_ in items]), np.stack([y.numpy() for *_, y in items])]

    with monkeypatch.context() as patch:  # undone on return: a second call spies on the real class
        patch.setattr(fc._Windows, "__init__", spy)
        patch.setattr(fc, "statsmodels_available", lambda: False)
        result = runner.invoke(app, ["train", "forecasting", "--set", "data.time_column=date", "--set",
                                     "data.target=sales", "--set", "data.fill=interpolate", "--set",
                                     f"data.lookback={LOOKBACK}", "--set", f"data.horizon={HORIZON}", "--set",
                                     "data.val_size=6", "--set", f"data.test_size={TEST}", "--set",
                                     "train.epochs=1", "--set", "model.hidden_size=4", "--set",
                                     "train.accelerator=cpu", "--set", "evaluation.baselines=naive", "--quiet",
                                     "--out", str(tmp_path / "runs"), "--train", str(path)])
    assert result.exit_code == 0, result.output
    assert set(seen) == {"train", "val"}
    return seen


def _filled(path: Path, breaks: object) -> np.ndarray:
    cfg = DataConfig(time_column="date", target=["sales"], fill="interpolate", calendar=[])
    return Pipeline.read_raw(path, cfg, breaks).only().targets[:, 0]


def test_interpolation_at_the_end_of_training_does_not_read_the_validation_period(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _values()
    # the last training step is an empty cell; only the first validation value differs between the files
    a = _write_varied(tmp_path / "a.csv", {}, empty_cells=(TRAIN_END - 1,))
    b = _write_varied(tmp_path / "b.csv", {TRAIN_END: raw[TRAIN_END] + 100.0}, empty_cells=(TRAIN_END - 1,))
    breaks = split_breaks(None, 6, TEST)
    assert breaks(N) == (TRAIN_END, VAL_END, N)
    fa, fb = _filled(a, breaks), _filled(b, breaks)
    # no later observed value inside the training period: forward fill from the last training value
    assert fa[TRAIN_END - 1] == fb[TRAIN_END - 1] == raw[TRAIN_END - 2]
    np.testing.assert_array_equal(fa[:TRAIN_END], fb[:TRAIN_END])
    # without period breaks (a forecast from the whole file) the gap is interpolated as before
    assert _filled(a, None)[TRAIN_END - 1] == pytest.approx((raw[TRAIN_END - 2] + raw[TRAIN_END]) / 2)
    # what training feeds the model (inputs and targets of every training window, scaled on the
    # training period) is the same whatever the first validation value is
    wa, wb = _windows_of(a, monkeypatch, tmp_path), _windows_of(b, monkeypatch, tmp_path)
    assert wa["train"][0].shape[0] > 0
    for got, want in zip(wb["train"], wa["train"]):
        np.testing.assert_array_equal(got, want)


def test_interpolation_at_the_end_of_validation_does_not_read_the_test_period(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _values()
    # a missing row (a gap) at the last validation step; only the first test value differs
    a = _write_varied(tmp_path / "a.csv", {}, missing_rows=(VAL_END - 1,))
    b = _write_varied(tmp_path / "b.csv", {VAL_END: raw[VAL_END] - 50.0}, missing_rows=(VAL_END - 1,))
    fa, fb = _filled(a, split_breaks(None, 6, TEST)), _filled(b, split_breaks(None, 6, TEST))
    assert fa[VAL_END - 1] == fb[VAL_END - 1] == raw[VAL_END - 2]
    np.testing.assert_array_equal(fa[:VAL_END], fb[:VAL_END])
    wa, wb = _windows_of(a, monkeypatch, tmp_path), _windows_of(b, monkeypatch, tmp_path)
    for period in ("train", "val"):
        for got, want in zip(wb[period], wa[period]):
            np.testing.assert_array_equal(got, want)
    # evaluate/backtest splits the file into history and test period the same way: the forecast from
    # the first test origin reads the filled last history step, which must not depend on the first
    # test value (the actual it is scored against)
    model = _model(a)
    bta, btb = model.backtest(a), model.backtest(b)
    assert bta.windows[0][1] == btb.windows[0][1] == VAL_END
    np.testing.assert_array_equal(bta.point[0], btb.point[0])
    assert not np.array_equal(bta.point[1], btb.point[1])  # later origins read the first test value
    assert bta.y[0, 0, 0] == raw[VAL_END] and btb.y[0, 0, 0] == raw[VAL_END] - 50.0
    assert bta.observed is not None and bta.observed[0].all()  # the window's targets were all observed


def test_interpolation_inside_a_period_may_read_the_past_of_an_earlier_one(tmp_path: Path) -> None:
    raw = _values()
    # the first validation step is missing: it lies between the last training value (the past, known
    # at forecast time) and the next validation value, and is interpolated between the two
    a = _write_varied(tmp_path / "a.csv", {}, empty_cells=(TRAIN_END, 30))
    filled = _filled(a, split_breaks(None, 6, TEST))
    assert filled[TRAIN_END] == pytest.approx((raw[TRAIN_END - 1] + raw[TRAIN_END + 1]) / 2)
    assert filled[30] == pytest.approx((raw[29] + raw[31]) / 2)  # inside the training period: as before
    # the filled positions stay unobserved, so they are never scored
    cfg = DataConfig(time_column="date", target=["sales"], fill="interpolate", calendar=[])
    s = Pipeline.read_raw(a, cfg, split_breaks(None, 6, TEST)).only()
    assert not s.observed[TRAIN_END, 0] and not s.observed[30, 0] and s.observed.sum() == N - 2
