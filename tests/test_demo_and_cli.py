"""The README's main job (rnnkit demo on the shipped digits) and basic CLI behaviour."""

from __future__ import annotations

from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.datasets import load_digits
from rnnkit.demo import DemoConfig, run_demo

runner = CliRunner()


def test_shipped_digits_dataset():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert images.min() >= 0.0 and images.max() <= 1.0 and set(labels.tolist()) == set(range(10))


def test_demo_trains_a_real_recurrent_model():
    metrics = run_demo(DemoConfig(cell="gru", epochs=4, hidden_size=32), quiet=True)
    assert metrics["test_accuracy"] > 0.8  # chance is 0.1


def test_demo_command_and_errors():
    result = runner.invoke(app, ["demo", "--epochs", "1", "--quiet"])
    assert result.exit_code == 0 and "test_accuracy=" in result.output
    result = runner.invoke(app, ["demo", "--cell", "transformer"])
    assert result.exit_code != 0 and "unknown cell" in result.output
    assert runner.invoke(app, ["version"]).output.startswith("rnnkit ")
    result = runner.invoke(app, ["train", "no-such-task", "--train", "x"])
    assert result.exit_code == 2 and "unknown task 'no-such-task'" in result.output


def test_a_closed_output_pipe_exits_quietly(monkeypatch, capsys):  # type: ignore[no-untyped-def]
    """``rnnkit predict ... | head``: the reader going away is no error message, and no traceback."""
    import subprocess
    import sys

    import pytest

    import rnnkit.cli as cli

    def closed() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "app", closed)
    monkeypatch.setattr(cli, "_closed_pipe", lambda: 1)  # keep pytest's stdout
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    exit_from_command = cli._fail(BrokenPipeError(32, "Broken pipe"))
    assert exit_from_command.exit_code == 1
    assert capsys.readouterr().err == ""
    # end to end: a real closed pipe (the reader exits before the help text is written)
    script = ("import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1); sys.argv = ['rnnkit', '--help']; "
              "from rnnkit.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "Broken pipe" not in done.stderr


def test_a_missing_input_file_names_the_fix(tmp_path):  # type: ignore[no-untyped-def]
    import pytest

    from rnnkit.cli import _file_inputs

    with pytest.raises(FileNotFoundError, match=r"input file not found: .*missing\.txt; fix: give the path"):
        _file_inputs(object(), str(tmp_path / "missing.txt"))
    with pytest.raises(FileNotFoundError, match="is a folder, not a file"):
        _file_inputs(object(), str(tmp_path))


def test_os_errors_name_a_fix_that_fits_the_error(monkeypatch):
    import errno

    import typer

    from rnnkit.cli import _fail

    captured: list[str] = []
    monkeypatch.setattr(typer, "echo", lambda message="", err=False, **kw: captured.append(str(message)))
    _fail(OSError(errno.ENOSPC, "No space left on device", "/tmp/tmpx"))
    assert captured[-1] == ("error: /tmp/tmpx: No space left on device; free some space there (or write elsewhere: "
                            "--out, TMPDIR)")
    _fail(OSError(errno.EISDIR, "Is a directory", "runs"))
    assert captured[-1] == "error: runs: Is a directory; check the path"
