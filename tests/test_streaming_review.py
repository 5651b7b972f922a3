"""Review: streaming state from training to inference.

Stateful layers fed in chunks against one whole-sequence call, generation against the full forward
pass and an independent sampling distribution, truncated BPTT against autograd, perplexity recomputed.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import rnnkit.nn as rnn
from rnnkit.cli import app
from rnnkit.layers import GRU as KerasGRU
from rnnkit.layers import LSTM as KerasLSTM
from rnnkit.layers import SimpleRNN
from rnnkit.tasks.language_model import (
    Config,
    DataConfig,
    Preprocessor,
    RNNLanguageModel,
    TrainedLanguageModel,
    top_k_filter,
    top_p_filter,
)

I, H = 3, 5
CHUNKS = [(0, 2), (2, 3), (3, 7), (7, 9)]


def _parts(h):
    return h if isinstance(h, tuple) else (h,)


# -- stateful layers -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("implementation", ["auto", "reference"])
@pytest.mark.parametrize("padding", [None, "right", "left"])
def test_chunks_through_a_stateful_layer_equal_one_call(kind, implementation, padding):
    torch.manual_seed(0)
    whole = getattr(rnn, kind)(I, H, num_layers=2, batch_first=True, implementation=implementation).double()
    stream = getattr(rnn, kind)(I, H, num_layers=2, batch_first=True, implementation=implementation,
                                stateful=True).double()
    stream.load_state_dict(whole.state_dict())
    x = torch.randn(4, 9, I, dtype=torch.double)
    mask = torch.arange(9)[None] < torch.tensor([9, 5, 2, 0])[:, None]  # a chunk of only padding included
    if padding == "left":
        mask = mask.flip(1)
    m = None if padding is None else mask
    out, h = whole(x, mask=m)
    outs = []
    for a, b in CHUNKS:
        o, h_s = stream(x[:, a:b], mask=None if m is None else m[:, a:b])
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), out, atol=1e-12, rtol=0)
    for p, q in zip(_parts(h_s), _parts(h), strict=True):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=0)
    # step() on a stateful layer carries the same state; eval()/train() keep it
    stream.reset_state()
    stream.eval()
    steps = [stream.step(x[:, t])[0] for t in range(4)]
    stream.train()
    steps += [stream.step(x[:, t])[0] for t in range(4, 9)]
    torch.testing.assert_close(torch.stack(steps, 1), whole(x)[0], atol=1e-12, rtol=0)


def test_a_stateful_bidirectional_layer_is_refused():
    # it ran, carrying the backward direction's state from each chunk's first step into the next chunk's
    # last step: chunked outputs differed from one call without a word
    for kind in ("RNN", "LSTM", "GRU"):
        with pytest.raises(ValueError, match="stateful=True\\) cannot be bidirectional"):
            getattr(rnn, kind)(I, H, batch_first=True, bidirectional=True, stateful=True)
    with pytest.raises(ValueError, match="cannot be bidirectional"):
        rnn.Recurrent("gru", I, H, bidirectional=True, stateful=True)
    layer = rnn.LSTM(I, H, batch_first=True, bidirectional=True)
    layer.stateful = True  # switched on later (as truncated BPTT does for the layers it accepts)
    with pytest.raises(ValueError, match="cannot be bidirectional"):
        layer(torch.randn(2, 3, I))
    layer.stateful = False
    assert layer(torch.randn(2, 3, I))[0].shape == (2, 3, 2 * H)
    with pytest.raises(ValueError, match="bidirectional"):
        layer.step(torch.randn(2, I))


def test_a_batch_size_change_needs_a_reset():
    layer = rnn.GRU(I, H, batch_first=True, stateful=True)
    layer(torch.randn(2, 3, I))
    with pytest.raises(ValueError, match="batch size 2 but got 3; call reset_state"):
        layer(torch.randn(3, 3, I))
    layer.reset_state()
    assert layer.state is None
    fresh = rnn.GRU(I, H, batch_first=True)
    fresh.load_state_dict(layer.state_dict())
    x = torch.randn(3, 3, I)
    torch.testing.assert_close(layer(x)[0], fresh(x)[0])  # starts from zeros again


@pytest.mark.parametrize(("cls", "kw"), [(KerasLSTM, {}), (KerasGRU, {}), (SimpleRNN, {}),
                                         (KerasLSTM, {"activation": "relu"}), (KerasGRU, {"reset_after": False})])
def test_keras_stateful_layers_stream(cls, kw):
    torch.manual_seed(0)
    stream = cls(4, stateful=True, return_sequences=True, return_state=True, **kw)
    whole = cls(4, return_sequences=True, return_state=True, **kw)
    x = torch.randn(2, 7, 3)
    stream(x[:, :1])
    whole(x[:, :1])
    whole.set_weights(stream.get_weights())
    stream.reset_states()
    full = whole(x)
    parts = [stream(x[:, a:b]) for a, b in [(0, 3), (3, 4), (4, 7)]]
    torch.testing.assert_close(torch.cat([p[0] for p in parts], 1), full[0], atol=1e-6, rtol=0)
    for a, b in zip(parts[-1][1:], full[1:], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


# -- generation ----------------------------------------------------------------------------------
def _lm(tmp_path, text="the cat sat on the mat .\nthe dog ate the bone .\na bird sang .\n", scale=30.0, **data):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text * 3)
    prep = Preprocessor.fit(corpus, DataConfig(**data))
    torch.manual_seed(0)
    model = RNNLanguageModel(len(prep.vocab), embedding_dim=6, hidden_size=8, num_layers=2, tie_weights=False)
    with torch.no_grad():
        model.decoder.weight.mul_(scale)  # a peaked distribution: greedy and sampling differ visibly
    return TrainedLanguageModel(model, prep)


def _next_scores(lm, ids):
    with torch.no_grad():
        logits, _ = lm.model(torch.tensor([ids]))
    scores = logits[0, -1].double()
    scores[lm.prep.vocab.unk_id] = -math.inf  # never sampled (documented)
    return scores


def test_greedy_generation_is_the_argmax_of_the_full_forward_pass(tmp_path):
    lm = _lm(tmp_path)
    ids = lm.prep.encode_prompt("the cat")[0]
    out = lm.generate("the cat", length=12, greedy=True, stop="")
    assert len(out["tokens"]) == 12
    for token in out["tokens"]:
        assert lm.prep.vocab.token_to_id(token) == int(_next_scores(lm, ids).argmax())
        ids.append(lm.prep.vocab.token_to_id(token))


def _reference_probs(scores, temperature, k, p):
    probs = (scores / temperature).softmax(-1)
    if 0 < k < len(probs):
        probs = torch.where(probs >= probs.topk(k).values[-1], probs, 0)
        probs = probs / probs.sum()
    if p < 1:
        keep, mass = torch.zeros(len(probs), dtype=torch.bool), 0.0
        for i in probs.argsort(descending=True).tolist():
            if mass >= p:
                break
            keep[i], mass = True, mass + float(probs[i])
        probs = torch.where(keep, probs, 0)
        probs = probs / probs.sum()
    return probs


@pytest.mark.parametrize(("temperature", "k", "p"), [(0.7, 0, 1.0), (1.3, 3, 1.0), (1.0, 0, 0.6), (0.5, 4, 0.9),
                                                     (1.0, 100, 1.0)])
def test_sampling_probabilities_are_softmax_over_temperature_filtered(tmp_path, monkeypatch, temperature, k, p):
    lm = _lm(tmp_path, scale=3.0)
    seen = []
    multinomial = torch.multinomial
    monkeypatch.setattr(torch, "multinomial",
                        lambda probs, n, generator=None: (seen.append(probs), multinomial(probs, n, generator=generator))[1])
    out = lm.generate("the", length=6, temperature=temperature, top_k=k, top_p=p, seed=1, stop="")
    ids = lm.prep.encode_prompt("the")[0]
    assert len(seen) == len(out["tokens"]) == 6
    for token, probs in zip(out["tokens"], seen, strict=True):
        expected = _reference_probs(_next_scores(lm, ids), temperature, k, p)
        torch.testing.assert_close(probs / probs.sum(), expected, atol=1e-6, rtol=0)
        ids.append(lm.prep.vocab.token_to_id(token))


def test_top_p_keeps_tied_tokens_together_as_top_k_does():
    # the nucleus kept the tied tokens sort happened to put first: [0.3, 0.4, 0.3] at p=0.5 kept the first 0.3 and
    # dropped the second, and five equal tokens at p=0.3 kept the two of lowest id (sampling biased by token id)
    tied = torch.log(torch.tensor([0.3, 0.4, 0.3], dtype=torch.double))
    assert torch.isfinite(top_p_filter(tied, 0.5)).tolist() == [True, True, True]
    assert torch.isfinite(top_k_filter(tied, 2)).tolist() == [True, True, True]
    uniform = torch.zeros(5, dtype=torch.double)
    assert torch.isfinite(top_p_filter(uniform, 0.3)).all()
    # no ties: the boundary token (the one that makes the mass reach p) is kept, the next one is not
    logits = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125 / 2, 0.125 / 2], dtype=torch.double))
    assert torch.isfinite(top_p_filter(logits, 0.75)).tolist() == [True, True, False, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.76)).tolist() == [True, True, True, False, False]
    assert torch.isfinite(top_p_filter(logits[[2, 0, 1, 3, 4]], 0.76)).tolist() == [True, True, True, False, False]
    assert torch.equal(top_k_filter(logits, 99), logits)


def test_generation_settings_that_do_nothing_useful_are_refused(tmp_path):
    lm = _lm(tmp_path)
    with pytest.raises(ValueError, match="top_k must be >= 0"):  # -1 sampled from every token without a word
        lm.generate("the", length=2, top_k=-1, seed=0)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="top_p must be in"):
            lm.generate("the", length=2, top_p=bad)
    assert lm.generate("the", length=0, seed=0)["tokens"] == []
    out = lm.generate("zebra the", length=3, seed=0, stop="")
    assert out["unknown_prompt_tokens"] == ["zebra"] and len(out["tokens"]) == 3
    assert len(lm.generate("", length=3, seed=0, stop="")["tokens"]) == 3


def test_a_stop_token_generation_never_samples_is_refused(tmp_path):
    # a character model's <eos> (line_ending keep) is in the vocabulary but never sampled: --stop '<eos>' was
    # accepted and generation ran to the length limit
    lm = _lm(tmp_path, text="ab ba\nba ab\n", level="char")
    assert lm.prep.line_ending == "keep" and "<eos>" in lm.prep.vocab
    with pytest.raises(ValueError, match="never generated by this model"):
        lm.generate("a", length=5, seed=0, stop="<eos>")
    out = lm.generate("a", length=50, seed=0, stop="\n", temperature=5.0)
    assert "\n" not in out["tokens"][:-1]
    word = _lm(tmp_path)  # a word model's <eos> is a line end: a valid stop
    tokens = word.generate("the", length=30, seed=0, stop="<eos>", temperature=5.0)["tokens"]
    assert "<eos>" not in tokens[:-1]


def test_a_seed_repeats_the_text_without_touching_the_global_generator(tmp_path):
    lm = _lm(tmp_path, scale=3.0)
    before = torch.get_rng_state()
    a = lm.generate("the", length=15, seed=5, stop="", temperature=1.2)
    streamed: list[str] = []
    b = lm.generate("the", length=15, seed=5, stop="", temperature=1.2, on_token=streamed.append)
    assert torch.equal(torch.get_rng_state(), before)
    assert a == b and streamed == a["tokens"] and " ".join(streamed) == a["text"]
    assert lm.generate("the", length=15, seed=6, stop="", temperature=1.2)["tokens"] != a["tokens"]


# -- training: truncated BPTT and perplexity -----------------------------------------------------
def _corpus(path, lines=60):
    import random

    rng = random.Random(0)
    words = ["the cat", "a dog", "my friend"], ["sees", "likes"], ["fish", "the moon"]
    path.write_text("\n".join(" ".join(rng.choice(w) for w in words) + " ." for _ in range(lines)) + "\n")
    return path


def test_truncated_bptt_carries_state_but_no_gradient_between_windows(tmp_path, monkeypatch):
    import rnnkit.tasks.engine as engine
    from rnnkit.tasks import language_model as lm_task
    from rnnkit.tasks.run import RunDir

    captured = {}

    class Captured(Exception):
        pass

    def fake_fit(model, train_loader, dev_loader, **kw):
        captured.update(kw, model=model, windows=list(train_loader))
        raise Captured

    monkeypatch.setattr(engine, "fit", fake_fit)
    cfg = Config()
    cfg.train.batch_size, cfg.train.bptt = 2, 4
    cfg.model.hidden_size = cfg.model.embedding_dim = 6
    cfg.model.dropout = 0.0
    run = RunDir.create(tmp_path, lm_task.NAME, "r")
    with pytest.raises(Captured):
        lm_task.train(cfg, _corpus(tmp_path / "train.txt"), _corpus(tmp_path / "dev.txt", 10), run,
                      log=lambda s: None, progress=False)
    model, loss_fn, windows = captured["model"], captured["loss_fn"], captured["windows"]
    model.train()
    embedded = []
    embed = model._embed
    monkeypatch.setattr(model, "_embed", lambda ids: (embedded.append(embed(ids).detach().requires_grad_()),
                                                      embedded[-1])[1])
    losses = [loss_fn(model, w) for w in windows[:3]]
    grads = torch.autograd.grad(losses[2], embedded, allow_unused=True)
    assert grads[0] is None and grads[1] is None and grads[2].abs().sum() > 0
    # ... while the state was carried: window 2's loss equals its share of one pass over windows 0-2
    with torch.no_grad():
        ids = torch.cat([w[0] for w in windows[:3]], 1)
        targets = torch.cat([w[1] for w in windows[:3]], 1)
        logits, _ = model(ids)
        tail = logits[:, -windows[2][0].shape[1]:]
        expected = torch.nn.functional.cross_entropy(tail.reshape(-1, tail.shape[-1]),
                                                     targets[:, -tail.shape[1]:].reshape(-1))
    assert float(losses[2].detach()) == pytest.approx(float(expected), rel=1e-5)


def test_reported_perplexity_is_exp_of_the_mean_nll_recomputed(tmp_path):
    train, dev = _corpus(tmp_path / "train.txt"), _corpus(tmp_path / "dev.txt", 12)
    result = CliRunner().invoke(app, [
        "train", "language-model", "--train", str(train), "--dev", str(dev), "--out", str(tmp_path), "--name", "run",
        "--set", "train.epochs=1", "--set", "model.hidden_size=8", "--set", "model.embedding_dim=8",
        "--set", "train.batch_size=4", "--set", "train.bptt=5", "--quiet"])
    assert result.exit_code == 0, result.output
    reported = json.loads((tmp_path / "run" / "metrics.json").read_text())["dev"]
    lm = TrainedLanguageModel.load(tmp_path / "run")
    ids = []
    for line in dev.read_text().splitlines():
        ids += lm.prep.encode_prompt(line)[0] + [lm.prep.vocab.eos_id]
    total, state = 0.0, None  # one token at a time, state carried through the whole file
    with torch.no_grad():
        for a, b in zip(ids[:-1], ids[1:], strict=True):
            logits, state = lm.model.step(torch.tensor([a]), state)
            total -= float(logits[0].log_softmax(-1)[b])
    assert reported["perplexity"] == pytest.approx(math.exp(total / (len(ids) - 1)), rel=1e-5)


def test_the_bidirectional_wrapper_refuses_a_stateful_layer():
    """rnnkit.nn.Bidirectional deep-copied a stateful layer: the backward copy carried state across chunks."""
    from rnnkit.nn.wrappers import Bidirectional as Wrapper

    with pytest.raises(ValueError, match="cannot wrap a stateful layer"):
        Wrapper(rnn.LSTM(3, 4, batch_first=True, stateful=True))
    with pytest.raises(ValueError, match="cannot wrap a stateful backward_layer"):
        Wrapper(rnn.LSTM(3, 4, batch_first=True), backward_layer=rnn.LSTM(3, 4, batch_first=True, stateful=True))
    Wrapper(rnn.LSTM(3, 4, batch_first=True))  # not stateful: fine
