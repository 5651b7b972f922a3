"""What a Keras 3 user writes first: the classic IMDB LSTM snippet, common variations and mistakes."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnkit.layers import LSTM, Concatenate, Dense, Embedding, Input
from rnnkit.models import Model, Sequential, load_model
from rnnkit.training import SGD

from .test_errors import one_line_error

RNG = np.random.default_rng(0)
X = RNG.integers(1, 50, size=(40, 8))
Y = RNG.integers(0, 2, size=40)


def imdb_model(frozen_embedding: bool = False) -> Sequential:
    model = Sequential()
    model.add(Embedding(50, 8, trainable=not frozen_embedding))
    model.add(LSTM(4, dropout=0.2, recurrent_dropout=0.2))
    model.add(Dense(1, activation="sigmoid"))
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def test_classic_snippet_return_values() -> None:
    model = imdb_model()
    history = model.fit(X, Y, batch_size=32, epochs=2, validation_data=(X, Y), verbose=0)
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(v) == 2 for v in history.history.values())
    score, acc = model.evaluate(X, Y, batch_size=32, verbose=0)
    assert isinstance(score, float) and 0.0 <= acc <= 1.0
    assert model.predict(X, verbose=0).shape == (40, 1)
    assert model.predict(X[:1], verbose=0).shape == (1, 1)


def test_weights_properties() -> None:
    model = imdb_model(frozen_embedding=True)
    model.build((None, 8))
    assert len(model.weights) == 1 + 3 + 2  # embeddings; LSTM w_ih, w_hh, b_ih (as Keras's 3); Dense kernel, bias
    assert all(isinstance(w, torch.nn.Parameter) for w in model.weights)
    # frozen embeddings are not trained; the LSTM's bias_hh (a constant 0 where Keras has one bias) is no weight
    assert len(model.trainable_weights) == 5 and len(model.non_trainable_weights) == 1
    assert len(model.layers[1].weights) == 3 and len(list(model.layers[1].parameters())) == 4


def test_regularizer_arguments_on_any_layer() -> None:
    Embedding(10, 4, embeddings_regularizer=None, embeddings_constraint=None)  # Keras defaults are accepted
    Dense(3, kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None)
    msg = one_line_error(lambda: Dense(3, kernel_regularizer="l2"))
    assert "kernel_regularizer" in msg and "weight_decay" in msg
    msg = one_line_error(lambda: Embedding(10, 4, embeddings_regularizer="l2"))
    assert "embeddings_regularizer" in msg and "weight_decay" in msg
    msg = one_line_error(lambda: LSTM(4, recurrent_constraint="max_norm"))
    assert "recurrent_constraint" in msg


def test_single_sample_predict_names_the_fix() -> None:
    model = imdb_model()
    model.fit(X, Y, epochs=1, verbose=0)
    msg = one_line_error(lambda: model.predict(X[0], verbose=0))
    assert "one sample of shape (8,)" in msg and "x[None]" in msg
    typed = Sequential([Input(shape=(5, 3)), LSTM(4), Dense(1)])
    msg = one_line_error(lambda: typed(torch.zeros(5, 3)))
    assert "one sample of shape (5, 3)" in msg
    assert model.predict(X[0][None], verbose=0).shape == (1, 1)


def test_unknown_keyword_arguments_name_the_method() -> None:
    model = imdb_model()
    msg = one_line_error(lambda: model.fit(X, Y, verbos=0), TypeError)
    assert msg.startswith("fit() got an unexpected keyword argument 'verbos'") and "'verbose'" in msg
    msg = one_line_error(lambda: model.fit(X, Y, verbose=0, use_multiprocessing=True), TypeError)
    assert "num_workers" in msg
    msg = one_line_error(lambda: model.evaluate(X, Y, verbose=0, callbacks=[]), TypeError)
    assert msg.startswith("evaluate()") and "fit()" in msg
    msg = one_line_error(lambda: model.predict(X, verbos=0), TypeError)
    assert msg.startswith("predict()") and "'verbose'" in msg


def test_batch_size_zero_is_refused() -> None:
    model = imdb_model()
    for call in (lambda: model.fit(X, Y, batch_size=0, verbose=0),
                 lambda: model.evaluate(X, Y, batch_size=0, verbose=0),
                 lambda: model.predict(X, batch_size=0, verbose=0)):
        assert "batch_size must be a positive integer, got 0" in one_line_error(call)
    for call in (lambda: model.fit(X, Y, validation_batch_size=0, validation_split=0.25, verbose=0),
                 lambda: model.fit(X, Y, validation_batch_size=0, validation_data=(X, Y), verbose=0)):
        assert one_line_error(call) == "validation_batch_size must be a positive integer, got 0"


def _twin_models() -> tuple[Sequential, Sequential]:
    models = []
    for _ in range(2):
        model = Sequential([Input(shape=(8,), dtype="int64"), Embedding(50, 8), LSTM(4), Dense(1, activation="sigmoid")])
        model.compile(loss="binary_crossentropy", optimizer=SGD(learning_rate=0.5), metrics=["accuracy"])
        models.append(model)
    models[1].set_weights(models[0].get_weights())
    return models[0], models[1]


def test_on_batch_methods_take_the_paths_of_fit_evaluate_and_predict() -> None:
    stepped, fitted = _twin_models()
    assert stepped.metrics_names == ["loss", "accuracy"]
    assert Sequential([Dense(1)]).metrics_names == []
    loss, acc = stepped.test_on_batch(X, Y)
    assert np.allclose([loss, acc], stepped.evaluate(X, Y, batch_size=len(X), verbose=0))
    logs = stepped.test_on_batch(X, Y, sample_weight=np.arange(40.0), return_dict=True)
    assert list(logs) == stepped.metrics_names
    assert np.isclose(logs["loss"], stepped.evaluate(X, Y, sample_weight=np.arange(40.0), verbose=0)[0])
    np.testing.assert_allclose(stepped.predict_on_batch(X), stepped.predict(X, batch_size=7, verbose=0), rtol=1e-6)
    # one train_on_batch = one fit epoch over the same single batch: same loss, metrics and weights
    before = stepped.get_weights()
    train_loss, train_acc = stepped.train_on_batch(X, Y)
    history = fitted.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    assert np.isclose(train_loss, history.history["loss"][0]) and np.isclose(train_acc, history.history["accuracy"][0])
    for a, b in zip(stepped.get_weights(), fitted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, c) for a, c in zip(stepped.get_weights(), before))
    assert stepped.optimizer.iterations == 1
    assert stepped.train_on_batch(X, Y, return_dict=True)["loss"] < train_loss
    assert stepped.optimizer.iterations == 2 and not stepped.training  # back in inference mode, as before
    plain = Sequential([Embedding(50, 8), LSTM(4), Dense(1, activation="sigmoid")])
    plain.compile(loss="binary_crossentropy", optimizer="adam")
    assert isinstance(plain.train_on_batch(X, Y), float) and plain.input_shape == (None, 8)  # built from the batch
    assert "needs targets" in one_line_error(lambda: plain.train_on_batch(X))
    assert "compiled first" in one_line_error(lambda: Sequential([Dense(1)]).test_on_batch(X, Y))


def test_on_batch_methods_keep_the_state_of_stateful_models() -> None:
    model = Sequential([Input(batch_shape=(4, 5, 3)), LSTM(4, stateful=True), Dense(1)])
    model.compile("sgd", "mse")
    x, y = RNG.random((4, 5, 3)).astype("float32"), np.zeros((4, 1), "float32")
    first, second = model.test_on_batch(x, y), model.test_on_batch(x, y)
    model.reset_states()
    assert first != second and np.isclose(model.test_on_batch(x, y), first)


def test_metrics_names_and_shapes_of_a_functional_model() -> None:
    ids, extra = Input(shape=(None,), dtype="int64", name="ids"), Input(shape=(3,), name="extra")
    h = LSTM(4)(Embedding(50, 8, mask_zero=True)(ids))
    a = Dense(2, activation="softmax", name="a")(h)
    b = Dense(1, name="b")(Concatenate()([h, extra]))
    model = Model([ids, extra], [a, b])
    model.compile("adam", loss=["sparse_categorical_crossentropy", "mse"], metrics={"a": ["accuracy"], "b": ["mae"]})
    assert model.metrics_names == ["loss", "a_loss", "b_loss", "a_accuracy", "b_mae"]
    xs, ys = [X, RNG.normal(size=(40, 3))], [Y, RNG.normal(size=(40, 1))]
    assert list(model.evaluate(xs, ys, verbose=0, return_dict=True)) == model.metrics_names
    assert len(model.train_on_batch(xs, ys)) == len(model.test_on_batch(xs, ys)) == 5
    assert [p.shape for p in model.predict_on_batch(xs)] == [(40, 2), (40, 1)]
    assert model.input_shape == [(None, None), (None, 3)] and model.output_shape == [(None, 2), (None, 1)]


def test_input_and_output_shapes_follow_keras() -> None:
    model = Sequential([Embedding(50, 8, input_length=8), LSTM(4, return_sequences=True), Dense(3)])
    assert model.input_shape == (None, 8) and model.output_shape == (None, 8, 3)
    lazy = Sequential([Embedding(50, 8), LSTM(4)])
    assert "its input shape is unknown" in one_line_error(lambda: lazy.input_shape)
    assert "its output shape is unknown" in one_line_error(lambda: lazy.output_shape)
    lazy.build((None, None))
    assert lazy.input_shape == (None, None) and lazy.output_shape == (None, 4)
    outer = Sequential([Input(shape=(6,), dtype="int64"), lazy, Dense(2)])
    assert outer.output_shape == (None, 2) and outer.layers[0].output_shape == (None, 4)

    class Custom(Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = Dense(2)

        def call(self, inputs: Any, mask: Any = None, **kwargs: Any) -> Any:
            return self.dense(inputs)

    assert "subclassed model" in one_line_error(lambda: Custom().input_shape)
    assert "subclassed model" in one_line_error(lambda: Custom().output_shape)


def test_corrupt_or_incomplete_saves_give_one_line_errors(tmp_path: Path) -> None:
    model = imdb_model()
    model.build((None, 8))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage" * 10)
    msg = one_line_error(lambda: load_model(bad))
    assert str(bad) in msg and "damaged" in msg
    assert "damaged" in one_line_error(lambda: model.load_weights(bad))
    folder = tmp_path / "saved"
    model.save(folder)
    (folder / "config.json").write_text("{not json")
    assert "config.json" in one_line_error(lambda: load_model(folder))
    model.save(folder)
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[:200])
    assert "model.safetensors" in one_line_error(lambda: load_model(folder))
    os.remove(folder / "model.safetensors")
    msg = one_line_error(lambda: load_model(folder), FileNotFoundError)
    assert "model.safetensors is missing" in msg


def test_unwritable_save_path_gives_one_line_error(tmp_path: Path) -> None:
    model = imdb_model()
    model.build((None, 8))
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    for call in (lambda: model.save(blocker / "model.keras"),
                 lambda: model.save(blocker / "model.safetensors"),
                 lambda: model.save_weights(blocker / "w.safetensors")):
        msg = one_line_error(call, OSError)
        assert msg.startswith(f"cannot write {blocker}") and "writable" in msg


def test_saved_files_get_normal_permissions(tmp_path: Path) -> None:
    model = imdb_model()
    model.build((None, 8))
    old = os.umask(0o022)
    try:
        model.save(tmp_path / "folder")
        model.save(tmp_path / "one.safetensors")
        model.save_weights(tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    for path in (tmp_path / "folder" / "model.safetensors", tmp_path / "folder" / "config.json",
                 tmp_path / "one.safetensors", tmp_path / "w.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_frozen_pretrained_embedding_stays_fixed(tmp_path: Path) -> None:
    vectors = RNG.normal(size=(50, 8)).astype("float32")
    model = Sequential([Embedding(50, 8, weights=[vectors], trainable=False), LSTM(4), Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(X, Y, epochs=2, verbose=0)
    np.testing.assert_array_equal(model.layers[0].get_weights()[0], vectors)
    model.save(tmp_path / "frozen")
    assert not load_model(tmp_path / "frozen").layers[0].weight.requires_grad
    msg = one_line_error(lambda: Embedding(50, 8, weights=[vectors[:10]]))
    assert "[50, 8]" in msg and "[10, 8]" in msg


def test_progress_bar_counts_epochs_like_keras() -> None:
    pytest.importorskip("rich")
    from rnnkit.training.engine import _keras_progress_bar

    (bar,) = _keras_progress_bar([], 5, 3, verbose_level=1)
    assert bar._get_train_description(0).strip() == "Epoch 4/5"
    assert bar._get_train_description(1).strip() == "Epoch 5/5"
    assert _keras_progress_bar([], 5, 0, verbose_level=2) == []
