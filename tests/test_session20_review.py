"""Review of session 20's changes (SIGTERM and Ctrl-C during task training, Keras optimizer state):
regressions found by running a demanding user's cases."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rnnkit.data.bucketing import EpochSampler
from rnnkit.layers import Dense, Input
from rnnkit.models import Sequential
from rnnkit.tasks.engine import EngineOptions, checkpoint_interval, fit, resuming
from rnnkit.tasks.run import RunDir


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x)


def _send_own(signum: int) -> None:
    handler = signal.getsignal(signum)
    assert callable(handler), f"nothing handles signal {signum} here: {handler!r}"  # else it ends the test run
    os.kill(os.getpid(), signum)


def _train(run: RunDir, *, signal_at_dev_batch: int | None = None, signum: int = signal.SIGTERM,
           resume: bool = False) -> tuple[list[dict], list[list[int]]]:
    """3 epochs of 5 training batches, each validated on 4 dev batches; ``signal_at_dev_batch``: send
    ``signum`` to this process during that dev batch (counted from 1 over the whole fit)."""
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long()
    loader = DataLoader(TensorDataset(torch.arange(40), x, y), batch_size=8,
                        sampler=EpochSampler(40, shuffle=True, seed=3), generator=torch.Generator().manual_seed(3))
    dev = DataLoader(TensorDataset(torch.arange(40), x, y), batch_size=10)
    batches: list[list[int]] = []
    dev_batches = {"n": 0}

    def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        batches.append(batch[0].tolist())
        return F.cross_entropy(model(batch[1]), batch[2])

    def predict_fn(model: nn.Module, batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        dev_batches["n"] += 1
        if dev_batches["n"] == signal_at_dev_batch:
            _send_own(signum)
        return model(batch[1]).softmax(-1), batch[2]

    def metric_fn(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {"accuracy": float((scores.argmax(-1) == targets).float().mean())}

    options = EngineOptions(epochs=3, learning_rate=0.05, optimizer="adam", progress=False, accelerator="cpu")
    with resuming() if resume else checkpoint_interval(10), checkpoint_interval(10):
        history = fit(_Net(), loader, dev, loss_fn=loss_fn, predict_fn=predict_fn, metric_fn=metric_fn,
                      options=options, run=run, log=lambda _: None)
    return history, batches


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_stop_during_an_epochs_validation_keeps_that_epoch(tmp_path: Path, signum: int) -> None:
    """A scheduler's SIGTERM while epoch 2 is validated (its first of 4 dev batches): the epoch is
    trained, so it is validated, checkpointed, and then the fit stops with 143, as a first Ctrl-C
    there does; the resumed run trains epoch 3 only. (Lightning's validation loop stopped at the
    next dev batch: the epoch's checkpoint was never written and the whole epoch was trained again.)"""
    _, straight_batches = _train(RunDir(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    with pytest.raises((SystemExit, KeyboardInterrupt)) as stop:
        _train(RunDir(tmp_path / "b"), signal_at_dev_batch=5, signum=signum)  # epoch 2's first dev batch
    if signum == signal.SIGTERM:
        assert stop.value.code == 143
    history, batches = _train(RunDir(tmp_path / "b"), resume=True)
    assert batches == straight_batches[10:]  # epoch 3 only
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_the_same_model_may_swap_which_layers_train(tmp_path: Path) -> None:
    """Train the second layer with the first frozen, then the first with the second frozen, on the
    same compiled model: a change of the trainable set of the same model, which ``build`` documents
    as rebuilding the torch optimizer (what rnnkit did before), not another model's weights."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    torch.manual_seed(0)
    model = Sequential([Input(shape=(3,)), Dense(4, activation="tanh"), Dense(1)])
    model.compile("adam", "mse")
    model.layers[0].trainable = False
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    first = model.layers[0].get_weights()[0].copy()
    model.layers[0].trainable, model.layers[1].trainable = True, False
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert not np.array_equal(first, model.layers[0].get_weights()[0])
    assert model.optimizer.iterations == 8

    other = Sequential([Input(shape=(3,)), Dense(4, activation="tanh"), Dense(1)])
    other.compile(model.optimizer, "mse")
    with pytest.raises(ValueError, match="another model"):  # still refused: a second model
        other.fit(x, y, batch_size=4, epochs=1, verbose=0)


def test_restore_best_weights_wins_over_the_ema_averages_as_in_keras() -> None:
    """``use_ema`` with ``EarlyStopping(restore_best_weights=True)``: Keras 3 writes the averages into
    the weights (``finalize_variable_values``) before the callbacks' ``on_train_end``, where the best
    epoch's weights are put back, so a fit ends with the best epoch's weights. rnnkit finalized after
    ``on_train_end``: the averages overwrote the weights just restored."""
    from rnnkit.training import EarlyStopping
    from rnnkit.training import optimizers as O

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    torch.manual_seed(0)
    model = Sequential([Input(shape=(3,)), Dense(4, activation="tanh"), Dense(1)])
    model.compile(O.Adam(0.01, use_ema=True, ema_momentum=0.9), "mse")
    stop = EarlyStopping(monitor="loss", patience=10, restore_best_weights=True)
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False, callbacks=[stop])
    assert stop.best_weights is not None
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, stop.best_weights[name], rtol=0, atol=0, msg=name)
