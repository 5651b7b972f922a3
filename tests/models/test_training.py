"""compile / fit / evaluate / predict: the Keras snippet, optimizers, losses, metrics, data forms."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from rnnkit.layers import GRU, LSTM, Dense, Embedding, GlobalAveragePooling1D, Input, TimeDistributed
from rnnkit.models import Sequential, set_random_seed, to_categorical
from rnnkit.training import (
    SGD,
    Adam,
    CosineDecay,
    ExponentialDecay,
    PiecewiseConstantDecay,
    get_loss,
)


def token_task(n: int = 512, length: int = 12, vocab: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class = whether token 7 occurs: needs the recurrent layer to remember it."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, vocab, (n, length))
    flip = rng.random(n) < 0.5
    x[flip, rng.integers(0, length, flip.sum())] = 7
    return x, (x == 7).any(1).astype(np.int64)


def test_keras_snippet_runs_verbatim_and_learns() -> None:
    X, labels = token_task(n=1024)
    X_train, X_val = X[:800], X[800:]
    y_train, y_val = to_categorical(labels[:800], 2), to_categorical(labels[800:], 2)
    set_random_seed(0)
    # --- the Keras example, with only the sizes made small ---
    max_length = 12; vocab_size = 50; embedding_size = 16; lstm_units = 32; output_units = 2  # noqa: E702
    model = Sequential()
    model.add(Embedding(vocab_size, embedding_size, input_length=max_length))
    model.add(LSTM(lstm_units))
    model.add(Dense(output_units, activation='softmax'))
    model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
    history = model.fit(X_train, y_train, batch_size=64, epochs=10, validation_data=(X_val, y_val), verbose=0)
    # ---
    assert max_length == X.shape[1]
    assert history.history["val_accuracy"][-1] > 0.9
    assert len(history.history["loss"]) == 10 and history.epoch == list(range(10))
    probs = model.predict(X_val, verbose=0)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert model.layers[-1]._emit_logits is False  # logits fusion is switched off after fit


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_every_optimizer_by_name_reduces_the_loss(name: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 6, 3)).astype("float32")
    y = x[:, :, 0].mean(1, keepdims=True)
    set_random_seed(1)
    model = Sequential([Input(shape=(6, 3)), GRU(8), Dense(1)])
    model.compile(optimizer=name, loss="mse")
    assert model.optimizer.registry_name == name
    lr = {"sgd": 0.1, "adagrad": 0.1}.get(name, 0.01)
    model.optimizer.learning_rate = lr
    history = model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]


def test_optimizer_objects_and_options() -> None:
    model = Sequential([Input(shape=(3,)), Dense(2)])
    model.compile(SGD(learning_rate=0.05, momentum=0.9, nesterov=True), "mse")
    opt = model.optimizer.build(model.parameters())
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"] is True
    model.compile(Adam(weight_decay=0.01), "mse")
    assert isinstance(model.optimizer.build(model.parameters()), torch.optim.AdamW)  # decoupled, as in Keras
    model.compile(torch.optim.NAdam, "mse")
    assert isinstance(model.optimizer.build(model.parameters()), torch.optim.NAdam)


def test_schedules() -> None:
    exp = ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    assert exp(0) == pytest.approx(0.1) and exp(10) == pytest.approx(0.05)
    assert ExponentialDecay(0.1, 10, 0.5, staircase=True)(15) == pytest.approx(0.05)
    pw = PiecewiseConstantDecay([2, 4], [1.0, 0.5, 0.1])
    assert [pw(s) for s in (0, 2, 3, 5)] == [1.0, 1.0, 0.5, 0.1]
    cos = CosineDecay(0.0, decay_steps=10, warmup_target=1.0, warmup_steps=5)
    assert cos(0) == 0.0 and cos(5) == pytest.approx(1.0) and cos(15) == pytest.approx(0.0)
    # a schedule drives the optimizer step by step during fit
    model = Sequential([Input(shape=(2,)), Dense(1)])
    model.compile(SGD(learning_rate=pw), "mse")
    model.fit(np.ones((12, 2)), np.ones((12, 1)), batch_size=2, epochs=1, verbose=0)
    assert model.optimizer.iterations == 6 and model.optimizer.learning_rate == pytest.approx(pw(5))  # steps 0..5
    with pytest.raises(TypeError, match="follows a schedule"):
        model.optimizer.learning_rate = 0.3


LOSS_CASES = {
    "categorical_crossentropy": ("softmax", 3, lambda y: to_categorical(y, 3)),
    "sparse_categorical_crossentropy": ("softmax", 3, lambda y: y),
    "binary_crossentropy": ("sigmoid", 1, lambda y: (y > 0).astype("float32")[:, None]),
    "mse": (None, 1, lambda y: y.astype("float32")[:, None]),
    "mae": (None, 1, lambda y: y.astype("float32")[:, None]),
    "huber": (None, 1, lambda y: y.astype("float32")[:, None]),
}


@pytest.mark.parametrize("loss", sorted(LOSS_CASES))
def test_every_loss_by_name_matches_its_formula(loss: str) -> None:
    activation, units, encode = LOSS_CASES[loss]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4, 3)).astype("float32")
    labels = (x[:, 0, 0] > 0).astype(np.int64) + (x[:, 0, 1] > 0.5)
    y = encode(labels)
    set_random_seed(0)
    model = Sequential([Input(shape=(4, 3)), LSTM(6), Dense(units, activation=activation)])
    model.compile("adam", loss)
    before = model.evaluate(x, y, verbose=0)
    p = torch.from_numpy(model.predict(x, verbose=0)).double()
    t = torch.from_numpy(np.asarray(y)).double()
    expected = {
        "categorical_crossentropy": lambda: -(t * p.clamp(1e-7, 1 - 1e-7).log()).sum(1).mean(),
        "sparse_categorical_crossentropy": lambda: -p.gather(1, t.long()[:, None]).log().mean(),
        "binary_crossentropy": lambda: -(t * p.log() + (1 - t) * (1 - p).log()).mean(),
        "mse": lambda: ((p - t) ** 2).mean(),
        "mae": lambda: (p - t).abs().mean(),
        "huber": lambda: torch.nn.functional.huber_loss(p, t),
    }[loss]()
    assert before == pytest.approx(float(expected), rel=1e-4)
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < before


def test_softmax_is_fused_into_the_loss_stably() -> None:
    loss = get_loss("sparse_categorical_crossentropy")
    logits = torch.tensor([[200.0, 0.0, -200.0]])
    y = torch.tensor([2])
    fused = loss.elementwise(y, logits, logits=True)
    naive = loss.elementwise(y, torch.softmax(logits, -1), logits=False)
    assert float(fused) == pytest.approx(400.0)  # exact log-softmax
    assert float(naive) == pytest.approx(-math.log(1e-7), rel=1e-3)  # clipped probabilities saturate
    model = Sequential([Input(shape=(3,)), Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    from rnnkit.training.step import StepLogic

    logic = StepLogic(model, model.compiled)
    assert logic.fused == [True]
    model.compile("sgd", get_loss({"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": True}}))
    assert StepLogic(model, model.compiled).fused == [False]


METRIC_NAMES = ["accuracy", "precision", "recall", "f1", "f1_macro", "f1_micro", "f1_weighted", "auc",
                "precision_weighted", "recall_macro"]


def test_classification_metrics_match_definitions() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3, 2)).astype("float32")
    y = rng.integers(0, 3, 90)
    set_random_seed(0)
    model = Sequential([Input(shape=(3, 2)), GRU(4), Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=METRIC_NAMES + ["top_k_categorical_accuracy"])
    logs = model.evaluate(x, y, verbose=0, return_dict=True, batch_size=16)
    pred = model.predict(x, verbose=0).argmax(1)
    assert logs["accuracy"] == pytest.approx((pred == y).mean())
    f1s, supports = [], []
    for c in range(3):
        tp, fp, fn = ((pred == c) & (y == c)).sum(), ((pred == c) & (y != c)).sum(), ((pred != c) & (y == c)).sum()
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
        supports.append((y == c).sum())
    assert logs["f1_macro"] == pytest.approx(np.mean(f1s), abs=1e-6)
    assert logs["f1"] == pytest.approx(np.mean(f1s), abs=1e-6)  # multiclass default: macro
    assert logs["f1_weighted"] == pytest.approx(np.average(f1s, weights=supports), abs=1e-6)
    assert logs["f1_micro"] == pytest.approx((pred == y).mean(), abs=1e-6)
    assert logs["top_k_categorical_accuracy"] == pytest.approx(1.0)  # k=5 > 3 classes
    assert 0.0 <= logs["auc"] <= 1.0


def test_binary_and_regression_metrics() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 3, 2)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("float32")[:, None]
    model = Sequential([Input(shape=(3, 2)), LSTM(4), Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy", metrics=["accuracy", "precision", "recall", "auc", "f1_macro"])
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    p = model.predict(x, verbose=0)[:, 0]
    yhat, t = p > 0.5, y[:, 0] > 0.5
    assert logs["accuracy"] == pytest.approx((yhat == t).mean())
    assert logs["precision"] == pytest.approx((yhat & t).sum() / max(yhat.sum(), 1))
    assert logs["recall"] == pytest.approx((yhat & t).sum() / t.sum())
    pos, neg = p[t], p[~t]
    auc = ((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    assert logs["auc"] == pytest.approx(auc, abs=1e-5)
    reg = Sequential([Input(shape=(3, 2)), LSTM(4), Dense(1)])
    reg.compile("adam", "mse", metrics=["mae", "rmse", "mse"])
    logs = reg.evaluate(x, y, verbose=0, return_dict=True)
    q = reg.predict(x, verbose=0)
    assert logs["mae"] == pytest.approx(np.abs(q - y).mean(), rel=1e-5)
    assert logs["rmse"] == pytest.approx(np.sqrt(((q - y) ** 2).mean()), rel=1e-5)
    assert logs["mse"] == pytest.approx(logs["loss"], rel=1e-5)


def test_ragged_sequences_are_padded_and_masked() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 20, rng.integers(2, 15)).tolist() for _ in range(120)]
    y = np.array([int(7 in s) for s in seqs])
    set_random_seed(0)
    model = Sequential([Embedding(20, 8), LSTM(8), Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(seqs, y, epochs=2, batch_size=16, verbose=0)
    assert model.input_spec is not None and model.input_spec[0] == (None,)  # time is dynamic
    preds = model.predict(seqs, batch_size=7, verbose=0)
    model.eval()
    one = [model(torch.tensor([s])).detach().numpy()[0] for s in seqs[:5]]  # no padding at all
    np.testing.assert_allclose(preds[:5], np.stack(one), atol=1e-5)
    # ragged float sequences [T_i, F] and per-step (sequence-labelling) targets
    xs = [rng.normal(size=(n, 3)).astype("float32") for n in (4, 2, 5, 3)]
    ys = [(x[:, 0] > 0).astype(np.int64) for x in xs]
    tagger = Sequential([LSTM(6, return_sequences=True), TimeDistributed(Dense(2, activation="softmax"))])
    tagger.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    tagger.fit(xs, ys, epochs=1, batch_size=2, verbose=0)
    out = tagger.predict(xs, verbose=0)
    assert out.shape == (4, 5, 2)
    logs = tagger.evaluate(xs, ys, batch_size=4, verbose=0, return_dict=True)
    pred = out.argmax(-1)
    correct = sum(int((pred[i, :len(t)] == t).sum()) for i, t in enumerate(ys))
    assert logs["accuracy"] == pytest.approx(correct / sum(len(t) for t in ys))  # padding excluded


def test_validation_split_takes_the_last_samples() -> None:
    x = np.arange(50, dtype="float32").reshape(50, 1)
    y = np.zeros((50, 1), dtype="float32")
    y[40:] = 100.0  # only the last 10 samples (the validation fifth) have a large target
    model = Sequential([Input(shape=(1,)), Dense(1, kernel_initializer="zeros")])
    model.compile(SGD(learning_rate=0.0), "mse")
    history = model.fit(x, y, validation_split=0.2, epochs=1, batch_size=8, verbose=0)
    assert history.history["loss"][0] == pytest.approx(0.0)
    assert history.history["val_loss"][0] == pytest.approx(10000.0)


def test_sample_weight_and_class_weight() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype("float32")
    y = rng.integers(0, 2, 40)
    model = Sequential([Input(shape=(3,)), Dense(2, activation="softmax")])
    model.compile(SGD(learning_rate=0.0), "sparse_categorical_crossentropy")
    per_sample = -np.log(model.predict(x, verbose=0)[np.arange(40), y])
    sw = rng.random(40).astype("float32")
    h = model.fit(x, y, sample_weight=sw, batch_size=40, epochs=1, verbose=0, shuffle=False)
    assert h.history["loss"][0] == pytest.approx(float((per_sample * sw).mean()), rel=1e-5)
    h = model.fit(x, y, class_weight={0: 0.5, 1: 3.0}, batch_size=40, epochs=1, verbose=0)
    cw = np.where(y == 1, 3.0, 0.5)
    assert h.history["loss"][0] == pytest.approx(float((per_sample * cw).mean()), rel=1e-5)
    # zero weights remove samples from the gradient: training on (x, y, w) equals training on the subset
    keep = sw > 0.5
    w = keep.astype("float32") * 2.0
    for data, weights in ((x, w), (x[keep], None)):
        set_random_seed(0)
        m = Sequential([Input(shape=(3,)), Dense(2, activation="softmax")])
        m.compile(SGD(learning_rate=0.1 if weights is not None else 0.1 * 2 * keep.mean()), "sparse_categorical_crossentropy")
        m.fit(data, y if weights is not None else y[keep], sample_weight=weights, batch_size=len(data), epochs=3,
              verbose=0, shuffle=False)
        if weights is not None:
            ref = [p.detach().clone() for p in m.parameters()]
    for a, b in zip(ref, m.parameters()):
        torch.testing.assert_close(a, b.detach(), atol=1e-6, rtol=1e-5)


def test_dataset_and_dataloader_inputs() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(64, 5, 2)).astype("float32"))
    y = (x[:, :, 0].sum(1) > 0).long()
    model = Sequential([Input(shape=(5, 2)), GRU(4), Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(TensorDataset(x, y), batch_size=16, epochs=1, verbose=0,
                  validation_data=DataLoader(TensorDataset(x, y), batch_size=32))
    assert "val_accuracy" in h.history
    loader = DataLoader(TensorDataset(x, y, torch.ones(64)), batch_size=8)
    model.fit(loader, epochs=1, verbose=0)
    assert model.evaluate(DataLoader(TensorDataset(x, y), batch_size=8), verbose=0)[1] >= 0.0
    np.testing.assert_allclose(model.predict(DataLoader(TensorDataset(x), batch_size=10), verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)

    class Ragged(torch.utils.data.Dataset):  # items of different lengths are padded and masked
        def __len__(self) -> int:
            return 20

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.randn(3 + i % 4, 2), i % 2

    model.fit(Ragged(), batch_size=5, epochs=1, verbose=0)


def test_duck_typed_rnnkit_data_batches() -> None:
    class Batch:  # the shape of rnnkit.data.Batch
        def __init__(self) -> None:
            self.inputs = torch.randint(1, 9, (4, 6))
            self.mask = torch.ones(4, 6, dtype=torch.bool)
            self.mask[0, 3:] = False
            self.targets = torch.tensor([0, 1, 0, 1])
            self.extras: dict[str, object] = {}

    model = Sequential([Embedding(9, 4), LSTM(3), Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(DataLoader([Batch(), Batch()], batch_size=None, collate_fn=lambda b: b), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2


def test_predict_keeps_order_across_batches() -> None:
    model = Sequential([Input(shape=(2,)), Dense(1, kernel_initializer="ones")])
    x = np.arange(46, dtype="float32").reshape(23, 2)
    np.testing.assert_allclose(model.predict(x, batch_size=4, verbose=0)[:, 0], x.sum(1))


def test_seed_makes_runs_identical_and_epochs_resume_counting() -> None:
    x, y = token_task(n=96)
    weights = []
    for _ in range(2):
        set_random_seed(5)  # initial weights
        model = Sequential([Embedding(50, 4), LSTM(4, dropout=0.2), Dense(2, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=123)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    history = model.fit(x, y, epochs=4, initial_epoch=2, batch_size=16, verbose=0, steps_per_epoch=2)
    assert history.epoch == [2, 3]


def test_clipping_by_value_and_norm() -> None:
    x = np.ones((4, 2), dtype="float32") * 100
    y = np.zeros((4, 1), dtype="float32")
    for kwargs, bound in (({"clipvalue": 0.01}, 0.01), ({"clipnorm": 0.01}, 0.01), ({"global_clipnorm": 0.01}, 0.01)):
        model = Sequential([Input(shape=(2,)), Dense(1, kernel_initializer="ones")])
        model.compile(SGD(learning_rate=1.0), "mse", **kwargs)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        step = (after - before).abs()
        assert float(step.max()) <= bound + 1e-6, kwargs
    model = Sequential([Input(shape=(2,)), Dense(1, kernel_initializer="ones")])
    model.compile(SGD(learning_rate=1.0), "mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, clipvalue=0.5)  # as a fit argument
    assert float(model.layers[0].weight.detach().min()) == pytest.approx(0.5)


def test_tbptt_equals_full_backprop_when_chunk_covers_sequence() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 12, 2)).astype("float32")
    y = np.cumsum(x[..., :1], 1) * 0.3
    results = []
    for steps in (None, 12):
        set_random_seed(0)
        model = Sequential([Input(shape=(None, 2)), LSTM(5, return_sequences=True), TimeDistributed(Dense(1))])
        model.compile(SGD(learning_rate=0.1), "mse")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, tbptt_steps=steps)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_tbptt_steps_per_chunk_and_state_carry() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 12, 2)).astype("float32")
    y = np.cumsum(x[..., :1], 1) * 0.3  # needs the state carried across chunks
    model = Sequential([Input(shape=(None, 2)), LSTM(8, return_sequences=True), TimeDistributed(Dense(1))])
    model.compile("adam", "mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, tbptt_steps=4)
    assert model.optimizer.torch_optimizer.state[next(iter(model.parameters()))]["step"] == 3  # 12 / 4 chunks
    assert not model.layers[0].rnn.stateful and model.layers[0].rnn.state is None  # restored afterwards
    many_to_one = Sequential([Input(shape=(None, 2)), GRU(4), Dense(1)])
    many_to_one.compile(SGD(learning_rate=0.01), "mse")
    h = many_to_one.fit(x, y[:, -1], batch_size=4, epochs=2, verbose=0, tbptt_steps=5)
    assert all(math.isfinite(v) for v in h.history["loss"])
    from rnnkit.layers import Bidirectional

    bi = Sequential([Input(shape=(None, 2)), Bidirectional(GRU(3)), Dense(1)])
    bi.compile("adam", "mse")
    with pytest.raises(ValueError, match="causal"):
        bi.fit(x, y[:, -1], tbptt_steps=4, verbose=0)


def test_evaluate_return_forms_and_multiple_fits_continue() -> None:
    x, y = token_task(n=64)
    model = Sequential([Embedding(50, 4), GlobalAveragePooling1D(), Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    assert isinstance(model.evaluate(x, y, verbose=0), float)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    assert len(model.evaluate(x, y, verbose=0)) == 2
    model.fit(x, y, epochs=1, verbose=0)
    opt = model.optimizer.torch_optimizer
    model.fit(x, y, epochs=1, verbose=0)
    assert model.optimizer.torch_optimizer is opt  # the optimizer state carries over, as in Keras


def test_trainer_kwargs_pass_through_to_lightning() -> None:
    model = Sequential([Input(shape=(2,)), Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.ones((64, 2)), np.ones((64, 1)), batch_size=8, epochs=2, verbose=0, accelerator="cpu",
              trainer_kwargs={"limit_train_batches": 3})
    assert model.optimizer.iterations == 6  # 2 epochs x 3 batches, last step index 5


def test_verbose_two_prints_one_line_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    model = Sequential([Input(shape=(2,)), Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.ones((8, 2)), np.ones((8, 1)), epochs=2, verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert len(lines) == 2 and "loss:" in lines[0]


def test_importing_models_does_not_import_lightning() -> None:
    code = ("import sys, rnnkit.models, rnnkit.layers, rnnkit.training, rnnkit.metrics; "
            "print(any(m.startswith(('lightning', 'pytorch_lightning', 'torchmetrics')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_bf16_mixed_precision_trains_on_cpu() -> None:
    x, y = token_task(n=128)
    model = Sequential([Embedding(50, 8), LSTM(8), Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    h = model.fit(x, y, epochs=1, verbose=0, precision="bf16-mixed", accelerator="cpu")
    assert math.isfinite(h.history["loss"][0])
