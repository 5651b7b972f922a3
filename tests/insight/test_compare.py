"""``rnnkit compare``: every cell through the task's own training, summary and recommendation."""

from __future__ import annotations

import json
import time
import types
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.insight import compare_cells
from rnnkit.insight.compare import CellRun, CompareResult, PeakMemory, quality_key, training_device
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


def test_no_recommendation_when_no_run_scored_above_zero():
    """Every cell at dev f1 0.0000 (none had learnt an entity) recommended the fastest, "rnn: best mean
    dev f1 (0.0000)": quality that cannot tell the cells apart now recommends none and says why."""
    cell, reason = _result([("lstm", 0.0, 10.0), ("gru", 0.0, 6.0), ("rnn", 0.0, 2.0)]).recommendation()
    assert cell == "none" and "above 0 dev accuracy" in reason and "train.epochs" in reason
    # a tie above 0 still goes to the fastest; an error of 0 (lower is better) is the best there is
    assert _result([("lstm", 0.5, 2.0), ("gru", 0.5, 1.0)]).recommendation()[0] == "gru"
    assert _result([("lstm", 0.0, 2.0), ("gru", 0.0, 1.0)], higher=False).recommendation()[0] == "gru"


def test_peak_memory_sees_an_allocation():
    """In a fresh process: in a long test run, freed memory the process keeps resident (glibc, and
    rnnkit.runtime's reuse of freed memory) can serve the 64 MiB without the resident set growing."""
    import subprocess
    import sys

    code = ("import numpy as np\nfrom rnnkit.insight.compare import PeakMemory\n"
            "with PeakMemory(interval=0.001) as memory:\n"
            "    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched\n"
            "    block.sum()\n"
            "print(memory.megabytes)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip()) > 30


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


def test_compare_data_errors_name_the_set_option(tmp_path):
    """As in 'rnnkit train', a data error's fix names --set data.KEY=VALUE, not a Python argument."""
    data = tmp_path / "reviews.csv"
    data.write_text("review,sentiment\ngood,pos\nbad,neg\n")
    bad = runner.invoke(app, ["compare", "text-classification", "--cells", "gru", "--train", str(data),
                              "--set", "data.text_column=review", "--out", str(tmp_path / "cmp")])
    assert bad.exit_code == 2
    assert "no label column 'label'" in bad.output and "fix: add --set data.label_column=" in bad.output


# -- a fake task: first calls cost time, as imports and kernel set-up do ------------------------
@dataclass
class _FakeModel:
    cell: str = "rnn"


@dataclass
class _FakeTrain:
    seed: int = 0
    accelerator: str = "cpu"


@dataclass
class _FakeConfig:
    model: _FakeModel = field(default_factory=_FakeModel)
    train: _FakeTrain = field(default_factory=_FakeTrain)


def _fake_task(first_call_seconds: float = 0.4) -> types.ModuleType:
    """A task module whose ``train`` pays ``first_call_seconds`` once per process and once per cell
    (lazy imports, kernels), and reports an ``accuracy`` (max) and an ``error`` (min)."""
    module = types.ModuleType("fake_task")
    paid: set[str] = set()
    module.calls = []  # type: ignore[attr-defined]

    def train(cfg, train_path, dev_path, run, log, progress=False):  # type: ignore[no-untyped-def]
        from rnnkit.tasks.engine import _BATCH_LIMIT

        for what in ("process", cfg.model.cell):
            if what not in paid:
                paid.add(what)
                time.sleep(first_call_seconds)
        module.calls.append((cfg.model.cell, _BATCH_LIMIT.get()))  # type: ignore[attr-defined]
        return {"dev": {"accuracy": 0.5 + 0.01 * cfg.train.seed, "error": 0.1, "examples": 10}, "parameters": 7}

    module.Config = _FakeConfig  # type: ignore[attr-defined]
    module.train = train  # type: ignore[attr-defined]
    module.dev_metrics = lambda cfg: {"accuracy": "max", "error": "min", "coverage": None}  # type: ignore[attr-defined]
    module.quality_metric = lambda cfg: "accuracy"  # type: ignore[attr-defined]
    return module


@pytest.fixture
def fake_task(monkeypatch):
    import rnnkit.tasks as tasks

    module = _fake_task()
    monkeypatch.setattr(tasks, "get_task", lambda name: module)
    return module


@pytest.mark.parametrize("order", [["lstm", "gru"], ["gru", "lstm"]])
def test_every_timed_run_starts_warm_whatever_the_order_of_cells(fake_task, tmp_path, order):
    result = compare_cells("fake", order, "data", seeds=2, out=tmp_path / "cmp", log=lambda _: None)
    # one untimed warm-up per cell, with the engine limited to one batch, before any timed run
    assert fake_task.calls[:2] == [(order[0], 1), (order[1], 1)]
    assert [c for c, limit in fake_task.calls[2:]] == [order[0]] * 2 + [order[1]] * 2
    assert all(limit is None for _, limit in fake_task.calls[2:])
    assert max(r.seconds for r in result.runs) < 0.2  # the 0.4 s first calls were all paid by the warm-ups


def test_quality_direction_comes_from_the_task(fake_task, tmp_path):
    result = compare_cells("fake", ["rnn"], "data", out=tmp_path / "a", metric="error", log=lambda _: None)
    assert result.metric == "error" and not result.higher_is_better
    assert "(lower is better)" in (tmp_path / "a" / "compare.md").read_text()
    fake_task.calls.clear()
    with pytest.raises(ValueError, match="'examples'.*choose one of accuracy, error$"):
        compare_cells("fake", ["rnn"], "data", out=tmp_path / "b", metric="examples")
    with pytest.raises(ValueError, match="'coverage' has no better direction"):
        compare_cells("fake", ["rnn"], "data", out=tmp_path / "c", metric="coverage")
    assert not fake_task.calls  # checked before anything trained


@pytest.mark.parametrize(("task", "overrides", "default", "direction", "others"), [
    ("image-classification", [], "accuracy", "max", {"macro_f1": "max"}),
    ("text-classification", ["train.monitor=macro_f1"], "macro_f1", "max", {"accuracy": "max"}),
    ("forecasting", [], "mase", "min", {"crps": "min", "mae": "min", "coverage": None}),
    ("language-model", ["data.level=char"], "perplexity", "min", {"bits_per_character": "min"}),
    ("tagging", [], "f1", "max", {"token_accuracy": "max"}),
    ("tagging", ["data.scheme=none"], "token_accuracy", "max", {}),
    ("translation", [], "bleu", "max", {"chrf": "max"}),
    ("speech", [], "accuracy", "max", {}),
    ("speech", ["data.mode=transcripts"], "wer", "min", {"cer": "min", "sentence_accuracy": "max"}),
])
def test_every_task_names_its_quality_metric_and_directions(task, overrides, default, direction, others):
    from rnnkit.tasks import get_task
    from rnnkit.tasks.config import load_config

    module = get_task(task)
    cfg = load_config(module.Config, None, overrides)
    metrics = module.dev_metrics(cfg)
    assert module.quality_metric(cfg) == default and metrics[default] == direction
    assert others.items() <= metrics.items()
    assert not {"windows", "examples", "sentences", "utterances", "tokens", "rtf"} & set(metrics)
    if default in metrics and direction is not None:
        assert quality_key(module, task, cfg, None) == (default, direction == "max")


def test_summary_reports_spread_of_time_and_memory_and_plots_memory(tmp_path):
    runs = [CellRun("gru", 0, "r", 0.9, 10.0, 100, 50.0), CellRun("gru", 1, "r", 0.8, 12.0, 100, 70.0)]
    result = CompareResult("t", "accuracy", True, runs, ["gru"], "RSS growth, sampled")
    (row,) = result.summary()
    assert row["seconds"] == pytest.approx(11.0) and row["seconds_std"] == pytest.approx(1.41421, rel=1e-4)
    assert row["peak_mib"] == pytest.approx(60.0) and row["peak_mib_std"] == pytest.approx(14.1421, rel=1e-4)
    text = result.markdown()
    assert "11.0 ± 1.4" in text and "60 ± 14" in text and "(higher is better)" in text
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    created = []
    real = plt.subplots
    plt_subplots = lambda *a, **k: created.append(real(*a, **k)) or created[-1]  # noqa: E731
    import unittest.mock

    with unittest.mock.patch.object(plt, "subplots", plt_subplots):
        result.plot(tmp_path / "c.png")
    titles = [ax.get_title() for ax in created[0][1]]
    assert any("memory" in t for t in titles) and any("time" in t for t in titles)


def test_memory_is_measured_on_the_device_the_run_trains_on(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_device("cpu") == "cpu" and training_device("gpu") == "cuda" and training_device("auto") == "cuda"
    assert PeakMemory("cpu").method.startswith("RSS")  # not the CUDA allocator, though CUDA is there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device("auto") in ("cpu", "mps")


def test_compare_refuses_duplicates_and_a_non_empty_out(fake_task, tmp_path):
    out = tmp_path / "cmp"
    bad = runner.invoke(app, ["compare", "image-classification", "--cells", "lstm,LSTM", "--train", "x",
                              "--out", str(out)])
    assert bad.exit_code == 2 and "names 'LSTM' twice" in bad.output
    compare_cells("fake", ["rnn", "gru"], "data", out=out, log=lambda _: None)
    assert (out / "gru-seed0").is_dir()
    with pytest.raises(ValueError, match="is not empty.*another --out, or add --overwrite"):
        compare_cells("fake", ["rnn"], "data", out=out)
    compare_cells("fake", ["rnn"], "data", out=out, overwrite=True, log=lambda _: None)
    assert not (out / "gru-seed0").exists() and json.loads((out / "compare.json").read_text())["summary"][0]["cell"] == "rnn"
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="also holds 'notes.txt'; choose another --out"):
        compare_cells("fake", ["rnn"], "data", out=out, overwrite=True)
    assert (out / "notes.txt").is_file()


def test_engine_batch_limit_runs_one_batch():
    from rnnkit.insight.memory import make_task, train_memory_task
    from rnnkit.tasks.engine import batch_limit

    with batch_limit(1):
        result = train_memory_task(make_task("adding"), "gru", 6, budget_steps=20, hidden_size=4, evaluations=4,
                                   dev_size=8)
    assert result.steps == 1 and len(result.history) == 1


def test_compare_forecasting_out_of_the_box(tmp_path):
    data = tmp_path / "sales.csv"
    rng = np.random.default_rng(0)
    t = np.arange(120)
    values = 10 + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.3, len(t))
    dates = np.datetime64("1990-01", "M") + t
    data.write_text("date,sales\n" + "".join(f"{d},{v:.4f}\n" for d, v in zip(dates, values)))
    common = ["compare", "forecasting", "--cells", "rnn,gru", "--train", str(data), "--set", "data.target=sales",
              "--set", "train.epochs=1", "--set", "model.hidden_size=8", "--set", "train.accelerator=cpu"]
    bad = runner.invoke(app, [*common, "--metric", "loss", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "'loss'" in bad.output and "mase" in bad.output and "windows" not in bad.output
    assert not (tmp_path / "bad").exists()  # refused before training
    result = runner.invoke(app, [*common, "--out", str(tmp_path / "cmp"), "--quiet"])
    assert result.exit_code == 0, result.output
    data_json = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert data_json["metric"] == "mase" and data_json["higher_is_better"] is False
    assert "dev mase (lower is better)" in (tmp_path / "cmp" / "compare.md").read_text()


@pytest.mark.parametrize("stop,word", [(KeyboardInterrupt(), "interrupted"), (SystemExit(143), "terminated (SIGTERM)")])
def test_a_stopped_comparison_says_how_it_stopped(fake_task, tmp_path, monkeypatch, stop, word):
    """Ctrl-C and SIGTERM (a fit ends with SystemExit(143) on it) stop the comparison; the log line and
    the stopped run's train.log say which, and the finished runs are named."""
    train = fake_task.train

    def stopped(cfg, *args, **kwargs):  # type: ignore[no-untyped-def]
        if cfg.model.cell == "gru" and not fake_task.calls[-1][1]:  # gru's timed run (after the warm-ups)
            raise stop
        return train(cfg, *args, **kwargs)

    monkeypatch.setattr(fake_task, "train", stopped)
    monkeypatch.setattr(fake_task, "calls", [("", 1)])
    said: list[str] = []
    with pytest.raises(type(stop)):
        compare_cells("fake", ["lstm", "gru"], "data", out=tmp_path / "cmp", log=said.append)
    assert said[-1].startswith(f"{word} during gru seed 0: no report written; finished runs in")
    logs = [p.read_text() for p in (tmp_path / "cmp").rglob("train.log")]
    assert any(log.rstrip().endswith(f"error: {word}") for log in logs)
