"""Invertible, saveable value transforms: scalers (standard, min-max, robust), log and
differencing.

Scalers work per feature (the last axis) and optionally per series: ``fit`` on a
``{series_id: array}`` mapping with ``per_series=True`` keeps one set of statistics per
series. Fit them on training data only (see
:func:`rnnkit.data.windows.make_forecasting_splits`, which does it for you), then
``transform`` every split and ``inverse_transform`` predictions. NumPy arrays and torch
tensors are both accepted and returned as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .serialization import JsonSerializable

__all__ = [
    "Scaler",
    "StandardScaler",
    "MinMaxScaler",
    "RobustScaler",
    "LogTransform",
    "DifferenceTransform",
    "GLOBAL_KEY",
]

GLOBAL_KEY = "__all__"


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"data is not a rectangular array of numbers ({exc})",
            hint="give an [N] or [N, F] array with the same number of features on every row",
        ) from None


def _like(result: np.ndarray, original: Any) -> Any:
    if isinstance(original, torch.Tensor):
        dtype = original.dtype if original.is_floating_point() else torch.get_default_dtype()
        return torch.as_tensor(result, dtype=dtype, device=original.device)
    return result


class Scaler(JsonSerializable):
    """Base class of affine scalers ``y = (x - center) / scale``.

    Args:
        per_series: Keep statistics per series (fit on a mapping of series id to array).
    """

    def __init__(self, per_series: bool = False) -> None:
        self.per_series = per_series
        self.stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # subclasses: compute (center, scale) over axis 0 of a 2-D array
    def _compute(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _options(self) -> dict[str, Any]:
        return {}

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has been called."""
        return bool(self.stats)

    def _fit_array(self, x: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
        if x.size == 0:
            raise DataError(
                f"cannot fit {type(self).__name__} on empty data (series {key!r})",
                hint="fit on the training split",
            )
        if not np.isfinite(x).all():
            raise DataError(
                f"{type(self).__name__} fit data has NaN or inf values (series {key!r})",
                hint="fill missing values first, e.g. read_timeseries(fill='interpolate')",
            )
        flat = x.reshape(-1, 1) if x.ndim == 1 else x.reshape(-1, x.shape[-1])
        center, scale = self._compute(flat)
        scale = np.where(np.abs(scale) < 1e-12, 1.0, scale)  # constant features pass through
        if x.ndim == 1:
            center, scale = center.reshape(()), scale.reshape(())
        return center, scale

    def fit(self, data: Any) -> Scaler:
        """Compute the statistics.

        Args:
            data: ``[N]`` / ``[N, F]`` array or tensor, or a mapping ``{series_id: array}``.
                With ``per_series=True`` a mapping is required; otherwise a mapping is
                pooled.

        Returns:
            ``self``.
        """
        self.stats = {}
        if isinstance(data, Mapping):
            if not data:
                raise DataError("cannot fit on an empty mapping", hint="pass at least one series")
            arrays = {str(k): _to_numpy(v) for k, v in data.items()}
            if self.per_series:
                for k, v in arrays.items():
                    self.stats[k] = self._fit_array(v, k)
            else:
                shapes = {k: v.shape[1:] for k, v in arrays.items()}
                if len(set(shapes.values())) != 1:
                    shown = ", ".join(f"{k!r}: {list(v)}" for k, v in list(shapes.items())[:4])
                    raise DataError(
                        f"series have different feature shapes ({shown}), so they cannot be pooled",
                        hint="give every series the same features, or pass per_series=True",
                    )
                self.stats[GLOBAL_KEY] = self._fit_array(
                    np.concatenate(list(arrays.values()), axis=0), GLOBAL_KEY
                )
        else:
            if self.per_series:
                raise DataError(
                    f"{type(self).__name__}(per_series=True) needs a mapping {{series_id: array}}",
                    hint="pass a dict, or per_series=False",
                )
            self.stats[GLOBAL_KEY] = self._fit_array(_to_numpy(data), GLOBAL_KEY)
        return self

    def _get(self, series_id: str | None, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.stats:
            raise DataError(f"{type(self).__name__} is not fitted", hint="call fit() on training data first")
        if self.per_series:
            if series_id is None:
                raise DataError(
                    "per-series scaler needs series_id=", hint="pass the id of the series being transformed"
                )
            key = str(series_id)
            if key not in self.stats:
                known = list(self.stats)[:10]
                raise DataError(
                    f"no statistics for series {key!r}; fitted series include {known}",
                    hint="fit on every series",
                )
        else:
            key = GLOBAL_KEY
        center, scale = self.stats[key]
        if center.ndim == 1 and (x.ndim == 0 or x.shape[-1] != center.shape[0]):
            raise DataError(
                f"data has {x.shape[-1] if x.ndim else 1} features on its last axis, the scaler was fitted on {center.shape[0]}",
                hint="transform arrays shaped like the fit data ([..., F])",
            )
        return center, scale

    def _apply(self, data: Any, series_id: str | None, inverse: bool) -> Any:
        if isinstance(data, Mapping):
            return {k: self._apply(v, k, inverse) for k, v in data.items()}
        x = _to_numpy(data)
        center, scale = self._get(series_id, x)
        y = x * scale + center if inverse else (x - center) / scale
        return _like(y, data)

    def transform(self, data: Any, series_id: str | None = None) -> Any:
        """Scale data.

        Args:
            data: Array/tensor ``[..., F]``, or a mapping. A scaler fitted on 1-D data (one
                feature) scales every value of any shape alike, e.g. ``[N, window]`` windows of
                the series it was fitted on; fit on ``[N, F]`` data for per-column statistics.
            series_id: The series, for per-series scalers.

        Returns:
            Scaled data of the same type.
        """
        return self._apply(data, series_id, inverse=False)

    def inverse_transform(self, data: Any, series_id: str | None = None) -> Any:
        """Undo :meth:`transform` (e.g. on predictions).

        Args:
            data: Scaled data.
            series_id: The series, for per-series scalers.

        Returns:
            Data in original units, of the same type.
        """
        return self._apply(data, series_id, inverse=True)

    def fit_transform(self, data: Any) -> Any:
        """:meth:`fit` then :meth:`transform` the same data.

        Args:
            data: Training data.

        Returns:
            Scaled training data.
        """
        self.fit(data)
        return self.transform(data)

    def to_config(self) -> dict[str, Any]:
        """Return options and fitted statistics."""
        return {
            "per_series": self.per_series,
            **self._options(),
            "stats": {k: {"center": c.tolist(), "scale": s.tolist()} for k, (c, s) in self.stats.items()},
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Scaler:
        """Rebuild from :meth:`to_config` output."""
        options = {k: v for k, v in config.items() if k != "stats"}
        for k, v in options.items():
            if isinstance(v, list):
                options[k] = tuple(v)
        obj = cls(**options)
        obj.stats = {
            k: (np.asarray(v["center"], dtype=np.float64), np.asarray(v["scale"], dtype=np.float64))
            for k, v in config["stats"].items()
        }
        return obj


class StandardScaler(Scaler):
    """Zero mean, unit variance per feature (population standard deviation).

    Args:
        per_series: Keep statistics per series.
    """

    def _compute(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # A constant feature's std is not always 0 in floating point (123456.789 repeated
        # gives ~6e-11), which would blow any other value up by 1e10: treat it as constant.
        constant = x.max(axis=0) == x.min(axis=0)
        return x.mean(axis=0), np.where(constant, 0.0, x.std(axis=0))


class MinMaxScaler(Scaler):
    """Map each feature's training range onto ``feature_range``.

    Args:
        feature_range: Output ``(low, high)``.
        per_series: Keep statistics per series.
    """

    def __init__(self, feature_range: tuple[float, float] = (0.0, 1.0), per_series: bool = False) -> None:
        super().__init__(per_series)
        low, high = feature_range
        if not high > low:
            raise DataError(
                f"feature_range must have low < high, got {feature_range}", hint="e.g. (0, 1) or (-1, 1)"
            )
        self.feature_range = (float(low), float(high))

    def _options(self) -> dict[str, Any]:
        return {"feature_range": list(self.feature_range)}

    def _compute(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        low, high = self.feature_range
        xmin, xmax = x.min(axis=0), x.max(axis=0)
        span = np.where(xmax - xmin < 1e-12, 1.0, xmax - xmin)
        scale = span / (high - low)
        return xmin - low * scale, scale


class RobustScaler(Scaler):
    """Center on the median and scale by the inter-quantile range (outlier-resistant).

    Args:
        quantile_range: Percentiles ``(q_low, q_high)`` of the range, default ``(25, 75)``.
        per_series: Keep statistics per series.
    """

    def __init__(self, quantile_range: tuple[float, float] = (25.0, 75.0), per_series: bool = False) -> None:
        super().__init__(per_series)
        q_low, q_high = quantile_range
        if not 0 <= q_low < q_high <= 100:
            raise DataError(
                f"quantile_range must satisfy 0 <= low < high <= 100, got {quantile_range}",
                hint="e.g. (25, 75)",
            )
        self.quantile_range = (float(q_low), float(q_high))

    def _options(self) -> dict[str, Any]:
        return {"quantile_range": list(self.quantile_range)}

    def _compute(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.percentile(x, [self.quantile_range[0], 50.0, self.quantile_range[1]], axis=0)
        return q[1], q[2] - q[0]


class LogTransform(JsonSerializable):
    """``y = log(x + offset)``; inverse ``exp(y) - offset``.

    Args:
        offset: Added before the log (``1.0`` gives ``log1p``); values must exceed
            ``-offset``.
    """

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = float(offset)

    def fit(self, data: Any) -> LogTransform:
        """Check the data is in the log's domain (there is nothing to learn).

        Args:
            data: Training data.

        Returns:
            ``self``.
        """
        self.transform(data)
        return self

    def transform(self, data: Any) -> Any:
        """Apply the log.

        Args:
            data: Array or tensor with values ``> -offset``.

        Returns:
            ``log(data + offset)``, same type.
        """
        x = _to_numpy(data) + self.offset
        if np.isnan(x).any():
            raise DataError(
                f"log transform input has {int(np.isnan(x).sum())} NaN values",
                hint="fill missing values first, e.g. read_timeseries(fill='interpolate')",
            )
        if x.size and not (x > 0).all():
            raise DataError(
                f"log transform needs values > {-self.offset:g}; smallest value is {np.nanmin(x) - self.offset:g}",
                hint="pass LogTransform(offset=...) so that every value + offset > 0",
            )
        return _like(np.log(x), data)

    def inverse_transform(self, data: Any) -> Any:
        """Undo the log.

        Args:
            data: Log values.

        Returns:
            ``exp(data) - offset``, same type.
        """
        return _like(np.exp(_to_numpy(data)) - self.offset, data)

    def to_config(self) -> dict[str, Any]:
        """Return ``{"offset": ...}``."""
        return {"offset": self.offset}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LogTransform:
        """Rebuild from :meth:`to_config` output."""
        return cls(**config)


class DifferenceTransform(JsonSerializable):
    """Differencing along time (axis 0): ``y[t] = x[t] - x[t - lag]``, applied ``order`` times.

    The output is ``order * lag`` steps shorter. Inverting needs the ``order * lag`` raw
    values that precede the first difference (the "history"), e.g. the end of the input
    window when inverting a forecast.

    Args:
        lag: Differencing lag (``1``: plain, ``12``: seasonal for monthly data).
        order: Number of times to difference.
    """

    def __init__(self, lag: int = 1, order: int = 1) -> None:
        if any(isinstance(v, bool) or int(v) != v for v in (lag, order)) or lag < 1 or order < 1:
            raise DataError(
                f"lag and order must be whole numbers >= 1, got lag={lag}, order={order}",
                hint="e.g. lag=1, order=1",
            )
        self.lag = int(lag)
        self.order = int(order)

    @property
    def history_length(self) -> int:
        """Raw steps needed by :meth:`inverse_transform`."""
        return self.lag * self.order

    def transform(self, data: Any) -> Any:
        """Difference the data.

        Args:
            data: ``[N, ...]`` array or tensor, ``N > order * lag``.

        Returns:
            ``[N - order * lag, ...]`` differences, same type.
        """
        x = _to_numpy(data)
        if x.shape[0] <= self.history_length:
            raise DataError(
                f"series of {x.shape[0]} steps is too short to difference with lag={self.lag}, order={self.order}",
                hint=f"give more than {self.history_length} steps",
            )
        for _ in range(self.order):
            x = x[self.lag :] - x[: -self.lag]
        return _like(x, data)

    def inverse_transform(self, data: Any, history: Any) -> Any:
        """Rebuild raw values from differences.

        Args:
            data: ``[M, ...]`` differences.
            history: The ``order * lag`` raw values just before the first rebuilt step.

        Returns:
            ``[M, ...]`` raw values, same type as ``data``.
        """
        d = _to_numpy(data)
        h = _to_numpy(history)
        if h.shape[0] != self.history_length:
            raise DataError(
                f"history has {h.shape[0]} steps, need order*lag = {self.history_length}",
                hint="pass the raw values that precede the differenced segment",
            )
        # levels[i] = the history differenced i times; keep the last `lag` values of each.
        levels = [h]
        for _ in range(self.order - 1):
            prev = levels[-1]
            levels.append(prev[self.lag :] - prev[: -self.lag])
        x = d
        for level in reversed(levels):
            seed = level[-self.lag :]
            # out[t + lag] = x[t] + out[t]: a running sum down each of the `lag` interleaved streams,
            # one cumsum over [steps / lag, lag, ...] rows (accumulate adds in order, as the loop did)
            rows = -(-(x.shape[0] + self.lag) // self.lag)
            out = np.zeros((rows * self.lag, *x.shape[1:]), dtype=np.float64)
            out[: self.lag] = seed
            out[self.lag : x.shape[0] + self.lag] = x
            out = np.cumsum(out.reshape(rows, self.lag, *x.shape[1:]), axis=0).reshape(out.shape)
            x = out[self.lag : x.shape[0] + self.lag]
        return _like(x, data)

    def to_config(self) -> dict[str, Any]:
        """Return ``{"lag", "order"}``."""
        return {"lag": self.lag, "order": self.order}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DifferenceTransform:
        """Rebuild from :meth:`to_config` output."""
        return cls(**config)
