"""Mutation testing, round 3: task-level computations checked against independent references.

Each test here was written because a plausible wrong computation in a task module (a swapped
argument, a wrong direction, an off-by-one) left the rest of the suite passing. Every expected
value comes from the definition (hand-computed numbers, plain Python, brute force, sacreBLEU or
jiwer), never from the code path under test.
"""

from __future__ import annotations

import csv
import json
import math
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app

runner = CliRunner()


def _history(run_dir):
    with (run_dir / "history.csv").open() as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


# -- language model ----------------------------------------------------------------------------
def _lm_prep(tmp_path, text, **data):
    from rnnkit.tasks.language_model import DataConfig, Preprocessor

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    return Preprocessor.fit(corpus, DataConfig(**data))


def _fixed_distribution_lm(prep, probs):
    """A language model whose next-token distribution is ``probs`` (token -> probability) whatever
    the context: zero output weights, the log-probabilities as the output bias."""
    from rnnkit.tasks.language_model import RNNLanguageModel, TrainedLanguageModel

    model = RNNLanguageModel(len(prep.vocab), embedding_dim=4, hidden_size=4, num_layers=1, tie_weights=False)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.fill_(-60.0)
        for token, p in probs.items():
            model.decoder.bias[prep.vocab.token_to_id(token)] = math.log(p)
    return TrainedLanguageModel(model.eval(), prep)


def test_generation_applies_top_k_before_top_p(tmp_path):
    # p = (a .5, b .3, c .2). top_k=2 keeps a, b renormalised to (.625, .375); top_p=.6 then keeps only
    # a (the mass above b, .625, already reaches .6). Nucleus first would keep a and b (mass above b: .5).
    lm = _fixed_distribution_lm(_lm_prep(tmp_path, "a b c\nb c a\nc a b\n"), {"a": 0.5, "b": 0.3, "c": 0.2})
    for seed in range(3):
        out = lm.generate("a", length=40, top_k=2, top_p=0.6, seed=seed, stop="")
        assert out["tokens"] == ["a"] * 40
    # each filter alone: top_k=2 gives a and b only, top_p=.6 alone gives a and b only
    seen = set(lm.generate("a", length=200, top_k=2, seed=0, stop="")["tokens"])
    assert seen == {"a", "b"}
    seen = set(lm.generate("a", length=200, top_p=0.6, seed=0, stop="")["tokens"])
    assert seen == {"a", "b"}


def _lm_corpus(path, lines, seed=0):
    rng = random.Random(seed)
    subjects, verbs, objects = ["the cat", "a dog", "my friend"], ["sees", "likes", "eats"], ["fish", "bread"]
    path.write_text("\n".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} ."
                              for _ in range(lines)) + "\n")
    return path


def test_language_model_best_epoch_is_the_lowest_dev_perplexity(tmp_path):
    corpus = _lm_corpus(tmp_path / "train.txt", 120)
    args = ["train", "language-model", "--train", str(corpus), "--out", str(tmp_path), "--name", "run", "--quiet",
            "--set", "train.epochs=3", "--set", "model.hidden_size=8", "--set", "model.embedding_dim=8",
            "--set", "train.batch_size=2", "--set", "train.bptt=5", "--set", "train.patience=null"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    history = _history(tmp_path / "run")
    perplexities = [row["dev_perplexity"] for row in history]
    assert len(perplexities) == 3 and len(set(perplexities)) == 3 and all(map(math.isfinite, perplexities))
    best = 1 + min(range(3), key=perplexities.__getitem__)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_epoch"] == best


def test_the_dev_tail_holds_the_nearest_whole_number_of_lines(tmp_path):
    from rnnkit.tasks.language_model import split_dev_tail

    source = tmp_path / "all.txt"
    source.write_text("".join(f"line {i}\n" for i in range(10)))
    for fraction, lines in ((0.27, 3), (0.33, 3), (0.36, 4), (0.04, 1), (0.99, 9)):  # 2.7 -> 3, 3.3 -> 3, 3.6 -> 4
        held = split_dev_tail(source, fraction, tmp_path / "head.txt", tmp_path / "tail.txt")
        assert held == lines
        assert (tmp_path / "tail.txt").read_text() == "".join(f"line {i}\n" for i in range(10 - lines, 10))
        assert (tmp_path / "head.txt").read_text() == "".join(f"line {i}\n" for i in range(10 - lines))


class _Captured(Exception):
    pass


def test_variable_bptt_weighs_each_window_by_its_length(tmp_path, monkeypatch):
    """AWD-LSTM: a window of L tokens costs (mean NLL per token) x L / bptt, so each token weighs the
    same whatever window it falls in (checked against cross-entropy computed here)."""
    import torch.nn.functional as F

    import rnnkit.tasks.engine as engine

    seen = {}

    def fake_fit(model, train_loader, dev_loader, *, loss_fn, **kw):
        seen["model"], seen["loss_fn"], seen["loader"] = model, loss_fn, train_loader
        raise _Captured

    monkeypatch.setattr(engine, "fit", fake_fit)
    corpus = _lm_corpus(tmp_path / "train.txt", 200)
    args = ["train", "language-model", "--train", str(corpus), "--out", str(tmp_path), "--name", "run", "--quiet",
            "--set", "model.hidden_size=8", "--set", "model.embedding_dim=8", "--set", "train.batch_size=2",
            "--set", "train.bptt=10", "--set", "train.variable_bptt=true"]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, _Captured), result.output
    model, loss_fn = seen["model"].eval(), seen["loss_fn"]
    inputs, targets, _ = next(iter(seen["loader"]))
    for length in (2, 3, 5):  # shorter than bptt (10); start 0: a fresh state, as the reference below
        window = (inputs[:, :length], targets[:, :length], 0)
        with torch.no_grad():
            got = float(loss_fn(model, window))
            logits, _ = model(window[0])
            mean_nll = float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[1].reshape(-1)))
        assert got == pytest.approx(mean_nll * length / 10, rel=1e-5)


# -- translation: length normalisation, BLEU wiring ----------------------------------------------
def _tiny_seq2seq(seed=3, vocab=6):
    from rnnkit.tasks.seq2seq import Seq2Seq

    torch.manual_seed(seed)
    model = Seq2Seq(7, vocab, cell="lstm", embedding_dim=6, hidden_size=5, attention="bahdanau",
                    dropout=0.0).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def _teacher_forced_log_prob(model, src, lengths, tokens):
    """log p(tokens + <eos>) from one teacher-forced forward pass (log-softmax of the logits)."""
    target_in = torch.tensor([[model.bos_id, *tokens]])
    with torch.no_grad():
        logits, _, _ = model(src, lengths, target_in)
    log_probs = logits.double().log_softmax(-1)[0]
    return sum(float(log_probs[t, y]) for t, y in enumerate([*tokens, model.eos_id]))


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_ranks_by_log_prob_over_length_to_the_alpha(alpha):
    """Vocabulary pad, unk, bos, eos, a, b; at most 3 tokens: a beam of 27 keeps every prefix, so the
    n-best list is the brute-force ranking of all 40 outputs by log p / (tokens + 1) ** alpha."""
    import itertools

    from rnnkit.tasks.seq2seq import beam_search

    model = _tiny_seq2seq()
    src, lengths = torch.tensor([[4, 5, 6]]), torch.tensor([3])
    candidates = [list(c) for n in range(4) for c in itertools.product([1, 4, 5], repeat=n)]
    scored = []
    for c in candidates:
        lp = _teacher_forced_log_prob(model, src, lengths, c)
        scored.append((lp / (len(c) + 1) ** alpha, lp, c))
    scored.sort(key=lambda x: -x[0])
    (found,) = beam_search(model, src, lengths, beam_size=27, nbest=5, length_penalty=alpha, max_length_ratio=0.0,
                           max_length_offset=3)
    assert [h.tokens for h in found] == [c for _, _, c in scored[:5]]
    for h, (score, lp, _) in zip(found, scored):
        assert h.score == pytest.approx(score, rel=1e-9) and h.log_prob == pytest.approx(lp, rel=1e-9)


def test_the_output_length_limit_is_the_floor_of_ratio_times_source_length_plus_offset():
    from rnnkit.tasks.seq2seq import greedy_search, max_lengths

    assert max_lengths(torch.tensor([3, 5, 1, 0]), 1.5, 1).tolist() == [5, 8, 2, 1]  # 5.5, 8.5, 2.5, 1 (at least 1)
    assert max_lengths(torch.tensor([7]), 0.3, 0).tolist() == [2]  # 2.1
    # a decoder that never wants <eos> stops exactly at the limit: floor(1.5 * 3 + 1) = 5 tokens
    model = _tiny_seq2seq(seed=0, vocab=6)
    with torch.no_grad():
        (model.output_bias if model.output is None else model.output.bias)[model.eos_id] = -1e4
    src, lengths = torch.tensor([[4, 5, 6]]), torch.tensor([3])
    (hyp,) = greedy_search(model, src, lengths, max_length_ratio=1.5, max_length_offset=1)
    assert len(hyp.tokens) == 5
    (hyp,) = greedy_search(model, src, lengths, max_length_ratio=0.9, max_length_offset=0)  # 2.7
    assert len(hyp.tokens) == 2


_SOURCE = ["ka", "lu", "mi", "no", "pe", "ri", "so", "tu", "va", "ze"]
_TARGET = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def _toy_pairs(folder, name, n, seed):
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        words = [rng.choice(range(10)) for _ in range(rng.randint(2, 6))]
        src.append(" ".join(_SOURCE[w] for w in words))
        tgt.append(" ".join(_TARGET[w] for w in reversed(words)))
    (folder / f"{name}.src").write_text("\n".join(src) + "\n")
    (folder / f"{name}.tgt").write_text("\n".join(tgt) + "\n")
    return [str(folder / f"{name}.src"), str(folder / f"{name}.tgt")], src, tgt


def test_translation_dev_bleu_scores_each_hypothesis_against_its_own_reference(tmp_path):
    """The dev BLEU of each epoch (greedy decoding) is sacreBLEU's corpus BLEU of the translations
    against their references in file order (dev batches are sorted by length, so an index slip would
    pair translations with other sentences' references); best_epoch is the epoch of the highest BLEU."""
    import sacrebleu

    from rnnkit.tasks.translation import TrainedTranslator

    train_files, _, _ = _toy_pairs(tmp_path, "train", 300, 0)
    dev_files, dev_src, dev_tgt = _toy_pairs(tmp_path, "dev", 24, 1)
    args = ["train", "translation", "--train", *train_files, "--dev", *dev_files, "--out", str(tmp_path / "runs"),
            "--name", "toy", "--quiet"]
    for item in ["data.vocab_size=60", "model.embedding_dim=32", "model.hidden_size=32", "model.dropout=0.0",
                 "train.batch_size=32", "train.learning_rate=0.005", "decode.beam_size=2", "train.epochs=3",
                 "train.patience=null"]:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "toy"
    history = _history(run)
    bleus = [row["dev_bleu"] for row in history]
    best = max(range(len(bleus)), key=lambda i: (bleus[i], -i))  # the earliest of equal scores
    assert json.loads((run / "metrics.json").read_text())["best_epoch"] == best + 1
    # the run keeps the best epoch's weights: its greedy translations give that epoch's dev scores
    hyps = [t["translation"] for t in TrainedTranslator.load(run).translate(dev_src, beam_size=1)]
    bleu = sacrebleu.corpus_bleu(hyps, [dev_tgt]).score
    assert bleu > 5.0  # enough right words that misaligned references would score differently
    assert history[best]["dev_bleu"] == pytest.approx(bleu, abs=1e-6)
    assert history[best]["dev_chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [dev_tgt]).score, abs=1e-6)
    assert sacrebleu.corpus_bleu(hyps, [sorted(dev_tgt, key=len)]).score < bleu - 1  # the order matters here


# -- rnnkit compare ----------------------------------------------------------------------------
def test_compare_recommends_the_fastest_near_best_cell_before_the_smallest():
    from rnnkit.insight.compare import CellRun, CompareResult

    runs = [CellRun("lstm", s, f"lstm-{s}", q, t, 9_000, 10.0) for s, (q, t) in enumerate([(0.90, 20.0), (0.92, 22.0)])]
    runs += [CellRun("gru", s, f"gru-{s}", q, t, 50_000, 10.0) for s, (q, t) in enumerate([(0.905, 5.0), (0.905, 7.0)])]
    runs += [CellRun("rnn", s, f"rnn-{s}", q, t, 1_000, 10.0) for s, (q, t) in enumerate([(0.50, 1.0), (0.52, 1.0)])]
    result = CompareResult("text-classification", "accuracy", True, runs, ["lstm", "gru", "rnn"], "rss")
    rows = {r["cell"]: r for r in result.summary()}
    assert rows["lstm"]["mean"] == pytest.approx(0.91) and rows["lstm"]["seconds"] == pytest.approx(21.0)
    assert rows["lstm"]["std"] == pytest.approx(math.sqrt(2 * 0.01 ** 2))  # sample std of 0.90, 0.92
    # the best mean is lstm's 0.91, margin max(0.01414, 0.005); gru (0.905) is within it and trains faster
    # (6 s against 21 s) though it is larger; rnn is far below
    assert result.recommendation()[0] == "gru"


# -- insight: gradient diagnostics -------------------------------------------------------------
def test_reverse_direction_gradient_norms_are_in_time_order_and_the_parameter_norm_is_global():
    """A loss that reads only the backward half of the output at t0: dL/dh_bwd_t is 0 before t0 (those
    states are computed after h_bwd_t0 and never reach the loss) and w itself at t0, whatever the
    order the reverse pass visited the steps in. The parameter-gradient norm is the L2 norm of every
    parameter's gradient together (autograd here)."""
    import rnnkit.nn as rnn
    from rnnkit.insight.gradients import gradient_diagnostics

    torch.manual_seed(0)
    layer = rnn.Recurrent("gru", 3, 4, bidirectional=True, batch_first=True)
    x, w, t0 = torch.randn(2, 6, 3), torch.randn(2, 4), 2

    def loss_fn(m, b):
        return (m(b)[0][:, t0, 4:] * w).sum()

    report = gradient_diagnostics(layer, x, loss_fn=loss_fn, jacobians=False)
    backward = report.grad_norms_by_layer["l0_reverse"]
    assert len(backward) == 6
    assert backward[:t0] == [0.0] * t0
    assert backward[t0] == pytest.approx(float(w.norm(dim=1).mean()), rel=1e-5)
    assert all(v > 0 for v in backward[t0 + 1:])
    assert report.grad_norms_by_layer["l0"] == [0.0] * 6  # the forward half never reaches this loss

    layer.zero_grad()
    loss_fn(layer.eval(), x).backward()
    expected = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in layer.parameters() if p.grad is not None))
    assert report.param_grad_norm == pytest.approx(expected, rel=1e-5)


# -- text classification and tagging -----------------------------------------------------------
def test_text_classification_best_epoch_is_the_first_of_equal_scores():
    """The engine keeps the weights of the first epoch reaching the best score (a later equal one is
    not an improvement), so best_epoch must name that epoch too."""
    from rnnkit.tasks.text_classification import _best_epoch

    history = [{"epoch": 1, "dev_accuracy": 0.7, "dev_macro_f1": 0.9}, {"epoch": 2, "dev_accuracy": 0.8},
               {"epoch": 3, "dev_accuracy": 0.8, "dev_macro_f1": 0.1}, {"epoch": 4, "dev_accuracy": 0.75}]
    assert _best_epoch(history, "accuracy") == 2
    assert _best_epoch(history, "macro_f1") == 1


def test_tagging_without_crf_takes_the_argmax_of_each_real_token_only():
    from rnnkit.tasks.tagging import decode_tags

    emissions = torch.tensor([[[0.0, 2.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]],
                              [[1.0, 0.0, 0.0], [0.0, 0.0, 9.0], [0.0, 9.0, 0.0]]])
    assert decode_tags(None, emissions, torch.tensor([3, 1])) == [[1, 0, 2], [0]]
    assert decode_tags(None, emissions, torch.tensor([2, 2])) == [[1, 0], [0, 2]]


def test_an_entitys_score_is_the_mean_of_its_tokens_scores():
    from types import SimpleNamespace

    from rnnkit.tasks.tagging import TrainedTagger

    tagger = object.__new__(TrainedTagger)
    tagger.prep = SimpleNamespace(file_scheme="IOB2")
    tags, scores = ["B-PER", "I-PER", "I-PER", "O", "B-LOC"], [0.9, 0.6, 0.3, 0.99, 0.8]
    tagger._tag = lambda sentences, with_scores: [(tags, scores)]
    (result,) = tagger.predict(["Ann Lee Smith visited Oslo"])
    assert [(e["type"], e["start"], e["end"]) for e in result["entities"]] == [("PER", 0, 3), ("LOC", 4, 5)]
    assert result["entities"][0]["score"] == pytest.approx(0.6, abs=1e-4)  # (0.9 + 0.6 + 0.3) / 3
    assert result["entities"][1]["score"] == pytest.approx(0.8, abs=1e-4)


def _conll(path, sentences):
    path.write_text("".join("".join(f"{w} {t}\n" for w, t in s) + "\n" for s in sentences))
    return path


def test_tagging_dev_precision_and_recall_are_not_swapped(tmp_path, monkeypatch):
    """Dev entity scores of an epoch: predicted PER only, gold PER and LOC: precision 1/1, recall 1/2."""
    import rnnkit.tasks.engine as engine
    import rnnkit.tasks.tagging as tagging

    seen = {}
    fit_prep = tagging.Preprocessor.fit

    def capture_prep(sentences, cfg):
        seen["prep"] = fit_prep(sentences, cfg)
        return seen["prep"]

    def fake_fit(model, train_loader, dev_loader, *, metric_fn, **kw):
        seen["metric_fn"] = metric_fn
        raise _Captured

    monkeypatch.setattr(tagging.Preprocessor, "fit", capture_prep)
    monkeypatch.setattr(engine, "fit", fake_fit)
    sentence = [("Ann", "B-PER"), ("Lee", "I-PER"), ("saw", "O"), ("Oslo", "B-LOC")]
    train = _conll(tmp_path / "train.txt", [sentence] * 6)
    dev = _conll(tmp_path / "dev.txt", [sentence] * 2)
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--dev", str(dev), "--out",
                                 str(tmp_path), "--name", "run", "--quiet"])
    assert isinstance(result.exception, _Captured), result.output
    prep = seen["prep"]

    def ids(file_tags):
        return [prep.tags.index(t) for t in prep.to_model_tags(file_tags)]

    gold = torch.tensor([ids(["B-PER", "I-PER", "O", "B-LOC"]), ids(["O", "O", "O", "O"])])
    pred = torch.tensor([ids(["B-PER", "I-PER", "O", "O"]), ids(["O", "O", "O", "O"])])
    scores = seen["metric_fn"](pred, gold)
    assert scores["precision"] == pytest.approx(1.0) and scores["recall"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx(2 / 3) and scores["token_accuracy"] == pytest.approx(7 / 8)


def test_document_groups_hold_at_most_max_tokens_and_never_cross_a_document():
    from rnnkit.tasks.tagging import group_sentences

    # 3 + 2 = 5 tokens fit a group of 5 exactly; 4 + 1 too
    assert group_sentences([3, 2, 4, 1], [0, 0, 0, 0], 5) == [range(0, 2), range(2, 4)]
    assert group_sentences([3, 2, 4, 1], [0, 0, 0, 0], 4) == [range(0, 1), range(1, 2), range(2, 3), range(3, 4)]
    assert group_sentences([1, 1, 1, 1], [0, 0, 1, 1], 10) == [range(0, 2), range(2, 4)]
    assert group_sentences([7, 1], [0, 0], 5) == [range(0, 1), range(1, 2)]  # a long sentence alone


_PEOPLE = ["Anna", "Carla", "Boris", "Dmitri", "Elena", "Farid"]
_PLACES = ["Oslo", "Paris", "Lima", "Cairo", "Quito", "Riga"]
_WORDS = ["visited", "left", "saw", "liked", "met", "toured", "the", "a", "city", "today"]


def _ner_file(path, n, seed):
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        sentence = [(rng.choice(_PEOPLE), "B-PER"), ("Smith", "I-PER"), (rng.choice(_WORDS), "O"),
                    (rng.choice(_WORDS), "O"), (rng.choice(_PLACES), "B-LOC"), (".", "O")]
        rng.shuffle(sentence) if rng.random() < 0.3 else None
        sentences.append(sentence)
    return _conll(path, sentences)


def test_tagging_best_epoch_is_the_highest_dev_f1(tmp_path):
    train, dev = _ner_file(tmp_path / "train.txt", 60, 1), _ner_file(tmp_path / "dev.txt", 20, 2)
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--dev", str(dev), "--out", str(tmp_path),
                                 "--name", "run", "--quiet", "--set", "train.epochs=3", "--set", "model.hidden_size=8",
                                 "--set", "model.embedding_dim=8", "--set", "model.char_hidden_size=4",
                                 "--set", "train.learning_rate=0.01", "--set", "train.patience=null"])
    assert result.exit_code == 0, result.output
    f1 = [row["dev_f1"] for row in _history(tmp_path / "run")]
    assert len(f1) == 3 and max(f1) > min(f1)
    best = max(range(3), key=lambda i: (f1[i], -i))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["best_epoch"] == best + 1


# -- speech: speaker-held-out dev split -----------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_a_speaker_dev_split_always_leaves_a_training_speaker(fraction):
    from types import SimpleNamespace

    from rnnkit.tasks.speech import Utterance, split_dev

    items = [Utterance(f"{s}_{i}.wav", str(i), s) for s in ("ann", "bob", "cid") for i in range(4)]
    cfg = SimpleNamespace(dev_split="speaker", dev_fraction=fraction)
    for seed in range(6):
        train, dev = split_dev(items, cfg, seed)
        train_speakers, dev_speakers = {u.speaker for u in train}, {u.speaker for u in dev}
        assert train_speakers and dev_speakers and not train_speakers & dev_speakers
        assert len(train) + len(dev) == 12
        # whole speakers are added until the fraction is reached: 0.3 of 12 needs 1 speaker (4 >= 3.6);
        # 0.9 would need all 3, but one always stays for training
        assert len(dev_speakers) == (1 if fraction == 0.3 else 2)


# -- forecasting: forecasts back in each series' own units --------------------------------------
class _UnitGaussian(torch.nn.Module):
    """A forecaster answering N(0, 1) in scaled units everywhere: in original units, each series'
    training mean and (population) standard deviation, which the test computes with NumPy."""

    lookback, horizon, likelihood = 6, 3, "gaussian"

    def forward(self, x, future, ids):
        zeros = torch.zeros(x.shape[0], self.horizon, 1)
        return torch.stack([zeros, torch.ones_like(zeros)], -1)

    def point(self, params):
        return params[..., 0]

    def quantiles_of(self, params, levels):
        from statistics import NormalDist

        z = torch.tensor([NormalDist().inv_cdf(q) for q in levels], dtype=params.dtype)
        return params[..., 0:1] + params[..., 1:2] * z


def test_backtest_forecasts_are_unscaled_with_their_own_series_statistics():
    from rnnkit.data import TimeSeries
    from rnnkit.tasks.forecasting import DataConfig, Pipeline, _split, run_backtest

    rng = np.random.default_rng(0)
    series = [TimeSeries.from_arrays(10 + rng.normal(size=40), series_id="small"),
              TimeSeries.from_arrays(1000 + 50 * rng.normal(size=40), series_id="large")]
    cfg = DataConfig(target=["target_0"], lookback=6, horizon=3, val_size=6, test_size=6, scaler="standard")
    bounds = _split(series, cfg)
    pipe = Pipeline.fit(series, bounds, cfg)
    stops = {s.series_id: bounds[s.series_id].train[1] for s in series}
    bt = run_backtest(_UnitGaussian(), pipe, series, {sid: bounds[sid].test for sid in stops}, stops, 1, [],
                      [0.1, 0.5, 0.9])
    assert {k for k, _ in bt.windows} == {0, 1}
    for i, (k, _) in enumerate(bt.windows):
        train = series[k].targets[: stops[series[k].series_id], 0]
        np.testing.assert_allclose(bt.point[i], train.mean(), rtol=1e-9)
        np.testing.assert_allclose(bt.std[i], train.std(), rtol=1e-9)
        np.testing.assert_allclose(bt.quantiles[i, :, 0, 1], train.mean(), rtol=1e-9)  # the median


def test_seasonal_naive_needs_only_one_full_season():
    from rnnkit.tasks.forecasting_models import seasonal_naive_forecast

    history = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    expected = [[1, 10], [2, 20], [3, 30], [4, 40], [1, 10], [2, 20]]  # y[t + h] = y[t + h - 4k]
    np.testing.assert_array_equal(seasonal_naive_forecast(history, 6, 4), expected)
    np.testing.assert_array_equal(seasonal_naive_forecast(history[:3], 2, 4), [[3, 30], [3, 30]])  # < a season: naive


def test_speech_dev_wer_reads_the_reference_first_and_best_epoch_is_the_lowest_wer(tmp_path, monkeypatch):
    """Word and character error counts are normalised by the REFERENCE's length, so every
    error_counts call (the dev WER of each epoch, and the final scoring) must get the reference
    transcript first; best_epoch is the epoch of the lowest dev WER (ties: lowest CER, then earliest)."""
    sf = pytest.importorskip("soundfile")
    import rnnkit.tasks.speech as speech

    rate, rng = 8000, np.random.default_rng(0)
    freqs, words = {"0": 440.0, "1": 1100.0, "2": 2300.0}, {"0": "a", "1": "b", "2": "c"}

    def tone(label):
        t = np.arange(int(0.3 * rate)) / rate
        wave = 0.5 * np.sin(2 * np.pi * freqs[label] * rng.uniform(0.95, 1.05) * t) * np.hanning(t.size)
        return (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)

    rows, transcripts = ["path,label"], set()
    for i in range(24):
        labels = [str(rng.integers(0, 3)) for _ in range(2)]
        sf.write(tmp_path / f"u{i}.wav", np.concatenate([tone(labels[0]), np.zeros(400, np.float32),
                                                         tone(labels[1])]), rate)
        rows.append(f"u{i}.wav,{words[labels[0]]} {words[labels[1]]}")
        transcripts.add(f"{words[labels[0]]} {words[labels[1]]}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    calls = []
    counted = speech.error_counts

    def recording(reference, hypothesis):
        calls.append((reference, hypothesis))
        return counted(reference, hypothesis)

    monkeypatch.setattr(speech, "error_counts", recording)
    import rnnkit.tasks.engine as engine

    history = [{"epoch": 1, "train_loss": 3.0, "seconds": 1.0, "lr": 0.01, "dev_wer": 0.5, "dev_cer": 0.3},
               {"epoch": 2, "train_loss": 2.0, "seconds": 2.0, "lr": 0.01, "dev_wer": 0.4, "dev_cer": 0.2},
               {"epoch": 3, "train_loss": 1.5, "seconds": 3.0, "lr": 0.01, "dev_wer": 0.4, "dev_cer": 0.1},
               {"epoch": 4, "train_loss": 1.0, "seconds": 4.0, "lr": 0.01, "dev_wer": 0.6, "dev_cer": 0.05}]

    def fake_fit(model, train_loader, dev_loader, *, predict_fn, **kw):  # one dev pass, then a scripted history
        with torch.no_grad():
            for batch in dev_loader:
                predict_fn(model.eval(), batch)
        return [dict(row) for row in history]

    monkeypatch.setattr(engine, "fit", fake_fit)
    result = runner.invoke(app, ["train", "speech", "--train", str(tmp_path / "m.csv"), "--out", str(tmp_path / "runs"),
                                 "--name", "m", "--quiet", "--set", "data.mode=transcripts", "--set", "data.split=none",
                                 "--set", "model.hidden_size=16"])
    assert result.exit_code == 0, result.output
    assert calls and {r for r, _ in calls} <= transcripts
    assert any(h not in transcripts for _, h in calls)  # the check above can tell the two apart
    # the lowest WER (0.4, epochs 2 and 3), the tie broken by the lower CER: epoch 3
    assert json.loads((tmp_path / "runs" / "m" / "metrics.json").read_text())["best_epoch"] == 3


def test_forecasting_best_epoch_is_the_lowest_dev_loss(tmp_path, monkeypatch):
    import rnnkit.tasks.engine as engine

    history = [{"epoch": e, "train_loss": 1.0 / e, "seconds": float(e), "lr": 0.01, "dev_loss": loss}
               for e, loss in ((1, 0.9), (2, 0.4), (3, 0.4), (4, 0.95))]

    def fake_fit(model, *args, **kw):  # no training: a scripted history
        model.eval()
        return [dict(row) for row in history]

    monkeypatch.setattr(engine, "fit", fake_fit)
    t = np.arange(120)
    dates = np.datetime64("1990-01", "M") + t
    y = 10 + 3 * np.sin(2 * np.pi * t / 12)
    (tmp_path / "s.csv").write_text("date,sales\n" + "".join(f"{d},{v:.4f}\n" for d, v in zip(dates, y)))
    result = runner.invoke(app, ["train", "forecasting", "--train", str(tmp_path / "s.csv"), "--set",
                                 "data.time_column=date", "--set", "data.target=sales", "--set", "model.hidden_size=8",
                                 "--set", "train.accelerator=cpu", "--quiet", "--out", str(tmp_path), "--name", "run"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["best_epoch"] == 2  # the first of the two 0.4


def test_text_classification_holds_out_the_nearest_whole_number_of_dev_texts():
    from rnnkit.data.text import TextExample
    from rnnkit.tasks.text_classification import _split_dev

    examples = [TextExample(f"text {i}", "ab"[i % 2], f"f:{i}") for i in range(10)]
    for fraction, count in ((0.27, 3), (0.34, 3), (0.36, 4), (0.01, 1)):  # 2.7 -> 3, 3.4 -> 3, 3.6 -> 4, at least 1
        train, dev = _split_dev(examples, fraction, seed=0)
        assert len(dev) == count and len(train) == 10 - count
        assert {e.text for e in train}.isdisjoint(e.text for e in dev)


# -- insight: memory tasks -----------------------------------------------------------------------
def test_memory_task_success_is_strictly_past_the_threshold():
    from rnnkit.insight.memory import make_task

    copy = make_task("copy")  # "accuracy on the recalled steps > 0.9"
    assert not copy.success(0.9) and copy.success(0.9 + 1e-9) and not copy.success(float("nan"))
    adding = make_task("adding")  # "dev MSE < 0.1 x 1/6"
    assert adding.threshold == pytest.approx(1 / 60)
    assert not adding.success(adding.threshold) and adding.success(adding.threshold * (1 - 1e-9))


def test_memory_horizon_needs_a_norm_strictly_below_threshold_times_the_last():
    from rnnkit.insight.gradients import memory_horizon

    # ||dL/dh_(T-1)|| = 2; threshold 1e-3: a norm must be < 2e-3
    assert memory_horizon([2e-3, 0.5, 1.0, 2.0]) is None  # equal is not below
    assert memory_horizon([1.9e-3, 0.5, 1.0, 2.0]) == 3
    assert memory_horizon([0.0, 1e-4, 1.0, 2.0], threshold=0.5) == 2  # 1e-4 < 1 at lag 2


# -- engine: the train loss each epoch reports -----------------------------------------------------
def test_the_history_train_loss_is_the_mean_of_the_epochs_batch_losses():
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from rnnkit.tasks.engine import EngineOptions, fit

    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    losses = []

    def loss_fn(mdl, batch):  # 4 batches an epoch
        x, y = batch
        loss = nn.functional.mse_loss(mdl(x), y)
        losses.append(float(loss.detach()))
        return loss

    history = fit(model, DataLoader(data, batch_size=8), DataLoader(data, batch_size=32), loss_fn=loss_fn,
                  predict_fn=lambda mdl, batch: (torch.zeros(1), torch.zeros(1)),
                  metric_fn=lambda p, t: {"score": 0.0},
                  options=EngineOptions(epochs=2, monitor="score", mode="max", patience=None, progress=False),
                  log=lambda _: None)
    assert len(losses) == 8
    for epoch, row in enumerate(history):
        assert row["train_loss"] == pytest.approx(sum(losses[4 * epoch: 4 * epoch + 4]) / 4, rel=1e-5)


def test_error_by_horizon_is_nan_for_a_step_never_observed():
    from rnnkit.tasks.forecasting import Backtest

    y = np.array([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]]])  # [N=2, H=3, T=1]
    pred = y + np.array([[[1.0], [9.0], [-2.0]], [[3.0], [9.0], [0.0]]])
    observed = np.ones_like(y, dtype=bool)
    observed[:, 1] = False  # the second step was filled in every window
    observed[1, 2] = False
    bt = Backtest(y=y, point=pred, quantiles=None, levels=[], std=None, baselines={}, scale=np.ones((2, 1, 1)),
                  windows=[(0, 0), (0, 1)], skipped={}, observed=observed, no_window=[])
    by_step = bt.by_horizon(pred)
    assert by_step[0] == pytest.approx(2.0)  # (|1| + |3|) / 2
    assert math.isnan(by_step[1])  # never observed: no error to report, not 0
    assert by_step[2] == pytest.approx(2.0)  # only the first window's |-2|


def test_csv_labels_are_read_without_surrounding_spaces(tmp_path):
    from rnnkit.data.text import read_delimited

    path = tmp_path / "data.csv"
    path.write_text("text,label\ngood film, pos\nbad film,neg \nno label,  \n")
    examples = read_delimited(path)
    assert [(e.text, e.label) for e in examples] == [("good film", "pos"), ("bad film", "neg"), ("no label", None)]
