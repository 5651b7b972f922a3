"""The command line and its config handling as a demanding user meets them (review regressions)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rnnkit.cli import _json_text, app
from rnnkit.tasks import TASKS, get_task
from rnnkit.tasks.config import ConfigError, load_config

runner = CliRunner()
IMAGE = get_task("image-classification").Config


def _error(result) -> str:  # type: ignore[no-untyped-def]
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


# -- --set values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text,value", [("true", True), ("false", False), ("yes", True), ("no", False),
                                        ("1", True), ("0", False), ("On", True), ("FALSE", False)])
def test_set_reads_booleans_in_every_usual_spelling(text, value):
    assert load_config(IMAGE, None, [f"data.standardize={text}"]).data.standardize is value


@pytest.mark.parametrize("text", ["null", "none", "None", "~"])
def test_set_reads_null_and_none_for_a_nullable_key(text):
    assert load_config(IMAGE, None, ["train.max_minutes=5", f"train.max_minutes={text}"]).train.max_minutes is None


def test_set_numbers_lists_and_a_key_given_twice():
    cfg = load_config(IMAGE, None, ["train.learning_rate=1e-3", "train.epochs=3", "train.epochs=4",
                                    "data.image_shape=[16, 16]"])
    assert cfg.train.learning_rate == 1e-3 and cfg.train.epochs == 4 and cfg.data.image_shape == [16, 16]
    assert load_config(IMAGE, None, ["data.image_shape=16,12"]).data.image_shape == [16, 12]


@pytest.mark.parametrize("override,message", [
    ("data.standardize=maybe", "data.standardize: expected true or false (or yes/no, 1/0), got 'maybe'"),
    ("data.standardize=2", "data.standardize: expected true or false (or yes/no, 1/0), got 2"),
    ("train.learning_rate=true", "train.learning_rate: expected a number, got true"),
    ("train.max_minutes=abc", "train.max_minutes: expected a number or null, got 'abc'"),
    ("data.image_shape=a,b", "data.image_shape: expected a list of integers or null, got 'a,b'"),
    ("model.hidden_size.x=3", "model.hidden_size is a value, not a section"),
    ("model..cell=gru", "the key 'model..cell' has an empty part"),
    ("=3", "the key '' has an empty part"),
    ("model.cell=null", "model.cell: expected a string, got null"),  # not the cell name 'None'
])
def test_a_wrong_value_names_the_key_the_type_and_the_value(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(IMAGE, None, [override])
    assert message in str(err.value)


@pytest.mark.parametrize("override,suggestion", [
    ("train.epoch=3", "did you mean train.epochs?"),
    ("model.hiden_size=3", "did you mean model.hidden_size?"),
    ("epochs=3", "did you mean train.epochs?"),  # a key of a section given at the top
    ("modle.cell=gru", "did you mean model?"),
])
def test_an_unknown_key_suggests_the_closest_valid_one(override, suggestion):
    result = runner.invoke(app, ["train", "image-classification", "--print-config", "--set", override])
    message = _error(result)
    assert "valid keys here:" in message and message.endswith(suggestion)


# -- --config files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("task", sorted(TASKS))
def test_print_config_is_yaml_that_config_reads_back_unchanged(task, tmp_path):
    first = runner.invoke(app, ["train", task, "--print-config"])
    assert first.exit_code == 0
    assert isinstance(yaml.safe_load(first.output), dict)
    (tmp_path / "c.yaml").write_text(first.output, encoding="utf-8")
    again = runner.invoke(app, ["train", task, "--print-config", "--config", str(tmp_path / "c.yaml")])
    assert again.exit_code == 0 and again.output == first.output
    assert "None" not in first.output.split("# options:")[1].split("):")[0]  # defaults in YAML words: null


@pytest.mark.parametrize("text,message", [
    ("model:\n  hidden_size: 3\n  cell: [gru\ntrain:\n  epochs: 2\n", "is not valid YAML: line 4, column 6"),
    ("model:\n  hidden_size: 3\n\tcell: gru\n", "is not valid YAML: line 3, column 1"),
    ("just a string\n", "expected a mapping of keys"),
    ("42\n", "expected a mapping of keys"),
    ("- a\n- b\n", "expected a mapping of keys"),
    ("model:\n  hidden_size: 3\nmodel:\n  cell: gru\n", "line 3, column 1: key 'model' given again (first on line 1)"),
    ("model:\n  hiden_size: 3\n", "unknown key model.hiden_size; valid keys here: bidirectional, cell"),
])
def test_a_bad_config_file_is_a_one_line_error(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    assert message in _error(runner.invoke(app, ["train", "image-classification", "--print-config",
                                                 "--config", str(path)]))


def test_a_config_that_is_not_utf8_or_is_a_folder_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfemodel: {}\n")
    assert f"{path} is not a UTF-8 text file" in _error(
        runner.invoke(app, ["train", "image-classification", "--print-config", "--config", str(path)]))
    assert "config file is a folder, not a file" in _error(
        runner.invoke(app, ["train", "image-classification", "--print-config", "--config", str(tmp_path)]))
    (tmp_path / "empty.yaml").write_text("# nothing but a comment\n")  # the defaults
    assert runner.invoke(app, ["train", "image-classification", "--print-config", "--config",
                               str(tmp_path / "empty.yaml")]).exit_code == 0


# -- output ----------------------------------------------------------------------------------------------
def test_json_output_is_valid_json_even_with_nan_metrics():
    text = _json_text({"mase": float("nan"), "nested": [1.0, float("inf")], "ok": 0.5}, indent=2)
    assert json.loads(text) == {"mase": None, "nested": [1.0, None], "ok": 0.5}
    assert _json_text({"a": 1}) == '{"a": 1}'


def test_diagnose_with_an_unwritable_out_is_a_one_line_error(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    result = runner.invoke(app, ["diagnose", "--fresh", "--cell", "rnn", "--length", "4", "--hidden-size", "4",
                                 "--samples", "2", "--exploding-scale", "0", "--out", str(tmp_path / "d")])
    assert "cannot write the results to --out" in _error(result)


def _rnnkit(*args: str, **kw) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", "from rnnkit.cli import main; main()", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_a_train_with_stdout_in_a_file_writes_no_progress_bar_there(tmp_path):
    p = _rnnkit("train", "image-classification", "--train", "builtin:digits", "--out", str(tmp_path),
                "--set", "train.epochs=1", "--set", "model.hidden_size=8")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out == "" and "Epoch" not in out and "\x1b" not in out + err  # results and notes on stderr
    assert "run folder:" in err


def test_ctrl_c_during_training_is_one_line_and_the_run_folder_says_how_to_resume(tmp_path):
    p = _rnnkit("train", "image-classification", "--train", "builtin:digits", "--out", str(tmp_path), "--name",
                "run 1", "--set", "train.epochs=1000", "--set", "train.patience=null", "--set",
                "model.hidden_size=8", preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = tmp_path / "run 1" / "history.csv"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (log.is_file() and len(log.read_text().splitlines()) > 2):
        time.sleep(0.1)  # two epochs done: a checkpoint to resume from
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: {tmp_path / 'run 1'} keeps the weights written so far")
    assert last.endswith(f"continue it with: rnnkit train image-classification --resume '{tmp_path / 'run 1'}'")
    lines = (tmp_path / "run 1" / "train.log").read_text().splitlines()
    assert lines[-2:] == ["error: interrupted", last.split("; ", 1)[1]]


def test_ctrl_c_before_any_weights_says_the_run_folder_was_removed(tmp_path, monkeypatch):
    import rnnkit.tasks.image_classification as task

    def interrupted(config, train_path, dev_path, run, log, progress=True):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(task, "train", interrupted)
    result = runner.invoke(app, ["train", "image-classification", "--train", "builtin:digits", "--out",
                                 str(tmp_path), "--name", "r"])
    assert result.exit_code == 130
    assert f"interrupted: {tmp_path / 'r'} removed: training wrote no weights yet" in result.output
    assert not (tmp_path / "r").exists()


def test_a_closed_pipe_on_tasks_and_print_config_prints_no_traceback():
    for args in (["tasks"], ["train", "text-classification", "--print-config"]):
        script = ("import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1); "
                  f"sys.argv = ['rnnkit', *{args!r}]; from rnnkit.cli import main; main()")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and "Traceback" not in done.stderr and done.stderr == "", done.stderr


def test_piped_output_has_no_escape_codes_and_relative_non_ascii_paths_work(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    folder = tmp_path / "dätä ü"
    folder.mkdir()
    done = subprocess.run([sys.executable, "-c", "from rnnkit.cli import main; main()", "train",
                           "image-classification", "--train", "builtin:digits", "--out", "rüns", "--name", "läuf",
                           "--set", "train.epochs=1", "--set", "model.hidden_size=8", "--quiet"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "rüns/läuf\n", done.stderr
    for args in (["--help"], ["train", "--help"], ["tasks"], ["nosuchcommand"],
                 ["evaluate", str(folder / "rüns" / "läuf"), "--data", "builtin:digits"]):
        done = subprocess.run([sys.executable, "-c", "from rnnkit.cli import main; main()", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        assert "\x1b" not in done.stdout + done.stderr and done.returncode in (0, 2), (args, done.stderr)
