"""Optimizer state as a Keras 3 user reads it: ``optimizer.variables`` (count and order),
``iterations.numpy()``, a scheduled ``learning_rate``, one optimizer reused by a second model,
a layer frozen between steps, ``apply_gradients``, EMA, Keras configs and state after
``save``/``load_model``. Compared with Keras 3 (``KERAS_BACKEND=torch``; skipped without it) or
hand-computed values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnkit.layers import Dense, Input
from rnnkit.models import Sequential, load_model
from rnnkit.training import optimizers as O

from .keras_reference import keras_module, needs_keras

RTOL, ATOL = 1e-5, 1e-6


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 1)).astype("float32")


def _ours() -> Sequential:
    return Sequential([Input(shape=(3,)), Dense(2, activation="tanh"), Dense(1)])


def _twins(keras: Any) -> tuple[Any, Sequential]:
    keras.utils.set_random_seed(0)
    theirs = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(2, activation="tanh"),
                               keras.layers.Dense(1)])
    ours = _ours()
    ours.set_weights(theirs.get_weights())
    return theirs, ours


VARIABLE_CASES = [
    ("Adam", {}), ("Adam", {"amsgrad": True}), ("AdamW", {}), ("SGD", {}), ("SGD", {"momentum": 0.9}),
    ("RMSprop", {}), ("RMSprop", {"momentum": 0.9, "centered": True}), ("Adagrad", {}), ("Adam", {"use_ema": True}),
]


@needs_keras
@pytest.mark.parametrize("name,kwargs", VARIABLE_CASES, ids=[f"{n}-{'-'.join(k)}" for n, k in VARIABLE_CASES])
def test_variables_have_keras_count_order_and_shapes(name: str, kwargs: dict[str, Any]) -> None:
    keras = keras_module()
    x, y = _data()
    k_model, r_model = _twins(keras)
    k_opt, r_opt = getattr(keras.optimizers, name)(**kwargs), getattr(O, name)(**kwargs)
    assert len(r_opt.variables) == len(k_opt.variables) == 2  # iteration and learning_rate before building
    k_model.compile(k_opt, "mse")
    r_model.compile(r_opt, "mse")
    k_model.fit(x, y, batch_size=4, verbose=0, shuffle=False)
    r_model.fit(x, y, batch_size=4, verbose=0, shuffle=False)
    theirs = [(v.path.rsplit("_", 1)[-1] if "/" in v.path and v.name not in ("iteration", "learning_rate") else v.name,
               tuple(v.shape)) for v in k_opt.variables]
    # the slots are the torch tensors, in the parameters' torch layout: a Dense kernel is [out, in]
    ours = [(v.name.rsplit("_", 1)[-1] if v.name.startswith("variable_") else v.name, v.shape[::-1])
            for v in r_opt.variables]
    assert ours == theirs
    assert int(r_opt.variables[0].numpy()) == 2 and float(r_opt.variables[1].numpy()) == pytest.approx(
        float(k_opt.variables[1].numpy()))


@needs_keras
def test_adam_slots_hold_keras_moments_after_fit() -> None:
    keras = keras_module()
    x, y = _data()
    k_model, r_model = _twins(keras)
    k_opt, r_opt = keras.optimizers.Adam(0.01), O.Adam(0.01)
    k_model.compile(k_opt, "mse")
    r_model.compile(r_opt, "mse")
    k_model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    r_model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    for a, b in zip(r_opt.variables, k_opt.variables):
        np.testing.assert_allclose(np.asarray(a).T, np.asarray(b.numpy()), rtol=1e-4, atol=1e-7, err_msg=a.name)


def test_iterations_and_learning_rate_take_keras_idioms() -> None:
    x, y = _data()
    model = _ours()
    model.compile(O.SGD(0.1, momentum=0.9), "mse")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    opt = model.optimizer
    assert opt.iterations.numpy() == 4 and isinstance(opt.iterations.numpy(), np.integer)
    assert opt.iterations == 4 and opt.iterations + 1 == 5
    opt.iterations.assign(10)
    assert opt.iterations == 10 and int(opt.variables[0].numpy()) == 10
    opt.variables[1].assign(0.05)
    assert float(opt.learning_rate) == pytest.approx(0.05)
    assert opt.torch_optimizer is not None and opt.torch_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


@needs_keras
def test_scheduled_learning_rate_reads_the_next_steps_rate_as_keras() -> None:
    """It read the rate of the step taken last (schedule(t - 1)) once built; Keras gives schedule(t)."""
    keras = keras_module()
    x, y = _data()
    k_model, r_model = _twins(keras)
    k_opt = keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5))
    r_opt = O.Adam(O.ExponentialDecay(0.1, 10, 0.5))
    k_model.compile(k_opt, "mse")
    r_model.compile(r_opt, "mse")
    k_model.fit(x, y, batch_size=4, verbose=0)
    r_model.fit(x, y, batch_size=4, verbose=0)
    assert float(r_opt.learning_rate) == pytest.approx(float(k_opt.learning_rate), rel=1e-6)
    assert float(r_opt.learning_rate) == pytest.approx(0.1 * 0.5 ** (2 / 10))


@needs_keras
def test_one_optimizer_for_a_second_model_is_refused_as_keras() -> None:
    """It carried its step count (and a fresh torch optimizer) into the second model's fit."""
    keras = keras_module()
    x, y = _data()
    k_opt = keras.optimizers.Adam(1e-3)
    first, second = (keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(1)]) for _ in range(2))
    first.compile(k_opt, "mse")
    first.fit(x, y, verbose=0)
    second.compile(k_opt, "mse")
    with pytest.raises(ValueError, match="new optimizer"):
        second.fit(x, y, verbose=0)

    r_opt = O.Adam(1e-3)
    ours_first, ours_second = _ours(), _ours()
    ours_first.compile(r_opt, "mse")
    ours_first.fit(x, y, verbose=0)
    ours_second.compile(r_opt, "mse")
    with pytest.raises(ValueError, match=r"built for another model's weights.*compile each model with its own"):
        ours_second.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="another model"):
        ours_second.train_on_batch(x, y)
    assert r_opt.iterations == 1
    ours_first.fit(x, y, verbose=0)  # the model it was built for still trains with it
    assert r_opt.iterations == 2


@needs_keras
@pytest.mark.parametrize("name,kwargs", [("Adam", {"learning_rate": 0.05}),
                                         ("SGD", {"learning_rate": 0.1, "momentum": 0.9}),
                                         ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5})])
def test_freezing_a_layer_between_steps_keeps_the_other_moments_as_keras(name: str, kwargs: dict[str, Any]) -> None:
    """The optimizer was rebuilt for the smaller trainable set with fresh state (moments lost)."""
    keras = keras_module()
    x, y = _data()
    k_model, r_model = _twins(keras)
    k_model.compile(getattr(keras.optimizers, name)(**kwargs), "mse")
    r_model.compile(getattr(O, name)(**kwargs), "mse")
    for step in range(5):
        if step == 2:
            k_model.layers[0].trainable = False
            r_model.layers[0].trainable = False
        k_model.train_on_batch(x, y)
        r_model.train_on_batch(x, y)
        for a, b in zip(r_model.get_weights(), k_model.get_weights()):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"after step {step}")
    assert r_model.optimizer.iterations == 5


@needs_keras
def test_apply_gradients_matches_keras() -> None:
    keras = keras_module()
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(4, 3)).astype("float32")
    grads = [rng.normal(size=(4, 3)).astype("float32") for _ in range(3)]
    k_var = keras.Variable(w0.copy())
    k_opt = keras.optimizers.Adam(0.01, clipnorm=0.5)
    param = torch.nn.Parameter(torch.tensor(w0))
    r_opt = O.Adam(0.01, clipnorm=0.5)
    for g in grads:
        k_opt.apply_gradients([(torch.tensor(g), k_var)])
        result = r_opt.apply_gradients([(g, param)])
    np.testing.assert_allclose(param.detach().numpy(), k_var.numpy(), rtol=RTOL, atol=ATOL)
    assert result == 3 and param.grad is None
    with pytest.raises(ValueError, match="new optimizer"):
        r_opt.apply_gradients([(grads[0][:2], torch.nn.Parameter(torch.zeros(2, 3)))])


@needs_keras
@pytest.mark.parametrize("frequency", [None, 2])
def test_ema_matches_keras(frequency: int | None) -> None:
    """``use_ema`` was a TypeError; now the weights follow Keras' moving average (written at the end
    of fit and every ``ema_overwrite_frequency`` steps)."""
    keras = keras_module()
    x, y = _data()
    k_model, r_model = _twins(keras)
    kwargs = {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.8, "ema_overwrite_frequency": frequency}
    k_model.compile(keras.optimizers.Adam(**kwargs), "mse")
    r_model.compile(O.Adam(**kwargs), "mse")
    k_model.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False)
    r_model.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False)
    for a, b in zip(r_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def test_keras_optimizer_config_is_read() -> None:
    """A Keras 3 ``get_config()`` (EMA keys, a schedule with its ``name``) and ``serialize()`` dict
    (``class_name`` "adam" too) were refused with a TypeError/ValueError."""
    schedule = {"module": "keras.optimizers.schedules", "class_name": "ExponentialDecay", "registered_name": None,
                "config": {"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5, "staircase": False,
                           "name": "ExponentialDecay"}}
    config = {"name": "adam", "learning_rate": schedule, "weight_decay": None, "clipnorm": None,
              "global_clipnorm": None, "clipvalue": None, "use_ema": False, "ema_momentum": 0.99,
              "ema_overwrite_frequency": None, "loss_scale_factor": None, "gradient_accumulation_steps": None,
              "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False}
    opt = O.Adam.from_config(config)
    assert isinstance(opt.schedule, O.ExponentialDecay) and opt.schedule(10) == pytest.approx(0.05)
    again = O.get_optimizer({"module": "keras.optimizers", "class_name": "adam", "config": {"learning_rate": 0.5},
                             "registered_name": None})
    assert isinstance(again, O.Adam) and float(again.learning_rate) == 0.5
    ema = O.SGD(use_ema=True, ema_momentum=0.9)
    assert O.SGD.from_config(ema.get_config()).get_config() == ema.get_config()
    with pytest.raises(ValueError, match="must be an integer >= 2"):  # as Keras
        O.Adam(gradient_accumulation_steps=1)
    with pytest.raises(ValueError, match="ema_momentum"):
        O.Adam(use_ema=True, ema_momentum=1.5)


def test_save_and_load_bring_back_the_variables(tmp_path: Path) -> None:
    x, y = _data()
    model = _ours()
    model.compile(O.Adam(0.01, use_ema=True), "mse")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    model.save(tmp_path / "m", include_optimizer=True)
    loaded = load_model(tmp_path / "m")
    before = model.optimizer.variables
    after = loaded.optimizer.variables
    assert [v.path for v in after] == [v.path for v in before] and len(after) == 2 + 3 * 4
    for a, b in zip(after, before):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    model.fit(x, y, batch_size=4, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=4, verbose=0, shuffle=False)
    assert loaded.optimizer.iterations == model.optimizer.iterations == 6
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
