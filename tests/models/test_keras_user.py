"""What a Keras 3 user writes first: the classic IMDB LSTM snippet, common variations and mistakes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.layers import LSTM, Dense, Embedding, Input
from rnnkit.models import Sequential, load_model

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
    assert len(model.weights) == 1 + 4 + 2  # embeddings; LSTM w_ih, w_hh, b_ih, b_hh; Dense kernel, bias
    assert all(isinstance(w, torch.nn.Parameter) for w in model.weights)
    assert len(model.trainable_weights) == 6 and len(model.non_trainable_weights) == 1
    assert len(model.layers[1].weights) == 4


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
