"""save / load_model: JSON config + safetensors, exact round trips, nothing pickled."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open

from rnnkit.layers import (
    GRU,
    LSTM,
    AttentionPooling,
    Bidirectional,
    Dense,
    Dropout,
    Embedding,
    Input,
    Layer,
    Masking,
    TimeDistributed,
    register_layer,
)
from rnnkit.models import Model, Sequential, load_model
from rnnkit.training import Adam, ExponentialDecay


def trained_classifier() -> tuple[Sequential, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 30, (96, 10))
    x[:, 7:] = 0  # padding
    y = (x[:, 0] > 15).astype(np.int64)
    model = Sequential([Embedding(30, 8, mask_zero=True), Bidirectional(LSTM(6, return_sequences=True)),
                        Dropout(0.2), AttentionPooling(), Dense(2, activation="softmax")])
    model.compile(Adam(learning_rate=ExponentialDecay(0.01, 10, 0.9)), "sparse_categorical_crossentropy",
                  metrics=["accuracy", "f1_macro"])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return model, x, y


@pytest.mark.parametrize("target", ["folder", "model.safetensors"])
def test_round_trip_gives_identical_predictions(tmp_path: Path, target: str) -> None:
    model, x, y = trained_classifier()
    path = tmp_path / target
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.get_config() == model.get_config()
    assert loaded.compiled is not None and loaded.optimizer.schedule is not None
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0))
    loaded.fit(x, y, epochs=1, verbose=0)  # compiled and trainable right away


def test_files_are_json_and_safetensors_only(tmp_path: Path) -> None:
    model, _, _ = trained_classifier()
    model.save(tmp_path / "m", include_optimizer=True)
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors", "optimizer.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["format"] == "rnnkit.model" and config["model"]["class_name"] == "Sequential"
    assert config["compile"]["loss"][0]["class_name"] == "SparseCategoricalCrossentropy"
    with safe_open(str(tmp_path / "m" / "model.safetensors"), framework="pt") as f:
        assert set(f.keys()) == set(model.state_dict())
    for name in os.listdir(tmp_path / "m"):  # no pickle protocol header anywhere
        assert not (tmp_path / "m" / name).read_bytes().startswith(b"\x80")


def test_optimizer_state_round_trip(tmp_path: Path) -> None:
    model, x, y = trained_classifier()
    model.save(tmp_path / "m", include_optimizer=True)
    loaded = load_model(tmp_path / "m")
    a, b = model.optimizer.torch_optimizer.state_dict(), loaded.optimizer.torch_optimizer.state_dict()
    for k, state in a["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(torch.as_tensor(b["state"][k][name]), torch.as_tensor(value))
    assert loaded.optimizer.iterations == model.optimizer.iterations
    torch.manual_seed(1)
    model.fit(x, y, epochs=1, verbose=0, seed=3)
    torch.manual_seed(1)
    loaded.fit(x, y, epochs=1, verbose=0, seed=3)
    for p, q in zip(model.parameters(), loaded.parameters()):
        torch.testing.assert_close(p, q)


def test_functional_and_input_built_models(tmp_path: Path) -> None:
    inp = Input(shape=(None, 4), name="frames")
    h = Masking()(inp)
    seq = GRU(5, return_sequences=True)(h)
    out = [TimeDistributed(Dense(3, activation="softmax"), name="tags")(seq), Dense(1, name="score")(LSTM(2)(seq))]
    model = Model(inp, out)
    model.compile("adam", ["sparse_categorical_crossentropy", "mse"], metrics=[["accuracy"], ["mae"]])
    x = torch.randn(3, 6, 4)
    x[0, 4:] = 0
    model.save(tmp_path / "f.safetensors")
    loaded = load_model(tmp_path / "f.safetensors")
    for a, b in zip(model.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_array_equal(a, b)
    assert loaded.output_names == ["tags", "score"]


def test_weights_only_and_errors(tmp_path: Path) -> None:
    model, x, _ = trained_classifier()
    model.save_weights(tmp_path / "w.safetensors")
    other = Sequential([Embedding(30, 8, mask_zero=True), Bidirectional(LSTM(6, return_sequences=True)),
                        Dropout(0.2), AttentionPooling(), Dense(2, activation="softmax")])
    other.build((None, 10))
    other.load_weights(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(ValueError, match="weights only"):
        load_model(tmp_path / "w.safetensors")
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "w.safetensors", overwrite=False)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing")
    wrong = Sequential([Input(shape=(10,), dtype="int64"), Embedding(30, 4), LSTM(2), Dense(2)])
    with pytest.raises(ValueError, match="do not match the model"):
        wrong.load_weights(tmp_path / "w.safetensors")


def test_custom_layers_register_and_load(tmp_path: Path) -> None:
    @register_layer
    class Scale(Layer):
        supports_masking = True

        def __init__(self, factor: float = 2.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.factor = factor

        def build(self, input_shape: Any) -> None:
            self.gain = torch.nn.Parameter(torch.full((input_shape[-1],), self.factor))

        def call(self, inputs: torch.Tensor, mask: Any = None, **kwargs: Any) -> torch.Tensor:
            return inputs * self.gain

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "factor": self.factor}

    model = Sequential([Input(shape=(3,)), Scale(3.0), Dense(2)])
    model.save(tmp_path / "c")
    loaded = load_model(tmp_path / "c")
    x = torch.randn(2, 3)
    torch.testing.assert_close(loaded(x), model(x))


def test_lazy_model_saves_after_fit(tmp_path: Path) -> None:
    model = Sequential([LSTM(3), Dense(1)])
    with pytest.raises(ValueError, match="not built yet"):
        model.summary()
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(8, 5, 2)).astype("float32")
    model.fit(x, np.zeros((8, 1)), epochs=1, verbose=0)
    model.save(tmp_path / "lazy")
    np.testing.assert_array_equal(load_model(tmp_path / "lazy").predict(x, verbose=0), model.predict(x, verbose=0))
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    assert any("(None, 5, 2)" in line or "(None, 3)" in line for line in lines)
    assert any(line.startswith("Total params: ") for line in lines)
