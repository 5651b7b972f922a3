"""Length-bucketed batching: put sequences of similar length together to waste less padding.

:class:`BucketBatchSampler` shuffles indices (seeded, per epoch), cuts them into pools of
``batch_size * pool_factor``, sorts each pool by length, cuts it into batches and shuffles
the batch order. Every index appears exactly once per epoch (``drop_last=False``).
:func:`padding_efficiency` measures the result: real steps / padded steps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler

from .errors import DataError

logger = logging.getLogger("rnnkit.data")

__all__ = ["BucketBatchSampler", "EpochSampler", "PaddingReport", "padding_efficiency", "sequential_batches"]


def _check_count(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise DataError(f"{name} must be an int >= 1, got {value!r}", hint=f"pass a positive whole {name}")


class BucketBatchSampler(Sampler[list[int]]):
    """Batch sampler grouping similar lengths.

    Args:
        lengths: Length of each example.
        batch_size: Examples per batch.
        shuffle: Shuffle (seeded) pools and batch order; ``False`` sorts all indices by
            length once and yields batches in that order.
        seed: Base seed; epoch ``e`` uses ``seed + e`` (call :meth:`set_epoch`).
        pool_factor: Pool size in batches; larger pools give tighter buckets but less
            randomness.
        drop_last: Drop the last, smaller batch of each pool (logged as a warning when there
            are fewer examples than one batch, which leaves no batch at all).
        max_length: Optional cap applied to lengths (as if truncated) when sorting.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        pool_factor: int = 50,
        drop_last: bool = False,
        max_length: int | None = None,
    ) -> None:
        _check_count(batch_size, "batch_size")
        _check_count(pool_factor, "pool_factor")
        if max_length is not None:
            _check_count(max_length, "max_length")
        try:
            arr = np.asarray(lengths, dtype=np.int64)
        except (TypeError, ValueError):
            arr = np.zeros((0, 0), dtype=np.int64)
        if arr.ndim != 1:
            raise DataError("lengths must be a flat sequence of ints", hint="pass one length per example")
        if arr.size and arr.min() < 0:
            raise DataError("lengths must be >= 0", hint="check the lengths")
        self.lengths = np.minimum(arr, max_length) if max_length is not None else arr
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_factor = pool_factor
        self.drop_last = drop_last
        self.epoch = 0
        if drop_last and 0 < arr.size < batch_size:
            logger.warning(
                "BucketBatchSampler: drop_last=True with %d examples and batch_size=%d yields no batch "
                "at all; pass drop_last=False or a batch_size <= the number of examples",
                arr.size,
                batch_size,
            )

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (changes the shuffle).

        Args:
            epoch: Epoch number.
        """
        self.epoch = int(epoch)

    @property
    def sampler(self) -> BucketBatchSampler:
        """The sampler itself: Lightning calls ``batch_sampler.sampler.set_epoch(epoch)`` at every
        epoch start (not ``batch_sampler.set_epoch``), so each epoch gets its own shuffle and a
        resumed run the one an uninterrupted run would have drawn."""
        return self

    def batches(self) -> list[list[int]]:
        """Return this epoch's batches.

        Returns:
            Lists of example indices.
        """
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return self._cut(order)
        rng = np.random.default_rng(self.seed + self.epoch)
        perm = rng.permutation(n)
        pool = self.batch_size * self.pool_factor
        out: list[list[int]] = []
        for start in range(0, n, pool):
            chunk = perm[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            out.extend(self._cut(chunk))
        order = rng.permutation(len(out))
        return [out[i] for i in order]

    def _cut(self, order: np.ndarray) -> list[list[int]]:
        out = []
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                continue
            out.append([int(i) for i in batch])
        return out

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()  # lazily: the epoch may be set after the loader's iterator is made

    def __len__(self) -> int:
        n = len(self.lengths)
        if not self.drop_last:
            if not self.shuffle:
                return -(-n // self.batch_size)
            pool = self.batch_size * self.pool_factor
            full, rest = divmod(n, pool)
            return full * self.pool_factor + -(-rest // self.batch_size)
        if not self.shuffle:
            return n // self.batch_size
        pool = self.batch_size * self.pool_factor
        full, rest = divmod(n, pool)
        return full * self.pool_factor + rest // self.batch_size


class EpochSampler(Sampler[int]):
    """Sequential, or shuffled with an order that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` at each epoch start, so a run resumed at epoch ``k``
    draws the same order as an uninterrupted one.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int, epoch_offset: int = 0) -> None:
        self.n, self.shuffle, self.seed, self.epoch_offset = n, shuffle, int(seed), int(epoch_offset)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the order of ``epoch`` (0-based, relative to this fit's first epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.epoch_offset + self.epoch) % (2**63))
        return iter(torch.randperm(self.n, generator=g).tolist())


def sequential_batches(n: int, batch_size: int, *, shuffle: bool = True, seed: int = 0) -> list[list[int]]:
    """Plain (unbucketed) batches, for comparison.

    Args:
        n: Number of examples.
        batch_size: Examples per batch.
        shuffle: Shuffle indices first (seeded).
        seed: Seed.

    Returns:
        Lists of indices covering ``0..n-1`` once.
    """
    _check_count(batch_size, "batch_size")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    return [[int(i) for i in order[s : s + batch_size]] for s in range(0, n, batch_size)]


@dataclass(frozen=True)
class PaddingReport:
    """Padding cost of a batching.

    Attributes:
        real_tokens: Sum of the lengths.
        padded_tokens: Sum over batches of ``batch_size * longest``.
        efficiency: ``real_tokens / padded_tokens`` (1.0 = no padding).
        num_batches: Number of batches.
    """

    real_tokens: int
    padded_tokens: int
    efficiency: float
    num_batches: int

    def __str__(self) -> str:
        return f"{self.efficiency:.1%} real ({self.real_tokens} of {self.padded_tokens} padded steps, {self.num_batches} batches)"


def padding_efficiency(
    lengths: Sequence[int], batches: Sequence[Sequence[int]], max_length: int | None = None
) -> PaddingReport:
    """Measure how much of the padded tensors would be real data.

    Args:
        lengths: Length of each example.
        batches: Batches of example indices.
        max_length: Truncation length applied to every example, if any.

    Returns:
        A :class:`PaddingReport`.
    """
    arr = np.asarray(lengths, dtype=np.int64)
    if max_length is not None:
        arr = np.minimum(arr, max_length)
    real = 0
    padded = 0
    for batch in batches:
        if len(batch) == 0:
            continue
        idx = np.asarray(batch, dtype=np.int64)
        if idx.min() < 0 or idx.max() >= len(arr):
            raise DataError(
                f"batch {list(batch)[:10]} has an index outside 0..{len(arr) - 1}",
                hint="pass the lengths of the dataset the batches index",
            )
        lens = arr[idx]
        real += int(lens.sum())
        padded += int(lens.max()) * len(batch)
    eff = real / padded if padded else 1.0
    return PaddingReport(real, padded, eff, sum(1 for b in batches if len(b)))
