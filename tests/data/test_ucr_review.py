"""Regression tests for rnnkit.data.ucr (sktime/UCR/UEA ``.ts`` reader), checked against an
independent plain-Python parse and, when ../shared/data is present, the real archive files."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import DataError, read_ts_file


def _write(tmp_path: Path, text: str, name: str = "Toy_TRAIN.ts") -> Path:
    f = tmp_path / name
    f.write_bytes(text.encode("utf-8"))
    return f


def _plain_parse(path: Path) -> tuple[list[list[list[float]]], list[str]]:
    """Independent parse: per line, the dimensions as lists of floats, then the label."""
    rows: list[list[list[float]]] = []
    labels: list[str] = []
    in_data = False
    for raw in path.read_text(encoding="utf-8-sig").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() == "@data":
            in_data = True
            continue
        if in_data:
            *dims, label = line.split(":")
            rows.append([[math.nan if v.strip() == "?" else float(v) for v in d.split(",")] for d in dims])
            labels.append(label.strip())
    return rows, labels


def _assert_matches(path: Path) -> None:
    ds = read_ts_file(path)
    rows, labels = _plain_parse(path)
    assert ds.labels == labels and len(ds.series) == len(rows)
    for got, dims in zip(ds.series, rows, strict=True):
        np.testing.assert_array_equal(got, np.array(dims, dtype=np.float64).T)


def test_matches_plain_parse_crlf_bom_case_comments_missing(tmp_path: Path) -> None:
    text = (
        "\ufeff# a comment\r\n@PROBLEMNAME Toy \r\n@TimeStamps FALSE\r\n@missing true\r\n"
        "@univariate false\r\n@dimensions 2\r\n@equalLength false\r\n@classLabel TRUE up down\r\n"
        "@DATA\r\n1,2,3:4,5,6:up  \r\n# inside data\r\n\r\n1,?,NaN:0,0,1:down\r\n7,8:9,10:up\r\n"
    )
    f = _write(tmp_path, text)
    _assert_matches(f)
    ds = read_ts_file(f)
    assert ds.class_labels == ("up", "down") and [s.shape for s in ds.series] == [(3, 2), (3, 2), (2, 2)]
    assert ds.header["problemname"] == "Toy"


def test_tab_after_tag_is_a_separator(tmp_path: Path) -> None:
    ds = read_ts_file(_write(tmp_path, "@problemName\tx\n@classLabel\ttrue a b\n@data\n1,2:a\n"))
    assert ds.labels == ["a"] and ds.class_labels == ("a", "b") and ds.series[0].shape == (2, 1)


def test_target_label_is_read_not_taken_as_a_dimension(tmp_path: Path) -> None:
    ds = read_ts_file(_write(tmp_path, "@targetLabel true\n@data\n1,2,3:0.5\n4:1.5\n"))
    assert ds.labels == ["0.5", "1.5"] and [s.shape for s in ds.series] == [(3, 1), (1, 1)]
    with pytest.raises(DataError, match=r"Toy_TRAIN\.ts:3: target 'x' is not a number; fix: "):
        read_ts_file(_write(tmp_path, "@targetLabel true\n@data\n1,2:x\n"))
    with pytest.raises(DataError, match=r":3: data line has no target"):
        read_ts_file(_write(tmp_path, "@targetLabel true\n@data\n1,2\n"))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("@classLabel yes a\n@data\n1:a\n", r"Toy_TRAIN\.ts:1: @classLabel must be 'true' or 'false'"),
        ("@classLabel true\n@data\n1:a\n", r"Toy_TRAIN\.ts:1: @classLabel true without the list"),
        ("@dimensions two\n@data\n1\n", r"Toy_TRAIN\.ts:1: @dimensions must be a whole number"),
        ("@timeStamps true\n@data\n(0,1):a\n", r"Toy_TRAIN\.ts:2: @timeStamps true is not supported"),
        ("@classLabel true a\n@data\n(0,1),(1,2):a\n", r"Toy_TRAIN\.ts:3: time-stamped values"),
        ("@classLabel true a b\n@data\n1,2:c\n", r"Toy_TRAIN\.ts:3: label 'c' not declared"),
        ("@dimensions 2\n@classLabel true a\n@data\n1,2:3,4\n", r"Toy_TRAIN\.ts:4: data line has no label"),
        ("@classLabel true a\n@data\n1,2\n", r"Toy_TRAIN\.ts:3: data line has no label"),
        (
            "@univariate true\n@classLabel true a\n@data\n1,2:3,4:a\n",
            r":4: line has 2 dimensions, the header",
        ),
        (
            "@dimensions 3\n@classLabel true a\n@data\n1:a\n",
            r":4: line has 1 dimensions, the header declares 3",
        ),
        ("@classLabel true a\n@data\n1:2:a\n1:a\n", r":4: line has 1 dimensions, earlier lines 2"),
        (
            "@equalLength true\n@seriesLength 3\n@classLabel true a\n@data\n1,2:a\n",
            r":5: series has length 2",
        ),
        ("@classLabel true a\n@data\n1,2:3,4,5:a\n", r":3: dimensions have different lengths \[2, 3\]"),
        ("@classLabel true a\n@data\n1,x:a\n", r":3: non-numeric value"),
        ("@problemName x\n@data\n1,2:a\n", r":3: non-numeric value .*@classLabel true"),
        ("@classLabel true a\n@data\n\n# nothing\n", r"Toy_TRAIN\.ts: no examples after @data"),
        ("@problemName x\n", r"Toy_TRAIN\.ts: no @data line"),
        ("1,2:a\n", r"Toy_TRAIN\.ts:1: expected a '@key value' header"),
    ],
)
def test_bad_input_one_line_error_with_file_line_fix(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern) as info:
        read_ts_file(_write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message and "; fix: " in message and "Toy_TRAIN.ts" in message


def test_unequal_length_univariate_kept(tmp_path: Path) -> None:
    f = _write(tmp_path, "@equalLength false\n@classLabel true a b\n@data\n1,2:a\n1,2,3,4:b\n")
    _assert_matches(f)
    assert [s.shape for s in read_ts_file(f).series] == [(2, 1), (4, 1)]


# name: (train size, test size, length, dimensions, train class counts, test class counts)
ARCHIVE = {
    "ItalyPowerDemand": (67, 1029, 24, 1, {"1": 34, "2": 33}, {"1": 513, "2": 516}),
    "GunPoint": (50, 150, 150, 1, {"1": 24, "2": 26}, {"1": 76, "2": 74}),
    "ArrowHead": (36, 175, 251, 1, {"0": 12, "1": 12, "2": 12}, {"0": 69, "1": 53, "2": 53}),
    "BasicMotions": (
        40,
        40,
        100,
        6,
        dict.fromkeys(("Standing", "Running", "Walking", "Badminton"), 10),
        dict.fromkeys(("Standing", "Running", "Walking", "Badminton"), 10),
    ),
}


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(ARCHIVE))
def test_real_archive_shapes_counts_and_plain_parse(shared_data: Path, name: str) -> None:
    folder = shared_data / "ucr-uea" / name
    if not folder.is_dir():
        pytest.skip(f"real dataset not available: {folder} does not exist")
    n_train, n_test, length, dims, train_counts, test_counts = ARCHIVE[name]
    for split, n, counts in (("TRAIN", n_train, train_counts), ("TEST", n_test, test_counts)):
        f = folder / f"{name}_{split}.ts"
        if not f.is_file():
            pytest.skip(f"real dataset file not available: {f}")
        ds = read_ts_file(f)
        assert len(ds) == n and {s.shape for s in ds.series} == {(length, dims)}
        assert dict(Counter(ds.labels)) == counts and set(ds.class_labels) == set(counts)
        _assert_matches(f)
