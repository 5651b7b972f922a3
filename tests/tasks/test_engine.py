"""The shared training engine: learning-rate decay on plateau, averaged SGD, the history file."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rnnkit.tasks.engine import EngineOptions, WeightAverage, fit, history_csv
from rnnkit.tasks.run import RunDir


def test_weight_average_is_the_running_mean_and_swaps_back():
    model = nn.Linear(3, 2)
    snapshots = []
    average = WeightAverage(model)
    average.start()
    snapshots.append(model.weight.detach().clone())
    for _ in range(4):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        average.update()
        snapshots.append(model.weight.detach().clone())
    live = model.weight.detach().clone()
    average.swap_in()
    assert torch.allclose(model.weight, torch.stack(snapshots).mean(0), atol=1e-6)
    average.swap_out()
    assert torch.equal(model.weight, live)


def _fit(tmp_path, scores, ties=None, **options):
    """Train a linear model with a dev 'metric' that follows ``scores`` (and a 'tie' metric ``ties``)
    and record what dev saw."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    seen, trained = [], []

    def loss_fn(mdl, batch):  # 4 batches an epoch; records the weights after each earlier step
        trained.append(mdl.weight.detach().clone())
        x, y = batch
        return nn.functional.mse_loss(mdl(x), y)

    def predict_fn(mdl, batch):  # one dev batch, so one call per epoch
        seen.append(mdl.weight.detach().clone())
        return torch.zeros(1), torch.zeros(1)

    def metric_fn(preds, targets):
        return {"score": scores[len(seen) - 1], **({"tie": ties[len(seen) - 1]} if ties else {})}

    run = RunDir.create(tmp_path, "test", "run")
    history = fit(model, DataLoader(data, batch_size=8), DataLoader(data, batch_size=32), loss_fn=loss_fn,
                  predict_fn=predict_fn, metric_fn=metric_fn,
                  options=EngineOptions(epochs=len(scores), monitor="score", mode="max", patience=None,
                                        progress=False, **options), run=run, log=lambda _: None)
    return model, history, seen, trained, run


def test_lr_decay_divides_the_rate_after_each_epoch_without_improvement(tmp_path):
    _, history, _, _, run = _fit(tmp_path, [1.0, 0.5, 0.4, 2.0, 3.0], optimizer="sgd", learning_rate=0.1, lr_decay=0.5)
    assert [h["lr"] for h in history] == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.025])
    with open(run.file("history.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5] and "dev_score" in rows[0]


def test_lr_decay_patience_cuts_only_after_that_many_epochs_in_a_row_without_improvement(tmp_path):
    # scores: best at 1, then 4 bad epochs (cut after the 2nd and the 4th), a new best, 1 bad epoch (no cut)
    scores = [1.0, 0.5, 0.4, 0.9, 0.8, 2.0, 1.5, 1.9]
    _, history, _, _, _ = _fit(tmp_path, scores, optimizer="sgd", learning_rate=0.1, lr_decay=0.5,
                               lr_decay_patience=2)
    # history's lr is the rate the epoch trained with; a cut after epoch k shows from epoch k+1
    assert [h["lr"] for h in history] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.025])
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="lr_decay_patience must be a whole number >= 1"):
            _fit(tmp_path / "bad", [1.0], lr_decay=0.5, lr_decay_patience=bad)


@pytest.mark.parametrize("options", [{"optimizer": "asgd"}, {"optimizer": "adam", "average_weights": True}])
def test_averaging_starts_at_the_first_bad_epoch_and_keeps_the_best_average(tmp_path, options):
    model, history, seen, trained, _ = _fit(tmp_path, [1.0, 0.5, 2.0, 3.0, 2.5], learning_rate=0.05, **options)
    # trained[k] holds the weights after k optimizer steps; epochs are 4 steps
    assert torch.equal(seen[1], trained[8])  # epoch 2: dev saw the live weights
    # epoch 3: the mean of the weights when averaging started (after step 8) and after steps 9-12
    assert torch.allclose(seen[2], torch.stack(trained[8:13]).mean(0), atol=1e-6)
    assert not torch.allclose(seen[2], trained[12])
    # the best dev epoch was 4, so the model ends with the weights dev saw then: the average
    assert torch.equal(model.weight.detach(), seen[3])
    assert len(history) == 5


def test_adam_without_average_weights_evaluates_the_live_weights(tmp_path):
    _, _, seen, trained, _ = _fit(tmp_path, [1.0, 0.5, 2.0, 3.0], optimizer="adam", learning_rate=0.05)
    assert torch.equal(seen[2], trained[12])


def test_a_tie_on_the_monitored_metric_is_broken_by_the_second_metric(tmp_path):
    # score ties at epochs 2 and 3 (WER on a small dev set, say); the tie metric (CER, lower is better)
    # prefers epoch 3; epoch 4 ties on both and counts as no improvement
    model, _, seen, _, _ = _fit(tmp_path, [1.0, 2.0, 2.0, 2.0, 1.5], ties=[0.5, 0.4, 0.3, 0.3, 0.1],
                                tie_break="tie", tie_break_mode="min")
    assert torch.equal(model.weight.detach(), seen[2])  # epoch 3's weights
    model, _, seen, _, _ = _fit(tmp_path / "plain", [1.0, 2.0, 2.0, 2.0], ties=[0.5, 0.4, 0.3, 0.2])
    assert torch.equal(model.weight.detach(), seen[1])  # without a tie-breaker the first of the tied epochs


def test_lr_decay_out_of_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match="lr_decay"):
        _fit(tmp_path, [1.0], lr_decay=1.5)


def test_history_csv_columns_follow_the_first_row():
    assert history_csv([]) == ""
    text = history_csv([{"epoch": 1, "dev_f1": 0.5}, {"epoch": 2, "dev_f1": 0.75}])
    assert text.splitlines() == ["epoch,dev_f1", "1,0.5", "2,0.75"]


def test_time_budget_stops_before_an_epoch_that_would_end_past_it(tmp_path):
    messages = []
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    history = fit(model, DataLoader(data, batch_size=8), DataLoader(data, batch_size=32),
                  loss_fn=lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]),
                  predict_fn=lambda m, b: (m(b[0]).squeeze(1), b[1].squeeze(1)),
                  metric_fn=lambda p, t: {"score": -float(((p - t) ** 2).mean())},
                  options=EngineOptions(epochs=50, monitor="score", patience=None, progress=False,
                                        max_seconds=1e-9), log=messages.append)
    assert len(history) == 1  # any real epoch outlasts a nanosecond budget
    assert any("time budget" in m and "train.max_minutes" in m for m in messages)


def test_time_budget_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_minutes must be > 0"):
        _fit(tmp_path, [1.0], max_seconds=0.0)


def test_progress_bar_counts_epochs_from_one_like_the_log():
    from types import SimpleNamespace

    from rnnkit.tasks.engine import progress_bar

    bar = progress_bar()
    if not hasattr(bar, "_get_train_description"):
        pytest.skip("rich is not installed: Lightning's tqdm bar")
    bar._trainer = SimpleNamespace(max_epochs=5)
    assert bar._get_train_description(4).strip() == "Epoch 5/5"  # the 5th of 5; Lightning's own bar: "Epoch 4/4"


def test_run_folder_names_are_never_reused(tmp_path):
    from rnnkit.tasks.run import RunError

    first = RunDir.create(tmp_path, "task")
    assert first.path.name == "task-1" and RunDir.create(tmp_path, "task").path.name == "task-2"
    with pytest.raises(RunError, match="already exists; choose another --name"):
        RunDir.create(tmp_path, "task", "task-1", exist_ok=False)
    assert RunDir.create(tmp_path, "task", "task-1").path == first.path  # the Python API may reuse one
    (tmp_path / "file").write_text("")
    with pytest.raises(RunError, match="is a file, not a folder"):
        RunDir.create(tmp_path / "file", "task")


def test_run_files_get_the_usual_permissions(tmp_path):
    """mkstemp makes 0o600 files; an atomically written run file must be readable like any other file."""
    import os
    import stat

    from rnnkit.runtime import new_file_mode
    from rnnkit.tasks.run import atomic_write_bytes

    target = tmp_path / "model.json"
    atomic_write_bytes(target, b"{}")
    assert stat.S_IMODE(os.stat(target).st_mode) == new_file_mode()
    (tmp_path / "plain.txt").write_text("x")
    assert stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode) == new_file_mode()


def test_markdown_tables_escape_pipes_inside_cells():
    from rnnkit.tasks.report import markdown_table

    table = markdown_table(["class", "f1"], [["a|b", 0.5]]).splitlines()
    assert table == ["| class | f1 |", "|---|---|", r"| a\|b | 0.5000 |"]
