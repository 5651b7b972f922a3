"""Mutation testing, round 4: callbacks, the training step and data, compile, initializers,
activations, Conv1D, summary and model utilities.

Each test compares rnnkit with an independent reference: the same Keras 3 object (callbacks,
initializers, activations, layers with copied weights), ``torch.nn.functional``, or a hand
computation. The callbacks are driven epoch by epoch with a sequence of monitored values, the
Keras one on a stand-in model with the attributes Keras reads, so the comparison is exact.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from models.keras_reference import keras_module, needs_keras  # tests/ is on sys.path (rootdir conftest)
from rnnkit.layers import Conv1D, Dense, Input
from rnnkit.layers import initializers as rk_init
from rnnkit.layers.activations import get_activation
from rnnkit.models import Model, Sequential
from rnnkit.models.model import clone_model
from rnnkit.models.utils import set_random_seed, to_categorical
from rnnkit.training import (
    SGD,
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)

# -- callbacks driven epoch by epoch --------------------------------------------------------------


class _RkModel:
    """What rnnkit's callbacks touch: state_dict / load_state_dict, stop_training, optimizer, save."""

    def __init__(self, lr: float = 0.1) -> None:
        self.w = torch.tensor(-1.0)
        self.stop_training = False
        self.optimizer = SimpleNamespace(learning_rate=lr)
        self.saved: list[str] = []

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"w": self.w.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.w = state["w"].clone()

    def save(self, path: str, **_: Any) -> None:
        self.saved.append(path)

    def save_weights(self, path: str, **_: Any) -> None:
        self.saved.append("weights:" + path)

    def weight(self) -> float:
        return float(self.w)

    def set_epoch(self, epoch: int) -> None:
        self.w = torch.tensor(float(epoch))


class _KModel:
    """What Keras' callbacks touch: get_weights / set_weights, stop_training, optimizer, save."""

    def __init__(self, lr: float = 0.1) -> None:
        self.w = -1.0
        self.stop_training = False
        self.optimizer = SimpleNamespace(learning_rate=lr)
        self.saved: list[str] = []

    def get_weights(self) -> list[np.ndarray]:
        return [np.array(self.w)]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.w = float(weights[0])

    def save(self, path: str, **_: Any) -> None:
        self.saved.append(path)

    def save_weights(self, path: str, **_: Any) -> None:
        self.saved.append("weights:" + path)

    def weight(self) -> float:
        return float(self.w)

    def set_epoch(self, epoch: int) -> None:
        self.w = float(epoch)


def _drive(cb: Any, model: Any, epochs: list[dict[str, float]], batches: int = 0) -> list[tuple[Any, ...]]:
    """Run the hooks of ``len(epochs)`` epochs; the model's "weights" are the epoch number."""
    cb.set_model(model)
    cb.on_train_begin({})
    trace: list[tuple[Any, ...]] = []
    for epoch, logs in enumerate(epochs):
        cb.on_epoch_begin(epoch, {})
        for b in range(batches):
            cb.on_train_batch_end(b, {"loss": logs.get("loss", 1.0) + b})
        model.set_epoch(epoch)
        logs = dict(logs)
        cb.on_epoch_end(epoch, logs)
        trace.append((epoch, model.stop_training, round(float(model.optimizer.learning_rate), 12),
                      logs.get("learning_rate")))
        if model.stop_training:
            break
    cb.on_train_end({})
    trace.append(("end", model.weight(), len(model.saved)))
    return trace


def _val(values: list[float], key: str = "val_loss", **other: list[float]) -> list[dict[str, float]]:
    out = []
    for i, v in enumerate(values):
        logs = {key: v}
        logs.update({k: vs[i] for k, vs in other.items()})
        out.append(logs)
    return out


EARLY_CASES = [
    # patience counted exactly: stop on the 2nd epoch without improvement
    ({"patience": 2}, _val([1.0, 0.9, 0.95, 0.93, 0.92, 0.5])),
    # a baseline the values never beat: the improvements do not reset the wait
    ({"patience": 2, "baseline": 0.5}, _val([1.0, 0.9, 0.9, 0.9, 0.9])),
    ({"patience": 1, "baseline": 0.95}, _val([1.0, 0.9, 0.92, 0.91, 0.93])),
    # restore_best_weights puts back the best epoch (epoch 1), stopped or not
    ({"patience": 2, "restore_best_weights": True}, _val([1.0, 0.5, 0.7, 0.8, 0.9])),
    ({"patience": 5, "restore_best_weights": True}, _val([1.0, 0.5, 0.7])),
    # start_from_epoch: epochs before it are not monitored
    ({"patience": 1, "start_from_epoch": 2, "restore_best_weights": True},
     _val([0.1, 0.2, 0.9, 0.95, 0.99, 0.3])),
    # a negative min_delta is taken by its size, as Keras does
    ({"patience": 1, "min_delta": -0.1, "restore_best_weights": True}, _val([1.0, 0.95, 0.92, 0.85, 0.84])),
    ({"patience": 1, "min_delta": 0.05, "mode": "max", "monitor": "val_accuracy", "restore_best_weights": True},
     _val([0.5, 0.53, 0.6, 0.62, 0.64], key="val_accuracy")),
    # the default monitor is val_loss, not loss
    ({"patience": 1, "restore_best_weights": True}, _val([1.0, 0.9, 0.8, 0.7], loss=[1.0, 1.1, 1.2, 1.3])),
    # equal values are not an improvement
    ({"patience": 1}, _val([1.0, 1.0, 1.0])),
]


@needs_keras
@pytest.mark.parametrize(("kwargs", "epochs"), EARLY_CASES)
def test_early_stopping_follows_keras_epoch_by_epoch(kwargs: dict[str, Any], epochs: list[dict[str, float]]) -> None:
    keras = keras_module()
    ours = _drive(EarlyStopping(**kwargs), _RkModel(), epochs)
    ref = _drive(keras.callbacks.EarlyStopping(**kwargs), _KModel(), epochs)
    assert ours == ref


def test_early_stopping_never_stops_at_the_first_epoch() -> None:
    # Keras' rule "wait >= patience and epoch > 0": a first epoch without improvement (here NaN,
    # which rnnkit counts as no improvement) does not stop training, even with patience=0
    model = _RkModel()
    trace = _drive(EarlyStopping(patience=0), model, _val([math.nan, 1.0, 0.9]))
    assert [stopped for _, stopped, *_ in trace[:-1]] == [False, False, False]


PLATEAU_CASES = [
    ({"factor": 0.5, "patience": 2, "min_lr": 0.02}, _val([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])),
    ({"factor": 0.5, "patience": 1, "cooldown": 2}, _val([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])),
    ({"factor": 0.5, "patience": 1, "cooldown": 1}, _val([1.0, 0.9, 0.9, 0.8, 0.8, 0.8, 0.7, 0.7])),
    ({"patience": 1}, _val([1.0, 0.99995, 0.9999, 0.99, 0.99])),  # default factor and min_delta
    ({"patience": 1, "min_delta": 0.01}, _val([1.0, 0.995, 0.98, 0.975, 0.96])),
    ({"patience": 2, "mode": "max", "monitor": "val_accuracy", "factor": 0.2},
     _val([0.5, 0.5, 0.4, 0.6, 0.6, 0.6], key="val_accuracy")),
]


@needs_keras
@pytest.mark.parametrize(("kwargs", "epochs"), PLATEAU_CASES)
def test_reduce_lr_on_plateau_follows_keras_epoch_by_epoch(kwargs: dict[str, Any],
                                                            epochs: list[dict[str, float]]) -> None:
    keras = keras_module()
    ours = _drive(ReduceLROnPlateau(**kwargs), _RkModel(lr=0.1), epochs)
    ref = _drive(keras.callbacks.ReduceLROnPlateau(**kwargs), _KModel(lr=0.1), epochs)
    assert ours == ref


@needs_keras
def test_learning_rate_scheduler_follows_keras() -> None:
    keras = keras_module()

    def schedule(epoch: int, lr: float) -> float:
        return lr * 0.5 if epoch in (1, 3) else lr + 0.01 * epoch

    epochs = _val([1.0, 1.0, 1.0, 1.0, 1.0])
    ours = _drive(LearningRateScheduler(schedule), _RkModel(lr=0.1), epochs)
    ref = _drive(keras.callbacks.LearningRateScheduler(schedule), _KModel(lr=0.1), epochs)
    assert ours == ref
    assert all(lr is not None for *_, lr in ours[:-1])  # the rate in use is in every epoch's logs


CHECKPOINT_CASES = [
    ({"save_best_only": True}, _val([1.0, 0.8, 0.9, 0.7, 0.7]), 0),
    ({"save_best_only": True, "initial_value_threshold": 0.85}, _val([1.0, 0.8, 0.9, 0.7]), 0),
    ({"save_best_only": True, "mode": "max", "monitor": "val_accuracy"},
     _val([0.5, 0.4, 0.6, 0.6], key="val_accuracy"), 0),
    ({"save_best_only": True}, _val([1.0, 0.8, 0.9], key="loss"), 0),  # monitor missing: saves every time
    ({"save_best_only": True, "monitor": "loss"}, _val([1.0, 0.8, 0.9], key="loss"), 0),
    ({"save_best_only": True}, _val([1.0, 0.8, 0.9], loss=[0.5, 0.6, 0.4]), 0),  # default monitor val_loss
    ({"save_freq": 3}, _val([1.0, 0.9, 0.8]), 4),
    ({"save_weights_only": True}, _val([1.0, 0.9]), 0),
]


@needs_keras
@pytest.mark.parametrize(("kwargs", "epochs", "batches"), CHECKPOINT_CASES)
def test_model_checkpoint_saves_what_keras_saves(kwargs: dict[str, Any], epochs: list[dict[str, float]],
                                                 batches: int, tmp_path: Path) -> None:
    keras = keras_module()
    weights = kwargs.get("save_weights_only", False)
    fields = "{epoch:02d}-{batch}" if "save_freq" in kwargs else "{epoch:02d}"
    suffix = ".weights.h5" if weights else ".keras"
    rk_model, k_model = _RkModel(), _KModel()
    with pytest.warns(UserWarning) if kwargs.get("monitor", "val_loss") not in epochs[0] else _no_warning():
        _drive(ModelCheckpoint(str(tmp_path / ("m-" + fields + suffix)), **kwargs), rk_model, epochs, batches)
    with pytest.warns(UserWarning) if kwargs.get("monitor", "val_loss") not in epochs[0] else _no_warning():
        _drive(keras.callbacks.ModelCheckpoint(str(tmp_path / ("m-" + fields + suffix)), **kwargs), k_model,
               epochs, batches)
    assert rk_model.saved == k_model.saved
    assert rk_model.saved  # something was saved


class _no_warning:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


@needs_keras
def test_csv_logger_matches_keras_file(tmp_path: Path) -> None:
    keras = keras_module()
    epochs = [{"val_loss": 0.5, "loss": 1.0, "accuracy": 0.25, "val_accuracy": 0.5},
              {"val_loss": 0.25, "loss": 0.5, "accuracy": 0.5, "val_accuracy": 0.75}]

    def write(cb: Any, model: Any, path: Path) -> list[list[str]]:
        _drive(cb, model, epochs)
        with open(path, newline="") as f:
            return list(csv.reader(f, delimiter=";"))

    ours = write(CSVLogger(tmp_path / "a.csv", separator=";"), _RkModel(), tmp_path / "a.csv")
    ref = write(keras.callbacks.CSVLogger(str(tmp_path / "b.csv"), separator=";"), _KModel(), tmp_path / "b.csv")
    assert ours[0] == ref[0]  # the same (sorted) columns
    assert [[float(v) for v in row] for row in ours[1:]] == [[float(v) for v in row] for row in ref[1:]]
    # append=True adds rows under the kept header, as Keras does
    more = [{"val_loss": 0.125, "loss": 0.25, "accuracy": 0.75, "val_accuracy": 1.0}]
    _drive(CSVLogger(tmp_path / "a.csv", separator=";", append=True), _RkModel(), more)
    _drive(keras.callbacks.CSVLogger(str(tmp_path / "b.csv"), separator=";", append=True), _KModel(), more)
    with open(tmp_path / "a.csv", newline="") as fa, open(tmp_path / "b.csv", newline="") as fb:
        rows_a, rows_b = list(csv.reader(fa, delimiter=";")), list(csv.reader(fb, delimiter=";"))
    assert len(rows_a) == len(rows_b) == 4
    assert [[float(v) for v in row] for row in rows_a[1:]] == [[float(v) for v in row] for row in rows_b[1:]]


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_terminate_on_nan_stops_on_any_non_finite_loss(bad: float) -> None:
    # Keras: `if np.isnan(loss) or np.isinf(loss)` -> stop_training
    cb, model = TerminateOnNaN(), _RkModel()
    cb.set_model(model)
    cb.on_train_batch_end(0, {"loss": 1.0})
    assert not model.stop_training
    cb.on_train_batch_end(1, {"loss": bad})
    assert model.stop_training


# -- initializers: the statistics of Keras' initializer on the same (transposed) shape ------------

# torch layout [out, in] (a Dense kernel) and [filters, in, k] (a Conv1D kernel); fan_in != fan_out
INIT_SHAPES = [((600, 150), (150, 600)), ((96, 40, 5), (5, 40, 96))]
INIT_NAMES = [("glorot_uniform", "GlorotUniform"), ("glorot_normal", "GlorotNormal"), ("he_uniform", "HeUniform"),
              ("he_normal", "HeNormal"), ("lecun_uniform", "LecunUniform"), ("lecun_normal", "LecunNormal"),
              ("random_uniform", "RandomUniform"), ("random_normal", "RandomNormal"),
              ("truncated_normal", "TruncatedNormal")]


@needs_keras
@pytest.mark.parametrize(("ours", "theirs"), INIT_NAMES)
@pytest.mark.parametrize(("torch_shape", "keras_shape"), INIT_SHAPES)
def test_initializer_statistics_match_keras(ours: str, theirs: str, torch_shape: tuple[int, ...],
                                            keras_shape: tuple[int, ...]) -> None:
    keras = keras_module()
    torch.manual_seed(0)
    w = rk_init.get_initializer(ours)(torch.empty(torch_shape)).numpy()
    ref = keras.ops.convert_to_numpy(getattr(keras.initializers, theirs)(seed=1)(keras_shape))
    # std to ~1.5%, the extreme value (the uniform limit, or the truncation point) to ~2%
    assert w.std() == pytest.approx(ref.std(), rel=0.03)
    if ours != "random_normal":  # an untruncated normal has no fixed extreme value
        assert np.abs(w).max() == pytest.approx(np.abs(ref).max(), rel=0.03)
    assert abs(w.mean()) < 0.02 * ref.std()


@needs_keras
@pytest.mark.parametrize("shape", [(48, 12), (12, 48)])
def test_orthogonal_initializer_is_orthonormal_like_keras(shape: tuple[int, int]) -> None:
    keras = keras_module()
    torch.manual_seed(0)
    w = rk_init.get_initializer("orthogonal")(torch.empty(shape)).double()
    ref = torch.as_tensor(keras.ops.convert_to_numpy(keras.initializers.Orthogonal(seed=1)(shape[::-1]))).double()
    small = min(shape)
    gram = w @ w.T if shape[0] == small else w.T @ w
    ref_gram = ref @ ref.T if ref.shape[0] == small else ref.T @ ref
    torch.testing.assert_close(gram, torch.eye(small, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(ref_gram, torch.eye(small, dtype=torch.float64), atol=1e-5, rtol=0)


# -- activations: values against keras.activations -----------------------------------------------

ACTIVATION_NAMES = ["relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "mish", "tanh", "sigmoid",
                    "hard_sigmoid", "softplus", "softsign", "exponential", "softmax", "log_softmax", "linear"]


@needs_keras
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_values_match_keras(name: str) -> None:
    keras = keras_module()
    grid = torch.linspace(-8.0, 8.0, 97)
    wide = torch.tensor([-150.0, -100.0, -30.0, 30.0, 80.0, 100.0, 150.0])
    x = torch.cat([grid, wide]) if name != "exponential" else grid
    x3 = x[: 3 * 4 * 8].reshape(3, 4, 8)  # softmax axes: the last one
    for inp in (x, x3):
        ours = get_activation(name)(inp)
        ref = torch.as_tensor(keras.ops.convert_to_numpy(getattr(keras.activations, name)(inp)))
        torch.testing.assert_close(ours, ref.to(ours.dtype), atol=2e-6, rtol=2e-6)


# -- Conv1D: outputs of keras.layers.Conv1D with the same weights ---------------------------------

CONV_CASES = [(k, s, d, p, t) for p in ("valid", "same", "causal") for (k, s, d) in
              [(3, 1, 1), (4, 1, 1), (2, 2, 1), (3, 2, 1), (4, 3, 1), (3, 1, 2), (2, 1, 3)] for t in (7, 8)]


@needs_keras
@pytest.mark.parametrize(("kernel", "stride", "dilation", "padding", "length"), CONV_CASES)
def test_conv1d_matches_keras(kernel: int, stride: int, dilation: int, padding: str, length: int) -> None:
    keras = keras_module()
    rng = np.random.default_rng(kernel * 100 + stride * 10 + dilation + length)
    x = rng.normal(size=(2, length, 3)).astype("float32")
    ref = keras.layers.Conv1D(4, kernel, strides=stride, padding=padding, dilation_rate=dilation)
    expected = keras.ops.convert_to_numpy(ref(x))
    ours = Conv1D(4, kernel, strides=stride, padding=padding, dilation_rate=dilation)
    ours(torch.as_tensor(x))  # built on data, then given Keras' weights
    ours.set_weights(ref.get_weights())
    got = ours(torch.as_tensor(x)).detach().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@needs_keras
@pytest.mark.parametrize(("kernel", "dilation"), [(3, 1), (3, 2), (1, 1)])
def test_conv1d_valid_accepts_a_sequence_exactly_one_window_long(kernel: int, dilation: int) -> None:
    keras = keras_module()
    span = (kernel - 1) * dilation + 1
    x = np.arange(span * 2, dtype="float32").reshape(1, span, 2)
    ref = keras.layers.Conv1D(3, kernel, dilation_rate=dilation)
    expected = keras.ops.convert_to_numpy(ref(x))
    ours = Conv1D(3, kernel, dilation_rate=dilation)
    ours(torch.as_tensor(x))
    ours.set_weights(ref.get_weights())
    np.testing.assert_allclose(ours(torch.as_tensor(x)).detach().numpy(), expected, atol=1e-5)


# -- parameter counts and the summary ------------------------------------------------------------


def _frozen_lstm_model(keras: Any = None) -> Any:
    from rnnkit.layers import LSTM, BatchNormalization

    lib = keras.layers if keras is not None else None
    if lib is None:
        inp = Input(shape=(5, 3), name="x")
        h = LSTM(4, name="lstm")(inp)
        h = BatchNormalization(name="bn")(h)
        dense = Dense(2, name="frozen")
        dense.trainable = False
        out = Dense(1, name="head")(dense(h))
        return Model(inp, out)
    inp = keras.Input(shape=(5, 3), name="x")
    h = lib.LSTM(4, name="lstm")(inp)
    h = lib.BatchNormalization(name="bn")(h)
    dense = lib.Dense(2, name="frozen")
    dense.trainable = False
    out = lib.Dense(1, name="head")(dense(h))
    return keras.Model(inp, out)


@needs_keras
def test_count_params_and_summary_totals_match_keras() -> None:
    from rnnkit.models.summary import summary_lines

    keras = keras_module()
    ours, ref = _frozen_lstm_model(), _frozen_lstm_model(keras)
    assert ours.count_params() == ref.count_params()
    ref_trainable = sum(int(np.prod(w.shape)) for w in ref.trainable_weights)
    lines = summary_lines(ours)
    assert f"Total params: {ref.count_params():,}" in lines
    assert f"Trainable params: {ref_trainable:,}" in lines
    assert f"Non-trainable params: {ref.count_params() - ref_trainable:,}" in lines
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in {"lstm", "bn"}}
    assert f"{ref.get_layer('lstm').count_params():,}" in rows["lstm"].split()


def test_summary_layer_range_includes_its_last_layer() -> None:
    from rnnkit.models.summary import summary_lines

    inp = Input(shape=(3,), name="x")
    out = Dense(2, name="c")(Dense(2, name="b")(Dense(2, name="a")(inp)))
    lines = summary_lines(Model(inp, out), layer_range=["a", "b"])
    names = [line.split()[0] for line in lines if line.split() and line.split()[0] in {"x", "a", "b", "c"}]
    assert names == ["a", "b"]  # Keras: from the first match of the start to the last match of the end


# -- models: clone_model, get_layer, output names -------------------------------------------------


@needs_keras
def test_clone_model_keeps_shared_layers_trainable_and_batch_size_like_keras() -> None:
    keras = keras_module()
    inp = Input(shape=(3,), batch_size=4, name="x")
    shared = Dense(3, name="shared")
    model = Model(inp, Dense(1, name="out")(shared(shared(inp))))
    clone = clone_model(model)
    k_inp = keras.Input(shape=(3,), batch_size=4, name="x")
    k_shared = keras.layers.Dense(3, name="shared")
    k_clone = keras.models.clone_model(keras.Model(k_inp, keras.layers.Dense(1, name="out")(k_shared(k_shared(k_inp)))))
    assert clone.count_params() == model.count_params() == k_clone.count_params()
    assert len(clone.get_weights()) == len(k_clone.get_weights())
    assert clone.get_layer("x").batch_size == model.get_layer("x").batch_size == k_clone.input_shape[0] == 4
    seq = Sequential([Input(shape=(3,)), Dense(2)], name="s")
    seq.trainable = False
    k_seq = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(2)])
    k_seq.trainable = False
    assert clone_model(seq).trainable is keras.models.clone_model(k_seq).trainable is False


@needs_keras
def test_get_layer_takes_a_negative_index_like_keras() -> None:
    keras = keras_module()
    model = Sequential([Input(shape=(3,)), Dense(2, name="a"), Dense(1, name="b")])
    k_model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(2, name="a"),
                                keras.layers.Dense(1, name="b")])
    assert model.get_layer(index=-1).name == k_model.get_layer(index=-1).name == "b"


def test_output_names_of_one_layer_used_twice_are_numbered() -> None:
    # docs: an output name repeats as "<name>_1", "<name>_2"... (the keys of logs and of a y dict)
    inp = Input(shape=(3,), name="x")
    head = Dense(1, name="head")
    model = Model(inp, [head(inp), head(Dense(3, name="mid")(inp))])
    assert model.output_names == ["head", "head_1"]


# -- utils ----------------------------------------------------------------------------------------


@needs_keras
@pytest.mark.parametrize("y", [[1], [[2], [0]], [0, 2, 1], [[0, 1], [1, 0]]])
def test_to_categorical_matches_keras(y: Any) -> None:
    keras = keras_module()
    ref = keras.utils.to_categorical(np.asarray(y))
    got = to_categorical(y)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_set_random_seed_seeds_torch() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(123)
    set_random_seed(7)
    torch.testing.assert_close(torch.rand(3), expected)


# -- the training step: class and sample weights, loss weights, masks -----------------------------


def _copy_dense_pair(keras: Any, units: int, activation: str, loss: str) -> tuple[Any, Any]:
    ours = Sequential([Input(shape=(4,)), Dense(units, activation=activation)])
    ours.compile(SGD(learning_rate=0.0), loss)
    ref = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(units, activation=activation)])
    ref.compile(keras.optimizers.SGD(learning_rate=0.0), loss)
    ours.set_weights(ref.get_weights())
    return ours, ref


WEIGHT_CASES = [
    ("sparse_categorical_crossentropy", 3, "softmax", "sparse"),
    ("categorical_crossentropy", 3, "softmax", "onehot"),
    ("binary_crossentropy", 1, "sigmoid", "soft"),
    ("sparse_categorical_crossentropy", 3, "softmax", "missing"),  # class 1 has no weight: Keras uses 1.0
]


@needs_keras
@pytest.mark.parametrize(("loss", "units", "activation", "labels"), WEIGHT_CASES)
@pytest.mark.parametrize("with_sw", [False, True])
def test_class_and_sample_weights_match_keras_train_on_batch(loss: str, units: int, activation: str, labels: str,
                                                             with_sw: bool) -> None:
    keras = keras_module()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 4)).astype("float32")
    ids = np.array([0, 1, 2, 2, 1, 0])
    if labels == "sparse":
        y = ids
    elif labels == "onehot":
        y = np.eye(3, dtype="float32")[ids]
    else:  # soft binary labels: Keras rounds them to pick the class weight
        y = np.array([[0.7], [0.2], [1.0], [0.0], [0.6], [0.4]], dtype="float32")
    class_weight = {0: 2.0, 1: 0.25, 2: 0.5} if units == 3 else {0: 0.5, 1: 3.0}
    if labels == "missing":
        y, class_weight = ids, {0: 2.0, 2: 0.5}
    sw = np.array([1.0, 0.5, 2.0, 0.0, 1.5, 1.0], dtype="float32") if with_sw else None
    ours, ref = _copy_dense_pair(keras, units, activation, loss)
    got = ours.train_on_batch(x, y, sample_weight=sw, class_weight=class_weight)
    if sw is None:
        expected = ref.train_on_batch(x, y, class_weight=class_weight)
    else:  # Keras takes one or the other; fit multiplies them, as rnnkit does (hand-picked classes)
        classes = ids if units == 3 else np.round(y[:, 0]).astype(int)
        expected = ref.train_on_batch(x, y, sample_weight=sw * np.array([class_weight.get(c, 1.0) for c in classes],
                                                                         dtype="float32"))
    got = got[0] if isinstance(got, list) else got
    expected = expected[0] if isinstance(expected, list) else expected
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


@needs_keras
def test_sample_weighted_evaluate_divides_by_the_sample_count_like_keras() -> None:
    keras = keras_module()
    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    sw = np.array([0.0, 1.0, 3.0, 0.5, 2.0, 0.0, 1.0, 4.0], dtype="float32")
    ours, ref = _copy_dense_pair(keras, 2, "linear", "mse")
    got = ours.evaluate(x, y, sample_weight=sw, batch_size=8, verbose=0)
    expected = ref.evaluate(x, y, sample_weight=sw, batch_size=8, verbose=0)
    got = got[0] if isinstance(got, list) else got
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def _two_output_model() -> Model:
    inp = Input(shape=(3,), name="x")
    return Model(inp, [Dense(1, name="a")(inp), Dense(2, name="b")(inp)])


def test_loss_weights_by_output_name_default_to_one_and_survive_saving(tmp_path: Path) -> None:
    from rnnkit.models import load_model

    rng = np.random.default_rng(5)
    x = rng.normal(size=(5, 3)).astype("float32")
    ya, yb = rng.normal(size=(5, 1)).astype("float32"), rng.normal(size=(5, 2)).astype("float32")
    model = _two_output_model()
    model.compile(SGD(learning_rate=0.0), "mse", loss_weights={"a": 3.0})
    pa, pb = (np.asarray(p) for p in model.predict(x, verbose=0))
    la, lb = float(((pa - ya) ** 2).mean()), float(((pb - yb) ** 2).mean())
    logs = model.evaluate(x, [ya, yb], batch_size=5, verbose=0, return_dict=True)
    # hand computation: 3 * loss_a + 1 * loss_b (an output missing from the dict weighs 1, as in Keras)
    assert logs["loss"] == pytest.approx(3.0 * la + lb, rel=1e-5)
    assert logs["a_loss"] == pytest.approx(la, rel=1e-5) and logs["b_loss"] == pytest.approx(lb, rel=1e-5)
    assert model.metrics_names[:3] == ["loss", "a_loss", "b_loss"]
    model.save(str(tmp_path / "m"))
    again = load_model(str(tmp_path / "m"))
    logs2 = again.evaluate(x, [ya, yb], batch_size=5, verbose=0, return_dict=True)
    assert logs2["loss"] == pytest.approx(logs["loss"], rel=1e-5)


def test_ragged_sequences_are_padded_after_and_the_loss_averages_real_steps() -> None:
    rng = np.random.default_rng(6)
    lengths = [2, 5, 3]
    xs = [rng.normal(size=(t, 2)).astype("float32") for t in lengths]
    ys = [rng.normal(size=(t, 1)).astype("float32") for t in lengths]
    model = Sequential([Input(shape=(None, 2)), Dense(1)])
    model.compile(SGD(learning_rate=0.0), "mse")
    w, b = (np.asarray(a) for a in model.get_weights())
    # hand computation: the squared error of every real step, averaged over the real steps only
    errs = np.concatenate([((x @ w + b - y) ** 2).ravel() for x, y in zip(xs, ys)])
    got = model.evaluate(xs, ys, batch_size=3, verbose=0)
    got = got[0] if isinstance(got, list) else got
    assert float(got) == pytest.approx(float(errs.mean()), rel=1e-5)


# -- fit's data handling: validation_split, shuffle=False, zero sample weights ---------------------


def _batch_loss_recorder() -> tuple[Any, list[float]]:
    from rnnkit.training import LambdaCallback

    seen: list[float] = []
    return LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(float(logs["loss"]))), seen


def test_validation_split_takes_the_last_samples_and_rounds_training_down() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(10, 3)).astype("float32")
    y = rng.normal(size=(10, 1)).astype("float32")
    model = Sequential([Input(shape=(3,)), Dense(1)])
    model.compile(SGD(learning_rate=0.0), "mse")
    cb, seen = _batch_loss_recorder()
    history = model.fit(x, y, batch_size=1, epochs=1, validation_split=0.25, shuffle=False, verbose=0,
                        callbacks=[cb])
    # Keras: split_at = floor(10 * 0.75) = 7 training samples, the last 3 for validation
    pred = np.asarray(model.predict(x, verbose=0))
    per = ((pred - y) ** 2).ravel()
    assert len(seen) == 7
    np.testing.assert_allclose(seen, per[:7], rtol=1e-5)  # shuffle=False: in order
    assert history.history["val_loss"][0] == pytest.approx(float(per[7:].mean()), rel=1e-5)


def test_zero_sample_weights_are_accepted_like_keras() -> None:
    x = np.ones((4, 3), dtype="float32")
    y = np.zeros((4, 1), dtype="float32")
    model = Sequential([Input(shape=(3,)), Dense(1)])
    model.compile(SGD(learning_rate=0.0), "mse")
    model.fit(x, y, sample_weight=np.array([0.0, 1.0, 0.0, 2.0], dtype="float32"), epochs=1, verbose=0)
