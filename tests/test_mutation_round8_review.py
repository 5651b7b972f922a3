"""Mutation testing, round 8: the training engines (``Model.fit`` on Lightning, its checkpoints,
BackupAndRestore and resuming; the task engine behind ``rnnkit train``).

Each test here was written because a plausible wrong rule in the engines (a per-output loss
averaged per batch instead of per sample, a counter off by one, state not restored on resume ...)
left the rest of the suite passing. Every expected value comes from an independent reference: a
hand computation in NumPy, a plain torch loop written here, or the exact-resume property (an
interrupted then resumed run ends bit for bit where an uninterrupted one ends), never from the code
path under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from rnnkit.layers import Dense, Input
from rnnkit.models import Model, set_random_seed
from rnnkit.training import BackupAndRestore, Callback


# -- Model.fit: epoch logs ------------------------------------------------------------------------
def _linear_model_and_data() -> tuple[Model, np.ndarray, np.ndarray]:
    """A one-Dense functional model compiled with SGD/MSE, and 20 samples of 3 features."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 3)).astype("float32"), rng.normal(size=(20, 1)).astype("float32")
    set_random_seed(0)
    inp = Input(shape=(3,))
    model = Model(inp, Dense(1)(inp))
    model.compile("sgd", "mse")
    return model, x, y


def test_per_output_losses_are_averaged_over_samples_not_batches() -> None:
    """Validation batches of 2, 2 and 1 samples: each output's ``val_<name>_loss`` is the mean over the
    five samples (batches weighted by their size), computed here from the final weights in NumPy."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3)).astype("float32")
    ya, yb = rng.normal(size=(7, 1)).astype("float32"), rng.normal(size=(7, 1)).astype("float32")
    vx = rng.normal(size=(5, 3)).astype("float32")
    va, vb = 3 * rng.normal(size=(5, 1)).astype("float32"), rng.normal(size=(5, 1)).astype("float32")
    set_random_seed(0)
    inp = Input(shape=(3,))
    model = Model(inp, [Dense(1, name="a")(inp), Dense(1, name="b")(inp)])
    model.compile("sgd", ["mse", "mae"])
    history = model.fit(x, [ya, yb], epochs=1, batch_size=3, validation_data=(vx, [va, vb]),
                        validation_batch_size=2, shuffle=False, verbose=0)
    ka, ba = model.get_layer("a").get_weights()
    kb, bb = model.get_layer("b").get_weights()
    mse = float(((vx @ ka + ba - va) ** 2).mean())
    mae = float(np.abs(vx @ kb + bb - vb).mean())
    assert history.history["val_a_loss"][0] == pytest.approx(mse, rel=1e-5)
    assert history.history["val_b_loss"][0] == pytest.approx(mae, rel=1e-5)
    assert history.history["val_loss"][0] == pytest.approx(mse + mae, rel=1e-5)


def test_validation_freq_leaves_the_other_epochs_without_val_logs() -> None:
    """Keras' rule: with ``validation_freq=2`` dev is scored after epochs 2 and 4 only; the logs of
    epochs 1 and 3 have no ``val_loss`` (not the previous epoch's again), and each ``val_loss`` is
    the mean squared error of that epoch's final weights, computed here in NumPy."""
    from rnnkit.training import LambdaCallback

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 1)).astype("float32")
    vx, vy = rng.normal(size=(6, 3)).astype("float32"), rng.normal(size=(6, 1)).astype("float32")
    set_random_seed(0)
    inp = Input(shape=(3,))
    model = Model(inp, Dense(1, name="d")(inp))
    model.compile("sgd", "mse")
    seen: list[tuple[set[str], float]] = []

    def record(epoch: int, logs: dict) -> None:
        kernel, bias = model.get_layer("d").get_weights()
        seen.append((set(logs), float(((vx @ kernel + bias - vy) ** 2).mean())))

    history = model.fit(x, y, epochs=4, batch_size=4, validation_data=(vx, vy), validation_freq=2, shuffle=False,
                        verbose=0, callbacks=[LambdaCallback(on_epoch_end=record)])
    assert [keys for keys, _ in seen] == [{"loss"}, {"loss", "val_loss"}, {"loss"}, {"loss", "val_loss"}]
    assert history.history["val_loss"] == pytest.approx([seen[1][1], seen[3][1]], rel=1e-5)
    assert len(history.history["loss"]) == 4


def test_stop_training_set_after_a_batch_ends_the_epoch_after_that_batch() -> None:
    """Keras' fit loop checks ``model.stop_training`` after every training batch: a callback that sets
    it in ``on_train_batch_end`` of the second batch stops the fit after two batches (the epoch still
    ends, with its logs), not at the end of the epoch."""
    class StopAfterTwo(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.begun = 0

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            self.begun += 1

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if batch == 1:
                self.model.stop_training = True

    model, x, y = _linear_model_and_data()
    stop = StopAfterTwo()
    history = model.fit(x, y, epochs=3, batch_size=4, shuffle=False, verbose=0, callbacks=[stop])
    assert stop.begun == 2
    assert history.epoch == [0] and len(history.history["loss"]) == 1


# -- BackupAndRestore: exact resume -------------------------------------------------------------
class _CrashAtBatch(Callback):
    """Raise before the ``at``-th training batch of this fit (counted from 0 across epochs)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.seen == self.at:
            raise RuntimeError("simulated crash")
        self.seen += 1


def _backup_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5, 3)).astype("float32")
    return x, (x[:, :, 0].sum(1) > 0).astype(np.int64)


def _backup_model():
    from rnnkit.layers import GRU, Dropout
    from rnnkit.models import Sequential

    set_random_seed(3)
    model = Sequential([Input(shape=(5, 3)), GRU(4), Dropout(0.3), Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


# 24 training samples in batches of 8: 3 batches an epoch
_BACKUP_FIT = {"epochs": 4, "batch_size": 8, "validation_split": 0.2, "seed": 5, "verbose": 0, "shuffle": True}


def _stateful_callbacks(swapped: bool = False) -> list:
    """EarlyStopping that never stops and ReduceLROnPlateau halving the rate every epoch after the first:
    both carry state a resume must give back, each to its own class."""
    from rnnkit.training import EarlyStopping, ReduceLROnPlateau

    cbs = [EarlyStopping(patience=10), ReduceLROnPlateau(patience=1, factor=0.5, min_delta=10.0)]
    return cbs[::-1] if swapped else cbs


def _assert_same_run(model, history, ref_model, ref_history) -> None:
    import torch

    for (k, v), (k2, w) in zip(model.state_dict().items(), ref_model.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, w), k
    first = ref_history.epoch.index(history.epoch[0])
    assert history.history == {k: v[first:] for k, v in ref_history.history.items()}


def test_callback_states_go_to_callbacks_of_their_class_when_the_order_changes(tmp_path) -> None:
    """The resumed fit lists the same callbacks in another order: each takes back its own state (by
    class), and the run ends exactly as an uninterrupted one."""
    x, y = _backup_data()
    ref = _backup_model()
    ref_history = ref.fit(x, y, callbacks=_stateful_callbacks(), **_BACKUP_FIT)
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _backup_model().fit(x, y, callbacks=[BackupAndRestore(backup), *_stateful_callbacks(), _CrashAtBatch(7)],
                            **_BACKUP_FIT)  # in epoch 3, after the backup of epoch 2
    resumed = _backup_model()
    history = resumed.fit(x, y, callbacks=[BackupAndRestore(backup), *_stateful_callbacks(swapped=True)],
                          **_BACKUP_FIT)
    assert history.epoch == [2, 3]
    _assert_same_run(resumed, history, ref, ref_history)
    assert resumed.optimizer.learning_rate == pytest.approx(0.001 / 2**3)


def test_an_epoch_end_backup_after_mid_epoch_ones_resumes_at_the_next_epoch(tmp_path) -> None:
    """``save_freq=2`` with 3 batches an epoch: backups after batch 2 (mid-epoch 0), batch 4 (mid-epoch 1)
    and batch 6 (the last of epoch 1: an epoch-end backup, with no mid-epoch record). A crash in epoch 2
    then resumes from the start of epoch 2 and ends exactly as an uninterrupted run."""
    import torch

    x, y = _backup_data()
    ref = _backup_model()
    ref_history = ref.fit(x, y, callbacks=_stateful_callbacks(), **_BACKUP_FIT)
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _backup_model().fit(x, y, callbacks=[BackupAndRestore(backup, save_freq=2), *_stateful_callbacks(),
                                             _CrashAtBatch(7)], **_BACKUP_FIT)
    saved = torch.load(backup / "latest.ckpt", weights_only=True)
    assert saved["rnnkit"]["mid_epoch"] is None and saved["epoch"] == 1
    resumed = _backup_model()
    history = resumed.fit(x, y, callbacks=[BackupAndRestore(backup, save_freq=2), *_stateful_callbacks()],
                          **_BACKUP_FIT)
    assert history.epoch == [2, 3]
    _assert_same_run(resumed, history, ref, ref_history)


def test_a_second_mid_epoch_backup_after_a_mid_epoch_resume_counts_the_batches_before_it(tmp_path) -> None:
    """``save_freq=1``, 3 batches an epoch: a crash before batch 2 (backup after batch 1), a resume that trains
    batch 2 and crashes before batch 3 (its backup must say 2 batches done), a last resume: batch 3 is the
    next one, and the run ends exactly as an uninterrupted one."""
    import torch

    x, y = _backup_data()
    ref = _backup_model()
    ref_history = ref.fit(x, y, callbacks=_stateful_callbacks(), **_BACKUP_FIT)
    backup = tmp_path / "backup"
    model = _backup_model()
    for _ in range(2):
        with pytest.raises(RuntimeError, match="simulated crash"):
            model.fit(x, y, callbacks=[BackupAndRestore(backup, save_freq=1), *_stateful_callbacks(), _CrashAtBatch(1)],
                      **_BACKUP_FIT)
    assert torch.load(backup / "latest.ckpt", weights_only=True)["rnnkit"]["mid_epoch"]["batches"] == 2
    history = model.fit(x, y, callbacks=[BackupAndRestore(backup, save_freq=1), *_stateful_callbacks()], **_BACKUP_FIT)
    assert history.epoch == [0, 1, 2, 3]
    _assert_same_run(model, history, ref, ref_history)


def test_a_mid_epoch_resume_with_a_self_shuffling_dataloader_warns(tmp_path) -> None:
    """A DataLoader with ``shuffle=True`` draws its own order: the batches a mid-epoch resume passes over
    are not those trained on before, which fit says (as documented) instead of resuming silently."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = _backup_data()
    data = DataLoader(TensorDataset(torch.from_numpy(x[:24]), torch.from_numpy(y[:24])), batch_size=8, shuffle=True)
    fit = {"epochs": 2, "verbose": 0, "seed": 5}
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _backup_model().fit(data, callbacks=[BackupAndRestore(backup, save_freq=1), _CrashAtBatch(2)], **fit)
    with pytest.warns(UserWarning, match="shuffles by itself"):
        _backup_model().fit(data, callbacks=[BackupAndRestore(backup, save_freq=1)], **fit)


# -- checkpoints are read as data ----------------------------------------------------------------
def _spy_torch_load(monkeypatch) -> list:
    import torch

    calls: list = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def test_resume_from_reads_the_checkpoint_with_weights_only_even_without_a_checkpoint_dir(tmp_path,
                                                                                          monkeypatch) -> None:
    """Every ``torch.load`` of a resume asks for ``weights_only=True`` (a checkpoint is data, never
    code), also when the resumed fit writes no checkpoints of its own, and with the environment
    variable that turns torch's default off."""
    x, y = _backup_data()
    first = _backup_model()
    first.fit(x, y, checkpoint_dir=tmp_path / "ckpt", **{**_BACKUP_FIT, "epochs": 2})
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    calls = _spy_torch_load(monkeypatch)
    history = _backup_model().fit(x, y, resume_from=tmp_path / "ckpt", **{**_BACKUP_FIT, "epochs": 3})
    assert history.epoch == [2]
    assert calls and all(flag is True for flag in calls), calls


# -- Model.fit: the shuffling order depends on (seed, epoch) only ---------------------------------
def test_a_fit_from_initial_epoch_shuffles_as_that_epoch_of_a_whole_run() -> None:
    """Plain SGD (no optimizer state) and no dropout: one fit of epochs 0-2 equals a fit of epoch 0
    followed by ``fit(initial_epoch=1, epochs=3)``, weight for weight, only if each epoch draws the
    order of its own number (the second fit's first epoch is epoch 1, not a second epoch 0)."""
    import torch

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(24, 3)).astype("float32"), rng.normal(size=(24, 1)).astype("float32")

    def model():
        set_random_seed(0)
        inp = Input(shape=(3,))
        m = Model(inp, Dense(1)(Dense(4, activation="tanh")(inp)))
        m.compile("sgd", "mse")
        return m

    whole = model()
    whole.fit(x, y, epochs=3, batch_size=4, seed=7, verbose=0)
    split = model()
    split.fit(x, y, epochs=1, batch_size=4, seed=7, verbose=0)
    history = split.fit(x, y, initial_epoch=1, epochs=3, batch_size=4, seed=7, verbose=0)
    assert history.epoch == [1, 2]
    for a, b in zip(whole.state_dict().values(), split.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_stop_training_set_at_an_epoch_end_trains_no_batch_of_the_next_epoch() -> None:
    """Keras checks ``model.stop_training`` after ``on_epoch_end``: a callback setting it at the end
    of epoch 2 leaves exactly 2 epochs of 5 batches, not a batch of a third epoch."""
    class Count(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.batches = 0

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            self.batches += 1

    class StopAfterSecond(Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 1:
                self.model.stop_training = True

    model, x, y = _linear_model_and_data()
    count = Count()
    history = model.fit(x, y, epochs=5, batch_size=4, verbose=0, callbacks=[StopAfterSecond(), count])
    assert count.batches == 10 and history.epoch == [0, 1]


def test_fit_trains_with_dropout_active_and_leaves_the_model_in_inference_mode() -> None:
    """A Keras model rests in inference mode; ``fit`` trains it in training mode. With a learning rate of
    0 the weights stay put, so the inference-mode loss is the NumPy one, and the training loss (dropout
    at 0.5 on the inputs, inputs kept scaled by 2) is not."""
    from rnnkit.layers import Dropout
    from rnnkit.training import SGD

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 3)).astype("float32"), rng.normal(size=(20, 1)).astype("float32")
    set_random_seed(0)
    inp = Input(shape=(3,))
    model = Model(inp, Dense(1, name="o")(Dropout(0.5)(inp)))
    model.compile(SGD(learning_rate=0.0), "mse")
    history = model.fit(x, y, epochs=1, batch_size=20, shuffle=False, verbose=0)
    kernel, bias = model.get_layer("o").get_weights()
    clean = float(((x @ kernel + bias - y) ** 2).mean())
    assert history.history["loss"][0] != pytest.approx(clean, rel=1e-3)  # dropout acted in training
    assert model.evaluate(x, y, batch_size=20, verbose=0) == pytest.approx(clean, rel=1e-5)
    assert not model.training


# -- resuming: the batches passed over ------------------------------------------------------------
def test_pass_over_skips_the_first_batches_once_and_refuses_data_with_fewer() -> None:
    from rnnkit.training.resuming import PassOver

    loader = [[0, 1], [2, 3], [4, 5], [6]]
    over = PassOver(loader, 3, lambda skip: ValueError(f"fewer than {skip}"))
    assert len(over) == 4
    assert list(over) == [[6]]  # the first pass starts after 3 batches
    assert list(over) == loader  # later passes are whole
    with pytest.raises(ValueError, match="fewer than 5"):
        list(PassOver(loader, 5, lambda skip: ValueError(f"fewer than {skip}")))
    assert list(PassOver(loader, 4, lambda skip: ValueError("no"))) == []  # exactly as many: nothing left


# -- the task engine ----------------------------------------------------------------------------
def test_task_train_loss_is_the_mean_over_samples_of_a_plain_torch_loop() -> None:
    """10 samples in batches of 4, 4 and 2: the history's ``train_loss`` is each batch's loss weighted by
    its size (the mean over the epoch's samples), as a plain torch loop with the same SGD computes it."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from rnnkit.tasks.engine import EngineOptions, fit

    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
    y = 2 * torch.randn(10, 1, generator=torch.Generator().manual_seed(2))

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))

    reference = net()
    opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    expected = []
    for _epoch in range(2):
        total = 0.0
        for i in range(0, 10, 4):
            opt.zero_grad()
            loss = nn.functional.mse_loss(reference(x[i:i + 4]), y[i:i + 4])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(x[i:i + 4])
        expected.append(total / 10)

    model = net()
    history = fit(model, DataLoader(TensorDataset(x, y), batch_size=4), DataLoader(TensorDataset(x, y), batch_size=10),
                  loss_fn=lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]), predict_fn=lambda m, b: (m(b[0]), b[1]),
                  metric_fn=lambda p, t: {"score": 0.0},
                  options=EngineOptions(epochs=2, optimizer="sgd", learning_rate=0.1, clip_norm=None, patience=None,
                                        monitor="score", progress=False, accelerator="cpu"),
                  log=lambda _: None)
    assert [row["train_loss"] for row in history] == pytest.approx(expected, rel=1e-5)


def _lm_run(run, *, epochs: int, interrupt_at: int | None = None, resume: bool = False):
    """The task engine on the language model's own window dataset (variable lengths, drawn per epoch
    from the dataset's epoch counter): returns the model and the window starts trained on, in order."""
    import contextlib

    import torch
    from torch import nn

    from rnnkit.tasks.engine import EngineOptions, checkpoint_interval, fit, resuming
    from rnnkit.tasks.language_model import _loader

    streams = np.random.default_rng(0).integers(0, 10, size=(2, 120))
    starts: list[int] = []

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.emb, self.out = nn.Embedding(10, 4), nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.emb(x))

    def loss_fn(model, batch):
        starts.append(int(batch[2]))
        if interrupt_at is not None and len(starts) == interrupt_at:
            raise KeyboardInterrupt
        return nn.functional.cross_entropy(model(batch[0]).flatten(0, 1), batch[1].flatten())

    def predict_fn(model, batch):
        return model(batch[0]).flatten(0, 1), batch[1].flatten()

    model = Net()
    options = EngineOptions(epochs=epochs, optimizer="adam", learning_rate=0.01, clip_norm=None, patience=None,
                            monitor="score", progress=False, accelerator="cpu")
    with resuming() if resume else contextlib.nullcontext(), checkpoint_interval(None):
        fit(model, _loader(streams, 8, True, 0), _loader(streams, 8, False, 0), loss_fn=loss_fn, predict_fn=predict_fn,
            metric_fn=lambda p, t: {"score": float((p.argmax(-1) == t).float().mean())}, options=options, run=run,
            log=lambda _: None)
    return model, starts


def test_a_self_shuffling_dataset_resumes_with_the_windows_of_its_epoch(tmp_path) -> None:
    """The language model's windows are drawn from the dataset's own epoch counter: a run interrupted in
    epoch 3 and resumed trains epoch 3 on the windows of epoch 3 (not those of epoch 1 again) and ends
    with the uninterrupted run's weights."""
    import torch

    from rnnkit.tasks.run import RunDir

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight, starts = _lm_run(RunDir(tmp_path / "a"), epochs=3)
    epoch_starts = [i for i, s in enumerate(starts) if s == 0]
    assert len(epoch_starts) == 3 and starts[epoch_starts[1]:epoch_starts[2]] != starts[:epoch_starts[1]]
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        _lm_run(RunDir(tmp_path / "b"), epochs=3, interrupt_at=epoch_starts[2] + 2)
    resumed, resumed_starts = _lm_run(RunDir(tmp_path / "b"), epochs=3, resume=True)
    assert resumed_starts == starts[epoch_starts[2]:]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


_SCRIPT = [(1.0, 0.2), (0.5, 0.0), (1.0, 0.3), (0.9, 0.0), (2.0, 0.0)]  # (score, cer) per epoch


def _scripted_run(run, *, done: int = 0, interrupt_at: int | None = None, resume: bool = False,
                  script: list[tuple[float, float]] = _SCRIPT, minutes: float | None = None, dev_stop: int | None = None,
                  **settings):
    """The task engine with a scripted dev score per epoch (``done``: epochs before this call), ``score``
    monitored and ``cer`` breaking ties, patience 3, 4 batches an epoch (``settings``: other options)."""
    import contextlib

    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from rnnkit.tasks.engine import EngineOptions, checkpoint_interval, fit, resuming

    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    y = torch.randn(32, 1, generator=torch.Generator().manual_seed(2))
    calls = {"train": 0, "dev": done}
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1))

    def loss_fn(m, batch):
        calls["train"] += 1
        if interrupt_at is not None and calls["train"] == interrupt_at:
            raise KeyboardInterrupt
        return nn.functional.mse_loss(m(batch[0]), batch[1])

    def metric_fn(p, t):
        calls["dev"] += 1
        if dev_stop is not None and calls["dev"] == dev_stop:
            raise KeyboardInterrupt
        score, cer = script[calls["dev"] - 1]
        return {"score": score, "cer": cer}

    options = EngineOptions(**{"epochs": len(script), "optimizer": "adam", "learning_rate": 0.05, "clip_norm": None,
                               "patience": 3, "monitor": "score", "mode": "max", "tie_break": "cer",
                               "tie_break_mode": "min", "progress": False, "accelerator": "cpu", **settings})
    with resuming() if resume else contextlib.nullcontext(), checkpoint_interval(minutes):
        history = fit(model, DataLoader(TensorDataset(x, y), batch_size=8), DataLoader(TensorDataset(x, y), batch_size=32),
                      loss_fn=loss_fn, predict_fn=lambda m, b: (m(b[0]), b[1]), metric_fn=metric_fn, options=options,
                      run=run, log=lambda _: None)
    return model, history


def test_a_resumed_task_run_keeps_its_epochs_without_improvement_and_its_tie_breaker(tmp_path) -> None:
    """Best at epoch 1, no improvement at 2, an exact tie with a worse tie-breaker at 3, none at 4: the
    third epoch without improvement ends the run after epoch 4 with epoch 1's weights. Interrupted in
    epoch 3 and resumed, the run must count the epoch without improvement before the interruption and
    compare the tie with the best epoch's tie-breaker, and so end exactly as the uninterrupted run."""
    import torch

    from rnnkit.tasks.engine import stop_reason
    from rnnkit.tasks.run import RunDir

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight, history = _scripted_run(RunDir(tmp_path / "a"))
    assert [row["epoch"] for row in history] == [1, 2, 3, 4] and stop_reason() == "early"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        _scripted_run(RunDir(tmp_path / "b"), interrupt_at=10)  # batch 2 of epoch 3
    resumed, resumed_history = _scripted_run(RunDir(tmp_path / "b"), done=2, resume=True)

    def rows(h):
        return [(r["epoch"], r["train_loss"], r["dev_score"], r["dev_cer"], r["lr"]) for r in h]

    assert rows(resumed_history) == rows(history) and stop_reason() == "early"
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # the finished run resumed: nothing to train, and it still says why it ended before train.epochs
    again, again_history = _scripted_run(RunDir(tmp_path / "a"), done=4, resume=True)
    assert rows(again_history) == rows(history) and stop_reason() == "early"
    for a, b in zip(straight.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_resumed_task_run_goes_on_with_its_weight_average(tmp_path) -> None:
    """Averaging starts after epoch 2 (no improvement); the run is interrupted in epoch 3 and resumed; epoch
    4 is the best, so the kept weights are the average of the iterates since epoch 2, as in the
    uninterrupted run, bit for bit."""
    import torch

    from rnnkit.tasks.run import RunDir

    script = [(1.0, 0.0), (0.5, 0.0), (0.6, 0.0), (2.0, 0.0)]
    settings = {"script": script, "average_weights": True, "patience": None, "tie_break": None}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight, history = _scripted_run(RunDir(tmp_path / "a"), **settings)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        _scripted_run(RunDir(tmp_path / "b"), interrupt_at=10, **settings)
    resumed, resumed_history = _scripted_run(RunDir(tmp_path / "b"), done=2, resume=True, **settings)
    assert [r["train_loss"] for r in resumed_history] == [r["train_loss"] for r in history]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_run_stopped_while_scoring_dev_resumes_to_the_uninterrupted_result(tmp_path) -> None:
    """Mid-epoch checkpoints after every batch but an epoch's last; Ctrl-C while dev is scored after
    epoch 2: the resumed run ends with the uninterrupted run's history and weights."""
    import torch

    from rnnkit.tasks.run import RunDir

    settings = {"script": [(1.0, 0.0), (0.5, 0.0), (0.6, 0.0), (2.0, 0.0)], "patience": None, "tie_break": None}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight, history = _scripted_run(RunDir(tmp_path / "a"), **settings)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        _scripted_run(RunDir(tmp_path / "b"), minutes=1e-9, dev_stop=2, **settings)
    resumed, resumed_history = _scripted_run(RunDir(tmp_path / "b"), done=1, resume=True, minutes=1e-9, **settings)
    assert [(r["epoch"], r["train_loss"]) for r in resumed_history] == [(r["epoch"], r["train_loss"]) for r in history]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
