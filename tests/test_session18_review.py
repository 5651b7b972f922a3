"""Review of session 18's changes: defects found in the parameter-dtype autocast, rapidfuzz edit
distances, resuming a fit whose weights were all frozen, and ``reset_state`` of an empty selection.
Each test checks against an independent reference (the same model computed by hand in float64 or
per layer, the plain dynamic programme, or the error a torch tensor of the same value gets)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import rnnkit.layers as L
from rnnkit.models import Model, Sequential
from rnnkit.nn import LSTM
from rnnkit.nn.ctc import edit_distance
from rnnkit.training.callbacks import BackupAndRestore

X = np.random.default_rng(0).normal(size=(4, 6, 3)).astype("float32")
Y = np.random.default_rng(1).normal(size=(4, 2)).astype("float32")


# -- a model computes in its parameters' dtype: the layers without parameters too -----------------
def test_a_float64_model_keeps_float64_through_layers_without_parameters() -> None:
    """After ``model.to(torch.float64)`` the Dense layers computed in float64, but Activation, Dropout and
    Flatten (no parameters, made float32) cast the float64 activations back to float32 between them:
    predict was 1e-7 off the same model computed in float64 instead of 1e-16."""
    torch.manual_seed(0)
    model = Sequential([L.Input((6, 3)), L.Dense(8), L.Activation("tanh"), L.Dropout(0.1), L.Flatten(), L.Dense(2)])
    model.to(torch.float64)
    seen: list[torch.dtype] = []
    for layer in model.layers[1:4]:
        layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    got = model.predict(X, verbose=0)
    assert got.dtype == np.float64 and seen == [torch.float64] * 3
    w = [torch.as_tensor(v) for v in model.get_weights()]
    x = torch.from_numpy(X).double()  # predict reads float32 inputs (as Keras' data adapters)
    expected = torch.tanh(x @ w[0] + w[1]).flatten(1) @ w[2] + w[3]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-13, atol=1e-13)


def test_a_converted_subclassed_model_runs_its_parameterless_layers_in_the_new_dtype() -> None:
    class Net(Model):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.act, self.b = L.Dense(5), L.Activation("sigmoid"), L.Dense(2)

        def call(self, x: Any, mask: Any = None) -> Any:
            return self.b(self.act(self.a(x)))

    torch.manual_seed(0)
    net = Net()
    x = torch.from_numpy(X[:, 0])
    net(x)
    net.double()
    got = net(x.double())
    w = [torch.as_tensor(v) for v in net.get_weights()]
    expected = torch.sigmoid(x.double() @ w[0] + w[1]) @ w[2] + w[3]
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    net.float()  # and back: every layer in float32 again
    assert net(x).dtype == torch.float32 and net.act.param_dtype == torch.float32


def test_a_model_of_layers_with_their_own_dtypes_keeps_each_layer_in_its_own() -> None:
    """A subclassed model whose first parameters were bfloat16 (a layer made with dtype="bfloat16") cast
    every input to bfloat16 from its second call on, so the float32 layer beside it failed
    (``mat1 and mat2 must have the same dtype``); before param_dtype read the parameters it worked."""

    class Net(Model):
        def __init__(self) -> None:
            super().__init__()
            self.low = L.Dense(4, dtype="bfloat16")
            self.full = L.Dense(4)

        def call(self, x: Any, mask: Any = None) -> Any:
            return self.low(x).float() + self.full(x)

    torch.manual_seed(0)
    net = Net()
    x = torch.from_numpy(X[:, 0])
    first = net(x)
    second = net(x)  # raised here
    torch.testing.assert_close(first, second)
    w = [torch.as_tensor(v) for v in net.get_weights()]
    low = (x.bfloat16() @ net.low.weight.T.detach() + net.low.bias.detach()).float()
    torch.testing.assert_close(second, low + x @ w[2] + w[3])
    assert net.param_dtype == torch.float32 and net.predict(X[:, 0], verbose=0).dtype == np.float32


# -- edit_distance through rapidfuzz: items rapidfuzz's hashing confuses ----------------------------
def _levenshtein(a: list[Any], b: list[Any]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


@pytest.mark.parametrize(("ref", "hyp"), [
    ([0], [2**61 - 1]),              # equal hashes (Python hashes ints modulo 2**61 - 1)
    ([5, 7], [5, 7 + 2**61 - 1]),
    ([-3], [-3 - (2**61 - 1)]),
    (["a"], [97]),                   # rapidfuzz reads a one-character string as its code point
    (["a", "b"], ["a", 98]),
    ("ab", [97, 98]),
])
def test_edit_distance_tells_apart_items_rapidfuzz_hashes_alike(ref: Any, hyp: Any) -> None:
    assert edit_distance(ref, hyp) == _levenshtein(list(ref), list(hyp)) >= 1
    assert edit_distance(hyp, ref) == _levenshtein(list(hyp), list(ref))


def test_edit_distance_still_counts_words_characters_and_ids() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance(["the", "cat", "sat"], ["the", "cat", "sat", "down"]) == 1
    assert edit_distance([1, 2, 3, -1], [1, 3, -2]) == _levenshtein([1, 2, 3, -1], [1, 3, -2]) == 2


# -- resuming a fit whose weights were all frozen ------------------------------------------------------
def _frozen_run(tmp_path: Path) -> tuple[Any, str]:
    torch.manual_seed(0)
    model = Sequential([L.Input((6, 3)), L.LSTM(4), L.Dense(2)])
    model.compile("sgd", "mse")
    model.fit(X, Y, epochs=1, verbose=0)  # the optimizer exists: its name is recorded as for a trained model
    model.trainable = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, Y, epochs=1, verbose=0, checkpoint_dir=tmp_path / "frozen")
    model.trainable = True
    return model, os.fspath(tmp_path / "frozen" / "last.ckpt")


def test_resuming_a_frozen_fit_with_trainable_weights_is_a_one_line_error(tmp_path: Path) -> None:
    """The frozen fit's checkpoint holds Lightning's empty optimizer state; a model with trainable weights
    resuming it stopped in torch's Optimizer.load_state_dict with a bare KeyError('param_groups')."""
    model, ckpt = _frozen_run(tmp_path)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        model.fit(X, Y, epochs=2, verbose=0, resume_from=ckpt)
    model.trainable = False  # frozen as then: it resumes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(X, Y, epochs=2, verbose=0, resume_from=ckpt)
    assert len(history.history["loss"]) == 1


def test_a_frozen_fits_backup_restored_with_trainable_weights_is_a_one_line_error(tmp_path: Path) -> None:
    model, ckpt = _frozen_run(tmp_path)
    backup = BackupAndRestore(tmp_path / "backup")
    os.makedirs(backup.backup_dir, exist_ok=True)
    shutil.copyfile(ckpt, backup.latest_path)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        model.fit(X, Y, epochs=2, verbose=0, callbacks=[backup])


# -- reset_state of an empty selection ------------------------------------------------------------------
def test_reset_state_refuses_an_empty_numpy_bool_mask_as_it_refuses_an_empty_tensor_one() -> None:
    """``reset_state([])`` now resets nothing; the early return also took an empty NumPy bool mask, which
    must cover the batch as a tensor mask must (it was refused before, and still is as a tensor)."""
    layer = LSTM(3, 4, batch_first=True, stateful=True)
    layer(torch.zeros(3, 5, 3))
    for mask in (torch.zeros(0, dtype=torch.bool), np.zeros(0, dtype=bool)):
        with pytest.raises(ValueError, match="bool mask must have shape"):
            layer.reset_state(mask)
    before = layer.state[0].clone()
    layer.reset_state([])
    layer.reset_state(np.zeros(0, dtype=np.int64))
    torch.testing.assert_close(layer.state[0], before)


def test_timeseries_dataset_from_a_bfloat16_tensor() -> None:
    """``timeseries_dataset_from_array`` on a bfloat16 tensor (NumPy has no bfloat16: ``.numpy()`` raised)."""
    from rnnkit.data.keras_utils import timeseries_dataset_from_array

    data = torch.arange(10, dtype=torch.bfloat16).reshape(10, 1)
    batches = list(timeseries_dataset_from_array(data, None, sequence_length=3, batch_size=8))
    first = batches[0][0] if isinstance(batches[0], (tuple, list)) else batches[0]
    np.testing.assert_array_equal(np.asarray(first[0]).reshape(-1), [0.0, 1.0, 2.0])
