"""Keras-style callbacks on the Lightning engine."""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnkit.layers import Dense, Input
from rnnkit.models import Sequential, load_model
from rnnkit.training import (
    SGD,
    Callback,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TensorBoard,
    TerminateOnNaN,
)


def linear_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")


def linear_model(lr: float = 0.05) -> Sequential:
    model = Sequential([Input(shape=(3,)), Dense(1)])
    model.compile(SGD(learning_rate=lr), "mse", metrics=["mae"])
    return model


class Recorder(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, Any]] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.events.append(("train_begin", self.params["epochs"]))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.events.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.events.append(("epoch_end", sorted(logs or {})))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.events.append(("batch_end", round((logs or {})["loss"], 6) >= 0))

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.events.append(("train_end", None))


def test_hooks_order_and_logs() -> None:
    x, y = linear_data()
    rec = Recorder()
    linear_model().fit(x, y, epochs=2, batch_size=32, validation_split=0.25, callbacks=[rec], verbose=0)
    kinds = [e[0] for e in rec.events]
    assert kinds == ["train_begin", "epoch_begin", "batch_end", "batch_end", "epoch_end",
                     "epoch_begin", "batch_end", "batch_end", "epoch_end", "train_end"]
    assert rec.events[0][1] == 2
    assert rec.events[4][1] == ["loss", "mae", "val_loss", "val_mae"]
    assert rec.model is not None


def test_early_stopping_stops_and_restores_best_weights() -> None:
    x, y = linear_data()
    model = linear_model(lr=0.05)
    seen: list[float] = []
    snapshots: list[dict[str, torch.Tensor]] = []

    def spoil(epoch: int, logs: dict[str, Any]) -> None:  # make the model worse after epoch 2
        seen.append(logs["val_loss"])
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        if epoch == 2:
            model.optimizer.learning_rate = 5.0

    stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = model.fit(x, y, epochs=30, batch_size=16, validation_split=0.25, verbose=0,
                        callbacks=[LambdaCallback(on_epoch_end=spoil), stop])
    assert len(history.epoch) < 30 and model.stop_training
    best = int(np.argmin(seen))
    assert stop.best_epoch == best and stop.stopped_epoch == len(history.epoch) - 1
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, snapshots[best][k])


def test_early_stopping_modes_and_missing_key() -> None:
    assert EarlyStopping(monitor="val_accuracy").mode == "max"
    assert EarlyStopping(monitor="val_loss").mode == "min"
    x, y = linear_data()
    with pytest.warns(UserWarning, match="'val_nope', which is not in the logs"):
        linear_model().fit(x, y, epochs=1, verbose=0, callbacks=[EarlyStopping(monitor="val_nope")])


def test_model_checkpoint_best_only_atomic(tmp_path: Path) -> None:
    x, y = linear_data()
    model = linear_model(lr=0.05)
    vals: list[float] = []
    ckpt = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_loss", save_best_only=True)
    model.fit(x, y, epochs=5, batch_size=16, validation_split=0.25, verbose=0,
              callbacks=[ckpt, LambdaCallback(on_epoch_end=lambda e, logs: vals.append(logs["val_loss"]))])
    improvements = sum(1 for i, v in enumerate(vals) if v < min(vals[:i], default=np.inf))
    assert len(ckpt.saved) == improvements
    assert os.listdir(tmp_path) == ["best.safetensors"]  # no temporary files left behind
    best = load_model(tmp_path / "best.safetensors")
    assert best.evaluate(x[48:], y[48:], verbose=0)[0] == pytest.approx(min(vals), rel=1e-5)
    # formatted names, weights only, every epoch
    every = ModelCheckpoint(str(tmp_path / "w-{epoch:02d}-{val_loss:.2f}.safetensors"), save_weights_only=True)
    model.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0, callbacks=[every])
    assert [Path(p).name[:5] for p in every.saved] == ["w-01-", "w-02-"]
    model.load_weights(every.saved[-1])


def test_reduce_lr_on_plateau_and_scheduler() -> None:
    x, y = linear_data()
    model = linear_model(lr=0.0)  # nothing improves: every epoch is a plateau
    model.optimizer.learning_rate = 0.0
    model.compile(SGD(learning_rate=1e-12), "mse")
    rates: list[float] = []
    model.fit(x, y, epochs=4, verbose=0, validation_split=0.25,
              callbacks=[ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=1.0),
                         LambdaCallback(on_epoch_end=lambda e, logs: rates.append(model.optimizer.learning_rate))])
    assert rates == pytest.approx([1e-12, 5e-13, 2.5e-13, 1.25e-13])
    assert model.optimizer.torch_optimizer.param_groups[0]["lr"] == pytest.approx(1.25e-13)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))])
    assert model.optimizer.learning_rate == pytest.approx(0.1 / 3)


def test_csv_logger(tmp_path: Path) -> None:
    x, y = linear_data()
    path = tmp_path / "log.csv"
    model = linear_model()
    model.fit(x, y, epochs=2, verbose=0, validation_split=0.25, callbacks=[CSVLogger(path)])
    model.fit(x, y, epochs=3, initial_epoch=2, verbose=0, validation_split=0.25, callbacks=[CSVLogger(path, append=True)])
    rows = list(csv.DictReader(path.open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert set(rows[0]) == {"epoch", "loss", "mae", "val_loss", "val_mae"}
    assert float(rows[2]["loss"]) < float(rows[0]["loss"])


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_without_the_package_says_so() -> None:
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoard("logs")


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_writes_event_files(tmp_path: Path) -> None:
    x, y = linear_data()
    linear_model().fit(x, y, epochs=2, verbose=0, validation_split=0.25, callbacks=[TensorBoard(tmp_path)])
    assert any(name.startswith("events.") for name in os.listdir(tmp_path / "train"))
    assert any(name.startswith("events.") for name in os.listdir(tmp_path / "validation"))


def test_terminate_on_nan() -> None:
    x, y = linear_data()
    model = linear_model(lr=1e30)
    with pytest.warns(UserWarning, match="NaN or infinite"):
        history = model.fit(x, y * 1e20, epochs=5, batch_size=8, verbose=0, callbacks=[TerminateOnNaN()])
    assert len(history.epoch) == 1


def test_lightning_callbacks_pass_through() -> None:
    import lightning.pytorch as pl

    class Count(pl.Callback):
        batches = 0

        def on_train_batch_end(self, *args: Any) -> None:
            Count.batches += 1

    x, y = linear_data()
    linear_model().fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[Count()])
    assert Count.batches == 4
    with pytest.raises(TypeError, match="callbacks must be"):
        linear_model().fit(x, y, epochs=1, verbose=0, callbacks=[object()])


@pytest.mark.parametrize(("activation", "loss"), [("softmax", "sparse_categorical_crossentropy"),
                                                  ("sigmoid", "binary_crossentropy")])
def test_predict_from_a_callback_during_fit_returns_what_predict_returns_after_it(activation, loss):
    # fit trains on logits (the activation fused into the loss); a callback sampling text with
    # model.predict in on_epoch_end (keras.io's lstm_text_generation) got those logits, not probabilities
    from rnnkit.layers import LSTM
    from rnnkit.training import LambdaCallback

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5, 3)).astype("float32")
    units = 4 if activation == "softmax" else 1
    y = rng.integers(0, 4, 64) if activation == "softmax" else rng.integers(0, 2, (64, 1)).astype("float32")
    model = Sequential([Input(shape=(5, 3)), LSTM(8), Dense(units, activation=activation)])
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    during: list[np.ndarray] = []
    batch_end: list[np.ndarray] = []
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=0, callbacks=[LambdaCallback(
        on_epoch_end=lambda epoch, logs: during.append(model.predict(x[:4], verbose=0)),
        on_train_batch_end=lambda batch, logs: batch_end.append(model.predict(x[:2], verbose=0)))])
    after = model.predict(x[:4], verbose=0)
    np.testing.assert_allclose(during[-1], after, atol=1e-6)
    assert ((after >= 0) & (after <= 1)).all() and ((batch_end[0] >= 0) & (batch_end[0] <= 1)).all()
    if activation == "softmax":
        np.testing.assert_allclose(after.sum(-1), 1.0, atol=1e-5)
    # training still runs on logits afterwards: a second fit keeps lowering the loss as before
    assert np.isfinite(model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=0).history["loss"][-1])
