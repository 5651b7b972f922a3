"""Branches of the Keras-style training pieces the rest of the suite never runs, checked against
Keras 3 (torch backend) where Keras has the same piece, else against a hand computation."""

from __future__ import annotations

import csv
import math
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from rnnkit.data.keras_utils import timeseries_dataset_from_array
from rnnkit.layers import Dense, Input
from rnnkit.layers import activations as A
from rnnkit.layers import initializers as I
from rnnkit.metrics import BoundMetric, CustomMetric, Metric, get_metric, prepare_for_metric
from rnnkit.models import Sequential
from rnnkit.training import SGD
from rnnkit.training import callbacks as C
from rnnkit.training import losses as L
from rnnkit.training.data import (
    ArrayData,
    InputDataError,
    Ragged,
    SampleCollate,
    array_data,
    canonical_batch,
    first_batch,
    make_loader,
    to_column,
)

from .keras_reference import keras_module, needs_keras

pytestmark = needs_keras


# ---------------------------------------------------------------------------------------------
# helpers


def rnn_model(lr: float = 0.1, units: int = 1, features: int = 1, loss: Any = "mse", **compile_kw: Any) -> Sequential:
    model = Sequential([Input(shape=(features,)), Dense(units)])
    model.compile(SGD(learning_rate=lr), loss, **compile_kw)
    return model


def keras_model(lr: float = 0.1) -> Any:
    keras = keras_module()
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(learning_rate=lr), "mse")
    return model


def drive(cb: Any, model: Any, values: list[float], key: str = "val_loss") -> list[tuple[float, bool, Any]]:
    """Run a callback through epochs whose logs hold ``values`` under ``key``."""
    cb.set_model(model)
    model.stop_training = False
    cb.on_train_begin({})
    out = []
    for epoch, value in enumerate(values):
        cb.on_epoch_begin(epoch, {})
        logs: dict[str, Any] = {"loss": 1.0, key: value}
        cb.on_epoch_end(epoch, logs)
        out.append((float(model.optimizer.learning_rate), bool(model.stop_training), logs.get("learning_rate")))
        if model.stop_training:
            break
    cb.on_train_end({})
    return out


SEQUENCES = [
    [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    [1.0, 1.00005, 0.99995, 0.9999, 1.2, 1.3, 1.4, 1.5],
    [0.5, 0.6, 0.7, 0.4, 0.3, 0.35, 0.36, 0.37, 0.38],
]


# ---------------------------------------------------------------------------------------------
# callbacks


@pytest.mark.parametrize("kwargs", [
    {"patience": 2}, {"patience": 1, "cooldown": 2}, {"patience": 1, "min_lr": 0.003}, {"patience": 2, "mode": "max"},
    {"patience": 1, "min_delta": 0.2, "factor": 0.5}, {"patience": 0, "mode": "min"},
])
def test_reduce_lr_on_plateau_follows_keras(kwargs: dict[str, Any]) -> None:
    keras = keras_module()
    for seq in SEQUENCES:
        ours = drive(C.ReduceLROnPlateau(**kwargs), rnn_model(0.1), seq)
        theirs = drive(keras.callbacks.ReduceLROnPlateau(**kwargs), keras_model(0.1), seq)
        np.testing.assert_allclose([o[0] for o in ours], [t[0] for t in theirs], rtol=1e-6)
        np.testing.assert_allclose([o[2] for o in ours], [t[2] for t in theirs], rtol=1e-6)


def test_reduce_lr_on_plateau_verbose_missing_key_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    drive(C.ReduceLROnPlateau(patience=0, verbose=1), rnn_model(0.1), [1.0, 2.0])
    assert "reducing learning rate to 0.01" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="val_acc"):
        drive(C.ReduceLROnPlateau(monitor="val_acc"), rnn_model(0.1), [1.0])
    with pytest.raises(ValueError, match="factor"):
        C.ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        C.ReduceLROnPlateau(mode="maximum")
    cb = C.ReduceLROnPlateau()
    cb.set_model(types.SimpleNamespace(optimizer=None))
    with pytest.raises(ValueError, match="compiled model"):
        cb.on_epoch_end(0, {"val_loss": 1.0})


@pytest.mark.parametrize("kwargs", [
    {"patience": 2}, {"patience": 0}, {"patience": 2, "baseline": 0.6}, {"patience": 1, "min_delta": 0.05},
    {"patience": 2, "start_from_epoch": 3}, {"patience": 1, "mode": "max"},
    {"patience": 3, "baseline": 0.95, "min_delta": 0.01}, {"patience": 2, "restore_best_weights": True},
])
def test_early_stopping_follows_keras(kwargs: dict[str, Any]) -> None:
    keras = keras_module()
    for seq in SEQUENCES:
        ours_cb, theirs_cb = C.EarlyStopping(**kwargs), keras.callbacks.EarlyStopping(**kwargs)
        ours = drive(ours_cb, rnn_model(), seq)
        theirs = drive(theirs_cb, keras_model(), seq)
        assert [o[1] for o in ours] == [t[1] for t in theirs]
        assert (ours_cb.stopped_epoch, ours_cb.best_epoch) == (theirs_cb.stopped_epoch, theirs_cb.best_epoch)


def test_early_stopping_verbose_restores_the_best_epochs_weights(capsys: pytest.CaptureFixture[str]) -> None:
    model = rnn_model()
    cb = C.EarlyStopping(patience=1, restore_best_weights=True, verbose=1)
    cb.set_model(model)
    cb.on_train_begin({})
    kept: list[torch.Tensor] = []
    for epoch, value in enumerate([1.0, 0.5, 0.7, 0.8]):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(epoch))
        kept.append(next(model.parameters()).detach().clone())
        cb.on_epoch_end(epoch, {"val_loss": value})
        if model.stop_training:
            break
    cb.on_train_end({})
    out = capsys.readouterr().out
    assert "Epoch 3: early stopping" in out  # Keras' words and 1-based numbers
    assert "Restoring model weights from the end of the best epoch: 2." in out
    torch.testing.assert_close(next(model.parameters()).detach(), kept[1])


def linear_xy(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1)).astype("float32")
    return x, 2 * x


def test_model_checkpoint_batch_saves_fill_the_batch_field_like_keras(tmp_path: Path) -> None:
    keras = keras_module()
    x, y = linear_xy()
    (tmp_path / "k").mkdir()
    keras_model().fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, callbacks=[keras.callbacks.ModelCheckpoint(
        str(tmp_path / "k" / "w-{epoch}-{batch}.weights.h5"), save_weights_only=True, save_freq=2)])
    cb = C.ModelCheckpoint(tmp_path / "r" / "w-{epoch}-{batch}.weights.h5", save_weights_only=True, save_freq=2)
    rnn_model().fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, callbacks=[cb])
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(p.name for p in (tmp_path / "k").iterdir())


def test_model_checkpoint_without_the_monitored_value_saves_like_keras(tmp_path: Path) -> None:
    keras = keras_module()
    x, y = linear_xy()
    (tmp_path / "k").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keras_model().fit(x, y, epochs=2, verbose=0, callbacks=[keras.callbacks.ModelCheckpoint(
            str(tmp_path / "k" / "m-{epoch}.weights.h5"), save_best_only=True, save_weights_only=True)])
    with pytest.warns(UserWarning, match="val_loss"):
        rnn_model().fit(x, y, epochs=2, verbose=0, callbacks=[C.ModelCheckpoint(
            tmp_path / "r" / "m-{epoch}.weights.h5", save_best_only=True, save_weights_only=True)])
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(p.name for p in (tmp_path / "k").iterdir())


def test_model_checkpoint_threshold_mode_verbose_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = rnn_model()
    cb = C.ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_acc", mode="max", save_best_only=True,
                           save_weights_only=True, verbose=1, initial_value_threshold=0.5)
    cb.set_model(model)
    for epoch, acc in enumerate([0.4, 0.6, 0.55, 0.7]):
        cb.on_epoch_begin(epoch, {})
        cb.on_epoch_end(epoch, {"val_acc": acc})
    assert len(cb.saved) == 2 and cb.best == 0.7  # 0.4 does not beat the threshold, 0.55 not the best
    out = capsys.readouterr().out
    assert "Epoch 2: val_acc improved from 0.50000 to 0.60000" in out
    assert "Epoch 3: val_acc did not improve from 0.60000" in out
    assert f"Epoch 4: saving model to {tmp_path / 'best.safetensors'}" in out
    with pytest.raises(ValueError, match="save_freq"):
        C.ModelCheckpoint(tmp_path / "x", save_freq=0)
    bad = C.ModelCheckpoint(tmp_path / "m-{val_loss:.2f}.safetensors", save_weights_only=True)
    bad.set_model(model)
    with pytest.raises(KeyError, match="val_loss"):
        bad.on_epoch_end(0, {"loss": 1.0})


def test_learning_rate_scheduler_follows_keras_and_refuses_bad_rates(capsys: pytest.CaptureFixture[str]) -> None:
    keras = keras_module()
    for schedule in (lambda epoch, lr: lr * 0.5 if epoch % 2 else lr, lambda epoch: 0.1 / (epoch + 1)):
        ours = drive(C.LearningRateScheduler(schedule, verbose=1), rnn_model(0.2), [1.0] * 4)
        theirs = drive(keras.callbacks.LearningRateScheduler(schedule), keras_model(0.2), [1.0] * 4)
        np.testing.assert_allclose([o[2] for o in ours], [t[2] for t in theirs], rtol=1e-6)
    assert "Epoch 4: LearningRateScheduler setting learning rate to 0.025." in capsys.readouterr().out
    with pytest.raises(ValueError, match="nan"):
        drive(C.LearningRateScheduler(lambda epoch, lr: float("nan")), rnn_model(), [1.0])
    # Keras: "The output of the `schedule` function should be a float"; before, the None was
    # reported as a call of the one-argument form ("missing 1 required positional argument")
    with pytest.raises(ValueError, match="must return a float learning rate, got None"):
        drive(C.LearningRateScheduler(lambda epoch, lr: None), rnn_model(), [1.0])  # type: ignore[arg-type,return-value]


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_logger_keeps_validation_columns_when_the_first_epoch_has_none_like_keras(tmp_path: Path) -> None:
    keras = keras_module()
    epochs = [{"loss": 1.0}, {"loss": 0.5, "val_loss": 0.75}, {"loss": 0.25}]
    for cb in (keras.callbacks.CSVLogger(str(tmp_path / "k.csv"), append=True),
               C.CSVLogger(tmp_path / "r.csv", append=True)):
        for _ in range(2):  # the second run appends without a second header
            cb.on_train_begin({})
            for epoch, logs in enumerate(epochs):
                cb.on_epoch_end(epoch, dict(logs))
            cb.on_train_end({})
    theirs, ours = _csv_rows(tmp_path / "k.csv"), _csv_rows(tmp_path / "r.csv")
    assert ours[0] == theirs[0] == ["epoch", "loss", "val_loss"]
    assert [[float(v) if v != "NA" else v for v in row] for row in ours[1:]] == \
        [[float(v) if v != "NA" else v for v in row] for row in theirs[1:]]


def test_terminate_on_nan_raise_error_like_keras(capsys: pytest.CaptureFixture[str]) -> None:
    keras = keras_module()
    with pytest.raises(RuntimeError, match="NaN or Inf loss"):
        keras.callbacks.TerminateOnNaN(raise_error=True).on_batch_end(3, {"loss": float("inf")})
    cb = C.TerminateOnNaN(raise_error=True)
    cb.set_model(rnn_model())
    cb.on_train_batch_end(2, {"loss": 1.0})
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 3"):
        cb.on_train_batch_end(3, {"loss": float("inf")})
    model = rnn_model()
    cb = C.TerminateOnNaN()
    cb.set_model(model)
    model.stop_training = False
    cb.on_train_batch_end(5, {"loss": float("nan")})
    assert model.stop_training and "Batch 5" in capsys.readouterr().out


def test_tensorboard_writes_through_summary_writer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    written: list[tuple[str, str, float, int]] = []

    class FakeWriter:
        def __init__(self, log_dir: str) -> None:
            self.log_dir, self.closed = log_dir, False

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            written.append((Path(self.log_dir).name, tag, value, step))

        def flush(self) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    monkeypatch.setattr(C.importlib.util, "find_spec", lambda name: object())
    tb = C.TensorBoard(tmp_path, update_freq=2)
    assert tb.wants_batch_logs()
    for batch in range(4):
        tb.on_train_batch_end(batch, {"loss": float(batch)})
    tb.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.25})
    tb.on_train_end({})
    assert written == [("train", "batch_loss", 1.0, 2), ("train", "batch_loss", 3.0, 4),
                       ("train", "epoch_loss", 0.5, 0), ("validation", "epoch_loss", 0.25, 0)]
    assert not C.TensorBoard(tmp_path).wants_batch_logs()


def test_callback_list_dispatches_only_hooks() -> None:
    cbs = C.CallbackList([C.History()], model=None, params={})
    cbs.on_epoch_end(0, {"loss": 1.0})
    assert cbs.callbacks[0].history == {"loss": [1.0]}  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        cbs.not_a_hook  # noqa: B018


# ---------------------------------------------------------------------------------------------
# data


@pytest.mark.parametrize(("n", "fraction"), [(10, 0.25), (20, 0.01), (7, 0.5), (50, 0.2), (3, 0.9)])
def test_validation_split_sizes_follow_keras(n: int, fraction: float) -> None:
    from keras.src.trainers.data_adapters.array_slicing import train_validation_split

    keras_module()
    x = np.arange(n, dtype="float32").reshape(n, 1)
    try:
        k_train, k_val = train_validation_split((x,), fraction)
    except ValueError:
        with pytest.raises(InputDataError, match="empty"):
            ArrayData([torch.from_numpy(x)]).split(fraction)
        return
    train, val = ArrayData([torch.from_numpy(x)]).split(fraction)
    np.testing.assert_array_equal(train.x[0].numpy(), np.asarray(k_train[0]))  # type: ignore[union-attr]
    np.testing.assert_array_equal(val.x[0].numpy(), np.asarray(k_val[0]))  # type: ignore[union-attr]
    assert len(train) + len(val) == n


def test_validation_split_in_fit_holds_out_keras_count() -> None:
    x = np.arange(10, dtype="float32").reshape(10, 1)
    y = np.zeros((10, 1), dtype="float32")
    y[7:] = 1.0  # Keras holds out floor-complement: the last 3 of 10 for 0.25
    model = Sequential([Input(shape=(1,)), Dense(1, kernel_initializer="zeros")])
    model.compile(SGD(learning_rate=0.0), "mse")
    history = model.fit(x, y, validation_split=0.25, epochs=1, batch_size=10, verbose=0)
    assert history.history["loss"][0] == pytest.approx(0.0)
    assert history.history["val_loss"][0] == pytest.approx(1.0)
    with pytest.raises(InputDataError, match=r"\(0, 1\)"):
        ArrayData([torch.zeros(4, 1)]).split(1.0)


def test_to_column_accepts_keras_inputs_and_refuses_others_in_one_line() -> None:
    import pandas as pd

    col = to_column(pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}), "x")
    assert isinstance(col, torch.Tensor) and col.dtype == torch.float32 and col.shape == (2, 2)
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = [1, 2, 3], [4]
    ragged = to_column(obj, "x")
    assert isinstance(ragged, Ragged) and [t.tolist() for t in ragged] == [[1, 2, 3], [4]]
    ragged = to_column([np.zeros((2, 3)), np.ones((1, 3), dtype="float64")], "x")
    assert isinstance(ragged, Ragged) and ragged[1].dtype == torch.float32
    scalars = to_column([np.array(1.5), np.array([2, 3])], "x")  # a 0-d item is a sequence of one step
    assert isinstance(scalars, Ragged) and [t.tolist() for t in scalars] == [[1.5], [2.0, 3.0]]
    mixed = to_column([[1, 2], [3]], "x")
    assert isinstance(mixed, Ragged) and [t.tolist() for t in mixed] == [[1, 2], [3]]
    refusals = [
        (np.array([1 + 2j]), "complex"),
        (3.0, "single number"),
        ({1, 2}, "got set"),
        ([[[1], [2, 3]], [[1]]], "itself ragged"),
        ([np.zeros((2, 3)), np.zeros((2, 4))], "feature shape"),
        ((i for i in range(3)), "generator of batches"),
    ]
    for value, message in refusals:
        with pytest.raises(InputDataError, match=message) as info:
            to_column(value, "x")
        assert "\n" not in str(info.value)


def test_generators_and_keras_py_datasets_are_refused_with_a_way_out() -> None:
    keras = keras_module()
    x, y = linear_xy(8)

    class Batches(keras.utils.PyDataset):  # type: ignore[misc,name-defined]
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            return x[4 * i: 4 * i + 4], y[4 * i: 4 * i + 4]

    def batches() -> Any:
        while True:
            yield x, y

    for data in (batches(), Batches()):
        with pytest.raises(InputDataError, match=r"PyDataset too: DataLoader\(py_dataset, batch_size=None\)"):
            rnn_model().fit(data, epochs=1, verbose=0)
    model = rnn_model(0.0)  # the way out the message names works, and sees every sample
    history = model.fit(DataLoader(Batches(), batch_size=None), epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(float(np.mean((model.predict(x, verbose=0) - y) ** 2)), rel=1e-5)


def test_sample_weight_and_class_weight_losses_match_keras() -> None:
    keras = keras_module()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 3)).astype("float32")
    y = rng.integers(0, 3, size=12)
    sw = rng.uniform(0.2, 2.0, size=12).astype("float32")
    cw = {0: 1.0, 1: 3.0, 2: 0.5}
    kernel = rng.normal(size=(3, 3)).astype("float32")
    k = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, activation="softmax")])
    k.compile(keras.optimizers.SGD(learning_rate=0.0), "sparse_categorical_crossentropy")
    k.layers[0].set_weights([kernel, np.zeros(3, "float32")])
    r = Sequential([Input(shape=(3,)), Dense(3, activation="softmax")])
    r.compile(SGD(learning_rate=0.0), "sparse_categorical_crossentropy")
    with torch.no_grad():
        r.layers[-1].weight.copy_(torch.from_numpy(kernel.T))
        r.layers[-1].bias.zero_()
    both = sw * np.array([cw[int(c)] for c in y], dtype="float32")
    for kw, keras_kw in (({"sample_weight": sw}, {"sample_weight": sw}), ({"class_weight": cw}, {"class_weight": cw}),
                         # Keras refuses the two together; rnnkit multiplies them (docs/models.md)
                         ({"sample_weight": sw, "class_weight": cw}, {"sample_weight": both})):
        theirs = k.fit(x, y, batch_size=12, epochs=1, verbose=0, shuffle=False, **keras_kw).history["loss"][0]
        ours = r.fit(x, y, batch_size=12, epochs=1, verbose=0, shuffle=False, **kw).history["loss"][0]
        assert ours == pytest.approx(theirs, rel=1e-5), kw


class Items(Dataset):  # type: ignore[type-arg]
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


def test_dataset_items_as_lists_with_weights_and_plain_numbers() -> None:
    batch = SampleCollate()([[np.array([1.0, 2.0]), 1, 0.5], [np.array([3.0, 4.0]), 0, 2.0]])
    torch.testing.assert_close(batch["x"][0], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert batch["y"][0].tolist() == [1, 0] and batch["sw"].tolist() == [0.5, 2.0]
    # a list of token ids is one ragged input (it was read as three inputs, one per id)
    padded = SampleCollate()([([1, 2, 3], 1), ([4], 0)])
    assert padded["x"][0].tolist() == [[1, 2, 3], [4, 0, 0]] and padded["mask"][0].tolist() == [[True] * 3,
                                                                                               [True, False, False]]
    with pytest.raises(InputDataError, match="neither stack nor pad"):
        SampleCollate()([(np.zeros((2, 3)), 1), (np.zeros((2, 4)), 0)])
    with pytest.raises(InputDataError, match="single array per input"):
        SampleCollate()([(np.array([[1], [2, 3]], dtype=object), 1), (np.array([[1]]), 0)])
    loader = make_loader(Items([(np.array([1.0]), 1.0)] * 3), batch_size=2, shuffle=False, seed=0)
    assert len(loader) == 2
    with pytest.raises(InputDataError, match="empty"):
        make_loader(Items([]), batch_size=2, shuffle=False, seed=0)
    with pytest.raises(InputDataError, match="no batches"):
        first_batch(DataLoader(Items([]), batch_size=None))


def test_loader_batches_of_other_forms() -> None:
    out = canonical_batch(torch.ones(2, 3), ["a"], ["o"])
    assert out["y"] is None and out["x"][0].shape == (2, 3)
    out = canonical_batch(({"a": torch.ones(2, 1), "b": torch.zeros(2, 1)}, [1, 0]), ["a", "b"], ["o"])
    assert out["x"][1].sum() == 0 and out["y"][0].tolist() == [1, 0]
    with pytest.raises(InputDataError, match=r"without the key\(s\) \['b'\]"):
        canonical_batch(({"a": torch.ones(2, 1)},), ["a", "b"], ["o"])
    with pytest.raises(InputDataError, match="2 inputs"):
        canonical_batch((torch.ones(2, 1),), ["a", "b"], ["o"])
    with pytest.raises(InputDataError, match="got str"):
        canonical_batch("batch", ["a"], ["o"])


def test_array_data_checks() -> None:
    with pytest.raises(InputDataError, match="x is None"):
        array_data(None, None, None, ["a"], ["o"])
    with pytest.raises(InputDataError, match=">= 0"):
        array_data(np.ones((2, 1)), np.ones((2, 1)), np.array([1.0, -1.0]), ["a"], ["o"])
    data = array_data([[1, 2], [3]], [[1, 0], [1]], [[1.0, 2.0], [3.0]], ["a"], ["o"])
    assert len(data) == 2 and data.sample_weight is not None
    assert data.sample_weight.tolist() == [[1.0, 2.0], [3.0, 0.0]]  # ragged weights padded with zeros


# ---------------------------------------------------------------------------------------------
# losses


def _loss_cases() -> list[tuple[str, dict[str, Any], str, Any]]:
    return [
        ("CategoricalCrossentropy", {}, "onehot", None), ("CategoricalCrossentropy", {}, "onehot", "steps"),
        ("CategoricalCrossentropy", {"label_smoothing": 0.2}, "onehot", None),
        ("CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.1}, "onehot", "steps"),
        ("SparseCategoricalCrossentropy", {}, "ids", None), ("SparseCategoricalCrossentropy", {}, "ids1", None),
        ("SparseCategoricalCrossentropy", {"ignore_class": 1}, "ids", "steps"),
        ("SparseCategoricalCrossentropy", {"ignore_class": 2, "from_logits": True}, "ids", None),
        ("BinaryCrossentropy", {}, "binary", None), ("BinaryCrossentropy", {"label_smoothing": 0.3}, "binary", "samples"),
        ("BinaryCrossentropy", {}, "binary_col", None), ("BinaryCrossentropy", {"from_logits": True}, "binary", None),
        ("MeanSquaredError", {}, "regression", None), ("MeanAbsoluteError", {}, "regression", "samples"),
        ("Huber", {"delta": 0.5}, "regression", None), ("Huber", {"delta": 2.0}, "regression_col", None),
    ]


@pytest.mark.parametrize(("cls", "kwargs", "labels", "weights"), _loss_cases())
def test_standalone_losses_match_keras(cls: str, kwargs: dict[str, Any], labels: str, weights: Any) -> None:
    keras = keras_module()
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.05, 1, size=(4, 5, 3)).astype("float32")  # not normalised: both divide by the sum
    ids = rng.integers(0, 3, size=(4, 5))
    if labels in ("onehot", "ids", "ids1"):
        y_pred = probs * 3 if kwargs.get("from_logits") else probs
        y_true: Any = {"onehot": np.eye(3, dtype="float32")[ids], "ids": ids, "ids1": ids[..., None]}[labels]
    elif labels.startswith("binary"):
        y_pred = rng.uniform(0.01, 0.99, size=(6, 4)).astype("float32")
        y_pred = y_pred * 8 - 4 if kwargs.get("from_logits") else y_pred
        y_true = (rng.uniform(size=(6, 4)) > 0.5).astype("float32")
        if labels == "binary_col":
            y_true, y_pred = y_true[:, 0], y_pred[:, :1]
    else:
        y_pred = rng.normal(size=(6, 3)).astype("float32")
        y_true = 2 * rng.normal(size=(6, 3)).astype("float32")
        if labels == "regression_col":
            y_true, y_pred = y_true[:, :1], y_pred[:, 0]
    sw = None
    if weights == "steps":
        sw = rng.uniform(0, 2, size=(4, 5)).astype("float32")
    elif weights == "samples":
        sw = rng.uniform(0, 2, size=(len(y_pred),)).astype("float32")
    theirs = float(getattr(keras.losses, cls)(**kwargs)(y_true, y_pred, sample_weight=sw))
    ours = float(getattr(L, cls)(**kwargs)(y_true, y_pred, sample_weight=sw))
    assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-6)


def test_loss_resolution_and_label_errors() -> None:
    assert repr(L.Huber(delta=0.5)) == "Huber({'name': 'huber', 'delta': 0.5})"
    assert L.get_loss({"class_name": "Huber", "config": {"delta": 0.5}}).delta == 0.5  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown loss class 'Nope'"):
        L.get_loss({"class_name": "Nope"})
    with pytest.raises(TypeError, match="got int"):
        L.get_loss(3)  # type: ignore[arg-type]

    def per_sample(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        return ((y_true - y_pred) ** 2).mean(-1)

    t, p = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[0.0, 2.0], [2.0, 1.0]])
    fn = L.get_loss(per_sample)
    assert fn.name == "per_sample"
    assert float(fn(t, p, sample_weight=torch.tensor([1.0, 3.0]))) == pytest.approx((0.5 + 3 * 2.0) / 2)
    assert float(L.get_loss(lambda a, b: ((a - b) ** 2).mean())(t, p)) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="cannot be saved"):
        fn.get_config()
    with pytest.raises(NotImplementedError):
        L.Loss()(t, p)
    probs = torch.full((2, 5, 3), 1 / 3)
    for loss, y_true, message in [
        (L.CategoricalCrossentropy(), torch.zeros(2, 5, 2), r"one-hot over 3 classes"),
        (L.SparseCategoricalCrossentropy(), torch.zeros(2, 2, dtype=torch.long), r"class ids of shape \[B, 5\]"),
        (L.SparseCategoricalCrossentropy(), torch.full((2, 5), 0.5), "fractional"),
        (L.BinaryCrossentropy(), torch.zeros(2, 2), r"labels of shape \[B, 5, 3\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            loss(y_true, probs)


# ---------------------------------------------------------------------------------------------
# metrics


def test_torchmetrics_objects_as_metrics_in_fit() -> None:
    from torchmetrics.classification import MulticlassAccuracy
    from torchmetrics.regression import MeanAbsoluteError

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3)).astype("float32")
    y = rng.integers(0, 3, size=20)
    model = rnn_model(0.0, units=3, features=3, loss=L.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[MulticlassAccuracy(num_classes=3, average="micro")])
    history = model.fit(x, y, epochs=1, batch_size=7, verbose=0, shuffle=False)
    pred = model.predict(x, verbose=0).argmax(-1)
    assert history.history["multiclass_accuracy"][0] == pytest.approx(float((pred == y).mean()))
    reg = rnn_model(0.0, loss="mse", metrics=[get_metric(MeanAbsoluteError())])
    x1 = rng.normal(size=(10, 1)).astype("float32")
    history = reg.fit(x1, 3 * x1, epochs=1, batch_size=10, verbose=0)
    assert history.history["mean_absolute_error"][0] == pytest.approx(
        float(np.abs(reg.predict(x1, verbose=0) - 3 * x1).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="custom object"):
        CustomMetric(MeanAbsoluteError()).get_config()


def test_metric_resolution_and_errors() -> None:
    with pytest.raises(TypeError, match="got int"):
        get_metric(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="task must be"):
        Metric("accuracy", task="ranking")
    assert repr(get_metric("f1_macro")) == "Metric('f1_macro', name='f1_macro')"
    assert Metric("rmse").resolve_task(3, "multiclass") == "regression"
    assert Metric("auc").resolve_task(1, None) == "binary" and Metric("auc").resolve_task(4, None) == "multiclass"
    with pytest.raises(ValueError, match="scored as regression"):
        Metric("accuracy", task="regression").bind(1, None)
    with pytest.raises(ValueError, match="for regression outputs"):
        Metric("mae", task="binary").bind(1, None)
    with pytest.raises(ValueError, match="at least 2 classes"):
        Metric("accuracy", task="multiclass").bind(1, None)
    auc = Metric("auc").bind(3, "multiclass")
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])
    auc.update(probs, torch.tensor([0, 1, 2, 1]))
    assert auc.compute() == pytest.approx(1.0)
    two = Metric("precision_macro").bind(1, "binary")  # a binary output scored as two classes
    two.update(torch.tensor([[0.9], [0.2], [0.7], [0.4]]), torch.tensor([[1.0], [0.0], [0.0], [0.0]]))
    assert two.compute() == pytest.approx((0.5 + 1.0) / 2)  # class 1: 1 of 2 right; class 0: 2 of 2


def test_prepare_for_metric_edge_shapes() -> None:
    preds, target = prepare_for_metric("binary", torch.tensor([0.9, 0.2]), torch.tensor([[1.0], [0.0]]), None)
    assert preds.tolist() == pytest.approx([0.9, 0.2]) and target.tolist() == [1, 0]
    preds, target = prepare_for_metric("custom", torch.tensor([[0.2, 0.8], [0.6, 0.4]]), torch.tensor([1, 0]), None)
    assert preds.shape == (2, 2) and target.tolist() == [1, 0]
    bound = BoundMetric("acc", "binary", Metric("accuracy", task="binary")._build("binary", 1))
    bound.update(torch.rand(2, 3, 1), torch.ones(2, 3, 1), torch.zeros(2, 3, dtype=torch.bool))  # all padding
    assert bound.updates == 0 and math.isnan(bound.compute())


# ---------------------------------------------------------------------------------------------
# initializers and activations


@pytest.mark.parametrize("name", ["he_uniform", "lecun_uniform", "truncated_normal", "glorot_uniform", "he_normal",
                                  "lecun_normal", "random_uniform", "random_normal"])
@pytest.mark.parametrize("keras_shape", [(300, 200), (3, 40, 60), (2000,)])
def test_initializer_statistics_match_keras(name: str, keras_shape: tuple[int, ...]) -> None:
    keras = keras_module()
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    theirs = keras.ops.convert_to_numpy(keras.initializers.get(name)(keras_shape))
    torch_shape = keras_shape[::-1]  # Keras [in, out] / [k, in, filters] is torch's [out, in] / [filters, in, k]
    ours = I.get_initializer(name)(torch.empty(torch_shape)).numpy()
    assert ours.std() == pytest.approx(theirs.std(), rel=0.05)
    if "uniform" in name or "truncated" in name:  # bounded: the same bound
        assert np.abs(ours).max() == pytest.approx(np.abs(theirs).max(), rel=0.02)


def test_initializer_and_activation_resolution() -> None:
    t = torch.randn(3, 4)
    assert I.get_initializer("torch_default")(t) is t
    fn = I.get_initializer(I.he_uniform)
    assert fn is I.he_uniform and I.initializer_name(I.he_uniform) == "he_uniform"
    assert I.initializer_name("He_Normal") == "he_normal"
    with pytest.raises(TypeError, match="got int"):
        I.get_initializer(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not registered"):
        I.initializer_name(lambda t: t)
    assert A.get_activation(None) is A.linear and A.activation_name(None) == "linear"
    assert A.activation_name(A.softsign) == "softsign" and A.activation_name("ReLU") == "relu"
    with pytest.raises(TypeError, match="got int"):
        A.get_activation(3)  # type: ignore[arg-type]

    def cube(x: torch.Tensor) -> torch.Tensor:
        return x ** 3

    assert A.get_activation(cube) is cube and A.known_activation_name(cube) == ""
    with pytest.raises(ValueError, match="register_activation"):
        A.activation_name(cube)
    try:
        A.register_activation("cube_review", cube)
        assert A.get_activation("cube_review") is cube and A.activation_name(cube) == "cube_review"
    finally:
        A.ACTIVATIONS.pop("cube_review", None)


@pytest.mark.parametrize("name", sorted(A.ACTIVATIONS))
def test_activations_match_keras(name: str) -> None:
    keras = keras_module()
    x = np.linspace(-6, 6, 101, dtype="float32").reshape(1, -1)
    theirs = keras.ops.convert_to_numpy(keras.activations.get(name)(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(A.get_activation(name)(torch.from_numpy(x)).numpy(), theirs, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# timeseries_dataset_from_array


@pytest.mark.parametrize("kwargs", [
    {"sampling_rate": 10}, {"sequence_stride": 12}, {"start_index": -1}, {"start_index": 10},
    {"start_index": 5, "end_index": 5}, {"end_index": 10}, {"end_index": -2}, {"sampling_rate": 0},
])
def test_timeseries_refuses_what_keras_refuses(kwargs: dict[str, Any]) -> None:
    keras = keras_module()
    data = np.arange(10, dtype="float32")
    with pytest.raises(ValueError):
        keras.utils.timeseries_dataset_from_array(data, None, sequence_length=2, **kwargs)
    with pytest.raises(ValueError):
        timeseries_dataset_from_array(data, None, sequence_length=2, **kwargs)


def test_timeseries_other_arguments_inputs_and_unbatched_shuffle() -> None:
    data = np.arange(20, dtype="float32").reshape(10, 2)
    for kwargs, message in [({"format": "numpy"}, "format"), ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(ValueError, match=message):
            timeseries_dataset_from_array(data, None, sequence_length=2, **kwargs)
    with pytest.raises(ValueError, match="scalar"):
        timeseries_dataset_from_array(np.float32(3.0), None, sequence_length=2)
    with pytest.raises(ValueError, match="<U1"):
        timeseries_dataset_from_array(np.array(list("abcdef")), None, sequence_length=2)
    windows = timeseries_dataset_from_array(torch.from_numpy(data), np.arange(10), sequence_length=3, sampling_rate=2,
                                            batch_size=None, shuffle=True, seed=3)
    first = windows.take(-1)  # type: ignore[union-attr]
    assert len(first) == 10 - 2 * 2 and len(windows.take(2)) == 2  # type: ignore[union-attr]
    starts = sorted(int(t) for _, t in first)
    assert starts == list(range(6))
    for window, target in first:  # window i is rows p, p + 2, p + 4 with target targets[p]
        p = int(target)
        np.testing.assert_array_equal(window.numpy(), data[[p, p + 2, p + 4]])
    again = timeseries_dataset_from_array(data, np.arange(10), sequence_length=3, sampling_rate=2, batch_size=None,
                                          shuffle=True, seed=3)
    assert [int(t) for _, t in again.take(-1)] == [int(t) for _, t in first]  # type: ignore[union-attr]
