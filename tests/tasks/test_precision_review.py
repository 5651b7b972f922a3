"""Review of training precision: ``train.precision`` for every task, and float32 running losses.

Defects found: ``rnnkit train TASK --set train.precision=bf16-mixed`` was an unknown key (the task
engine's Trainer always ran in float32); ``Model.fit(..., precision="bf16-true")`` summed its running
loss and metrics in bfloat16 (Lightning's ``module.to(dtype=...)`` reached the torchmetrics states), so
the history showed 0.69140625 for every epoch; the task engine under ``bf16-true`` handed the dev
metrics bfloat16 predictions and left the model, and the run folder's weights, in bfloat16.

References: the mean of the per-batch losses (a plain loop over the batch logs), the loss recomputed in
float64 with numpy from the model's own predictions, a float32 run of the same config.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks import TASKS, get_task
from rnnkit.tasks.config import PRECISIONS, ConfigError, load_config

runner = CliRunner()
WORDS = {"pos": ["great", "superb", "moving"], "neg": ["awful", "dull", "boring"]}
FILLER = ["the", "film", "was", "a", "story", "and", "plot"]
TINY = ["--set", "model.hidden_size=8", "--set", "model.embedding_dim=8", "--set", "data.min_freq=1",
        "--set", "train.patience=null", "--quiet"]


def _write_csv(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = "pos" if i % 2 else "neg"
            words = rng.sample(FILLER, 4) + rng.sample(WORDS[label], 2)
            rng.shuffle(words)
            writer.writerow([" ".join(words), label])
    return path


def _history(run: Path) -> list[dict[str, float]]:
    with (run / "history.csv").open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def text_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("precision")
    return root, _write_csv(root / "train.csv", 96, 1), _write_csv(root / "dev.csv", 32, 2)


def _train(text_data: tuple[Path, Path, Path], name: str, *extra: str) -> Path:
    root, train, dev = text_data
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--dev", str(dev),
                                 "--out", str(root / "runs"), "--name", name, *TINY, *extra])
    assert result.exit_code == 0, result.output
    return root / "runs" / name


def test_every_task_takes_train_precision_with_lightnings_names_and_aliases() -> None:
    for task in TASKS:
        config = get_task(task).Config
        assert load_config(config).train.precision == "32-true"
        for value in PRECISIONS:
            assert load_config(config, None, [f"train.precision={value}"]).train.precision == value
        # Lightning's short names are read as the full ones (and so recorded in config.yaml)
        for alias, full in (("bf16", "bf16-mixed"), ("16", "16-mixed"), ("32", "32-true"), ("64", "64-true")):
            assert load_config(config, None, [f"train.precision={alias}"]).train.precision == full
    with pytest.raises(ConfigError) as err:
        load_config(get_task("tagging").Config, None, ["train.precision=fp16"])
    message = str(err.value)
    assert "\n" not in message and "train.precision" in message and all(p in message for p in PRECISIONS)


def test_bf16_mixed_text_classification_records_its_precision_keeps_float32_weights_and_resumes_with_it(
        text_data: tuple[Path, Path, Path]) -> None:
    mixed = _train(text_data, "mixed", "--set", "train.precision=bf16-mixed", "--set", "train.epochs=2")
    assert "precision: bf16-mixed" in (mixed / "config.yaml").read_text()
    for name in ("model.safetensors", "checkpoint-best.safetensors"):
        assert {t.dtype for t in load_file(mixed / name).values()} == {torch.float32}
    # resumed: the third epoch trains as in an uninterrupted bf16-mixed run, not as a float32 one
    result = runner.invoke(app, ["train", "text-classification", "--resume", str(mixed), "--set", "train.epochs=3",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    whole = _train(text_data, "whole", "--set", "train.precision=bf16-mixed", "--set", "train.epochs=3")
    plain = _train(text_data, "plain", "--set", "train.epochs=3")
    resumed, reference, float32 = _history(mixed), _history(whole), _history(plain)
    assert [r["train_loss"] for r in resumed] == pytest.approx([r["train_loss"] for r in reference], abs=1e-9)
    assert [r["train_loss"] for r in resumed] != pytest.approx([r["train_loss"] for r in float32], abs=1e-6)
    assert "precision: bf16-mixed" in (mixed / "config.yaml").read_text()
    # evaluate and predict run from the float32 weights; the metrics are plain float32 numbers
    _, _, dev = text_data
    result = runner.invoke(app, ["evaluate", str(mixed), "--data", str(dev), "--json"])
    assert result.exit_code == 0, result.output
    accuracy = json.loads(result.output)["accuracy"]
    assert isinstance(accuracy, float)
    assert accuracy == pytest.approx(max(r["dev_accuracy"] for r in resumed), abs=1e-6)  # the best epoch's weights
    result = runner.invoke(app, ["predict", str(mixed), "great superb film", "--json"])
    assert result.exit_code == 0, result.output
    probabilities = json.loads(result.output.splitlines()[-1])["probabilities"]
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)


def test_16_mixed_on_a_cpu_says_in_one_log_line_that_lightning_trains_in_bf16_mixed(
        text_data: tuple[Path, Path, Path]) -> None:
    half = _train(text_data, "half", "--set", "train.precision=16-mixed", "--set", "train.epochs=1",
                  "--set", "train.accelerator=cpu")
    notes = [line for line in (half / "train.log").read_text().splitlines() if "16-mixed" in line]
    assert notes == ["note: train.precision=16-mixed is not supported on CPU; Lightning trains with bf16-mixed"]
    bf16 = _train(text_data, "bf16", "--set", "train.precision=bf16-mixed", "--set", "train.epochs=1",
                  "--set", "train.accelerator=cpu")
    assert _history(half)[0]["train_loss"] == _history(bf16)[0]["train_loss"]


def test_bf16_mixed_image_classification_on_builtin_digits(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "image-classification", "--train", "builtin:digits", "--out", str(tmp_path),
                                 "--name", "img", "--set", "train.precision=bf16-mixed", "--set", "train.epochs=1",
                                 "--set", "model.hidden_size=16", "--set", "train.batch_size=128", "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "img"
    assert "precision: bf16-mixed" in (run / "config.yaml").read_text()
    assert {t.dtype for t in load_file(run / "model.safetensors").values()} == {torch.float32}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] == pytest.approx(_history(run)[0]["dev_accuracy"], abs=1e-6)


def test_task_engine_under_bf16_true_scores_dev_in_float32_and_gives_back_a_float32_model(tmp_path: Path) -> None:
    from rnnkit.tasks.engine import EngineOptions, fit
    from rnnkit.tasks.run import RunDir

    torch.manual_seed(0)
    x = torch.randn(512, 4)
    y = (x[:, 0] > 0).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    model = nn.Linear(4, 2)
    seen: list[torch.dtype] = []

    def metric_fn(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        seen.append(scores.dtype)
        return {"accuracy": float((scores.argmax(-1) == targets).float().mean())}

    options = EngineOptions(epochs=2, learning_rate=0.05, monitor="accuracy", accelerator="cpu", progress=False,
                            precision="bf16-true")
    run = RunDir(tmp_path)
    history = fit(model, loader, loader, loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
                  predict_fn=lambda m, b: (torch.softmax(m(b[0]), -1), b[1]), metric_fn=metric_fn,
                  options=options, run=run, log=lambda _: None)
    assert seen == [torch.float32, torch.float32]  # dev metrics sum over the dev set: not in bfloat16
    assert len(history) == 2 and isinstance(history[-1]["train_loss"], float)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {t.dtype for t in load_file(run.file("checkpoint-best.safetensors")).values()} == {torch.float32}


def test_model_fit_bf16_true_history_loss_is_the_float32_mean_of_the_batch_losses() -> None:
    """The history's loss is the mean of the epoch's batch losses (equal batches: a plain mean; before:
    0.69140625, a bfloat16 sum's mean, for both epochs); the last val_loss and val_accuracy are those of
    the final weights on the validation data, recomputed in float64 from the model's predictions."""
    from rnnkit.layers import GRU, Dense, Embedding
    from rnnkit.models import Sequential
    from rnnkit.training.callbacks import Callback

    class BatchLosses(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[list[float]] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epochs.append([])

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.epochs[-1].append(float((logs or {})["loss"]))

    rng = np.random.default_rng(0)
    x = rng.integers(1, 30, size=(64, 10))
    y = (x[:, 0] > 15).astype("int64")
    torch.manual_seed(0)
    model = Sequential([Embedding(30, 8), GRU(16), Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    batches = BatchLosses()
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, precision="bf16-true", accelerator="cpu",
                        shuffle=False, validation_data=(x, y), callbacks=[batches]).history
    assert history["loss"] == pytest.approx([float(np.mean(e)) for e in batches.epochs], abs=1e-6)
    # the loss is computed from the logits in float32; predict's softmax is rounded to bfloat16 (2^-9 relative)
    p = model.predict(x, verbose=0).astype(np.float64)
    assert history["val_loss"][-1] == pytest.approx(-np.log(p[np.arange(len(y)), y]).mean(), abs=2 ** -9)
    assert history["val_accuracy"][-1] == pytest.approx(float((p.argmax(-1) == y).mean()), abs=1e-7)


def test_a_task_trained_from_python_passes_its_precision_to_the_engine(
        text_data: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task's ``train`` called from Python (no config.yaml written) hands ``cfg.train.precision`` to
    the engine: the engine's ``fit`` gets it in its options."""
    import rnnkit.tasks.engine as engine
    from rnnkit.tasks import text_classification
    from rnnkit.tasks.run import RunDir

    seen: list[str] = []

    def fit(*args: object, options: engine.EngineOptions, **kwargs: object) -> None:
        seen.append(options.precision)
        raise KeyboardInterrupt  # the options are all this test needs

    monkeypatch.setattr(engine, "fit", fit)
    _, train, dev = text_data
    config = load_config(text_classification.Config, None, ["train.precision=bf16", "model.hidden_size=8"])
    with pytest.raises(KeyboardInterrupt):
        text_classification.train(config, train, dev, RunDir(tmp_path / "run"), log=lambda _: None, progress=False)
    assert seen == ["bf16-mixed"]
