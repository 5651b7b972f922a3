"""Bad input gives a one-line error saying what was expected."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from rnnkit.layers import LSTM, Dense, Embedding, Input
from rnnkit.models import Sequential


def classifier(loss: str = "sparse_categorical_crossentropy", units: int = 3,
               activation: str = "softmax") -> Sequential:
    model = Sequential([Input(shape=(4, 2)), LSTM(4), Dense(units, activation=activation)])
    model.compile("adam", loss, metrics=["accuracy"])
    return model


X = np.random.default_rng(0).normal(size=(20, 4, 2)).astype("float32")
Y = np.arange(20) % 3


def one_line_error(fn: Callable[[], object], kind: type[BaseException] = ValueError) -> str:
    with pytest.raises(kind) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_integer_labels_with_categorical_crossentropy() -> None:
    msg = one_line_error(lambda: classifier("categorical_crossentropy").fit(X, Y, verbose=0))
    assert "expects one-hot labels of shape [B, 3]" in msg
    assert "sparse_categorical_crossentropy" in msg and "to_categorical" in msg


def test_one_hot_labels_with_sparse_crossentropy() -> None:
    msg = one_line_error(lambda: classifier().fit(X, np.eye(3)[Y], verbose=0))
    assert "got one-hot labels" in msg and "categorical_crossentropy" in msg


def test_labels_out_of_range_anywhere_in_the_data() -> None:
    y = Y.copy()
    y[-1] = 7  # not in the first batch
    msg = one_line_error(lambda: classifier().fit(X, y, batch_size=4, verbose=0))
    assert re.search(r"class ids in \[\d, 7\]", msg) and "3 classes" in msg


def test_binary_crossentropy_with_class_ids() -> None:
    msg = one_line_error(lambda: classifier("binary_crossentropy", units=1, activation="sigmoid").fit(X, Y, verbose=0))
    assert "labels in [0, 1]" in msg and "sparse_categorical_crossentropy" in msg
    msg = one_line_error(lambda: classifier("binary_crossentropy").fit(X, Y, verbose=0))
    assert "class ids of shape [B]" in msg


def test_wrong_shapes() -> None:
    msg = one_line_error(lambda: classifier("mse", units=1, activation="linear").fit(X, np.zeros((20, 2)), verbose=0))
    assert "expects targets of shape [B, 1]" in msg and "got [B, 2]" in msg
    msg = one_line_error(lambda: classifier().fit(X[:, :, 0], Y, verbose=0))
    assert "expects input [batch, time, features]" in msg
    msg = one_line_error(lambda: classifier().fit(X, Y[:10], verbose=0))
    assert "same number of samples" in msg and "x[0]: 20" in msg and "y[0]: 10" in msg
    msg = one_line_error(lambda: classifier().predict(np.zeros((2, 4, 5), dtype="float32")))
    assert "expects 2 input features" in msg


def test_nan_in_inputs_or_labels() -> None:
    x = X.copy()
    x[3, 1, 0] = np.nan
    assert "x contains NaN" in one_line_error(lambda: classifier().fit(x, Y, verbose=0))
    y = np.zeros((20, 1), dtype="float32")
    y[5] = np.inf
    assert "y contains infinite values" in one_line_error(
        lambda: classifier("mse", units=1, activation="linear").fit(X, y, verbose=0))
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(Y)), batch_size=4)
    assert "x contains NaN" in one_line_error(lambda: classifier().fit(loader, verbose=0))


def test_empty_data() -> None:
    msg = one_line_error(lambda: classifier().fit(np.zeros((0, 4, 2), dtype="float32"), np.zeros(0), verbose=0))
    assert "no samples" in msg
    assert "no samples" in one_line_error(lambda: classifier().fit([], [], verbose=0))


def test_unknown_names_list_the_valid_ones() -> None:
    model = Sequential([Input(shape=(3,)), Dense(2)])
    msg = one_line_error(lambda: model.compile("adamm", "mse"))
    assert "unknown optimizer 'adamm'; choose one of adadelta, adagrad, adam, adamax, adamw, ftrl, lion, nadam, rmsprop, sgd" in msg
    msg = one_line_error(lambda: model.compile("adam", "crossentropy"))
    assert "unknown loss 'crossentropy'" in msg and "sparse_categorical_crossentropy" in msg
    msg = one_line_error(lambda: model.compile("adam", "mse", metrics=["acuracy"]))
    assert "unknown metric 'acuracy'" in msg and "accuracy" in msg and "f1_macro" in msg
    msg = one_line_error(lambda: model.compile("adam"))
    assert "needs a loss" in msg


def test_other_misuse() -> None:
    model = classifier()
    assert "must be compiled first" in one_line_error(
        lambda: Sequential([Input(shape=(3,)), Dense(1)]).fit(np.zeros((2, 3)), np.zeros((2, 1)), verbose=0))
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=4)
    assert "validation_split needs in-memory arrays" in one_line_error(
        lambda: model.fit(loader, validation_split=0.2, verbose=0))
    assert "do not pass batch_size with a DataLoader" in one_line_error(lambda: model.fit(loader, batch_size=4, verbose=0))
    assert "tokenize text first" in one_line_error(lambda: model.fit(np.array(["a good film"]), [1], verbose=0))
    assert "class_weight is for classification" in one_line_error(
        lambda: classifier("mse", units=1, activation="linear").fit(X, np.zeros((20, 1)), class_weight={0: 1.0},
                                                                     verbose=0))
    emb = Sequential([Embedding(5, 2), LSTM(2), Dense(2, activation="softmax")])
    emb.compile("adam", "sparse_categorical_crossentropy")
    assert "input_dim=5" in one_line_error(lambda: emb.fit(np.array([[1, 9]]), np.array([0]), verbose=0))


def test_missing_softmax_is_flagged() -> None:
    model = Sequential([Input(shape=(3,)), Dense(2)])
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.warns(UserWarning, match="has no softmax.*from_logits=True"):
        model.fit(np.ones((4, 3)), np.zeros(4, dtype=np.int64), verbose=0)
