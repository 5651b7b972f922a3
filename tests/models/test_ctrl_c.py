"""Ctrl-C during training reaches the caller as ``KeyboardInterrupt``, as in Keras 3 and a plain
PyTorch loop (Lightning turns it into ``sys.exit(1)``), so ``except KeyboardInterrupt: model.save()``
keeps what was trained; other exits pass through unchanged."""

from __future__ import annotations

import signal
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rnnkit.layers import LSTM, Dense, Input
from rnnkit.models import Sequential
from rnnkit.tasks.engine import EngineOptions, fit
from rnnkit.training import Callback


class _RaiseAt(Callback):
    def __init__(self, batch: int, error: BaseException) -> None:
        super().__init__()
        self.batch, self.error = batch, error

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if batch == self.batch:
            raise self.error


def _model() -> tuple[Sequential, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    model = Sequential([Input((5, 3)), LSTM(4), Dense(1)])
    model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    return model, rng.random((64, 5, 3), dtype=np.float32), rng.random((64, 1), dtype=np.float32)


def test_ctrl_c_in_fit_raises_keyboard_interrupt_and_keeps_the_trained_weights() -> None:
    model, x, y = _model()
    start = [w.copy() for w in model.get_weights()]
    handler = signal.getsignal(signal.SIGINT)
    try:
        model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[_RaiseAt(2, KeyboardInterrupt())])
    except KeyboardInterrupt:  # what a script or notebook catches to save the model; SystemExit skipped it
        trained = [w.copy() for w in model.get_weights()]
    assert any(not np.array_equal(a, b) for a, b in zip(start, trained))  # three steps were taken
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C still works afterwards
    assert not model.training
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # and the model trains on
    assert np.isfinite(history.history["loss"][0])


def test_an_exit_raised_by_a_callback_is_not_taken_for_ctrl_c() -> None:
    model, x, y = _model()
    with pytest.raises(SystemExit) as exit_info:
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[_RaiseAt(1, SystemExit(3))])
    assert exit_info.value.code == 3


def test_ctrl_c_in_a_task_fit_raises_keyboard_interrupt() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    steps = []

    def loss_fn(mdl: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        steps.append(1)
        if len(steps) == 3:
            raise KeyboardInterrupt
        x, y = batch
        return nn.functional.mse_loss(mdl(x), y)

    with pytest.raises(KeyboardInterrupt):
        fit(model, DataLoader(data, batch_size=8), DataLoader(data, batch_size=32), loss_fn=loss_fn,
            predict_fn=lambda mdl, batch: (mdl(batch[0]), batch[1]),
            metric_fn=lambda preds, targets: {"score": 0.0},
            options=EngineOptions(epochs=2, monitor="score", mode="max", patience=None, progress=False),
            log=lambda _: None)
    assert sys.exc_info() == (None, None, None)


def test_an_interrupted_fit_leaves_its_finished_epochs_in_model_history() -> None:
    """As Keras 3: Ctrl-C in the third epoch leaves the two finished epochs in ``model.history`` (to plot
    or inspect after the interrupt)."""

    class CtrlCInThirdEpoch(Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.current = epoch

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if self.current == 2 and batch == 1:
                raise KeyboardInterrupt

    model, x, y = _model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[CtrlCInThirdEpoch()])
    assert model.history.epoch == [0, 1] and len(model.history.history["loss"]) == 2
    finished = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert model.history is finished and finished.epoch == [0]
