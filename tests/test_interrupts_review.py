"""Ctrl-C and SIGTERM as a demanding user (or a cluster scheduler, or ``timeout``) sends them: during
training from the command line and from the Python API, twice in a row, and during the other
commands (review regressions)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from models.test_ctrl_c import _model  # tests/ is on sys.path (rootdir conftest)
from rnnkit import cli
from rnnkit.cli import app
from rnnkit.tasks.engine import EngineOptions, fit
from rnnkit.tasks.run import RunDir
from rnnkit.training import Callback

runner = CliRunner()
SMALL = ["--train", "builtin:digits", "--set", "model.hidden_size=8", "--set", "train.patience=null"]


def _send_own(signum: int) -> None:
    """Send ``signum`` to this process, as a scheduler or a terminal would, but only while someone
    handles it (a default SIGTERM would end the test run itself)."""
    handler = signal.getsignal(signum)
    assert callable(handler), f"nothing handles signal {signum} here: {handler!r}"
    os.kill(os.getpid(), signum)


class _SignalAt(Callback):
    def __init__(self, batch: int, signum: int) -> None:
        super().__init__()
        self.batch, self.signum = batch, signum

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if batch == self.batch:
            _send_own(self.signum)


# -- SIGTERM in the Python API: not a success -------------------------------------------------------
def test_sigterm_during_model_fit_exits_with_status_143_not_0() -> None:
    # Lightning's SIGTERMException is a SystemExit with code None: a training script that a scheduler
    # stopped exited with status 0, as if it had finished
    model, x, y = _model()
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[_SignalAt(2, signal.SIGTERM)])
    assert stop.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is handler
    assert np.isfinite(model.fit(x, y, epochs=1, batch_size=8, verbose=0).history["loss"][0])  # still usable


def test_sigterm_during_a_task_fit_exits_with_status_143() -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    steps: list[int] = []

    def loss_fn(mdl: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        steps.append(1)
        if len(steps) == 3:
            _send_own(signal.SIGTERM)
        return nn.functional.mse_loss(mdl(batch[0]), batch[1])

    with pytest.raises(SystemExit) as stop:
        fit(nn.Linear(4, 1), DataLoader(data, batch_size=8), DataLoader(data, batch_size=32), loss_fn=loss_fn,
            predict_fn=lambda mdl, batch: (mdl(batch[0]), batch[1]), metric_fn=lambda p, t: {"score": 0.0},
            options=EngineOptions(epochs=2, monitor="score", mode="max", patience=None, progress=False),
            log=lambda _: None)
    assert stop.value.code == 143


def test_a_callbacks_own_exit_code_is_kept() -> None:
    model, x, y = _model()

    class Exit(Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            sys.exit(None)

    with pytest.raises(SystemExit) as stop:
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[Exit()])
    assert stop.value.code is None


# -- the command line: a second Ctrl-C while the first one is cleaned up ----------------------------
def _interrupted_after_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    import rnnkit.tasks.image_classification as task

    def interrupted(config, train_path, dev_path, run, log, progress=True):  # type: ignore[no-untyped-def]
        run.file("checkpoint-best.safetensors").write_bytes(b"weights")
        raise KeyboardInterrupt

    monkeypatch.setattr(task, "train", interrupted)


def test_a_second_ctrl_c_while_the_run_folder_is_written_keeps_the_message_and_log(tmp_path, monkeypatch):
    _interrupted_after_weights(monkeypatch)
    write_text = RunDir.write_text

    def second_ctrl_c(self: RunDir, name: str, text: str) -> Path:
        if "error: interrupted" in text:  # the user presses Ctrl-C again, impatient
            os.kill(os.getpid(), signal.SIGINT)
        return write_text(self, name, text)

    monkeypatch.setattr(RunDir, "write_text", second_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    result = runner.invoke(app, ["train", "image-classification", *SMALL, "--out", str(tmp_path), "--name", "r"])
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C works again after the command
    assert result.exit_code == 130
    assert f"interrupted: {tmp_path / 'r'} keeps the weights written so far" in result.output
    assert (tmp_path / "r" / "train.log").read_text().splitlines()[-2:] == [
        "error: interrupted", "no checkpoint-last.ckpt to resume from: --resume cannot continue this run; train again"]


def test_after_an_interrupt_the_command_ignores_ctrl_c_while_python_shuts_down(monkeypatch):
    # a second Ctrl-C in torch's exit handlers printed "Exception ignored in atexit callback" and a traceback
    monkeypatch.setattr(cli, "app", lambda: sys.exit(130))
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            cli.main()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, handler)
    monkeypatch.setattr(cli, "app", lambda: sys.exit(2))
    with pytest.raises(SystemExit):
        cli.main()
    assert signal.getsignal(signal.SIGINT) is handler  # other exits leave Ctrl-C alone


def _typer_app(work: Callable[[], None]) -> typer.Typer:
    """A command line whose command ``work`` runs ``work`` (a second command keeps typer's subcommands)."""
    small = typer.Typer()
    small.command("work")(work)

    @small.command()
    def other() -> None:
        pass

    return small


def _interrupted() -> None:
    raise KeyboardInterrupt


def _main(monkeypatch: pytest.MonkeyPatch, args: list[str], application: typer.Typer = app) -> int:
    """The exit status of ``rnnkit ARGS`` run through ``cli.main`` (the conftest restores the signal
    handlers it installs)."""
    monkeypatch.setattr(cli, "app", lambda: application(args))
    with pytest.raises(SystemExit) as stop:
        cli.main()
    return int(stop.value.code)


def test_ctrl_c_in_a_command_that_says_nothing_prints_one_line_and_exits_130(monkeypatch, capsys):
    # typer turned it into a silent exit 130: evaluate, predict, translate, transcribe, diagnose said nothing
    assert _main(monkeypatch, ["work"], _typer_app(_interrupted)) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_a_command_that_said_it_was_interrupted_gets_no_second_line(tmp_path, monkeypatch, capsys):
    _interrupted_after_weights(monkeypatch)
    assert _main(monkeypatch, ["train", "image-classification", *SMALL, "--out", str(tmp_path), "--name", "r"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("interrupted: ") and "interrupted" not in err[-2]


# -- the command line with real signals ------------------------------------------------------------
def _rnnkit(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", "from rnnkit.cli import main; main()", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_epochs(history: Path, epochs: int, p: subprocess.Popen) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and p.poll() is None and not (
            history.is_file() and len(history.read_text().splitlines()) > epochs):
        time.sleep(0.1)
    assert p.poll() is None, p.communicate()


def test_sigterm_during_training_says_terminated_exits_143_and_the_run_resumes(tmp_path):
    run = tmp_path / "r"
    p = _rnnkit("train", "image-classification", *SMALL, "--set", "train.epochs=1000", "--out", str(tmp_path),
                "--name", "r")
    _wait_for_epochs(run / "history.csv", 2, p)
    p.send_signal(signal.SIGTERM)  # what timeout and a cluster scheduler send
    _, err = p.communicate(timeout=90)
    assert p.returncode == 143 and "Traceback" not in err, err  # was 130, "interrupted", as for Ctrl-C
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"terminated (SIGTERM): {run} keeps the weights written so far")
    assert last.endswith(f"continue it with: rnnkit train image-classification --resume {run}")
    assert (run / "train.log").read_text().splitlines()[-2] == "error: terminated (SIGTERM)"
    assert not list(run.glob("*.partial"))
    done = len((run / "history.csv").read_text().splitlines()) - 1
    resumed = runner.invoke(app, ["train", "image-classification", "--resume", str(run), "--set",
                                  f"train.epochs={done + 1}", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert len((run / "history.csv").read_text().splitlines()) == done + 2
    assert (run / "model.safetensors").is_file()


# -- Ctrl-C while the checkpoint is written: nothing half-written, and the resumed run is the same ---
def test_ctrl_c_while_writing_the_checkpoint_leaves_none_half_written_and_resumes_to_the_same_model(
        tmp_path, monkeypatch):
    from rnnkit.training.checkpoint_io import DirectCheckpointIO

    args = ["train", "image-classification", *SMALL, "--set", "train.epochs=3", "--out", str(tmp_path), "--quiet"]
    assert runner.invoke(app, [*args, "--name", "straight"]).exit_code == 0
    save = DirectCheckpointIO.save_checkpoint
    calls: list[int] = []

    def interrupted_save(self, checkpoint, path, storage_options=None):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:  # epoch 2's checkpoint: half of it on disk, then Ctrl-C
            Path(path).write_bytes(b"half a checkpoint")
            raise KeyboardInterrupt
        return save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(DirectCheckpointIO, "save_checkpoint", interrupted_save)
    handler = signal.getsignal(signal.SIGINT)
    result = runner.invoke(app, [*args, "--name", "split"])
    assert result.exit_code == 130 and signal.getsignal(signal.SIGINT) is handler
    assert not list((tmp_path / "split").glob("*.partial"))
    monkeypatch.setattr(DirectCheckpointIO, "save_checkpoint", save)
    resumed = runner.invoke(app, ["train", "image-classification", "--resume", str(tmp_path / "split"), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert "after epoch 1 of 3" in (tmp_path / "split" / "train.log").read_text()
    assert (tmp_path / "split" / "history.csv").read_text() != ""
    straight, split = (tmp_path / "straight" / "model.safetensors"), (tmp_path / "split" / "model.safetensors")
    assert straight.read_bytes() == split.read_bytes()


def test_ctrl_c_in_compare_is_said_once(tmp_path, monkeypatch, capsys):
    import rnnkit.insight.compare as compare

    def interrupted(task, cells, train, log, **kw):  # type: ignore[no-untyped-def]
        log("interrupted during rnn seed 0: no report written")
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "compare_cells", interrupted)
    assert _main(monkeypatch, ["compare", "image-classification", "--train", "builtin:digits",
                               "--out", str(tmp_path / "c")]) == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted during rnn seed 0: no report written"]


# -- SIGTERM outside a fit: data loading, evaluation, prediction, bench ------------------------------
def test_a_script_under_exit_on_sigterm_runs_its_finally_blocks_and_exits_143(tmp_path):
    # Python's default SIGTERM ends the process at once: no finally, no cleanup, no message
    script = ("import os, signal, time\n"
              "from rnnkit.training.interrupts import exit_on_sigterm\n"
              "exit_on_sigterm()\n"
              "try:\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    time.sleep(30)\n"
              "finally:\n"
              "    print('cleaned up', flush=True)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143 and done.stdout == "cleaned up\n", done.stderr


def test_sigterm_while_train_reads_its_data_removes_the_empty_run_folder_and_exits_143(tmp_path, monkeypatch,
                                                                                       capsys):
    # it ended the process at once: the run folder stayed behind with config.yaml alone, nothing said
    import rnnkit.tasks.image_classification as images

    reader = images.read_images

    def slow_reader(*args, **kwargs):  # the scheduler's SIGTERM arrives while the data is read
        _send_own(signal.SIGTERM)
        return reader(*args, **kwargs)

    monkeypatch.setattr(images, "read_images", slow_reader)
    code = _main(monkeypatch, ["train", "image-classification", *SMALL, "--out", str(tmp_path), "--name", "r"])
    assert code == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"terminated (SIGTERM): {tmp_path / 'r'} removed: training wrote no weights yet (nothing to resume)"
    assert not any("terminated" in line for line in err[:-1])
    assert not (tmp_path / "r").exists()


def test_sigterm_in_a_command_that_says_nothing_prints_one_line_and_exits_143(monkeypatch, capsys):
    def terminated() -> None:
        _send_own(signal.SIGTERM)
        time.sleep(30)

    assert _main(monkeypatch, ["work"], _typer_app(terminated)) == 143
    assert capsys.readouterr().err == "terminated (SIGTERM)\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # and a second one while Python shuts down


def test_sigterm_in_bench_is_said_once_with_status_143(tmp_path, monkeypatch, capsys):
    import rnnkit.insight.memory as memory

    def terminated(*args, **kwargs):
        _send_own(signal.SIGTERM)
        time.sleep(30)

    monkeypatch.setattr(memory, "run_memory_benchmark", terminated)
    code = _main(monkeypatch, ["bench", "memory", "--out", str(tmp_path / "b"), "--quiet"])
    assert code == 143
    assert capsys.readouterr().err.strip().splitlines() == [
        f"terminated (SIGTERM): the benchmark stopped before its end; nothing written to {tmp_path / 'b'}"]


def test_sigterm_at_the_end_of_a_fit_is_not_swallowed_by_lightning() -> None:
    # Lightning checks for a SIGTERM between batches and at each epoch end: one that came later (in
    # on_train_end) was lost, and the script went on as if nothing had arrived
    model, x, y = _model()

    class SignalAtTheEnd(Callback):
        def on_train_end(self, logs: dict | None = None) -> None:
            _send_own(signal.SIGTERM)

    with pytest.raises(SystemExit) as stop:
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[SignalAtTheEnd()])
    assert stop.value.code == 143
    assert len(model.history.epoch) == 2  # the fit had finished: its weights are the finished ones


def test_ctrl_c_while_the_command_line_is_imported_ends_quietly_with_130(monkeypatch):
    # a Ctrl-C in the first moment of `rnnkit ...` (typer and rich being imported) printed a traceback
    import builtins

    import rnnkit.__main__ as entry

    real_import = builtins.__import__

    def interrupted_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "cli" and level == 1:
            raise KeyboardInterrupt
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", interrupted_import)
    with pytest.raises(SystemExit) as stop:
        entry.main()
    assert stop.value.code == 130 and stop.value.__cause__ is None and stop.value.__suppress_context__


def test_the_console_script_and_python_m_rnnkit_run_the_command_line():
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"rnnkit": "rnnkit.__main__:main"}
    done = subprocess.run([sys.executable, "-m", "rnnkit", "version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "rnnkit" in done.stdout, done.stderr


def test_diagnose_writes_its_three_files_even_when_ctrl_c_comes_while_it_plots(tmp_path, monkeypatch):
    # a Ctrl-C while the plot was drawn left diagnose.md and diagnose.json without gradient_norms.png
    import rnnkit.insight.gradients as g

    plot = g.plot_gradient_norms

    def interrupted_plot(*args, **kwargs):
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # ignored while the files are written
        os.kill(os.getpid(), signal.SIGINT)
        return plot(*args, **kwargs)

    monkeypatch.setattr(g, "plot_gradient_norms", interrupted_plot)
    out = tmp_path / "d"
    result = runner.invoke(app, ["diagnose", "--fresh", "--cell", "rnn", "--length", "5", "--hidden-size", "4",
                                 "--samples", "2", "--exploding-scale", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["diagnose.json", "diagnose.md", "gradient_norms.png"]


def test_sigterm_in_a_quiet_compare_is_said_once_with_status_143(tmp_path, monkeypatch, capsys):
    import rnnkit.insight.compare as compare

    def terminated(task, cells, train, log, **kw):  # type: ignore[no-untyped-def]
        _send_own(signal.SIGTERM)  # between two runs, outside any fit
        time.sleep(30)

    monkeypatch.setattr(compare, "compare_cells", terminated)
    code = _main(monkeypatch, ["compare", "image-classification", "--train", "builtin:digits", "--quiet",
                               "--out", str(tmp_path / "c")])
    assert code == 143
    assert capsys.readouterr().err.splitlines() == [
        f"terminated (SIGTERM): no report written; the finished runs are in {tmp_path / 'c'}; start again with "
        "--overwrite"]


def test_a_ctrl_c_in_compare_stops_at_once_not_after_the_batch(tmp_path, monkeypatch):
    # compare's runs are started again, not resumed: a first Ctrl-C said "stopping after this batch
    # with a checkpoint to resume from" and trained on (tasks.engine's stop request needs mid-epoch checkpoints)
    import rnnkit.tasks.engine as engine
    from rnnkit.insight.compare import compare_cells

    fit, seen = engine.fit, []

    def recording_fit(*args, **kwargs):
        seen.append(engine._CHECKPOINT_SECONDS.get())
        return fit(*args, **kwargs)

    monkeypatch.setattr(engine, "fit", recording_fit)
    compare_cells("image-classification", ["rnn"], "builtin:digits", out=tmp_path / "c", log=lambda _: None,
                  overrides=["train.epochs=1", "model.hidden_size=8", "data.max_train_examples=100"])
    assert seen[1:] == [None]  # the timed run (the warm-up before it trains one batch, no checkpoints)
    assert engine._CHECKPOINT_SECONDS.get() is not None  # the default again outside compare
