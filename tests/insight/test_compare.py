"""``rnnkit compare``: every cell through the task's own training, summary and recommendation."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.insight.compare import CellRun, CompareResult, PeakMemory
from rnnkit.tasks.config import ConfigError

runner = CliRunner()
TINY = ["--set", "train.epochs=1", "--set", "model.hidden_size=8", "--set", "data.max_train_examples=300",
        "--set", "train.learning_rate=0.01"]


def _result(rows: list[tuple[str, float, float]], higher: bool = True) -> CompareResult:
    runs = [CellRun(cell, seed, f"r/{cell}", q, s, 100, 1.0) for seed, (cell, q, s) in enumerate(rows)]
    return CompareResult("t", "accuracy" if higher else "mse", higher, runs, list(dict.fromkeys(r[0] for r in rows)),
                         "RSS")


def test_recommendation_prefers_the_fastest_of_the_near_best():
    result = _result([("lstm", 0.90, 10.0), ("lstm", 0.92, 10.0), ("gru", 0.905, 6.0), ("rnn", 0.70, 2.0)])
    rows = {r["cell"]: r for r in result.summary()}
    assert rows["lstm"]["mean"] == pytest.approx(0.91) and rows["lstm"]["std"] == pytest.approx(0.01414, rel=1e-3)
    cell, reason = result.recommendation()
    assert cell == "gru" and "within" in reason and "lstm" in reason
    # a clear winner stays the winner even when slower
    cell, _ = _result([("lstm", 0.95, 10.0), ("gru", 0.80, 1.0)]).recommendation()
    assert cell == "lstm"
    # lower-is-better metrics
    cell, _ = _result([("lstm", 0.10, 10.0), ("gru", 0.30, 1.0)], higher=False).recommendation()
    assert cell == "lstm"


def test_peak_memory_sees_an_allocation():
    import numpy as np

    with PeakMemory(interval=0.001) as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        block.sum()
    assert memory.megabytes > 30


def test_compare_cli_on_digits(tmp_path):
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", "image-classification", "--cells", "rnn,gru", "--seeds", "2",
                                 "--train", "builtin:digits", "--out", str(out), "--quiet", *TINY])
    assert result.exit_code == 0, result.output
    assert "recommended:" in result.output
    data = json.loads((out / "compare.json").read_text())
    assert [r["cell"] for r in data["summary"]] == ["rnn", "gru"] and data["metric"] == "accuracy"
    assert len(data["runs"]) == 4 and data["recommended"] in ("rnn", "gru")
    gru = data["summary"][1]
    assert gru["parameters"] > data["summary"][0]["parameters"]  # three gate blocks against one
    assert 0 <= gru["mean"] <= 1 and gru["seconds"] > 0
    for name in ("compare.md", "compare.png", "gru-seed1/model.safetensors", "rnn-seed0/report.md"):
        assert (out / name).is_file(), name
    import yaml

    saved = yaml.safe_load((out / "gru-seed1" / "config.yaml").read_text())
    assert saved["model"]["cell"] == "gru" and saved["train"]["seed"] == 1 and saved["model"]["hidden_size"] == 8
    assert "**Recommended:" in (out / "compare.md").read_text()


def test_compare_rejects_bad_cells_and_conflicting_overrides(tmp_path):
    bad = runner.invoke(app, ["compare", "image-classification", "--cells", "rnn,transformer",
                              "--train", "builtin:digits", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "model.cell: 'transformer' is not valid" in bad.output
    assert not (tmp_path / "rnn-seed0").exists()  # nothing trained before the check
    bad = runner.invoke(app, ["compare", "nope", "--train", "x"])
    assert bad.exit_code == 2 and "unknown task 'nope'" in bad.output
    from rnnkit.insight import compare_cells

    with pytest.raises(ConfigError, match="compare sets model.cell"):
        compare_cells("image-classification", ["rnn"], "builtin:digits", overrides=["model.cell=gru"], out=tmp_path)
