"""Two gaps of ``Model.fit`` next to Keras 3 (``KERAS_BACKEND=torch``).

1. ``precision="bf16-true"`` (``"16-true"``, ``"64-true"``) left the model in bfloat16 (float64)
   after ``fit``: Lightning converts the whole module for training. A later ``predict``,
   ``evaluate``, ``save`` or a second ``fit`` ran on the converted model, where Keras' ``fit`` never
   changes a model's dtypes. The model now comes back in its own dtypes (the same parameters, ties
   kept), also when ``fit`` stops with an exception or Ctrl-C, with the optimizer's element-wise state
   (Adam's moments, EMA's averages) in the parameters' dtype, as torch's ``load_state_dict`` casts it.
2. With ``gradient_accumulation_steps=N``, ``optimizer.iterations`` gave the call count where
   Keras' property gives the updates (``calls // N``); ``optimizer.variables``' ``iteration`` (Keras'
   raw variable), the schedule, saves and checkpoints keep the call count.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from rnnkit.layers import BatchNormalization, Dense, Embedding, Input
from rnnkit.models import Sequential, load_model, set_random_seed
from rnnkit.training import Callback
from rnnkit.training import optimizers as O

from .keras_reference import keras_module, needs_keras
from .test_keras_optimizers_parity import keras_optimizer, weights_and_grads
from .test_optimizer_keras_args_review import MODEL_ATOL, MODEL_RTOL, _keras_variables, _our_variables
from .test_optimizer_state_review import _data, _twins

FIT = {"batch_size": 4, "verbose": 0, "shuffle": False}
TRUE_PRECISIONS = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64}


# -- 1. a fit in a *-true precision gives the model back in its own dtypes ----------------------------
def _tied_model() -> Sequential:
    """Embedding -> BatchNormalization -> Dense whose kernel is the embedding table (tied), Adam with EMA."""
    set_random_seed(0)
    model = Sequential([Input(shape=(5,), dtype="int64"), Embedding(7, 4), BatchNormalization(),
                        Dense(7, activation="softmax")])
    model.build((None, 5))
    model.layers[-1].weight = model.layers[0].weight
    model.compile(O.Adam(0.01, use_ema=True, ema_momentum=0.5), "sparse_categorical_crossentropy")
    return model


def _tokens() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 7, size=(8, 5)), rng.integers(0, 7, size=(8, 5))


def _assert_float32_with_state(model: Sequential, params: list[torch.nn.Parameter]) -> None:
    """The model's floating tensors are float32 again, the same Parameter objects (the optimizer's),
    and every element-wise optimizer state tensor and Keras variable is float32 too."""
    now = list(model.parameters())
    assert len(now) == len(params) and all(a is b for a, b in zip(now, params))
    assert all(t.dtype == torch.float32 for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in now)
    opt = model.optimizer
    assert all(a is b for a, b in zip(opt._params, [p for p in params if p.requires_grad]))
    for p in opt._params:
        for key, value in opt.torch_optimizer.state[p].items():
            if key != "step":
                assert value.dtype == torch.float32, key
    assert {v.dtype for v in opt.variables} == {"int64", "float32"}


@pytest.mark.parametrize("precision", list(TRUE_PRECISIONS))
def test_true_precision_fit_gives_the_model_back_in_its_dtypes(precision: str, tmp_path: Path) -> None:
    """After the fit: float32 parameters (the same objects, the tie kept), their values those trained
    (exact in float32 for bfloat16/float16), the EMA averages and Adam's moments float32 (the averages
    equal the weights, which the end of fit overwrote with them), ``predict`` in float32 equal to a
    float32 twin given the weights, and a save whose weights and optimizer state are float32."""
    x, y = _tokens()
    model = _tied_model()
    params = list(model.parameters())
    model.fit(x, y, epochs=2, precision=precision, **FIT)
    _assert_float32_with_state(model, params)
    assert model.layers[-1].weight is model.layers[0].weight
    trained = TRUE_PRECISIONS[precision]
    if trained != torch.float64:  # the values trained in the narrow dtype, each exact in float32
        for p in model.parameters():
            assert torch.equal(p.detach(), p.detach().to(trained).float())
    averages = [v.numpy() for v in model.optimizer.variables if v.name.endswith("_average")]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(averages) == len(trainable)
    for a, p in zip(averages, trainable):
        np.testing.assert_array_equal(a, p.detach().numpy())
    twin = _tied_model()
    twin.set_weights(model.get_weights())
    got = model.predict(x, verbose=0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, twin.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    model.save(tmp_path / "m", include_optimizer=True)
    for name in ("model.safetensors", "optimizer.safetensors"):
        saved = load_file(str(tmp_path / "m" / name))
        assert {t.dtype for t in saved.values() if t.is_floating_point()} == {torch.float32}, name


class _Stop(Callback):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if batch == 1:
            raise self.error


@pytest.mark.parametrize("error", [RuntimeError("simulated crash"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_true_precision_fit_stopped_gives_the_model_back(error: BaseException) -> None:
    """A fit that an exception or Ctrl-C stops mid-epoch also gives back float32 weights and state."""
    x, y = _tokens()
    model = _tied_model()
    params = list(model.parameters())
    with pytest.raises(type(error)):
        model.fit(x, y, epochs=2, precision="bf16-true", callbacks=[_Stop(error)], **FIT)
    _assert_float32_with_state(model, params)
    assert model.optimizer.iterations == 2
    model.train_on_batch(x, y)  # steps in float32 (bfloat16 moments with float32 weights: torch refuses)


@needs_keras
@pytest.mark.parametrize("kwargs", [{}, {"use_ema": True, "ema_momentum": 0.5}], ids=["adam", "adam-ema"])
def test_fit_after_a_bf16_true_fit_trains_in_float32_as_keras(kwargs: dict[str, Any]) -> None:
    """A ``32-true`` fit after a ``bf16-true`` one trains the float32 model: it equals Keras' float32
    fit started from the same point, the weights and optimizer variables the bf16 fit left (bfloat16
    values are exact in float32, so the start is the same). Before, the second fit trained on in
    bfloat16 (and ``optimizer.variables`` could not be read into NumPy)."""
    keras = keras_module()
    x, y = _data()
    k_model, r_model = _twins(keras)
    r_opt = O.Adam(0.05, **kwargs)
    r_model.compile(r_opt, "mse")
    r_model.fit(x, y, epochs=1, precision="bf16-true", **FIT)
    k_opt = keras.optimizers.Adam(0.05, **kwargs)
    k_model.compile(k_opt, "mse")
    k_model.set_weights(r_model.get_weights())
    k_opt.build(k_model.trainable_variables)
    start = _our_variables(r_opt)
    assert [n for n, _ in start] == [n for n, _ in _keras_variables(k_opt)]
    for variable, (_, value) in zip(k_opt.variables, start):
        variable.assign(value.T if value.ndim == 2 else value)
    k_hist = k_model.fit(x, y, epochs=2, **FIT)
    r_hist = r_model.fit(x, y, epochs=2, precision="32-true", **FIT)
    assert all(p.dtype == torch.float32 for p in r_model.parameters())
    np.testing.assert_allclose(r_hist.history["loss"], k_hist.history["loss"], rtol=1e-5)
    for a, b in zip(r_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=MODEL_RTOL, atol=MODEL_ATOL)
    for (name, a), (_, b) in zip(_our_variables(r_opt), _keras_variables(k_opt)):
        np.testing.assert_allclose(a, b, rtol=MODEL_RTOL, atol=MODEL_ATOL, err_msg=name)


def test_bf16_true_fit_after_a_float32_fit_steps_with_bfloat16_state() -> None:
    """The other way round: a ``bf16-true`` fit after a float32 one took Adam's float32 moments into
    bfloat16 steps, which torch refuses (mixed dtypes). The moments follow the converted parameters:
    the fit equals a twin converted to bfloat16 whose optimizer state went through torch's
    ``load_state_dict`` (which casts state to the parameters' dtype), then stepped batch by batch by
    ``train_on_batch``."""
    x, y = _data()

    def trained() -> Sequential:
        set_random_seed(1)
        model = Sequential([Input(shape=(3,)), Dense(4, activation="tanh"), Dense(1)])
        model.compile(O.Adam(0.05), "mse")
        model.fit(x, y, epochs=1, **FIT)
        return model

    model, twin = trained(), trained()
    history = model.fit(x, y, epochs=1, precision="bf16-true", **FIT)
    twin.to(torch.bfloat16)
    torch_opt = twin.optimizer.torch_optimizer
    torch_opt.load_state_dict(torch_opt.state_dict())
    assert {v.dtype for p in twin.optimizer._params for k, v in torch_opt.state[p].items() if k != "step"} \
        == {torch.bfloat16}
    losses = [float(twin.train_on_batch(x[i:i + 4], y[i:i + 4])) for i in (0, 4)]
    assert model.optimizer.iterations == twin.optimizer.iterations == 4
    np.testing.assert_allclose(history.history["loss"][0], np.mean(losses), rtol=1e-2)
    for a, b in zip(model.get_weights(), twin.get_weights()):  # within one bfloat16 step of each other (the
        # two paths round a few gradients differently); zeroed or uncast moments move the weights by ~lr
        np.testing.assert_allclose(a, b, rtol=2**-7, atol=1e-6)
    assert all(p.dtype == torch.float32 for p in model.parameters())


# -- 2. optimizer.iterations with gradient accumulation is Keras' update count -------------------------
@needs_keras
@pytest.mark.parametrize("steps", [2, 3])
def test_iterations_count_updates_as_keras_apply_gradients(steps: int) -> None:
    """Call by call: ``iterations`` (updates), the ``iteration`` variable and ``apply_gradients``'
    return (the call count), the scheduled ``learning_rate`` (at the call count) and the weights."""
    keras = keras_module()
    w0, grads = weights_and_grads(1.0, steps=7, seed=4)
    kwargs = {"learning_rate": O.ExponentialDecay(0.1, 2, 0.5), "momentum": 0.9, "gradient_accumulation_steps": steps}
    r_opt, k_opt = O.SGD(**kwargs), keras_optimizer(keras, "SGD", kwargs)
    params = [torch.nn.Parameter(torch.tensor(w)) for w in w0]
    variables = [keras.Variable(w.copy()) for w in w0]
    for call, gs in enumerate(grads):
        ours = r_opt.apply_gradients(zip(gs, params))
        theirs = k_opt.apply_gradients([(torch.tensor(g), v) for g, v in zip(gs, variables)])
        assert int(ours) == int(np.asarray(theirs.numpy())) == call + 1
        assert r_opt.iterations == int(k_opt.iterations) == (call + 1) // steps, f"after call {call}"
        assert int(r_opt.iterations.numpy()) == (call + 1) // steps
        assert int(r_opt.variables[0].numpy()) == int(np.asarray(k_opt.variables[0].numpy())) == call + 1
        assert float(r_opt.learning_rate) == pytest.approx(float(k_opt.learning_rate), rel=1e-6)
        for p, v in zip(params, variables):
            np.testing.assert_allclose(p.detach().numpy(), np.asarray(v.numpy()), rtol=2e-6, atol=5e-7)


@needs_keras
def test_iterations_after_fit_and_train_on_batch_match_keras() -> None:
    """``fit`` (4 calls an epoch, windows of 3 across the epoch end) then ``train_on_batch``."""
    keras = keras_module()
    x, y = _data()
    k_model, r_model = _twins(keras)
    kwargs = {"learning_rate": O.ExponentialDecay(0.05, 3, 0.7), "gradient_accumulation_steps": 3}
    k_opt, r_opt = keras_optimizer(keras, "Adam", kwargs), O.Adam(**kwargs)
    k_model.compile(k_opt, "mse")
    r_model.compile(r_opt, "mse")
    k_model.fit(x, y, batch_size=2, epochs=2, verbose=0, shuffle=False)
    r_model.fit(x, y, batch_size=2, epochs=2, verbose=0, shuffle=False)
    for call in range(8, 12):
        assert r_opt.iterations == int(k_opt.iterations) == call // 3
        assert int(r_opt.variables[0].numpy()) == int(np.asarray(k_opt.variables[0].numpy())) == call
        assert float(r_opt.learning_rate) == pytest.approx(float(k_opt.learning_rate), rel=1e-6)
        for a, b in zip(r_model.get_weights(), k_model.get_weights()):
            np.testing.assert_allclose(a, b, rtol=MODEL_RTOL, atol=MODEL_ATOL, err_msg=f"after call {call}")
        k_model.train_on_batch(x[:4], y[:4])
        r_model.train_on_batch(x[:4], y[:4])


@needs_keras
def test_iteration_variable_assign_and_iterations_setter() -> None:
    """``variables[0].assign(n)`` sets the call count, as Keras' ``iteration`` variable (``iterations``
    then reads ``n // N``); ``iterations = n`` / ``iterations.assign(n)`` set the update count, the
    call count becoming ``n * N`` (the start of that update's window)."""
    keras = keras_module()
    r_opt, k_opt = O.SGD(0.1, gradient_accumulation_steps=3), keras.optimizers.SGD(0.1, gradient_accumulation_steps=3)
    for value in (4, 5, 6, 0):
        r_opt.variables[0].assign(value)
        k_opt.variables[0].assign(value)
        assert r_opt.iterations == int(k_opt.iterations) == value // 3
        assert int(r_opt.variables[0].numpy()) == value
    r_opt.iterations = 2
    assert r_opt.iterations == 2 and int(r_opt.variables[0].numpy()) == 6
    assert r_opt.iterations.assign(1) == 1 and int(r_opt.variables[0].numpy()) == 3
    plain = O.SGD(0.1)
    plain.iterations.assign(5)
    assert plain.iterations == int(plain.variables[0].numpy()) == 5


def _accumulating_model() -> Sequential:
    set_random_seed(3)
    model = Sequential([Input(shape=(3,)), Dense(4, activation="tanh"), Dense(1)])
    model.compile(O.Adam(0.05, gradient_accumulation_steps=3), "mse")
    return model


def test_save_holds_the_call_count_and_load_continues_exactly(tmp_path: Path) -> None:
    """The save holds the call count under ``iterations``, as every earlier version wrote it (their
    ``iterations`` was the call count), so their saves load as before; the loaded model's
    ``iterations`` is ``calls // 3`` and it goes on as the uninterrupted model (a plain loop of calls)."""
    x, y = _data()
    reference = _accumulating_model()
    for _ in range(7):
        reference.train_on_batch(x, y)
    model = _accumulating_model()
    for _ in range(5):
        model.train_on_batch(x, y)
    assert model.optimizer.iterations == 1
    model.save(tmp_path / "m", include_optimizer=True)
    with safe_open(str(tmp_path / "m" / "optimizer.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["rnnkit_optimizer"])["iterations"] == 5
    loaded = load_model(tmp_path / "m")
    assert loaded.optimizer.iterations == 1 and int(loaded.optimizer.variables[0].numpy()) == 5
    for _ in range(2):
        loaded.train_on_batch(x, y)
    assert loaded.optimizer.iterations == reference.optimizer.iterations == 2
    assert int(loaded.optimizer.variables[0].numpy()) == 7
    for a, b in zip(loaded.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
