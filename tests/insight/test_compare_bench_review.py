"""Review of ``rnnkit compare`` and ``rnnkit bench memory``: diverged and interrupted runs, cells
named twice under an alias, output folders below a file, bad learning rates, the recommendation's
margin, and the figures of a real comparison against independent references."""

from __future__ import annotations

import json
import math
import statistics
import types
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.insight import compare_cells
from rnnkit.insight.compare import CellRun, CompareResult, PeakMemory, _mean_std
from rnnkit.insight.memory import make_task, run_memory_benchmark, train_memory_task

from .test_compare import _FakeConfig

runner = CliRunner()


# -- a fake task whose runs can diverge or be interrupted -----------------------------------------
_Config = _FakeConfig  # the fake task's config of test_compare.py


def _fake_task(fail: dict[str, BaseException | type[BaseException]] | None = None,
               fail_warm_up: bool = False) -> types.ModuleType:
    """``train`` reports accuracy ``0.5 + 0.01 * seed`` and ``parameters = len(cell)``; a cell in
    ``fail`` raises its exception in the timed runs (and in the warm-up with ``fail_warm_up``)."""
    from rnnkit.tasks.engine import _BATCH_LIMIT

    module = types.ModuleType("fake_task")
    module.calls = []  # type: ignore[attr-defined]
    fail = fail or {}

    def train(cfg: Any, train_path: Any, dev_path: Any, run: Any, log: Any, progress: bool = False) -> dict:
        warm = _BATCH_LIMIT.get() is not None
        module.calls.append((cfg.model.cell, cfg.train.seed, warm))  # type: ignore[attr-defined]
        log(f"training {cfg.model.cell}")
        if cfg.model.cell in fail and (not warm or fail_warm_up):
            raise fail[cfg.model.cell]
        return {"dev": {"accuracy": 0.5 + 0.01 * cfg.train.seed}, "parameters": len(cfg.model.cell)}

    module.Config = _Config  # type: ignore[attr-defined]
    module.train = train  # type: ignore[attr-defined]
    module.dev_metrics = lambda cfg: {"accuracy": "max"}  # type: ignore[attr-defined]
    module.quality_metric = lambda cfg: "accuracy"  # type: ignore[attr-defined]
    return module


def _install(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType) -> types.ModuleType:
    import rnnkit.tasks as tasks

    monkeypatch.setattr(tasks, "get_task", lambda name: module)
    return module


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


# -- diverged runs --------------------------------------------------------------------------------
@pytest.mark.parametrize("fail_warm_up", [False, True])
def test_a_diverged_cell_is_recorded_and_the_comparison_goes_on(monkeypatch, tmp_path, fail_warm_up):
    """A FloatingPointError (the engine's 'training loss became nan') used to end the whole
    comparison with a traceback, losing every other cell; with two seeds the nan also broke
    statistics.stdev."""
    error = FloatingPointError("training loss became nan at batch 1; lower train.learning_rate")
    fake = _install(monkeypatch, _fake_task({"rnn_relu": error}, fail_warm_up=fail_warm_up))
    lines: list[str] = []
    out = tmp_path / "cmp"
    result = compare_cells("fake", ["rnn_relu", "gru"], "data", seeds=2, out=out, log=lines.append)
    assert [(c, s) for c, s, warm in fake.calls if not warm] == [("rnn_relu", 0), ("rnn_relu", 1), ("gru", 0),
                                                                 ("gru", 1)]
    relu = [r for r in result.runs if r.cell == "rnn_relu"]
    assert all(math.isnan(r.quality) and r.error and "loss became nan" in r.error for r in relu)
    assert all(r.error is None and r.quality == pytest.approx(0.5 + 0.01 * r.seed) for r in result.runs
               if r.cell == "gru")
    rows = {r["cell"]: r for r in result.summary()}
    assert math.isnan(rows["rnn_relu"]["mean"]) and math.isnan(rows["rnn_relu"]["std"])
    # the parameter count of a diverged run comes from its warm-up when that finished
    assert rows["rnn_relu"]["parameters"] == (0 if fail_warm_up else len("rnn_relu"))
    assert rows["gru"]["mean"] == pytest.approx(0.505) and rows["gru"]["std"] == pytest.approx(
        statistics.stdev([0.5, 0.51]))
    assert result.recommendation()[0] == "gru"
    assert any("rnn_relu seed 0: training diverged" in line for line in lines)
    report = (out / "compare.md").read_text()
    assert "rnn_relu-seed1: training loss became nan" in report and "**Recommended: gru**" in report
    data = _strict_json((out / "compare.json").read_text())
    assert data["runs"][0]["quality"] == "nan" and "loss became nan" in data["runs"][0]["error"]
    assert (out / "compare.png").is_file()
    assert (out / "rnn_relu-seed0" / "train.log").read_text().splitlines()[-1].startswith("error: training loss")


def test_mean_std_of_non_finite_values_is_nan_not_an_error():
    mean, std = _mean_std([0.5, math.nan])
    assert math.isnan(mean) and math.isnan(std)
    mean, std = _mean_std([1.0, math.inf])
    assert mean == math.inf and math.isnan(std)
    assert _mean_std([0.5, 0.7]) == (pytest.approx(0.6), pytest.approx(statistics.stdev([0.5, 0.7])))
    assert _mean_std([0.25]) == (0.25, 0.0)


# -- interruption ---------------------------------------------------------------------------------
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(1)])  # Lightning: Ctrl-C -> SystemExit(1)
def test_an_interrupted_comparison_says_which_runs_finished(monkeypatch, tmp_path, interrupt):
    """Ctrl-C used to end 'rnnkit compare' silently (exit status 1, no word on the half-written --out)."""
    _install(monkeypatch, _fake_task({"gru": interrupt}))
    lines: list[str] = []
    out = tmp_path / "cmp"
    with pytest.raises(type(interrupt)):
        compare_cells("fake", ["rnn", "gru"], "data", out=out, log=lines.append)
    note = lines[-1]
    assert note.startswith("interrupted during gru seed 0") and "rnn-seed0" in note and "--overwrite" in note
    assert (out / "gru-seed0" / "train.log").read_text().splitlines()[-1] == "error: interrupted"
    assert not (out / "compare.md").exists()
    # the note's advice works: --overwrite clears the half-written comparison
    _install(monkeypatch, _fake_task())
    result = compare_cells("fake", ["rnn", "gru"], "data", out=out, overwrite=True, log=lambda _: None)
    assert [r.cell for r in result.runs] == ["rnn", "gru"] and (out / "compare.md").is_file()


@pytest.mark.parametrize("flag", ["--quiet", "--json"])
def test_a_quiet_interrupted_comparison_still_says_so(monkeypatch, tmp_path, flag):
    import rnnkit.insight.compare as compare

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise SystemExit(1)

    monkeypatch.setattr(compare, "compare_cells", interrupted)
    out = tmp_path / "c"
    result = runner.invoke(app, ["compare", "image-classification", "--cells", "rnn,gru", "--train", "x.npz",
                                 "--out", str(out), flag])
    assert result.exit_code == 1
    assert f"interrupted: no report written; the finished runs are in {out}" in result.output


def test_an_interrupted_bench_says_nothing_was_written(monkeypatch, tmp_path):
    import rnnkit.insight.memory as memory

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise SystemExit(1)

    monkeypatch.setattr(memory, "run_memory_benchmark", interrupted)
    result = runner.invoke(app, ["bench", "memory", "--length", "4", "--out", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert "interrupted" in result.output and "nothing written" in result.output
    assert not (tmp_path / "b").exists()


# -- aliases, output folders, learning rates, names, devices --------------------------------------
def test_a_cell_named_twice_under_an_alias_is_refused_before_any_training(monkeypatch, tmp_path):
    """rnn_tanh is rnn (the same RNNCell with tanh): comparing both trained one model twice."""
    fake = _install(monkeypatch, _fake_task())
    with pytest.raises(ValueError, match=r"--cells names 'RNN-Tanh' twice \(as 'rnn' before; both are rnn\)"):
        compare_cells("fake", ["rnn", "RNN-Tanh"], "data", out=tmp_path / "c", log=lambda _: None)
    assert fake.calls == []
    with pytest.raises(ValueError, match=r"--cell names 'rnn_tanh' \(the same cell as rnn\) twice"):
        run_memory_benchmark("adding", [4], ["rnn", "rnn_tanh"], budget_steps=1, log=lambda _: None)
    # different cells stay different
    result = compare_cells("fake", ["rnn", "rnn_relu"], "data", out=tmp_path / "ok", log=lambda _: None)
    assert [r.cell for r in result.runs] == ["rnn", "rnn_relu"]


def test_an_out_folder_below_a_file_is_refused_before_any_work(monkeypatch, tmp_path):
    """bench memory used to train everything and then crash with NotADirectoryError (a traceback);
    compare found it only after the warm-ups."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fake = _install(monkeypatch, _fake_task())
    with pytest.raises(ValueError, match="is a file, so no folder can be made under it"):
        compare_cells("fake", ["rnn"], "data", out=blocker / "sub", log=lambda _: None)
    assert fake.calls == []
    with pytest.raises(ValueError, match="is a file, not a folder"):
        compare_cells("fake", ["rnn"], "data", out=blocker, log=lambda _: None)

    import rnnkit.insight.memory as memory

    called: list[Any] = []
    monkeypatch.setattr(memory, "run_memory_benchmark", lambda *a, **k: called.append(a))
    result = runner.invoke(app, ["bench", "memory", "--length", "4", "--out", str(blocker / "sub" / "deeper")])
    assert result.exit_code == 2 and called == []
    assert "is a file, so no folder can be made under it" in result.output and "Traceback" not in result.output


def test_a_bench_that_cannot_write_its_results_is_a_one_line_error(monkeypatch, tmp_path):
    """A failure to write after training (a full disk, a folder made read-only meanwhile) is a
    one-line error, not a traceback."""
    bench = run_memory_benchmark("adding", [4], ["rnn"], budget_steps=1, batch_size=4, hidden_size=2,
                                 log=lambda _: None)
    import rnnkit.insight.memory as memory

    monkeypatch.setattr(memory, "run_memory_benchmark", lambda *a, **k: bench)

    def full(self: Path, *args: Any, **kwargs: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    result = runner.invoke(app, ["bench", "memory", "--length", "4", "--cell", "rnn", "--quiet",
                                 "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert "cannot write the results to --out" in result.output and "No space left on device" in result.output


@pytest.mark.parametrize("rate", [-1.0, 0.0, math.nan, math.inf])
def test_bad_learning_rates_name_the_option(rate, tmp_path):
    """bench memory passed them to Adam ('Invalid learning rate: -1.0', after the warm-up start) or,
    for 0, trained nothing at all."""
    with pytest.raises(ValueError, match="--learning-rate must be a number > 0"):
        run_memory_benchmark("adding", [4], ["rnn"], budget_steps=1, learning_rate=rate, log=lambda _: None)
    with pytest.raises(ValueError, match="learning_rate must be a number > 0"):
        train_memory_task(make_task("adding"), "rnn", 4, budget_steps=1, learning_rate=rate)
    result = runner.invoke(app, ["bench", "memory", "--length", "4", "--learning-rate", str(rate),
                                 "--out", str(tmp_path / "unused")])
    assert result.exit_code == 2 and "--learning-rate must be a number > 0" in result.output
    assert not (tmp_path / "unused").exists()


def test_bench_sizes_are_checked_in_python_too():
    with pytest.raises(ValueError, match="--budget-steps must be >= 1, got 0"):
        run_memory_benchmark("adding", [4], ["rnn"], budget_steps=0, log=lambda _: None)
    with pytest.raises(ValueError, match="--hidden-size must be >= 1, got -3"):
        run_memory_benchmark("adding", [4], ["rnn"], budget_steps=1, hidden_size=-3, log=lambda _: None)


def test_memory_task_names_accept_case_and_underscores():
    assert make_task("Selective_Copy").name == "selective-copy"
    assert make_task(" ADDING ").name == "adding"
    with pytest.raises(ValueError, match="unknown memory task 'nope'; choose one of adding, copy, selective-copy"):
        make_task("nope")


def test_a_cuda_config_without_cuda_names_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"add --set train.accelerator=cpu"):
        PeakMemory("cuda")


# -- the recommendation rule ----------------------------------------------------------------------
def _result(rows: list[tuple[str, float, float, int]], higher: bool = True) -> CompareResult:
    runs = [CellRun(cell, 0, f"r/{cell}", q, s, p, 1.0) for cell, q, s, p in rows]
    return CompareResult("t", "accuracy", higher, runs, [r[0] for r in rows], "RSS")


def test_a_cell_exactly_the_tolerance_below_the_best_counts_as_within_it():
    """0.900 - 0.895 is 0.0050000000000000044 in floats: the cell 0.005 below the best (the default
    tolerance, documented as 'within') was left out."""
    cell, reason = _result([("lstm", 0.900, 10.0, 100), ("gru", 0.895, 5.0, 100)]).recommendation()
    assert cell == "gru" and "trains faster (5.0 s against 10.0 s)" in reason
    cell, _ = _result([("lstm", 0.900, 10.0, 100), ("gru", 0.8949, 5.0, 100)]).recommendation()
    assert cell == "lstm"
    cell, _ = _result([("lstm", 0.100, 10.0, 100), ("gru", 0.105, 5.0, 100)], higher=False).recommendation()
    assert cell == "gru"


def test_a_pick_on_size_alone_does_not_claim_it_trains_faster():
    cell, reason = _result([("lstm", 0.900, 5.0, 400), ("gru", 0.899, 5.0, 300)]).recommendation()
    assert cell == "gru"
    assert "trains faster" not in reason and "it is smaller (300 parameters against 400)" in reason


# -- a real comparison on the shipped digits ------------------------------------------------------
def test_compare_on_digits_is_fair_and_its_figures_check_out(tmp_path):
    hidden = 6
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", "image-classification", "--cells", "rnn,gru", "--seeds", "2",
                                 "--train", "builtin:digits", "--out", str(out), "--json",
                                 "--set", "train.epochs=1", "--set", f"model.hidden_size={hidden}",
                                 "--set", "data.max_train_examples=200", "--set", "train.accelerator=cpu"])
    assert result.exit_code == 0, result.output
    data = _strict_json(result.output)
    assert data == _strict_json((out / "compare.json").read_text())
    # the same config for every cell and seed, except model.cell and train.seed
    configs = {(c, s): yaml.safe_load((out / f"{c}-seed{s}" / "config.yaml").read_text())
               for c in ("rnn", "gru") for s in (0, 1)}
    for (cell, seed), cfg in configs.items():
        assert cfg["model"].pop("cell") == cell and cfg["train"].pop("seed") == seed
    assert all(cfg == configs[("rnn", 0)] for cfg in configs.values())
    # quality: each run's dev metric as the run folder recorded it; never a test metric
    runs = {(r["cell"], r["seed"]): r for r in data["runs"]}
    for (cell, seed), run in runs.items():
        metrics = json.loads((out / f"{cell}-seed{seed}" / "metrics.json").read_text())
        assert run["quality"] == pytest.approx(metrics["dev"]["accuracy"])
        assert run["error"] is None and run["seconds"] > 0 and run["peak_mib"] >= 0
    # the same dev split per seed for every cell (the task draws it from train.seed)
    for seed in (0, 1):
        a = json.loads((out / f"rnn-seed{seed}" / "metrics.json").read_text())["dev"]["per_class"]["support"]
        b = json.loads((out / f"gru-seed{seed}" / "metrics.json").read_text())["dev"]["per_class"]["support"]
        assert a == b
    # summary: mean and sample std over seeds, recomputed here
    for row in data["summary"]:
        qualities = [runs[(row["cell"], s)]["quality"] for s in (0, 1)]
        seconds = [runs[(row["cell"], s)]["seconds"] for s in (0, 1)]
        assert row["mean"] == pytest.approx(statistics.fmean(qualities))
        assert row["std"] == pytest.approx(statistics.stdev(qualities))
        assert row["seconds"] == pytest.approx(statistics.fmean(seconds))
    # parameters: the closed form for 8 features per row, 10 classes
    inputs, classes = 8, 10
    head = hidden * classes + classes
    expected = {"rnn": hidden * inputs + hidden * hidden + 2 * hidden + head,
                "gru": 3 * (hidden * inputs + hidden * hidden + 2 * hidden) + head}
    assert {r["cell"]: r["parameters"] for r in data["summary"]} == expected
    # units in the report
    report = (out / "compare.md").read_text()
    assert "train s" in report and "peak MiB (RSS growth, sampled)" in report and "dev accuracy" in report
    assert data["memory_method"] == "RSS growth, sampled" and data["settings"]["device"] == "cpu"
