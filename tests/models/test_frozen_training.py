"""A fully frozen model still runs ``fit`` and ``train_on_batch``, as Keras 3 does: it warns "The
model does not have any trainable weights.", reports the loss and metrics of every epoch, changes
no weight and takes no optimizer step. (rnnkit refused it with "the model has no trainable
parameters".)"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

import rnnkit.layers as L
from rnnkit.models import Sequential, load_model
from rnnkit.training.callbacks import ModelCheckpoint

from .keras_reference import HAS_KERAS, keras_module

X = np.random.default_rng(0).normal(size=(12, 5, 3)).astype("float32")
Y = np.random.default_rng(1).normal(size=(12, 2)).astype("float32")


def _frozen() -> Sequential:
    model = Sequential([L.Input((5, 3)), L.LSTM(4), L.Dense(2)])
    model.trainable = False
    model.compile("adam", "mse", metrics=["mae"])
    return model


def _weights(model: Sequential) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


def test_fit_reports_losses_and_changes_nothing() -> None:
    model = _frozen()
    before = _weights(model)
    expected = model.evaluate(X, Y, verbose=0, return_dict=True)
    with pytest.warns(UserWarning, match="does not have any trainable weights"):
        history = model.fit(X, Y, epochs=2, batch_size=4, verbose=0, validation_data=(X, Y))
    for name in ("loss", "mae", "val_loss", "val_mae"):
        assert history.history[name] == pytest.approx([expected[name.removeprefix("val_")]] * 2, rel=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))
    assert model.optimizer.iterations == 0


def test_train_on_batch_reports_the_loss_and_takes_no_step() -> None:
    model = _frozen()
    before = _weights(model)
    with pytest.warns(UserWarning, match="does not have any trainable weights"):
        logs = model.train_on_batch(X, Y, return_dict=True)
    assert logs["loss"] == pytest.approx(model.evaluate(X, Y, verbose=0, return_dict=True)["loss"], rel=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))
    assert model.optimizer.iterations == 0


def test_truncated_bptt_on_a_frozen_model() -> None:
    model = Sequential([L.Input((6, 3)), L.LSTM(4, return_sequences=True), L.Dense(2)])
    model.trainable = False
    model.compile("sgd", "mse")
    x = np.random.default_rng(2).normal(size=(4, 6, 3)).astype("float32")
    y = np.random.default_rng(3).normal(size=(4, 6, 2)).astype("float32")
    before = _weights(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        history = model.fit(x, y, epochs=1, batch_size=4, verbose=0, tbptt_steps=2)
    # every chunk carries the state of the one before, so the loss is the whole sequence's loss
    assert history.history["loss"][0] == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))
    assert model.optimizer.iterations == 0


def test_unfreezing_afterwards_trains(tmp_path: os.PathLike[str]) -> None:
    model = _frozen()
    path = os.path.join(tmp_path, "best.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(path)])
    assert np.allclose(load_model(path).predict(X, verbose=0), model.predict(X, verbose=0))
    before = _weights(model)
    model.trainable = True
    model.compile("adam", "mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "no trainable weights" warning now
        model.fit(X, Y, epochs=1, batch_size=4, verbose=0)
    assert model.optimizer.iterations == 3
    assert not all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))


def test_a_model_with_one_trainable_layer_gives_no_warning() -> None:
    model = _frozen()
    model.layers[-1].trainable = True
    model.compile("sgd", "mse")
    lstm_before = [p.detach().clone() for p in model.layers[0].parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(X, Y, epochs=1, batch_size=6, verbose=0)
    assert model.optimizer.iterations == 2
    assert all(torch.equal(a, b) for a, b in zip(lstm_before, model.layers[0].parameters()))


@pytest.mark.skipif(not HAS_KERAS, reason="keras is not installed")
def test_same_losses_as_keras() -> None:
    keras = keras_module()
    ours = _frozen()
    theirs = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    theirs.set_weights(ours.get_weights())
    theirs.trainable = False
    theirs.compile("adam", "mse", metrics=["mae"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = theirs.fit(X, Y, epochs=2, batch_size=4, verbose=0, shuffle=False).history
        got = ours.fit(X, Y, epochs=2, batch_size=4, verbose=0, shuffle=False).history
    for name in ("loss", "mae"):
        assert got[name] == pytest.approx(expected[name], rel=1e-5)
