"""CTC decoding: greedy on hand-built matrices, prefix beam search against brute-force sums over
alignments, the lexicon constraint, streaming (chunked) search, and the edit distances behind
CER/WER cross-checked with jiwer and torchmetrics."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnnkit.nn.ctc import (
    CTCPrefixBeamSearch,
    Lexicon,
    collapse_alignment,
    ctc_greedy_decode,
    ctc_prefix_beam_search,
    edit_distance,
    error_counts,
)

B = 0  # blank


def _onehot_log(path: list[int], vocab: int, p: float = 0.9) -> torch.Tensor:
    rest = (1 - p) / (vocab - 1)
    probs = torch.full((len(path), vocab), rest, dtype=torch.float64)
    for t, k in enumerate(path):
        probs[t, k] = p
    return probs.log()


def _brute_force(log_probs: torch.Tensor, blank: int = 0) -> dict[tuple[int, ...], float]:
    steps, vocab = log_probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(vocab), repeat=steps):
        labelling = tuple(collapse_alignment(path, blank))
        score = float(sum(log_probs[t, k] for t, k in enumerate(path)))
        totals[labelling] = math.log(math.exp(totals[labelling]) + math.exp(score)) if labelling in totals else score
    return totals


def test_collapse_merges_repeats_then_drops_blanks():
    assert collapse_alignment([1, 1, B, 1, 2, 2, B, B, 2]) == [1, 1, 2, 2]
    assert collapse_alignment([B, B, B]) == []
    assert collapse_alignment([3, 3], previous=3) == []  # continues a run from the previous chunk


def test_greedy_on_hand_built_matrices_with_blanks_and_repeats():
    lp = _onehot_log([1, 1, B, 1, 2, 2, B], vocab=3)
    assert ctc_greedy_decode(lp) == [[1, 1, 2]]
    batch = torch.stack([_onehot_log([2, B, 2, 2, 1, 1], 3), _onehot_log([1, 2, 2, B, B, B], 3)])
    assert ctc_greedy_decode(batch, torch.tensor([6, 3])) == [[2, 2, 1], [1, 2]]
    assert ctc_greedy_decode(_onehot_log([B, B], 3)) == [[]]
    with pytest.raises(ValueError, match="log_probs must be"):
        ctc_greedy_decode(torch.zeros(3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unpruned_beam_equals_brute_force_sum_over_alignments(seed):
    torch.manual_seed(seed)
    lp = torch.log_softmax(torch.randn(4, 3, dtype=torch.float64) * 2, -1)
    exact = _brute_force(lp)
    results = ctc_prefix_beam_search(lp, beam_size=10_000, token_threshold=None)
    assert {tuple(r) for r, _ in results} == set(exact)  # every labelling reached
    for labelling, score in results:
        assert score == pytest.approx(exact[tuple(labelling)], abs=1e-10)
    best = max(exact, key=exact.__getitem__)
    assert tuple(results[0][0]) == best
    assert math.fsum(math.exp(v) for v in exact.values()) == pytest.approx(1.0)


def test_beam_finds_labelling_that_greedy_misses():
    # best path is "blank blank" (0.6 * 0.6 = 0.36) but label 1 collects 1 - 0.36 - small = higher mass
    probs = torch.tensor([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0]], dtype=torch.float64).clamp(min=1e-12)
    lp = probs.log()
    assert ctc_greedy_decode(lp) == [[]]
    exact = _brute_force(lp)
    assert exact[(1,)] > exact[()]
    assert ctc_prefix_beam_search(lp, beam_size=4)[0][0] == [1]


def test_beam_search_is_chunk_invariant():
    torch.manual_seed(3)
    lp = torch.log_softmax(torch.randn(30, 6), -1)
    whole = CTCPrefixBeamSearch(beam_size=5)
    whole.advance(lp)
    chunked = CTCPrefixBeamSearch(beam_size=5)
    for a, b in ((0, 1), (1, 7), (7, 8), (8, 30)):
        chunked.advance(lp[a:b])
    assert whole.results() == chunked.results()


def test_lexicon_restricts_character_output_to_words():
    tokens = ["<blank>", " ", "a", "b", "c"]
    # frames spell "ab ca" clearly; only "ab" and "cab" are words
    path = [2, 3, 1, 4, 2]
    lp = _onehot_log(path, 5, p=0.6)
    assert ctc_greedy_decode(lp) == [[2, 3, 1, 4, 2]]
    lex = Lexicon.from_words(["ab", "cab"], tokens)
    out = ctc_prefix_beam_search(lp, beam_size=16, lexicon=lex, token_threshold=None)
    for labelling, _ in out:
        text = "".join(tokens[i] for i in labelling)
        assert all(w in ("ab", "cab") for w in text.split()), text
    assert "".join(tokens[i] for i in out[0][0]) == "ab"  # "ab" + "ab " (trailing space) merged
    assert lex.step(lex.root, 1) is None  # a space cannot start the text
    with pytest.raises(ValueError, match="empty"):
        Lexicon([], separator=1)


def test_lexicon_with_word_units_and_missing_words():
    tokens = ["<blank>", "one", "two", "three"]
    lp = _onehot_log([1, 3, 2], 4, p=0.5)
    lex = Lexicon.from_words(["one", "two", "four"], tokens, units="words")  # 'four' is not a token: skipped
    assert lex.num_words == 2
    best = ctc_prefix_beam_search(lp, beam_size=8, lexicon=lex)[0][0]
    assert 3 not in best and best == [1, 2]


def test_edit_distance_and_error_counts_match_jiwer_and_torchmetrics():
    jiwer = pytest.importorskip("jiwer")
    from torchmetrics.functional.text import char_error_rate, word_error_rate

    refs = ["3 5 1 9", "the cat sat", "a b c d e", "one"]
    hyps = ["3 1 9 9 2", "the bat sat down", "a c d e", ""]
    counts = [error_counts(r, h) for r, h in zip(refs, hyps)]
    wer = sum(c[0] for c in counts) / sum(c[1] for c in counts)
    cer = sum(c[2] for c in counts) / sum(c[3] for c in counts)
    assert wer == pytest.approx(jiwer.wer(refs, hyps))
    assert cer == pytest.approx(jiwer.cer(refs, hyps))
    assert wer == pytest.approx(float(word_error_rate(hyps, refs)))
    assert cer == pytest.approx(float(char_error_rate(hyps, refs)))
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2]) == 2


def test_beam_labelling_is_at_least_as_probable_as_greedy_by_exact_ctc_likelihood():
    torch.manual_seed(4)
    lp = torch.log_softmax(torch.randn(40, 5, dtype=torch.float64) * 0.7, -1)  # flat: greedy is poor here

    def exact(labels: list[int]) -> float:
        return -float(torch.nn.functional.ctc_loss(lp[:, None], torch.tensor([labels or [0]])[:, : len(labels)],
                                                   torch.tensor([40]), torch.tensor([len(labels)]),
                                                   reduction="sum"))

    greedy = ctc_greedy_decode(lp)[0]
    (best, score), *_ = ctc_prefix_beam_search(lp, beam_size=8, token_threshold=None)
    assert exact(best) >= exact(greedy)
    assert score <= exact(best) + 1e-9  # the beam's sum covers a subset of the alignments
