"""Mutation testing, round 12: the metrics (accuracy/F1 by name, entity F1, forecast errors,
perplexity, WER/CER), CTC decoding and edit distance, the sampling and stateful windows of the
language model, and the CTC-to-text decoding of the speech task.

Each test here kills a plausible bug (macro and micro averaging swapped, a prefix-beam merge that
keeps the larger of two equal prefixes instead of their sum, top-p dropping the token that
crosses the threshold ...) that the rest of the suite let through. The expected values come from
independent references: hand-computed numbers, plain Python written here from the definitions,
brute-force enumeration of CTC alignments, torch.nn.functional.ctc_loss, jiwer where installed,
never from the code path under test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from rnnkit.metrics import get_metric
from test_mutation_round3_review import _fixed_distribution_lm  # tests/ is on sys.path (rootdir conftest)


def _score(name: str, prob: torch.Tensor, y: torch.Tensor, features: int, loss_task: str | None) -> float:
    m = get_metric(name).bind(features, loss_task)
    m.update(prob, y)
    return m.compute()


# -- metrics by name ---------------------------------------------------------------------------
def test_top_k_accuracy_with_fewer_classes_than_k_counts_every_label_as_found() -> None:
    """Kills: ``top_k`` passed as the registry's k=5 to an output of 3 classes (not capped at the
    number of classes): every label is among the 3 most likely of 3, so the accuracy is 1."""
    prob = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.3, 0.2]])
    y = torch.tensor([2, 0, 1])
    assert _score("top_k_categorical_accuracy", prob, y, 3, "multiclass") == pytest.approx(1.0)
    assert _score("sparse_top_k_categorical_accuracy", prob, y, 3, "multiclass") == pytest.approx(1.0)


def test_plain_f1_precision_recall_of_a_multiclass_output_are_macro_averages() -> None:
    """Kills: ``f1``/``precision``/``recall`` of a multiclass output micro-averaged (the docs say
    macro). Labels 0 0 0 0 1 2, predictions 0 0 0 0 0 2: per class (P, R) = (0.8, 1), (0, 0),
    (1, 1), so macro F1 = (8/9 + 0 + 1) / 3, precision 0.6, recall 2/3; micro would be 5/6."""
    y = torch.tensor([0, 0, 0, 0, 1, 2])
    prob = torch.nn.functional.one_hot(torch.tensor([0, 0, 0, 0, 0, 2]), 3).float() * 0.8 + 0.2 / 3
    assert _score("f1", prob, y, 3, "multiclass") == pytest.approx((8 / 9 + 1) / 3, abs=1e-6)
    assert _score("precision", prob, y, 3, "multiclass") == pytest.approx(0.6, abs=1e-6)
    assert _score("recall", prob, y, 3, "multiclass") == pytest.approx(2 / 3, abs=1e-6)


def test_macro_and_weighted_f1_of_a_binary_output_score_class_1_as_the_positive_probability() -> None:
    """Kills: the two-class view of a sigmoid output stacked as ``[p, 1 - p]`` (class 0 given the
    positive probability), which flips every prediction. p = .9 .2 .6 .4 .7, labels 1 0 0 1 1:
    predictions 1 0 1 0 1, F1 of class 1 = 2/3 (support 3), of class 0 = 1/2 (support 2)."""
    prob = torch.tensor([[0.9], [0.2], [0.6], [0.4], [0.7]])
    y = torch.tensor([[1.0], [0.0], [0.0], [1.0], [1.0]])
    assert _score("f1_macro", prob, y, 1, "binary") == pytest.approx((2 / 3 + 1 / 2) / 2, abs=1e-6)
    assert _score("f1_weighted", prob, y, 1, "binary") == pytest.approx((3 * 2 / 3 + 2 * 1 / 2) / 5, abs=1e-6)


def test_a_two_column_output_without_a_loss_is_scored_as_two_classes() -> None:
    """Kills: the task inferred as binary for an output of 2 features (only a single column is a
    binary probability): the 2-column softmax is then read as two binary predictions per row."""
    assert get_metric("accuracy").resolve_task(2, None) == "multiclass"
    prob = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55]])
    y = torch.tensor([0, 1, 1, 1])
    assert _score("accuracy", prob, y, 2, None) == pytest.approx(0.75)


def test_a_reset_metric_that_saw_nothing_since_reads_nan() -> None:
    """Kills: ``reset`` clearing the torchmetrics state but not the update count, so a metric
    reset and then given only fully masked batches computes a number (0) instead of NaN."""
    m = get_metric("accuracy").bind(3, "multiclass")
    m.update(torch.eye(3), torch.tensor([0, 1, 2]))
    assert m.compute() == pytest.approx(1.0)
    m.reset()
    m.update(torch.eye(3), torch.tensor([0, 1, 2]), torch.zeros(3, dtype=torch.bool))
    assert math.isnan(m.compute())


# -- CTC decoding --------------------------------------------------------------------------------
def _collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    """B(pi) from the CTC paper, written here: merge runs of a token, then drop the blanks."""
    return tuple(k for k, _ in itertools.groupby(path) if k != blank)


def _labelling_log_probs(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """log p(l | x) of every labelling, by summing over every frame path (brute force)."""
    t, v = log_probs.shape
    lp = log_probs.double().tolist()
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(v), repeat=t):
        s = sum(lp[i][k] for i, k in enumerate(path))
        key = _collapse(path)
        out[key] = float(np.logaddexp(out.get(key, -math.inf), s))
    return out


def test_beam_search_keeps_at_most_beam_size_prefixes() -> None:
    """Kills: one prefix more than ``beam_size`` kept after a frame (``ranked[: beam_size + 1]``):
    ``results()`` would list three labellings for a beam of two."""
    from rnnkit.nn.ctc import ctc_prefix_beam_search

    lp = torch.tensor([[0.4, 0.3, 0.2, 0.1]] * 3).log()
    assert len(ctc_prefix_beam_search(lp, beam_size=2, token_threshold=None)) == 2
    assert len(ctc_prefix_beam_search(lp, beam_size=1, token_threshold=None)) == 1


def test_max_tokens_considers_only_that_many_most_likely_tokens_per_frame() -> None:
    """Kills: one token more than ``max_tokens`` considered per frame. With one frame of
    p = (blank .5, a .3, b .2) and ``max_tokens=2`` only blank and ``a`` are candidates."""
    from rnnkit.nn.ctc import CTCPrefixBeamSearch

    search = CTCPrefixBeamSearch(beam_size=8, token_threshold=None, max_tokens=2)
    search.advance(torch.tensor([[0.5, 0.3, 0.2]]).log())
    assert sorted(tuple(lab) for lab, _ in search.results()) == [(), (1,)]


def test_an_impossible_extension_is_not_a_beam() -> None:
    """Kills: extensions of probability 0 (``from_blank`` = -inf) kept as prefixes. Two frames of
    (blank .5, a .5): ``aa`` needs a blank between the a's, so it has probability 0 and must not
    be listed; every listed labelling has its brute-force probability."""
    from rnnkit.nn.ctc import ctc_prefix_beam_search

    lp = torch.tensor([[0.5, 0.5], [0.5, 0.5]]).log()
    ref = _labelling_log_probs(lp)
    res = ctc_prefix_beam_search(lp, beam_size=10, token_threshold=None)
    assert sorted(tuple(lab) for lab, _ in res) == sorted(ref)  # (), (1,): not (1, 1)
    for lab, score in res:
        assert score == pytest.approx(ref[tuple(lab)], abs=1e-9)


def test_a_trailing_separator_merges_by_summing_the_probabilities() -> None:
    """Kills: a labelling and the same labelling with a trailing separator merged by keeping the
    larger log-probability instead of their log-sum. Character lexicon {ab}, separator ' ': the
    score of ``ab`` is p(ab) + p(ab_) by brute force over every frame path."""
    from rnnkit.nn.ctc import CTCPrefixBeamSearch, Lexicon

    lex = Lexicon([[1, 2]], separator=3)  # tokens: 0 blank, 1 a, 2 b, 3 ' '
    lp = torch.tensor([[0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.3, 0.1, 0.2, 0.4]]).log()
    ref = _labelling_log_probs(lp)
    search = CTCPrefixBeamSearch(beam_size=64, lexicon=lex, token_threshold=None)
    search.advance(lp)
    scores = dict((tuple(lab), s) for lab, s in search.results())
    assert scores[(1, 2)] == pytest.approx(float(np.logaddexp(ref[(1, 2)], ref[(1, 2, 3)])), abs=1e-9)


def test_the_separator_only_closes_a_complete_word() -> None:
    """Kills: the separator accepted after any non-empty unfinished word (``ab`` listed, ``a``
    followed by a space accepted)."""
    from rnnkit.nn.ctc import Lexicon

    lex = Lexicon([[1, 2]], separator=3)
    after_a = lex.step(lex.root, 1)
    assert after_a is not None
    assert lex.step(after_a, 3) is None
    after_ab = lex.step(after_a, 2)
    assert after_ab is not None and lex.step(after_ab, 3) == lex.root


def test_a_word_unit_that_a_longer_word_continues_can_still_be_continued() -> None:
    """Kills: a complete word sent back to the root even when a longer listed word continues it:
    with words [1] and [1, 2] (word pieces) the sequence 1 2 is then refused."""
    from rnnkit.nn.ctc import Lexicon

    lex = Lexicon([[1], [1, 2]])
    s1 = lex.step(lex.root, 1)
    assert s1 is not None and lex.is_complete(s1)
    s12 = lex.step(s1, 2)
    assert s12 is not None and lex.is_complete(s12)


def test_a_labelling_may_end_inside_a_finished_word() -> None:
    """Kills: only the root (just after a separator) counted as complete, so ``ab`` without a
    trailing space is not a result of a character lexicon."""
    from rnnkit.nn.ctc import CTCPrefixBeamSearch, Lexicon

    lex = Lexicon([[1, 2]], separator=3)
    search = CTCPrefixBeamSearch(beam_size=16, lexicon=lex, token_threshold=None)
    search.advance(torch.tensor([[0.05, 0.9, 0.03, 0.02], [0.05, 0.03, 0.9, 0.02]]).log())
    assert search.best() == [1, 2]


def test_edit_distance_of_large_ids_that_share_a_hash_and_of_unhashable_items() -> None:
    """Kills: ids compared by hash (0 and 2**61 - 1 hash alike, so rapidfuzz would call them
    equal), and the plain dynamic programme (used for items rapidfuzz cannot compare, such as
    tuples) with a wrong first column or a substitution cost of 2. Expected values by hand."""
    from rnnkit.nn.ctc import edit_distance

    assert edit_distance([0], [2**61 - 1]) == 1
    assert edit_distance([5, 2**61 - 1], [5, 0]) == 1
    a, b, c, d = (1,), (2,), (3,), (4,)
    assert edit_distance([a, b, c], [b, c, d]) == 2  # delete a, insert d
    assert edit_distance([a, b], [b]) == 1  # delete a
    assert edit_distance([a, b, c], [a, d, c]) == 1  # one substitution
    assert edit_distance([], [a, b]) == 2
    assert edit_distance([a, b, c], []) == 3


def test_character_errors_count_a_run_of_spaces_as_one() -> None:
    """Kills: characters counted on the text with only its ends stripped: ``a  b`` against ``a b``
    has no character error and 3 reference characters (the documented whitespace rule)."""
    from rnnkit.nn.ctc import error_counts

    assert error_counts("a  b", "a b") == (0, 2, 0, 3)
    assert error_counts(" a b ", "a  c") == (1, 2, 1, 3)


def test_greedy_decoding_refuses_a_blank_past_the_vocabulary() -> None:
    """Kills: ``blank == V`` accepted (an id one past the last token)."""
    from rnnkit.nn.ctc import ctc_greedy_decode

    with pytest.raises(ValueError, match="blank"):
        ctc_greedy_decode(torch.zeros(3, 4), blank=4)


def test_collapse_continues_a_run_from_the_previous_chunk() -> None:
    """Kills: ``previous`` ignored: a chunk starting with the token that ended the last chunk
    repeats it (``B`` of the joined path, written out here, is the reference)."""
    from rnnkit.nn.ctc import collapse_alignment

    first, second = [0, 2, 2], [2, 0, 2, 3]
    joined = list(_collapse(tuple(first + second)))
    assert collapse_alignment(first) + collapse_alignment(second, 0, first[-1]) == joined == [2, 2, 3]


def test_a_custom_metric_bound_twice_keeps_two_states() -> None:
    """Kills: a custom torchmetrics object bound as is (not copied): two outputs (or two compiled
    models) would then pool their counts. One sees only right answers, the other only wrong ones."""
    from torchmetrics.classification import MulticlassAccuracy

    spec = get_metric(MulticlassAccuracy(num_classes=3))
    right, wrong = spec.bind(3, "multiclass"), spec.bind(3, "multiclass")
    right.update(torch.eye(3), torch.tensor([0, 1, 2]))
    wrong.update(torch.eye(3), torch.tensor([1, 2, 0]))
    assert right.compute() == pytest.approx(1.0)
    assert wrong.compute() == pytest.approx(0.0)


# -- language model: sampling and windows ---------------------------------------------------------
def test_top_p_keeps_or_drops_tied_logits_together() -> None:
    """Kills: the nucleus mapped back by sort position, so of two equal logits only the one sort put
    first is kept. Logits (1, 1, 0) and p = 0.3: the first kept token already reaches 0.3, and
    its tie (documented) is kept with it; the third token is dropped."""
    from rnnkit.tasks.language_model import top_p_filter

    for logits in (torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 1.0]), torch.tensor([1.0, 0.0, 1.0])):
        kept = torch.isfinite(top_p_filter(logits, 0.3))
        assert kept.tolist() == (logits == 1.0).tolist()


def _lm_prep(tmp_path, text):
    from rnnkit.tasks.language_model import DataConfig, Preprocessor

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    return Preprocessor.fit(corpus, DataConfig())


def test_top_p_applies_to_the_distribution_after_temperature(tmp_path) -> None:
    """Kills: the nucleus cut on the untempered distribution (temperature applied after the
    filters), and the scores multiplied by the temperature. p = (a .5, b .3, c .2) at temperature
    0.5 is (.25, .09, .04) / .38 = (.658, .237, .105): top_p = 0.6 keeps a alone. Untempered
    (mass above b .5) or flattened (T multiplied: mass above b .415) it would keep b too."""
    lm = _fixed_distribution_lm(_lm_prep(tmp_path, "a b c\nb c a\nc a b\n"), {"a": 0.5, "b": 0.3, "c": 0.2})
    for seed in range(3):
        out = lm.generate("a", length=40, temperature=0.5, top_p=0.6, seed=seed, stop="")
        assert out["tokens"] == ["a"] * 40
    # and without the nucleus, the temperature sharpens: at T = 0.5 b is drawn about 24% of the time
    draws = lm.generate("a", length=400, temperature=0.5, seed=0, stop="")["tokens"]
    assert 0.16 < draws.count("b") / 400 < 0.32


def test_variable_windows_are_mostly_full_length() -> None:
    """Kills: the half-length base drawn 95% of the time instead of 5% (AWD-LSTM: ``bptt`` with
    probability 0.95). With bptt 70 the mean window is then about 0.95 * 70 + 0.05 * 35 = 68."""
    from rnnkit.tasks.language_model import StreamWindows

    lengths = [n for _, n in StreamWindows(np.zeros((1, 70_001), dtype=np.int64), 70, variable=True,
                                           seed=0).bounds()][:-1]
    assert 64 < float(np.mean(lengths)) < 72
    assert sum(n < 50 for n in lengths) / len(lengths) < 0.12


def test_a_custom_metric_gets_same_shaped_targets_as_values() -> None:
    """Kills: a custom metric on a several-column output always given class ids (the argmax of
    same-shaped targets): a torchmetrics regression metric over 3 outputs gets the values as they
    are, so its MAE is the plain mean absolute difference."""
    from torchmetrics.regression import MeanAbsoluteError

    pred = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])
    y = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    m = get_metric(MeanAbsoluteError()).bind(3, None)
    m.update(pred, y)
    assert m.compute() == pytest.approx(float((pred - y).abs().mean()), abs=1e-6)


# -- forecast errors ---------------------------------------------------------------------------
def test_mase_averages_each_elements_scaled_error_and_skips_only_undefined_scales() -> None:
    """Kills: MASE as mean error over mean scale (not the mean of the scaled errors) when the
    scale differs by series, and a zero scale not left out (its error divided by 0). Two series,
    scales 1 and 4, errors 2 and 4: MASE = (2/1 + 4/4) / 2 = 1.5, not 6 / 5; with a third series
    of scale 0 (and one of NaN) the result is the same."""
    from rnnkit.metrics.forecasting import mase

    y = np.array([[[0.0, 0.0]]])  # [N=1, H=1, T=2]
    pred = np.array([[[2.0, 4.0]]])
    assert mase(y, pred, np.array([1.0, 4.0])) == pytest.approx(1.5)
    y3, pred3 = np.zeros((1, 1, 4)), np.array([[[2.0, 4.0, 5.0, 6.0]]])
    assert mase(y3, pred3, np.array([1.0, 4.0, 0.0, np.nan])) == pytest.approx(1.5)


def test_error_by_horizon_averages_over_windows_and_targets() -> None:
    """Kills: the per-step MAE averaged over the wrong axes (one figure per window instead of one
    per horizon step). Errors [N=3, H=2, T=2] by hand."""
    from rnnkit.metrics.forecasting import by_horizon

    err = np.array([[[1, 3], [10, 10]], [[2, 2], [20, 0]], [[0, 4], [0, 20]]], dtype=float)
    assert by_horizon(err, np.zeros_like(err)) == pytest.approx([2.0, 10.0])


def test_mape_keeps_small_nonzero_actual_values() -> None:
    """Kills: MAPE leaving out small (not only zero) actual values: every nonzero one is a
    percentage by definition, 1e-4 against 2e-4 is 100%."""
    from rnnkit.metrics.forecasting import mape

    assert mape([1e-4, 0.0, 2.0], [2e-4, 5.0, 1.0]) == pytest.approx(75.0)


def test_a_custom_metric_with_one_figure_per_class_reads_as_their_mean() -> None:
    """Kills: a vector result (a custom metric with ``average=None``) read by its first element
    instead of its mean. Per-class accuracies (recall) 1, 0.5, 0 by hand: 0.5."""
    from torchmetrics.classification import MulticlassAccuracy

    m = get_metric(MulticlassAccuracy(num_classes=3, average=None)).bind(3, None)
    m.update(torch.eye(3)[[0, 1, 0, 0]], torch.tensor([0, 1, 1, 2]))
    assert m.compute() == pytest.approx(0.5)


# -- speech: CTC output to text ------------------------------------------------------------------
def _decoder(beam_size: int):
    """A TrainedSpeechModel holding only what ``decode_ctc`` reads: the decoding options and the labels."""
    from types import SimpleNamespace

    from rnnkit.tasks.speech import DecodeConfig, TrainedSpeechModel

    tsm = object.__new__(TrainedSpeechModel)
    tsm.decode = DecodeConfig(beam_size=beam_size)
    tsm.prep = SimpleNamespace(labels=["<blank>", "a", "b"], units="chars")
    return tsm


def test_beam_size_1_decodes_the_best_path() -> None:
    """Kills: ``beam_size`` 1 run as a prefix beam search of width 1 (documented: 1 is greedy).
    Frame argmaxes b, blank, b give ``bb`` by hand; the width-1 prefix search keeps ``b`` (its
    one prefix after frame 2 is the more probable ``b``, p_b + p_nb)."""
    p = torch.tensor([[0.139, 0.2, 0.662], [0.477, 0.101, 0.422], [0.134, 0.2, 0.665]])
    lp = (p / p.sum(-1, keepdim=True)).log()[None]
    assert _decoder(1).decode_ctc(lp, torch.tensor([3])) == ["bb"]


@pytest.mark.parametrize("beam_size", [1, 4])
def test_decoding_a_batch_ignores_the_padded_frames(beam_size: int) -> None:
    """Kills: the padded frames of a shorter row decoded too (greedy without ``lengths``, beam
    search on the whole row). Row 2 is ``a`` in its 2 valid frames and ``b`` in its padding."""
    a, b = torch.tensor([0.05, 0.9, 0.05]).log(), torch.tensor([0.05, 0.05, 0.9]).log()
    lp = torch.stack([torch.stack([a, b, a, b]), torch.stack([a, a, b, b])])
    assert _decoder(beam_size).decode_ctc(lp, torch.tensor([4, 2])) == ["abab", "a"]


def test_character_tokens_join_with_single_inner_spaces() -> None:
    """Kills: character tokens concatenated without normalising the spaces (a doubled, leading or
    trailing space in the transcript: references are whitespace-normalised, so WER would differ)."""
    from rnnkit.tasks.speech import join_tokens

    assert join_tokens([" ", "a", " ", " ", "b", " "], "chars") == "a b"
    assert join_tokens(["a", "b"], "words") == "a b"


def test_greedy_block_decoding_collapses_across_an_empty_block() -> None:
    """Kills: the last frame's token forgotten at a block boundary (a run of ``a`` split by the
    cut read as two a's), or forgotten after an empty block. Reference: B of the joined path."""
    from rnnkit.tasks.speech import decode_blocks

    def frames(path: list[int]) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(path, dtype=torch.long), 3).float().add(0.01).log()

    first, second = [0, 1, 1], [1, 2, 0, 2]
    expected = list(_collapse(tuple(first + second)))  # a b b
    assert decode_blocks([frames(first), frames(second)]) == expected
    assert decode_blocks([frames(first), torch.zeros(0, 3), frames(second)]) == expected
