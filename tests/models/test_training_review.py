"""Regressions from a Keras-user review of the training strategies: losses, optimizers, schedules,
clipping and callbacks, each compared with Keras 3 (skipped without it) or a hand computation."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit.layers import Dense, Input
from rnnkit.models import Sequential
from rnnkit.training import (
    SGD,
    Adagrad,
    BinaryCrossentropy,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    PiecewiseConstantDecay,
    ReduceLROnPlateau,
    RMSprop,
    SparseCategoricalCrossentropy,
)


def keras_module() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("these comparisons need KERAS_BACKEND=torch")
    return keras


def linear_data(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")


class FakeModel(torch.nn.Module):
    """What the monitoring callbacks touch: weights, ``stop_training`` and ``optimizer``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.stop_training = False
        self.optimizer = SGD(learning_rate=1.0)


# -- losses ---------------------------------------------------------------------------------------
def test_from_logits_losses_are_applied_in_evaluate_fit_and_train_on_batch() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    ids = rng.integers(0, 3, 8)
    model = Sequential([Input(shape=(4,)), Dense(3)])  # linear output: logits
    model.compile("sgd", SparseCategoricalCrossentropy(from_logits=True))
    logits = torch.tensor(model.predict(x, verbose=0))
    expected = F.cross_entropy(logits, torch.tensor(ids)).item()
    assert model.evaluate(x, ids, verbose=0) == pytest.approx(expected, rel=1e-5)
    assert model.train_on_batch(x, ids) == pytest.approx(expected, rel=1e-5)  # the loss before the step
    labels = rng.integers(0, 2, (8, 3)).astype("float32")
    model.compile("sgd", BinaryCrossentropy(from_logits=True))
    logits = torch.tensor(model.predict(x, verbose=0))
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor(labels)).item()
    assert model.evaluate(x, labels, verbose=0) == pytest.approx(expected, rel=1e-5)
    history = model.fit(x, labels, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_ignore_class_is_left_out_of_the_mean() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 4)).astype("float32")
    ids = np.array([0, 1, 2, 1, 0, 2, 1, 1])
    model = Sequential([Input(shape=(4,)), Dense(3, activation="softmax")])
    model.compile("sgd", SparseCategoricalCrossentropy(ignore_class=1))
    probs = torch.tensor(model.predict(x, verbose=0))
    per = -torch.log(probs[torch.arange(8), torch.tensor(ids)])
    keep = torch.tensor(ids != 1)
    expected = (per[keep].sum() / keep.sum()).item()  # Keras: the mean over the kept positions
    assert model.evaluate(x, ids, verbose=0) == pytest.approx(expected, rel=1e-5)
    assert SparseCategoricalCrossentropy(ignore_class=1)(ids, probs).item() == pytest.approx(expected, rel=1e-5)


def test_ignore_class_matches_keras_with_logits_and_sample_weights() -> None:
    keras = keras_module()
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 4)).astype("float32")
    ids = np.array([0, 3, 1, 3, 2, 0])
    weights = rng.random(6).astype("float32")
    ours = SparseCategoricalCrossentropy(from_logits=True, ignore_class=3)(ids, logits, weights)
    theirs = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=3)(ids, logits,
                                                                                         sample_weight=weights)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


# -- optimizers -----------------------------------------------------------------------------------
def _our_steps(optimizer: Any, w0: np.ndarray, grads: list[np.ndarray]) -> np.ndarray:
    p = torch.nn.Parameter(torch.tensor(w0))
    torch_opt = optimizer.build([p])
    for g in grads:
        p.grad = torch.tensor(g)
        optimizer.before_step()
        torch_opt.step()
    return p.detach().numpy()


def test_sgd_weight_decay_is_decoupled_by_hand() -> None:
    w0, g = np.array([1.0, -2.0], dtype="float32"), np.array([0.5, 0.5], dtype="float32")
    got = _our_steps(SGD(learning_rate=0.1, momentum=0.9, weight_decay=0.5), w0, [g, g])
    w, m = w0.copy(), np.zeros(2, dtype="float32")
    for _ in range(2):  # Keras 3: w -= lr * wd * w, then the momentum update with the raw gradient
        w = w - 0.1 * 0.5 * w
        m = 0.9 * m - 0.1 * g
        w = w + m
    np.testing.assert_allclose(got, w, rtol=1e-6)


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0.1}),
    ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5, "weight_decay": 0.1}),
    ("Adagrad", {"learning_rate": 0.1, "weight_decay": 0.1}),
])
def test_weight_decay_matches_keras(name: str, kwargs: dict[str, float]) -> None:
    keras = keras_module()
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=5).astype("float32")
    grads = [rng.normal(size=5).astype("float32") for _ in range(4)]
    ours = _our_steps({"SGD": SGD, "RMSprop": RMSprop, "Adagrad": Adagrad}[name](**kwargs), w0, grads)
    variable = keras.Variable(w0.copy())
    theirs = getattr(keras.optimizers, name)(**kwargs)
    for g in grads:
        theirs.apply_gradients([(torch.tensor(g), variable)])
    np.testing.assert_allclose(ours, np.asarray(variable.numpy()), atol=1e-5)


def test_schedule_continues_across_fits_and_iterations_count_steps() -> None:
    x, y = linear_data(64)
    schedule = PiecewiseConstantDecay([3], [1e-2, 1e-4])
    model = Sequential([Input(shape=(3,)), Dense(1)])
    model.compile(SGD(learning_rate=schedule), "mse")
    used: list[float] = []
    record = LambdaCallback(on_train_batch_end=lambda batch, logs: used.append(
        model.optimizer.torch_optimizer.param_groups[0]["lr"]))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[record])
    assert model.optimizer.iterations == 4  # four steps taken (Keras' optimizer.iterations)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[record])
    assert used == pytest.approx([schedule(step) for step in range(8)])  # steps 4..7 use the second value
    assert model.optimizer.iterations == 8
    model.train_on_batch(x[:4], y[:4])
    assert model.optimizer.iterations == 9


def test_bad_learning_rates_and_clipping_limits_fail_in_one_line() -> None:
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="learning_rate must be a finite number >= 0"):
            SGD(learning_rate=bad)
    model = Sequential([Input(shape=(3,)), Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="learning_rate must be a finite number >= 0, got -1.0"):
        model.optimizer.learning_rate = -1.0
    with pytest.raises(ValueError, match="clipvalue must be a positive number"):
        SGD(clipvalue=0.0)  # would zero every gradient
    with pytest.raises(ValueError, match="clipnorm must be a positive number"):
        model.compile("sgd", "mse", clipnorm=-1.0)  # would flip the gradients
    x, y = linear_data(8)
    with pytest.raises(ValueError, match="global_clipnorm must be a positive number"):
        model.fit(x, y, epochs=1, verbose=0, global_clipnorm=0)
    with pytest.raises(ValueError, match="momentum must be between 0 and 1"):
        SGD(momentum=1.5)
    with pytest.raises(ValueError, match="weight_decay must be >= 0") as info:
        SGD(weight_decay=-0.1)
    assert "\n" not in str(info.value)


# -- callbacks ------------------------------------------------------------------------------------
def _early_stop_epoch(values: list[float], **kwargs: Any) -> tuple[int | None, int]:
    model = FakeModel()
    callback = EarlyStopping(**kwargs)
    callback.set_model(model)
    callback.on_train_begin()
    stopped = None
    for epoch, value in enumerate(values):
        with torch.no_grad():
            model.w.fill_(epoch)
        callback.on_epoch_end(epoch, {"val_loss": value})
        if model.stop_training:
            stopped = epoch
            break
    callback.on_train_end()
    return stopped, int(model.w.item())


def test_early_stopping_baseline_must_be_beaten_by_min_delta() -> None:
    # 0.72 beats the baseline 0.75, but not by min_delta=0.06: Keras keeps counting and stops at epoch 2
    assert _early_stop_epoch([1.0, 0.72, 0.72, 0.72], patience=2, baseline=0.75, min_delta=0.06)[0] == 2
    assert _early_stop_epoch([1.0, 0.68, 0.68, 0.68, 0.68], patience=2, baseline=0.75, min_delta=0.06)[0] == 3


def test_early_stopping_counts_nan_as_no_improvement() -> None:
    nan = math.nan
    assert _early_stop_epoch([1.0, 0.9, nan, nan, nan, nan], patience=2) == (3, 3)  # as Keras
    assert _early_stop_epoch([1.0, 0.9, nan, nan, nan, nan], patience=2, restore_best_weights=True) == (3, 1)


def test_early_stopping_matches_keras_on_scripted_values() -> None:
    keras = keras_module()

    class KerasModel:
        def __init__(self) -> None:
            self.stop_training, self.w = False, 0

        def get_weights(self) -> list[int]:
            return [self.w]

        def set_weights(self, weights: list[int]) -> None:
            self.w = weights[0]

    cases: list[tuple[list[float], dict[str, Any]]] = [
        ([1.0, 0.72, 0.72, 0.72, 0.72], {"patience": 2, "baseline": 0.75, "min_delta": 0.06}),
        ([1.0, 0.9, math.nan, math.nan, math.nan], {"patience": 2, "restore_best_weights": True}),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], {"patience": 1, "start_from_epoch": 3, "restore_best_weights": True}),
        ([1.0, 0.9, 0.89, 0.88, 0.87], {"patience": 2, "min_delta": 0.05, "restore_best_weights": True}),
    ]
    for values, kwargs in cases:
        model, callback = KerasModel(), keras.callbacks.EarlyStopping(**kwargs)
        callback.set_model(model)
        callback.on_train_begin()
        stopped = None
        for epoch, value in enumerate(values):
            model.w = epoch
            callback.on_epoch_end(epoch, {"val_loss": value})
            if model.stop_training:
                stopped = epoch
                break
        callback.on_train_end()
        assert _early_stop_epoch(values, **kwargs) == (stopped, model.w), (values, kwargs)


def test_reduce_lr_on_plateau_restarts_with_each_fit_and_logs_the_rate() -> None:
    model = FakeModel()
    callback = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_delta=0.0)
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, value in enumerate([0.1, 0.2]):  # a first fit with a low best value
        callback.on_epoch_end(epoch, {"val_loss": value})
    callback.on_train_begin()  # a second fit: Keras forgets the best value and the counters
    logs: dict[str, Any] = {"val_loss": 5.0}
    callback.on_epoch_end(0, logs)
    assert callback.best == 5.0 and callback.wait == 0
    assert logs["learning_rate"] == 1.0
    x, y = linear_data(32)
    net = Sequential([Input(shape=(3,)), Dense(1)])
    net.compile(SGD(learning_rate=0.01), "mse")
    history = net.fit(x, y, epochs=2, verbose=0, validation_split=0.25, callbacks=[ReduceLROnPlateau(patience=1)])
    assert history.history["learning_rate"] == pytest.approx([0.01, 0.01])


def test_learning_rate_scheduler_takes_a_schedule_of_the_epoch_alone_and_logs_the_rate() -> None:
    x, y = linear_data(32)
    model = Sequential([Input(shape=(3,)), Dense(1)])
    model.compile(SGD(learning_rate=0.01), "mse")
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))])
    assert model.optimizer.learning_rate == pytest.approx(0.1 / 3)
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])


def test_an_old_optimizer_state_with_torch_l2_decay_is_not_decayed_twice() -> None:
    """Optimizer files saved before weight decay was decoupled keep torch's ``weight_decay`` in their
    param groups; the next step sets it to 0 there, so only the decoupled decay acts."""
    from torch import nn

    from rnnkit.training.optimizers import SGD

    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    spec = SGD(learning_rate=0.1, weight_decay=0.5)
    opt = spec.build(layer.parameters())
    for group in opt.param_groups:
        group["weight_decay"] = 0.5  # as loaded from an old file
    layer.weight.grad = torch.zeros_like(layer.weight)
    spec.before_step()
    opt.step()
    assert all(group["weight_decay"] == 0.0 for group in opt.param_groups)
    torch.testing.assert_close(layer.weight, torch.full((1, 2), 1.0 - 0.1 * 0.5))  # decoupled only


def test_a_learning_rate_callback_over_a_schedule_is_refused_when_fit_starts() -> None:
    """ReduceLROnPlateau or LearningRateScheduler with a scheduled learning rate failed with a traceback
    only when the callback first acted, epochs into training; now fit refuses it before the first epoch."""
    from rnnkit.layers import Dense
    from rnnkit.models import Sequential
    from rnnkit.training.callbacks import LearningRateScheduler, ReduceLROnPlateau
    from rnnkit.training.optimizers import SGD, ExponentialDecay

    for callback in (ReduceLROnPlateau(monitor="loss", patience=0), LearningRateScheduler(lambda epoch: 0.1)):
        model = Sequential([Dense(1)])
        model.compile(SGD(learning_rate=ExponentialDecay(0.1, 10, 0.5)), "mse")
        with pytest.raises(ValueError, match="compile with a constant learning_rate"):
            model.fit(np.ones((8, 2)), np.ones((8, 1)), epochs=3, verbose=0, callbacks=[callback])
