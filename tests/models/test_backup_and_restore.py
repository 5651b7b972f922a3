"""Keras' BackupAndRestore: a fit interrupted at an epoch end or mid-epoch, then called again with the
same arguments, ends with the uninterrupted run's weights and history, exactly."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnkit.layers import GRU, Dense, Dropout, Input
from rnnkit.models import Sequential, set_random_seed
from rnnkit.training import BackupAndRestore, Callback, EarlyStopping, ReduceLROnPlateau, callbacks


class CrashAtBatch(Callback):
    """Raise before the ``at``-th training batch of this fit (counted from 0 across epochs)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.seen == self.at:
            raise RuntimeError("simulated crash")
        self.seen += 1


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(45, 6, 3)).astype("float32")
    return x, (x[:, :, 0].sum(1) > 0).astype(np.int64)


def build(optimizer: str = "adam", units: int = 5) -> Sequential:
    set_random_seed(3)
    model = Sequential([Input(shape=(6, 3)), GRU(units, dropout=0.2), Dropout(0.3), Dense(2, activation="softmax")])
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


# 36 training samples in batches of 8: 5 batches an epoch (the last one of 4)
FIT = {"epochs": 4, "batch_size": 8, "validation_split": 0.2, "seed": 5, "verbose": 0, "shuffle": True}


def others() -> list[Callback]:
    """Callbacks with state that must survive (ReduceLROnPlateau halves the rate every epoch)."""
    return [EarlyStopping(patience=10), ReduceLROnPlateau(patience=1, factor=0.5, min_delta=10.0)]


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], Any]:
    x, y = data()
    model = build()
    history = model.fit(x, y, callbacks=others(), **FIT)
    return {k: v.clone() for k, v in model.state_dict().items()}, history


def assert_same(model: Sequential, history: Any, reference: tuple[dict[str, torch.Tensor], Any]) -> None:
    weights, ref_history = reference
    state = model.state_dict()
    assert set(state) == set(weights)
    for k, v in weights.items():
        assert torch.equal(state[k], v), k
    first = ref_history.epoch.index(history.epoch[0]) if history.epoch else len(ref_history.epoch)
    assert history.epoch == ref_history.epoch[first:]
    assert history.history == {k: v[first:] for k, v in ref_history.history.items()}  # exact floats


def mid_epoch_batches(backup: Path) -> int | None:
    mid = torch.load(backup / "latest.ckpt", weights_only=True)["rnnkit"]["mid_epoch"]
    return None if mid is None else int(mid["batches"])


def test_importable_like_keras() -> None:
    assert callbacks.BackupAndRestore is BackupAndRestore


def test_interrupted_at_an_epoch_end_resumes_exactly(tmp_path: Path, reference: Any) -> None:
    x, y = data()
    backup = tmp_path / "backup"
    model = build()
    with pytest.raises(RuntimeError, match="simulated crash"):
        model.fit(x, y, callbacks=[BackupAndRestore(backup), *others(), CrashAtBatch(12)], **FIT)  # in epoch 2
    assert sorted(os.listdir(backup)) == ["latest.ckpt"]

    resumed = build()
    resumed.layers[0].rnn.weight_ih_l0.data.add_(1.0)  # whatever the fresh model holds is replaced
    history = resumed.fit(x, y, callbacks=[BackupAndRestore(backup), *others()], **FIT)
    assert history.epoch == [2, 3]
    assert_same(resumed, history, reference)
    assert not backup.exists()  # deleted when fit ends normally
    assert resumed.optimizer.learning_rate == pytest.approx(0.001 / 2**3)  # ReduceLROnPlateau's state kept


@pytest.mark.parametrize("double", [False, True])
def test_interrupted_mid_epoch_resumes_from_the_next_batch(tmp_path: Path, reference: Any, double: bool) -> None:
    x, y = data()
    backup = tmp_path / "backup"
    model = build()
    cb = BackupAndRestore(backup, save_freq=3, double_checkpoint=double)
    with pytest.raises(RuntimeError, match="simulated crash"):
        model.fit(x, y, callbacks=[cb, *others(), CrashAtBatch(8)], **FIT)  # backups after batches 3 and 6
    assert sorted(os.listdir(backup)) == (["latest.ckpt", "previous.ckpt"] if double else ["latest.ckpt"])
    assert mid_epoch_batches(backup) == 1  # batch 6 is the first of epoch 1

    # interrupted again, in the same model object (as a Keras user calls fit again), after resuming mid-epoch
    with pytest.raises(RuntimeError, match="simulated crash"):
        model.fit(x, y, callbacks=[cb, *others(), CrashAtBatch(7)], **FIT)
    assert mid_epoch_batches(backup) == 2  # backups after 3 and 6 more batches: 4 of epoch 1, then 2 of epoch 2
    history = model.fit(x, y, callbacks=[BackupAndRestore(backup, save_freq=3, double_checkpoint=double), *others()],
                        **FIT)
    assert history.epoch == [2, 3]  # epoch 2 was half done: its logs cover all of it
    assert_same(model, history, reference)
    assert not backup.exists()


def test_a_backup_on_the_last_batch_of_an_epoch_is_written_at_its_end(tmp_path: Path, reference: Any) -> None:
    x, y = data()
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build().fit(x, y, callbacks=[BackupAndRestore(backup, save_freq=5), *others(), CrashAtBatch(7)], **FIT)
    assert mid_epoch_batches(backup) is None
    assert torch.load(backup / "latest.ckpt", weights_only=True)["epoch"] == 0
    resumed = build()
    history = resumed.fit(x, y, callbacks=[BackupAndRestore(backup, save_freq=5), *others()], **FIT)
    assert history.epoch == [1, 2, 3]
    assert_same(resumed, history, reference)


def test_keep_the_backup_and_nothing_is_left_to_train(tmp_path: Path, reference: Any) -> None:
    x, y = data()
    backup = tmp_path / "backup"
    model = build()
    model.fit(x, y, callbacks=[BackupAndRestore(backup, delete_checkpoint=False), *others()], **FIT)
    assert sorted(os.listdir(backup)) == ["latest.ckpt"]
    assert_same(model, model.history, reference)
    again = build()
    history = again.fit(x, y, callbacks=[BackupAndRestore(backup, delete_checkpoint=False)], **FIT)
    assert history.epoch == []  # as Keras: the backup says all epochs are done
    assert_same(again, model.history, reference)


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    for bad in (0, -2, 1.5, True, "batch", None):
        with pytest.raises(ValueError, match="save_freq must be 'epoch' or a whole number"):
            BackupAndRestore(tmp_path, save_freq=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a backup_dir"):
        BackupAndRestore("")
    with pytest.raises(ValueError, match="delete_checkpoint must be True or False"):
        BackupAndRestore(tmp_path, delete_checkpoint="yes")  # type: ignore[arg-type]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        BackupAndRestore(a_file)
    x, y = data()
    with pytest.raises(ValueError, match="drop resume_from"):
        build().fit(x, y, epochs=1, verbose=0, resume_from=tmp_path, callbacks=[BackupAndRestore(tmp_path / "b")])


def test_a_backup_of_another_model_or_optimizer_is_refused(tmp_path: Path) -> None:
    x, y = data()
    backup = tmp_path / "backup"
    fit = {**FIT, "epochs": 1}
    build().fit(x, y, callbacks=[BackupAndRestore(backup, delete_checkpoint=False)], **fit)
    with pytest.raises(ValueError, match=r"of another model \(.*\); delete .* to train from the start"):
        build(units=6).fit(x, y, callbacks=[BackupAndRestore(backup)], **fit)
    with pytest.raises(ValueError, match=r"optimizer Adam .* compiled with SGD .*compile as before, or delete"):
        build("sgd").fit(x, y, callbacks=[BackupAndRestore(backup)], **fit)


def test_a_damaged_backup_falls_back_to_the_previous_one_or_is_a_clear_error(tmp_path: Path) -> None:
    x, y = data()
    backup = tmp_path / "backup"
    fit = {**FIT, "epochs": 2}
    build().fit(x, y, callbacks=[BackupAndRestore(backup, delete_checkpoint=False, double_checkpoint=True)], **fit)
    assert sorted(os.listdir(backup)) == ["latest.ckpt", "previous.ckpt"]
    (backup / "latest.ckpt").write_bytes(b"not a checkpoint")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = build().fit(x, y, callbacks=[BackupAndRestore(backup, double_checkpoint=True)], **fit)
    assert any("resuming from the backup before it" in str(w.message) for w in caught)
    assert history.epoch == [1]  # previous.ckpt was written after epoch 0
    assert not backup.exists()

    build().fit(x, y, callbacks=[BackupAndRestore(backup, delete_checkpoint=False)], **fit)
    (backup / "latest.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read .*; delete .* to train from the start"):
        build().fit(x, y, callbacks=[BackupAndRestore(backup)], **fit)


def test_with_initial_epoch_the_resumed_fit_stops_at_epochs(tmp_path: Path) -> None:
    x, y = data()
    fit = {**FIT, "initial_epoch": 1, "epochs": 3}
    reference = build()
    ref_history = reference.fit(x, y, **fit)
    assert ref_history.epoch == [1, 2]
    with pytest.raises(RuntimeError, match="simulated crash"):
        build().fit(x, y, callbacks=[BackupAndRestore(tmp_path, save_freq=2), CrashAtBatch(7)], **fit)
    resumed = build()
    history = resumed.fit(x, y, callbacks=[BackupAndRestore(tmp_path, save_freq=2)], **fit)
    assert history.epoch == [2]  # resumed after batch 2 of epoch 2, its last epoch
    assert_same(resumed, history, ({k: v.clone() for k, v in reference.state_dict().items()}, ref_history))
