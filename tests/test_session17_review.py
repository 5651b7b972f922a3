"""Review of session 17's changes: defects found in the inference-mode default, Keras weight lists,
config text kept as written, and ``rnnkit predict`` on forecasting runs. Each test checks against
an independent reference (Keras 3, the config-file reader, or a hand-made expectation)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import rnnkit.layers as L
from models.keras_reference import keras_module, needs_keras  # tests/ is on sys.path (rootdir conftest)
from rnnkit.models import Model, Sequential

X = np.random.default_rng(0).normal(size=(4, 6, 3)).astype("float32")
Y = np.random.default_rng(1).normal(size=(4, 2)).astype("float32")


def _no_module_in_train_mode(model: nn.Module) -> list[str]:
    return [type(m).__name__ for m in model.modules() if m.training]


# -- modules built inside a training=True call must not stay in training mode -------------------
@needs_keras
def test_a_model_first_called_with_training_true_rests_in_inference_mode_as_keras() -> None:
    """Sequential's first call with ``training=True`` built the LSTM's inner module in train mode;
    the restore put back only the modules that existed before, so later ``model(x)`` calls kept
    dropout and recurrent dropout on (two calls differed, and differed from predict and Keras)."""
    keras = keras_module()
    torch.manual_seed(0)
    model = Sequential([L.LSTM(4, dropout=0.5, recurrent_dropout=0.5), L.Dense(2)])
    model(torch.from_numpy(X), training=True)
    assert _no_module_in_train_mode(model) == []
    first, second = model(torch.from_numpy(X)), model(torch.from_numpy(X))
    torch.testing.assert_close(first, second)
    reference = keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(4, dropout=0.5, recurrent_dropout=0.5),
                                  keras.layers.Dense(2)])
    reference.set_weights(model.get_weights())
    np.testing.assert_allclose(first.detach().numpy(), reference.predict(X, verbose=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict(X, verbose=0), reference.predict(X, verbose=0), rtol=1e-5, atol=1e-5)


def test_a_subclassed_model_built_under_training_true_rests_in_inference_mode() -> None:
    class Net(Model):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = L.GRU(4, dropout=0.5, recurrent_dropout=0.5)
            self.out = L.Dense(2)

        def call(self, x: Any, mask: Any = None) -> Any:
            return self.out(self.rnn(x))

    torch.manual_seed(0)
    net = Net()
    net(torch.from_numpy(X), training=True)
    assert _no_module_in_train_mode(net) == []
    torch.testing.assert_close(net(torch.from_numpy(X)), net(torch.from_numpy(X)))


class _LazyNoise(L.Layer):
    """Makes its dropout module on its first training call (a module made in call, as torch code does)."""

    def call(self, inputs: Any, mask: Any = None) -> Any:
        if self.training and "noise" not in self._modules:
            self.noise = nn.Dropout(0.5)
        return self.noise(inputs) if "noise" in self._modules else inputs


def test_a_module_made_during_fit_follows_the_models_mode_after_fit() -> None:
    """fit restored the modes it recorded before training; a module made during training kept
    train mode after fit (dropout on in every later model(x))."""
    torch.manual_seed(0)
    model = Sequential([L.Input((6, 3)), L.Flatten(), _LazyNoise(), L.Dense(2)])
    model.compile("sgd", "mse")
    model.fit(X, Y, epochs=1, batch_size=2, verbose=0)
    assert "noise" in model.layers[1]._modules
    assert _no_module_in_train_mode(model) == []
    torch.testing.assert_close(model(torch.from_numpy(X)), model(torch.from_numpy(X)))


def test_sequential_add_keeps_the_mode_of_a_nested_module() -> None:
    """Sequential's shape inference put every module of an added layer in the layer's mode (a
    BatchNormalization the user froze with .eval() inside a model in train mode was unfrozen);
    everywhere else (predict, fit, train_on_batch) each module gets its own mode back."""
    inner = Sequential([L.Input((3,)), L.Dense(4), L.BatchNormalization()])
    inner.train()
    inner.layers[-1].eval()
    outer = Sequential([L.Input((3,))])
    outer.add(inner)
    assert inner.training and not inner.layers[-1].training
    x = np.ones((2, 3), "float32")
    outer.predict(x, verbose=0)  # the same rule, for comparison
    assert inner.training and not inner.layers[-1].training


# -- get_weights / set_weights of a custom layer with nested Keras layers -----------------------
@needs_keras
def test_a_custom_layers_weights_are_kerass_list_in_kerass_layout() -> None:
    """layer.weights and count_params left out the LSTM's constant bias_hh, but get_weights of a
    custom layer listed torch's parameters (weight_ih [16, 3], ..., bias_hh): 6 arrays against
    Keras' 5, in torch layout, so set_weights(keras_layer.get_weights()) failed."""
    keras = keras_module()

    class Block(L.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.scale = nn.Parameter(torch.full((3,), 2.0))
            self.rnn = L.LSTM(4)
            self.out = L.Dense(2)

        def call(self, x: Any, mask: Any = None) -> Any:
            return self.out(self.rnn(x * self.scale))

    class KBlock(keras.layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.scale = self.add_weight(shape=(3,), initializer="ones")
            self.rnn = keras.layers.LSTM(4)
            self.out = keras.layers.Dense(2)

        def call(self, x: Any) -> Any:
            return self.out(self.rnn(x * self.scale))

    model = Sequential([L.Input((6, 3)), Block()])
    reference = keras.Sequential([keras.Input((6, 3)), KBlock()])
    ours, theirs = model.get_weights(), reference.get_weights()
    assert [w.shape for w in ours] == [w.shape for w in theirs]
    assert len(model.weights) == len(ours) and model.count_params() == reference.count_params()
    rng = np.random.default_rng(2)
    new = [rng.normal(size=w.shape).astype("float32") for w in theirs]
    reference.set_weights(new)
    model.set_weights(reference.get_weights())
    np.testing.assert_allclose(model.predict(X, verbose=0), reference.predict(X, verbose=0), rtol=1e-5, atol=1e-5)
    for a, b in zip(model.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="weight 1 must have shape"):
        model.layers[0].set_weights([new[0], new[1].T, *new[2:]])
    np.testing.assert_array_equal(model.get_weights()[0], new[0])  # checked before anything was written


# -- config: --set values read as a config file reads them --------------------------------------
def test_a_set_list_keeps_its_items_as_written_as_a_config_file_does(tmp_path: Any) -> None:
    """``--set data.past_covariates=[no, 2024]`` named the columns 'False' and '2024' (YAML 1.1 read
    the items as a bool and a number; only a bare scalar kept its text), while the same list in a
    config file named the columns 'no' and '2024'."""
    from rnnkit.tasks import get_task
    from rnnkit.tasks.config import load_config

    task = get_task("forecasting")
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  past_covariates: [no, 2024, 007]\n", encoding="utf-8")
    from_file = load_config(task.Config, str(path)).data.past_covariates
    from_set = load_config(task.Config, None, ["data.past_covariates=[no, 2024, 007]"]).data.past_covariates
    assert from_file == ["no", "2024", "007"]
    assert from_set == from_file


def test_a_value_where_a_section_goes_is_quoted_as_written(tmp_path: Any) -> None:
    from rnnkit.tasks import get_task
    from rnnkit.tasks.config import ConfigError, load_config

    task = get_task("forecasting")
    with pytest.raises(ConfigError) as err:
        load_config(task.Config, None, ["data=5"])
    assert str(err.value) == "data: expected a mapping of keys, got 5"
    path = tmp_path / "c.yaml"
    path.write_text("data: no\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(task.Config, str(path))
    assert "Written" not in str(err.value) and str(err.value).endswith("got no")


# -- rnnkit predict on a forecasting run: --file is the history ---------------------------------
def test_forecasting_predict_file_is_the_history_before_a_future_csv(monkeypatch: Any, tmp_path: Any) -> None:
    """``rnnkit predict RUN future.csv --file history.csv`` passed [future.csv, history.csv]: the
    future covariates were read as the history."""
    from typer.testing import CliRunner

    import rnnkit.tasks
    from rnnkit.cli import app

    seen: list[list[str]] = []

    class FakeForecaster:
        predicts_whole_files = True

        def predict(self, inputs: list[str]) -> list[dict[str, Any]]:
            seen.append(list(inputs))
            return [{"series_id": "a", "forecast": [1.0]}]

    monkeypatch.setattr(rnnkit.tasks, "load_ensemble", lambda runs: FakeForecaster())
    result = CliRunner().invoke(app, ["predict", str(tmp_path), "future.csv", "--file", "history.csv", "--json"])
    assert result.exit_code == 0, result.output
    assert seen == [["history.csv", "future.csv"]]



# -- ddp: the callbacks' params["steps"] is the batch count of one process -----------------------
DDP_STEPS_SCRIPT = """
import json, os
import numpy as np
from rnnkit.layers import LSTM, Dense, Input
from rnnkit.models import Sequential, set_random_seed
from rnnkit.training.callbacks import Callback

class Steps(Callback):
    def __init__(self):
        super().__init__()
        self.seen, self.batches = [], 0
    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
    def on_epoch_end(self, epoch, logs=None):
        self.seen.append([self.params["steps"], self.batches])
        self.batches = 0

set_random_seed(0)
x = np.random.default_rng(0).normal(size=(50, 6, 3)).astype("float32")
y = (x[:, :, 0].sum(1) > 0).astype(np.int64)
model = Sequential([Input(shape=(6, 3)), LSTM(4), Dense(2, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
cb = Steps()
model.fit(x, y, epochs=1, batch_size=8, verbose=0, accelerator="cpu", devices=2, strategy="ddp", seed=1,
          callbacks=[cb])
rank = int(os.environ.get("LOCAL_RANK", 0))
with open(f"result{rank}.json", "w") as fh:  # a file each: the processes' prints can interleave on one line
    json.dump({"rank": rank, "seen": cb.seen}, fh)
"""


def test_ddp_callbacks_see_the_batches_one_process_runs(tmp_path: Any) -> None:
    """Under ddp each process runs ceil(ceil(50 / 2) / 8) = 4 batches of its share, but
    params["steps"] was the single-process count, ceil(50 / 8) = 7 (computed before the sharding)."""
    import json
    import subprocess
    import sys

    script = tmp_path / "ddp_steps.py"
    script.write_text(DDP_STEPS_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    results = [json.loads((tmp_path / f"result{rank}.json").read_text()) for rank in (0, 1)]
    assert all(r["seen"] == [[4, 4]] for r in results)
