"""A model computes in its parameters' dtype, whatever changed it: ``dtype="float64"`` layers,
``model.to(torch.float64)`` or ``model.to(torch.bfloat16)`` (a ``precision="bf16-true"`` fit trains in
bfloat16 and gives the model back in its own dtypes).
Float inputs are cast to it, ``predict`` returns the outputs' dtype (bfloat16 as float32, which
NumPy lacks) and ``get_weights`` works on bfloat16 weights. (After a bf16-true fit, ``predict`` on
float32 arrays was refused; ``predict`` of a float64 model returned float32, where Keras returns
float64.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import rnnkit.layers as L
from rnnkit.models import Sequential

from .keras_reference import HAS_KERAS, keras_module

X = np.random.default_rng(0).normal(size=(6, 5, 3)).astype("float32")
Y = np.random.default_rng(1).normal(size=(6, 2)).astype("float32")


def _model(dtype: str | None = None) -> Sequential:
    model = Sequential([L.Input((5, 3)), L.LSTM(4, dtype=dtype), L.Dense(2, dtype=dtype)])
    model.compile("adam", "mse")
    return model


def test_bf16_true_fit_then_a_bfloat16_model_predicts_and_evaluates_float32_arrays() -> None:
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, Y, epochs=1, verbose=0, precision="bf16-true")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # given back as it came
    model.to(torch.bfloat16)
    got = model.predict(X, verbose=0)
    assert got.dtype == np.float32
    with torch.no_grad():
        expected = model(torch.from_numpy(X).to(torch.bfloat16)).float().numpy()
    np.testing.assert_array_equal(got, expected)
    assert np.isfinite(model.evaluate(X, Y, verbose=0))
    weights = model.get_weights()
    assert all(w.dtype == np.float32 for w in weights)
    np.testing.assert_array_equal(weights[-1], model.layers[-1].bias.detach().float().numpy())


def test_model_moved_to_float64_takes_float32_arrays() -> None:
    model = _model()
    model.build((None, 5, 3))
    reference = _model()
    reference.build((None, 5, 3))
    reference.set_weights(model.get_weights())
    model.to(torch.float64)
    got = model.predict(X, verbose=0)
    assert got.dtype == np.float64
    with torch.no_grad():
        expected = reference(torch.from_numpy(X)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_float64_layers_predict_float64() -> None:
    model = _model("float64")
    got = model.predict(X, verbose=0)
    assert got.dtype == np.float64
    assert all(w.dtype == np.float64 for w in model.get_weights())


def test_float32_model_still_returns_float32() -> None:
    model = _model()
    assert model.predict(X.astype("float64"), verbose=0).dtype == np.float32


@pytest.mark.skipif(not HAS_KERAS, reason="keras is not installed")
def test_float64_model_as_keras() -> None:
    keras = keras_module()
    ours = _model("float64")
    ours.build((None, 5, 3))
    theirs = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, dtype="float64"),
                               keras.layers.Dense(2, dtype="float64")])
    theirs.set_weights(ours.get_weights())
    expected = theirs.predict(X, verbose=0)
    got = ours.predict(X, verbose=0)
    assert got.dtype == expected.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)  # Keras runs part of its LSTM in float32
