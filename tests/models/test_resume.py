"""An interrupted fit resumed from its last checkpoint ends with the uninterrupted run's weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnkit.layers import GRU, LSTM, Dense, Dropout, Input
from rnnkit.models import Sequential, set_random_seed
from rnnkit.training import Callback, EarlyStopping, ReduceLROnPlateau


class Crash(Callback):
    def __init__(self, at_epoch: int) -> None:
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == self.at_epoch:
            raise RuntimeError("simulated crash")


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 10, 3)).astype("float32")
    return x, (x[:, :, 0].sum(1) > 0).astype(np.int64)


def build() -> Sequential:
    set_random_seed(11)
    model = Sequential([Input(shape=(10, 3)), LSTM(8, return_sequences=True, dropout=0.2, recurrent_dropout=0.1),
                        Dropout(0.3), GRU(6), Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def callbacks() -> list[Callback]:
    return [EarlyStopping(patience=10), ReduceLROnPlateau(patience=1, factor=0.5, min_delta=10.0)]


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    x, y = data()
    fit = {"epochs": 5, "batch_size": 16, "validation_split": 0.25, "seed": 7, "verbose": 0}
    reference = build()
    ref_history = reference.fit(x, y, callbacks=callbacks(), **fit)

    interrupted = build()
    with pytest.raises(RuntimeError, match="simulated crash"):
        interrupted.fit(x, y, checkpoint_dir=tmp_path, callbacks=[*callbacks(), Crash(at_epoch=3)], **fit)
    assert os.listdir(tmp_path) == ["last.ckpt"]

    resumed = build()
    resumed.layers[0].rnn.weight_ih_l0.data.add_(1.0)  # whatever the fresh model holds is replaced
    cbs = callbacks()
    history = resumed.fit(x, y, checkpoint_dir=tmp_path, resume_from=tmp_path, callbacks=cbs, **fit)
    assert history.epoch == [3, 4]
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
    np.testing.assert_allclose(history.history["val_loss"], ref_history.history["val_loss"][3:], rtol=1e-6)
    assert resumed.optimizer.learning_rate == pytest.approx(reference.optimizer.learning_rate)  # callback state kept
    assert cbs[0].best == pytest.approx(min(ref_history.history["val_loss"]))


def test_resume_from_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    x, y = data()
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        build().fit(x, y, epochs=1, verbose=0, resume_from=tmp_path)
