"""UCR/UEA ``.ts`` files as sequence-classification data (one step per time point, one feature per
dimension) through the image-classification task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks.config import load_config
from rnnkit.tasks.image_classification import Config, read_images

runner = CliRunner()
ARCHIVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "ucr-uea"


def _ts(path: Path, rows: list[str], header: str = "@classLabel true up down") -> Path:
    path.write_text(f"@problemName toy\n@timeStamps false\n@univariate false\n@dimensions 2\n{header}\n@data\n"
                    + "\n".join(rows) + "\n")
    return path


def _toy(path: Path, n: int = 40, steps: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        up = i % 2 == 0
        trend = np.linspace(0, 1, steps) * (1 if up else -1)
        a, b = trend + 0.1 * rng.normal(size=steps), rng.normal(size=steps)
        rows.append(f"{','.join(f'{v:.4f}' for v in a)}:{','.join(f'{v:.4f}' for v in b)}:{'up' if up else 'down'}")
    return _ts(path, rows)


def test_a_ts_file_reads_as_series_of_steps_by_dimensions(tmp_path):
    cfg = load_config(Config, None, []).data
    x, y = read_images(_toy(tmp_path / "toy.ts"), cfg)
    assert x.shape == (40, 12, 2) and x.dtype == np.float32 and y is not None and len(y) == 40
    # the values are the file's, time along axis 1 and dimensions along axis 2
    first = (tmp_path / "toy.ts").read_text().splitlines()[6].split(":")
    np.testing.assert_allclose(x[0, :, 0], np.array(first[0].split(","), dtype=float), rtol=1e-6)
    np.testing.assert_allclose(x[0, :, 1], np.array(first[1].split(","), dtype=float), rtol=1e-6)


def test_train_and_evaluate_on_ts_files_from_the_command_line(tmp_path):
    train, test = _toy(tmp_path / "train.ts", 60, seed=0), _toy(tmp_path / "test.ts", 20, seed=1)
    result = runner.invoke(app, ["train", "image-classification", "--train", str(train), "--out", str(tmp_path),
                                 "--name", "run", "--quiet", "--set", "train.epochs=25", "--set", "train.batch_size=8",
                                 "--set", "train.learning_rate=0.01", "--set", "model.hidden_size=16",
                                 "--set", "train.patience=null"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--data", str(test), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["accuracy"] >= 0.8  # up- against down-trends: easy to learn


@pytest.mark.parametrize(("rows", "header", "message"), [
    (["1,2,3:4,5,6:up", "1,2:3,4:down"], "@classLabel true up down", "2 different lengths"),
    (["1,?,3:4,5,6:up", "1,2,3:4,5,6:down"], "@classLabel true up down", "hold missing values"),
    (["1,2,3:4,5,6", "1,2,3:4,5,6"], "@classLabel false", "has no class labels"),
])
def test_ts_files_the_sequence_model_cannot_read_are_one_line_errors(tmp_path, rows, header, message):
    data = _ts(tmp_path / "bad.ts", rows, header)
    result = runner.invoke(app, ["train", "image-classification", "--train", str(data), "--out", str(tmp_path),
                                 "--set", "train.epochs=1"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert message in errors[0] and str(data) in errors[0]


@pytest.mark.data
def test_gunpoint_trains_and_is_scored_on_its_test_split(tmp_path):
    if not (ARCHIVE / "GunPoint").is_dir():
        pytest.skip(f"the UCR/UEA archive is not at {ARCHIVE}")
    result = runner.invoke(app, ["train", "image-classification", "--train",
                                 str(ARCHIVE / "GunPoint" / "GunPoint_TRAIN.ts"), "--out", str(tmp_path), "--name",
                                 "gp", "--quiet", "--set", "train.epochs=40", "--set", "train.batch_size=8",
                                 "--set", "train.learning_rate=0.005", "--set", "train.patience=null",
                                 "--set", "data.dev_fraction=0.2", "--set", "model.hidden_size=32",
                                 "--set", "model.cell=gru"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "gp"), "--data",
                                 str(ARCHIVE / "GunPoint" / "GunPoint_TEST.ts"), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["examples"] == 150 and metrics["accuracy"] > 0.6  # 0.75 here; chance is 0.5


def test_a_small_set_at_a_large_batch_is_noted_in_the_log(tmp_path):
    train = _toy(tmp_path / "train.ts", 40)
    result = runner.invoke(app, ["train", "image-classification", "--train", str(train), "--out", str(tmp_path),
                                 "--name", "run", "--quiet", "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    log = (tmp_path / "run" / "train.log").read_text()
    assert "36 training examples at train.batch_size=128 make 1 optimizer step(s) per epoch" in log
    assert "lower train.batch_size" in log
    result = runner.invoke(app, ["train", "image-classification", "--train", str(train), "--out", str(tmp_path),
                                 "--name", "small", "--quiet", "--set", "train.epochs=1", "--set", "train.batch_size=4"])
    assert result.exit_code == 0 and "optimizer step(s) per epoch" not in (tmp_path / "small" / "train.log").read_text()
