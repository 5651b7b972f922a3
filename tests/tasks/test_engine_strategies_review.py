"""The task engine's training strategies against a hand-written PyTorch loop: the same seed, data order,
optimizer and schedule end with the same weights (optimizers, clipping, learning-rate decay on plateau,
early stopping, weight averaging), plus the time budget on a fake clock, the warm-up batch limit, what
the history records, and one-line errors for bad settings."""

from __future__ import annotations

import math
import types

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rnnkit.tasks import engine
from rnnkit.tasks.engine import LAST_CHECKPOINT, EngineOptions, batch_limit, fit, stop_reason
from rnnkit.tasks.run import RunDir

X = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
Y = 3 * torch.randn(32, 1, generator=torch.Generator().manual_seed(2))  # large targets: gradient norms >> 0.1
SCORES = [1.0, 0.5, 0.4, 2.0, 1.0, 0.9, 0.8, 0.7]  # the scripted dev metric (higher is better)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _engine(scores, tmp_path=None, tick=None, **options):
    """The engine on fixed data (4 batches of 8 an epoch, in order) with a dev metric that follows
    ``scores``; ``tick(seconds)`` advances a fake clock per batch. Returns the model, history, the
    weights dev saw each epoch, and the log."""
    model = _net()
    seen: list[list[torch.Tensor]] = []
    logs: list[str] = []

    def loss_fn(m, batch):
        if tick:
            tick(1.0)
        return nn.functional.mse_loss(m(batch[0]), batch[1])

    def predict_fn(m, batch):
        if tick:
            tick(0.5)
        seen.append([p.detach().clone() for p in m.parameters()])
        return m(batch[0]), batch[1]

    settings = {"epochs": len(scores), "monitor": "score", "mode": "max", "patience": None, "progress": False,
                "accelerator": "cpu", "clip_norm": None, **options}
    run = RunDir.create(tmp_path, "test", "run") if tmp_path is not None else None
    history = fit(model, DataLoader(TensorDataset(X, Y), batch_size=8), DataLoader(TensorDataset(X, Y), batch_size=32),
                  loss_fn=loss_fn, predict_fn=predict_fn, metric_fn=lambda p, t: {"score": scores[len(seen) - 1]},
                  options=EngineOptions(**settings), run=run, log=logs.append)
    return model, history, seen, logs


def _reference(scores, optimizer="adam", learning_rate=1e-3, weight_decay=0.0, clip_norm=None, lr_decay=None,
               lr_decay_patience=1, patience=None, average_weights=False):
    """A plain torch loop with the documented rules: returns the best epoch's weights, the rate each
    epoch trained with, the 1-based best epoch, and the largest gradient norm seen."""
    model = _net()
    params = list(model.parameters())
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=learning_rate, momentum=0.9, weight_decay=weight_decay)
    elif optimizer == "asgd":
        opt = torch.optim.SGD(params, lr=learning_rate, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    else:
        opt = torch.optim.RMSprop(params, lr=learning_rate, weight_decay=weight_decay)
    averaging = average_weights or optimizer == "asgd"
    best, bad, best_weights, best_epoch, mean, steps, rates, top_norm = -math.inf, 0, None, 0, None, 0, [], 0.0
    for epoch, score in enumerate(scores, 1):
        rates.append(opt.param_groups[0]["lr"])
        for i in range(0, 32, 8):
            opt.zero_grad()
            nn.functional.mse_loss(model(X[i:i + 8]), Y[i:i + 8]).backward()
            norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))
            top_norm = max(top_norm, norm)
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(params, clip_norm)
            opt.step()
            if mean is not None:  # running mean of the iterates from the end of the first bad epoch on
                steps += 1
                for m, p in zip(mean, params):
                    m.add_((p.detach() - m) / steps)
        evaluated = [m.clone() for m in mean] if mean is not None else [p.detach().clone() for p in params]
        if score > best:
            best, bad, best_weights, best_epoch = score, 0, evaluated, epoch
        else:
            bad += 1
        if bad and averaging and mean is None:
            mean, steps = [p.detach().clone() for p in params], 1
        if bad and lr_decay is not None and bad % lr_decay_patience == 0:
            for group in opt.param_groups:
                group["lr"] *= lr_decay
        if patience is not None and bad >= patience:
            break
    return best_weights, rates, best_epoch, top_norm


CASES = {
    "sgd-momentum": {"optimizer": "sgd", "learning_rate": 0.05},
    "adam": {"optimizer": "adam", "learning_rate": 0.05},
    "adamw-weight-decay": {"optimizer": "adamw", "learning_rate": 0.05, "weight_decay": 0.1},
    "adam-l2": {"optimizer": "adam", "learning_rate": 0.05, "weight_decay": 0.1},
    "rmsprop": {"optimizer": "rmsprop", "learning_rate": 0.01},
    "sgd-clipped": {"optimizer": "sgd", "learning_rate": 0.05, "clip_norm": 0.1},
    "adam-clipped": {"optimizer": "adam", "learning_rate": 0.05, "clip_norm": 0.1},
    "lr-decay": {"optimizer": "sgd", "learning_rate": 0.05, "lr_decay": 0.5},
    "lr-decay-patience-2-early-stop-3": {"optimizer": "sgd", "learning_rate": 0.05, "lr_decay": 0.5,
                                         "lr_decay_patience": 2, "patience": 3},
    "early-stop-2": {"optimizer": "adam", "learning_rate": 0.05, "patience": 2},
    "asgd-lr-decay-early-stop": {"optimizer": "asgd", "learning_rate": 0.05, "patience": 3, "lr_decay": 0.5},
    "adam-averaged-clipped": {"optimizer": "adam", "learning_rate": 0.05, "average_weights": True, "clip_norm": 0.5},
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_strategy_ends_with_the_weights_of_a_hand_written_loop(name):
    options = CASES[name]
    model, history, seen, _ = _engine(SCORES, **options)
    expected, rates, best_epoch, top_norm = _reference(SCORES, **options)
    assert len(history) == len(rates)  # the same epoch ends the run
    assert [row["lr"] for row in history] == pytest.approx(rates, rel=1e-12)  # the rate each epoch trained with
    for got, want in zip(model.parameters(), expected):
        assert torch.allclose(got.detach(), want, atol=1e-6, rtol=0)
    for got, want in zip(seen[best_epoch - 1], expected):  # what dev saw in the best epoch is what is kept
        assert torch.allclose(got, want, atol=1e-6, rtol=0)
    if "clip_norm" in options:
        assert top_norm > 2 * options["clip_norm"]  # the clipping really acted


def test_clipping_changes_the_update():
    clipped, *_ = _engine(SCORES[:2], optimizer="sgd", learning_rate=0.05, clip_norm=0.1)
    free, *_ = _engine(SCORES[:2], optimizer="sgd", learning_rate=0.05)
    assert not torch.allclose(next(clipped.parameters()), next(free.parameters()), atol=1e-4)


def test_lr_decay_cuts_after_the_kth_bad_epoch_and_early_stopping_counts_the_same_epochs():
    # best at 1; bad 2, 3 (cut after 3), bad 4 -> early stop after 4 (patience 3): 3 epochs without improvement
    _, history, _, logs = _engine([1.0, 0.9, 0.8, 0.7, 5.0], optimizer="sgd", learning_rate=0.1, lr_decay=0.25,
                                  lr_decay_patience=2, patience=3)
    assert [row["lr"] for row in history] == pytest.approx([0.1, 0.1, 0.1, 0.025])
    assert len(history) == 4 and stop_reason() == "early"
    assert any("learning rate now 0.025" in m for m in logs)
    assert any("early stopping" in m for m in logs)
    # a cut due at the epoch early stopping ends the run is never trained with: the engine says so
    _, history, _, logs = _engine([1.0, 0.9, 0.8, 0.7, 5.0], optimizer="sgd", learning_rate=0.1, lr_decay=0.25,
                                  lr_decay_patience=3, patience=3)
    assert [row["lr"] for row in history] == pytest.approx([0.1] * 4)
    assert any("the rate is never lowered" in m for m in logs)


def test_early_stopping_stops_after_exactly_patience_bad_epochs_and_restores_the_best(tmp_path):
    model, history, seen, _ = _engine([1.0, 3.0, 2.0, 3.0, 2.5, 9.0], tmp_path, optimizer="adam",
                                      learning_rate=0.05, patience=3)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5]  # a tie (epoch 4) is no improvement
    assert stop_reason() == "early"
    for got, want in zip(model.parameters(), seen[1]):  # epoch 2, the first of the tied best epochs
        assert torch.equal(got.detach(), want)
    from safetensors.torch import load_file

    best = load_file(tmp_path / "run" / "checkpoint-best.safetensors")
    assert torch.equal(best["0.weight"], seen[1][0])


def test_a_run_that_trains_every_epoch_has_no_stop_reason():
    _, history, _, _ = _engine([1.0, 2.0, 1.5], patience=1)  # patience runs out at the last epoch
    assert len(history) == 3 and stop_reason() is None


def test_averaged_weights_are_the_mean_of_the_iterates_from_the_first_bad_epoch(tmp_path):
    # dev gets worse at epoch 2: averaging starts from the weights after epoch 2 (step 8) and takes in
    # each of epoch 3's steps; dev at epoch 3 sees that mean, and the best epoch (3) keeps it
    iterates: list[list[torch.Tensor]] = []
    update = engine.WeightAverage.update

    def record(self):
        iterates.append([p.detach().clone() for p in self.model.parameters()])
        update(self)

    mp = pytest.MonkeyPatch()
    mp.setattr(engine.WeightAverage, "update", record)
    try:
        model, _, seen, _ = _engine([1.0, 0.5, 2.0], optimizer="asgd", learning_rate=0.05)
    finally:
        mp.undo()
    # iterates[k] holds the weights after step k + 1; the mean covers steps 8 .. 12
    for index, got in enumerate(seen[2]):
        mean = torch.stack([it[index] for it in iterates[7:12]]).mean(0)
        assert torch.allclose(got, mean, atol=1e-6) and not torch.allclose(got, iterates[11][index])
    for got, want in zip(model.parameters(), seen[2]):
        assert torch.equal(got.detach(), want)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def tick(self, seconds: float) -> None:
        self.now += seconds

    def perf_counter(self) -> float:
        return self.now


@pytest.mark.parametrize(("budget", "epochs"), [(4.0, 1), (9.0, 2), (13.4, 2), (13.5, 3), (99.0, 5)])
def test_time_budget_stops_at_the_epoch_boundary_on_a_fake_clock(monkeypatch, budget, epochs):
    # each epoch takes 4.5 fake seconds (4 batches of 1 s, dev 0.5 s): after epoch k (at 4.5 k s) another
    # starts only if it would end within the budget; the first epoch always runs
    clock = _Clock()
    monkeypatch.setattr(engine, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    model, history, seen, logs = _engine([1.0, 0.5, 0.4, 0.3, 0.2], tick=clock.tick, max_seconds=budget)
    assert len(history) == epochs
    assert [row["seconds"] for row in history] == pytest.approx([4.5 * (k + 1) for k in range(epochs)])
    for got, want in zip(model.parameters(), seen[0]):  # the best epoch (1) is kept
        assert torch.equal(got.detach(), want)
    stopped = [m for m in logs if "time budget" in m]
    if epochs < 5:
        assert stop_reason() == "time" and len(stopped) == 1
        assert f"stopping after epoch {epochs}" in stopped[0] and "train.max_minutes" in stopped[0]
    else:
        assert stop_reason() is None and not stopped


def test_batch_limit_is_one_short_epoch_without_a_resume_checkpoint(tmp_path):
    calls = {"train": 0}
    model = _net()

    def loss_fn(m, batch):
        calls["train"] += 1
        return nn.functional.mse_loss(m(batch[0]), batch[1])

    run = RunDir.create(tmp_path, "test", "run")
    with batch_limit(2):
        history = fit(model, DataLoader(TensorDataset(X, Y), batch_size=8), DataLoader(TensorDataset(X, Y), batch_size=8),
                      loss_fn=loss_fn, predict_fn=lambda m, b: (m(b[0]), b[1]),
                      metric_fn=lambda p, t: {"score": float(len(p))},
                      options=EngineOptions(epochs=5, monitor="score", progress=False, accelerator="cpu"),
                      run=run, log=lambda _: None)
    assert calls["train"] == 2 and len(history) == 1 and history[0]["dev_score"] == 16.0  # 2 dev batches of 8
    assert not run.file(LAST_CHECKPOINT).exists()


@pytest.mark.parametrize(("options", "message"), [
    ({"patience": 0}, r"^train\.patience must be a whole number >= 1 \(or null to never stop early\), got 0"),
    ({"patience": -2}, r"^train\.patience must be a whole number >= 1"),
    ({"clip_norm": 0.0}, r"^train\.clip_norm must be > 0 \(or null for no clipping\), got 0\.0$"),
    ({"clip_norm": -1.0}, r"^train\.clip_norm must be > 0"),
    ({"optimizer": "adagrad"}, r"^train\.optimizer: unknown optimizer 'adagrad'; choose one of adam, adamw, sgd"),
    ({"max_seconds": 0.0}, r"^train\.max_minutes must be > 0 \(or null for no time budget\), got 0$"),
    ({"lr_decay": 0.0}, r"^train\.lr_decay must be in \(0, 1\], got 0\.0; 0\.25 divides"),
    ({"lr_decay": 1.5}, r"^train\.lr_decay must be in \(0, 1\]"),
    ({"lr_decay": 0.5, "lr_decay_patience": 0}, r"^train\.lr_decay_patience must be a whole number >= 1"),
    ({"learning_rate": 0.0}, r"^train\.learning_rate must be a number > 0"),
    ({"weight_decay": -0.1}, r"^train\.weight_decay must be >= 0"),
    ({"mode": "maximize"}, r"^mode must be 'max' \(higher is better\) or 'min'"),
    ({"tie_break": "score", "tie_break_mode": "lowest"}, r"^tie_break_mode must be 'max'"),
    ({"monitor": "accuracy"}, r"^the dev metrics have no 'accuracy' to select epochs by \(they are: score\)"),
    ({"tie_break": "cer"}, r"^the dev metrics have no 'cer'"),
])
def test_bad_settings_are_one_line_errors_that_name_the_fix(options, message):
    with pytest.raises(ValueError, match=message) as err:
        _engine([1.0, 2.0], **options)
    assert "\n" not in str(err.value)


def test_metrics_json_says_why_a_task_run_stopped(tmp_path):
    """Each task writes stop_reason() into metrics.json: "early", "time" or null (every epoch ran)."""
    import json

    import numpy as np
    from typer.testing import CliRunner

    from rnnkit.cli import app
    from rnnkit.datasets import load_digits

    images, labels = load_digits()
    data = tmp_path / "digits.npz"
    np.savez(data, x=images[:200], y=labels[:200])
    base = ["train", "image-classification", "--train", str(data), "--out", str(tmp_path), "--quiet",
            "--set", "model.hidden_size=8"]
    runner = CliRunner()
    assert runner.invoke(app, [*base, "--name", "all", "--set", "train.epochs=2"]).exit_code == 0
    # a learning rate too small to move the dev score: epoch 2 ties epoch 1, a tie is no improvement
    result = runner.invoke(app, [*base, "--name", "early", "--set", "train.epochs=4", "--set", "train.patience=1",
                                 "--set", "train.learning_rate=1e-12"])
    assert result.exit_code == 0, result.output
    finished = json.loads((tmp_path / "all" / "metrics.json").read_text())
    stopped = json.loads((tmp_path / "early" / "metrics.json").read_text())
    assert finished["stopped"] is None and finished["epochs_run"] == 2
    assert stopped["stopped"] == "early" and stopped["epochs_run"] == 2
