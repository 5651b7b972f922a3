"""Walkthrough review of the image / sequence classification task on series data: the dev hold-out
is stratified by class, and ``predict`` reads UCR/UEA ``.ts`` files as training does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks.image_classification import TrainedImageClassifier

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FAST = ["train.epochs=1", "model.hidden_size=8", "train.batch_size=8", "train.accelerator=cpu"]


def _sets(*settings: str) -> list[str]:
    return [arg for s in settings for arg in ("--set", s)]


def _train(train: Path, out: Path, *settings: str) -> Path:
    result = runner.invoke(app, ["train", "image-classification", "--train", str(train), "--out", str(out),
                                 "--name", "r", "--quiet", *_sets(*FAST, *settings)])
    assert result.exit_code == 0, result.output
    return out / "r"


def _write_ts(path: Path, series: np.ndarray, labels: list[str]) -> None:
    """A univariate, equal-length sktime ``.ts`` file."""
    classes = " ".join(sorted(set(labels)))
    lines = ["@problemName toy", "@timeStamps false", "@missing false", "@univariate true",
             "@equalLength true", f"@seriesLength {series.shape[1]}", f"@classLabel true {classes}", "@data"]
    lines += [",".join(f"{v:.6f}" for v in row) + f":{label}" for row, label in zip(series, labels)]
    path.write_text("\n".join(lines) + "\n")


def _reference_dev_counts(counts: list[int], fraction: float) -> list[int]:
    """Per-class dev sizes by the documented rule, in a plain loop: each class its share of
    round(n * fraction), rounded down, the largest remainders taking the rest."""
    n = sum(counts)
    n_dev = max(1, round(n * fraction))
    quotas = [c * n_dev / n for c in counts]
    take = [int(q) for q in quotas]
    for k in sorted(range(len(counts)), key=lambda k: -(quotas[k] - take[k]))[: n_dev - sum(take)]:
        take[k] += 1
    return take


def test_the_dev_hold_out_takes_every_class_in_proportion(tmp_path: Path) -> None:
    # the labels put class 1 exactly where an unstratified seeded draw (train.seed=0) would take its dev
    # examples: it held out 2 images of class 1 and none of class 0, so dev scored one class only
    n, n_dev = 20, 2
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).numpy()
    labels = np.zeros(n, dtype=np.int64)
    labels[order[:n_dev]] = 1
    labels[order[-8:]] = 1  # 10 of each class
    images = np.random.default_rng(0).integers(0, 256, size=(n, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "toy.npz", x=images, y=labels)
    run = _train(tmp_path / "toy.npz", tmp_path, "data.dev_fraction=0.1", "train.seed=0")
    support = json.loads((run / "metrics.json").read_text())["dev"]["per_class"]["support"]
    assert support == _reference_dev_counts([10, 10], 0.1) == [1, 1]


def test_predict_reads_a_ts_file_case_by_case(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    t = np.linspace(0, 1, 12)
    series = np.concatenate([np.sin(6 * t) + 0.1 * rng.standard_normal((10, 12)),
                             np.cos(6 * t) + 0.1 * rng.standard_normal((10, 12))])
    labels = ["a"] * 10 + ["b"] * 10
    _write_ts(tmp_path / "toy_TRAIN.ts", series, labels)
    run = _train(tmp_path / "toy_TRAIN.ts", tmp_path)
    _write_ts(tmp_path / "toy_TEST.ts", series[:3], labels[:3])
    result = runner.invoke(app, ["predict", str(run), str(tmp_path / "toy_TEST.ts"), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    model = TrainedImageClassifier.load(run)
    # the reference: the same series given as an array [N, T, D] (the file stores 6 decimals)
    expected = model.predict([np.round(series[:3], 6)[..., None].astype(np.float32)])
    assert [r["input"] for r in rows] == [f"{tmp_path / 'toy_TEST.ts'}[{i}]" for i in range(3)]
    for row, ref in zip(rows, expected):
        assert row["label"] == ref["label"]
        assert row["probabilities"] == pytest.approx(ref["probabilities"], abs=1e-6)


@pytest.mark.data
def test_gunpoint_trains_on_a_dev_of_both_classes_and_predicts_its_test_file(tmp_path: Path) -> None:
    folder = SHARED / "ucr-uea" / "GunPoint"
    if not (folder / "GunPoint_TRAIN.ts").is_file():
        pytest.skip(f"real data not found: {folder} (shared/data is absent)")
    run = _train(folder / "GunPoint_TRAIN.ts", tmp_path)
    support = json.loads((run / "metrics.json").read_text())["dev"]["per_class"]["support"]
    assert sum(support) == 5 and min(support) >= 2  # 24 and 26 series: 2 and 3 held out
    result = runner.invoke(app, ["predict", str(run), str(folder / "GunPoint_TEST.ts"), "--json"])
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("{") for line in result.output.splitlines()) == 150
