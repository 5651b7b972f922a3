"""Tests for rnnkit.data.bucketing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data import BucketBatchSampler, DataError, padding_efficiency, sequential_batches


@settings(max_examples=120, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 200), min_size=0, max_size=300),
    batch_size=st.integers(1, 40),
    shuffle=st.booleans(),
    pool_factor=st.integers(1, 10),
    seed=st.integers(0, 1000),
)
def test_every_index_exactly_once(
    lengths: list[int], batch_size: int, shuffle: bool, pool_factor: int, seed: int
) -> None:
    sampler = BucketBatchSampler(lengths, batch_size, shuffle=shuffle, seed=seed, pool_factor=pool_factor)
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert len(sampler) == len(batches)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 50), min_size=0, max_size=200),
    batch_size=st.integers(1, 16),
    shuffle=st.booleans(),
)
def test_drop_last_only_full_batches(lengths: list[int], batch_size: int, shuffle: bool) -> None:
    sampler = BucketBatchSampler(lengths, batch_size, shuffle=shuffle, drop_last=True, pool_factor=3)
    batches = list(sampler)
    assert all(len(b) == batch_size for b in batches)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    assert len(sampler) == len(batches)


def test_seeded_and_epoch_dependent() -> None:
    lengths = np.random.default_rng(0).integers(1, 100, size=500).tolist()
    a = BucketBatchSampler(lengths, 16, seed=3)
    b = BucketBatchSampler(lengths, 16, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_bucketing_improves_padding_efficiency() -> None:
    lengths = np.random.default_rng(0).integers(5, 400, size=2000).tolist()
    plain = padding_efficiency(lengths, sequential_batches(len(lengths), 32, seed=0))
    bucketed = padding_efficiency(lengths, list(BucketBatchSampler(lengths, 32, seed=0)))
    assert bucketed.efficiency > 0.9 > plain.efficiency
    assert plain.real_tokens == bucketed.real_tokens == sum(lengths)
    sorted_batches = list(BucketBatchSampler(lengths, 32, shuffle=False))
    for b in sorted_batches:
        assert [lengths[i] for i in b] == sorted(lengths[i] for i in b)


def test_padding_efficiency_values() -> None:
    report = padding_efficiency([1, 3, 2, 2], [[0, 1], [2, 3]])
    assert report.real_tokens == 8 and report.padded_tokens == 10 and report.efficiency == pytest.approx(0.8)
    assert report.num_batches == 2 and "80.0%" in str(report)
    assert padding_efficiency([10, 2], [[0, 1]], max_length=4).efficiency == pytest.approx(6 / 8)
    assert padding_efficiency([], []).efficiency == 1.0


def test_max_length_and_errors() -> None:
    sampler = BucketBatchSampler([5, 100, 7], 2, max_length=10, shuffle=False)
    assert sampler.lengths.tolist() == [5, 10, 7]
    with pytest.raises(DataError):
        BucketBatchSampler([1, 2], 0)
    with pytest.raises(DataError):
        BucketBatchSampler([1, -2], 1)
    with pytest.raises(DataError):
        sequential_batches(3, 0)
    assert sorted(i for b in sequential_batches(10, 3) for i in b) == list(range(10))
