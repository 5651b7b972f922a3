"""Review of rnnkit.insight: independent checks of the numbers, and regressions for the defects found.

Everything runs on tiny models (a handful of units, a few steps) in a few seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import rnnkit.nn as rnn
from rnnkit.cli import app
from rnnkit.insight import compare as compare_module
from rnnkit.insight import gradients as g
from rnnkit.insight import memory as memory_module
from rnnkit.insight.memory import (
    MemoryBenchmark,
    MemoryResult,
    adding_problem,
    copy_memory,
    make_task,
    task_loss,
)

runner = CliRunner()


def _strict(text: str) -> object:
    """``json.loads`` that refuses the ``NaN``/``Infinity`` tokens JSON does not have."""

    def refuse(token: str) -> object:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


# -- independent checks of the numbers (these pass: they document what was verified) ------------
def _elman(scale: float, hidden: int = 6) -> rnn.RNN:
    torch.manual_seed(0)
    layer = rnn.RNN(2, hidden, batch_first=True)
    g.scale_recurrent_weights(layer, scale, 0)
    with torch.no_grad():  # keep tanh in its linear range: the gradient is then (W_hh^T)^k
        layer.weight_ih_l0.mul_(0.01)
        layer.bias_ih_l0.zero_()
        layer.bias_hh_l0.zero_()
    return layer


def test_elman_gradients_decay_with_small_and_grow_with_large_recurrent_weights():
    x = torch.randn(3, 15, 2, generator=torch.Generator().manual_seed(0))
    small = g.gradient_diagnostics(_elman(0.5), x)
    large = g.gradient_diagnostics(_elman(1.5), x)
    assert all(a < b for a, b in zip(small.grad_norms, small.grad_norms[1:]))  # vanishing back in time
    assert all(a > b for a, b in zip(large.grad_norms, large.grad_norms[1:]))  # exploding back in time
    # all singular values of W_hh = scale, tanh' ~ 1: ||dh_14/dh_0|| ~ scale^14
    assert small.jacobian_product_norm[0] == pytest.approx(0.5**14, rel=0.01)
    assert large.jacobian_product_norm[0] == pytest.approx(1.5**14, rel=0.2)
    assert small.horizon == 10 and large.horizon is None  # 0.5^10 < 1e-3 <= 0.5^9


def test_gru_gradient_norms_match_autograd_on_a_plain_loop():
    torch.manual_seed(2)
    layer = rnn.GRU(3, 4, batch_first=True)
    x = torch.randn(2, 7, 3)
    report = g.gradient_diagnostics(layer, x)
    cell = layer.cell(0)
    state = cell.initial_state(2)
    hs = []
    for t in range(7):
        _, state = cell(x[:, t], state)
        state[0].retain_grad()
        hs.append(state[0])
    hs[-1].sum().backward()
    expected = [float(h.grad.norm(dim=-1).mean()) for h in hs]
    assert report.grad_norms == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_jacobian_products_match_autograd_functional_jacobian():
    torch.manual_seed(3)
    layer = rnn.LSTM(2, 3, batch_first=True)
    x = torch.randn(2, 6, 2)
    report = g.gradient_diagnostics(layer, x, jacobian_samples=2)
    cell = layer.cell(0)

    def states_after(xb: torch.Tensor, t: int) -> torch.Tensor:
        state = cell.initial_state(1)
        for k in range(t + 1):
            _, state = cell(xb[:, k], state)
        return torch.cat([state[0][0], state[1][0]]).detach()

    def run_from(t: int, flat: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        state = (flat[:3].unsqueeze(0), flat[3:].unsqueeze(0))
        for k in range(t + 1, 6):
            _, state = cell(xb[:, k], state)
        return torch.cat([state[0][0], state[1][0]])

    for t in range(6):
        norms = []
        for b in range(2):
            xb = x[b:b + 1]
            jac = torch.autograd.functional.jacobian(lambda s, t=t, xb=xb: run_from(t, s, xb), states_after(xb, t))
            norms.append(float(torch.linalg.matrix_norm(jac, 2)))
        assert report.jacobian_product_norm[t] == pytest.approx(sum(norms) / 2, rel=1e-4)
        assert report.jacobian_product_norm[t] <= 10 ** report.jacobian_product_log10[t] * (1 + 1e-6)


def test_saturation_matches_a_direct_count_of_the_layers_own_gates():
    torch.manual_seed(4)
    layer = rnn.LSTM(3, 4, batch_first=True, num_layers=2, bidirectional=True)
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(3)
    x = torch.randn(2, 7, 3)
    report = g.gradient_diagnostics(layer, x)
    _, _, gates = layer(x, return_gates=True)
    for key, per_gate in gates.items():
        for name, v in per_gate.items():
            if name == "cell":
                assert name not in report.saturation[key]
                continue
            sigmoid = name in ("input", "forget", "output")
            direct = float(((v < 0.05) | (v > 0.95)).float().mean() if sigmoid else (v.abs() > 0.95).float().mean())
            assert report.saturation[key][name] == pytest.approx(direct)


def test_memory_tasks_match_their_published_definitions_and_baselines():
    gen = torch.Generator().manual_seed(0)
    x, y = adding_problem(20_000, 9, gen)
    assert ((x[..., 0] >= 0) & (x[..., 0] < 1)).all()
    markers = x[..., 1]
    assert (markers.sum(1) == 2).all()
    assert (markers[:, :4].sum(1) == 1).all() and (markers[:, 4:].sum(1) == 1).all()  # one in each half
    assert torch.allclose((x[..., 0] * markers).sum(1), y)
    assert float(F.mse_loss(torch.ones_like(y), y)) == pytest.approx(1 / 6, abs=0.005)  # MSE 0.167 for "1"
    # copy (Arjovsky et al. 2016): K=10 symbols of 8, blanks, a delimiter K+1 steps from the end, recall
    length, k = 30, 10
    task = make_task("copy")
    x, y = copy_memory(4000, length, generator=gen)
    tokens = x.argmax(-1)
    assert ((tokens[:, :k] >= 1) & (tokens[:, :k] <= 8)).all()
    assert (tokens[:, k:length - k - 1] == 0).all() and (tokens[:, length - k - 1] == 9).all()
    assert (tokens[:, length - k:] == 0).all()
    assert (y[:, :length - k] == 0).all() and torch.equal(y[:, length - k:], tokens[:, :k])
    # the memoryless strategy: blank with certainty, then uniform over the 8 symbols on the recalled
    # steps: cross-entropy K log(8) / T (the published baseline 10 log 8 / (T_gap + 20)), accuracy 1/8
    logits = torch.full((4000, length, 9), -1e4)
    logits[:, :length - k, 0] = 0.0
    logits[:, length - k:, 1:] = 0.0
    assert float(task_loss(task, logits, y)) == pytest.approx(k * math.log(8) / length, rel=1e-4)
    assert task.baseline == pytest.approx(1 / 8)


# -- defects -------------------------------------------------------------------------------------
def test_report_json_is_strict_json():
    """Defect: jacobian_step_norms[0] is always nan, and to_json only cleaned top-level floats, so
    every diagnose.json held the token NaN, which is not JSON."""
    report = g.gradient_diagnostics(rnn.GRU(2, 3, batch_first=True), torch.randn(2, 5, 2))
    payload = _strict(json.dumps(report.to_json()))
    assert payload["jacobian_step_norms"][0] == "nan"  # type: ignore[index]
    assert g.json_safe({"a": [1.0, math.inf, (math.nan,)]}) == {"a": [1.0, "inf", ["nan"]]}


def test_diagnose_cli_writes_strict_json(tmp_path: Path):
    out = tmp_path / "d"
    result = runner.invoke(app, ["diagnose", "--fresh", "--cell", "rnn", "--length", "6", "--hidden-size", "3",
                                 "--samples", "2", "--exploding-scale", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    _strict((out / "diagnose.json").read_text())


def test_memory_benchmark_json_is_strict_when_a_run_diverged():
    """Defect: a diverged run's value nan reached memory.json as NaN."""
    task = make_task("adding")
    runs = [MemoryResult("adding", "rnn", 8, 0, "mse", math.nan, task.baseline, False, 3, 0.1, [math.nan]),
            MemoryResult("adding", "lstm", 8, 0, "mse", 0.5, task.baseline, False, 3, 0.1, [0.5])]
    bench = MemoryBenchmark(task, runs, {"cells": ["rnn", "lstm"], "lengths": [8], "budget_steps": 3, "seeds": 1,
                                         "batch_size": 2, "hidden_size": 2, "learning_rate": 1e-3, "clip_norm": None,
                                         "success_rate": 0.5, "lstm_forget_bias": None})
    payload = _strict(json.dumps(bench.to_json()))
    assert payload["runs"][0]["value"] == "nan"  # type: ignore[index]


def test_compare_json_is_strict_when_a_quality_is_not_finite():
    """Defect: ``rnnkit compare --json`` printed to_json() as is (compare.json alone was cleaned)."""
    runs = [compare_module.CellRun("rnn", 0, "r", math.nan, 1.0, 10, 1.0),
            compare_module.CellRun("gru", 0, "g", 0.7, 1.0, 10, 1.0)]
    result = compare_module.CompareResult("text-classification", "accuracy", True, runs, ["rnn", "gru"], "RSS")
    payload = _strict(json.dumps(result.to_json()))
    assert payload["recommended"] == "gru"  # type: ignore[index]


def test_bench_warms_every_cell_up_before_the_timed_runs(monkeypatch: pytest.MonkeyPatch):
    """Defect: the first (cell, T) run paid the process's start-up (1.8 s against 0.01 s for the
    same run later), so 'seconds per run' made whichever cell came first look slow."""
    calls: list[tuple[str, int]] = []
    real = memory_module.train_memory_task

    def spy(task, cell, length, **kw):  # type: ignore[no-untyped-def]
        calls.append((cell, kw["budget_steps"]))
        return real(task, cell, length, **kw)

    monkeypatch.setattr(memory_module, "train_memory_task", spy)
    bench = memory_module.run_memory_benchmark("adding", [6, 8], ["gru", "rnn"], budget_steps=2, batch_size=2,
                                               hidden_size=2, log=lambda _: None)
    assert calls[:2] == [("gru", 1), ("rnn", 1)]  # untimed warm-ups first
    assert [c for c, _ in calls[2:]] == ["gru", "rnn", "gru", "rnn"]
    assert len(bench.results) == 4 and all(r.steps == 2 for r in bench.results)  # warm-ups are not results


@pytest.mark.parametrize("kw", [{"jacobian_samples": 0}, {"jacobian_samples": -1}, {"threshold": 0.0},
                                {"threshold": math.nan}])
def test_bad_jacobian_samples_and_thresholds_are_clear_errors(kw: dict[str, float]):
    """Defect: jacobian_samples=0 raised ZeroDivisionError, -1 a RuntimeError about a negative
    dimension; a threshold <= 0 or nan silently gave 'no horizon' (shown as long memory)."""
    name = next(iter(kw))
    with pytest.raises(ValueError, match=name):
        g.gradient_diagnostics(rnn.GRU(2, 3, batch_first=True), torch.randn(2, 5, 2), **kw)


def test_an_empty_sequence_is_a_clear_error():
    """Defect: T = 0 crashed inside the traced scan ('stack expects a non-empty TensorList')."""
    layer = rnn.GRU(2, 3, batch_first=True)
    assert layer(torch.randn(2, 0, 2))[0].shape == (2, 0, 3)  # the layer itself accepts it
    with pytest.raises(ValueError, match="T = 0"):
        g.gradient_diagnostics(layer, torch.randn(2, 0, 2))


def test_diagnose_run_refuses_a_batch_of_no_samples(tmp_path: Path):
    """Defect: samples=0 raised IndexError deep in the task, and samples=-3 silently dropped the
    last three examples (a slice [:-3])."""
    data = tmp_path / "d.csv"
    data.write_text("text,label\na b,x\n")
    for samples in (0, -3):
        with pytest.raises(ValueError, match="samples"):
            g.diagnose_run(tmp_path / "run", data, samples=samples)
        with pytest.raises(ValueError, match="samples"):
            g.diagnose_runs([tmp_path / "run"], data, samples=samples)
    with pytest.raises(ValueError, match="jacobian_samples"):
        g.diagnose_run(tmp_path / "run", data, jacobian_samples=0)


def test_unmeasured_jacobians_are_not_reported_as_numbers():
    """Defect: with jacobians=False the report said ||ds_T-1/ds_0|| = 1 and log10 prod = 0.00."""
    report = g.gradient_diagnostics(rnn.RNN(2, 3, batch_first=True), torch.randn(2, 5, 2), jacobians=False,
                                    label="rnn")
    assert all(math.isnan(v) for v in report.jacobian_product_norm + report.jacobian_product_log10)
    row = next(line for line in g.diagnostics_markdown([report]).splitlines() if line.startswith("| rnn "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[7] == "n/a" and cells[8] == "n/a"


def test_each_submodules_train_mode_is_restored():
    """Defect: model.train(was_training) afterwards put a submodule the user had frozen in eval
    mode (dropout, batch norm) back into training mode."""
    model = torch.nn.Sequential()
    model.add_module("drop", torch.nn.Dropout(0.5))
    model.add_module("rec", rnn.GRU(2, 3, batch_first=True))
    model.train()
    model.drop.eval()

    def loss_fn(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.rec(m.drop(x))[0][:, -1].sum()

    g.gradient_diagnostics(model, torch.randn(2, 4, 2), loss_fn=loss_fn)
    assert model.training and model.rec.training and not model.drop.training


def test_cli_diagnose_and_bench_refuse_an_out_file_and_an_empty_csv_before_any_work(tmp_path):
    """Found by the insight review, fixed in cli.py and text_classification.py: --out naming an existing
    file raised FileExistsError after the work (bench: after all the training); a header-only CSV for
    diagnose RUN --data crashed with IndexError."""
    from typer.testing import CliRunner

    from rnnkit.cli import app

    runner = CliRunner()
    taken = tmp_path / "taken"
    taken.write_text("x")
    for args in (["bench", "memory", "--length", "5", "--budget-steps", "1", "--cells", "rnn"],
                 ["diagnose", "--fresh", "--cells", "rnn", "--length", "5", "--hidden-size", "4"]):
        result = runner.invoke(app, [*args, "--out", str(taken)])
        assert result.exit_code == 2, result.output
        assert f"--out {taken} is a file, not a folder" in result.output
    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"{w} good,{i % 2}\n" for i, w in enumerate(["a", "b", "c", "d"] * 3)))
    trained = runner.invoke(app, ["train", "text-classification", "--train", str(data), "--out", str(tmp_path),
                                  "--name", "run", "--set", "train.epochs=1", "--set", "model.hidden_size=4",
                                  "--set", "train.accelerator=cpu", "--quiet"])
    assert trained.exit_code == 0, trained.output
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    result = runner.invoke(app, ["diagnose", str(tmp_path / "run"), "--data", str(empty), "--out",
                                 str(tmp_path / "diag")])
    assert result.exit_code == 2 and "no labelled texts to diagnose" in result.output, result.output


def test_cli_diagnose_fresh_with_the_clipping_demo_writes_strict_json(tmp_path):
    """The clipping demo's unclipped losses hold nan/inf; cli.py dumped them raw into diagnose.json."""
    from typer.testing import CliRunner

    from rnnkit.cli import app

    def refuse(name: str) -> None:
        raise ValueError(f"non-JSON constant {name}")

    # the defaults (T=100, 64 units, scale 3): the unclipped demo's losses overflow to inf and nan
    result = CliRunner().invoke(app, ["diagnose", "--fresh", "--cells", "rnn", "--out", str(tmp_path / "d"), "--json"])
    assert result.exit_code == 0, result.output
    json.loads((tmp_path / "d" / "diagnose.json").read_text(), parse_constant=refuse)
    json.loads(result.stdout, parse_constant=refuse)
