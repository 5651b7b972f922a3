"""Config values YAML 1.1 reads as bools or numbers keep the text the user wrote where the key is a string.

``--set data.text_column=no`` used to name the column ``'False'`` (YAML reads ``no`` as false and
``str(False)`` is ``'False'``), a label column ``007`` became ``'7'`` and a forecasting target
column ``2024`` was refused as "expected a list".
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks import forecasting, text_classification
from rnnkit.tasks.config import ConfigError, load_config


@pytest.mark.parametrize("text", ["no", "yes", "off", "On", "TRUE", "007", "1e3", "0x10", "1.50", "12"])
def test_a_string_key_keeps_the_text_as_written_on_the_command_line(text: str) -> None:
    cfg = load_config(text_classification.Config, None, [f"data.text_column={text}"])
    assert cfg.data.text_column == text


@pytest.mark.parametrize("text", ["no", "off", "007", "1.50", "12"])
def test_a_string_key_keeps_the_text_as_written_in_a_yaml_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"data:\n  text_column: {text}\n  label_column: '{text}'\n", encoding="utf-8")
    cfg = load_config(text_classification.Config, path)
    assert (cfg.data.text_column, cfg.data.label_column) == (text, text)


def test_bools_numbers_and_null_still_read_as_before(tmp_path: Path) -> None:
    cfg = load_config(text_classification.Config, None, ["model.bidirectional=yes", "train.epochs=3",
                                                         "train.learning_rate=1e-3", "train.max_minutes=null"])
    assert (cfg.model.bidirectional, cfg.train.epochs, cfg.train.learning_rate, cfg.train.max_minutes) == (True, 3, 1e-3, None)
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  bidirectional: off\ntrain:\n  epochs: 0x2\n", encoding="utf-8")
    cfg = load_config(text_classification.Config, path)
    assert (cfg.model.bidirectional, cfg.train.epochs) == (False, 2)


def test_list_of_strings_keeps_numeric_column_names(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  target: 2024\n  past_covariates: [2023, no, temp]\n", encoding="utf-8")
    cfg = load_config(forecasting.Config, path)
    assert cfg.data.target == ["2024"]
    assert cfg.data.past_covariates == ["2023", "no", "temp"]
    cfg = load_config(forecasting.Config, None, ["data.target=2024"])
    assert cfg.data.target == ["2024"]


def test_errors_quote_the_value_as_written() -> None:
    with pytest.raises(ConfigError, match="train.epochs: expected an integer, got yes$"):
        load_config(text_classification.Config, None, ["train.epochs=yes"])
    with pytest.raises(ConfigError, match=r"expected true or false .*got 2\.5"):
        load_config(text_classification.Config, None, ["model.bidirectional=2.5"])


def test_numeric_keys_in_a_yaml_file_are_reported_as_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  1: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key data.1;"):
        load_config(text_classification.Config, path)


def test_print_config_shows_the_column_named_no() -> None:
    result = CliRunner().invoke(app, ["train", "text-classification", "--set", "data.text_column=no",
                                      "--print-config"])
    assert result.exit_code == 0, result.output
    start = result.output.index("data:")
    printed = yaml.safe_load(result.output[start:result.output.index("\n\n", start)]
                             if "\n\n" in result.output[start:] else result.output[start:])
    assert printed["data"]["text_column"] == "no"


@pytest.mark.parametrize(("typed", "meant"), [("lr", "learning_rate"), ("wd", "weight_decay"), ("bs", "batch_size")])
def test_an_abbreviated_key_suggests_the_key_it_abbreviates(typed: str, meant: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown key train.{typed};.*did you mean train.{meant}\?"):
        load_config(text_classification.Config, None, [f"train.{typed}=1"])
