"""Mutation testing, round 14: CTC decoding (the prefix beam search's log-sum, pruning and token
threshold, the lexicon's word checks, edit distance) and the decoding and reporting parts of the
speech task (CTC output to text, greedy versus beam, WER/CER over a corpus, streaming).

Each test here kills a plausible bug (two prefix probabilities combined through an ``exp`` that
overflows, beams pruned by their non-blank part, the per-frame token threshold dropped between the
decoding entry points and the search ...) that the rest of the suite let through. The expected
values come from independent references: brute-force enumeration of CTC alignments, hand-computed
numbers and plain Python written here from the definitions, never from the code path under test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch


def _collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    """B(pi) from the CTC paper, written here: merge runs of a token, then drop the blanks."""
    return tuple(k for k, _ in itertools.groupby(path) if k != blank)


def _labelling_log_probs(log_probs: torch.Tensor, blank: int = 0) -> dict[tuple[int, ...], float]:
    """log p(l | x) of every labelling, by summing over every frame path (brute force, NumPy's logaddexp)."""
    t, v = log_probs.shape
    lp = log_probs.double().tolist()
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(v), repeat=t):
        s = sum(lp[i][k] for i, k in enumerate(path))
        key = _collapse(path, blank)
        out[key] = float(np.logaddexp(out.get(key, -math.inf), s))
    return out


# -- prefix beam search --------------------------------------------------------------------------
def test_beam_scores_survive_paths_a_thousand_nats_apart() -> None:
    """Kills: the log-sum-exp of two prefix scores computed as ``a + log1p(exp(b - a))`` with the
    larger one as ``b`` (branches swapped): ``exp`` of a difference past 709 overflows. A token of
    log-probability -1000 (a confident softmax in float64) must leave every score equal to the
    brute-force sum over paths."""
    from rnnkit.nn.ctc import ctc_prefix_beam_search

    lp = torch.tensor([[-1e-9, -1000.0, -1000.0], [-1000.0, -1e-9, -1000.0]], dtype=torch.float64)
    ref = _labelling_log_probs(lp)
    res = ctc_prefix_beam_search(lp, beam_size=16, token_threshold=None)
    assert len(res) == len(ref)
    for lab, score in res:
        assert score == pytest.approx(ref[tuple(lab)], abs=1e-9)
    assert res[0][0] == [1]


def test_beams_are_pruned_by_their_whole_probability() -> None:
    """Kills: prefixes ranked for pruning by the alignments ending in a label (``p_nb``) alone.
    Frame 1 (blank .6, a .4): the empty prefix (.6, all ending in blank) beats ``a`` (.4); a beam
    of one keeps it, and after a nearly certain blank the result is the brute-force best, ``""``
    (p = .594 against .406 for ``a``)."""
    from rnnkit.nn.ctc import ctc_prefix_beam_search

    lp = torch.tensor([[0.6, 0.4], [0.99, 0.01]], dtype=torch.float64).log()
    ref = _labelling_log_probs(lp)
    assert max(ref, key=ref.__getitem__) == ()
    res = ctc_prefix_beam_search(lp, beam_size=1, token_threshold=None)
    assert res[0][0] == []
    assert res[0][1] == pytest.approx(math.log(0.594), abs=1e-9)


def test_a_token_exactly_at_the_threshold_is_considered() -> None:
    """Kills: the token threshold applied as ``>`` (documented: tokens *below* it are skipped). One
    frame (blank .7, a .3) with the threshold exactly at log .3: ``a`` is still a labelling."""
    from rnnkit.nn.ctc import CTCPrefixBeamSearch

    lp = torch.tensor([[0.7, 0.3]], dtype=torch.float64).log()
    search = CTCPrefixBeamSearch(beam_size=4, token_threshold=float(lp[0, 1]))
    search.advance(lp)
    assert sorted(tuple(lab) for lab, _ in search.results()) == [(), (1,)]


def test_the_one_call_beam_search_passes_its_token_threshold_on() -> None:
    """Kills: ``ctc_prefix_beam_search`` ignoring ``token_threshold`` (the search's default -12 used).
    Two frames of (blank .5, a .25, b .25) with the threshold at log .3: a and b are skipped at
    every frame, so the only labelling is the all-blank path, p = .25 by hand."""
    from rnnkit.nn.ctc import ctc_prefix_beam_search

    lp = torch.tensor([[0.5, 0.25, 0.25]] * 2, dtype=torch.float64).log()
    res = ctc_prefix_beam_search(lp, beam_size=8, token_threshold=math.log(0.3))
    assert res == [([], pytest.approx(math.log(0.25)))]


# -- lexicon --------------------------------------------------------------------------------------
def test_empty_words_are_not_words() -> None:
    """Kills: an empty word counted (and a list of only empty words accepted): ``num_words`` of
    ``[[], [1]]`` is 1 and ``[[]]`` is the empty-lexicon error."""
    from rnnkit.nn.ctc import Lexicon

    assert Lexicon([[], [1]]).num_words == 1
    with pytest.raises(ValueError, match="empty"):
        Lexicon([[]])


def test_a_word_containing_the_separator_is_refused() -> None:
    """Kills: the separator check on lexicon words dropped: a word spelled with the separator
    token could never be completed (the separator closes words), so it is a one-line error."""
    from rnnkit.nn.ctc import Lexicon

    with pytest.raises(ValueError, match="separator"):
        Lexicon([[1, 3, 2]], separator=3)
    assert Lexicon([[1, 2]], separator=3).num_words == 1


def test_a_token_below_the_default_threshold_is_skipped() -> None:
    """Kills: the threshold loosened (tokens somewhat below it still considered). One frame where
    ``a`` has log-probability -12.5, under the default -12: the only labelling is the empty one."""
    from rnnkit.nn.ctc import CTCPrefixBeamSearch

    lp = torch.tensor([[math.log1p(-math.exp(-12.5)), -12.5]], dtype=torch.float64)
    search = CTCPrefixBeamSearch(beam_size=4)
    search.advance(lp)
    assert [tuple(lab) for lab, _ in search.results()] == [()]


def test_collapse_returns_plain_ints_for_array_paths() -> None:
    """Kills: the tokens of a NumPy or torch path kept as array scalars (``int(token)`` dropped):
    they compare equal to ints but are not JSON numbers (transcripts and labellings are written
    to JSON). Reference: B of the path, written here."""
    import json

    from rnnkit.nn.ctc import collapse_alignment

    path = [0, 2, 2, 0, 2, 1, 1]
    for arr in (np.array(path), torch.tensor(path)):
        out = collapse_alignment(arr)
        assert out == list(_collapse(tuple(path))) == [2, 2, 1]
        assert all(type(t) is int for t in out)
        assert json.loads(json.dumps(out)) == [2, 2, 1]


# -- speech: text and decoding ------------------------------------------------------------------
def test_transcripts_are_normalised_to_single_inner_spaces() -> None:
    """Kills: ``normalize_text`` stripping the ends only (a run of inner spaces or a tab kept):
    references must split into the same words and characters as the hypotheses' joined tokens."""
    from rnnkit.tasks.speech import normalize_text

    assert normalize_text("  Two\tThree  four \n", True) == "two three four"
    assert normalize_text("A  b", False) == "A b"


def test_block_decoding_applies_a_lexicon_at_beam_1() -> None:
    """Kills: ``decode_blocks`` decoding greedily at beam 1 even with a lexicon (the whole-file pass
    and the streamer run the search whenever a lexicon is given). One frame (blank .2, a .35,
    b .4, space .05), lexicon {a}: greedy writes ``b``, not a word; of the labellings the lexicon
    allows, brute force ranks ``a`` (.35) above the empty one (.2)."""
    from rnnkit.nn.ctc import Lexicon
    from rnnkit.tasks.speech import decode_blocks

    lp = torch.tensor([[0.2, 0.35, 0.4, 0.05]], dtype=torch.float64).log()
    ref = _labelling_log_probs(lp)
    allowed = {(), (1,)}  # (one frame: no room for a trailing space)
    assert max(allowed, key=lambda k: ref[k]) == (1,)
    lex = Lexicon([[1]], separator=3)
    assert decode_blocks([lp], beam_size=1, lexicon=lex) == [1]
    assert decode_blocks([lp], beam_size=1) == [2]


def test_block_decoding_passes_its_token_threshold_on() -> None:
    """Kills: ``decode_blocks`` building its search without ``token_threshold`` (default -12). Two
    frames of (blank .5, a .25, b .25), threshold log .3: only the all-blank path is searched, so
    the labelling is empty; at -12, ``a`` (p = .3125 by hand) beats the empty one (.25)."""
    from rnnkit.tasks.speech import decode_blocks

    lp = torch.tensor([[0.5, 0.25, 0.25]] * 2, dtype=torch.float64).log()
    assert decode_blocks([lp[:1], lp[1:]], beam_size=4, token_threshold=math.log(0.3)) == []
    assert decode_blocks([lp[:1], lp[1:]], beam_size=4) == [1]


def test_corpus_error_rates_pool_the_counts() -> None:
    """Kills: WER and CER averaged per utterance instead of total errors over total reference words
    (characters), as jiwer computes them. ``a`` -> ``b`` (1 of 1 word, 1 of 1 char) and an exact
    ``c d e`` (3 words, 5 chars): WER 1/4 and CER 1/6 by hand, not 1/2."""
    from rnnkit.nn.ctc import error_counts
    from rnnkit.tasks.speech import error_rates

    rates = error_rates([error_counts("a", "b"), error_counts("c d e", "c d e")])
    assert rates == {"wer": pytest.approx(1 / 4), "cer": pytest.approx(1 / 6)}


def _decoder(**decode):
    """A TrainedSpeechModel holding only what ``decode_ctc`` reads: the decoding options and the labels."""
    from types import SimpleNamespace

    from rnnkit.tasks.speech import DecodeConfig, TrainedSpeechModel

    tsm = object.__new__(TrainedSpeechModel)
    tsm.decode = DecodeConfig(**decode)
    tsm.prep = SimpleNamespace(labels=["<blank>", "a", "b"], units="chars")
    return tsm


def test_decode_ctc_uses_the_beam_size_it_is_given() -> None:
    """Kills: ``decode_ctc`` reading ``decode.beam_size`` even when a ``beam_size`` is passed.
    Frames with argmaxes b, blank, b: greedy writes ``bb`` (by hand); brute force over every path
    ranks ``b`` first, which a beam of 4 finds."""
    p = torch.tensor([[0.139, 0.2, 0.662], [0.477, 0.101, 0.422], [0.134, 0.2, 0.665]], dtype=torch.float64)
    lp = (p / p.sum(-1, keepdim=True)).log()
    ref = _labelling_log_probs(lp)
    assert max(ref, key=ref.__getitem__) == (2,)
    assert _decoder(beam_size=1).decode_ctc(lp[None], torch.tensor([3]), beam_size=4) == ["b"]
    assert _decoder(beam_size=4).decode_ctc(lp[None], torch.tensor([3]), beam_size=1) == ["bb"]


def test_decode_ctc_applies_the_configured_token_threshold() -> None:
    """Kills: ``decode_ctc``'s beam search built without ``decode.token_threshold`` (default -12).
    Two frames of (blank .5, a .25, b .25) with the threshold at log .3: empty text; at -12 the
    more probable ``a`` (.3125 against .25, by hand)."""
    lp = torch.tensor([[[0.5, 0.25, 0.25]] * 2], dtype=torch.float64).log()
    assert _decoder(beam_size=4, token_threshold=math.log(0.3)).decode_ctc(lp, torch.tensor([2])) == [""]
    assert _decoder(beam_size=4).decode_ctc(lp, torch.tensor([2])) == ["a"]


# -- speech: whole-file, chunked and streamed decoding of a model ---------------------------------
RATE = 8000


def _wave(seconds: float, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f = rng.uniform(300, 3000, size=4)
    wave = sum(0.2 * np.sin(2 * np.pi * fi * t + i) * (np.sin(np.pi * (i + 1) * t / seconds) ** 2)
               for i, fi in enumerate(f))
    return torch.from_numpy((wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32))


def _random_ctc(**decode):
    """A streamable (unidirectional, stacked) CTC model with random weights over blank, space, a, b, c."""
    from rnnkit.tasks.speech import (
        BLANK,
        DataConfig,
        DecodeConfig,
        Prepared,
        SpeechFeatures,
        SpeechModel,
        TrainedSpeechModel,
    )

    torch.manual_seed(0)
    feats = SpeechFeatures(RATE, "logmel", n_mels=24)
    tokens = [BLANK, " ", "a", "b", "c"]
    model = SpeechModel(feats.size, len(tokens), head="ctc", hidden_size=24, num_layers=1,
                        bidirectional=False, subsampling="stack", subsample_factor=2, dropout=0.0)
    with torch.no_grad():
        model.output.weight.mul_(4.0)
        model.output.bias.copy_(torch.tensor([0.0, -0.5, 0.0, 0.0, 0.0]))
        allf = feats(_wave(3.0, seed=5))
        model.feat_mean.copy_(allf.mean(0))
        model.feat_std.copy_(allf.std(0))
    prep = Prepared(feats, "ctc", "chars", tokens, True, ["ab", "ca"], DataConfig())
    return TrainedSpeechModel(model.eval(), prep, DecodeConfig(**decode))


def test_every_decoding_path_applies_the_configured_token_threshold() -> None:
    """Kills: ``decode.token_threshold`` not passed to the search by the whole-file pass, the
    chunked pass of a long file, or the streamer (each then searching at the default -12). A
    threshold of +1 is above every log-probability, so every token is skipped at every frame and
    the transcript is empty (by definition); at the default the same audio gives text."""
    wave = _wave(1.0, seed=1)
    strict, default = _random_ctc(beam_size=4, token_threshold=1.0), _random_ctc(beam_size=4)
    for trained, empty in ((strict, True), (default, False)):
        whole = trained.recognize([wave])[0]
        chunked = trained.recognize([wave], max_chunk_seconds=0.3)[0]
        streamed = trained.transcribe_stream(wave, 800)
        assert "chunks" in chunked and "chunks" not in whole
        assert [whole["text"] == "", chunked["text"] == "", streamed == ""] == [empty] * 3


def test_chunked_and_streamed_decoding_use_the_beam_size_they_are_given() -> None:
    """Kills: the chunked pass and the streamer reading ``decode.beam_size`` instead of the
    ``beam_size`` passed. The run decodes greedily (beam 1; greedy has no threshold) with a
    threshold of +1: asked for beam 4, the search skips every token (empty text, by definition)."""
    trained = _random_ctc(beam_size=1, token_threshold=1.0)
    wave = _wave(1.0, seed=1)
    assert trained.recognize([wave], max_chunk_seconds=0.3)[0]["text"] != ""
    assert trained.recognize([wave], beam_size=4, max_chunk_seconds=0.3)[0]["text"] == ""
    assert trained.transcribe_stream(wave, 800) != ""
    assert trained.transcribe_stream(wave, 800, beam_size=4) == ""


def test_a_reset_streamer_starts_the_beam_search_afresh() -> None:
    """Kills: ``StreamingRecognizer.reset`` leaving the beam search's prefixes in place, so the next
    utterance continues the last one. After one utterance and a reset, a second one transcribes
    as the whole-file pass does."""
    trained = _random_ctc(beam_size=4)
    first, second = _wave(0.8, seed=2), _wave(0.8, seed=3)
    rec = trained.streamer()
    rec.push(first)
    assert rec.finish() != ""
    rec.reset()
    rec.push(second)
    expected = trained.recognize([second])[0]["text"]
    assert expected != ""
    assert rec.finish() == expected


def test_chunked_decoding_of_a_long_file_applies_the_lexicon() -> None:
    """Kills: a file longer than ``max_chunk_seconds`` decoded without the lexicon (only the batched
    short files got it). Every word of the chunked transcript is a training word, and (the model
    streams, state carried across chunks) it equals the streamed transcript with the lexicon."""
    trained = _random_ctc(beam_size=4)
    wave = _wave(1.2, seed=0)
    free = trained.recognize([wave], max_chunk_seconds=0.3)[0]["text"]
    assert not set(free.split()) <= {"ab", "ca"}  # the lexicon matters here
    res = trained.recognize([wave], lexicon="train", max_chunk_seconds=0.3)[0]
    assert "chunks" in res
    assert set(res["text"].split()) <= {"ab", "ca"}
    assert res["text"] == trained.transcribe_stream(wave, 800, lexicon="train")


def test_an_unfinished_word_unit_cannot_start_a_new_word() -> None:
    """Kills: a word-unit lexicon letting a token start a new word after an *unfinished* one (only
    a complete word may be followed by a new word). Words {1 2}: after 1, another 1 is refused;
    after 1 2 (complete, back between words) a 1 starts the next word."""
    from rnnkit.nn.ctc import Lexicon

    lex = Lexicon([[1, 2]])
    s1 = lex.step(lex.root, 1)
    assert s1 is not None and not lex.is_complete(s1)
    assert lex.step(s1, 1) is None
    s12 = lex.step(s1, 2)
    assert s12 is not None and lex.is_complete(s12) and lex.step(s12, 1) == s1


def test_a_file_shorter_than_the_chunk_limit_is_decoded_in_one_pass() -> None:
    """Kills: the one-pass test made strict (``num_frames < window``), so a file a little shorter
    than ``max_chunk_seconds`` is cut into chunks. 0.5 s at 8 kHz is 4000 samples; one hop (10 ms,
    80 samples) less is shorter than the limit (documented: only longer files are chunked)."""
    trained = _random_ctc()
    hop = trained.prep.features.hop
    assert hop == RATE // 100
    wave = _wave(0.5, seed=4)[: 4000 - hop]
    assert "chunks" not in trained.recognize([wave], max_chunk_seconds=0.5)[0]
    assert "chunks" in trained.recognize([_wave(1.0, seed=4)], max_chunk_seconds=0.5)[0]


def test_a_batched_matrix_is_a_one_line_error_for_the_search() -> None:
    """Kills: the ``[T, V]`` shape check of ``advance`` dropped: a batch ``[B, T, V]`` (what the
    model returns) then fails deep in the search with a NumPy conversion error, not the message
    naming the expected shape."""
    from rnnkit.nn.ctc import CTCPrefixBeamSearch

    lp = torch.full((2, 3, 4), 0.25).log()
    with pytest.raises(ValueError, match=r"log_probs must be \[T, V\]"):
        CTCPrefixBeamSearch().advance(lp)
