"""Mutation testing, round 10: the data transforms (bucketing, padding, windows, scalers, batch
collation, text encoding, vocabularies and the tokenizers' normalising logic).

Each test here kills a plausible bug (a dtype not promoted across a batch, a covariate scaler fitted
on the validation steps, a window start past the end of the series ...) that the rest of the suite
let through. The expected values come from independent references: NumPy, plain Python written
here from the documented behaviour, ``unicodedata``, or hand-computed numbers, never from the code
path under test.
"""

from __future__ import annotations

import logging
import re
import unicodedata

import numpy as np
import pytest
import torch

from rnnkit.data import (
    BucketBatchSampler,
    CharTokenizer,
    DataError,
    LabelEncoder,
    LogTransform,
    SequenceCollator,
    StandardScaler,
    SubwordTokenizer,
    TextEncoder,
    TimeSeries,
    Vocabulary,
    WindowDataset,
    WordTokenizer,
    chronological_split,
    collate_sequences,
    make_forecasting_splits,
    normalize_text,
    pad_batch,
    padding_efficiency,
    sequential_batches,
    window_starts,
)
from rnnkit.data.bucketing import EpochSampler


# -- padding -------------------------------------------------------------------------------------
def test_pad_batch_promotes_the_dtype_across_the_batch() -> None:
    """Kills: ``pad_batch`` taking the first sequence's dtype (int64) for the batch instead of
    promoting it with the others', which cut a later float sequence's ``0.5`` to ``0``. The
    docstring: the output dtype "defaults to the promoted dtype of the inputs" (torch's promotion
    of int64 and float32 is float32)."""
    out = pad_batch([torch.tensor([1, 2]), torch.tensor([0.5, 1.5, 2.5])])
    assert out.padded.dtype == torch.float32
    expected = np.array([[1.0, 2.0, 0.0], [0.5, 1.5, 2.5]], dtype=np.float32)
    np.testing.assert_array_equal(out.padded.numpy(), expected)


# -- windows -------------------------------------------------------------------------------------
def test_a_fraction_of_exactly_one_is_accepted() -> None:
    """Kills: ``chronological_split`` refusing the fraction ``1.0`` (``value >= 1`` for ``> 1``);
    sizes are "a fraction in [0, 1]", so ``train=1.0, val=0.0, test=0.0`` puts every step in
    training."""
    b = chronological_split(10, 1.0, 0.0, 0.0)
    assert (b.train, b.val, b.test) == ((0, 10), (10, 10), (10, 10))


def test_numpy_float_fractions_are_fractions_not_step_counts() -> None:
    """Kills: ``chronological_split`` taking a NumPy ``float32`` size (no subclass of ``float``, unlike
    ``float64``) for a step count, ``int(0.1) = 0``: a validation fraction read from a NumPy array
    silently gave an empty validation split and moved the test range. Written out: 100 steps at
    0.7 / 0.1 / 0.2 are 70, 10 and 20 steps, whatever the fractions' float type."""
    expected = ((0, 70), (70, 80), (80, 100))
    for cast in (float, np.float64, np.float32, np.float16):
        b = chronological_split(100, cast(0.7), cast(0.1), cast(0.2))
        assert (b.train, b.val, b.test) == expected, cast
    b = chronological_split(100, 0.7, np.float32(0.1), None)
    assert (b.train, b.val, b.test) == expected

def test_window_starts_never_place_a_target_past_the_series_end() -> None:
    """Kills: ``window_starts`` not clipping ``target_range``'s end to ``n_steps``: a range reaching
    past the series gave windows whose targets lie beyond its last step. Written out: a window
    starting at ``s`` has targets ``[s + lookback, s + lookback + horizon)``, which must end by
    ``n_steps = 10``."""
    starts = window_starts(10, lookback=3, horizon=2, target_range=(0, 20))
    expected = [s for s in range(10) if s + 3 + 2 <= 10]
    assert starts.tolist() == expected == [0, 1, 2, 3, 4, 5]


def test_a_series_of_exactly_lookback_plus_horizon_steps_gives_one_window() -> None:
    """Kills: ``WindowDataset`` refusing a series of exactly ``lookback + horizon`` steps (``<=``
    for ``<``); the documented error is for a series *shorter* than that, and such a series holds
    exactly one window."""
    ds = WindowDataset(np.arange(5.0), lookback=3, horizon=2)
    assert len(ds) == 1
    item = ds[0]
    np.testing.assert_array_equal(item["inputs"].numpy()[:, 0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(item["targets"].numpy()[:, 0], [3.0, 4.0])


def _series_with_covariates(n: int = 20) -> TimeSeries:
    rng = np.random.default_rng(0)
    t = np.arange(n, dtype=np.float64)
    past = np.stack([t * 2.0 + rng.normal(size=n), t ** 1.5], axis=1)  # trends: the later steps differ
    future = (t * 3.0 + 1.0)[:, None]
    return TimeSeries.from_arrays(np.sin(t), past_covariates=past, future_covariates=future)


def test_the_covariate_scaler_is_fitted_on_the_training_steps_only() -> None:
    """Kills: ``make_forecasting_splits`` fitting the covariate scaler on every step of the series
    (the validation and test covariates leaking into the statistics), and splitting the scaled
    covariates back into past and future columns from the wrong end. Reference: NumPy's mean and
    population std of the first ``train`` rows of each covariate column."""
    s = _series_with_covariates(20)
    out = make_forecasting_splits(
        s, lookback=3, horizon=1, train=10, val=5, test=5, covariate_scaler=StandardScaler()
    )
    cov = np.concatenate([s.past_covariates, s.future_covariates], axis=1)
    mean, std = cov[:10].mean(axis=0), cov[:10].std(axis=0)
    scaled = (cov - mean) / std
    new = out.series[0]
    np.testing.assert_allclose(new.past_covariates, scaled[:, :2], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(new.future_covariates, scaled[:, 2:], rtol=1e-12, atol=1e-12)
    assert out.covariate_scaler is not None
    center, scale = out.covariate_scaler.stats["__all__"]
    np.testing.assert_allclose(center, mean, rtol=1e-12)
    np.testing.assert_allclose(scale, std, rtol=1e-12)


def test_a_split_empty_in_one_series_still_has_the_other_series_windows() -> None:
    """Kills: ``make_forecasting_splits`` dropping a split (``None``) as soon as *one* series has it
    empty (``any`` for ``all``). With ``val=0.05`` an 8-step series gets ``floor(0.4 + 0.5) = 0``
    validation steps and a 40-step one ``floor(2 + 0.5) = 2``: the validation windows are the
    second series' two, one per target step (horizon 1)."""
    a = TimeSeries.from_arrays(np.arange(8.0), series_id="a")
    b = TimeSeries.from_arrays(np.arange(40.0), series_id="b")
    out = make_forecasting_splits([a, b], lookback=2, horizon=1, train=0.7, val=0.05, test=None)
    assert out.bounds["a"].val == (6, 6) and out.bounds["b"].val == (28, 30)
    assert out.val is not None
    assert out.val.target_ranges() == [(1, 28, 29), (1, 29, 30)]


def test_no_covariate_scaler_is_returned_for_series_without_covariates() -> None:
    """Kills: ``make_forecasting_splits`` returning the (copied, never fitted) covariate scaler when
    the series have no covariates to fit it on; the attribute is documented as "Scaler fitted on
    the training covariates (or ``None``)"."""
    out = make_forecasting_splits(
        np.arange(30.0), lookback=3, horizon=1, covariate_scaler=StandardScaler()
    )
    assert out.covariate_scaler is None


# -- scalers -------------------------------------------------------------------------------------
def test_a_scaler_fitted_on_3d_data_pools_every_step_per_feature() -> None:
    """Kills: fitting on ``[N, T, F]`` data over axis 0 only (``[T, F]`` statistics) instead of
    pooling every ``N * T`` row per feature, as ``transform``'s ``[..., F]`` contract needs.
    Reference: NumPy's mean and population std of the data reshaped to ``[N * T, F]``."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4, 3)) * np.array([1.0, 5.0, 0.5]) + np.array([0.0, 10.0, -3.0])
    flat = x.reshape(-1, 3)
    expected = (x - flat.mean(axis=0)) / flat.std(axis=0)
    np.testing.assert_allclose(StandardScaler().fit(x).transform(x), expected, rtol=1e-12, atol=1e-12)


def test_an_integer_tensor_is_scaled_to_a_float_tensor() -> None:
    """Kills: ``_like`` returning the result in the input tensor's integer dtype, which truncates
    ``(x - 2.5) / 1.118...`` to whole numbers. Reference: the population z-scores of ``1..4``
    written out, in torch's default float dtype."""
    x = torch.tensor([1, 2, 3, 4])
    y = StandardScaler().fit(x).transform(x)
    assert y.dtype == torch.get_default_dtype()
    std = np.sqrt(((np.arange(1, 5) - 2.5) ** 2).mean())
    np.testing.assert_allclose(y.numpy(), (np.arange(1, 5) - 2.5) / std, rtol=1e-6)


def test_log_transform_refuses_a_value_equal_to_minus_offset() -> None:
    """Kills: ``LogTransform`` accepting ``x + offset == 0`` (``>= 0`` for ``> 0``), which returns
    ``-inf``; values "must exceed ``-offset``"."""
    with pytest.raises(DataError, match="log transform needs values"):
        LogTransform().transform(np.array([0.0, 1.0]))
    with pytest.raises(DataError, match="log transform needs values"):
        LogTransform(offset=1.0).transform(np.array([-1.0, 2.0]))


def test_refitting_a_per_series_scaler_forgets_the_series_of_the_first_fit() -> None:
    """Kills: ``fit`` adding to the statistics of an earlier fit instead of replacing them: after a
    refit on series ``'c'`` only, transforming series ``'a'`` must be the documented "no statistics
    for series" error, not a silent use of stale statistics."""
    scaler = StandardScaler(per_series=True)
    scaler.fit({"a": np.arange(5.0), "b": np.arange(5.0) * 2})
    scaler.fit({"c": np.array([1.0, 3.0])})
    assert set(scaler.stats) == {"c"}
    with pytest.raises(DataError, match="no statistics for series 'a'"):
        scaler.transform(np.arange(5.0), "a")


# -- bucketing -----------------------------------------------------------------------------------
def test_bucket_sampler_shuffles_the_order_of_the_batches() -> None:
    """Kills: ``BucketBatchSampler`` yielding a pool's batches in sorted-length order (the batch
    order not shuffled, against the docstring's "shuffles the batch order"). With one pool of
    distinct lengths, unshuffled batches would come shortest first for every seed; over ten seeds
    at least one order must differ from the sorted one."""
    lengths = list(range(1, 41))
    seen_unsorted = False
    for seed in range(10):
        batches = BucketBatchSampler(lengths, 4, seed=seed, pool_factor=100).batches()
        maxima = [max(lengths[i] for i in b) for b in batches]
        assert sorted(i for b in batches for i in b) == list(range(40))
        seen_unsorted |= maxima != sorted(maxima)
    assert seen_unsorted


def test_epoch_sampler_order_depends_on_the_epoch_and_the_seed() -> None:
    """Kills: ``EpochSampler`` ignoring the epoch or the seed when it seeds its shuffle. Documented:
    the order "depends only on ``(seed, epoch)``" and a run resumed at epoch ``k``
    (``epoch_offset=k``, epoch 0) draws what an uninterrupted run draws at epoch ``k``."""

    def order(seed: int, epoch: int, offset: int = 0) -> list[int]:
        s = EpochSampler(50, shuffle=True, seed=seed, epoch_offset=offset)
        s.set_epoch(epoch)
        return list(s)

    assert sorted(order(3, 0)) == list(range(50))
    assert order(3, 0) != order(3, 1)
    assert order(3, 2) == order(3, 0, offset=2)
    assert order(3, 1) != order(4, 1)
    assert order(3, 1) == order(3, 1)


def test_sequential_batches_use_their_seed() -> None:
    """Kills: ``sequential_batches`` shuffling with a fixed seed instead of ``seed``: two seeds must
    give two different orders of ``0..n-1`` (each covering every index once), and one seed the same
    order twice."""

    def flat(seed: int) -> list[int]:
        return [i for b in sequential_batches(30, 7, seed=seed) for i in b]

    assert sorted(flat(1)) == list(range(30))
    assert flat(1) == flat(1)
    assert flat(1) != flat(2)


def test_padding_efficiency_refuses_an_index_equal_to_the_number_of_examples() -> None:
    """Kills: the bounds check of ``padding_efficiency`` letting the index ``len(lengths)`` through
    (``>`` for ``>=``), which then fails as a bare ``IndexError`` instead of the documented
    ``DataError`` naming the batch."""
    with pytest.raises(DataError, match="outside 0..2"):
        padding_efficiency([1, 2, 3], [[0, 3]])


def test_drop_last_warns_only_when_no_batch_is_left(caplog: pytest.LogCaptureFixture) -> None:
    """Kills: the "yields no batch at all" warning of ``BucketBatchSampler(drop_last=True)`` firing
    when there are exactly ``batch_size`` examples, which make one full batch."""
    with caplog.at_level(logging.WARNING, logger="rnnkit.data"):
        sampler = BucketBatchSampler([3, 1, 2, 5], 4, drop_last=True)
    assert sorted(i for b in sampler.batches() for i in b) == [0, 1, 2, 3]
    assert "no batch" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="rnnkit.data"):
        BucketBatchSampler([3, 1, 2], 4, drop_last=True)
    assert "no batch" in caplog.text


# -- batch collation -----------------------------------------------------------------------------
def test_sequence_targets_are_truncated_on_the_requested_side() -> None:
    """Kills: ``collate_sequences`` truncating sequence targets at the end whatever ``truncation``
    says, and counting the target steps dropped as the number of cut targets. Written out: with
    ``max_length=2`` and ``truncation='pre'`` each target keeps its last two labels; 3 + 2 labels are
    dropped from the two cut targets."""
    samples = [([1, 2, 3, 4, 5], [10, 11, 12, 13, 14]), ([6, 7, 8, 9], [15, 16, 17, 18])]
    batch = collate_sequences(samples, max_length=2, truncation="pre")
    assert batch.targets is not None
    assert batch.targets.tolist() == [[13, 14], [17, 18]]
    assert batch.inputs.tolist() == [[4, 5], [8, 9]]
    assert batch.extras["target_num_truncated"] == 2
    assert batch.extras["target_tokens_dropped"] == 5


def test_sequence_collator_passes_its_truncation_side() -> None:
    """Kills: ``SequenceCollator`` not forwarding its ``truncation`` option (the default ``'post'``
    used): ``truncation='pre'`` keeps the last ``max_length`` steps."""
    batch = SequenceCollator(max_length=2, truncation="pre")([[1, 2, 3], [4]])
    assert batch.inputs.tolist() == [[2, 3], [4, 0]]
    assert batch.extras["truncation_side"] == "pre"


def test_batch_padding_side_is_the_canonical_name_of_an_alias() -> None:
    """Kills: ``Batch.padding_side`` holding the alias the caller passed (``'right'``/``'left'``)
    instead of the documented ``'post'`` or ``'pre'``, so code testing ``== 'pre'`` misread it."""
    assert collate_sequences([[1, 2], [3]], padding="right").padding_side == "post"
    batch = collate_sequences([[1, 2], [3]], padding="left")
    assert batch.padding_side == "pre"
    assert batch.inputs.tolist() == [[1, 2], [0, 3]]


def test_extra_tensors_of_different_shapes_stay_a_list() -> None:
    """Kills: extras that are tensors of unequal shapes being stacked (``torch.stack`` fails);
    documented: extras are "stacked when they are equal-shaped tensors", a list otherwise."""
    samples = [{"inputs": [1, 2], "feat": torch.zeros(2)}, {"inputs": [3], "feat": torch.zeros(3)}]
    batch = collate_sequences(samples)
    assert isinstance(batch.extras["feat"], list)
    assert [tuple(t.shape) for t in batch.extras["feat"]] == [(2,), (3,)]


# -- text encoding -------------------------------------------------------------------------------
def test_a_text_of_exactly_max_length_tokens_is_not_counted_as_truncated() -> None:
    """Kills: ``TextEncoder`` counting a sequence of exactly ``max_length`` tokens as truncated
    (``<`` for ``<=``); ``num_truncated`` counts the texts that were cut."""
    enc = TextEncoder.fit(["a b c d"], WordTokenizer(), max_length=3)
    assert len(enc.encode("a b c")) == 3
    assert (enc.num_truncated, enc.tokens_dropped) == (0, 0)
    assert len(enc.encode("a b c d")) == 3
    assert (enc.num_truncated, enc.tokens_dropped) == (1, 1)


def test_text_encoder_fit_applies_min_freq() -> None:
    """Kills: ``TextEncoder.fit`` not passing ``min_freq`` on to the vocabulary: tokens seen fewer
    than ``min_freq`` times must be left out (and so encode to ``<unk>``)."""
    enc = TextEncoder.fit(["a a b", "a c c"], WordTokenizer(), min_freq=2)
    assert enc.vocab is not None
    assert list(enc.vocab)[4:] == ["a", "c"]  # counts a=3, c=2; b=1 is dropped
    assert enc.encode("b") == [enc.vocab.unk_id]


def test_an_encoder_without_keep_specials_cuts_the_whole_id_list_to_max_length() -> None:
    """Kills: the ``keep_specials=False`` path (encoders saved before the option) truncating the
    text's tokens to the room left by ``<bos>``/``<eos>`` instead of cutting the full id list to
    ``max_length``. Written out: ``[bos, a, b, c, d, e, eos]`` cut after 4 ids is
    ``[bos, a, b, c]``."""
    vocab = Vocabulary(["a", "b", "c", "d", "e"])
    enc = TextEncoder(WordTokenizer(), vocab, add_bos=True, add_eos=True, max_length=4, keep_specials=False)
    ids = enc.encode("a b c d e")
    assert ids == [vocab.bos_id, vocab.token_to_id("a"), vocab.token_to_id("b"), vocab.token_to_id("c")]
    assert (enc.num_truncated, enc.tokens_dropped) == (1, 3)


def test_a_subword_encoder_keeps_bos_and_eos_within_max_length() -> None:
    """Kills: the subword path of ``keep_specials=True`` truncating the body to ``max_length`` and
    then adding ``<bos>``/``<eos>`` (two ids too many). Documented: ``max_length`` bounds the
    encoded ids, and every sequence still starts with ``<bos>`` (id 2) and ends with ``<eos>``
    (id 3)."""
    pytest.importorskip("tokenizers")
    texts = ["the cat sat on the mat", "a dog ran in the park", "the end of the day"]
    tok = SubwordTokenizer.train(texts, "wordpiece", vocab_size=60, min_frequency=1)
    enc = TextEncoder(tok, add_bos=True, add_eos=True, max_length=4)
    ids = enc.encode("the cat sat on the mat")
    assert len(ids) == 4
    assert ids[0] == tok.token_to_id("<bos>") == 2 and ids[-1] == tok.token_to_id("<eos>") == 3
    assert ids[1:3] == tok.encode("the cat sat on the mat")[:2]


# -- vocabularies --------------------------------------------------------------------------------
def test_max_size_equal_to_the_number_of_specials_gives_a_specials_only_vocabulary() -> None:
    """Kills: ``max_size`` equal to the number of special tokens being refused (``<=`` for ``<``);
    the size counts "special tokens included", so 4 leaves room for the four specials only."""
    vocab = Vocabulary.build([["a", "b"]], max_size=4)
    assert list(vocab) == ["<pad>", "<unk>", "<bos>", "<eos>"]


def test_special_tokens_in_the_text_take_no_regular_slot() -> None:
    """Kills: ``from_counts`` not leaving special tokens out of the frequency ranking: a literal
    ``<unk>`` in the tokens (the most frequent one here) took the only regular slot that
    ``max_size=5`` leaves, and no regular token got in. Expected: the ranking of the other tokens
    (``a`` and ``b`` once each, alphabetical tie) gives ``a``."""
    vocab = Vocabulary.build([["<unk>", "<unk>", "<unk>", "b", "a"]], max_size=5)
    assert list(vocab) == ["<pad>", "<unk>", "<bos>", "<eos>", "a"]
    assert vocab.counts == {"a": 1}


def test_a_negative_id_is_out_of_range() -> None:
    """Kills: ``Vocabulary.id_to_token`` accepting negative ids (Python indexing from the end made
    ``-1`` decode to the last token); ids are documented in ``[0, len)``."""
    vocab = Vocabulary(["a", "b"])
    with pytest.raises(DataError, match="out of range"):
        vocab.id_to_token(-1)
    with pytest.raises(DataError, match="out of range"):
        vocab.decode([-1])


def test_label_encoder_refuses_a_negative_class_id() -> None:
    """Kills: ``LabelEncoder.decode`` accepting negative ids (``-1`` decoded to the last class);
    class ids are documented in ``[0, K)``."""
    enc = LabelEncoder.fit(["neg", "pos"])
    assert enc.decode([1, 0]) == ["pos", "neg"]
    with pytest.raises(DataError, match="out of range"):
        enc.decode([-1])


def test_an_extra_special_equal_to_a_standard_one_is_kept_once() -> None:
    """Kills: ``extra_specials`` being appended without skipping the ones already among the standard
    specials, which made ``extra_specials=['<unk>', '<sep>']`` a "must be distinct" error; the
    extras are placed after the standard ones, each special once."""
    vocab = Vocabulary(["a"], extra_specials=["<unk>", "<sep>"])
    assert vocab.specials == ("<pad>", "<unk>", "<bos>", "<eos>", "<sep>")
    assert vocab.token_to_id("a") == 5


# -- tokenizers' normalising logic ---------------------------------------------------------------
def test_lowercasing_comes_after_unicode_normalization() -> None:
    """Kills: ``normalize_text`` (and the subword trainer's normalizer) lowercasing *before* the
    Unicode normalization, documented as "Lowercase after normalizing": NFKC turns the single
    character U+3392 (SQUARE MHZ) into ``'MHz'``, whose capitals a lowercase applied first never
    sees. Reference: ``unicodedata.normalize`` then ``str.lower``."""
    expected = unicodedata.normalize("NFKC", "\u3392").lower()
    assert expected == "mhz"
    assert normalize_text("\u3392", "NFKC", lowercase=True) == expected
    assert WordTokenizer().tokenize("5 \u3392") == ["5", expected]
    pytest.importorskip("tokenizers")
    tok = SubwordTokenizer.train(["the mhz band", "mhz and khz"], "wordpiece", vocab_size=60,
                                 min_frequency=1, lowercase=True)
    assert "".join(tok.tokenize("\u3392")).replace("##", "") == expected


def test_normalization_names_are_case_insensitive() -> None:
    """Kills: the normalization name being checked as given, so ``'nfkc'`` was an "unknown Unicode
    normalization" error instead of NFKC (which turns the ligature U+FB01 into ``'fi'``)."""
    assert normalize_text("\ufb01", "nfkc") == unicodedata.normalize("NFKC", "\ufb01") == "fi"
    assert CharTokenizer(normalization="nfc").normalization == "NFC"


def test_a_combining_mark_after_an_underscore_stays_in_its_word() -> None:
    """Kills: ``_wordish`` not counting ``'_'`` as a word character (``\\w`` matches it), so a
    combining mark right after an underscore was split off the word. Reference, written out: with
    ``join_marks`` a word is a maximal run of ``\\w`` characters and combining marks (Unicode
    category M)."""
    text = "snake_\u0301case x"

    def reference(t: str) -> list[str]:
        words, cur = [], ""
        for ch in t:
            if re.match(r"\w", ch) or unicodedata.category(ch).startswith("M"):
                cur += ch
            else:
                words, cur = (words + [cur] if cur else words), ""
        return words + [cur] if cur else words

    assert reference(text) == ["snake_\u0301case", "x"]
    assert WordTokenizer(normalization=None).tokenize(text) == reference(text)


def test_a_pattern_with_groups_returns_what_findall_returns() -> None:
    """Kills: ``join_marks`` being applied to a pattern with groups (whole matches returned instead
    of the groups); documented: it "applies to patterns without groups", which tokenize as
    ``re.findall`` does."""
    pattern = r"(\w+),"
    tok = WordTokenizer(pattern=pattern, lowercase=False)
    assert tok.tokenize("a,b,c") == re.findall(pattern, "a,b,c") == ["a", "b"]


@pytest.mark.parametrize("model", ["bpe", "wordpiece", "unigram"])
def test_subword_unknown_characters_map_to_the_second_special_token(model: str) -> None:
    """Kills: ``SubwordTokenizer.train`` giving the model the *first* special token (``<pad>``) as its
    unknown token; documented: "the first is padding (id 0), the second the unknown token", so a
    character never seen in training encodes to id 1, never to the padding id."""
    pytest.importorskip("tokenizers")
    texts = ["the cat sat on the mat", "a dog ran in the park", "the end of the day"]
    tok = SubwordTokenizer.train(texts, model, vocab_size=60, min_frequency=1)
    ids = tok.encode("the \u20ac cat")
    assert 1 in ids and 0 not in ids
