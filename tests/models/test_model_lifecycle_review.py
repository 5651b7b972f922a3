"""Keras-style model life cycle outside training: save/load, configs, weights, bad files.

Each test here pins a defect found in review (see the test's docstring).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnkit.layers import (
    GRU,
    LSTM,
    Bidirectional,
    Dense,
    Dropout,
    Embedding,
    Input,
    Layer,
    SimpleRNN,
    TimeDistributed,
)
from rnnkit.layers.base import LAYERS
from rnnkit.models import Model, Sequential, load_model, model_from_json
from rnnkit.training import TorchOptimizer


class Scale(Layer):
    """A custom layer that is deliberately not registered: it loads only through custom_objects."""

    supports_masking = True

    def __init__(self, factor: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape: Any) -> None:
        self.gain = torch.nn.Parameter(torch.full((input_shape[-1],), float(self.factor)))

    def call(self, inputs: torch.Tensor, mask: Any = None, **kwargs: Any) -> torch.Tensor:
        return inputs * self.gain

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


def _registered_save(model_fn: Any, path: Path) -> Any:
    """Build and save a model holding ``Scale`` while it is registered, then unregister it."""
    LAYERS["Scale"] = Scale
    try:
        model = model_fn()
        model.save(path)
        text = model.to_json()
    finally:
        del LAYERS["Scale"]
    return model, text


def _tagger() -> tuple[Sequential, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(1, 20, (12, 7))
    x[:4, 5:] = 0
    y = rng.integers(0, 3, (12,))
    torch.manual_seed(0)
    model = Sequential([Embedding(20, 6, mask_zero=True), Bidirectional(GRU(5, return_sequences=True)), Dropout(0.3),
                        TimeDistributed(Dense(4)), SimpleRNN(3), Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.train_on_batch(x, y)
    return model, x, y


def test_load_model_honours_custom_objects(tmp_path: Path) -> None:
    """Defect: ``load_model(path, custom_objects={...})`` (documented) failed with "unknown layer
    class" for any Sequential or functional model: the top-level ``from_config`` dropped
    ``custom_objects`` before rebuilding the layers."""
    x = torch.randn(2, 3)
    seq, seq_json = _registered_save(lambda: Sequential([Input(shape=(3,)), Scale(3.0), Dense(2)]), tmp_path / "s")

    def functional() -> Model:
        inp = Input(shape=(3,))
        return Model(inp, Dense(2)(Sequential([Scale(0.5)], name="inner")(inp)))  # nested model too

    fun, _ = _registered_save(functional, tmp_path / "f")
    for model, path in ((seq, "s"), (fun, "f")):
        loaded = load_model(tmp_path / path, custom_objects={"Scale": Scale})
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert isinstance(model_from_json(seq_json, custom_objects={"Scale": Scale}), Sequential)
    assert "Scale" not in LAYERS  # the registry is restored afterwards
    with pytest.raises(ValueError, match="unknown layer class 'Scale'"):
        load_model(tmp_path / "s")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("model"), "has no model architecture"),
    (lambda c: c.update(model="Sequential"), "has no model architecture"),
    (lambda c: c.update(format_version="x"), "format_version 'x' is not an integer"),
    (lambda c: c["model"]["config"]["layers"][1].update(class_name="Evil"), "unknown layer class 'Evil'"),
    (lambda c: c["model"]["config"]["layers"][1]["config"].update(bogus=1), "unexpected keyword argument"),
    (lambda c: c["model"]["config"]["layers"][1].pop("config") and c["model"]["config"]["layers"][1].pop("class_name"),
     "unknown layer class None"),
])
def test_malformed_config_is_a_one_line_error_naming_the_file(tmp_path: Path, edit: Any, message: str) -> None:
    """Defect: a config.json with a missing or mistyped entry raised a bare ``KeyError: 'model'``,
    ``AttributeError: 'str' object has no attribute 'get'`` or ``invalid literal for int()``,
    and an unknown layer class or argument did not say which file was at fault."""
    model = Sequential([Input(shape=(5,), dtype="int64"), Embedding(10, 4), LSTM(3), Dense(2)])
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    edit(config)
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message) as info:
        load_model(tmp_path / "m")
    assert str(tmp_path / "m" / "config.json") in str(info.value) and "\n" not in str(info.value)


def test_foreign_files_are_named_not_called_damaged(tmp_path: Path) -> None:
    """Defect: a Keras ``.keras``/``.h5`` file or a ``torch.save`` checkpoint was reported as "the
    file is damaged ... save the model again", which misleads a Keras user; the error now says
    what the file is and how to import Keras weights. A pickle payload is refused, never run."""
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))

    (tmp_path / "pickle.safetensors").write_bytes(pickle.dumps(Payload()))
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.keras")  # a zip archive, like a .keras file
    (tmp_path / "w.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    built = Sequential([Input(shape=(3,)), Dense(2)])
    for name, what in (("pickle.safetensors", "Python pickle"), ("model.keras", "zip archive"),
                       ("w.weights.h5", "HDF5 file")):
        for load in (lambda p: load_model(p), built.load_weights):
            with pytest.raises(ValueError, match=what) as info:
                load(str(tmp_path / name))
            assert "damaged" not in str(info.value)
    folder = tmp_path / "folder"
    built.save(folder)
    (folder / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="Python pickle"):
        load_model(folder)
    assert not marker.exists()


@pytest.mark.parametrize("target", ["m", "m.safetensors"])
def test_damaged_weights_are_refused(tmp_path: Path, target: str) -> None:
    """Defect: bytes changed inside the tensor data of a save loaded silently (safetensors checks only
    the header), giving a model with wrong weights although the docs promise an error for a corrupt
    save. The config now records a SHA-256 of the weights and loading checks it."""
    model = Sequential([Input(shape=(5,), dtype="int64"), Embedding(10, 4), LSTM(3), Dense(2)])
    path = tmp_path / target
    model.save(path)
    weights = path / "model.safetensors" if path.is_dir() else path
    data = bytearray(weights.read_bytes())
    data[-6:] = b"\x7f" * 6  # inside the last tensor's data, the header untouched
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not match the checksum") as info:
        load_model(path)
    assert str(weights) in str(info.value)
    if path.is_dir():  # load_weights(folder) checks the folder's checksum too
        with pytest.raises(ValueError, match="do not match the checksum"):
            model.load_weights(path)


def test_optimizer_file_is_checked(tmp_path: Path) -> None:
    """Defect: an optimizer.safetensors from another model of the same parameter count, or from
    another optimizer, loaded silently (training then crashed or went wrong); a truncated one or one
    without metadata raised a raw ``SafetensorError`` / ``KeyError``."""
    x = np.random.default_rng(0).normal(size=(8, 5, 3)).astype("float32")
    y = np.zeros((8, 1), "float32")

    def saved(name: str, rnn: Layer, optimizer: str) -> Path:
        model = Sequential([Input(shape=(5, 3)), rnn, Dense(1)])
        model.compile(optimizer, "mse")
        model.train_on_batch(x, y)
        model.save(tmp_path / name, include_optimizer=True)
        return tmp_path / name

    gru, lstm, sgd = saved("gru", GRU(4), "adam"), saved("lstm", LSTM(4), "adam"), saved("sgd", GRU(4), "sgd")
    cases = {
        "other model": (lstm / "optimizer.safetensors", "parameters of other shapes"),
        "other optimizer": (sgd / "optimizer.safetensors", "state of a SGD optimizer"),
        "no metadata": (gru / "model.safetensors", "no optimizer state"),
    }
    for name, (source, message) in cases.items():
        target = tmp_path / name
        shutil.copytree(gru, target)
        shutil.copy(source, target / "optimizer.safetensors")
        with pytest.raises(ValueError, match=message):
            load_model(target)
    target = tmp_path / "truncated"
    shutil.copytree(gru, target)
    data = (gru / "optimizer.safetensors").read_bytes()
    (target / "optimizer.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="optimizer.safetensors is not a readable rnnkit save"):
        load_model(target)
    assert load_model(target, compile=False) is not None  # the model itself is fine


def test_unsaveable_compile_settings_are_not_dropped_silently(tmp_path: Path) -> None:
    """Defect: with a torch optimizer class (or a loss function, or a schedule function) the
    compile settings were left out of the save without a word: the loaded model came back
    uncompiled, and ``include_optimizer=True`` wrote an optimizer file that was never loaded."""
    model = Sequential([Input(shape=(5, 3)), GRU(4), Dense(1)])
    model.compile(TorchOptimizer(torch.optim.NAdam, lr=2e-3), "mse")
    model.train_on_batch(np.zeros((4, 5, 3), "float32"), np.zeros((4, 1), "float32"))
    with pytest.raises(ValueError, match="include_optimizer=True but the compile settings cannot be saved"):
        model.save(tmp_path / "with_opt", include_optimizer=True)
    assert not (tmp_path / "with_opt").exists()
    with pytest.warns(UserWarning, match="compile settings are not saved .*NAdam"):
        model.save(tmp_path / "plain")
    assert load_model(tmp_path / "plain").compiled is None
    named = Sequential([Input(shape=(5, 3)), GRU(4), Dense(1)])
    named.compile("adam", "mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named.save(tmp_path / "named")  # savable settings: no warning


def test_set_weights_checks_everything_before_writing() -> None:
    """Defect: ``Model.set_weights`` wrote layer after layer and only then found too many arrays
    (or too few, or a bad shape further on), leaving the model half overwritten; a bad shape
    inside a ``Bidirectional`` named the inner ``'lstm'`` (a name ``get_layer`` does not know)."""
    inp = Input(shape=(None, 3))
    out = Dense(2, name="head")(Bidirectional(LSTM(4), name="bi")(inp))
    model = Model(inp, out)
    before = [w.copy() for w in model.get_weights()]
    fresh = [np.ones_like(w) for w in before]
    cases = {
        "too many": (fresh + [np.zeros(1)], r"takes 8 weight arrays, got 9"),
        "too few": (fresh[:-1], r"takes 8 weight arrays, got 7 \(layer 'head' needs arrays 6\.\.7\)"),
        "bad shape": (fresh[:5] + [np.zeros((1, 1))] + fresh[6:],
                      r"layer 'bi' \(Bidirectional\) weight 5 must have shape \[16\], got \[1, 1\] \(array 5 of the list\)"),
    }
    for name, (weights, message) in cases.items():
        with pytest.raises(ValueError, match=message) as info:
            model.set_weights(weights)
        assert "\n" not in str(info.value), name
        for w, b in zip(model.get_weights(), before):
            np.testing.assert_array_equal(w, b, err_msg=name)
    model.set_weights(fresh)
    assert all(np.array_equal(w, f) for w, f in zip(model.get_weights()[-2:], fresh[-2:]))


def test_fresh_process_load_predicts_and_trains_identically(tmp_path: Path) -> None:
    """Regression: save with the optimizer, load in a new process, and both predictions and two
    more training steps (same dropout seed) match bit for bit."""
    model, x, y = _tagger()
    model.save(tmp_path / "m", include_optimizer=True)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "p.npy", model.predict(x, verbose=0))
    torch.manual_seed(5)
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    np.save(tmp_path / "p2.npy", model.predict(x, verbose=0))
    code = f"""
import numpy as np, torch
from rnnkit.models import load_model
d = {str(tmp_path)!r}
m = load_model(d + '/m')
x, y = np.load(d + '/x.npy'), np.load(d + '/y.npy')
assert np.array_equal(m.predict(x, verbose=0), np.load(d + '/p.npy')), 'predictions differ'
torch.manual_seed(5)
m.train_on_batch(x, y)
m.train_on_batch(x, y)
assert np.array_equal(m.predict(x, verbose=0), np.load(d + '/p2.npy')), 'training differs'
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
