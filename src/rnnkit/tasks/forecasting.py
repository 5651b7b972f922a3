"""Time-series forecasting: a CSV of one or many series in, forecasts with intervals out.

Pipeline: :func:`rnnkit.data.read_timeseries` reads the series (gaps and NaN reported, filled by
``data.fill`` or refused; ``interpolate`` fills each train / validation / test period from values
observed before its end only, so no later value leaks into an earlier period), calendar features
are derived from the time column, each series is split chronologically into train / validation /
test periods, per-series scalers are fitted on the training period only, and one global recurrent
model (see :mod:`.forecasting_models`) is trained on lookback windows. Evaluation is a rolling-origin
backtest over the test period (origins every ``evaluation.stride`` steps, no refit, inputs strictly
before each origin) beside the naive, seasonal naive, drift and Holt-Winters baselines; forecasts are
returned in original units.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..cells import CELLS
from ..data.errors import DataError
from ..data.scalers import MinMaxScaler, RobustScaler, Scaler, StandardScaler
from ..data.timeseries import _SECONDS, TimeSeries, _grid_times, _is_month_end, parse_freq, read_timeseries
from ..data.windows import SplitBounds, chronological_split, window_starts
from ..metrics import forecasting as fm
from .config import (
    MAX_MINUTES_HELP,
    PRECISION_HELP,
    ConfigError,
    PrecisionName,
    check_at_least_one,
    check_batch,
    check_cell,
    check_max_minutes,
    check_precision,
    option,
    seconds_budget,
    section,
)
from .forecasting_models import (
    BASELINES,
    CALENDAR_FEATURES,
    Forecaster,
    HoltWinters,
    calendar_features,
    drift_forecast,
    naive_forecast,
    seasonal_naive_forecast,
    statsmodels_available,
)
from .run import RunDir, RunError

NAME = "forecasting"
DESCRIPTION = ("Time-series forecasting from CSV (one or many series; direct or seq2seq; quantile, Gaussian or "
               "Student-t intervals; backtests against naive, seasonal naive, drift and Holt-Winters)")
SCALERS: dict[str, type[Scaler]] = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
# The data readers' arguments as config keys, for one-line errors worded for the command line.
CONFIG_KEYS = {"fill": "data.fill", "freq": "data.freq", "time_format": "data.time_format", "sort": "data.sort",
               "series_id_column": "data.series_id_column", "target_columns": "data.target",
               "time_column": "data.time_column", "past_covariates": "data.past_covariates",
               "future_covariates": "data.future_covariates"}


@dataclass
class DataConfig:
    time_column: str | None = option(None, "column of timestamps (null: rows are consecutive steps)")
    target: list[str] = option([], "column(s) to forecast (comma-separated for several: multivariate)")
    series_id_column: str | None = option(None, "column naming the series in a long file of many series")
    past_covariates: list[str] = option([], "columns known only up to the present (e.g. temperature measured)")
    future_covariates: list[str] = option([], "columns known in advance (e.g. promotions planned); predict needs "
                                          "their values for the horizon in a second file")
    calendar: list[str] = option(["auto"], "calendar features from the time column: hour, weekday, month; auto "
                                 "picks by frequency; empty for none")
    fill: Literal["error", "ffill", "interpolate", "zero"] = option(
        "error", "gaps and empty/NaN cells: error stops at the first one; ffill, interpolate or zero fill them "
        "(reported); interpolate fills each train/val/test period from values observed before its end only "
        "(forward fill at a period's end)")
    freq: str | None = option(None, "sampling step, e.g. 1h, D, B (business days), M (default: inferred; "
                                   "daily data never on a weekend is B)")
    time_format: str | None = option(None, "strptime format of the timestamps, or 'numeric' (default ISO 8601)")
    sort: bool = option(False, "sort rows by time instead of refusing unsorted files")
    lookback: int = option(48, "input window: steps the model reads before each forecast origin")
    horizon: int = option(12, "steps forecast at once")
    train_size: int | float | None = option(None, "training period per series (steps or a fraction; null: all "
                                            "steps before validation); steps after the test period are unused")
    val_size: int | float = option(0.1, "validation period per series (steps, or a fraction): model selection")
    test_size: int | float = option(0.2, "test period per series (steps, or a fraction): the backtest")
    transform: Literal["none", "log"] = option(
        "none", "target transform before scaling, inverted on every forecast: log for positive series whose "
        "seasonal swings grow with their level (multiplicative seasonality, e.g. airline passengers)")
    scaler: Literal["standard", "robust", "minmax", "none"] = option(
        "standard", "per-series normalisation fitted on the training period (inverted on every forecast)")
    seasonal_period: int | None = option(None, "season length for seasonal naive, MASE and Holt-Winters "
                                         "(default: from the frequency, e.g. 24 hourly, 7 daily, 5 business-daily, "
                                         "12 monthly)")
    train_stride: int = option(1, "step between training windows")


@dataclass
class ModelConfig:
    cell: str = option("lstm", f"recurrent cell: {', '.join(sorted(CELLS))}")
    hidden_size: int = option(64, "recurrent units")
    num_layers: int = option(1, "stacked layers in the encoder (and decoder)")
    dropout: float = option(0.0, "dropout between layers and before the head")
    decoder: Literal["direct", "autoregressive"] = option(
        "direct", "direct: all horizon steps at once; autoregressive: seq2seq decoder fed its own forecasts")
    likelihood: Literal["quantile", "gaussian", "student_t", "mse", "mae"] = option(
        "quantile", "quantile (pinball loss), gaussian or student_t (likelihood) give intervals; mse/mae: points")
    quantiles: list[float] = option([0.1, 0.5, 0.9], "forecast quantiles (0.5 is added; the outermost pair is "
                                    "the interval)")
    series_embedding_dim: int = option(8, "embedding of the series id (static covariate; used with >1 series)")
    window_norm: Literal["last", "mean", "seasonal", "none"] = option(
        "last", "subtract each window's last (or mean) target value and add it back to the forecast; seasonal: "
        "the same for the inputs, but the forecast is a learned correction to the seasonal naive one (the value "
        "one season earlier; direct decoder, lookback >= the season)")
    teacher_forcing: float = option(1.0, "autoregressive: probability of feeding the true value at the start")
    teacher_forcing_end: float = option(0.0, "... decayed linearly to this by the last epoch (scheduled sampling)")


@dataclass
class TrainConfig:
    epochs: int = option(30, "maximum epochs")
    max_minutes: float | None = option(None, MAX_MINUTES_HELP)
    precision: PrecisionName = option("32-true", PRECISION_HELP)
    batch_size: int = option(64, "windows per batch")
    learning_rate: float = option(3e-3, "learning rate")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = option("adam", "optimizer")
    weight_decay: float = option(0.0, "weight decay")
    clip_norm: float | None = option(1.0, "gradient norm clipping (null: none)")
    patience: int | None = option(5, "early-stopping patience in epochs on the validation loss (null: never)")
    seed: int = option(0, "random seed")
    accelerator: Literal["auto", "cpu", "gpu", "mps"] = option("auto", "device")


@dataclass
class EvaluationConfig:
    stride: int | None = option(None, "steps between backtest origins (default: the horizon)")
    baselines: list[str] = option(list(BASELINES), f"baselines shown beside the model: {', '.join(BASELINES)}")
    plot_series: int = option(4, "series plotted in the report")


def check_split_sizes(d: DataConfig) -> None:
    """``data.train_size``, ``val_size`` and ``test_size`` are step counts >= 0 or fractions in [0, 1]."""
    for key in ("train_size", "val_size", "test_size"):
        v = getattr(d, key)
        if v is not None and (v < 0 or (isinstance(v, float) and v > 1)):
            raise ConfigError(f"data.{key}: must be a number of steps >= 0 or a fraction in [0, 1], got {v}")


@dataclass
class Config:
    data: DataConfig = section(DataConfig, "reading and windowing the series")
    model: ModelConfig = section(ModelConfig, "the network")
    train: TrainConfig = section(TrainConfig, "optimisation")
    evaluation: EvaluationConfig = section(EvaluationConfig, "backtest and report")

    def validate(self) -> None:
        check_max_minutes(self.train.max_minutes)
        self.train.precision = check_precision(self.train.precision)  # an alias by its full name
        d, m = self.data, self.model
        check_cell(m.cell)
        check_at_least_one(("data.lookback", d.lookback), ("data.horizon", d.horizon), ("data.train_stride", d.train_stride),
                           ("model.hidden_size", m.hidden_size), ("model.num_layers", m.num_layers),
                           ("train.epochs", self.train.epochs), ("train.batch_size", self.train.batch_size))
        check_split_sizes(d)
        if self.evaluation.stride is not None and self.evaluation.stride < 1:
            raise ConfigError(f"evaluation.stride: must be >= 1, got {self.evaluation.stride}")
        if self.evaluation.plot_series < 0:
            raise ConfigError(f"evaluation.plot_series: must be >= 0 (0: no forecast plot), got "
                              f"{self.evaluation.plot_series}")
        if d.seasonal_period is not None and d.seasonal_period < 1:
            raise ConfigError(f"data.seasonal_period: must be >= 1, got {d.seasonal_period}")
        for name in d.calendar:
            if name not in (*CALENDAR_FEATURES, "auto"):
                raise ConfigError(f"data.calendar: {name!r} is not valid; choose from auto, {', '.join(CALENDAR_FEATURES)}")
        for name in self.evaluation.baselines:
            if name not in BASELINES:
                raise ConfigError(f"evaluation.baselines: {name!r} is not valid; choose from {', '.join(BASELINES)}")
        if not all(0 < q < 1 for q in m.quantiles):
            raise ConfigError(f"model.quantiles: every level must be in (0, 1), got {m.quantiles}")
        if not 0 <= m.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {m.dropout}")
        for key, p in (("model.teacher_forcing", m.teacher_forcing), ("model.teacher_forcing_end", m.teacher_forcing_end)):
            if not 0 <= p <= 1:
                raise ConfigError(f"{key}: must be in [0, 1], got {p}")
        if m.window_norm == "seasonal" and m.decoder != "direct":
            raise ConfigError("model.window_norm=seasonal works with the direct decoder only; "
                              "add --set model.decoder=direct or choose another window_norm")
        overlap = set(d.target) & (set(d.past_covariates) | set(d.future_covariates))
        if overlap:
            raise ConfigError(f"column {sorted(overlap)[0]!r} is both a target and a covariate")

    def levels(self) -> list[float]:
        """The quantile levels forecast (0.5 included), sorted."""
        return sorted({round(q, 6) for q in [*self.model.quantiles, 0.5]})


# -- reading and preparing series --------------------------------------------------------------
def _freq_unit(freq: str | None) -> tuple[int, str] | None:
    if not freq:
        return None
    try:
        return parse_freq(freq)
    except DataError:
        return None


def resolve_calendar(requested: Sequence[str], series: TimeSeries) -> list[str]:
    """The calendar features used: ``auto`` picks them from the sampling step."""
    is_time = np.issubdtype(np.asarray(series.time).dtype, np.datetime64)
    names = [n for n in requested if n != "auto"]
    if names and not is_time:
        raise ConfigError(f"data.calendar={','.join(names)} needs a date/time column; set data.time_column or "
                          "--set data.calendar=")
    if "auto" not in requested or not is_time:
        return names
    step_unit = _freq_unit(series.freq)
    if step_unit is None:
        return names
    step, unit = step_unit
    auto = {"s": ["hour", "weekday"], "m": ["hour", "weekday"], "h": ["hour", "weekday"],
            "D": ["weekday", "month"] if step % 7 else ["month"], "B": ["weekday", "month"] if step % 5 else ["month"],
            "M": ["month"] if step < 12 else [],
            "Y": []}.get(unit, [])
    return list(dict.fromkeys([*auto, *names]))


def infer_period(freq: str | None) -> int:
    """Season length from a frequency: a day of sub-daily steps, a week of days (5 business days), a year of
    weeks or months."""
    step_unit = _freq_unit(freq)
    if step_unit is None:
        return 1
    step, unit = step_unit
    seconds = {"s": 1, "m": 60, "h": 3600}.get(unit)
    if seconds is not None:
        per_day = 86400 // (step * seconds) if 86400 % (step * seconds) == 0 else 1
        return max(per_day, 1)
    if unit == "D":
        return 7 if step == 1 else (52 if step == 7 else 1)
    if unit == "B":
        return 5 if step == 1 else (52 if step == 5 else 1)
    if unit == "M":
        return 12 // step if 12 % step == 0 and step < 12 else 1
    return 1


def future_times(series: TimeSeries, horizon: int) -> np.ndarray:
    """The ``horizon`` timestamps after the end of ``series`` (on its grid)."""
    t = np.asarray(series.time)
    if np.issubdtype(t.dtype, np.datetime64):
        step_unit = _freq_unit(series.freq)
        if step_unit is None:
            if len(t) < 2:
                raise DataError(f"cannot tell the step of series {series.series_id!r} from one timestamp",
                                hint="give data.freq, e.g. --set data.freq=D")
            return t[-1] + (t[-1] - t[-2]) * np.arange(1, horizon + 1)
        step, unit = step_unit
        if unit == "B":  # the next business days: Friday -> Monday, at the last timestamp's time of day
            return _grid_times(t[-1], horizon + 1, unit, step)[1:]
        if unit in ("M", "Y") and _is_month_end(t[-1:]).all():  # month-end dates stay month ends
            return _grid_times(t[-1], horizon + 1, unit, step, month_end=True)[1:]
        if unit in ("M", "Y"):  # calendar steps: the grid's dates are whole months (or years)
            last = t[-1].astype(f"datetime64[{unit}]")
            return (last + step * np.arange(1, horizon + 1)).astype("datetime64[s]")
        # fixed-length steps continue from the last timestamp as it is: hourly data at :30 (or daily data at
        # 09:00) is forecast at :30 (09:00), not at the whole hour (midnight) the unit would truncate it to
        seconds = (np.arange(1, horizon + 1) * (step * _SECONDS[unit])).astype("timedelta64[s]")
        return (t[-1].astype("datetime64[s]") + seconds).astype("datetime64[s]")
    step = (t[-1] - t[-2]) if len(t) > 1 else 1
    return t[-1] + step * np.arange(1, horizon + 1)


def _weekdays_only(series: TimeSeries) -> bool:
    """Whether a series read as daily has no Saturday or Sunday, and so fits a business-day grid too."""
    t = np.asarray(series.time)
    return (series.freq == "1D" and np.issubdtype(t.dtype, np.datetime64)
            and bool(np.is_busday(t.astype("datetime64[D]")).all()))


def _with_calendar(series: TimeSeries, names: Sequence[str]) -> TimeSeries:
    if not names:
        return series
    new = copy.copy(series)
    new.future_covariates = np.concatenate([series.future_covariates, calendar_features(series.time, names)], 1)
    new.future_covariate_names = (*series.future_covariate_names,
                                  *[f"{n}_{f}" for n in names for f in ("sin", "cos")])
    return new


def transform_targets(values: np.ndarray, transform: str, series_id: str) -> np.ndarray:
    """Targets in the model's space: unchanged, or their natural log (every value must be positive)."""
    if transform == "none":
        return values
    finite = values[np.isfinite(values)]
    if len(finite) and finite.min() <= 0:
        raise DataError(f"data.transform=log needs positive targets, but series {series_id!r} has {finite.min():g}",
                        hint="use data.transform=none (or shift the series to positive values first)")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(values)


class Pipeline:
    """Everything between a CSV and the network's tensors, fitted on training data and saved as JSON:
    the data config, calendar features, series ids (for the embedding), scalers and season length."""

    def __init__(self, cfg: DataConfig, calendar: list[str], series_ids: list[str], target_scaler: Scaler | None,
                 covariate_scaler: Scaler | None, period: int, freq: str | None) -> None:
        self.cfg, self.calendar, self.series_ids = cfg, calendar, series_ids
        self.target_scaler, self.covariate_scaler = target_scaler, covariate_scaler
        self.period, self.freq = period, freq
        self._index = {sid: i + 1 for i, sid in enumerate(series_ids)}

    @staticmethod
    def read_raw(path: str | Path, cfg: DataConfig, fill_breaks: Callable[[int], Sequence[int]] | None = None) -> Any:
        """Read a file with ``cfg``'s column settings; ``fill_breaks`` (see :func:`split_breaks`) gives the
        periods that ``data.fill=interpolate`` fills separately (``None``: the whole file is history)."""
        p = Path(path)
        if not p.is_file():
            what = "is a folder, not a file" if p.is_dir() else "not found"
            raise FileNotFoundError(f"data file {what}: {p}; fix: give the path of a CSV file (relative paths "
                                    f"start at the current folder, {Path.cwd()})")
        return read_timeseries(p, cfg.time_column, cfg.target, series_id_column=cfg.series_id_column,
                               past_covariates=cfg.past_covariates, future_covariates=cfg.future_covariates,
                               fill=cfg.fill, freq=cfg.freq, time_format=cfg.time_format, sort=cfg.sort,
                               fill_breaks=fill_breaks)

    @classmethod
    def fit(cls, series: list[TimeSeries], bounds: dict[str, SplitBounds], cfg: DataConfig) -> Pipeline:
        calendar = resolve_calendar(cfg.calendar, series[0])
        period = cfg.seasonal_period or infer_period(series[0].freq)
        with_cal = [_with_calendar(s, calendar) for s in series]
        t_scaler = SCALERS[cfg.scaler](per_series=True) if cfg.scaler != "none" else None
        if t_scaler is not None:
            t_scaler.fit({s.series_id: transform_targets(s.targets[: bounds[s.series_id].train[1]], cfg.transform,
                                                         s.series_id) for s in series})
        n_cov = with_cal[0].past_covariates.shape[1] + with_cal[0].future_covariates.shape[1]
        c_scaler = StandardScaler(per_series=True) if n_cov else None
        if c_scaler is not None:
            c_scaler.fit({s.series_id: _covariates(s)[: bounds[s.series_id].train[1]] for s in with_cal})
        return cls(cfg, calendar, [s.series_id for s in series], t_scaler, c_scaler, period, series[0].freq)

    def read(self, path: str | Path, cfg: DataConfig | None = None,
             fill_breaks: Callable[[int], Sequence[int]] | None = None) -> list[TimeSeries]:
        """Read a file with the training column settings (or ``cfg``); calendar features added."""
        return [_with_calendar(s, self.calendar) for s in self.read_raw(path, cfg or self.cfg, fill_breaks)]

    def series_index(self, series_id: str) -> int:
        """Embedding row of a series (0 for series not seen in training)."""
        return self._index.get(series_id, 0)

    def _ensure_stats(self, s: TimeSeries, targets: np.ndarray, fit_stop: int) -> None:
        """Series unseen in training get their own statistics, from steps before ``fit_stop`` only
        (``targets``: the series' targets already transformed). They are computed afresh on every call
        (and replace those of an earlier call), so a result never depends on what was read before: a
        forecast from a whole file must not leave statistics of its test period behind for a later
        backtest of the same series."""
        if s.series_id in self._index:
            return
        for scaler, values in ((self.target_scaler, targets), (self.covariate_scaler, _covariates(s))):
            if scaler is not None:
                fresh = type(scaler)(per_series=True).fit({s.series_id: values[:fit_stop]})
                scaler.stats[s.series_id] = fresh.stats[s.series_id]

    def scale(self, s: TimeSeries, fit_stop: int) -> TimeSeries:
        """A scaled copy of one (calendar-augmented) series."""
        new = copy.copy(s)
        new.targets = transform_targets(s.targets, self.cfg.transform, s.series_id)
        self._ensure_stats(s, new.targets, fit_stop)
        if self.target_scaler is not None:
            new.targets = self.target_scaler.transform(new.targets, s.series_id)
        if self.covariate_scaler is not None:
            cov = self.covariate_scaler.transform(_covariates(s), s.series_id)
            p = s.past_covariates.shape[1]
            new.past_covariates, new.future_covariates = cov[:, :p], cov[:, p:]
        return new

    def scale_targets(self, values: np.ndarray, series_id: str) -> np.ndarray:
        """Targets ``[N, T]`` of a series in the model's units (its statistics must exist: see :meth:`scale`)."""
        out = transform_targets(values, self.cfg.transform, series_id)
        return out if self.target_scaler is None else self.target_scaler.transform(out, series_id)

    def scale_past(self, s: TimeSeries, past: np.ndarray) -> np.ndarray:
        """Scale past covariates ``[N, P]`` of series ``s`` (its statistics must exist: see :meth:`scale`)."""
        if self.covariate_scaler is None:
            return past
        full = np.concatenate([past, np.zeros((len(past), s.future_covariates.shape[1]))], 1)
        return self.covariate_scaler.transform(full, s.series_id)[:, :past.shape[1]]

    def scale_future(self, s: TimeSeries, future: np.ndarray) -> np.ndarray:
        """Scale known-future covariates ``[H, F]`` of series ``s`` (the past columns are ignored)."""
        if self.covariate_scaler is None:
            return future
        p = s.past_covariates.shape[1]
        full = np.concatenate([np.zeros((len(future), p)), future], 1)
        return self.covariate_scaler.transform(full, s.series_id)[:, p:]

    def unscale(self, values: np.ndarray, series_id: str) -> np.ndarray:
        """Targets ``[..., T]`` back to original units."""
        if self.target_scaler is not None:
            values = self.target_scaler.inverse_transform(values, series_id)
        return np.exp(values) if self.cfg.transform == "log" else values

    def target_scale(self, series_id: str) -> np.ndarray:
        """Multiplier from scaled to original units per target (for standard deviations; not defined under a
        log transform, where the forecast distribution is log-normal)."""
        if self.target_scaler is None:
            return np.ones(len(self.cfg.target))
        return np.broadcast_to(self.target_scaler.stats[series_id][1], (len(self.cfg.target),))

    def save(self, run: RunDir) -> None:
        run.write_json("forecasting.json", {
            "data": asdict(self.cfg), "calendar": self.calendar, "series_ids": self.series_ids,
            "period": self.period, "freq": self.freq,
            "target_scaler": None if self.target_scaler is None else self.target_scaler.to_config(),
            "covariate_scaler": None if self.covariate_scaler is None else self.covariate_scaler.to_config(),
        })

    @classmethod
    def load(cls, run: RunDir) -> Pipeline:
        meta = run.read_json("forecasting.json")
        try:
            cfg = DataConfig(**meta["data"])
            t = meta["target_scaler"]
            c = meta["covariate_scaler"]
            return cls(cfg, meta["calendar"], meta["series_ids"],
                       None if t is None else SCALERS[cfg.scaler].from_config(t),
                       None if c is None else StandardScaler.from_config(c), int(meta["period"]), meta["freq"])
        except (KeyError, TypeError, ValueError) as err:
            raise RunError(f"{run.file('forecasting.json')} is corrupt ({err!r}); train again") from None


def split_breaks(train: int | float | None, val: int | float | None,
                test: int | float | None) -> Callable[[int], tuple[int, ...]]:
    """For :func:`rnnkit.data.read_timeseries`: the ends of the train, validation and test periods of
    a series of ``n`` steps (:func:`chronological_split` with these sizes), so that ``data.fill=
    interpolate`` fills each period from values observed before its end only: a missing value near
    the end of the training period never reads the first validation value, nor one of the validation
    period the first test value. Sizes the split refuses give no breaks (the split then raises its
    own error)."""
    def breaks(n: int) -> tuple[int, ...]:
        try:
            b = chronological_split(n, train, val, test)
        except DataError:
            return ()
        return b.train[1], b.val[1], b.test[1]
    return breaks


def _covariates(s: TimeSeries) -> np.ndarray:
    return np.concatenate([s.past_covariates, s.future_covariates], 1)


def _window_inputs(s: TimeSeries, origin: int, lookback: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([s.targets, s.past_covariates, s.future_covariates], 1)[origin - lookback: origin]
    return x, s.future_covariates[origin: origin + horizon]


# -- backtesting -------------------------------------------------------------------------------
@dataclass
class Backtest:
    """Forecasts of every backtest window, in original units.

    Attributes:
        y: ``[N, H, T]`` actual values.
        point: ``[N, H, T]`` model point forecasts.
        quantiles: ``[N, H, T, Q]`` model quantiles (``None`` for point likelihoods).
        levels: The quantile levels.
        std: ``[N, H, T]`` Gaussian standard deviations (Gaussian likelihood only).
        baselines: Baseline point forecasts ``[N, H, T]`` by name.
        scale: ``[N, 1, T]`` MASE denominators of each window's series.
        windows: ``(series_position, origin)`` of each window.
        skipped: Baselines that could not run, with the reason.
        no_window: Series with no backtest window (too short for the period), left out.
        observed: ``[N, H, T]`` bool, ``False`` at actual values that ``data.fill`` filled (a gap or
            an empty cell) rather than read from the file; ``None``: all observed. Every error
            metric (of the model and of the baselines) is computed over the observed positions only.
    """

    y: np.ndarray
    point: np.ndarray
    quantiles: np.ndarray | None
    levels: list[float]
    std: np.ndarray | None
    baselines: dict[str, np.ndarray]
    scale: np.ndarray
    windows: list[tuple[int, int]]
    skipped: dict[str, str]
    observed: np.ndarray | None = None
    no_window: list[str] = field(default_factory=list)

    def _keep(self) -> np.ndarray | None:
        """The positions scored: ``None`` when every one is observed (the metrics are then computed on
        the whole arrays, exactly as before masks existed), else the boolean mask ``[N, H, T]``."""
        if self.observed is None or self.observed.all():
            return None
        return np.asarray(self.observed, dtype=bool)

    def filled_excluded(self) -> int:
        """How many target positions (window x horizon step x target; a step inside several overlapping
        windows counts once per window) were filled, not observed, and so left out of every metric."""
        return 0 if self.observed is None else int((~np.asarray(self.observed, dtype=bool)).sum())

    def _point(self, pred: np.ndarray) -> dict[str, float]:
        keep = self._keep()
        if keep is None:
            return fm.point_metrics(self.y, pred, self.scale)
        return fm.point_metrics(self.y[keep], pred[keep], np.broadcast_to(self.scale, self.y.shape)[keep])

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = self._point(self.point)
        if self.quantiles is not None:
            keep = self._keep()
            if keep is None:
                gauss = (self.point, self.std) if self.std is not None else None
                out.update(fm.probabilistic_metrics(self.y, self.quantiles, self.levels, gauss))
            else:
                gauss = (self.point[keep], self.std[keep]) if self.std is not None else None
                out.update(fm.probabilistic_metrics(self.y[keep], self.quantiles[keep], self.levels, gauss))
        out["windows"] = len(self.windows)
        out["filled_targets_excluded"] = self.filled_excluded()
        return out

    def baseline_metrics(self) -> dict[str, dict[str, float]]:
        return {name: self._point(pred) for name, pred in self.baselines.items()}

    def by_horizon(self, pred: np.ndarray) -> list[float]:
        """MAE of each horizon step over the observed positions (``nan`` for a step never observed)."""
        keep = self._keep()
        if keep is None:
            return fm.by_horizon(self.y, pred)
        n, h = self.y.shape[:2]
        err = np.where(keep, np.abs(self.y - pred), 0.0).reshape(n, h, -1).sum(axis=(0, 2))
        count = keep.reshape(n, h, -1).sum(axis=(0, 2))
        return [float(e / c) if c else math.nan for e, c in zip(err, count)]


def observed_mase_scale(history: np.ndarray, observed: np.ndarray | None, period: int) -> np.ndarray:
    """:func:`rnnkit.metrics.forecasting.mase_scale` over observed values only.

    The scale is the mean ``|y_t - y_{t-m}|`` over the pairs of training steps whose two values were
    both observed: a filled value (an interpolated gap is smooth, a zero is an outlier) would bias the
    denominator of MASE as it would its numerator. The series lies on a regular grid (gaps are
    filled to keep it so), so ``t - m`` is always the step one season earlier. With every value
    observed this is exactly ``mase_scale``; with no observed pair it is ``nan`` (MASE undefined).
    """
    if observed is None or observed.all():
        return fm.mase_scale(history, period)
    h, ok = np.asarray(history, dtype=np.float64), np.asarray(observed, dtype=bool)
    m = period if h.shape[0] > period else 1
    if h.shape[0] <= m:
        return np.full(h.shape[1:], np.nan)
    pairs = ok[m:] & ok[:-m]
    total = np.where(pairs, np.abs(h[m:] - h[:-m]), 0.0).sum(axis=0)
    count = pairs.sum(axis=0)
    scale = np.divide(total, count, out=np.full(np.shape(total), np.nan), where=count > 0)
    return np.where(scale > 0, scale, np.nan)


def refill_before(values: np.ndarray, observed: np.ndarray, lo: int, origin: int, start: int = 0) -> np.ndarray:
    """``values[start:origin]`` as a forecaster at ``origin`` can know them: ``data.fill=interpolate``
    fills each period from the values observed before the period's end, so inside an evaluated
    period ``[lo, hi)`` a missing value just before an origin was interpolated towards an observed
    value at or after the origin (the very values that window forecasts). Here every value of
    ``[max(lo, start), origin)`` that was not observed is interpolated again from observed values
    before ``origin`` only (a gap that no later value before ``origin`` closes takes the last
    observed value); values before ``lo`` were filled from before ``lo`` and are kept."""
    out = np.array(values[start:origin], dtype=np.float64, copy=True)
    ok = np.asarray(observed[:origin], dtype=bool)
    first = max(lo, start)
    for c in range(out.shape[1]):
        missing = np.flatnonzero(~ok[first:, c]) + first
        if not missing.size:
            continue
        known = np.flatnonzero(ok[:, c])
        if known.size:
            out[missing - start, c] = np.interp(missing, known, values[known, c])
    return out


def inputs_known_at(pipe: Pipeline, s: TimeSeries, x: np.ndarray, lo: int, origin: int) -> np.ndarray:
    """The input window ``x`` (``[lookback, columns]``, in the model's units, ending at ``origin``) of
    series ``s`` (in original units) as a forecaster at ``origin`` can know it: the targets and past
    covariates that ``data.fill`` filled inside the evaluated period ``[lo, hi)`` are filled again
    from values observed before ``origin`` (:func:`refill_before`). Known-future covariates are known
    ahead by definition and kept. ``x`` itself is returned when nothing in it needs filling again."""
    if pipe.cfg.fill != "interpolate" or (s.observed is None and s.past_observed is None):
        return x  # ffill and zero never read a later value; a series without masks had nothing filled
    start = origin - len(x)
    first = max(lo, start)
    targets_ok, past_ok = _observed(s), _past_observed(s)
    redo_targets, redo_past = not targets_ok[first:origin].all(), not past_ok[first:origin].all()
    if not (redo_targets or redo_past):
        return x
    x = x.copy()
    n_targets = s.targets.shape[1]
    if redo_targets:
        x[:, :n_targets] = pipe.scale_targets(refill_before(s.targets, targets_ok, lo, origin, start), s.series_id)
    if redo_past:
        x[:, n_targets:n_targets + s.past_covariates.shape[1]] = pipe.scale_past(
            s, refill_before(s.past_covariates, past_ok, lo, origin, start))
    return x


def _all_filled_error(period_name: str, fill: str) -> DataError:
    return DataError(f"every target value in the {period_name} period was filled by data.fill={fill}, none "
                     "observed, so no forecast error can be measured there",
                     hint="give a file with observed values in that period, or move the period with "
                          "data.test_size / data.val_size")


def _observed(s: TimeSeries) -> np.ndarray:
    """``[N, T]`` mask of the target values read from the file (all ``True`` when unknown)."""
    return np.ones(s.targets.shape, dtype=bool) if s.observed is None else np.asarray(s.observed, dtype=bool)


def _past_observed(s: TimeSeries) -> np.ndarray:
    """``[N, P]`` mask of the past covariate values read from the file (all ``True`` when unknown)."""
    shape = s.past_covariates.shape
    return np.ones(shape, dtype=bool) if s.past_observed is None else np.asarray(s.past_observed, dtype=bool)


def backtest_origins(n_steps: int, lookback: int, horizon: int, stride: int, period: tuple[int, int]) -> np.ndarray:
    """Forecast origins of a rolling-origin backtest over ``period = [lo, hi)``: the first at ``lo``
    (or ``lookback``), then every ``stride`` steps while the whole horizon fits before ``hi``."""
    return window_starts(n_steps, lookback, horizon, stride, period) + lookback


def run_backtest(model: Forecaster, pipe: Pipeline, series: list[TimeSeries], periods: dict[str, tuple[int, int]],
                 fit_stops: dict[str, int], stride: int, baselines: Sequence[str], levels: Sequence[float],
                 batch_size: int = 256, period_name: str = "evaluated") -> Backtest:
    """Forecast from every origin in ``periods`` (per series) without refitting anything.

    ``fit_stops[sid]`` ends the history used for statistics of series unseen in training, the
    Holt-Winters fit and the MASE scale; inputs of a window end at its origin. Inputs (and the
    baselines' histories) may hold values filled by ``data.fill``; the actual values a forecast is
    scored against are masked where they were filled (:attr:`Backtest.observed`), and the MASE scale
    uses observed training values only (:func:`observed_mase_scale`). ``period_name`` words the
    error raised when every actual value of the period was filled.
    """
    lookback, horizon = model.lookback, model.horizon
    xs, futs, ids, ys, obs, windows = [], [], [], [], [], []
    base: dict[str, list[np.ndarray]] = {b: [] for b in baselines}
    skipped: dict[str, str] = {}
    if "ets" in base and not statsmodels_available():
        skipped["ets"] = "statsmodels is not installed (pip install 'rnnkit[timeseries]')"
        base.pop("ets")
    scales, no_window = [], []
    for k, s in enumerate(series):
        origins = backtest_origins(len(s), lookback, horizon, stride, periods[s.series_id])
        if not len(origins):
            no_window.append(s.series_id)
            continue
        fit_stop = fit_stops[s.series_id]
        scaled = pipe.scale(s, fit_stop)
        ets = None
        if "ets" in base and fit_stop < 2:  # statsmodels fails with an IndexError on one step
            skipped[f"ets ({s.series_id})"] = (f"Holt-Winters needs at least 2 steps of history before the "
                                               f"evaluated period, and there are {fit_stop}")
        elif "ets" in base:
            try:
                ets = HoltWinters(pipe.period).fit(s.targets[:fit_stop])
            except Exception as err:  # statsmodels fails on degenerate series; report, do not crash
                skipped[f"ets ({s.series_id})"] = f"{type(err).__name__}: {str(err)[:80]}"
        observed = _observed(s)
        scale = observed_mase_scale(s.targets[:fit_stop], observed[:fit_stop], pipe.period)
        lo = periods[s.series_id][0]
        refill = pipe.cfg.fill == "interpolate"
        for t0 in origins.tolist():
            x, fut = _window_inputs(scaled, t0, lookback, horizon)
            hist = s.targets[:t0]
            if refill:  # values filled inside the period from values at or after the origin: fill them again
                x = inputs_known_at(pipe, s, x, lo, t0)
                if not observed[lo:t0].all():
                    hist = refill_before(s.targets, observed, lo, t0)
            xs.append(x)
            futs.append(fut)
            ids.append(pipe.series_index(s.series_id))
            ys.append(s.targets[t0:t0 + horizon])
            obs.append(observed[t0:t0 + horizon])
            windows.append((k, t0))
            scales.append(scale)
            for name in base:
                if name == "naive":
                    base[name].append(naive_forecast(hist, horizon))
                elif name == "seasonal_naive":
                    base[name].append(seasonal_naive_forecast(hist, horizon, pipe.period))
                elif name == "drift":
                    base[name].append(drift_forecast(hist, horizon))
                elif name == "ets":
                    base[name].append(ets.forecast(hist, horizon) if ets is not None else
                                      np.full((horizon, s.targets.shape[1]), np.nan))
    if not windows:
        raise DataError(f"no backtest window fits: each needs {horizon} steps inside the evaluated period and "
                        f"{lookback} steps before its origin", hint="enlarge data.test_size or shorten lookback/horizon")
    if not np.any(obs):
        raise _all_filled_error(period_name, pipe.cfg.fill)
    if "ets" in base and any(k.startswith("ets (") for k in skipped):
        base.pop("ets")
    point, quant, std = _forecast(model, np.stack(xs), np.stack(futs), np.asarray(ids), levels, batch_size)
    sids = [series[k].series_id for k, _ in windows]
    point = np.stack([pipe.unscale(p, sid) for p, sid in zip(point, sids)])
    if quant is not None:
        quant = np.stack([np.moveaxis(pipe.unscale(np.moveaxis(q, -1, -2), sid), -2, -1) for q, sid in zip(quant, sids)])
    if std is not None:
        std = (np.stack([sd * pipe.target_scale(sid) for sd, sid in zip(std, sids)])
               if pipe.cfg.transform == "none" else None)  # log-normal in original units: scored by its quantiles
    return Backtest(np.stack(ys), point, quant, list(levels), std, {k: np.stack(v) for k, v in base.items()},
                    np.stack(scales)[:, None, :], windows, skipped, np.stack(obs), no_window)


def _forecast(model: Forecaster, x: np.ndarray, fut: np.ndarray, ids: np.ndarray, levels: Sequence[float],
              batch_size: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Scaled point forecasts ``[N, H, T]``, quantiles ``[N, H, T, Q]`` and Gaussian std."""
    points, quants, stds = [], [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            params = model(torch.as_tensor(x[i:i + batch_size], dtype=torch.float32),
                           torch.as_tensor(fut[i:i + batch_size], dtype=torch.float32),
                           torch.as_tensor(ids[i:i + batch_size], dtype=torch.long))
            points.append(model.point(params).double().numpy())
            if model.likelihood in ("quantile", "gaussian", "student_t"):
                quants.append(model.quantiles_of(params, levels).double().numpy())
            if model.likelihood == "gaussian":
                stds.append(params[..., 1].double().numpy())
    return (np.concatenate(points), np.concatenate(quants) if quants else None,
            np.concatenate(stds) if stds else None)


# -- data for training -------------------------------------------------------------------------
class _Windows(torch.utils.data.Dataset):
    """Training or validation windows ``(inputs, known-future covariates, series index, targets,
    observed)``: ``observed`` is ``False`` at target values that ``data.fill`` filled, which the loss
    leaves out. ``known_inputs`` (the raw series and the pipeline) re-fills each window's inputs from
    values observed before its origin (:func:`inputs_known_at`): used for the validation period,
    where an interpolated input must not read the values the window is scored on."""

    def __init__(self, series: list[TimeSeries], ids: list[int], period: str, bounds: dict[str, SplitBounds],
                 lookback: int, horizon: int, stride: int,
                 known_inputs: tuple[list[TimeSeries], Pipeline] | None = None) -> None:
        self.items: list[tuple[int, int]] = []
        self.arrays = [(torch.as_tensor(np.concatenate([s.targets, s.past_covariates, s.future_covariates], 1),
                                        dtype=torch.float32),
                        torch.as_tensor(s.future_covariates, dtype=torch.float32),
                        torch.as_tensor(s.targets, dtype=torch.float32),
                        torch.as_tensor(_observed(s))) for s in series]
        self.ids, self.lookback, self.horizon = ids, lookback, horizon
        self.inputs: dict[int, Tensor] = {}  # item -> inputs filled again from values before its origin
        for k, s in enumerate(series):
            rng = getattr(bounds[s.series_id], period)
            for start in window_starts(len(s), lookback, horizon, stride, rng).tolist():
                t0 = start + lookback
                if known_inputs is not None:
                    raw, pipe = known_inputs[0][k], known_inputs[1]
                    x = self.arrays[k][0][start:t0].double().numpy()
                    known = inputs_known_at(pipe, raw, x, rng[0], t0)
                    if known is not x:
                        self.inputs[len(self.items)] = torch.as_tensor(known, dtype=torch.float32)
                self.items.append((k, t0))
        if not self.items:
            raise DataError(f"no {period} window fits: the {period} period needs at least horizon = {horizon} steps",
                            hint=f"enlarge data.{'val' if period == 'val' else period}_size or shorten data.horizon")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int, Tensor, Tensor]:
        k, t0 = self.items[i]
        x, fut, y, observed = self.arrays[k]
        inputs = self.inputs.get(i)
        return (x[t0 - self.lookback: t0] if inputs is None else inputs, fut[t0: t0 + self.horizon], self.ids[k],
                y[t0: t0 + self.horizon], observed[t0: t0 + self.horizon])


def _split(series: list[TimeSeries], cfg: DataConfig, path: str | Path | None = None) -> dict[str, SplitBounds]:
    """Each series' train / validation / test periods; a series or period too short for the windows is a
    one-line error naming ``path`` (the file read)."""
    where = None if path is None else str(path)
    bounds = {}
    for s in series:
        if len(s) < cfg.lookback + cfg.horizon:
            raise DataError(f"series {s.series_id!r} has {len(s)} steps, fewer than lookback + horizon = "
                            f"{cfg.lookback} + {cfg.horizon}", path=where, hint="use a shorter data.lookback/data.horizon "
                            "or drop short series")
        try:
            b = chronological_split(len(s), cfg.train_size, cfg.val_size, cfg.test_size)
        except DataError as err:
            raise DataError(f"series {s.series_id!r}: {err.message}", path=where, hint="lower data.val_size and "
                            "data.test_size (steps or fractions), or data.train_size") from None
        for name, (lo, hi) in (("val", b.val), ("test", b.test)):
            if hi - lo < cfg.horizon:
                raise DataError(f"series {s.series_id!r}: the {name} period has {hi - lo} steps, fewer than the "
                                f"horizon {cfg.horizon}", path=where, hint=f"raise data.{name}_size or shorten data.horizon")
        if b.train[1] < cfg.lookback + cfg.horizon:
            raise DataError(f"series {s.series_id!r}: the training period has {b.train[1]} steps, fewer than lookback "
                            f"+ horizon = {cfg.lookback + cfg.horizon}", path=where,
                            hint="give more history, lower data.val_size / data.test_size, or shorten "
                                 "data.lookback / data.horizon")
        bounds[s.series_id] = b
    return bounds


def build_model(hyper: dict[str, Any]) -> Forecaster:
    return Forecaster(**hyper)


# -- trained model -----------------------------------------------------------------------------
class TrainedForecaster:
    """A trained forecaster with its pipeline: backtest labelled files, forecast from their end."""

    #: ``rnnkit predict``: ``--file`` names the history CSV itself (not a list of inputs, one a line),
    #: and no input at all forecasts from the end of the training file.
    predicts_whole_files = True

    def __init__(self, model: Forecaster, pipe: Pipeline, levels: list[float], evaluation: EvaluationConfig,
                 train_path: str | None = None) -> None:
        self.model, self.pipe, self.levels = model.eval(), pipe, levels
        self.evaluation, self.train_path = evaluation, train_path

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainedForecaster:
        run, meta = RunDir.open_task(run_dir, NAME)
        pipe = Pipeline.load(run)
        extra = run.read_json("forecasting.json")
        model = run.load_into(run.build_model(meta, build_model))
        assert isinstance(model, Forecaster)
        return cls(model, pipe, meta["levels"], EvaluationConfig(**extra.get("evaluation", {})), extra.get("train_path"))

    def diagnostic_batch(self, path: str | Path, size: int = 32) -> tuple[nn.Module, Any, Callable[[nn.Module, Any], Tensor]]:
        """``(model, batch, loss_fn)`` for :func:`rnnkit.insight.gradient_diagnostics`: windows from the end
        of each series of ``path``, taken in turn until ``size``; the encoder reads ``lookback`` steps,
        the loss is the training objective on the next ``horizon`` steps."""
        model, pipe = self.model, self.pipe
        lookback, horizon = model.lookback, model.horizon
        per_series = []
        for s in pipe.read(path):
            scaled = pipe.scale(s, len(s))
            origins = list(range(len(s) - horizon, lookback - 1, -horizon))
            per_series.append([(scaled, origin, pipe.series_index(s.series_id)) for origin in origins])
        if not any(per_series):
            raise DataError(f"no series is long enough for one window of lookback {lookback} + horizon {horizon}",
                            path=str(path), hint=f"give a file with at least {lookback + horizon} steps per series")
        windows: list[Any] = []
        depth = 0
        while len(windows) < size and any(depth < len(w) for w in per_series):
            windows += [w[depth] for w in per_series if depth < len(w)]
            depth += 1
        xs, futs, ids, ys = [], [], [], []
        for scaled, origin, sid in windows[:size]:
            x, fut = _window_inputs(scaled, origin, lookback, horizon)
            xs.append(x)
            futs.append(fut)
            ids.append(sid)
            ys.append(scaled.targets[origin: origin + horizon])
        batch = (torch.as_tensor(np.stack(xs), dtype=torch.float32),
                 torch.as_tensor(np.stack(futs), dtype=torch.float32),
                 torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(np.stack(ys), dtype=torch.float32))

        def loss_fn(m: nn.Module, b: Any) -> Tensor:
            x, fut, sid, y = b
            return m.loss(m(x, fut, sid), y)  # type: ignore[operator]

        return model, batch, loss_fn

    def _data_cfg(self, overrides: Sequence[str]) -> DataConfig:
        from .config import apply_overrides, from_dict

        data = apply_overrides({"data": asdict(self.pipe.cfg)}, list(overrides))
        if set(data) != {"data"}:
            raise ConfigError(f"--set accepts data.* keys only (how the files are read), got "
                              f"{', '.join(sorted(set(data) - {'data'}))}.*; drop that --set")
        cfg = from_dict(DataConfig, data["data"], "data.")
        check_split_sizes(cfg)
        if cfg.seasonal_period is not None and cfg.seasonal_period < 1:
            raise ConfigError(f"data.seasonal_period: must be >= 1, got {cfg.seasonal_period}")
        fixed = ("target", "past_covariates", "future_covariates", "lookback", "horizon", "calendar", "transform",
                 "scaler")
        for key in fixed:
            if getattr(cfg, key) != getattr(self.pipe.cfg, key):
                raise ConfigError(f"data.{key} is fixed by the trained model ({getattr(self.pipe.cfg, key)!r}); drop "
                                  f"--set data.{key}, or train a new model with it")
        return cfg

    def _read(self, path: str | Path, cfg: DataConfig,
              fill_breaks: Callable[[int], Sequence[int]] | None = None) -> list[TimeSeries]:
        """The series of ``path``, refused when their sampling step is not the one the model was trained
        on: a weekly file fed to a daily model would be forecast (and dated) as if it were daily. A model
        trained on business days reads a daily file none of whose days falls on a weekend on its own
        business-day grid: weekdays that span no weekend (Monday to Wednesday) cannot be told from daily
        data, yet are business days."""
        series = self.pipe.read(path, cfg, fill_breaks)
        trained = self.pipe.freq
        business = (_freq_unit(trained) or (0, ""))[1] == "B"
        if business and cfg.freq is None and all(_weekdays_only(s) for s in series):
            series = self.pipe.read(path, replace(cfg, freq=trained), fill_breaks)
        for s in series:
            if trained and s.freq and s.freq != trained:
                raise DataError(f"series {s.series_id!r} steps by {s.freq}, but the model was trained on data that "
                                f"steps by {trained}", path=str(path),
                                hint=f"give a file sampled every {trained} (a timestamp off that grid is then an "
                                     f"error naming its line), or add --set data.freq={trained}")
        return series

    def backtest(self, path: str | Path, overrides: Sequence[str] = (), stride: int | None = None) -> Backtest:
        """Rolling-origin backtest over the last ``data.test_size`` steps of every series in ``path``."""
        cfg = self._data_cfg(overrides)
        series = self._read(path, cfg, split_breaks(None, 0, cfg.test_size))
        periods, stops = {}, {}
        lookback, horizon = self.model.lookback, self.model.horizon
        if all(len(s) < lookback + horizon for s in series):
            s = series[0]
            raise DataError(f"series {s.series_id!r} has {len(s)} steps, fewer than the trained model's lookback + "
                            f"horizon = {lookback} + {horizon}", path=str(path),
                            hint=f"give a file with at least {lookback + horizon} steps per series")
        for s in series:
            if len(s) < lookback + horizon:  # no window fits: left out (Backtest.no_window), as when its period is short
                periods[s.series_id], stops[s.series_id] = (len(s), len(s)), len(s)
                continue
            try:  # a test period of every step (an int >= the length, or a fraction rounding to it) leaves no history
                b = chronological_split(len(s), None, 0, cfg.test_size)
            except DataError:
                size = (f"{cfg.test_size} steps" if isinstance(cfg.test_size, int) else
                        f"{cfg.test_size} (a fraction of the steps)")
                raise DataError(f"data.test_size = {size} leaves no history before the evaluated "
                                f"period of series {s.series_id!r} ({len(s)} steps)", path=str(path),
                                hint=f"add --set data.test_size={max(horizon, len(s) - lookback)} (steps) or give a "
                                     "longer file") from None
            periods[s.series_id], stops[s.series_id] = b.test, b.test[0]
        if not any(len(backtest_origins(len(s), lookback, horizon, 1, periods[s.series_id])) for s in series):
            s = max(series, key=len)
            lo, hi = periods[s.series_id]
            raise DataError(f"series {s.series_id!r}: the evaluated period (the last data.test_size = {hi - lo} of "
                            f"{len(s)} steps) holds no whole horizon of {horizon} steps after the lookback of "
                            f"{lookback}", path=str(path),
                            hint=f"add --set data.test_size={min(max(horizon, len(s) - lookback), len(s))} (steps) "
                                 "or give a longer file")
        pipe = self.pipe
        if cfg.seasonal_period is not None and cfg.seasonal_period != pipe.period:
            pipe = copy.copy(pipe)  # --set data.seasonal_period: the season of seasonal naive, MASE and ets
            pipe.period = cfg.seasonal_period
        return run_backtest(self.model, pipe, series, periods, stops,
                            stride or self.evaluation.stride or self.model.horizon, self.evaluation.baselines, self.levels)

    def evaluate(self, path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
        """Backtest metrics of the model, each baseline (``baseline_<name>_<metric>``) and the verdict."""
        bt = self.backtest(path, overrides)
        metrics = bt.metrics()
        for name, values in bt.baseline_metrics().items():
            metrics.update({f"{name}_{k}": v for k, v in values.items()})
        if "seasonal_naive" in bt.baselines:
            metrics["beats_seasonal_naive"] = beats_seasonal_naive(metrics, bt.baseline_metrics())
        notes = [_excluded_note(bt)] if metrics["filled_targets_excluded"] else []
        if bt.no_window:
            notes.append(f"{len(bt.no_window)} series left out, too short for one backtest window of lookback "
                         f"{self.model.lookback} + horizon {self.model.horizon} inside the evaluated period: "
                         f"{', '.join(repr(sid) for sid in bt.no_window[:5])}{' ...' if len(bt.no_window) > 5 else ''}")
        notes += [f"baseline {name} skipped: {reason}" for name, reason in bt.skipped.items()]
        if notes:
            metrics["notes"] = notes
        return metrics

    def forecast(self, path: str | Path | None = None, future_path: str | Path | None = None,
                 overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Forecasts of the next ``horizon`` steps after the end of each series, in original units.

        Args:
            path: History CSV (default: the training file).
            future_path: CSV with the known-future covariates for the horizon (needed when the
                model has ``data.future_covariates``).
            overrides: ``data.*`` overrides for reading the files.

        Returns:
            One row per series, step and target: ``series_id``, ``time``, ``step``, ``target``,
            ``forecast`` and ``q<level>`` per quantile.
        """
        if path is None:
            if not self.train_path:
                raise ValueError("this run does not record its training file: give a CSV to forecast from, e.g. "
                                 "rnnkit predict RUN history.csv")
            path = self.train_path
        cfg = self._data_cfg(overrides)
        series = self._read(path, cfg)
        lookback, horizon = self.model.lookback, self.model.horizon
        futures = self._future_covariates(series, future_path, cfg)
        xs, futs, ids, times = [], [], [], []
        for s in series:
            if len(s) < lookback:
                raise DataError(f"series {s.series_id!r} has {len(s)} steps; the model reads the last "
                                f"lookback = {lookback}", path=str(path), hint="give a longer history")
            scaled = self.pipe.scale(s, len(s))
            t_future = future_times(s, horizon)
            user = futures.get(s.series_id, np.zeros((horizon, 0)))
            fut = np.concatenate([user, calendar_features(t_future, self.pipe.calendar)], 1)
            x, _ = _window_inputs(scaled, len(s), lookback, 0)
            xs.append(x)
            futs.append(self.pipe.scale_future(s, fut))
            ids.append(self.pipe.series_index(s.series_id))
            times.append(t_future)
        point, quant, _ = _forecast(self.model, np.stack(xs), np.stack(futs), np.asarray(ids), self.levels, 256)
        rows: list[dict[str, Any]] = []
        for k, s in enumerate(series):
            p = self.pipe.unscale(point[k], s.series_id)
            q = None if quant is None else np.moveaxis(self.pipe.unscale(np.moveaxis(quant[k], -1, -2), s.series_id), -2, -1)
            for h in range(horizon):
                for j, name in enumerate(s.target_names):
                    row: dict[str, Any] = {"series_id": s.series_id, "time": _fmt_time(times[k][h]), "step": h + 1,
                                           "target": name, "forecast": float(p[h, j])}
                    if q is not None:
                        row.update({f"q{lv:g}": float(q[h, j, i]) for i, lv in enumerate(self.levels)})
                    rows.append(row)
        return rows

    def _future_covariates(self, series: list[TimeSeries], future_path: str | Path | None,
                           cfg: DataConfig) -> dict[str, np.ndarray]:
        names = list(cfg.future_covariates)
        horizon = self.model.horizon
        if not names:
            return {}
        if future_path is None:
            raise DataError(f"the model needs the known-future covariates {names} for the {horizon} steps after the "
                            "end of each series", hint="pass them in a second file: rnnkit predict RUN history.csv "
                            "future.csv (same time/series-id columns)")
        sub = DataConfig(**{**asdict(cfg), "target": names, "past_covariates": [], "future_covariates": [],
                            "fill": "error"})
        found = {s.series_id: s for s in Pipeline.read_raw(future_path, sub)}
        out = {}
        for s in series:
            f = found.get(s.series_id)
            wanted = future_times(s, horizon)
            if f is None:
                raise DataError(f"no future covariates for series {s.series_id!r}", path=str(future_path),
                                hint=f"add rows for the {horizon} steps after {_fmt_time(s.time[-1])}")
            pos = {(_fmt_time(t)): i for i, t in enumerate(f.time)}
            missing = [_fmt_time(t) for t in wanted if _fmt_time(t) not in pos]
            if missing:
                raise DataError(f"future covariates {names} missing at {missing[0]} ({len(missing)} of the {horizon} "
                                f"forecast steps) for series {s.series_id!r}", path=str(future_path),
                                hint="give every step of the horizon")
            out[s.series_id] = f.targets[[pos[_fmt_time(t)] for t in wanted]]
        return out

    def use_overrides(self, overrides: Sequence[str]) -> None:
        """Read the CSVs given to :meth:`predict` with ``data.*`` overrides (checked now)."""
        self._data_cfg(overrides)
        self.predict_overrides = list(overrides)

    def predict(self, inputs: Sequence[str]) -> list[dict[str, Any]]:
        """CLI entry: ``inputs`` = ``[history.csv]`` or ``[history.csv, future.csv]`` (empty: the training file)."""
        check_batch(inputs, "files")
        if len(inputs) > 2:
            raise ValueError(f"forecasting predict takes a history CSV and optionally a future-covariates CSV, got "
                             f"{len(inputs)} inputs; give them as rnnkit predict RUN history.csv [future.csv]")
        return self.forecast(inputs[0] if inputs else None, inputs[1] if len(inputs) > 1 else None,
                             getattr(self, "predict_overrides", ()))


def _fmt_time(t: Any) -> str:
    if isinstance(t, np.datetime64):
        text = str(t.astype("datetime64[s]"))
        return text[:-9] if text.endswith("T00:00:00") else text.replace("T", " ")
    return str(t.item() if hasattr(t, "item") else t)


def write_forecasts(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write :meth:`TrainedForecaster.forecast` rows as CSV (``.csv``) or JSON (anything else)."""
    import csv
    import json

    p = Path(path)
    if p.suffix.lower() == ".csv":
        with p.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["series_id"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        p.write_text(json.dumps(list(rows), indent=1) + "\n", encoding="utf-8")
    return p


# -- report ------------------------------------------------------------------------------------
def _plot_forecasts(bt: Backtest, series: list[TimeSeries], periods: dict[str, tuple[int, int]], count: int,
                    path: Path) -> Path | None:
    """Actual values and non-overlapping backtest forecasts of the first ``count`` series; the x axis
    shows the series' timestamps (dates when the file has a date/time column, else steps)."""
    from .report import _pyplot

    shown = list(dict.fromkeys(k for k, _ in bt.windows))[:count]
    if not shown:
        return None
    plt = _pyplot()
    horizon = bt.y.shape[1]
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 2.8 * len(shown)), squeeze=False)
    for ax, k in zip(axes[:, 0], shown):
        s = series[k]
        lo, hi = periods[s.series_id]
        start = max(0, lo - 3 * horizon - 1)
        t = np.asarray(s.time) if len(s.time) == len(s) else np.arange(len(s))
        dated = np.issubdtype(t.dtype, np.datetime64)
        ax.plot(t[start:hi], s.targets[start:hi, 0], color="black", lw=1, label="actual")
        last_end, labelled = -1, False
        for i, (kk, t0) in enumerate(bt.windows):
            if kk != k or t0 < last_end:  # non-overlapping windows only, so the plot stays readable
                continue
            last_end = t0 + horizon
            steps = t[t0:t0 + horizon]
            ax.plot(steps, bt.point[i, :, 0], color="tab:blue", lw=1.2, label=None if labelled else "forecast")
            if bt.quantiles is not None:
                ax.fill_between(steps, bt.quantiles[i, :, 0, 0], bt.quantiles[i, :, 0, -1], color="tab:blue", alpha=0.2,
                                label=None if labelled else f"{bt.levels[0]:g}-{bt.levels[-1]:g} quantiles")
            labelled = True
        ax.axvline(t[lo], color="grey", ls="--", lw=0.8)
        ax.set_title(f"series {s.series_id}: {s.target_names[0]} (test backtest from the dashed line)", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax.set_ylabel(f"{s.target_names[0]} (original units)", fontsize=8)
        if dated:  # every subplot keeps its own date labels (series may cover different dates)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
        else:
            ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_horizon(bt: Backtest, path: Path) -> Path:
    from .report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(1, bt.y.shape[1] + 1)
    ax.plot(steps, bt.by_horizon(bt.point), marker="o", label="model")
    for name, pred in bt.baselines.items():
        ax.plot(steps, bt.by_horizon(pred), marker=".", ls="--", label=name)
    ax.set(xlabel="steps ahead", ylabel="MAE (original units)", title="test error by horizon")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _excluded_note(bt: Backtest) -> str:
    """One sentence on the filled target positions left out of the metrics of a backtest."""
    n, total = bt.filled_excluded(), bt.y.size
    return (f"{n} of {total} forecast target positions (window x step x target) were filled by data.fill, not "
            "observed, and are excluded from every error metric of the model and the baselines.")


def _verdict_key(model: dict[str, Any]) -> str:
    """MASE (scale-free, so every series counts alike) where it is defined, else MAE."""
    return "mase" if math.isfinite(model.get("mase", math.nan)) else "mae"


def beats_seasonal_naive(model: dict[str, Any], baselines: dict[str, dict[str, float]]) -> bool:
    """Whether the model beats seasonal naive, judged exactly as :func:`verdict` words it (on MASE, else
    MAE), so that ``beats_seasonal_naive`` in ``metrics.json`` and ``rnnkit evaluate`` never contradicts the
    report; ``False`` when seasonal naive was not run."""
    if "seasonal_naive" not in baselines:
        return False
    key = _verdict_key(model)
    return bool(model[key] < baselines["seasonal_naive"][key])


def verdict(model: dict[str, Any], baselines: dict[str, dict[str, float]]) -> str:
    """One plain sentence on whether the model beats seasonal naive (on MASE, else MAE)."""
    if "seasonal_naive" not in baselines:
        return "Seasonal naive was not run, so there is no reference to judge the model against."
    key = _verdict_key(model)
    ours, ref = model[key], baselines["seasonal_naive"][key]
    if beats_seasonal_naive(model, baselines):
        better = sorted(((v[key], name) for name, v in baselines.items()
                         if name != "seasonal_naive" and math.isfinite(v.get(key, math.nan)) and v[key] < ours))
        if better:  # e.g. a stock price: the random walk (naive) is the forecast to beat, not seasonal naive
            return (f"The model beats seasonal naive on the test period ({key.upper()} {ours:.4g} vs {ref:.4g}), "
                    f"**but not " + ", ".join(f"{name} ({value:.4g})" for value, name in better) + "**: the simpler "
                    "forecast is the better one here.")
        return f"The model beats seasonal naive on the test period ({key.upper()} {ours:.4g} vs {ref:.4g})."
    return (f"**The model does NOT beat seasonal naive** on the test period ({key.upper()} {ours:.4g} vs "
            f"{ref:.4g}): use the seasonal naive forecast, or more data, a longer lookback or more epochs.")


# -- training ----------------------------------------------------------------------------------
def dev_metrics(config: Config) -> dict[str, str | None]:
    """Every quality metric ``train`` reports under ``metrics["dev"]`` for ``config``, with its
    direction: ``"max"`` (higher is better), ``"min"`` (lower is better) or ``None`` (no better
    direction). Counts and speeds are left out. ``rnnkit compare`` reads it."""
    out: dict[str, str | None] = {"mae": "min", "rmse": "min", "mape": "min", "smape": "min", "mase": "min"}
    if config.model.likelihood in ("quantile", "gaussian", "student_t"):
        out.update({"quantile_loss": "min", "crps": "min"})
        if len(config.levels()) >= 2:
            out["coverage"] = None  # best when closest to the nominal level, not highest or lowest
    return out


def quality_metric(config: Config) -> str:
    """The dev metric ``rnnkit compare`` compares cells by: MASE on the dev backtest (scale-free, as in the
    verdict against seasonal naive); epochs are selected on the validation loss, which the dev backtest does
    not report."""
    return "mase"


def train(config: Config, train_path: str | Path, dev_path: str | Path | None, run: RunDir,
          log: Callable[[str], None], progress: bool = True) -> dict[str, Any]:
    from .engine import EngineOptions, build_for_run, fit, prior_seconds, stop_reason
    from .report import markdown_table, plot_learning_curves

    cfg, t0 = config, time.perf_counter()
    d, m = cfg.data, cfg.model
    if not d.target:
        raise ConfigError("data.target is required: the column(s) to forecast, e.g. --set data.target=sales")
    if dev_path is not None:
        raise ConfigError("forecasting selects the model on the last data.val_size steps of each training series; "
                          "--dev is not used (give one file with the whole history)")
    torch.manual_seed(cfg.train.seed)
    dataset = Pipeline.read_raw(train_path, d, split_breaks(d.train_size, d.val_size, d.test_size))
    series = list(dataset)
    for report in dataset.reports.values():
        if report.num_gaps or report.nan_filled or report.sorted_rows:
            log(report.summary())
    bounds = _split(series, d, train_path)
    stride = cfg.evaluation.stride or d.horizon
    for what, key in (("validation", "val"), ("test", "test")):  # refuse before training, not after
        # the positions the backtest scores (its windows' targets), not the whole period: with a stride the
        # last steps of a period may lie in no window, and an observed value there is never scored
        targets = [_observed(s)[t0:t0 + d.horizon] for s in series
                   for t0 in backtest_origins(len(s), d.lookback, d.horizon, stride,
                                              getattr(bounds[s.series_id], key)).tolist()]
        if targets and not np.any(targets):
            raise _all_filled_error(what, d.fill)
    pipe = Pipeline.fit(series, bounds, d)
    series = [_with_calendar(s, pipe.calendar) for s in series]
    scaled = [pipe.scale(s, bounds[s.series_id].train[1]) for s in series]
    ids = [pipe.series_index(s.series_id) for s in series]
    levels = cfg.levels()
    log(f"{len(series)} series, {sum(len(s) for s in series):,} steps ({series[0].freq or 'no time column'}); "
        f"targets {', '.join(d.target)}; calendar features: {', '.join(pipe.calendar) or 'none'}; season "
        f"length {pipe.period}")
    if m.window_norm == "seasonal" and d.lookback < pipe.period:
        raise ConfigError(f"model.window_norm=seasonal reads the last season from the input window, but data.lookback "
                          f"= {d.lookback} is shorter than the season length {pipe.period}; raise data.lookback")
    train_ds = _Windows(scaled, ids, "train", bounds, d.lookback, d.horizon, d.train_stride)
    val_ds = _Windows(scaled, ids, "val", bounds, d.lookback, d.horizon, 1, known_inputs=(series, pipe))
    hyper = {"n_targets": len(d.target), "n_past": scaled[0].past_covariates.shape[1],
             "n_future": scaled[0].future_covariates.shape[1], "horizon": d.horizon, "lookback": d.lookback,
             "cell": m.cell, "hidden_size": m.hidden_size, "num_layers": m.num_layers, "dropout": m.dropout,
             "decoder": m.decoder, "likelihood": m.likelihood, "quantiles": levels, "num_series": len(series),
             "series_embedding_dim": m.series_embedding_dim, "window_norm": m.window_norm, "season": pipe.period}
    model = build_for_run(run, lambda: build_model(hyper))
    params = sum(p.numel() for p in model.parameters())
    log(f"{len(train_ds):,} training / {len(val_ds):,} validation windows; model: {m.cell.upper()} x{m.num_layers} "
        f"encoder + {m.decoder} decoder, {m.likelihood} output, {params:,} parameters")
    steps_total = max(1, cfg.train.epochs * math.ceil(len(train_ds) / cfg.train.batch_size))
    counter = {"step": 0}  # the teacher-forcing schedule's position; saved with the engine's checkpoint

    def loss_fn(mdl: nn.Module, batch: Any) -> Tensor:
        x, fut, sid, y, observed = batch
        assert isinstance(mdl, Forecaster)
        progress_ = min(1.0, counter["step"] / steps_total)
        mdl.teacher_forcing = m.teacher_forcing + (m.teacher_forcing_end - m.teacher_forcing) * progress_
        counter["step"] += 1
        return mdl.loss(mdl(x, fut, sid, y), y, None if bool(observed.all()) else observed)

    def predict_fn(mdl: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        x, fut, sid, y, observed = batch
        return mdl(x, fut, sid), y.masked_fill(~observed, math.nan)  # NaN: a filled value, not scored

    def metric_fn(params_: Tensor, y: Tensor) -> dict[str, float]:
        observed = ~y.isnan()
        if bool(observed.all()):
            return {"loss": float(model.loss(params_, y)), "mae": float((model.point(params_) - y).abs().mean())}
        y = y.nan_to_num()
        return {"loss": float(model.loss(params_, y, observed)),
                "mae": float((model.point(params_) - y).abs()[observed].mean())}

    options = EngineOptions(epochs=cfg.train.epochs, learning_rate=cfg.train.learning_rate, optimizer=cfg.train.optimizer,
                            weight_decay=cfg.train.weight_decay, clip_norm=cfg.train.clip_norm,
                            patience=cfg.train.patience, monitor="loss", mode="min", seed=cfg.train.seed,
                            accelerator=cfg.train.accelerator, progress=progress,
                            max_seconds=seconds_budget(cfg.train.max_minutes),
                            precision=cfg.train.precision)
    from ..data.bucketing import EpochSampler

    generator = torch.Generator().manual_seed(cfg.train.seed)  # seed draws stay off the global random state
    shuffled = EpochSampler(len(train_ds), shuffle=True, seed=cfg.train.seed)  # order from (seed, epoch) only
    history = fit(model, torch.utils.data.DataLoader(train_ds, batch_size=cfg.train.batch_size, sampler=shuffled,
                                                     generator=generator),
                  torch.utils.data.DataLoader(val_ds, batch_size=4 * cfg.train.batch_size),
                  loss_fn=loss_fn, predict_fn=predict_fn, metric_fn=metric_fn, options=options, run=run, log=log,
                  task_state=counter)
    train_seconds = time.perf_counter() - t0 + prior_seconds()  # a resumed run: its whole training
    pipe.save(run)
    extra = run.read_json("forecasting.json")
    run.write_json("forecasting.json", {**extra, "evaluation": asdict(cfg.evaluation),
                                        "train_path": str(Path(train_path).resolve())})
    run.save_model(model, NAME, hyper)
    meta = run.read_json("model.json")
    run.write_json("model.json", {**meta, "levels": levels})
    stops = {sid: b.train[1] for sid, b in bounds.items()}
    dev_bt = run_backtest(model, pipe, series, {sid: b.val for sid, b in bounds.items()}, stops, stride,
                          cfg.evaluation.baselines, levels, period_name="validation")
    test_bt = run_backtest(model, pipe, series, {sid: b.test for sid, b in bounds.items()}, stops, stride,
                           cfg.evaluation.baselines, levels, period_name="test")
    test_metrics, base_metrics = test_bt.metrics(), test_bt.baseline_metrics()
    for name, reason in test_bt.skipped.items():
        log(f"baseline {name} skipped: {reason}")
    for what, bt in (("validation", dev_bt), ("test", test_bt)):
        if bt.filled_excluded():
            log(f"{what} backtest: {_excluded_note(bt)}")
    sentence = verdict(test_metrics, base_metrics)
    log(sentence.replace("**", ""))
    best = min(history, key=lambda r: r.get("dev_loss", math.inf))["epoch"] if history else 0
    metrics = {"dev": dev_bt.metrics(), "test": test_metrics, "baselines": base_metrics,
               "baselines_skipped": test_bt.skipped,
               "beats_seasonal_naive": beats_seasonal_naive(test_metrics, base_metrics),
               "error_by_horizon": {"model": test_bt.by_horizon(test_bt.point),
                                    **{k: test_bt.by_horizon(v) for k, v in test_bt.baselines.items()}},
               "train_seconds": train_seconds, "parameters": params, "best_epoch": best, "epochs_run": len(history), "stopped": stop_reason(),
               "series": len(series), "data_reports": {k: r.to_dict() for k, r in dataset.reports.items()}}
    run.write_json("metrics.json", metrics)
    _write_report(run, cfg, train_path, series, bounds, test_bt, metrics, sentence, history, markdown_table,
                  plot_learning_curves)
    return metrics


def _write_report(run: RunDir, cfg: Config, train_path: str | Path, series: list[TimeSeries],
                  bounds: dict[str, SplitBounds], bt: Backtest, metrics: dict[str, Any], sentence: str,
                  history: list[dict[str, float]], markdown_table: Any, plot_learning_curves: Any) -> None:
    d = cfg.data
    names = ["mae", "rmse", "mape", "smape", "mase"]
    rows: list[list[object]] = [["model", *[metrics["test"].get(k, math.nan) for k in names]]]
    rows += [[name, *[v.get(k, math.nan) for k in names]] for name, v in metrics["baselines"].items()]
    b0 = next(iter(bounds.values()))
    report = [f"# Forecasting run: {run.path.name}", "",
              f"Trained on `{train_path}`: {len(series)} series, targets {', '.join(d.target)}, lookback {d.lookback}, "
              f"horizon {d.horizon}; split per series into train / validation / test (first series: steps "
              f"{b0.train[0]}-{b0.train[1] - 1} / {b0.val[0]}-{b0.val[1] - 1} / {b0.test[0]}-{b0.test[1] - 1}). "
              f"Training took {metrics['train_seconds']:.0f} s; best epoch {metrics['best_epoch']} of "
              f"{metrics['epochs_run']}; {metrics['parameters']:,} parameters.", "",
              "## Verdict", "", sentence, "",
              f"## Test backtest ({metrics['test']['windows']} windows, origins every "
              f"{cfg.evaluation.stride or d.horizon} steps, no refit; original units)", "",
              markdown_table(["forecast", "MAE", "RMSE", "MAPE %", "sMAPE %", "MASE"], rows), ""]
    t = metrics["test"]
    if "crps" in t:
        report += [f"Probabilistic ({cfg.model.likelihood}): quantile loss {t['quantile_loss']:.4g}, CRPS {t['crps']:.4g}, "
                   f"coverage of the {t.get('nominal_coverage', 0):.0%} interval {t.get('coverage', math.nan):.1%}.", ""]
    for name, reason in metrics["baselines_skipped"].items():
        report += [f"Baseline {name} was skipped: {reason}.", ""]
    report += [f"MASE divides by the in-sample MAE of the seasonal naive forecast (season length {run.read_json('forecasting.json')['period']}) "
               "over the training period.", ""]
    if t.get("filled_targets_excluded"):
        report += [f"Test backtest: {_excluded_note(bt)}", ""]
    filled = [r for r in metrics["data_reports"].values() if r["num_gaps"] or r["nan_filled"]]
    if filled:
        report += ["## Data repairs", ""] + [f"- series {r['series_id']}: {r['num_gaps']} gaps ({r['num_missing_steps']} "
                                             f"steps) and {sum(r['nan_filled'].values())} empty cells filled by "
                                             f"{r['policy']!r}" for r in filled] + [""]
    periods = {sid: b.test for sid, b in bounds.items()}
    if _plot_forecasts(bt, series, periods, cfg.evaluation.plot_series, run.file("forecasts.png")):
        report += ["## Forecasts", "", "![forecasts](forecasts.png)", ""]
    _plot_horizon(bt, run.file("error_by_horizon.png"))
    report += ["## Error by horizon", "", "![error by horizon](error_by_horizon.png)", ""]
    if plot_learning_curves(history, run.file("learning_curves.png")):
        report += ["## Learning curves", "", "![learning curves](learning_curves.png)", "",
                   "The training loss and the per-epoch validation loss and MAE (`dev_loss`, `dev_mae` in "
                   "`train.log` and `history.csv`) are computed on the scaled series (the per-series "
                   "`data.scaler` fitted on the training period), over every validation window (stride 1); the metric tables above are "
                   "in original units, from the backtest.", ""]
    run.write_text("report.md", "\n".join(report))
