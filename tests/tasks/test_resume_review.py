"""Review of ``rnnkit train --resume`` on a flaky machine: tied weights, damaged, unreadable or
missing checkpoints, a full disk while checkpointing, and speech stopped mid-epoch."""

from __future__ import annotations

import errno
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks.engine import LAST_CHECKPOINT

from .test_resume import _digits_run, _weights

runner = CliRunner()


def _resume(task: str, run: Path, *sets: str) -> object:
    args = ["train", task, "--resume", str(run), "--quiet"]
    for s in sets:
        args += ["--set", s]
    return runner.invoke(app, args)


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_a_tied_weights_language_model_resumes_when_its_best_epoch_came_before_the_stop(tmp_path):
    """The language model ties its embedding and output weights; checkpoint-best.safetensors holds the
    shared tensor once. Resuming used to load it as is, so the final load of the best weights failed
    with 'Missing key(s) in state_dict: "decoder.weight"' (a traceback) whenever no resumed epoch beat it."""
    words = ["the", "cat", "sat", "on", "the", "mat", "and", "a", "dog", "ate", "red", "apple", "it", "rained"]
    g = torch.Generator().manual_seed(0)
    text = "\n".join(" ".join(words[i] for i in torch.randint(0, len(words), (12,), generator=g).tolist())
                     for _ in range(120))
    (tmp_path / "train.txt").write_text(text + "\n")
    args = ["train", "language-model", "--train", str(tmp_path / "train.txt"), "--out", str(tmp_path), "--quiet",
            "--name", "r", "--set", "model.embedding_dim=8", "--set", "model.hidden_size=8",
            "--set", "model.num_layers=1", "--set", "train.batch_size=4", "--set", "train.bptt=8",
            "--set", "train.accelerator=cpu", "--set", "train.epochs=1"]
    assert runner.invoke(app, args).exit_code == 0
    before = _weights(tmp_path / "r")
    result = _resume("language-model", tmp_path / "r")  # nothing left to train: the best is the saved one
    assert result.exit_code == 0, result.output
    after = _weights(tmp_path / "r")
    assert all(torch.equal(before[k], after[k]) for k in before)


def _flip_a_tensor_byte(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor stored in the checkpoint (the zip stays valid)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.compress_size)
    name_len = int.from_bytes(data[info.header_offset + 26: info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_a_one_line_error_even_when_the_damage_is_a_flipped_bit(tmp_path):
    """torch.load does not check the zip CRCs: a bit flipped in a stored tensor resumed silently with
    that tensor changed. Damage of any kind is one line (no 'training stopped' note before it)."""
    run = _digits_run(tmp_path, "r", 8)
    good = (run / LAST_CHECKPOINT).read_bytes()
    for damage in ("flip", "truncate"):
        if damage == "flip":
            _flip_a_tensor_byte(run / LAST_CHECKPOINT)
        else:
            (run / LAST_CHECKPOINT).write_bytes(good[: len(good) // 3])
        result = _resume("image-classification", run, "train.epochs=2")
        assert result.exit_code == 2, result.output
        assert _lines(result.output) == [_lines(result.output)[0]] and "is corrupt or truncated" in result.output
        assert result.output.startswith("error: ") and "train a new run" in result.output
        (run / LAST_CHECKPOINT).write_bytes(good)
    assert (run / "model.safetensors").stat().st_size != 0  # the run folder is untouched


def test_an_unreadable_checkpoint_is_not_called_corrupt(tmp_path, monkeypatch):
    """A checkpoint this user may not read is not damaged: the fix is its permissions, not a new run."""
    from rnnkit.training import resuming

    run = _digits_run(tmp_path, "r", 8)

    def denied(path: object, *args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(resuming, "zipfile", SimpleNamespace(ZipFile=denied))  # the checkpoint only, not the data
    result = _resume("image-classification", run, "train.epochs=2")
    assert result.exit_code == 2 and len(_lines(result.output)) == 1, result.output
    assert "cannot be read (Permission denied)" in result.output and "chmod u+r" in result.output
    assert "corrupt" not in result.output


def test_a_corrupt_best_checkpoint_is_a_one_line_error(tmp_path):
    run = _digits_run(tmp_path, "r", 8)
    (run / "checkpoint-best.safetensors").write_bytes(b"\x00" * 12)
    result = _resume("image-classification", run, "train.epochs=2")
    assert result.exit_code == 2 and len(_lines(result.output)) == 1, result.output
    assert "checkpoint-best.safetensors is corrupt" in result.output and "Traceback" not in result.output


def test_a_deleted_checkpoint_of_a_run_with_finished_epochs_is_not_called_a_first_epoch_stop(tmp_path):
    run = _digits_run(tmp_path, "r", 8)
    (run / LAST_CHECKPOINT).unlink()
    result = _resume("image-classification", run, "train.epochs=2")
    assert result.exit_code == 2 and "deleted or moved" in result.output
    assert "stopped during its first one" not in result.output


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_is_one_error_line(tmp_path, monkeypatch):
    """The checkpoint write fails half-way (no space left): the previous checkpoint stays, the half-written
    copy is removed, the error is a line (it used to be a traceback: writing the error into train.log hit
    the full disk too), and the run resumes to the uninterrupted result once there is space again."""
    import lightning.pytorch as pl

    from rnnkit.tasks import run as run_module

    straight = _digits_run(tmp_path, "straight", 8)
    assert _resume("image-classification", straight, "train.epochs=2").exit_code == 0
    run = _digits_run(tmp_path, "r", 8)
    good = (run / LAST_CHECKPOINT).read_bytes()
    disk = {"full": False}
    real_write = run_module.atomic_write_bytes

    def half_then_full(self: object, path: object, *args: object, **kwargs: object) -> None:
        Path(str(path)).write_bytes(b"PK" * 100)
        disk["full"] = True
        raise OSError(errno.ENOSPC, "No space left on device")

    def write(path: Path, data: bytes) -> None:
        if disk["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", half_then_full)
    monkeypatch.setattr(run_module, "atomic_write_bytes", write)
    result = _resume("image-classification", run, "train.epochs=2")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "error: [Errno 28] No space left on device" in result.output
    assert f"--resume {run}" in result.output
    assert (run / LAST_CHECKPOINT).read_bytes() == good
    assert not (run / (LAST_CHECKPOINT + ".partial")).exists()
    monkeypatch.undo()
    result = _resume("image-classification", run)
    assert result.exit_code == 0, result.output
    a, b = _weights(straight), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_speech_stopped_mid_epoch_resumes_to_the_uninterrupted_model(tmp_path, monkeypatch):
    """Speech (the one task not checked before): Ctrl-C in the second epoch after a mid-epoch checkpoint;
    the resumed run ends with the uninterrupted run's weights and history."""
    pytest.importorskip("soundfile")
    from rnnkit.tasks import engine

    from .test_speech import _folder

    data = _folder(tmp_path / "rec", per_class=10)
    args = ["train", "speech", "--train", str(data), "--out", str(tmp_path), "--quiet",
            "--set", "model.hidden_size=8", "--set", "model.num_layers=1", "--set", "data.n_mels=12",
            "--set", "train.batch_size=4", "--set", "train.accelerator=cpu", "--set", "train.epochs=2",
            "--set", "train.learning_rate=0.01"]
    assert runner.invoke(app, [*args, "--name", "straight"]).exit_code == 0
    calls = {"n": 0}
    update = engine.WeightAverage.update

    def stop(self: engine.WeightAverage) -> None:
        calls["n"] += 1
        if calls["n"] == 9:  # the second epoch's second batch (7 per epoch)
            raise KeyboardInterrupt
        update(self)

    monkeypatch.setattr(engine.WeightAverage, "update", stop)
    assert runner.invoke(app, [*args, "--name", "split", "--checkpoint-minutes", "1e-9"]).exit_code != 0
    monkeypatch.setattr(engine.WeightAverage, "update", update)
    result = _resume("speech", tmp_path / "split")
    assert result.exit_code == 0, result.output
    assert "in epoch 2 of 2, after batch 1" in (tmp_path / "split" / "train.log").read_text()
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)

    def rows(run: str) -> list[list[str]]:
        lines = (tmp_path / run / "history.csv").read_text().splitlines()
        drop = lines[0].split(",").index("seconds")
        return [[v for i, v in enumerate(line.split(",")) if i != drop] for line in lines]

    assert rows("straight") == rows("split")


def test_numbered_run_folders_are_claimed_atomically(tmp_path, monkeypatch):
    """Two runs started together without --name: the second must get the next number, not the same folder."""
    from pathlib import Path

    from rnnkit.tasks.run import RunDir

    real_exists = Path.exists
    raced = {"done": False}

    def exists_then_taken(self: Path) -> bool:  # another process makes task-1 right after this check
        result = real_exists(self)
        if self.name == "demo-1" and not raced["done"]:
            raced["done"] = True
            self.mkdir()
            return False
        return result

    monkeypatch.setattr(Path, "exists", exists_then_taken)
    run = RunDir.create(tmp_path, "demo")
    assert run.path.name == "demo-2"
    monkeypatch.setattr(Path, "exists", real_exists)
    assert RunDir.create(tmp_path, "demo").path.name == "demo-3"
