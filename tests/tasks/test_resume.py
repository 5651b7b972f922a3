"""Resuming task training: a run interrupted after some epochs and resumed ends exactly where an
uninterrupted run ends (weights, history), from the engine up to ``rnnkit train --resume``."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.bucketing import BucketBatchSampler, EpochSampler
from rnnkit.tasks.engine import (
    LAST_CHECKPOINT,
    EngineOptions,
    checkpoint_interval,
    fit,
    prior_seconds,
    resuming,
)
from rnnkit.tasks.run import RunDir

runner = CliRunner()


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.drop = nn.Dropout(0.3)  # draws from the global random state in training
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(x))


def _train(run: RunDir, epochs: int, *, bucketed: bool = False, interrupt_at: int | None = None,
           resume: bool = False, optimizer: str = "adam", patience: int | None = None,
           max_seconds: float | None = None, lr: float = 0.05, checkpoint_minutes: float | None = None,
           sigterm_at: int | None = None, ctrl_c_at: int | None = None,
           ctrl_c_times: int = 1) -> tuple[nn.Module, list[dict], list[list[int]]]:
    """Train on fixed data; ``interrupt_at``: raise Ctrl-C at that training batch (counted from 1);
    ``sigterm_at``: send this process a SIGTERM during that batch (Lightning's handler takes it);
    ``ctrl_c_at``: press Ctrl-C (SIGINT to this process) ``ctrl_c_times`` times during that batch;
    ``checkpoint_minutes``: the mid-epoch checkpoint interval (``None``: ends of epochs only)."""
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long()
    data = TensorDataset(torch.arange(40), x, y)
    if bucketed:
        lengths = torch.randint(1, 9, (40,), generator=torch.Generator().manual_seed(2)).tolist()
        sampler = BucketBatchSampler(lengths, 8, seed=3, pool_factor=2)
        loader = DataLoader(data, batch_sampler=sampler, generator=torch.Generator().manual_seed(3))
    else:
        loader = DataLoader(data, batch_size=8, sampler=EpochSampler(40, shuffle=True, seed=3),
                            generator=torch.Generator().manual_seed(3))
    batches: list[list[int]] = []
    schedule = {"step": 0}  # a task's own state across batches (forecasting's teacher-forcing schedule)

    def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        batches.append(batch[0].tolist())
        if interrupt_at is not None and len(batches) == interrupt_at:
            raise KeyboardInterrupt
        if sigterm_at is not None and len(batches) == sigterm_at:
            assert callable(signal.getsignal(signal.SIGTERM))  # else the signal would end the test run
            os.kill(os.getpid(), signal.SIGTERM)
        if ctrl_c_at is not None and len(batches) == ctrl_c_at:
            for _ in range(ctrl_c_times):
                os.kill(os.getpid(), signal.SIGINT)
        schedule["step"] += 1
        return F.cross_entropy(model(batch[1]), batch[2]) * (1.0 + 0.05 * schedule["step"])

    def predict_fn(model: nn.Module, batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return model(batch[1]).softmax(-1), batch[2]

    def metric_fn(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {"accuracy": float((scores.argmax(-1) == targets).float().mean())}

    model = _Net()
    options = EngineOptions(epochs=epochs, learning_rate=lr, optimizer=optimizer, progress=False, patience=patience,
                            lr_decay=0.5, accelerator="cpu", max_seconds=max_seconds)
    dev = DataLoader(TensorDataset(torch.arange(40), x, y), batch_size=40)
    with resuming() if resume else _nothing(), checkpoint_interval(checkpoint_minutes):
        history = fit(model, loader, dev, loss_fn=loss_fn, predict_fn=predict_fn, metric_fn=metric_fn,
                      options=options, run=run, log=lambda _: None, task_state=schedule)
    return model, history, batches


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _rows(history: list[dict]) -> list[tuple]:
    return [(row["epoch"], row["train_loss"], row["dev_accuracy"], row["lr"]) for row in history]


@pytest.mark.parametrize("bucketed,optimizer", [(False, "adam"), (True, "asgd")])
def test_an_interrupted_fit_resumes_to_the_uninterrupted_result(tmp_path, bucketed, optimizer):
    straight, history, batches = _train(RunDir(tmp_path / "a"), 4, bucketed=bucketed, optimizer=optimizer)
    (tmp_path / "b").mkdir()
    with pytest.raises((KeyboardInterrupt, SystemExit)):  # Lightning turns Ctrl-C into exit status 1
        _train(RunDir(tmp_path / "b"), 4, bucketed=bucketed, optimizer=optimizer, interrupt_at=13)  # in epoch 3
    assert (tmp_path / "b" / LAST_CHECKPOINT).is_file()
    resumed, resumed_history, resumed_batches = _train(RunDir(tmp_path / "b"), 4, bucketed=bucketed,
                                                       optimizer=optimizer, resume=True)
    assert _rows(resumed_history) == _rows(history)
    assert resumed_batches == batches[10:]  # epochs 3 and 4 (5 batches each), in the same order
    # the time trained before the stop is reported (tasks add it to train_seconds), and is the history's
    assert 0 < prior_seconds() <= resumed_history[2]["seconds"] and prior_seconds() >= resumed_history[1]["seconds"]
    _train(RunDir(tmp_path / "c"), 1)
    assert prior_seconds() == 0.0  # a run trained in one go
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bucketed,optimizer", [(False, "adam"), (True, "asgd")])
def test_a_fit_interrupted_mid_epoch_resumes_from_the_next_batch(tmp_path, bucketed, optimizer):
    """With a mid-epoch checkpoint after every batch (an interval of ~0 minutes), Ctrl-C in the third
    batch of epoch 3 loses nothing: the resumed run trains batches 13 to 20 in the original order and
    ends bitwise where an uninterrupted run ends (weights, per-epoch loss, dev scores, learning rates,
    weight average, the task's own state); interrupted again mid-epoch, it resumes again."""
    straight, history, batches = _train(RunDir(tmp_path / "a"), 4, bucketed=bucketed, optimizer=optimizer)
    (tmp_path / "b").mkdir()
    tiny = 1e-9  # minutes: a checkpoint after every batch but an epoch's last
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        _train(RunDir(tmp_path / "b"), 4, bucketed=bucketed, optimizer=optimizer, interrupt_at=13,
               checkpoint_minutes=tiny)
    with pytest.raises((KeyboardInterrupt, SystemExit)):  # batch 13 and 14 trained, then stopped in 15
        _train(RunDir(tmp_path / "b"), 4, bucketed=bucketed, optimizer=optimizer, interrupt_at=3,
               checkpoint_minutes=tiny, resume=True)
    resumed, resumed_history, resumed_batches = _train(RunDir(tmp_path / "b"), 4, bucketed=bucketed,
                                                       optimizer=optimizer, resume=True, checkpoint_minutes=tiny)
    assert resumed_batches == batches[14:]  # from the 15th batch on, in the same order
    assert _rows(resumed_history) == _rows(history)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_sigterm_mid_epoch_checkpoints_that_batch_and_the_resumed_run_loses_nothing(tmp_path):
    """A scheduler's SIGTERM in the third batch of epoch 3, long before the 10-minute mid-epoch
    checkpoint is due: the fit stops after that batch with a checkpoint of it (exit status 143), so
    the resumed run trains batches 14 to 20 only and ends bitwise where an uninterrupted run ends
    (it went back to the end of epoch 2 and trained batches 11 to 13 again)."""
    straight, history, batches = _train(RunDir(tmp_path / "a"), 4)
    (tmp_path / "b").mkdir()
    with pytest.raises(SystemExit) as stop:
        _train(RunDir(tmp_path / "b"), 4, sigterm_at=13, checkpoint_minutes=10)
    assert stop.value.code == 143
    resumed, resumed_history, resumed_batches = _train(RunDir(tmp_path / "b"), 4, resume=True, checkpoint_minutes=10)
    assert resumed_batches == batches[13:]
    assert _rows(resumed_history) == _rows(history)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("at,resumed_from", [(13, 13), (10, 10)], ids=["mid-epoch", "last-batch-of-an-epoch"])
def test_a_first_ctrl_c_finishes_the_batch_checkpoints_it_and_the_resumed_run_loses_nothing(tmp_path, at,
                                                                                          resumed_from):
    """Ctrl-C in batch 13 (or 10, an epoch's last): that batch is trained, the epoch validated if it was
    its last, a checkpoint written, then the fit stops with KeyboardInterrupt; the resumed run trains
    the batches after it and ends bitwise where an uninterrupted run ends. (It went back to the last
    10-minute checkpoint or the end of epoch 2, and trained batches 11 to 13 again.)"""
    straight, history, batches = _train(RunDir(tmp_path / "a"), 4)
    (tmp_path / "b").mkdir()
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        _train(RunDir(tmp_path / "b"), 4, ctrl_c_at=at, checkpoint_minutes=10)
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    resumed, resumed_history, resumed_batches = _train(RunDir(tmp_path / "b"), 4, resume=True, checkpoint_minutes=10)
    assert resumed_batches == batches[resumed_from:]
    assert _rows(resumed_history) == _rows(history)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_second_ctrl_c_stops_at_once_and_without_mid_epoch_checkpoints_ctrl_c_is_as_before(tmp_path):
    _, _, batches = _train(RunDir(tmp_path / "a"), 4)
    for name, kwargs in (("twice", {"ctrl_c_times": 2, "checkpoint_minutes": 10}),
                         ("no-mid-epoch", {"checkpoint_minutes": None})):
        (tmp_path / name).mkdir()
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            _train(RunDir(tmp_path / name), 4, ctrl_c_at=13, **kwargs)
        _, _, resumed_batches = _train(RunDir(tmp_path / name), 4, resume=True, checkpoint_minutes=10)
        assert resumed_batches == batches[10:], name  # from the end of epoch 2: batch 13 was not finished


def test_without_mid_epoch_checkpoints_a_resume_repeats_the_interrupted_epoch(tmp_path):
    """``checkpoint_interval(None)``: only ends of epochs are saved, so the whole third epoch is
    trained again after Ctrl-C in it (and the result is still exact)."""
    _, history, batches = _train(RunDir(tmp_path / "a"), 3)
    (tmp_path / "b").mkdir()
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        _train(RunDir(tmp_path / "b"), 3, interrupt_at=13)
    _, resumed_history, resumed_batches = _train(RunDir(tmp_path / "b"), 3, resume=True)
    assert resumed_batches == batches[10:] and _rows(resumed_history) == _rows(history)


def test_the_checkpoint_interval_is_checked():
    for bad in (0, -1.0, float("nan"), float("inf"), "10"):
        with pytest.raises(ValueError, match="minutes > 0"), checkpoint_interval(bad):  # type: ignore[arg-type]
            pass


def test_each_epoch_gets_its_own_batch_order(tmp_path):
    """Lightning sets the epoch of ``batch_sampler.sampler``; the bucket sampler is its own sampler,
    so its shuffle changes every epoch (it used to repeat epoch 0's order)."""
    for bucketed in (False, True):
        _, _, batches = _train(RunDir(tmp_path / str(bucketed)), 3, bucketed=bucketed)
        epochs = [sorted(map(tuple, batches[i * 5:(i + 1) * 5])) for i in range(3)]
        assert sorted(i for b in batches[:5] for i in b) == list(range(40))
        assert epochs[0] != epochs[1] != epochs[2]


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(ValueError, match=f"nothing to resume: .* has no {LAST_CHECKPOINT}"):
        _train(RunDir(tmp_path / "r"), 2, resume=True)


FAST = ["--set", "model.hidden_size=16", "--set", "train.learning_rate=0.01", "--quiet"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "model.safetensors")


def test_rnnkit_train_resume_continues_a_run_to_the_same_model(tmp_path):
    args = ["train", "image-classification", "--train", "builtin:digits", "--out", str(tmp_path), *FAST]
    assert runner.invoke(app, [*args, "--name", "straight", "--set", "train.epochs=3"]).exit_code == 0
    assert runner.invoke(app, [*args, "--name", "split", "--set", "train.epochs=2"]).exit_code == 0
    result = runner.invoke(app, ["train", "image-classification", "--resume", str(tmp_path / "split"),
                                 "--set", "train.epochs=3", "--quiet"])
    assert result.exit_code == 0, result.output
    straight, split = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert all(torch.equal(straight[k], split[k]) for k in straight)
    log = (tmp_path / "split" / "train.log").read_text()
    assert "run folder: " in log and "(resumed)" in log and "resuming from checkpoint-last.ckpt after epoch 2 of 3" in log
    assert json.loads((tmp_path / "split" / "metrics.json").read_text())["epochs_run"] == 3
    assert "train.epochs: 3" in (tmp_path / "split" / "config.yaml").read_text() or \
        "epochs: 3" in (tmp_path / "split" / "config.yaml").read_text()
    again = runner.invoke(app, ["train", "image-classification", "--resume", str(tmp_path / "split")])
    assert again.exit_code == 0 and "all 3 epoch(s) were done already; raise train.epochs" in again.output
    fewer = runner.invoke(app, ["train", "image-classification", "--resume", str(tmp_path / "split"),
                                "--set", "train.epochs=1"])
    assert fewer.exit_code == 2 and "has trained 3 epochs already; train.epochs=1 is fewer" in fewer.output
    assert "epochs: 3" in (tmp_path / "split" / "config.yaml").read_text()  # not rewritten


def test_rnnkit_train_stopped_in_its_first_epoch_keeps_a_mid_epoch_checkpoint(tmp_path, monkeypatch):
    """Ctrl-C in the first epoch, before any dev score: with --checkpoint-minutes the run folder keeps
    checkpoint-last.ckpt (it used to be deleted with no weights in it), the CLI prints the resume
    command, and the resumed run ends with the uninterrupted run's model."""
    from rnnkit.tasks import engine

    args = ["train", "image-classification", "--train", "builtin:digits", "--out", str(tmp_path), *FAST,
            "--set", "train.epochs=2"]
    assert runner.invoke(app, [*args, "--name", "straight"]).exit_code == 0
    calls = {"n": 0}
    update = engine.WeightAverage.update

    def stop_at_the_fifth_batch(self: engine.WeightAverage) -> None:  # runs before each batch's checkpoint
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        update(self)

    monkeypatch.setattr(engine.WeightAverage, "update", stop_at_the_fifth_batch)
    stopped = runner.invoke(app, [*args, "--name", "split", "--checkpoint-minutes", "1e-9"])
    monkeypatch.setattr(engine.WeightAverage, "update", update)
    assert stopped.exit_code != 0 and (tmp_path / "split" / LAST_CHECKPOINT).is_file()
    assert not (tmp_path / "split" / "checkpoint-best.safetensors").exists()
    assert f"--resume {tmp_path / 'split'}" in stopped.output
    result = runner.invoke(app, ["train", "image-classification", "--resume", str(tmp_path / "split"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "resuming from checkpoint-last.ckpt in epoch 1 of 2, after batch 4" in \
        (tmp_path / "split" / "train.log").read_text()
    straight, split = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert all(torch.equal(straight[k], split[k]) for k in straight)
    bad = runner.invoke(app, [*args, "--name", "bad", "--checkpoint-minutes", "-1"])
    assert bad.exit_code == 2 and "--checkpoint-minutes must be >= 0" in bad.output


def test_rnnkit_train_resume_refuses_what_it_cannot_continue(tmp_path):
    data = tmp_path / "digits.npz"
    import numpy as np

    from rnnkit.datasets import load_digits

    images, labels = load_digits()
    np.savez(data, x=images[:300], y=labels[:300])
    base = ["train", "image-classification", "--train", str(data), "--out", str(tmp_path), "--name", "r",
            "--set", "train.epochs=1", *FAST]
    assert runner.invoke(app, base).exit_code == 0
    run = str(tmp_path / "r")
    cases = [
        (["image-classification", "--resume", run, "--set", "model.hidden_size=8"],
         "--resume cannot change model.hidden_size (the run's model and data are fixed)"),
        (["text-classification", "--resume", run], "this run trains 'image-classification', not 'text-classification'"),
        (["image-classification", "--resume", str(tmp_path / "absent")], "run folder not found"),
        (["image-classification", "--resume", run, "--name", "x"], "drop --config/--name"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["train", *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    np.savez(data, x=images[:200], y=labels[:200])  # the data changed since the run started
    result = runner.invoke(app, ["train", "image-classification", "--resume", run, "--set", "train.epochs=2"])
    assert result.exit_code == 2 and "differ from the ones the run started with" in result.output
    moved = data.rename(tmp_path / "moved.npz")  # gone, not changed: the error says so and how to go on
    result = runner.invoke(app, ["train", "image-classification", "--resume", run, "--set", "train.epochs=2"])
    assert result.exit_code == 2 and f"the train data {data} the run started with is not found" in result.output
    assert "give its new path with --train" in result.output
    moved.rename(data)
    (tmp_path / "r" / LAST_CHECKPOINT).unlink()
    result = runner.invoke(app, ["train", "image-classification", "--resume", run])
    assert result.exit_code == 2 and f"no {LAST_CHECKPOINT}" in result.output


def test_a_run_ended_by_early_stopping_stays_ended_when_resumed(tmp_path):
    """Early stopping ends a run as it would have ended without the interruption: resuming it (killed
    while writing its report, or asked for more epochs) trains no further epoch."""
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    stopped, history, _ = _train(run, 12, patience=1, lr=0.5)
    assert len(history) < 12  # early stopping ended it
    resumed, resumed_history, batches = _train(run, 20, patience=1, lr=0.5, resume=True)
    assert batches == [] and _rows(resumed_history) == _rows(history)
    assert all(torch.equal(a, b) for a, b in zip(stopped.state_dict().values(), resumed.state_dict().values()))
    _, patient_history, batches = _train(run, len(history) + 2, patience=50, lr=0.5, resume=True)
    assert len(batches) == 10 and len(patient_history) == len(history) + 2  # a larger patience trains on


def test_a_run_ended_by_its_time_budget_trains_on_only_with_a_larger_one(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    _, history, _ = _train(run, 5, max_seconds=1e-6)  # no second epoch fits in a microsecond
    assert len(history) == 1
    _, again, batches = _train(run, 5, max_seconds=1e-6, resume=True)
    assert batches == [] and len(again) == 1
    _, longer, batches = _train(run, 5, max_seconds=600.0, resume=True)
    assert len(longer) == 5 and len(batches) == 20


def test_the_last_checkpoint_is_on_disk_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    import os

    import rnnkit.tasks.engine as engine

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(engine.os, "fsync", lambda fd: (events.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}"),
                                                        real_fsync(fd))[1])
    monkeypatch.setattr(engine.os, "replace", lambda a, b: (events.append(f"replace {a}"), real_replace(a, b))[1])
    (tmp_path / "r").mkdir()
    _train(RunDir(tmp_path / "r"), 1)
    partial = str(tmp_path / "r" / (LAST_CHECKPOINT + ".partial"))
    assert [e for e in events if LAST_CHECKPOINT in e] == [f"fsync {partial}", f"replace {partial}"]


def _digits_run(tmp_path: Path, name: str, hidden: int) -> Path:
    import numpy as np

    from rnnkit.datasets import load_digits

    data = tmp_path / "digits.npz"
    if not data.exists():
        images, labels = load_digits()
        np.savez(data, x=images[:200], y=labels[:200])
    args = ["train", "image-classification", "--train", str(data), "--out", str(tmp_path), "--name", name,
            "--set", "train.epochs=1", "--set", f"model.hidden_size={hidden}", "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    return tmp_path / name


def test_a_broken_or_foreign_checkpoint_is_a_one_line_error(tmp_path):
    run = _digits_run(tmp_path, "r", 8)
    other = _digits_run(tmp_path, "other", 16)
    good = (run / LAST_CHECKPOINT).read_bytes()
    cases = [(good[: len(good) // 2], "is corrupt or truncated"), (b"", "is corrupt or truncated"),
             (b"not a checkpoint" * 8, "is corrupt or truncated"),
             ((other / LAST_CHECKPOINT).read_bytes(), "holds another model than this run's config.yaml builds")]
    for content, message in cases:
        (run / LAST_CHECKPOINT).write_bytes(content)
        result = runner.invoke(app, ["train", "image-classification", "--resume", str(run), "--set", "train.epochs=2"])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output and "--resume" not in result.output  # not: resume it again


def test_the_fingerprint_of_a_data_folder_sees_changes_inside_its_class_folders(tmp_path):
    from rnnkit.tasks.run import data_fingerprint

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(b"12345")
    before = data_fingerprint(str(tmp_path))
    (tmp_path / "cat" / "b.png").write_bytes(b"1")  # one more picture, same class folders
    added = data_fingerprint(str(tmp_path))
    (tmp_path / "cat" / "b.png").unlink()
    (tmp_path / "dog" / "a.png").write_bytes(b"123456")  # a picture replaced
    changed = data_fingerprint(str(tmp_path))
    assert before != added and before != changed and added != changed
    assert data_fingerprint(str(tmp_path)) == changed


def test_file_settings_are_made_absolute_so_a_run_resumes_from_any_folder(tmp_path, monkeypatch):
    """model/data settings that name files (tagging's data.pretrained_vectors, speech's
    decode.lexicon) are written to config.yaml as absolute paths when the run starts."""
    import yaml

    from .test_tagging import _write_conll

    work = tmp_path / "work"
    work.mkdir()
    _write_conll(work / "train.txt", 30, 0)
    (work / "vec.txt").write_text("the 0.5 1.5 0.1 0.2 0.3 0.4 0.5 0.6\n")
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["train", "tagging", "--train", "train.txt", "--out", "runs", "--name", "r",
                                 "--set", "data.pretrained_vectors=vec.txt", "--set", "model.embedding_dim=8",
                                 "--set", "model.hidden_size=8", "--set", "model.char_hidden_size=4",
                                 "--set", "train.epochs=1", "--quiet"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((work / "runs" / "r" / "config.yaml").read_text())
    assert config["data"]["pretrained_vectors"] == str(work / "vec.txt")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "tagging", "--resume", "work/runs/r", "--set", "train.epochs=2", "--quiet"])
    assert result.exit_code == 0, result.output


def test_checkpoints_are_written_in_the_run_folder_not_through_the_temp_folder(tmp_path, monkeypatch):
    """Lightning's default writer goes through an fsspec transaction, which stages the file in the system
    temp folder: a second write, and a failed checkpoint wherever /tmp is small."""
    import tempfile

    real_mkstemp = tempfile.mkstemp

    def no_temp(*args, **kwargs):  # files beside their target (dir=...) are fine; the system temp folder is full
        if kwargs.get("dir") is None:
            raise OSError(28, "No space left on device", tempfile.gettempdir())
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", no_temp)
    (tmp_path / "r").mkdir()
    _train(RunDir(tmp_path / "r"), 2)
    assert (tmp_path / "r" / LAST_CHECKPOINT).is_file()


def test_keras_style_checkpoints_skip_the_temp_folder_too(tmp_path, monkeypatch):
    import tempfile

    import numpy as np

    from rnnkit.layers import LSTM, Dense, Input
    from rnnkit.models import Sequential

    real_mkstemp = tempfile.mkstemp

    def no_temp(*args, **kwargs):
        if kwargs.get("dir") is None:
            raise OSError(28, "No space left on device", tempfile.gettempdir())
        return real_mkstemp(*args, **kwargs)

    model = Sequential([Input((4, 3)), LSTM(5), Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    monkeypatch.setattr(tempfile, "mkstemp", no_temp)
    x, y = np.zeros((8, 4, 3), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, checkpoint_dir=str(tmp_path / "ck"))
    assert (tmp_path / "ck" / "last.ckpt").is_file()


def test_a_ctrl_c_after_the_last_epochs_checkpoint_still_stops(tmp_path, monkeypatch):
    """Ctrl-C while Lightning tears down after the last epoch: the stop request came after the last
    place the loop looks at it; it printed "stopping after this batch" and the fit returned as if
    nothing had been pressed."""
    import rnnkit.tasks.engine as engine

    fit_or_resume = engine._fit_or_resume

    def then_ctrl_c(*args, **kwargs):
        fit_or_resume(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # the stop request's handler is still in place

    monkeypatch.setattr(engine, "_fit_or_resume", then_ctrl_c)
    (tmp_path / "b").mkdir()
    with pytest.raises(KeyboardInterrupt):
        _train(RunDir(tmp_path / "b"), 2, checkpoint_minutes=10)
    monkeypatch.setattr(engine, "_fit_or_resume", fit_or_resume)
    _, resumed_history, resumed_batches = _train(RunDir(tmp_path / "b"), 2, resume=True, checkpoint_minutes=10)
    assert resumed_batches == [] and len(resumed_history) == 2  # every epoch had been trained and saved
