"""Fixes in data errors: worded for Python callers, or for a command's config keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnkit.data import DataError, read_conll, read_delimited
from rnnkit.data.errors import config_keys, fixes, name_of, setting


def test_setting_names_python_arguments_or_config_keys() -> None:
    assert setting("fill", "ffill", "zero") == "pass fill='ffill' or 'zero'"
    assert setting("sort", ("True", "true"), then=" first") == "pass sort=True first"
    with config_keys({"fill": "data.fill"}):
        assert setting("fill", "ffill", "zero") == "add --set data.fill=ffill (or zero)"
        assert setting("regular", ("False", "false")) is None  # the command has no such key
        assert fixes("fix the cell", setting("regular", ("False", "false")), setting("fill", "zero")) == (
            "fix the cell or add --set data.fill=zero")
        assert name_of("fill") == "data.fill" and name_of("pattern") == "pattern"
    assert name_of("fill") == "fill" and setting("fill", "zero") == "pass fill='zero'"


def test_reader_errors_inside_and_outside_a_command(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("review,label\ngood,1\n")
    with pytest.raises(DataError, match=r"fix: pass text_column=<name> with one of those names"):
        read_delimited(f)
    with config_keys({"text_column": "data.text_column"}), pytest.raises(
            DataError, match=r"fix: add --set data.text_column=<name> with one of those names"):
        read_delimited(f)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: .*fix: pass the right encoding=\.\.\., or errors='replace'"):
        read_conll(bad)
    with config_keys({}), pytest.raises(DataError, match=r"bad\.txt:2: .*; fix: re-save the file as UTF-8$"):
        read_conll(bad)
