"""Tests for rnnkit.data.timeseries (reading, gaps, NaN policies)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import DataError, TimeSeries, fill_missing, read_timeseries
from rnnkit.data.errors import config_keys
from rnnkit.data.timeseries import parse_freq

HOURLY = """date,load,temp,hour
2020-01-01 00:00:00,1.0,10,0
2020-01-01 01:00:00,2.0,11,1
2020-01-01 04:00:00,5.0,14,4
2020-01-01 05:00:00,,15,5
2020-01-01 06:00:00,7.0,16,6
"""


def _csv(tmp_path: Path, text: str, name: str = "series.csv") -> Path:
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    return f


def test_regular_series_with_covariates(tmp_path: Path) -> None:
    f = _csv(tmp_path, "date,y,x,cal\n2020-01-01,1,5,0\n2020-01-02,2,6,1\n2020-01-03,3,7,2\n")
    ds = read_timeseries(f, "date", "y", past_covariates=["x"], future_covariates=["cal"])
    s = ds.only()
    assert len(s) == 3 and s.freq == "1D" and s.series_id == "0"
    assert s.targets[:, 0].tolist() == [1, 2, 3] and s.past_covariates[:, 0].tolist() == [5, 6, 7]
    assert s.future_covariates[:, 0].tolist() == [0, 1, 2]
    assert (
        s.target_names == ("y",) and s.past_covariate_names == ("x",) and s.future_covariate_names == ("cal",)
    )
    assert s.time[0] == np.datetime64("2020-01-01T00:00:00")
    report = ds.reports["0"]
    assert report.num_gaps == 0 and report.nan_filled == {} and "3 rows -> 3 steps" in report.summary()


def test_gap_error_names_line(tmp_path: Path) -> None:
    f = _csv(tmp_path, HOURLY)
    with pytest.raises(DataError) as err:
        read_timeseries(f, "date", "load")
    msg = str(err.value)
    assert f"{f}:4:" in msg and "gap of 2 missing 1h steps" in msg and "fill=" in msg


@pytest.mark.parametrize(
    "policy,expected",
    [
        ("ffill", [1, 2, 2, 2, 5, 5, 7]),
        ("interpolate", [1, 2, 3, 4, 5, 6, 7]),
        ("zero", [1, 2, 0, 0, 5, 0, 7]),
    ],
)
def test_fill_policies(tmp_path: Path, policy: str, expected: list[float]) -> None:
    ds = read_timeseries(_csv(tmp_path, HOURLY), "date", "load", past_covariates=["temp"], fill=policy)
    s = ds.only()
    assert s.targets[:, 0].tolist() == expected
    assert len(s.time) == 7 and str(s.time[2]) == "2020-01-01T02:00:00"
    r = ds.reports["0"]
    assert r.num_gaps == 1 and r.num_missing_steps == 2 and r.nan_filled == {"load": 1} and r.policy == policy
    assert r.gaps == [("2020-01-01T01:00:00", "2020-01-01T04:00:00", 2)]
    assert r.to_dict()["num_missing_steps"] == 2


def test_observed_mask_marks_filled_target_positions(tmp_path: Path) -> None:
    # HOURLY: steps 2 and 3 are a gap, step 5 an empty target cell; the covariate has no NaN
    ds = read_timeseries(_csv(tmp_path, HOURLY), "date", "load", past_covariates=["temp"], fill="interpolate")
    s = ds.only()
    assert s.observed is not None and s.observed.shape == s.targets.shape
    assert s.observed[:, 0].tolist() == [True, True, False, False, True, False, True]
    r = ds.reports["0"]  # the mask agrees with the report's counts
    assert int((~s.observed).sum()) == r.num_missing_steps + r.nan_filled["load"]
    assert s.slice(2, 5).observed[:, 0].tolist() == [False, False, True]
    clean = read_timeseries(_csv(tmp_path, "t,y\n2020-01,1\n2020-02,2\n", "clean.csv"), "t", "y").only()
    assert clean.observed is not None and clean.observed.all()
    assert TimeSeries.from_arrays([1.0, 2.0]).observed is None  # arrays: no mask, every value observed
    assert TimeSeries.from_arrays([1.0, 2.0], observed=[True, False]).observed[:, 0].tolist() == [True, False]
    with pytest.raises(DataError, match="observed has shape"):
        TimeSeries.from_arrays([1.0, 2.0], observed=[True])


def test_nan_error_and_leading_ffill(tmp_path: Path) -> None:
    f = _csv(tmp_path, "t,y\n2020-01,1\n2020-02,NA\n2020-03,3\n")
    with pytest.raises(DataError, match=r"series\.csv:3: missing value in column 'y'"):
        read_timeseries(f, "t", "y")
    assert read_timeseries(f, "t", "y", fill="interpolate").only().targets[:, 0].tolist() == [1, 2, 3]
    g = _csv(tmp_path, "t,y\n2020-01,\n2020-02,2\n", "lead.csv")
    with pytest.raises(DataError, match=r"lead\.csv:2: cannot forward-fill"):
        read_timeseries(g, "t", "y", fill="ffill")
    assert read_timeseries(g, "t", "y", fill="interpolate").only().targets[:, 0].tolist() == [2, 2]


def test_timestamp_errors(tmp_path: Path) -> None:
    bad = _csv(tmp_path, "t,y\n2020-01-01,1\nyesterday,2\n", "bad.csv")
    with pytest.raises(DataError, match=r"bad\.csv:3: cannot parse timestamp 'yesterday'"):
        read_timeseries(bad, "t", "y")
    empty = _csv(tmp_path, "t,y\n2020-01-01,1\n,2\n", "empty.csv")
    with pytest.raises(DataError, match=r"empty\.csv:3: cannot parse timestamp ''"):
        read_timeseries(empty, "t", "y")
    dup = _csv(tmp_path, "t,y\n2020-01-01,1\n2020-01-02,2\n2020-01-02,3\n", "dup.csv")
    with pytest.raises(
        DataError, match=r"dup\.csv:4: duplicate timestamp 2020-01-02T00:00:00 \(also on line 3\)"
    ):
        read_timeseries(dup, "t", "y")
    unsorted = _csv(tmp_path, "t,y\n2020-01-02,2\n2020-01-01,1\n2020-01-03,3\n", "unsorted.csv")
    with pytest.raises(DataError, match=r"unsorted\.csv:3: .*not in time order.*sort=True"):
        read_timeseries(unsorted, "t", "y")
    ds = read_timeseries(unsorted, "t", "y", sort=True)
    assert ds.only().targets[:, 0].tolist() == [1, 2, 3] and ds.reports["0"].sorted_rows
    off = _csv(
        tmp_path,
        "t,y\n2020-01-01 00:00,1\n2020-01-01 01:00,2\n2020-01-01 02:00,2\n2020-01-01 02:30,3\n2020-01-01 04:00,4\n",
        "off.csv",
    )
    with pytest.raises(DataError, match=r"off\.csv:5: timestamp .* is off the regular 1h grid"):
        read_timeseries(off, "t", "y", fill="ffill")
    with pytest.raises(DataError, match="not on a 1h grid"):
        read_timeseries(off, "t", "y", fill="ffill", freq="1h")
    kept = read_timeseries(off, "t", "y", regular=False)
    assert len(kept.only()) == 5 and kept.only().freq is None


def test_values_and_columns_errors(tmp_path: Path) -> None:
    f = _csv(tmp_path, "t,y\n2020-01-01,1\n2020-01-02,abc\n")
    with pytest.raises(DataError, match=r"series\.csv:3: cannot parse 'abc' in column 'y' as a number"):
        read_timeseries(f, "t", "y")
    with pytest.raises(DataError) as err:
        read_timeseries(f, "date", "y")
    assert "['date'] not found; columns are ['t', 'y']" in str(err.value) and str(f) in str(err.value)
    with pytest.raises(DataError, match="unknown fill policy"):
        read_timeseries(f, "t", "y", fill="mean")
    with pytest.raises(DataError, match="used twice"):
        read_timeseries(f, "t", "y", past_covariates=["y"])
    ragged = _csv(tmp_path, "t,y\n2020-01-01,1,2\n", "ragged.csv")
    with pytest.raises(DataError, match=r"ragged\.csv:2: row has 3 fields"):
        read_timeseries(ragged, "t", "y")


def test_monthly_and_yearly_calendar(tmp_path: Path) -> None:
    f = _csv(tmp_path, "Date,P\n1949-01,112\n1949-02,118\n1949-04,132\n")
    ds = read_timeseries(f, "Date", "P", fill="interpolate")
    s = ds.only()
    assert s.freq == "1M" and [str(t)[:7] for t in s.time] == ["1949-01", "1949-02", "1949-03", "1949-04"]
    assert s.targets[:, 0].tolist() == [112, 118, 125, 132]
    g = _csv(tmp_path, "YEAR,N\n1700,5\n1701,11\n1702,16\n", "years.csv")
    assert read_timeseries(g, "YEAR", "N").only().freq == "1Y"
    q = _csv(tmp_path, "d,v\n2020-01-01,1\n2020-04-01,2\n2020-10-01,4\n", "quarters.csv")
    s = read_timeseries(q, "d", "v", freq="Q", fill="interpolate").only()
    assert s.targets[:, 0].tolist() == [1, 2, 3, 4] and s.freq == "3M"


def test_multi_series_long_format(tmp_path: Path) -> None:
    text = "id,t,y\na,2020-01-01,1\nb,2020-01-01,10\na,2020-01-02,2\nb,2020-01-03,30\na,2020-01-03,3\n"
    ds = read_timeseries(_csv(tmp_path, text), "t", "y", series_id_column="id", fill="interpolate")
    assert list(ds.series) == ["a", "b"] and len(ds) == 2
    assert ds["a"].targets[:, 0].tolist() == [1, 2, 3]
    assert ds["b"].targets[:, 0].tolist() == [10, 20, 30] and ds.reports["b"].num_missing_steps == 1
    with pytest.raises(DataError, match="holds 2 series"):
        ds.only()
    with pytest.raises(DataError, match="no series 'c'"):
        ds["c"]
    dup = "id,t,y\na,2020-01-01,1\na,2020-01-01,2\n"
    with pytest.raises(DataError, match="in series 'a'"):
        read_timeseries(_csv(tmp_path, dup, "d.csv"), "t", "y", series_id_column="id")


def test_numeric_and_no_time_column(tmp_path: Path) -> None:
    f = _csv(tmp_path, "step,y\n0,1\n2,3\n4,5\n8,9\n")
    s = read_timeseries(f, "step", "y", time_format="numeric", fill="interpolate").only()
    assert s.time.tolist() == [0, 2, 4, 6, 8] and s.targets[:, 0].tolist() == [1, 3, 5, 7, 9]
    s = read_timeseries(f, None, ["y", "step"]).only()
    assert s.targets.shape == (4, 2) and s.time.tolist() == [0, 1, 2, 3]
    g = _csv(tmp_path, "d,y\n01/02/2020,1\n02/02/2020,2\n", "eu.csv")
    s = read_timeseries(g, "d", "y", time_format="%d/%m/%Y").only()
    assert str(s.time[1])[:10] == "2020-02-02"


def test_fill_missing_function() -> None:
    x = np.array([[1.0, np.nan], [np.nan, 2.0], [3.0, np.nan]])
    np.testing.assert_allclose(fill_missing(x, "interpolate"), [[1, 2], [2, 2], [3, 2]])
    np.testing.assert_allclose(fill_missing(np.array([1.0, np.nan]), "ffill"), [1, 1])
    with pytest.raises(DataError, match="missing value at step 0"):
        fill_missing(np.array([[1.0, np.nan]]), "error")
    with pytest.raises(DataError, match="no value to interpolate"):
        fill_missing(np.array([np.nan]), "interpolate")


def test_parse_freq() -> None:
    assert parse_freq("15min") == (15, "m") and parse_freq("W") == (7, "D") and parse_freq("MS") == (1, "M")
    with pytest.raises(DataError, match="cannot understand freq"):
        parse_freq("m")
    with pytest.raises(DataError):
        parse_freq("fortnight")


def test_from_arrays() -> None:
    s = TimeSeries.from_arrays(np.arange(5.0), past_covariates=np.ones(5))
    assert (
        s.targets.shape == (5, 1)
        and s.past_covariates.shape == (5, 1)
        and s.future_covariates.shape == (5, 0)
    )
    assert len(s.slice(1, 3)) == 2
    with pytest.raises(DataError, match="covariates have 4 steps"):
        TimeSeries.from_arrays(np.arange(5.0), future_covariates=np.ones(4))


def test_parquet(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame(
        {
            "t": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-04"]),
            "y": [1.0, None, 4.0],
            "k": ["a", "a", "a"],
        }
    )
    f = tmp_path / "s.parquet"
    frame.to_parquet(f)
    ds = read_timeseries(f, "t", "y", fill="interpolate")
    assert ds.only().targets[:, 0].tolist() == [1, 2, 3, 4]
    with pytest.raises(DataError, match=r"s\.parquet row 2: missing value"):
        read_timeseries(f, "t", "y", regular=False)
    with pytest.raises(DataError, match=r"s\.parquet row 3: gap of 1 missing 1D steps"):
        read_timeseries(f, "t", "y")


def test_parquet_without_pandas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "s.parquet"
    f.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(DataError, match="reading Parquet needs pandas"):
        read_timeseries(f, "t", "y")


@pytest.mark.parametrize("value", ["inf", "-Infinity", "1e400"])
def test_infinite_values_are_refused_naming_the_line(tmp_path: Path, value: str) -> None:
    # An infinite cell used to be read as a number: it poisoned the scalers (an error pointing at
    # read_timeseries(fill=...), which does not help), or, later in the file, every metric (nan/inf).
    f = _csv(tmp_path, f"date,y\n2020-01-01,1\n2020-01-02,{value}\n2020-01-03,3\n")
    with pytest.raises(DataError, match=r"series\.csv:3: infinite value .* in column 'y'") as err:
        read_timeseries(f, "date", "y", fill="interpolate")
    assert "\n" not in str(err.value) and "fix" in str(err.value)


def test_month_end_dates_are_monthly(tmp_path: Path) -> None:
    # Month-end dates (what pandas' resample("M") writes) were an "off the 31D grid" error, even with
    # freq="M"; they are monthly data, and filled gaps stay on month ends.
    f = _csv(tmp_path, "date,y\n2020-01-31,1\n2020-02-29,2\n2020-04-30,4\n2020-05-31,5\n")
    ds = read_timeseries(f, "date", "y", fill="interpolate")
    s = ds.only()
    assert s.freq == "1M" and ds.reports["0"].num_missing_steps == 1
    assert [str(t)[:10] for t in s.time] == ["2020-01-31", "2020-02-29", "2020-03-31", "2020-04-30", "2020-05-31"]
    assert s.targets[:, 0].tolist() == [1, 2, 3, 4, 5]
    assert read_timeseries(f, "date", "y", fill="interpolate", freq="M").only().freq == "1M"
    quarterly = _csv(tmp_path, "date,y\n" + "".join(f"2021-{md},1\n" for md in ("03-31", "06-30", "09-30", "12-31")),
                     "q.csv")
    assert read_timeseries(quarterly, "date", "y").only().freq == "3M"
    with pytest.raises(DataError, match="off the regular 1Y grid"):  # monthly dates are no yearly series
        read_timeseries(f, "date", "y", fill="interpolate", freq="Y")
    with pytest.raises(DataError, match="grid"):  # a date that is not a month end is still an error
        read_timeseries(_csv(tmp_path, "date,y\n2020-01-31,1\n2020-02-29,2\n2020-03-30,3\n", "m.csv"), "date", "y")


def test_semicolon_files_are_read_and_column_typos_get_a_suggestion(tmp_path: Path) -> None:
    # A semicolon-separated .csv (Excel in many locales) used to fail with "column(s) ['y', 'date'] not
    # found; columns are ['date;y']" and the hint to spell the names as in the header.
    f = _csv(tmp_path, "date;y\n2020-01-01;1\n2020-01-02;2\n2020-01-03;3\n")
    assert read_timeseries(f, "date", "y").only().targets[:, 0].tolist() == [1, 2, 3]
    with pytest.raises(DataError, match=r"fix: pass target_columns='y' \(columns are case- and spelling-exact\)"):
        read_timeseries(f, "date", "Y")
    with pytest.raises(DataError, match=r"fix: pass time_column='date'"):
        read_timeseries(f, "Date", "y")
    with pytest.raises(DataError, match=r"fix: pass future_covariates=\['y'\]"):  # lists keep their other names
        read_timeseries(_csv(tmp_path, "date;y;x\n2020-01-01;1;2\n", "c.csv"), "date", "x", future_covariates=["Y"])
    with config_keys({"target_columns": "data.target"}), pytest.raises(DataError, match=r"add --set data.target=y "):
        read_timeseries(f, "date", "Y")
    with pytest.raises(DataError, match="not found"):  # an explicit delimiter is kept
        read_timeseries(f, "date", "y", delimiter=",")


def test_fill_missing_interpolates_each_period_from_its_past_only() -> None:
    nan = np.nan
    x = np.array([[1.0, 10.0], [nan, nan], [3.0, 30.0], [nan, 40.0], [nan, nan], [6.0, nan], [nan, 70.0]])
    # one period: every gap reads the next observed value
    np.testing.assert_allclose(fill_missing(x, "interpolate"),
                               [[1, 10], [2, 20], [3, 30], [4, 40], [5, 50], [6, 60], [6, 70]])
    # periods [0, 4), [4, 6), [6, 7): a gap at the end of a period is forward-filled (step 3 of
    # column 0 does not read step 5; step 5 of column 1 does not read step 6), a gap at the start of
    # a period is interpolated from the last value of the past period (step 4 of column 0)
    out = fill_missing(x, "interpolate", breaks=(4, 6))
    np.testing.assert_allclose(out, [[1, 10], [2, 20], [3, 30], [3, 40], [5, 40], [6, 40], [6, 70]])
    # changing a value of a later period never changes the filled values of an earlier one
    for i in range(len(x)):
        for c in range(2):
            if np.isnan(x[i, c]):
                continue
            y = x.copy()
            y[i, c] += 100.0
            stop = next((b for b in (4, 6, 7) if b > i), 7)  # the end of step i's period
            lo = {4: 0, 6: 4, 7: 6}[stop]
            np.testing.assert_array_equal(fill_missing(y, "interpolate", breaks=(4, 6))[:lo, c], out[:lo, c])
    # breaks outside (0, N) are ignored; ffill and zero never look ahead, so breaks do not change them
    np.testing.assert_array_equal(fill_missing(x, "interpolate", breaks=(0, 7, 9)), fill_missing(x, "interpolate"))
    for policy in ("ffill", "zero"):
        np.testing.assert_array_equal(fill_missing(x, policy, breaks=(4, 6)), fill_missing(x, policy))
    # a first period with nothing observed cannot be filled without reading the future
    with pytest.raises(DataError, match="no value to interpolate from before step 2"):
        fill_missing(np.array([nan, nan, 3.0]), "interpolate", breaks=(2,))


def test_read_timeseries_fill_breaks(tmp_path: Path) -> None:
    # step 2 (an empty cell) ends the first period and step 3 (a missing row) the second one
    f = _csv(tmp_path, "t,y,x\n2020-01-01,1,5\n2020-01-02,2,6\n2020-01-03,,7\n2020-01-05,5,\n2020-01-06,6,10\n")
    seen: list[int] = []

    def breaks(n: int) -> tuple[int, ...]:
        seen.append(n)
        return (3, 4)

    s = read_timeseries(f, "t", "y", past_covariates=["x"], fill="interpolate", fill_breaks=breaks).only()
    assert seen == [6]  # called with the number of steps after the gap is inserted
    assert s.targets[:, 0].tolist() == [1, 2, 2, 2, 5, 6]  # not 3 and 4 from the value 5 of step 4
    # covariates too: the gap at step 3 ends its period (forward fill); step 4 lies between step 2 (the
    # past) and step 5 of its own period
    assert s.past_covariates[:, 0].tolist() == [5, 6, 7, 7, 9, 10]
    assert s.observed[:, 0].tolist() == [True, True, False, False, True, True]
    plain = read_timeseries(f, "t", "y", past_covariates=["x"], fill="interpolate").only()
    assert plain.targets[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
