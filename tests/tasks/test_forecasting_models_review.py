"""Review of the forecasting network and its probabilistic outputs against independent references:
likelihoods and quantiles against scipy.stats, the pinball loss against its definition (with the
``observed`` mask, gradients included), positivity transforms at extreme pre-activations, the point
forecast of each head, window normalisation as an exact shift equivariance, the autoregressive
decoder's inputs (teacher forcing, its schedule, no reading of future targets), the log transform and
the scalers' round trip in the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data import DataError
from rnnkit.data.timeseries import TimeSeries
from rnnkit.tasks import engine
from rnnkit.tasks.forecasting import DataConfig, Pipeline, _split, run_backtest, transform_targets
from rnnkit.tasks.forecasting_models import Forecaster, student_t_quantile

stats = pytest.importorskip("scipy.stats")
runner = CliRunner()
LEVELS = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999]


def _model(**kw: Any) -> Forecaster:
    base: dict[str, Any] = dict(n_targets=2, n_past=1, n_future=2, horizon=5, lookback=12, hidden_size=8, season=4)
    base.update(kw)
    return Forecaster(**base).double()


def _inputs(batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 12, 5, generator=g, dtype=torch.float64)  # 2 targets, 1 past, 2 future columns
    fut = torch.randn(batch, 5, 2, generator=g, dtype=torch.float64)
    return x, fut, torch.zeros(batch, dtype=torch.long)


def _params(model: Forecaster, scale: float = 2.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(4, 5, model.n_targets, model.k, generator=g, dtype=torch.float64) * scale
    return model._finish(raw, torch.zeros(4, 1, model.n_targets, dtype=torch.float64))


# -- (1) losses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("likelihood", ["gaussian", "student_t"])
def test_negative_log_likelihoods_match_scipy(likelihood: str) -> None:
    model = _model(likelihood=likelihood)
    params = _params(model)
    y = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    p, yy = params.numpy(), y.numpy()
    if likelihood == "gaussian":
        nll = -stats.norm.logpdf(yy, loc=p[..., 0], scale=p[..., 1])
    else:
        nll = -stats.t.logpdf(yy, df=p[..., 2], loc=p[..., 0], scale=p[..., 1])
    np.testing.assert_allclose(float(model.loss(params, y)), nll.mean(), rtol=1e-12)
    observed = torch.rand(4, 5, 2, generator=torch.Generator().manual_seed(2)) < 0.6
    np.testing.assert_allclose(float(model.loss(params, y, observed)), nll[observed.numpy()].mean(), rtol=1e-12)


def _pinball(y: np.ndarray, q: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per position and level: tau (y - q) if y >= q else (1 - tau) (q - y)."""
    e = y[..., None] - q
    return np.where(e >= 0, levels * e, (levels - 1) * e)


def test_pinball_loss_and_its_gradient_follow_the_definition_with_the_observed_mask() -> None:
    model = _model(likelihood="quantile", quantiles=[0.1, 0.3, 0.5, 0.8, 0.95])
    levels = np.array(model.quantiles)
    y = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    params = _params(model).requires_grad_()
    per = _pinball(y.numpy(), params.detach().numpy(), levels)
    np.testing.assert_allclose(float(model.loss(params.detach(), y)), per.mean(), rtol=1e-12)
    observed = torch.rand(4, 5, 2, generator=torch.Generator().manual_seed(4)) < 0.5
    loss = model.loss(params, y, observed)
    np.testing.assert_allclose(loss.item(), per.mean(-1)[observed.numpy()].mean(), rtol=1e-12)
    (grad,) = torch.autograd.grad(loss, params)
    # the reference gradient: d/dq of the mean over observed positions of the mean over levels
    e = y.numpy()[..., None] - params.detach().numpy()
    ref = np.where(e >= 0, -levels, 1 - levels) / len(levels) / observed.sum().item()
    ref = ref * observed.numpy()[..., None]
    np.testing.assert_allclose(grad.numpy(), ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("likelihood", ["quantile", "gaussian", "student_t", "mse", "mae"])
def test_a_left_out_position_adds_nothing_to_the_gradient_whatever_it_holds(likelihood: str) -> None:
    """Regression: ``observed=False`` positions holding NaN (as validation targets do) gave a finite loss
    but a NaN gradient for the likelihood heads (0 * NaN in the backward pass)."""
    model = _model(likelihood=likelihood)
    y = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    observed = torch.ones(4, 5, 2, dtype=torch.bool)
    observed[0, 1:3] = False
    observed[2, :, 1] = False
    clean = _params(model).requires_grad_()
    (g_clean,) = torch.autograd.grad(model.loss(clean, y, observed), clean)
    holes = y.masked_fill(~observed, float("nan"))
    holes[2, 0, 1] = float("inf")
    params = _params(model).requires_grad_()
    loss = model.loss(params, holes, observed)
    (grad,) = torch.autograd.grad(loss, params)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(grad, g_clean, rtol=1e-12, atol=1e-15)
    assert (grad[~observed] == 0).all()


# -- (2) quantiles ---------------------------------------------------------------------------------
@pytest.mark.parametrize("likelihood", ["gaussian", "student_t"])
@pytest.mark.parametrize("df_pre", [-100.0, -2.0, 0.0, 3.0, 30.0])
def test_distribution_quantiles_match_scipy_ppf(likelihood: str, df_pre: float) -> None:
    """Regression: Student-t quantiles came from Hill's expansion alone, off by 0.018 at level 0.01 and
    0.28 at 0.001 (standard units) at the model's floor df = 3 (its docstring claimed 1e-3)."""
    model = _model(likelihood=likelihood)
    g = torch.Generator().manual_seed(6)
    raw = torch.randn(4, 5, 2, model.k, generator=g, dtype=torch.float64) * 2
    if likelihood == "student_t":
        raw[..., 2] = df_pre  # df = 3 + softplus(df_pre): 3 (the floor) to 33
    params = model._finish(raw, torch.zeros(4, 1, 2, dtype=torch.float64))
    q = model.quantiles_of(params, LEVELS).numpy()
    p = params.detach().numpy()[..., None]
    if likelihood == "gaussian":
        ref = stats.norm.ppf(LEVELS, loc=p[..., 0, :], scale=p[..., 1, :])
    else:
        ref = stats.t.ppf(LEVELS, df=p[..., 2, :], loc=p[..., 0, :], scale=p[..., 1, :])
    np.testing.assert_allclose(q, ref, rtol=1e-9, atol=1e-9)
    assert (np.diff(q, axis=-1) > 0).all()


def test_student_t_quantile_function_is_exact_near_the_floor_and_for_huge_df() -> None:
    levels = torch.tensor([1e-4, 0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1 - 1e-4], dtype=torch.float64)
    for df in (2.0, 3.0, 3.2, 7.0, 100.0, 999.0, 1e4, 1e12):
        ours = student_t_quantile(levels, torch.tensor(df, dtype=torch.float64)).numpy()
        ref = stats.t.ppf(levels.numpy(), df)
        tol = 1e-5 if df < 3 else 1e-9  # the model keeps df >= 3
        np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol, err_msg=f"df={df}")
    grid = student_t_quantile(levels[:, None], torch.tensor([3.0, 4.5, 40.0], dtype=torch.float64))
    np.testing.assert_allclose(grid.numpy(), stats.t.ppf(levels.numpy()[:, None], [3.0, 4.5, 40.0]), rtol=1e-9)
    assert student_t_quantile(levels.float(), torch.tensor(3.0)).dtype == torch.float32


def test_the_quantile_head_sorts_its_levels_and_always_forecasts_the_median() -> None:
    """Regression: ``Forecaster(quantiles=(0.9, 0.1, 0.5))`` trained the level 0.9 on the lowest output
    (crossed quantiles), and ``quantiles=(0.1, 0.9)`` made the 0.1 quantile the point forecast."""
    model = _model(likelihood="quantile", quantiles=(0.9, 0.1))
    assert model.quantiles == [0.1, 0.5, 0.9] and model.k == 3
    assert _model(likelihood="quantile", quantiles=(0.9, 0.1, 0.5)).quantiles == [0.1, 0.5, 0.9]
    params = _params(model)
    torch.testing.assert_close(model.point(params), params[..., 1])
    assert (params.diff(dim=-1) >= 0).all()
    # the pinball loss of each output is the one of its (ascending) level
    y = torch.randn(4, 5, 2, dtype=torch.float64)
    ref = _pinball(y.numpy(), params.numpy(), np.array([0.1, 0.5, 0.9])).mean()
    np.testing.assert_allclose(float(model.loss(params, y)), ref, rtol=1e-12)
    # quantiles_of honours the levels asked for, and refuses levels the head does not forecast
    torch.testing.assert_close(model.quantiles_of(params, [0.5, 0.9]), params[..., [1, 2]])
    with pytest.raises(ValueError, match="0.25"):
        model.quantiles_of(params, [0.25, 0.5])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        _model(likelihood="quantile", quantiles=(0.0, 0.5))


# -- (3) positivity transforms -------------------------------------------------------------------
@pytest.mark.parametrize("likelihood", ["quantile", "gaussian", "student_t", "mse", "mae"])
@pytest.mark.parametrize("value", [100.0, -100.0, 1e4, -1e4])
def test_extreme_pre_activations_give_finite_outputs_losses_and_gradients(likelihood: str, value: float) -> None:
    model = Forecaster(n_targets=2, n_past=0, n_future=0, horizon=3, likelihood=likelihood,
                       quantiles=[0.05, 0.1, 0.5, 0.9, 0.95])
    raw = torch.full((2, 3, 2, model.k), value, requires_grad=True)
    params = model._finish(raw, torch.zeros(2, 1, 2))
    assert torch.isfinite(params).all()
    if likelihood in ("gaussian", "student_t"):
        assert (params[..., 1] >= 1e-3).all()  # softplus + 1e-3: never a zero scale
    if likelihood == "student_t":
        assert (params[..., 2] >= 3.0).all()  # df >= 3: finite variance, defined mean
    loss = model.loss(params, torch.randn(2, 3, 2))
    (grad,) = torch.autograd.grad(loss, raw)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    if likelihood not in ("mse", "mae"):
        q = model.quantiles_of(params.detach(), [0.05, 0.1, 0.5, 0.9, 0.95])
        assert torch.isfinite(q).all() and (q.diff(dim=-1) >= 0).all()


# -- (4) point forecasts -------------------------------------------------------------------------
@pytest.mark.parametrize("likelihood", ["quantile", "gaussian", "student_t"])
def test_the_point_forecast_is_the_median(likelihood: str) -> None:
    """For the Gaussian and the Student-t (df >= 3) the median is also the mean."""
    model = _model(likelihood=likelihood)
    params = _params(model)
    torch.testing.assert_close(model.point(params), model.quantiles_of(params, [0.5])[..., 0], rtol=0, atol=1e-12)
    if likelihood != "quantile":
        torch.testing.assert_close(model.point(params), params[..., 0])


# -- (5) window normalisation --------------------------------------------------------------------
CASES = [("last", "direct"), ("last", "autoregressive"), ("mean", "direct"), ("mean", "autoregressive"),
         ("seasonal", "direct")]


@pytest.mark.parametrize("likelihood", ["quantile", "gaussian", "student_t", "mse"])
@pytest.mark.parametrize(("window_norm", "decoder"), CASES)
def test_forecasts_shift_exactly_with_the_series(window_norm: str, decoder: str, likelihood: str) -> None:
    """Fixed weights: adding c to the input targets adds c to every location and quantile and leaves the
    scales unchanged (no window_norm rescales, so there is no scale equivariance to check)."""
    torch.manual_seed(0)
    model = _model(window_norm=window_norm, decoder=decoder, likelihood=likelihood).eval()
    x, fut, sid = _inputs()
    levels = model.quantiles if likelihood == "quantile" else [0.1, 0.5, 0.9]
    for c in (-250.0, 37.5, 1e4):
        shifted = x.clone()
        shifted[..., :2] += c
        with torch.no_grad():
            a, b = model(x, fut, sid), model(shifted, fut, sid)
        torch.testing.assert_close(model.point(b), model.point(a) + c, rtol=0, atol=1e-9)
        if likelihood != "mse":
            torch.testing.assert_close(model.quantiles_of(b, levels), model.quantiles_of(a, levels) + c,
                                       rtol=0, atol=1e-9)
        if likelihood in ("gaussian", "student_t"):
            torch.testing.assert_close(b[..., 1:], a[..., 1:], rtol=0, atol=1e-9)
    with torch.no_grad():  # without window_norm the network sees the level: no such equivariance
        plain = _model(window_norm="none", decoder=decoder, likelihood=likelihood).eval()
        shifted = x.clone()
        shifted[..., :2] += 37.5
        assert not torch.allclose(plain.point(plain(shifted, fut, sid)), plain.point(plain(x, fut, sid)) + 37.5)


def test_seasonal_normalisation_reads_only_the_last_season() -> None:
    torch.manual_seed(0)
    model = _model(window_norm="seasonal", season=4, horizon=6).eval()
    with torch.no_grad():
        model.head[-1].weight.zero_()  # no learned correction: the forecast is the seasonal naive one
        model.head[-1].bias.zero_()
    x, _, sid = _inputs()
    fut = torch.zeros(3, 6, 2, dtype=torch.float64)
    with torch.no_grad():
        base = model.point(model(x, fut, sid))
        torch.testing.assert_close(base, x[:, [8, 9, 10, 11, 8, 9], :2])
        earlier = x.clone()
        earlier[:, :8, :2] += torch.randn(3, 8, 2, dtype=torch.float64) * 50  # before the last season
        torch.testing.assert_close(model.point(model(earlier, fut, sid)), base)
        last = x.clone()
        last[:, 9, :2] += 5.0
        moved = model.point(model(last, fut, sid)) - base
    torch.testing.assert_close(moved[:, [1, 5]], torch.full((3, 2, 2), 5.0, dtype=torch.float64))


# -- (6) autoregressive decoder ------------------------------------------------------------------
def _decoder_inputs(model: Forecaster, *args: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    seen: list[torch.Tensor] = []
    hook = model.decoder.register_forward_hook(lambda m, inp, out: seen.append(inp[0][:, 0, :2].detach().clone()))
    try:
        params = model(*args)
    finally:
        hook.remove()
    return params, seen


@pytest.mark.parametrize("window_norm", ["last", "mean", "none"])
def test_teacher_forcing_feeds_the_true_previous_value_and_inference_its_own_forecast(window_norm: str) -> None:
    torch.manual_seed(0)
    model = _model(decoder="autoregressive", likelihood="student_t", window_norm=window_norm)
    x, fut, sid = _inputs()
    y = torch.randn(3, 5, 2, dtype=torch.float64)
    level = model._level(x)[:, 0]
    model.train()
    model.teacher_forcing = 1.0
    _, fed = _decoder_inputs(model, x, fut, sid, y)
    torch.testing.assert_close(fed[0], x[:, -1, :2] - level)  # the last observed value
    for h in range(1, 5):
        torch.testing.assert_close(fed[h], y[:, h - 1] - level)
    model.eval()
    with torch.no_grad():
        params, fed = _decoder_inputs(model, x, fut, sid, y)
        again = model(x, fut, sid)  # targets are ignored at inference
    torch.testing.assert_close(params, again, rtol=0, atol=0)
    point = model.point(params)
    for h in range(1, 5):
        torch.testing.assert_close(fed[h], point[:, h - 1] - level, rtol=0, atol=1e-12)


@pytest.mark.parametrize("teacher_forcing", [1.0, 0.5, 0.0])
def test_no_step_reads_its_own_or_a_later_target(teacher_forcing: float) -> None:
    model = _model(decoder="autoregressive", likelihood="gaussian").train()
    model.teacher_forcing = teacher_forcing
    x, fut, sid = _inputs()
    y = torch.randn(3, 5, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(1)
        base = model(x, fut, sid, y)
        for h in range(5):
            later = y.clone()
            later[:, h:] += 100.0
            torch.manual_seed(1)  # the same teacher-forcing draws
            out = model(x, fut, sid, later)
            torch.testing.assert_close(out[:, : h + 1], base[:, : h + 1], rtol=0, atol=0)
            if teacher_forcing == 1.0 and h < 4:
                assert not torch.allclose(out[:, h + 1:], base[:, h + 1:])


def _write_sine(path: Path, n: int = 96) -> Path:
    t = np.arange(n)
    y = 10 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 0.3, n)
    dates = np.datetime64("1990-01", "M") + t
    path.write_text("date,sales\n" + "".join(f"{d},{v:.4f}\n" for d, v in zip(dates, y)))
    return path


def test_the_teacher_forcing_schedule_is_linear_over_training_steps_and_resumes_from_the_saved_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedule's position is the engine's ``task_state`` (saved in every checkpoint, restored on
    resume): the teacher-forcing probability follows that position, not the calls of this process."""
    seen: dict[str, Any] = {}

    def fake_fit(model: Any, train_loader: Any, dev_loader: Any, *, loss_fn: Any, task_state: Any,
                 **_: Any) -> list[dict[str, float]]:
        batch = next(iter(train_loader))
        seen["batches"] = len(train_loader)
        seen["fresh"] = []
        for _k in range(3):
            loss_fn(model, batch)
            seen["fresh"].append(model.teacher_forcing)
        task_state.update({"step": 10})  # what the engine does when it restores a checkpoint
        loss_fn(model, batch)
        seen["resumed"] = model.teacher_forcing
        seen["state"] = dict(task_state)
        return []

    monkeypatch.setattr(engine, "fit", fake_fit)
    data = _write_sine(tmp_path / "s.csv")
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), "--set", "data.time_column=date",
                                 "--set", "data.target=sales", "--set", "data.horizon=4", "--set", "data.lookback=12",
                                 "--set", "data.test_size=16", "--set", "model.decoder=autoregressive",
                                 "--set", "model.teacher_forcing=0.9", "--set", "model.teacher_forcing_end=0.1",
                                 "--set", "train.epochs=3", "--set", "train.batch_size=16", "--set",
                                 "model.hidden_size=8", "--set", "train.accelerator=cpu", "--quiet",
                                 "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    total = 3 * seen["batches"]
    expected = [0.9 + (0.1 - 0.9) * k / total for k in range(3)]
    np.testing.assert_allclose(seen["fresh"], expected, rtol=1e-12)
    np.testing.assert_allclose(seen["resumed"], 0.9 + (0.1 - 0.9) * 10 / total, rtol=1e-12)
    assert seen["state"] == {"step": 11}


# -- (7) log transform and (8) unscale -------------------------------------------------------------
def _series(sid: str, n: int = 60, seed: int = 0, positive: bool = True) -> TimeSeries:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, 1)).cumsum(0) * 3
    values = np.exp(values / 10) * 50 if positive else values
    return TimeSeries.from_arrays(values, series_id=sid)


@pytest.mark.parametrize("scaler", ["standard", "robust", "minmax", "none"])
@pytest.mark.parametrize("transform", ["none", "log"])
def test_unscale_inverts_the_scaler_per_series_including_unseen_ones(scaler: str, transform: str) -> None:
    train = [_series("a", seed=1), _series("b", seed=2)]
    cfg = DataConfig(target=["target_0"], lookback=6, horizon=3, val_size=6, test_size=6, scaler=scaler,  # type: ignore[arg-type]
                     transform=transform)  # type: ignore[arg-type]
    bounds = _split(train, cfg)
    pipe = Pipeline.fit(train, bounds, cfg)
    unseen = _series("new", seed=3)
    for s, stop in ((train[0], bounds["a"].train[1]), (train[1], bounds["b"].train[1]), (unseen, 40)):
        scaled = pipe.scale(s, stop)
        back = pipe.unscale(scaled.targets, s.series_id)
        np.testing.assert_allclose(back, s.targets, rtol=1e-12, atol=0)
    if scaler != "none":  # each series has its own statistics
        assert not np.allclose(pipe.scale(train[0], 40).targets[:5],
                               pipe.scale(TimeSeries.from_arrays(train[0].targets, series_id="b"), 40).targets[:5])


def test_log_transform_forecasts_are_exp_of_the_model_output_and_quantiles_stay_ordered() -> None:
    s = _series("a", n=80, seed=4)
    cfg = DataConfig(target=["target_0"], lookback=8, horizon=3, val_size=8, test_size=16, transform="log")
    bounds = _split([s], cfg)
    pipe = Pipeline.fit([s], bounds, cfg)
    torch.manual_seed(0)
    model = Forecaster(n_targets=1, n_past=0, n_future=0, horizon=3, lookback=8, hidden_size=8, likelihood="gaussian")
    levels = [0.1, 0.5, 0.9]
    bt = run_backtest(model, pipe, [s], {"a": bounds["a"].test}, {"a": bounds["a"].train[1]}, 3, ["naive"], levels)
    assert bt.quantiles is not None and bt.std is None  # log-normal: scored by its quantiles
    assert (np.diff(bt.quantiles, axis=-1) > 0).all() and (bt.quantiles > 0).all()
    # the point forecast is exp of the log-space location, i.e. the log-normal's median, not its mean
    np.testing.assert_allclose(bt.point, bt.quantiles[..., 1], rtol=1e-6)
    scaled = pipe.scale(s, bounds["a"].train[1])
    x = np.stack([scaled.targets[t0 - 8:t0] for _, t0 in bt.windows])
    with torch.no_grad():
        params = model.eval()(torch.as_tensor(x, dtype=torch.float32), torch.zeros(len(x), 3, 0),
                              torch.zeros(len(x), dtype=torch.long))
    loc = params[..., 0].double().numpy()
    np.testing.assert_allclose(bt.point, np.exp(pipe.target_scaler.inverse_transform(loc, "a")), rtol=1e-12)


@pytest.mark.parametrize("bad", [0.0, -3.5])
def test_a_non_positive_target_with_the_log_transform_is_a_one_line_error(bad: float) -> None:
    values = np.array([[4.0], [2.0], [bad], [5.0]])
    with pytest.raises(DataError) as err:
        transform_targets(values, "log", "shop-1")
    text = str(err.value)
    assert "data.transform=log needs positive targets" in text and "shop-1" in text
    assert "\n" not in err.value.message
