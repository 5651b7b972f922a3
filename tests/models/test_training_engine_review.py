"""Review of the training engine (fit on Lightning, evaluate/predict, clipping, truncated BPTT, mixed
precision, two-process data parallel), each checked against an independent computation: plain torch
modules with the same weights, ``torch.nn.utils`` clipping, or a single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.layers import LSTM, Dense, Input
from rnnkit.models import Model, Sequential, set_random_seed
from rnnkit.training import SGD
from rnnkit.training.data import InputDataError

Tensor = torch.Tensor


def torch_lstm(layer: Any) -> nn.LSTM:
    """A ``torch.nn.LSTM`` holding an rnnkit LSTM layer's weights (same layout and gate order)."""
    rnn = layer.rnn
    out = nn.LSTM(rnn.input_size, rnn.hidden_size, batch_first=True)
    out.load_state_dict({k: v.detach().clone() for k, v in rnn.state_dict().items()})
    for name, p in rnn.named_parameters():  # Keras has one bias: rnnkit keeps bias_hh at 0, untrained
        getattr(out, name).requires_grad_(p.requires_grad)
    return out


def trainable(*modules: nn.Module) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def torch_dense(layer: Any) -> nn.Linear:
    out = nn.Linear(layer.weight.shape[1], layer.weight.shape[0])
    out.load_state_dict({"weight": layer.weight.detach().clone(), "bias": layer.bias.detach().clone()})
    return out


def one_line_error(fn: Any) -> str:
    with pytest.raises(Exception) as info:
        fn()
    return str(info.value)


# -- evaluate / predict: masks, several outputs, odd batch sizes ---------------------------------
def _two_output_model() -> tuple[Model, list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 11
    lens = rng.integers(2, 7, size=n)
    xs = [rng.normal(size=(int(t), 3)).astype("float32") for t in lens]
    tags = [rng.integers(0, 3, size=int(t)) for t in lens]
    score = rng.normal(size=(n, 1)).astype("float32")
    sw = rng.uniform(0.5, 2.0, size=n).astype("float32")
    set_random_seed(0)
    inp = Input(shape=(None, 3), name="x")
    t = Dense(3, activation="softmax", name="tags")(LSTM(5, return_sequences=True)(inp))
    s = Dense(1, name="score")(LSTM(4)(inp))
    model = Model(inp, [t, s])
    model.compile("adam", ["sparse_categorical_crossentropy", "mse"], loss_weights=[1.0, 0.5],
                  metrics={"tags": ["accuracy"], "score": ["mae"]})
    return model, xs, tags, score, sw


def _plain_outputs(model: Model, xs: list[np.ndarray]) -> list[tuple[Tensor, Tensor]]:
    """Each sample alone, unpadded, through torch modules: (tag probabilities [T, 3], score [1])."""
    lstm_seq, lstm_last = [m for m in model.layers if isinstance(m, LSTM)]
    dense_t = torch_dense(model.get_layer("tags"))
    dense_s = torch_dense(model.get_layer("score"))
    seq, last = torch_lstm(lstm_seq), torch_lstm(lstm_last)
    outs = []
    with torch.no_grad():
        for x in xs:
            xt = torch.from_numpy(x)[None]
            probs = dense_t(seq(xt)[0])[0].softmax(-1)
            outs.append((probs, dense_s(last(xt)[0][:, -1])[0]))
    return outs



def test_evaluate_masked_two_outputs_odd_batches_match_plain_torch() -> None:
    model, xs, tags, score, sw = _two_output_model()
    got = model.evaluate(xs, [tags, score], sample_weight=sw, batch_size=4, verbose=0, return_dict=True)
    outs = _plain_outputs(model, xs)
    # Keras' reduction: per batch, the weighted sum over the real positions divided by their number;
    # the epoch value is the batch values weighted by batch size
    tag_sum = score_sum = 0.0
    correct = positions = 0
    abs_err = 0.0
    for start in range(0, len(xs), 4):
        idx = range(start, min(start + 4, len(xs)))
        num = den = 0.0
        s_num = 0.0
        for i in idx:
            probs, pred = outs[i]
            y = torch.from_numpy(tags[i]).long()
            ce = F.nll_loss(probs.log(), y, reduction="none")
            num += float((ce * float(sw[i])).sum())
            den += len(y)
            s_num += float(((pred - torch.from_numpy(score[i])) ** 2).mean()) * float(sw[i])
            correct += int((probs.argmax(-1) == y).sum())
            positions += len(y)
            abs_err += float((pred - torch.from_numpy(score[i])).abs().sum())
        tag_sum += num / den * len(idx)
        score_sum += s_num / len(idx) * len(idx)
    n = len(xs)
    assert got["tags_loss"] == pytest.approx(tag_sum / n, rel=1e-5)
    assert got["score_loss"] == pytest.approx(score_sum / n, rel=1e-5)
    assert got["loss"] == pytest.approx(tag_sum / n + 0.5 * score_sum / n, rel=1e-5)
    assert got["tags_accuracy"] == pytest.approx(correct / positions)
    assert got["score_mae"] == pytest.approx(abs_err / n, rel=1e-5)


def test_predict_two_outputs_ragged_odd_batches_match_plain_torch() -> None:
    model, xs, _, _, _ = _two_output_model()
    tags_prob, score = model.predict(xs, batch_size=3, verbose=0)
    outs = _plain_outputs(model, xs)
    assert tags_prob.shape == (len(xs), max(len(x) for x in xs), 3) and score.shape == (len(xs), 1)
    for i, (probs, pred) in enumerate(outs):
        np.testing.assert_allclose(tags_prob[i, : len(xs[i])], probs.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(score[i], pred.numpy(), rtol=1e-5, atol=1e-6)


def test_evaluate_with_a_generator_names_the_generator_not_the_targets() -> None:
    model, xs, tags, score, _ = _two_output_model()

    def batches() -> Any:
        yield xs[:4], [tags[:4], score[:4]]

    for call in (lambda: model.evaluate(batches(), verbose=0), lambda: model.test_on_batch(batches()),
                 lambda: model.predict(batches(), verbose=0)):
        msg = one_line_error(call)
        assert "generator" in msg and "needs targets" not in msg, msg


def test_evaluate_and_predict_refuse_zero_steps_with_a_clear_error() -> None:
    model, xs, tags, score, _ = _two_output_model()
    with pytest.raises(InputDataError, match="steps must be a positive"):
        model.evaluate(xs, [tags, score], steps=0, verbose=0)
    with pytest.raises(InputDataError, match="steps must be a positive"):
        model.predict(xs, steps=0, verbose=0)


# -- truncated BPTT against a hand-written truncated loop -------------------------------------------
def _tbptt_data(per_step: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 7, 3)).astype("float32")
    y = rng.normal(size=(10, 7, 2) if per_step else (10, 1)).astype("float32")
    return x, y


@pytest.mark.parametrize("per_step", [True, False])
def test_tbptt_matches_a_hand_written_truncated_loop_with_detached_state(per_step: bool) -> None:
    x, y = _tbptt_data(per_step)
    set_random_seed(0)
    model = Sequential([Input(shape=(7, 3)), LSTM(4, return_sequences=per_step), Dense(y.shape[-1])])
    model.compile(SGD(0.1), "mse")
    model.build_from_batch(torch.from_numpy(x[:2]))
    lstm, dense = torch_lstm(model.layers[0]), torch_dense(model.layers[1])
    params = trainable(lstm, dense)
    opt = torch.optim.SGD(params, lr=0.1)
    k, clip = 3, 0.05
    weighted, weight = 0.0, 0
    for start in range(0, len(x), 4):  # batches of 4, 4, 2; chunks of 3, 3, 1 steps
        xb, yb = torch.from_numpy(x[start:start + 4]), torch.from_numpy(y[start:start + 4])
        state = None
        for s in range(0, 7, k):
            last = s + k >= 7
            if not per_step and not last:
                with torch.no_grad():
                    _, state = lstm(xb[:, s:s + k], state)
                continue
            out, state = lstm(xb[:, s:s + k], state)
            pred = dense(out) if per_step else dense(out[:, -1])
            loss = F.mse_loss(pred, yb[:, s:s + k] if per_step else yb)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            state = tuple(h.detach() for h in state)
            weighted += float(loss.detach()) * len(xb)
            weight += len(xb)
    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, tbptt_steps=k, global_clipnorm=clip,
                        accelerator="cpu")
    for want, have in zip(trainable(torch_lstm(model.layers[0]), torch_dense(model.layers[1])), params):
        torch.testing.assert_close(want, have, rtol=1e-5, atol=1e-6)
    assert model.optimizer.iterations == (9 if per_step else 3)
    assert history.history["loss"][0] == pytest.approx(weighted / weight, rel=1e-5)


def test_tbptt_with_chunks_as_long_as_the_sequence_equals_ordinary_training() -> None:
    x, y = _tbptt_data(True)
    weights = []
    for steps in (None, 7):
        set_random_seed(0)
        model = Sequential([Input(shape=(7, 3)), LSTM(4, return_sequences=True), Dense(2)])
        model.compile(SGD(0.1), "mse")
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, tbptt_steps=steps, accelerator="cpu")
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-6, atol=1e-7)


# -- gradient clipping against torch.nn.utils --------------------------------------------------------
@pytest.mark.parametrize("where", ["fit", "compile", "optimizer"])
@pytest.mark.parametrize("limits", [{"clipnorm": 0.05}, {"clipvalue": 0.01}, {"global_clipnorm": 0.05},
                                    {"clipvalue": 0.02, "global_clipnorm": 0.03}])
def test_clipping_matches_torch_clip_utilities(limits: dict[str, float], where: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 5, 3)).astype("float32")
    y = rng.integers(0, 3, size=6)
    set_random_seed(0)
    model = Sequential([Input(shape=(5, 3)), LSTM(4), Dense(3, activation="softmax")])
    model.compile(SGD(1.0, **limits) if where == "optimizer" else SGD(1.0), "sparse_categorical_crossentropy",
                  **(limits if where == "compile" else {}))
    model.build_from_batch(torch.from_numpy(x[:2]))
    lstm, dense = torch_lstm(model.layers[0]), torch_dense(model.layers[1])
    params = trainable(lstm, dense)
    before = [p.detach().clone() for p in params]
    loss = F.cross_entropy(dense(lstm(torch.from_numpy(x))[0][:, -1]), torch.from_numpy(y).long())
    loss.backward()
    raw = [p.grad.clone() for p in params if p.grad is not None]
    if "clipvalue" in limits:
        torch.nn.utils.clip_grad_value_(params, limits["clipvalue"])
    if "clipnorm" in limits:
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], limits["clipnorm"])
    if "global_clipnorm" in limits:
        torch.nn.utils.clip_grad_norm_(params, limits["global_clipnorm"])
    assert any(not torch.equal(r, p.grad) for r, p in zip(raw, params))  # the limits do clip here
    expected = [b - p.grad for b, p in zip(before, params)]  # SGD(1.0): one step moves by the clipped gradient
    model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0, accelerator="cpu",
              **(limits if where == "fit" else {}))
    got = trainable(torch_lstm(model.layers[0]), torch_dense(model.layers[1]))
    for g, e, b in zip(got, expected, before):
        assert float((g - b).detach().abs().max()) > 1e-4  # the step moved the weights (and clipping acted below)
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


# -- mixed precision ------------------------------------------------------------------------------------
def test_bf16_mixed_reports_the_loss_in_float32() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 7, 3)).astype("float32")
    y = rng.normal(size=(12, 7, 2)).astype("float32")
    set_random_seed(0)
    model = Sequential([Input(shape=(7, 3)), LSTM(4, return_sequences=True), Dense(2)])
    model.compile(SGD(0.0), "mse", metrics=["mse"])  # no step: every batch sees the same weights
    model.build_from_batch(torch.from_numpy(x[:2]))
    lstm, dense = torch_lstm(model.layers[0]), torch_dense(model.layers[1])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pred = dense(lstm(torch.from_numpy(x))[0])
    assert pred.dtype == torch.bfloat16
    want = float(F.mse_loss(pred.float(), torch.from_numpy(y)))  # Keras: the loss of bf16 outputs, in float32
    history = model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0, precision="bf16-mixed",
                        accelerator="cpu")
    assert history.history["loss"][0] == pytest.approx(want, rel=1e-5)
    assert history.history["mse"][0] == pytest.approx(want, rel=1e-5)


# -- two processes (strategy="ddp", devices=2 on CPU with gloo) ---------------------------------------
DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np, torch
    sys.path.insert(0, {tests!r})
    from test_training_engine_review import ddp_data, ddp_model, tbptt_data, tbptt_model
    from rnnkit.training import BackupAndRestore

    root = {root!r}
    x, y, sw, xv, yv = ddp_data()
    kw = dict(sample_weight=sw, validation_data=(xv, yv), batch_size=4, shuffle=True, seed=5, verbose=0,
              accelerator="cpu", devices=2, strategy="ddp")
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()]).tolist()
    out = {{}}
    a = ddp_model(); out["full"] = a.fit(x, y, epochs=2, **kw).history; out["w_full"] = flat(a)
    ck = os.path.join(root, "ck")
    ddp_model().fit(x, y, epochs=1, checkpoint_dir=ck, **kw)
    c = ddp_model(); out["resumed"] = c.fit(x, y, epochs=2, resume_from=ck, **kw).history; out["w_resumed"] = flat(c)
    bk = os.path.join(root, "bk")
    ddp_model().fit(x, y, epochs=1, callbacks=[BackupAndRestore(bk, delete_checkpoint=False)], **kw)
    out["backup_files"] = sorted(os.listdir(bk))
    e = ddp_model(); out["restored"] = e.fit(x, y, epochs=2, callbacks=[BackupAndRestore(bk)], **kw).history
    out["w_restored"] = flat(e)
    out["backup_left"] = os.path.exists(bk)
    xt, yt = tbptt_data()
    t = tbptt_model()
    out["tbptt"] = t.fit(xt, yt, batch_size=4, shuffle=False, epochs=1, verbose=0, tbptt_steps=3, accelerator="cpu",
                         devices=2, strategy="ddp").history
    out["w_tbptt"] = flat(t)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    with open(os.path.join(root, f"rank{{rank}}.json"), "w") as f:
        json.dump(out, f)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # neither process leaves while the other still needs it
""")


def ddp_data() -> tuple[np.ndarray, ...]:
    """44 training samples (batches of 8 in one process end with 4; of 4 per process, with 2), 13
    validation samples (odd: 7 and 6 per process), sample weights."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(44, 5, 3)).astype("float32")
    y = (x[:, :, 0].sum(1) > 0).astype(np.int64)
    sw = rng.uniform(0.2, 3.0, size=44).astype("float32")
    xv = rng.normal(size=(13, 5, 3)).astype("float32")
    yv = (xv[:, :, 0].sum(1) > 0).astype(np.int64)
    return x, y, sw, xv, yv


def ddp_model() -> Sequential:
    set_random_seed(0)
    model = Sequential([Input(shape=(5, 3)), LSTM(4), Dense(2, activation="softmax")])
    model.compile(SGD(0.3, momentum=0.5), "sparse_categorical_crossentropy", metrics=["accuracy", "f1_macro"])
    return model


def tbptt_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(size=(16, 7, 3)).astype("float32"), rng.normal(size=(16, 7, 2)).astype("float32")


def tbptt_model() -> Sequential:
    set_random_seed(0)
    model = Sequential([Input(shape=(7, 3)), LSTM(4, return_sequences=True), Dense(2)])
    model.compile(SGD(0.1), "mse")
    return model


def test_ddp_two_processes_equal_one_process_with_the_global_batch_and_resume(tmp_path: Path) -> None:
    script = tmp_path / "ddp_review.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), root=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # reduced logs and replicas in sync
    got = ranks[0]

    # one process, batches of 8 = the two processes' batches of 4 together (same seed, same order)
    x, y, sw, xv, yv = ddp_data()
    single = ddp_model()
    history = single.fit(x, y, sample_weight=sw, validation_data=(xv, yv), batch_size=8, shuffle=True, seed=5,
                         epochs=2, verbose=0, accelerator="cpu").history
    assert set(got["full"]) == set(history)
    for key, values in history.items():
        assert got["full"][key] == pytest.approx(values, rel=1e-5, abs=1e-6), key
    np.testing.assert_allclose(got["w_full"], torch.cat([p.detach().flatten() for p in single.parameters()]),
                               rtol=1e-5, atol=1e-6)

    # a checkpoint and a BackupAndRestore backup written under ddp resume to the uninterrupted run
    assert got["w_resumed"] == got["w_full"] and got["w_restored"] == got["w_full"]
    for key in got["full"]:
        assert got["resumed"][key] == got["full"][key][1:] and got["restored"][key] == got["full"][key][1:]
    assert got["backup_files"] == ["latest.ckpt"] and got["backup_left"] is False

    # truncated BPTT (manual optimization, a backward per chunk) under ddp too
    xt, yt = tbptt_data()
    t = tbptt_model()
    single_tbptt = t.fit(xt, yt, batch_size=8, shuffle=False, epochs=1, verbose=0, tbptt_steps=3,
                         accelerator="cpu").history
    assert got["tbptt"]["loss"] == pytest.approx(single_tbptt["loss"], rel=1e-5)
    np.testing.assert_allclose(got["w_tbptt"], torch.cat([p.detach().flatten() for p in t.parameters()]),
                               rtol=1e-5, atol=1e-6)


def test_tbptt_on_ragged_sequences_matches_a_masked_hand_loop() -> None:
    """Padding inside chunks: the state passes padded steps unchanged and their outputs are left out."""
    rng = np.random.default_rng(5)
    lens = [7, 2, 5, 4, 6, 1]
    xs = [rng.normal(size=(t, 3)).astype("float32") for t in lens]
    ys = [rng.normal(size=(t, 2)).astype("float32") for t in lens]
    set_random_seed(0)
    model = Sequential([Input(shape=(None, 3)), LSTM(4, return_sequences=True), Dense(2)])
    model.compile(SGD(0.2), "mse")
    model.build_from_batch(torch.from_numpy(xs[0][None]), dynamic_time=True)
    lstm, dense = torch_lstm(model.layers[0]), torch_dense(model.layers[1])
    cell = nn.LSTMCell(3, 4)
    cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh = (lstm.weight_ih_l0, lstm.weight_hh_l0,
                                                                  lstm.bias_ih_l0, lstm.bias_hh_l0)
    params = trainable(lstm, dense)
    opt = torch.optim.SGD(params, lr=0.2)
    k = 2
    for start in range(0, len(xs), 3):
        idx = range(start, start + 3)
        steps = max(lens[i] for i in idx)
        x = torch.zeros(3, steps, 3)
        y = torch.zeros(3, steps, 2)
        mask = torch.zeros(3, steps, dtype=torch.bool)
        for j, i in enumerate(idx):
            x[j, : lens[i]], y[j, : lens[i]], mask[j, : lens[i]] = torch.from_numpy(xs[i]), torch.from_numpy(ys[i]), True
        h = c = torch.zeros(3, 4)
        for s in range(0, steps, k):
            preds = []
            for t in range(s, min(s + k, steps)):
                h_new, c_new = cell(x[:, t], (h, c))
                m = mask[:, t, None]
                h, c = torch.where(m, h_new, h), torch.where(m, c_new, c)
                preds.append(dense(h_new))
            pred = torch.stack(preds, 1)
            per = ((pred - y[:, s:s + k]) ** 2).mean(-1)
            m = mask[:, s:s + k].float()
            loss = (per * m).sum() / m.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            h, c = h.detach(), c.detach()
    model.fit(xs, ys, batch_size=3, epochs=1, shuffle=False, verbose=0, tbptt_steps=k, accelerator="cpu")
    for want, have in zip(trainable(torch_lstm(model.layers[0]), torch_dense(model.layers[1])), params):
        torch.testing.assert_close(want, have, rtol=1e-5, atol=1e-6)


def test_tbptt_steps_must_be_a_positive_whole_number() -> None:
    x, y = _tbptt_data(True)
    model = Sequential([Input(shape=(7, 3)), LSTM(4, return_sequences=True), Dense(2)])
    model.compile(SGD(0.1), "mse")
    for bad in (0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="tbptt_steps must be a positive whole number"):
            model.fit(x, y, epochs=1, verbose=0, tbptt_steps=bad, accelerator="cpu")


def test_trainer_gradient_clip_val_clips_like_torch_clip_grad_norm() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 5, 3)).astype("float32")
    y = rng.integers(0, 3, size=6)
    set_random_seed(0)
    model = Sequential([Input(shape=(5, 3)), LSTM(4), Dense(3, activation="softmax")])
    model.compile(SGD(1.0), "sparse_categorical_crossentropy")
    model.build_from_batch(torch.from_numpy(x[:2]))
    lstm, dense = torch_lstm(model.layers[0]), torch_dense(model.layers[1])
    params = trainable(lstm, dense)
    before = [p.detach().clone() for p in params]
    F.cross_entropy(dense(lstm(torch.from_numpy(x))[0][:, -1]), torch.from_numpy(y).long()).backward()
    assert float(torch.nn.utils.clip_grad_norm_(params, 0.02)) > 0.02
    model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0, accelerator="cpu",
              trainer_kwargs={"gradient_clip_val": 0.02})
    for g, b, p in zip(trainable(torch_lstm(model.layers[0]), torch_dense(model.layers[1])), before, params):
        torch.testing.assert_close(g, b - p.grad, rtol=1e-5, atol=1e-7)


def test_class_weight_and_sample_weight_loss_matches_hand_computation() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(9, 4, 3)).astype("float32")
    y = rng.integers(0, 3, size=9)
    sw = rng.uniform(0.5, 2.0, size=9).astype("float32")
    set_random_seed(0)
    model = Sequential([Input(shape=(4, 3)), LSTM(4), Dense(3, activation="softmax")])
    model.compile(SGD(0.0), "sparse_categorical_crossentropy")
    model.build_from_batch(torch.from_numpy(x[:2]))
    lstm, dense = torch_lstm(model.layers[0]), torch_dense(model.layers[1])
    with torch.no_grad():
        ce = F.cross_entropy(dense(lstm(torch.from_numpy(x))[0][:, -1]), torch.from_numpy(y).long(), reduction="none")
    cw = torch.tensor([1.0, 3.0, 0.5])[torch.from_numpy(y).long()]
    want = float((ce * cw * torch.from_numpy(sw)).sum() / 9)  # Keras: weighted sum over the batch size
    got = model.train_on_batch(x, y, sample_weight=sw, class_weight={0: 1.0, 1: 3.0, 2: 0.5})
    assert got == pytest.approx(want, rel=1e-5)
    history = model.fit(x, y, sample_weight=sw, class_weight={0: 1.0, 1: 3.0, 2: 0.5}, batch_size=9, epochs=1,
                        verbose=0, accelerator="cpu")
    assert history.history["loss"][0] == pytest.approx(want, rel=1e-5)


def test_predict_and_evaluate_from_a_dataset_of_ragged_items_match_the_arrays() -> None:
    model, xs, tags, score, sw = _two_output_model()

    class Items(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(xs)

        def __getitem__(self, i: int) -> Any:
            return xs[i], (tags[i], score[i]), sw[i]

    class Inputs(Items):
        def __getitem__(self, i: int) -> Any:
            return xs[i]

    tags_prob, pred = model.predict(Inputs(), batch_size=3, verbose=0)  # padded per batch, then to the longest
    for i, (probs, s) in enumerate(_plain_outputs(model, xs)):
        np.testing.assert_allclose(tags_prob[i, : len(xs[i])], probs.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pred[i], s.numpy(), rtol=1e-5, atol=1e-6)
    from_items = model.evaluate(Items(), batch_size=4, verbose=0, return_dict=True)
    from_arrays = model.evaluate(xs, [tags, score], sample_weight=sw, batch_size=4, verbose=0, return_dict=True)
    assert from_items == pytest.approx(from_arrays, rel=1e-6)


def test_a_norm_limit_given_to_fit_replaces_the_optimizers_other_norm_limit() -> None:
    """docs: limits given to compile or fit replace the optimizer's own (one norm limit at a time)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 5, 3)).astype("float32")
    y = rng.integers(0, 3, size=6)
    set_random_seed(0)
    model = Sequential([Input(shape=(5, 3)), LSTM(4), Dense(3, activation="softmax")])
    model.compile(SGD(1.0, clipnorm=0.001), "sparse_categorical_crossentropy")
    model.build_from_batch(torch.from_numpy(x[:2]))
    lstm, dense = torch_lstm(model.layers[0]), torch_dense(model.layers[1])
    params = trainable(lstm, dense)
    before = [p.detach().clone() for p in params]
    F.cross_entropy(dense(lstm(torch.from_numpy(x))[0][:, -1]), torch.from_numpy(y).long()).backward()
    torch.nn.utils.clip_grad_norm_(params, 0.05)
    model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0, accelerator="cpu", global_clipnorm=0.05)
    for g, b, p in zip(trainable(torch_lstm(model.layers[0]), torch_dense(model.layers[1])), before, params):
        torch.testing.assert_close(g, b - p.grad, rtol=1e-4, atol=1e-7)


def test_compile_and_fit_refuse_two_norm_limits_like_the_optimizer() -> None:
    model = Sequential([Input(shape=(5, 3)), LSTM(4), Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match="not both"):
        model.compile("sgd", "sparse_categorical_crossentropy", clipnorm=1.0, global_clipnorm=1.0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = np.zeros((4, 5, 3), "float32"), np.zeros(4, "int64")
    with pytest.raises(ValueError, match="not both"):
        model.fit(x, y, epochs=1, verbose=0, clipnorm=1.0, global_clipnorm=1.0)


class _Stream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Five batches of 8, yielded; no ``__len__`` (a stream, as from a large file)."""

    def __iter__(self) -> Any:
        rng = np.random.default_rng(0)
        for _ in range(5):
            yield (torch.from_numpy(rng.normal(size=(8, 6, 3)).astype("float32")),
                   torch.from_numpy(rng.integers(0, 2, size=(8,))))


def test_a_stream_without_len_trains_evaluates_and_predicts_like_the_same_batches_listed() -> None:
    """A DataLoader over an IterableDataset has no length: fit crashed on len(loader)."""
    from rnnkit.training.callbacks import Callback

    class Steps(Callback):
        seen: list[Any] = []

        def on_train_begin(self, logs: Any = None) -> None:
            Steps.seen.append(self.params["steps"])

    def model() -> Sequential:
        set_random_seed(3)
        m = Sequential([Input((6, 3)), LSTM(4), Dense(2, activation="softmax")])
        m.compile(SGD(0.5), "sparse_categorical_crossentropy", metrics=["accuracy"])
        return m

    listed = list(_Stream())
    a, b = model(), model()
    stream = torch.utils.data.DataLoader(_Stream(), batch_size=None)
    got = a.fit(stream, validation_data=stream, epochs=2, verbose=0, callbacks=[Steps()]).history
    want = b.fit(torch.utils.data.DataLoader(listed, batch_size=None, shuffle=False),
                 validation_data=torch.utils.data.DataLoader(listed, batch_size=None), epochs=2, verbose=0).history
    assert Steps.seen == [None]  # as Keras gives for a generator
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    assert a.evaluate(stream, verbose=0) == pytest.approx(b.evaluate(listed_loader := torch.utils.data.DataLoader(
        listed, batch_size=None), verbose=0), rel=1e-6)
    np.testing.assert_allclose(a.predict(stream, verbose=0), b.predict(listed_loader, verbose=0), rtol=1e-6)
