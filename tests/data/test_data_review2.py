"""Regression tests for the second data-layer review (messy files, silent wrong results)."""

from __future__ import annotations

import logging
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnkit.data as rd
from rnnkit.data import DataError


def test_strptime_offsets_become_utc_like_iso(tmp_path: Path) -> None:
    # Europe/Paris spring-forward night: 01:00 +0100 and 03:00 +0200 are one hour apart.
    rows = ["29/03/2020 00:00 +0100", "29/03/2020 01:00 +0100", "29/03/2020 03:00 +0200", "29/03/2020 04:00 +0200"]
    f = tmp_path / "dst.csv"
    f.write_text("t,y\n" + "".join(f"{r},{i + 1}\n" for i, r in enumerate(rows)))
    fmt = "%d/%m/%Y %H:%M %z"
    s = rd.read_timeseries(f, "t", "y", time_format=fmt, fill="interpolate").only()
    expected = [
        np.datetime64(datetime.strptime(r, fmt).astimezone(timezone.utc).replace(tzinfo=None), "s") for r in rows
    ]
    # before: wall-clock times, a fake 02:00 step and an invented value 2.5
    assert s.time.tolist() == [e.tolist() for e in expected]
    assert s.targets[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    iso = tmp_path / "iso.csv"
    iso.write_text("t,y\n" + "".join(f"{e}Z,{i}\n" for i, e in enumerate(expected)))
    assert rd.read_timeseries(iso, "t", "y").only().time.tolist() == s.time.tolist()


def test_fractional_numeric_time_step(tmp_path: Path) -> None:
    f = tmp_path / "half.csv"
    f.write_text("t,y\n0.0,1\n0.5,2\n1.0,3\n2.0,5\n")
    s = rd.read_timeseries(f, "t", "y", time_format="numeric", fill="interpolate").only()
    assert s.freq == "0.5"  # before: 'off the regular 0 grid' error
    assert s.time.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert s.targets[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    g = tmp_path / "tenth.csv"  # 0.1 steps differ in their last bits
    g.write_text("t,y\n0.1,1\n0.2,2\n0.3,3\n0.5,5\n")
    s = rd.read_timeseries(g, "t", "y", time_format="numeric", fill="interpolate", freq="0.1").only()
    assert s.targets[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(DataError, match="freq='x' for a numeric time column"):
        rd.read_timeseries(g, "t", "y", time_format="numeric", freq="x")


def test_blank_line_in_one_column_series_is_a_missing_value(tmp_path: Path) -> None:
    f = tmp_path / "one.csv"
    f.write_text("y\n1\n2\n\n4\n\n")  # the blank line is step 2; the trailing one is no row
    with pytest.raises(DataError, match=r"one.csv:4: missing value in column 'y'"):
        rd.read_timeseries(f, None, "y")
    s = rd.read_timeseries(f, None, "y", fill="interpolate").only()
    assert s.targets[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]  # before: [1, 2, 4], later steps shifted
    assert s.observed[:, 0].tolist() == [True, True, False, True]


class _InsertionOrderSet(dict):  # type: ignore[type-arg]
    """A set that iterates in insertion order, to replay the orders a hash seed can give."""

    def __init__(self, items: object = ()) -> None:
        super().__init__((x, None) for x in items)  # type: ignore[attr-defined]

    def add(self, item: object) -> None:
        self[item] = None


def test_label_encoder_order_does_not_depend_on_set_order(monkeypatch: pytest.MonkeyPatch) -> None:
    import itertools

    import rnnkit.data.vocab as vocab_module

    monkeypatch.setattr(vocab_module, "set", _InsertionOrderSet, raising=False)
    orders = {rd.LabelEncoder.fit(p).classes for p in itertools.permutations(["2", "nan", "10", "1", "3"])}
    # before: 'nan' sorted as the float NaN, which compares false to everything, so the classes
    # (hence the ids) followed the set's iteration order, i.e. PYTHONHASHSEED
    assert orders == {("1", "2", "3", "10", "nan")}
    assert rd.LabelEncoder.fit(["nan", "b", "2"]).classes == ("2", "b", "nan")


_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \xff\xfe"


def test_class_folders_skip_hidden_files_on_disk_and_in_archives(tmp_path: Path) -> None:
    root = tmp_path / "corpus" / "train"
    for label in ("neg", "pos"):
        (root / label).mkdir(parents=True)
        (root / label / "0_1.txt").write_text(f"a {label} review")
        (root / label / "._0_1.txt").write_bytes(_APPLEDOUBLE)  # macOS resource fork
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "x.txt").write_text("not a class")
    got = rd.read_class_folders(root)  # before: decode error on ._0_1.txt
    assert [(e.label, Path(e.source).name) for e in got] == [("neg", "0_1.txt"), ("pos", "0_1.txt")]
    replaced = rd.read_class_folders(root, errors="replace")  # before: junk examples were added
    assert len(replaced) == 2
    archive = tmp_path / "corpus.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "corpus", arcname="corpus")
    got = rd.read_class_folders(archive, member_prefix="corpus/train")
    assert [e.label for e in got] == ["neg", "pos"]


def test_audio_folder_skips_hidden_files(tmp_path: Path) -> None:
    sf = pytest.importorskip("soundfile")
    sf.write(tmp_path / "3_jackson_0.wav", np.zeros(800), 8000)
    (tmp_path / "._3_jackson_0.wav").write_bytes(_APPLEDOUBLE)
    items = rd.list_audio_folder(tmp_path)  # before: 'file name does not match the pattern'
    assert [Path(i.path).name for i in items] == ["3_jackson_0.wav"]
    (tmp_path / "classes" / "cls").mkdir(parents=True)
    sf.write(tmp_path / "classes" / "cls" / "a.wav", np.zeros(800), 8000)
    (tmp_path / "classes" / "cls" / "._a.wav").write_bytes(_APPLEDOUBLE)
    items = rd.list_audio_folder(tmp_path / "classes", pattern=None)  # before: ._a.wav listed, unreadable
    assert [(Path(i.path).name, i.label) for i in items] == [("a.wav", "cls")]


def test_empty_label_cell_is_missing(tmp_path: Path) -> None:
    f = tmp_path / "labels.csv"
    f.write_text("text,label\ngood,pos\nmeh,\nbad, \n")
    examples = rd.read_delimited(f)
    assert [e.label for e in examples] == ["pos", None, None]  # before: '' (a class of its own)
    with pytest.raises(DataError, match=r"label 1 is missing \(None\)"):
        rd.LabelEncoder.fit([e.label for e in examples])


def test_resample_refuses_absurd_rate_ratio() -> None:
    with pytest.raises(DataError, match=r"16000 -> 16001 Hz reduces to the ratio 16000:16001"):
        rd.resample(torch.zeros(100), 16000, 16001)  # before: a 2 GiB filter bank
    assert rd.resample(torch.zeros(441), 44100, 48000).shape == (480,)


def test_resample_matches_a_band_limited_tone() -> None:
    # independent reference: the same sine sampled at the new rate
    for orig, new in ((8000, 16000), (16000, 8000), (44100, 16000)):
        x = np.sin(2 * np.pi * 440.0 * np.arange(orig // 4) / orig)
        y = rd.resample(torch.tensor(x), orig, new).numpy()
        ref = np.sin(2 * np.pi * 440.0 * np.arange(len(y)) / new)
        assert len(y) == orig // 4 * new // orig
        mid = slice(len(y) // 10, -len(y) // 10)
        assert np.abs(y[mid] - ref[mid]).max() < 2e-3


def test_sub_second_timestamps_are_refused_not_merged(tmp_path: Path) -> None:
    f = tmp_path / "fast.csv"  # 4 Hz: cut to whole seconds these were false duplicates
    f.write_text("t,y\n2020-01-01 00:00:00.25,1\n2020-01-01 00:00:00.5,2\n2020-01-01 00:00:00.75,3\n")
    for kw in ({}, {"time_format": "%Y-%m-%d %H:%M:%S.%f"}):
        with pytest.raises(DataError, match=r"fast.csv:2: timestamp .*00:00:00.25' .* fraction of a second"):
            rd.read_timeseries(f, "t", "y", **kw)
    g = tmp_path / "whole.csv"  # a zero fraction is fine
    g.write_text("t,y\n2020-01-01 00:00:00.000,1\n2020-01-01 00:00:01.000,2\n")
    assert rd.read_timeseries(g, "t", "y").only().freq == "1s"
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"t": pd.date_range("2020", periods=3, freq="250ms"), "y": [1.0, 2.0, 3.0]})
    frame.to_parquet(tmp_path / "fast.parquet")
    with pytest.raises(DataError, match=r"fast.parquet row 2: timestamp .* fraction of a second"):
        rd.read_timeseries(tmp_path / "fast.parquet", "t", "y")


def test_whole_float_labels_are_one_class_with_ints(tmp_path: Path) -> None:
    encoder = rd.LabelEncoder.fit([1, 1.0, 2, np.float64(2.0), torch.tensor(0.0)])
    assert encoder.classes == ("0", "1", "2")  # before: ('0.0', '1', '1.0', '2', '2.0')
    assert encoder.encode([1.0, 2, np.int64(0)]) == [1, 2, 0]
    assert rd.LabelEncoder(["0.0", "1.0"]).encode([1.0, 0.0]) == [1, 0]  # encoders saved before still work
    assert rd.LabelEncoder.fit([0.5, 1.0]).classes == ("0.5", "1")
    f = tmp_path / "mixed.jsonl"  # a float label column written out next to an int one
    f.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 1.0}\n{"text": "c", "label": 0.5}\n')
    assert [e.label for e in rd.read_jsonl(f)] == ["1", "1", "0.5"]  # before: '1', '1.0', '0.5'


def test_one_str_instead_of_texts_is_an_error() -> None:
    with pytest.raises(DataError, match="texts is one str"):
        rd.TextEncoder.fit("the cat sat", rd.WordTokenizer())  # before: one 'text' per character
    assert rd.TextEncoder.fit(["the cat sat"], rd.WordTokenizer()).vocab_size == 4 + 3


def test_pooled_scaler_names_series_with_other_features() -> None:
    with pytest.raises(DataError, match=r"different feature shapes \('a': \[2\], 'b': \[3\]\)"):
        rd.StandardScaler().fit({"a": np.zeros((4, 2)), "b": np.zeros((3, 3))})  # before: numpy's concatenate error
    data = {"a": np.arange(4.0), "b": np.arange(3.0)}
    center, scale = rd.StandardScaler().fit(data).stats["__all__"]
    pooled = np.concatenate(list(data.values()))
    assert np.isclose(center, pooled.mean()) and np.isclose(scale, pooled.std())


def test_rows_with_empty_text_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "t.csv"
    f.write_text("text,label\ngood,pos\n  ,neg\n,pos\nbad,neg\n")
    g = tmp_path / "t.jsonl"
    g.write_text('{"text": "a", "label": 1}\n{"text": "", "label": 0}\n')
    with caplog.at_level(logging.WARNING, logger="rnnkit.data"):
        assert len(rd.read_delimited(f)) == 2
        assert len(rd.read_jsonl(g)) == 1
    assert "t.csv: skipped 2 record(s) with an empty text (first on line 3)" in caplog.text  # before: silent
    assert "t.jsonl: skipped 1 record(s) with an empty text (first on line 2)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rnnkit.data"):
        assert len(rd.read_delimited(f, skip_empty=False)) == 4
    assert caplog.text == ""


def test_mixed_naive_and_offset_timestamps_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "mixed.csv"  # 01:00+01:00 is 00:00 UTC: a false duplicate of the naive 00:00
    f.write_text("t,y\n2020-01-01T00:00:00,1\n2020-01-01T01:00:00+01:00,2\n2020-01-01T02:00:00,3\n")
    with pytest.raises(DataError, match=r"mixed.csv:3: timestamp '2020-01-01T01:00:00\+01:00' .* has a UTC offset"):
        rd.read_timeseries(f, "t", "y")
    g = tmp_path / "dates.csv"  # date-only values and a time on one row: no offsets anywhere
    g.write_text("t,y\n2020-01-01,1\n2020-01-02 00:00,2\n2020-01-03T00:00:00-0000,3\n")
    with pytest.raises(DataError, match=r"dates.csv:4: .* has a UTC offset"):
        rd.read_timeseries(g, "t", "y")
    g.write_text("t,y\n2020-01-01,1\n2020-01-02 00:00,2\n2020-01-03,3\n")
    assert rd.read_timeseries(g, "t", "y").only().freq == "1D"
