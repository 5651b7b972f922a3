"""Conv1D, pooling, normalization, SpatialDropout1D and Reshape: Keras semantics, checked against
``torch.nn`` with copied weights, hand computations and (when installed) Keras 3 itself; and the
keras examples' ``imdb_cnn_lstm.py`` running with only its imports changed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnkit.layers as L
from rnnkit.layers import (
    LSTM,
    AveragePooling1D,
    BatchNormalization,
    Conv1D,
    Dense,
    Embedding,
    Input,
    LayerNormalization,
    MaxPooling1D,
    Reshape,
    SpatialDropout1D,
    deserialize_layer,
    serialize_layer,
)
from rnnkit.models import Model, Sequential, load_model

from .keras_reference import keras_module, needs_keras
from .test_errors import one_line_error

keras_layers = keras_module


def same_split(length: int, span: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME": ceil(T / stride) outputs, padding split with the odd step on the right."""
    out = math.ceil(length / stride)
    total = max((out - 1) * stride + span - length, 0)
    return total // 2, total - total // 2


def conv_reference(x: torch.Tensor, layer: Conv1D) -> torch.Tensor:
    """torch.nn.Conv1d with the layer's weights, the input padded by hand."""
    k, s, d = layer.kernel_size, layer.strides, layer.dilation_rate
    span = (k - 1) * d + 1
    conv = nn.Conv1d(x.shape[-1], layer.filters, k, stride=s, dilation=d)
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        conv.bias.copy_(layer.bias)
    left, right = {"valid": (0, 0), "causal": (span - 1, 0), "same": same_split(x.shape[1], span, s)}[layer.padding]
    return conv(F.pad(x.transpose(1, 2), (left, right))).transpose(1, 2)


CONV_CASES = [(k, s, d, pad) for pad in ("valid", "same", "causal") for k in (1, 2, 3, 4) for s in (1, 2, 3)
              for d in (1, 2) if not (s > 1 and d > 1)]


@pytest.mark.parametrize("length", [7, 8])
@pytest.mark.parametrize("k,s,d,padding", CONV_CASES)
def test_conv1d_matches_torch_conv1d(length: int, k: int, s: int, d: int, padding: str) -> None:
    x = torch.randn(2, length, 3)
    layer = Conv1D(4, k, strides=s, padding=padding, dilation_rate=d, bias_initializer="normal")
    y = layer(x)
    torch.testing.assert_close(y, conv_reference(x, layer))
    span = (k - 1) * d + 1
    expected = {"valid": (length - span) // s + 1, "same": math.ceil(length / s),
                "causal": (length - 1) // s + 1}[padding]
    assert y.shape == (2, expected, 4)


def test_conv1d_same_with_stride_one_is_torch_same_and_causal_sees_no_future() -> None:
    x = torch.randn(2, 9, 3)
    for k in (2, 3, 4, 5):  # torch's own "same" (stride 1) also puts the odd step on the right
        layer = Conv1D(5, k, padding="same", dilation_rate=2)
        conv = nn.Conv1d(3, 5, k, padding="same", dilation=2)
        layer(x)
        with torch.no_grad():
            conv.weight.copy_(layer.weight)
            conv.bias.copy_(layer.bias)
        torch.testing.assert_close(layer(x), conv(x.transpose(1, 2)).transpose(1, 2))
    causal = Conv1D(2, 3, padding="causal")
    changed = x.clone()
    changed[:, 5:] += 1.0
    torch.testing.assert_close(causal(changed)[:, :5], causal(x)[:, :5])


def test_conv1d_keras_layout_activation_groups_and_init() -> None:
    layer = Conv1D(6, 3, groups=2, activation="relu", use_bias=False)
    x = torch.randn(2, 5, 4)
    y = layer(x)
    assert (y >= 0).all() and layer.get_weights()[0].shape == (3, 2, 6) and layer.bias is None
    kernel = np.random.default_rng(0).normal(size=(3, 2, 6)).astype("float32")
    layer.set_weights([kernel])
    torch.testing.assert_close(layer.weight, torch.from_numpy(kernel).permute(2, 1, 0))
    big = Conv1D(50, 7)
    big(torch.zeros(1, 7, 40))
    limit = math.sqrt(6 / (7 * 40 + 7 * 50))  # Keras' Glorot fans for a [7, 40, 50] kernel
    assert big.weight.abs().max() <= limit and big.weight.abs().max() > 0.9 * limit


def pool_reference(x: np.ndarray, pool: int, stride: int, padding: str, op: str) -> np.ndarray:
    """Each window over the real steps only (TensorFlow's SAME excludes the padding from the mean)."""
    length = x.shape[1]
    left, right = same_split(length, pool, stride) if padding == "same" else (0, 0)
    starts = range(-left, length + right - pool + 1, stride)
    reduce = np.max if op == "max" else np.mean
    return np.stack([reduce(x[:, max(a, 0):min(a + pool, length)], axis=1) for a in starts], axis=1)


@pytest.mark.parametrize("length", [5, 6, 7])
@pytest.mark.parametrize("pool,stride", [(1, None), (2, None), (3, None), (4, None), (2, 1), (3, 2), (4, 3), (2, 3)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_pooling_matches_torch_and_hand_windows(length: int, pool: int, stride: int | None, padding: str) -> None:
    x = torch.randn(2, length, 3)
    s = stride or pool
    for cls, op, torch_pool in ((MaxPooling1D, "max", nn.MaxPool1d(pool, s)), (AveragePooling1D, "mean",
                                                                              nn.AvgPool1d(pool, s))):
        y = cls(pool, strides=stride, padding=padding)(x)
        np.testing.assert_allclose(y.numpy(), pool_reference(x.numpy(), pool, s, padding, op), rtol=1e-5, atol=1e-6)
        if padding == "valid":
            torch.testing.assert_close(y, torch_pool(x.transpose(1, 2)).transpose(1, 2))


def test_masks_dropped_by_conv_and_pooling_kept_by_normalization() -> None:
    x = torch.randn(2, 6, 3)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    for layer in (Conv1D(2, 3), MaxPooling1D(), AveragePooling1D(padding="same"), Reshape((-1, 1))):
        out, out_mask = layer.forward_with_mask(x, mask=mask)
        assert out_mask is None
    for layer in (BatchNormalization(), LayerNormalization(), SpatialDropout1D(0.5)):
        out, out_mask = layer.forward_with_mask(x, mask=mask)
        assert out_mask is mask and out.shape == x.shape


def test_batch_normalization_training_and_inference_by_hand() -> None:
    x = torch.randn(4, 5, 3) * 3 + 2
    layer = BatchNormalization(momentum=0.9, epsilon=1e-3)
    layer(x)  # build
    gamma, beta = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.0, -1.0, 3.0])
    layer.set_weights([gamma.numpy(), beta.numpy(), np.zeros(3, "float32"), np.ones(3, "float32")])
    layer.train()
    y = layer(x)
    mean, var = x.mean((0, 1)), x.var((0, 1), unbiased=False)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + 1e-3) * gamma + beta)
    moving_mean, moving_var = 0.1 * mean, 0.9 + 0.1 * var  # Keras: moving = 0.9 * moving + 0.1 * batch (biased)
    torch.testing.assert_close(layer.running_mean.data, moving_mean)
    torch.testing.assert_close(layer.running_var.data, moving_var)
    layer.eval()
    torch.testing.assert_close(layer(x), (x - moving_mean) / torch.sqrt(moving_var + 1e-3) * gamma + beta)
    assert layer(x, training=True) is not None and not torch.allclose(layer.running_mean.data, moving_mean)
    # a mask restricts the batch statistics to the real steps
    masked = BatchNormalization(momentum=0.0)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[0, 3:] = False
    masked(x, mask=mask, training=True)
    torch.testing.assert_close(masked.running_mean.data, x[mask].mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked.running_var.data, x[mask].var(0, unbiased=False), atol=1e-5, rtol=1e-5)


def test_batch_normalization_statistics_are_never_trained() -> None:
    layer = BatchNormalization()
    model = Sequential([Input(shape=(3,)), Dense(3), layer])
    assert [w.shape for w in layer.get_weights()] == [(3,)] * 4
    assert len(layer.trainable_weights) == 2 and len(layer.non_trainable_weights) == 2
    model.trainable = False
    model.trainable = True
    assert not layer.running_mean.requires_grad and layer.weight.requires_grad
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    assert "Total params: 24" in lines and "Trainable params: 18" in lines and "Non-trainable params: 6" in lines
    frozen = BatchNormalization(trainable=False)  # Keras: a frozen BatchNormalization runs in inference mode
    x = torch.randn(8, 3) + 5
    torch.testing.assert_close(frozen(x, training=True), x / math.sqrt(1 + 1e-3))
    assert frozen.running_mean.abs().sum() == 0


def test_layer_normalization_matches_torch_and_other_axes() -> None:
    x = torch.randn(2, 5, 4)
    layer = LayerNormalization(epsilon=1e-5, gamma_initializer="normal", beta_initializer="normal")
    torch.testing.assert_close(layer(x), F.layer_norm(x, (4,), layer.weight, layer.bias, 1e-5))
    over_time = LayerNormalization(axis=1, center=False)
    y = over_time(x)
    expected = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-3)
    torch.testing.assert_close(y, expected)
    assert over_time.get_weights()[0].shape == (5,)
    both = LayerNormalization(axis=[1, 2])
    torch.testing.assert_close(both(x), F.layer_norm(x, (5, 4), eps=1e-3))


def test_spatial_dropout_drops_whole_channels() -> None:
    layer = SpatialDropout1D(0.5)
    x = torch.ones(16, 10, 8)
    layer.train()
    y = layer(x)
    assert set(torch.unique(y).tolist()) <= {0.0, 2.0}
    assert (y == y[:, :1]).all()  # the same channels at every step
    assert 0 < (y[:, 0] == 0).sum() < y[:, 0].numel()
    layer.eval()
    assert layer(x) is x


def test_reshape() -> None:
    x = torch.arange(24.0).reshape(2, 3, 4)
    torch.testing.assert_close(Reshape((-1, 2))(x), x.reshape(2, 6, 2))
    torch.testing.assert_close(Reshape([12])(x), x.reshape(2, 12))
    with pytest.raises(ValueError, match="cannot reshape \\[2, 3, 4\\] \\(12 values per sample\\)"):
        Reshape((5, -1))(x)
    with pytest.raises(ValueError, match="at most one -1"):
        Reshape((-1, -1))


@pytest.mark.parametrize("make,x,match", [
    (lambda: Conv1D(4, 3), torch.randn(2, 5), "expects \\[batch, time, channels\\], got \\[2, 5\\] \\(add a channel"),
    (lambda: Conv1D(4, 5), torch.randn(2, 4, 3), "needs at least 5 time steps with padding='valid' .* got 4; pad"),
    (lambda: Conv1D(4, 3, dilation_rate=2), torch.randn(2, 4, 3), "needs at least 5 time steps"),
    (lambda: MaxPooling1D(4), torch.randn(2, 3, 3), "needs at least 4 time steps .*or use padding='same'"),
    (lambda: AveragePooling1D(), torch.randn(2, 3, 3, 1), "expects \\[batch, time, channels\\]"),
    (lambda: SpatialDropout1D(0.1), torch.randn(2, 3), "expects \\[batch, time, channels\\]"),
    (lambda: BatchNormalization(axis=3), torch.randn(2, 3), "axis=3 is out of range for inputs of rank 2"),
    (lambda: LayerNormalization(axis=0), torch.randn(2, 3), "cannot normalize along the batch axis"),
])
def test_bad_inputs_give_one_line_errors(make: Any, x: torch.Tensor, match: str) -> None:
    assert re.search(match, one_line_error(lambda: make()(x)))


@pytest.mark.parametrize("make,match", [
    (lambda: Conv1D(0, 3), "Conv1D filters must be a positive integer, got 0"),
    (lambda: Conv1D(4, -1), "Conv1D kernel_size must be a positive integer, got -1"),
    (lambda: Conv1D(4, 2.5), "kernel_size must be a positive integer"),
    (lambda: Conv1D(4, 3, padding="full"), "Conv1D padding must be one of 'valid', 'same', 'causal', got 'full'"),
    (lambda: Conv1D(4, 3, data_format="channels_first"), "channels_last.*x.transpose\\(1, 2\\)"),
    (lambda: MaxPooling1D(0), "MaxPooling1D pool_size must be a positive integer, got 0"),
    (lambda: AveragePooling1D(2, strides=0), "AveragePooling1D strides must be a positive integer"),
    (lambda: MaxPooling1D(2, padding="causal"), "padding must be one of 'valid', 'same', got 'causal'"),
    (lambda: BatchNormalization(momentum=1.5), "momentum must be a number in \\[0.0, 1.0\\]"),
    (lambda: SpatialDropout1D(1.0), "rate must be in \\[0, 1\\)"),
])
def test_bad_arguments_give_one_line_errors(make: Any, match: str) -> None:
    assert re.search(match, one_line_error(make))


NEW_LAYER_CASES = [
    lambda: Conv1D(4, 3, strides=2, padding="causal", dilation_rate=1, activation="relu", kernel_initializer="he_normal"),
    lambda: MaxPooling1D(3, strides=2, padding="same"),
    lambda: AveragePooling1D(2),
    lambda: BatchNormalization(momentum=0.8, epsilon=1e-5, center=False),
    lambda: LayerNormalization(axis=[1, 2], scale=False),
    lambda: SpatialDropout1D(0.2, seed=3),
    lambda: Reshape((-1, 2)),
]


@pytest.mark.parametrize("factory", NEW_LAYER_CASES)
def test_config_round_trip(factory: Any) -> None:
    layer = factory()
    clone = deserialize_layer(serialize_layer(layer))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    x = torch.randn(2, 6, 4)
    layer.eval()
    clone.eval()
    layer(x)
    clone(x)
    clone.set_weights([w + 0.5 for w in layer.get_weights()])
    layer.set_weights(clone.get_weights())
    torch.testing.assert_close(layer(x), clone(x))


# -- the keras examples' imdb_cnn_lstm.py, only the imports changed ---------------------------------
max_features, maxlen, embedding_size = 50, 20, 8
kernel_size, filters, pool_size = 5, 6, 4
lstm_output_size, batch_size, epochs = 5, 4, 1


def imdb_cnn_lstm(layers: Any, sequential: Any) -> Any:
    """The example's model code, verbatim; ``layers``/``sequential`` stand for its imports."""
    Sequential, Embedding, Dropout, Conv1D, MaxPooling1D, LSTM, Dense, Activation = (  # noqa: F811, N806
        sequential, layers.Embedding, layers.Dropout, layers.Conv1D, layers.MaxPooling1D, layers.LSTM, layers.Dense,
        layers.Activation)
    model = Sequential()
    model.add(Embedding(max_features, embedding_size, input_length=maxlen))
    model.add(Dropout(0.25))
    model.add(Conv1D(filters, kernel_size, padding='valid', activation='relu', strides=1))
    model.add(MaxPooling1D(pool_size=pool_size))
    model.add(LSTM(lstm_output_size))
    model.add(Dense(1))
    model.add(Activation('sigmoid'))
    model.compile(loss='binary_crossentropy', optimizer='adam', metrics=['accuracy'])
    return model


# (output shape, params) per layer as Keras' summary() gives them; rnnkit's LSTM has 4 * units more
KERAS_SUMMARY = [((None, 20, 8), 400), ((None, 20, 8), 0), ((None, 16, 6), 246), ((None, 4, 6), 0),
                 ((None, 5), 240), ((None, 1), 6), ((None, 1), 0)]


def test_imdb_cnn_lstm_snippet_runs_with_only_the_imports_changed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train, y_train = rng.integers(1, max_features, size=(8, maxlen)), rng.integers(0, 2, size=8)
    x_test, y_test = rng.integers(1, max_features, size=(4, maxlen)), rng.integers(0, 2, size=4)
    model = imdb_cnn_lstm(L, Sequential)
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_data=(x_test, y_test),
                        verbose=0)
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    score, acc = model.evaluate(x_test, y_test, batch_size=batch_size, verbose=0)
    assert np.isfinite(score) and 0.0 <= acc <= 1.0
    shapes = [layer.output_shape for layer in model.layers]
    params = [layer.count_params() for layer in model.layers]
    assert shapes == [s for s, _ in KERAS_SUMMARY]
    assert params == [p for _, p in KERAS_SUMMARY]  # Keras's counts (the LSTM's constant bias_hh is no weight)
    model.save(tmp_path / "cnn_lstm")
    loaded = load_model(tmp_path / "cnn_lstm")
    np.testing.assert_array_equal(loaded.predict(x_test, verbose=0), model.predict(x_test, verbose=0))


def test_save_load_keeps_batch_statistics(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 9, 3)).astype("float32") * 2 + 1, rng.integers(0, 3, size=16)
    model = Sequential([Input(shape=(9, 3)), Conv1D(4, 3, padding="same"), BatchNormalization(),
                        SpatialDropout1D(0.1), AveragePooling1D(2, padding="same"), LayerNormalization(),
                        Conv1D(4, 2, padding="causal", dilation_rate=2), MaxPooling1D(2), Reshape((-1,)),
                        Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    bn = model.layers[1]
    assert isinstance(bn, BatchNormalization) and bn.running_mean.abs().sum() > 0  # updated by training
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_functional_model_shapes() -> None:
    inputs = Input(shape=(12,), dtype="int64")
    h = Embedding(30, 6)(inputs)
    h = Conv1D(5, 4, strides=2, padding="same")(h)
    h = MaxPooling1D(2, padding="same")(h)
    h = BatchNormalization()(h)
    model = Model(inputs, LSTM(3)(h))
    assert h.shape == (None, 3, 5) and model.output_shape == (None, 3)


# -- live Keras parity -----------------------------------------------------------------------------
@needs_keras
@pytest.mark.parametrize("k,s,d,padding", [c for c in CONV_CASES if c[0] in (2, 3)])
def test_live_keras_conv1d(k: int, s: int, d: int, padding: str) -> None:
    keras = keras_layers()
    x = np.random.default_rng(k * 7 + s).normal(size=(2, 8, 3)).astype("float32")
    klayer = keras.layers.Conv1D(4, k, strides=s, padding=padding, dilation_rate=d, bias_initializer="random_normal")
    expected = np.asarray(klayer(x).detach().cpu())
    layer = Conv1D(4, k, strides=s, padding=padding, dilation_rate=d)
    layer(torch.from_numpy(x))
    layer.set_weights(klayer.get_weights())
    np.testing.assert_allclose(layer(torch.from_numpy(x)).detach().numpy(), expected, atol=1e-5)
    for a, b in zip(layer.get_weights(), klayer.get_weights()):
        np.testing.assert_array_equal(a, b)


@needs_keras
@pytest.mark.parametrize("length", [6, 7])
@pytest.mark.parametrize("pool,stride,padding", [(2, None, "valid"), (3, 2, "valid"), (2, None, "same"),
                                                 (3, 1, "same"), (4, 3, "same"), (3, 2, "same")])
def test_live_keras_pooling(length: int, pool: int, stride: int | None, padding: str) -> None:
    keras = keras_layers()
    x = np.random.default_rng(length).normal(size=(2, length, 3)).astype("float32")
    left, right = same_split(length, pool, stride or pool) if padding == "same" else (0, 0)
    pairs = [(keras.layers.MaxPooling1D, MaxPooling1D)]
    if left == right:  # uneven: Keras' torch backend repeats the edge steps, TensorFlow (and rnnkit) skip padding
        pairs.append((keras.layers.AveragePooling1D, AveragePooling1D))
    for kcls, cls in pairs:
        expected = np.asarray(kcls(pool, strides=stride, padding=padding)(x).detach().cpu())
        got = cls(pool, strides=stride, padding=padding)(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6)


@needs_keras
@pytest.mark.parametrize("with_mask", [False, True])
def test_live_keras_batch_normalization(with_mask: bool) -> None:
    keras = keras_layers()
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(4, 6, 3)) * 2 + 1).astype("float32")
    mask = np.ones((4, 6), bool)
    mask[0, 4:], mask[1, :2] = False, False
    klayer = keras.layers.BatchNormalization(momentum=0.8)
    klayer.build((None, 6, 3))
    weights = [(w + rng.normal(scale=0.1, size=w.shape)).astype("float32") for w in klayer.get_weights()]
    klayer.set_weights(weights)
    layer = BatchNormalization(momentum=0.8)
    layer(torch.from_numpy(x))
    layer.set_weights(weights)
    m = torch.from_numpy(mask) if with_mask else None
    for _ in range(2):  # two training steps, then inference with the moving statistics
        expected = np.asarray(klayer(x, training=True, mask=m).detach().cpu())
        np.testing.assert_allclose(layer(torch.from_numpy(x), mask=m, training=True).detach().numpy(), expected,
                                   atol=1e-5)
    for a, b in zip(layer.get_weights(), klayer.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    expected = np.asarray(klayer(x, training=False).detach().cpu())
    np.testing.assert_allclose(layer(torch.from_numpy(x), training=False).detach().numpy(), expected, atol=1e-5)


@needs_keras
def test_live_keras_cnn_lstm_summary_and_weights() -> None:
    keras = keras_layers()
    kmodel = imdb_cnn_lstm(keras.layers, keras.Sequential)
    kmodel.build((None, maxlen))
    model = imdb_cnn_lstm(L, Sequential)
    keras_rows = [(tuple(layer.output.shape), layer.count_params()) for layer in kmodel.layers]
    assert keras_rows == KERAS_SUMMARY
    model.set_weights(kmodel.get_weights())
    x = np.random.default_rng(5).integers(1, max_features, size=(3, maxlen))
    np.testing.assert_allclose(model.predict(x, verbose=0), np.asarray(kmodel.predict(x, verbose=0)), atol=1e-5)
    for a, b in zip(model.get_weights(), kmodel.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


# -- dynamic lengths in functional models ------------------------------------------------------------
@pytest.mark.parametrize("layer", [lambda: L.MaxPooling1D(3), lambda: L.MaxPooling1D(2), lambda: L.AveragePooling1D(4),
                                   lambda: L.Conv1D(3, 5, strides=2), lambda: L.Conv1D(3, 7)])
def test_a_dynamic_length_stays_dynamic_through_strided_and_valid_windows(layer: Any) -> None:
    """Shapes are inferred from two example lengths: a stride must not map them to one size (which would
    mark the length static, so that summary() and a later Flatten/Dense saw a wrong size)."""
    x = L.Input(shape=(None, 4))
    y = layer()(layer()(x))  # chained, as in stacked conv/pool blocks
    assert y.shape[1] is None
    model = Model(x, L.LSTM(5)(y))
    assert model(torch.randn(2, 80, 4)).shape == (2, 5)


def test_dense_after_flattening_a_dynamic_length_names_the_fix() -> None:
    x = L.Input(shape=(None, 4))
    flat = L.Flatten()(L.MaxPooling1D(3)(x))
    with pytest.raises(ValueError, match=r"Dense 'd' needs a fixed last dimension, and its input's is dynamic "
                                         r"\(shape \(None, None\)\); fix: give the model input a fixed length"):
        L.Dense(2, name="d")(flat)
    fixed = L.Input(shape=(30, 4))
    assert Model(fixed, L.Dense(2)(L.Flatten()(L.MaxPooling1D(3)(fixed))))(torch.randn(2, 30, 4)).shape == (2, 2)
