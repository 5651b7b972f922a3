"""Review of the Model and Layer API branches the rest of the suite never ran: each is checked against
Keras 3 on its torch backend (copied weights) or an independent computation, and the defects found are
pinned here (float64 layers on float32 inputs, ``layer(inputs=...)`` on symbolic tensors, masks of a
concatenation along time, saving, loading and cloning subclassed models)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import rnnkit.layers as L
from rnnkit.layers.keras_weights import keras_to_torch, torch_to_keras
from rnnkit.models import Model, Sequential, clone_model, load_model, model_from_json, to_categorical

from .keras_reference import keras_module


def as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def rng() -> np.random.Generator:
    return np.random.default_rng(7)


# -- defects found ---------------------------------------------------------------------------------
def test_float64_layer_casts_float32_inputs_like_keras() -> None:
    """A ``Dense(dtype="float64")`` after a float32 layer crashed (``mat1 and mat2 must have the same dtype``);
    Keras casts a layer's floating inputs to its dtype."""
    keras = keras_module()
    x = rng().normal(size=(5, 4)).astype("float32")
    k_model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3),
                                keras.layers.Dense(3, dtype="float64"), keras.layers.Dense(2)])
    r_model = Sequential([L.Input(shape=(4,)), L.Dense(3), L.Dense(3, dtype="float64"), L.Dense(2)])
    r_model.set_weights(k_model.get_weights())
    np.testing.assert_allclose(r_model.predict(x, verbose=0), k_model.predict(x, verbose=0), atol=1e-5)
    k_layer, r_layer = keras.layers.Dense(2, dtype="float64"), L.Dense(2, dtype="float64")
    assert as_numpy(k_layer(x)).dtype == np.float64
    out = r_layer(torch.as_tensor(x))
    assert out.dtype == torch.float64 and r_layer.get_config()["dtype"] == "float64"
    assert L.Dense(2, dtype=torch.float64).get_config()["dtype"] == "float64"
    with pytest.raises(ValueError, match="unknown dtype 'float7'"):
        L.Dense(2, dtype="float7")


def test_symbolic_call_takes_inputs_keyword_like_keras() -> None:
    """``Dense(2)(inputs=x)`` on an ``Input`` raised ``TypeError`` (Keras takes it, and rnnkit did eagerly)."""
    keras = keras_module()
    x = rng().normal(size=(3, 4)).astype("float32")
    k_in = keras.Input(shape=(4,))
    k_model = keras.Model(k_in, keras.layers.Dense(2)(inputs=k_in))
    r_in = L.Input(shape=(4,))
    r_model = Model(r_in, L.Dense(2)(inputs=r_in))
    r_model.set_weights(k_model.get_weights())
    np.testing.assert_allclose(r_model.predict(x, verbose=0), k_model.predict(x, verbose=0), atol=1e-6)


def test_concatenate_along_time_joins_masks_like_keras() -> None:
    """``Concatenate(axis=1)`` dropped the masks; Keras joins them end to end (an unmasked input counts as real),
    so an LSTM after it skips the padding of both parts."""
    keras = keras_module()
    gen = rng()
    ids_a = gen.integers(1, 9, size=(3, 5))
    ids_a[0, 3:] = 0
    ids_b = gen.integers(1, 9, size=(3, 4))
    ids_b[1, 2:] = 0
    ids_b[2, :] = 0

    def build(lib: Any, inp: Any) -> tuple[Any, Any]:
        a, b = inp(shape=(5,), dtype="int64"), inp(shape=(4,), dtype="int64")
        emb = lib.Embedding(10, 3, mask_zero=True)
        out = lib.LSTM(4)(lib.Concatenate(axis=1)([emb(a), emb(b)]))
        return [a, b], out

    k_model = keras.Model(*build(keras.layers, keras.Input))
    r_model = Model(*build(L, L.Input))
    r_model.set_weights(k_model.get_weights())
    np.testing.assert_allclose(r_model.predict([ids_a, ids_b], verbose=0),
                               k_model.predict([ids_a, ids_b], verbose=0), atol=1e-5)
    # compute_mask itself, with one input unmasked
    feats = gen.normal(size=(3, 4, 3)).astype("float32")
    mask_a = ids_a != 0
    k_mask = keras.layers.Concatenate(axis=1).compute_mask(
        [keras.ops.ones((3, 5, 3)), keras.ops.convert_to_tensor(feats)], [torch.as_tensor(mask_a), None])
    r_mask = L.Concatenate(axis=1).compute_mask([torch.ones(3, 5, 3), torch.as_tensor(feats)],
                                                [torch.as_tensor(mask_a), None])
    np.testing.assert_array_equal(as_numpy(r_mask), as_numpy(k_mask))
    assert L.Concatenate(axis=1).compute_mask([torch.ones(3, 5, 3)] * 2, [None, None]) is None


@pytest.mark.parametrize("name", ["Concatenate", "Add", "Multiply", "Average"])
def test_merge_masks_follow_keras(name: str) -> None:
    """Keras 3 ORs the masks of merged inputs; an unmasked input makes every step real."""
    keras = keras_module()
    ma = torch.tensor([[1, 1, 0], [1, 0, 0]]).bool()
    mb = torch.tensor([[1, 0, 0], [1, 1, 1]]).bool()
    x = torch.ones(2, 3, 2)
    ours, theirs = getattr(L, name)(), getattr(keras.layers, name)()
    for masks in ([ma, mb], [ma, None], [None, None]):
        got = ours.compute_mask([x, x], masks)
        want = theirs.compute_mask([keras.ops.convert_to_tensor(x.numpy())] * 2, masks)
        assert (got is None) == (want is None), masks
        if got is not None:
            np.testing.assert_array_equal(as_numpy(got), as_numpy(want))


def test_merged_masked_embeddings_feed_an_lstm_like_keras() -> None:
    keras = keras_module()
    gen = np.random.default_rng(3)
    ids_a = np.array([[3, 4, 0, 0, 0], [5, 6, 7, 0, 0], [1, 2, 3, 4, 5]])
    ids_b = np.array([[3, 4, 5, 6, 0], [5, 0, 0, 0, 0], [1, 2, 0, 0, 0]])

    def build(lib: Any, make_input: Any) -> tuple[list[Any], Any]:
        a, b = make_input((5,), dtype="int32"), make_input((5,), dtype="int32")
        emb = lib.Embedding(9, 3, mask_zero=True)
        return [a, b], lib.LSTM(4)(lib.Add()([emb(a), emb(b)]))

    k_model = keras.Model(*build(keras.layers, keras.Input))
    r_model = Model(*build(L, L.Input))
    r_model.set_weights([gen.normal(size=w.shape).astype("float32") * 0.5 for w in k_model.get_weights()])
    k_model.set_weights(r_model.get_weights())
    np.testing.assert_allclose(r_model.predict([ids_a, ids_b], verbose=0),
                               k_model.predict([ids_a, ids_b], verbose=0), atol=1e-5)


class _Scaled(Model):
    """A subclassed model with a constructor config."""

    def __init__(self, units: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.dense = L.Dense(units)
        self.norm = L.LayerNormalization()

    def call(self, inputs: Any, mask: Any = None) -> Any:
        return self.norm(self.dense(inputs)) * 2.0

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "units": self.units}


class _NoConfig(Model):
    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense = L.Dense(units)

    def call(self, inputs: Any, mask: Any = None) -> Any:
        return self.dense(inputs)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}


def test_subclassed_model_saves_loads_and_clones(tmp_path: Path) -> None:
    """A subclassed model with ``get_config`` could not be loaded (its lazy layers were unbuilt: 'unexpected
    weights') nor cloned (``KeyError: 'layers'``); Keras rebuilds it with ``cls(**config)`` and builds it."""
    x = rng().normal(size=(4, 5)).astype("float32")
    model = _Scaled(3)
    expected = model.predict(x, verbose=0)
    w = model.dense.weight.detach().numpy().T
    manual = x @ w + model.dense.bias.detach().numpy()
    manual = (manual - manual.mean(-1, keepdims=True)) / np.sqrt(manual.var(-1, keepdims=True) + 1e-3) * 2.0
    np.testing.assert_allclose(expected, manual, atol=1e-5)
    L.register_layer(_Scaled)
    try:
        for path in (tmp_path / "folder", tmp_path / "one.safetensors"):
            model.save(str(path))
            loaded = load_model(str(path))
            assert type(loaded) is _Scaled and loaded.units == 3
            np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    finally:
        L.LAYERS.pop("_Scaled", None)
    clone = clone_model(model)
    assert type(clone) is _Scaled and clone.units == 3 and clone.name == model.name
    with pytest.raises(TypeError, match="cannot rebuild _NoConfig from its config.*units"):
        clone_model(_NoConfig(2))


# -- functional models: inputs, masks, modes ---------------------------------------------------------
def _two_input_model(lib: Any, inp: Any) -> Any:
    a, b = inp(shape=(5, 3), name="a"), inp(shape=(5, 3), name="b")
    return [a, b], lib.Dense(2)(lib.Multiply()([lib.Add()([a, b]), b]))


def test_functional_inputs_as_dict_list_and_numpy_match_keras() -> None:
    keras = keras_module()
    gen = rng()
    xa, xb = gen.normal(size=(4, 5, 3)), gen.normal(size=(4, 5, 3))
    k_model = keras.Model(*_two_input_model(keras.layers, keras.Input))
    r_model = Model(*_two_input_model(L, L.Input))
    r_model.set_weights(k_model.get_weights())
    expected = k_model.predict([xa, xb], verbose=0)
    np.testing.assert_allclose(as_numpy(r_model({"a": xa, "b": xb})), expected, atol=1e-5)
    np.testing.assert_allclose(as_numpy(r_model([xa, xb])), expected, atol=1e-5)  # float64 numpy, cast
    np.testing.assert_allclose(as_numpy(r_model.call([torch.as_tensor(xa).float(), torch.as_tensor(xb).float()])),
                               expected, atol=1e-5)
    np.testing.assert_allclose(r_model.predict({"a": xa, "b": xb}, verbose=0), expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"inputs dict lacks \['b'\]"):
        r_model({"a": xa})
    with pytest.raises(ValueError, match="pass one mask .* per input: 2, got 1"):
        r_model([xa, xb], mask=[None])
    with pytest.raises(ValueError, match="every Model input must be an Input"):
        Model(r_model.outputs[0], r_model.inputs[0])
    # a one-input model takes its input inside a one-element list
    i = L.Input(shape=(4,))
    single = Model(i, L.Dense(3)(i))
    ones = np.ones((2, 4))
    np.testing.assert_allclose(as_numpy(single([ones])), as_numpy(single(ones)))
    assert single(ones).dtype == torch.float32


def test_functional_masks_given_to_the_model_reach_its_layers() -> None:
    """``model(x, mask=...)`` as a tensor, a list or a dict by input name: the LSTM skips the same steps as Keras'
    LSTM given that mask."""
    keras = keras_module()
    gen = rng()
    x = gen.normal(size=(3, 6, 2)).astype("float32")
    mask = np.ones((3, 6), bool)
    mask[0, 4:] = False
    mask[1, :2] = False
    k_lstm = keras.layers.LSTM(3, return_sequences=True)
    k_out = as_numpy(k_lstm(x, mask=mask))
    inp = L.Input(shape=(6, 2), name="x")
    lstm = L.LSTM(3, return_sequences=True)
    model = Model(inp, lstm(inp))
    lstm.set_weights(k_lstm.get_weights())
    xt, mt = torch.as_tensor(x), torch.as_tensor(mask)
    for given in (mt, [mt], {"x": mt}):
        out = as_numpy(model(xt, mask=given))
        np.testing.assert_allclose(out[mask], k_out[mask], atol=1e-5)
        np.testing.assert_array_equal(out[~mask], 0.0)  # documented: zeros at padded steps
    np.testing.assert_array_equal(as_numpy(model.compute_mask(xt, mt)), mask)


def test_training_argument_switches_dropout_and_restores_the_mode() -> None:
    i = L.Input(shape=(64,))
    model = Model(i, L.Dropout(0.5)(i))
    x = np.ones((4, 64), "float32")
    model.eval()
    out = as_numpy(model(x, training=True))
    assert set(np.unique(out)) <= {0.0, 2.0} and (out == 0).any()
    assert not model.training
    model.train()
    np.testing.assert_array_equal(as_numpy(model(x, training=False)), x)
    assert model.training
    seq = Sequential([L.Input(shape=(64,)), L.Dropout(0.5)])
    seq.train()
    np.testing.assert_array_equal(as_numpy(seq(x, training=False)), x)
    assert seq.training


# -- Sequential ------------------------------------------------------------------------------------
def test_sequential_misuse_gives_one_line_errors() -> None:
    with pytest.raises(ValueError, match="no layers to pop"):
        Sequential().pop()
    with pytest.raises(ValueError, match="has no layers; add some first"):
        Sequential()(np.ones((2, 3)))
    with pytest.raises(ValueError, match="Input must come before the first layer"):
        Sequential([L.Dense(2), L.Input(shape=(3,))])
    with pytest.raises(ValueError, match="Sequential.add takes layers or an Input"):
        Sequential().add(L.Dense(2)(L.Input(shape=(3,))))
    with pytest.raises(TypeError, match="Sequential takes rnnkit layers, got Linear"):
        Sequential().add(torch.nn.Linear(2, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="has no layers, so it has no output shape"):
        _ = Sequential([L.Input(shape=(3,))]).output_shape
    with pytest.raises(ValueError, match=r"build\(\) needs input_shape"):
        Sequential([L.Dense(2)]).build()
    with pytest.raises(ValueError, match="not built yet"):
        Sequential([L.Dense(2)]).count_params()
    assert Sequential([L.Dense(2)]).inputs == [] and Sequential([L.Dense(2)]).outputs == []


def test_sequential_build_forms_and_calls_match_keras() -> None:
    keras = keras_module()
    x = rng().normal(size=(3, 4))
    k_model = keras.Sequential([keras.layers.Dense(3, input_dim=4), keras.layers.Dense(2)])
    for model in (Sequential([L.Dense(3, input_dim=4), L.Dense(2)]),
                  Sequential([L.Dense(3, batch_input_shape=(None, 4)), L.Dense(2)])):
        assert model.input_shape == k_model.input_shape == (None, 4)
        model.set_weights(k_model.get_weights())
        expected = k_model.predict(x, verbose=0)
        np.testing.assert_allclose(as_numpy(model(torch.as_tensor(x))), expected, atol=1e-5)  # float64 tensor
        out, mask = model.forward_with_mask([torch.as_tensor(x).float()], mask=[None])
        np.testing.assert_allclose(as_numpy(out), expected, atol=1e-5)
        assert mask is None and model.compute_mask(torch.as_tensor(x).float()) is None
        np.testing.assert_allclose(as_numpy(model.call(torch.as_tensor(x).float())), expected, atol=1e-5)
    built = Sequential([L.Dense(3), L.Dense(2)])
    built.build((None, 4), dtype="float32")
    built.build()  # again, from the shape it has
    assert built.output_shape == (None, 2) and built.count_params() == 4 * 3 + 3 + 3 * 2 + 2


def test_nested_sequential_without_input_takes_its_callers_shapes() -> None:
    inner = Sequential([L.Dense(3), L.Dense(2)])
    i = L.Input(shape=(4,))
    outer = Model(i, inner(i))
    assert inner.output_shape == (None, 2)
    assert inner.input is i and tuple(inner.output.shape) == (None, 2)
    clone = clone_model(outer, recursive=True)
    assert clone.layers[1] is not inner and [type(x).__name__ for x in clone.layers] == ["InputLayer", "Sequential"]
    np.testing.assert_array_equal(clone.predict(np.zeros((2, 4)), verbose=0).shape, (2, 2))


def test_summary_layer_range_follows_keras() -> None:
    """Keras: rows from the first layer matching ``layer_range[0]`` to the last matching ``[1]`` (swapped when
    reversed)."""
    model = Sequential([L.Input(shape=(4,)), L.Dense(3, name="first"), L.Dense(3, name="middle"),
                        L.Dense(2, name="last")])
    lines: list[str] = []
    model.summary(layer_range=["last", "middle"], print_fn=lambda line, **_: lines.append(line))
    text = "\n".join(lines)
    assert "middle" in text and "last" in text and "first (Dense)" not in text
    with pytest.raises(ValueError, match="layer_range must be a list or tuple of two layer names"):
        model.summary(layer_range=["first"])
    lazy = Sequential([L.Dense(2)])
    lazy.build((None, 4))
    lines.clear()
    lazy.summary(print_fn=lambda line, **_: lines.append(line))
    assert any("(None, 2)" in line for line in lines)


# -- predict / evaluate / stateful -------------------------------------------------------------------
def test_predict_and_evaluate_with_odd_batches_match_keras() -> None:
    keras = keras_module()
    gen = rng()
    x = gen.normal(size=(7, 5, 3)).astype("float32")
    y = gen.normal(size=(7, 2)).astype("float32")
    k_model = keras.Sequential([keras.Input(shape=(5, 3)), keras.layers.GRU(4), keras.layers.Dense(2)])
    r_model = Sequential([L.Input(shape=(5, 3)), L.GRU(4), L.Dense(2)])
    r_model.set_weights(k_model.get_weights())
    for batch_size in (1, 3, 32):
        np.testing.assert_allclose(r_model.predict(x, batch_size=batch_size, verbose=0),
                                   k_model.predict(x, batch_size=batch_size, verbose=0), atol=1e-5)
    np.testing.assert_allclose(r_model.predict(x[:1], verbose=0), k_model.predict(x[:1], verbose=0), atol=1e-5)
    k_model.compile(loss="mse", metrics=["mae"])
    r_model.compile(loss="mse", metrics=["mae"])
    np.testing.assert_allclose(r_model.evaluate(x, y, batch_size=3, verbose=0),
                               k_model.evaluate(x, y, batch_size=3, verbose=0), rtol=1e-5)


def test_stateful_stack_carries_and_resets_like_keras() -> None:
    keras = keras_module()
    batch = 2
    xs = rng().normal(size=(batch, 9, 3)).astype("float32")
    k_model = keras.Sequential([keras.Input(batch_shape=(batch, 3, 3)),
                                keras.layers.LSTM(4, stateful=True, return_sequences=True),
                                keras.layers.GRU(3, stateful=True)])
    r_model = Sequential([L.Input(batch_shape=(batch, 3, 3)), L.LSTM(4, stateful=True, return_sequences=True),
                          L.GRU(3, stateful=True)])
    r_model.set_weights(k_model.get_weights())
    for k in range(3):
        chunk = xs[:, 3 * k:3 * k + 3]
        np.testing.assert_allclose(r_model.predict(chunk, batch_size=batch, verbose=0),
                                   k_model.predict(chunk, batch_size=batch, verbose=0), atol=1e-5)
    for k_state, r_state in zip(k_model.layers[0].states, r_model.layers[0].states):
        np.testing.assert_allclose(as_numpy(r_state), as_numpy(k_state), atol=1e-5)
    k_model.layers[0].reset_states()
    r_model.layers[0].reset_states()
    assert all(not as_numpy(s).any() for s in r_model.layers[0].states)
    np.testing.assert_allclose(r_model.predict(xs[:, :3], batch_size=batch, verbose=0),
                               k_model.predict(xs[:, :3], batch_size=batch, verbose=0), atol=1e-5)
    assert L.LSTM(3, stateful=True).states is None and L.LSTM(3).implementation_in_use == "unbuilt"


# -- layers against Keras ----------------------------------------------------------------------------
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_with_custom_activation_matches_keras(reset_after: bool) -> None:
    keras = keras_module()
    x = rng().normal(size=(3, 5, 4)).astype("float32")
    k_layer = keras.layers.GRU(6, activation="relu", recurrent_activation="hard_sigmoid", reset_after=reset_after,
                               return_sequences=True)
    k_out = as_numpy(k_layer(x))
    r_layer = L.GRU(6, activation="relu", recurrent_activation="hard_sigmoid", reset_after=reset_after,
                    return_sequences=True)
    r_layer(torch.as_tensor(x))
    r_layer.set_weights(k_layer.get_weights())
    np.testing.assert_allclose(as_numpy(r_layer(torch.as_tensor(x))), k_out, atol=1e-5)
    assert "units=6, return_sequences=True" in repr(r_layer)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_bidirectional_initial_state_matches_keras(kind: str) -> None:
    keras = keras_module()
    gen = rng()
    x = gen.normal(size=(3, 5, 4)).astype("float32")
    n_states = 2 if kind == "LSTM" else 1
    states = [gen.normal(size=(3, 5)).astype("float32") for _ in range(2 * n_states)]
    k_layer = keras.layers.Bidirectional(getattr(keras.layers, kind)(5, return_sequences=True), merge_mode=None)
    k_layer(x)
    r_layer = L.Bidirectional(getattr(L, kind)(5, return_sequences=True), merge_mode=None)
    r_layer(torch.as_tensor(x))
    r_layer.set_weights(k_layer.get_weights())
    k_out = k_layer(x, initial_state=states)
    r_out = r_layer(torch.as_tensor(x), initial_state=[torch.as_tensor(s) for s in states])
    assert len(r_out) == len(k_out) == 2
    for k, r in zip(k_out, r_out):
        np.testing.assert_allclose(as_numpy(r), as_numpy(k), atol=1e-5)
    with pytest.raises(ValueError, match="forward states then the backward states"):
        r_layer(torch.as_tensor(x), initial_state=[torch.as_tensor(states[0])] * 3)
    with pytest.raises(TypeError, match="Bidirectional got unexpected call argument"):
        r_layer(torch.as_tensor(x), foo=1)


def test_multiply_and_merges_in_a_model_match_keras() -> None:
    keras = keras_module()
    gen = rng()
    xs = [gen.normal(size=(4, 3)).astype("float32") for _ in range(3)]

    def build(lib: Any, inp: Any) -> tuple[Any, Any]:
        ins = [inp(shape=(3,)) for _ in range(3)]
        mul = lib.Multiply()(ins)
        return ins, lib.Concatenate()([mul, lib.Average()(ins), lib.Add()([mul, ins[0]])])

    k_model = keras.Model(*build(keras.layers, keras.Input))
    r_model = Model(*build(L, L.Input))
    np.testing.assert_allclose(r_model.predict(xs, verbose=0), k_model.predict(xs, verbose=0), atol=1e-6)
    np.testing.assert_allclose(as_numpy(L.Multiply()([torch.as_tensor(x) for x in xs])), xs[0] * xs[1] * xs[2],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="Multiply expects a list of at least two tensors"):
        L.Multiply()([torch.as_tensor(xs[0])])


def test_layer_normalization_over_several_axes_matches_keras() -> None:
    keras = keras_module()
    gen = rng()
    x = gen.normal(size=(2, 3, 4)).astype("float32")
    k_layer = keras.layers.LayerNormalization(axis=[1, 2])
    k_layer(x)
    weights = [gen.normal(size=w.shape).astype("float32") for w in k_layer.get_weights()]
    k_layer.set_weights(weights)
    r_layer = L.LayerNormalization(axis=[1, 2])
    r_layer(torch.as_tensor(x))
    r_layer.set_weights(weights)
    np.testing.assert_allclose(as_numpy(r_layer(torch.as_tensor(x))), as_numpy(k_layer(x)), atol=1e-5)
    with pytest.raises(ValueError, match="was built for rank-3 inputs"):
        r_layer(torch.ones(2, 3, 5))
    with pytest.raises(ValueError, match="axis must be an integer or a list of integers"):
        L.LayerNormalization(axis=[])
    with pytest.raises(ValueError, match="needs fixed sizes on the normalized axes"):
        L.LayerNormalization().build((None, 5, None))
    with pytest.raises(ValueError, match="needs a fixed last dimension, and its input's is dynamic"):
        L.LayerNormalization().compute_output_shape((None, 5, None))


def test_conv1d_takes_one_element_tuples_like_keras() -> None:
    keras = keras_module()
    x = rng().normal(size=(2, 9, 4)).astype("float32")
    k_layer = keras.layers.Conv1D(6, (3,), strides=(2,), groups=2)
    k_out = as_numpy(k_layer(x))
    r_layer = L.Conv1D(6, (3,), strides=(2,), groups=2)
    r_layer(torch.as_tensor(x))
    r_layer.set_weights(k_layer.get_weights())
    np.testing.assert_allclose(as_numpy(r_layer(torch.as_tensor(x))), k_out, atol=1e-5)
    with pytest.raises(ValueError, match="was built for 4 input channels, got 2"):
        r_layer(torch.ones(2, 9, 2))
    with pytest.raises(ValueError, match=r"filters \(5\) must be divisible by groups \(2\)"):
        L.Conv1D(5, 3, groups=2)
    with pytest.raises(ValueError, match="groups=2, which must divide the input channels, got 3"):
        L.Conv1D(4, 3, groups=2)(torch.ones(1, 5, 3))


def test_batch_normalization_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="axis must be an integer"):
        L.BatchNormalization(axis=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="synchronized=True is not supported"):
        L.BatchNormalization(synchronized=True)
    with pytest.raises(ValueError, match="needs a fixed size on axis -1"):
        L.BatchNormalization().build((None, 5, None))
    layer = L.BatchNormalization()
    layer(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="was built for inputs of rank 3"):
        layer(torch.ones(2, 4))
    with pytest.raises(ValueError, match="was built for 4 features on axis -1, got 5"):
        layer(torch.ones(2, 3, 5))
    layer.train()
    with pytest.raises(ValueError, match="the mask must have one axis less than the inputs"):
        layer(torch.ones(2, 3, 4), mask=torch.ones(2, dtype=torch.bool))


def test_pooling_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"expects \[batch, time, features\]"):
        L.GlobalAveragePooling1D()(torch.ones(2, 3))
    with pytest.raises(ValueError, match="only data_format='channels_last'"):
        L.GlobalMaxPooling1D(data_format="channels_first")


def test_to_categorical_matches_keras() -> None:
    keras = keras_module()
    for y, n in [(np.array([[1], [0], [2]]), None), (np.array([1, 0, 2]), 4), (np.array([[0, 1], [2, 1]]), None),
                 (np.array([1.0, 2.0]), None), (np.array([], dtype=np.int64), 3)]:
        expected = keras.utils.to_categorical(y, n)
        got = to_categorical(y, n)
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="integer class ids, got fractional"):
        to_categorical(np.array([0.5]))
    with pytest.raises(ValueError, match="class ids >= 0, got -1"):
        to_categorical(np.array([-1]))
    with pytest.raises(ValueError, match="class id 3 but num_classes=3"):
        to_categorical(np.array([3]), 3)


def test_keras_weight_conversion_rejects_wrong_shapes() -> None:
    kernel, recurrent = np.zeros((3, 8)), np.zeros((2, 8))
    with pytest.raises(ValueError, match="has 3 weight arrays"):
        keras_to_torch("lstm", [kernel, recurrent], 2)
    with pytest.raises(ValueError, match="divisible by 4 gates"):
        torch_to_keras("lstm", {"weight_ih_l0": np.zeros((7, 3)), "weight_hh_l0": np.zeros((7, 2))})
    with pytest.raises(ValueError, match=r"recurrent_kernel must have shape \[2, 8\]|must have shape"):
        keras_to_torch("lstm", [kernel, np.zeros((3, 8)), np.zeros(8)], 2)
    with pytest.raises(ValueError, match=r"GRU\(reset_after=True\) bias must have shape \[2, 6\]"):
        keras_to_torch("gru", [np.zeros((3, 6)), np.zeros((2, 6)), np.zeros(6)], 2)
    with pytest.raises(ValueError, match=r"Keras lstm bias must have shape \[8\]"):
        keras_to_torch("lstm", [kernel, recurrent, np.zeros(4)], 2)


# -- saving, configs and cloning --------------------------------------------------------------------
def _small_model() -> Sequential:
    return Sequential([L.Input(shape=(4,)), L.Dense(3), L.Dense(1)])


def test_save_and_load_refuse_bad_targets_with_one_line_errors(tmp_path: Path) -> None:
    model = _small_model()
    x = rng().normal(size=(6, 4)).astype("float32")
    with pytest.raises(ValueError, match="include_optimizer=True needs a folder save"):
        model.save(str(tmp_path / "a.safetensors"), include_optimizer=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file; save to a folder path"):
        model.save(str(tmp_path / "file"))
    with pytest.raises(ValueError, match="has no optimizer state yet"):
        model.save(str(tmp_path / "b"), include_optimizer=True)
    model.compile("adam", "mse")
    model.fit(x, np.ones((6, 1), "float32"), epochs=1, verbose=0)
    model.save(str(tmp_path / "b"), include_optimizer=True)
    assert "optimizer.safetensors" in os.listdir(tmp_path / "b") or len(os.listdir(tmp_path / "b")) == 3
    model.save(str(tmp_path / "b"), include_optimizer=False)  # without the optimizer: its old state goes
    assert sorted(os.listdir(tmp_path / "b")) == ["config.json", "model.safetensors"]
    with pytest.raises(FileNotFoundError, match="no weights file at"):
        model.load_weights(str(tmp_path / "missing.safetensors"))
    model.save_weights(str(tmp_path / "w.safetensors"))
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        model.save_weights(str(tmp_path / "w.safetensors"), overwrite=False)
    with pytest.raises(ValueError, match=r"weight 'layer_list.0.bias' .* has shape \[3\], the model has \[5\]"):
        Sequential([L.Input(shape=(4,)), L.Dense(5), L.Dense(1)]).load_weights(str(tmp_path / "w.safetensors"))


def test_load_model_refuses_damaged_or_foreign_configs(tmp_path: Path) -> None:
    model = _small_model()
    x = np.ones((2, 4), "float32")
    folder = tmp_path / "m"
    model.save(str(folder))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text("[1]")
    with pytest.raises(ValueError, match="the config is not a JSON object"):
        load_model(str(folder))
    fresh = _small_model()
    fresh.load_weights(str(folder))  # the weights alone are enough for load_weights
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), model.predict(x, verbose=0))
    (folder / "config.json").write_text(json.dumps({**config, "format": "other"}))
    with pytest.raises(ValueError, match="is not an rnnkit model file"):
        load_model(str(folder))
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 999}))
    with pytest.raises(ValueError, match="saved by a newer rnnkit"):
        load_model(str(folder))
    broken = json.loads(json.dumps(config))
    broken["model"]["config"]["layers"][0]["config"].pop("units")
    (folder / "config.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="cannot rebuild the model in .*units"):
        load_model(str(folder))


def test_functional_config_round_trips_tuple_and_none_call_arguments(tmp_path: Path) -> None:
    i = L.Input(shape=(3, 4))
    _, h, c = L.LSTM(2, return_state=True)(i)
    out = L.LSTM(2)(i, initial_state=(h, c), training=None)
    model = Model(i, out)
    x = rng().normal(size=(2, 3, 4)).astype("float32")
    model.save(str(tmp_path / "m"))
    np.testing.assert_array_equal(load_model(str(tmp_path / "m")).predict(x, verbose=0), model.predict(x, verbose=0))
    clone = model_from_json(model.to_json())
    assert [type(layer).__name__ for layer in clone.layers] == [type(layer).__name__ for layer in model.layers]
    with pytest.raises(ValueError, match="the JSON describes a Dense, not a model"):
        model_from_json(json.dumps({"class_name": "Dense", "config": {"units": 2}}))
    i2 = L.Input(shape=(4,))
    dup = Model(i2, L.Dense(2, name="same")(L.Dense(2, name="same")(i2)))
    with pytest.raises(ValueError, match=r"layer names must be unique .*\['same'\]"):
        dup.save(str(tmp_path / "dup"))


def test_unregistered_layer_cannot_be_saved(tmp_path: Path) -> None:
    class Doubler(L.Layer):
        def call(self, inputs: Any, mask: Any = None, **kwargs: Any) -> Any:
            return inputs * 2

    with pytest.raises(ValueError, match="Doubler is not registered.*register_layer"):
        Sequential([L.Input(shape=(3,)), Doubler()]).save(str(tmp_path / "x"))


def test_clone_model_arguments_follow_keras() -> None:
    keras = keras_module()
    model = _small_model()
    new_input = L.Input(shape=(4,), name="new_in")
    clone = clone_model(model, input_tensors=new_input)
    k_model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    k_input = keras.Input(shape=(4,))
    k_clone = keras.models.clone_model(k_model, input_tensors=k_input)
    assert clone.input_shape == k_clone.input_shape and clone.inputs[0] is new_input
    assert (k_clone.inputs[0] is k_input) is True
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    i = L.Input(shape=(4,))
    functional = Model(i, L.Dense(2)(i))
    with pytest.raises(ValueError, match=r"call_function=\.\.\.\) is not supported"):
        clone_model(functional, call_function=lambda *a: None)
    with pytest.raises(ValueError, match="the model has 1 inputs, got 2 input_tensors"):
        clone_model(functional, input_tensors=[L.Input(shape=(4,)), L.Input(shape=(4,))])
    with pytest.raises(TypeError, match=r"compile\(\) got unexpected keyword argument\(s\) foo"):
        functional.compile("adam", "mse", foo=1)


# -- layer arguments and misuse ----------------------------------------------------------------------
def test_input_layer_arguments_and_config() -> None:
    keras = keras_module()
    with pytest.raises(ValueError, match="Input needs a shape"):
        L.Input()
    with pytest.raises(ValueError, match="sparse inputs are not supported"):
        L.Input(shape=(3,), sparse=True)
    sym = L.Input(shape=(3,), batch_size=4, name="given")
    layer = sym.node.layer
    config = layer.get_config()
    assert config["batch_size"] == 4 and config["shape"] == [3]
    assert type(layer).from_config(config).get_config() == config
    k_sym, r_sym = keras.Input(shape=(None, 4)), L.Input(shape=(None, 4), name="seq_in")
    assert r_sym.ndim == k_sym.ndim == 3
    assert repr(r_sym) == "<SymbolicTensor shape=(None, None, 4) dtype=float32, from 'seq_in'>"
    assert as_numpy(layer(torch.ones(2, 3))).tolist() == [[1.0] * 3] * 2  # an InputLayer passes data through
    b = L.Input(shape=(3,), dtype="bool")
    np.testing.assert_array_equal(Model(b, L.Activation("linear")(b)).predict(np.ones((2, 3), bool), verbose=0),
                                  np.ones((2, 3)))


@pytest.mark.parametrize(("make", "error", "match"), [
    (lambda: L.Embedding(0, 3), ValueError, "positive input_dim and output_dim"),
    (lambda: L.Embedding(3, 3, sparse=True), ValueError, "sparse embeddings are not supported"),
    (lambda: L.SimpleRNN(3, recurrent_activation="sigmoid"), TypeError, "SimpleRNN has no recurrent_activation"),
    (lambda: L.LSTM(3, use_cudnn="yes"), ValueError, "use_cudnn must be 'auto', True or False"),
    (lambda: L.GRU(3, recurrent_dropout=1.0), ValueError, r"must be in \[0, 1\)"),
    (lambda: L.Bidirectional(L.Dense(3)), ValueError, "Bidirectional wraps a SimpleRNN, LSTM or GRU layer"),
    (lambda: L.Bidirectional(L.LSTM(3), merge_mode="max"), ValueError, "merge_mode must be one of"),
    (lambda: L.Bidirectional(L.LSTM(3), backward_layer=L.Dense(3)), ValueError, "backward_layer must be"),
    (lambda: L.Bidirectional(L.LSTM(3), weights=[np.zeros(3)]), ValueError, "set_weights"),
    (lambda: L.TimeDistributed(torch.nn.Linear(2, 2)), ValueError, "TimeDistributed wraps an rnnkit layer"),
])
def test_constructor_misuse_is_refused(make: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(("layer", "x", "error", "match"), [
    (lambda: L.TimeDistributed(L.Dense(2)), torch.ones(2, 3), ValueError, r"expects \[batch, time, \.\.\.\]"),
    (lambda: L.RepeatVector(2), torch.ones(2, 3, 4), ValueError, r"expects \[batch, features\]"),
    (lambda: L.Masking(), torch.ones(2, 3), ValueError, r"expects \[batch, time, features\]"),
    (lambda: L.LSTM(3), torch.ones(2, 3, 4), TypeError, "unexpected call argument"),
])
def test_call_misuse_is_refused(layer: Any, x: torch.Tensor, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        if isinstance(layer(), L.LSTM):
            layer()(x, foo=1)
        else:
            layer()(x)


def test_unbuilt_layers_behave_like_keras() -> None:
    keras = keras_module()
    assert L.Dense(3).get_weights() == keras.layers.Dense(3).get_weights() == []
    assert L.LSTM(3).get_weights() == keras.layers.LSTM(3).get_weights() == []
    with pytest.raises(ValueError, match="is not built yet"):
        L.Dense(3).count_params()
    with pytest.raises(ValueError, match="is not built yet; call it on data"):
        L.Dense(3).set_weights([np.zeros((4, 3)), np.zeros(3)])
    with pytest.raises(ValueError, match="is not built yet; call it on data"):
        L.LSTM(3).set_weights([np.zeros((4, 12))])
    dense = L.Dense(3)
    dense(torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"expects 2 weight arrays with shapes \[\(4, 3\), \(3,\)\], got 1"):
        dense.set_weights([np.zeros((4, 3))])
    with pytest.raises(ValueError, match="needs the input shape with its batch axis"):
        L.Dense(3).compute_output_shape(())
    assert L.Dense(3).compute_output_shape((None, 5, 4)) == keras.layers.Dense(3).compute_output_shape((None, 5, 4))


def test_layer_input_and_output_can_be_overridden_and_deleted() -> None:
    """A subclass may set ``self.output`` (or ``self.input``) to its own value, module or not, and delete it."""
    layer = L.Dense(2)
    layer.output = "mine"
    assert layer.output == "mine"
    del layer.output
    with pytest.raises(AttributeError, match="has never been called on a symbolic tensor"):  # as Keras
        _ = layer.output
    sub = torch.nn.Linear(2, 2)
    layer.input = sub
    assert layer.input is sub and any(m is sub for m in layer.children())
    del layer.input
    assert not any(m is sub for m in layer.children())


def test_more_save_errors_and_model_corners(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = _small_model()
    model.save_weights(str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="holds weights only"):
        load_model(str(tmp_path / "w.safetensors"))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "bad.safetensors"), metadata={"rnnkit_config": "[1]"})
    with pytest.raises(ValueError, match="the config is not a JSON object"):
        load_model(str(tmp_path / "bad.safetensors"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a saved rnnkit model"):
        load_model(str(tmp_path / "empty"))
    model.save(str(tmp_path / "m"))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "format_version": "1"}))
    with pytest.raises(ValueError, match="format_version '1' is not an integer"):
        load_model(str(tmp_path / "m"))
    del config["model"]["config"]["layers"][0]["config"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="cannot rebuild the model in .*units"):
        load_model(str(tmp_path / "m"))
    # a call argument that cannot go in a config
    i = L.Input(shape=(3,))
    with pytest.raises(ValueError, match="cannot save a call argument of type"):
        Model(i, L.Dense(2)(i, mask=torch.ones(1, dtype=torch.bool))).get_config()
    # a functional model called on a float64 tensor computes in float32
    functional = Model(i, L.Dense(2)(i))
    x64 = torch.as_tensor(rng().normal(size=(2, 3)))
    out = functional(x64)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(as_numpy(out), as_numpy(functional(x64.float())))
    with pytest.raises(NotImplementedError, match="has no graph"):
        Model().call(torch.ones(1, 3))
    assert [type(layer).__name__ for layer in _Scaled(2).layers] == ["Dense", "LayerNormalization"]
    dense = L.Dense(3, input_dim=4)
    assert dense.get_config()["input_shape"] == [4] and L.Dense.from_config(dense.get_config()).input_shape_arg == (4,)
    dense(torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"weight 0 must have shape \[4, 3\], got \[3, 3\]"):
        dense.set_weights([np.zeros((3, 3)), np.zeros(3)])
    lstm, relu_lstm = L.LSTM(2), L.LSTM(2, activation="relu")
    lstm(torch.ones(1, 2, 3)), relu_lstm(torch.ones(1, 2, 3))
    assert (lstm.implementation_in_use, relu_lstm.implementation_in_use) == ("fused", "reference")


def test_layer_returning_different_ranks_cannot_be_wired() -> None:
    class Squeezer(L.Layer):
        def call(self, inputs: Any, mask: Any = None, **kwargs: Any) -> Any:
            return inputs[:, 0] if inputs.shape[1] % 2 else inputs

    with pytest.raises(ValueError, match="returned tensors of different ranks"):
        Squeezer()(L.Input(shape=(None, 3)))
