"""Round-2 review of lines the default suite never ran (optimizers, the training step, evaluate and
predict, the engine, rnnkit.nn layers and wrappers, minRNN cells, the Layer base class, task
configs, the CLI). Each branch is checked for the right behaviour: Keras 3 (torch backend) for
Keras-API behaviour, torch.optim / torch.nn for optimizer and layer maths, hand computations
otherwise."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from rnnkit.training import optimizers as O


def keras_module() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras", reason="Keras 3 is the reference for these comparisons")
    if keras.backend.backend() != "torch":
        pytest.skip("these comparisons need KERAS_BACKEND=torch")
    return keras


def _steps_ours(optimizer: O.Optimizer, w0: list[np.ndarray], grads: list[list[np.ndarray]]) -> list[np.ndarray]:
    params = [nn.Parameter(torch.tensor(w)) for w in w0]
    torch_opt = optimizer.build(params)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.tensor(g)
        optimizer.clip(params)
        optimizer.before_step()
        torch_opt.step()
    return [p.detach().numpy() for p in params]


def _steps_keras(optimizer: Any, keras: Any, w0: list[np.ndarray], grads: list[list[np.ndarray]]) -> list[np.ndarray]:
    variables = [keras.Variable(w.copy()) for w in w0]
    for gs in grads:
        optimizer.apply_gradients([(torch.tensor(g), v) for g, v in zip(gs, variables)])
    return [np.asarray(v.numpy()) for v in variables]


def _w_and_g(steps: int = 3) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(0)
    w0 = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")]
    return w0, [[rng.normal(size=w.shape).astype("float32") for w in w0] for _ in range(steps)]


# -- optimizers ------------------------------------------------------------------------------------
def test_sgd_nesterov_without_momentum_is_plain_sgd_as_in_keras() -> None:
    """Keras takes SGD(nesterov=True) with its default momentum 0 (plain SGD); rnnkit refused it."""
    keras = keras_module()
    w0, grads = _w_and_g()
    ours = _steps_ours(O.SGD(learning_rate=0.1, nesterov=True), w0, grads)
    theirs = _steps_keras(keras.optimizers.SGD(learning_rate=0.1, nesterov=True), keras, w0, grads)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    hand = [w - 0.1 * sum(g[i] for g in grads) for i, w in enumerate(w0)]
    for a, b in zip(ours, hand):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert O.SGD(nesterov=True).get_config()["nesterov"] is True  # the setting round-trips
    with pytest.raises(ValueError, match="momentum must be between 0 and 1"):
        O.SGD(momentum=1.5)


@pytest.mark.parametrize("rate", [np.float32(0.05), np.float64(0.05), np.array(0.05), torch.tensor(0.05)],
                         ids=["np.float32", "np.float64", "0-d array", "0-d tensor"])
def test_numpy_and_tensor_scalar_learning_rates_are_taken_as_in_keras(rate: Any) -> None:
    """Keras takes a NumPy scalar or 0-d tensor learning rate; rnnkit raised 'must be a number or a
    schedule, got float32'."""
    keras = keras_module()
    w0, grads = _w_and_g()
    opt = O.Adam(learning_rate=rate)
    assert isinstance(opt.get_config()["learning_rate"], float)
    ours = _steps_ours(opt, w0, grads)
    theirs = _steps_keras(keras.optimizers.Adam(learning_rate=float(rate)), keras, w0, grads)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)  # Keras keeps the rate in float32


def test_bad_learning_rates_and_schedule_arguments_are_one_line_errors() -> None:
    with pytest.raises(TypeError, match="learning_rate must be a number or a schedule, got str"):
        O.Adam(learning_rate="0.01")
    with pytest.raises(TypeError, match="got Tensor"):
        O.Adam(learning_rate=torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="finite number >= 0"):
        O.Adam(learning_rate=np.float32("nan"))
    with pytest.raises(ValueError, match="decay_steps must be positive, got 0"):
        O.ExponentialDecay(0.1, 0, 0.5)
    with pytest.raises(ValueError, match="decay_steps must be positive, got -1"):
        O.CosineDecay(0.1, -1)
    with pytest.raises(ValueError, match="2 values and 2 boundaries"):
        O.PiecewiseConstantDecay([1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'Foo'; choose one of ExponentialDecay"):
        O.Adam.from_config({"learning_rate": {"class_name": "Foo", "config": {}}})
    with pytest.raises(ValueError, match="unknown optimizer class 'Lamb'; choose one of SGD, Adam"):
        O.get_optimizer({"class_name": "Lamb", "config": {}})
    with pytest.raises(TypeError, match="pass the optimizer class"):
        O.get_optimizer(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
    with pytest.raises(TypeError, match="got int"):
        O.get_optimizer(3)  # type: ignore[arg-type]
    assert repr(O.RMSprop(learning_rate=0.5)) == "RMSprop(learning_rate=0.5)"
    assert O.SGD(learning_rate=None).learning_rate == 0.01  # None: the optimizer's Keras default
    assert O.Adam(learning_rate=None).learning_rate == 0.001


def test_function_schedule_gets_the_step_and_cannot_be_saved() -> None:
    """A callable learning_rate gets the optimizer step (docs/models.md): plain SGD by hand."""
    w0, grads = _w_and_g(3)
    seen: list[int] = []

    def rate(step: int) -> float:
        seen.append(step)
        return 0.1 / (step + 1)

    opt = O.SGD(learning_rate=rate)
    assert isinstance(opt.schedule, O.FunctionSchedule)
    ours = _steps_ours(opt, w0, grads)
    hand = [w - sum(0.1 / (k + 1) * grads[k][i] for k in range(3)) for i, w in enumerate(w0)]
    for a, b in zip(ours, hand):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert seen[-3:] == [0, 1, 2] and opt.iterations == 3
    with pytest.raises(ValueError, match="given as a Python function cannot be saved"):
        O.serialize_optimizer(opt)
    with pytest.raises(TypeError, match="follows a schedule"):
        opt.learning_rate = 0.5


def test_optimizer_bookkeeping_before_build() -> None:
    opt = O.Adam()
    assert not opt.built
    opt.before_step()  # no torch optimizer yet: the step is only counted
    assert opt.iterations == 1 and not opt.built
    with pytest.raises(ValueError, match="no trainable parameters; is every layer frozen"):
        opt.build([nn.Parameter(torch.zeros(2), requires_grad=False)])
    opt.build([nn.Parameter(torch.zeros(2))])
    assert opt.built
    p = nn.Parameter(torch.ones(3))
    O.clip_gradients([p], clipnorm=1.0)  # no gradient anywhere: nothing to clip, no error
    assert p.grad is None


def test_fused_step_only_for_real_floating_parameters() -> None:
    assert O.fused_step_kwargs(torch.optim.Adam, [nn.Parameter(torch.zeros(2))]) == {"fused": True}
    assert O.fused_step_kwargs(torch.optim.Adam, [nn.Parameter(torch.zeros(2, dtype=torch.complex64))]) == {}
    assert O.fused_step_kwargs(torch.optim.Adam, []) == {}
    assert O.fused_step_kwargs(torch.optim.NAdam, [nn.Parameter(torch.zeros(2))]) == {}
    # a complex parameter still trains, with torch's default (non-fused) step: Adam by torch itself
    p = nn.Parameter(torch.tensor([1 + 2j, -1j], dtype=torch.complex64))
    q = nn.Parameter(p.detach().clone())
    opt = O.Adam(learning_rate=0.1, epsilon=1e-8)
    built = opt.build([p])
    ref = torch.optim.Adam([q], lr=0.1, eps=1e-8)
    g = torch.tensor([0.5 - 1j, 2j], dtype=torch.complex64)
    p.grad, q.grad = g.clone(), g.clone()
    opt.before_step()
    built.step()
    ref.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [O.RMSprop, O.Adagrad])
def test_keras_form_steps_refuse_sparse_gradients(cls: type[O.Optimizer]) -> None:
    emb = nn.Embedding(5, 2, sparse=True)
    opt = cls(learning_rate=0.1)
    built = opt.build(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        built.step()


# -- the training step: class weights, sample weights, batch checks -----------------------------------
def _dense_model(units: int, activation: str, loss: str) -> Any:
    from rnnkit.layers import Dense, Input
    from rnnkit.models import Sequential, set_random_seed

    set_random_seed(0)
    model = Sequential([Input(shape=(4,)), Dense(units, activation=activation)])
    model.compile(optimizer="sgd", loss=loss)
    return model


_X = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")


def test_class_weight_with_one_hot_labels_weights_by_argmax_as_keras() -> None:
    """Keras maps one-hot labels to class ids by argmax; unlisted classes weigh 1 (Keras'
    ``class_weight.get(c, 1.0)``): the loss is ``mean(w * per-sample loss)``, by hand."""
    model = _dense_model(3, "softmax", "categorical_crossentropy")
    y = np.eye(3, dtype="float32")[[0, 1, 2, 1, 0, 2]]
    p = model.predict(_X, verbose=0)
    loss = model.train_on_batch(_X, y, class_weight={1: 2.0, 2: 0.5})
    w = np.array([1, 2, 0.5, 2, 1, 0.5])
    assert loss == pytest.approx(float((-np.log((p * y).sum(1)) * w).mean()), rel=1e-5)


def test_class_weight_for_a_binary_output_rounds_the_label() -> None:
    model = _dense_model(1, "sigmoid", "binary_crossentropy")
    y = np.array([0, 1, 1, 0, 1, 0], dtype="float32")
    p = model.predict(_X, verbose=0)[:, 0]
    loss = model.train_on_batch(_X, y, class_weight={1: 3.0})
    per = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert loss == pytest.approx(float((per * np.where(y == 1, 3.0, 1.0)).mean()), rel=1e-5)
    several = _dense_model(3, "sigmoid", "binary_crossentropy")
    with pytest.raises(ValueError, match="class_weight needs one label per sample"):
        several.train_on_batch(_X, np.ones((6, 3), dtype="float32"), class_weight={1: 3.0})


def test_class_ids_beyond_the_class_weight_table_weigh_one() -> None:
    model = _dense_model(3, "softmax", "sparse_categorical_crossentropy")
    y = np.array([0, 1, 2, 1, 0, 2])
    p = model.predict(_X, verbose=0)
    loss = model.train_on_batch(_X, y, class_weight={0: 2.0})  # table [2.0]: classes 1 and 2 weigh 1
    per = -np.log(p[np.arange(6), y])
    assert loss == pytest.approx(float((per * np.where(y == 0, 2.0, 1.0)).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="class_weight keys must be class ids >= 0"):
        model.train_on_batch(_X, y, class_weight={-1: 2.0})


def test_sample_weight_of_shape_n_by_1_and_a_wrong_shape() -> None:
    model = _dense_model(3, "softmax", "sparse_categorical_crossentropy")
    y = np.array([0, 1, 2, 1, 0, 2])
    sw = np.arange(6, dtype="float32")
    assert model.evaluate(_X, y, sample_weight=sw[:, None], verbose=0) == pytest.approx(
        model.evaluate(_X, y, sample_weight=sw, verbose=0), rel=1e-6)
    p = model.predict(_X, verbose=0)
    assert model.evaluate(_X, y, sample_weight=sw, verbose=0) == pytest.approx(
        float((-np.log(p[np.arange(6), y]) * sw).mean()), rel=1e-5)  # Keras: sum(w * l) / N
    with pytest.raises(Exception, match=r"sample_weight of shape \[6, 2\] does not fit the per-sample loss"):
        model.evaluate(_X, y, sample_weight=np.ones((6, 2), dtype="float32"), verbose=0)


def test_class_weight_is_refused_for_several_outputs() -> None:
    from rnnkit.layers import Dense, Input
    from rnnkit.models import Model

    a, b = Input(shape=(4,)), Input(shape=(4,))
    model = Model([a, b], [Dense(2)(a), Dense(1)(b)])
    model.compile(optimizer="sgd", loss=["mse", "mse"])
    with pytest.raises(ValueError, match="class_weight works for single-output models"):
        model.train_on_batch([_X, _X], [np.zeros((6, 2)), np.zeros((6, 1))], class_weight={0: 1.0})
    # a Dataset whose items carry one input for this two-input model: one line naming both counts
    ds = torch.utils.data.TensorDataset(torch.tensor(_X), torch.zeros(6, 2))
    with pytest.raises(Exception, match=r"the model has 2 input\(s\)|2 inputs"):
        model.evaluate(ds, verbose=0)


def test_a_dataset_without_targets_is_refused_by_fit() -> None:
    model = _dense_model(3, "softmax", "sparse_categorical_crossentropy")
    with pytest.raises(Exception, match="need targets y"):
        model.fit(torch.utils.data.TensorDataset(torch.tensor(_X)), epochs=1, verbose=0)


# -- evaluate / predict -----------------------------------------------------------------------------
def test_predict_and_evaluate_with_steps_take_the_first_batches_as_keras() -> None:
    keras = keras_module()
    model = _dense_model(3, "softmax", "sparse_categorical_crossentropy")
    y = np.array([0, 1, 2, 1, 0, 2])
    theirs = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3, activation="softmax")])
    theirs.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    layer = model.layers[-1]
    theirs.layers[-1].set_weights([layer.weight.detach().numpy().T, layer.bias.detach().numpy()])
    ours_p = model.predict(_X, batch_size=2, steps=2, verbose=0)
    theirs_p = theirs.predict(_X, batch_size=2, steps=2, verbose=0)
    assert ours_p.shape == theirs_p.shape == (4, 3)
    np.testing.assert_allclose(ours_p, theirs_p, rtol=1e-5, atol=1e-6)
    ours_l = model.evaluate(_X, y, batch_size=2, steps=1, verbose=0)
    theirs_l = theirs.evaluate(_X, y, batch_size=2, steps=1, verbose=0)
    assert ours_l == pytest.approx(theirs_l, rel=1e-5)


class _Empty(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        return iter(())


def test_predict_and_evaluate_on_a_stream_without_items_say_so() -> None:
    model = _dense_model(3, "softmax", "sparse_categorical_crossentropy")
    model.predict(_X[:1], verbose=0)  # built
    with pytest.raises(Exception, match="predict received no samples"):
        model.predict(torch.utils.data.DataLoader(_Empty(), batch_size=2), verbose=0)
    with pytest.raises(Exception, match="evaluate received no samples"):
        model.evaluate(torch.utils.data.DataLoader(_Empty(), batch_size=2), verbose=0)
    with pytest.raises(Exception, match=r"\*_on_batch methods take one batch of arrays"):
        model.train_on_batch(torch.utils.data.TensorDataset(torch.tensor(_X)))
    with pytest.raises(Exception, match="y and sample_weight come from its items"):
        model.evaluate(torch.utils.data.TensorDataset(torch.tensor(_X), torch.zeros(6, dtype=torch.long)),
                       np.zeros(6), verbose=0)


# -- the engine -------------------------------------------------------------------------------------
def _sparse_model() -> Any:
    return _dense_model(3, "softmax", "sparse_categorical_crossentropy")


_Y = np.array([0, 1, 2, 1, 0, 2])


def test_resume_from_a_file_that_is_no_checkpoint_is_one_line(tmp_path: Any) -> None:
    """It was Lightning's multi-line UnpicklingError ("Weights only load failed ...")."""
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot be resumed from \(BadZipFile.*checkpoint_dir of an earlier fit") as info:
        _sparse_model().fit(_X, _Y, epochs=1, verbose=0, resume_from=bogus)
    assert "\n" not in str(info.value)
    folder = tmp_path / "run"
    first = _sparse_model()
    first.fit(_X, _Y, epochs=1, verbose=0, checkpoint_dir=folder, shuffle=False)
    second = _sparse_model()  # a real checkpoint still resumes: epoch 2 only
    history = second.fit(_X, _Y, epochs=2, verbose=0, resume_from=folder, shuffle=False)
    assert len(history.history["loss"]) == 1


def test_fit_argument_errors_and_empty_epoch_range() -> None:
    from rnnkit.training import BackupAndRestore

    model = _sparse_model()
    with pytest.raises(ValueError, match="verbose must be 0, 1, 2 or 'auto', got 3"):
        model.fit(_X, _Y, verbose=3)
    with pytest.raises(Exception, match="validation_data must be .* got ndarray"):
        model.fit(_X, _Y, validation_data=_X, verbose=0)
    ds = torch.utils.data.TensorDataset(torch.tensor(_X), torch.tensor(_Y))
    with pytest.raises(Exception, match="y and sample_weight come from its items"):
        model.fit(ds, _Y, verbose=0)
    with pytest.raises(ValueError, match="pass one BackupAndRestore callback, not several"):
        model.fit(_X, _Y, verbose=0, callbacks=[BackupAndRestore("/tmp/a_unused"), BackupAndRestore("/tmp/b_unused")])
    before = [p.detach().clone() for p in model.parameters()]
    assert model.fit(_X, _Y, epochs=2, initial_epoch=2, verbose=0).history == {}  # Keras: no epoch to run
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_validation_as_a_dataset_and_validation_steps_match_evaluate() -> None:
    model = _sparse_model()
    ds = torch.utils.data.TensorDataset(torch.tensor(_X), torch.tensor(_Y))
    h = model.fit(_X, _Y, epochs=1, batch_size=6, validation_data=ds, verbose=0, shuffle=False)
    assert h.history["val_loss"][0] == pytest.approx(model.evaluate(_X, _Y, verbose=0), rel=1e-5)
    h = model.fit(_X, _Y, epochs=1, batch_size=2, validation_data=(_X, _Y), validation_steps=1, verbose=0)
    assert h.history["val_loss"][0] == pytest.approx(model.evaluate(_X[:2], _Y[:2], verbose=0), rel=1e-5)


def test_lightning_sanity_validation_does_not_leak_into_the_logs() -> None:
    """With Lightning's sanity check asked for, its validation batches are not counted in val_loss."""
    plain = _sparse_model().fit(_X, _Y, epochs=1, batch_size=2, validation_data=(_X, _Y), verbose=0, shuffle=False)
    sanity = _sparse_model().fit(_X, _Y, epochs=1, batch_size=2, validation_data=(_X, _Y), verbose=0, shuffle=False,
                                 trainer_kwargs={"num_sanity_val_steps": 2})
    assert set(sanity.history) == set(plain.history)
    for key in plain.history:
        assert sanity.history[key] == pytest.approx(plain.history[key], rel=1e-6)


def test_a_stream_without_length_trains_with_steps_none() -> None:
    from rnnkit.training import Callback

    class Items(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            return iter([(torch.tensor(_X[i]), torch.tensor(_Y[i])) for i in range(6)])

    seen: list[Any] = []

    class Params(Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            seen.append(self.params.get("steps"))

    model = _sparse_model()
    h = model.fit(torch.utils.data.DataLoader(Items(), batch_size=6), epochs=1, verbose=0, callbacks=[Params()])
    assert seen == [None]  # Keras gives steps=None for a generator
    ref = _sparse_model()
    href = ref.fit(_X, _Y, epochs=1, batch_size=6, verbose=0, shuffle=False)
    assert h.history["loss"][0] == pytest.approx(href.history["loss"][0], rel=1e-6)


def test_tbptt_refuses_inputs_of_different_lengths_and_non_causal_models() -> None:
    from rnnkit.layers import LSTM, Bidirectional, Concatenate, Dense, Input
    from rnnkit.models import Model, Sequential

    xs = np.random.default_rng(1).normal(size=(4, 6, 3)).astype("float32")
    a, b = Input(shape=(None, 3)), Input(shape=(None, 3))
    model = Model([a, b], Dense(1)(Concatenate()([LSTM(4)(a), LSTM(4)(b)])))
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(Exception, match=r"same time length, got shapes \[\[4, 6, 3\], \[4, 4, 3\]\]"):
        model.fit([xs, xs[:, :4]], np.zeros((4, 1)), verbose=0, tbptt_steps=2)
    bi = Sequential([Input(shape=(None, 3)), Bidirectional(LSTM(4)), Dense(1)])
    bi.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="tbptt_steps needs causal"):
        bi.fit(xs, np.zeros((4, 1)), verbose=0, tbptt_steps=2)
    flat = Sequential([Input(shape=(3,)), Dense(1)])
    flat.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="no recurrent layer"):
        flat.fit(xs[:, 0], np.zeros((4, 1)), verbose=0, tbptt_steps=2)


def test_backup_with_batch_frequency_is_refused_for_several_processes(tmp_path: Any) -> None:
    from rnnkit.training import BackupAndRestore

    with pytest.raises(ValueError, match="save_freq=<batches>.*with 2 processes use save_freq='epoch'"):
        _sparse_model().fit(_X, _Y, epochs=1, verbose=0, callbacks=[BackupAndRestore(tmp_path, save_freq=2)],
                            trainer_kwargs={"strategy": "ddp", "devices": 2, "accelerator": "cpu"})


def test_shard_sampler_splits_and_pads_as_torch_distributed_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Process ``rank`` takes items ``rank, rank + world, ...``; training shares are padded with the
    first items (torch's DistributedSampler pads the same way), validation shares are not."""
    from rnnkit.training import engine

    class Inner:
        def __init__(self, n: int) -> None:
            self.order, self.epochs = list(range(10, 10 + n)), []

        def __iter__(self) -> Any:
            return iter(self.order)

        def __len__(self) -> int:
            return len(self.order)

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)

    inner = Inner(5)
    train, val = engine._ShardSampler(inner, pad=True), engine._ShardSampler(inner, pad=False)
    got: dict[Any, list[int]] = {}
    for rank in (0, 1):
        monkeypatch.setattr(engine._ShardSampler, "_rank_world", staticmethod(lambda r=rank: (r, 2)))
        assert (train.rank, train.num_replicas) == (rank, 2)
        got[("train", rank)], got[("val", rank)] = list(train), list(val)
        assert len(train) == 3 and len(val) == (3, 2)[rank]
        ref = torch.utils.data.DistributedSampler(list(range(5)), num_replicas=2, rank=rank, shuffle=False)
        assert got[("train", rank)] == [10 + i for i in ref]
    assert got[("val", 0)] == [10, 12, 14] and got[("val", 1)] == [11, 13]
    small = engine._ShardSampler(Inner(1), pad=False)  # fewer items than processes: padded anyway
    monkeypatch.setattr(engine._ShardSampler, "_rank_world", staticmethod(lambda: (1, 2)))
    assert list(small) == [10]
    train.set_epoch(3)
    assert inner.epochs == [3] and train.epoch == 3


def test_checkpoint_write_failure_leaves_no_temporary_file(tmp_path: Any) -> None:
    from rnnkit.training import engine

    class Failing:
        is_global_zero, world_size = True, 1

        def save_checkpoint(self, path: str) -> None:
            with open(path, "w") as f:
                f.write("half")
            raise OSError("disk full")

    target = tmp_path / "last.ckpt"
    target.write_text("old")
    with pytest.raises(OSError, match="disk full"):
        engine._write_checkpoint_atomically(Failing(), str(target))  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"] and target.read_text() == "old"


# -- minRNN cells: log-space terms with a signed (linear) candidate -----------------------------------
@pytest.mark.parametrize("name", ["MinGRUCell", "MinLSTMCell"])
def test_log_space_terms_with_linear_candidate_equal_the_plain_terms(name: str) -> None:
    """``exp(log a) == a`` and ``sign * exp(log |b|) == b`` (the candidate takes negative values here,
    so the sign tensor is used), and the parallel log-space scan equals the step-by-step recurrence."""
    import rnnkit.cells as C
    from rnnkit.nn import Recurrent

    cell = getattr(C, name)(3, 4, candidate_activation="linear")
    x_proj = cell.project_input(torch.randn(2, 5, 3, dtype=torch.float64).to(cell.weight_ih.dtype))
    a, b, none = cell.scan_terms(x_proj)
    log_a, log_b, sign = cell.scan_terms(x_proj, log_space=True)
    assert none is None and sign is not None and bool((sign < 0).any())
    torch.testing.assert_close(log_a.exp(), a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sign * log_b.exp(), b, rtol=1e-5, atol=1e-6)
    assert "candidate_activation='linear'" in repr(cell)
    kind = "mingru" if name == "MinGRUCell" else "minlstm"
    layer = Recurrent(kind, 3, 4, batch_first=True, cell_options={"candidate_activation": "linear"})
    x = torch.randn(2, 5, 3)
    out, _ = layer(x)
    c = layer._cells[0]
    h = torch.zeros(2, 4)
    for t in range(5):
        h, _, _ = c.recur(c.project_input(x[:, t]), (h,))
        torch.testing.assert_close(out[:, t], h, rtol=1e-5, atol=1e-5)


# -- rnnkit.nn layers and wrappers ---------------------------------------------------------------------
def test_nn_layer_argument_errors_are_one_line() -> None:
    from torch.nn.utils.rnn import pack_padded_sequence

    from rnnkit.nn import GRU, LSTM, Recurrent

    lstm = LSTM(3, 4, batch_first=True, proj_size=2)
    assert lstm.output_size == 2 and GRU(3, 5).output_size == 5
    with pytest.raises(TypeError, match="input must be a torch.Tensor or PackedSequence, got list"):
        lstm([[1.0, 2.0, 3.0]])
    x = torch.randn(2, 4, 3)
    packed = pack_padded_sequence(x, torch.tensor([4, 2]), batch_first=True)
    with pytest.raises(ValueError, match="already carries its lengths"):
        lstm(packed, lengths=torch.tensor([4, 2]))
    with pytest.raises(ValueError, match="pass either lengths= or mask=, not both"):
        lstm(x, lengths=torch.tensor([4, 2]), mask=torch.ones(2, 4, dtype=torch.bool))
    gru = GRU(3, 4, batch_first=True)
    with pytest.raises(ValueError, match=r"hx\[0\] is torch.float64 on cpu but the input is torch.float32"):
        gru(x, torch.zeros(1, 2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"step\(\) expects x_t of shape \[batch, 3\]"):
        gru.step(x)
    rec = Recurrent("mingru", 3, 4, bias=False)
    assert rec.output_size == 4 and "bias=False" in repr(rec)
    assert "cell='mingru'" in repr(GRU(3, 4, cell="mingru"))
