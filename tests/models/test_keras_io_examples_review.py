"""More keras.io / Keras-book recurrent examples, written as Keras 3 code with only the imports changed.

Each runs the same code against real Keras 3 (torch backend) with copied weights: the "Working with
RNNs" guide (summaries, the encoder-decoder with embeddings and ``initial_state``, custom backward
layers), the Keras book's stacked GRU with ``recurrent_dropout`` on ``timeseries_dataset_from_array``
with ``ModelCheckpoint``/``ReduceLROnPlateau``/``EarlyStopping`` and ``load_model``, Bidirectional
merge modes, ``go_backwards``, ``GRU(reset_after=False)`` under ``TimeDistributed`` and masking.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnkit.data
import rnnkit.layers
import rnnkit.models
import rnnkit.training

from .keras_reference import keras_module, needs_keras  # keras_module() imports Keras on the torch backend

pytestmark = needs_keras

# the import swap: keras.layers / keras.models / keras.callbacks / keras.optimizers / keras.utils
rk = types.SimpleNamespace(
    layers=rnnkit.layers, models=rnnkit.models, Sequential=rnnkit.models.Sequential, Model=rnnkit.models.Model,
    Input=rnnkit.layers.Input, callbacks=rnnkit.training, optimizers=rnnkit.training,
    utils=types.SimpleNamespace(pad_sequences=rnnkit.data.pad_sequences, to_categorical=rnnkit.models.to_categorical,
                                timeseries_dataset_from_array=rnnkit.data.timeseries_dataset_from_array,
                                set_random_seed=rnnkit.models.set_random_seed),
)


def both() -> tuple[Any, Any]:
    return keras_module(), rk


def predict_all(model: Any, x: Any) -> list[np.ndarray]:
    out = model.predict(x, verbose=0)
    return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]


def assert_same_predictions(kmodel: Any, model: Any, x: Any, atol: float = 1e-5) -> None:
    """Copy Keras' weights into the rnnkit model (Keras order and layout) and compare outputs."""
    model.set_weights(kmodel.get_weights())
    assert model.count_params() == kmodel.count_params()
    for ours, theirs in zip(predict_all(model, x), predict_all(kmodel, x), strict=True):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, atol=atol)


# -- "Working with RNNs": encoder-decoder with embeddings (functional layer order) -----------------
def encoder_decoder(keras: Any) -> Any:
    layers = keras.layers
    encoder_vocab, decoder_vocab = 30, 40
    encoder_input = layers.Input(shape=(None,))
    encoder_embedded = layers.Embedding(input_dim=encoder_vocab, output_dim=8)(encoder_input)
    output, state_h, state_c = layers.LSTM(6, return_state=True, name="encoder")(encoder_embedded)
    encoder_state = [state_h, state_c]
    decoder_input = layers.Input(shape=(None,))
    decoder_embedded = layers.Embedding(input_dim=decoder_vocab, output_dim=8)(decoder_input)
    decoder_output = layers.LSTM(6, name="decoder")(decoder_embedded, initial_state=encoder_state)
    output = layers.Dense(10)(decoder_output)
    return keras.Model([encoder_input, decoder_input], output)


def test_encoder_decoder_guide_lists_layers_and_weights_in_keras_order(tmp_path: Path) -> None:
    """Keras orders a functional model's layers by depth (longest path to an output), not by call
    order: the encoder's Embedding comes before the decoder's. rnnkit listed the decoder's first,
    so ``set_weights(keras_model.get_weights())`` failed on the embedding shapes."""
    keras, ours = both()
    kmodel, model = encoder_decoder(keras), encoder_decoder(ours)
    kind = [type(layer).__name__ for layer in kmodel.layers]
    assert [type(layer).__name__ for layer in model.layers] == kind
    assert [layer.get_config()["input_dim"] for layer in model.layers if type(layer).__name__ == "Embedding"] == [30, 40]
    assert [w.shape for w in model.get_weights()] == [tuple(w.shape) for w in kmodel.get_weights()]
    assert [int(np.prod(w.shape)) for w in model.weights] == [int(np.prod(w.shape)) for w in kmodel.weights]
    rng = np.random.default_rng(0)
    x = [rng.integers(0, 30, (3, 5)), rng.integers(0, 40, (3, 4))]
    assert_same_predictions(kmodel, model, x)
    # the saved weights keep loading (modules stay registered in call order)
    model.save(tmp_path / "encdec.keras")
    loaded = ours.models.load_model(tmp_path / "encdec.keras")
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def branching_graphs(keras: Any) -> dict[str, Any]:
    layers, out = keras.layers, {}
    a, b = keras.Input(shape=(5,), name="a"), keras.Input(shape=(5,), name="b")
    shared = layers.Dense(4, name="shared")
    sa, sb = shared(a), shared(b)
    r = layers.Add(name="add")([layers.Dense(4, name="h")(sa), sb])
    out["shared"] = keras.Model([a, b], [layers.Dense(2, name="o1")(r), layers.Dense(3, name="o2")(sb)])
    i = keras.Input(shape=(6, 3), name="i")
    x1 = layers.LSTM(4, return_sequences=True, name="l1")(i)
    x2 = layers.GRU(4, return_sequences=True, name="l2")(x1)
    x3 = layers.Concatenate(name="cat")([x1, x2, layers.Dense(2, name="skip")(i)])
    out["skip"] = keras.Model(i, layers.SimpleRNN(2, name="last")(x3))
    j = keras.Input(shape=(3,), name="j")
    d1 = layers.Dense(3, name="d1")(j)
    out["two_outputs"] = keras.Model(j, [d1, layers.Dense(3, name="d3")(layers.Dense(3, name="d2")(d1))])
    q, unused = keras.Input(shape=(4,), name="q"), keras.Input(shape=(2,), name="unused")
    out["unused_input"] = keras.Model([q, unused], layers.Dense(2, name="dq")(layers.Dense(3, name="dp")(q)))
    return out


@pytest.mark.parametrize("graph", ["shared", "skip", "two_outputs", "unused_input"])
def test_functional_layer_order_matches_keras_on_branching_graphs(graph: str) -> None:
    keras, ours = both()
    kmodel, model = branching_graphs(keras)[graph], branching_graphs(ours)[graph]
    assert [layer.name for layer in model.layers] == [layer.name for layer in kmodel.layers]
    rng = np.random.default_rng(1)
    x = {"shared": [rng.random((2, 5)), rng.random((2, 5))], "skip": rng.random((2, 6, 3)),
         "two_outputs": rng.random((2, 3)), "unused_input": [rng.random((2, 4)), rng.random((2, 2))]}[graph]
    assert_same_predictions(kmodel, model, x)


# -- "Working with RNNs": summaries and a custom backward layer -------------------------------------
def guide_models(keras: Any) -> list[Any]:
    layers = keras.layers
    m1 = keras.Sequential([layers.Input(shape=(None,)), layers.Embedding(input_dim=100, output_dim=8),
                           layers.GRU(16, return_sequences=True), layers.SimpleRNN(8), layers.Dense(10)])
    m2 = keras.Sequential([layers.Input(shape=(5, 10)), layers.Bidirectional(layers.LSTM(8, return_sequences=True)),
                           layers.Bidirectional(layers.LSTM(4)), layers.Dense(10)])
    forward_layer = layers.LSTM(10, return_sequences=True)
    backward_layer = layers.LSTM(10, activation="relu", return_sequences=True, go_backwards=True)
    m3 = keras.Sequential([layers.Input(shape=(5, 10)), layers.Bidirectional(forward_layer, backward_layer=backward_layer),
                           layers.Dense(10)])
    return [m1, m2, m3]


def test_working_with_rnns_guide_models_match_keras() -> None:
    keras, ours = both()
    rng = np.random.default_rng(2)
    inputs = [rng.integers(0, 100, (3, 7)), rng.standard_normal((3, 5, 10)).astype("float32"),
              rng.standard_normal((3, 5, 10)).astype("float32")]
    for kmodel, model, x in zip(guide_models(keras), guide_models(ours), inputs, strict=True):
        assert [layer.output.shape for layer in model.layers] == [tuple(layer.output.shape) for layer in kmodel.layers]
        lines: list[str] = []
        model.summary(print_fn=lines.append)
        assert f"Total params: {kmodel.count_params():,}" in "\n".join(lines)
        assert_same_predictions(kmodel, model, x)


# -- Bidirectional merge modes, go_backwards, GRU(reset_after=False), Masking + TimeDistributed ------
def recurrent_variants(keras: Any) -> dict[str, Any]:
    layers = keras.layers
    inputs = keras.Input(shape=(7, 3))
    a = layers.Bidirectional(layers.GRU(4, return_sequences=True), merge_mode="sum")(inputs)
    b = layers.Bidirectional(layers.SimpleRNN(4, return_sequences=True), merge_mode="mul")(inputs)
    c = layers.Bidirectional(layers.LSTM(4, return_sequences=True), merge_mode="ave")(inputs)
    return {
        "merge_modes": keras.Model(inputs, layers.Concatenate()([a, b, c])),
        "go_backwards": keras.Sequential([keras.Input(shape=(7, 3)), layers.LSTM(5, go_backwards=True, return_sequences=True),
                                          layers.GRU(3, go_backwards=True)]),
        "gru_v1": keras.Sequential([keras.Input(shape=(7, 3)), layers.GRU(5, reset_after=False, return_sequences=True),
                                    layers.TimeDistributed(layers.Dense(2, activation="softmax"))]),
        "masking": keras.Sequential([keras.Input(shape=(7, 3)), layers.Masking(mask_value=0.0),
                                     layers.Bidirectional(layers.GRU(4, return_sequences=True)),
                                     layers.TimeDistributed(layers.Dense(2))]),
    }


@pytest.mark.parametrize("variant", ["merge_modes", "go_backwards", "gru_v1", "masking"])
def test_recurrent_variants_match_keras(variant: str) -> None:
    keras, ours = both()
    x = np.random.default_rng(3).standard_normal((3, 7, 3)).astype("float32")
    x[0, 4:] = 0.0  # right padding for the masked variant
    assert_same_predictions(recurrent_variants(keras)[variant], recurrent_variants(ours)[variant], x)


# -- Keras book, chapter 10: stacked GRU with recurrent dropout on a timeseries dataset -------------
def stacked_gru(keras: Any, sequence_length: int, num_features: int) -> Any:
    layers = keras.layers
    inputs = keras.Input(shape=(sequence_length, num_features))
    x = layers.GRU(8, recurrent_dropout=0.5, return_sequences=True)(inputs)
    x = layers.GRU(8, recurrent_dropout=0.5)(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(1)(x)
    return keras.Model(inputs, outputs)


def test_book_stacked_gru_with_callbacks_and_load_model(tmp_path: Path) -> None:
    keras, ours = both()
    raw_data = np.cumsum(np.random.default_rng(4).standard_normal((300, 3)).astype("float32"), 0)
    temperature = raw_data[:, 1].copy()
    mean = raw_data[:200].mean(axis=0)
    raw_data -= mean
    std = raw_data[:200].std(axis=0)
    raw_data /= std
    sampling_rate, sequence_length = 2, 10
    delay = sampling_rate * (sequence_length + 4 - 1)
    kwargs = dict(sampling_rate=sampling_rate, sequence_length=sequence_length, batch_size=32)
    train_dataset = ours.utils.timeseries_dataset_from_array(raw_data[:-delay], targets=temperature[delay:], shuffle=True,
                                                             start_index=0, end_index=200, seed=0, **kwargs)
    val_dataset = ours.utils.timeseries_dataset_from_array(raw_data[:-delay], targets=temperature[delay:],
                                                           start_index=200, **kwargs)
    samples, targets = next(iter(train_dataset))
    assert tuple(samples.shape) == (32, sequence_length, 3) and tuple(targets.shape) == (32,)
    ours.utils.set_random_seed(0)
    model = stacked_gru(ours, sequence_length, raw_data.shape[-1])
    callbacks = [ours.callbacks.ModelCheckpoint(str(tmp_path / "jena_stacked_gru_dropout.keras"), save_best_only=True),
                 ours.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1),
                 ours.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)]
    model.compile(optimizer="rmsprop", loss="mse", metrics=["mae"])
    history = model.fit(train_dataset, epochs=3, validation_data=val_dataset, callbacks=callbacks, verbose=0)
    assert sorted(history.history) == ["learning_rate", "loss", "mae", "val_loss", "val_mae"]
    assert history.history["loss"][-1] < history.history["loss"][0]
    model = ours.models.load_model(tmp_path / "jena_stacked_gru_dropout.keras")
    best = int(np.argmin(history.history["val_loss"]))
    assert model.evaluate(val_dataset, verbose=0)[1] == pytest.approx(history.history["val_mae"][best], rel=1e-4)
    # inference (recurrent dropout off) equals Keras on the same weights; from_config rebuilds it
    kmodel = stacked_gru(keras, sequence_length, raw_data.shape[-1])
    x = next(iter(val_dataset))[0].numpy()
    kmodel.set_weights(model.get_weights())
    np.testing.assert_allclose(model.predict(x, verbose=0), kmodel.predict(x, verbose=0), atol=1e-5)
    clone = ours.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_a_shuffled_validation_loader_trains_without_lightnings_warning() -> None:
    """The Keras book passes ``timeseries_dataset_from_array(..., shuffle=True)`` as ``validation_data``:
    Keras says nothing, rnnkit printed Lightning's advice to turn shuffling off for validation loaders
    (the order changes nothing: the validation loss is the same either way)."""
    import warnings

    rng = np.random.default_rng(0)
    series = rng.normal(size=(120, 2)).astype("float32")
    data = rnnkit.data.timeseries_dataset_from_array(series[:-5], series[5:, 0], sequence_length=5,
                                                     batch_size=16, shuffle=True, seed=0)
    ordered = rnnkit.data.timeseries_dataset_from_array(series[:-5], series[5:, 0], sequence_length=5,
                                                        batch_size=16)
    model = rnnkit.models.Sequential([rnnkit.layers.Input(shape=(5, 2)), rnnkit.layers.GRU(4),
                                      rnnkit.layers.Dense(1)])
    model.compile("rmsprop", "mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = model.fit(data, validation_data=data, epochs=1, verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(ordered, verbose=0), rel=1e-5)
