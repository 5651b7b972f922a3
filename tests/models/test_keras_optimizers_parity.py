"""Numerical parity of the Keras-style optimizers, learning-rate schedules, gradient clipping and
losses with Keras 3 (``KERAS_BACKEND=torch``; skipped without Keras): the same tiny model in both,
with copied weights, trained on the same batch, compared step by step. Also: optimizer state
survives ``save``/``load_model`` and training checkpoints so training continues identically."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnkit.layers import Dense, Input
from rnnkit.models import Sequential, load_model, set_random_seed
from rnnkit.training import losses as L
from rnnkit.training import optimizers as O

# float32 on both sides: rnnkit's update is Keras' formula, both round differently (Keras' own
# float32 beta powers are off from exact by ~1e-6 relative), so weights agree to a few 1e-7 (Keras is itself ~4e-7 from the exact update after 5 Adam steps).
RTOL, ATOL = 2e-6, 5e-7


def keras_module() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras", reason="Keras 3 is the reference for these comparisons")
    if keras.backend.backend() != "torch":
        pytest.skip("these comparisons need KERAS_BACKEND=torch")
    return keras


def keras_schedule(keras: Any, schedule: Any) -> Any:
    if isinstance(schedule, O.LearningRateSchedule):
        return getattr(keras.optimizers.schedules, type(schedule).__name__)(**schedule.get_config())
    return schedule


def keras_optimizer(keras: Any, name: str, kwargs: dict[str, Any]) -> Any:
    kwargs = {k: keras_schedule(keras, v) for k, v in kwargs.items()}
    return getattr(keras.optimizers, name)(**kwargs)


# -- optimizer updates on raw gradients ------------------------------------------------------------
def steps_ours(optimizer: O.Optimizer, w0: list[np.ndarray], grads: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    params = [torch.nn.Parameter(torch.tensor(w)) for w in w0]
    torch_opt = optimizer.build(params)
    out = []
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.tensor(g)
        optimizer.clip(params)
        optimizer.before_step()
        torch_opt.step()
        out.append([p.detach().numpy().copy() for p in params])
    return out


def steps_keras(optimizer: Any, keras: Any, w0: list[np.ndarray], grads: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    variables = [keras.Variable(w.copy()) for w in w0]
    out = []
    for gs in grads:
        optimizer.apply_gradients([(torch.tensor(g), v) for g, v in zip(gs, variables)])
        out.append([np.asarray(v.numpy()).copy() for v in variables])
    return out


def weights_and_grads(scale: float, steps: int = 5, seed: int = 0) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    w0 = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")]
    grads = [[(rng.normal(size=w.shape) * scale).astype("float32") for w in w0] for _ in range(steps)]
    return w0, grads


OPTIMIZER_CASES = [
    ("SGD", {"learning_rate": 0.1}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05}),
    ("Adam", {"learning_rate": 0.01}),
    ("Adam", {"learning_rate": 0.01, "amsgrad": True}),
    ("Adam", {"learning_rate": 0.01, "weight_decay": 0.1}),
    ("AdamW", {"learning_rate": 0.01}),
    ("Adam", {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-5}),
    ("RMSprop", {"learning_rate": 0.01}),
    ("RMSprop", {"learning_rate": 0.01, "rho": 0.8, "momentum": 0.5, "centered": True}),
    ("RMSprop", {"learning_rate": 0.01, "epsilon": 1e-4, "weight_decay": 0.1}),
    ("Adagrad", {"learning_rate": 0.1}),
    ("Adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 1e-6, "epsilon": 1e-6}),
    # schedules (the step is the optimizer's iterations, 0-based, as in Keras)
    ("SGD", {"learning_rate": O.ExponentialDecay(0.1, 2, 0.5, staircase=True), "momentum": 0.9}),
    ("SGD", {"learning_rate": O.ExponentialDecay(0.1, 3, 0.7), "momentum": 0.9, "nesterov": True}),
    ("RMSprop", {"learning_rate": O.PiecewiseConstantDecay([1, 3], [0.01, 0.003, 0.02]), "momentum": 0.9}),
    ("Adam", {"learning_rate": O.CosineDecay(0.01, 3, alpha=0.1, warmup_target=0.02, warmup_steps=2)}),
    ("Adam", {"learning_rate": O.CosineDecay(0.01, 3, alpha=0.2, warmup_steps=2)}),  # no target: no warm-up
    ("Adagrad", {"learning_rate": O.InverseTimeDecay(0.1, 2, 0.5, staircase=True)}),
    ("AdamW", {"learning_rate": O.InverseTimeDecay(0.01, 1, 0.3), "weight_decay": 0.2}),
    # clipping
    ("SGD", {"learning_rate": 0.1, "clipnorm": 0.5}),
    ("SGD", {"learning_rate": 0.1, "global_clipnorm": 0.5}),
    ("SGD", {"learning_rate": 0.1, "clipvalue": 0.3}),
    ("Adam", {"learning_rate": 0.01, "global_clipnorm": 1.0, "weight_decay": 0.05}),
]


@pytest.mark.parametrize("scale", [1.0, 1e-4], ids=["unit_grads", "small_grads"])
@pytest.mark.parametrize("name,kwargs", OPTIMIZER_CASES,
                         ids=[f"{n}-{'-'.join(k for k in kw if k != 'learning_rate')}-{type(kw['learning_rate']).__name__}"
                              for n, kw in OPTIMIZER_CASES])
def test_optimizer_steps_match_keras(name: str, kwargs: dict[str, Any], scale: float) -> None:
    """Small gradients are where epsilon's placement shows (Adam: before the bias correction,
    RMSprop and Adagrad: inside the square root)."""
    keras = keras_module()
    w0, grads = weights_and_grads(scale)
    ours = steps_ours(getattr(O, name)(**kwargs), w0, grads)
    theirs = steps_keras(keras_optimizer(keras, name, kwargs), keras, w0, grads)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=f"step {step}")


def test_schedules_match_keras() -> None:
    keras = keras_module()
    schedules = [O.ExponentialDecay(0.1, 3, 0.5), O.ExponentialDecay(0.1, 3, 0.5, staircase=True),
                 O.InverseTimeDecay(0.1, 2, 0.7), O.InverseTimeDecay(0.1, 2, 0.7, staircase=True),
                 O.PiecewiseConstantDecay([2, 5], [0.1, 0.01, 0.001]),
                 O.CosineDecay(0.1, 6), O.CosineDecay(0.1, 6, alpha=0.25),
                 O.CosineDecay(0.0, 6, alpha=0.1, warmup_target=0.2, warmup_steps=3),
                 O.CosineDecay(0.1, 6, warmup_steps=3)]
    for schedule in schedules:
        theirs = keras_schedule(keras, schedule)
        for step in range(12):
            assert schedule(step) == pytest.approx(float(theirs(step)), rel=1e-6, abs=1e-9), (schedule, step)


def test_cosine_decay_without_warmup_target_ignores_warmup_steps() -> None:
    """Keras 3 skips the warm-up when ``warmup_target`` is None (rnnkit used to hold the initial rate)."""
    schedule = O.CosineDecay(1.0, 4, warmup_steps=2)
    assert schedule(1) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))


def test_clipping_uses_keras_scale_without_torch_epsilon() -> None:
    """``limit / max(norm, limit)``: torch's ``clip_grad_norm_`` divides by ``norm + 1e-6``, off by
    1% for a gradient of norm 1e-4."""
    keras = keras_module()
    for kind in ("clipnorm", "global_clipnorm"):
        w0, grads = weights_and_grads(1e-4, steps=2)
        kwargs = {"learning_rate": 1.0, kind: 2e-5}
        ours = steps_ours(O.SGD(**kwargs), w0, grads)
        theirs = steps_keras(keras.optimizers.SGD(**kwargs), keras, w0, grads)
        for a, b in zip(ours, theirs):
            for x, y, w in zip(a, b, w0):
                np.testing.assert_allclose(x - w, y - w, rtol=1e-5, atol=1e-12)


def test_momentum_follows_keras_when_a_callback_changes_the_rate() -> None:
    """Keras keeps the rate inside its momentum: a rate set between steps (ReduceLROnPlateau) leaves
    the accumulated velocity at the old rate."""
    keras = keras_module()
    w0, grads = weights_and_grads(1.0, steps=4)
    for name, kwargs in (("SGD", {"momentum": 0.9}), ("RMSprop", {"momentum": 0.7})):
        ours_opt = getattr(O, name)(learning_rate=0.1, **kwargs)
        theirs_opt = getattr(keras.optimizers, name)(learning_rate=0.1, **kwargs)
        params = [torch.nn.Parameter(torch.tensor(w)) for w in w0]
        variables = [keras.Variable(w.copy()) for w in w0]
        torch_opt = ours_opt.build(params)
        for step, gs in enumerate(grads):
            if step == 2:
                ours_opt.learning_rate = 0.01
                theirs_opt.learning_rate = 0.01
            for p, g in zip(params, gs):
                p.grad = torch.tensor(g)
            ours_opt.before_step()
            torch_opt.step()
            theirs_opt.apply_gradients([(torch.tensor(g), v) for g, v in zip(gs, variables)])
            for p, v in zip(params, variables):
                np.testing.assert_allclose(p.detach().numpy(), np.asarray(v.numpy()), rtol=RTOL, atol=ATOL)


def test_fused_adam_step_is_the_keras_update() -> None:
    """The fused torch step (rnnkit's fast path) with the per-step epsilon gives Keras' numbers."""
    keras = keras_module()
    optimizer = O.Adam(learning_rate=0.01)
    w0, grads = weights_and_grads(1e-4)
    ours = steps_ours(optimizer, w0, grads)
    assert optimizer.torch_optimizer is not None and optimizer.torch_optimizer.defaults.get("fused") is True
    theirs = steps_keras(keras.optimizers.Adam(learning_rate=0.01), keras, w0, grads)
    for a, b in zip(ours[-1], theirs[-1]):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


# -- whole models: compile + train_on_batch -----------------------------------------------------------
def twin_models(keras: Any, units: int, activation: str) -> tuple[Any, Sequential]:
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(5, activation="tanh"),
                                keras.layers.Dense(units, activation=activation)])
    r_model = Sequential([Input(shape=(4,)), Dense(5, activation="tanh"), Dense(units, activation=activation)])
    r_model.set_weights(k_model.get_weights())
    return k_model, r_model


def batch(task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 4)).astype("float32")
    sw = rng.uniform(0.5, 2.0, size=8).astype("float32")
    y: np.ndarray
    if task == "sparse":
        y = rng.integers(0, 3, 8)
    elif task == "categorical":
        y = np.eye(3, dtype="float32")[rng.integers(0, 3, 8)]
    elif task == "binary":
        y = (rng.random((8, 3)) > 0.5).astype("float32")
    else:
        y = rng.normal(size=(8, 3)).astype("float32")
    return x, y, sw


MODEL_CASES: list[tuple[str, str, Callable[[Any], tuple[Any, Any]], str]] = [
    ("sparse", "softmax", lambda m: (m.SparseCategoricalCrossentropy(), L.SparseCategoricalCrossentropy()), "Adam"),
    ("sparse", "linear", lambda m: (m.SparseCategoricalCrossentropy(from_logits=True),
                                    L.SparseCategoricalCrossentropy(from_logits=True)), "RMSprop"),
    ("sparse", "linear", lambda m: (m.SparseCategoricalCrossentropy(from_logits=True, ignore_class=1),
                                    L.SparseCategoricalCrossentropy(from_logits=True, ignore_class=1)), "SGD"),
    ("categorical", "softmax", lambda m: (m.CategoricalCrossentropy(label_smoothing=0.1),
                                          L.CategoricalCrossentropy(label_smoothing=0.1)), "AdamW"),
    ("categorical", "linear", lambda m: (m.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2),
                                         L.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)), "Adagrad"),
    ("binary", "sigmoid", lambda m: (m.BinaryCrossentropy(label_smoothing=0.1),
                                     L.BinaryCrossentropy(label_smoothing=0.1)), "Adam"),
    ("binary", "linear", lambda m: (m.BinaryCrossentropy(from_logits=True), L.BinaryCrossentropy(from_logits=True)),
     "SGD"),
    ("regression", "linear", lambda m: (m.MeanSquaredError(), L.MeanSquaredError()), "RMSprop"),
    ("regression", "linear", lambda m: (m.MeanAbsoluteError(), L.MeanAbsoluteError()), "Adam"),
    ("regression", "linear", lambda m: (m.Huber(delta=0.4), L.Huber(delta=0.4)), "Adagrad"),
]
MODEL_OPTIMIZERS = {
    "Adam": {"learning_rate": 0.01, "global_clipnorm": 0.5},
    "AdamW": {"learning_rate": O.ExponentialDecay(0.02, 2, 0.5)},
    "RMSprop": {"learning_rate": 0.01, "momentum": 0.5, "clipvalue": 0.05},
    "SGD": {"learning_rate": O.PiecewiseConstantDecay([1], [0.2, 0.05]), "momentum": 0.9, "nesterov": True,
            "clipnorm": 0.3},
    "Adagrad": {"learning_rate": 0.1, "weight_decay": 0.01},
}


@pytest.mark.parametrize("task,activation,make_losses,opt_name", MODEL_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[3]}-{i}" for i, c in enumerate(MODEL_CASES)])
def test_training_a_model_matches_keras(task: str, activation: str, make_losses: Any, opt_name: str) -> None:
    """``compile`` + ``train_on_batch`` with sample weights: the loss before each step and the weights
    after it, as in Keras."""
    keras = keras_module()
    x, y, sw = batch(task)
    k_model, r_model = twin_models(keras, 3, activation)
    k_loss, r_loss = make_losses(keras.losses)
    kwargs = MODEL_OPTIMIZERS[opt_name]
    k_model.compile(optimizer=keras_optimizer(keras, opt_name, kwargs), loss=k_loss)
    r_model.compile(optimizer=getattr(O, opt_name)(**kwargs), loss=r_loss)
    for step in range(4):
        theirs = float(k_model.train_on_batch(x, y, sample_weight=sw))
        ours = float(r_model.train_on_batch(x, y, sample_weight=sw))
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-7), f"loss at step {step}"
        for a, b in zip(r_model.get_weights(), k_model.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"weights after step {step}")


# -- optimizer state across save/load and checkpoints ----------------------------------------------
STATEFUL = [
    ("Adam", {"learning_rate": O.CosineDecay(0.01, 6, alpha=0.1, warmup_target=0.02, warmup_steps=1)}),
    ("SGD", {"learning_rate": O.ExponentialDecay(0.1, 2, 0.5), "momentum": 0.9, "nesterov": True}),
    ("RMSprop", {"learning_rate": O.InverseTimeDecay(0.01, 1, 0.5), "momentum": 0.5, "centered": True}),
    ("Adagrad", {"learning_rate": 0.1, "weight_decay": 0.01}),
]


def _regression_model(name: str, kwargs: dict[str, Any]) -> Sequential:
    set_random_seed(3)
    model = Sequential([Input(shape=(4,)), Dense(5, activation="tanh"), Dense(3)])
    model.compile(getattr(O, name)(**kwargs), "mse")
    return model


@pytest.mark.parametrize("name,kwargs", STATEFUL, ids=[s[0] for s in STATEFUL])
def test_save_and_load_continue_training_exactly(tmp_path: Path, name: str, kwargs: dict[str, Any]) -> None:
    x, y, _ = batch("regression")
    reference = _regression_model(name, kwargs)
    for _ in range(4):
        reference.train_on_batch(x, y)
    model = _regression_model(name, kwargs)
    for _ in range(2):
        model.train_on_batch(x, y)
    model.save(tmp_path / "m", include_optimizer=True)
    loaded = load_model(tmp_path / "m")
    assert loaded.optimizer.iterations == 2
    for _ in range(2):
        loaded.train_on_batch(x, y)
    for a, b in zip(loaded.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_resume_continues_training_exactly(tmp_path: Path) -> None:

    from rnnkit.training import Callback

    class StopAt(Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if epoch == 2:
                raise RuntimeError("simulated crash")

    x, y, _ = batch("regression")
    fit = {"epochs": 4, "batch_size": 4, "shuffle": False, "verbose": 0}
    kwargs = {"learning_rate": O.ExponentialDecay(0.1, 2, 0.5), "momentum": 0.9}
    reference = _regression_model("SGD", kwargs)
    reference.fit(x, y, **fit)
    interrupted = _regression_model("SGD", kwargs)
    with pytest.raises(RuntimeError, match="simulated crash"):
        interrupted.fit(x, y, checkpoint_dir=tmp_path, callbacks=[StopAt()], **fit)
    resumed = _regression_model("SGD", kwargs)
    resumed.fit(x, y, checkpoint_dir=tmp_path, resume_from=tmp_path, **fit)
    assert resumed.optimizer.iterations == reference.optimizer.iterations == 8
    for a, b in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
