"""Tests for rnnkit.data.batch."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rnnkit.data import (
    Batch,
    BucketBatchSampler,
    DataError,
    SequenceCollator,
    SequenceDataset,
    collate_sequences,
)


def test_collate_classification_pairs() -> None:
    batch = collate_sequences([([1, 2, 3], 1), ([4], 0)])
    assert isinstance(batch, Batch)
    assert batch.inputs.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch.targets is not None and batch.targets.tolist() == [1, 0]
    assert batch.lengths.tolist() == [3, 1]
    assert batch.mask.tolist() == [[True, True, True], [True, False, False]]
    assert batch.padding_side == "post" and len(batch) == 2
    assert batch.extras["num_truncated"] == 0


def test_collate_sequence_targets_pre_padding() -> None:
    samples = [(torch.tensor([1, 2, 3]), torch.tensor([7, 8, 9])), (torch.tensor([4]), torch.tensor([5]))]
    batch = collate_sequences(samples, padding="pre")
    assert batch.inputs.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert batch.targets is not None and batch.targets.tolist() == [[7, 8, 9], [-100, -100, 5]]
    assert batch.extras["target_lengths"].tolist() == [3, 1]
    assert batch.extras["target_mask"].tolist() == [[True, True, True], [False, False, True]]


def test_collate_dicts_with_extras_and_truncation() -> None:
    samples = [
        {"inputs": [1, 2, 3, 4], "targets": 1, "id": 10, "name": "a"},
        {"inputs": [5], "targets": 0, "id": 11, "name": "b"},
    ]
    batch = collate_sequences(samples, max_length=2)
    assert batch.inputs.tolist() == [[1, 2], [5, 0]]
    assert batch.extras["id"].tolist() == [10, 11]
    assert batch.extras["name"] == ["a", "b"]
    assert batch.extras["num_truncated"] == 1 and batch.extras["tokens_dropped"] == 2
    assert batch.extras["truncation_side"] == "post"
    pre = collate_sequences(samples, max_length=2, truncation="pre")
    assert pre.inputs.tolist() == [[3, 4], [5, 0]] and pre.extras["truncation_side"] == "pre"
    assert "truncation_side" not in collate_sequences(samples).extras  # nothing was cut


def test_collate_plain_sequences_and_errors() -> None:
    batch = collate_sequences([[1, 2], [3]])
    assert batch.targets is None and batch.inputs.tolist() == [[1, 2], [3, 0]]
    with pytest.raises(DataError, match="empty batch"):
        collate_sequences([])
    with pytest.raises(DataError, match="no target"):
        collate_sequences([([1], 1), ([2], None)])
    with pytest.raises(DataError, match="'inputs'"):
        collate_sequences([{"x": [1]}])


def test_batch_to_device_and_pin() -> None:
    batch = collate_sequences([([1, 2], 1), ([3], 0)])
    moved = batch.to("cpu")
    assert moved.inputs.device.type == "cpu" and moved is not batch
    assert moved.extras["num_truncated"] == 0
    moved = batch.to(torch.device("meta"))
    assert moved.inputs.device.type == "meta" and moved.mask.device.type == "meta"
    assert moved.targets is not None and moved.targets.device.type == "meta"


def test_dataloader_with_collator_and_bucketing() -> None:
    rng = np.random.default_rng(0)
    inputs = [rng.integers(1, 50, size=n).tolist() for n in rng.integers(1, 30, size=37)]
    labels = [i % 2 for i in range(37)]
    ds = SequenceDataset(inputs, labels)
    sampler = BucketBatchSampler(ds.lengths(), batch_size=8, seed=1)
    collator = SequenceCollator(pad_value=0)
    pickle.dumps(collator)  # picklable for worker processes
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collator)
    seen = 0
    for batch in loader:
        assert isinstance(batch, Batch)
        seen += len(batch)
        assert batch.mask.sum().item() == batch.lengths.sum().item()
    assert seen == 37


def test_sequence_dataset_transform_and_errors() -> None:
    ds = SequenceDataset(["ab", "c"], [0, 1], transform=lambda s: [ord(ch) for ch in s])
    x, y = ds[0]
    assert x.tolist() == [97, 98] and y == 0 and ds.lengths() == [2, 1] and len(ds) == 2
    assert SequenceDataset([[1, 2]])[0].tolist() == [1, 2]
    with pytest.raises(DataError, match="2 inputs but 1 targets"):
        SequenceDataset([[1], [2]], [0])
