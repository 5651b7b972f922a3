"""Keras calls in the sequences a notebook makes them, compared with Keras 3 (torch backend) where it is installed.

Each test is one short session on one model object: build, compile, fit, then feed the data the way a
notebook has it at hand (integer arrays, pandas frames, a univariate series, ``[x]``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from rnnkit.layers import LSTM, Dense, Embedding, Input
from rnnkit.models import Model, Sequential, set_random_seed

from .keras_reference import keras_module, needs_keras


def _lstm_model() -> Sequential:
    set_random_seed(0)
    model = Sequential([Input(shape=(5, 3)), LSTM(4), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x_int = rng.integers(0, 5, size=(16, 5, 3))
    y = rng.integers(0, 2, size=(16,))
    return x_int, x_int.astype("float32"), y


# -- integer and boolean data for a float model ----------------------------------------------------------------
def test_integer_features_are_cast_to_the_float_input_as_keras_does() -> None:
    # counts or 0/1 flags arrive as int64 arrays; Keras casts them to the Input's float32, rnnkit raised
    # "LSTM expects a floating-point input" (and a bare torch "mat1 and mat2 must have the same dtype" for Dense)
    x_int, x_float, y = _data()
    model = _lstm_model()
    model.fit(x_int, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_allclose(model.predict(x_int, verbose=0), model.predict(x_float, verbose=0), atol=1e-6)
    assert model.evaluate(x_int, y, verbose=0) == model.evaluate(x_float, y, verbose=0)
    model.train_on_batch(x_int, y)
    assert tuple(model(torch.from_numpy(x_int)).shape) == (16, 1)
    assert model.predict(x_int > 2, verbose=0).shape == (16, 1)

    dense = Sequential([Input(shape=(3,)), Dense(2)])
    np.testing.assert_allclose(dense.predict(x_int[:, 0], verbose=0), dense.predict(x_float[:, 0], verbose=0))
    inp = Input(shape=(3,))
    functional = Model(inp, Dense(2)(inp))
    np.testing.assert_allclose(functional.predict(x_int[:, 0], verbose=0),
                               functional.predict(x_float[:, 0], verbose=0))
    layer = Dense(2)  # called directly, as in a subclassed model's call(): torch's "mat1 and mat2 must have the same dtype"
    np.testing.assert_allclose(layer(torch.from_numpy(x_int[:, 0])).detach(), layer(torch.from_numpy(x_float[:, 0])).detach())


def test_a_lazily_built_model_fitted_on_integers_builds_for_floats() -> None:
    x_int, x_float, y = _data()
    model = Sequential([LSTM(4), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x_int, y, epochs=1, batch_size=8, verbose=0)
    assert model.input_spec is not None and model.input_spec[1] == torch.float32
    np.testing.assert_allclose(model.predict(x_int, verbose=0), model.predict(x_float, verbose=0), atol=1e-6)


def test_token_ids_stay_integers_for_an_embedding() -> None:
    ids = np.random.default_rng(1).integers(0, 50, size=(4, 6))
    lazy = Sequential([Embedding(50, 3), LSTM(2)])
    lazy.predict(ids, verbose=0)
    assert lazy.input_spec is not None and lazy.input_spec[1] == torch.int64
    declared = Sequential([Input(shape=(6,)), Embedding(50, 3), LSTM(2)])  # Keras' float32 Input before an Embedding
    declared.set_weights(lazy.get_weights())
    np.testing.assert_allclose(declared.predict(ids, verbose=0), lazy.predict(ids, verbose=0))


@needs_keras
def test_integer_features_match_keras() -> None:
    keras = keras_module()
    x_int, _, _ = _data()
    reference = keras.Sequential([keras.Input(shape=(5, 3)), keras.layers.LSTM(4), keras.layers.Dense(1)])
    model = Sequential([Input(shape=(5, 3)), LSTM(4), Dense(1)])
    model.set_weights(reference.get_weights())
    np.testing.assert_allclose(model.predict(x_int, verbose=0), reference.predict(x_int, verbose=0), atol=1e-5)


# -- pandas -------------------------------------------------------------------------------------------------------
def test_read_only_arrays_train_without_torch_warning() -> None:
    # pandas' to_numpy() under copy-on-write (and np.load(mmap_mode="r")) give read-only arrays: torch warned
    # "The given NumPy array is not writable..." at the first fit of the session
    _, x_float, y = _data()
    x_ro, y_ro = x_float.copy(), y.copy()
    x_ro.setflags(write=False)
    y_ro.setflags(write=False)
    model = _lstm_model()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The given NumPy array is not writable")
        model.fit(x_ro, y_ro, epochs=1, batch_size=8, verbose=0, validation_data=(x_ro, y_ro))
        assert model.predict(x_ro, verbose=0).shape == (16, 1)
        assert tuple(model(x_ro).shape) == (16, 1)
    assert x_ro.tolist() == x_float.tolist()


def test_dataframe_and_series_in_one_session() -> None:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.integers(0, 4, size=(12, 3)), columns=list("abc"))
    target = pd.Series(rng.normal(size=12))
    model = Sequential([Input(shape=(3,)), Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(frame, target, epochs=1, verbose=0, validation_data=(frame, target))
    expected = model.predict(frame.to_numpy().astype("float32"), verbose=0)
    np.testing.assert_allclose(model.predict(frame, verbose=0), expected)
    single = Sequential([Input(shape=(1,)), Dense(1)])  # one feature column: Keras adds its axis
    single.compile(optimizer="sgd", loss="mse")
    single.fit(frame["a"], target, epochs=1, verbose=0)
    assert single.predict(frame["a"], batch_size=11, verbose=0).shape == (12, 1)  # a last batch of one value
    np.testing.assert_allclose(single.predict(frame["a"], verbose=0),
                               single.predict(frame[["a"]], verbose=0))


# -- [x] for a model of one input ----------------------------------------------------------------------------------
def test_a_list_of_one_array_is_the_input_of_a_one_input_model() -> None:
    # Keras takes predict([x]) as the list of inputs; rnnkit read [x] as one sample of rank 3 (a Dense model
    # returned outputs of shape [1, N, units], an LSTM raised a rank error)
    _, x_float, y = _data()
    model = _lstm_model()
    model.fit([x_float], y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_allclose(model.predict([x_float], verbose=0), model.predict(x_float, verbose=0))
    assert model.evaluate([x_float], y, verbose=0) == model.evaluate(x_float, y, verbose=0)
    # and [y] for a model of one output (rnnkit read it as one sample: "x[0]: 16, y[0]: 1")
    history = model.fit(x_float, [y], epochs=1, batch_size=8, verbose=0, validation_data=(x_float, [y]))
    assert len(history.history["val_loss"]) == 1
    assert model.evaluate(x_float, [y], verbose=0) == model.evaluate(x_float, y, verbose=0)
    dense = Sequential([Input(shape=(3,)), Dense(2)])
    assert dense.predict([x_float[:, 0]], verbose=0).shape == (16, 2)
    dynamic = Sequential([Input(shape=(None, 3)), LSTM(2)])
    assert dynamic.predict([x_float[0]], verbose=0).shape == (1, 2)  # a ragged list of one sequence stays one


# -- univariate series ---------------------------------------------------------------------------------------------
def test_a_univariate_series_gets_its_feature_axis() -> None:
    # x of shape [N, T] for Input(shape=(T, 1)): Keras adds the last axis (Functional._adjust_input_rank); rnnkit
    # raised "LSTM 'lstm' expects input [batch, time, features], got shape [N, T]"
    rng = np.random.default_rng(0)
    series = rng.normal(size=(10, 6)).astype("float32")
    target = series.sum(axis=1)
    set_random_seed(0)
    model = Sequential([Input(shape=(6, 1)), LSTM(3), Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(series, target, epochs=1, batch_size=5, verbose=0, validation_data=(series, target))
    np.testing.assert_allclose(model.predict(series, verbose=0), model.predict(series[..., None], verbose=0))
    with pytest.raises(ValueError, match="add the batch axis"):  # one sample without its batch axis still says so
        model.predict(series[0][:, None], verbose=0)
    inp = Input(shape=(None, 1))
    functional = Model(inp, LSTM(3)(inp))
    np.testing.assert_allclose(functional.predict(series, verbose=0), functional.predict(series[..., None], verbose=0))
    flat = Sequential([Input(shape=(6,)), Dense(1)])  # and a trailing axis of 1 too many goes away
    np.testing.assert_allclose(flat.predict(series[..., None], verbose=0), flat.predict(series, verbose=0))


@needs_keras
def test_a_univariate_series_matches_keras() -> None:
    keras = keras_module()
    series = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    reference = keras.Sequential([keras.Input(shape=(6, 1)), keras.layers.LSTM(3), keras.layers.Dense(1)])
    model = Sequential([Input(shape=(6, 1)), LSTM(3), Dense(1)])
    model.set_weights(reference.get_weights())
    np.testing.assert_allclose(model.predict(series, verbose=0), reference.predict(series, verbose=0), atol=1e-5)


# -- callbacks: the validation hooks -------------------------------------------------------------------------------
def _hook_session(callbacks_module: object, model: object, x: np.ndarray, y: np.ndarray) -> tuple[list[str], object]:
    """Two fits of one model with one recording callback: events as Keras names them."""

    class Record(callbacks_module.Callback):  # type: ignore[attr-defined,name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.events: list[str] = []
            self.test_logs: list[dict[str, float]] = []

        def on_test_begin(self, logs: object = None) -> None:
            self.events.append("test_begin")

        def on_test_batch_begin(self, batch: int, logs: object = None) -> None:
            self.events.append(f"test_batch_begin {batch}")

        def on_test_batch_end(self, batch: int, logs: object = None) -> None:
            self.events.append(f"test_batch_end {batch}")

        def on_test_end(self, logs: dict[str, float] | None = None) -> None:
            self.events.append("test_end " + ",".join(sorted(logs or {})))
            self.test_logs.append(dict(logs or {}))

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            self.events.append(f"epoch_end {epoch}")

    record = Record()
    model.fit(x, y, epochs=2, batch_size=8, validation_data=(x[:12], y[:12]), validation_batch_size=6,  # type: ignore[attr-defined]
              verbose=0, callbacks=[record])
    history = model.fit(x, y, epochs=3, batch_size=8, validation_data=(x, y), validation_freq=2,  # type: ignore[attr-defined]
                        verbose=0, callbacks=[record])
    return record.events, (record, history)


def test_fit_validation_calls_the_on_test_hooks() -> None:
    # Keras runs fit's validation as evaluate() with the fit's callbacks; rnnkit had no on_test_* hooks, so a
    # callback overriding them was silently never called (and one raising there did not stop fit)
    import rnnkit.training as callbacks_module

    _, x, y = _data()
    events, (record, history) = _hook_session(callbacks_module, _lstm_model(), x, y.astype("float32"))
    assert events[:7] == ["test_begin", "test_batch_begin 0", "test_batch_end 0", "test_batch_begin 1",
                          "test_batch_end 1", "test_end accuracy,loss", "epoch_end 0"]
    assert events.count("test_begin") == 3  # 2 epochs, then validation_freq=2 of 3 epochs
    assert record.test_logs[-1]["loss"] == pytest.approx(history.history["val_loss"][-1])  # type: ignore[attr-defined]

    class Boom(callbacks_module.Callback):
        def on_test_begin(self, logs: object = None) -> None:
            raise ValueError("boom in validation")

    model = _lstm_model()
    with pytest.raises(ValueError, match="boom in validation"):
        model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y), callbacks=[Boom()])
    assert model.predict(x, verbose=0).shape == (16, 1)  # and the model is usable after it


@needs_keras
def test_on_test_hooks_match_keras() -> None:
    keras = keras_module()
    import rnnkit.training as callbacks_module

    _, x, y = _data()
    reference = keras.Sequential([keras.Input(shape=(5, 3)), keras.layers.LSTM(4),
                                  keras.layers.Dense(1, activation="sigmoid")])
    reference.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    expected, _ = _hook_session(keras.callbacks, reference, x, y.astype("float32"))
    got, _ = _hook_session(callbacks_module, _lstm_model(), x, y.astype("float32"))
    assert got == expected


def test_lambda_callback_takes_the_on_test_hooks() -> None:
    from rnnkit.training import LambdaCallback

    _, x, y = _data()
    seen: list[float] = []
    model = _lstm_model()
    history = model.fit(x, y, epochs=2, verbose=0, validation_data=(x, y),
                        callbacks=[LambdaCallback(on_test_end=lambda logs: seen.append(logs["loss"]))])
    assert seen == pytest.approx(history.history["val_loss"])


# -- the learning rate as Keras 3's variable --------------------------------------------------------------------
@needs_keras
def test_learning_rate_assign_and_numpy_as_keras() -> None:
    """``model.optimizer.learning_rate.assign(x)`` between fits (Keras 3's way to change the rate) and
    ``.numpy()`` to read it; the weights after the next step equal Keras'."""
    import pickle

    keras = keras_module()
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 1)).astype("float32")
    reference = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(1)])
    model = Sequential([Input(shape=(3,)), Dense(1)])
    model.set_weights(reference.get_weights())
    reference.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.compile(optimizer="sgd", loss="mse")
    reference.train_on_batch(x, y)
    model.train_on_batch(x, y)
    reference.optimizer.learning_rate.assign(0.5)
    model.optimizer.learning_rate.assign(0.5)
    assert model.optimizer.learning_rate.numpy() == reference.optimizer.learning_rate.numpy() == np.float32(0.5)
    reference.train_on_batch(x, y)
    model.train_on_batch(x, y)
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    rate = model.optimizer.learning_rate
    assert rate == 0.5 and float(rate) * 2 == 1.0 and isinstance(rate, float)
    assert type(pickle.loads(pickle.dumps(rate))) is float  # never carries the optimizer along
    with pytest.raises(ValueError, match="finite number >= 0"):
        rate.assign(-1.0)


def test_learning_rate_assign_is_refused_under_a_schedule() -> None:
    from rnnkit.training import SGD, ExponentialDecay

    model = Sequential([Input(shape=(3,)), Dense(1)])
    model.compile(optimizer=SGD(ExponentialDecay(0.1, 10, 0.5)), loss="mse")
    with pytest.raises(TypeError, match="follows a schedule"):
        model.optimizer.learning_rate.assign(0.01)
