"""Memory-task generators (stated statistics), the budgeted training and ``rnnkit bench memory``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.insight.memory import (
    MemoryBenchmark,
    MemoryModel,
    MemoryResult,
    adding_problem,
    copy_memory,
    make_task,
    run_memory_benchmark,
    selective_copy,
    split_budget,
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


@pytest.mark.parametrize(("budget", "evaluations"), [(7, 5), (12, 5), (10, 3), (3, 5)])
def test_budget_is_spent_exactly(budget, evaluations):
    result = train_memory_task(make_task("adding"), "gru", 6, budget_steps=budget, batch_size=4, hidden_size=4,
                               evaluations=evaluations, dev_size=8)
    assert result.steps == budget and len(result.history) == min(budget, evaluations)
    assert split_budget(12, 5) == [3, 3, 2, 2, 2] and sum(split_budget(7, 5)) == 7


def _bench(rates: dict[str, list[int]], lengths: list[int], seeds: int = 2) -> MemoryBenchmark:
    """A benchmark whose cell succeeds on ``rates[cell][k]`` of ``seeds`` seeds at ``lengths[k]``."""
    task = make_task("adding")
    results = [MemoryResult("adding", cell, t, seed, "mse", 0.0, task.baseline, seed < wins, 10, 1.0)
               for cell, per_length in rates.items() for t, wins in zip(lengths, per_length) for seed in range(seeds)]
    settings = {"cells": list(rates), "lengths": lengths, "budget_steps": 10, "seeds": seeds, "batch_size": 4,
                "hidden_size": 4, "learning_rate": 0.01, "clip_norm": 1.0, "success_rate": 0.5}
    return MemoryBenchmark(task, results, settings)


def test_where_each_cell_stops_learning(tmp_path):
    bench = _bench({"rnn": [2, 0, 0, 0], "lstm": [2, 2, 1, 0], "gru": [2, 2, 2, 2], "mingru": [0, 0, 0, 0]},
                   [25, 50, 100, 200])
    limits = {row["cell"]: row for row in bench.limits()}
    assert limits["rnn"] == {"cell": "rnn", "longest_learned": 25, "first_failed": 50}
    assert limits["lstm"] == {"cell": "lstm", "longest_learned": 100, "first_failed": 200}  # 1 of 2 = 0.5 counts
    assert limits["gru"]["longest_learned"] == 200 and limits["gru"]["first_failed"] is None
    assert limits["mingru"]["longest_learned"] is None and limits["mingru"]["first_failed"] == 25
    text = bench.markdown()
    assert "Where each cell stops learning" in text and "| lstm | 100 | 200 |" in text
    assert "| gru | 200 | none (learns up to T=200, the longest tried) |" in text
    assert "| mingru | none (fails from T=25) | 25 |" in text
    assert bench.to_json()["limits"] == bench.limits()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    real = plt.subplots

    def spy(*a, **k):  # type: ignore[no-untyped-def]
        figures.append(real(*a, **k))
        return figures[-1]

    import unittest.mock

    with unittest.mock.patch.object(plt, "subplots", spy):
        bench.plot(tmp_path / "m.png")
    labels = [t.get_text() for t in figures[0][1].get_legend().get_texts()]
    assert "rnn: learns to T=25, fails from T=50" in labels and any("rate >= 0.5" in t for t in labels)


def test_bench_memory_input_checks(tmp_path):
    base = ["bench", "memory", "--task", "adding", "--budget-steps", "2", "--out", str(tmp_path)]
    bad = runner.invoke(app, [*base, "--cell", ""])
    assert bad.exit_code == 2 and "give at least one cell" in bad.output
    bad = runner.invoke(app, [*base, "--length", "10,10"])
    assert bad.exit_code == 2 and "--length names T=10 twice" in bad.output
    bad = runner.invoke(app, [*base, "--cell", "gru,GRU"])
    assert bad.exit_code == 2 and "--cell names 'GRU' twice" in bad.output
    bad = runner.invoke(app, [*base, "--clip-norm", "-1"])
    assert bad.exit_code == 2 and "--clip-norm must be a norm >= 0" in bad.output
    bad = runner.invoke(app, [*base, "--success-rate", "0"])
    assert bad.exit_code == 2 and "--success-rate must be in (0, 1]" in bad.output
    assert not list(tmp_path.iterdir())  # nothing ran
    with pytest.raises(ValueError, match=">= 0"):
        train_memory_task(make_task("adding"), "gru", 6, budget_steps=1, clip_norm=-1.0)
