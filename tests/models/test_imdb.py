"""End to end on real IMDB reviews: the Keras example, verbatim but for imports and sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .imdb_sample import imdb_sample


@pytest.mark.data
@pytest.mark.slow
def test_keras_example_on_imdb_sample(shared_data: Path) -> None:
    from rnnkit.layers import LSTM, Dense, Embedding
    from rnnkit.models import Sequential, set_random_seed, to_categorical

    X_train, train_labels, X_val, val_labels = imdb_sample(shared_data / "imdb" / "aclImdb_v1_labeled.tar.xz",
                                                           n=2000, max_length=100, vocab_size=10000)
    y_train, y_val = to_categorical(train_labels, 2), to_categorical(val_labels, 2)
    set_random_seed(0)
    # --- the example (units smaller to be quick; two classes for positive/negative) ---
    max_length = 100; vocab_size = 10000; embedding_size = 32; lstm_units = 32; output_units = 2  # noqa: E702
    model = Sequential()
    model.add(Embedding(vocab_size, embedding_size, input_length=max_length))
    model.add(LSTM(lstm_units))
    model.add(Dense(output_units, activation='softmax'))
    model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
    history = model.fit(X_train, y_train, batch_size=64, epochs=10, validation_data=(X_val, y_val))
    # ---
    assert X_train.shape == (1600, max_length) and y_val.shape == (400, 2)
    val_accuracy = history.history["val_accuracy"]
    print("IMDB sample validation accuracy per epoch:", np.round(val_accuracy, 3).tolist())
    assert max(val_accuracy) > 0.72 and val_accuracy[-1] > 0.68  # chance is 0.5
    loss, accuracy = model.evaluate(X_val, y_val, verbose=0)
    assert accuracy == pytest.approx(val_accuracy[-1], abs=1e-6)
