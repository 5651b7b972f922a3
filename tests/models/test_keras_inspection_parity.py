"""Model inspection against Keras 3 (torch backend): summary, parameter counts, weights, freezing, cloning.

The same models are built with ``keras.layers`` and ``rnnkit.layers`` (layer names given, since the
two number their default names apart) and compared: names, output shapes, parameter counts (rnnkit
counts each single-bias recurrent layer's constant ``bias_hh`` as non-trainable: ``4 * units`` more
for an LSTM, ``units`` for a SimpleRNN, ``3 * units`` for ``GRU(reset_after=False)``, as
docs/models.md says), ``get_weights`` order and shapes, and outputs on copied weights.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import pytest
import torch

import rnnkit.layers as L
from rnnkit.models import Model, Sequential, clone_model, model_from_json

os.environ.setdefault("KERAS_BACKEND", "torch")
try:
    import keras
except Exception as err:  # noqa: BLE001 - any failure to import means: no live comparison
    keras = None
    KERAS_ERROR = repr(err)
else:
    KERAS_ERROR = ""
    if keras.backend.backend() != "torch":
        keras = None
        KERAS_ERROR = "keras was imported with another backend than torch"

needs_keras = pytest.mark.skipif(keras is None, reason=f"keras 3 (torch backend) is not importable: {KERAS_ERROR}")


def _extra(layer: Any) -> int:
    """Parameters rnnkit counts beyond Keras: none (the constant bias_hh of single-bias recurrent
    layers, kept for torch's kernels, is no Keras weight and is left out of every count)."""
    return 0


def _sequential(lib: Any, seq: Any) -> Any:
    int_dtype = "int64" if lib is L else "int32"
    return seq([lib.Input((7,), dtype=int_dtype), lib.Embedding(20, 6, mask_zero=True, name="emb"),
                lib.Bidirectional(lib.LSTM(5, return_sequences=True), name="bi"),
                lib.TimeDistributed(lib.Dense(3), name="td"), lib.Dropout(0.1, name="drop"),
                lib.GRU(4, return_sequences=True, name="gru"), lib.SimpleRNN(3, name="srnn"),
                lib.RepeatVector(2, name="rep"), lib.LSTM(2, name="lstm2"), lib.Dense(1, name="out")],
               name="stack")


def _functional(lib: Any, model: Any) -> Any:
    i = lib.Input((6, 3), name="x")
    masked = lib.Masking(name="mask")(i)
    seq, h, c = lib.LSTM(4, return_sequences=True, return_state=True, name="enc")(masked)
    last, state = lib.GRU(3, return_state=True, reset_after=False, name="gru_b")(seq)
    both = lib.Bidirectional(lib.SimpleRNN(2), merge_mode="sum", name="bi_s")(seq)
    head = lib.Dense(2, name="head")(both)
    return model(i, [head, h, last], name="fun")


def _rows(model: Any) -> list[tuple[str, str, int]]:
    """(name (type), output shape, params) of each row of rnnkit's summary."""
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    out = []
    for line in lines:
        m = re.match(r"(\S+ \(\w+\))\s+(\(.*\))\s+([\d,]+)(\s|$)", line)
        if m:
            out.append((m.group(1), m.group(2), int(m.group(3).replace(",", ""))))
    return out


@needs_keras
@pytest.mark.parametrize("build", [_sequential, _functional])
def test_summary_counts_shapes_and_weights_match_keras(build: Any) -> None:
    kmodel = build(keras.layers, keras.Sequential if build is _sequential else keras.Model)
    model = build(L, Sequential if build is _sequential else Model)
    assert model.name == kmodel.name
    assert [layer.name for layer in model.layers] == [layer.name for layer in kmodel.layers]
    assert [type(layer).__name__ for layer in model.layers] == [type(layer).__name__ for layer in kmodel.layers]
    assert model.input_shape == kmodel.input_shape and model.output_shape == kmodel.output_shape
    for layer, klayer in zip(model.layers, kmodel.layers):
        assert layer.count_params() == klayer.count_params() + _extra(layer), layer.name
        assert sum(p.numel() for p in layer.trainable_weights) == sum(int(np.prod(w.shape))
                                                                       for w in klayer.trainable_weights)
        assert model.get_layer(layer.name) is layer
    extra = sum(_extra(layer) for layer in model.layers)
    assert model.count_params() == kmodel.count_params() + extra
    assert sum(p.numel() for p in model.trainable_weights) == kmodel.count_params()
    rows = _rows(model)
    if build is _sequential:
        assert [(r[0], r[2]) for r in rows] == [(f"{k.name} ({type(k).__name__})", k.count_params() + _extra(r))
                                                for k, r in zip(kmodel.layers, model.layers)]
        assert [r[1] for r in rows] == [str(tuple(k.output.shape)) for k in kmodel.layers]
    else:
        assert [r[0].split()[0] for r in rows] == [k.name for k in kmodel.layers]
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    assert f"Total params: {kmodel.count_params() + extra:,}" in lines
    assert f"Trainable params: {kmodel.count_params():,}" in lines
    assert f"Non-trainable params: {extra:,}" in lines
    # get_weights: Keras' list, same order and shapes; copying gives Keras' outputs
    kw = kmodel.get_weights()
    assert [w.shape for w in model.get_weights()] == [w.shape for w in kw]
    for layer, klayer in zip(model.layers, kmodel.layers):
        assert [w.shape for w in layer.get_weights()] == [w.shape for w in klayer.get_weights()], layer.name
    model.set_weights(kw)
    for a, b in zip(model.get_weights(), kw):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(0)
    if build is _sequential:
        x = rng.integers(1, 20, size=(3, 7))
        x[0, 4:] = 0
    else:
        x = rng.normal(size=(3, 6, 3)).astype("float32")
        x[1, 4:] = 0.0
    ours, theirs = model.predict(x, verbose=0), kmodel.predict(x, verbose=0)
    for a, b in zip(ours if isinstance(ours, list) else [ours], theirs if isinstance(theirs, list) else [theirs]):
        np.testing.assert_allclose(a, np.asarray(b), atol=1e-5)
    # config and JSON round trips keep names, counts and (with copied weights) outputs
    for again in (type(model).from_config(model.get_config()), model_from_json(model.to_json())):
        assert [layer.name for layer in again.layers] == [layer.name for layer in model.layers]
        assert again.count_params() == model.count_params() and again.name == model.name
        again.set_weights(model.get_weights())
        out = again.predict(x, verbose=0)
        for a, b in zip(out if isinstance(out, list) else [out], ours if isinstance(ours, list) else [ours]):
            np.testing.assert_array_equal(a, b)


def _nested() -> Model:
    inner = Sequential([L.Input((5, 3)), L.LSTM(4, return_sequences=True, name="in_lstm"), L.Dense(2, name="in_d")],
                       name="inner")
    i = L.Input((5, 3), name="x")
    return Model(i, L.Dense(1, name="head")(L.GRU(3, name="g")(inner(i))), name="outer")


def test_summary_takes_keras_arguments() -> None:
    model = _nested()
    model.get_layer("inner").get_layer("in_d").trainable = False
    lines: list[str] = []
    model.summary(120, None, lines.append)  # Keras' positional order: line_length, positions, print_fn
    assert len(lines[1]) == 120 and not any("in_lstm" in line for line in lines)
    lines = []
    model.summary(print_fn=lines.append, expand_nested=True, show_trainable=True)
    header = next(line for line in lines if line.startswith("Layer (type)"))
    assert header.split()[-1] == "Trainable"
    nested = [line for line in lines if "└" in line]
    assert [line.split()[1] for line in nested] == ["in_lstm", "in_d"]
    assert nested[0].split()[-1] == "Y" and nested[1].split()[-1] == "N"
    assert re.search(r"└ in_d \(Dense\)\s+\(None, 5, 2\)\s+10\s", nested[1])
    assert next(line for line in lines if line.startswith("x (InputLayer)")).split()[-1] == "-"
    lines = []
    model.summary(print_fn=lines.append, layer_range=["inner", "g"])
    assert [line.split()[0] for line in lines if re.match(r"\S+ \(\w+\) ", line)][1:] == ["inner", "g"]
    with pytest.raises(ValueError, match="layer_range"):
        model.summary(print_fn=lines.append, layer_range=["nope", "g"])
    lines = []
    model.summary(lines.append)  # rnnkit's former summary(print_fn) still works
    assert any(line.startswith("Total params:") for line in lines)


@needs_keras
def test_summary_nested_rows_match_keras_expand_nested() -> None:
    kinner = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, return_sequences=True, name="in_lstm"),
                               keras.layers.Dense(2, name="in_d")], name="inner")
    ki = keras.Input((5, 3), name="x")
    kmodel = keras.Model(ki, keras.layers.Dense(1, name="head")(keras.layers.GRU(3, name="g")(kinner(ki))))
    model = _nested()
    lines: list[str] = []
    model.summary(print_fn=lines.append, expand_nested=True)
    nested = [line.split("└ ")[1] for line in lines if "└" in line]
    expected = [(layer.name, tuple(layer.output.shape), layer.count_params() + _extra(ours))
                for layer, ours in zip(kinner.layers, model.get_layer("inner").layers)]
    assert [(n.split()[0], ) for n in nested] == [(name,) for name, _, _ in expected]
    for text, (_, shape, params) in zip(nested, expected):
        assert text.split()[2:6] == [*str(shape).split(), str(params)]
    assert model.count_params() == kmodel.count_params() + _extra(model.get_layer("inner").layers[0])
    model.set_weights(kmodel.get_weights())
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), np.asarray(kmodel.predict(x, verbose=0)), atol=1e-5)


def test_get_layer_errors_are_keras_value_errors() -> None:
    model = _nested()
    assert model.get_layer(index=1).name == "inner" and model.get_layer(index=-1).name == "head"
    with pytest.raises(ValueError, match="index 10.*only 4 layers"):
        model.get_layer(index=10)
    with pytest.raises(ValueError, match="a layer name or a layer index"):
        model.get_layer()
    with pytest.raises(ValueError, match="only a layer name or a layer index"):
        model.get_layer("head", 0)


def _frozen_case(lib: Any, seq: Any) -> Any:
    return seq([lib.Input((4, 3)), lib.LSTM(5, return_sequences=True, name="l1"),
                lib.BatchNormalization(name="bn"), lib.GRU(2, name="g2"), lib.Dense(1, name="d")])


def test_model_trainable_false_freezes_every_layer_and_training_changes_nothing() -> None:
    model = _frozen_case(L, Sequential)
    model.trainable = False
    assert [layer.trainable for layer in model.layers] == [False] * 4  # Keras: the layers follow the model
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == len(model.weights)
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    assert "Trainable params: 0" in lines
    again = Sequential.from_config(model.get_config())  # the frozen flags are saved
    assert again.trainable_weights == [] and [layer.trainable for layer in again.layers] == [False] * 4
    model.get_layer("d").trainable = True  # the usual fine-tuning: a frozen base, a trained head
    before = [w.copy() for w in model.get_weights()]
    model.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 4, 3)).astype("float32") + 2, rng.normal(size=(8, 1)).astype("float32")
    model.train_on_batch(x, y)
    after = model.get_weights()
    for a, b in zip(before[:-2], after[:-2]):  # BatchNormalization's moving statistics included
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(before[-2], after[-2])
    model.trainable = True
    assert [layer.trainable for layer in model.layers] == [True] * 4
    constant = [p for n, p in model.named_parameters() if n.startswith("layer_list.0.rnn.bias_hh") or "running" in n]
    assert len(constant) == 3 and not any(p.requires_grad for p in constant)  # LSTM bias_hh, moving statistics


def test_freezing_an_unbuilt_model_holds_for_layers_built_later() -> None:
    model = Sequential([L.LSTM(4, name="a"), L.Dense(2, name="b"), L.Dense(1, name="c")])
    model.trainable = False
    model.get_layer("c").trainable = True
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(6, 5, 3)).astype("float32")
    model.train_on_batch(x, np.ones((6, 1), "float32"))  # builds the layers, then takes a step
    assert [layer.trainable for layer in model.layers] == [False, False, True]
    assert sum(p.numel() for p in model.trainable_weights) == 3
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(x, np.ones((6, 1), "float32"))
    for a, b in zip(before[:-2], model.get_weights()[:-2]):
        np.testing.assert_array_equal(a, b)


@needs_keras
def test_per_layer_freezing_matches_keras_counts_and_only_trains_the_rest() -> None:
    kmodel, model = _frozen_case(keras.layers, keras.Sequential), _frozen_case(L, Sequential)
    for m in (kmodel, model):
        m.get_layer("l1").trainable = False
        m.get_layer("bn").trainable = False
    assert sum(p.numel() for p in model.trainable_weights) == sum(int(np.prod(w.shape))
                                                                  for w in kmodel.trainable_weights)
    assert [layer.trainable for layer in model.layers] == [layer.trainable for layer in kmodel.layers]
    model.set_weights(kmodel.get_weights())
    model.compile("sgd", "mse")
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(8, 4, 3)).astype("float32"), rng.normal(size=(8, 1)).astype("float32")
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    model.train_on_batch(x, y)
    for name in ("l1", "bn"):
        for a, b in zip(before[name], model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    for name in ("g2", "d"):
        assert any(not np.array_equal(a, b) for a, b in zip(before[name], model.get_layer(name).get_weights()))


@needs_keras
def test_clone_model_matches_keras() -> None:
    for build in (_sequential, _functional):
        kmodel = build(keras.layers, keras.Sequential if build is _sequential else keras.Model)
        model = build(L, Sequential if build is _sequential else Model)
        model.get_layer(index=-1).trainable = False
        kclone, clone = keras.models.clone_model(kmodel), clone_model(model)
        assert type(clone) is type(model) and clone.name == model.name == kclone.name
        assert [layer.name for layer in clone.layers][1:] == [layer.name for layer in kclone.layers][1:]
        assert all(a is not b for a, b in zip(clone.layers, model.layers))
        assert clone.count_params() == model.count_params()
        assert [layer.trainable for layer in clone.layers] == [layer.trainable for layer in model.layers]
        assert clone.input_shape == model.input_shape and clone.output_shape == model.output_shape
        fresh = [not np.array_equal(a, b) for a, b in zip(clone.get_weights(), model.get_weights())
                 if a.ndim == 2 and a.std() > 0]
        assert fresh and all(fresh)  # new weights, as Keras
        clone.set_weights(kmodel.get_weights())
        model.set_weights(kmodel.get_weights())
        x = np.ones((2, 7), "int64") if build is _sequential else np.full((2, 6, 3), 0.3, "float32")
        out, expected = clone.predict(x, verbose=0), model.predict(x, verbose=0)
        for a, b in zip(out if isinstance(out, list) else [out], expected if isinstance(expected, list) else [expected]):
            np.testing.assert_array_equal(a, b)


def test_clone_model_shares_shared_layers_and_takes_clone_function_and_input_tensors() -> None:
    i1, i2 = L.Input((None, 2), name="a"), L.Input((None, 2), name="b")
    shared = L.LSTM(3, name="shared")
    model = Model([i1, i2], L.Add(name="add")([shared(i1), shared(i2)]), name="siamese")
    clone = clone_model(model)
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    assert sum(isinstance(layer, L.LSTM) for layer in clone.layers) == 1
    renamed = clone_model(model, clone_function=lambda layer: type(layer).from_config(
        {**layer.get_config(), "name": "new_" + layer.name}))
    assert [layer.name for layer in renamed.layers][2:] == ["new_shared", "new_add"]
    reused = clone_model(model, clone_function=lambda layer: layer)  # sharing the weights
    x = [np.ones((1, 4, 2), "float32"), np.zeros((1, 4, 2), "float32")]
    np.testing.assert_array_equal(reused.predict(x, verbose=0), model.predict(x, verbose=0))
    j1, j2 = L.Input((4, 2)), L.Input((4, 2))
    assert clone_model(model, input_tensors=[j1, j2]).input_shape == [(None, 4, 2), (None, 4, 2)]


@needs_keras
def test_sequential_inputs_outputs_and_a_feature_model_from_its_layers() -> None:
    kmodel, model = _sequential(keras.layers, keras.Sequential), _sequential(L, Sequential)
    model.set_weights(kmodel.get_weights())
    assert [t.shape for t in model.inputs] == [tuple(t.shape) for t in kmodel.inputs]
    assert [t.shape for t in model.outputs] == [tuple(t.shape) for t in kmodel.outputs]
    features = Model(model.inputs, model.get_layer("td").output)
    kfeatures = keras.Model(kmodel.inputs, kmodel.get_layer("td").output)
    assert features.output_shape == kfeatures.output_shape == (None, 7, 3)
    x = np.random.default_rng(3).integers(1, 20, size=(2, 7))
    x[1, 5:] = 0
    np.testing.assert_allclose(features.predict(x, verbose=0), np.asarray(kfeatures.predict(x, verbose=0)), atol=1e-5)
    assert Model(model.input, model.output).count_params() == model.count_params()  # Keras 2's seq.input too
    lazy = Sequential([L.Dense(2, name="late")])
    assert lazy.inputs == [] and lazy.outputs == []
    lazy.build((None, 3))
    assert lazy.outputs[0].shape == (None, 2) and lazy.get_layer("late").output is lazy.outputs[0]
    torch.testing.assert_close(Model(lazy.inputs[0], lazy.outputs[0])(torch.ones(1, 3)), lazy(torch.ones(1, 3)))
