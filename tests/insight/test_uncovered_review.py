"""Review of lines no other test reached: each error branch is driven by the input it guards
against (a run folder, a file, a config, a CLI call) and must give a one-line error naming the
problem and the fix (status 2 from the CLI, as every rnnkit error; no traceback); each feature is
checked against an independent computation (a hand calculation, a plain loop, brute force)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as F
from typer.testing import CliRunner

import rnnkit.nn as rnn
from rnnkit.cli import app
from rnnkit.insight import compare as cmp
from rnnkit.insight import gradients as g
from rnnkit.insight import memory as mem
from rnnkit.tasks import engine
from rnnkit.tasks.config import ConfigError
from rnnkit.tasks.run import RunDir, RunError, _folder_fingerprint

runner = CliRunner()


def _one_error(result) -> str:  # type: ignore[no-untyped-def]
    """The single ``error: ...`` line of a failed command (status 2, no traceback)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


# -- fixtures: tiny trained runs -------------------------------------------------------------------
TAG_TINY = ["--set", "train.epochs=1", "--set", "model.hidden_size=4", "--set", "model.embedding_dim=4",
            "--set", "model.char_hidden_size=2", "--set", "model.char_embedding_dim=2", "--quiet"]


def _conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    path.write_text("".join("".join(f"{w} {t}\n" for w, t in s) + "\n" for s in sentences))
    return path


def _npz(path: Path, n: int = 24, shape: tuple[int, ...] = (6, 6), labels: list[int] | None = None,
         seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y = np.array(labels if labels is not None else [i % 2 for i in range(n)])
    x = rng.random((len(y), *shape)).astype(np.float32) * 255
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    a = [("Anna", "B-PER"), ("runs", "O")]
    b = [("Bob", "B-PER"), ("walks", "O"), ("in", "O"), ("Rome", "B-LOC")]
    train = _conll(root / "tag.txt", [a, b] * 6)
    out = {}
    res = runner.invoke(app, ["train", "tagging", "--train", str(train), "--out", str(root), "--name", "tag", *TAG_TINY])
    assert res.exit_code == 0, res.output
    out["tag"] = root / "tag"
    data = _npz(root / "img.npz")
    res = runner.invoke(app, ["train", "image-classification", "--train", str(data), "--out", str(root), "--name",
                              "img", "--set", "train.epochs=1", "--set", "model.hidden_size=4", "--quiet"])
    assert res.exit_code == 0, res.output
    out["img"] = root / "img"
    text = root / "lm.txt"
    text.write_text("".join(f"the cat sat on mat {i % 3}\n" for i in range(30)))
    res = runner.invoke(app, ["train", "language-model", "--train", str(text), "--out", str(root), "--name", "lm",
                              "--set", "train.epochs=1", "--set", "model.hidden_size=4", "--set",
                              "model.embedding_dim=4", "--set", "train.batch_size=2", "--set", "train.bptt=8", "--quiet"])
    assert res.exit_code == 0, res.output
    out["lm"] = root / "lm"
    out["root"] = root
    return out


# -- insight.gradients -----------------------------------------------------------------------------
class _Tagger(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = rnn.LSTM(2, 3, batch_first=True)
        self.out = tnn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(x)[0])


def test_memory_horizon_of_no_norms_is_none():
    assert g.memory_horizon([]) is None


def test_a_named_layer_that_is_not_there_is_named():
    with pytest.raises(ValueError, match=r"^no rnnkit recurrent layer named 'decoder' in _Tagger$"):
        g.find_recurrent_layer(_Tagger(), "decoder")


def test_default_losses_match_a_hand_written_loss():
    model, x = _Tagger(), torch.randn(2, 5, 2)
    assert g.gradient_diagnostics(model, x, jacobians=False).loss == pytest.approx(float(model(x).sum().detach()), rel=1e-5)
    y = torch.randint(0, 4, (2, 5))
    expected = float(F.cross_entropy(model(x).reshape(-1, 4), y.reshape(-1)).detach())
    assert g.gradient_diagnostics(model, (x, y), jacobians=False).loss == pytest.approx(expected, rel=1e-5)


def test_a_loss_that_cannot_be_guessed_names_the_shapes_and_the_way_out():
    with pytest.raises(ValueError, match=r"cannot guess a loss for predictions \[2, 5, 4\] and targets \[2, 3\]; "
                                         r"pass loss_fn"):
        g.gradient_diagnostics(_Tagger(), (torch.randn(2, 5, 2), torch.randn(2, 3)), jacobians=False)


def test_loss_fn_errors_name_the_problem():
    model, x = _Tagger(), torch.randn(2, 5, 2)
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar, got shape \[5, 4\]"):
        g.gradient_diagnostics(model, x, loss_fn=lambda m, b: m(b).sum(0), jacobians=False)
    with pytest.raises(ValueError, match="the recurrent layer rnn was not called by loss_fn"):
        g.gradient_diagnostics(model, x, loss_fn=lambda m, b: m.out.weight.sum(), jacobians=False)
    layer = rnn.LSTM(2, 3, batch_first=True)
    with pytest.raises(ValueError, match=r"no real step \(every sequence is all padding\)"):
        g.gradient_diagnostics(layer, x, loss_fn=lambda m, b: m(b, lengths=torch.tensor([0, 0]))[0].sum(),
                               jacobians=False)


def test_clipped_norm_of_a_non_finite_gradient_is_the_clip_value():
    report = g.gradient_diagnostics(_Tagger(), torch.randn(2, 5, 2), jacobians=False, clip_norm=0.5)
    assert report.clipped_grad_norm == pytest.approx(min(report.param_grad_norm, 0.5))
    assert dataclasses.replace(report, param_grad_norm=math.inf).clipped_grad_norm == 0.5


def test_report_and_fresh_argument_errors():
    assert g.diagnostics_markdown([], title="T") == "# T\n\nNo reports.\n"
    with pytest.raises(ValueError, match=r"^give at least one cell, e.g. --cell rnn,lstm,gru$"):
        g.diagnose_fresh([])
    with pytest.raises(ValueError, match=r"^unknown cell 'elman'; choose from gru, "):
        g.diagnose_fresh(["elman"], length=10, hidden_size=4)
    with pytest.raises(ValueError, match=r"^give at least one RUN folder$"):
        g.diagnose_runs([], "data.txt")


# -- insight.memory --------------------------------------------------------------------------------
def test_selective_copy_places_the_data_in_order_before_the_delimiter():
    task = mem.make_task("selective-copy", symbols=3, memorize=2)
    x, y = task.generate(64, 10, torch.Generator().manual_seed(0))
    tokens = x.argmax(-1)  # one-hot inputs over blank 0, data 1..3, delimiter 4
    assert x.shape == (64, 10, 5)
    for row, target in zip(tokens.tolist(), y.tolist()):
        data = [t for t in row[:7] if t != 0]  # the first T-K-1 steps hold the data among blanks
        assert len(data) == 2 and all(1 <= t <= 3 for t in data)
        assert row[7] == 4 and row[8:] == [0, 0]
        assert target[:8] == [0] * 8 and target[8:] == data
    positions = {tuple(i for i, t in enumerate(row[:7]) if t) for row in tokens.tolist()}
    assert len(positions) > 5  # random positions, not the plain copy task's first steps


@pytest.mark.parametrize("call,message", [
    (lambda: mem.make_task("copy", symbols=1, memorize=2),
     "copy tasks need symbols >= 2 and memorize >= 1, got 1 and 2"),
    (lambda: mem.adding_problem(2, 3), "length 3 is too short for the adding task: it needs at least 4 steps"),
    (lambda: mem.copy_memory(2, 4, symbols=3, memorize=2), "length 4 is too short for the copy task: it needs at least 5"),
    (lambda: mem.selective_copy(2, 4, symbols=3, memorize=2),
     "length 4 is too short for the selective-copy task: it needs at least 5"),
])
def test_memory_task_errors(call, message):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


def test_memory_training_and_benchmark_argument_errors():
    task = mem.make_task("adding")
    with pytest.raises(ValueError, match=r"^budget_steps must be >= 1, got 0$"):
        mem.train_memory_task(task, "rnn", 10, budget_steps=0)
    with pytest.raises(ValueError, match=r"^batch_size and hidden_size must be >= 1, got 0 and 4$"):
        mem.train_memory_task(task, "rnn", 10, batch_size=0, hidden_size=4)
    with pytest.raises(ValueError, match=r"^seeds must be >= 1, got 0$"):
        mem.run_memory_benchmark("adding", [10], ["rnn"], seeds=0)
    with pytest.raises(ValueError, match=r"^give at least one length, e.g. --length 50,100$"):
        mem.run_memory_benchmark("adding", [], ["rnn"])


def test_a_diverging_memory_run_counts_as_nan_not_a_crash():
    result = mem.train_memory_task(mem.make_task("adding"), "rnn_relu", 8, budget_steps=2, batch_size=4,
                                   hidden_size=4, learning_rate=1e30, clip_norm=None, evaluations=1, dev_size=8)
    assert result.history == [math.nan] or math.isnan(result.history[0])
    assert math.isnan(result.value) and result.success is False


# -- insight.compare -------------------------------------------------------------------------------
def test_rss_falls_back_to_the_peak_rss_without_proc(monkeypatch):
    import builtins
    import resource

    real_open = builtins.open

    def no_proc(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).startswith("/proc/"):
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    expected = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert abs(cmp._rss_bytes() - expected) <= 64 * 2**20  # the peak only grows, by little in between


def test_training_device_picks_mps_when_asked_or_found(monkeypatch):
    assert cmp.training_device("mps") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert cmp.training_device("auto") == "mps"
    assert cmp.PeakMemory("mps").method == "RSS growth, sampled; MPS memory not included"


def test_no_recommendation_when_every_run_diverged():
    runs = [cmp.CellRun("rnn", 0, "r", math.nan, 1.0, 10, 1.0, "diverged"),
            cmp.CellRun("gru", 0, "g", math.nan, 2.0, 20, 1.0, "diverged")]
    result = cmp.CompareResult("tagging", "f1", True, runs, ["rnn", "gru"], "RSS")
    assert result.recommendation() == ("none", "no cell reached a finite dev f1")
    assert json.loads(json.dumps(result.to_json()))["recommended"] == "none"


def test_quality_key_of_a_task_without_dev_metrics():
    import types

    with pytest.raises(ValueError, match=r"^the odd task does not declare its dev metrics \(dev_metrics, "
                                         r"quality_metric\)$"):
        cmp.quality_key(types.ModuleType("odd"), "odd", None, None)


def test_parameters_are_counted_from_the_saved_model(tmp_path):
    run = RunDir.create(tmp_path, "tagging", "r")
    run.save_model(tnn.Linear(3, 2), "tagging", {})
    assert cmp._parameters({}, run.path) == 3 * 2 + 2
    assert cmp._parameters({"parameters": 7}, run.path) == 7
    assert cmp._parameters({}, None) == 0


def test_an_empty_existing_out_folder_is_used_as_it_is(tmp_path):
    (tmp_path / "out").mkdir()
    cmp.prepare_out(tmp_path / "out", overwrite=False)
    assert (tmp_path / "out").is_dir() and not any((tmp_path / "out").iterdir())


def test_compare_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^give at least one cell, e.g. --cells rnn,lstm,gru$"):
        cmp.compare_cells("tagging", [], str(tmp_path / "x.txt"))
    with pytest.raises(ValueError, match=r"^seeds must be >= 1, got 0$"):
        cmp.compare_cells("tagging", ["rnn"], str(tmp_path / "x.txt"), seeds=0)


def test_compare_refuses_a_metric_the_data_does_not_give(tmp_path, monkeypatch):
    import types

    import rnnkit.tasks as tasks
    from rnnkit.tasks import tagging

    fake = types.ModuleType("fake")
    fake.Config = tagging.Config  # type: ignore[attr-defined]
    fake.dev_metrics = lambda config: {"f1": "max", "token_accuracy": "max", "bleu": "max"}  # type: ignore[attr-defined]
    fake.quality_metric = lambda config: "bleu"  # type: ignore[attr-defined]
    trained = []

    def train(config, train_path, dev_path, run, log, progress=True):  # type: ignore[no-untyped-def]
        trained.append(run.path)
        return {"dev": {"f1": 0.5, "token_accuracy": 0.9}}

    fake.train = train  # type: ignore[attr-defined]
    monkeypatch.setattr(tasks, "get_task", lambda name: fake)
    with pytest.raises(ValueError) as err:
        cmp.compare_cells("fake", ["rnn", "gru"], "train.txt", out=tmp_path / "out", log=lambda _: None)
    assert str(err.value) == ("the fake task reports no dev metric 'bleu' on this data (it reports f1, "
                              "token_accuracy); choose one with --metric")
    assert len(trained) == 1  # only the first warm-up ran: nothing timed


# -- cli -------------------------------------------------------------------------------------------
def test_cli_errors_on_runs_of_the_wrong_task(runs, tmp_path):
    tag, img, lm = str(runs["tag"]), str(runs["img"]), str(runs["lm"])
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "x.txt").write_text("x\n")
    cases = [
        (["predict", lm, "--set", "data.text_column=x", "hello"],
         f"error: {lm}: this run reads no input files that --set could change; drop --set"),
        (["predict", img, "--conll", "--file", str(tmp_path / "x.txt")],
         f"error: {img} is not a tagging run; --conll needs one (drop --conll)"),
        (["predict", tag], "error: nothing to predict: give inputs as arguments or --file FILE"),
        (["predict", tag, "--file", str(tmp_path / "empty.txt")],
         f"error: nothing to predict: {tmp_path / 'empty.txt'} holds no inputs; give a file with inputs, or inputs "
         "as arguments"),
        (["predict", tag, "--explain", "Anna runs"],
         f"error: --explain is available for text-classification runs only, and {tag} is not one; drop --explain"),
        (["generate", tag], f"error: {tag} is not a language-model run (train one with 'rnnkit train language-model')"),
        (["translate", tag, "hello"],
         f"error: {tag} is not a translation run (train one with 'rnnkit train translation')"),
        (["transcribe", tag, "x.wav"], f"error: {tag} is not a speech run (train one with 'rnnkit train speech')"),
        (["diagnose", "--fresh", "--exploding-scale", "-1"],
         "error: --exploding-scale must be >= 0 (0: skip the exploding case), got -1"),
        (["train", "tagging"], "error: --train FILE is required"),
    ]
    for args, message in cases:
        assert _one_error(runner.invoke(app, args)) == message, args


def test_a_diverged_training_loss_is_a_one_line_error(tmp_path):
    # the engine's FloatingPointError escaped 'rnnkit train' as a traceback (status 1)
    data = _npz(tmp_path / "d.npz", n=40)
    result = runner.invoke(app, ["train", "image-classification", "--train", str(data), "--out", str(tmp_path),
                                 "--name", "nan", "--set", "train.epochs=1", "--set", "model.hidden_size=4",
                                 "--set", "train.batch_size=4", "--set", "train.learning_rate=1e38", "--set",
                                 "train.optimizer=sgd", "--set", "train.clip_norm=null", "--set", "model.cell=rnn_relu",
                                 "--set", "data.standardize=false"])
    line = _one_error(result)
    assert line.startswith("error: training loss became ") and line.endswith(
        "; lower train.learning_rate or keep train.clip_norm set"), line


def test_a_bug_in_training_is_not_hidden(tmp_path, monkeypatch):
    from rnnkit.tasks import image_classification

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")

    monkeypatch.setattr(image_classification, "train", broken)
    result = runner.invoke(app, ["train", "image-classification", "--train", str(_npz(tmp_path / "d.npz")),
                                 "--out", str(tmp_path), "--quiet"])
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "a bug"


def test_a_bad_reuse_memory_setting_is_one_line(monkeypatch, capsys):
    from rnnkit import cli

    monkeypatch.setenv("RNNKIT_REUSE_FREED_MEMORY", "maybe")
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("error: RNNKIT_REUSE_FREED_MEMORY must be 1 or 0, got 'maybe'; set it to 1 or "
                                       "0, or unset it\n")


# -- tasks.engine and tasks.run --------------------------------------------------------------------
def test_engine_argument_errors():
    with pytest.raises(ValueError, match=r"^batches must be >= 1, got 0$"), engine.batch_limit(0):
        pass
    with pytest.raises(ValueError, match=r"^unknown optimizer 'lbfgs'; choose one of adam, adamw, sgd, rmsprop, asgd$"):
        engine.make_optimizer("lbfgs", [tnn.Parameter(torch.zeros(1))], 0.1, 0.0)
    with pytest.raises(ValueError, match=r"^train.epochs must be >= 1, got 0$"):
        engine.fit(tnn.Linear(1, 1), [], [], loss_fn=None, predict_fn=None, metric_fn=None,  # type: ignore[arg-type]
                   options=engine.EngineOptions(epochs=0))


def test_a_checkpoint_of_something_else_cannot_be_resumed(tmp_path):
    path = tmp_path / engine.LAST_CHECKPOINT
    torch.save({"state_dict": {}, "epoch": 3}, path)
    with pytest.raises(engine.ResumeError) as err:
        engine._check_last_checkpoint(path, tnn.Linear(1, 1))
    assert str(err.value) == f"{path} is not an rnnkit training checkpoint; it cannot be resumed: train a new run"


def test_folder_fingerprint_counts_each_file_once_through_links(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("xyz")
    os.symlink("..", tmp_path / "a" / "up")  # a link back up the tree
    os.symlink("missing", tmp_path / "broken")  # a broken link
    files, size, latest = _folder_fingerprint(tmp_path)
    assert (files, size, latest) == (1, 3, (tmp_path / "a" / "f.txt").stat().st_mtime_ns)


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from rnnkit.tasks import run as run_module

    def refuse(src, dst):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_module.os, "replace", refuse)
    with pytest.raises(OSError):
        run_module.atomic_write_bytes(tmp_path / "x.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_run_folder_errors(runs, tmp_path):
    with pytest.raises(RunError) as err:
        RunDir.open(tmp_path / "nope")
    assert str(err.value) == f"run folder not found: {tmp_path / 'nope'} (pass the folder printed by 'rnnkit train')"
    with pytest.raises(RunError) as err:
        RunDir.open_task(runs["tag"], "language-model")
    assert str(err.value) == f"{runs['tag']} holds a 'tagging' model, not 'language-model'"
    run = RunDir(tmp_path)
    with pytest.raises(RunError, match=r"is incomplete: missing x.json$"):
        run.read_json("x.json")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(RunError, match=r"bad.json is corrupt \(UnicodeDecodeError\); train again$"):
        run.read_json("bad.json")
    (tmp_path / "cut.json").write_text('{"a": ')
    with pytest.raises(RunError, match=r"cut.json is corrupt \(JSONDecodeError\); train again$"):
        run.read_json("cut.json")


def test_resume_errors_and_paired_inputs(tmp_path):
    run = RunDir.create(tmp_path, "translation", "r")
    with pytest.raises(RunError, match=r"no inputs.json \(runs written before rnnkit recorded their data cannot be "
                                       r"resumed\); train a new run$"):
        RunDir.for_resume(run.path, "translation")
    src, tgt = tmp_path / "a.en", tmp_path / "a.de"
    src.write_text("a\n")
    tgt.write_text("b\n")
    run.record_inputs("translation", (str(src), str(tgt)), None)
    with pytest.raises(RunError, match=r"no checkpoint-last.ckpt \(it is written after each finished epoch, so the run "
                                       r"stopped during its first one\); train a new run$"):
        RunDir.for_resume(run.path, "translation")
    run.file(engine.LAST_CHECKPOINT).write_bytes(b"x")
    run.write_text("config.yaml", "model: {}\n")
    _, train, dev = RunDir.for_resume(run.path, "translation")
    assert train == (str(src.resolve()), str(tgt.resolve())) and dev is None  # the recorded pair, as a tuple


def test_weights_of_another_model_are_refused(tmp_path):
    run = RunDir.create(tmp_path, "tagging", "r")
    run.save_model(tnn.Linear(3, 2), "tagging", {})
    with pytest.raises(RunError, match=r"model.safetensors does not match the model in model.json \(.*\); the run "
                                       r"folder was mixed up or edited$"):
        run.load_into(tnn.Linear(4, 2))


# -- tasks.image_classification --------------------------------------------------------------------
@pytest.mark.parametrize("override,message", [
    ("data.image_shape=[8]", "data.image_shape: expected [height, width] of positive sizes, got [8]"),
    ("data.max_train_examples=1", "data.max_train_examples: must be >= 2 or null, got 1"),
    ("model.dropout=1", "model.dropout: must be in [0, 1), got 1.0"),
    ("data.dev_fraction=0", "data.dev_fraction: must be in (0, 1), got 0.0"),
    ("train.learning_rate=0", "train.learning_rate: must be > 0, got 0.0"),
])
def test_image_config_errors(override, message, tmp_path):  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["train", "image-classification", "--train", "builtin:digits", "--out", str(tmp_path),
                                 "--set", override])
    assert _one_error(result) == f"error: {message}"


def test_image_format_detection_and_read_errors(tmp_path):
    from rnnkit.tasks import image_classification as ic

    csv = tmp_path / "d.csv"
    csv.write_text("0,1\n")
    assert ic.detect_format(csv, "auto") == "digits-csv"
    cfg = ic.Config().data
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    (mnist / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4]))
    cfg.split = "test"
    with pytest.raises(FileNotFoundError) as err:
        ic.read_images(mnist, cfg)
    assert str(err.value) == (f"{mnist}: no MNIST file named t10k*idx3* (expected e.g. t10k-images-idx3-ubyte.gz); "
                              "set data.split or pass the idx file itself")
    cfg.split, cfg.format = "train", "idx"
    with pytest.raises(FileNotFoundError, match=r"no labels file found beside it \(looked for "
                                                r"train-labels-idx1-ubyte\); pass IMAGES,LABELS$"):
        ic.read_images(mnist / "train-images-idx3-ubyte", cfg)
    cfg.format = "builtin"
    with pytest.raises(ConfigError, match=r"^builtin:mnist: the only builtin image dataset is builtin:digits$"):
        ic.read_images("builtin:mnist", cfg)
    cfg.format = "npz"
    with pytest.raises(FileNotFoundError, match=r"^data not found: .*missing.npz$"):
        ic.read_images(tmp_path / "missing.npz", cfg)


def test_ts_files_that_cannot_train_a_classifier(tmp_path):
    from rnnkit.tasks import image_classification as ic

    target = tmp_path / "t.ts"
    target.write_text("@problemName t\n@timeStamps false\n@univariate true\n@targetLabel true\n@data\n"
                      "1,2,3:0.5\n2,3,4:1.5\n")
    with pytest.raises(ConfigError, match=r"@targetLabel true marks a regression target, not a class; this task "
                                          r"classifies"):
        ic.read_time_series(target, labelled=True)
    empty = tmp_path / "e.ts"
    empty.write_text("@problemName t\n@timeStamps false\n@univariate true\n@classLabel true a b\n@data\n")
    with pytest.raises(ValueError, match=r"no examples after @data; fix: add data lines after @data"):
        ic.read_time_series(empty, labelled=True)


@pytest.mark.parametrize("shape,message", [
    ((6, 3, 8, 8), "look channels-first; store them channels-last [N, H, W, C] (numpy.moveaxis(x, 1, -1))"),
    ((6, 64), "expected images [N, H, W] (grey) or [N, H, W, C] (channels last), got an array of shape (6, 64); "
              "reshape flat images to [N, H, W]"),
])
def test_npz_images_of_the_wrong_layout(shape, message, tmp_path):  # type: ignore[no-untyped-def]
    np.savez(tmp_path / "x.npz", x=np.zeros(shape, np.float32), y=np.arange(6) % 2)
    result = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "x.npz"), "--out",
                                 str(tmp_path)])
    assert _one_error(result).endswith(message)


def test_dev_labels_and_single_label_errors(tmp_path):
    train = _npz(tmp_path / "a.npz", labels=[0, 1] * 6)
    dev = _npz(tmp_path / "b.npz", labels=[0, 1, 2], seed=1)
    result = runner.invoke(app, ["train", "image-classification", "--train", str(train), "--dev", str(dev), "--out",
                                 str(tmp_path)])
    assert _one_error(result) == (f"error: {dev}: dev label(s) 2 never occur in the 12 training images (labels 0, 1); "
                                  "give dev data of the training classes only")
    one = _npz(tmp_path / "c.npz", labels=[3] * 12)
    result = runner.invoke(app, ["train", "image-classification", "--train", str(one), "--out", str(tmp_path)])
    assert _one_error(result) == (f"error: {one}: only one label (3) in the training data; a classifier needs at "
                                  "least two")


def test_a_dev_path_that_is_a_symlink_loop_is_not_a_traceback(tmp_path):
    # Path.resolve raises RuntimeError on a link loop (Python < 3.13): it escaped as a traceback
    os.symlink("loop", tmp_path / "loop")
    result = runner.invoke(app, ["train", "image-classification", "--train", str(_npz(tmp_path / "a.npz")),
                                 "--dev", str(tmp_path / "loop"), "--out", str(tmp_path)])
    assert _one_error(result).startswith(f"error: data not found: {tmp_path / 'loop'}")


def test_predict_inputs_an_image_run_cannot_read(runs, tmp_path):
    img = str(runs["img"])
    (tmp_path / "bad.npy").write_text("not an array")
    (tmp_path / "x.txt").write_text("1 2 3")
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "ok.npy", np.zeros((6, 6), np.float32))
    cases = [
        ([str(tmp_path / "bad.npy")], f"error: {tmp_path / 'bad.npy'}: cannot read the array ("),
        ([str(tmp_path / "x.txt")], f"error: {tmp_path / 'x.txt'}: cannot predict on .txt files; give PNG/JPEG images "
                                    "(or folders of them), .npy arrays or .npz archives"),
        ([str(tmp_path / "empty")], f"error: {tmp_path / 'empty'}: no picture files (PNG, JPEG, BMP, GIF, TIFF, WebP) "
                                    "in this folder or its subfolders"),
        (["--set", "train.epochs=2", str(tmp_path / "ok.npy")],
         "error: predict --set accepts data.* keys only, got ['train']"),
    ]
    for args, message in cases:
        assert _one_error(runner.invoke(app, ["predict", img, *args])).startswith(message), args


def test_a_picture_for_a_two_channel_model_is_refused(tmp_path):
    from rnnkit.tasks import image_classification as ic

    with pytest.raises(ConfigError, match=r"the model was trained on images of 2 channels, which picture files do "
                                          r"not have; give .npy or .npz arrays of that shape$"):
        ic.read_image_file(tmp_path / "x.png", (6, 6), 2)


def test_a_corrupt_permutation_is_a_one_line_error(tmp_path):
    import shutil

    data = _npz(tmp_path / "a.npz")
    result = runner.invoke(app, ["train", "image-classification", "--train", str(data), "--out", str(tmp_path),
                                 "--name", "perm", "--set", "train.epochs=1", "--set", "model.hidden_size=2",
                                 "--set", "data.sequence=permuted", "--quiet"])
    assert result.exit_code == 0, result.output
    order = json.loads((tmp_path / "perm" / "permutation.json").read_text())["order"]
    assert sorted(order) == list(range(36))
    for text in ("{}", "[1, 2]"):
        copy = tmp_path / f"perm-{len(text)}"
        shutil.copytree(tmp_path / "perm", copy)
        (copy / "permutation.json").write_text(text)
        line = _one_error(runner.invoke(app, ["predict", str(copy), str(data)]))
        assert line.startswith(f"error: run folder {copy}: permutation.json is missing or corrupt (")
        assert line.endswith("); train again")


# -- tasks.language_model --------------------------------------------------------------------------
def test_language_model_pieces():
    from rnnkit.tasks import language_model as lm

    assert lm.detach_state(None) is None
    with pytest.raises(ValueError, match=r"^softmax must be 'full' or 'adaptive', got 'sampled'$"):
        lm.RNNLanguageModel(20, embedding_dim=4, hidden_size=4, softmax="sampled")
    # 2 features over 2 tail clusters: sqrt(2) squared is 2.0000000000000004 > 2, so div_value sqrt(2) would
    # give the second tail a projection 2 // 2.0000000000000004 = 0 units wide
    model = lm.RNNLanguageModel(20, embedding_dim=2, hidden_size=2, num_layers=1, tie_weights=False,
                                softmax="adaptive", adaptive_cutoffs=(4, 8))
    assert model.adaptive is not None and model.adaptive.div_value == 1.0
    assert all(tail[0].out_features >= 1 for tail in model.adaptive.tail)
    ids = torch.randint(0, 20, (2, 5))
    scores, _ = model(ids, None)
    assert torch.allclose(scores.exp().sum(-1), torch.ones(2, 5), atol=1e-5)


def test_language_model_run_errors(runs, tmp_path):
    import shutil

    lm_run = tmp_path / "lm"
    shutil.copytree(runs["lm"], lm_run)
    one = tmp_path / "one.txt"
    one.write_text("\n")  # one token, <eos>, of a blank line: refused as a text of blank lines only
    line = _one_error(runner.invoke(app, ["evaluate", str(lm_run), "--data", str(one)]))
    assert line.endswith("the text is empty or only blank lines, so its perplexity would only say how well a line "
                         "break follows a line break; fix: give a file with text")
    assert _one_error(runner.invoke(app, ["evaluate", str(lm_run), "--data", str(one), "--set", "data.level=char"])) == (
        "error: evaluate --set data.level=char: a language-model run reads text as at training (tokenization, "
        "lowercasing and line endings are fixed); drop --set")
    (lm_run / "vocab.json").write_text("{")
    line = _one_error(runner.invoke(app, ["generate", str(lm_run), "--length", "2"]))
    assert line.startswith(f"error: run folder {lm_run}: tokenizer or vocabulary missing or corrupt (")
    assert line.endswith("); train again")


def test_generation_without_counts_starts_from_the_end_of_text_token(runs):
    from rnnkit.tasks import load_trained

    model = load_trained(str(runs["lm"]))
    model.prep.vocab.counts = {}  # type: ignore[attr-defined]
    assert model._unigram_scores() is None  # type: ignore[attr-defined]
    out = model.generate("", length=3, greedy=True)  # type: ignore[attr-defined]
    assert 1 <= len(out["tokens"]) <= 3


# -- tasks.tagging ---------------------------------------------------------------------------------
def test_crf_tag_probabilities_are_brute_force_marginals():
    import itertools

    from rnnkit.nn.crf import CRF
    from rnnkit.tasks.tagging import tag_probabilities

    torch.manual_seed(0)

    crf = CRF(3)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions = torch.randn(2, 4, 3)
    lengths = torch.tensor([4, 2])
    probs = tag_probabilities(crf, emissions, lengths)
    start, trans, end = crf.start.detach(), crf.transitions.detach(), crf.end.detach()
    for b, n in enumerate(lengths.tolist()):
        weights = torch.zeros(n, 3, dtype=torch.float64)
        total = 0.0
        for path in itertools.product(range(3), repeat=n):
            score = start[path[0]] + end[path[-1]] + sum(emissions[b, t, path[t]] for t in range(n))
            score = score + sum(trans[path[t - 1], path[t]] for t in range(1, n))
            w = math.exp(float(score))
            total += w
            for t, k in enumerate(path):
                weights[t, k] += w
        assert torch.allclose(probs[b, :n].double(), weights / total, atol=1e-5)
        assert bool((probs[b, n:] == 0).all())


def test_tagger_model_probabilities_use_its_crf(runs):
    from rnnkit.tasks import load_trained
    from rnnkit.tasks.tagging import TaggedDataset

    tagger = load_trained(str(runs["tag"]))
    emissions, lengths = torch.randn(1, 3, len(tagger.prep.tags)), torch.tensor([3])  # type: ignore[attr-defined]
    probs = tagger.model.tag_probabilities(emissions, lengths)  # type: ignore[attr-defined]
    crf = tagger.model.crf  # type: ignore[attr-defined]
    expected = crf.marginals(emissions, torch.ones(1, 3, dtype=torch.bool)) if crf is not None else emissions.softmax(-1)
    assert torch.allclose(probs, expected) and torch.allclose(probs.sum(-1), torch.ones(1, 3), atol=1e-5)
    assert len(TaggedDataset([([1], [[1]], None)] * 3)) == 3


def test_tagging_data_errors(tmp_path):
    from rnnkit.tasks.tagging import Config, group_sentences, read_sentences, scheme_note

    with pytest.raises(FileNotFoundError, match=r"^data file not found: .*nope.txt$"):
        read_sentences(tmp_path / "nope.txt", Config().data)
    with pytest.raises(ValueError, match=r"^1 document indices for 2 sentences: give one per sentence$"):
        group_sentences([1, 2], [0], 100)
    path = _conll(tmp_path / "b.txt", [[("New", "B-LOC"), ("York", "E-LOC")], [("in", "O"), ("New", "B-LOC")]])
    note = scheme_note(read_sentences(path, Config().data), "BIOES", "training")
    assert note is not None and f"{path}:5" in note
    assert "tag 'B-LOC' ends the sentence without closing its chunk, which BIOES does not allow" in note


def test_tagging_run_errors_and_reading_overrides(runs, tmp_path):
    import shutil

    tag = tmp_path / "tag"
    shutil.copytree(runs["tag"], tag)
    plain = _conll(tmp_path / "p.txt", [[("Anna", "O"), ("runs", "O")]])
    shifted = tmp_path / "s.txt"
    shifted.write_text("x Anna O\ny runs O\n\n")
    a = runner.invoke(app, ["predict", str(tag), "--conll", "--file", str(plain)])
    b = runner.invoke(app, ["predict", str(tag), "--conll", "--file", str(shifted), "--set", "data.token_column=1"])
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    tags_a = [line.split()[-1] for line in a.output.splitlines() if line.strip()]
    tags_b = [line.split()[-1] for line in b.output.splitlines() if line.strip()]
    assert len(tags_a) == 2 and tags_a == tags_b
    latin = tmp_path / "l.txt"
    latin.write_bytes("Zürich O\n\n".encode("latin-1"))
    line = _one_error(runner.invoke(app, ["predict", str(tag), "--conll", "--file", str(latin)]))
    assert "(this run reads tokens from column 0, data.token_column)" in line
    assert "add --set data.encoding_errors=replace" in line  # the reader's own fix, which predict takes
    docstart = tmp_path / "d.txt"
    docstart.write_text("-DOCSTART- O\n\n")
    assert _one_error(runner.invoke(app, ["diagnose", str(tag), "--data", str(docstart)])) == \
        f"error: {docstart}: no non-empty sentences"
    (tag / "words.json").write_text("{")
    line = _one_error(runner.invoke(app, ["predict", str(tag), "Anna runs"]))
    assert line.startswith(f"error: run folder {tag}: vocabulary files are missing or corrupt (")


def test_held_out_dev_sentences_stay_about_a_tenth_and_share_no_copy_with_training(tmp_path):
    # 19 copies of one sentence and one other: the first sentence drawn was a copy, and all 19 went to
    # dev (1 training / 19 dev); dev now holds the other sentence, and never more than a tenth
    a = [("Anna", "B-PER"), ("runs", "O")]
    b = [("Bob", "B-PER"), ("walks", "O")]
    for seed in range(3):
        train = _conll(tmp_path / "mix.txt", [a] * 19 + [b])
        result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--out", str(tmp_path), "--name",
                                     f"mix{seed}", "--set", f"train.seed={seed}", *TAG_TINY])
        assert result.exit_code == 0, result.output
        log = (tmp_path / f"mix{seed}" / "train.log").read_text()
        assert "19 training / 1 dev sentences" in log, log
        dev = (tmp_path / f"mix{seed}" / "dev.predictions.conll").read_text().split()
        assert dev[0] == "Bob"
    # a corpus of distinct sentences and some copies: dev has n // 10 sentences and no copy of a training one
    words = [f"w{i}" for i in range(40)]
    sentences = [[(words[i], "O"), (words[(i + 1) % 40], "B-PER")] for i in range(40)] + \
        [[(words[0], "O"), (words[1], "B-PER")]] * 5
    train = _conll(tmp_path / "many.txt", sentences)
    from rnnkit.tasks.tagging import Config, read_sentences

    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--out", str(tmp_path), "--name", "many",
                                 *TAG_TINY])
    assert result.exit_code == 0, result.output
    dev_list = [s.tokens for s in read_sentences(tmp_path / "many" / "dev.predictions.conll", Config().data)]
    dev_sents = set(dev_list)
    all_sents = [s.tokens for s in read_sentences(train, Config().data)]
    n_dev = sum(1 for s in all_sents if s in dev_sents)
    assert len(dev_list) == n_dev  # every copy of a dev sentence is in dev: none left in training
    assert 1 <= n_dev <= len(all_sents) // 10
    log = (tmp_path / "many" / "train.log").read_text()
    assert f"{len(all_sents) - n_dev} training / {n_dev} dev sentences" in log


def test_a_corpus_of_one_repeated_sentence_keeps_training_sentences(tmp_path):
    a = [("Anna", "B-PER"), ("runs", "O")]
    train = _conll(tmp_path / "dup.txt", [a] * 12)
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--out", str(tmp_path), "--name", "dup",
                                 *TAG_TINY])
    assert result.exit_code == 0, result.output
    assert "11 training / 1 dev sentences" in (tmp_path / "dup" / "train.log").read_text()
    one = _conll(tmp_path / "one.txt", [a])
    assert _one_error(runner.invoke(app, ["train", "tagging", "--train", str(one), "--out", str(tmp_path),
                                          *TAG_TINY])) == (
        f"error: {one}: only 1 non-empty sentence(s), all held out for model selection, none left to train on; "
        "give more sentences or a dev file with --dev")


# -- metrics.entities ------------------------------------------------------------------------------
def test_entity_scores_refuse_misaligned_inputs():
    from rnnkit.metrics.entities import entity_scores

    with pytest.raises(ValueError, match=r"^gold has 2 sentences but predicted has 1$"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match=r"^sentence 1: 2 gold tags but 1 predicted$"):
        entity_scores([["O"], ["B-PER", "O"]], [["O"], ["B-PER"]])


def test_fit_refuses_dev_data_without_batches():
    # Lightning skips validation over an empty loader: fit trained and returned an empty history silently
    x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    dev = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:0], y[:0]), batch_size=4)
    with pytest.raises(ValueError) as err:
        engine.fit(tnn.Linear(2, 2), train, dev, loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]),
                   predict_fn=lambda m, b: (m(b[0]).argmax(-1), b[1]),
                   metric_fn=lambda p, t: {"accuracy": float((p == t).float().mean())},
                   options=engine.EngineOptions(epochs=1, monitor="accuracy", mode="max", accelerator="cpu",
                                                progress=False), log=lambda _: None)
    assert str(err.value) == ("the dev data give no batches (no dev examples), so no epoch could be scored or "
                              "selected; give dev data with at least one example")


def test_an_unreadable_folder_holds_no_pictures(tmp_path, monkeypatch):
    from rnnkit.tasks import image_classification as ic

    locked = tmp_path / "locked"
    locked.mkdir()
    real = Path.iterdir

    def iterdir(self):  # type: ignore[no-untyped-def]
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert ic._holds_pictures(locked) is False


def test_a_resume_after_averaging_began_ends_as_an_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    # dev F1 stays 0 (no entity is ever predicted or gold): epoch 2 does not improve, so averaging starts
    # there and the checkpoint after epoch 2 carries the running mean that resuming must restore
    a = [("Anna", "O"), ("runs", "O"), ("home", "O")]
    b = [("Bob", "O"), ("walks", "B-PER")]
    train = _conll(tmp_path / "t.txt", [a, b] * 5)
    dev = _conll(tmp_path / "d.txt", [a])
    common = ["--train", str(train), "--dev", str(dev), "--out", str(tmp_path), "--set", "train.average_weights=true",
              "--set", "train.patience=null", *TAG_TINY[2:]]
    full = runner.invoke(app, ["train", "tagging", *common, "--name", "full", "--set", "train.epochs=3"])
    part = runner.invoke(app, ["train", "tagging", *common, "--name", "part", "--set", "train.epochs=2"])
    assert full.exit_code == 0 and part.exit_code == 0, (full.output, part.output)
    resumed = runner.invoke(app, ["train", "tagging", "--resume", str(tmp_path / "part"), "--set", "train.epochs=3",
                                  "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    want, got = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        assert torch.allclose(want[key], got[key], atol=1e-6), key
