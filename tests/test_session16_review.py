"""Review of the session's changes: regressions found in code paths the change's own tests missed."""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest
import torch

from rnnkit.layers import Dense, Input, Layer
from rnnkit.models import Model, Sequential
from rnnkit.training import SGD, Adagrad, Adam, RMSprop


# -- optimizers: the Keras-form RMSprop/Adagrad torch classes must stay picklable ----------------------
@pytest.mark.parametrize("make", [lambda: RMSprop(momentum=0.9), lambda: Adagrad(), lambda: Adam(), lambda: SGD()])
def test_trained_model_with_keras_form_optimizer_pickles(make):
    # The torch classes were renamed (__qualname__ too) to "RMSprop"/"Adagrad", which pickle resolves to
    # rnnkit's own RMSprop/Adagrad descriptions: pickling the model (or the optimizer) failed.
    torch.manual_seed(0)
    model = Sequential([Dense(3, input_shape=(4,)), Dense(2, activation="softmax")])
    model.compile(optimizer=make(), loss="sparse_categorical_crossentropy")
    x, y = np.random.rand(16, 4).astype("float32"), np.random.randint(0, 2, 16)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    torch_opt = model.optimizer.torch_optimizer
    assert type(torch_opt).__name__ in ("RMSprop", "Adagrad", "Adam", "SGD")  # the recorded name is kept
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    restored = pickle.loads(pickle.dumps(torch_opt))
    assert type(restored) is type(torch_opt)


# -- Layer.input / Layer.output: a subclass's own attribute of that name -------------------------------
class _NamedOutput(Model):
    """PyTorch-style naming: the last layer is ``self.output`` (worked before Layer.output existed)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = Dense(8, activation="relu")
        self.output = Dense(2)

    def call(self, inputs, mask=None, **kwargs):
        return self.output(self.hidden(inputs))


def test_subclassed_model_may_name_its_last_layer_output():
    model = _NamedOutput()
    assert isinstance(model.output, Dense)
    assert model(torch.randn(3, 4)).shape == (3, 2)
    assert "output" in dict(model.named_children())  # still a registered submodule (trained, saved)


def test_layer_may_set_plain_input_attribute():
    class Keeps(Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.input = 3

        def call(self, inputs, mask=None, **kwargs):
            return inputs * self.input

    layer = Keeps()
    assert layer.input == 3
    assert torch.equal(layer(torch.ones(2)), torch.full((2,), 3.0))


def test_uncalled_layer_output_is_an_attribute_error_as_keras():
    # ValueError from the property broke hasattr/getattr(..., default)/inspect.getmembers on any layer
    layer = Dense(3)
    assert not hasattr(layer, "output")
    assert getattr(layer, "input", None) is None
    inspect.getmembers(layer)
    with pytest.raises(AttributeError):
        _ = layer.output


def test_functional_layer_output_still_symbolic():
    inp = Input((4,))
    dense = Dense(2)
    out = dense(inp)
    model = Model(inp, out)
    assert dense.output is out and dense.input is inp
    assert model.output is out
