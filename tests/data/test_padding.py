"""Tests for rnnkit.data.padding."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data import DataError, lengths_to_mask, pad_batch, pad_sequences

# ----------------------------------------------------------------------- pad_sequences (Keras)


def test_pad_sequences_keras_defaults_pre_padding() -> None:
    out = pad_sequences([[1], [2, 3], [4, 5, 6]])
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[0, 0, 1], [0, 2, 3], [4, 5, 6]])


def test_pad_sequences_post_value_maxlen() -> None:
    out = pad_sequences([[1], [2, 3], [4, 5, 6]], padding="post", value=-1)
    np.testing.assert_array_equal(out, [[1, -1, -1], [2, 3, -1], [4, 5, 6]])
    out = pad_sequences([[1], [2, 3], [4, 5, 6]], maxlen=2)
    np.testing.assert_array_equal(out, [[0, 1], [2, 3], [5, 6]])  # truncating='pre' drops the start
    out = pad_sequences([[1], [2, 3], [4, 5, 6]], maxlen=2, truncating="post")
    np.testing.assert_array_equal(out, [[0, 1], [2, 3], [4, 5]])


def test_pad_sequences_dtype_sample_shape_and_empty() -> None:
    out = pad_sequences([np.ones((2, 3)), [], np.zeros((1, 3))], dtype="float32", padding="post", value=9.0)
    assert out.shape == (3, 2, 3) and out.dtype == np.float32
    assert (out[1] == 9).all() and (out[0] == 1).all() and (out[2, 1] == 9).all()


def test_pad_sequences_maxlen_zero_and_errors() -> None:
    assert pad_sequences([[1, 2]], maxlen=0).shape == (1, 0)
    assert pad_sequences([], maxlen=4).shape == (0, 4)
    with pytest.raises(DataError, match="empty list"):
        pad_sequences([])
    with pytest.raises(DataError, match="padding type"):
        pad_sequences([[1]], padding="middle")
    with pytest.raises(DataError, match="truncating type"):
        pad_sequences([[1]], truncating="both")
    with pytest.raises(DataError, match="string"):
        pad_sequences(["abc"])
    with pytest.raises(DataError, match="different from expected shape"):
        pad_sequences([np.ones((2, 3)), np.ones((2, 4))])


def test_pad_sequences_reports_truncation(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rnnkit.data"):
        pad_sequences([[1, 2, 3, 4], [1], [1, 2, 3]], maxlen=2)
    assert "truncated 2 of 3 sequences" in caplog.text and "dropping 3 steps" in caplog.text


# ----------------------------------------------------------------------------- pad_batch


def test_pad_batch_post() -> None:
    pb = pad_batch([[1, 2, 3], [4], []])
    assert pb.padded.tolist() == [[1, 2, 3], [4, 0, 0], [0, 0, 0]]
    assert pb.lengths.tolist() == [3, 1, 0]
    assert pb.mask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert pb.padding == "post" and pb.truncation == "post"
    assert pb.num_truncated == 0 and pb.tokens_dropped == 0
    padded, lengths, mask = pb  # unpacks
    assert padded.dtype == torch.int64 and lengths.dtype == torch.int64 and mask.dtype == torch.bool


def test_pad_batch_pre_and_truncation_report() -> None:
    pb = pad_batch([[1, 2, 3, 4, 5], [6, 7]], max_length=3, padding="pre", truncation="pre", pad_value=-1)
    assert pb.padded.tolist() == [[3, 4, 5], [-1, 6, 7]]
    assert pb.mask.tolist() == [[True, True, True], [False, True, True]]
    assert pb.num_truncated == 1 and pb.tokens_dropped == 2
    pb = pad_batch([[1, 2, 3, 4, 5], [6, 7]], max_length=3, padding="left", truncation="right")
    assert pb.padded.tolist() == [[1, 2, 3], [0, 6, 7]] and pb.padding == "pre" and pb.truncation == "post"


def test_pad_batch_features_and_dtype() -> None:
    a = torch.randn(4, 2)
    b = np.ones((2, 2), dtype=np.float32)
    pb = pad_batch([a, b], pad_value=0.5)
    assert pb.padded.shape == (2, 4, 2) and pb.padded.dtype == torch.float32
    torch.testing.assert_close(pb.padded[0], a)
    assert (pb.padded[1, 2:] == 0.5).all()
    assert pad_batch([[1, 2]], dtype=torch.float64).padded.dtype == torch.float64


def test_pad_batch_errors() -> None:
    with pytest.raises(DataError, match="empty batch"):
        pad_batch([])
    with pytest.raises(DataError, match="step shape"):
        pad_batch([torch.zeros(3, 2), torch.zeros(3, 3)])
    with pytest.raises(DataError, match="tokenize and encode"):
        pad_batch(["hello"])
    with pytest.raises(DataError, match="padding must be"):
        pad_batch([[1]], padding="middle")
    with pytest.raises(DataError, match="scalar"):
        pad_batch([torch.tensor(3)])
    with pytest.raises(DataError, match="max_length"):
        pad_batch([[1]], max_length=-1)


def test_pad_batch_all_empty() -> None:
    pb = pad_batch([[], []])
    assert pb.padded.shape == (2, 0) and pb.lengths.tolist() == [0, 0] and pb.mask.shape == (2, 0)


def test_lengths_to_mask() -> None:
    m = lengths_to_mask(torch.tensor([2, 0, 3]), padding="pre")
    assert m.tolist() == [[False, True, True], [False, False, False], [True, True, True]]


seqs_strategy = st.lists(st.lists(st.integers(-50, 50), max_size=12), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    seqs=seqs_strategy,
    max_length=st.one_of(st.none(), st.integers(0, 14)),
    padding=st.sampled_from(["pre", "post"]),
    truncation=st.sampled_from(["pre", "post"]),
    pad_value=st.integers(-100, 100),
)
def test_pad_batch_properties(
    seqs: list[list[int]], max_length: int | None, padding: str, truncation: str, pad_value: int
) -> None:
    pb = pad_batch(seqs, max_length=max_length, padding=padding, truncation=truncation, pad_value=pad_value)
    longest = max(len(s) for s in seqs)
    t = longest if max_length is None else min(max_length, longest)
    assert pb.padded.shape == (len(seqs), t)
    expected_lengths = [min(len(s), t) for s in seqs]
    assert pb.lengths.tolist() == expected_lengths
    assert pb.mask.sum(dim=1).tolist() == expected_lengths
    assert pb.num_truncated == sum(len(s) > t for s in seqs)
    assert pb.tokens_dropped == sum(max(0, len(s) - t) for s in seqs)
    for i, s in enumerate(seqs):
        kept = s if len(s) <= t else (s[:t] if truncation == "post" else s[len(s) - t :])
        row = pb.padded[i].tolist()
        mask = pb.mask[i].tolist()
        assert [v for v, m in zip(row, mask) if m] == kept
        assert all(v == pad_value for v, m in zip(row, mask) if not m)
        if padding == "post":
            assert mask == [True] * len(kept) + [False] * (t - len(kept))
        else:
            assert mask == [False] * (t - len(kept)) + [True] * len(kept)


@settings(max_examples=100, deadline=None)
@given(
    seqs=seqs_strategy,
    maxlen=st.one_of(st.none(), st.integers(0, 14)),
    padding=st.sampled_from(["pre", "post"]),
    truncating=st.sampled_from(["pre", "post"]),
)
def test_pad_sequences_matches_pad_batch(
    seqs: list[list[int]], maxlen: int | None, padding: str, truncating: str
) -> None:
    keras = pad_sequences(seqs, maxlen=maxlen, padding=padding, truncating=truncating, dtype="int64")
    pb = pad_batch(seqs, max_length=maxlen, padding=padding, truncation=truncating)
    if maxlen is not None and maxlen > pb.padded.shape[1]:
        # Keras pads to maxlen even if every sequence is shorter.
        extra = maxlen - pb.padded.shape[1]
        ref = torch.nn.functional.pad(pb.padded, (0, extra) if padding == "post" else (extra, 0))
    else:
        ref = pb.padded
    np.testing.assert_array_equal(keras, ref.numpy())
