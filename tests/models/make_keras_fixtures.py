"""Generate the Keras parity fixtures in ``tests/models/fixtures/keras_*.npz`` (run once).

Needs Keras 3 on its torch backend (kept out of the test dependencies)::

    pip install keras==3.15.1
    KERAS_BACKEND=torch python tests/models/make_keras_fixtures.py [case ...]

Each fixture holds a small input ``x``, the Keras model's weights (``w0``, ``w1``... in
``model.get_weights()`` order) and its output ``y``. ``test_keras_import.py`` builds the same
architecture with rnnkit, loads the weights with ``set_weights`` and compares outputs; when Keras
is installed it also rebuilds the Keras model from the same :data:`CASES` and checks live.
"""

from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# name -> (input kind, list of (layer class name, args, kwargs)); "ids" inputs are token ids with 0 = padding
CASES: dict[str, tuple[str, list[tuple[str, tuple[Any, ...], dict[str, Any]]]]] = {
    "lstm": ("float", [("LSTM", (4,), {"return_sequences": True})]),
    "lstm_relu_hard_sigmoid": ("float", [("LSTM", (4,), {"return_sequences": True, "activation": "relu",
                                                         "recurrent_activation": "hard_sigmoid"})]),
    "gru_reset_after": ("float", [("GRU", (4,), {"return_sequences": True})]),
    "gru_reset_before": ("float", [("GRU", (4,), {"return_sequences": True, "reset_after": False})]),
    "simple_rnn": ("float", [("SimpleRNN", (4,), {"return_sequences": True})]),
    "bidirectional_lstm": ("float", [("Bidirectional", (("LSTM", (4,), {"return_sequences": True}),), {})]),
    "masked_lstm_classifier": ("ids", [("Embedding", (20, 6), {"mask_zero": True}), ("LSTM", (5,), {}),
                                       ("Dense", (3,), {"activation": "softmax"})]),
    "masked_bidirectional_gru": ("ids", [("Embedding", (20, 6), {"mask_zero": True}),
                                         ("Bidirectional", (("GRU", (3,), {}),), {"merge_mode": "sum"})]),
    # convolution, pooling and normalization (the keras examples' imdb_cnn_lstm.py, scaled down)
    "cnn_lstm": ("ids", [("Embedding", (20, 6), {}), ("Dropout", (0.25,), {}),
                         ("Conv1D", (5, 3), {"padding": "valid", "activation": "relu", "strides": 1}),
                         ("MaxPooling1D", (), {"pool_size": 2}), ("LSTM", (4,), {}), ("Dense", (1,), {}),
                         ("Activation", ("sigmoid",), {})]),
    "conv1d_same_strided": ("float", [("Conv1D", (4, 4), {"strides": 2, "padding": "same", "activation": "tanh"}),
                                      ("MaxPooling1D", (2,), {"padding": "same"})]),
    "conv1d_causal_dilated": ("float", [("Conv1D", (3, 2), {"padding": "causal", "dilation_rate": 2}),
                                        ("AveragePooling1D", (3,), {"strides": 1, "padding": "same"})]),
    "normalization": ("float", [("BatchNormalization", (), {}), ("SpatialDropout1D", (0.3,), {}),
                                ("Dense", (4,), {}), ("LayerNormalization", (), {}), ("Reshape", ((-1, 2),), {})]),
}


def make_input(kind: str) -> np.ndarray:
    """The fixed input of a case: ``[2, 5, 3]`` floats or ``[3, 6]`` padded ids."""
    rng = np.random.default_rng(1234)
    if kind == "float":
        return rng.normal(size=(2, 5, 3)).astype("float32")
    ids = rng.integers(1, 20, size=(3, 6))
    ids[0, 4:] = 0  # right padding
    ids[1, :2] = 0  # left padding
    return ids.astype("int64")


def build_layer(module: Any, spec: tuple[str, tuple[Any, ...], dict[str, Any]]) -> Any:
    """Instantiate ``spec`` from ``module`` (``keras.layers`` or ``rnnkit.layers``)."""
    name, args, kwargs = spec
    if name == "Bidirectional":
        return getattr(module, name)(build_layer(module, args[0]), **kwargs)
    return getattr(module, name)(*args, **kwargs)


def keras_model(case: str) -> Any:
    """The Keras model of ``case`` (random weights)."""
    import keras

    kind, specs = CASES[case]
    x = make_input(kind)
    inputs = keras.Input(shape=x.shape[1:], dtype="int64" if kind == "ids" else "float32")
    h = inputs
    for spec in specs:
        h = build_layer(keras.layers, spec)(h)
    return keras.Model(inputs, h)


def main(cases: list[str] | None = None) -> None:
    """Write the fixtures of ``cases`` (default: all; ``python make_keras_fixtures.py cnn_lstm`` for one)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.utils.set_random_seed(0)
    FIXTURES.mkdir(exist_ok=True)
    for case, (kind, _) in CASES.items():
        if cases and case not in cases:
            continue
        model = keras_model(case)
        x = make_input(kind)
        weights = model.get_weights()
        rng = np.random.default_rng(zlib.crc32(case.encode()))
        weights = [(w + rng.normal(scale=0.1, size=w.shape)).astype("float32") for w in weights]  # non-zero biases
        model.set_weights(weights)
        y = np.asarray(model.predict(x, verbose=0))
        np.savez_compressed(FIXTURES / f"keras_{case}.npz", x=x, y=y, **{f"w{i}": w for i, w in enumerate(weights)})
        print(f"{case}: x {x.shape} -> y {y.shape}, {len(weights)} weight arrays")


if __name__ == "__main__":
    main(sys.argv[1:])
