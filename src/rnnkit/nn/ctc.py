"""CTC decoding: best path (greedy), prefix beam search with an optional lexicon, and the
edit distances behind CER and WER.

Connectionist temporal classification (Graves et al. 2006, "Connectionist Temporal
Classification: Labelling Unsegmented Sequence Data with Recurrent Neural Networks", sec. 3)
scores a labelling ``l`` by summing over every frame alignment ``pi`` that collapses to it
(merge repeats, then drop blanks): ``p(l | x) = sum_{B(pi) = l} prod_t y_t(pi_t)``.

* :func:`ctc_greedy_decode` takes the most likely token per frame and collapses (best path).
* :class:`CTCPrefixBeamSearch` keeps, for each prefix, the probability of the alignments that
  end in a blank (``p_b``) and in its last label (``p_nb``) (Hannun et al. 2014, "First-Pass
  Large Vocabulary Continuous Speech Recognition using Bi-Directional Recurrent DNNs", sec. 3.1).
  Without pruning, ``p_b + p_nb`` of a prefix is exactly the sum over its alignments, so the
  best surviving labelling is the most probable one. It is incremental: ``advance`` on chunks
  of frames gives the same beams as one call on the whole matrix (streaming).
* :class:`Lexicon` restricts the beam to sequences of known words (a trie over token ids).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

__all__ = [
    "CTCPrefixBeamSearch",
    "Lexicon",
    "ctc_greedy_decode",
    "ctc_prefix_beam_search",
    "collapse_alignment",
    "edit_distance",
    "error_counts",
]

_NEG_INF = -math.inf


def _logaddexp(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def collapse_alignment(path: Iterable[int], blank: int = 0, previous: int | None = None) -> list[int]:
    """Merge repeated tokens, then drop blanks: ``B(pi)`` of the CTC paper.

    Args:
        path: Token per frame.
        blank: Blank id.
        previous: Token of the frame before ``path`` (to continue a collapse across chunks).

    Returns:
        The labelling.
    """
    out: list[int] = []
    prev = previous
    for token in path:
        token = int(token)
        if token != prev and token != blank:
            out.append(token)
        prev = token
    return out


def ctc_greedy_decode(log_probs: Tensor, lengths: Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """Best-path decoding: argmax per frame, then collapse.

    Args:
        log_probs: ``[T, V]`` or ``[B, T, V]`` scores (log-probabilities or logits).
        lengths: ``[B]`` valid frames per row (default: all).
        blank: Blank id.

    Returns:
        One labelling per row (one list for a ``[T, V]`` input, wrapped in a list).
    """
    if log_probs.dim() == 2:
        log_probs = log_probs.unsqueeze(0)
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be [T, V] or [B, T, V], got shape {list(log_probs.shape)}")
    batch, steps, vocab = log_probs.shape
    if not 0 <= blank < vocab:
        raise ValueError(f"blank must be a token id in [0, {vocab}) (the last dimension of log_probs), got {blank}")
    best = log_probs.argmax(-1).tolist()
    if lengths is None:
        lens = [steps] * batch
    else:
        lens = [int(n) for n in (lengths.tolist() if isinstance(lengths, Tensor) else lengths)]
        if len(lens) != batch:
            raise ValueError(f"lengths must have one entry per row ({batch}), got {len(lens)}")
        if lens and (min(lens) < 0 or max(lens) > steps):
            raise ValueError(f"lengths must be in [0, {steps}] (the frames per row), got {lens}")
    return [collapse_alignment(row[:n], blank) for row, n in zip(best, lens)]


class Lexicon:
    """A word list as a trie over token ids, used to constrain CTC beam search.

    With a ``separator`` token (character units: the space), a prefix is valid when each
    finished word is in the list and the unfinished one is the beginning of a listed word; the
    separator may only close a complete word. Without a separator (word units) a word is
    usually one token; a word spelled with several tokens returns to the root once complete,
    unless a longer listed word continues it (then the next token continues that longer word if
    it can, else starts a new word: one state per prefix, so where a token could do both, the
    longer word is taken).

    Args:
        words: Each word as its token ids.
        separator: Word-boundary token id, or ``None``.
    """

    def __init__(self, words: Iterable[Sequence[int]], separator: int | None = None) -> None:
        self.separator = separator
        self._children: list[dict[int, int]] = [{}]
        self._final: list[bool] = [False]
        count = 0
        for word in words:
            if not len(word):
                continue
            node = 0
            for token in word:
                if separator is not None and int(token) == separator:
                    raise ValueError(f"lexicon word {list(word)} contains the separator token {separator}")
                nxt = self._children[node].get(int(token))
                if nxt is None:
                    nxt = len(self._children)
                    self._children[node][int(token)] = nxt
                    self._children.append({})
                    self._final.append(False)
                node = nxt
            self._final[node] = True
            count += 1
        if count == 0:
            raise ValueError("the lexicon is empty: give at least one non-empty word")
        self.num_words = count

    @classmethod
    def from_words(cls, words: Iterable[str], tokens: Sequence[str], separator: str | None = " ",
                   units: str = "chars") -> Lexicon:
        """Build from strings and the model's token list (index = token id).

        Args:
            words: The allowed words.
            tokens: Token strings by id (id 0 is usually the blank).
            separator: Word-boundary token for character units.
            units: ``'chars'`` (a word is spelled with character tokens) or ``'words'``.

        Returns:
            The lexicon; words with tokens the model does not have are skipped.
        """
        index = {t: i for i, t in enumerate(tokens)}
        spelled: list[list[int]] = []
        words = [w for w in words if w]
        for w in words:
            parts = list(w) if units == "chars" else [w]
            if all(p in index for p in parts):
                spelled.append([index[p] for p in parts])
        if words and not spelled:  # not "empty": the words are there, the model just cannot write any of them
            shown = [t for t in tokens if t and t != separator and not (t.startswith("<") and t.endswith(">"))][:12]
            raise ValueError(f"none of the {len(words)} lexicon words (e.g. {words[0]!r}) can be written with the "
                             f"model's output {'characters' if units == 'chars' else 'words'} ({' '.join(shown)}"
                             f"{' ...' if len(tokens) > len(shown) + 2 else ''}); give words made of those, "
                             "or decode.lexicon=train")
        sep = index.get(separator) if (units == "chars" and separator is not None) else None
        return cls(spelled, sep)

    @property
    def root(self) -> int:
        """The start state."""
        return 0

    def step(self, state: int, token: int) -> int | None:
        """The state after ``token``, or ``None`` when the lexicon forbids it."""
        if self.separator is not None and token == self.separator:
            return 0 if (state != 0 and self._final[state]) else None
        nxt = self._children[state].get(token)
        if nxt is None and self.separator is None and state != 0 and self._final[state]:
            nxt = self._children[0].get(token)  # a complete word that a longer one could continue: a new word
        if nxt is None:
            return None
        if self.separator is None and self._final[nxt] and not self._children[nxt]:
            return 0
        return nxt

    def is_complete(self, state: int) -> bool:
        """True when a labelling may end in ``state`` (between words or after a whole word)."""
        return state == 0 or self._final[state]


@dataclass
class _Beam:
    p_b: float = _NEG_INF
    p_nb: float = _NEG_INF
    state: int = 0

    @property
    def total(self) -> float:
        return _logaddexp(self.p_b, self.p_nb)


@dataclass
class CTCPrefixBeamSearch:
    """Incremental CTC prefix beam search over log-probabilities.

    Args:
        beam_size: Prefixes kept after each frame.
        blank: Blank id.
        lexicon: Optional word constraint.
        token_threshold: Skip tokens whose log-probability at a frame is below this (``None``:
            consider every token; the search is then exact up to the beam).
        max_tokens: Consider at most this many most likely tokens per frame (``None``: all).
    """

    beam_size: int = 8
    blank: int = 0
    lexicon: Lexicon | None = None
    token_threshold: float | None = -12.0
    max_tokens: int | None = None
    _beams: dict[tuple[int, ...], _Beam] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self._beams = {(): _Beam(0.0, _NEG_INF, self.lexicon.root if self.lexicon else 0)}

    def advance(self, log_probs: Tensor | np.ndarray) -> None:
        """Consume frames ``[T, V]`` of log-probabilities (normalized per frame)."""
        lp = log_probs.detach().cpu().double().numpy() if isinstance(log_probs, Tensor) else np.asarray(
            log_probs, dtype=np.float64)
        if lp.ndim != 2:
            raise ValueError(f"log_probs must be [T, V], got shape {list(lp.shape)}")
        if not 0 <= self.blank < lp.shape[1]:
            raise ValueError(f"blank must be a token id in [0, {lp.shape[1]}) (the last dimension of log_probs), "
                             f"got {self.blank}")
        if np.isnan(lp).any():  # NaN breaks the ranking silently (every comparison with it is False)
            raise ValueError("log_probs contain NaN; check the model output (use -inf, not NaN, for impossible tokens)")
        for frame in lp:
            self._advance_frame(frame)

    def _candidates(self, frame: np.ndarray) -> list[int]:
        order = np.argsort(-frame, kind="stable")
        if self.max_tokens is not None:
            order = order[: self.max_tokens]
        if self.token_threshold is not None:
            order = order[frame[order] >= self.token_threshold]
        return [int(c) for c in order if int(c) != self.blank]

    def _advance_frame(self, frame: np.ndarray) -> None:
        nxt: dict[tuple[int, ...], _Beam] = {}

        def get(prefix: tuple[int, ...], state: int) -> _Beam:
            beam = nxt.get(prefix)
            if beam is None:
                beam = nxt[prefix] = _Beam(state=state)
            return beam

        p_blank = float(frame[self.blank])
        candidates = self._candidates(frame)
        for prefix, beam in self._beams.items():
            total = beam.total
            same = get(prefix, beam.state)
            same.p_b = _logaddexp(same.p_b, total + p_blank)
            last = prefix[-1] if prefix else None
            for c in candidates:
                p = float(frame[c])
                if c == last:
                    # the repeat merges into the prefix unless a blank separated it
                    same.p_nb = _logaddexp(same.p_nb, beam.p_nb + p)
                    from_blank = beam.p_b + p
                else:
                    from_blank = total + p
                if from_blank == _NEG_INF:
                    continue
                state = beam.state
                if self.lexicon is not None:
                    new_state = self.lexicon.step(state, c)
                    if new_state is None:
                        continue
                    state = new_state
                ext = get(prefix + (c,), state)
                ext.p_nb = _logaddexp(ext.p_nb, from_blank)
        ranked = sorted(nxt.items(), key=lambda kv: (-kv[1].total, kv[0]))
        self._beams = dict(ranked[: self.beam_size])

    def results(self) -> list[tuple[list[int], float]]:
        """Labellings and log-probabilities, best first (with a lexicon: complete ones only)."""
        items = sorted(self._beams.items(), key=lambda kv: (-kv[1].total, kv[0]))
        if self.lexicon is not None:
            lex = self.lexicon
            complete = [kv for kv in items if lex.is_complete(kv[1].state)]
            items = complete
            if items and lex.separator is not None:  # a trailing separator is not part of the text
                merged: dict[tuple[int, ...], float] = {}
                for prefix, beam in items:
                    key = prefix[:-1] if prefix and prefix[-1] == lex.separator else prefix
                    merged[key] = _logaddexp(merged.get(key, _NEG_INF), beam.total)
                return [(list(k), v) for k, v in sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))]
        return [(list(prefix), beam.total) for prefix, beam in items]

    def best(self) -> list[int]:
        """The best labelling so far (empty when nothing survives the lexicon)."""
        res = self.results()
        return res[0][0] if res else []


def ctc_prefix_beam_search(log_probs: Tensor, beam_size: int = 8, blank: int = 0, lexicon: Lexicon | None = None,
                           token_threshold: float | None = -12.0) -> list[tuple[list[int], float]]:
    """Prefix beam search on one utterance.

    Args:
        log_probs: ``[T, V]`` log-probabilities.
        beam_size: Prefixes kept per frame.
        blank: Blank id.
        lexicon: Optional word constraint.
        token_threshold: Per-frame token pruning (``None``: none).

    Returns:
        ``(labelling, log-probability)`` pairs, best first.
    """
    search = CTCPrefixBeamSearch(beam_size, blank, lexicon, token_threshold)
    search.advance(log_probs)
    return search.results()


#: Python hashes an int modulo 2**61 - 1: smaller ones (in size) hash to themselves (-1 aside, which
#: rapidfuzz maps itself), so rapidfuzz, which compares items by hash, tells them apart as ``==`` does.
_HASH_MODULUS = (1 << 61) - 1


def _kind(seq: Sequence[object]) -> str | None:
    """``"str"`` for a string or a sequence of strings, ``"int"`` for one of ints whose hash is the int,
    ``None`` otherwise: rapidfuzz (hash lookup, a one-character string as its code point) agrees with
    ``==`` on two sequences of one kind (``[97]`` and ``["a"]``, ``[0]`` and ``[2**61 - 1]`` would match)."""
    if isinstance(seq, str) or all(type(x) is str for x in seq):
        return "str"
    if all(type(x) is int and -_HASH_MODULUS < x < _HASH_MODULUS for x in seq):
        return "int"
    return None


def edit_distance(ref: Sequence[object], hyp: Sequence[object]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    if len(ref) == 0 or len(hyp) == 0:  # (len: arrays and tensors have no plain truth value)
        return max(len(ref), len(hyp))
    kind = _kind(ref)
    if kind is not None and _kind(hyp) == kind:  # characters, words or ids: rapidfuzz's C++ Levenshtein (jiwer's)
        try:
            from rapidfuzz.distance import Levenshtein
        except ImportError:  # without the audio extra: the dynamic programme below
            pass
        else:
            return int(Levenshtein.distance(ref, hyp))
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def error_counts(reference: str, hypothesis: str) -> tuple[int, int, int, int]:
    """``(word errors, reference words, char errors, reference chars)`` for one utterance.

    Words are whitespace-separated (as jiwer's WER splits them); characters are counted on the
    text with runs of whitespace reduced to one space and the ends stripped. jiwer's CER keeps a
    run of inner spaces (``cer("a  b", "a b")`` is 0.25 there, 0 here): a doubled space is a
    formatting accident, not a recognition error. Texts without such runs score as jiwer does
    (``tests/test_metrics_references.py``).
    """
    ref_w, hyp_w = reference.split(), hypothesis.split()
    ref_c, hyp_c = " ".join(ref_w), " ".join(hyp_w)
    return edit_distance(ref_w, hyp_w), len(ref_w), edit_distance(ref_c, hyp_c), len(ref_c)
