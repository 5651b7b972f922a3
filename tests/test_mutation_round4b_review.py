"""Mutation testing, round 4 (second pass): the survivors of the mutants round 4 had not run.

Each test compares rnnkit with an independent reference: the same Keras 3 model with copied
weights, or a hand computation from the model's own predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from models.keras_reference import keras_module, needs_keras  # tests/ is on sys.path (rootdir conftest)
from rnnkit.layers import Dense, Embedding, Input
from rnnkit.models import Model, Sequential
from rnnkit.training import SGD, SparseCategoricalCrossentropy

# -- the training step: an output mask and ignore_class together ----------------------------------

IDS = np.array([[3, 1, 2, 0, 0], [2, 2, 4, 1, 0], [1, 3, 0, 0, 0]])  # 0 = padding (mask_zero)
LABELS = np.array([[1, 0, 2, 2, 0], [0, 1, 1, 2, 1], [2, 1, 1, 0, 0]])  # 1 = ignored class


@needs_keras
def test_padding_mask_and_ignore_class_both_drop_positions_like_keras() -> None:
    # Keras 3 ANDs the output mask with the ignore_class mask and averages over what is left; a
    # step counts only when it is real (id != 0) and its label is not the ignored class
    keras = keras_module()
    ours = Sequential([Input(shape=(5,), dtype="int64"), Embedding(5, 4, mask_zero=True),
                       Dense(3, activation="softmax")])
    ours.compile(SGD(learning_rate=0.0), SparseCategoricalCrossentropy(ignore_class=1))
    ref = keras.Sequential([keras.Input(shape=(5,), dtype="int32"), keras.layers.Embedding(5, 4, mask_zero=True),
                            keras.layers.Dense(3, activation="softmax")])
    ref.compile(keras.optimizers.SGD(learning_rate=0.0), keras.losses.SparseCategoricalCrossentropy(ignore_class=1))
    ours.set_weights(ref.get_weights())
    got = ours.evaluate(IDS, LABELS, batch_size=3, verbose=0)
    expected = ref.evaluate(IDS, LABELS, batch_size=3, verbose=0)
    got = got[0] if isinstance(got, list) else got
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    # hand computation from the predictions: the cross-entropy averaged over the kept steps only
    p = np.asarray(ours.predict(IDS, verbose=0))
    keep = (IDS != 0) & (LABELS != 1)
    ce = -np.log(np.take_along_axis(p, LABELS[..., None], -1)[..., 0])
    assert float(got) == pytest.approx(float(ce[keep].mean()), rel=1e-5)


# -- compile: a metrics list with one entry per output, some of them lists -------------------------


@needs_keras
@pytest.mark.parametrize("metrics", [[["accuracy"], "mae"], ["accuracy", ["mae", "mse"]]])
def test_metrics_list_with_some_lists_is_per_output_like_keras(metrics: list) -> None:
    # Keras 3 reads a list with one entry per output as per-output metrics, an entry being one
    # metric or a list of them; rnnkit reads it so once any entry is a list
    keras = keras_module()
    rng = np.random.default_rng(8)
    x = rng.normal(size=(10, 4)).astype("float32")
    y_cls, y_reg = rng.integers(0, 3, 10), rng.normal(size=(10, 1)).astype("float32")
    inp = Input(shape=(4,), name="x")
    ours = Model(inp, [Dense(3, activation="softmax", name="cls")(inp), Dense(1, name="reg")(inp)])
    ours.compile(SGD(learning_rate=0.0), ["sparse_categorical_crossentropy", "mse"], metrics=metrics)
    k_in = keras.Input(shape=(4,), name="x")
    ref = keras.Model(k_in, [keras.layers.Dense(3, activation="softmax", name="cls")(k_in),
                             keras.layers.Dense(1, name="reg")(k_in)])
    ref.compile(keras.optimizers.SGD(learning_rate=0.0), ["sparse_categorical_crossentropy", "mse"], metrics=metrics)
    ours.set_weights(ref.get_weights())
    got = ours.evaluate(x, [y_cls, y_reg], batch_size=10, verbose=0, return_dict=True)
    expected = ref.evaluate(x, [y_cls, y_reg], batch_size=10, verbose=0, return_dict=True)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(float(value), rel=1e-5), key


# -- fit's data handling: a Dataset is shuffled by fit's seed --------------------------------------


class _RecordingDataset(Dataset):
    """Twelve samples; remembers the order ``fit`` reads them in."""

    def __init__(self) -> None:
        self.x = torch.arange(12, dtype=torch.float32)[:, None].repeat(1, 3)
        self.y = torch.zeros(12, 1)
        self.seen: list[int] = []

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(int(i))
        return self.x[i], self.y[i]


def _dataset_order(seed: int) -> list[list[int]]:
    data = _RecordingDataset()
    model = Sequential([Input(shape=(3,)), Dense(1)])
    model.compile(SGD(learning_rate=0.0), "mse")
    model.fit(data, batch_size=4, epochs=2, shuffle=True, seed=seed, verbose=0)
    epochs = data.seen[-24:]  # the reads of the two epochs (a first batch may be read once before)
    return [epochs[:12], epochs[12:]]


def test_a_dataset_is_shuffled_by_the_seed_given_to_fit() -> None:
    # fit(seed=...) fixes the shuffling order "per epoch" for a Dataset as for arrays: the same
    # seed repeats it, another seed gives another order, and each epoch reads every sample once
    first, again, other = _dataset_order(1), _dataset_order(1), _dataset_order(2)
    for epoch in (*first, *other):
        assert sorted(epoch) == list(range(12))
    assert first == again
    assert first[0] != first[1]
    assert first != other
