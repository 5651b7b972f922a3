"""Gradient x input saliency (``predict --explain`` without attention pooling) and ``rnnkit diagnose``
on a text-classification run: checked against finite differences and against the run's own loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks.text_classification import TrainedTextClassifier

from .test_text_classification import FAST, _write_csv

runner = CliRunner()


@pytest.fixture(scope="module")
def max_pooled_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("textclf_saliency")
    train = _write_csv(root / "train.csv", 160, 3)
    dev = _write_csv(root / "dev.csv", 40, 4)
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--dev", str(dev),
                                 "--out", str(root / "runs"), "--name", "run", "--set", "data.text_column=review",
                                 "--set", "data.label_column=sentiment", "--set", "model.pooling=max", *FAST])
    assert result.exit_code == 0, result.output
    return root / "runs" / "run", dev


def test_saliency_is_gradient_times_input_by_finite_differences(max_pooled_run):
    run, _ = max_pooled_run
    clf = TrainedTextClassifier.load(run)
    text = "the film was great and really moving"
    explained = clf.explain(text)
    assert explained["method"] == "gradient x input saliency"
    model = clf.model.double()
    ids = torch.tensor([clf.prep.encode_texts([text])[0]])
    lengths = torch.tensor([ids.shape[1]])
    with torch.no_grad():
        emb = model.embedding(ids)
        target = int(model(ids, lengths, embedded=emb)[0].argmax())
        grad = torch.zeros_like(emb)
        eps = 1e-6
        for t in range(emb.shape[1]):  # central differences, one embedding coordinate at a time
            for k in range(emb.shape[2]):
                up, down = emb.clone(), emb.clone()
                up[0, t, k] += eps
                down[0, t, k] -= eps
                grad[0, t, k] = (model(ids, lengths, embedded=up)[0, target]
                                 - model(ids, lengths, embedded=down)[0, target]) / (2 * eps)
    raw = (grad * emb).sum(-1).abs()[0]
    expected = (raw / raw.sum()).tolist()
    got = [w for _, w in explained["tokens"]]
    assert got == pytest.approx(expected, abs=1e-5)
    assert [tok for tok, _ in explained["tokens"]] == text.split()


def test_explaining_leaves_the_parameters_gradients_alone(max_pooled_run):
    run, _ = max_pooled_run
    clf = TrainedTextClassifier.load(run)
    clf.explain("a dull and tedious story")
    assert all(p.grad is None for p in clf.model.parameters())


def test_predict_explain_cli_prints_the_saliency(max_pooled_run):
    run, _ = max_pooled_run
    result = runner.invoke(app, ["predict", str(run), "boring plot", "--explain"])
    assert result.exit_code == 0, result.output
    assert "gradient x input saliency" in result.output and "boring" in result.output


def test_diagnose_a_text_classification_run(max_pooled_run, tmp_path):
    run, dev = max_pooled_run
    out = tmp_path / "diag"
    result = runner.invoke(app, ["diagnose", str(run), "--data", str(dev), "--samples", "8", "--out", str(out),
                                 "--json"])
    assert result.exit_code == 0, result.output
    (summary,) = json.loads(result.output)
    assert summary["steps"] == 7  # every fixture review has 7 words
    report = json.loads((out / "diagnose.json").read_text())["reports"][0]
    norms = report["grad_norms"]
    assert len(norms) == 7 and all(n > 0 for n in norms)
    assert (out / "gradient_norms.png").stat().st_size > 0
