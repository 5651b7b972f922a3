"""``model.save`` keeps the optimizer state by default, as Keras 3 does: a model saved after
``fit`` and loaded trains on with its moments and step count, the way the one that was saved
would have, where it used to start a fresh optimizer (Adam's first steps again, a schedule from
step 0). Where the state cannot be restored it is left out without an error; ``False`` leaves
it out, ``True`` requires it."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.layers import Dense, Input
from rnnkit.models import Sequential, load_model
from rnnkit.training import optimizers as O

from .keras_reference import keras_module, needs_keras


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")


def _model(optimizer: object = "adam") -> Sequential:
    torch.manual_seed(0)
    model = Sequential([Input(shape=(3,)), Dense(4, activation="tanh"), Dense(1)])
    model.compile(optimizer, "mse")
    return model


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_a_saved_and_loaded_model_trains_on_as_the_one_saved(tmp_path: Path, optimizer: str) -> None:
    x, y = _data()
    model = _model(optimizer)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    model.save(str(tmp_path / "m"))  # no argument: Keras 3's default
    assert (tmp_path / "m" / "optimizer.safetensors").is_file()
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.optimizer.iterations == model.optimizer.iterations == 8
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@needs_keras
def test_keras_3_saves_the_optimizer_by_default_too(tmp_path: Path) -> None:
    keras = keras_module()
    x, y = _data()
    keras.utils.set_random_seed(0)
    theirs = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(4, activation="tanh"),
                               keras.layers.Dense(1)])
    theirs.compile("adam", "mse")
    theirs.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    theirs.save(str(tmp_path / "k.keras"))
    back = keras.saving.load_model(str(tmp_path / "k.keras"))
    assert int(back.optimizer.iterations.numpy()) == 8  # the reference behaviour this default follows
    ours = _model()
    ours.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    ours.save(str(tmp_path / "ours.keras"))
    assert int(load_model(str(tmp_path / "ours.keras")).optimizer.iterations.numpy()) == 8


def test_left_out_where_it_cannot_be_restored_without_an_error(tmp_path: Path) -> None:
    x, y = _data()
    untrained = _model()
    untrained.save(str(tmp_path / "untrained"))  # compiled, no step taken: no state to keep
    assert sorted(os.listdir(tmp_path / "untrained")) == ["config.json", "model.safetensors"]
    trained = _model()
    trained.fit(x, y, epochs=1, verbose=0)
    trained.save(str(tmp_path / "one.safetensors"))  # a single file holds weights and config only
    assert load_model(str(tmp_path / "one.safetensors")).optimizer.iterations == 0
    torch_optimizer = _model(O.TorchOptimizer(torch.optim.SGD, lr=0.1))
    torch_optimizer.fit(x, y, epochs=1, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch_optimizer.save(str(tmp_path / "torch"))  # compile settings not saved: warned, as before
    assert any("compile settings are not saved" in str(w.message) for w in caught)
    assert sorted(os.listdir(tmp_path / "torch")) == ["config.json", "model.safetensors"]


def test_false_leaves_it_out_and_removes_an_earlier_one(tmp_path: Path) -> None:
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, verbose=0)
    model.save(str(tmp_path / "m"))
    assert (tmp_path / "m" / "optimizer.safetensors").is_file()
    model.save(str(tmp_path / "m"), include_optimizer=False)  # a smaller folder to deploy
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]
    assert load_model(str(tmp_path / "m")).optimizer.iterations == 0
