"""Memory-task generators (stated statistics), the budgeted training and ``rnnkit bench memory``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.insight.memory import (
    MemoryModel,
    adding_problem,
    copy_memory,
    make_task,
    run_memory_benchmark,
    selective_copy,
    task_metric,
    train_memory_task,
)

runner = CliRunner()


def test_adding_problem_marks_one_step_in_each_half_and_sums_them():
    x, y = adding_problem(500, 20, torch.Generator().manual_seed(1))
    assert x.shape == (500, 20, 2) and y.shape == (500,)
    markers = x[..., 1]
    assert torch.all(markers.sum(1) == 2)
    assert torch.all(markers[:, :10].sum(1) == 1) and torch.all(markers[:, 10:].sum(1) == 1)
    assert torch.allclose((x[..., 0] * markers).sum(1), y)
    assert x[..., 0].min() >= 0 and x[..., 0].max() <= 1


def test_adding_baseline_is_one_sixth():
    x, y = adding_problem(200_000, 10, torch.Generator().manual_seed(2))
    baseline = float(((y - 1.0) ** 2).mean())  # always answer 1
    assert abs(baseline - 1 / 6) < 0.003
    task = make_task("adding")
    assert task.baseline == pytest.approx(1 / 6) and task.threshold == pytest.approx(1 / 60)
    assert task.success(0.01) and not task.success(0.05) and not task.success(math.nan)


def test_copy_memory_layout():
    x, y = copy_memory(64, 30, symbols=8, memorize=10, generator=torch.Generator().manual_seed(3))
    assert x.shape == (64, 30, 10) and y.shape == (64, 30)
    tokens = x.argmax(-1)
    assert torch.all(x.sum(-1) == 1)  # one-hot
    data = tokens[:, :10]
    assert data.min() >= 1 and data.max() <= 8
    assert torch.all(tokens[:, 10:19] == 0) and torch.all(tokens[:, 19] == 9) and torch.all(tokens[:, 20:] == 0)
    assert torch.equal(y[:, 20:], data) and torch.all(y[:, :20] == 0)


def test_selective_copy_recalls_the_scattered_symbols_in_order():
    x, y = selective_copy(64, 40, symbols=6, memorize=5, generator=torch.Generator().manual_seed(4))
    tokens = x.argmax(-1)
    assert torch.all(tokens[:, 34] == 7)  # delimiter at T - K - 1
    for row in range(64):
        scattered = tokens[row, :34][tokens[row, :34] > 0]
        assert len(scattered) == 5
        assert torch.equal(scattered, y[row, 35:])
    positions = (tokens[:, :34] > 0).float().argmax(1)
    assert len(set(positions.tolist())) > 5  # positions vary between sequences


def test_copy_chance_accuracy_is_one_over_symbols():
    task = make_task("copy", symbols=8, memorize=10)
    x, y = task.generate(4000, 25, torch.Generator().manual_seed(5))
    guess = torch.randn(4000, 25, 9)
    guess[..., 0] = -1e9  # never blank: uniform over the 8 symbols at best
    assert abs(task_metric(task, guess, y) - 1 / 8) < 0.02
    perfect = torch.nn.functional.one_hot(y, 9).float()
    assert task_metric(task, perfect, y) == 1.0


@pytest.mark.parametrize(("name", "length", "needed"), [("adding", 3, 4), ("copy", 20, 21), ("selective-copy", 5, 21)])
def test_too_short_lengths_are_clear_errors(name, length, needed):
    with pytest.raises(ValueError, match=f"length {length} is too short for the {name} task: it needs at least {needed}"):
        make_task(name).generate(2, length)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="adding, copy, selective-copy"):
        make_task("reverse")
    with pytest.raises(ValueError, match="choose from .*gru.*lstm.*rnn"):
        run_memory_benchmark("adding", [10], ["transformer"], budget_steps=1)


def test_memory_model_shapes():
    for name, shape in (("adding", (3,)), ("copy", (3, 25, 9))):
        task = make_task(name)
        x, _ = task.generate(3, 25)
        assert MemoryModel(task, "gru", 8)(x).shape == shape


def test_budgeted_training_learns_a_short_adding_problem():
    result = train_memory_task(make_task("adding"), "lstm", 6, budget_steps=300, batch_size=64, hidden_size=16,
                               learning_rate=1e-2, evaluations=3, dev_size=256)
    assert result.steps == 300 and len(result.history) == 3
    assert result.value < 1 / 6  # beats the constant answer at T=6 within 300 steps
    assert result.success == (result.value < 1 / 60)


def test_bench_memory_cli_writes_table_and_plot(tmp_path):
    out = tmp_path / "bench"
    result = runner.invoke(app, ["bench", "memory", "--task", "copy", "--length", "9,12", "--cell", "rnn,gru",
                                 "--budget-steps", "4", "--memorize", "2", "--hidden-size", "8",
                                 "--batch-size", "8", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "| rnn | 9 |" in result.output and "| gru | 12 |" in result.output
    data = json.loads((out / "memory.json").read_text())
    assert len(data["runs"]) == 4 and {r["cell"] for r in data["summary"]} == {"rnn", "gru"}
    assert (out / "memory.png").stat().st_size > 1000
    bad = runner.invoke(app, ["bench", "memory", "--task", "copy", "--length", "5", "--budget-steps", "2"])
    assert bad.exit_code == 2 and "too short for the copy task" in bad.output
    bad = runner.invoke(app, ["bench", "memory", "--task", "sort", "--length", "50"])
    assert bad.exit_code == 2 and "adding, copy, selective-copy" in bad.output
