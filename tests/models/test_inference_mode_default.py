"""Keras layers and models run in inference mode unless told otherwise, as Keras does: a direct call
``model(x)`` has dropout off and normalization on moving statistics; ``fit`` and ``train_on_batch``
train and leave the model in inference mode. (A new rnnkit model started in torch's train mode, so
``model(x)`` on a model with Dropout gave a different answer on every call.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import rnnkit.layers as L
from rnnkit.models import Sequential

from .keras_reference import keras_module


def _model() -> Sequential:
    model = Sequential([L.Input((6, 3)), L.LSTM(5, return_sequences=True, dropout=0.5, recurrent_dropout=0.5),
                        L.BatchNormalization(), L.Dropout(0.5), L.GlobalAveragePooling1D(), L.Dense(2)])
    model.compile("sgd", "mse")
    return model


X = np.random.default_rng(0).normal(size=(8, 6, 3)).astype("float32")
Y = np.random.default_rng(1).normal(size=(8, 2)).astype("float32")


def test_a_direct_call_is_inference_and_equals_predict() -> None:
    model = _model()
    first, second = model(torch.from_numpy(X)), model(torch.from_numpy(X))
    torch.testing.assert_close(first, second)  # no dropout
    np.testing.assert_allclose(first.detach().numpy(), model.predict(X, verbose=0), rtol=1e-6, atol=1e-6)
    assert not model.training and not any(m.training for m in model.modules())


def test_training_true_drops_and_the_mode_is_restored() -> None:
    torch.manual_seed(0)
    model = _model()
    a, b = model(torch.from_numpy(X), training=True), model(torch.from_numpy(X), training=True)
    assert not torch.allclose(a, b)
    assert not any(m.training for m in model.modules())


def test_fit_trains_in_training_mode_and_leaves_inference_mode() -> None:
    model = _model()
    bn = model.layers[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Lightning warns about modules in eval mode at the start
        model.fit(X, Y, epochs=1, batch_size=4, verbose=0)
    assert float(bn.running_mean.abs().sum()) > 0  # batch statistics were used and tracked: training mode
    assert not any(m.training for m in model.modules())
    model.train_on_batch(X, Y)
    assert not any(m.training for m in model.modules())


def test_a_torch_loop_calls_train_first_and_fit_keeps_the_users_modes() -> None:
    model = _model()
    model.train()
    assert all(m.training for m in model.modules())
    model.layers[1].eval()  # a frozen BatchNormalization, the torch way
    model.fit(X, Y, epochs=1, batch_size=4, verbose=0)
    assert model.training and not model.layers[1].training and model.layers[0].training


def test_layers_made_in_build_or_in_a_subclass_follow_the_layers_mode() -> None:
    class Noisy(L.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.drop = torch.nn.Dropout(0.9)  # a torch module: starts in train mode

        def call(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.drop(inputs)

    x = torch.ones(4, 5)
    layer = Noisy()
    torch.testing.assert_close(layer(x), x)  # inference, as Keras
    assert float((layer(x, training=True) == 0).float().mean()) > 0.5


@pytest.mark.parametrize("make", ["dropout", "batchnorm"])
def test_eager_calls_match_keras(make: str) -> None:
    keras = keras_module()
    x = np.random.default_rng(2).normal(size=(4, 5)).astype("float32") * 3 + 2
    if make == "dropout":
        ours, theirs = L.Dropout(0.5), keras.layers.Dropout(0.5)
    else:
        ours, theirs = L.BatchNormalization(), keras.layers.BatchNormalization()
    got = ours(torch.from_numpy(x)).detach().numpy()
    want = np.asarray(keras.ops.convert_to_numpy(theirs(x)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_training_argument_reaches_every_module_in_a_layer_as_in_a_model() -> None:
    """A layer and a model treat training= alike: every module inside runs in that mode for the call,
    and each gets its own mode back after (a module the user set apart keeps its own)."""
    class Two(L.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Dropout(0.9), torch.nn.Dropout(0.9)

        def call(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.a(inputs) + self.b(inputs)

    x = torch.ones(64, 32)
    layer = Two()
    layer.train()
    layer.a.eval()  # set apart by the user
    out = layer(x, training=True)
    assert float((out == 0).float().mean()) > 0.7  # both dropped: 0.9 * 0.9 of the sums are 0
    assert layer.training and not layer.a.training and layer.b.training
    torch.testing.assert_close(layer(x, training=False), 2 * x)
    assert layer.training and not layer.a.training and layer.b.training
