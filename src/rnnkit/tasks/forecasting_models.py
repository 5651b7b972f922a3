"""The forecasting network, its output distributions, calendar features and classical baselines.

Network (one model for many series, Salinas et al. 2020 "DeepAR", sec. 3, and Wen et al. 2017
"A Multi-Horizon Quantile Recurrent Forecaster", sec. 3): a recurrent encoder of any cell reads
the lookback window (past targets, past covariates, known-future covariates and a learned
embedding of the series id), then

* ``decoder="direct"``: one head maps the encoder's last output, the known-future covariates of
  every horizon step and the series embedding to all horizon steps at once; or
* ``decoder="autoregressive"``: a recurrent decoder of the same cell, started from the encoder
  state, emits one step at a time and is fed its previous value: the true one with probability
  ``teacher_forcing`` in training (scheduled sampling, Bengio et al. 2015), its own forecast
  otherwise and always at prediction time.

Each step's output parameterises a distribution per target: a point (MSE or MAE loss), ordered
quantiles (pinball loss), a Gaussian or a Student-t (negative log-likelihood). Window
normalisation (``"last"`` or ``"mean"``, in the spirit of RevIN, Kim et al. 2022) subtracts a
per-window level from the input targets and adds it back to the output locations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import recurrent_layer

LIKELIHOODS = ("quantile", "gaussian", "student_t", "mse", "mae")
CALENDAR_FEATURES = {"hour": 24, "weekday": 7, "month": 12}
BASELINES = ("naive", "seasonal_naive", "drift", "ets")


def param_count(likelihood: str, num_quantiles: int) -> int:
    """Distribution parameters per target and step."""
    return {"quantile": num_quantiles, "gaussian": 2, "student_t": 3}.get(likelihood, 1)


_GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(20)  # nodes and weights on [-1, 1]


def _student_t_cdf_and_pdf(t: Tensor, df: Tensor) -> tuple[Tensor, Tensor]:
    """``F(t) - 1/2`` and ``f(t)`` of the standard Student-t (float64, ``t`` and ``df`` broadcast).

    With ``t = sqrt(df) tan(theta)`` the density becomes ``c cos(theta)^(df - 1)``, a smooth integrand on
    ``[0, atan(t / sqrt(df))]``, integrated by 20-point Gauss-Legendre quadrature.
    """
    nodes, weights = (torch.as_tensor(a, dtype=torch.float64, device=t.device) for a in _GAUSS_LEGENDRE)
    log_c = torch.lgamma((df + 1) / 2) - torch.lgamma(df / 2) - 0.5 * math.log(math.pi)
    top = torch.atan(t / df.sqrt())
    theta = top.unsqueeze(-1) * (nodes + 1) / 2
    integrand = torch.exp((df.unsqueeze(-1) - 1) * torch.log(torch.cos(theta)) + log_c.unsqueeze(-1))
    half_cdf = (weights * integrand).sum(-1) * top / 2
    pdf = torch.exp(log_c - 0.5 * df.log() - (df + 1) / 2 * torch.log1p(t * t / df))
    return half_cdf, pdf


def student_t_quantile(levels: Tensor, df: Tensor, newton_steps: int = 4) -> Tensor:
    """Quantiles of the standard Student-t: Hill's (1970) expansion around the normal quantile, refined
    by Newton steps on the exact distribution function (computed by quadrature).

    Matches ``scipy.stats.t.ppf`` to about 1e-10 (relative) for ``df >= 3`` (the model keeps ``df >= 3``)
    and 1e-6 for ``df = 2``, at levels in [1e-4, 1 - 1e-4]; Hill's expansion alone is off by 0.02 at level
    0.01 and by 0.3 at 0.001 for ``df = 3``, and is used as it is for ``df >= 1000`` (exact to 1e-12).
    ``levels`` and ``df`` broadcast against each other; the result has their promoted dtype.
    """
    dtype = torch.promote_types(levels.dtype, df.dtype)
    p, v = torch.broadcast_tensors(levels.to(torch.float64), df.to(torch.float64))
    z = torch.special.ndtri(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    hill = z + g1 / v + g2 / v**2 + g3 / v**3 + g4 / v**4
    # refined below df = 1000 only: beyond, Hill's expansion is exact to 1e-12 (and cos(theta)^(df - 1)
    # would lose precision); in chunks, as the quadrature holds 20 values per quantile
    out = hill.reshape(-1).clone()
    todo = (v < 1000).reshape(-1).nonzero().squeeze(-1)
    flat_p, flat_v = p.reshape(-1), v.reshape(-1)
    for start in range(0, todo.numel(), 1 << 16):
        index = todo[start:start + (1 << 16)]
        cp, cv, t = flat_p[index], flat_v[index], out[index]
        for _ in range(newton_steps):
            half_cdf, pdf = _student_t_cdf_and_pdf(t, cv)
            t = t - (half_cdf - (cp - 0.5)) / pdf
        out = out.index_put((index,), t)
    return out.reshape(p.shape).to(dtype)


class Forecaster(nn.Module):
    """Recurrent encoder + direct or autoregressive decoder + distribution head.

    ``forward(x [B, L, T+P+F], future [B, H, F], series [B], targets [B, H, T] | None)`` returns
    the distribution parameters ``[B, H, T, K]`` (K from :func:`param_count`); location
    parameters are in the units of ``x``'s target columns. ``targets`` are used only for
    teacher forcing in the autoregressive decoder while training.
    """

    def __init__(self, *, n_targets: int, n_past: int, n_future: int, horizon: int, cell: str = "lstm",
                 hidden_size: int = 64, num_layers: int = 1, dropout: float = 0.0, decoder: str = "direct",
                 likelihood: str = "quantile", quantiles: Sequence[float] = (0.1, 0.5, 0.9), num_series: int = 1,
                 series_embedding_dim: int = 0, window_norm: str = "last", lookback: int = 0,
                 season: int = 0) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        self.n_targets, self.n_past, self.n_future, self.horizon = n_targets, n_past, n_future, horizon
        self.decoder_kind, self.likelihood, self.window_norm = decoder, likelihood, window_norm
        if not all(0 < q < 1 for q in quantiles):
            raise ValueError(f"quantile levels must be in (0, 1), got {list(quantiles)}")
        # ascending with the median: the head builds its outputs in ascending order around the 0.5 one, so
        # the levels it is trained at must be sorted too (unsorted levels would train crossed quantiles), and
        # the point forecast is the median (as model.quantiles documents: 0.5 is always added)
        self.quantiles = sorted({round(float(q), 6) for q in [*quantiles, 0.5]})
        self.lookback, self.season = lookback, season
        if window_norm == "seasonal" and (decoder != "direct" or season < 1):
            raise ValueError("window_norm='seasonal' needs the direct decoder and a season length >= 1")
        self.k = param_count(likelihood, len(self.quantiles))
        self.teacher_forcing = 1.0  # set by the training loop (scheduled sampling)
        emb = series_embedding_dim if num_series > 1 else 0
        self.embedding = nn.Embedding(num_series + 1, emb) if emb else None  # index 0: unseen series
        self.embedding_dim = emb
        between = dropout if num_layers > 1 else 0.0
        self.encoder = recurrent_layer(cell, n_targets + n_past + n_future + emb, hidden_size,
                                       num_layers=num_layers, dropout=between)
        self.dropout = nn.Dropout(dropout)
        out = n_targets * self.k
        if decoder == "direct":
            width = hidden_size + horizon * n_future + emb
            self.head: nn.Module = nn.Sequential(nn.Linear(width, hidden_size), nn.ReLU(), nn.Linear(hidden_size, horizon * out))
        elif decoder == "autoregressive":
            self.decoder = recurrent_layer(cell, n_targets + n_future + emb, hidden_size, num_layers=num_layers,
                                           dropout=between)
            self.head = nn.Linear(hidden_size, out)
        else:
            raise ValueError(f"unknown decoder {decoder!r}; choose 'direct' or 'autoregressive'")

    # -- the network ---------------------------------------------------------------------------
    def _level(self, x: Tensor) -> Tensor:
        y = x[..., : self.n_targets]
        if self.window_norm in ("last", "seasonal"):
            return y[:, -1:, :]  # [B, 1, T]
        if self.window_norm == "mean":
            return y.mean(1, keepdim=True)
        return torch.zeros_like(y[:, :1, :])

    def _seasonal_naive(self, x: Tensor) -> Tensor:
        """The value one season before each horizon step, from the input window: ``[B, H, T]``."""
        length = x.shape[1]
        if length < self.season:
            raise ValueError(f"window_norm='seasonal' needs at least {self.season} input steps, got {length}")
        index = length - self.season + torch.arange(self.horizon, device=x.device) % self.season
        return x[:, index, : self.n_targets]

    def forward(self, x: Tensor, future: Tensor, series: Tensor, targets: Tensor | None = None) -> Tensor:
        batch, t = x.shape[0], self.n_targets
        level = self._level(x)  # [B, 1, T]
        out_level = self._seasonal_naive(x) if self.window_norm == "seasonal" else level  # [B, 1 or H, T]
        x = torch.cat([x[..., :t] - level, x[..., t:]], -1)
        static = self.embedding(series) if self.embedding is not None else x.new_zeros(batch, 0)  # [B, E]
        enc_in = torch.cat([x, static.unsqueeze(1).expand(-1, x.shape[1], -1)], -1)
        out, state = self.encoder(enc_in)  # out: [B, L, Hd]
        if self.decoder_kind == "direct":
            context = torch.cat([self.dropout(out[:, -1]), future.reshape(batch, -1), static], -1)
            raw = self.head(context).view(batch, self.horizon, t, self.k)
            return self._finish(raw, out_level)
        steps: list[Tensor] = []
        previous = x[:, -1, :t]  # last observed target, normalised
        norm_targets = targets - level if targets is not None else None
        for h in range(self.horizon):
            step_in = torch.cat([previous, future[:, h], static], -1).unsqueeze(1)
            dec_out, state = self.decoder(step_in, state)
            raw = self.head(self.dropout(dec_out[:, 0])).view(batch, 1, t, self.k)
            steps.append(raw)
            guess = self.point(self._finish(raw, torch.zeros_like(level))).squeeze(1).detach()  # [B, T]
            if norm_targets is not None and self.training and self.teacher_forcing > 0:
                use_truth = torch.rand(batch, 1, device=x.device) < self.teacher_forcing
                previous = torch.where(use_truth, norm_targets[:, h], guess)
            else:
                previous = guess
        return self._finish(torch.cat(steps, 1), level)

    def _finish(self, raw: Tensor, level: Tensor) -> Tensor:
        """Constrain raw outputs (ordered quantiles, positive scales) and add the level back."""
        lv = level.unsqueeze(-1)  # [B, 1 or H, T, 1]
        if self.likelihood == "quantile":
            mid = self._median_index()
            centre = raw[..., mid : mid + 1]
            up = centre + torch.cumsum(F.softplus(raw[..., mid + 1 :]), -1)
            down = centre - torch.cumsum(F.softplus(raw[..., :mid].flip(-1)), -1).flip(-1)
            return torch.cat([down, centre, up], -1) + lv
        if self.likelihood == "gaussian":
            return torch.cat([raw[..., :1] + lv, F.softplus(raw[..., 1:2]) + 1e-3], -1)
        if self.likelihood == "student_t":
            return torch.cat([raw[..., :1] + lv, F.softplus(raw[..., 1:2]) + 1e-3, 3.0 + F.softplus(raw[..., 2:3])], -1)
        return raw + lv

    def _median_index(self) -> int:
        return min(range(len(self.quantiles)), key=lambda i: abs(self.quantiles[i] - 0.5))

    # -- reading the outputs -------------------------------------------------------------------
    def point(self, params: Tensor) -> Tensor:
        """Point forecast ``[..., T]``: the median quantile, or the location of the distribution."""
        if self.likelihood == "quantile":
            return params[..., self._median_index()]
        return params[..., 0]

    def quantiles_of(self, params: Tensor, levels: Sequence[float]) -> Tensor:
        """Forecast quantiles ``[..., T, Q]`` at ``levels`` (sorted ascending)."""
        lv = torch.tensor(list(levels), dtype=params.dtype, device=params.device)
        if self.likelihood == "quantile":  # the levels the head was trained at (any subset of them)
            index = {q: i for i, q in enumerate(self.quantiles)}
            missing = [q for q in levels if round(float(q), 6) not in index]
            if missing:
                raise ValueError(f"a quantile head forecasts the levels {self.quantiles} only, not {missing}")
            return params[..., [index[round(float(q), 6)] for q in levels]]
        if self.likelihood == "gaussian":
            return params[..., :1] + params[..., 1:2] * torch.special.ndtri(lv)
        if self.likelihood == "student_t":
            return params[..., :1] + params[..., 1:2] * student_t_quantile(lv, params[..., 2:3])
        return params[..., :1].expand(*params.shape[:-1], len(lv))

    def loss(self, params: Tensor, y: Tensor, observed: Tensor | None = None) -> Tensor:
        """The training objective for targets ``y`` ``[B, H, T]``: the mean over the positions where
        ``observed`` (``[B, H, T]`` bool; ``None``: all) is ``True``, so values that ``data.fill``
        filled are not learnt from (an interpolated gap is smoother, a zero-filled one an outlier).
        A left-out position adds nothing to the loss nor to its gradient, whatever ``y`` holds there (NaN too)."""
        if observed is not None:  # a NaN or inf there would still turn the gradient into NaN (0 * NaN)
            y = y.masked_fill(~observed, 0.0)
        if self.likelihood == "quantile":
            q = torch.tensor(self.quantiles, dtype=params.dtype, device=params.device)
            e = y.unsqueeze(-1) - params
            per_value = torch.maximum(q * e, (q - 1) * e)
            if observed is None:
                return per_value.mean()
            return per_value.mean(-1).masked_fill(~observed, 0.0).sum() / observed.sum().clamp(min=1)
        if self.likelihood == "gaussian":
            per_value = -torch.distributions.Normal(params[..., 0], params[..., 1]).log_prob(y)
        elif self.likelihood == "student_t":
            per_value = -torch.distributions.StudentT(params[..., 2], params[..., 0], params[..., 1]).log_prob(y)
        elif self.likelihood == "mae":
            per_value = (params[..., 0] - y).abs()
        elif observed is None:
            return F.mse_loss(params[..., 0], y)
        else:
            per_value = (params[..., 0] - y).square()
        if observed is None:
            return per_value.mean()
        return per_value.masked_fill(~observed, 0.0).sum() / observed.sum().clamp(min=1)


# -- calendar features -------------------------------------------------------------------------
def calendar_features(times: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Sine/cosine encodings ``[N, 2 * len(names)]`` of hour of day, day of week (Monday 0) and month.

    Args:
        times: ``datetime64`` timestamps.
        names: Features among ``hour``, ``weekday``, ``month``.
    """
    t = np.asarray(times).astype("datetime64[s]")
    cols = []
    for name in names:
        if name == "hour":
            value = t.astype("datetime64[h]").astype(np.int64) % 24
        elif name == "weekday":
            value = (t.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
        elif name == "month":
            value = t.astype("datetime64[M]").astype(np.int64) % 12
        else:
            raise ValueError(f"unknown calendar feature {name!r}; choose from {', '.join(CALENDAR_FEATURES)}")
        angle = 2 * math.pi * value / CALENDAR_FEATURES[name]
        cols += [np.sin(angle), np.cos(angle)]
    return np.stack(cols, 1) if cols else np.zeros((len(t), 0))


# -- baselines ---------------------------------------------------------------------------------
def naive_forecast(history: np.ndarray, horizon: int) -> np.ndarray:
    """The last value repeated: ``[H, T]`` from a ``[N, T]`` history."""
    return np.repeat(history[-1:], horizon, axis=0)


def seasonal_naive_forecast(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """The value one season earlier: ``y[t + h] = y[t + h - m * k]`` for the smallest ``k >= 1``."""
    if period <= 1 or len(history) < period:
        return naive_forecast(history, horizon)
    index = len(history) - period + (np.arange(horizon) % period)
    return history[index]


def drift_forecast(history: np.ndarray, horizon: int) -> np.ndarray:
    """The last value plus the average change over the history, per step ahead."""
    n = len(history)
    slope = (history[-1] - history[0]) / (n - 1) if n > 1 else np.zeros_like(history[-1])
    return history[-1] + np.arange(1, horizon + 1)[:, None] * slope


def statsmodels_available() -> bool:
    try:
        import statsmodels  # noqa: F401
    except ImportError:
        return False
    return True


class HoltWinters:
    """Additive damped Holt-Winters (statsmodels), fitted once, then run forward without refitting.

    ``fit`` estimates smoothing parameters and initial states on a training history; ``forecast``
    runs the same model with those fixed parameters over a longer history (which must start where
    the training history started) and forecasts from its end.
    """

    def __init__(self, period: int) -> None:
        self.period = period
        self.params: list[dict[str, Any]] = []

    def _model(self, y: np.ndarray, params: dict[str, Any] | None) -> Any:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        seasonal = self.period > 1 and len(y) >= 2 * self.period + 2 if params is None else params["seasonal"]
        kw: dict[str, Any] = {"trend": "add", "damped_trend": True, "seasonal": "add" if seasonal else None,
                              "seasonal_periods": self.period if seasonal else None}
        if params is None:
            kw["initialization_method"] = "estimated"
        else:
            kw.update(initialization_method="known", initial_level=params["initial_level"],
                      initial_trend=params["initial_trend"])
            if seasonal:
                kw["initial_seasonal"] = params["initial_seasons"]
        return ExponentialSmoothing(y, **kw), seasonal

    def fit(self, history: np.ndarray) -> HoltWinters:
        """Estimate one model per target column of ``history`` ``[N, T]``."""
        self.params = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for col in range(history.shape[1]):
                model, seasonal = self._model(history[:, col], None)
                res = model.fit()
                p = {k: res.params[k] for k in ("smoothing_level", "smoothing_trend", "damping_trend",
                                                 "initial_level", "initial_trend")}
                p["smoothing_seasonal"] = res.params["smoothing_seasonal"] if seasonal else None
                p["initial_seasons"] = np.asarray(res.params["initial_seasons"]) if seasonal else None
                p["seasonal"] = seasonal
                self.params.append(p)
        return self

    def forecast(self, history: np.ndarray, horizon: int) -> np.ndarray:
        """``[H, T]`` forecasts from the end of ``history`` with the fitted parameters."""
        out = np.empty((horizon, history.shape[1]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for col, p in enumerate(self.params):
                model, seasonal = self._model(history[:, col], p)
                kw = {"smoothing_level": p["smoothing_level"], "smoothing_trend": p["smoothing_trend"],
                      "damping_trend": p["damping_trend"]}
                if seasonal:
                    kw["smoothing_seasonal"] = p["smoothing_seasonal"]
                res = model.fit(optimized=False, **kw)
                out[:, col] = np.asarray(res.forecast(horizon))
        return out
