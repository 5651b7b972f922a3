"""Every metric rnnkit reports, checked against the field's reference scorer or published definition.

References: seqeval's default mode (= conlleval) for entity scores, scikit-learn's conventions for
accuracy and F1 averages, sacreBLEU for BLEU and chrF, jiwer for WER and CER, the M4 competition's
sMAPE and MASE, the closed-form and the integral CRPS of a Gaussian, torch's cross-entropy for
perplexity. Where the reference package is not installed (seqeval, scikit-learn) a short port of its
published definition below stands in, and the test against the package itself is skipped.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit.metrics import forecasting as fm
from rnnkit.metrics import get_metric
from rnnkit.metrics.entities import entity_scores

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- entity scores: seqeval default mode / conlleval -------------------------------------------
def conlleval_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """seqeval 1.2's ``get_entities`` (its default, conlleval-compatible mode): ``(type, start, end)``, end inclusive."""
    def end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
        return (prev_tag in ("E", "S") or (prev_tag == "B" and tag in "BSO") or (prev_tag == "I" and tag in "BSO")
                or (prev_tag != "O" and prev_type != type_))

    def start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
        return (tag in ("B", "S") or (prev_tag in ("E", "S") and tag in ("E", "I"))
                or (prev_tag == "O" and tag in ("E", "I")) or (tag != "O" and prev_type != type_))

    chunks, prev_tag, prev_type, begin = [], "O", "", 0
    for i, chunk in enumerate([*tags, "O"]):
        tag, type_ = (chunk[0], chunk[2:]) if chunk != "O" else ("O", "")
        if end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def reference_entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    g = {(i, *e) for i, s in enumerate(gold) for e in conlleval_entities(s)}
    p = {(i, *e) for i, s in enumerate(pred) for e in conlleval_entities(s)}

    def prf(tp: int, n_p: int, n_g: int) -> tuple[float, float, float]:
        pr, rc = (tp / n_p if n_p else 0.0), (tp / n_g if n_g else 0.0)
        return pr, rc, (2 * pr * rc / (pr + rc) if pr + rc else 0.0)

    out: dict[str, Any] = dict(zip(("precision", "recall", "f1"), prf(len(g & p), len(p), len(g))))
    out["per_type"] = {}
    for t in sorted({e[1] for e in g | p}):
        gt, pt = {e for e in g if e[1] == t}, {e for e in p if e[1] == t}
        out["per_type"][t] = dict(zip(("precision", "recall", "f1"), prf(len(gt & pt), len(pt), len(gt))))
        out["per_type"][t]["support"] = len(gt)
    tokens = sum(len(s) for s in gold)
    out["token_accuracy"] = sum(a == b for x, y in zip(gold, pred) for a, b in zip(x, y)) / tokens if tokens else 0.0
    return out


def _tag_corpus(prefixes: str) -> st.SearchStrategy[tuple[list[list[str]], list[list[str]]]]:
    tag = st.one_of(st.just("O"), st.builds(lambda p, t: f"{p}-{t}", st.sampled_from(prefixes),
                                            st.sampled_from(["PER", "LOC", "MISC"])))

    @st.composite
    def corpus(draw: Any) -> tuple[list[list[str]], list[list[str]]]:
        lengths = draw(st.lists(st.integers(0, 9), min_size=1, max_size=5))
        gold = [draw(st.lists(tag, min_size=n, max_size=n)) for n in lengths]
        pred = [draw(st.lists(tag, min_size=n, max_size=n)) for n in lengths]
        return gold, pred

    return corpus()


def _assert_entity_scores_equal(ours: dict[str, Any], ref: dict[str, Any]) -> None:
    for k in ("precision", "recall", "f1", "token_accuracy"):
        assert ours[k] == pytest.approx(ref[k], abs=1e-12), k
    assert set(ours["per_type"]) == set(ref["per_type"])
    for t, d in ref["per_type"].items():
        for k, v in d.items():
            assert ours["per_type"][t][k] == pytest.approx(v, abs=1e-12), (t, k)


@pytest.mark.parametrize(("scheme", "prefixes"), [("IOB2", "BI"), ("IOB1", "BI"), ("BIOES", "BIES"),
                                                  ("IOB2", "BIES"), ("IOB1", "BIES")])
def test_entity_scores_match_conlleval_on_random_and_malformed_tags(scheme: str, prefixes: str) -> None:
    @FAST
    @given(_tag_corpus(prefixes))
    def check(data: tuple[list[list[str]], list[list[str]]]) -> None:
        gold, pred = data
        _assert_entity_scores_equal(entity_scores(gold, pred, scheme), reference_entity_scores(gold, pred))

    check()


def test_entity_scores_edge_cases() -> None:
    # no entity anywhere: every figure is 0 (seqeval's zero_division default), token accuracy 1
    none = entity_scores([["O", "O"]], [["O", "O"]])
    assert (none["precision"], none["recall"], none["f1"], none["token_accuracy"]) == (0.0, 0.0, 0.0, 1.0)
    # all correct; a type only predicted (support 0) and a type never predicted (precision 0)
    gold = [["B-PER", "I-PER", "O", "B-LOC"], []]
    assert entity_scores(gold, gold)["f1"] == 1.0
    s = entity_scores(gold, [["B-PER", "I-PER", "O", "B-ORG"], []])
    assert s["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert s["per_type"]["LOC"]["support"] == 1 and s["per_type"]["LOC"]["precision"] == 0.0
    assert s["precision"] == s["recall"] == s["f1"] == 0.5
    # a boundary error is a miss in both directions
    s = entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])
    assert (s["precision"], s["recall"]) == (0.0, 0.0)
    # unicode entity types and empty input
    assert entity_scores([["B-ÜBER", "I-ÜBER"]], [["B-ÜBER", "I-ÜBER"]])["per_type"]["ÜBER"]["f1"] == 1.0
    assert entity_scores([], [])["f1"] == 0.0


def test_entity_scores_against_seqeval_package() -> None:
    sl = pytest.importorskip("seqeval.metrics", reason="seqeval not installed (the port above stands in for it)")
    rng = random.Random(0)
    for _ in range(200):
        tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-PER", "S-LOC"]
        lens = [rng.randint(1, 8) for _ in range(rng.randint(1, 4))]
        gold = [[rng.choice(tags) for _ in range(n)] for n in lens]
        pred = [[rng.choice(tags) for _ in range(n)] for n in lens]
        ours = entity_scores(gold, pred, "BIOES")
        assert ours["f1"] == pytest.approx(sl.f1_score(gold, pred, zero_division=0), abs=1e-12)
        assert ours["precision"] == pytest.approx(sl.precision_score(gold, pred, zero_division=0), abs=1e-12)
        assert ours["recall"] == pytest.approx(sl.recall_score(gold, pred, zero_division=0), abs=1e-12)
        # on well-formed IOB2 tags the strict mode agrees with the default (lenient) mode rnnkit uses
        from seqeval.scheme import IOB2

        from rnnkit.data.conll import convert_tags

        g2 = [convert_tags(s, "BIOES", "IOB2") for s in gold]
        p2 = [convert_tags(s, "BIOES", "IOB2") for s in pred]
        strict = sl.f1_score(g2, p2, mode="strict", scheme=IOB2, zero_division=0)
        assert entity_scores(g2, p2, "IOB2")["f1"] == pytest.approx(strict, abs=1e-12)


# -- single-label and multi-label classification (text and image tasks) -------------------------
def reference_prf(gold: Sequence[int], pred: Sequence[int], labels: Sequence[int]) -> dict[int, tuple[float, ...]]:
    """scikit-learn's per-class precision, recall, F1 (zero_division=0)."""
    out = {}
    for c in labels:
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        fp = sum(g != c and p == c for g, p in zip(gold, pred))
        fn = sum(g == c and p != c for g, p in zip(gold, pred))
        out[c] = (tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0,
                  2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return out


@st.composite
def _single_label(draw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    c = draw(st.integers(2, 5))
    n = draw(st.integers(1, 12))
    scores = draw(st.lists(st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9]), min_size=c, max_size=c),
                           min_size=n, max_size=n))
    targets = draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n))
    return torch.tensor(scores), torch.tensor(targets)


@FAST
@given(_single_label())
def test_classification_metrics_match_sklearn_definitions(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    from rnnkit.tasks.text_classification import classification_metrics

    scores, targets = data
    m = classification_metrics(scores, targets, multi_label=False)
    c = scores.shape[1]
    gold, pred = targets.tolist(), scores.argmax(-1).tolist()
    per = reference_prf(gold, pred, range(c))
    present = sorted(set(gold) | set(pred))  # sklearn's default labels: the macro mean skips absent classes
    assert m["accuracy"] == pytest.approx(sum(a == b for a, b in zip(gold, pred)) / len(gold))
    assert m["micro_f1"] == pytest.approx(m["accuracy"], abs=1e-6)  # single-label micro F1 = accuracy
    assert m["macro_f1"] == pytest.approx(sum(per[k][2] for k in present) / len(present), abs=1e-6)
    for i, key in enumerate(("precision", "recall", "f1")):
        assert m["per_class"][key] == pytest.approx([per[k][i] for k in range(c)], abs=1e-6)
    assert m["per_class"]["support"] == [gold.count(k) for k in range(c)]
    assert m["confusion_matrix"] == [[sum(g == a and p == b for g, p in zip(gold, pred)) for b in range(c)]
                                     for a in range(c)]


@FAST
@given(st.integers(1, 4), st.integers(1, 8), st.randoms(use_true_random=False))
def test_multilabel_classification_metrics_match_sklearn_definitions(c: int, n: int, rng: random.Random) -> None:
    from rnnkit.tasks.text_classification import THRESHOLD, classification_metrics

    scores = torch.tensor([[rng.choice([0.1, THRESHOLD, 0.9]) for _ in range(c)] for _ in range(n)])
    targets = torch.tensor([[rng.randint(0, 1) for _ in range(c)] for _ in range(n)])
    m = classification_metrics(scores, targets, multi_label=True)
    hard = (scores >= THRESHOLD).long()
    assert m["accuracy"] == pytest.approx(float((hard == targets).all(1).float().mean()))
    tp, fp, fn = ((hard & targets).sum(0), (hard & (1 - targets)).sum(0), ((1 - hard) & targets).sum(0))
    f1 = [2 * a / (2 * a + b + d) if a + b + d else 0.0 for a, b, d in zip(tp.tolist(), fp.tolist(), fn.tolist())]
    assert m["macro_f1"] == pytest.approx(sum(f1) / c, abs=1e-6)  # sklearn: every label, 0 when undefined
    t, f_, n_ = int(tp.sum()), int(fp.sum()), int(fn.sum())
    assert m["micro_f1"] == pytest.approx(2 * t / (2 * t + f_ + n_) if t + f_ + n_ else 0.0, abs=1e-6)
    assert m["per_class"]["f1"] == pytest.approx(f1, abs=1e-6)


def test_classification_metrics_against_sklearn_package() -> None:
    skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed (the port above stands in)")
    from rnnkit.tasks.text_classification import classification_metrics

    rng = np.random.default_rng(0)
    for _ in range(50):
        c, n = int(rng.integers(2, 6)), int(rng.integers(1, 15))
        scores, targets = torch.rand(n, c), torch.tensor(rng.integers(0, c, n))
        m = classification_metrics(scores, targets, multi_label=False)
        pred = scores.argmax(-1).numpy()
        assert m["macro_f1"] == pytest.approx(skm.f1_score(targets, pred, average="macro", zero_division=0), abs=1e-6)
        assert m["micro_f1"] == pytest.approx(skm.f1_score(targets, pred, average="micro", zero_division=0), abs=1e-6)


# -- Keras-style compiled metrics --------------------------------------------------------------
def _feed(name: str, prob: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, loss_task: str,
          batches: int = 3) -> float:
    m = get_metric(name).bind(prob.shape[-1], loss_task)
    for ix in torch.arange(prob.shape[0]).tensor_split(batches):
        if len(ix):
            m.update(prob[ix], y[ix], None if mask is None else mask[ix])
    return m.compute()


@FAST
@given(st.integers(1, 6), st.integers(1, 5), st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_compiled_classification_metrics_skip_padding_and_match_definitions(b: int, t: int, c: int,
                                                                           seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    prob = torch.rand(b, t, c, generator=g).softmax(-1)
    y = torch.randint(0, c, (b, t), generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    gold, pred = y[mask].tolist(), prob.argmax(-1)[mask].tolist()
    per = reference_prf(gold, pred, range(c))
    present = sorted(set(gold) | set(pred))
    support = Counter(gold)
    acc = sum(a == b_ for a, b_ in zip(gold, pred)) / len(gold)
    assert _feed("accuracy", prob, y, mask, "multiclass") == pytest.approx(acc, abs=1e-6)
    assert _feed("categorical_accuracy", prob, torch.nn.functional.one_hot(y, c).float(), mask,
                 "multiclass") == pytest.approx(acc, abs=1e-6)
    assert _feed("f1_micro", prob, y, mask, "multiclass") == pytest.approx(acc, abs=1e-6)
    assert _feed("f1_macro", prob, y, mask, "multiclass") == pytest.approx(
        sum(per[k][2] for k in present) / len(present), abs=1e-6)
    assert _feed("recall_weighted", prob, y, mask, "multiclass") == pytest.approx(
        sum(per[k][1] * support[k] for k in support) / len(gold), abs=1e-6)
    assert _feed("precision_macro", prob, y, mask, "multiclass") == pytest.approx(
        sum(per[k][0] for k in present) / len(present), abs=1e-6)
    # binary output: the positive class, threshold 0.5
    pb = torch.rand(b, t, 1, generator=g)
    yb = torch.randint(0, 2, (b, t, 1), generator=g).float()
    gb, hb = yb[mask][:, 0].long().tolist(), (pb[mask][:, 0] > 0.5).long().tolist()
    prb = reference_prf(gb, hb, [1])[1]
    assert _feed("accuracy", pb, yb, mask, "binary") == pytest.approx(
        sum(a == b_ for a, b_ in zip(gb, hb)) / len(gb), abs=1e-6)
    assert _feed("precision", pb, yb, mask, "binary") == pytest.approx(prb[0], abs=1e-6)
    assert _feed("recall", pb, yb, mask, "binary") == pytest.approx(prb[1], abs=1e-6)
    assert _feed("f1", pb, yb, mask, "binary") == pytest.approx(prb[2], abs=1e-6)


def test_compiled_regression_and_auc_metrics() -> None:
    g = torch.Generator().manual_seed(0)
    pred, y = torch.randn(5, 4, 1, generator=g), torch.randn(5, 4, 1, generator=g)
    mask = torch.tensor([[1, 1, 1, 0]] * 5).bool()
    err = (pred - y)[mask]
    assert _feed("mae", pred, y, mask, "regression") == pytest.approx(float(err.abs().mean()), abs=1e-6)
    assert _feed("rmse", pred, y, mask, "regression") == pytest.approx(float(err.pow(2).mean().sqrt()), abs=1e-6)
    # ROC AUC = probability that a random positive outranks a random negative (ties: 1/2)
    p = torch.rand(40, 1, generator=g)
    lab = torch.randint(0, 2, (40, 1), generator=g).float()
    pos, neg = p[lab == 1], p[lab == 0]
    auc = float(((pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()).mean())
    assert _feed("auc", p, lab, None, "binary") == pytest.approx(auc, abs=1e-6)
    # nothing seen: NaN, not 0
    assert math.isnan(get_metric("accuracy").bind(3, "multiclass").compute())


def test_compiled_metrics_leave_out_ignore_class_positions() -> None:
    """Regression: f1_macro crashed (torch.bincount on the -1 labels) and accuracy counted the ignored
    positions as errors, though the loss leaves them out."""
    from rnnkit.layers import LSTM, Dense, Embedding, Input, TimeDistributed
    from rnnkit.models import Model
    from rnnkit.training.losses import SparseCategoricalCrossentropy

    rng = np.random.default_rng(0)
    x = rng.integers(1, 20, (9, 6))
    y = rng.integers(0, 3, (9, 6))
    y[:, 4:] = -1
    inp = Input(shape=(None,), dtype="int64")
    model = Model(inp, TimeDistributed(Dense(3, activation="softmax"))(LSTM(4, return_sequences=True)(
        Embedding(20, 4)(inp))))
    model.compile("adam", SparseCategoricalCrossentropy(ignore_class=-1), metrics=["accuracy", "f1_macro"])
    logs = model.evaluate(x, y, return_dict=True, verbose=0, batch_size=4)
    pred = model.predict(x, verbose=0).argmax(-1)
    keep = y != -1
    gold, hyp = y[keep].tolist(), pred[keep].tolist()
    per = reference_prf(gold, hyp, range(3))
    present = sorted(set(gold) | set(hyp))
    assert logs["accuracy"] == pytest.approx(float((pred[keep] == y[keep]).mean()), abs=1e-6)
    assert logs["f1_macro"] == pytest.approx(sum(per[k][2] for k in present) / len(present), abs=1e-6)


def test_binary_metrics_on_logits_do_not_depend_on_the_batch() -> None:
    """Regression: with ``from_logits=True`` the metrics got raw logits, and torchmetrics applies a
    sigmoid only to a batch holding a value outside [0, 1]: the logit 0.3 counted as class 0 in one
    batch and as class 1 in another."""
    from rnnkit.layers import Dense, Input
    from rnnkit.models import Model
    from rnnkit.training.losses import BinaryCrossentropy

    inp = Input(shape=(1,))
    dense = Dense(1)
    model = Model(inp, dense(inp))
    model.compile("sgd", BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
    model.predict(np.zeros((1, 1), dtype="float32"), verbose=0)  # build
    assert dense.weight is not None and dense.bias is not None
    with torch.no_grad():
        dense.weight.fill_(1.0)
        dense.bias.zero_()
    x = np.array([[0.3], [0.7], [0.3], [2.0]], dtype="float32")  # logits = x
    y = np.ones((4, 1), dtype="float32")
    # batch 1 holds logits 0.3, 0.7 (inside [0, 1]); batch 2 holds 0.3, 2.0: every logit is > 0, class 1
    logs = model.evaluate(x, y, return_dict=True, verbose=0, batch_size=2)
    assert logs["accuracy"] == pytest.approx(1.0)


# -- language model: perplexity and bits per character -----------------------------------------
def test_perplexity_and_bpc_match_torch_cross_entropy() -> None:
    from rnnkit.tasks.language_model import lm_metrics

    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(3, 17, 11, generator=g), torch.randint(0, 11, (3, 17), generator=g)
    nll = float(torch.nn.functional.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), reduction="sum"))
    mean = float(torch.nn.functional.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1)))
    m = lm_metrics(nll, targets.numel(), "char")
    assert m["cross_entropy"] == pytest.approx(mean, rel=1e-6)
    assert m["perplexity"] == pytest.approx(math.exp(mean), rel=1e-6)
    assert m["bits_per_character"] == pytest.approx(mean / math.log(2), rel=1e-6)
    assert "bits_per_character" not in lm_metrics(nll, targets.numel(), "word")
    assert lm_metrics(1e5, 10, "word")["perplexity"] == math.inf


def test_lm_metrics_without_tokens_is_nan() -> None:
    """Regression: no scored token gave cross-entropy 0 and the perfect perplexity 1."""
    from rnnkit.tasks.language_model import lm_metrics

    m = lm_metrics(0.0, 0, "char")
    assert math.isnan(m["cross_entropy"]) and math.isnan(m["perplexity"]) and math.isnan(m["bits_per_character"])


# -- translation: sacreBLEU corpus BLEU and chrF ---------------------------------------------------
def test_bleu_and_chrf_match_sacrebleu_corpus_scores() -> None:
    sacrebleu = pytest.importorskip("sacrebleu", reason="sacrebleu not installed (rnnkit[translation])")
    from rnnkit.tasks.translation import corpus_scores

    hyps = ["The cat sat on the mat.", "", "Ünïcode — naïve café, 東京!", "a b c " * 200, "Hello"]
    refs = ["The cat is on the mat.", "Hello there", "Unicode — naive café, 東京!", "a b c " * 150, "hello"]
    for lowercase in (False, True):
        s = corpus_scores(hyps, refs, lowercase=lowercase)
        bleu = sacrebleu.metrics.BLEU(lowercase=lowercase).corpus_score(hyps, [refs])
        chrf = sacrebleu.metrics.CHRF(lowercase=lowercase).corpus_score(hyps, [refs])
        assert s["bleu"] == pytest.approx(bleu.score) and s["chrf"] == pytest.approx(chrf.score)
        assert s["bleu_precisions"] == pytest.approx(bleu.precisions)
        assert s["brevity_penalty"] == pytest.approx(bleu.bp)
        assert "tok:13a" in s["bleu_signature"] and "nrefs:1" in s["bleu_signature"]
        assert ("case:lc" if lowercase else "case:mixed") in s["bleu_signature"]
        assert "nc:6" in s["chrf_signature"] and "nw:0" in s["chrf_signature"]
    # corpus BLEU is not the mean of sentence BLEUs
    mean_sentence = np.mean([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs)])
    assert corpus_scores(hyps, refs)["bleu"] != pytest.approx(mean_sentence)
    assert corpus_scores(refs, refs)["bleu"] == pytest.approx(100.0)


def test_corpus_scores_reject_an_empty_corpus() -> None:
    pytest.importorskip("sacrebleu", reason="sacrebleu not installed (rnnkit[translation])")
    from rnnkit.tasks.translation import corpus_scores

    with pytest.raises(ValueError, match="no sentences"):
        corpus_scores([], [])


# -- speech: jiwer WER and CER -----------------------------------------------------------------
_WORDS = st.lists(st.sampled_from(["a", "bb", "ccc", "héllo", "日本", "x"]), max_size=7).map(" ".join)


@FAST
@given(st.lists(st.tuples(_WORDS, _WORDS), min_size=1, max_size=5))
def test_wer_and_cer_match_jiwer(pairs: list[tuple[str, str]]) -> None:
    jiwer = pytest.importorskip("jiwer", reason="jiwer not installed")
    from rnnkit.nn.ctc import error_counts
    from rnnkit.tasks.speech import error_rates

    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    rates = error_rates([error_counts(r, h) for r, h in pairs])
    if not any(r.split() for r in refs):  # every reference empty: a rate is undefined
        assert rates["wer"] is None and rates["cer"] is None
        assert rates["inserted_words"] == sum(len(h.split()) for h in hyps)
        return
    assert rates["wer"] == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    assert rates["cer"] == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)


# -- forecasting: M4 sMAPE and MASE, CRPS, pinball loss, coverage -------------------------------
def test_smape_and_mase_match_the_m4_definitions() -> None:
    rng = np.random.default_rng(0)
    for m in (1, 4, 12):
        history = rng.normal(10, 3, 60)
        y, pred = rng.normal(10, 3, 8), rng.normal(10, 3, 8)
        # M4: sMAPE = 200/h sum |y - f| / (|y| + |f|); MASE = mean |y - f| / mean_{t>m} |y_t - y_{t-m}|
        smape = 200.0 / len(y) * np.sum(np.abs(y - pred) / (np.abs(y) + np.abs(pred)))
        mase = np.mean(np.abs(y - pred)) / np.mean(np.abs(history[m:] - history[:-m]))
        assert fm.smape(y, pred) == pytest.approx(smape)
        assert fm.mase(y, pred, fm.mase_scale(history, m)) == pytest.approx(mase)
    assert fm.smape([1.0, 2.0], [1.0, 2.0]) == 0.0 and fm.smape([1.0], [-1.0]) == 200.0
    assert fm.mape([0.0, 0.0], [1.0, 1.0]) != fm.mape([0.0, 0.0], [1.0, 1.0])  # NaN: undefined
    assert fm.mape([2.0, 4.0], [1.0, 5.0]) == pytest.approx(100 * (0.5 + 0.25) / 2)
    assert math.isnan(float(fm.mase_scale([3.0, 3.0, 3.0], 1)))  # constant history: MASE undefined


def test_smape_propagates_nan() -> None:
    """Regression: a NaN forecast counted as a perfect (0) sMAPE term, while MAE and MASE turn NaN."""
    assert math.isnan(fm.smape([1.0, 2.0], [np.nan, 2.0]))
    assert math.isnan(fm.smape([np.nan, 2.0], [1.0, 2.0]))
    assert math.isnan(fm.point_metrics([1.0, 2.0], [np.nan, 2.0])["smape"])


def test_crps_gaussian_matches_the_integral_definition() -> None:
    scipy_stats = pytest.importorskip("scipy.stats", reason="scipy not installed")
    from scipy import integrate

    rng = np.random.default_rng(1)
    for _ in range(10):
        y, mu, s = rng.normal(), rng.normal(), rng.uniform(0.1, 3.0)
        # CRPS(F, y) = integral (F(x) - 1{x >= y})^2 dx
        ref = integrate.quad(lambda x, mu=mu, s=s, y=y: (scipy_stats.norm.cdf(x, mu, s) - (x >= y)) ** 2,
                             -60, 60, points=[y, mu], limit=400)[0]
        assert fm.crps_gaussian(y, mu, s) == pytest.approx(ref, abs=1e-6)
    # many quantiles of the same Gaussian: the quantile approximation approaches the closed form
    levels = np.linspace(0.0005, 0.9995, 1999)
    q = scipy_stats.norm.ppf(levels, 0.3, 1.2)[None, :]
    assert fm.crps_from_quantiles([0.7], q, levels) == pytest.approx(fm.crps_gaussian(0.7, 0.3, 1.2), rel=2e-3)


def test_crps_gaussian_with_zero_std_is_the_absolute_error() -> None:
    """Regression: std = 0 (a point forecast) gave NaN; the limit of the CRPS is |y - mean|."""
    assert fm.crps_gaussian([1.0, -2.0], [0.0, 0.0], [0.0, 0.0]) == pytest.approx(1.5)
    assert fm.crps_gaussian(1.0, 1.0, 0.0) == 0.0
    assert fm.crps_gaussian(1.0, 0.0, 1e-12) == pytest.approx(1.0)


def test_pinball_loss_and_coverage_definitions() -> None:
    rng = np.random.default_rng(2)
    y, levels = rng.normal(size=30), [0.1, 0.5, 0.9]
    q = np.sort(rng.normal(size=(30, 3)), axis=1)
    ref = np.mean([[max(lv * (a - b), (lv - 1) * (a - b)) for lv, b in zip(levels, row)] for a, row in zip(y, q)])
    assert fm.pinball_loss(y, q, levels) == pytest.approx(ref)
    assert fm.crps_from_quantiles(y, q, levels) == pytest.approx(2 * ref)
    out = fm.probabilistic_metrics(y, q, levels)
    assert out["coverage"] == pytest.approx(np.mean((y >= q[:, 0]) & (y <= q[:, -1])))
    assert out["nominal_coverage"] == pytest.approx(0.8)
