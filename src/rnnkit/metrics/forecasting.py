"""Forecast accuracy: point errors, scaled errors and scores of probabilistic forecasts.

Shapes follow one convention: ``y`` and ``pred`` are arrays ``[N, H, T]`` (windows, horizon
steps, targets) in original units; quantile forecasts are ``[N, H, T, Q]``. Every function also
accepts any shape that broadcasts the same way.

References:
    Hyndman & Koehler (2006), "Another look at measures of forecast accuracy" (MASE, sMAPE).
    Gneiting & Raftery (2007), "Strictly proper scoring rules, prediction, and estimation"
    (CRPS, its Gaussian closed form, and CRPS as the integral of the pinball loss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "mae",
    "rmse",
    "mape",
    "smape",
    "mase",
    "mase_scale",
    "pinball_loss",
    "crps_from_quantiles",
    "crps_gaussian",
    "coverage",
    "point_metrics",
    "probabilistic_metrics",
    "by_horizon",
]


def _arr(x: object) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def mae(y: object, pred: object) -> float:
    """Mean absolute error ``mean |y - pred|``."""
    return float(np.mean(np.abs(_arr(y) - _arr(pred))))


def rmse(y: object, pred: object) -> float:
    """Root mean squared error ``sqrt(mean (y - pred)^2)``."""
    return float(np.sqrt(np.mean((_arr(y) - _arr(pred)) ** 2)))


def mape(y: object, pred: object) -> float:
    """Mean absolute percentage error ``100 * mean |y - pred| / |y|`` over the steps with ``y != 0``.

    Returns ``nan`` when every actual value is zero (the percentage is undefined there).
    """
    a, p = _arr(y), _arr(pred)
    keep = a != 0
    if not keep.any():
        return math.nan
    return float(100.0 * np.mean(np.abs(a[keep] - p[keep]) / np.abs(a[keep])))


def smape(y: object, pred: object) -> float:
    """Symmetric MAPE ``100 * mean 2|y - pred| / (|y| + |pred|)`` in ``[0, 200]`` (the M4 competition's
    sMAPE); ``0/0`` counts as 0. A NaN actual or forecast makes the result NaN, as it does MAE."""
    a, p = _arr(y), _arr(pred)
    den = np.abs(a) + np.abs(p)
    ratio = np.divide(2.0 * np.abs(a - p), den, out=np.zeros_like(den), where=den > 0)
    ratio = np.where(np.isnan(den), np.nan, ratio)  # NaN > 0 is False: without this a NaN would count as 0
    return float(100.0 * np.mean(ratio))


def mase_scale(history: object, period: int = 1) -> np.ndarray:
    """In-sample MAE of the seasonal naive forecast, the denominator of MASE.

    Args:
        history: ``[N]`` or ``[N, T]`` values before the forecast period.
        period: Seasonal period ``m`` (1: the naive forecast).

    Returns:
        ``mean_t |y_t - y_{t-m}|`` per target (``[T]``, or a 0-d array for 1-D input). When the
        history is shorter than ``m + 1`` steps, the naive (``m = 1``) scale is used; a zero scale
        (a constant history) is returned as ``nan`` so that MASE is visibly undefined.
    """
    h = _arr(history)
    m = period if h.shape[0] > period else 1
    if h.shape[0] <= m:
        return np.full(h.shape[1:], np.nan)
    scale = np.mean(np.abs(h[m:] - h[:-m]), axis=0)
    return np.where(scale > 0, scale, np.nan)


def mase(y: object, pred: object, scale: object) -> float:
    """Mean absolute scaled error ``mean |y - pred| / scale``.

    Args:
        y: Actual values.
        pred: Forecasts.
        scale: :func:`mase_scale` of the matching series, broadcastable to ``y`` (e.g.
            ``[N, 1, T]`` for windows of different series).

    Returns:
        The mean over the elements whose scale is defined (finite and > 0; ``nan`` if none is). Only
        an undefined scale leaves an element out: a NaN or infinite forecast or actual value makes
        the result NaN or infinite, as it does MAE, rather than vanishing from the mean.
    """
    err = np.abs(_arr(y) - _arr(pred))
    s = _arr(scale)
    shape = np.broadcast_shapes(err.shape, s.shape)
    err, s = np.broadcast_to(err, shape), np.broadcast_to(s, shape)
    ok = np.isfinite(s) & (s > 0)
    return float(np.mean(err[ok] / s[ok])) if ok.any() else math.nan


def pinball_loss(y: object, quantile_preds: object, quantiles: Sequence[float]) -> float:
    """Mean pinball (quantile) loss over every element and quantile level.

    For level ``q`` and error ``e = y - pred_q`` the loss is ``max(q e, (q - 1) e)``.

    Args:
        y: ``[...]`` actual values.
        quantile_preds: ``[..., Q]`` forecasts of the quantiles.
        quantiles: The ``Q`` levels in ``(0, 1)``.
    """
    q = _arr(quantiles)
    e = _arr(y)[..., None] - _arr(quantile_preds)
    return float(np.mean(np.maximum(q * e, (q - 1.0) * e)))


def crps_from_quantiles(y: object, quantile_preds: object, quantiles: Sequence[float]) -> float:
    """CRPS approximated from a few quantiles: ``2 * mean pinball loss``.

    CRPS is the integral over all levels of twice the pinball loss; averaging over the
    predicted levels is the usual discrete approximation (exact as the levels fill (0, 1)).
    """
    return 2.0 * pinball_loss(y, quantile_preds, quantiles)


def crps_gaussian(y: object, mean: object, std: object) -> float:
    """Mean closed-form CRPS of Gaussian forecasts ``N(mean, std^2)``:
    ``std * (z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi))`` with ``z = (y - mean) / std``.

    ``std = 0`` is the point forecast ``mean``, whose CRPS is its absolute error ``|y - mean|``
    (the limit of the formula)."""
    err = _arr(y) - _arr(mean)
    s = _arr(std)
    err, s = np.broadcast_arrays(err, s)
    point = s == 0
    safe = np.where(point, 1.0, s)
    z = err / safe
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * np.minimum(z**2, 1e300)) / math.sqrt(2.0 * math.pi)
    crps = safe * (z * (2.0 * cdf - 1.0) + 2.0 * pdf - 1.0 / math.sqrt(math.pi))
    return float(np.mean(np.where(point, np.abs(err), crps)))


def _erf(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.special.erf(torch.as_tensor(x, dtype=torch.float64)).numpy()


def coverage(y: object, lower: object, upper: object) -> float:
    """Share of actual values inside ``[lower, upper]``."""
    a = _arr(y)
    return float(np.mean((a >= _arr(lower)) & (a <= _arr(upper))))


def point_metrics(y: object, pred: object, scale: object | None = None) -> dict[str, float]:
    """MAE, RMSE, MAPE, sMAPE and (given :func:`mase_scale`) MASE of point forecasts."""
    out = {"mae": mae(y, pred), "rmse": rmse(y, pred), "mape": mape(y, pred), "smape": smape(y, pred)}
    if scale is not None:
        out["mase"] = mase(y, pred, scale)
    return out


def probabilistic_metrics(y: object, quantile_preds: object, quantiles: Sequence[float],
                          gaussian: tuple[object, object] | None = None) -> dict[str, float]:
    """Quantile loss, CRPS and the coverage of the outermost central interval.

    Args:
        y: ``[...]`` actual values.
        quantile_preds: ``[..., Q]`` forecast quantiles at ``quantiles`` (sorted ascending).
        quantiles: The levels.
        gaussian: ``(mean, std)`` for Gaussian forecasts: CRPS then uses the closed form.

    Returns:
        ``quantile_loss``, ``crps``, ``coverage`` (of ``[q_min, q_max]``) and
        ``nominal_coverage`` (``q_max - q_min``).
    """
    qp = _arr(quantile_preds)
    q = list(quantiles)
    out = {"quantile_loss": pinball_loss(y, qp, q)}
    out["crps"] = crps_gaussian(y, *gaussian) if gaussian is not None else crps_from_quantiles(y, qp, q)
    if len(q) >= 2:
        out["coverage"] = coverage(y, qp[..., 0], qp[..., -1])
        out["nominal_coverage"] = float(q[-1] - q[0])
    return out


def by_horizon(y: object, pred: object) -> list[float]:
    """MAE of each horizon step (axis 1 of ``[N, H, ...]``)."""
    err = np.abs(_arr(y) - _arr(pred))
    return [float(v) for v in err.reshape(err.shape[0], err.shape[1], -1).mean(axis=(0, 2))]
