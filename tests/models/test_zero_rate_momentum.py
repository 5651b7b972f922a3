"""Momentum steps at learning rate 0 are Keras 3's: ``m = momentum * m`` takes no gradient and
still moves the weights (SGD, nesterov SGD, RMSprop, centered RMSprop). A warm-up from 0
(``CosineDecay(0.0, ..., warmup_target=...)``) or a schedule that pauses at 0 used to leave that
step's gradient in torch's momentum buffer, so every later step differed from Keras (by 0.09 in
the weights after 5 steps of a small Dense model)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import rnnkit.layers as L
from rnnkit.models import Sequential
from rnnkit.training import optimizers as O

from .keras_reference import HAS_KERAS, keras_module

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 3)).astype("float32")
Y = RNG.normal(size=(8, 2)).astype("float32")

CASES = [("SGD", {"momentum": 0.9}), ("SGD", {"momentum": 0.9, "nesterov": True}),
         ("RMSprop", {"momentum": 0.9}), ("RMSprop", {"momentum": 0.5, "centered": True})]
SCHEDULES = {
    "warmup_from_zero": lambda m: m.CosineDecay(0.0, 10, warmup_target=0.1, warmup_steps=2),
    "pause_at_zero": lambda m: m.PiecewiseConstantDecay([1, 3], [0.05, 0.0, 0.02]),
}


def _pair(keras, name: str, kwargs: dict, schedule: str):
    ours = Sequential([L.Input((3,)), L.Dense(2)])
    ours.build((None, 3))
    theirs = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    theirs.set_weights(ours.get_weights())
    ours.compile(getattr(O, name)(learning_rate=SCHEDULES[schedule](O), **kwargs), "mse")
    theirs.compile(getattr(keras.optimizers, name)(learning_rate=SCHEDULES[schedule](keras.optimizers.schedules),
                                                   **kwargs), "mse")
    return ours, theirs


@pytest.mark.skipif(not HAS_KERAS, reason="keras is not installed")
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_train_on_batch_steps_at_rate_zero_as_keras(name: str, kwargs: dict, schedule: str) -> None:
    ours, theirs = _pair(keras_module(), name, kwargs, schedule)
    for _ in range(6):
        theirs.train_on_batch(X, Y)
        ours.train_on_batch(X, Y)
        for a, b in zip(ours.get_weights(), theirs.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not HAS_KERAS, reason="keras is not installed")
@pytest.mark.parametrize(("name", "kwargs"), CASES[:3])
def test_fit_steps_at_rate_zero_as_keras(name: str, kwargs: dict) -> None:
    ours, theirs = _pair(keras_module(), name, kwargs, "pause_at_zero")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.fit(X, Y, batch_size=2, epochs=2, shuffle=False, verbose=0)
        ours.fit(X, Y, batch_size=2, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_first_step_at_rate_zero_leaves_no_momentum() -> None:
    """Without Keras: a zero-rate first step moves nothing and leaves the buffer empty, so the second
    step is plain SGD's first step at its rate (m = -lr * g)."""
    model = Sequential([L.Input((3,)), L.Dense(2)])
    model.build((None, 3))
    model.compile(O.SGD(learning_rate=O.PiecewiseConstantDecay([0], [0.0, 0.1]), momentum=0.9), "mse")
    start = model.get_weights()
    model.train_on_batch(X, Y)
    assert all(np.array_equal(a, b) for a, b in zip(start, model.get_weights()))
    reference = Sequential([L.Input((3,)), L.Dense(2)])
    reference.build((None, 3))
    reference.set_weights(start)
    reference.compile(O.SGD(learning_rate=0.1), "mse")
    model.train_on_batch(X, Y)
    reference.train_on_batch(X, Y)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
