"""Keras parity review of the Keras-style layers: regressions for the defects found, checked
against Keras 3 on its torch backend where Keras defines the answer (skipped without Keras)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytest
import torch

import rnnkit.layers as L
from rnnkit.layers.initializers import INITIALIZERS


def keras_module() -> Any:
    os.environ["KERAS_BACKEND"] = "torch"
    return pytest.importorskip("keras")


def padded_ids(rng: np.random.Generator) -> np.ndarray:
    ids = rng.integers(1, 20, size=(4, 7))
    ids[0, 4:] = 0  # post-padding
    ids[1, :3] = 0  # pre-padding
    ids[2, :6] = 0  # one real step
    return ids


def numpy_of(out: Any) -> list[np.ndarray]:
    keras = keras_module()
    outs = out if isinstance(out, list | tuple) else [out]
    return [np.asarray(keras.ops.convert_to_numpy(o)) if not isinstance(o, torch.Tensor) else o.detach().numpy()
            for o in outs]


def keras_and_rnnkit(keras: Any, make: Any, ids: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Embedding(mask_zero) -> make(module) in both libraries, Keras weights copied into rnnkit."""
    rng = np.random.default_rng(3)
    k_emb, k_layer = keras.layers.Embedding(20, 4, mask_zero=True), make(keras.layers)
    r_emb, r_layer = L.Embedding(20, 4, mask_zero=True), make(L)
    k_out = k_layer(k_emb(ids), mask=ids != 0)  # explicit mask: the same in both
    x = torch.as_tensor(ids)
    r_out = r_layer(r_emb(x), mask=x != 0)
    weights = [(np.asarray(w) + rng.normal(scale=0.2, size=np.shape(w))).astype("float32")
               for w in k_emb.get_weights() + k_layer.get_weights()]
    k_emb.set_weights(weights[:1]), k_layer.set_weights(weights[1:])
    r_emb.set_weights(weights[:1]), r_layer.set_weights(weights[1:])
    k_out = k_layer(k_emb(ids), mask=ids != 0)
    with torch.no_grad():
        r_out = r_layer(r_emb(x), mask=x != 0)
    return numpy_of(k_out), numpy_of(r_out)


# -- activations and initializers -----------------------------------------------------------------
@pytest.mark.parametrize("layer", ["Dense", "LSTM"])
def test_leaky_relu_has_keras_slope(layer: str) -> None:
    """``"leaky_relu"`` was torch's (slope 0.01); Keras' has slope 0.2."""
    keras = keras_module()
    x = (np.random.default_rng(0).normal(size=(3, 5, 4)) * 3).astype("float32")
    k = getattr(keras.layers, layer)(4, activation="leaky_relu")
    r = getattr(L, layer)(4, activation="leaky_relu")
    k(x), r(torch.as_tensor(x))
    r.set_weights(k.get_weights())
    with torch.no_grad():
        np.testing.assert_allclose(r(torch.as_tensor(x)).numpy(), numpy_of(k(x))[0], atol=1e-5)
    assert float(L.get_activation("leaky_relu")(torch.tensor(-1.0))) == pytest.approx(-0.2)


@pytest.mark.parametrize("name,variance", [("glorot_normal", 2.0 / (300 + 400)), ("he_normal", 2.0 / 400),
                                           ("lecun_normal", 1.0 / 400)])
def test_truncated_variance_scaling_keeps_the_variance(name: str, variance: float) -> None:
    """The truncated normals were 12% narrower than Keras' (no 1/0.8796 correction)."""
    torch.manual_seed(0)
    t = torch.empty(300, 400)  # torch layout [out, in]: fan_in 400, fan_out 300
    INITIALIZERS[name](t)
    assert float(t.std()) == pytest.approx(math.sqrt(variance), rel=0.02)
    assert float(t.abs().max()) <= 2 * math.sqrt(variance) / 0.87962566103423978 + 1e-6


def test_gru_reset_after_bias_initializer_fills_both_rows() -> None:
    """Keras initialises the [2, 3H] GRU bias whole; the recurrent row stayed 0 here."""
    keras = keras_module()
    k = keras.layers.GRU(3, bias_initializer="ones")
    k.build((None, 5, 2))
    r = L.GRU(3, bias_initializer="ones")
    r(torch.zeros(1, 5, 2))
    np.testing.assert_array_equal(r.get_weights()[2], np.asarray(k.get_weights()[2]))
    r_before = L.GRU(3, bias_initializer="ones", reset_after=False)  # one bias row: bias_hh stays 0 (summed)
    r_before(torch.zeros(1, 5, 2))
    np.testing.assert_array_equal(r_before.get_weights()[2], np.ones(9, "float32"))


# -- Bidirectional ------------------------------------------------------------------------------
def test_bidirectional_backward_layer_must_read_the_other_way() -> None:
    """A backward_layer reading forwards ran the forward direction twice, silently."""
    with pytest.raises(ValueError, match="go_backwards=True") as err:
        L.Bidirectional(L.LSTM(3, return_sequences=True), backward_layer=L.LSTM(3, return_sequences=True))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="stateful"):
        L.Bidirectional(L.LSTM(3, stateful=True), backward_layer=L.LSTM(3, go_backwards=True))


def test_bidirectional_explicit_backward_layer_matches_keras() -> None:
    keras = keras_module()
    ids = padded_ids(np.random.default_rng(1))

    def make(mod: Any) -> Any:
        return mod.Bidirectional(mod.GRU(3, return_sequences=True), merge_mode="sum",
                                 backward_layer=mod.GRU(3, return_sequences=True, go_backwards=True))

    k_out, r_out = keras_and_rnnkit(keras, make, ids)
    real = (ids != 0)[..., None]
    np.testing.assert_allclose(r_out[0] * real, k_out[0] * real, atol=1e-5)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_masked_merge_modes_and_states_match_keras(merge_mode: str | None) -> None:
    keras = keras_module()
    ids = padded_ids(np.random.default_rng(2))

    def make(mod: Any) -> Any:
        return mod.Bidirectional(mod.LSTM(3, return_sequences=True, return_state=True), merge_mode=merge_mode)

    k_out, r_out = keras_and_rnnkit(keras, make, ids)
    assert len(r_out) == len(k_out) == (5 if merge_mode else 6)  # [out(s), h_f, c_f, h_b, c_b]
    real = (ids != 0)[..., None]
    for a, b in zip(r_out, k_out):
        assert a.shape == b.shape
        np.testing.assert_allclose(a * real if a.ndim == 3 else a, b * real if b.ndim == 3 else b, atol=1e-5)


# -- recurrent layers -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_initial_state_accepts_numpy_like_keras(kind: str) -> None:
    """NumPy initial states (Keras takes them) were refused with 'must have shape [...], got ndarray'."""
    keras = keras_module()
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 6, 2)).astype("float32")
    mask = np.ones((3, 6), bool)
    mask[0, 4:], mask[1, :2] = False, False
    n = 2 if kind == "LSTM" else 1
    states = [rng.normal(size=(3, 4)) for _ in range(n)]  # float64, as NumPy makes them
    k = getattr(keras.layers, kind)(4, return_state=True, go_backwards=True)
    r = getattr(L, kind)(4, return_state=True, go_backwards=True)
    k(x), r(torch.as_tensor(x))
    r.set_weights(k.get_weights())
    k_out = numpy_of(k(x, initial_state=states, mask=mask))
    with torch.no_grad():
        r_np = numpy_of(r(torch.as_tensor(x), initial_state=states, mask=torch.as_tensor(mask)))
        r_t = numpy_of(r(torch.as_tensor(x), initial_state=[torch.as_tensor(s, dtype=torch.float32) for s in states],
                         mask=torch.as_tensor(mask)))
    for a, b, c in zip(r_np, r_t, k_out):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(a, c, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: L.LSTM(2.5), lambda: L.GRU("8"), lambda: L.SimpleRNN(None),
                                  lambda: L.Dense(2.5), lambda: L.LSTM(True)])
def test_units_must_be_positive_integers(make: Any) -> None:
    """``LSTM(2.5)`` and ``Dense(2.5)`` silently built 2 units; strings gave int()'s message."""
    with pytest.raises(ValueError, match="units must be a positive integer") as err:
        make()
    assert "\n" not in str(err.value)
    assert L.LSTM(np.int64(3)).units == 3


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_masked_go_backwards_and_states_match_keras(kind: str) -> None:
    keras = keras_module()
    ids = padded_ids(np.random.default_rng(5))

    def make(mod: Any) -> Any:
        return getattr(mod, kind)(4, go_backwards=True, return_sequences=True, return_state=True)

    k_out, r_out = keras_and_rnnkit(keras, make, ids)
    real = (ids != 0)[:, ::-1, None]  # outputs in processing order
    np.testing.assert_allclose(r_out[0] * real, k_out[0] * real, atol=1e-5)
    for a, b in zip(r_out[1:], k_out[1:]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_go_backwards_passes_the_flipped_mask_on() -> None:
    """Documented difference: the next layer gets the mask of the reversed outputs (Keras passes the
    unflipped one), i.e. rnnkit equals Keras given the flipped mask explicitly."""
    keras = keras_module()
    ids = padded_ids(np.random.default_rng(6))
    k1, k2 = keras.layers.LSTM(3, go_backwards=True, return_sequences=True), keras.layers.LSTM(2)
    r1, r2 = L.LSTM(3, go_backwards=True, return_sequences=True), L.LSTM(2)
    emb = np.random.default_rng(7).normal(size=(4, 7, 4)).astype("float32") * (ids != 0)[..., None]
    mask = ids != 0
    k2(k1(emb, mask=mask)), r2(r1(torch.as_tensor(emb), mask=torch.as_tensor(mask)))
    r1.set_weights(k1.get_weights()), r2.set_weights(k2.get_weights())
    k_out = numpy_of(k2(k1(emb, mask=mask), mask=mask[:, ::-1].copy()))[0]
    with torch.no_grad():
        h, h_mask = r1.forward_with_mask(torch.as_tensor(emb), mask=torch.as_tensor(mask))
        r_out = r2(h, mask=h_mask).numpy()
    np.testing.assert_array_equal(h_mask.numpy(), mask[:, ::-1])
    np.testing.assert_allclose(r_out, k_out, atol=1e-5)


# -- shapes -------------------------------------------------------------------------------------
SHAPE_CASES: list[tuple[Any, Any]] = [
    (lambda m: m.LSTM(4, return_state=True), (None, 5, 3)),
    (lambda m: m.LSTM(4, return_sequences=True, return_state=True), (None, None, 3)),
    (lambda m: m.GRU(4, stateful=True), (2, 5, 3)),
    (lambda m: m.Bidirectional(m.GRU(4, return_state=True)), (None, 5, 3)),
    (lambda m: m.Bidirectional(m.LSTM(4, return_sequences=True), merge_mode=None), (None, 5, 3)),
    (lambda m: m.TimeDistributed(m.Dense(3)), (None, 5, 2)),
    (lambda m: m.Embedding(10, 3), (None, None)),
    (lambda m: m.Conv1D(3, 2, strides=2), (None, 9, 4)),
    (lambda m: m.Flatten(), (None, 5, 2)),
    (lambda m: m.Concatenate(), [(None, 5, 2), (None, 5, 3)]),
]


@pytest.mark.parametrize("make,shape", SHAPE_CASES)
def test_compute_output_shape_matches_keras(make: Any, shape: Any) -> None:
    """``layer.compute_output_shape`` did not exist (AttributeError)."""
    keras = keras_module()
    expected = keras_layer_shape = make(keras.layers).compute_output_shape(shape)
    if isinstance(keras_layer_shape[0], tuple):
        expected = [tuple(s) for s in keras_layer_shape]
    assert make(L).compute_output_shape(shape) == expected


# -- one bias, as in Keras ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["LSTM", "SimpleRNN", "GRU_reset_before", "Bidirectional_LSTM"])
def test_single_bias_layers_keep_bias_hh_a_frozen_zero(kind: str) -> None:
    """Keras has one bias where torch adds bias_ih and bias_hh: a trained bias_hh took the same gradient
    and doubled the bias's step (0.1 off Keras's LSTM bias after one SGD step at lr 0.5)."""
    from rnnkit.models import Sequential
    from rnnkit.training.optimizers import SGD

    make = {"LSTM": lambda: L.LSTM(4), "SimpleRNN": lambda: L.SimpleRNN(4),
            "GRU_reset_before": lambda: L.GRU(4, reset_after=False),
            "Bidirectional_LSTM": lambda: L.Bidirectional(L.LSTM(4))}[kind]
    model = Sequential([L.Input((5, 3)), make()])
    model.compile(optimizer=SGD(0.5), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 5, 3)).astype("float32"), rng.normal(size=(8, 8 if "Bi" in kind else 4)).astype("float32")
    hh = [p for n, p in model.named_parameters() if "bias_hh" in n]
    assert hh and all(not p.requires_grad for p in hh)
    before = model.get_weights()
    model.train_on_batch(x, y)
    assert all(torch.count_nonzero(p) == 0 for p in hh)  # still the constant 0
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the rest trained
    layer = model.layers[-1]
    layer.trainable = False
    layer.trainable = True  # re-enabling training leaves the constant frozen
    assert all(not p.requires_grad for p in hh)
    assert all(p.requires_grad for n, p in model.named_parameters() if "bias_hh" not in n)
    gru = Sequential([L.Input((5, 3)), L.GRU(4)])  # reset_after=True: Keras's [2, 3H] bias trains both rows
    assert all(p.requires_grad for p in gru.parameters())


@pytest.mark.parametrize("name", ["LSTM", "GRU", "SimpleRNN"])
def test_one_sgd_step_matches_keras(name: str) -> None:
    keras = keras_module()
    from rnnkit.models import Sequential
    from rnnkit.training.optimizers import SGD

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 5, 3)).astype("float32"), rng.normal(size=(8, 4)).astype("float32")
    k_model = keras.Sequential([keras.Input((5, 3)), getattr(keras.layers, name)(4)])
    k_model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    r_model = Sequential([L.Input((5, 3)), getattr(L, name)(4)])
    r_model.compile(optimizer=SGD(0.5), loss="mse")
    r_model.set_weights(k_model.get_weights())
    k_model.train_on_batch(x, y)
    r_model.train_on_batch(x, y)
    for k_w, r_w in zip(k_model.get_weights(), r_model.get_weights()):
        np.testing.assert_allclose(r_w, k_w, atol=1e-6)
