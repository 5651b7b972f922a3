"""Keras 3 optimizer arguments that rnnkit refused or lacked: ``gradient_accumulation_steps``,
``loss_scale_factor`` (with ``scale_loss``) and ``exclude_from_weight_decay``. Each compared with
Keras 3 (``KERAS_BACKEND=torch``) on copied weights: ``apply_gradients``, ``train_on_batch``,
``fit``, the optimizer variables, ``save``/``load_model`` and checkpoint resume mid-accumulation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnkit.layers import LSTM, Dense, Embedding, Input, LayerNormalization
from rnnkit.models import Sequential, load_model, set_random_seed
from rnnkit.training import Callback
from rnnkit.training import optimizers as O

from .keras_reference import keras_module, needs_keras
from .test_keras_optimizers_parity import ATOL, RTOL, keras_optimizer, steps_keras, weights_and_grads
from .test_optimizer_state_review import _data, _twins

MODEL_RTOL, MODEL_ATOL = 1e-5, 1e-6


def _apply_ours(optimizer: O.Optimizer, w0: list[np.ndarray], grads: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    params = [torch.nn.Parameter(torch.tensor(w)) for w in w0]
    out = []
    for gs in grads:
        optimizer.apply_gradients(zip(gs, params))
        out.append([p.detach().numpy().copy() for p in params])
    return out


def _close(ours: list[list[np.ndarray]], theirs: list[list[np.ndarray]], rtol: float = RTOL, atol: float = ATOL) -> None:
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"after call {step}")


SLOTS = ("gradient_accumulator", "average", "momentum", "velocity_hat", "velocity")


def _keras_variables(optimizer: Any) -> list[tuple[str, np.ndarray]]:
    """Keras' variables as (slot name, value in torch layout: a 2-D slot transposed)."""
    out = []
    for v in optimizer.variables:
        name = v.name if v.name in ("iteration", "learning_rate") else next(s for s in SLOTS if v.path.endswith(s))
        value = np.asarray(v.numpy())
        out.append((name, value.T if value.ndim == 2 else value))
    return out


def _our_variables(optimizer: O.Optimizer) -> list[tuple[str, np.ndarray]]:
    return [(v.name.split("_", 2)[-1] if v.name.startswith("variable_") else v.name, v.numpy())
            for v in optimizer.variables]


# -- gradient accumulation ------------------------------------------------------------------------
ACCUMULATION_CASES = [
    ("SGD", {"learning_rate": 0.1}),
    ("SGD", {"learning_rate": O.ExponentialDecay(0.1, 2, 0.5), "momentum": 0.9, "nesterov": True,
             "weight_decay": 0.05}),
    ("Adam", {"learning_rate": 0.01}),
    ("Adam", {"learning_rate": O.CosineDecay(0.01, 4, warmup_target=0.02, warmup_steps=2), "amsgrad": True,
              "clipnorm": 0.5}),
    ("AdamW", {"learning_rate": 0.01, "weight_decay": 0.2, "global_clipnorm": 0.7}),
    ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5, "centered": True, "clipvalue": 0.4}),
    ("Adagrad", {"learning_rate": 0.1, "weight_decay": 0.01}),
    ("Adam", {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.8, "ema_overwrite_frequency": 2}),
]


@needs_keras
@pytest.mark.parametrize("steps", [2, 3])
@pytest.mark.parametrize("name,kwargs", ACCUMULATION_CASES,
                         ids=[f"{n}-{'-'.join(k for k in kw if k != 'learning_rate')}" for n, kw in ACCUMULATION_CASES])
def test_gradient_accumulation_apply_gradients_matches_keras(name: str, kwargs: dict[str, Any], steps: int) -> None:
    """``gradient_accumulation_steps`` was refused (ValueError). Keras moves the weights every
    ``steps``-th call with the mean gradient (clipped, decayed, the schedule at that call, Adam's bias
    correction and EMA counting updates); the weights after every call must be Keras's."""
    keras = keras_module()
    w0, grads = weights_and_grads(1.0, steps=7, seed=2)
    kwargs = {**kwargs, "gradient_accumulation_steps": steps}
    ours = _apply_ours(getattr(O, name)(**kwargs), w0, grads)
    theirs = steps_keras(keras_optimizer(keras, name, kwargs), keras, w0, grads)
    _close(ours, theirs)


@needs_keras
def test_gradient_accumulation_fit_and_variables_match_keras() -> None:
    """``fit`` (4 batches an epoch, a window of 3 that crosses the epoch end): the weights, the raw
    ``iteration`` count and the ``gradient_accumulator`` slots (in Keras's place among the variables)."""
    keras = keras_module()
    x, y = _data()
    k_model, r_model = _twins(keras)
    kwargs = {"learning_rate": 0.05, "gradient_accumulation_steps": 3, "use_ema": True, "ema_momentum": 0.5}
    k_opt, r_opt = keras.optimizers.Adam(**kwargs), O.Adam(**kwargs)
    k_model.compile(k_opt, "mse")
    r_model.compile(r_opt, "mse")
    k_hist = k_model.fit(x, y, batch_size=2, epochs=2, verbose=0, shuffle=False)
    r_hist = r_model.fit(x, y, batch_size=2, epochs=2, verbose=0, shuffle=False)
    np.testing.assert_allclose(r_hist.history["loss"], k_hist.history["loss"], rtol=1e-5)
    for a, b in zip(r_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=MODEL_RTOL, atol=MODEL_ATOL)
    ours, theirs = _our_variables(r_opt), _keras_variables(k_opt)
    assert [n for n, _ in ours] == [n for n, _ in theirs]
    assert int(ours[0][1]) == 8  # every call counted (Keras' "iteration" variable)
    for (name, a), (_, b) in zip(ours, theirs):  # (gradients of weights equal to ~1e-6: a wider atol)
        np.testing.assert_allclose(a, b, rtol=MODEL_RTOL, atol=1e-5 if name == "gradient_accumulator" else MODEL_ATOL,
                                   err_msg=name)
    held = [v for n, v in ours if n == "gradient_accumulator"]
    assert len(held) == 4 and all(np.abs(v).sum() > 0 for v in held)  # two calls of the third window


@needs_keras
def test_accumulation_and_loss_scaling_train_on_batch_match_keras() -> None:
    """``train_on_batch`` with both arguments: the returned (unscaled) loss and the weights."""
    keras = keras_module()
    x, y = _data()
    k_model, r_model = _twins(keras)
    kwargs = {"learning_rate": 0.1, "momentum": 0.9, "gradient_accumulation_steps": 2, "loss_scale_factor": 1000.0,
              "clipnorm": 0.2}
    k_model.compile(keras.optimizers.SGD(**kwargs), "mse")
    r_model.compile(O.SGD(**kwargs), "mse")
    for step in range(5):
        theirs = float(k_model.train_on_batch(x[step:step + 4], y[step:step + 4]))
        ours = float(r_model.train_on_batch(x[step:step + 4], y[step:step + 4]))
        assert ours == pytest.approx(theirs, rel=1e-6), f"loss at step {step}"
        for a, b in zip(r_model.get_weights(), k_model.get_weights()):
            np.testing.assert_allclose(a, b, rtol=MODEL_RTOL, atol=MODEL_ATOL, err_msg=f"after step {step}")


# -- loss scaling -----------------------------------------------------------------------------------
@needs_keras
@pytest.mark.parametrize("scale", [256.0, 1000.0])
def test_loss_scale_factor_fit_matches_keras(scale: float) -> None:
    """``loss_scale_factor`` was refused. Keras backpropagates ``loss * scale``, logs the unscaled
    loss, and divides the gradients by ``scale`` before clipping (a clipnorm of the scaled gradients
    would clip far more)."""
    keras = keras_module()
    x, y = _data()
    k_model, r_model = _twins(keras)
    kwargs = {"learning_rate": 0.05, "loss_scale_factor": scale, "global_clipnorm": 0.5}
    k_model.compile(keras.optimizers.Adam(**kwargs), "mse")
    r_model.compile(O.Adam(**kwargs), "mse")
    k_hist = k_model.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False)
    r_hist = r_model.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False)
    np.testing.assert_allclose(r_hist.history["loss"], k_hist.history["loss"], rtol=1e-5)
    for a, b in zip(r_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=MODEL_RTOL, atol=MODEL_ATOL)


@needs_keras
def test_scale_loss_and_apply_in_a_custom_loop_match_keras() -> None:
    """A Keras custom loop: ``grads`` of ``optimizer.scale_loss(loss)`` go to ``apply``, which
    divides them by the factor; ``scale_loss`` is ``loss * factor``."""
    keras = keras_module()
    kwargs = {"learning_rate": 0.01, "loss_scale_factor": 512.0, "clipvalue": 0.1}
    k_opt, r_opt = keras.optimizers.RMSprop(**kwargs), O.RMSprop(**kwargs)
    loss = torch.tensor(1.5)
    assert float(r_opt.scale_loss(loss)) == float(k_opt.scale_loss(loss)) == 768.0
    assert O.RMSprop().scale_loss(loss) is loss
    w0, grads = weights_and_grads(1.0, steps=4, seed=3)
    scaled = [[g * 512.0 for g in gs] for gs in grads]
    _close(_apply_ours(r_opt, w0, scaled), steps_keras(k_opt, keras, w0, scaled))


# -- optimizer state: save/load and checkpoints mid-accumulation ---------------------------------------
def _accumulating_model(seed: int = 3) -> Sequential:
    set_random_seed(seed)
    model = Sequential([Input(shape=(3,)), Dense(4, activation="tanh"), Dense(1)])
    model.compile(O.Adam(0.05, gradient_accumulation_steps=3, loss_scale_factor=8.0), "mse")
    return model


def test_save_and_load_mid_accumulation_continue_exactly(tmp_path: Path) -> None:
    """The accumulated gradients are optimizer state (Keras saves its ``gradient_accumulator``
    variables): a model saved two calls into a window of three and loaded takes the same steps."""
    x, y = _data()
    reference = _accumulating_model()
    for _ in range(6):
        reference.train_on_batch(x, y)
    model = _accumulating_model()
    for _ in range(2):
        model.train_on_batch(x, y)
    held = [v.numpy() for v in model.optimizer.variables if v.name.endswith("gradient_accumulator")]
    assert held and all(np.abs(h).sum() > 0 for h in held)
    model.save(tmp_path / "m", include_optimizer=True)
    loaded = load_model(tmp_path / "m")
    assert loaded.optimizer.gradient_accumulation_steps == 3 and loaded.optimizer.loss_scale_factor == 8.0
    again = [v.numpy() for v in loaded.optimizer.variables if v.name.endswith("gradient_accumulator")]
    for a, b in zip(again, held):
        np.testing.assert_array_equal(a, b)
    for _ in range(4):
        loaded.train_on_batch(x, y)
    assert loaded.optimizer.iterations == 6 // 3  # Keras' updates (calls // gradient_accumulation_steps)
    for a, b in zip(loaded.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_resume_mid_accumulation_continues_exactly(tmp_path: Path) -> None:
    class StopAt(Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if epoch == 2:
                raise RuntimeError("simulated crash")

    x, y = _data()
    fit = {"epochs": 4, "batch_size": 4, "shuffle": False, "verbose": 0}  # 2 calls an epoch, windows of 3
    reference = _accumulating_model()
    reference.fit(x, y, **fit)
    interrupted = _accumulating_model()
    with pytest.raises(RuntimeError, match="simulated crash"):
        interrupted.fit(x, y, checkpoint_dir=tmp_path, callbacks=[StopAt()], **fit)
    resumed = _accumulating_model()
    resumed.fit(x, y, checkpoint_dir=tmp_path, resume_from=tmp_path, **fit)
    assert resumed.optimizer.iterations == reference.optimizer.iterations == 8 // 3  # updates, as Keras
    assert resumed.optimizer.calls == reference.optimizer.calls == 8
    assert int(resumed.optimizer.variables[0].numpy()) == 8  # Keras' iteration variable: the calls
    for a, b in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- exclude_from_weight_decay -----------------------------------------------------------------------
def _text_twins(keras: Any) -> tuple[Any, Sequential]:
    keras.utils.set_random_seed(1)
    theirs = keras.Sequential([keras.Input(shape=(5,), dtype="int32"), keras.layers.Embedding(12, 4),
                               keras.layers.LSTM(3, return_sequences=True), keras.layers.LayerNormalization(),
                               keras.layers.LSTM(3), keras.layers.Dense(2)])
    ours = Sequential([Input(shape=(5,), dtype="int64"), Embedding(12, 4), LSTM(3, return_sequences=True),
                       LayerNormalization(), LSTM(3), Dense(2)])
    ours.set_weights(theirs.get_weights())
    return theirs, ours


@needs_keras
def test_weight_names_are_keras_names() -> None:
    """``var_names`` are searched in Keras' weight names; rnnkit's parameters carry torch's
    (``weight``, ``weight_ih_l0``), so each gets the name Keras gives the same weight."""
    keras = keras_module()
    theirs, ours = _text_twins(keras)
    names = O.keras_weight_names(ours)
    assert [names[id(p)] for p in ours.trainable_weights] == [v.name for v in theirs.trainable_weights]


EXCLUDE_CASES = [
    ("AdamW", {"weight_decay": 0.3}, {"var_names": ["bias", "gamma", "beta", "embeddings"]}),
    ("Adam", {"weight_decay": 0.3}, {"var_names": ["recurrent_"]}),
    ("SGD", {"weight_decay": 0.3, "momentum": 0.9}, {"var_names": ["kernel"]}),
    ("AdamW", {"weight_decay": 0.3}, {"var_list": "dense", "var_names": ["^beta$"]}),
    ("RMSprop", {"weight_decay": 0.3, "gradient_accumulation_steps": 2}, {"var_list": "dense"}),
]


@needs_keras
@pytest.mark.parametrize("name,kwargs,exclude", EXCLUDE_CASES, ids=[f"{c[0]}-{'-'.join(c[2])}" for c in EXCLUDE_CASES])
def test_exclude_from_weight_decay_fit_matches_keras(name: str, kwargs: dict[str, Any], exclude: dict[str, Any]) -> None:
    """``exclude_from_weight_decay`` did not exist (AttributeError): the excluded weights (by
    object or by Keras name) are not decayed, the others are, as Keras."""
    keras = keras_module()
    theirs, ours = _text_twins(keras)
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 12, size=(8, 5)), rng.normal(size=(8, 2)).astype("float32")
    k_opt, r_opt = getattr(keras.optimizers, name)(0.05, **kwargs), getattr(O, name)(0.05, **kwargs)
    k_args, r_args = dict(exclude), dict(exclude)
    if exclude.get("var_list") == "dense":
        k_args["var_list"], r_args["var_list"] = theirs.layers[-1].trainable_weights, ours.layers[-1].trainable_weights
    k_opt.exclude_from_weight_decay(**k_args)
    r_opt.exclude_from_weight_decay(**r_args)
    theirs.compile(k_opt, "mse")
    ours.compile(r_opt, "mse")
    theirs.fit(x.astype("int32"), y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    ours.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    # (Adam's steps on an LSTM's tiny gradients carry float32 noise of ~5e-6 without any decay too;
    # one step's decay moves a weight by 1.5%, three orders more)
    for i, (a, b) in enumerate(zip(ours.get_weights(), theirs.get_weights())):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5, err_msg=f"weight {i}")
    # the exclusion matters: without it the weights differ
    plain = getattr(O, name)(0.05, **kwargs)
    _, again = _text_twins(keras)
    again.compile(plain, "mse")
    again.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    assert any(not np.allclose(a, b, rtol=1e-3, atol=1e-4) for a, b in zip(again.get_weights(), ours.get_weights()))


@needs_keras
def test_exclude_from_weight_decay_apply_gradients_matches_keras() -> None:
    """A custom loop: ``var_list`` exempts those variables; ``var_names`` needs names, which bare
    parameters do not have (a one-line error naming the fix, not a silent decay)."""
    keras = keras_module()
    w0, grads = weights_and_grads(1.0, steps=3, seed=5)
    k_vars = [keras.Variable(w.copy()) for w in w0]
    r_params = [torch.nn.Parameter(torch.tensor(w)) for w in w0]
    k_opt, r_opt = keras.optimizers.AdamW(0.05, weight_decay=0.5), O.AdamW(0.05, weight_decay=0.5)
    k_opt.exclude_from_weight_decay(var_list=[k_vars[1]])
    r_opt.exclude_from_weight_decay(var_list=[r_params[1]])
    for gs in grads:
        k_opt.apply_gradients([(torch.tensor(g), v) for g, v in zip(gs, k_vars)])
        r_opt.apply_gradients(zip(gs, r_params))
    for p, v in zip(r_params, k_vars):  # (1e-6: both sides' float32 rounding at this rate, without exclusions too)
        np.testing.assert_allclose(p.detach().numpy(), np.asarray(v.numpy()), rtol=1e-5, atol=2e-6)
    unnamed = O.SGD(0.1, weight_decay=0.1)
    unnamed.exclude_from_weight_decay(var_names=["bias"])
    with pytest.raises(ValueError, match=r"needs the weight names.*name_weights\(model\)"):
        unnamed.apply_gradients(zip(grads[0], [torch.nn.Parameter(torch.tensor(w)) for w in w0]))


def test_exclude_from_weight_decay_is_refused_after_build_and_takes_a_list() -> None:
    x, y = _data()
    model = Sequential([Input(shape=(3,)), Dense(1)])
    opt = O.AdamW(weight_decay=0.1)
    with pytest.raises(TypeError, match=r"var_names=\['bias'\]"):
        opt.exclude_from_weight_decay(var_names="bias")
    model.compile(opt, "mse")
    model.train_on_batch(x, y)
    with pytest.raises(ValueError, match="before the optimizer is built"):
        opt.exclude_from_weight_decay(var_names=["bias"])


# -- constructor arguments and configs -------------------------------------------------------------------
@needs_keras
def test_new_arguments_round_trip_through_configs_and_read_keras_configs() -> None:
    keras = keras_module()
    kwargs = {"learning_rate": 0.02, "loss_scale_factor": 64.0, "gradient_accumulation_steps": 4}
    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad"):
        ours = getattr(O, name)(**kwargs)
        again = getattr(O, name).from_config(ours.get_config())
        assert again.get_config() == ours.get_config()
        assert (again.loss_scale_factor, again.gradient_accumulation_steps) == (64.0, 4)
        from_keras = O.get_optimizer(keras.optimizers.serialize(getattr(keras.optimizers, name)(**kwargs)))
        assert type(from_keras) is type(ours)
        assert (from_keras.loss_scale_factor, from_keras.gradient_accumulation_steps) == (64.0, 4)
    assert "gradient_accumulation_steps" not in O.Adam().get_config()  # configs without them are unchanged
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be an integer >= 2"):
        O.Adam(gradient_accumulation_steps=1)
    with pytest.raises(ValueError, match="loss_scale_factor must be a positive number"):
        O.Adam(loss_scale_factor=0.0)
