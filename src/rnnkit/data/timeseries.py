"""Reading time series from CSV (or Parquet) into regular, gap-free arrays.

:func:`read_timeseries` reads a table with a time column, one or many target columns, an
optional series-id column (several series in one file, "long" format), past covariates
(known only up to the present) and known-future covariates (calendar features, planned
values...). It then

* parses timestamps (unparseable -> error naming file and line; duplicates -> error naming
  both lines; out of order -> error unless ``sort=True``);
* infers the sampling step (calendar-aware: monthly data stays monthly; daily data that never
  falls on a weekend is business-daily, ``'1B'``) or checks ``freq``;
* detects gaps, reports them, and fills them with the chosen policy
  (``'ffill'``, ``'interpolate'``, ``'zero'`` or ``'error'``);
* fills NaN values (empty cells, ``NA``, ``nan``...) with the same policy; with ``fill_breaks``
  (e.g. the train / validation / test periods of a chronological split), ``'interpolate'`` fills
  each period from values observed before its end only, so no later value leaks into it.

The result is a :class:`TimeSeriesDataset` of :class:`TimeSeries` plus one
:class:`SeriesReport` per series recording what was filled, so nothing is silent. Each series
also carries ``observed``, a per-position mask of the target values that were really in the
file (``False`` where a gap or an empty cell was filled), so that errors can be scored on
observations only, and ``past_observed``, the same mask for the past covariates (a forecaster
re-fills an input from the values it could know at its origin).
Pandas is optional: it is used only for Parquet files.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, fixes, setting
from .io import PathLike_, check_file, is_number, read_text

__all__ = [
    "FILL_POLICIES",
    "TimeSeries",
    "SeriesReport",
    "TimeSeriesDataset",
    "read_timeseries",
    "fill_missing",
    "parse_freq",
]

FILL_POLICIES = ("ffill", "interpolate", "zero", "error")
MISSING_TOKENS = frozenset({"", "na", "nan", "null", "none", "n/a", "#n/a"})
_OFFSET = re.compile(r"\d:\d\d(?::\d\d)?(?:Z|[+-]\d\d(?::?\d\d)?)$")  # a time ending in a UTC offset: ...00Z, ...00+02:00
_FRACTION = re.compile(r"\d:\d\d[.,]\d*[1-9]")  # seconds with a non-zero fraction: 00:00:01.250
_INTEGER = re.compile(r"[+-]?\d+")  # a whole number: a step count, a YYYYMMDD date or a year, not ISO 8601 as such
# Coarsest first; "calendar" units (Y, M) are exact in datetime64.
_UNITS = ("Y", "M", "D", "h", "m", "s")
_FREQ_UNITS = {
    "y": ("Y", 1), "a": ("Y", 1), "ys": ("Y", 1), "ye": ("Y", 1),
    "m": ("M", 1), "mon": ("M", 1),
    "q": ("M", 3), "qs": ("M", 3), "qe": ("M", 3),
    "w": ("D", 7), "d": ("D", 1), "b": ("B", 1), "h": ("h", 1),
    "min": ("m", 1), "t": ("m", 1), "s": ("s", 1),
}  # fmt: skip
_UNIT_NAMES = {"Y": "Y", "M": "M", "D": "D", "B": "B", "h": "h", "m": "min", "s": "s"}
_SECONDS = {"D": 86400, "h": 3600, "m": 60, "s": 1}  # the units of fixed length
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def parse_freq(freq: str) -> tuple[int, str]:
    """Parse a frequency string such as ``'1h'``, ``'15min'``, ``'D'``, ``'B'``, ``'M'`` or ``'W'``.

    Args:
        freq: ``<count><unit>``; units: ``Y``/``A`` year, ``Q`` quarter, ``M``/``MS``/``ME``
            month, ``W`` week, ``D`` day, ``B`` business day (Monday to Friday, as pandas'
            ``'B'``), ``h`` hour, ``min``/``T`` minute, ``s`` second (a lone lowercase ``m`` is
            ambiguous and rejected).

    Returns:
        ``(step, numpy_unit)``, e.g. ``(15, 'm')`` for ``'15min'``; business days have the unit
        ``'B'`` (not a NumPy unit: their grid is counted with ``np.busday_count``).
    """
    m = re.fullmatch(r"\s*(\d*)\s*([A-Za-z]+)\s*", str(freq))
    if m:
        count = int(m.group(1)) if m.group(1) else 1
        unit = m.group(2)
        key = "m" if unit in ("M", "MS", "ME") else unit.lower()
        if unit != "m" and key in _FREQ_UNITS and count > 0:
            u, mult = _FREQ_UNITS[key]
            return count * mult, u
    raise DataError(
        f"cannot understand freq {freq!r}",
        hint="use e.g. '1h', '15min', 'D', 'B' (business day), 'W', 'M' (month), 'Q', 'Y'",
    )


def _freq_name(step: int | float, unit: str) -> str:
    """Human name of a step, in the largest whole unit (``60`` minutes -> ``'1h'``)."""
    for small, factor, big in (("s", 60, "m"), ("m", 60, "h"), ("h", 24, "D"), ("M", 12, "Y")):
        if unit == small and step % factor == 0:
            step, unit = step // factor, big
    return f"{step}{_UNIT_NAMES.get(unit, unit)}"


def _float_array(values: Any, what: str, shape: str) -> np.ndarray:
    """``values`` as a float64 array, or a one-line DataError when they are ragged or not numbers."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{what} are not a rectangular array of numbers ({exc})",
            hint=f"give an {shape} array with the same number of values on every step",
        ) from None


@dataclass
class TimeSeries:
    """One regular series.

    Attributes:
        series_id: Identifier (``'0'`` when the file holds one series).
        time: Timestamps (``datetime64[s]``) or numeric steps, ``[N]``.
        targets: ``[N, n_targets]`` float64 target values.
        past_covariates: ``[N, P]`` float64 covariates known up to the present.
        future_covariates: ``[N, F]`` float64 covariates known in advance.
        target_names: Names of the target columns.
        past_covariate_names: Names of the past covariates.
        future_covariate_names: Names of the known-future covariates.
        freq: Sampling step (e.g. ``'1h'``, ``'1M'``) or ``None``.
        observed: ``[N, n_targets]`` bool, ``True`` where the target value was read from the
            file and ``False`` where it was filled (a gap or an empty/NaN cell); ``None`` means
            every value is an observation (e.g. a series built from arrays).
        past_observed: ``[N, P]`` bool, the same for the past covariates (``None``: all observed).
    """

    series_id: str
    time: np.ndarray
    targets: np.ndarray
    past_covariates: np.ndarray
    future_covariates: np.ndarray
    target_names: tuple[str, ...]
    past_covariate_names: tuple[str, ...] = ()
    future_covariate_names: tuple[str, ...] = ()
    freq: str | None = None
    observed: np.ndarray | None = None
    past_observed: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def slice(self, start: int, stop: int) -> TimeSeries:
        """Return steps ``[start, stop)`` as a new series (arrays are views).

        Args:
            start: First step.
            stop: One past the last step.

        Returns:
            The sub-series.
        """
        return TimeSeries(
            self.series_id,
            self.time[start:stop],
            self.targets[start:stop],
            self.past_covariates[start:stop],
            self.future_covariates[start:stop],
            self.target_names,
            self.past_covariate_names,
            self.future_covariate_names,
            self.freq,
            None if self.observed is None else self.observed[start:stop],
            None if self.past_observed is None else self.past_observed[start:stop],
        )

    @classmethod
    def from_arrays(
        cls,
        targets: Any,
        *,
        past_covariates: Any = None,
        future_covariates: Any = None,
        time: Any = None,
        series_id: str = "0",
        target_names: Sequence[str] | None = None,
        observed: Any = None,
        past_observed: Any = None,
    ) -> TimeSeries:
        """Build a series from arrays (no gap checks: the data is assumed regular).

        Args:
            targets: ``[N]`` or ``[N, n_targets]`` values.
            past_covariates: ``[N, P]`` or ``None``.
            future_covariates: ``[N, F]`` or ``None``.
            time: ``[N]`` timestamps or ``None`` (steps ``0..N-1``).
            series_id: Identifier.
            target_names: Column names (default ``target_0``...).
            observed: ``[N]`` or ``[N, n_targets]`` booleans, ``False`` at target values that
                were filled rather than observed; ``None``: all observed.
            past_observed: ``[N, P]`` booleans, the same for ``past_covariates``.

        Returns:
            The series.
        """
        y = _float_array(targets, "targets", "[N] or [N, n_targets]")
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2:
            raise DataError(
                f"targets must be [N] or [N, n_targets], got shape {y.shape}", hint="reshape the array"
            )
        n = y.shape[0]

        def cov(a: Any) -> np.ndarray:
            if a is None:
                return np.zeros((n, 0))
            arr = _float_array(a, "covariates", "[N] or [N, P]")
            arr = arr[:, None] if arr.ndim == 1 else arr
            if arr.shape[0] != n:
                raise DataError(
                    f"covariates have {arr.shape[0]} steps, targets {n}", hint="align covariates with targets"
                )
            return arr

        names = (
            tuple(target_names)
            if target_names is not None
            else tuple(f"target_{i}" for i in range(y.shape[1]))
        )
        pc, fc = cov(past_covariates), cov(future_covariates)
        t = np.arange(n) if time is None else np.asarray(time)
        def flags(given: Any, name: str, like: np.ndarray, like_name: str) -> np.ndarray | None:
            if given is None:
                return None
            mask = np.asarray(given, dtype=bool)
            mask = mask[:, None] if mask.ndim == 1 else mask
            if mask.shape != like.shape:
                raise DataError(
                    f"{name} has shape {mask.shape}, {like_name} {like.shape}",
                    hint=f"give one flag per {like_name.rstrip('s').replace('_', ' ')} value",
                )
            return mask

        mask = flags(observed, "observed", y, "targets")
        past_mask = flags(past_observed, "past_observed", pc, "past_covariates")
        return cls(
            series_id,
            t,
            y,
            pc,
            fc,
            names,
            tuple(f"past_{i}" for i in range(pc.shape[1])),
            tuple(f"future_{i}" for i in range(fc.shape[1])),
            observed=mask,
            past_observed=past_mask,
        )


@dataclass
class SeriesReport:
    """What :func:`read_timeseries` did to one series.

    Attributes:
        series_id: The series.
        num_rows: Rows read from the file.
        num_steps: Steps after filling gaps.
        freq: Sampling step used (``None`` if not checked).
        policy: The fill policy.
        num_gaps: Number of gaps (runs of missing steps).
        num_missing_steps: Steps inserted to fill gaps.
        gaps: The first gaps as ``(last timestamp before, first timestamp after, missing
            steps)``.
        nan_filled: Per column, the number of NaN values found in the file and filled.
        sorted_rows: Whether rows had to be sorted by time.
    """

    series_id: str
    num_rows: int
    num_steps: int
    freq: str | None
    policy: str
    num_gaps: int = 0
    num_missing_steps: int = 0
    gaps: list[tuple[str, str, int]] = field(default_factory=list)
    nan_filled: dict[str, int] = field(default_factory=dict)
    sorted_rows: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-able data."""
        return {
            "series_id": self.series_id,
            "num_rows": self.num_rows,
            "num_steps": self.num_steps,
            "freq": self.freq,
            "policy": self.policy,
            "num_gaps": self.num_gaps,
            "num_missing_steps": self.num_missing_steps,
            "gaps": [list(g) for g in self.gaps],
            "nan_filled": dict(self.nan_filled),
            "sorted_rows": self.sorted_rows,
        }

    def summary(self) -> str:
        """Return a one-line human summary."""
        nan = sum(self.nan_filled.values())
        return (
            f"series {self.series_id}: {self.num_rows} rows -> {self.num_steps} steps ({self.freq}), "
            f"{self.num_gaps} gaps / {self.num_missing_steps} missing steps and {nan} NaN filled by {self.policy!r}"
        )


@dataclass
class TimeSeriesDataset:
    """Series read from one file, with their reports.

    Attributes:
        series: Series by id, in order of first appearance.
        reports: One report per series.
        source: The file read.
    """

    series: dict[str, TimeSeries]
    reports: dict[str, SeriesReport]
    source: str

    def __len__(self) -> int:
        return len(self.series)

    def __iter__(self) -> Iterator[TimeSeries]:
        return iter(self.series.values())

    def __getitem__(self, series_id: str) -> TimeSeries:
        try:
            return self.series[series_id]
        except KeyError:
            raise DataError(
                f"no series {series_id!r}; series: {list(self.series)[:20]}",
                path=self.source,
                hint="pick an existing id",
            ) from None

    def only(self) -> TimeSeries:
        """Return the single series (error if there are several).

        Returns:
            The series.
        """
        if len(self.series) != 1:
            raise DataError(
                f"the file holds {len(self.series)} series", path=self.source, hint="index by series id"
            )
        return next(iter(self.series.values()))


# --------------------------------------------------------------------------- reading


@dataclass
class _Table:
    columns: dict[str, np.ndarray]
    lines: np.ndarray  # line (CSV) or row (Parquet) number of each data row
    path: Path
    rows_are_lines: bool

    def where(self, i: int) -> dict[str, Any]:
        n = int(self.lines[i])
        return {"path": self.path, "line": n} if self.rows_are_lines else {"path": self.path, "row": n}


def _read_csv_table(path: Path, delimiter: str | None, encoding: str, wanted: Sequence[str],
                    roles: dict[str, tuple[list[str], bool]] | None = None) -> _Table:
    sniff = delimiter is None
    if delimiter is None:
        delimiter = "\t" if any(s.lower() in (".tsv", ".tab") for s in path.suffixes) else ","
    text = read_text(path, encoding=encoding)
    if sniff and delimiter == ",":
        first = text.lstrip("\ufeff").split("\n", 1)[0]
        if "," not in first:  # a semicolon- (European Excel), tab- or pipe-separated file named .csv
            delimiter = next((d for d in (";", "\t", "|") if d in first), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError("file is empty", path=path, hint="check the file") from None
    except csv.Error as exc:  # e.g. a header field longer than the csv module's limit: an unclosed quote
        raise DataError(f"malformed CSV header: {exc}", path=path, line=1, hint="check quoting") from None
    _check_columns(header, wanted, path, roles)
    index = {name: header.index(name) for name in wanted}
    cols: dict[str, list[str]] = {name: [] for name in wanted}
    lines: list[int] = []
    # In a one-column file a blank line is an empty cell (a missing value), not a row to drop:
    # dropping it would shift every later value one step earlier. Trailing blank lines are dropped.
    one_column = len(header) == 1
    blank: list[int] = []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                if one_column:
                    blank.append(reader.line_num)
                continue
            if blank:
                for line in blank:
                    cols[header[0]].append("")
                    lines.append(line)
                blank.clear()
            if len(row) != len(header):
                raise DataError(
                    f"row has {len(row)} fields, the header has {len(header)}",
                    path=path,
                    line=reader.line_num,
                    hint="fix the row (quote fields that contain the delimiter)",
                )
            for name, j in index.items():
                cols[name].append(row[j].strip())
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(
            f"malformed CSV: {exc}", path=path, line=reader.line_num, hint="check quoting"
        ) from None
    return _Table({k: np.asarray(v, dtype=object) for k, v in cols.items()}, np.asarray(lines), path, True)


def _read_parquet_table(path: Path, wanted: Sequence[str],
                        roles: dict[str, tuple[list[str], bool]] | None = None) -> _Table:
    try:
        import pandas as pd
    except ImportError:
        raise DataError(
            "reading Parquet needs pandas and pyarrow, which are not installed",
            path=path,
            hint="pip install 'rnnkit[timeseries]' pyarrow, or convert the file to CSV",
        ) from None
    try:
        frame = pd.read_parquet(path)
    except ImportError as exc:
        raise DataError(f"cannot read Parquet: {exc}", path=path, hint="pip install pyarrow") from None
    header = [str(c) for c in frame.columns]
    _check_columns(header, wanted, path, roles)
    cols: dict[str, np.ndarray] = {}
    for name in wanted:
        series = frame[name]
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            if getattr(series.dt, "tz", None) is not None:
                series = series.dt.tz_convert("UTC").dt.tz_localize(None)
            cols[name] = series.to_numpy()  # native resolution: _parse_times refuses sub-second parts
        elif pd.api.types.is_numeric_dtype(series.dtype):
            cols[name] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            cols[name] = np.asarray(
                ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in series],
                dtype=object,
            )
    return _Table(cols, np.arange(1, len(frame) + 1), path, False)


def _check_columns(header: Sequence[str], wanted: Sequence[str], path: Path,
                   roles: dict[str, tuple[list[str], bool]] | None = None) -> None:
    """A one-line error for columns not in ``header``; ``roles`` (argument -> its columns, and whether
    it takes one name) lets the fix name the setting to change (``--set data.target=sales``)."""
    missing = [c for c in wanted if c not in header]
    if missing:
        lower = {h.lower(): h for h in header}
        near = {c: lower.get(c.lower()) or next(iter(difflib.get_close_matches(c, header, 1)), None) for c in missing}
        guesses = [f"{near[c]!r} for {c!r}" for c in missing if near[c] is not None]
        hint = None
        for argument, (columns, single) in (roles or {}).items():
            if any(c in missing for c in columns) and all(c not in missing or near[c] for c in columns):
                fixed = [near[c] if c in missing else c for c in columns]
                value = repr(fixed[0]) if single else repr(fixed)
                hint = setting(argument, (value, ",".join(str(c) for c in fixed)),
                               then=" (columns are case- and spelling-exact)")
                break
        raise DataError(
            f"column(s) {missing} not found; columns are {list(header)}",
            path=path,
            line=1,
            hint=hint or "pass column names exactly as in the header"
            + (f" (did you mean {', '.join(guesses)}?)" if guesses else ""),
        )


def _sub_second(shown: Any, i: int, table: _Table, column: str) -> DataError:
    """Timestamps are kept to the second: cutting 00:00:00.250 to 00:00:00 would merge 4 Hz rows into
    false duplicates (or shift every step), so a fraction of a second is refused, naming the row."""
    return DataError(
        f"timestamp {shown!s} in column {column!r} has a fraction of a second; timestamps are kept to "
        "the whole second",
        **table.where(i),
        hint=fixes(
            "round the timestamps to whole seconds",
            setting("time_format", ("'numeric'", "numeric"), then=" with a column of elapsed seconds"),
            setting("time_column", ("None", "null"), then=" to use the row order"),
        ),
    )


def _parse_times(values: np.ndarray, table: _Table, column: str, time_format: str | None) -> np.ndarray:
    if np.issubdtype(values.dtype, np.datetime64):
        bad = np.flatnonzero(np.isnat(values))
        if bad.size:
            raise DataError(
                f"missing timestamp in column {column!r}",
                **table.where(int(bad[0])),
                hint="remove the row or fill the timestamp",
            )
        seconds = values.astype("datetime64[s]")
        frac = np.flatnonzero(seconds.astype(values.dtype) != values)
        if frac.size:
            raise _sub_second(values[int(frac[0])], int(frac[0]), table, column)
        return seconds
    if time_format == "numeric":
        out = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                out[i] = np.nan
            if np.isnan(out[i]):
                raise DataError(
                    f"cannot parse {v!r} in time column {column!r} as a number",
                    **table.where(i),
                    hint="fix the value",
                )
        return out.astype(np.int64) if np.all(out == np.round(out)) else out
    if time_format is not None:
        return _strptime_times(
            values, time_format, table, column,
            lambda v: f"cannot parse timestamp {v!r} in column {column!r} with time_format={time_format!r}",
            fixes("fix the value", setting("time_format", ("...", "FORMAT"), then=" with the right strptime codes")),
        )
    strings = [str(v).strip() for v in values]
    if strings and all(_INTEGER.fullmatch(v) for v in strings):
        digits = _integer_times(strings, table, column)
        if digits is not None:
            return digits
    fraction_at = next((i for i, v in enumerate(strings) if _FRACTION.search(v)), None)
    if fraction_at is not None:
        raise _sub_second(repr(strings[fraction_at]), fraction_at, table, column)
    aware = np.fromiter((bool(_OFFSET.search(v)) for v in strings), dtype=bool, count=len(strings))
    if aware.any() and not aware.all():
        # offsets are converted to UTC, naive times kept as written: mixed, they would be compared
        # across time zones (a false gap, duplicate or reordering)
        i = int(np.argmin(aware)) if aware[0] else int(np.argmax(aware))
        other = int(np.argmax(aware)) if aware[0] else int(np.argmin(aware))
        raise DataError(
            f"timestamp {strings[i]!r} in column {column!r} {'lacks' if aware[0] else 'has'} a UTC offset "
            f"that {strings[other]!r} ({'line' if table.rows_are_lines else 'row'} "
            f"{int(table.lines[other])}) {'has' if aware[0] else 'lacks'}",
            **table.where(i),
            hint="give every timestamp an offset (e.g. +01:00), or none",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns when it converts UTC offsets
        try:
            fast = np.asarray(strings).astype("datetime64[s]")
            if not np.isnat(fast).any():
                return fast
        except ValueError:
            pass
        parsed = np.empty(len(strings), dtype="datetime64[s]")
        for i, v in enumerate(strings):
            parsed[i] = _parse_one_time(v)
            if np.isnat(parsed[i]):
                raise DataError(
                    f"cannot parse timestamp {v!r} in column {column!r}",
                    **table.where(i),
                    hint=fixes(
                        "use ISO 8601 (e.g. 2016-07-01 00:00:00)",
                        setting("time_format", ("'%d/%m/%Y ...'", "%d/%m/%Y")),
                    ),
                )
    return parsed


def _integer_times(strings: Sequence[str], table: _Table, column: str) -> np.ndarray | None:
    """A time column of whole numbers only, which numpy would read as years of any length
    (``20200131`` as the year 20,200,131 and ``1, 2, 3`` as the years 1, 2, 3): eight digits each
    are ISO 8601 basic dates (``YYYYMMDD``); four digits each stay years (``1700``: ``None``, parsed
    as ISO 8601); other whole numbers are steps, as with ``time_format='numeric'``."""
    if all(len(v) == 4 and v.isdigit() for v in strings):
        return None
    if all(len(v) == 8 and v.isdigit() for v in strings):
        return _strptime_times(
            strings, "%Y%m%d", table, column,
            lambda v: f"cannot parse {v!r} in time column {column!r} as a YYYYMMDD date",
            fixes("fix the value", setting("time_format", ("'numeric'", "numeric"), then=" if the column counts steps")),
        )
    return np.asarray([int(v) for v in strings], dtype=np.int64)


def _strptime_times(values: Any, time_format: str, table: _Table, column: str, problem: Callable[[Any], str],
                    hint: str) -> np.ndarray:
    """``values`` parsed with ``datetime.strptime(time_format)`` as ``datetime64[s]`` (offsets converted to
    UTC); a value that does not parse is a one-line error naming its line (``problem(value)``, ``hint``)."""
    parsed = np.empty(len(values), dtype="datetime64[s]")
    for i, v in enumerate(values):
        try:
            dt = datetime.strptime(str(v), time_format)
        except ValueError:
            raise DataError(problem(v), **table.where(i), hint=hint) from None
        if dt.microsecond:
            raise _sub_second(repr(v), i, table, column)
        if dt.tzinfo is not None:  # %z / %Z: an instant, kept in UTC as ISO offsets are
            dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
        parsed[i] = np.datetime64(dt, "s")
    return parsed


def _parse_one_time(text: str) -> np.datetime64:
    """Parse one ISO 8601 timestamp (offsets converted to UTC); NaT if it cannot be parsed."""
    if not text:
        return np.datetime64("NaT")
    try:
        return np.datetime64(text, "s")
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return np.datetime64("NaT")
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return np.datetime64(dt, "s")


def _parse_values(values: np.ndarray, table: _Table, column: str) -> tuple[np.ndarray, int]:
    if values.dtype.kind == "f":
        out = values.astype(np.float64)
        _check_not_infinite(out, values, table, column)
        return out, int(np.isnan(out).sum())
    cleaned = np.asarray(["nan" if str(v).strip().lower() in MISSING_TOKENS else str(v) for v in values])
    try:
        out = cleaned.astype(np.float64)
    except ValueError:  # NumPy parses strings as float() does: find the first value float() refuses
        i = next((i for i, v in enumerate(cleaned) if not is_number(v)), 0)
        joined = "\n" in str(values[i])
        raise DataError(
            f"cannot parse {values[i]!r} in column {column!r} as a number"
            + (" (it spans several lines: an unclosed quote?)" if joined else ""),
            **table.where(i),
            hint="close the quote" if joined else "fix the value, or leave the cell empty / 'NA' to have it filled",
        ) from None
    _check_not_infinite(out, values, table, column)
    return out, int(np.isnan(out).sum())


def _check_not_infinite(out: np.ndarray, values: np.ndarray, table: _Table, column: str) -> None:
    """An infinite value ('inf', '-Infinity', '1e999') is no measurement: refuse it, naming the line
    (left in, it poisons the scaler, every window that reads it and every metric)."""
    bad = np.flatnonzero(np.isinf(out))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"infinite value {values[i]!r} in column {column!r}"
            + (f" ({bad.size} in all)" if bad.size > 1 else ""),
            **table.where(i),
            hint="fix the value, or leave the cell empty / 'NA' to have it filled",
        )


def _coarsest_unit(times: np.ndarray) -> str:
    for unit in _UNITS[:-1]:
        if np.array_equal(times.astype(f"datetime64[{unit}]").astype(times.dtype), times):
            return unit
    return "s"  # timestamps are whole seconds: _parse_times refuses sub-second parts


def fill_missing(values: np.ndarray, policy: str, breaks: Sequence[int] = (),
                 names: Sequence[str] | None = None) -> np.ndarray:
    """Fill NaN values along axis 0 of ``[N, C]`` values.

    Args:
        values: Float array ``[N]`` or ``[N, C]`` (not modified).
        policy: ``'ffill'`` (previous value; a leading NaN is an error), ``'interpolate'``
            (linear; edges take the nearest value), ``'zero'`` or ``'error'`` (any NaN is an
            error).
        breaks: Steps where a new period starts (e.g. the first validation and test steps of a
            chronological split). With ``'interpolate'`` each period is filled separately from
            the values observed before its end only, so no value leaks into an earlier period: a
            missing value is interpolated between the last observed value before it (which may
            lie in an earlier period: the past is known) and the next observed value inside its
            own period; a gap at the end of a period, with no later observed value inside it,
            takes the last observed value (forward fill). A period (the first one) with no
            observed value at all before its end is an error. ``'ffill'`` and ``'zero'`` never
            look ahead, so ``breaks`` does not change them. Default: one period.
        names: The columns' names, for errors (default: their positions in ``values``).

    Returns:
        The filled copy.
    """
    if policy not in FILL_POLICIES:
        raise DataError(f"unknown fill policy {policy!r}; valid: {FILL_POLICIES}", hint="pick one of them")
    out = np.array(values, dtype=np.float64, copy=True)
    squeeze = out.ndim == 1
    if squeeze:
        out = out[:, None]
    nan = np.isnan(out)
    if not nan.any():
        return out[:, 0] if squeeze else out

    def column(c: int) -> str:
        return f"column {names[c]!r}" if names is not None and c < len(names) else f"column {c}"

    if policy == "error":
        i, c = np.argwhere(nan)[0]
        raise DataError(
            f"missing value at step {i} ({column(int(c))})", hint=setting("fill", "ffill", "interpolate", "zero")
        )
    if policy == "zero":
        out[nan] = 0.0
    elif policy == "ffill":
        for c in range(out.shape[1]):
            col = out[:, c]
            isnan = np.isnan(col)
            if isnan[0]:
                raise DataError(
                    f"cannot forward-fill {column(c)}: it starts with a missing value",
                    hint=setting("fill", "interpolate", "zero"),
                )
            idx = np.where(~isnan, np.arange(len(col)), 0)
            np.maximum.accumulate(idx, out=idx)
            out[:, c] = col[idx]
    else:
        n = out.shape[0]
        stops = sorted({int(b) for b in breaks if 0 < int(b) < n}) + [n]
        steps = np.arange(n)
        for c in range(out.shape[1]):
            col = out[:, c].copy()
            ok = ~np.isnan(col)
            lo = 0
            for hi in stops:
                if nan[lo:hi, c].any():
                    known = steps[:hi][ok[:hi]]  # observed before the end of the period only
                    if not known.size:
                        raise DataError(
                            f"{column(c)} has no value to interpolate from"
                            + (f" before step {hi}, the end of its first period" if hi < n else ""),
                            hint=fixes("drop the column", setting("fill", "zero")),
                        )
                    out[lo:hi, c] = np.interp(steps[lo:hi], known, col[known])
                lo = hi
    return out[:, 0] if squeeze else out


def _weekend_gaps(times: np.ndarray, jumps: np.ndarray) -> bool:
    """Whether the days missing from a daily series are mostly (80%+) Saturdays and Sundays: business-day
    data such as stock prices, where counting the rows as steps is usually what is meant."""
    if not np.issubdtype(np.asarray(times).dtype, np.datetime64):
        return False
    days = np.asarray(times).astype("datetime64[D]").astype(np.int64)
    missing = np.concatenate([np.arange(days[j] + 1, days[j + 1]) for j in jumps]) if jumps.size else days[:0]
    if missing.size == 0:
        return False
    weekend = (missing + 3) % 7 >= 5  # 1970-01-01 (day 0) was a Thursday: Monday is 0
    return bool(weekend.mean() >= 0.8)


def read_timeseries(
    path: PathLike_,
    time_column: str | None,
    target_columns: str | Sequence[str],
    *,
    series_id_column: str | None = None,
    past_covariates: Sequence[str] = (),
    future_covariates: Sequence[str] = (),
    fill: str = "error",
    freq: str | None = None,
    time_format: str | None = None,
    sort: bool = False,
    regular: bool = True,
    file_format: str | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8",
    max_gaps_listed: int = 20,
    fill_breaks: Callable[[int], Sequence[int]] | None = None,
) -> TimeSeriesDataset:
    """Read one or many time series from a CSV (or Parquet) table.

    Args:
        path: ``.csv``/``.tsv`` (plain or ``.gz``) or ``.parquet`` file.
        time_column: Column of timestamps; ``None`` uses the row order (steps 0..N-1).
        target_columns: One column name or several.
        series_id_column: Column identifying the series in a long-format file.
        past_covariates: Columns known only up to the present.
        future_covariates: Columns known in advance (calendar, plans).
        fill: Policy for gaps and NaN values: ``'ffill'``, ``'interpolate'``, ``'zero'``
            or ``'error'`` (raise at the first one, naming the line).
        freq: Expected step (``'1h'``, ``'D'``, ``'B'``, ``'M'``...); default: the most common
            difference between consecutive timestamps, except that daily timestamps none of
            which falls on a Saturday or Sunday, while a weekend lies between the first and the
            last of some series, are business days (``'1B'``, Monday to Friday: positions and
            forecast dates count business days, Friday -> Monday; a missing weekday, such as a
            market holiday, is a gap). ``'2B'`` is every second business day. A Saturday or
            Sunday in data read with ``freq='B'`` is an error naming its line.
        time_format: ``strptime`` format of the timestamps, or ``'numeric'`` for numbers;
            default ISO 8601.
        sort: Sort rows by time instead of raising on out-of-order timestamps.
        regular: Check the timestamps lie on a regular grid and fill gaps. ``False`` keeps
            the timestamps as they are (no grid, no frequency); NaN values are still filled.
        file_format: ``'csv'`` or ``'parquet'`` (default: from the suffix).
        delimiter: CSV delimiter (default ``','``, ``'\\t'`` for ``.tsv``).
        encoding: Text encoding.
        max_gaps_listed: How many gaps each report lists explicitly.
        fill_breaks: Given the number of steps of a series (after gaps are inserted), the steps
            where a new period starts (e.g. the validation and test periods of a chronological
            split): ``fill='interpolate'`` then fills each period from values observed before
            its end only (see :func:`fill_missing`), so a value of a later period never leaks
            into an earlier one. ``None``: the whole series is one period.

    Returns:
        A :class:`TimeSeriesDataset`.
    """
    if fill not in FILL_POLICIES:
        raise DataError(f"unknown fill policy {fill!r}; valid: {FILL_POLICIES}", hint="pick one of them")
    p = check_file(path)
    targets = [target_columns] if isinstance(target_columns, str) else list(target_columns)
    if not targets:
        raise DataError(
            "no target column given",
            path=p,
            hint=setting("target_columns", ("'name' or a list of names", "NAME")),
        )
    value_columns = targets + list(past_covariates) + list(future_covariates)
    if len(set(value_columns)) != len(value_columns):
        raise DataError(
            f"a column is used twice among targets and covariates: {value_columns}",
            path=p,
            hint="list each column once",
        )
    wanted = list(value_columns)
    if time_column is not None:
        wanted.append(time_column)
    if series_id_column is not None:
        wanted.append(series_id_column)
    wanted = list(dict.fromkeys(wanted))
    roles = {"target_columns": (targets, isinstance(target_columns, str)),
             "past_covariates": (list(past_covariates), False), "future_covariates": (list(future_covariates), False),
             "time_column": ([time_column] if time_column is not None else [], True),
             "series_id_column": ([series_id_column] if series_id_column is not None else [], True)}
    fmt = file_format or ("parquet" if p.suffix.lower() in (".parquet", ".pq") else "csv")
    if fmt == "parquet":
        table = _read_parquet_table(p, wanted, roles)
    elif fmt == "csv":
        table = _read_csv_table(p, delimiter, encoding, wanted, roles)
    else:
        raise DataError(f"unknown file_format {file_format!r}", path=p, hint="use 'csv' or 'parquet'")
    n_rows = len(table.lines)
    if n_rows == 0:
        raise DataError("no data rows", path=p, hint="check the file")
    groups: dict[str, list[int]] = {}
    if series_id_column is None:
        groups["0"] = list(range(n_rows))
    else:
        for i, sid in enumerate(table.columns[series_id_column]):
            groups.setdefault(str(sid), []).append(i)
    times_all = (
        None
        if time_column is None
        else _parse_times(table.columns[time_column], table, time_column, time_format)
    )
    parsed: dict[str, tuple[np.ndarray, int]] = {
        c: _parse_values(table.columns[c], table, c) for c in value_columns
    }
    values_all = (
        np.stack([parsed[c][0] for c in value_columns], axis=1) if value_columns else np.zeros((n_rows, 0))
    )
    multi = series_id_column is not None
    unit_word = "line" if table.rows_are_lines else "row"
    # Pass 1: order and duplicate checks per series.
    ordered: dict[str, tuple[np.ndarray, np.ndarray | None, SeriesReport]] = {}
    for sid, rows_list in groups.items():
        rows = np.asarray(rows_list)
        report = SeriesReport(sid, len(rows), len(rows), None, fill)
        times = None if times_all is None else times_all[rows]
        if times is not None and len(times) > 1:
            diffs = np.diff(times)
            back = np.flatnonzero(diffs < diffs.dtype.type(0))
            if back.size:
                if not sort:
                    i = int(back[0]) + 1
                    raise DataError(
                        f"timestamp {times[i]} comes after {times[i - 1]} ({unit_word} {table.lines[rows[i - 1]]}): "
                        "not in time order" + (f" in series {sid!r}" if multi else ""),
                        **table.where(int(rows[i])),
                        hint=fixes("sort the file by time", setting("sort", ("True", "true"))),
                    )
                order = np.argsort(times, kind="stable")
                rows, times = rows[order], times[order]
                report.sorted_rows = True
                diffs = np.diff(times)
            dup = np.flatnonzero(diffs == diffs.dtype.type(0))
            if dup.size:
                i = int(dup[0]) + 1
                raise DataError(
                    f"duplicate timestamp {times[i]} (also on {unit_word} {table.lines[rows[i - 1]]})"
                    + (f" in series {sid!r}" if multi else ""),
                    **table.where(int(rows[i])),
                    hint=fixes(
                        "remove or aggregate duplicate rows",
                        None
                        if multi
                        else setting("series_id_column", ("...", "COLUMN"), then=" for multi-series files"),
                    ),
                )
        ordered[sid] = (rows, times, report)
    # The grid (unit and step) is shared by every series of the file.
    grid: tuple[str, int | float] | None = None
    if times_all is not None and regular:
        grid = _infer_grid([t for _, t, _ in ordered.values() if t is not None], freq, table)
    # Pass 2: grid positions, gaps and missing values.
    series: dict[str, TimeSeries] = {}
    reports: dict[str, SeriesReport] = {}
    nt, npc = len(targets), len(past_covariates)
    for sid, (rows, times_opt, report) in ordered.items():
        vals = values_all[rows]
        times = np.arange(len(rows)) if times_opt is None else times_opt
        n_steps = len(rows)
        if grid is not None:
            unit, step = grid
            report.freq = _freq_name(step, unit) if unit else str(step)
            positions = _grid_positions(times, rows, table, unit, step, freq, sid if multi else None)
            n_steps = int(positions[-1]) + 1
            jumps = np.flatnonzero(np.diff(positions) > 1)
            report.num_gaps = int(jumps.size)
            report.num_missing_steps = int(n_steps - len(rows))
            report.gaps = [
                (str(times[j]), str(times[j + 1]), int(positions[j + 1] - positions[j] - 1))
                for j in jumps[:max_gaps_listed]
            ]
            if jumps.size and fill == "error":
                j = int(jumps[0])
                weekdays = _weekend_gaps(times, jumps) if report.freq == "1D" else False
                business = unit == "B"  # every missing step is a weekday: a holiday (a market closure)
                raise DataError(
                    f"gap of {positions[j + 1] - positions[j] - 1} missing {report.freq} steps between "
                    f"{times[j]} and {times[j + 1]} ({jumps.size} gap{'s' if jumps.size != 1 else ''} in all)"
                    + (f" in series {sid!r}" if multi else "")
                    + ("; the missing days are mostly weekends, as in trading-day data" if weekdays else "")
                    + ("; the missing days are weekdays of the Monday-to-Friday grid (holidays?)"
                       if business else ""),
                    **table.where(int(rows[j + 1])),
                    hint=fixes(
                        setting("freq", "B", then=" for business days (Monday to Friday)") if weekdays else None,
                        setting("time_column", ("None", "null"), then=" to count the rows as consecutive steps")
                        if weekdays else None,
                        setting("fill", "ffill", "interpolate", then=" to fill the holidays") if business
                        else setting("fill", "ffill", "interpolate", "zero", then=" to fill gaps"),
                        None if business else setting("regular", ("False", "false"), then=" to keep them"),
                    ),
                )
            if n_steps != len(rows):
                full = np.full((n_steps, vals.shape[1]), np.nan)
                full[positions] = vals
                vals = full
                times = _grid_times(times[0], n_steps, unit, step, month_end=bool(_is_month_end(times[:1]).all()))
        nan_in_file = np.isnan(values_all[rows])
        report.nan_filled = {
            c: int(nan_in_file[:, k].sum()) for k, c in enumerate(value_columns) if nan_in_file[:, k].any()
        }
        if fill == "error" and nan_in_file.any():
            r, k = np.argwhere(nan_in_file)[0]
            raise DataError(
                f"missing value in column {value_columns[k]!r}" + (f" of series {sid!r}" if multi else ""),
                **table.where(int(rows[r])),
                hint=fixes("fix the cell", setting("fill", "ffill", "interpolate", "zero")),
            )
        observed = ~np.isnan(vals[:, :nt])  # before filling: False at gaps and empty target cells
        past_observed = ~np.isnan(vals[:, nt : nt + npc])
        if np.isnan(vals).any():
            try:
                vals = fill_missing(vals, fill, () if fill_breaks is None else fill_breaks(n_steps), value_columns)
            except DataError as exc:
                nan_rows = nan_in_file.any(axis=1)
                first = int(rows[int(np.argmax(nan_rows))]) if nan_rows.any() else int(rows[0])
                raise DataError(
                    exc.message + (f" of series {sid!r}" if multi else ""),
                    **table.where(first),
                    hint=exc.hint,
                ) from None
        report.num_steps = n_steps
        series[sid] = TimeSeries(
            sid,
            times,
            vals[:, :nt],
            vals[:, nt : nt + npc],
            vals[:, nt + npc :],
            tuple(targets),
            tuple(past_covariates),
            tuple(future_covariates),
            report.freq,
            observed,
            past_observed,
        )
        reports[sid] = report
    return TimeSeriesDataset(series, reports, str(p))


def _to_ints(times: np.ndarray, unit: str) -> np.ndarray:
    if not unit:
        return np.asarray(times)
    return times.astype(f"datetime64[{unit}]").astype(np.int64)


def _numeric_step(value: float) -> int | float:
    """A numeric time step: an int when whole (``10``), else the float (``0.5``)."""
    return int(value) if float(value).is_integer() else float(value)


def _infer_grid(
    all_times: list[np.ndarray], freq: str | None, table: _Table
) -> tuple[str, int | float] | None:
    """Return the ``(unit, step)`` of the sampling grid shared by all series (a numeric time
    column may have a fractional step, e.g. ``0.5`` seconds); daily data on business days only is
    ``('B', 1)`` (see :func:`_business_daily`)."""
    numeric = not np.issubdtype(all_times[0].dtype, np.datetime64)
    if freq is not None:
        if numeric:
            try:
                value = float(freq)
            except ValueError:
                value = float("nan")
            if not (np.isfinite(value) and value > 0):
                raise DataError(
                    f"freq={freq!r} for a numeric time column",
                    path=table.path,
                    hint=setting("freq", "1", then=" (a positive number: the step between rows)"),
                )
            return "", _numeric_step(value)
        step, unit = parse_freq(freq)
        return unit, step
    unit = "" if numeric else _coarsest_unit(np.concatenate(all_times))
    if unit == "D" and all(_is_month_end(t).all() for t in all_times):
        unit = "M"  # month-end dates (1949-01-31, 1949-02-28, ...): monthly, quarterly or yearly data
    diffs = np.concatenate([np.diff(_to_ints(t, unit)) for t in all_times])
    if diffs.size == 0:
        return None
    if numeric and diffs.dtype.kind == "f":
        # 0.1-steps differ in their last bits (0.30000000000000004 - 0.2): compare them rounded
        diffs = np.round(diffs, 9)
    values, counts = np.unique(diffs, return_counts=True)
    common = _numeric_step(values[np.argmax(counts)])
    if _business_daily(all_times, unit, common):
        return "B", 1
    return unit, common


def _business_daily(all_times: list[np.ndarray], unit: str, step: int | float) -> bool:
    """Whether daily timestamps (a step of one day, at any fixed time of day) are business days:
    none falls on a Saturday or Sunday (``np.is_busday``), yet some series spans a weekend, i.e. has
    fewer business days (``np.busday_count``) than calendar days between its first and last
    timestamp. A weekday-only span (Monday to Wednesday) is no evidence, and stays daily, as pandas'
    ``infer_freq`` has it."""
    if unit not in _SECONDS or step * _SECONDS[unit] != _SECONDS["D"]:
        return False
    days = [np.asarray(t).astype("datetime64[D]") for t in all_times if len(t)]
    if not days or not all(np.is_busday(d).all() for d in days):
        return False
    return any(int(np.busday_count(d[0], d[-1])) < int((d[-1] - d[0]).astype(np.int64)) for d in days)


def _grid_positions(
    times: np.ndarray,
    rows: np.ndarray,
    table: _Table,
    unit: str,
    step: int | float,
    freq: str | None,
    sid: str | None,
) -> np.ndarray:
    """Map sorted unique timestamps to integer positions on the grid; off-grid -> error."""
    in_series = f" (series {sid!r})" if sid is not None else ""
    if unit == "B":
        return _business_positions(times, rows, table, int(step), in_series)
    if unit in ("M", "Y") and _is_month_end(times).all():
        # Month-end dates: count whole months (a yearly grid is every 12 months).
        unit, step = "M", step * (12 if unit == "Y" else 1)
    elif unit in ("M", "Y"):  # calendar steps: every timestamp must be a whole month (year)
        exact = times.astype(f"datetime64[{unit}]").astype(times.dtype) == times
        if not exact.all():
            i = int(np.flatnonzero(~exact)[0])
            raise DataError(
                f"timestamp {times[i]} is not on a {freq or _freq_name(step, unit)} grid{in_series}",
                **table.where(int(rows[i])),
                hint=fixes(
                    setting("freq", ("...", "FREQ"), then=" with the right step"),
                    setting("regular", ("False", "false")),
                ),
            )
    name = _freq_name(step, unit) if unit else str(step)
    if unit in _SECONDS:
        # Fixed-length steps: the grid starts at the first timestamp, not at a whole unit, so hourly
        # data at :30 (or daily data at 09:00) is on the 1h (1D) grid it is inferred to be on.
        offsets = _to_ints(times, "s") - _to_ints(times[:1], "s")[0]
        step = int(step) * _SECONDS[unit]
    else:
        offsets = _to_ints(times, unit) - _to_ints(times[:1], unit)[0]
    if isinstance(step, float):  # a fractional numeric step: positions up to rounding noise
        quotient = offsets / step
        positions = np.rint(quotient)
        off_grid = np.flatnonzero(np.abs(quotient - positions) > 1e-6)
    else:
        positions = offsets // step
        off_grid = np.flatnonzero(offsets % step != 0)
    if off_grid.size:
        i = int(off_grid[0])
        raise DataError(
            (f"timestamp {times[i]} is not on a {freq} grid starting at {times[0]}" if freq and unit in _SECONDS else
             f"timestamp {times[i]} is off the regular {name} grid starting at {times[0]}") + in_series,
            **table.where(int(rows[i])),
            hint=fixes(
                "fix the timestamp",
                setting("freq", ("...", "FREQ"), then=" explicitly"),
                setting("regular", ("False", "false"), then=" to keep irregular timestamps"),
            ),
        )
    return positions.astype(np.int64)


def _business_positions(times: np.ndarray, rows: np.ndarray, table: _Table, step: int, in_series: str) -> np.ndarray:
    """Positions on a grid of every ``step``-th business day (Monday to Friday) from the first timestamp:
    ``np.busday_count(first, t) / step``. A Saturday or Sunday, a time of day other than the first
    timestamp's, or (``step > 1``) a business day between two grid days is an error naming the line;
    a missing weekday (a holiday) is a gap."""
    name = _freq_name(step, "B")
    days = times.astype("datetime64[D]")
    weekend = np.flatnonzero(~np.is_busday(days))
    if weekend.size:
        i = int(weekend[0])
        day = _DAY_NAMES[int((days[i].astype(np.int64) + 3) % 7)]  # 1970-01-01 was a Thursday
        raise DataError(
            f"timestamp {times[i]} is a {day}, not a business day of the {name} grid (Monday to Friday)"
            + (f"; {weekend.size} timestamps fall on weekends" if weekend.size > 1 else "") + in_series,
            **table.where(int(rows[i])),
            hint=fixes(
                "remove the weekend rows",
                setting("freq", "D", then=" to read daily steps (the missing days are then gaps to fill)"),
            ),
        )
    counts = np.busday_count(days[0], days).astype(np.int64)
    off_grid = np.flatnonzero((counts % step != 0) | (times - days.astype(times.dtype) != times[0] - days[0]))
    if off_grid.size:
        i = int(off_grid[0])
        raise DataError(
            f"timestamp {times[i]} is off the regular {name} grid starting at {times[0]}" + in_series,
            **table.where(int(rows[i])),
            hint=fixes(
                "fix the timestamp",
                setting("freq", ("...", "FREQ"), then=" explicitly"),
                setting("regular", ("False", "false"), then=" to keep irregular timestamps"),
            ),
        )
    return counts // step


def _is_month_end(times: np.ndarray) -> np.ndarray:
    """Which timestamps fall at midnight on the last day of their month (numeric times: none)."""
    t = np.asarray(times)
    if not np.issubdtype(t.dtype, np.datetime64):
        return np.zeros(t.shape, dtype=bool)
    days = t.astype("datetime64[D]")
    return (days.astype(t.dtype) == t) & ((days + 1).astype("datetime64[M]") != days.astype("datetime64[M]"))


def _grid_times(start: Any, n_steps: int, unit: str, step: int | float, month_end: bool = False) -> np.ndarray:
    """``n_steps`` timestamps from ``start`` every ``step`` ``unit``; ``month_end``: on the last day of
    each month (``unit`` ``'M'`` or ``'Y'``), as the file's own dates are; ``unit`` ``'B'``: business
    days (``np.busday_offset``; ``start`` must be one)."""
    if not unit:
        return start + step * np.arange(n_steps)
    if unit == "B":  # every step-th business day (Friday -> Monday), at the first timestamp's time of day
        day = start.astype("datetime64[D]")
        days = np.busday_offset(day, np.arange(n_steps) * int(step))
        return days.astype("datetime64[s]") + (start.astype("datetime64[s]") - day.astype("datetime64[s]"))
    if month_end and unit in ("M", "Y"):
        months = start.astype("datetime64[M]") + np.arange(n_steps) * step * (12 if unit == "Y" else 1)
        return ((months + 1).astype("datetime64[D]") - 1).astype("datetime64[s]")
    if unit in _SECONDS:  # fixed-length steps from the first timestamp as it is (e.g. hourly at :30)
        seconds = (np.arange(n_steps) * (int(step) * _SECONDS[unit])).astype("timedelta64[s]")
        return (start.astype("datetime64[s]") + seconds).astype("datetime64[s]")
    first = start.astype(f"datetime64[{unit}]")
    return (first + np.arange(n_steps) * step).astype("datetime64[s]")
