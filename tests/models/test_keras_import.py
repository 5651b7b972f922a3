"""Keras 3 weight import: rnnkit layers with Keras weights give Keras' outputs.

Fixtures (weights, input, Keras output) were made once by ``make_keras_fixtures.py``; when
Keras is installed the live test rebuilds the Keras model and compares again.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

import rnnkit.layers as L
from rnnkit.layers import keras_to_torch, torch_to_keras
from rnnkit.models import Input, Model

from .make_keras_fixtures import CASES, FIXTURES, build_layer, make_input


def rnnkit_model(case: str) -> Model:
    kind, specs = CASES[case]
    x = make_input(kind)
    inputs = Input(shape=x.shape[1:], dtype="int64" if kind == "ids" else "float32")
    h = inputs
    for spec in specs:
        h = build_layer(L, spec)(h)
    return Model(inputs, h)


def load_fixture(case: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    data = np.load(FIXTURES / f"keras_{case}.npz")
    weights = [data[f"w{i}"] for i in range(sum(k.startswith("w") for k in data.files))]
    return data["x"], data["y"], weights


@pytest.mark.parametrize("case", sorted(CASES))
def test_keras_weights_give_keras_outputs(case: str) -> None:
    x, y_keras, weights = load_fixture(case)
    model = rnnkit_model(case)
    model.set_weights(weights)
    y = model.predict(x, verbose=0)
    np.testing.assert_allclose(y, y_keras, atol=2e-5, rtol=1e-4)
    # and back: get_weights returns Keras layout (LSTM/SimpleRNN biases summed, GRU kept apart)
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras is not installed (fixtures still tested)")
@pytest.mark.parametrize("case", sorted(CASES))
def test_live_keras_parity(case: str) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from .make_keras_fixtures import keras_model

    kmodel = keras_model(case)
    kind, _ = CASES[case]
    x = make_input(kind)
    rng = np.random.default_rng(7)
    weights = [(w + rng.normal(scale=0.1, size=w.shape)).astype("float32") for w in kmodel.get_weights()]
    kmodel.set_weights(weights)
    model = rnnkit_model(case)
    model.set_weights(kmodel.get_weights())
    np.testing.assert_allclose(model.predict(x, verbose=0), np.asarray(kmodel.predict(x, verbose=0)), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kind,gates,reset_after", [("lstm", 4, True), ("gru", 3, True), ("gru", 3, False),
                                                    ("simple_rnn", 1, True)])
def test_conversion_round_trip(kind: str, gates: int, reset_after: bool) -> None:
    rng = np.random.default_rng(0)
    units, inputs = 5, 3
    bias_shape = (2, gates * units) if kind == "gru" and reset_after else (gates * units,)
    keras_w = [rng.normal(size=(inputs, gates * units)), rng.normal(size=(units, gates * units)),
               rng.normal(size=bias_shape)]
    params = keras_to_torch(kind, keras_w, units, reset_after=reset_after)
    assert params["weight_ih_l0"].shape == (gates * units, inputs)
    back = torch_to_keras(kind, params, reset_after=reset_after)
    for a, b in zip(back, keras_w):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_gru_gate_order_is_swapped() -> None:
    units = 2
    kernel = np.concatenate([np.full((1, units), v) for v in (1.0, 2.0, 3.0)], axis=1)  # Keras z=1, r=2, h=3
    params = keras_to_torch("gru", [kernel, np.zeros((units, 3 * units)), np.zeros((2, 3 * units))], units)
    np.testing.assert_array_equal(params["weight_ih_l0"][:, 0], [2, 2, 1, 1, 3, 3])  # torch r, z, n


def test_set_weights_errors_name_the_layer() -> None:
    model = rnnkit_model("lstm")
    _, _, weights = load_fixture("lstm")
    with pytest.raises(ValueError, match="lstm.*weight 1 must have shape"):
        model.set_weights([weights[0], weights[1][:, :4], weights[2]])
    with pytest.raises(ValueError, match="takes 3 weight arrays, got 4"):
        model.set_weights([*weights, weights[2]])


def test_loaded_model_can_train_further() -> None:
    x, _, weights = load_fixture("masked_lstm_classifier")
    model = rnnkit_model("masked_lstm_classifier")
    model.set_weights(weights)
    model.compile("sgd", "sparse_categorical_crossentropy")
    before = [p.detach().clone() for p in model.parameters()]
    model.fit(x, np.array([0, 1, 2]), epochs=1, verbose=0)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
