"""Keras 3 optimizers that Keras examples pick by name and rnnkit lacked (``optimizer="nadam"`` was
``unknown optimizer``): Nadam, Adamax, Adadelta, Lion and Ftrl. Each compared with Keras 3
(``KERAS_BACKEND=torch``) on copied weights: ``apply_gradients`` on raw tensors (weight decay,
clipping, a schedule, EMA, gradient accumulation, small gradients where epsilon's placement shows),
``fit`` of an Embedding/LSTM/Dense model compiled by name, the optimizer variables (Keras' slot names,
order and values), configs both ways, ``save``/``load_model`` and checkpoint resume."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnkit.models import load_model
from rnnkit.training import Callback
from rnnkit.training import optimizers as O

from .keras_reference import keras_module, needs_keras
from .test_keras_optimizers_parity import (
    _regression_model,
    batch,
    keras_optimizer,
    steps_keras,
    weights_and_grads,
)
from .test_optimizer_keras_args_review import _apply_ours, _close, _text_twins
from .test_optimizer_state_review import _data, _twins

NEW = ("Nadam", "Adamax", "Adadelta", "Lion", "Ftrl")

STEP_CASES = [
    ("Nadam", {"learning_rate": 0.01}),
    ("Nadam", {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-4, "weight_decay": 0.1}),
    ("Nadam", {"learning_rate": O.ExponentialDecay(0.02, 2, 0.5), "clipnorm": 0.5, "gradient_accumulation_steps": 2}),
    # (at lr 0.01: Keras's float32 beta_2 makes its first steps ~1e-5 relative off the exact update, 5e-7
    # here; rnnkit's Nadam is within 5e-7 of the exact float64 update at any rate)
    ("Nadam", {"learning_rate": 0.01, "use_ema": True, "ema_momentum": 0.8, "ema_overwrite_frequency": 2}),
    ("Adamax", {"learning_rate": 0.01}),
    ("Adamax", {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.9, "epsilon": 1e-4, "weight_decay": 0.1}),
    ("Adamax", {"learning_rate": O.CosineDecay(0.01, 4, warmup_target=0.02, warmup_steps=2), "global_clipnorm": 0.7,
                "gradient_accumulation_steps": 2}),
    ("Adamax", {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.8, "clipvalue": 0.3}),
    ("Adadelta", {"learning_rate": 1.0}),
    ("Adadelta", {"learning_rate": 1.0, "rho": 0.8, "epsilon": 1e-4, "weight_decay": 0.1}),
    ("Adadelta", {"learning_rate": O.InverseTimeDecay(1.0, 1, 0.5), "clipnorm": 0.5, "gradient_accumulation_steps": 2}),
    ("Adadelta", {"learning_rate": 0.5, "use_ema": True, "ema_momentum": 0.8, "ema_overwrite_frequency": 3}),
    ("Lion", {"learning_rate": 0.01}),
    ("Lion", {"learning_rate": 0.01, "beta_1": 0.5, "beta_2": 0.9, "weight_decay": 0.3}),
    ("Lion", {"learning_rate": O.PiecewiseConstantDecay([1, 3], [0.01, 0.003, 0.02]), "clipnorm": 0.5,
              "gradient_accumulation_steps": 2}),
    ("Lion", {"learning_rate": 0.02, "use_ema": True, "ema_momentum": 0.8, "loss_scale_factor": 64.0}),
    ("Ftrl", {"learning_rate": 0.1}),
    ("Ftrl", {"learning_rate": 0.1, "learning_rate_power": -0.3, "initial_accumulator_value": 0.5,
              "l1_regularization_strength": 0.01, "l2_regularization_strength": 0.01,
              "l2_shrinkage_regularization_strength": 0.02, "beta": 0.5, "weight_decay": 0.1}),
    ("Ftrl", {"learning_rate": O.ExponentialDecay(0.2, 2, 0.5), "clipnorm": 0.5, "gradient_accumulation_steps": 2}),
    ("Ftrl", {"learning_rate": 0.1, "use_ema": True, "ema_momentum": 0.8, "ema_overwrite_frequency": 2}),
]


@needs_keras
@pytest.mark.parametrize("scale", [1.0, 1e-4], ids=["unit_grads", "small_grads"])
@pytest.mark.parametrize("name,kwargs", STEP_CASES,
                         ids=[f"{n}-{'-'.join(k for k in kw if k != 'learning_rate')}" for n, kw in STEP_CASES])
def test_apply_gradients_matches_keras(name: str, kwargs: dict[str, Any], scale: float) -> None:
    """Seven ``apply_gradients`` calls: the weights after each are Keras's. Small gradients are
    where epsilon's placement shows (inside both square roots for Adadelta, added to the norm for
    Adamax, to ``sqrt(v_hat)`` for Nadam)."""
    keras = keras_module()
    w0, grads = weights_and_grads(scale, steps=7, seed=6)
    if "loss_scale_factor" in kwargs:
        grads = [[g * kwargs["loss_scale_factor"] for g in gs] for gs in grads]
    ours = _apply_ours(getattr(O, name)(**kwargs), w0, grads)
    theirs = steps_keras(keras_optimizer(keras, name, kwargs), keras, w0, grads)
    _close(ours, theirs)
    assert any(not np.array_equal(w, x) for w, x in zip(w0, ours[-1]))  # (the weights moved)


@needs_keras
def test_torch_adamax_would_not_match_keras() -> None:
    """Why Adamax has its own step: ``torch.optim.Adamax`` with the same settings keeps epsilon in
    its decaying norm, 13% off Keras's update with ``beta_2=0.5`` on small gradients (rnnkit's is not)."""
    keras = keras_module()
    w0, grads = weights_and_grads(1e-7, steps=4, seed=6)
    theirs = steps_keras(keras.optimizers.Adamax(0.01, beta_2=0.5), keras, w0, grads)
    params = [torch.nn.Parameter(torch.tensor(w)) for w in w0]
    torch_adamax = torch.optim.Adamax(params, lr=0.01, betas=(0.9, 0.5), eps=1e-7)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.tensor(g)
        torch_adamax.step()
    moved = [np.abs(t - w).max() for t, w in zip(theirs[-1], w0)]
    off = [np.abs(p.detach().numpy() - t).max() for p, t in zip(params, theirs[-1])]
    assert max(o / m for o, m in zip(off, moved)) > 0.05
    _close(_apply_ours(O.Adamax(0.01, beta_2=0.5), w0, grads)[-1:], theirs[-1:])


# -- fit of a text model, compiled by name ---------------------------------------------------------------
FIT_CASES: list[tuple[Any, dict[str, Any]]] = [
    ("nadam", {}), ("adamax", {}), ("adadelta", {}), ("lion", {}), ("ftrl", {}),
    ("Nadam", {"learning_rate": 0.01, "weight_decay": 0.1, "gradient_accumulation_steps": 2,
               "exclude": ["bias"]}),
    ("Adamax", {"learning_rate": 0.02, "global_clipnorm": 0.5, "use_ema": True, "ema_momentum": 0.7}),
    ("Adadelta", {"learning_rate": 1.0, "rho": 0.9, "clipvalue": 0.05, "loss_scale_factor": 256.0}),
    ("Lion", {"learning_rate": 0.003, "weight_decay": 0.3, "exclude": ["embeddings", "gamma", "beta"]}),
    ("Ftrl", {"learning_rate": 0.05, "l1_regularization_strength": 0.001, "l2_regularization_strength": 0.01,
              "weight_decay": 0.1, "exclude": ["kernel"], "gradient_accumulation_steps": 2}),
]


@needs_keras
@pytest.mark.parametrize("name,kwargs", FIT_CASES, ids=[f"{n}-{'-'.join(kw)}" for n, kw in FIT_CASES])
def test_fit_text_model_matches_keras(name: str, kwargs: dict[str, Any]) -> None:
    """``compile(optimizer="nadam")`` (Keras' defaults) or an object with the Keras arguments, on an
    Embedding/LSTM/LayerNormalization/LSTM/Dense model: 3 epochs of 2 batches, the losses and weights
    as Keras's (weight decay exclusions by Keras weight name included)."""
    keras = keras_module()
    theirs, ours = _text_twins(keras)
    rng = np.random.default_rng(7)
    x, y = rng.integers(0, 12, size=(8, 5)), rng.normal(size=(8, 2)).astype("float32")
    kwargs = dict(kwargs)
    exclude = kwargs.pop("exclude", None)
    if kwargs or exclude:
        k_opt, r_opt = getattr(keras.optimizers, name)(**kwargs), getattr(O, name)(**kwargs)
        if exclude:
            k_opt.exclude_from_weight_decay(var_names=exclude)
            r_opt.exclude_from_weight_decay(var_names=exclude)
    else:
        k_opt, r_opt = name, name
    theirs.compile(k_opt, "mse")
    ours.compile(r_opt, "mse")
    assert type(ours.optimizer).__name__ == type(theirs.optimizer).__name__ == name.capitalize() \
        or not isinstance(r_opt, str)
    k_hist = theirs.fit(x.astype("int32"), y, batch_size=4, epochs=3, verbose=0, shuffle=False)
    r_hist = ours.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False)
    np.testing.assert_allclose(r_hist.history["loss"], k_hist.history["loss"], rtol=1e-5)
    for i, (a, b) in enumerate(zip(ours.get_weights(), theirs.get_weights())):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5, err_msg=f"weight {i}")
    start = _text_twins(keras)[1].get_weights()  # (Adadelta at Keras' default rate 0.001 moves by ~1e-7)
    assert any(not np.array_equal(a, b) for a, b in zip(ours.get_weights(), start))


# -- variables ------------------------------------------------------------------------------------------
SLOTS = ("gradient_accumulator", "average", "accumulated_delta_var", "accumulated_grad", "momentum", "velocity",
         "norm", "accumulator", "linear")  # (gradient_accumulator before accumulator: both end the same)


def _keras_variables(optimizer: Any) -> list[tuple[str, np.ndarray]]:
    """Keras' variables as (slot name, value in torch layout); Nadam's unnamed scalar is ``u_product``."""
    out = []
    for v in optimizer.variables:
        if v.name in ("iteration", "learning_rate"):
            name = v.name
        else:
            name = next((s for s in SLOTS if v.path.endswith(s)), "u_product")
        value = np.asarray(v.numpy())
        out.append((name, value.T if value.ndim == 2 else value))
    return out


def _our_variables(optimizer: O.Optimizer) -> list[tuple[str, np.ndarray]]:
    return [(v.name.split("_", 2)[-1] if v.name.startswith("variable_") else v.name, v.numpy())
            for v in optimizer.variables]


@needs_keras
@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("extra", [{}, {"use_ema": True, "gradient_accumulation_steps": 3}], ids=["plain", "ema-acc"])
def test_variables_have_keras_names_order_and_values(name: str, extra: dict[str, Any]) -> None:
    keras = keras_module()
    x, y = _data()
    k_model, r_model = _twins(keras)
    kwargs = {"learning_rate": 1.0 if name == "Adadelta" else 0.02, **extra}
    k_opt, r_opt = getattr(keras.optimizers, name)(**kwargs), getattr(O, name)(**kwargs)
    assert len(r_opt.variables) == len(k_opt.variables) == 2  # before building
    k_model.compile(k_opt, "mse")
    r_model.compile(r_opt, "mse")
    k_model.fit(x, y, batch_size=2, epochs=2, verbose=0, shuffle=False)
    r_model.fit(x, y, batch_size=2, epochs=2, verbose=0, shuffle=False)
    ours, theirs = _our_variables(r_opt), _keras_variables(k_opt)
    assert [(n, v.shape) for n, v in ours] == [(n, v.shape) for n, v in theirs]
    for (slot, a), (_, b) in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 if slot == "gradient_accumulator" else 1e-6,
                                   err_msg=slot)
    if name == "Nadam":  # the momentum-schedule product: one scalar, written back by assign
        u_product = r_opt.variables[-1]
        assert u_product.name == "u_product" and u_product.shape == ()
        u_product.assign(0.25)
        assert all(float(s["mu_product"]) == 0.25 for s in r_opt.torch_optimizer.state.values())


# -- configs and names ----------------------------------------------------------------------------------
OWN_ARGUMENTS: dict[str, dict[str, Any]] = {
    "Nadam": {"beta_1": 0.7, "beta_2": 0.95, "epsilon": 1e-5}, "Adamax": {"beta_1": 0.7, "beta_2": 0.95, "epsilon": 1e-5},
    "Adadelta": {"rho": 0.8, "epsilon": 1e-5}, "Lion": {"beta_1": 0.7, "beta_2": 0.95},
    "Ftrl": {"learning_rate_power": -0.3, "initial_accumulator_value": 0.2, "l1_regularization_strength": 0.01,
             "l2_regularization_strength": 0.02, "l2_shrinkage_regularization_strength": 0.03, "beta": 0.4},
}


@needs_keras
@pytest.mark.parametrize("name", NEW)
def test_configs_round_trip_and_read_keras_configs(name: str) -> None:
    keras = keras_module()
    defaults = {k: v for k, v in getattr(keras.optimizers, name)().get_config().items() if k != "name"}
    by_name = O.get_optimizer(name.lower())
    assert type(by_name) is getattr(O, name)
    ours = {k: v for k, v in by_name.get_config().items() if k in defaults and k != "learning_rate"}
    assert ours == {k: v for k, v in defaults.items() if k in ours}
    assert by_name.get_config()["learning_rate"] == pytest.approx(defaults["learning_rate"])
    kwargs = {"learning_rate": 0.02, "weight_decay": 0.01, "clipnorm": 0.5, "use_ema": True,
              "gradient_accumulation_steps": 4, "loss_scale_factor": 8.0,
              **OWN_ARGUMENTS[name]}
    made = getattr(O, name)(**kwargs)
    again = O.get_optimizer(O.serialize_optimizer(made))
    assert type(again) is type(made) and again.get_config() == made.get_config()
    from_keras = O.get_optimizer(keras.optimizers.serialize(getattr(keras.optimizers, name)(**kwargs)))
    assert type(from_keras) is type(made)
    mine, keras_read = made.get_config(), from_keras.get_config()
    for key, value in mine.items():
        if key != "name":
            assert keras_read[key] == pytest.approx(value), key


def test_bad_arguments_are_one_line_errors() -> None:
    for beta_1 in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"^Lion's beta_1 must be in \(0, 1\]"):
            O.Lion(beta_1=beta_1)
    with pytest.raises(ValueError, match=r"^Ftrl's learning_rate_power must be <= 0, got 0.5$"):
        O.Ftrl(learning_rate_power=0.5)
    with pytest.raises(ValueError, match=r"^Ftrl's l1_regularization_strength must be >= 0, got -1"):
        O.Ftrl(l1_regularization_strength=-1)
    ftrl = O.Ftrl(learning_rate=O.CosineDecay(0.0, 4, warmup_target=0.1, warmup_steps=2))
    with pytest.raises(ValueError, match=r"^Ftrl divides by the learning rate, which is 0.0 at this step"):
        ftrl.apply_gradients([(torch.ones(2), torch.nn.Parameter(torch.zeros(2)))])
    with pytest.raises(ValueError, match="choose one of adadelta, adagrad, adam, adamax, adamw, ftrl, lion, nadam"):
        O.get_optimizer("nadamm")


# -- saved and checkpointed state --------------------------------------------------------------------------
STATEFUL = [
    ("Nadam", {"learning_rate": O.CosineDecay(0.01, 6, alpha=0.1, warmup_target=0.02, warmup_steps=1)}),
    ("Adamax", {"learning_rate": 0.02, "use_ema": True, "gradient_accumulation_steps": 2}),
    ("Adadelta", {"learning_rate": O.InverseTimeDecay(1.0, 1, 0.5), "weight_decay": 0.01}),
    ("Lion", {"learning_rate": 0.01, "gradient_accumulation_steps": 3}),
    ("Ftrl", {"learning_rate": O.ExponentialDecay(0.1, 2, 0.5), "l1_regularization_strength": 0.01, "beta": 0.1}),
]


@pytest.mark.parametrize("name,kwargs", STATEFUL, ids=[s[0] for s in STATEFUL])
def test_save_load_and_pickle_continue_training_exactly(tmp_path: Path, name: str, kwargs: dict[str, Any]) -> None:
    """Two steps, ``save`` (the optimizer state goes with it; Adamax and Lion keep a mid-window
    gradient accumulator), ``load_model``, three more: bitwise the weights of five uninterrupted
    steps; a pickled copy of the trained model continues the same way."""
    x, y, _ = batch("regression")
    reference = _regression_model(name, kwargs)
    for _ in range(5):
        reference.train_on_batch(x, y)
    model = _regression_model(name, kwargs)
    for _ in range(2):
        model.train_on_batch(x, y)
    model.save(tmp_path / "m", include_optimizer=True)
    copied = pickle.loads(pickle.dumps(model))
    loaded = load_model(tmp_path / "m")
    steps = kwargs.get("gradient_accumulation_steps") or 1
    assert type(loaded.optimizer) is getattr(O, name) and loaded.optimizer.iterations == 2 // steps  # updates
    for again in (loaded, copied):
        for _ in range(3):
            again.train_on_batch(x, y)
        for a, b in zip(again.get_weights(), reference.get_weights()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name,kwargs", STATEFUL, ids=[s[0] for s in STATEFUL])
def test_checkpoint_resume_continues_training_exactly(tmp_path: Path, name: str, kwargs: dict[str, Any]) -> None:

    class StopAt(Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if epoch == 2:
                raise RuntimeError("simulated crash")

    x, y, _ = batch("regression")
    fit = {"epochs": 4, "batch_size": 4, "shuffle": False, "verbose": 0}
    reference = _regression_model(name, kwargs)
    reference.fit(x, y, **fit)
    interrupted = _regression_model(name, kwargs)
    with pytest.raises(RuntimeError, match="simulated crash"):
        interrupted.fit(x, y, checkpoint_dir=tmp_path, callbacks=[StopAt()], **fit)
    resumed = _regression_model(name, kwargs)
    resumed.fit(x, y, checkpoint_dir=tmp_path, resume_from=tmp_path, **fit)
    steps = kwargs.get("gradient_accumulation_steps") or 1
    assert resumed.optimizer.iterations == reference.optimizer.iterations == 8 // steps  # updates, as Keras
    for a, b in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
